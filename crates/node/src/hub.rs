//! The node side of the hub link (see `tutti_hub::link`): connect, run the handshake that
//! proves the network key or this node's credential *both ways* (a host that does not hold
//! it — an impostor that advertised itself over mDNS or took the hub's address — is refused
//! before it can say anything), then, in the encrypted channel, report state a few times a
//! second and apply the settings, commands and (paired nodes) stream keys the hub sends. It
//! reconnects every second while the hub is away; the audio never waits for it. [`pair`]
//! turns a one-time token into a credential.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tutti_proto::control::{
    Command, KEYS_CONTEXT, KeySet, LinkMessage, NodeInfo, NodeState, Settings, from_hex, to_hex,
};
use tutti_proto::link::{Opener, Opening, Sealer};
use tutti_proto::pairing::{Initiator, PairGrant, PairLink, PairRequest};
use tutti_proto::{Credential, NetworkKey};

use crate::security::{Keys, from_keyset};
use crate::{NodeError, PairFailed};

/// How a node proves itself to the hub.
#[derive(Clone, Debug)]
pub enum LinkAuth {
    /// A passphrase network: by the network key every node holds.
    Network(NetworkKey),
    /// A paired node: by its own credential; the hub sends its stream keys into `keys`.
    Paired {
        /// The paired id (this node's id is it, or starts with it and a dash).
        node: String,
        /// The node's credential.
        credential: Credential,
        /// Where the stream keys go.
        keys: Keys,
    },
}

impl LinkAuth {
    fn paired(&self) -> Option<String> {
        match self {
            LinkAuth::Network(_) => None,
            LinkAuth::Paired { node, .. } => Some(node.clone()),
        }
    }

    /// The handshake's pre-shared key.
    fn psk(&self) -> [u8; 32] {
        match self {
            LinkAuth::Network(k) => k.link_psk(),
            LinkAuth::Paired { credential, .. } => credential.link_psk(),
        }
    }

    /// Opens a sealed key set and installs it: `None` if it does not open, else what the hub
    /// said with it.
    fn install(&self, sealed: &str) -> Option<Granted> {
        let LinkAuth::Paired { credential, keys, .. } = self else { return None };
        let set = from_hex(sealed)
            .and_then(|b| credential.open(KEYS_CONTEXT, &b))
            .and_then(|plain| serde_json::from_slice::<KeySet>(&plain).ok())?;
        keys.set(from_keyset(&set)?);
        Some(Granted { note: set.note, stream: set.stream })
    }
}

impl From<NetworkKey> for LinkAuth {
    fn from(k: NetworkKey) -> Self {
        LinkAuth::Network(k)
    }
}

/// What the link does with what the hub says.
pub trait HubHandler: Send + 'static {
    /// The node's state now (called every `report` interval).
    fn state(&mut self) -> NodeState;
    /// Settings on (re)connection: apply them all.
    fn settings(&mut self, settings: &Settings);
    /// A command.
    fn command(&mut self, command: &Command);
    /// The link's status, for the user (connected, refused, lost).
    fn status(&mut self, _message: &str) {}
    /// Anything else to tell the hub (a source's cover art), asked with every report.
    fn outbox(&mut self) -> Vec<LinkMessage> {
        Vec::new()
    }
}

/// A running link.
#[derive(Debug)]
pub struct HubLink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HubLink {
    /// Keeps a link to the hub at `hub` until stopped.
    pub fn spawn(
        hub: SocketAddr,
        info: NodeInfo,
        auth: impl Into<LinkAuth>,
        report: Duration,
        handler: impl HubHandler,
    ) -> std::io::Result<Self> {
        Self::spawn_to(move || Some(hub), info, auth, report, handler)
    }

    /// Keeps a link to whichever hub `find` names when a connection is due (mDNS discovery:
    /// nothing is tried until a hub answered; a hub that moved is followed on reconnect).
    pub fn spawn_to(
        mut find: impl FnMut() -> Option<SocketAddr> + Send + 'static,
        info: NodeInfo,
        auth: impl Into<LinkAuth>,
        report: Duration,
        handler: impl HubHandler,
    ) -> std::io::Result<Self> {
        let key: LinkAuth = auth.into();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let span = tracing::Span::current();
        let thread =
            std::thread::Builder::new().name("tutti-hub-link".into()).spawn(move || {
                let _span = span.enter();
                let mut handler = handler;
                let mut said_lost = false;
                while !flag.load(Ordering::Relaxed) {
                    let Some(hub) = find() else {
                        // Discovery is asked again in half a second (stopping unparks it): a
                        // node with no hub on its network wakes twice a second, not ten times.
                        std::thread::park_timeout(FIND_EVERY);
                        continue;
                    };
                    match session(hub, &info, &key, report, &mut handler, &flag) {
                        Ok(()) => return,
                        Err(e) => {
                            if !said_lost {
                                handler.status(&format!("hub {hub}: {e} (retrying every second)"));
                                said_lost = true;
                            }
                        }
                    }
                    let until = Instant::now() + Duration::from_secs(1);
                    while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                        std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
                    }
                }
            })?;
        Ok(HubLink { stop, thread: Some(thread) })
    }

    /// Stops the link.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for HubLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

