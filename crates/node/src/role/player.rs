//! The player as a handle: [`Player`] is started once and then driven by commands — from the
//! hub link ([`PlayerControl`] is its [`HubHandler`](crate::hub::HubHandler)) or from its
//! owner — and read by views; what it has to say comes as typed [`PlayerNotice`]s. A zone's
//! route is taken inside: the player joins the new stream itself (keeping its volume, mute
//! and delay), changes the latency of the one it plays in place, waits for a silent one and
//! tries again, and nobody polls or restarts it from outside.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tutti_audio::ramp::percent_to_gain;

use tutti_proto::Nanos;
use tutti_proto::control::{Command, NodeState, Settings};

use crate::NodeError;
use crate::player::{
    PlayerOptions, PlayerSnapshot, PlayingEvent, RunningPlayer, SessionCommand, run_player,
};
use crate::security::Keys;

/// What a [`Player`] can be told.
#[derive(Clone, Debug, PartialEq)]
pub enum PlayerCommand {
    /// Volume, percent (0–100): at once, or from stream frame `at` (a zone-wide change).
    Volume {
        /// Percent.
        percent: f32,
        /// The stream frame it starts on.
        at: Option<u64>,
    },
    /// Mute: at once, or from stream frame `at`.
    Mute {
        /// Muted.
        mute: bool,
        /// The stream frame it starts on.
        at: Option<u64>,
    },
    /// This device's own delay, ms.
    Delay {
        /// Milliseconds (positive: later).
        ms: f64,
    },
    /// Play the stream at `source` (`host:port`) at `latency` (`None`: the stream's own): a
    /// zone's route. The stream it plays is not joined again: the same latency changes
    /// nothing, a new one is changed in the running session.
    Route {
        /// The source's address.
        source: String,
        /// The group latency.
        latency: Option<Nanos>,
    },
    /// Re-anchor playout on the clock now.
    Resync,
    /// Play the identification chime.
    Identify,
    /// Play speaker `speaker`'s part of the calibration sequence for `speakers` speakers
    /// from stream frame `at`, instead of the stream.
    Calibrate {
        /// The sequence's speakers.
        speakers: u32,
        /// This one.
        speaker: u32,
        /// Its first frame.
        at: u64,
    },
    /// Stop a calibration sequence.
    CancelCalibration,
    /// Play a test tone instead of the stream.
    TestTone,
    /// Say `text` over the stream (offline speech).
    Say {
        /// What to say.
        text: String,
    },
}

/// What a [`Player`] says, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum PlayerNotice {
    /// What the running player said: the session's events (joined, refused, lost, back,
    /// ended) and the device's.
    Playing(PlayingEvent),
    /// A line passed on from the hub link.
    Said(String),
    /// It plays the stream at this address now (a route was taken).
    NowPlaying(SocketAddr),
    /// A route is waited for: its source is silent or cannot be reached (tried again every
    /// [`ROUTE_RETRY`]).
    Waiting {
        /// The route's source.
        source: String,
        /// Why it does not play yet.
        why: String,
    },
    /// A route that cannot be taken at all (an address that does not resolve): the player
    /// plays on what it played.
    BadRoute(String),
    /// Packets keep arriving after they were due (said at most once a minute).
    Late(String),
    /// The zone's latency changed on the stream it plays (`None`: the stream's own).
    Latency(Option<Nanos>),
}

impl core::fmt::Display for PlayerNotice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlayerNotice::Said(s) | PlayerNotice::Late(s) => f.write_str(s),
            PlayerNotice::Playing(e) => write!(f, "{e}"),
            PlayerNotice::NowPlaying(a) => write!(f, "zone: now playing {a}"),
            PlayerNotice::Waiting { source, why } => write!(
                f,
                "zone: waiting for the zone's source {source}: {why} (trying again every {} s)",
                ROUTE_RETRY.as_secs()
            ),
            PlayerNotice::BadRoute(why) => write!(f, "zone: {why}"),
            PlayerNotice::Latency(Some(l)) => {
                write!(f, "zone: latency now {:.1} ms", l.0 as f64 / 1e6)
            }
            PlayerNotice::Latency(None) => f.write_str("zone: latency now the stream's own"),
        }
    }
}

