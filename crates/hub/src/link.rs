//! The node link, hub side: TCP; a handshake in clear lines, then JSON [`LinkMessage`]s in
//! the encrypted frames of [`tutti_proto::link`].
//!
//! ```text
//! hub  → node  {"challenge":{"nonce":"<32 random bytes, hex>"}}                    clear
//! node → hub   {"open":{"paired":"kitchen","noise":"<Noise NNpsk0 -> psk, e>"}}    clear
//! hub  → node  {"opened":{"noise":"<- e, ee>"}}  or {"refused":...}, close         clear
//! node → hub   {"hello":{"info":{...}}}                                            encrypted
//! hub  → node  {"welcome":{"settings":{...},"keys":"<sealed KeySet>"}}  or {"refused":...}
//! node → hub   {"state":{...}}                       a few times a second
//! hub  → node  {"command":{"kind":"volume","percent":40}}   whenever the API says so
//! hub  → node  {"keys":{"sealed":"..."}}             when its stream keys change
//! ```
//!
//! The handshake's pre-shared key is a paired node's own credential (its id is the paired
//! id, or starts with it and a dash: one paired machine may run a player and a source) or, on
//! a passphrase network, the network key (no `paired`). Each side proves it to the other
//! before anything else is said: the hub cannot read the opening without the key, the node
//! cannot read the answer unless the hub has it — a node refuses an impostor hub. From then
//! on everything is encrypted; stream keys are additionally sealed with the node's
//! credential.
//!
//! A hello with `"fetch":true` only fetches a paired node's keys (it is answered with a
//! welcome and closed, and the node is not listed): a player needs them before it joins.
//!
//! Stream keys are per stream (see [`Hub::keys_for`](crate::Hub)): a source gets its own
//! stream's, a player the stream its zone plays; a change of zone, of a zone's stream, or a
//! rotation sends the new set.
//!
//! Instead of a hello, a new node may pair: `{"pair":{"token":ID,"noise":...}}` (see
//! [`tutti_proto::pairing`]); the hub answers `{"paired":{"noise":...}}` and closes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::secrets::Secrets;
use crate::{Holder, Hub, Link};
use tutti_proto::control::{KeySet, LinkMessage, NodeInfo, NodeState, from_hex, to_hex};
use tutti_proto::link::{Opener, Sealer};

/// Longest line accepted from a node (a cover image, hex, is the longest thing it sends).
pub const MAX_LINE: usize = 1024 * 1024;
/// Longest line accepted before a node has proved itself (a hello or a pairing request).
pub const MAX_HELLO: usize = 16 * 1024;
/// How long a node has to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A node reports a few times a second: one silent this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections that have not proved themselves yet, at most (all, and from one address).
pub const MAX_UNPROVEN: usize = 64;
/// See [`MAX_UNPROVEN`].
pub const MAX_UNPROVEN_PER_ADDRESS: usize = 8;

/// Connections not yet proven, by address (a cap, not a list of who is trusted).
#[derive(Clone, Default)]
struct Unproven(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
);

/// A slot among the unproven connections; released on drop (or when the node proves itself).
struct Slot(Unproven, std::net::IpAddr);

impl Unproven {
    fn take(&self, ip: std::net::IpAddr) -> Option<Slot> {
        let mut m = self.0.lock().ok()?;
        let total: usize = m.values().sum();
        let mine = m.get(&ip).copied().unwrap_or(0);
        if total >= MAX_UNPROVEN || mine >= MAX_UNPROVEN_PER_ADDRESS {
            return None;
        }
        *m.entry(ip).or_insert(0) += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Says at most one line per minute about refused connections (a stranger must not fill the
/// journal), with how many there were.
#[derive(Clone, Default)]
struct RefusalLog(std::sync::Arc<std::sync::Mutex<(Option<Instant>, u64)>>);

impl RefusalLog {
    fn say(&self, what: &str) {
        let Ok(mut g) = self.0.lock() else { return };
        g.1 += 1;
        if g.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            tracing::warn!("node link: {what} ({} refused in the last minute)", g.1);
            *g = (Some(Instant::now()), 0);
        }
    }
}

/// Accepts node links forever.
pub async fn serve(hub: Hub, listener: TcpListener) {
    let unproven = Unproven::default();
    let refusals = RefusalLog::default();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Past the cap the connection is closed at once: nothing is read, nothing kept.
        let Some(slot) = unproven.take(peer.ip()) else {
            refusals.say(&format!("{peer}: too many connections not yet proven"));
            continue;
        };
        let (hub, refusals) = (hub.clone(), refusals.clone());
        let span = tracing::info_span!("link", %peer);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _ = stream.set_nodelay(true);
                if let Err(e) = handle(hub, stream, slot).await {
                    refusals.say(&e.to_string());
                }
            },
            span,
        ));
    }
}

