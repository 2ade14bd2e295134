//! Snapclients as receivers: the hub serves Snapcast's binary stream protocol (TCP, Snapcast's
//! port 1704), so a `snapclient` already on a Pi plays a Tutti room in sync with its players.
//!
//! A snapclient that says hello becomes a player node of the hub (id `snapclient-<its ID>`,
//! device `snapclient`): listed, put in a room, given a volume, a mute and a per-device delay
//! like any player, from the API, the dashboard, MQTT or a Snapcast app. It plays its room's
//! stream through the room's relay — the hub's own player of that stream, whose device is a
//! tap handing over each block with the hub instant its first frame must be heard (see
//! [`listen`](crate::listen)). Each block becomes a Snapcast wire chunk stamped `instant −
//! bufferMs` on the hub's clock (`CLOCK_MONOTONIC`), and the snapclient, whose clock follows
//! the hub's through Snapcast's time messages, plays it at `stamp + bufferMs − latency`: the
//! instant the room's players play the same frame, less the delay set for it. Volume and mute
//! are the snapclient's own (server settings); a volume changed on the snapclient (its mixer)
//! is taken as the player's setting.
//!
//! Audio goes as PCM (16-bit, the stream's rate and channels) in clear, as Snapcast's does: the
//! listener is off unless `tutti serve --snapcast-stream ADDR` asks, and admits only loopback
//! and the `--snapcast-allow` networks (docs/security.md).
//!
//! The framing is Snapcast's (little-endian): a 26-byte base header (type, id, refers-to,
//! sent and received instants as seconds + microseconds, payload size), then the typed payload.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};
use tutti_proto::control::{Command, LinkMessage, NodeInfo, NodeState, Settings};

use crate::snapcast::SnapcastSetup;
use crate::{Holder, Hub, Link};

/// The base header's size, bytes.
pub const BASE: usize = 26;
/// The largest message a snapclient may send (its hello is a few hundred bytes).
pub const MAX_MESSAGE: u32 = 16 * 1024;
/// How long a snapclient has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(5);
/// How long a snapclient may say nothing (it asks the time every second) before it is dropped.
const SILENT_FOR: Duration = Duration::from_secs(10);
/// The least room latency a snapclient plays in reliably: at 100 ms the relay hands blocks
/// ~40–60 ms ahead, less than a snapclient's PulseAudio buffer and start-up took on the
/// instrument (it stayed silent in 2 runs of 3); at 250 ms it played within 0.16 ms of the
/// native players. Below it the player says so (its `problem`, on the dashboard).
const SNAPCLIENT_ROOM_MS: i64 = 150;
/// How often a snapclient's state is reported to the registry (it is lost without).
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// Message types.
pub mod kind {
    /// Codec header (server → client).
    pub const CODEC_HEADER: u16 = 1;
    /// A chunk of audio (server → client).
    pub const WIRE_CHUNK: u16 = 2;
    /// Server settings: buffer, latency, volume, mute (server → client).
    pub const SERVER_SETTINGS: u16 = 3;
    /// Time (both ways).
    pub const TIME: u16 = 4;
    /// Hello (client → server).
    pub const HELLO: u16 = 5;
    /// Client info: its volume and mute (client → server).
    pub const CLIENT_INFO: u16 = 7;
    /// An error (server → client).
    pub const ERROR: u16 = 8;
}

/// An instant as Snapcast carries it: seconds and microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tv {
    /// Seconds.
    pub sec: i32,
    /// Microseconds.
    pub usec: i32,
}

impl Tv {
    /// From microseconds (may be negative).
    pub fn from_micros(us: i64) -> Tv {
        Tv { sec: us.div_euclid(1_000_000) as i32, usec: us.rem_euclid(1_000_000) as i32 }
    }

    /// In microseconds.
    pub fn micros(self) -> i64 {
        i64::from(self.sec) * 1_000_000 + i64::from(self.usec)
    }
}

/// A message's base header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Base {
    /// Its type ([`kind`]).
    pub kind: u16,
    /// Its id.
    pub id: u16,
    /// The id of the message it answers.
    pub refers_to: u16,
    /// When it was sent (the sender's clock).
    pub sent: Tv,
    /// When it was received (the receiver's clock).
    pub received: Tv,
    /// The payload's size, bytes.
    pub size: u32,
}

impl Base {
    /// Reads a header.
    pub fn parse(b: &[u8; BASE]) -> Base {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let i32_at = |i: usize| i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Base {
            kind: u16_at(0),
            id: u16_at(2),
            refers_to: u16_at(4),
            sent: Tv { sec: i32_at(6), usec: i32_at(10) },
            received: Tv { sec: i32_at(14), usec: i32_at(18) },
            size: i32_at(22) as u32,
        }
    }

