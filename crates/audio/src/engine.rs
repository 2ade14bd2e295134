//! The playout engine, split across the real-time boundary.
//!
//! - [`Renderer`] lives in the device callback: it copies ready samples out of an `rtrb` ring,
//!   applies the volume ramp, fills silence (and counts an underrun) when the ring runs dry,
//!   and reports where the DAC is. Atomics and arithmetic only: no locks, no allocation, no
//!   I/O, no logging.
//! - [`OutputEngine`] lives on the media thread: it learns from those reports which local
//!   instant each future ring frame will reach the DAC, asks its [`Timeline`] what should be
//!   heard then, decodes, resamples through the [`DriftFollower`], and keeps the ring a few
//!   blocks ahead.
//!
//! A ring frame `r` reaches the DAC as device frame `r + (silence inserted so far)`; device
//! frames map to local time through the callbacks' timestamps (the DAC's own clock, seen from
//! the local one), so drift between the two is measured, not assumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rtrb::{Consumer, Producer, RingBuffer};
use tutti_proto::playout::Render;
use tutti_proto::{LocalTime, Nanos};

use crate::clock::DeviceClock;
use crate::cue::{Chime, Cue, OverlayMix};
use crate::pcm::PcmBuffer;
use crate::ramp::{GainRamp, SharedGain};
use crate::resample::{CHUNK, DriftFollower, FollowStats};

/// What should be heard when: implemented by the network player (through the sync core) and
/// by local playback.
pub trait Timeline: Send {
    /// The plan for a block of `frames` device frames whose first is heard at `dac_time`,
    /// asked at `now`; `None` plays silence.
    fn plan(&mut self, now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render>;
    /// Appends decoded (or concealed) audio to `pcm` until it reaches media position `until`.
    fn pull(&mut self, until: f64, pcm: &mut PcmBuffer);
}

/// One callback's report, sent from the real-time side to the media thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackReport {
    /// Device frame index of the callback's first frame.
    pub dac_frame: u64,
    /// Ring frames consumed before this callback.
    pub ring_frame: u64,
    /// Local instant the first frame reaches the DAC.
    pub dac_time: LocalTime,
    /// Local instant of the callback.
    pub now: LocalTime,
    /// Frames in the callback.
    pub frames: u32,
}

/// Counters and controls shared by both sides (lock-free).
#[derive(Debug)]
pub struct OutputShared {
    /// Volume and mute.
    pub gain: Arc<SharedGain>,
    /// Frames of silence played because the ring was empty (after the first real frame).
    pub underrun_frames: AtomicU64,
    /// Callbacks so far.
    pub callbacks: AtomicU64,
    /// Latest `dac_time − now` of a callback, ns: the device's output latency.
    pub device_latency_ns: AtomicI64,
    /// Frames the media thread currently keeps ahead of the device (the adaptive lead).
    pub lead_frames: AtomicU64,
}

impl OutputShared {
    /// Fresh counters.
    pub fn new(gain: Arc<SharedGain>) -> Arc<Self> {
        Arc::new(OutputShared {
            gain,
            underrun_frames: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            device_latency_ns: AtomicI64::new(0),
            lead_frames: AtomicU64::new(0),
        })
    }
    /// The device's measured output latency.
    pub fn device_latency(&self) -> Nanos {
        Nanos(self.device_latency_ns.load(Ordering::Relaxed))
    }
}

/// The real-time half (see the module docs).
pub struct Renderer {
    ring: Consumer<f32>,
    reports: Producer<CallbackReport>,
    shared: Arc<OutputShared>,
    ramp: GainRamp,
    channels: usize,
    dac_frames: u64,
    ring_frames: u64,
    started: bool,
}

impl core::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Renderer").field("dac_frames", &self.dac_frames).finish_non_exhaustive()
    }
}

