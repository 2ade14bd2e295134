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

use rtrb::{Consumer, Producer, RingBuffer};
use tutti_proto::{LocalTime, Nanos};

use crate::AudioError;
use crate::backend::{ActiveStream, Backend, StreamSpec};
use crate::clock::DeviceClock;
use crate::source::Source;

/// An input device as a source.
pub struct CaptureSource {
    samples: Consumer<f32>,
    stamps: Consumer<(u64, LocalTime)>,
    clock: DeviceClock,
    rate: u32,
    channels: usize,
    read_frames: u64,
    /// Reading silence on the local clock since `.0`, `.1` frames so far (the device is quiet).
    silence: Option<(LocalTime, u64)>,
    device: String,
    overruns: Arc<AtomicU64>,
}

impl core::fmt::Debug for CaptureSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaptureSource")
            .field("read_frames", &self.read_frames)
            .finish_non_exhaustive()
    }
}

/// The capturing side of a [`CaptureSource`]: a device callback or a pipe reader thread.
struct Feeder {
    samples: Producer<f32>,
    stamps: Producer<(u64, LocalTime)>,
    channels: usize,
    written: u64,
    overruns: Arc<AtomicU64>,
}

impl Feeder {
    /// Queues interleaved `data` whose first frame was captured at `captured`: copies what
    /// fits, counts what does not, stamps the chunk. Real-time safe.
    fn push(&mut self, data: &[f32], captured: LocalTime) {
        let channels = self.channels;
        let frames = (data.len() / channels) as u64;
        let fit = (self.samples.slots() / channels).min(frames as usize) * channels;
        if let Ok(chunk) = self.samples.write_chunk_uninit(fit) {
            chunk.fill_from_iter(data[..fit].iter().copied());
        }
        if (fit as u64) < frames * channels as u64 {
            self.overruns.fetch_add(frames - (fit / channels) as u64, Ordering::Relaxed);
        }
        let _ = self.stamps.push((self.written, captured));
        self.written += (fit / channels) as u64;
    }
}

/// The feeding end of a [`CaptureSource::pushed`] capture. Never blocks: what does not fit
/// (the reader two seconds behind) is counted as overruns.
pub struct CaptureFeeder(Feeder);

impl core::fmt::Debug for CaptureFeeder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaptureFeeder").field("written", &self.0.written).finish_non_exhaustive()
    }
}

impl CaptureFeeder {
    /// Queues interleaved `data` whose first frame was captured at `captured`.
    pub fn push(&mut self, data: &[f32], captured: LocalTime) {
        self.0.push(data, captured);
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
        let (mut feeder, source) =
            Self::pair(device.unwrap_or("default"), spec.sample_rate, spec.channels.into());
        let stream = backend.open_input(
            device,
            spec,
            Box::new(move |data, t| feeder.push(data, t.captured)),
        )?;
        Ok((source, stream))
    }

