//! The recorder: drains a PulseAudio `module-pipe-sink` FIFO at exactly [`RATE`] frames per
//! second of `CLOCK_MONOTONIC`, so the sink plays on that clock and a frame's index in the
//! recording *is* its time. Every sink under test is a `module-remap-sink` onto one channel of
//! that pipe sink: all of them are recorded on one sample clock, in one file.
//!
//! The FIFO is shrunk to a page (a few ms of audio) so the sink's latency is small and steady,
//! like a sound card's. Every 100 ms the recorder logs how full the pipe is (its latency) and
//! how late it is against its schedule; a read that had to wait for the server is counted
//! (the sink starved: the server itself fell behind).
//!
//! It can also be the **room** a calibration is heard in ([`Room`]): a microphone that hears
//! some channels (the players' sinks), each after a hidden latency of its own, summed, with
//! white noise, written in real time into a `module-pipe-source`'s FIFO. Neither the players
//! nor the calibration can see those latencies; the recording shows, frame for frame, whether
//! the calibration made the players' sound arrive together.

use crate::LabError;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use rustix::thread::{ClockId, clock_nanosleep_absolute};
use rustix::time::{Timespec, clock_gettime};

use crate::signal::RATE;

/// How to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Channels of the pipe sink.
    pub channels: usize,
    /// Channels kept (the first ones); the rest are read and dropped.
    pub keep: usize,
    /// How long, seconds.
    pub seconds: f64,
    /// Pipe size asked for, bytes (rounded up by the kernel to a page).
    pub pipe_bytes: usize,
    /// Bytes per sample of the sink's format (2: s16le, 4: float32le); kept as they are.
    pub sample_bytes: usize,
    /// A microphone in a room of some channels (a calibration's), if any.
    pub room: Option<Room>,
}

/// A microphone in a room of some channels (see the module docs).
#[derive(Clone, Debug)]
pub struct Room {
    /// The microphone's FIFO (a `module-pipe-source` reading mono s16le at [`RATE`]).
    pub fifo: std::path::PathBuf,
    /// The channels it hears, and how late, frames.
    pub heard: Vec<(usize, usize)>,
    /// Each channel's gain at the microphone.
    pub gain: f32,
    /// White noise added, RMS (full scale 1.0).
    pub noise_rms: f32,
    /// A latency that changes while recording (a TV switching modes): at this many seconds,
    /// the `.1`-th heard channel's delay changes by `.2` frames.
    pub change: Option<(f64, usize, i64)>,
}

/// The room's state while recording.
struct Mic {
    pipe: File,
    heard: Vec<(usize, usize)>,
    gain: f32,
    noise_rms: f32,
    /// The last frames of each heard channel, a ring as long as the longest delay.
    history: Vec<Vec<f32>>,
    at: usize,
    rng: u64,
    out: Vec<u8>,
    dropped: u64,
    /// Frames heard so far, and the change still to come (frame, channel, new delay).
    frames: u64,
    change: Option<(u64, usize, usize)>,
}

impl Mic {
    fn open(room: &Room) -> Result<Mic, LabError> {
        let pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(&room.fifo)
            .map_err(|e| LabError::io(&room.fifo, e))?;
        // Never wait for the server: what does not fit is dropped and counted.
        let flags =
            rustix::fs::fcntl_getfl(&pipe).map_err(|e| LabError::io(&room.fifo, e.into()))?;
        rustix::fs::fcntl_setfl(&pipe, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| LabError::io(&room.fifo, e.into()))?;
        let change = room.change.and_then(|(at_s, k, by)| {
            let now = room.heard.get(k)?.1 as i64;
            Some(((at_s * f64::from(RATE)) as u64, k, (now + by).max(0) as usize))
        });
        let longest =
            room.heard.iter().map(|&(_, d)| d).chain(change.map(|(_, _, d)| d)).max().unwrap_or(0)
                + 1;
        Ok(Mic {
            pipe,
            heard: room.heard.clone(),
            gain: room.gain,
            noise_rms: room.noise_rms,
            history: vec![vec![0.0; longest]; room.heard.len()],
            at: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            out: Vec::new(),
            dropped: 0,
            frames: 0,
            change,
        })
    }