/// How often a route whose source is silent is tried again.
pub const ROUTE_RETRY: Duration = Duration::from_secs(2);

/// How often the player's own thread looks at its counters (late packets, the route to try).
const TICK: Duration = Duration::from_millis(100);

/// A player as a handle: commands in, snapshots and notices out. Dropping it stops playing.
#[derive(Debug)]
pub struct Player {
    control: PlayerControl,
    notices: Receiver<PlayerNotice>,
    thread: Option<JoinHandle<()>>,
}

/// The part of a [`Player`] others may hold (the hub link): sends commands, reads the state.
#[derive(Clone, Debug)]
pub struct PlayerControl {
    tx: Sender<Order>,
    current: Arc<Mutex<Current>>,
}

enum Order {
    Do(PlayerCommand),
    Say(String),
    Stop,
}

impl core::fmt::Debug for Order {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Order::Do(c) => write!(f, "Do({c:?})"),
            Order::Say(s) => write!(f, "Say({s})"),
            Order::Stop => f.write_str("Stop"),
        }
    }
}

/// The running player's parts the handle reads (replaced when it joins another stream).
struct Current {
    status: Arc<Mutex<PlayerSnapshot>>,
    /// The stream it plays (or last played, while a route is waited for).
    source: SocketAddr,
    local_addr: SocketAddr,
    /// Why the zone's route does not play (a silent or unresolvable source).
    route_problem: Option<String>,
    /// Volume, mute and delay as last set.
    levels: Levels,
}

impl core::fmt::Debug for Current {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Current").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Volume, mute and delay as last set (a player that changes streams keeps them).
#[derive(Clone, Copy, Debug, Default)]
struct Levels {
    volume: Option<f32>,
    mute: Option<bool>,
    delay_ms: Option<f64>,
}

impl Levels {
    fn apply(&self, player: &RunningPlayer) {
        if let Some(v) = self.volume {
            player.gain.set_volume_percent(v);
        }
        if let Some(m) = self.mute {
            player.gain.set_muted(m);
        }
        if let Some(d) = self.delay_ms {
            player.command(SessionCommand::DeviceOffset(Nanos((d * 1e6).round() as i64)));
        }
    }
}

/// A player's whole view: its counters, the stream it plays, and what keeps it from playing.
#[derive(Clone, Debug, Default)]
pub struct PlayerView {
    /// The counters.
    pub snapshot: PlayerSnapshot,
    /// The stream it plays.
    pub source: Option<SocketAddr>,
    /// Its socket's address.
    pub local_addr: Option<SocketAddr>,
    /// The stream frame playing now (for zone-wide changes).
    pub position: Option<u64>,
    /// Why it does not play as asked: the route, the device, the latency.
    pub problem: Option<String>,
    /// Volume (percent), as last set (`None`: as started).
    pub volume: Option<f32>,
    /// Muted, as last set.
    pub mute: Option<bool>,
    /// This device's delay (ms), as last set.
    pub delay_ms: Option<f64>,
}

impl Player {
    /// Joins `opts`' stream (an error if it cannot: nothing heard in time, refused, no
    /// device) and keeps playing until dropped or stopped.
    pub fn start(opts: PlayerOptions, keys: Keys) -> Result<Player, NodeError> {
        let running = run_player(opts.clone(), keys.clone())?;
        let current = Arc::new(Mutex::new(Current {
            status: running.status.clone(),
            source: opts.config.source,
            local_addr: running.local_addr,
            route_problem: None,
            levels: Levels::default(),
        }));
        let (tx, rx) = channel();
        let (notify, notices) = channel();
        let owner = Owner {
            base: opts,
            keys,
            running: Some(running),
            current: current.clone(),
            levels: Levels::default(),
            playing: None,
            pending: None,
            next_try: Instant::now(),
            late: LateWatch::default(),
            notify,
        };
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("tutti-player".into())
            .spawn(move || {
                // What it logs names the node its owner's span names.
                let _span = span.enter();
                owner.run(&rx);
            })
            .map_err(NodeError::Thread)?;
        Ok(Player { control: PlayerControl { tx, current }, notices, thread: Some(thread) })
    }

