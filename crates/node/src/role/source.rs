//! The source as a handle: [`Source`] (one stream, or a multitrack's stems) takes transport
//! commands and is read by views and notices; [`SourceControl`] is the hub link's
//! [`HubHandler`](crate::hub::HubHandler) (state, transport, cover art).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tutti_proto::control::{Command, LinkMessage, NodeState, Settings, Track, to_hex};
use tutti_proto::source::SourceStats;
use tutti_proto::wire::Report;

use crate::source::{
    NowPlaying, Request, RunningSource, SourceProgress, StreamingEvent, Transport,
};

/// What a [`Source`] can be told (a playlist's transport; other inputs ignore them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCommand {
    /// Play (from a pause or a stop).
    Start,
    /// Send silence, holding the position.
    Pause,
    /// Send silence, back at the start of the track.
    Stop,
    /// The next track.
    Skip,
}

/// What a [`Source`] says, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceNotice {
    /// What a stream said (a player joined, left, was refused; a file skipped; sound on the
    /// capture device or not; a line from the hub link).
    Streaming(StreamingEvent),
    /// A playlist started a track (the second or later, or one of several).
    Track(NowPlaying),
}

impl SourceNotice {
    /// Whether it is trouble (a warning) rather than news.
    pub fn is_trouble(&self) -> bool {
        matches!(self, SourceNotice::Streaming(e) if e.is_trouble())
    }
}

impl core::fmt::Display for SourceNotice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SourceNotice::Streaming(e) => write!(f, "{e}"),
            SourceNotice::Track(t) => {
                let title = t.metadata.title.clone().unwrap_or_else(|| t.file.clone());
                let by =
                    t.metadata.artist.as_deref().map(|a| format!(" by {a}")).unwrap_or_default();
                write!(f, "now playing {}/{}: {title}{by}", t.index + 1, t.count)
            }
        }
    }
}

/// A source's whole view (its first stream's, for a multitrack: the stems move together).
#[derive(Clone, Debug, Default)]
pub struct SourceView {
    /// The session's counters.
    pub stats: SourceStats,
    /// The players it sends to: address, name, last report.
    pub receivers: Vec<(SocketAddr, String, Report)>,
    /// Seconds of the input sent (this pass).
    pub position_s: f64,
    /// The input's length in seconds, if known.
    pub total_s: Option<f64>,
    /// A playlist's transport (`None`: not a playlist).
    pub transport: Option<Transport>,
    /// A playlist's current track.
    pub track: Option<NowPlaying>,
    /// Every stream ended.
    pub ended: bool,
}

/// One or more streams started together (a multitrack's stems), as a handle: transport
/// commands in, a view and notices out, and a [`HubHandler`](crate::hub::HubHandler) for the
/// hub link ([`Source::control`]).
#[derive(Debug)]
pub struct Source {
    streams: Vec<RunningSource>,
    control: SourceControl,
    shown_track: u64,
}

/// The part of a [`Source`] the hub link holds.
#[derive(Clone, Debug)]
pub struct SourceControl {
    progress: Vec<Arc<SourceProgress>>,
    name: String,
    rate: u32,
    /// The track whose cover the hub has (`None`: none sent on this link yet).
    cover_sent: Option<u64>,
}

impl Source {
    /// A handle over `streams` (at least one), all at `rate`, listed as `name`.
    pub fn of(streams: Vec<RunningSource>, name: String, rate: u32) -> Self {
        let progress = streams.iter().map(|s| s.progress.clone()).collect();
        Source {
            streams,
            control: SourceControl { progress, name, rate, cover_sent: None },
            shown_track: 0,
        }
    }

    /// Its streams.
    pub fn streams(&self) -> &[RunningSource] {
        &self.streams
    }

    /// A handle for the hub link.
    pub fn control(&self) -> SourceControl {
        self.control.clone()
    }

    /// Tells every stream (the stems move together).
    pub fn command(&self, c: SourceCommand) {
        self.control.command(c);
    }

    /// Its state now.
    pub fn view(&self) -> SourceView {
        let Some(p) = self.control.progress.first() else { return SourceView::default() };
        let rate = f64::from(self.control.rate);
        let (stats, receivers) = p.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let total = p.total.load(Ordering::Relaxed);
        SourceView {
            stats,
            receivers,
            position_s: p.frames.load(Ordering::Relaxed) as f64 / rate,
            total_s: (total > 0).then(|| total as f64 / rate),
            transport: p.transport(),
            track: p.transport().and_then(|_| p.now_playing.lock().ok().map(|n| n.clone())),
            ended: self.streams.iter().all(RunningSource::finished),
        }
    }

