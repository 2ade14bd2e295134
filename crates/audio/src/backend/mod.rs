//! Audio device backends behind one small trait: real devices through cpal (ALSA and
//! PulseAudio hosts), a null device paced by the clock, a WAV file writer, and a fake device
//! on a virtual clock for tests.
//!
//! Every backend calls back with interleaved `f32` frames and the local instants that matter:
//! when the callback runs, and when its first frame reaches the DAC (output) or left the ADC
//! (input). Callbacks may be any length.

use tutti_proto::{LocalTime, Nanos};

use crate::AudioError;

pub mod cpal;
pub mod fake;
pub mod null;
pub mod tap;
pub mod wav;

/// What a stream asks of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Device buffer (period) size in frames. Always fixed: a default buffer can be seconds
    /// long (cpal's PulseAudio default is ~2 s).
    pub buffer_frames: u32,
}

impl StreamSpec {
    /// 48 kHz stereo with 256-frame buffers.
    pub fn new(sample_rate: u32, channels: u16, buffer_frames: u32) -> Self {
        StreamSpec { sample_rate, channels, buffer_frames }
    }
    /// Duration of one buffer.
    pub fn period(&self) -> Nanos {
        Nanos::from_frames(u64::from(self.buffer_frames), self.sample_rate)
    }
}

/// Timing of an output callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputTiming {
    /// When the callback runs.
    pub now: LocalTime,
    /// When the buffer's first frame reaches the DAC.
    pub dac_time: LocalTime,
}

/// Timing of an input callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputTiming {
    /// When the callback runs.
    pub now: LocalTime,
    /// When the buffer's first frame was captured at the ADC.
    pub captured: LocalTime,
}

/// Output callback: fill the interleaved buffer.
pub type OutputCallback = Box<dyn FnMut(&mut [f32], OutputTiming) + Send + 'static>;
/// Input callback: consume the interleaved buffer.
pub type InputCallback = Box<dyn FnMut(&[f32], InputTiming) + Send + 'static>;

/// A device as users know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Host (ALSA, PulseAudio, null, file...).
    pub host: String,
    /// Name to pass back to open it.
    pub name: String,
    /// Human description.
    pub description: String,
    /// Can play.
    pub output: bool,
    /// Can record.
    pub input: bool,
    /// The host's default device for its direction.
    pub default: bool,
}

/// A running stream; dropping it stops it.
pub trait ActiveStream {
    /// Stops the stream (idempotent).
    fn stop(&mut self);
    /// The host's name for the device in use.
    fn device_name(&self) -> String;
    /// Why the stream stopped for good (the device went away, the sound server died), once
    /// it has: its owner should open the device again.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// A source of devices.
pub trait Backend {
    /// The backend's name.
    fn name(&self) -> String;
    /// Devices it offers.
    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError>;
    /// Starts playback on `device` (default when `None`).
    fn open_output(
        &self,
        device: Option<&str>,
        spec: &StreamSpec,
        cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError>;
    /// Starts capture on `device` (default when `None`).
    fn open_input(
        &self,
        device: Option<&str>,
        spec: &StreamSpec,
        cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError>;
}

/// Every device of every backend available here.
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut all = Vec::new();
    for b in cpal::CpalBackend::available() {
        if let Ok(d) = b.devices() {
            all.extend(d);
        }
    }
    all.extend(null::NullBackend.devices().unwrap_or_default());
    all
}
