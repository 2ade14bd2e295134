//! Listening in a browser: a phone (or any page) plays a room's stream in sync with the room's
//! players, with nothing installed.
//!
//! The hub joins the room's stream as one more player (the very player a node runs: clock
//! estimate, loss repair, drift following) whose device is a [`Tap`]: paced by the hub's clock,
//! handing over each block with the hub instant its first frame must be heard, as far ahead as
//! the room's latency allows. A relay hands the blocks to every listener's WebSocket; the page
//! keeps a clock synced to the hub's (ping/pong), maps the hub's instants onto its audio
//! device's clock (`AudioContext.getOutputTimestamp`: the device's own latency included), and
//! an `AudioWorklet` plays each frame at its instant, following drift with a fraction of a
//! per mille of rate. One relay per room, started by its first listener and stopped
//! [`LINGER`] after its last.
//!
//! | | |
//! | --- | --- |
//! | `GET /guest/listen?zone=NAME` | WebSocket, a guest's cookie |
//! | `GET /api/listen?zone=NAME` | WebSocket, a token (`?token=` or bearer) |
//!
//! On the socket, the hub sends a text `{"type":"hello",…}` (the room, its latency, how far
//! ahead blocks come), then binary blocks (little-endian: `f64` the hub instant of the first
//! frame, µs; `u32` frames; `u32` sample rate; `u16` channels; 6 bytes zero; then the frames,
//! `i16` interleaved), and text `{"type":"pong","id":N,"hub_us":T}` for each
//! `{"type":"ping","id":N}`. It closes with a reason (4000: the room changed its stream or its
//! latency, connect again; 4001: the room is gone or plays nothing; 4003: the host sent the
//! guest away; 1011: the hub cannot open the stream).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tutti_audio::backend::tap::{Tap, TapReader};
use tutti_node::output::OutputKind;
use tutti_node::player::PlayerOptions;
use tutti_node::role::Player;
use tutti_node::security::Keys;
use tutti_proto::Nanos;
use tutti_proto::control::{Event, KeySet, Zone};
use tutti_proto::player::PlayerConfig;

use crate::Hub;
use crate::api::ApiError;

/// How long a room's relay outlives its last listener (a page reloading keeps it).
pub const LINGER: Duration = Duration::from_secs(10);
/// How often a relay takes what its tap played.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// Blocks a listener may fall behind before it loses some (about 2.5 s of 10 ms blocks).
const BACKLOG: usize = 256;
/// The largest message a listener may send (a ping).
const MAX_MESSAGE: usize = 1024;
/// A block's header, bytes.
pub const HEADER: usize = 24;

/// A relayed block's hub instant (µs), rate, channels and frames (the format the relay writes:
/// see the module docs); `None` if it is not one.
pub(crate) fn read_block(b: &[u8]) -> Option<(f64, u32, usize, Vec<i16>)> {
    let head = b.get(..HEADER)?;
    let at_us = f64::from_le_bytes(head[0..8].try_into().ok()?);
    let frames = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let rate = u32::from_le_bytes(head[12..16].try_into().ok()?);
    let channels = usize::from(u16::from_le_bytes(head[16..18].try_into().ok()?)).max(1);
    let pcm: Vec<i16> =
        b[HEADER..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    (pcm.len() == frames * channels).then_some((at_us, rate, channels, pcm))
}

/// The relays, by room.
#[derive(Clone, Default)]
pub(crate) struct Relays(Arc<tokio::sync::Mutex<HashMap<String, Relay>>>);

/// A room's relay: the stream it plays and the blocks it hands out.
#[derive(Clone)]
struct Relay {
    source: String,
    latency_ms: Option<f64>,
    lead: Nanos,
    blocks: broadcast::Sender<Bytes>,
    stop: Arc<AtomicBool>,
}

/// Why a room cannot be listened to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// No such room.
    #[error("no room `{0}`: GET /api/zones lists them")]
    NoRoom(String),
    /// The room plays nothing.
    #[error("room `{0}` plays nothing: route a stream to it first")]
    Silent(String),
    /// Nothing the hub holds opens the room's stream.
    #[error(
        "the hub holds no key for the stream at {0}: pair its source with this hub, or give the \
         hub the network's passphrase"
    )]
    NoKeys(String),
    /// The stream could not be joined.
    #[error("the hub could not join the stream at {stream}: {why}")]
    Join {
        /// The stream.
        stream: String,
        /// Why.
        why: String,
    },
}

