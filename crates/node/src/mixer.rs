//! The party host: many live microphone streams (and a backing track), each with its own
//! session, jitter buffer and drift correction, mixed into one output.
//!
//! Microphones are sources that send to this host (`tutti stream --live --device mic --to
//! HOST:PORT`). One socket receives them all; each new source address gets its own
//! [`PlayerSession`] (its network half, owned by the network thread), and its [`Voice`] —
//! holding the session's [`Playback`] half — joins the [`Mixer`] on the media thread.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tutti_audio::backend::StreamSpec;
use tutti_audio::clock;
use tutti_audio::engine::{EngineConfig, OutputShared, Program, Voice, output};
use tutti_audio::mixer::{InputControls, Meter, Mixer};
use tutti_audio::ramp::SharedGain;
use tutti_proto::player::{PlayerEvent, PlayerStats};
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::{Nanos, Playback, PlayerConfig, PlayerSession};

use crate::NodeError;
use crate::net::{RECV_BUF, bind, recv_until};
use crate::output::{self, DeviceEvent, OutputKind, OutputPlan};
use crate::player::NetTimeline;
use crate::security::Keys;

/// One microphone as the host sees it.
#[derive(Clone, Debug)]
pub struct MixInput {
    /// Its address.
    pub addr: SocketAddr,
    /// Its stream name (the sender's device or file).
    pub name: String,
    /// Gain, mute, pan and level.
    pub controls: Arc<InputControls>,
    /// Capture → playout latency it plays at.
    pub latency: Option<Nanos>,
    /// Its session's counters (received, lost, recovered, concealed, late, resyncs).
    pub stats: PlayerStats,
}

/// What a party host says, as it happens (read with [`RunningMixer::events`]).
#[derive(Clone, Debug, PartialEq)]
pub enum MixerEvent {
    /// A microphone joined the mix.
    Joined {
        /// Its address.
        addr: SocketAddr,
        /// Its stream's name.
        name: String,
    },
    /// A microphone went silent for [`DEPARTED_EXPIRY`] and left the mix (its place is free).
    Left {
        /// Its address.
        addr: SocketAddr,
        /// Its stream's name.
        name: String,
    },
    /// The output device's news: stopped, cannot be opened, playing again.
    Device(DeviceEvent),
}

impl MixerEvent {
    /// Whether it is trouble (a warning) rather than news.
    pub fn is_trouble(&self) -> bool {
        matches!(self, MixerEvent::Device(e) if !matches!(e, DeviceEvent::Reopened(_)))
    }
}

impl core::fmt::Display for MixerEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MixerEvent::Joined { addr, name } => write!(f, "mic `{name}` joined from {addr}"),
            MixerEvent::Left { addr, name } => write!(
                f,
                "mic `{name}` left ({addr} silent for {} s): its place is free",
                DEPARTED_EXPIRY.0 / 1_000_000_000
            ),
            MixerEvent::Device(e) => write!(f, "{e}"),
        }
    }
}

/// A running party host.
pub struct RunningMixer {
    /// The inputs, by arrival.
    pub inputs: Arc<Mutex<Vec<MixInput>>>,
    /// The mix's level.
    pub master: Arc<Meter>,
    /// Device counters.
    pub shared: Arc<OutputShared>,
    /// Local address microphones send to.
    pub local_addr: SocketAddr,
    /// Datagrams from unknown senders that did not open with the network's keys as a stream
    /// (junk, strangers): dropped with no session and no reply.
    pub refused: Arc<AtomicU64>,
    /// Voices that left (silent for [`DEPARTED_EXPIRY`]) and were taken out of the mix.
    pub departed: Arc<AtomicU64>,
    events: Receiver<MixerEvent>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningMixer {
    /// What it said since last asked.
    pub fn events(&self) -> Vec<MixerEvent> {
        self.events.try_iter().collect()
    }
}

impl core::fmt::Debug for RunningMixer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunningMixer").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// What a party host can be told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MixerCommand {
    /// The mix's volume, percent (0–100).
    Volume(f32),
    /// The mix muted.
    Mute(bool),
}

/// The part of a party host others may hold (the hub link): commands in, the state out.
#[derive(Clone, Debug)]
pub struct MixerControl {
    inputs: Arc<Mutex<Vec<MixInput>>>,
    refused: Arc<AtomicU64>,
    master: Arc<Meter>,
    shared: Arc<OutputShared>,
}