/// How often a link with no hub found yet asks discovery again.
const FIND_EVERY: Duration = Duration::from_millis(500);

/// Writes `m` as a clear line (the handshake and pairing), or sealed once `sealer` is given.
fn write(
    stream: &mut TcpStream,
    sealer: Option<&mut Sealer>,
    m: &LinkMessage,
) -> std::io::Result<()> {
    stream.write_all(&tutti_proto::link::encode(m, sealer)?)
}

/// The next message in the channel (`None`: one this node does not understand, or a read
/// timeout between frames).
fn receive(
    reader: &mut BufReader<TcpStream>,
    opener: &mut Opener,
) -> std::io::Result<Option<LinkMessage>> {
    loop {
        let mut len = [0u8; 2];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(std::io::Error::other("the hub closed the link"));
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let mut frame = vec![0u8; tutti_proto::link::frame_len(len)];
        reader.read_exact(&mut frame)?;
        if let Some(m) = opener.open(&frame).map_err(std::io::Error::other)? {
            return Ok(serde_json::from_slice(&m).ok());
        }
    }
}

/// Longest line taken from a hub (a welcome with sealed keys is a few KiB): a hub that never
/// sends a newline costs this much, not what it sends.
pub const MAX_HUB_LINE: u64 = 256 * 1024;

