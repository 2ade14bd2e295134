use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

#[cfg(not(target_has_atomic = "64"))]
use portable_atomic::AtomicU64;
#[cfg(target_has_atomic = "64")]
use std::sync::atomic::AtomicU64;

use futures::executor::block_on;
use futures::FutureExt as _;
use pulseaudio::{protocol, AsPlaybackSource};

use crate::{
    host::{emit_error, latch::Latch, ErrorCallbackArc},
    traits::StreamTrait,
    Data, Error, ErrorKind, FrameCount, InputCallbackInfo, InputStreamTimestamp,
    OutputCallbackInfo, OutputStreamTimestamp, SampleFormat, StreamInstant,
};

// Tutti: how often the client asks the server for a stream's timing (libpulse's auto timing
// updates: the reactor asks by itself on its own timer, each interval ±50 % at random, so the
// requests sample every phase of a sink that renders in blocks). Timestamps come from the
// byte count between replies; replies only sample the device latency, whose jitter (that
// sawtooth) averages out over many of them. Was 100 ms with a request after every callback.
const LATENCY_MAX_INTERVAL: Duration = Duration::from_millis(40);
// Tutti: a playback stream asks twice as often: a player's callbacks (~20 ms apart) then
// mostly carry a fresh reading, and its DAC map finds the band's middle sooner.
const PLAYBACK_LATENCY_INTERVAL: Duration = Duration::from_millis(20);

// Tells the stream's worker thread that the stream is being dropped (not lost).
struct LatencyHandle {
    // Cancellation on drop
    cancel: Arc<AtomicBool>,
}