impl Renderer {
    /// Fills `out` (interleaved) for a callback at `now` whose first frame is heard at
    /// `dac_time`. Real-time safe.
    pub fn render(&mut self, out: &mut [f32], now: LocalTime, dac_time: LocalTime) {
        let channels = self.channels;
        let frames = out.len() / channels;
        let n = (self.ring.slots() / channels).min(frames);
        if n > 0 {
            if let Ok(chunk) = self.ring.read_chunk(n * channels) {
                let (a, b) = chunk.as_slices();
                out[..a.len()].copy_from_slice(a);
                out[a.len()..a.len() + b.len()].copy_from_slice(b);
                chunk.commit_all();
            }
            self.started = true;
        }
        out[n * channels..].fill(0.0);
        if n < frames && self.started {
            self.shared.underrun_frames.fetch_add((frames - n) as u64, Ordering::Relaxed);
        }
        self.ramp.apply(self.shared.gain.effective(), out, channels);
        let _ = self.reports.push(CallbackReport {
            dac_frame: self.dac_frames,
            ring_frame: self.ring_frames,
            dac_time,
            now,
            frames: frames as u32,
        });
        self.shared.callbacks.fetch_add(1, Ordering::Relaxed);
        self.shared.device_latency_ns.store((dac_time - now).0, Ordering::Relaxed);
        self.dac_frames += frames as u64;
        self.ring_frames += n as u64;
    }
}

/// Maps device frame indices to local time from callback reports.
#[derive(Debug)]
struct DacMap {
    clock: DeviceClock,
    offset: u64,
}

impl DacMap {
    fn new(rate: u32) -> Self {
        DacMap { clock: DeviceClock::new(rate), offset: 0 }
    }

    fn update(&mut self, r: &CallbackReport) {
        self.offset = r.dac_frame - r.ring_frame;
        self.clock.update(r.dac_frame, r.dac_time);
    }

    /// The local instant device frame `dac_frame` reaches the DAC.
    fn time_of(&self, dac_frame: u64) -> Option<LocalTime> {
        self.clock.time_of(dac_frame)
    }
}

/// What fills the ring block by block: one stream ([`Voice`]) or many ([`Mixer`](crate::mixer::Mixer)).
pub trait Program: Send {
    /// Renders `out` (interleaved, whole frames) for a block whose first frame is heard at
    /// `dac_time`; returns `false` (and leaves `out` silent) if there is nothing to play.
    fn render(&mut self, now: LocalTime, dac_time: LocalTime, out: &mut [f32]) -> bool;
}

/// One stream: a [`Timeline`], its decoded audio and its drift follower.
pub struct Voice<T: Timeline> {
    timeline: T,
    follower: DriftFollower,
    pcm: PcmBuffer,
    channels: usize,
    stats: EngineStats,
    on_block: Option<Box<dyn FnMut(LocalTime, &Render, &[f32]) + Send>>,
    /// Volume and mute applied here, on stream frames (see [`Voice::set_gain`]).
    gain: Option<(Arc<SharedGain>, GainRamp)>,
    /// An identification chime over the stream, if one can be asked for.
    chime: Option<Chime>,
    /// Prepared sounds on stream frames (a calibration's sequence), if any can be scheduled.
    overlay: Option<OverlayMix>,
}

impl<T: Timeline> core::fmt::Debug for Voice<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Voice").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<T: Timeline> Voice<T> {
    /// A voice of `channels` channels playing `timeline` at `stream_rate` on a device at
    /// `device_rate`.
    pub fn new(timeline: T, channels: usize, stream_rate: u32, device_rate: u32) -> Self {
        let channels = channels.max(1);
        Voice {
            timeline,
            follower: DriftFollower::new(channels, f64::from(stream_rate) / f64::from(device_rate)),
            pcm: PcmBuffer::new(channels, (stream_rate as usize).max(4096)),
            channels,
            stats: EngineStats::default(),
            on_block: None,
            gain: None,
            chime: None,
            overlay: None,
        }
    }
    /// Lets `overlay`'s owner play prepared sounds on stream frames over (instead of) the
    /// stream, after volume and mute: a calibration's level does not depend on them.
    pub fn set_overlay(&mut self, overlay: OverlayMix) {
        self.overlay = Some(overlay);
    }
    /// Lets `cue` play an identification chime over the stream (after volume and mute: a
    /// speaker asked to say where it is says so even when turned down).
    pub fn set_cue(&mut self, cue: Arc<Cue>, device_rate: u32) {
        self.chime = Some(Chime::new(cue, device_rate));
    }
    /// Applies `gain` to the stream, ramped over `ramp_frames`, here on the media thread where
    /// each output frame's stream position is known: a change scheduled on a stream frame
    /// ([`SharedGain::schedule`]) starts on that frame. (The device side's gain, given to
    /// [`output`], is then best left at unity.)
    pub fn set_gain(&mut self, gain: Arc<SharedGain>, ramp_frames: u32) {
        let ramp = GainRamp::new(gain.effective(), ramp_frames);
        self.gain = Some((gain, ramp));
    }
    /// The timeline.
    pub fn timeline(&mut self) -> &mut T {
        &mut self.timeline
    }
    /// Statistics.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }
    /// Calls `f(dac_time, plan, samples)` for every block rendered (for measurements).
    pub fn on_block(&mut self, f: impl FnMut(LocalTime, &Render, &[f32]) + Send + 'static) {
        self.on_block = Some(Box::new(f));
    }
    /// Bit-exact playout (see [`DriftFollower::set_exact`]).
    pub fn set_exact(&mut self, exact: bool) {
        self.follower.set_exact(exact);
    }
}