/// A node that has not taken a message in this long is gone (its commands would pile up).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `m` as a clear line (the handshake), or sealed in frames once `sealer` is given.
async fn send(
    w: &mut OwnedWriteHalf,
    sealer: Option<&mut Sealer>,
    m: &LinkMessage,
) -> std::io::Result<()> {
    let bytes = tutti_proto::link::encode(m, sealer)?;
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::other(format!("a node took nothing for {WRITE_TIMEOUT:?}"))),
    }
}

/// Reads the rest of one frame (`[u16 length][ciphertext]`) into `frame` (what it holds is its
/// start): `true` once whole, `false` at the end of the stream. Cancel-safe like
/// [`read_line`]: every byte taken from the reader is in `frame`; the caller clears it once it
/// has opened the frame. A frame is at most 64 KiB by construction.
async fn read_frame(
    r: &mut BufReader<OwnedReadHalf>,
    frame: &mut Vec<u8>,
) -> std::io::Result<bool> {
    loop {
        let need = match frame.as_slice() {
            [a, b, ..] => 2 + tutti_proto::link::frame_len([*a, *b]),
            _ => 2,
        };
        if frame.len() == need && need > 2 {
            return Ok(true);
        }
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(false);
        }
        let take = available.len().min(need - frame.len());
        frame.extend_from_slice(&available[..take]);
        r.consume(take);
    }
}

/// The next message in the channel, or `None` at the end of the stream.
async fn receive(
    r: &mut BufReader<OwnedReadHalf>,
    frame: &mut Vec<u8>,
    opener: &mut Opener,
) -> std::io::Result<Option<LinkMessage>> {
    loop {
        if !read_frame(r, frame).await? {
            return Ok(None);
        }
        let opened = opener.open(&frame[2..]).map_err(std::io::Error::other);
        frame.clear();
        if let Some(message) = opened? {
            // Anything this hub does not understand (a newer node) is skipped.
            if let Ok(m) = serde_json::from_slice::<LinkMessage>(&message) {
                return Ok(Some(m));
            }
        }
    }
}

/// Reads the rest of one line into `line` (what it holds is its start), refusing it as soon
/// as it passes `max` bytes: a peer that never sends a newline costs `max` bytes, not what it
/// sends. The caller clears `line` once it has taken the line: cancelled (in a `select!`), this
/// loses nothing, every byte taken from the reader is in `line` already. `Ok(0)` at the end.
async fn read_line(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(line.len());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > max + 1 {
            return Err(std::io::Error::other(format!("a line longer than {max} bytes")));
        }
        line.extend_from_slice(&available[..take]);
        r.consume(take);
        if done {
            return Ok(line.len());
        }
    }
}