impl LatencyHandle {
    fn new() -> Self {
        Self {
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

enum StreamInner {
    Playback(pulseaudio::PlaybackStream, Instant, LatencyHandle),
    Record(pulseaudio::RecordStream, Instant, LatencyHandle),
}

pub struct Stream {
    inner: StreamInner,
    workers: Vec<std::thread::JoinHandle<()>>,
    latch: Latch,
}

impl Drop for Stream {
    fn drop(&mut self) {
        match &mut self.inner {
            StreamInner::Playback(stream, _, handle) => {
                handle.cancel();
                // Help the play_all driver thread terminate by
                // queueing a delete, which causes the reactor to drop
                // the source's eof_tx. We need to do this because
                // poll_read always reports a non-empty buffer.
                let _ = stream.clone().delete().now_or_never();
            }
            StreamInner::Record(stream, _, handle) => {
                handle.cancel();
                // The watch thread waits for the stream to be gone: delete it now.
                let _ = stream.clone().delete().now_or_never();
            }
        }

        // Unpark the threads in case they're sleeping.
        self.signal_ready();

        for handle in self.workers.drain(..) {
            // Prevent self-join: a worker thread may surface an error
            // through the user's error_callback, and that callback may
            // drop the Stream — in which case we'd be joining ourselves.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl StreamTrait for Stream {
    fn play(&self) -> Result<(), Error> {
        match &self.inner {
            StreamInner::Playback(stream, _, _) => {
                block_on(stream.uncork()).map_err(Error::from)?;
                stream.timing_update_now();
            }
            StreamInner::Record(stream, _, _) => {
                // Not waiting for the first data: a source that is silent (the
                // monitor of an idle, suspended sink) would block `play()`
                // forever. Data arrives through the callback when it comes.
                block_on(stream.uncork()).map_err(Error::from)?;
                stream.timing_update_now();
            }
        }
        Ok(())
    }

    fn pause(&self) -> Result<(), Error> {
        let res = match &self.inner {
            StreamInner::Playback(stream, _, _) => block_on(stream.cork()),
            StreamInner::Record(stream, _, _) => block_on(stream.cork()),
        };
        res.map_err(Error::from)?;
        match &self.inner {
            StreamInner::Playback(stream, _, _) => stream.timing_update_now(),
            StreamInner::Record(stream, _, _) => stream.timing_update_now(),
        }
        Ok(())
    }

    fn now(&self) -> StreamInstant {
        let start = match &self.inner {
            StreamInner::Playback(_, start, _) | StreamInner::Record(_, start, _) => *start,
        };
        let elapsed = start.elapsed();
        StreamInstant::new(elapsed.as_secs(), elapsed.subsec_nanos())
    }

    fn buffer_size(&self) -> Result<FrameCount, Error> {
        let (spec, bytes) = match &self.inner {
            StreamInner::Playback(s, _, _) => (
                s.sample_spec(),
                s.buffer_attr().minimum_request_length as usize,
            ),
            StreamInner::Record(s, _, _) => {
                (s.sample_spec(), s.buffer_attr().fragment_size as usize)
            }
        };
        let frame_size = spec.channels as usize * spec.format.bytes_per_sample();
        Ok((bytes / frame_size) as _)
    }
}

impl Stream {
    pub fn new_playback<D, E>(
        client: pulseaudio::Client,
        params: protocol::PlaybackStreamParams,
        mut data_callback: D,
        error_callback: E,
    ) -> Result<Self, Error>
    where
        D: FnMut(&mut Data, &OutputCallbackInfo) + Send + 'static,
        E: FnMut(Error) + Send + 'static,
    {
        let start = Instant::now();

        // When byte 0 of the stream plays (ns since `start`; see `Origin`), from the latest
        // timing reply. Byte `x` then plays at `origin + x / byte rate`.
        let origin = Arc::new(Origin::new());
        let origin_clone = origin.clone();
        let sample_spec = params.sample_spec;
        let pa_format = sample_spec.format;

        let format: SampleFormat = pa_format.try_into().map_err(|_| {
            Error::with_message(
                ErrorKind::UnsupportedConfig,
                "Sample format is not supported",
            )
        })?;

        // Silence for unsigned formats is the midpoint, not zero. Among
        // PulseAudio's supported formats, only U8 is unsigned and has a
        // single-byte repeatable silence representation (0x80). Multi-byte
        // unsigned formats (U16, U32, ...) are not currently supported.
        let silence_byte = if format == SampleFormat::U8 {
            0x80u8
        } else {
            0u8
        };

        let handle = LatencyHandle::new();

        // Bytes handed to the server before the current callback.
        let mut written: u64 = 0;

        // Wrap the write callback to match the pulseaudio signature.
        let callback = move |buf: &mut [u8]| {
            let elapsed = Instant::now().saturating_duration_since(start);

            // This buffer's first byte is byte `written` of the stream: it plays at the
            // origin plus that many bytes (never before now).
            let playback_time = origin_clone
                .at(written, sample_spec)
                .map_or(elapsed, |t| t.max(elapsed));

            let timestamp = OutputStreamTimestamp {
                callback: StreamInstant::new(elapsed.as_secs(), elapsed.subsec_nanos()),
                playback: StreamInstant::new(playback_time.as_secs(), playback_time.subsec_nanos()),
            };

            // Preemptively fill the buffer with silence in case the user
            // callback doesn't fill it completely (cpal's API doesn't allow
            // short writes).
            buf.fill(silence_byte);

            let bps = sample_spec.format.bytes_per_sample();
            let n_samples = buf.len() / bps;

            // SAFETY: we calculated the number of samples based on
            // `sample_spec.format`, and `format` is directly derived from (and
            // equivalent to) `sample_spec.format`.
            let mut data = unsafe { Data::from_parts(buf.as_mut_ptr().cast(), n_samples, format) };

            data_callback(&mut data, &OutputCallbackInfo { timestamp });
            written += buf.len() as u64;

            // No timing request per callback: the byte count keeps the timestamps exact
            // between the client's timing replies (about every PLAYBACK_LATENCY_INTERVAL, and
            // at once after play and pause), without a round trip every few milliseconds.

            // We always consider the full buffer filled, because cpal's
            // user-facing API doesn't allow short writes.
            buf.len()
        };

        let stream = block_on(client.create_playback_stream(params, callback.as_playback_source()))
            .map_err(Error::from)?;

        // Shared with the worker thread, which surfaces errors to the user.
        let error_callback: ErrorCallbackArc = Arc::new(Mutex::new(error_callback));

        // Spawn a thread to drive the stream future. It will exit automatically
        // when the stream is stopped by the user.
        let stream_clone = stream.clone();
        let error_callback_clone = error_callback.clone();
        let cancel_driver = handle.cancel.clone();

        // The latch is released just before the `Stream` is returned so the driver and latency
        // threads cannot fire any callbacks before the caller has the handle.
        let mut latch = Latch::new();
        let waiter_driver = latch.waiter();

        let driver_handle = std::thread::spawn(move || {
            waiter_driver.wait();
            if let Err(e) = block_on(stream_clone.play_all()) {
                // A server playback error is expected when the client
                // closes their stream. No need to report it back to
                // the client.
                if !cancel_driver.load(Ordering::Relaxed) {
                    emit_error(&error_callback_clone, Error::from(e));
                }
            }
        });

        // The client asks for the timing by itself, in the wake-up that writes the data (no
        // thread of ours wakes to poll): each reply fixes where byte 0 plays.
        stream
            .set_timing_updates(PLAYBACK_LATENCY_INTERVAL, move |asked, timing_info| {
                // The byte at the read index is being rendered into the sink now: it plays
                // after the sink's latency.
                let measured =
                    measured_at(asked, timing_info.remote_time).saturating_duration_since(start);
                origin.set(
                    measured.as_nanos() as i64 + timing_info.sink_usec as i64 * 1_000
                        - bytes_ns(timing_info.read_offset, sample_spec),
                );
            })
            .map_err(Error::from)?;

        latch.add_thread(driver_handle.thread().clone());
        Ok(Self {
            inner: StreamInner::Playback(stream, start, handle),
            workers: vec![driver_handle],
            latch,
        })
    }

    pub fn new_record<D, E>(
        client: pulseaudio::Client,
        params: protocol::RecordStreamParams,
        mut data_callback: D,
        mut error_callback: E,
    ) -> Result<Self, Error>
    where
        D: FnMut(&Data, &InputCallbackInfo) + Send + 'static,
        E: FnMut(Error) + Send + 'static,
    {
        let start = Instant::now();

        // When byte 0 of the stream was captured (ns since `start`; see `Origin`), from the
        // latest timing reply. Byte `x` was captured at `origin + x / byte rate`.
        let origin = Arc::new(Origin::new());
        let origin_clone = origin.clone();
        let sample_spec = params.sample_spec;
        let pa_format = sample_spec.format;

        let format: SampleFormat = pa_format.try_into().map_err(|_| {
            Error::with_message(
                ErrorKind::UnsupportedConfig,
                "Sample format is not supported",
            )
        })?;

        let handle = LatencyHandle::new();

        // Bytes received before the current callback.
        let mut read: u64 = 0;

        let callback = move |buf: &[u8]| {
            let elapsed = Instant::now().saturating_duration_since(start);

            // This buffer's first byte is byte `read` of the stream (never captured after
            // now).
            let capture_time = origin_clone
                .at(read, sample_spec)
                .map_or(elapsed, |t| t.min(elapsed));
            read += buf.len() as u64;

            let timestamp = InputStreamTimestamp {
                callback: StreamInstant::new(elapsed.as_secs(), elapsed.subsec_nanos()),
                capture: StreamInstant::new(capture_time.as_secs(), capture_time.subsec_nanos()),
            };

            let bps = sample_spec.format.bytes_per_sample();
            let n_samples = buf.len() / bps;

            // SAFETY: we calculated the number of samples based on
            // `sample_spec.format`, and `format` is directly derived from (and
            // equivalent to) `sample_spec.format`. The pointer is cast from
            // *const to *mut, but cpal's Data type for input streams only
            // exposes shared references (&[T]), so no mutation occurs.
            let data = unsafe { Data::from_parts(buf.as_ptr() as *mut _, n_samples, format) };

            data_callback(&data, &InputCallbackInfo { timestamp });

            // No timing request per callback (see the playback side).
        };

        let stream =
            block_on(client.create_record_stream(params, callback)).map_err(Error::from)?;

        // The client asks for the timing by itself, in the wake-up that reads the data (no
        // thread of ours wakes to poll): each reply fixes when byte 0 was captured.
        stream
            .set_timing_updates(LATENCY_MAX_INTERVAL, move |asked, timing_info| {
                // The byte at the write index entered the record queue now, the source's
                // latency after it was captured. A monitor source "captures" what its sink
                // renders: the sound is heard the sink's latency later (the server reports it
                // as `sink_usec` for a monitor, 0 otherwise), and that is its capture instant.
                let measured =
                    measured_at(asked, timing_info.remote_time).saturating_duration_since(start);
                origin.set(
                    measured.as_nanos() as i64 - timing_info.source_usec as i64 * 1_000
                        + timing_info.sink_usec as i64 * 1_000
                        - bytes_ns(timing_info.write_offset, sample_spec),
                );
            })
            .map_err(Error::from)?;

        // A thread that sleeps until the stream is gone: if the connection is lost rather
        // than the stream dropped, the user hears of it.
        let cancel_thread = handle.cancel.clone();
        let stream_clone = stream.clone();
        let mut latch = Latch::new();
        let waiter_watch = latch.waiter();
        let watch_handle = std::thread::spawn(move || {
            waiter_watch.wait();
            block_on(stream_clone.closed());
            if !cancel_thread.load(Ordering::Relaxed) {
                error_callback(Error::with_message(
                    ErrorKind::DeviceNotAvailable,
                    "the connection to the PulseAudio server was lost",
                ));
            }
        });

        latch.add_thread(watch_handle.thread().clone());
        Ok(Self {
            inner: StreamInner::Record(stream, start, handle),
            workers: vec![watch_handle],
            latch,
        })
    }

    /// Releases the latch so the worker thread can begin processing audio callbacks.
    pub(crate) fn signal_ready(&self) {
        self.latch.release();
    }
}

/// The instant the server measured a timing reply, on the monotonic clock.
///
/// The reply carries the server's wall-clock time of the measurement (`remote_time`). On
/// the same machine that clock is ours, so the measurement instant is exact, however late
/// this thread woke to read the reply (taking the reply's arrival as the instant makes every
/// latency read late by that wake-up, up to milliseconds on a busy machine). A server
/// elsewhere (or a clock step) puts `remote_time` outside the request's round trip: then the
/// round trip's midpoint is the best guess.
fn measured_at(asked: Instant, remote_time: std::time::SystemTime) -> Instant {
    let now = Instant::now();
    let wall = std::time::SystemTime::now();
    let midpoint = asked + now.saturating_duration_since(asked) / 2;
    match wall.duration_since(remote_time) {
        Ok(age) if now.checked_sub(age).is_some_and(|t| t >= asked) => now - age,
        _ => midpoint,
    }
}

/// Where byte 0 of a stream is on the stream's own timeline (ns since the stream's
/// `start`, possibly negative), from the latest timing reply; one atomic, so a callback never
/// reads half of an update.
struct Origin(AtomicU64);

impl Origin {
    const UNKNOWN: u64 = i64::MIN as u64;

    fn new() -> Self {
        Origin(AtomicU64::new(Self::UNKNOWN))
    }

    fn set(&self, ns: i64) {
        self.0.store(ns as u64, Ordering::Relaxed);
    }

    /// The instant (since `start`) of byte `offset`, once a timing reply came.
    fn at(&self, offset: u64, spec: protocol::SampleSpec) -> Option<Duration> {
        let origin = self.0.load(Ordering::Relaxed);
        if origin == Self::UNKNOWN {
            return None;
        }
        let ns = (origin as i64).saturating_add(bytes_ns(offset as i64, spec));
        Some(Duration::from_nanos(ns.max(0) as u64))
    }
}

/// How long `bytes` of audio of `spec` last, ns.
fn bytes_ns(bytes: i64, spec: protocol::SampleSpec) -> i64 {
    let per_second = i128::from(spec.sample_rate)
        * i128::from(spec.channels)
        * spec.format.bytes_per_sample() as i128;
    if per_second == 0 {
        return 0;
    }
    (i128::from(bytes) * 1_000_000_000 / per_second) as i64
}
