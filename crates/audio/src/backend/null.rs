//! A device that plays into nothing (and records silence), paced by the local clock exactly
//! as a sound card would be: callbacks of `buffer_frames` frames, one buffer ahead of the DAC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tutti_proto::{LocalTime, Nanos};

use super::{
    ActiveStream, Backend, DeviceInfo, InputCallback, InputTiming, OutputCallback, OutputTiming,
    StreamSpec,
};
use crate::{AudioError, clock};

/// The null backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullBackend;

/// A running paced thread.
#[derive(Debug)]
pub struct PacedStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl PacedStream {
    /// Runs `tick(k, due)` for buffer `k` at its due instant `start + k × period` until
    /// stopped. Like a sound card's crystal, the schedule never drifts however late the
    /// thread wakes: timestamps derived from `due` are exact.
    pub fn spawn(
        name: &str,
        spec: StreamSpec,
        tick: impl FnMut(u64, LocalTime) + Send + 'static,
    ) -> Result<Self, AudioError> {
        Self::spawn_at(name, spec, None, tick)
    }

    /// [`spawn`](Self::spawn) with the schedule's origin at `start` (now when `None`; a start
    /// already past keeps its phase).
    pub fn spawn_at(
        name: &str,
        spec: StreamSpec,
        start: Option<LocalTime>,
        mut tick: impl FnMut(u64, LocalTime) + Send + 'static,
    ) -> Result<Self, AudioError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let rate = spec.sample_rate;
        let frames = u64::from(spec.buffer_frames.max(1));
        let thread = std::thread::Builder::new()
            .name(format!("tutti-{name}"))
            .spawn(move || {
                // A sound card's clock never waits for the scheduler; this thread should not.
                clock::prefer_current_thread(-10);
                let now = clock::now();
                let start = start.unwrap_or(now);
                // A start already past keeps its phase: the first buffer is the next one due.
                let mut k = if now > start {
                    ((now - start).0 as u64 * u64::from(rate)).div_ceil(1_000_000_000 * frames)
                } else {
                    0
                };
                while !flag.load(Ordering::Relaxed) {
                    // Absolute schedule: buffer k is due at start + k·period, never drifting.
                    let due = start + Nanos::from_frames(k * frames, rate);
                    clock::sleep_until(due);
                    tick(k, due);
                    k += 1;
                }
            })
            .map_err(|source| AudioError::Io { what: "starting the pacing thread", source })?;
        Ok(PacedStream { stop, thread: Some(thread), name: name.to_owned() })
    }
}

impl ActiveStream for PacedStream {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    fn device_name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for PacedStream {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Backend for NullBackend {
    fn name(&self) -> String {
        "null".into()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError> {
        Ok(vec![DeviceInfo {
            host: "null".into(),
            name: "null".into(),
            description: "Discards audio (paced by the clock)".into(),
            output: true,
            input: true,
            default: false,
        }])
    }
    fn open_output(
        &self,
        _device: Option<&str>,
        spec: &StreamSpec,
        mut cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let mut buf = vec![0.0f32; spec.buffer_frames as usize * usize::from(spec.channels)];
        let period = spec.period();
        let s = PacedStream::spawn("null-out", *spec, move |_, due| {
            cb(&mut buf, OutputTiming { now: clock::now(), dac_time: due + period });
        })?;
        Ok(Box::new(s))
    }
    fn open_input(
        &self,
        _device: Option<&str>,
        spec: &StreamSpec,
        mut cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let buf = vec![0.0f32; spec.buffer_frames as usize * usize::from(spec.channels)];
        let period = spec.period();
        let s = PacedStream::spawn("null-in", *spec, move |_, due| {
            cb(&buf, InputTiming { now: clock::now(), captured: due - period });
        })?;
        Ok(Box::new(s))
    }
}
