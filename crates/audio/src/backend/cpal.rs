//! Real devices through cpal: the ALSA host and cpal's PulseAudio host.
//!
//! cpal's timestamps count from the stream's creation; the callback's own `playback −
//! callback` (or `callback − capture`) difference is the device latency, which is added to
//! the local clock read at the top of the callback to get the DAC (ADC) instant on the local
//! clock. Buffers are always requested fixed-size (a default PulseAudio buffer is ~2 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, HostId, SampleFormat, StreamConfig};
use tutti_proto::Nanos;

use super::{
    ActiveStream, Backend, DeviceInfo, InputCallback, InputTiming, OutputCallback, OutputTiming,
    StreamSpec,
};
use crate::format::to_i16;
use crate::{AudioError, clock};

/// A cpal host as a [`Backend`].
pub struct CpalBackend {
    host: cpal::Host,
    label: &'static str,
}

impl core::fmt::Debug for CpalBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CpalBackend").field("host", &self.label).finish()
    }
}

fn label(id: HostId) -> &'static str {
    match id {
        HostId::Alsa => "alsa",
        HostId::PulseAudio => "pulse",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

impl CpalBackend {
    /// The host `id`, if it is available here.
    pub fn new(id: HostId) -> Result<Self, AudioError> {
        let host = cpal::host_from_id(id)
            .map_err(|e| AudioError::Device(format!("{} host: {e}", label(id))))?;
        Ok(CpalBackend { host, label: label(id) })
    }
    /// The ALSA host.
    pub fn alsa() -> Result<Self, AudioError> {
        Self::new(HostId::Alsa)
    }
    /// cpal's PulseAudio host (speaks the protocol itself; honours `PULSE_SERVER`).
    pub fn pulse() -> Result<Self, AudioError> {
        Self::new(HostId::PulseAudio)
    }
    /// Every host that works here, PulseAudio first.
    pub fn available() -> Vec<CpalBackend> {
        let mut ids = cpal::available_hosts();
        ids.sort_by_key(|id| if *id == HostId::PulseAudio { 0 } else { 1 });
        ids.into_iter().filter_map(|id| Self::new(id).ok()).collect()
    }

    fn name_of(d: &cpal::Device) -> String {
        d.description().map(|x| x.name().to_owned()).unwrap_or_else(|_| d.to_string())
    }

    fn find(&self, wanted: Option<&str>, output: bool) -> Result<cpal::Device, AudioError> {
        let dir = if output { "output" } else { "input" };
        let Some(wanted) = wanted else {
            let d = if output {
                self.host.default_output_device()
            } else {
                self.host.default_input_device()
            };
            return d.ok_or_else(|| {
                AudioError::Device(format!("{} has no default {dir} device", self.label))
            });
        };
        let devices: Vec<cpal::Device> = if output {
            self.host.output_devices().map_err(|e| AudioError::Device(e.to_string()))?.collect()
        } else {
            self.host.input_devices().map_err(|e| AudioError::Device(e.to_string()))?.collect()
        };
        let lower = wanted.to_lowercase();
        let names: Vec<String> = devices.iter().map(Self::name_of).collect();
        // Ids look like `pulseaudio:out.monitor` or `alsa:default`; users type the part after
        // the colon.
        let ids: Vec<String> = devices
            .iter()
            .map(|d| d.id().map(|i| i.to_string()).unwrap_or_default().to_lowercase())
            .collect();
        let short = |id: &String| id.split_once(':').map_or(id.clone(), |x| x.1.to_owned());
        let pick = names
            .iter()
            .position(|n| *n == wanted)
            .or_else(|| ids.iter().position(|i| short(i) == lower || *i == lower))
            .or_else(|| names.iter().position(|n| n.to_lowercase().contains(&lower)))
            .or_else(|| ids.iter().position(|i| i.contains(&lower)));
        match pick {
            Some(i) => Ok(devices.into_iter().nth(i).expect("index from the same list")),
            None => Err(AudioError::Device(format!(
                "no {} {dir} device named `{wanted}`; available: {}",
                self.label,
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))),
        }
    }

    fn format_for(device: &cpal::Device, output: bool, spec: &StreamSpec) -> SampleFormat {
        let configs: Vec<_> = if output {
            device.supported_output_configs().map(|c| c.collect()).unwrap_or_default()
        } else {
            device.supported_input_configs().map(|c| c.collect()).unwrap_or_default()
        };
        let fits = |c: &cpal::SupportedStreamConfigRange| {
            c.channels() == spec.channels
                && c.min_sample_rate() <= spec.sample_rate
                && spec.sample_rate <= c.max_sample_rate()
        };
        if configs.iter().any(|c| fits(c) && c.sample_format() == SampleFormat::F32)
            || configs.is_empty()
        {
            SampleFormat::F32
        } else {
            SampleFormat::I16
        }
    }
}

/// A running cpal stream.
struct CpalStream {
    stream: Option<cpal::Stream>,
    name: String,
    errors: Arc<StreamErrors>,
}

/// What cpal's error callback reported: how many, and the first that ended the stream.
#[derive(Debug, Default)]
struct StreamErrors {
    count: AtomicU64,
    fatal: Mutex<Option<String>>,
}

impl ActiveStream for CpalStream {
    fn stop(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.pause();
        }
    }
    fn device_name(&self) -> String {
        format!("{} ({} stream errors)", self.name, self.errors.count.load(Ordering::Relaxed))
    }
    fn failure(&self) -> Option<String> {
        let fatal = self.errors.fatal.lock().ok()?.clone()?;
        Some(format!("{}: {fatal}", self.name))
    }
}

const MAX_CALLBACK_FRAMES: usize = 16_384;