    /// Hears `frames` (interleaved, `channels` of `sample_bytes` each) and writes what the
    /// microphone picks up.
    fn hear(&mut self, frames: &[u8], channels: usize, sample_bytes: usize) {
        self.out.clear();
        let len = self.history.first().map_or(1, Vec::len);
        for frame in frames.chunks_exact(channels * sample_bytes) {
            if let Some((at, k, delay)) = self.change
                && self.frames >= at
            {
                self.heard[k].1 = delay;
                self.change = None;
            }
            self.frames += 1;
            let mut v = 0.0f32;
            for (k, &(ch, delay)) in self.heard.iter().enumerate() {
                let b = &frame[ch * sample_bytes..(ch + 1) * sample_bytes];
                let x = match sample_bytes {
                    2 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
                    _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                };
                self.history[k][self.at] = x;
                v += self.history[k][(self.at + len - delay) % len] * self.gain;
            }
            self.at = (self.at + 1) % len;
            // xorshift64*: uniform in ±0.5, scaled to the RMS asked for.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let u =
                (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f32 / (1u64 << 53) as f32;
            v += (u - 0.5) * 12f32.sqrt() * self.noise_rms;
            self.out.extend_from_slice(&((v.clamp(-1.0, 1.0) * 32_767.0) as i16).to_le_bytes());
        }
        match self.pipe.write(&self.out) {
            Ok(n) => self.dropped += ((self.out.len() - n) / 2) as u64,
            Err(_) => self.dropped += (self.out.len() / 2) as u64,
        }
    }
}

/// What the recorder saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RecordSummary {
    /// `CLOCK_MONOTONIC` of frame 0, ns.
    pub t0_ns: u64,
    /// Frames recorded.
    pub frames: u64,
    /// Pipe size the kernel gave, bytes.
    pub pipe_bytes: usize,
    /// Reads that waited ≥ 1 ms for the server (the sink starved).
    pub starved_reads: u64,
    /// Latest the reader ever was against its schedule, µs.
    pub max_late_us: f64,
    /// Pipe fill (the sink's latency), median and max, µs.
    pub pipe_latency_us: (f64, f64),
    /// Frames the room's microphone could not write (its reader fell behind).
    pub mic_dropped: u64,
}

fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn sleep_until_ns(t: u64) {
    let ts = Timespec { tv_sec: (t / 1_000_000_000) as i64, tv_nsec: (t % 1_000_000_000) as _ };
    let _ = clock_nanosleep_absolute(ClockId::Monotonic, &ts);
}