async fn handle(hub: Hub, stream: TcpStream, slot: Slot) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let challenge: [u8; 32] = tutti_os::random();
    send(&mut w, None, &LinkMessage::Challenge { nonce: to_hex(&challenge) }).await?;
    let mut line = Vec::new();
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_line(&mut r, &mut line, MAX_HELLO)).await;
    let refuse = async |w: &mut OwnedWriteHalf, sealer: Option<&mut Sealer>, message: String| {
        let e = std::io::Error::other(format!("{peer}: {message}"));
        send(w, sealer, &LinkMessage::Refused { message }).await?;
        Err::<(), _>(e)
    };
    let message = serde_json::from_slice::<LinkMessage>(line.trim_ascii());
    line.clear();
    let (paired, noise) = match (first, message) {
        (Ok(Ok(_)), Ok(LinkMessage::Pair { token, noise })) => {
            return match pair(&hub, &token, &noise) {
                Ok(answer) => send(&mut w, None, &LinkMessage::Paired { noise: answer }).await,
                Err(why) => refuse(&mut w, None, why.to_string()).await,
            };
        }
        (Ok(Ok(_)), Ok(LinkMessage::Open { paired, noise })) => (paired, noise),
        (Ok(Ok(_)), Ok(LinkMessage::Hello { .. })) => {
            let m = "this node speaks an older link protocol (no handshake): update it";
            return refuse(&mut w, None, m.to_owned()).await;
        }
        _ => {
            return refuse(&mut w, None, "expected {\"open\":{...}} within 5 s".to_owned()).await;
        }
    };
    // The handshake: the node proves the key, and this answer proves it back.
    let (channel, answer) = match open(&hub, &challenge, paired.as_deref(), &noise) {
        Ok(x) => x,
        Err(why) => return refuse(&mut w, None, why.to_string()).await,
    };
    send(&mut w, None, &LinkMessage::Opened { noise: to_hex(&answer) }).await?;
    let (mut sealer, mut opener) = channel.split(MAX_LINE);
    let mut frame = Vec::new();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, receive(&mut r, &mut frame, &mut opener)).await;
    let (info, fetch) = match hello {
        Ok(Ok(Some(LinkMessage::Hello { info, fetch }))) => (info, fetch),
        _ => {
            let m = "expected {\"hello\":{...}} in the channel within 5 s".to_owned();
            return refuse(&mut w, Some(&mut sealer), m).await;
        }
    };
    if let Err(why) = admit(&info, paired.as_deref()) {
        return refuse(&mut w, Some(&mut sealer), why.to_string()).await;
    }
    let holder = Holder::of(&info, peer.ip());
    // A paired node's keys, chosen by what it is (see `Hub::keys_for`), sealed with its
    // credential.
    let keys_of = |holder: &Holder| {
        let credential = hub.credential(paired.as_deref()?).ok()?;
        let set = hub.keys_for(holder);
        Some((Secrets::seal_for(&credential, &set)?, set))
    };
    // A paired node fetching its keys before it starts: answered, not listed — unless it is
    // a player the hub has no keys for yet: it waits (asking again), listed with the reason,
    // so that it can be put in a zone.
    if fetch {
        if holder.role == "source" && paired.is_some() {
            hub.announce(holder.clone());
        }
        let keys = keys_of(&holder);
        if let Some((_, KeySet { note: Some(note), .. })) = &keys
            && holder.role == "player"
        {
            let state = NodeState { problem: Some(note.clone()), ..NodeState::default() };
            hub.with(|reg| {
                let now = Instant::now();
                let new = !reg.node(&info.id, now).is_ok_and(|v| v.online);
                let mut events = Vec::new();
                if new {
                    events.push(reg.connect(info, now).1);
                }
                events.extend(reg.report(&holder.id, state, now));
                ((), events, new)
            });
        }
        let keys = keys.map(|(sealed, _)| sealed);
        let settings = Default::default();
        return send(&mut w, Some(&mut sealer), &LinkMessage::Welcome { settings, keys }).await;
    }
    // Proven: no longer counted against the unproven cap.
    drop(slot);
    let id = info.id.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (keys, sent) = keys_of(&holder).unzip();
    let source = holder.role == "source";
    hub.attach(&id, Link { tx: tx.clone(), paired: paired.clone(), holder, sent });
    let (settings, route) = hub.with(|reg| {
        let (s, e) = reg.connect(info, Instant::now());
        ((s, reg.route_for(&id)), vec![e], true)
    });
    send(&mut w, Some(&mut sealer), &LinkMessage::Welcome { settings, keys }).await?;
    // A player in a routed zone plays the zone's source.
    if let Some(route) = route {
        let _ = tx.send(LinkMessage::Command(route));
    }
    // A source that links now gives its players their keys.
    if source {
        hub.push_keys();
    }
    let result = loop {
        tokio::select! {
            n = tokio::time::timeout(IDLE_TIMEOUT, receive(&mut r, &mut frame, &mut opener)) => match n {
                Err(_) => break Err(std::io::Error::other(format!("{id}: silent for {IDLE_TIMEOUT:?}"))),
                Ok(n) => match n {
                Ok(None) => break Ok(()),
                // Anything but state and cover art from a node is ignored: an older or newer
                // node may say more than this hub understands.
                Ok(Some(LinkMessage::State(state))) => {
                    hub.with(|reg| ((), reg.report(&id, *state, Instant::now()).into_iter().collect(), false));
                }
                Ok(Some(LinkMessage::Cover { mime, data })) => {
                    let image = from_hex(&data).filter(|d| !d.is_empty());
                    hub.set_cover(&id, image.map(|d| (mime, d)));
                }
                Ok(Some(_)) => {}
                Err(e) => break Err(e),
            }},
            m = rx.recv() => match m {
                Some(m) => {
                    let last = matches!(m, LinkMessage::Refused { .. });
                    if let Err(e) = send(&mut w, Some(&mut sealer), &m).await {
                        break Err(e);
                    }
                    if last {
                        break Err(std::io::Error::other(format!("{id}: revoked")));
                    }
                }
                None => break Ok(()),
            },
        }
    };
    // A node that already reconnected on a new link stays online.
    if hub.detach(&id, &tx) {
        hub.with(|reg| ((), reg.disconnect(&id).into_iter().collect(), false));
    }
    result
}

