//! Fake devices on a virtual clock, for deterministic tests: a DAC (and an ADC) whose sample
//! clock runs at its own ppm against the local clock, calling back one buffer ahead with
//! timestamps that jitter like a real driver's.

use std::sync::{Arc, Mutex};

use tutti_proto::{LocalTime, Nanos};

use super::{
    ActiveStream, Backend, DeviceInfo, InputCallback, InputTiming, OutputCallback, OutputTiming,
    StreamSpec,
};
use crate::AudioError;

/// A virtual sample clock: frame `f` happens at `start + f / (rate·(1 + ppm))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleClock {
    /// Local instant of frame 0.
    pub start: LocalTime,
    /// Nominal rate.
    pub rate: u32,
    /// Crystal error, parts per million (positive: fast).
    pub ppm: f64,
}

impl SampleClock {
    /// Local instant of frame `f`.
    pub fn time_of(&self, f: u64) -> LocalTime {
        let secs = f as f64 / (f64::from(self.rate) * (1.0 + self.ppm * 1e-6));
        self.start + Nanos((secs * 1e9).round() as i64)
    }
}

fn jitter(state: &mut u64, amplitude: Nanos) -> Nanos {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let u = (*state >> 11) as f64 / (1u64 << 53) as f64;
    Nanos(((u * 2.0 - 1.0) * amplitude.0 as f64) as i64)
}

/// A fake DAC (see the module docs).
#[derive(Debug)]
pub struct FakeDac {
    /// Its sample clock.
    pub clock: SampleClock,
    period: u32,
    next: u64,
    noise: Nanos,
    rng: u64,
    buf: Vec<f32>,
}

impl FakeDac {
    /// A DAC of `channels` channels with `period`-frame buffers on `clock`, reporting
    /// timestamps with up to ± `noise` of error.
    pub fn new(clock: SampleClock, channels: usize, period: u32, noise: Nanos) -> Self {
        FakeDac {
            clock,
            period,
            next: 1,
            noise,
            rng: 0x5eed,
            buf: vec![0.0; period as usize * channels],
        }
    }

    /// Local instant of the next callback (when buffer `k − 1` starts playing).
    pub fn next_callback(&self) -> LocalTime {
        self.clock.time_of((self.next - 1) * u64::from(self.period))
    }

    /// Runs the next callback. Returns the device frame index of its first frame and what was
    /// played.
    pub fn tick(&mut self, cb: &mut dyn FnMut(&mut [f32], OutputTiming)) -> (u64, &[f32]) {
        let first = self.next * u64::from(self.period);
        let now = self.next_callback();
        let dac_time = self.clock.time_of(first) + jitter(&mut self.rng, self.noise);
        cb(&mut self.buf, OutputTiming { now, dac_time });
        self.next += 1;
        (first, &self.buf)
    }
}

/// A fake ADC: delivers `source(frame)` samples on its own sample clock.
pub struct FakeAdc {
    /// Its sample clock.
    pub clock: SampleClock,
    channels: usize,
    period: u32,
    next: u64,
    buf: Vec<f32>,
    source: Box<dyn FnMut(u64, &mut [f32]) + Send>,
}

impl core::fmt::Debug for FakeAdc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeAdc")
            .field("clock", &self.clock)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl FakeAdc {
    /// An ADC whose frame `f` (all channels) is filled by `source(f, frame)`.
    pub fn new(
        clock: SampleClock,
        channels: usize,
        period: u32,
        source: impl FnMut(u64, &mut [f32]) + Send + 'static,
    ) -> Self {
        FakeAdc {
            clock,
            channels,
            period,
            next: 0,
            buf: vec![0.0; period as usize * channels],
            source: Box::new(source),
        }
    }

    /// Local instant of the next callback (when buffer `k` is complete).
    pub fn next_callback(&self) -> LocalTime {
        self.clock.time_of((self.next + 1) * u64::from(self.period))
    }

    /// Runs the next callback.
    pub fn tick(&mut self, cb: &mut dyn FnMut(&[f32], InputTiming)) {
        let first = self.next * u64::from(self.period);
        for (i, frame) in self.buf.chunks_mut(self.channels).enumerate() {
            (self.source)(first + i as u64, frame);
        }
        let now = self.next_callback();
        cb(&self.buf, InputTiming { now, captured: self.clock.time_of(first) });
        self.next += 1;
    }
}

/// The fake backend: streams opened on it are driven by the test through [`FakeBackend::step`].
#[derive(Clone, Default)]
pub struct FakeBackend {
    outputs: Arc<Mutex<Vec<(FakeDac, OutputCallback)>>>,
}

impl core::fmt::Debug for FakeBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeBackend").finish_non_exhaustive()
    }
}

impl FakeBackend {
    /// Runs every output's callbacks due up to `until`, in time order.
    pub fn step(&self, until: LocalTime) {
        let Ok(mut outs) = self.outputs.lock() else { return };
        loop {
            let next =
                outs.iter_mut().map(|(d, _)| d.next_callback()).enumerate().min_by_key(|x| x.1);
            match next {
                Some((i, t)) if t <= until => {
                    let (dac, cb) = &mut outs[i];
                    dac.tick(cb.as_mut());
                }
                _ => break,
            }
        }
    }
}

struct FakeStream;

impl ActiveStream for FakeStream {
    fn stop(&mut self) {}
    fn device_name(&self) -> String {
        "fake".into()
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> String {
        "fake".into()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError> {
        Ok(vec![DeviceInfo {
            host: "fake".into(),
            name: "fake".into(),
            description: "Virtual DAC for tests".into(),
            output: true,
            input: false,
            default: false,
        }])
    }
    fn open_output(
        &self,
        _device: Option<&str>,
        spec: &StreamSpec,
        cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let clock =
            SampleClock { start: LocalTime(1_000_000_000), rate: spec.sample_rate, ppm: 0.0 };
        let dac = FakeDac::new(clock, usize::from(spec.channels), spec.buffer_frames, Nanos::ZERO);
        self.outputs
            .lock()
            .map_err(|_| AudioError::Device("fake backend poisoned".into()))?
            .push((dac, cb));
        Ok(Box::new(FakeStream))
    }
    fn open_input(
        &self,
        _device: Option<&str>,
        _spec: &StreamSpec,
        _cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        Err(AudioError::Device("use FakeAdc directly to drive input in tests".into()))
    }
}
