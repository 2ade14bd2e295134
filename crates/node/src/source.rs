//! A running stream: encoder thread → network thread (owns the [`SourceSession`]).

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;

use tutti_audio::capture::CaptureSource;
use tutti_audio::clock;
use tutti_audio::format::encode_pcm;
use tutti_audio::opus::{FrameDuration, OpusEncoder};
use tutti_audio::source::{Metadata, Source};
use tutti_proto::source::{SourceEvent, SourceStats};
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::{Codec, Destination, LocalTime, Mode, Nanos, SourceConfig, SourceSession};

use crate::NodeError;
use crate::net::{RECV_BUF, bind, multicast_sender, recv_or_wake, wake, wake_pair};
use crate::security::Keys;

/// Where the audio comes from.
pub enum Input {
    /// A paced source (tone, stdin): read as fast as the schedule wants.
    Paced {
        /// The source, already at the stream's rate and channels.
        source: Box<dyn Source>,
    },
    /// Files, one after another (one file, a folder, a list): paced, and controlled
    /// (start, pause, stop, skip: see [`SourceProgress::request`]).
    Playlist(Playlist),
    /// A capture device: frames leave as soon as they are captured.
    Captured(Box<CaptureSource>),
}

/// Opens a file as a source at the stream's rate and channels.
pub type Opener = Box<dyn FnMut(&Path) -> Result<Box<dyn Source>, tutti_audio::AudioError> + Send>;

/// Files played one after another on one stream.
pub struct Playlist {
    files: Vec<PathBuf>,
    index: usize,
    looping: bool,
    open: Opener,
}

impl Playlist {
    /// Plays `files` in order (from the first again after the last if `looping`), opening
    /// each with `open`.
    pub fn new(files: Vec<PathBuf>, looping: bool, open: Opener) -> Self {
        Playlist { files, index: 0, looping, open }
    }

    /// The track at `index` or the first after it that opens (wrapping when looping); the
    /// tracks that failed, with why. `None`: the playlist is over.
    fn open_at(&mut self, index: usize, progress: &SourceProgress) -> Option<Box<dyn Source>> {
        let n = self.files.len();
        for k in 0..n {
            let i = index + k;
            if i >= n && !self.looping {
                return None;
            }
            let i = i % n;
            match (self.open)(&self.files[i]) {
                Ok(s) => {
                    self.index = i;
                    return Some(s);
                }
                Err(e) => progress.tell(StreamingEvent::Skipped {
                    file: self.files[i].clone(),
                    why: e.to_string(),
                }),
            }
        }
        None
    }

    fn file_name(&self) -> String {
        self.files
            .get(self.index)
            .and_then(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A file source's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Sending the track.
    Playing,
    /// Sending silence, holding the position.
    Paused,
    /// Sending silence, at the start of the track.
    Stopped,
}

impl Transport {
    /// `playing`, `paused`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Playing => "playing",
            Transport::Paused => "paused",
            Transport::Stopped => "stopped",
        }
    }
}

/// A request to a file source's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Play (resume; from the start after a stop).
    Start,
    /// Silence, holding the position.
    Pause,
    /// Silence, back to the start of the track.
    Stop,
    /// The next track.
    Skip,
}

/// What a playlist is playing now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NowPlaying {
    /// The file's name.
    pub file: String,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its index in the playlist (from 0) and the playlist's length.
    pub index: usize,
    /// Tracks in the playlist.
    pub count: usize,
    /// Tracks started so far (changes with every track, looping included).
    pub serial: u64,
}

/// What a running stream says, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamingEvent {
    /// The session's: a player joined, left, went silent, was refused.
    Session(SourceEvent),
    /// A playlist's file that does not open, skipped.
    Skipped {
        /// The file.
        file: PathBuf,
        /// Why it does not open.
        why: String,
    },
    /// The capture device delivers nothing: silence is streamed meanwhile.
    Waiting {
        /// The device.
        device: String,
    },
    /// The capture device delivers sound again.
    Sound {
        /// The device.
        device: String,
    },
    /// A line passed on from the hub link.
    Hub(String),
}