/// Records `fifo` into `out` (interleaved, in the sink's format, `keep` channels) and `log` (TSV: time since
/// frame 0 in ms, frames read, bytes in the pipe, µs late).
pub fn record(
    fifo: &Path,
    out: &Path,
    log: Option<&Path>,
    opts: &RecordOptions,
) -> Result<RecordSummary, LabError> {
    let mut pipe = File::open(fifo).map_err(|e| LabError::io(fifo, e))?;
    // The pipe shrinks only when what it holds fits: drain it and try again (the server
    // refills it meanwhile).
    let mut junk = vec![0u8; 1 << 20];
    let mut tries = 0;
    let pipe_bytes = loop {
        let queued = rustix::io::ioctl_fionread(&pipe).unwrap_or(0) as usize;
        let n = queued.min(junk.len());
        if n > 0 {
            pipe.read_exact(&mut junk[..n]).map_err(|e| LabError::io(fifo, e))?;
        }
        match rustix::pipe::fcntl_setpipe_size(&pipe, opts.pipe_bytes) {
            Ok(n) => break n,
            Err(e) if e == rustix::io::Errno::BUSY && tries < 1000 => tries += 1,
            Err(errno) => return Err(LabError::Resize { path: fifo.to_owned(), errno }),
        }
    };
    let mut writer =
        BufWriter::with_capacity(1 << 20, File::create(out).map_err(|e| LabError::io(out, e))?);
    let mut log = match log {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(|e| LabError::io(p, e))?)),
        None => None,
    };
    let frame_bytes = opts.channels * opts.sample_bytes;
    let keep_bytes = opts.keep * opts.sample_bytes;
    let total = (opts.seconds * f64::from(RATE)) as u64;
    // Whatever the server wrote before we started is old: drop it, then start the clock.
    let queued = rustix::io::ioctl_fionread(&pipe).unwrap_or(0) as usize;
    let drop = (queued - queued % frame_bytes).min(junk.len());
    if drop > 0 {
        pipe.read_exact(&mut junk[..drop]).map_err(|e| LabError::io(fifo, e))?;
    }
    let mut mic = opts.room.as_ref().map(Mic::open).transpose()?;
    let t0 = mono_ns();
    let mut summary = RecordSummary { t0_ns: t0, pipe_bytes, ..Default::default() };
    let mut consumed = 0u64;
    let mut buf = vec![0u8; frame_bytes * RATE as usize / 10];
    let mut kept: Vec<u8> = Vec::with_capacity(keep_bytes * RATE as usize / 10);
    let mut fills: Vec<f64> = Vec::new();
    let mut next_log = 0u64;
    let tick = 1_000_000; // 1 ms
    let mut wake = t0;
    while consumed < total {
        wake += tick;
        sleep_until_ns(wake);
        let now = mono_ns();
        let due = ((now - t0) as u128 * u128::from(RATE) / 1_000_000_000) as u64;
        let want = (due.min(total) - consumed.min(due)) as usize;
        if want == 0 {
            continue;
        }
        let late_us = (now as f64 - wake as f64) / 1e3;
        summary.max_late_us = summary.max_late_us.max(late_us);
        let fill = rustix::io::ioctl_fionread(&pipe).unwrap_or(0) as usize;
        let mut left = want;
        while left > 0 {
            let n = left.min(buf.len() / frame_bytes);
            let before = mono_ns();
            pipe.read_exact(&mut buf[..n * frame_bytes]).map_err(|e| LabError::io(fifo, e))?;
            if mono_ns() - before >= 1_000_000 {
                summary.starved_reads += 1;
            }
            kept.clear();
            for frame in buf[..n * frame_bytes].chunks_exact(frame_bytes) {
                kept.extend_from_slice(&frame[..keep_bytes]);
            }
            writer.write_all(&kept).map_err(|e| LabError::io(out, e))?;
            if let Some(m) = mic.as_mut() {
                m.hear(&buf[..n * frame_bytes], opts.channels, opts.sample_bytes);
            }
            left -= n;
        }
        consumed += want as u64;
        let fill_us = (fill / frame_bytes) as f64 * 1e6 / f64::from(RATE);
        fills.push(fill_us);
        if now - t0 >= next_log {
            next_log += 100_000_000;
            if let Some(l) = log.as_mut() {
                let _ =
                    writeln!(l, "{:.1}\t{consumed}\t{fill}\t{late_us:.0}", (now - t0) as f64 / 1e6);
            }
        }
    }
    writer.flush().map_err(|e| LabError::io(out, e))?;
    if let Some(l) = log.as_mut() {
        let _ = l.flush();
    }
    fills.sort_by(f64::total_cmp);
    summary.frames = consumed;
    summary.mic_dropped = mic.map_or(0, |m| m.dropped);
    summary.pipe_latency_us =
        (fills.get(fills.len() / 2).copied().unwrap_or(0.0), fills.last().copied().unwrap_or(0.0));
    Ok(summary)
}