impl MixerControl {
    /// Tells the host.
    pub fn command(&self, c: MixerCommand) {
        match c {
            MixerCommand::Volume(percent) => self.shared.gain.set_volume_percent(percent),
            MixerCommand::Mute(mute) => self.shared.gain.set_muted(mute),
        }
    }
}

/// What a party host tells the hub (its microphones, their latency, the mix's level), and
/// how it obeys it (volume and mute of the mix).
impl crate::hub::HubHandler for MixerControl {
    fn state(&mut self) -> tutti_proto::control::NodeState {
        let inputs = self.inputs.lock().map(|i| i.clone()).unwrap_or_default();
        let mut latencies: Vec<f64> =
            inputs.iter().filter_map(|i| i.latency.map(|l| l.0 as f64 / 1e6)).collect();
        latencies.sort_by(f64::total_cmp);
        let peak = self.master.peak_db();
        tutti_proto::control::NodeState {
            streaming: !inputs.is_empty(),
            peers: Some(inputs.len() as u32),
            latency_ms: latencies.get(latencies.len() / 2).copied(),
            recovered: inputs.iter().map(|i| i.stats.recovered_fec + i.stats.recovered_retx).sum(),
            concealed: inputs.iter().map(|i| i.stats.concealed).sum(),
            resyncs: inputs.iter().map(|i| i.stats.resyncs).sum(),
            underruns: self.shared.underrun_frames.load(Ordering::Relaxed),
            level_db: peak.is_finite().then_some(f64::from(peak)),
            rejected: self.refused.load(Ordering::Relaxed),
            foreign: inputs.iter().map(|i| i.stats.foreign).sum(),
            ..Default::default()
        }
    }

    fn settings(&mut self, settings: &tutti_proto::control::Settings) {
        MixerControl::command(self, MixerCommand::Volume(settings.volume));
        MixerControl::command(self, MixerCommand::Mute(settings.mute));
    }

    fn command(&mut self, command: &tutti_proto::control::Command) {
        use tutti_proto::control::Command;
        match command {
            Command::Volume { percent, .. } => {
                MixerControl::command(self, MixerCommand::Volume(*percent));
            }
            Command::Mute { mute, .. } => MixerControl::command(self, MixerCommand::Mute(*mute)),
            _ => {}
        }
    }
}

