//! A "device" that writes what would have been played to a WAV file, paced in real time or
//! as fast as possible, and records the local instant of the file's first sample (in
//! `<file>.json`) so that files written by different players can be aligned to the sample.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tutti_proto::{LocalTime, Nanos};

use super::null::PacedStream;
use super::{
    ActiveStream, Backend, DeviceInfo, InputCallback, OutputCallback, OutputTiming, StreamSpec,
};
use crate::format::to_i16;
use crate::{AudioError, clock};

/// Sample format written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    /// 16-bit integer (bit-exact for 16-bit streams at unity gain).
    I16,
    /// 32-bit float.
    F32,
}

/// The WAV backend.
#[derive(Clone, Debug)]
pub struct WavBackend {
    path: PathBuf,
    format: WavFormat,
    realtime: bool,
    first_frame: Option<LocalTime>,
}

impl WavBackend {
    /// Writes to `path`; `realtime` paces callbacks by the clock (otherwise as fast as the
    /// callback fills buffers, on a virtual clock starting now).
    pub fn new(path: impl Into<PathBuf>, format: WavFormat, realtime: bool) -> Self {
        WavBackend { path: path.into(), format, realtime, first_frame: None }
    }

    /// Real-time files only: the file's first frame is "played" at local instant `t` (if it
    /// is still ahead when the stream opens). A file has no crystal of its own, so its phase
    /// is free: a player puts it on the stream's frame grid, and the file holds the stream's
    /// samples with no sub-frame offset.
    pub fn first_frame_at(mut self, t: LocalTime) -> Self {
        self.first_frame = Some(t);
        self
    }