    /// A handle for others (the hub link).
    pub fn control(&self) -> PlayerControl {
        self.control.clone()
    }

    /// Tells the player to do something.
    pub fn command(&self, c: PlayerCommand) {
        self.control.command(c);
    }

    /// Everything it said since last asked.
    pub fn notices(&self) -> Vec<PlayerNotice> {
        self.notices.try_iter().collect()
    }

    /// Its state now.
    pub fn view(&self) -> PlayerView {
        self.control.view()
    }

    /// Stops playing (the source gets a `Bye`) and waits for it.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let _ = self.control.tx.send(Order::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.finish();
    }
}

impl PlayerControl {
    /// Tells the player to do something.
    pub fn command(&self, c: PlayerCommand) {
        let _ = self.tx.send(Order::Do(c));
    }

    /// Passes a line on to whoever reads the player's notices (the hub link's status).
    pub fn say(&self, line: impl Into<String>) {
        let _ = self.tx.send(Order::Say(line.into()));
    }

    /// Its state now.
    pub fn view(&self) -> PlayerView {
        let Ok(c) = self.current.lock() else { return PlayerView::default() };
        let snapshot = c.status.lock().map(|s| s.clone()).unwrap_or_default();
        let position = snapshot.timing.and_then(|t| t.position_at(tutti_audio::clock::now()));
        let problem = c
            .route_problem
            .clone()
            .or_else(|| snapshot.device_problem.clone())
            .or_else(|| snapshot.latency_problem.clone());
        PlayerView {
            snapshot,
            source: Some(c.source),
            local_addr: Some(c.local_addr),
            position,
            problem,
            volume: c.levels.volume,
            mute: c.levels.mute,
            delay_ms: c.levels.delay_ms,
        }
    }
}

/// The hub's commands, applied as they come; the state reported from the view.
impl crate::hub::HubHandler for PlayerControl {
    fn state(&mut self) -> NodeState {
        let v = self.view();
        let s = v.snapshot;
        NodeState {
            position: v.position,
            rate: s.info.as_ref().map(|i| i.format.sample_rate),
            streaming: s.streaming,
            stream: s.info.as_ref().map(|i| i.name.clone()),
            offset_us: s.clock.as_ref().map(|c| c.offset.0 as f64 / 1e3),
            skew_ppm: s.clock.as_ref().map(|c| c.skew_ppm()),
            latency_ms: s.latency.map(|l| l.0 as f64 / 1e6),
            jitter_ms: s.arrival_jitter.map(|j| j.0 as f64 / 1e6),
            buffered: Some(s.buffered),
            buffered_ms: s.info.as_ref().map(|i| {
                let f = &i.format;
                s.buffered as f64 * f64::from(f.frames_per_packet) * 1e3
                    / f64::from(f.sample_rate.max(1))
            }),
            resyncs: s.stats.resyncs,
            recovered: s.stats.recovered_fec + s.stats.recovered_retx,
            concealed: s.stats.concealed,
            underruns: s.underrun_frames,
            device_latency_ms: Some(s.device_latency.0 as f64 / 1e6).filter(|&ms| ms > 0.0),
            problem: v.problem,
            rejected: s.stats.rx_errors.total(),
            foreign: s.stats.foreign,
            ..NodeState::default()
        }
    }