/// The fixed-size stream configuration both directions ask for, and the stream's error record
/// with the callback that feeds it.
fn stream_setup(
    spec: &StreamSpec,
) -> (StreamConfig, Arc<StreamErrors>, impl FnMut(cpal::Error) + Send + 'static) {
    let config = StreamConfig {
        channels: spec.channels,
        sample_rate: spec.sample_rate,
        buffer_size: BufferSize::Fixed(spec.buffer_frames),
    };
    let errors = Arc::new(StreamErrors::default());
    let record = errors.clone();
    // cpal's own threads call this (never the audio callback): say what failed, and remember
    // an error that ends the stream (its owner reopens the device).
    let on_error = move |e: cpal::Error| {
        if record.count.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("audio stream error: {e}");
        }
        let survivable = matches!(
            e.kind(),
            cpal::ErrorKind::Xrun
                | cpal::ErrorKind::DeviceChanged
                | cpal::ErrorKind::RealtimeDenied
        );
        if !survivable && let Ok(mut fatal) = record.fatal.lock() {
            fatal.get_or_insert_with(|| e.to_string());
        }
    };
    (config, errors, on_error)
}

impl Backend for CpalBackend {
    fn name(&self) -> String {
        self.label.into()
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError> {
        let mut out = Vec::new();
        let def_out = self.host.default_output_device().map(|d| Self::name_of(&d));
        let def_in = self.host.default_input_device().map(|d| Self::name_of(&d));
        if let Ok(devs) = self.host.output_devices() {
            for d in devs {
                let name = Self::name_of(&d);
                out.push(DeviceInfo {
                    host: self.label.into(),
                    description: d.id().map(|i| i.to_string()).unwrap_or_else(|_| d.to_string()),
                    default: def_out.as_deref() == Some(name.as_str()),
                    name,
                    output: true,
                    input: false,
                });
            }
        }
        if let Ok(devs) = self.host.input_devices() {
            for d in devs {
                let name = Self::name_of(&d);
                out.push(DeviceInfo {
                    host: self.label.into(),
                    description: d.id().map(|i| i.to_string()).unwrap_or_else(|_| d.to_string()),
                    default: def_in.as_deref() == Some(name.as_str()),
                    name,
                    output: false,
                    input: true,
                });
            }
        }
        Ok(out)
    }

    fn open_output(
        &self,
        device: Option<&str>,
        spec: &StreamSpec,
        mut cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let dev = self.find(device, true)?;
        let name = Self::name_of(&dev);
        let (config, errors, on_error) = stream_setup(spec);
        let timing = |info: &cpal::OutputCallbackInfo| {
            let now = clock::now();
            let ts = info.timestamp();
            OutputTiming {
                now,
                dac_time: now + Nanos::from(ts.playback.duration_since(ts.callback)),
            }
        };
        let stream = match Self::format_for(&dev, true, spec) {
            SampleFormat::F32 => dev.build_output_stream::<f32, _, _>(
                config,
                move |data: &mut [f32], info: &cpal::OutputCallbackInfo| cb(data, timing(info)),
                on_error,
                None,
            ),
            _ => {
                let mut scratch = vec![0.0f32; MAX_CALLBACK_FRAMES * usize::from(spec.channels)];
                dev.build_output_stream::<i16, _, _>(
                    config,
                    move |data: &mut [i16], info: &cpal::OutputCallbackInfo| {
                        let t = timing(info);
                        for chunk in data.chunks_mut(scratch.len()) {
                            let s = &mut scratch[..chunk.len()];
                            cb(s, t);
                            for (d, v) in chunk.iter_mut().zip(s.iter()) {
                                *d = to_i16(*v);
                            }
                        }
                    },
                    on_error,
                    None,
                )
            }
        }
        .map_err(|e| AudioError::Device(format!("{name}: {e}")))?;
        stream.play().map_err(|e| AudioError::Device(format!("{name}: {e}")))?;
        Ok(Box::new(CpalStream { stream: Some(stream), name, errors }))
    }

    fn open_input(
        &self,
        device: Option<&str>,
        spec: &StreamSpec,
        mut cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let dev = self.find(device, false)?;
        let name = Self::name_of(&dev);
        let (config, errors, on_error) = stream_setup(spec);
        let timing = |info: &cpal::InputCallbackInfo| {
            let now = clock::now();
            let ts = info.timestamp();
            InputTiming { now, captured: now - Nanos::from(ts.callback.duration_since(ts.capture)) }
        };
        let stream = match Self::format_for(&dev, false, spec) {
            SampleFormat::F32 => dev.build_input_stream::<f32, _, _>(
                config,
                move |data: &[f32], info: &cpal::InputCallbackInfo| cb(data, timing(info)),
                on_error,
                None,
            ),
            _ => {
                let mut scratch = vec![0.0f32; MAX_CALLBACK_FRAMES * usize::from(spec.channels)];
                dev.build_input_stream::<i16, _, _>(
                    config,
                    move |data: &[i16], info: &cpal::InputCallbackInfo| {
                        let t = timing(info);
                        for chunk in data.chunks(scratch.len()) {
                            let s = &mut scratch[..chunk.len()];
                            for (d, v) in s.iter_mut().zip(chunk) {
                                *d = f32::from(*v) / 32_768.0;
                            }
                            cb(s, t);
                        }
                    },
                    on_error,
                    None,
                )
            }
        }
        .map_err(|e| AudioError::Device(format!("{name}: {e}")))?;
        stream.play().map_err(|e| AudioError::Device(format!("{name}: {e}")))?;
        Ok(Box::new(CpalStream { stream: Some(stream), name, errors }))
    }
}