    /// Reads the first-sample instant recorded beside a WAV file.
    pub fn first_sample_time(path: &Path) -> Result<LocalTime, AudioError> {
        let meta = sidecar(path);
        let text = std::fs::read_to_string(&meta)
            .map_err(|source| AudioError::File { path: meta.clone(), source })?;
        let value = text
            .split("\"first_sample_local_ns\":")
            .nth(1)
            .and_then(|rest| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .ok_or(AudioError::Unusable { path: meta, why: "no first_sample_local_ns" })?;
        Ok(LocalTime(value))
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

enum Writer {
    I16(hound::WavWriter<BufWriter<File>>),
    F32(hound::WavWriter<BufWriter<File>>),
}

struct WavSink {
    writer: Option<Writer>,
    path: PathBuf,
    first: Option<LocalTime>,
}

impl WavSink {
    fn write(&mut self, samples: &[f32], dac_time: LocalTime) -> Result<(), AudioError> {
        if self.first.is_none() {
            self.first = Some(dac_time);
            let json = format!("{{\"first_sample_local_ns\": {}}}\n", dac_time.0);
            let path = sidecar(&self.path);
            std::fs::write(&path, json).map_err(|source| AudioError::File { path, source })?;
        }
        let path = &self.path;
        let err = |source: hound::Error| AudioError::Wav { path: path.clone(), source };
        match self.writer.as_mut() {
            Some(Writer::I16(w)) => {
                for s in samples {
                    w.write_sample(to_i16(*s)).map_err(err)?;
                }
            }
            Some(Writer::F32(w)) => {
                for s in samples {
                    w.write_sample(*s).map_err(err)?;
                }
            }
            None => {}
        }
        Ok(())
    }
    fn finish(&mut self) {
        match self.writer.take() {
            Some(Writer::I16(w)) | Some(Writer::F32(w)) => {
                let _ = w.finalize();
            }
            None => {}
        }
    }
}

/// A running WAV writer.
struct WavStream {
    inner: Option<PacedStream>,
    writer: Option<std::thread::JoinHandle<()>>,
    fast: Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
    sink: Arc<Mutex<WavSink>>,
    name: String,
}

impl ActiveStream for WavStream {
    fn stop(&mut self) {
        if let Some(mut s) = self.inner.take() {
            s.stop();
        }
        // The paced thread is gone, and its queue with it: the writer drains what is left.
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some((flag, t)) = self.fast.take() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
        if let Ok(mut s) = self.sink.lock() {
            s.finish();
        }
    }
    fn device_name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for WavStream {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Backend for WavBackend {
    fn name(&self) -> String {
        "wav".into()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError> {
        Ok(vec![DeviceInfo {
            host: "file".into(),
            name: self.path.display().to_string(),
            description: "WAV file".into(),
            output: true,
            input: false,
            default: false,
        }])
    }
    fn open_output(
        &self,
        _device: Option<&str>,
        spec: &StreamSpec,
        mut cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let (bits, fmt) = match self.format {
            WavFormat::I16 => (16, hound::SampleFormat::Int),
            WavFormat::F32 => (32, hound::SampleFormat::Float),
        };
        let wspec = hound::WavSpec {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits_per_sample: bits,
            sample_format: fmt,
        };
        let w = hound::WavWriter::create(&self.path, wspec)
            .map_err(|source| AudioError::Wav { path: self.path.clone(), source })?;
        let writer = match self.format {
            WavFormat::I16 => Writer::I16(w),
            WavFormat::F32 => Writer::F32(w),
        };
        let sink = Arc::new(Mutex::new(WavSink {
            writer: Some(writer),
            path: self.path.clone(),
            first: None,
        }));
        let mut buf = vec![0.0f32; spec.buffer_frames as usize * usize::from(spec.channels)];
        let period = spec.period();
        let name = self.path.display().to_string();
        if self.realtime {
            // Buffer k is rendered one period before it plays, like a sound card's. The file
            // is written by a thread of its own: a disk stall must not make this "sound card"
            // late and then drain the engine's ring in a burst to catch up (a real DAC never
            // does that).
            let start = self.first_frame.map(|t| t - period);
            let (tx, rx) = std::sync::mpsc::channel::<(Vec<f32>, LocalTime)>();
            let s3 = sink.clone();
            let writer = std::thread::Builder::new()
                .name("tutti-wav-write".into())
                .spawn(move || {
                    while let Ok((samples, t)) = rx.recv() {
                        if let Ok(mut sink) = s3.lock() {
                            let _ = sink.write(&samples, t);
                        }
                    }
                })
                .map_err(|e| AudioError::Device(e.to_string()))?;
            let inner = PacedStream::spawn_at("wav-out", *spec, start, move |_, due| {
                let dac_time = due + period;
                cb(&mut buf, OutputTiming { now: clock::now(), dac_time });
                let _ = tx.send((buf.clone(), dac_time));
            })?;
            Ok(Box::new(WavStream {
                inner: Some(inner),
                writer: Some(writer),
                fast: None,
                sink,
                name,
            }))
        } else {
            // As fast as the engine renders: this thread is the "hardware", and writes itself.
            let s2 = sink.clone();
            let mut tick = move |now: LocalTime, dac_time: LocalTime| {
                cb(&mut buf, OutputTiming { now, dac_time });
                if let Ok(mut sink) = s2.lock() {
                    let _ = sink.write(&buf, dac_time);
                }
            };
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let f2 = flag.clone();
            let rate = spec.sample_rate;
            let frames = u64::from(spec.buffer_frames);
            let t = std::thread::spawn(move || {
                let start = clock::now();
                let mut k = 0u64;
                while !f2.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = start + Nanos::from_frames(k * frames, rate);
                    tick(now, now + period);
                    k += 1;
                }
            });
            Ok(Box::new(WavStream { inner: None, writer: None, fast: Some((flag, t)), sink, name }))
        }
    }
    fn open_input(
        &self,
        _device: Option<&str>,
        _spec: &StreamSpec,
        _cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        Err(AudioError::Device("the WAV backend only plays; read files with FileSource".into()))
    }
}