/// Why a node is refused on the link: what it is told before the link closes.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the opening is not hex")]
    NotHex,
    #[error(transparent)]
    Credential(#[from] crate::CredentialError),
    #[error("`{0}`'s credential is unreadable")]
    Unreadable(String),
    #[error(
        "this hub admits paired nodes only: pair this node with `tutti pair LINK` (`tutti serve` \
         prints a link; POST /api/pairing makes more)"
    )]
    PairedOnly,
    #[error("wrong credential for `{0}`: pair this node again")]
    WrongCredential(String),
    #[error("wrong network key: use the same passphrase as the hub")]
    WrongKey,
    #[error("`info.id` must be 1–128 characters")]
    IdLength,
    #[error("node id `{id}` is not `{paired}`'s: a paired node's ids start with its paired id")]
    NotYours { id: String, paired: String },
    #[error(transparent)]
    Token(#[from] crate::secrets::TokenError),
    #[error(transparent)]
    Pairing(#[from] tutti_proto::pairing::PairError),
    #[error(transparent)]
    NotSaved(#[from] crate::registry::RegistryError),
}

/// Answers a node's opening under the key it claims (a paired node's credential, or the
/// network key).
fn open(
    hub: &Hub,
    challenge: &[u8],
    paired: Option<&str>,
    noise: &str,
) -> Result<(tutti_proto::link::Channel, Vec<u8>), Refusal> {
    let first = from_hex(noise).ok_or(Refusal::NotHex)?;
    let psk = match (paired, hub.key()) {
        (Some(p), _) => {
            let credential = hub.credential(p)?;
            crate::secrets::credential_of(&credential)
                .ok_or_else(|| Refusal::Unreadable(p.to_owned()))?
                .link_psk()
        }
        (None, Some(key)) => key.link_psk(),
        (None, None) => return Err(Refusal::PairedOnly),
    };
    tutti_proto::link::accept(&psk, challenge, paired, &first).map_err(|_| match paired {
        Some(p) => Refusal::WrongCredential(p.to_owned()),
        None => Refusal::WrongKey,
    })
}

/// Checks a hello's node id against the key that opened the channel: a paired node's ids
/// are its paired id or start with it and a dash. `Err` is the message the node is told.
fn admit(info: &NodeInfo, paired: Option<&str>) -> Result<(), Refusal> {
    if info.id.is_empty() || info.id.len() > 128 {
        return Err(Refusal::IdLength);
    }
    match paired {
        Some(p) if info.id != p && !info.id.starts_with(&format!("{p}-")) => {
            Err(Refusal::NotYours { id: info.id.clone(), paired: p.to_owned() })
        }
        _ => Ok(()),
    }
}

/// Answers a pairing: the token is used up whatever happens.
fn pair(hub: &Hub, token: &str, noise: &str) -> Result<String, Refusal> {
    let t = hub.take_token(token)?;
    let (request, responder) = tutti_proto::pairing::respond(&t, noise)?;
    let name = request.name.chars().take(64).collect::<String>();
    let grant = hub.grant(&name)?;
    tracing::info!("paired `{}` as `{}`", name, grant.node);
    Ok(responder.grant(&grant)?)
}