    /// A whole message: this header (its size set) and `payload`.
    pub fn message(mut self, payload: &[u8]) -> Vec<u8> {
        self.size = payload.len() as u32;
        let mut m = Vec::with_capacity(BASE + payload.len());
        m.extend_from_slice(&self.kind.to_le_bytes());
        m.extend_from_slice(&self.id.to_le_bytes());
        m.extend_from_slice(&self.refers_to.to_le_bytes());
        for t in [self.sent, self.received] {
            m.extend_from_slice(&t.sec.to_le_bytes());
            m.extend_from_slice(&t.usec.to_le_bytes());
        }
        m.extend_from_slice(&self.size.to_le_bytes());
        m.extend_from_slice(payload);
        m
    }
}

/// A JSON payload (hello, server settings, client info): its size, then the text.
pub fn json_payload(v: &serde_json::Value) -> Vec<u8> {
    let text = v.to_string();
    let mut p = (text.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(text.as_bytes());
    p
}

/// The JSON of a payload made by [`json_payload`]; `None` if it is not one.
pub fn read_json(p: &[u8]) -> Option<serde_json::Value> {
    let n = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
    serde_json::from_slice(p.get(4..4 + n)?).ok()
}

/// The codec header of 16-bit PCM at `rate` Hz, `channels` channels: a RIFF WAVE header.
pub fn pcm_codec_header(rate: u32, channels: u16) -> Vec<u8> {
    let mut wav = Vec::with_capacity(44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&36u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    wav.extend_from_slice(&(channels * 2).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&0u32.to_le_bytes());
    let mut p = 3u32.to_le_bytes().to_vec();
    p.extend_from_slice(b"pcm");
    p.extend_from_slice(&(wav.len() as u32).to_le_bytes());
    p.extend_from_slice(&wav);
    p
}

/// A wire chunk: `pcm` (little-endian 16-bit, interleaved) recorded at `stamp`.
pub fn wire_chunk(stamp: Tv, pcm: &[i16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + pcm.len() * 2);
    p.extend_from_slice(&stamp.sec.to_le_bytes());
    p.extend_from_slice(&stamp.usec.to_le_bytes());
    p.extend_from_slice(&((pcm.len() * 2) as u32).to_le_bytes());
    for s in pcm {
        p.extend_from_slice(&s.to_le_bytes());
    }
    p
}

/// The hub's clock as Snapcast carries it (`CLOCK_MONOTONIC`, the clock the relays' instants
/// are on).
fn now_tv() -> Tv {
    Tv::from_micros((tutti_audio::clock::now().0 / 1_000) as i64)
}

/// What a snapclient's hello says of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// Its node id: `snapclient-<ID>` (and `#<instance>` past the first).
    pub id: String,
    /// Its host's name.
    pub host: String,
    /// `Snapclient 0.26.0`, say.
    pub version: String,
}

impl Hello {
    /// From a hello's JSON; `None` without an `ID`.
    pub fn parse(v: &serde_json::Value) -> Option<Hello> {
        let raw = v.get("ID").and_then(|i| i.as_str()).filter(|i| !i.is_empty())?;
        let id: String = raw
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .take(64)
            .collect();
        let instance = v.get("Instance").and_then(|i| i.as_u64()).unwrap_or(1);
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        Some(Hello {
            id: if instance > 1 {
                format!("snapclient-{id}-{instance}")
            } else {
                format!("snapclient-{id}")
            },
            host: text("HostName").chars().take(64).collect(),
            version: format!("{} {}", text("ClientName"), text("Version")).trim().to_owned(),
        })
    }
}

/// The server settings for a snapclient set as `s`, its stream `buffer_ms` behind its stamps.
pub fn server_settings(s: &Settings, buffer_ms: i64) -> serde_json::Value {
    json!({
        "bufferMs": buffer_ms,
        // Snapcast's latency plays earlier; Tutti's delay plays later.
        "latency": (-s.delay_ms).round() as i64,
        "muted": s.mute,
        "volume": s.volume.round().clamp(0.0, 100.0) as u32,
    })
}

/// Reads one message (at most [`MAX_MESSAGE`] bytes of payload), stamping its arrival.
async fn read_message(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(Base, Vec<u8>)> {
    let mut head = [0u8; BASE];
    r.read_exact(&mut head).await?;
    let mut base = Base::parse(&head);
    base.received = now_tv();
    if base.size > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a message of {} bytes (at most {MAX_MESSAGE})",
            base.size
        )));
    }
    let mut payload = vec![0u8; base.size as usize];
    r.read_exact(&mut payload).await?;
    Ok((base, payload))
}