    /// Captures a live byte stream (a pipe: `parec | tutti stream --stdin-live`) of `codec` PCM as
    /// if it were a device: a thread reads it as it comes and stamps every chunk with its
    /// arrival (its first frame was written a chunk's duration before), and the reader's
    /// clock is fitted like a device's. What was already queued when it starts (the pipe's
    /// backlog, written before anyone read) is dropped: it is late, and playing it would
    /// add its length to the latency for good. A frame is taken to be heard where it comes
    /// from `heard_after` its arrival: a monitor's data comes out of its sink that much before
    /// the sink plays it (its latency); a producer that delivers late, negative.
    pub fn from_reader<R>(
        mut reader: R,
        name: &str,
        codec: tutti_proto::Codec,
        rate: u32,
        channels: usize,
        heard_after: Nanos,
    ) -> Result<Self, AudioError>
    where
        R: std::io::Read + std::os::fd::AsFd + Send + 'static,
    {
        let Some(sample_bytes) = codec.pcm_bytes() else {
            return Err(AudioError::Config(
                "raw input must be PCM: use s16le, s24le or f32le".into(),
            ));
        };
        let (mut feeder, source) = Self::pair(name, rate, channels);
        let frame_bytes = sample_bytes * source.channels;
        std::thread::Builder::new()
            .name("tutti-pipe-reader".into())
            .spawn(move || {
                let mut bytes = vec![0u8; frame_bytes * (rate as usize / 100).max(1)];
                let mut carry = 0usize;
                let mut pcm = Vec::new();
                // The backlog: whatever is queued now.
                let mut backlog = rustix::io::ioctl_fionread(&reader).unwrap_or(0) as usize;
                while backlog > 0 {
                    let n = backlog.min(bytes.len());
                    match reader.read(&mut bytes[..n]) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => backlog -= k,
                    }
                }
                loop {
                    let n = match reader.read(&mut bytes[carry..]) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    let now = crate::clock::now();
                    let have = carry + n;
                    let whole = have / frame_bytes * frame_bytes;
                    pcm.clear();
                    crate::format::decode_pcm(codec, &bytes[..whole], &mut pcm);
                    let frames = (whole / frame_bytes) as u64;
                    bytes.copy_within(whole..have, 0);
                    carry = have - whole;
                    feeder.push(&pcm, now + heard_after - Nanos::from_frames(frames, rate));
                }
            })
            .map_err(|source| AudioError::Io { what: "starting the reader thread", source })?;
        Ok(source)
    }

    /// A capture fed by its owner (a browser's microphone arriving over a WebSocket): the
    /// [`CaptureFeeder`] pushes interleaved frames with the local instant their first frame
    /// was captured, and the source reads them as it would a device's.
    pub fn pushed(name: &str, rate: u32, channels: usize) -> (CaptureFeeder, Self) {
        let (feeder, source) = Self::pair(name, rate, channels);
        (CaptureFeeder(feeder), source)
    }

    /// A source named `device` of `channels` channels at `rate` Hz, and the [`Feeder`] that
    /// fills it (two seconds of slack between them).
    fn pair(device: &str, rate: u32, channels: usize) -> (Feeder, Self) {
        let channels = channels.max(1);
        let (samples_tx, samples) = RingBuffer::<f32>::new(rate as usize * 2 * channels);
        let (stamps_tx, stamps) = RingBuffer::<(u64, LocalTime)>::new(4096);
        let overruns = Arc::new(AtomicU64::new(0));
        let feeder = Feeder {
            samples: samples_tx,
            stamps: stamps_tx,
            channels,
            written: 0,
            overruns: overruns.clone(),
        };
        let source = CaptureSource {
            samples,
            stamps,
            clock: DeviceClock::new(rate),
            rate,
            channels,
            read_frames: 0,
            silence: None,
            device: device.to_owned(),
            overruns,
        };
        (feeder, source)
    }

    /// The local instant the next frame [`read`](Source::read) returns was captured: the
    /// device's sample clock fitted through every chunk's timestamp (see [`DeviceClock`]), so
    /// the timestamps' jitter does not reach the stream's presentation times.
    pub fn next_capture_time(&mut self) -> Option<LocalTime> {
        while let Ok((frame, t)) = self.stamps.pop() {
            self.clock.update(frame, t);
        }
        match self.silence {
            Some((start, done)) => Some(start + Nanos::from_frames(done, self.rate)),
            _ => self.clock.time_of(self.read_frames),
        }
    }

    /// The device's name, as asked for.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Whether the device has delivered nothing for [`QUIET`] and silence is streamed instead.
    pub fn is_waiting(&self) -> bool {
        self.silence.is_some()
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
    /// Blocks until `frames` frames were captured (a live source never ends). A device that
    /// delivers nothing for [`QUIET`] (nothing plays into the monitored sink yet, a suspended
    /// source) is read as silence on the local clock until it delivers again: the stream goes
    /// on and players stay locked ([`CaptureSource::is_waiting`] says so).
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let want = frames * self.channels;
        if let Some((start, done)) = self.silence {
            if self.samples.slots() >= want {
                // The device is back: its own clock takes over again.
                self.silence = None;
            } else {
                let due = start + Nanos::from_frames(done + frames as u64, self.rate);
                crate::clock::sleep_until(due);
                out.resize(out.len() + want, 0.0);
                self.silence = Some((start, done + frames as u64));
                return Ok(frames);
            }
        }
        let mut got = 0;
        let mut quiet_since = crate::clock::now();
        while got < want {
            let n = self.samples.slots().min(want - got);
            if n == 0 {
                let now = crate::clock::now();
                if now - quiet_since >= QUIET {
                    // Nothing for a while: the rest of this frame is silence, and so is what
                    // follows until the device speaks again.
                    out.resize(out.len() + want - got, 0.0);
                    let device_frames = (got / self.channels) as u64;
                    self.read_frames += device_frames;
                    let synthetic = frames as u64 - device_frames;
                    self.silence =
                        Some((now - Nanos::from_frames(synthetic, self.rate), synthetic));
                    return Ok(frames);
                }
                // Sleep until the rest could be there (a device delivers in blocks; polling
                // finer only burns wake-ups), 0.5–5 ms.
                let missing = ((want - got) / self.channels) as u64;
                let wait = Nanos::from_frames(missing, self.rate)
                    .clamp(Nanos::from_micros(500), Nanos::from_millis(5));
                std::thread::sleep(wait.to_duration());
                continue;
            }
            if let Ok(chunk) = self.samples.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                out.extend_from_slice(a);
                out.extend_from_slice(b);
                chunk.commit_all();
            }
            got += n;
            quiet_since = crate::clock::now();
        }
        self.read_frames += frames as u64;
        Ok(frames)
    }
}

/// How long a capture device may deliver nothing before it is read as silence.
pub const QUIET: Nanos = Nanos::from_millis(250);

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    /// `n` frames of 16-bit stereo PCM whose left sample counts from `from`.
    fn pcm(from: i16, n: i16) -> Vec<u8> {
        (from..from + n).flat_map(|v| [v.to_le_bytes(), v.to_le_bytes()].concat()).collect()
    }

    #[test]
    fn a_pipe_drops_its_backlog_and_dates_frames_when_they_are_heard() {
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        // Written before anyone reads: late, dropped.
        writer.write_all(&pcm(1, 480)).unwrap();
        let heard_after = Nanos::from_millis(20);
        let mut cap = CaptureSource::from_reader(
            reader,
            "pipe",
            tutti_proto::Codec::Pcm16,
            48_000,
            2,
            heard_after,
        )
        .expect("reader starts");
        std::thread::sleep(Duration::from_millis(50));
        let sent = crate::clock::now();
        writer.write_all(&pcm(1_000, 480)).unwrap();
        let mut out = Vec::new();
        assert_eq!(cap.read(&mut out, 480).unwrap(), 480);
        assert_eq!((out[0] * 32_768.0).round(), 1_000.0, "the backlog was dropped");
        // Its first frame arrived at `sent` (as its last), a chunk's duration earlier, and is
        // heard `heard_after` later.
        let at = cap.next_capture_time().map(|t| t - Nanos::from_frames(480, 48_000));
        let expected = sent + heard_after - Nanos::from_frames(480, 48_000);
        let off = at.map(|t| (t - expected).abs());
        assert!(off.is_some_and(|o| o < Nanos::from_millis(10)), "dated {off:?} off");
    }
}
