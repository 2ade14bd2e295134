//! A running stream: encoder thread → network thread (owns the [`SourceSession`]).

use std::net::{SocketAddr, UdpSocket};
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
use tutti_proto::{
    Codec, Destination, LocalTime, Mode, Nanos, Security, SourceConfig, SourceSession,
};

use crate::NodeError;
use crate::net::{RECV_BUF, bind, multicast_sender, recv_until};

/// Where the audio comes from.
pub enum Input {
    /// A paced source (file, tone, stdin): read as fast as the schedule wants. `reopen` makes
    /// a fresh copy for `--loop`.
    Paced {
        /// The source, already at the stream's rate and channels.
        source: Box<dyn Source>,
        /// Makes the source again from the start (looping), if set.
        reopen: Option<Box<dyn FnMut() -> Option<Box<dyn Source>> + Send>>,
    },
    /// A capture device: frames leave as soon as they are captured.
    Captured(CaptureSource),
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
    /// Source events as text, for the CLI (joined, left, refused).
    pub log: Mutex<Vec<String>>,
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

/// Starts a stream of `input` with `config`, sending from `bind_addr`.
pub fn run_source(
    input: Input,
    config: SourceConfig,
    encoding: Encoding,
    bind_addr: SocketAddr,
    security: Security,
    seed: u64,
    start: Option<LocalTime>,
) -> Result<RunningSource, NodeError> {
    let socket = bind(bind_addr, None)?;
    if config.multicast.is_some() {
        multicast_sender(&socket)?;
    }
    let local_addr = socket.local_addr().map_err(|e| NodeError::Net(e.to_string()))?;
    let mut cfg = config;
    cfg.codec = encoding.codec;
    let mut session = SourceSession::new(cfg.clone(), security, seed, clock::now())?;
    if let Some(t0) = start {
        session.set_start(t0);
    }
    let progress = Arc::new(SourceProgress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel::<Frame>(64);
    let metadata = match &input {
        Input::Paced { source, .. } => {
            progress.total.store(source.duration().unwrap_or(0), Ordering::Relaxed);
            source.metadata()
        }
        Input::Captured(_) => Metadata::default(),
    };
    let captured = matches!(input, Input::Captured(_));
    let live = captured || cfg.mode == Mode::Live;
    let fpp = usize::from(cfg.frames_per_packet);
    let channels = usize::from(cfg.channels);
    let mut encoder = match encoding.codec {
        Codec::Opus => {
            let fd = FrameDuration::from_frames(fpp).ok_or_else(|| {
                NodeError::Refused(format!(
                    "Opus frames are 2.5, 5, 10 or 20 ms at 48 kHz, not {fpp} frames"
                ))
            })?;
            Some(OpusEncoder::new(channels, fd, encoding.bitrate, cfg.mode == Mode::Live, 10)?)
        }
        _ => None,
    };
    let (p1, s1) = (progress.clone(), stop.clone());
    let codec = encoding.codec;
    let enc = std::thread::Builder::new()
        .name("tutti-encode".into())
        .spawn(move || encode_loop(input, codec, encoder.as_mut(), fpp, channels, tx, &s1, &p1))
        .map_err(|e| NodeError::Net(e.to_string()))?;
    let (p2, s2) = (progress.clone(), stop.clone());
    let net = std::thread::Builder::new()
        .name("tutti-source".into())
        .spawn(move || {
            // Packets must leave on schedule: prefer this thread (best effort).
            clock::prefer_current_thread(-5);
            network_loop(session, socket, rx, captured, live, &s2, &p2)
        })
        .map_err(|e| NodeError::Net(e.to_string()))?;
    Ok(RunningSource { progress, local_addr, metadata, stop, threads: vec![enc, net] })
}

#[allow(clippy::too_many_arguments)]
fn encode_loop(
    input: Input,
    codec: Codec,
    mut opus: Option<&mut OpusEncoder>,
    fpp: usize,
    channels: usize,
    tx: SyncSender<Frame>,
    stop: &AtomicBool,
    progress: &SourceProgress,
) {
    let mut pcm = Vec::with_capacity(fpp * channels);
    let mut out = vec![0u8; MAX_DATAGRAM];
    let (mut source, mut reopen, mut capture): (Option<Box<dyn Source>>, _, Option<CaptureSource>) =
        match input {
            Input::Paced { source, reopen } => (Some(source), reopen, None),
            Input::Captured(c) => (None, None, Some(c)),
        };
    while !stop.load(Ordering::Relaxed) {
        pcm.clear();
        let (n, captured) = match (&mut source, &mut capture) {
            (Some(s), _) => (s.read(&mut pcm, fpp).unwrap_or(0), None),
            (None, Some(c)) => {
                let t = c.next_capture_time();
                (c.read(&mut pcm, fpp).unwrap_or(0), t)
            }
            _ => (0, None),
        };
        if n == 0 {
            if let Some(next) = reopen.as_mut().and_then(|r| r()) {
                source = Some(next);
                progress.loops.fetch_add(1, Ordering::Relaxed);
                progress.frames.store(0, Ordering::Relaxed);
                continue;
            }
            let _ = tx.send(Frame::End);
            return;
        }
        pcm.resize(fpp * channels, 0.0);
        progress.frames.fetch_add(n as u64, Ordering::Relaxed);
        let payload = match (&mut opus, codec) {
            (Some(enc), _) => match enc.encode(&pcm, &mut out) {
                Ok(len) => out[..len].to_vec(),
                Err(_) => continue,
            },
            (None, c) => {
                let mut b = Vec::with_capacity(pcm.len() * 4);
                encode_pcm(c, &pcm, &mut b);
                b
            }
        };
        // A full queue (a paced input runs ahead of its schedule) is retried every 10 ms
        // rather than woken frame by frame: the network thread never waits on it (it holds
        // 20 ms of frames ahead), and the encoder wakes 100 times a second, not 400.
        let mut frame = Frame::Audio { captured, payload };
        loop {
            match tx.try_send(frame) {
                Ok(()) => break,
                Err(TrySendError::Full(f)) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    frame = f;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

fn network_loop(
    mut session: SourceSession,
    socket: UdpSocket,
    rx: Receiver<Frame>,
    captured_input: bool,
    live: bool,
    stop: &AtomicBool,
    progress: &SourceProgress,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut ended = false;
    let mut drained_at: Option<LocalTime> = None;
    let mut last_snapshot = clock::now();
    let mut pending: Option<Frame> = None;
    loop {
        let now = clock::now();
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
            if let Ok(mut log) = progress.log.lock() {
                log.push(match e {
                    SourceEvent::ReceiverJoined { addr, name } => format!("{name} ({addr}) joined"),
                    SourceEvent::ReceiverLeft { addr, timed_out: true } => {
                        format!("{addr} went silent")
                    }
                    SourceEvent::ReceiverLeft { addr, .. } => format!("{addr} left"),
                    SourceEvent::ReceiverRefused { addr } => format!("{addr} refused: server full"),
                    _ => "event".into(),
                });
            }
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
        // Live frames (captured, or paced in live mode) must leave on time: wake often.
        // A paced stream's next departure is always known (frames are queued 20 ms ahead):
        // sleep until it. Live frames come from capture at any moment: look often.
        let max = if live { Nanos::from_micros(500) } else { Nanos::from_millis(10) };
        if let Some((n, from, at)) = recv_until(
            &socket,
            &mut buf,
            clock::now(),
            session.poll_timeout(),
            Nanos::from_micros(100),
            max,
        ) {
            session.handle_datagram(at, from, &mut buf[..n]);
        }
    }
}