impl Hub {
    /// The room named `zone`'s relay (started if it is not running), subscribed to.
    pub(crate) async fn listen(
        &self,
        zone: &str,
    ) -> Result<(Zone, Nanos, broadcast::Receiver<Bytes>), ListenError> {
        let room = self
            .zones()
            .into_iter()
            .find(|z| z.name == zone)
            .ok_or_else(|| ListenError::NoRoom(zone.to_owned()))?;
        let source = room.source.clone().ok_or_else(|| ListenError::Silent(zone.to_owned()))?;
        let mut relays = self.relays.0.lock().await;
        if let Some(r) = relays.get(zone) {
            if r.source == source
                && r.latency_ms == room.latency_ms
                && !r.stop.load(Ordering::Relaxed)
            {
                return Ok((room, r.lead, r.blocks.subscribe()));
            }
            r.stop.store(true, Ordering::Relaxed);
            relays.remove(zone);
        }
        let relay = self.start_relay(&room, &source).await?;
        let rx = relay.blocks.subscribe();
        let lead = relay.lead;
        relays.insert(zone.to_owned(), relay);
        Ok((room, lead, rx))
    }

    /// Joins `room`'s stream at `source` with a tap for a device, and relays what it plays.
    async fn start_relay(&self, room: &Zone, source: &str) -> Result<Relay, ListenError> {
        let (security, set) =
            self.stream_security(source).ok_or_else(|| ListenError::NoKeys(source.to_owned()))?;
        let join = |why: String| ListenError::Join { stream: source.to_owned(), why };
        let address = lookup(source).map_err(join)?;
        let mut config = PlayerConfig::new(address);
        config.name = format!("hub: {} (browsers)", room.name);
        config.latency_override = room.latency_ms.map(|ms| Nanos((ms * 1e6) as i64));
        let (tap, reader) = Tap::new();
        let opts = PlayerOptions {
            config,
            bind: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            group: None,
            output: OutputKind::Tap(tap.clone()),
            buffer_frames: None,
            volume: 100.0,
            join_timeout: Duration::from_secs(5),
        };
        let keys = Keys::from(security);
        let player = tokio::task::spawn_blocking({
            let keys = keys.clone();
            move || Player::start(opts, keys)
        })
        .await
        .map_err(|e| join(e.to_string()))?
        .map_err(|e| join(e.to_string()))?;
        let (blocks, _) = broadcast::channel(BACKLOG);
        let relay = Relay {
            source: source.to_owned(),
            latency_ms: room.latency_ms,
            lead: tap.lead(),
            blocks: blocks.clone(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        tracing::info!(
            "room {}: relaying {source} to browsers, {:.1} ms ahead",
            room.name,
            tap.lead().0 as f64 / 1e6
        );
        let pump = Pump {
            hub: self.clone(),
            room: room.name.clone(),
            source: source.to_owned(),
            player: Some(player),
            reader,
            keys,
            set,
            blocks,
            stop: relay.stop.clone(),
        };
        tokio::spawn(pump.run());
        Ok(relay)
    }
}

/// `host:port` to an address (looked up off the async threads when it is a name).
fn lookup(source: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = source.parse() {
        return Ok(a);
    }
    crate::store::blocking(|| source.to_socket_addrs().map(|mut a| a.next()))
        .map_err(|e| format!("`{source}` does not resolve: {e}"))?
        .ok_or_else(|| format!("`{source}` resolves to nothing"))
}

/// A relay's task: takes what the tap played, hands it to the listeners; follows key
/// rotations; stops when told or [`LINGER`] after its last listener.
struct Pump {
    hub: Hub,
    room: String,
    source: String,
    player: Option<Player>,
    reader: TapReader,
    keys: Keys,
    set: Option<KeySet>,
    blocks: broadcast::Sender<Bytes>,
    stop: Arc<AtomicBool>,
}

impl Pump {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = Vec::new();
        let mut alone_since: Option<Instant> = None;
        let mut keys_checked = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if let Some(p) = &self.player {
                for n in p.notices() {
                    tracing::info!("room {} (browsers): {n}", self.room);
                }
            }
            loop {
                samples.clear();
                let Some(block) = self.reader.read(&mut samples) else { break };
                let mut m = Vec::with_capacity(HEADER + samples.len() * 2);
                m.extend_from_slice(&(block.dac_time.0 as f64 / 1e3).to_le_bytes());
                m.extend_from_slice(&block.frames.to_le_bytes());
                m.extend_from_slice(&block.rate.to_le_bytes());
                m.extend_from_slice(&block.channels.to_le_bytes());
                m.resize(HEADER, 0);
                // An integer stream arrives bit-exact (the player copies its frames).
                for &s in &samples {
                    m.extend_from_slice(&tutti_audio::format::to_i16(s).to_le_bytes());
                }
                let _ = self.blocks.send(Bytes::from(m));
            }
            if self.blocks.receiver_count() == 0 {
                let since = *alone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= LINGER {
                    break;
                }
            } else {
                alone_since = None;
            }
            if keys_checked.elapsed() >= Duration::from_secs(1) {
                keys_checked = Instant::now();
                if let Some((security, set)) = self.hub.stream_security(&self.source)
                    && set != self.set
                {
                    self.keys.set(security);
                    self.set = set;
                }
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        {
            let mut relays = self.hub.relays.0.lock().await;
            if relays.get(&self.room).is_some_and(|r| Arc::ptr_eq(&r.stop, &self.stop)) {
                relays.remove(&self.room);
            }
        }
        tracing::info!("room {}: no one listens in a browser; relay stopped", self.room);
        // Stopping joins the player's threads: not on the async threads.
        let player = self.player.take();
        let _ = tokio::task::spawn_blocking(move || drop(player)).await;
    }
}

/// Who listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// A guest (their id): sent away, their socket closes.
    Guest(String),
    /// A token's holder.
    Token,
}

#[derive(Deserialize)]
pub(crate) struct ListenQuery {
    zone: Option<String>,
}

/// `GET /api/listen?zone=NAME` (behind the API's token check).
pub(crate) async fn api_listen(
    State(hub): State<Hub>,
    Query(q): Query<ListenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(hub, q, ws, Listener::Token).await
}

/// `GET /guest/listen?zone=NAME` (a guest's cookie).
pub(crate) async fn guest_listen(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Query(q): Query<ListenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    match crate::guests::guest_socket(&hub, &headers) {
        Ok(guest) => upgrade(hub, q, ws, Listener::Guest(guest.id)).await,
        Err(refused) => refused.into_response(),
    }
}

async fn upgrade(hub: Hub, q: ListenQuery, ws: WebSocketUpgrade, who: Listener) -> Response {
    let Some(zone) = q.zone.filter(|z| !z.is_empty()) else {
        return ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid",
            "zone: name the room to listen to (?zone=NAME; GET /api/zones lists them)",
        )
        .into_response();
    };
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| serve(hub, zone, who, socket))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Says `message` (`{"type":"error",…}`: a close reason holds 123 bytes, the whole sentence
/// goes first as text), then closes with `code` and the short `reason`.
pub(crate) async fn say_and_close(socket: &mut WebSocket, code: u16, reason: &str, message: &str) {
    let text = json!({"type": "error", "message": message}).to_string();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(close(code, reason)).await;
}

/// One listener's socket.
async fn serve(hub: Hub, zone: String, who: Listener, mut socket: WebSocket) {
    let mut changes = hub.subscribe_changes();
    let (room, lead, mut blocks) = match hub.listen(&zone).await {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                ListenError::NoRoom(_) | ListenError::Silent(_) => 4001,
                _ => 1011,
            };
            return say_and_close(&mut socket, code, "cannot listen", &e.to_string()).await;
        }
    };
    let hello = json!({
        "type": "hello",
        "zone": room.name,
        "source": room.source,
        "latency_ms": room.latency_ms,
        "lead_ms": lead.0 as f64 / 1e6,
    });
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            b = blocks.recv() => match b {
                Ok(b) => {
                    if socket.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = socket.send(close(4000, "the room's relay stopped: connect again")).await;
                    return;
                }
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(pong) = pong(&t)
                        && socket.send(pong).await.is_err()
                    {
                        return;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            e = changes.recv() => match e {
                Ok(Event::Guests { guests }) => {
                    if let Listener::Guest(id) = &who
                        && !guests.iter().any(|g| &g.id == id)
                    {
                        let _ = socket.send(close(4003, "the host sent you away")).await;
                        return;
                    }
                }
                Ok(Event::ZoneChanged { zone: z }) if z.name == zone => {
                    if z.source != room.source || z.latency_ms != room.latency_ms {
                        let _ = socket.send(close(4000, "the room changed its stream: connect again")).await;
                        return;
                    }
                }
                Ok(Event::ZoneRemoved { name }) if name == zone => {
                    let _ = socket.send(close(4001, "the room is gone")).await;
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The answer to a `{"type":"ping","id":N}` (the hub's clock now), if `text` is one.
pub(crate) fn pong(text: &str) -> Option<Message> {
    let id = ping_id(text)?;
    let now = tutti_audio::clock::now();
    let pong = json!({"type": "pong", "id": id, "hub_us": now.0 as f64 / 1e3});
    Some(Message::Text(pong.to_string().into()))
}

/// The id of a `{"type":"ping","id":N}`.
fn ping_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Ping {
        #[serde(rename = "type")]
        kind: String,
        id: u64,
    }
    serde_json::from_str::<Ping>(text).ok().filter(|p| p.kind == "ping").map(|p| p.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pings_get_pongs() {
        assert_eq!(ping_id(r#"{"type":"ping","id":7}"#), Some(7));
        assert_eq!(ping_id(r#"{"type":"pong","id":7}"#), None);
        assert_eq!(ping_id(r#"{"type":"ping"}"#), None);
        assert_eq!(ping_id("ping"), None);
    }
}
