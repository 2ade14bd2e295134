//! A running player: network thread (owns the socket and the session's network half),
//! media thread (owns its playout half and fills the output ring through the audio engine),
//! device callback (real time). The two halves talk through the session's lock-free rings;
//! commands reach the network half by a channel and travel on to playout in order.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tutti_audio::backend::StreamSpec;
use tutti_audio::clock;
use tutti_audio::cue::{Cue, Overlay};
use tutti_audio::engine::{EngineConfig, OutputShared, Timeline, Voice, output};
use tutti_audio::format::decode_pcm;
use tutti_audio::opus::OpusDecoder;
use tutti_audio::pcm::PcmBuffer;
use tutti_audio::ramp::SharedGain;
use tutti_proto::clock::ClockEstimate;
use tutti_proto::jitter::Playout;
use tutti_proto::player::{PlayerEvent, PlayerStats, StreamInfo, Timing};
use tutti_proto::playout::Render;
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::wire::RefuseReason;
use tutti_proto::{Codec, LocalTime, Mode, Nanos, Playback, PlayerConfig, PlayerSession};

use crate::NodeError;
use crate::net::{RECV_BUF, bind, recv_until, try_recv};
use crate::output::{self, DeviceEvent, OutputKind, OutputPlan};
use crate::security::Keys;

/// How to run a player.
#[derive(Clone, Debug)]
pub struct PlayerOptions {
    /// Session configuration (source address, name, offsets...).
    pub config: PlayerConfig,
    /// Local address to bind (port 0: any).
    pub bind: SocketAddr,
    /// Multicast group to listen on.
    pub group: Option<SocketAddr>,
    /// Where to play.
    pub output: OutputKind,
    /// Device buffer, frames; `None`: sized from the group latency (a fifth of it, at most
    /// ~21 ms: fewer wake-ups where the latency leaves room, small where it does not).
    pub buffer_frames: Option<u32>,
    /// Volume, percent.
    pub volume: f32,
    /// How long to wait for the stream's description.
    pub join_timeout: Duration,
}

/// What a player shows on its status line.
#[derive(Clone, Debug, Default)]
pub struct PlayerSnapshot {
    /// Session counters.
    pub stats: PlayerStats,
    /// Clock estimate.
    pub clock: Option<ClockEstimate>,
    /// The interarrival jitter of the stream's packets (RFC 3550).
    pub arrival_jitter: Option<Nanos>,
    /// The stream.
    pub info: Option<StreamInfo>,
    /// Packets buffered ahead of playout.
    pub buffered: u64,
    /// Capture → playout latency.
    pub latency: Option<Nanos>,
    /// Hearing the source.
    pub streaming: bool,
    /// Underrun frames at the device.
    pub underrun_frames: u64,
    /// Device output latency.
    pub device_latency: Nanos,
    /// Why the device does not play, while it does not (it stopped, it cannot be opened).
    pub device_problem: Option<String>,
    /// Packets keep arriving after they were due (the group latency does not fit the device
    /// and the path), in one line, while they do: set by whoever watches the counters.
    pub latency_problem: Option<String>,
    /// The source refused this player (why, in its words).
    pub refused: Option<(RefuseReason, String)>,
    /// Which stream frame plays when (for zone-wide changes, and a file's first frame).
    pub timing: Option<Timing>,
    /// When the earliest packet awaited is due at the DAC.
    pub first_due: Option<LocalTime>,
}

/// What a running player says, as it happens (read with [`RunningPlayer::events`]).
#[derive(Clone, Debug, PartialEq)]
pub enum PlayingEvent {
    /// The session's: joined, refused, the source lost, back, ended.
    Session(PlayerEvent),
    /// The device's: stopped, cannot be opened, playing again.
    Device(DeviceEvent),
    /// The device buffer asked for does not fit the group latency: a smaller one is used.
    SmallerBuffer {
        /// Frames asked for.
        asked: u32,
        /// Frames used.
        buffer: u32,
        /// The stream's group latency.
        latency: Nanos,
    },
}