impl StreamingEvent {
    /// Whether it is trouble (a warning) rather than news.
    pub fn is_trouble(&self) -> bool {
        match self {
            StreamingEvent::Session(e) => matches!(
                e,
                SourceEvent::ReceiverRefused { .. }
                    | SourceEvent::ReceiverLeft { timed_out: true, .. }
            ),
            StreamingEvent::Skipped { .. } | StreamingEvent::Waiting { .. } => true,
            StreamingEvent::Sound { .. } | StreamingEvent::Hub(_) => false,
        }
    }
}

impl core::fmt::Display for StreamingEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StreamingEvent::Session(e) => match e {
                SourceEvent::ReceiverJoined { addr, name } => write!(f, "{name} ({addr}) joined"),
                SourceEvent::ReceiverLeft { addr, timed_out: true } => {
                    write!(f, "{addr} went silent")
                }
                SourceEvent::ReceiverLeft { addr, .. } => write!(f, "{addr} left"),
                SourceEvent::ReceiverRefused { addr } => write!(f, "{addr} refused: server full"),
                other => write!(f, "{other:?}"),
            },
            StreamingEvent::Skipped { file, why } => {
                write!(f, "skipping {}: {why}", file.display())
            }
            StreamingEvent::Waiting { device } => {
                write!(f, "waiting for sound on {device}: streaming silence meanwhile")
            }
            StreamingEvent::Sound { device } => write!(f, "sound on {device}"),
            StreamingEvent::Hub(line) => f.write_str(line),
        }
    }
}

impl SourceProgress {
    fn tell(&self, e: StreamingEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(e);
        }
    }
}

/// Counters a CLI shows.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// Frames read from the input so far (this pass).
    pub frames: AtomicU64,
    /// Total frames of the input, if known (0 if not).
    pub total: AtomicU64,
    /// Passes completed (looping).
    pub loops: AtomicU64,
    /// The input ended (and the stream closed).
    pub ended: AtomicBool,
    /// Latest session statistics and receivers, refreshed about every 100 ms.
    pub snapshot: Mutex<(SourceStats, Vec<(SocketAddr, String, tutti_proto::wire::Report)>)>,
    /// What the stream said since last read (players joined, left, refused; tracks skipped;
    /// sound on the capture device or not).
    pub events: Mutex<Vec<StreamingEvent>>,
    /// A playlist's current track.
    pub now_playing: Mutex<NowPlaying>,
    /// A playlist's transport (`None`: not a playlist).
    transport: Mutex<Option<Transport>>,
    /// Requests not yet taken by the encoder.
    requests: Mutex<Vec<Request>>,
}

impl SourceProgress {
    /// Asks a playlist's transport for something; false if this stream is not a playlist.
    pub fn request(&self, r: Request) -> bool {
        if self.transport().is_none() {
            return false;
        }
        self.requests.lock().map(|mut q| q.push(r)).is_ok()
    }
    /// A playlist's transport now (`None`: not a playlist).
    pub fn transport(&self) -> Option<Transport> {
        self.transport.lock().ok().and_then(|t| *t)
    }
}

/// A running stream.
pub struct RunningSource {
    /// Progress and statistics.
    pub progress: Arc<SourceProgress>,
    /// The socket's local address (what players use).
    pub local_addr: SocketAddr,
    /// The input's metadata.
    pub metadata: Metadata,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for RunningSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunningSource")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningSource {
    /// Stops the stream (players get a `Bye`) and waits for its threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
    /// True once the input ended and the stream closed.
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }
    /// Waits until the stream ends by itself.
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How to encode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    /// PCM16/24/F32 or Opus.
    pub codec: Codec,
    /// Opus bitrate, bits per second.
    pub bitrate: i32,
}

enum Frame {
    Audio { captured: Option<LocalTime>, payload: Vec<u8> },
    End,
}

/// A stream's origin: the same for every run of the stream `stream_id` sent from `port` on the
/// machine `host`.
pub fn origin(host: &str, port: u16, stream_id: u32) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(b"tutti stream origin\0")
        .chain_update(host.as_bytes())
        .chain_update([0])
        .chain_update(port.to_le_bytes())
        .chain_update(stream_id.to_le_bytes())
        .finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 of 32 bytes"))
}

