//! The node side of the hub link (see `tutti_hub::link`): connect, prove the network key,
//! report state a few times a second, apply the settings and commands the hub sends. It
//! reconnects every second while the hub is away; the audio never waits for it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tutti_proto::NetworkKey;
use tutti_proto::control::{Command, LinkMessage, NodeInfo, NodeState, Settings, from_hex, to_hex};

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
        key: NetworkKey,
        report: Duration,
        handler: impl HubHandler,
    ) -> std::io::Result<Self> {
        Self::spawn_to(move || Some(hub), info, key, report, handler)
    }

    /// Keeps a link to whichever hub `find` names when a connection is due (mDNS discovery:
    /// nothing is tried until a hub answered; a hub that moved is followed on reconnect).
    pub fn spawn_to(
        mut find: impl FnMut() -> Option<SocketAddr> + Send + 'static,
        info: NodeInfo,
        key: NetworkKey,
        report: Duration,
        handler: impl HubHandler,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::Builder::new().name("tutti-hub-link".into()).spawn(move || {
                let mut handler = handler;
                let mut said_lost = false;
                while !flag.load(Ordering::Relaxed) {
                    let Some(hub) = find() else {
                        std::thread::sleep(Duration::from_millis(100));
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
                    for _ in 0..10 {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })?;
        Ok(HubLink { stop, thread: Some(thread) })
    }

    /// Stops the link.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn write(stream: &mut TcpStream, m: &LinkMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn read(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<LinkMessage>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(std::io::Error::other("the hub closed the link")),
        Ok(_) => Ok(serde_json::from_str(line.trim()).ok()),
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
    key: &NetworkKey,
    report: Duration,
    handler: &mut impl HubHandler,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&hub, Duration::from_secs(1))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(LinkMessage::Challenge { nonce }) = read(&mut reader)? else {
        return Err(std::io::Error::other("not a Tutti hub (no challenge)"));
    };
    let nonce = from_hex(&nonce).ok_or_else(|| std::io::Error::other("bad challenge"))?;
    let proof = to_hex(&key.prove(&nonce));
    write(&mut stream, &LinkMessage::Hello { info: info.clone(), proof })?;
    match read(&mut reader)? {
        Some(LinkMessage::Welcome { settings }) => {
            handler.settings(&settings);
            handler.status(&format!("hub {hub}: connected"));
        }
        Some(LinkMessage::Refused { message }) => {
            return Err(std::io::Error::other(format!("refused: {message}")));
        }
        _ => return Err(std::io::Error::other("no welcome")),
    }
    // A reader thread hands commands over as they come; this loop applies them at once and
    // reports state every `report`.
    stream.set_read_timeout(None)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_thread =
        std::thread::Builder::new().name("tutti-hub-read".into()).spawn(move || {
            loop {
                match read(&mut reader) {
                    Ok(Some(LinkMessage::Command(c))) => {
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })?;
    let mut next = std::time::Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = std::time::Instant::now();
        if now >= next {
            let extra = handler.outbox();
            let sent = std::iter::once(LinkMessage::State(handler.state()))
                .chain(extra)
                .try_for_each(|m| write(&mut stream, &m));
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
            Ok(c) => handler.command(&c),
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