/// Serves Snapcast's stream protocol on `listener` to the peers `setup` admits.
pub(crate) async fn serve(hub: Hub, listener: tokio::net::TcpListener, setup: SnapcastSetup) {
    loop {
        let (tcp, peer) = crate::snapcast::accept(&listener).await;
        let hub = hub.clone();
        let admitted = setup.admits(peer.ip());
        tokio::spawn(async move {
            let (mut r, mut w) = tcp.into_split();
            if !admitted {
                tracing::warn!("snapclient {peer} refused (not in --snapcast-allow)");
                let why = format!(
                    "{} is not admitted: the hub's owner can allow it with `tutti serve \
                     --snapcast-allow {}`",
                    peer.ip(),
                    peer.ip()
                );
                let mut p = 401u32.to_le_bytes().to_vec();
                p.extend_from_slice(&(why.len() as u32).to_le_bytes());
                p.extend_from_slice(why.as_bytes());
                let m = Base { kind: kind::ERROR, sent: now_tv(), ..Base::default() }.message(&p);
                let _ = w.write_all(&m).await;
                return;
            }
            let hello = match tokio::time::timeout(HELLO_WITHIN, read_message(&mut r)).await {
                Ok(Ok((b, p))) if b.kind == kind::HELLO => {
                    read_json(&p).and_then(|v| Hello::parse(&v)).map(|h| (h, b.id))
                }
                _ => None,
            };
            let Some((hello, asked)) = hello else {
                tracing::warn!("snapclient {peer}: no hello with an ID within {HELLO_WITHIN:?}");
                return;
            };
            let id = hello.id.clone();
            tracing::info!("snapclient {peer} ({}) joined as `{id}`", hello.version);
            if let Err(e) = session(&hub, hello, asked, peer.ip(), &mut r, &mut w).await {
                tracing::info!("snapclient `{id}` gone: {e}");
            }
        });
    }
}

/// What a snapclient plays now.
struct Playing {
    zone: String,
    blocks: broadcast::Receiver<axum::body::Bytes>,
    /// The rate and channels its codec header said.
    format: Option<(u32, u16)>,
    buffer_ms: i64,
}