impl<T: Timeline> Program for Voice<T> {
    fn render(&mut self, now: LocalTime, dac_time: LocalTime, out: &mut [f32]) -> bool {
        let frames = (out.len() / self.channels) as u32;
        let Some(plan) = self.timeline.plan(now, dac_time, frames) else {
            out.fill(0.0);
            self.stats.silent_blocks += 1;
            return false;
        };
        // A timeline that jumped away from what is buffered (a new stream, a seek, a long
        // resync) makes the buffered audio stale.
        if plan.resynced
            && (plan.position + 64.0 < self.pcm.start() as f64
                || plan.position > self.pcm.end() as f64 + 48_000.0)
        {
            self.pcm.clear();
        }
        let end = plan.end(frames) + 8.0;
        if self.pcm.frames() == 0 || (self.pcm.end() as f64) < end {
            self.timeline.pull(end, &mut self.pcm);
        }
        let FollowStats { missing, restarted } = self.follower.render(&plan, &self.pcm, out);
        // Keep a little history behind the resampler's read position.
        self.pcm.drop_before(self.follower.cursor().saturating_sub(64).max(0) as u64);
        self.stats.blocks += 1;
        self.stats.missing_frames += missing as u64;
        self.stats.restarts += u64::from(restarted);
        self.stats.last_position = plan.position;
        self.stats.last_dac_time = dac_time;
        if let Some((shared, ramp)) = self.gain.as_mut() {
            let channels = self.channels;
            // Output frames follow stream frames one for one (the drift follower's ratio is
            // within a few hundred ppm of 1): a change due at stream frame `at` starts on
            // output frame `at − position`.
            let due =
                shared.pending_at().filter(|&at| (at as f64) < plan.position + f64::from(frames));
            match due {
                Some(at) => {
                    // Rounded, not ceiled: in bit-exact playout the position is a whole
                    // frame up to float noise, which a ceiling turns into one frame late.
                    let split = ((at as f64 - plan.position).round().max(0.0) as usize)
                        .min(frames as usize)
                        * channels;
                    ramp.apply(shared.effective(), &mut out[..split], channels);
                    shared.commit_pending(at);
                    ramp.apply(shared.effective(), &mut out[split..], channels);
                }
                None => ramp.apply(shared.effective(), out, channels),
            }
        }
        if let Some(overlay) = self.overlay.as_mut() {
            overlay.mix_into(plan.position, out, self.channels);
        }
        if let Some(chime) = self.chime.as_mut() {
            chime.mix_into(out, self.channels);
        }
        if let Some(f) = self.on_block.as_mut() {
            f(dac_time, &plan, out);
        }
        true
    }
}

/// Statistics of the media side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Blocks rendered from the timeline.
    pub blocks: u64,
    /// Blocks of silence (no plan).
    pub silent_blocks: u64,
    /// Restarts of the resampler (resyncs).
    pub restarts: u64,
    /// Input frames missing from the PCM buffer when resampling.
    pub missing_frames: u64,
    /// Media position of the last block's first frame.
    pub last_position: f64,
    /// Its planned DAC instant.
    pub last_dac_time: LocalTime,
}