    fn settings(&mut self, settings: &Settings) {
        let c = PlayerControl::command;
        c(self, PlayerCommand::Volume { percent: settings.volume, at: None });
        c(self, PlayerCommand::Mute { mute: settings.mute, at: None });
        c(self, PlayerCommand::Delay { ms: settings.delay_ms });
    }

    fn command(&mut self, command: &Command) {
        let c = match command {
            Command::Volume { percent, at } => PlayerCommand::Volume { percent: *percent, at: *at },
            Command::Mute { mute, at } => PlayerCommand::Mute { mute: *mute, at: *at },
            Command::Delay { ms } => PlayerCommand::Delay { ms: *ms },
            Command::Route { source, latency_ms } => PlayerCommand::Route {
                source: source.clone(),
                latency: latency_ms.map(|l| Nanos::from_secs_f64(l / 1e3)),
            },
            Command::Resync => PlayerCommand::Resync,
            Command::Identify => PlayerCommand::Identify,
            Command::Calibrate { speakers, speaker, at } => {
                PlayerCommand::Calibrate { speakers: *speakers, speaker: *speaker, at: *at }
            }
            Command::CancelCalibration => PlayerCommand::CancelCalibration,
            Command::TestTone => PlayerCommand::TestTone,
            Command::Say { text } => PlayerCommand::Say { text: text.clone() },
            // The hub's to turn into words.
            Command::SayStatus => return,
            // A source's controls: not among a player's capabilities.
            Command::Start | Command::Pause | Command::Stop | Command::Skip => return,
        };
        PlayerControl::command(self, c);
    }

    fn status(&mut self, message: &str) {
        self.say(message);
    }
}

/// Said when a sound is asked of a player that plays no stream (it plays over the stream).
const NOT_PLAYING: &str = "nothing plays yet: a test tone or speech plays over the stream";

/// The stream frame 100 ms from now (a sound asked for now starts there), once the player
/// plays.
fn soon(p: &RunningPlayer) -> Option<u64> {
    let timing = p.status.lock().ok()?.timing?;
    timing.position_at(tutti_audio::clock::now() + Nanos::from_millis(100))
}

/// The player's own thread: owns the running player and takes every command in turn.
struct Owner {
    base: PlayerOptions,
    keys: Keys,
    running: Option<RunningPlayer>,
    current: Arc<Mutex<Current>>,
    levels: Levels,
    /// The route it plays (source, latency), once one was taken.
    playing: Option<(SocketAddr, Option<Nanos>)>,
    /// A route not playing yet (its source silent): tried again every [`ROUTE_RETRY`].
    pending: Option<(String, SocketAddr, Option<Nanos>)>,
    next_try: Instant,
    late: LateWatch,
    notify: Sender<PlayerNotice>,
}