impl PlayingEvent {
    /// Whether it is trouble (a warning) rather than news.
    pub fn is_trouble(&self) -> bool {
        match self {
            PlayingEvent::Session(e) => {
                matches!(e, PlayerEvent::Refused { .. } | PlayerEvent::SourceLost)
            }
            PlayingEvent::Device(e) => !matches!(e, DeviceEvent::Reopened(_)),
            PlayingEvent::SmallerBuffer { .. } => true,
        }
    }
}

impl core::fmt::Display for PlayingEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlayingEvent::Session(e) => match e {
                PlayerEvent::Joined(i) => write!(
                    f,
                    "joined `{}`: {} Hz, {} ch, {:?}, {:?}",
                    i.name, i.format.sample_rate, i.format.channels, i.format.codec, i.mode
                ),
                PlayerEvent::Refused { reason, message } => {
                    write!(f, "refused ({reason:?}): {message}")
                }
                PlayerEvent::SourceLost => f.write_str("source lost: waiting for it"),
                PlayerEvent::SourceBack => f.write_str("source back"),
                PlayerEvent::Ended => f.write_str("stream ended"),
                other => write!(f, "{other:?}"),
            },
            PlayingEvent::Device(e) => write!(f, "{e}"),
            PlayingEvent::SmallerBuffer { asked, buffer, latency } => write!(
                f,
                "device buffer {buffer} frames, not {asked}: a {} ms group latency leaves no room for more",
                latency.0 / 1_000_000
            ),
        }
    }
}

/// What the network half is told to do (it passes playout's part on, in order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SessionCommand {
    /// This device's delay.
    DeviceOffset(Nanos),
    /// The zone's latency (`None`: the stream's).
    LatencyOverride(Option<Nanos>),
    /// Re-lock playout now.
    Resync,
}

/// A running player: a network thread and a media thread (which owns the device stream and
/// opens it again if it dies).
pub struct RunningPlayer {
    /// Status, refreshed every 100 ms.
    pub status: Arc<Mutex<PlayerSnapshot>>,
    /// Volume and mute (applied on stream frames: see [`SharedGain::schedule`]).
    pub gain: Arc<SharedGain>,
    /// Plays the identification chime.
    pub cue: Arc<Cue>,
    /// Plays prepared sounds on stream frames (a calibration's sequence).
    pub overlay: Arc<Overlay>,
    /// The stream's sample rate, Hz (what the overlay's sounds are rendered at).
    pub rate: u32,
    /// Local socket address.
    pub local_addr: SocketAddr,
    commands: Sender<SessionCommand>,
    events: Receiver<PlayingEvent>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<OutputShared>,
    /// The stream, and how its device and engine were sized.
    info: StreamInfo,
    plan: RenderPlan,
    asked: Option<u32>,
    output: OutputKind,
}

impl core::fmt::Debug for RunningPlayer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunningPlayer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningPlayer {
    /// Whether its device and engine, sized when it started, can play at `latency` (a zone's
    /// new latency; `None`: the stream's own): everything they render ahead must have
    /// arrived. A longer latency always fits; a much shorter one needs a smaller device
    /// buffer, opened anew.
    pub fn fits(&self, latency: Option<Nanos>) -> bool {
        let latency = latency.unwrap_or(self.info.group_latency);
        let wanted = render_plan(&self.info, latency, self.asked, &self.output);
        wanted.buffer >= self.plan.buffer && wanted.max_lookahead >= self.plan.lookahead
    }

    /// What it said since last asked.
    pub fn events(&self) -> Vec<PlayingEvent> {
        self.events.try_iter().collect()
    }

    /// Tells the session something (it reaches playout at its next render).
    pub fn command(&self, c: SessionCommand) {
        let _ = self.commands.send(c);
    }

    /// Stops playing (the source gets a `Bye`) and waits for the threads; returns what it
    /// said last.
    pub fn stop(mut self) -> Vec<PlayingEvent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.events()
    }
    /// Device counters.
    pub fn output(&self) -> &OutputShared {
        &self.shared
    }
}