/// The media-thread half (see the module docs).
pub struct OutputEngine<P: Program> {
    program: P,
    ring: Producer<f32>,
    reports: Consumer<CallbackReport>,
    map: DacMap,
    channels: usize,
    block: usize,
    lookahead: usize,
    min_lookahead: usize,
    max_lookahead: usize,
    shared: Arc<OutputShared>,
    /// Underrun frames already answered by a raise of the lead.
    seen_underruns: u64,
    /// Since when the device has not run dry (the lead decays after [`LEAD_CALM`] of it).
    calm_since: Option<LocalTime>,
    written: u64,
    scratch: Vec<f32>,
    /// Frames per ramp of the device side's gain.
    ramp_frames: u32,
    device_rate: u32,
    /// The newest callback's report.
    last_report: Option<CallbackReport>,
}

/// How long the device must run without an underrun before the lead steps one block back
/// toward its configured minimum.
pub const LEAD_CALM: Nanos = Nanos::from_secs(5);

impl<P: Program> core::fmt::Debug for OutputEngine<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutputEngine").field("written", &self.written).finish_non_exhaustive()
    }
}

/// Configuration of an output engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineConfig {
    /// Device sample rate.
    pub device_rate: u32,
    /// Channels (device and stream).
    pub channels: usize,
    /// Frames rendered per block (a multiple of 32).
    pub block: usize,
    /// Frames kept in the ring ahead of the device.
    pub lookahead: usize,
    /// The most the lookahead may grow to after underruns (a machine that stalls the media
    /// thread gets a deeper ring, as PulseAudio raises its watermark); `lookahead` or less
    /// keeps it fixed.
    pub max_lookahead: usize,
}

impl EngineConfig {
    /// A config for a device at `rate` Hz.
    pub fn new(rate: u32, channels: usize) -> Self {
        EngineConfig { device_rate: rate, channels, block: 128, lookahead: 512, max_lookahead: 512 }
    }
}

/// Builds both halves around `program`.
pub fn output<P: Program>(
    program: P,
    config: EngineConfig,
    gain: Arc<SharedGain>,
) -> (OutputEngine<P>, Renderer, Arc<OutputShared>) {
    let channels = config.channels.max(1);
    let block = config.block.next_multiple_of(CHUNK).max(CHUNK);
    let lookahead = config.lookahead.max(block);
    let max_lookahead = config.max_lookahead.max(lookahead);
    let shared = OutputShared::new(gain);
    let ramp_frames = config.device_rate / 200; // 5 ms
    let (producer, report_rx, renderer) =
        halves(channels, (max_lookahead + block) * channels * 2, &shared, ramp_frames);
    let engine = OutputEngine {
        program,
        ring: producer,
        reports: report_rx,
        map: DacMap::new(config.device_rate),
        channels,
        block,
        lookahead,
        min_lookahead: lookahead,
        max_lookahead,
        shared: shared.clone(),
        seen_underruns: 0,
        calm_since: None,
        written: 0,
        scratch: vec![0.0; block * channels],
        ramp_frames,
        device_rate: config.device_rate,
        last_report: None,
    };
    shared.lead_frames.store(lookahead as u64, Ordering::Relaxed);
    (engine, renderer, shared)
}

/// The ring (`samples` long) and report channel between the halves, and a real-time half at
/// device frame 0.
fn halves(
    channels: usize,
    samples: usize,
    shared: &Arc<OutputShared>,
    ramp_frames: u32,
) -> (Producer<f32>, Consumer<CallbackReport>, Renderer) {
    let (producer, consumer) = RingBuffer::new(samples);
    let (report_tx, report_rx) = RingBuffer::new(1024);
    let renderer = Renderer {
        ring: consumer,
        reports: report_tx,
        shared: shared.clone(),
        ramp: GainRamp::new(shared.gain.effective(), ramp_frames),
        channels,
        dac_frames: 0,
        ring_frames: 0,
        started: false,
    };
    (producer, report_rx, renderer)
}

impl<P: Program> OutputEngine<P> {
    /// The program.
    pub fn program(&mut self) -> &mut P {
        &mut self.program
    }
    /// Block size in frames.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Frames written to the ring so far.
    pub fn written(&self) -> u64 {
        self.written
    }
    /// Frames currently kept ahead of the device.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// A new real-time half for a device opened again (its stream died): a fresh ring and
    /// device map, the program kept as it is (it resyncs to the new device's instants, which
    /// it sees as a step). The old half, if still running, is cut off. Allocates: not for
    /// the steady state.
    pub fn reattach(&mut self) -> Renderer {
        let samples = self.ring.buffer().capacity();
        let (producer, reports, renderer) =
            halves(self.channels, samples, &self.shared, self.ramp_frames);
        self.ring = producer;
        self.reports = reports;
        self.map = DacMap::new(self.device_rate);
        self.written = 0;
        self.calm_since = None;
        self.last_report = None;
        renderer
    }