    /// Everything it said since last asked: its streams' lines, and a playlist's new track.
    pub fn notices(&mut self) -> Vec<SourceNotice> {
        let mut out = Vec::new();
        if let Some(p) = self.control.progress.first()
            && let Ok(now) = p.now_playing.lock()
            && now.serial != self.shown_track
        {
            self.shown_track = now.serial;
            if now.count > 1 || now.serial > 1 {
                out.push(SourceNotice::Track(now.clone()));
            }
        }
        for p in &self.control.progress {
            if let Ok(mut events) = p.events.lock() {
                out.extend(events.drain(..).map(SourceNotice::Streaming));
            }
        }
        out
    }

    /// Stops every stream (players get a `Bye`).
    pub fn stop(self) {
        for s in self.streams {
            s.stop();
        }
    }
}

impl SourceControl {
    /// Tells every stream (the stems move together).
    pub fn command(&self, c: SourceCommand) {
        let r = match c {
            SourceCommand::Start => Request::Start,
            SourceCommand::Pause => Request::Pause,
            SourceCommand::Stop => Request::Stop,
            SourceCommand::Skip => Request::Skip,
        };
        for p in &self.progress {
            p.request(r);
        }
    }

    /// Passes a line on to whoever reads the source's notices.
    pub fn say(&self, line: impl Into<String>) {
        if let Some(p) = self.progress.first()
            && let Ok(mut events) = p.events.lock()
        {
            events.push(StreamingEvent::Hub(line.into()));
        }
    }
}

/// What a source tells the hub (its track, its players), and how it obeys it.
impl crate::hub::HubHandler for SourceControl {
    fn state(&mut self) -> NodeState {
        let Some(p) = self.progress.first() else { return NodeState::default() };
        let rate = f64::from(self.rate);
        let (stats, receivers) = p.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let track = p.transport().and_then(|t| {
            let now = p.now_playing.lock().ok()?.clone();
            let total = p.total.load(Ordering::Relaxed);
            Some(Track {
                title: now.metadata.title.clone(),
                artist: now.metadata.artist.clone(),
                album: now.metadata.album.clone(),
                file: now.file.clone(),
                index: now.index as u32 + 1,
                count: now.count as u32,
                elapsed_s: p.frames.load(Ordering::Relaxed) as f64 / rate,
                duration_s: (total > 0).then(|| total as f64 / rate),
                transport: t.as_str().into(),
                cover: now.metadata.cover.is_some(),
            })
        });
        NodeState {
            streaming: !p.ended.load(Ordering::Relaxed),
            stream: Some(self.name.clone()),
            rate: Some(self.rate),
            peers: Some(receivers.len() as u32),
            track,
            rejected: stats.rx_errors.total(),
            // Authentic requests from player runs that never proved their address (replays).
            foreign: stats.unverified,
            ..NodeState::default()
        }
    }

    fn settings(&mut self, _: &Settings) {
        // A new link: the hub has no cover from us yet.
        self.cover_sent = None;
    }

    fn command(&mut self, command: &Command) {
        let c = match command {
            Command::Start => SourceCommand::Start,
            Command::Pause => SourceCommand::Pause,
            Command::Stop => SourceCommand::Stop,
            Command::Skip => SourceCommand::Skip,
            _ => return,
        };
        SourceControl::command(self, c);
    }

    fn status(&mut self, message: &str) {
        self.say(message);
    }

    fn outbox(&mut self) -> Vec<LinkMessage> {
        let Some(Ok(now)) = self.progress.first().map(|p| p.now_playing.lock().map(|n| n.clone()))
        else {
            return Vec::new();
        };
        if self.cover_sent == Some(now.serial) {
            return Vec::new();
        }
        self.cover_sent = Some(now.serial);
        // Covers up to 512 kB go to the hub (`GET /api/streams/{id}/cover`); none clears it.
        let (mime, data) = match &now.metadata.cover {
            Some((mime, bytes)) if bytes.len() <= 512 * 1024 => (mime.clone(), to_hex(bytes)),
            _ => (String::new(), String::new()),
        };
        vec![LinkMessage::Cover { mime, data }]
    }
}