impl Owner {
    fn run(mut self, rx: &Receiver<Order>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Order::Do(c)) => self.apply(c),
                Ok(Order::Say(s)) => self.tell(PlayerNotice::Said(s)),
                Ok(Order::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.tick();
            }
        }
        if let Some(p) = self.running.take() {
            p.stop();
        }
    }

    fn tell(&self, n: PlayerNotice) {
        let _ = self.notify.send(n);
    }

    fn set_problem(&self, p: Option<String>) {
        if let Ok(mut c) = self.current.lock() {
            c.route_problem = p;
        }
    }

    fn apply(&mut self, c: PlayerCommand) {
        match c {
            PlayerCommand::Volume { percent, .. } => self.levels.volume = Some(percent),
            PlayerCommand::Mute { mute, .. } => self.levels.mute = Some(mute),
            PlayerCommand::Delay { ms } => self.levels.delay_ms = Some(ms),
            PlayerCommand::Route { source, latency } => return self.route(source, latency),
            PlayerCommand::Resync
            | PlayerCommand::Identify
            | PlayerCommand::Calibrate { .. }
            | PlayerCommand::CancelCalibration
            | PlayerCommand::TestTone
            | PlayerCommand::Say { .. } => {}
        }
        if let Ok(mut cur) = self.current.lock() {
            cur.levels = self.levels;
        }
        // Waiting for a route's source: remembered, applied once it plays.
        let Some(p) = &self.running else { return };
        match c {
            PlayerCommand::Volume { percent, at: Some(at) } => {
                p.gain.schedule(Some(percent_to_gain(percent)), None, at);
            }
            PlayerCommand::Volume { percent, at: None } => p.gain.set_volume_percent(percent),
            PlayerCommand::Mute { mute, at: Some(at) } => p.gain.schedule(None, Some(mute), at),
            PlayerCommand::Mute { mute, at: None } => p.gain.set_muted(mute),
            PlayerCommand::Delay { ms } => {
                Levels { delay_ms: Some(ms), ..Levels::default() }.apply(p);
            }
            PlayerCommand::Resync => p.command(SessionCommand::Resync),
            PlayerCommand::Identify => p.cue.ask(),
            PlayerCommand::Calibrate { speakers, speaker, at } => {
                let sequence = tutti_calib::Plan::new(speakers as usize)
                    .and_then(|plan| plan.render(speaker as usize, f64::from(p.rate)));
                match sequence {
                    Ok(samples) => {
                        if !p.overlay.schedule(samples, at) {
                            self.tell(PlayerNotice::Said(
                                "calibration: the player is busy with the sequence before; \
                                 not played"
                                    .into(),
                            ));
                        }
                    }
                    Err(e) => self.tell(PlayerNotice::Said(format!("calibration: {e}"))),
                }
            }
            PlayerCommand::CancelCalibration => p.overlay.cancel(),
            PlayerCommand::TestTone => {
                let tone = tutti_audio::cue::test_tone(p.rate);
                match soon(p) {
                    Some(at) => {
                        p.overlay.schedule(tone, at);
                    }
                    None => self.tell(PlayerNotice::Said(NOT_PLAYING.into())),
                }
            }
            PlayerCommand::Say { text } => {
                // espeak-ng takes a moment: off this thread, scheduled once it has spoken.
                let (overlay, status, rate) = (p.overlay.clone(), p.status.clone(), p.rate);
                let notify = self.notify.clone();
                let spoken =
                    std::thread::Builder::new().name("tutti-say".into()).spawn(move || {
                        let said = match tutti_audio::cue::speech(&text, rate) {
                            Ok(pcm) => {
                                let at = status.lock().ok().and_then(|s| s.timing).and_then(|t| {
                                    t.position_at(
                                        tutti_audio::clock::now() + Nanos::from_millis(100),
                                    )
                                });
                                match at {
                                    Some(at) => {
                                        overlay.schedule(pcm, at);
                                        return;
                                    }
                                    None => NOT_PLAYING.to_owned(),
                                }
                            }
                            Err(e) => format!("cannot speak: {e}"),
                        };
                        let _ = notify.send(PlayerNotice::Said(said));
                    });
                if let Err(e) = spoken {
                    self.tell(PlayerNotice::Said(format!("cannot speak: {e}")));
                }
            }
            PlayerCommand::Route { .. } => {}
        }
    }

    /// Takes a zone's route: a new stream (or latency) is joined on the next tick; the one
    /// it plays changes nothing.
    fn route(&mut self, source: String, latency: Option<Nanos>) {
        let addr = match source.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                let why = format!(
                    "the zone's source `{source}` does not resolve: use host:port, e.g. \
                     192.168.1.20:7400"
                );
                self.tell(PlayerNotice::BadRoute(why.clone()));
                self.set_problem(Some(why));
                return;
            }
        };
        let playing =
            self.playing.unwrap_or((self.base.config.source, self.base.config.latency_override));
        // (Also while it is down, waiting on another source: a route back to the stream it
        // played is a route to take.)
        let plays_at = latency.or(self.base.config.latency_override);
        if addr == playing.0
            && let Some(p) = &self.running
            && p.fits(plays_at)
        {
            // The stream it plays: nothing to join. A new latency is changed in the running
            // session (playout moves by the difference at the next render).
            if latency != playing.1 {
                p.command(SessionCommand::LatencyOverride(plays_at));
                self.playing = Some((addr, latency));
                self.tell(PlayerNotice::Latency(latency));
            }
            self.pending = None;
            self.set_problem(None);
            return;
        }
        // (The stream it plays at a latency too short for the device buffer it opened: joined
        // again below, the device opened for the new latency.)
        self.pending = Some((source, addr, latency));
        self.next_try = Instant::now();
        self.tick_route();
    }

    fn tick(&mut self) {
        self.tick_route();
        let Some(p) = &self.running else { return };
        for e in p.events() {
            self.tell(PlayerNotice::Playing(e));
        }
        let snap = p.status.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(w) = self.late.check(&snap) {
            self.tell(PlayerNotice::Late(w));
        }
        if let Ok(mut st) = p.status.lock() {
            st.latency_problem.clone_from(&self.late.current);
        }
    }

    fn tick_route(&mut self) {
        let Some((source, addr, latency)) = self.pending.clone() else { return };
        if Instant::now() < self.next_try {
            return;
        }
        let mut opts = self.base.clone();
        opts.config.source = addr;
        opts.config.latency_override = latency.or(self.base.config.latency_override);
        if let Some(p) = self.running.take() {
            // Its last words first.
            for e in p.stop() {
                self.tell(PlayerNotice::Playing(e));
            }
        }
        match run_player(opts, self.keys.clone()) {
            Ok(p) => {
                self.levels.apply(&p);
                if let Ok(mut c) = self.current.lock() {
                    c.status = p.status.clone();
                    c.source = addr;
                    c.local_addr = p.local_addr;
                    c.route_problem = None;
                }
                self.running = Some(p);
                self.playing = Some((addr, latency));
                self.pending = None;
                self.tell(PlayerNotice::NowPlaying(addr));
            }
            // A silent source is waited for, never a dead player: said once, retried.
            Err(e) => {
                let why = e.to_string();
                let problem = format!("waiting for the zone's source {addr}: {why}");
                let said = self.current.lock().ok().and_then(|c| c.route_problem.clone());
                if said.as_deref() != Some(problem.as_str()) {
                    self.tell(PlayerNotice::Waiting { source, why });
                }
                self.set_problem(Some(problem));
                self.next_try = Instant::now() + ROUTE_RETRY;
            }
        }
    }
}