    /// When the device should next ask for audio: the newest callback's instant plus its
    /// frames' duration (`None` before the first). A media thread that wakes just after it
    /// tops the ring up once per device buffer instead of polling.
    pub fn next_callback(&self) -> Option<LocalTime> {
        let r = self.last_report?;
        Some(r.now + Nanos::from_frames(u64::from(r.frames), self.device_rate))
    }

    /// After an underrun the lead grows by what was missing (rounded up to blocks, up to
    /// `max_lookahead`): the media thread was late by that much and may be again. After
    /// [`LEAD_CALM`] without one it steps back a block at a time.
    fn adapt_lead(&mut self, now: LocalTime) {
        let underruns = self.shared.underrun_frames.load(Ordering::Relaxed);
        let calm_since = *self.calm_since.get_or_insert(now);
        if underruns > self.seen_underruns {
            let short = usize::try_from(underruns - self.seen_underruns).unwrap_or(usize::MAX);
            self.seen_underruns = underruns;
            let raise = short.min(self.max_lookahead).next_multiple_of(self.block);
            self.lookahead = (self.lookahead + raise).min(self.max_lookahead);
            self.calm_since = Some(now);
        } else if self.lookahead > self.min_lookahead && now - calm_since >= LEAD_CALM {
            self.lookahead = self.lookahead.saturating_sub(self.block).max(self.min_lookahead);
            self.calm_since = Some(now);
        }
        self.shared.lead_frames.store(self.lookahead as u64, Ordering::Relaxed);
    }