/// Starts a stream of `input` with `config`, sending from `bind_addr`.
pub fn run_source(
    input: Input,
    config: SourceConfig,
    encoding: Encoding,
    bind_addr: SocketAddr,
    security: impl Into<Keys>,
    start: Option<LocalTime>,
) -> Result<RunningSource, NodeError> {
    let keys: Keys = security.into();
    let socket = bind(bind_addr, None)?;
    if config.multicast.is_some() {
        multicast_sender(&socket)?;
    }
    let local_addr = socket
        .local_addr()
        .map_err(|e| NodeError::Socket { what: "its local address".into(), source: e })?;
    let mut cfg = config;
    cfg.format.codec = encoding.codec;
    // The stream's identity across restarts (this machine, this port, this stream) and this
    // run's epoch (the wall clock): players follow a restart to a newer run of the same
    // origin only.
    cfg.origin = origin(&tutti_os::hostname(), local_addr.port(), cfg.stream_id);
    cfg.epoch = tutti_os::wall_clock_ns();
    let random = u128::from_le_bytes(tutti_os::try_random()?);
    let mut session = SourceSession::new(cfg.clone(), keys.current(), random, clock::now())?;
    if let Some(t0) = start {
        session.set_start(t0);
    }
    let progress = Arc::new(SourceProgress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel::<Frame>(64);
    let (wake_tx, wake_rx) =
        wake_pair().map_err(|e| NodeError::Socket { what: "a wake-up pair".into(), source: e })?;
    let tx = FrameTx { tx, wake: wake_tx };
    let (feed, metadata) = match input {
        Input::Paced { source } => {
            progress.total.store(source.duration().unwrap_or(0), Ordering::Relaxed);
            let m = source.metadata();
            (Feed::Paced(source, None), m)
        }
        Input::Playlist(mut list) => {
            let first = list.open_at(0, &progress).ok_or(NodeError::EmptyPlaylist)?;
            let m = first.metadata();
            start_track(&progress, &list, first.as_ref());
            if let Ok(mut t) = progress.transport.lock() {
                *t = Some(Transport::Playing);
            }
            (Feed::Paced(first, Some(list)), m)
        }
        Input::Captured(c) => (Feed::Captured(c), Metadata::default()),
    };
    let captured = matches!(feed, Feed::Captured(_));
    let fpp = usize::from(cfg.format.frames_per_packet);
    let channels = usize::from(cfg.format.channels);
    let mut encoder = match encoding.codec {
        Codec::Opus => {
            let fd = FrameDuration::from_frames(fpp).ok_or(NodeError::OpusFrames(fpp))?;
            Some(OpusEncoder::new(channels, fd, encoding.bitrate, cfg.mode == Mode::Live, 10)?)
        }
        _ => None,
    };
    // Refused before any thread starts.
    let rtp = match cfg.rtp {
        Some(to) if encoding.codec == Codec::Pcm16 => Some(RtpOut::new(to, &cfg, local_addr)?),
        Some(_) => return Err(NodeError::RtpCodec),
        None => None,
    };
    let (p1, s1) = (progress.clone(), stop.clone());
    let codec = encoding.codec;
    let enc = std::thread::Builder::new()
        .name("tutti-encode".into())
        .spawn(move || encode_loop(feed, codec, encoder.as_mut(), fpp, channels, tx, &s1, &p1))
        .map_err(NodeError::Thread)?;
    let (p2, s2) = (progress.clone(), stop.clone());
    let net = std::thread::Builder::new()
        .name("tutti-source".into())
        .spawn(move || {
            // Packets must leave on schedule: prefer this thread (best effort).
            clock::prefer_current_thread(-5);
            network_loop(session, &keys, socket, (rx, wake_rx), captured, rtp, &s2, &p2)
        })
        .map_err(NodeError::Thread)?;
    Ok(RunningSource { progress, local_addr, metadata, stop, threads: vec![enc, net] })
}

/// A standard RTP copy of a PCM16 stream (L16, big-endian) and its SAP announcement, every
/// 5 s (PulseAudio drops a session not announced for 20 s).
struct RtpOut {
    socket: UdpSocket,
    to: SocketAddr,
    sender: tutti_proto::rtp::L16Sender,
    packet: Vec<u8>,
    announce: Vec<u8>,
    withdraw: Vec<u8>,
    announced: Option<LocalTime>,
}

impl RtpOut {
    fn new(to: SocketAddr, cfg: &SourceConfig, local: SocketAddr) -> Result<Self, NodeError> {
        let socket = bind(SocketAddr::new(local.ip(), 0), None)?;
        if to.ip().is_multicast() {
            multicast_sender(&socket)?;
        }
        let random: [u8; 16] = tutti_os::try_random()?;
        let word = |i: usize| u32::from_le_bytes(random[i..i + 4].try_into().expect("4 bytes"));
        let (ssrc, seq, ts) = (word(0), word(4) as u16, word(8));
        let origin = match socket.local_addr().map(|a| a.ip()) {
            Ok(std::net::IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
            _ => std::net::Ipv4Addr::LOCALHOST,
        };
        let name = if cfg.name.is_empty() { "Tutti".to_owned() } else { cfg.name.clone() };
        let sdp = tutti_proto::rtp::sdp(
            &name,
            origin.into(),
            to,
            cfg.format.sample_rate,
            cfg.format.channels,
            ssrc,
        );
        let hash = (ssrc >> 16) as u16 ^ ssrc as u16;
        Ok(RtpOut {
            socket,
            to,
            sender: tutti_proto::rtp::L16Sender::new(ssrc, seq, ts, cfg.format.channels.into()),
            packet: Vec::with_capacity(MAX_DATAGRAM),
            announce: tutti_proto::rtp::sap(origin, hash, &sdp, false),
            withdraw: tutti_proto::rtp::sap(origin, hash, &sdp, true),
            announced: None,
        })
    }

    /// Sends one packet's PCM (and the announcement when it is due).
    fn send(&mut self, pcm_le: &[u8], now: LocalTime) {
        if self.announced.is_none_or(|t| now - t >= Nanos::from_secs(5)) {
            self.announced = Some(now);
            let _ = self.socket.send_to(&self.announce, tutti_proto::rtp::SAP_ADDRESS);
        }
        self.sender.packet(pcm_le, &mut self.packet);
        let _ = self.socket.send_to(&self.packet, self.to);
    }

    /// Says the session is over.
    fn withdraw(self) {
        let _ = self.socket.send_to(&self.withdraw, tutti_proto::rtp::SAP_ADDRESS);
    }
}

/// What the encoder reads.
enum Feed {
    Paced(Box<dyn Source>, Option<Playlist>),
    Captured(Box<CaptureSource>),
}

/// A playlist's track starts: say what it is.
fn start_track(progress: &SourceProgress, list: &Playlist, track: &dyn Source) {
    progress.frames.store(0, Ordering::Relaxed);
    progress.total.store(track.duration().unwrap_or(0), Ordering::Relaxed);
    if let Ok(mut now) = progress.now_playing.lock() {
        *now = NowPlaying {
            file: list.file_name(),
            metadata: track.metadata(),
            index: list.index,
            count: list.files.len(),
            serial: now.serial + 1,
        };
    }
}

/// The encoder's end of the frame queue: every frame queued wakes the network thread.
struct FrameTx {
    tx: SyncSender<Frame>,
    wake: UnixDatagram,
}

impl FrameTx {
    fn try_send(&self, f: Frame) -> Result<(), TrySendError<Frame>> {
        self.tx.try_send(f)?;
        wake(&self.wake);
        Ok(())
    }
    fn send(&self, f: Frame) -> Result<(), std::sync::mpsc::SendError<Frame>> {
        self.tx.send(f)?;
        wake(&self.wake);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn encode_loop(
    feed: Feed,
    codec: Codec,
    mut opus: Option<&mut OpusEncoder>,
    fpp: usize,
    channels: usize,
    tx: FrameTx,
    stop: &AtomicBool,
    progress: &SourceProgress,
) {
    let mut pcm = Vec::with_capacity(fpp * channels);
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut waiting = false;
    let (mut source, mut playlist, mut capture) = match feed {
        Feed::Paced(s, list) => (Some(s), list, None),
        Feed::Captured(c) => (None, None, Some(c)),
    };
    while !stop.load(Ordering::Relaxed) {
        pcm.clear();
        // A playlist's transport: requests first, then silence while not playing (the stream
        // goes on, so players stay locked and resume on the sample).
        if let Some(list) = playlist.as_mut() {
            let requests: Vec<Request> =
                progress.requests.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default();
            let mut transport = progress.transport().unwrap_or(Transport::Playing);
            for r in requests {
                match r {
                    Request::Start => transport = Transport::Playing,
                    Request::Pause if transport == Transport::Playing => {
                        transport = Transport::Paused;
                    }
                    Request::Pause => {}
                    Request::Stop => {
                        transport = Transport::Stopped;
                        let index = list.index;
                        source = list.open_at(index, progress);
                        if let Some(s) = &source {
                            start_track(progress, list, s.as_ref());
                        }
                    }
                    Request::Skip => {
                        // Past the last track (not looping): stopped at the first, the stream
                        // still up for the next start.
                        let next = list.index + 1;
                        source = list.open_at(next, progress).or_else(|| {
                            transport = Transport::Stopped;
                            list.open_at(0, progress)
                        });
                        match &source {
                            Some(s) => start_track(progress, list, s.as_ref()),
                            None => {
                                let _ = tx.send(Frame::End);
                                return;
                            }
                        }
                    }
                }
            }
            if let Ok(mut t) = progress.transport.lock() {
                *t = Some(transport);
            }
            if transport != Transport::Playing {
                pcm.resize(fpp * channels, 0.0);
                if send(encode(&pcm, codec, &mut opus, &mut out), None, &tx, stop).is_err() {
                    return;
                }
                continue;
            }
        }
        let (n, captured) = match (&mut source, &mut capture) {
            (Some(s), _) => (s.read(&mut pcm, fpp).unwrap_or(0), None),
            (None, Some(c)) => {
                let t = c.next_capture_time();
                let n = c.read(&mut pcm, fpp).unwrap_or(0);
                if c.is_waiting() != waiting {
                    waiting = c.is_waiting();
                    let device = c.device().to_owned();
                    progress.tell(if waiting {
                        StreamingEvent::Waiting { device }
                    } else {
                        StreamingEvent::Sound { device }
                    });
                }
                (n, t)
            }
            _ => (0, None),
        };
        if n == 0 {
            // The track ended: the next one, if the playlist goes on.
            if let Some(list) = playlist.as_mut() {
                let next = list.index + 1;
                if let Some(s) = list.open_at(next, progress) {
                    start_track(progress, list, s.as_ref());
                    if next >= list.files.len() {
                        progress.loops.fetch_add(1, Ordering::Relaxed);
                    }
                    source = Some(s);
                    continue;
                }
            }
            let _ = tx.send(Frame::End);
            return;
        }
        pcm.resize(fpp * channels, 0.0);
        progress.frames.fetch_add(n as u64, Ordering::Relaxed);
        if send(encode(&pcm, codec, &mut opus, &mut out), captured, &tx, stop).is_err() {
            return;
        }
    }
}

/// One frame's payload (`None`: the encoder refused it, and it is skipped).
fn encode(
    pcm: &[f32],
    codec: Codec,
    opus: &mut Option<&mut OpusEncoder>,
    out: &mut [u8],
) -> Option<Vec<u8>> {
    match (opus, codec) {
        (Some(enc), _) => enc.encode(pcm, out).ok().map(|len| out[..len].to_vec()),
        (None, c) => {
            let mut b = Vec::with_capacity(pcm.len() * 4);
            encode_pcm(c, pcm, &mut b);
            Some(b)
        }
    }
}

/// Queues a frame for the network thread. A full queue (a paced input runs ahead of its
/// schedule) is retried every 10 ms rather than woken frame by frame: the network thread
/// never waits on it (it holds 20 ms of frames ahead), and the encoder wakes 100 times a
/// second, not 400. Err: stop.
fn send(
    payload: Option<Vec<u8>>,
    captured: Option<LocalTime>,
    tx: &FrameTx,
    stop: &AtomicBool,
) -> Result<(), ()> {
    let Some(payload) = payload else { return Ok(()) };
    let mut frame = Frame::Audio { captured, payload };
    loop {
        match tx.try_send(frame) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(f)) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(());
                }
                frame = f;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn network_loop(
    mut session: SourceSession,
    keys: &Keys,
    socket: UdpSocket,
    (rx, wake): (Receiver<Frame>, UnixDatagram),
    captured_input: bool,
    mut rtp: Option<RtpOut>,
    stop: &AtomicBool,
    progress: &SourceProgress,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut ended = false;
    let mut drained_at: Option<LocalTime> = None;
    let mut last_snapshot = clock::now();
    let mut pending: Option<Frame> = None;
    let mut key_version = keys.version();
    loop {
        let now = clock::now();
        if let Some(s) = keys.changed(&mut key_version) {
            session.set_security(s);
        }
        if stop.load(Ordering::Relaxed) && !ended {
            ended = true;
        }
        // Feed frames: paced ones as the schedule asks, captured ones as they come.
        while !ended && (captured_input || session.wants_frame(now, Nanos::from_millis(20))) {
            let next = match pending.take() {
                Some(f) => Ok(f),
                None => rx.try_recv(),
            };
            match next {
                Ok(Frame::Audio { captured, payload }) => {
                    if let Some(r) = rtp.as_mut() {
                        r.send(&payload, now);
                    }
                    let r = match captured {
                        Some(t) if captured_input => session.push_captured(now, t, &payload),
                        _ if captured_input => session.push_captured(now, now, &payload),
                        _ => session.push_paced(now, &payload),
                    };
                    if r.is_err() {
                        break;
                    }
                }
                Ok(Frame::End) | Err(TryRecvError::Disconnected) => ended = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        session.handle_timeout(now);
        // After the last frame left, linger half a second to answer late NACKs, then say bye.
        if ended && session.unsent() == 0 && drained_at.is_none() {
            drained_at = Some(now);
        }
        let done = drained_at
            .is_some_and(|t| now - t > Nanos::from_millis(500) || stop.load(Ordering::Relaxed));
        if done {
            session.close();
            if let Some(r) = rtp.take() {
                r.withdraw();
            }
        }
        while let Some(t) = session.poll_transmit(clock::now(), &mut out) {
            match t.destination {
                Destination::To(a) => {
                    let _ = socket.send_to(&out[..t.len], a);
                }
                Destination::Fanout => {
                    for a in session.fanout() {
                        let _ = socket.send_to(&out[..t.len], a);
                    }
                }
            }
        }
        while let Some(e) = session.poll_event() {
            progress.tell(StreamingEvent::Session(e));
        }
        if now - last_snapshot > Nanos::from_millis(100) {
            last_snapshot = now;
            if let Ok(mut s) = progress.snapshot.lock() {
                *s = (
                    *session.stats(),
                    session
                        .receivers()
                        .iter()
                        .map(|r| (r.addr, r.name.clone(), r.report))
                        .collect(),
                );
            }
        }
        if done {
            progress.ended.store(true, Ordering::Relaxed);
            return;
        }
        // A paced stream's next departure is always known (frames are queued 20 ms ahead):
        // sleep until it. Captured frames come at any moment: the encoder wakes this thread
        // for each, so they leave at once without this thread polling for them.
        if let Some((n, from, at)) = recv_or_wake(
            &socket,
            Some(&wake),
            &mut buf,
            clock::now(),
            session.poll_timeout(),
            Nanos::from_micros(100),
            Nanos::from_millis(10),
        ) {
            session.handle_datagram(at, from, &mut buf[..n]);
        }
    }
}