/// Watches for packets that keep arriving after they were due: the group latency does not
/// fit this device and path.
#[derive(Debug, Default)]
struct LateWatch {
    window: Option<(Instant, u64)>,
    said: Option<Instant>,
    /// The problem while packets keep coming late (for the hub), cleared by a window
    /// without any.
    current: Option<String>,
}

impl LateWatch {
    /// A warning to say, if packets were late in the last 10 s and none was said for a
    /// minute.
    fn check(&mut self, s: &PlayerSnapshot) -> Option<String> {
        let now = Instant::now();
        let (since, base) = *self.window.get_or_insert((now, s.stats.stalled));
        if now - since < Duration::from_secs(10) {
            return None;
        }
        self.window = Some((now, s.stats.stalled));
        let late = s.stats.stalled.saturating_sub(base);
        if late == 0 {
            self.current = None;
        }
        let quiet = self.said.is_none_or(|t| now - t >= Duration::from_secs(60));
        let latency = s.latency?;
        if late < 5 || !s.streaming {
            return None;
        }
        let problem = format!(
            "late packets: {late} in 10 s arrived after they were due and played as gaps; the group latency ({:.1} ms) does not fit this device ({:.1} ms of its own) and the path to it: give the stream more (--latency-ms)",
            latency.0 as f64 / 1e6,
            s.device_latency.0 as f64 / 1e6
        );
        self.current = Some(problem.clone());
        if !quiet {
            return None;
        }
        self.said = Some(now);
        Some(problem)
    }
}