/// A clear line (the handshake and pairing).
fn read(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<LinkMessage>> {
    let mut line = Vec::new();
    match (&mut *reader).take(MAX_HUB_LINE + 1).read_until(b'\n', &mut line) {
        Ok(0) => Err(std::io::Error::other("the hub closed the link")),
        Ok(n) if n as u64 > MAX_HUB_LINE => Err(std::io::Error::other(format!(
            "the hub sent a line longer than {MAX_HUB_LINE} bytes"
        ))),
        Ok(_) => Ok(serde_json::from_slice(line.trim_ascii()).ok()),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One connection, until it breaks (Err) or the link is stopped (Ok).
fn session(
    hub: SocketAddr,
    info: &NodeInfo,
    key: &LinkAuth,
    report: Duration,
    handler: &mut impl HubHandler,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let (mut stream, mut reader, mut sealer, mut opener, settings, keys) =
        greet(hub, info, key, false, Duration::from_secs(1))?;
    let note = match keys.map(|sealed| key.install(&sealed)) {
        Some(None) => {
            return Err(std::io::Error::other("the hub's keys do not open with this credential"));
        }
        Some(Some(granted)) => granted.note,
        None => None,
    };
    handler.settings(&settings);
    handler.status(&format!("hub {hub}: connected"));
    if let Some(n) = note {
        handler.status(&format!("hub {hub}: no stream keys: {n}"));
    }
    // A reader thread hands commands over as they come; this loop applies them at once and
    // reports state every `report`.
    stream.set_read_timeout(None)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let auth = key.clone();
    let reader_thread =
        std::thread::Builder::new().name("tutti-hub-read".into()).spawn(move || {
            loop {
                match receive(&mut reader, &mut opener) {
                    Ok(Some(LinkMessage::Command(c))) => {
                        if tx.send(FromHub::Command(c)).is_err() {
                            return;
                        }
                    }
                    Ok(Some(LinkMessage::Refused { message })) => {
                        let _ = tx.send(FromHub::Refused(message));
                        return;
                    }
                    Ok(Some(LinkMessage::Keys { sealed })) => {
                        // A key set that does not open is ignored: the old keys stay.
                        let said = match auth.install(&sealed) {
                            Some(Granted { note: Some(note), .. }) => {
                                format!("no stream keys: {note}")
                            }
                            Some(_) => "new stream keys".to_owned(),
                            None => continue,
                        };
                        if tx.send(FromHub::Keys(said)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })?;
    let mut next = Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = std::time::Instant::now();
        if now >= next {
            let extra = handler.outbox();
            let sent = std::iter::once(LinkMessage::State(Box::new(handler.state())))
                .chain(extra)
                .try_for_each(|m| write(&mut stream, Some(&mut sealer), &m));
            if let Err(e) = sent {
                break Err(e);
            }
            next += report;
            if next < now {
                next = now + report;
            }
        }
        let wait = next
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(FromHub::Command(c)) => handler.command(&c),
            Ok(FromHub::Keys(said)) => handler.status(&format!("hub {hub}: {said}")),
            Ok(FromHub::Refused(message)) => {
                break Err(std::io::Error::other(format!("refused: {message}")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(std::io::Error::other("the hub closed the link"));
            }
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader_thread.join();
    result
}

/// What the link's reader hands the loop.
enum FromHub {
    Command(Command),
    Keys(String),
    Refused(String),
}

/// A paired node's first keys, fetched before its session starts (a player must decode the
/// stream it joins): connects, proves the credential, installs the keys of the welcome and
/// closes. The hub sees the node for that moment; its lasting link follows.
pub fn fetch_keys(hub: SocketAddr, info: &NodeInfo, auth: &LinkAuth) -> std::io::Result<Granted> {
    let (stream, _, _, _, _, keys) = greet(hub, info, auth, true, Duration::from_secs(2))?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    keys.and_then(|sealed| auth.install(&sealed))
        .ok_or_else(|| std::io::Error::other("the hub sent no keys this credential opens"))
}

/// What the hub said with a node's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    /// Why they open no stream (they are random ones nobody holds).
    pub note: Option<String>,
    /// The stream they open when the hub chose it (a player's zone's), `host:port`.
    pub stream: Option<String>,
}

/// An open link: the stream, its reader, the channel's halves, and the welcome's settings and
/// sealed keys.
type Greeted = (TcpStream, BufReader<TcpStream>, Sealer, Opener, Settings, Option<String>);

/// Connects and runs the handshake under `auth`'s key (the hub must prove it holds it too),
/// then says hello in the channel: the welcome's settings and sealed keys, or the hub's
/// refusal (or an impostor's failure) as an error.
fn greet(
    hub: SocketAddr,
    info: &NodeInfo,
    auth: &LinkAuth,
    fetch: bool,
    connect: Duration,
) -> std::io::Result<Greeted> {
    let mut stream = TcpStream::connect_timeout(&hub, connect)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(LinkMessage::Challenge { nonce }) = read(&mut reader)? else {
        return Err(std::io::Error::other("not a Tutti hub (no challenge)"));
    };
    let nonce = from_hex(&nonce).ok_or_else(|| std::io::Error::other("bad challenge"))?;
    let paired = auth.paired();
    let (opening, first) =
        Opening::start(&auth.psk(), &nonce, paired.as_deref()).map_err(std::io::Error::other)?;
    write(&mut stream, None, &LinkMessage::Open { paired, noise: to_hex(&first) })?;
    let answer = match read(&mut reader)? {
        Some(LinkMessage::Opened { noise }) => from_hex(&noise).unwrap_or_default(),
        Some(LinkMessage::Refused { message }) => {
            return Err(std::io::Error::other(format!("refused: {message}")));
        }
        _ => return Err(std::io::Error::other("no answer to the handshake")),
    };
    let channel = opening.finish(&answer).map_err(|_| {
        std::io::Error::other(
            "refused an impostor: this host does not hold the network's key (or this node's \
             credential) — not our hub",
        )
    })?;
    let (mut sealer, mut opener) = channel.split(MAX_HUB_LINE as usize);
    write(&mut stream, Some(&mut sealer), &LinkMessage::Hello { info: info.clone(), fetch })?;
    match receive(&mut reader, &mut opener)? {
        Some(LinkMessage::Welcome { settings, keys }) => {
            Ok((stream, reader, sealer, opener, settings, keys))
        }
        Some(LinkMessage::Refused { message }) => {
            Err(std::io::Error::other(format!("refused: {message}")))
        }
        _ => Err(std::io::Error::other("no welcome")),
    }
}

/// Pairs with the hub a link names: presents the one-time token once (Noise `NNpsk0`), and
/// returns the grant (this node's id and credential). `name` is how the hub will show it.
pub fn pair(link: &PairLink, name: &str) -> Result<PairGrant, NodeError> {
    use std::net::ToSocketAddrs;
    let hub = link
        .hub
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| PairFailed::Unresolved(link.hub.clone()))?;
    let io = |source: std::io::Error| PairFailed::Io { hub, source };
    let mut stream = TcpStream::connect_timeout(&hub, Duration::from_secs(3)).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let Some(LinkMessage::Challenge { .. }) = read(&mut reader).map_err(io)? else {
        return Err(PairFailed::NotAHub(hub).into());
    };
    let (node, first) = Initiator::start(&link.token, &PairRequest { name: name.to_owned() })
        .map_err(PairFailed::from)?;
    write(&mut stream, None, &LinkMessage::Pair { token: link.token.id.clone(), noise: first })
        .map_err(io)?;
    match read(&mut reader).map_err(io)? {
        Some(LinkMessage::Paired { noise }) => Ok(node.finish(&noise).map_err(PairFailed::from)?),
        Some(LinkMessage::Refused { message }) => Err(PairFailed::Refused(message).into()),
        _ => Err(PairFailed::NoAnswer(hub).into()),
    }
}