/// A snapclient's session: `hello` (message `asked`) answered with its settings, then its
/// room's chunks, its time requests answered and its player's commands followed.
async fn session(
    hub: &Hub,
    hello: Hello,
    asked: u16,
    peer: IpAddr,
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let id = hello.id.clone();
    let info = NodeInfo {
        id: id.clone(),
        name: if hello.host.is_empty() { id.clone() } else { hello.host.clone() },
        role: "player".into(),
        device: "snapclient".into(),
        capabilities: ["volume", "mute", "delay", "route"].map(str::to_owned).to_vec(),
        address: SocketAddr::new(peer, 0).to_string(),
        streams: Vec::new(),
        version: hello.version.clone(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let holder = Holder { id: id.clone(), role: "player".into(), ..Holder::default() };
    hub.attach(&id, Link { tx: tx.clone(), paired: None, holder, sent: None });
    let mut settings = hub.with(|reg| {
        let (s, e) = reg.connect(info, Instant::now());
        (s, vec![e], true)
    });
    // Messages from the snapclient, read apart (a read is not cancel-safe).
    let (in_tx, mut incoming) = mpsc::channel::<(Base, Vec<u8>)>(8);
    let reader = async move {
        loop {
            let m = read_message(r).await?;
            if in_tx.send(m).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let result = async {
        // Joining a room's stream takes a while (the relay may start): it happens apart, the
        // snapclient's time requests are answered meanwhile.
        let start = |settings: &Settings| {
            let (hub, id, settings) = (hub.clone(), id.clone(), settings.clone());
            tokio::spawn(async move { play(&hub, &id, &settings).await })
        };
        let mut playing: Option<Playing> = None;
        let mut starting = Some(start(&settings));
        // The answer to the hello (the snapclient waits for it).
        let m = json_payload(&server_settings(&settings, buffer_of(hub, &settings)));
        send(w, kind::SERVER_SETTINGS, asked, &m).await?;
        let mut report = tokio::time::interval(REPORT_EVERY);
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        let mut next_id = 1u16;
        let mut sent_chunks = 0u64;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                m = incoming.recv() => {
                    let Some((base, payload)) = m else { return Ok(()) };
                    heard = Instant::now();
                    match base.kind {
                        kind::TIME => {
                            // The client's clock to the hub's, and the hub's instant now.
                            let latency = Tv::from_micros(base.received.micros() - base.sent.micros());
                            let mut p = latency.sec.to_le_bytes().to_vec();
                            p.extend_from_slice(&latency.usec.to_le_bytes());
                            let reply = Base {
                                kind: kind::TIME,
                                id: next_id,
                                refers_to: base.id,
                                sent: now_tv(),
                                received: base.received,
                                size: 0,
                            };
                            next_id = next_id.wrapping_add(1);
                            w.write_all(&reply.message(&p)).await?;
                        }
                        kind::CLIENT_INFO => {
                            // The snapclient's own mixer moved: the player's setting follows.
                            if let Some(v) = read_json(&payload) {
                                let volume = v.get("volume").and_then(|x| x.as_f64()).map(|x| x.clamp(0.0, 100.0) as f32);
                                let mute = v.get("muted").and_then(|x| x.as_bool());
                                if volume.is_some_and(|x| x != settings.volume) || mute.is_some_and(|x| x != settings.mute) {
                                    let patch = crate::registry::SettingsPatch { volume, mute, ..Default::default() };
                                    if let Ok((view, _)) = hub.apply(&id, patch) {
                                        settings = view.settings;
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                m = rx.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    let LinkMessage::Command(c) = m else {
                        if let LinkMessage::Refused { .. } = m { return Ok(()); }
                        continue;
                    };
                    match c {
                        Command::Volume { percent, .. } => settings.volume = percent,
                        Command::Mute { mute, .. } => settings.mute = mute,
                        Command::Delay { ms } => settings.delay_ms = ms,
                        Command::Route { .. } => {
                            settings = hub.with(|reg| (reg.settings(&id), vec![], false));
                            if let Some(s) = starting.replace(start(&settings)) {
                                s.abort();
                            }
                            continue;
                        }
                        _ => continue,
                    }
                    let buffer_ms = playing.as_ref().map_or(buffer_of(hub, &settings), |p| p.buffer_ms);
                    send(w, kind::SERVER_SETTINGS, 0, &json_payload(&server_settings(&settings, buffer_ms))).await?;
                }
                started = async {
                    match starting.as_mut() {
                        Some(s) => s.await,
                        None => std::future::pending().await,
                    }
                } => {
                    starting = None;
                    playing = started.ok().flatten();
                    // Its chunks are stamped by the new room's buffer: said first.
                    if let Some(p) = &playing {
                        send(w, kind::SERVER_SETTINGS, 0, &json_payload(&server_settings(&settings, p.buffer_ms))).await?;
                    }
                }
                b = async {
                    match playing.as_mut() {
                        Some(p) => p.blocks.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let p = playing.as_mut().expect("a block comes from what plays");
                    match b {
                        Ok(block) => {
                            let Some((at_us, rate, channels, pcm)) = crate::listen::read_block(&block) else { continue };
                            let format = (rate, channels as u16);
                            if p.format != Some(format) {
                                send(w, kind::CODEC_HEADER, 0, &pcm_codec_header(rate, channels as u16)).await?;
                                p.format = Some(format);
                            }
                            let stamp = Tv::from_micros(at_us as i64 - p.buffer_ms * 1000);
                            send(w, kind::WIRE_CHUNK, 0, &wire_chunk(stamp, &pcm)).await?;
                            sent_chunks += 1;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("snapclient `{id}`: {n} blocks lost (the connection is slower than the stream)");
                        }
                        Err(broadcast::error::RecvError::Closed) => playing = None,
                    }
                }
                _ = retry.tick(), if playing.is_none() && starting.is_none() => {
                    settings = hub.with(|reg| (reg.settings(&id), vec![], false));
                    starting = Some(start(&settings));
                }
                _ = report.tick() => {
                    if heard.elapsed() > SILENT_FOR {
                        return Err(std::io::Error::other(format!("silent for {SILENT_FOR:?}")));
                    }
                    let state = NodeState {
                        streaming: playing.is_some() && sent_chunks > 0,
                        stream: playing.as_ref().map(|p| p.zone.clone()),
                        latency_ms: playing.as_ref().map(|p| p.buffer_ms as f64),
                        problem: playing.as_ref().filter(|p| p.buffer_ms < SNAPCLIENT_ROOM_MS).map(|p| {
                            format!(
                                "room {} has a latency of {} ms; a snapclient needs {SNAPCLIENT_ROOM_MS} ms or \
                                 more (its own buffer and start-up come out of what the hub's relay leaves \
                                 it): give the room a latency of {SNAPCLIENT_ROOM_MS} ms or more",
                                p.zone, p.buffer_ms
                            )
                        }),
                        ..NodeState::default()
                    };
                    hub.with(|reg| ((), reg.report(&id, state, Instant::now()).into_iter().collect(), false));
                }
            }
        }
    };
    let result = tokio::select! {
        r = result => r,
        r = reader => r,
    };
    if hub.detach(&id, &tx) {
        hub.with(|reg| ((), reg.disconnect(&id).into_iter().collect(), false));
    }
    result
}

/// The buffer a snapclient of a room is told: the room's latency (its chunks are stamped that
/// far before the instant they are heard), 100 ms when the room leaves it to the source.
fn buffer_of(hub: &Hub, settings: &Settings) -> i64 {
    let room = settings.zone.as_ref().and_then(|z| hub.zones().into_iter().find(|r| &r.name == z));
    room.and_then(|r| r.latency_ms).unwrap_or(100.0).round() as i64
}

/// The room a snapclient set as `settings` plays, subscribed to; `None` when it is in no room,
/// or its room plays nothing (yet).
async fn play(hub: &Hub, id: &str, settings: &Settings) -> Option<Playing> {
    let zone = settings.zone.clone()?;
    match hub.listen(&zone).await {
        Ok((room, _lead, blocks)) => {
            let buffer_ms = room.latency_ms.unwrap_or(100.0).round() as i64;
            tracing::info!("snapclient `{id}` plays room {zone} ({buffer_ms} ms)");
            Some(Playing { zone, blocks, format: None, buffer_ms })
        }
        Err(e) => {
            tracing::info!("snapclient `{id}`: {e}");
            None
        }
    }
}

async fn send(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    kind: u16,
    refers_to: u16,
    payload: &[u8],
) -> std::io::Result<()> {
    let m = Base { kind, refers_to, sent: now_tv(), ..Base::default() }.message(payload);
    w.write_all(&m).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_what_was_written() {
        let b = Base {
            kind: kind::TIME,
            id: 7,
            refers_to: 3,
            sent: Tv { sec: 12, usec: 345_678 },
            received: Tv { sec: -1, usec: 999_999 },
            size: 0,
        };
        let m = b.message(&[1, 2, 3]);
        assert_eq!(m.len(), BASE + 3);
        let back = Base::parse(m[..BASE].try_into().unwrap());
        assert_eq!(back, Base { size: 3, ..b });
        assert_eq!(Tv::from_micros(-1), Tv { sec: -1, usec: 999_999 });
        assert_eq!(Tv::from_micros(-1).micros(), -1);
    }

    #[test]
    fn a_hello_names_the_node_and_strange_ids_are_tamed() {
        let v = json!({ "ID": "00:21:6a:7d:74:fc", "Instance": 2, "HostName": "pi-kitchen",
                        "ClientName": "Snapclient", "Version": "0.26.0" });
        let h = Hello::parse(&v).unwrap();
        assert_eq!(h.id, "snapclient-00-21-6a-7d-74-fc-2");
        assert_eq!((h.host.as_str(), h.version.as_str()), ("pi-kitchen", "Snapclient 0.26.0"));
        assert!(Hello::parse(&json!({ "HostName": "x" })).is_none(), "no ID, no node");
        let long = Hello::parse(&json!({ "ID": "é/".repeat(100) })).unwrap();
        assert!(long.id.len() <= 11 + 64 && long.id.is_ascii(), "{}", long.id);
    }

    #[test]
    fn settings_say_latency_as_snapcast_means_it() {
        let s = Settings { volume: 40.4, mute: true, delay_ms: 12.0, ..Settings::default() };
        assert_eq!(
            server_settings(&s, 150),
            json!({ "bufferMs": 150, "latency": -12, "muted": true, "volume": 40 })
        );
        let p = pcm_codec_header(48_000, 2);
        assert_eq!(&p[..7], b"\x03\0\0\0pcm");
        assert_eq!(u32::from_le_bytes(p[7..11].try_into().unwrap()), 44);
        assert_eq!(&p[11..15], b"RIFF");
        assert_eq!(u32::from_le_bytes(p[35..39].try_into().unwrap()), 48_000, "rate");
        assert_eq!(u32::from_le_bytes(p[39..43].try_into().unwrap()), 192_000, "byte rate");
    }
}
