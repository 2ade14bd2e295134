//! Capture from an input device (a microphone, or the monitor of the system's output: "play
//! the computer's sound everywhere") as a [`Source`], with the local instant each frame was
//! captured.
//!
//! The input callback only pushes samples into an `rtrb` ring (dropping, and counting, what
//! does not fit); the reading side re-chunks them (capture callbacks are small and irregular:
//! PulseAudio monitors often deliver 24 frames) and keeps the capture clock: the instant of
//! the next frame to read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtrb::{Consumer, RingBuffer};
use tutti_proto::{LocalTime, Nanos};

use crate::AudioError;
use crate::backend::{ActiveStream, Backend, StreamSpec};
use crate::source::Source;

/// An input device as a source.
pub struct CaptureSource {
    samples: Consumer<f32>,
    stamps: Consumer<(u64, LocalTime)>,
    peeked: Option<(u64, LocalTime)>,
    rate: u32,
    channels: usize,
    read_frames: u64,
    anchor: Option<(u64, LocalTime)>,
    overruns: Arc<AtomicU64>,
}

impl core::fmt::Debug for CaptureSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaptureSource")
            .field("read_frames", &self.read_frames)
            .finish_non_exhaustive()
    }
}

impl CaptureSource {
    /// Opens `device` (default when `None`) on `backend` and starts capturing. The stream
    /// handle stays with the caller (on the thread that opened it); dropping it stops capture.
    pub fn open(
        backend: &dyn Backend,
        device: Option<&str>,
        spec: &StreamSpec,
    ) -> Result<(Self, Box<dyn ActiveStream>), AudioError> {
        let channels = usize::from(spec.channels.max(1));
        // Two seconds of slack between the device and the reader.
        let (mut tx, samples) = RingBuffer::<f32>::new(spec.sample_rate as usize * 2 * channels);
        let (mut stamp_tx, stamps) = RingBuffer::<(u64, LocalTime)>::new(4096);
        let overruns = Arc::new(AtomicU64::new(0));
        let over = overruns.clone();
        let mut written = 0u64;
        let stream = backend.open_input(
            device,
            spec,
            Box::new(move |data, t| {
                let frames = (data.len() / channels) as u64;
                // Real-time side: copy what fits, count what does not, stamp the chunk.
                let fit = (tx.slots() / channels).min(frames as usize) * channels;
                if let Ok(chunk) = tx.write_chunk_uninit(fit) {
                    chunk.fill_from_iter(data[..fit].iter().copied());
                }
                if (fit as u64) < frames * channels as u64 {
                    over.fetch_add(frames - (fit / channels) as u64, Ordering::Relaxed);
                }
                let _ = stamp_tx.push((written, t.captured));
                written += (fit / channels) as u64;
            }),
        )?;
        let source = CaptureSource {
            samples,
            stamps,
            peeked: None,
            rate: spec.sample_rate,
            channels,
            read_frames: 0,
            anchor: None,
            overruns,
        };
        Ok((source, stream))
    }

    /// The local instant the next frame [`read`](Source::read) returns was captured (from the
    /// newest device stamp at or before it).
    pub fn next_capture_time(&mut self) -> Option<LocalTime> {
        loop {
            let next = self.peeked.take().or_else(|| self.stamps.pop().ok());
            match next {
                Some(s) if s.0 <= self.read_frames => self.anchor = Some(s),
                other => {
                    self.peeked = other;
                    break;
                }
            }
        }
        let (f, t) = self.anchor?;
        Some(t + Nanos::from_frames(self.read_frames - f, self.rate))
    }

    /// Frames lost because the reader fell more than two seconds behind.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }

    /// Frames waiting to be read.
    pub fn available(&self) -> usize {
        self.samples.slots() / self.channels
    }
}

impl Source for CaptureSource {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    /// Blocks until `frames` frames were captured (a live source never ends).
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let want = frames * self.channels;
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < want {
            let n = self.samples.slots().min(want - got);
            if n == 0 {
                if std::time::Instant::now() > deadline {
                    return Err(AudioError::Device(
                        "the input device delivered nothing for 5 s".into(),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
                continue;
            }
            if let Ok(chunk) = self.samples.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                out.extend_from_slice(a);
                out.extend_from_slice(b);
                chunk.commit_all();
            }
            got += n;
        }
        self.read_frames += frames as u64;
        Ok(frames)
    }
}