impl Drop for RunningPlayer {
    fn drop(&mut self) {
        // The media thread stops the device (a file is finished) on its way out.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Plays the stream through the audio engine: owns the player's playout half, decodes packets
/// (PCM or Opus) in order and conceals what is missing. Nothing here waits on another thread.
pub struct NetTimeline {
    playback: Playback,
    channels: usize,
    opus: Option<OpusDecoder>,
    scratch: Vec<f32>,
}

impl NetTimeline {
    /// A timeline over a player's playout half, decoding to `channels` channels.
    pub fn new(playback: Playback, channels: usize) -> Self {
        NetTimeline { playback, channels, opus: None, scratch: Vec::new() }
    }
}

impl Timeline for NetTimeline {
    fn plan(&mut self, now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render> {
        self.playback.render(now, dac_time, frames)
    }

    fn pull(&mut self, until: f64, pcm: &mut PcmBuffer) {
        while let Some(p) = self.playback.next_frame(until) {
            self.scratch.clear();
            let (media, frames) = match p {
                Playout::Frame(f) => {
                    let n = usize::from(f.frames);
                    let ok = match f.codec {
                        Codec::Opus => {
                            let dec = match self.opus.as_mut() {
                                Some(d) => d,
                                None => match OpusDecoder::new(self.channels) {
                                    Ok(d) => self.opus.insert(d),
                                    Err(_) => continue,
                                },
                            };
                            self.scratch.resize(n * self.channels, 0.0);
                            dec.decode(f.payload, &mut self.scratch).is_ok()
                        }
                        c => decode_pcm(c, f.payload, &mut self.scratch).is_some(),
                    };
                    if !ok {
                        self.scratch.clear();
                    }
                    (f.media.0, n)
                }
                Playout::Missing { media, frames, .. } => {
                    let n = usize::from(frames);
                    self.scratch.resize(n * self.channels, 0.0);
                    // Opus conceals from its own state; PCM plays silence for the gap.
                    if let Some(dec) = self.opus.as_mut() {
                        let _ = dec.conceal(None, n, &mut self.scratch);
                    }
                    (media.0, n)
                }
            };
            self.scratch.resize(frames * self.channels, 0.0);
            pcm.push(media, &self.scratch);
        }
        // The network half stops NACKing what was played.
        self.playback.publish();
    }
}

/// Joins a stream and plays it.
pub fn run_player(
    opts: PlayerOptions,
    security: impl Into<Keys>,
) -> Result<RunningPlayer, NodeError> {
    let keys: Keys = security.into();
    let socket = bind(opts.bind, opts.group)?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| NodeError::Socket { what: "its local address".into(), source: e })?;
    let random = u128::from_le_bytes(tutti_os::try_random()?);
    // The network half goes to the network thread; the playout half stays here (taking in
    // what the network hands over) until the media thread takes it.
    let (session, mut playback) =
        PlayerSession::new(opts.config.clone(), keys.current(), random, clock::now());
    let status = Arc::new(Mutex::new(PlayerSnapshot::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let shared_slot: Arc<Mutex<Option<Arc<OutputShared>>>> = Arc::new(Mutex::new(None));
    let (commands, orders) = channel();
    let (said, events) = channel();
    let net = {
        let (status, stop, shared_slot) = (status.clone(), stop.clone(), shared_slot.clone());
        let source = opts.config.source;
        let said = said.clone();
        // A tap's listeners are on the other side of a network: every millisecond the relay
        // saves is theirs, so it reads datagrams as they come.
        let batched = !matches!(opts.output, OutputKind::Tap(_));
        std::thread::Builder::new()
            .name("tutti-player-net".into())
            .spawn(move || {
                clock::prefer_current_thread(-5);
                let ends = Ends { socket, source, status: &status, said, stop: &stop, batched };
                network_loop(session, &keys, &orders, &ends, &shared_slot)
            })
            .map_err(NodeError::Thread)?
    };
    // Wait for the stream's description: it says how to open the device.
    let deadline = clock::now() + Nanos::from(opts.join_timeout);
    let info = loop {
        playback.absorb();
        let snap = status.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some((reason, message)) = snap.refused {
            stop.store(true, Ordering::Relaxed);
            let _ = net.join();
            return Err(NodeError::Refused { addr: opts.config.source, reason, message });
        }
        if let Some(i) = snap.info {
            break i;
        }
        if clock::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let _ = net.join();
            return Err(NodeError::Silent { addr: opts.config.source, waited: opts.join_timeout });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let channels = usize::from(info.format.channels);
    let live = info.mode == Mode::Live;
    // The latency it plays at: a zone's, or the stream's.
    let latency = opts.config.latency_override.unwrap_or(info.group_latency);
    let planned = render_plan(&info, latency, opts.buffer_frames, &opts.output);
    let RenderPlan { buffer, block, lookahead, max_lookahead, tick, tap_lead } = planned;
    if let OutputKind::Tap(tap) = &opts.output {
        tap.set_lead(Nanos::from_frames(tap_lead as u64, info.format.sample_rate));
    }
    if let Some(asked) = opts.buffer_frames.filter(|&a| buffer < a) {
        let _ = said.send(PlayingEvent::SmallerBuffer { asked, buffer, latency });
    }
    let config = EngineConfig {
        device_rate: info.format.sample_rate,
        channels,
        block,
        lookahead,
        max_lookahead,
    };
    let tick =
        Duration::from_nanos(Nanos::from_frames(tick as u64, info.format.sample_rate).0 as u64);
    let spec = StreamSpec::new(info.format.sample_rate, u16::from(info.format.channels), buffer);
    // A file output starts on the stream's frame grid, as late as it can: once the clock
    // estimate has a second of history, or just before the first frame is due (a young
    // estimate's skew extrapolates badly). Two seconds at most: a stream that is not flowing
    // opens unaligned.
    let first_frame = if opts.output.clock_paced() && !live {
        let until = clock::now() + Nanos::from_secs(2);
        loop {
            playback.absorb();
            let now = clock::now();
            let snap = status.lock().map(|s| s.clone()).unwrap_or_default();
            let soon = snap.first_due.is_some_and(|d| d - now < Nanos::from_millis(120));
            let old = snap.clock.is_some_and(|c| c.span >= Nanos::from_secs(1));
            let grid = snap.timing.and_then(|t| t.frame_grid(now + Nanos::from_millis(20)));
            if (grid.is_some() && (soon || old)) || now > until {
                break grid;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    } else {
        None
    };
    let timeline = NetTimeline::new(playback, channels);
    let mut voice =
        Voice::new(timeline, channels, info.format.sample_rate, info.format.sample_rate);
    voice.set_exact(
        opts.output.clock_paced()
            && info.format.codec != Codec::Opus
            && info.format.codec != Codec::PcmF32,
    );
    // Volume and mute act on the stream's frames (a zone-wide change scheduled on a frame lands
    // on that sample on every player); the device side stays at unity.
    let gain = SharedGain::new();
    gain.set_volume_percent(opts.volume);
    voice.set_gain(gain.clone(), info.format.sample_rate / 200);
    let cue = Cue::new();
    voice.set_cue(cue.clone(), info.format.sample_rate);
    let (overlay, overlay_mix) = Overlay::new(info.format.sample_rate);
    voice.set_overlay(overlay_mix);
    let (engine, renderer, shared) = output(voice, config, SharedGain::new());
    if let Ok(mut s) = shared_slot.lock() {
        *s = Some(shared.clone());
    }
    let plan =
        OutputPlan { kind: opts.output.clone(), spec, first_frame, tick, follow_callbacks: !live };
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let media = {
        let (stop, status) = (stop.clone(), status.clone());
        std::thread::Builder::new()
            .name("tutti-player-media".into())
            .spawn(move || {
                // It keeps the device fed: the scheduler should prefer it (best effort).
                clock::prefer_current_thread(-10);
                output::drive(
                    &plan,
                    engine,
                    renderer,
                    &stop,
                    &opened_tx,
                    |_| {},
                    |e| {
                        if let Ok(mut st) = status.lock() {
                            st.device_problem = match &e {
                                DeviceEvent::Stopped(why) | DeviceEvent::CannotOpen(why) => {
                                    Some(why.clone())
                                }
                                DeviceEvent::Reopened(_) => None,
                            };
                        }
                        let _ = said.send(PlayingEvent::Device(e));
                    },
                );
            })
            .map_err(NodeError::Thread)?
    };
    let failed = match opened.recv() {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.into()),
        Err(_) => Some(NodeError::MediaThread),
    };
    if let Some(e) = failed {
        stop.store(true, Ordering::Relaxed);
        let _ = net.join();
        let _ = media.join();
        return Err(e);
    }
    Ok(RunningPlayer {
        status,
        gain,
        cue,
        overlay,
        rate: info.format.sample_rate,
        local_addr,
        commands,
        events,
        stop,
        threads: vec![net, media],
        shared,
        plan: planned,
        asked: opts.buffer_frames,
        info,
        output: opts.output,
    })
}

/// How a player renders: device buffer, engine block, the lead it keeps over the device (and
/// the most it may grow to after underruns), and how often the media thread wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RenderPlan {
    buffer: u32,
    block: usize,
    lookahead: usize,
    max_lookahead: usize,
    tick: usize,
    /// A tap's DAC lead over the buffers it asks for (see [`Tap::set_lead`](tutti_audio::backend::tap::Tap::set_lead)).
    tap_lead: usize,
}

/// The largest device buffer chosen unasked, frames (~21 ms at 48 kHz).
const AUTO_BUFFER_MAX: usize = 1_024;

/// Device buffer, block, render lookahead and media-thread tick (frames) for a stream.
///
/// The ring between the media thread and the device must hold a whole device buffer plus a
/// block and a media-thread tick when the device asks (`lookahead ≥ buffer + block + 1 ms`).
/// Everything rendered must have been received: in sync mode the render lead — lookahead,
/// the device's own latency (about two buffers) and a block — stays inside the group latency
/// less one packet and 2 ms, so at a tight latency the buffer asked for shrinks. With room to
/// spare a device renders two buffers ahead; a clock-paced output (a file) up to half the
/// group latency (a busy machine never starves it). After underruns the lead may grow up to
/// the whole budget (sync) or 10 ms more (live).
fn render_plan(
    info: &StreamInfo,
    latency: Nanos,
    asked: Option<u32>,
    output: &OutputKind,
) -> RenderPlan {
    let frames = |n: Nanos| {
        (n.0.max(0) as u128 * u128::from(info.format.sample_rate) / 1_000_000_000) as usize
    };
    let ms = |n: i64| frames(Nanos::from_millis(n));
    if info.mode == Mode::Live {
        let buffer = asked.unwrap_or(256) as usize;
        let tick = frames(Nanos::from_micros(300));
        let lookahead = (2 * buffer).max(buffer + 64 + tick);
        // Live latency follows the lead, so a stalling machine may push it 10 ms further.
        return RenderPlan {
            buffer: buffer as u32,
            block: 64,
            lookahead,
            max_lookahead: lookahead + ms(10),
            tick,
            tap_lead: 0,
        };
    }
    let group = latency;
    let latency = frames(latency);
    // A packet may wait in the socket for a batch before the session has it.
    let batch = match output {
        OutputKind::Tap(_) => 0,
        _ => read_batch(info.mode, group).map_or(0, frames),
    };
    let budget = latency.saturating_sub(usize::from(info.format.frames_per_packet) + ms(2) + batch);
    let block = if budget < ms(40) { 64 } else { 128 };
    // A tap's listeners (browsers, snapclients) play what it hands over on their own devices,
    // after a trip over the network: it hands it over as early as it can, keeping just enough
    // budget for 10 ms buffers, and 20 ms for the way its packets come. A tap is paced by the
    // clock: it takes exactly what it plans (a device's own latency is mostly less than two
    // of its buffers, which leaves a player slack), and a capture source's packets reach it a
    // capture fragment and a packet after their first frame was heard. With no slack, the
    // relay of a monitor source at 250 ms stalled on 50 packets a second on the instrument.
    let slack = match output {
        OutputKind::Tap(_) => ms(20).min(budget / 4),
        _ => 0,
    };
    let tap_lead = match output {
        OutputKind::Tap(_) => budget.saturating_sub(3 * ms(10) + 2 * block + ms(1) + slack),
        _ => 0,
    };
    let budget = budget - tap_lead - slack;
    let fit = (budget.saturating_sub(2 * block + ms(1)) / 3) / 32 * 32;
    // A device asks for its two buffers at once when it starts: the engine's lead must hold
    // them (lead ≥ 2 buffers on top of the device's own 2), or it starts with an underrun.
    let fit = if output.clock_paced() {
        fit
    } else {
        fit.min(budget.saturating_sub(block) / 4 / 32 * 32)
    };
    // Unasked, a fifth of the latency (20 ms at 100 ms, as snapclient's default share):
    // every device buffer is a wake-up of the sound server's client thread and the media
    // thread, and the latency is compensated whatever its size.
    let asked = asked.map_or((latency / 5).min(AUTO_BUFFER_MAX) / 32 * 32, |a| a as usize);
    let buffer = asked.min(fit).max(64);
    // The media thread wakes every 1–5 ms (a twentieth of the latency): each wake is a
    // context switch, and the lookahead covers the tick.
    let tick = (latency / 20).clamp(ms(1), ms(5));
    let least = buffer + block + tick;
    // The device's own lead is one buffer when clock-paced (a file), two otherwise; the
    // engine's may use the rest of the budget, no further (audio must have arrived).
    let device_lead = if output.clock_paced() { buffer } else { 2 * buffer };
    let room = budget.saturating_sub(device_lead + block).max(least);
    let lookahead = if output.clock_paced() {
        room.min(latency / 2).clamp(least, 1_920.max(least))
    } else {
        (2 * buffer).max(least).min(room)
    };
    RenderPlan {
        buffer: buffer as u32,
        block,
        lookahead,
        max_lookahead: room.max(lookahead),
        tick,
        tap_lead,
    }
}

/// How long a player's network thread lets datagrams gather before reading them: a sync
/// stream with room to spare is read in batches (a tenth of its latency, 10 ms at most), as
/// arrival instants come from the kernel and waking for every 5 ms packet costs context
/// switches, not accuracy. Live streams and tight latencies are read as they come. (Batches
/// of 20 ms from 100 ms on woke the thread 69 times a second instead of 111, but the process
/// was no cheaper: 14.8 ms of CPU a second either way, the device asking more often for the
/// smaller buffer that fits the budget then.)
fn read_batch(mode: Mode, latency: Nanos) -> Option<Nanos> {
    (mode == Mode::Sync && latency >= Nanos::from_millis(50))
        .then(|| Nanos(latency.0 / 10).min(Nanos::from_millis(10)))
}

/// The network thread's fixed parts.
struct Ends<'a> {
    socket: UdpSocket,
    source: SocketAddr,
    status: &'a Mutex<PlayerSnapshot>,
    said: Sender<PlayingEvent>,
    stop: &'a AtomicBool,
    /// Datagrams are read in batches (see [`read_batch`]).
    batched: bool,
}

/// The network thread: the only owner of the session's network half.
fn network_loop(
    mut s: PlayerSession,
    keys: &Keys,
    orders: &Receiver<SessionCommand>,
    ends: &Ends<'_>,
    shared: &Mutex<Option<Arc<OutputShared>>>,
) {
    let Ends { socket, source, status, said, stop, batched } = ends;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut last = clock::now();
    let mut refused = None;
    let mut key_version = keys.version();
    loop {
        let closing = stop.load(Ordering::Relaxed);
        if let Some(k) = keys.changed(&mut key_version) {
            s.set_security(k);
        }
        while let Ok(c) = orders.try_recv() {
            match c {
                SessionCommand::DeviceOffset(d) => s.set_device_offset(d),
                SessionCommand::LatencyOverride(l) => s.set_latency_override(l),
                SessionCommand::Resync => s.resync(),
            }
        }
        if closing {
            // The source hears a `Bye`.
            s.close();
        }
        let now = clock::now();
        s.handle_timeout(now);
        // Sent at once: a clock probe's departure stamp is taken in `poll_transmit`.
        while let Some(t) = s.poll_transmit(clock::now(), &mut out) {
            let _ = socket.send_to(&out[..t.len], source);
        }
        if closing {
            return;
        }
        let mut news = false;
        while let Some(e) = s.poll_event() {
            if let PlayerEvent::Refused { reason, message } = &e {
                refused = Some((*reason, message.clone()));
            }
            let _ = said.send(PlayingEvent::Session(e));
            news = true;
        }
        let device = shared.lock().ok().and_then(|x| x.clone());
        // Fresh while the device is being opened (the start-up reads the timing), then
        // every 100 ms.
        if now - last > Nanos::from_millis(100) || news || device.is_none() {
            last = now;
            if let Ok(mut st) = status.lock() {
                st.stats = s.stats();
                st.clock = s.clock().copied();
                st.arrival_jitter = s.arrival_jitter();
                st.info = s.info().cloned();
                st.buffered = s.buffered();
                st.latency = s.latency();
                st.streaming = s.is_streaming();
                st.timing = s.timing();
                st.first_due = s.first_due();
                if let Some(sh) = device {
                    st.underrun_frames = sh.underrun_frames.load(Ordering::Relaxed);
                    st.device_latency = sh.device_latency();
                }
                st.refused.clone_from(&refused);
            }
        }
        // At the latency it plays (a zone's may differ from the stream's).
        let batch = s
            .info()
            .filter(|_| *batched)
            .and_then(|i| read_batch(i.mode, i.group_latency + s.extra_latency()));
        let deadline = s.poll_timeout();
        if let Some(b) = batch {
            let now = clock::now();
            let wake =
                deadline.map_or(now + b, |d| d.min(now + b).max(now + Nanos::from_micros(100)));
            clock::sleep_until(wake);
            while let Some((n, from, at)) = try_recv(socket, &mut buf) {
                s.handle_datagram(at, from, &mut buf[..n]);
            }
            continue;
        }
        if let Some((n, from, at)) = recv_until(
            socket,
            &mut buf,
            clock::now(),
            deadline,
            Nanos::from_micros(100),
            Nanos::from_millis(5),
        ) {
            // Arrival instants come with the datagram (the kernel's, or stamped on receipt):
            // they feed the clock estimate.
            s.handle_datagram(at, from, &mut buf[..n]);
            // Drain whatever else already arrived without blocking.
            while let Some((n, from, at)) = try_recv(socket, &mut buf) {
                s.handle_datagram(at, from, &mut buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutti_proto::StreamFormat;

    fn info(latency_ms: i64) -> StreamInfo {
        StreamInfo {
            stream_id: 1,
            origin: 1,
            epoch: 1,
            format: StreamFormat::pcm(48_000, 2),
            mode: Mode::Sync,
            group_latency: Nanos::from_millis(latency_ms),
            fec: None,
            name: String::new(),
        }
    }

    #[test]
    fn a_device_starts_with_both_its_buffers_rendered_at_every_latency() {
        let device = OutputKind::Device { host: None, name: None };
        for ms in [20, 30, 40, 50, 60, 80, 100, 150, 200, 500, 1000] {
            let p = render_plan(&info(ms), Nanos::from_millis(ms), None, &device);
            assert!(p.lookahead >= 2 * p.buffer as usize, "{ms} ms: {p:?}");
            for asked in [256, 512, 1024, 2048] {
                let p = render_plan(&info(ms), Nanos::from_millis(ms), Some(asked), &device);
                assert!(p.lookahead >= 2 * p.buffer as usize, "{ms} ms, {asked} asked: {p:?}");
            }
        }
    }

    #[test]
    fn a_zone_latency_below_the_streams_sizes_the_device_for_the_zone() {
        let device = OutputKind::Device { host: None, name: None };
        let stream = render_plan(&info(100), Nanos::from_millis(100), None, &device);
        let zone = render_plan(&info(100), Nanos::from_millis(20), None, &device);
        assert_eq!(zone, render_plan(&info(20), Nanos::from_millis(20), None, &device));
        assert!(zone.buffer < stream.buffer, "{zone:?} vs {stream:?}");
        // Everything rendered has arrived: device lead and engine lead inside 20 ms.
        let lead_ms = f64::from(2 * zone.buffer + zone.block as u32) / 48.0;
        assert!(lead_ms < 20.0, "{zone:?} renders {lead_ms} ms ahead");
    }
}