    /// Tops the ring up to the lookahead. Returns the frames written. Call it from the media
    /// thread every millisecond or so.
    pub fn fill(&mut self, now: LocalTime) -> usize {
        while let Ok(r) = self.reports.pop() {
            self.map.update(&r);
            self.last_report = Some(r);
        }
        self.adapt_lead(now);
        let mut written = 0;
        loop {
            let queued = self.ring.buffer().capacity() - self.ring.slots();
            if queued / self.channels + self.block > self.lookahead
                || self.ring.slots() < self.block * self.channels
            {
                break;
            }
            match self.map.time_of(self.written + self.map.offset) {
                Some(dac_time) => {
                    self.program.render(now, dac_time, &mut self.scratch);
                }
                // Before the first callback nothing says when the ring will be heard.
                None => self.scratch.fill(0.0),
            }
            if let Ok(chunk) = self.ring.write_chunk_uninit(self.block * self.channels) {
                chunk.fill_from_iter(self.scratch.iter().copied());
            }
            self.written += self.block as u64;
            written += self.block;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program that plays a constant.
    struct Dc;
    impl Program for Dc {
        fn render(&mut self, _: LocalTime, _: LocalTime, out: &mut [f32]) -> bool {
            out.fill(0.25);
            true
        }
    }

    #[test]
    fn an_underrun_deepens_the_lead_and_calm_brings_it_back() {
        let config = EngineConfig {
            device_rate: 48_000,
            channels: 1,
            block: 64,
            lookahead: 128,
            max_lookahead: 1_024,
        };
        let (mut engine, mut renderer, shared) = output(Dc, config, SharedGain::new());
        let t0 = LocalTime(1_000_000_000);
        let mut out = vec![0.0; 128];
        renderer.render(&mut out, t0, t0);
        assert_eq!(engine.fill(t0), 128, "filled to the lead");
        renderer.render(&mut out, t0, t0);
        assert_eq!(shared.underrun_frames.load(Ordering::Relaxed), 0);
        // The media thread slept through 192 frames the device wanted.
        let mut long = vec![0.0; 192];
        renderer.render(&mut long, t0, t0);
        assert_eq!(shared.underrun_frames.load(Ordering::Relaxed), 192);
        let t1 = t0 + Nanos::from_millis(10);
        engine.fill(t1);
        assert_eq!(engine.lookahead(), 128 + 192, "raised by what was missing");
        assert_eq!(shared.lead_frames.load(Ordering::Relaxed), 320);
        // Calm: one block back per LEAD_CALM, never below the configured lead.
        engine.fill(t1 + LEAD_CALM - Nanos(1));
        assert_eq!(engine.lookahead(), 320);
        engine.fill(t1 + LEAD_CALM);
        assert_eq!(engine.lookahead(), 256);
        for k in 2..10 {
            engine.fill(t1 + Nanos(LEAD_CALM.0 * k));
        }
        assert_eq!(engine.lookahead(), 128);
        // Never past the maximum, however long the stall.
        let mut stall = vec![0.0; 4_800];
        renderer.render(&mut out, t1, t1);
        renderer.render(&mut stall, t1, t1);
        engine.fill(t1 + Nanos::from_secs(60));
        assert_eq!(engine.lookahead(), 1_024);
    }

    #[test]
    fn a_reattached_device_gets_a_fresh_ring_and_map() {
        let config = EngineConfig::new(48_000, 1);
        let (mut engine, mut old, _shared) = output(Dc, config, SharedGain::new());
        let t0 = LocalTime(1_000_000_000);
        let mut out = vec![0.0; 256];
        old.render(&mut out, t0, t0 + Nanos::from_millis(20));
        engine.fill(t0);
        assert!(engine.written() > 0);
        // The device died; a new stream gets a new half that starts at its own frame 0.
        let mut new = engine.reattach();
        assert_eq!(engine.written(), 0);
        new.render(&mut out, t0, t0 + Nanos::from_millis(20));
        assert!(out.iter().all(|&s| s == 0.0), "nothing queued for the new device yet");
        engine.fill(t0 + Nanos::from_millis(1));
        // What the old half still holds is all it gets: nothing written after is its.
        let mut stale = vec![1.0; 1_024];
        old.render(&mut stale, t0, t0);
        assert!(stale[512..].iter().all(|&s| s == 0.0), "the old half is cut off");
        new.render(&mut out, t0 + Nanos::from_millis(6), t0 + Nanos::from_millis(26));
        assert!(out.iter().all(|&s| s == 0.25), "the new half plays the program");
    }

    /// A timeline at exactly one stream frame per output frame, from stream frame 1 000, of
    /// a constant 0.5.
    struct Steady {
        next: u64,
    }
    impl Timeline for Steady {
        fn plan(&mut self, _: LocalTime, _: LocalTime, frames: u32) -> Option<Render> {
            let position = self.next as f64;
            self.next += u64::from(frames);
            Some(Render { position, step: 1.0, resynced: false, error_frames: 0.0 })
        }
        fn pull(&mut self, until: f64, pcm: &mut PcmBuffer) {
            let from = if pcm.frames() == 0 { 1_000 } else { pcm.end() };
            if (from as f64) < until {
                let n = (until.ceil() as u64 - from) as usize;
                pcm.push(from, &vec![0.5; n]);
            }
        }
    }

    #[test]
    fn a_scheduled_gain_starts_on_its_stream_frame() {
        let gain = SharedGain::new();
        let mut voice = Voice::new(Steady { next: 1_000 }, 1, 48_000, 48_000);
        voice.set_exact(true);
        voice.set_gain(gain.clone(), 1);
        let t = LocalTime(0);
        let mut out = vec![0.0; 256];
        assert!(voice.render(t, t, &mut out));
        assert!(out.iter().all(|&s| s == 0.5), "unity before any change");
        // Due at stream frame 1 300: the 45th frame of the block [1 256, 1 512).
        gain.schedule(Some(0.25), None, 1_300);
        assert_eq!(gain.gain(), 1.0, "not before its frame");
        assert!(voice.render(t, t, &mut out));
        assert!(out[..44].iter().all(|&s| s == 0.5), "{:?}", &out[40..48]);
        assert!(out[44..].iter().all(|&s| s == 0.125), "{:?}", &out[40..48]);
        assert_eq!(gain.pending_at(), None);
        assert_eq!(gain.gain(), 0.25);
        // A change already past applies from the next block's first frame; mute merges in.
        gain.schedule(None, Some(true), 10);
        assert!(voice.render(t, t, &mut out));
        assert!(out.iter().all(|&s| s == 0.0));
        assert!(gain.muted());
    }
}