impl RunningMixer {
    /// A handle for the hub link.
    pub fn control(&self) -> MixerControl {
        MixerControl {
            inputs: self.inputs.clone(),
            refused: self.refused.clone(),
            master: self.master.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Stops the host.
    pub fn stop(mut self) {
        // The media thread stops the device (a file is finished) on its way out.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RunningMixer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How a host runs.
#[derive(Clone, Debug)]
pub struct MixerOptions {
    /// Address microphones send to.
    pub bind: SocketAddr,
    /// Where the mix plays.
    pub output: OutputKind,
    /// Device buffer, frames.
    pub buffer_frames: u32,
    /// Gains by stream name (dB), applied when that microphone joins.
    pub gains_db: Vec<(String, f32)>,
    /// Most microphones.
    pub max_inputs: usize,
    /// Headphones mode: this node's own microphone arrives from this address (over loopback)
    /// and is mixed at this gain (dB) as the singer's monitor.
    pub monitor: Option<(SocketAddr, f32)>,
}

/// What the network thread asks of the media thread's mix.
enum VoiceOp {
    /// A new voice (program, channels): its input id and controls come back.
    Add(Box<dyn Program>, usize, Sender<(u64, Arc<InputControls>)>),
    /// A voice that left.
    Remove(u64),
}

/// Starts a party host mixing every live stream sent to `opts.bind` (48 kHz stereo out).
pub fn run_mixer(opts: MixerOptions, security: impl Into<Keys>) -> Result<RunningMixer, NodeError> {
    let keys: Keys = security.into();
    let socket = bind(opts.bind, None)?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| NodeError::Socket { what: "its local address".into(), source: e })?;
    let stop = Arc::new(AtomicBool::new(false));
    let inputs: Arc<Mutex<Vec<MixInput>>> = Arc::new(Mutex::new(Vec::new()));
    let mixer = Mixer::new(2, 48_000, 256);
    let master = mixer.master.clone();
    let block = 64;
    let config = EngineConfig {
        device_rate: 48_000,
        channels: 2,
        block,
        lookahead: opts.buffer_frames as usize + block,
        // A machine that stalls the media thread costs up to 10 ms more latency, not dropouts.
        max_lookahead: opts.buffer_frames as usize + block + 480,
    };
    let (engine, renderer, shared) = output(mixer, config, SharedGain::new());
    let (voice_tx, voice_rx) = channel::<VoiceOp>();
    let (said, events) = channel();
    let device_said = said.clone();
    let plan = OutputPlan {
        kind: opts.output.clone(),
        spec: StreamSpec::new(48_000, 2, opts.buffer_frames),
        first_frame: None,
        tick: Duration::from_micros(300),
        follow_callbacks: false,
    };
    let (opened_tx, opened) = channel();
    let media = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("tutti-mix-media".into())
            .spawn(move || {
                clock::prefer_current_thread(-10);
                let add_voices = |engine: &mut tutti_audio::engine::OutputEngine<Mixer>| {
                    while let Ok(op) = voice_rx.try_recv() {
                        let mix = engine.program();
                        match op {
                            VoiceOp::Add(voice, channels, reply) => {
                                let added = if channels == 1 {
                                    mix.add_mono(voice)
                                } else {
                                    mix.add(voice)
                                };
                                let _ = reply.send(added);
                            }
                            VoiceOp::Remove(id) => {
                                mix.remove(id);
                            }
                        }
                    }
                };
                output::drive(&plan, engine, renderer, &stop, &opened_tx, add_voices, |e| {
                    let _ = device_said.send(MixerEvent::Device(e));
                });
            })
            .map_err(NodeError::Thread)?
    };
    match opened.recv() {
        Ok(Ok(())) => {}
        failed => {
            stop.store(true, Ordering::Relaxed);
            let _ = media.join();
            return Err(match failed {
                Ok(Err(e)) => e.into(),
                _ => NodeError::MediaThread,
            });
        }
    }
    let refused = Arc::new(AtomicU64::new(0));
    let departed = Arc::new(AtomicU64::new(0));
    let net = {
        let (stop, inputs, refused, departed) =
            (stop.clone(), inputs.clone(), refused.clone(), departed.clone());
        let mut gains: Vec<(Gain, f32)> =
            opts.gains_db.iter().map(|(n, g)| (Gain::Name(n.clone()), *g)).collect();
        if let Some((addr, db)) = opts.monitor {
            gains.insert(0, (Gain::From(addr), db));
        }
        let max = opts.max_inputs;
        std::thread::Builder::new()
            .name("tutti-mix-net".into())
            .spawn(move || {
                let counts = Counts { refused: &refused, departed: &departed, said };
                network_loop(socket, keys, voice_tx, &inputs, &gains, max, counts, &stop)
            })
            .map_err(NodeError::Thread)?
    };
    Ok(RunningMixer {
        inputs,
        master,
        shared,
        local_addr,
        refused,
        departed,
        events,
        stop,
        threads: vec![media, net],
    })
}

/// What the network thread counts for the host's status.
struct Counts<'a> {
    refused: &'a AtomicU64,
    departed: &'a AtomicU64,
    said: Sender<MixerEvent>,
}

/// Whose gain: a stream's sender, or (part of) its name.
enum Gain {
    From(SocketAddr),
    Name(String),
}

struct Mic {
    /// The session's network half (this thread owns it).
    session: PlayerSession,
    /// Its playout half, until the voice takes it to the media thread.
    playback: Option<Playback>,
    voice_sent: bool,
    /// Its input in the mix, once it is one.
    input: Option<u64>,
    /// When it was last heard.
    heard: tutti_proto::LocalTime,
}

/// A sender that has not joined as a voice within this long of its last datagram is dropped.
pub const UNJOINED_EXPIRY: Nanos = Nanos::from_secs(5);
/// A voice silent this long has left (a phone that went away): it leaves the mix and frees its
/// slot, and the host stops asking after it.
pub const DEPARTED_EXPIRY: Nanos = Nanos::from_secs(10);

/// Whether `datagram` (copied into `scratch`, which is decrypted in place) opens with the
/// current keys and carries a stream's announce or audio.
fn opens_a_stream(scratch: &mut [u8], datagram: &[u8], keys: &Keys) -> bool {
    let Some(copy) = scratch.get_mut(..datagram.len()) else { return false };
    copy.copy_from_slice(datagram);
    let mut replay = tutti_proto::crypto::ReplayGuard::new(1);
    matches!(
        tutti_proto::wire::decode(copy, &keys.current(), &mut replay),
        Ok((_, tutti_proto::wire::Packet::Announce(_) | tutti_proto::wire::Packet::Audio(_)))
    )
}

#[allow(clippy::too_many_arguments)]
fn network_loop(
    socket: UdpSocket,
    keys: Keys,
    voices: Sender<VoiceOp>,
    inputs: &Mutex<Vec<MixInput>>,
    gains: &[(Gain, f32)],
    max: usize,
    Counts { refused, departed, said }: Counts<'_>,
    stop: &AtomicBool,
) {
    let mut mics: HashMap<SocketAddr, Mic> = HashMap::new();
    let mut buf = vec![0u8; RECV_BUF];
    let mut probe = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut key_version = keys.version();
    while !stop.load(Ordering::Relaxed) {
        if let Some(k) = keys.changed(&mut key_version) {
            for m in mics.values_mut() {
                m.session.set_security(k.clone());
            }
        }
        let now = clock::now();
        let tick = Nanos::from_millis(1);
        if let Some((n, from, at)) = recv_until(&socket, &mut buf, now, None, tick, tick) {
            // A session (and the probes it sends) only for a sender whose datagram opens with
            // the network's keys and is a stream's: junk from anywhere costs one decryption
            // and a count, no state, no reply.
            if !mics.contains_key(&from) && !opens_a_stream(&mut probe, &buf[..n], &keys) {
                refused.fetch_add(1, Ordering::Relaxed);
            } else if !mics.contains_key(&from)
                && mics.len() < max
                && let Ok(random) = tutti_os::try_random()
            {
                let random = u128::from_le_bytes(random);
                let mut cfg = PlayerConfig::new(from);
                cfg.name = "party host".into();
                cfg.lock_span = Nanos::from_millis(100);
                let (session, playback) =
                    PlayerSession::new(cfg, keys.current(), random, clock::now());
                mics.insert(
                    from,
                    Mic {
                        session,
                        playback: Some(playback),
                        voice_sent: false,
                        input: None,
                        heard: at,
                    },
                );
            }
            if let Some(m) = mics.get_mut(&from) {
                m.heard = at;
            }
            if let Some(m) = mics.get_mut(&from) {
                m.session.handle_datagram(at, from, &mut buf[..n]);
            }
        }
        let now = clock::now();
        // A sender that never became a voice and went quiet frees its slot; so does a voice
        // that left (it leaves the mix too).
        mics.retain(|addr, m| {
            let silent = now - m.heard;
            if !m.voice_sent {
                return silent < UNJOINED_EXPIRY;
            }
            if silent < DEPARTED_EXPIRY {
                return true;
            }
            if let Some(id) = m.input {
                let _ = voices.send(VoiceOp::Remove(id));
            }
            if let Ok(mut list) = inputs.lock() {
                let name = list.iter().find(|i| i.addr == *addr).map(|i| i.name.clone());
                list.retain(|i| i.addr != *addr);
                let name = name.unwrap_or_default();
                let _ = said.send(MixerEvent::Left { addr: *addr, name });
            }
            departed.fetch_add(1, Ordering::Relaxed);
            false
        });
        for (addr, m) in &mut mics {
            let s = &mut m.session;
            s.handle_timeout(now);
            while let Some(t) = s.poll_transmit(now, &mut out) {
                let _ = socket.send_to(&out[..t.len], *addr);
            }
            while let Some(e) = s.poll_event() {
                if let PlayerEvent::Joined(info) = e {
                    let Some(playback) = m.playback.take() else { continue };
                    m.voice_sent = true;
                    let timeline = NetTimeline::new(playback, usize::from(info.format.channels));
                    let channels = if info.format.channels >= 2 { 2 } else { 1 };
                    let program: Box<dyn Program> =
                        Box::new(Voice::new(timeline, channels, info.format.sample_rate, 48_000));
                    let (tx, rx) = channel();
                    if voices.send(VoiceOp::Add(program, channels, tx)).is_ok()
                        && let Ok((id, controls)) = rx.recv_timeout(Duration::from_secs(1))
                    {
                        m.input = Some(id);
                        if let Some((_, db)) = gains.iter().find(|(g, _)| match g {
                            Gain::From(a) => a == addr,
                            Gain::Name(n) => info.name.contains(n.as_str()),
                        }) {
                            controls.set_gain_db(*db);
                        }
                        let _ =
                            said.send(MixerEvent::Joined { addr: *addr, name: info.name.clone() });
                        if let Ok(mut list) = inputs.lock() {
                            list.push(MixInput {
                                addr: *addr,
                                name: info.name.clone(),
                                controls,
                                latency: None,
                                stats: PlayerStats::default(),
                            });
                        }
                    }
                }
            }
            if let Ok(mut list) = inputs.lock()
                && let Some(i) = list.iter_mut().find(|i| i.addr == *addr)
            {
                i.latency = s.latency();
                i.stats = s.stats();
            }
        }
    }
}
