//! Singing from a browser: a guest's phone is one more microphone of the party.
//!
//! The guest page captures the microphone (echo cancellation, noise suppression and automatic
//! gain off: the mixer wants the voice as it is) with an `AudioWorklet` and sends it over a
//! WebSocket as it comes, 16-bit mono PCM at 48 kHz in 2.5 ms blocks. The hub stamps each
//! block with its arrival (a device's clock is fitted through the stamps, as for a capture
//! device) and sends it on as a live stream of its own, named after the guest, to the party
//! host (a node of role `mixer`, `tutti party`) — exactly what `tutti party --to HOST --mic`
//! sends, so the host mixes it like any microphone, at the gain its host sets.
//!
//! | | |
//! | --- | --- |
//! | `GET /guest/sing` | WebSocket, a guest's cookie; `?host=ID` picks a party host (the first linked otherwise) |
//!
//! The hub says `{"type":"hello","host":HOST_NAME,"name":NAME}` once the stream to the host runs,
//! takes binary messages of whole frames (at most [`MAX_FRAMES`] each), and closes with a
//! reason (4001: no party host; 4003: the host sent the guest away; 1011: the stream could not
//! be started).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tutti_audio::capture::{CaptureFeeder, CaptureSource};
use tutti_node::security::Keys;
use tutti_node::source::{Encoding, Input, RunningSource, run_source};
use tutti_proto::control::Event;
use tutti_proto::source::SourceConfig;
use tutti_proto::{Codec, Mode, Nanos};

use crate::Hub;
use crate::listen::say_and_close;

/// The sample rate a page sends.
pub const RATE: u32 = 48_000;
/// The most frames one message may hold (100 ms).
pub const MAX_FRAMES: usize = 4_800;
/// Frames per packet to the host (2.5 ms, as `tutti party --mic`).
const FRAMES_PER_PACKET: u16 = 120;

#[derive(Deserialize)]
pub(crate) struct SingQuery {
    host: Option<String>,
}

/// `GET /guest/sing` (a guest's cookie).
pub(crate) async fn guest_sing(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Query(q): Query<SingQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let guest = match crate::guests::guest_socket(&hub, &headers) {
        Ok(g) => g,
        Err(refused) => return refused.into_response(),
    };
    ws.max_message_size(MAX_FRAMES * 2 + 64)
        .on_upgrade(move |socket| serve(hub, guest.id, guest.name, q.host, socket))
}

/// Starts the live stream to `at` whose input the returned feeder fills.
fn start(name: &str, at: SocketAddr, keys: Keys) -> Result<(CaptureFeeder, RunningSource), String> {
    let (feeder, capture) = CaptureSource::pushed(name, RATE, 1);
    let mut c = SourceConfig::new(1, RATE, 1);
    c.mode = Mode::Live;
    c.name = name.chars().take(64).collect();
    c.format.codec = Codec::Pcm16;
    c.format.frames_per_packet = FRAMES_PER_PACKET;
    c.group_latency = Nanos::ZERO;
    c.fec = None;
    c.receivers = vec![at];
    let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
    let start = tutti_audio::clock::now() + Nanos::from_millis(50);
    let encoding = Encoding { codec: Codec::Pcm16, bitrate: 96_000 };
    let src = run_source(Input::Captured(Box::new(capture)), c, encoding, bind, keys, Some(start))
        .map_err(|e| e.to_string())?;
    Ok((feeder, src))
}

/// One singer's socket.
async fn serve(hub: Hub, id: String, name: String, host: Option<String>, mut socket: WebSocket) {
    let mut changes = hub.subscribe_changes();
    let Some((host, at, security)) = hub.party_host(host.as_deref()) else {
        let m = "no party host to sing into: start `tutti party` (a host) on this network";
        return say_and_close(&mut socket, 4001, "cannot sing", m).await;
    };
    let (mut feeder, source) = match start(&name, at, Keys::from(security)) {
        Ok(s) => s,
        Err(e) => {
            let m = format!("cannot sing: {e}");
            return say_and_close(&mut socket, 1011, "cannot sing", &m).await;
        }
    };
    tracing::info!("guest {name} ({id}) sings into {host} at {at}");
    let host_name =
        hub.nodes().into_iter().find(|n| n.info.id == host).map_or(host, |n| n.info.name);
    let hello = json!({"type": "hello", "host": host_name, "name": name});
    let _ = socket.send(Message::Text(hello.to_string().into())).await;
    let mut pcm = Vec::with_capacity(MAX_FRAMES);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let now = tutti_audio::clock::now();
                    pcm.clear();
                    pcm.extend(
                        b.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0),
                    );
                    // Its first frame was captured a block's length before it arrived.
                    let frames = pcm.len() as u64;
                    feeder.push(&pcm, now - Nanos::from_frames(frames, RATE));
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = report.tick() => {
                let sent = source.progress.frames.load(Ordering::Relaxed);
                let said: Vec<String> = source
                    .progress
                    .events
                    .lock()
                    .map(|mut e| e.drain(..).map(|e| e.to_string()).collect())
                    .unwrap_or_default();
                for e in said {
                    tracing::info!("guest {name} singing: {e}");
                }
                let stats = json!({"type": "stats", "sent_frames": sent});
                if socket.send(Message::Text(stats.to_string().into())).await.is_err() {
                    break;
                }
            }
            e = changes.recv() => match e {
                Ok(Event::Guests { guests }) if !guests.iter().any(|g| g.id == id) => {
                    let away = "the host sent you away";
                    say_and_close(&mut socket, 4003, away, away).await;
                    break;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    tracing::info!("guest {name} ({id}) stopped singing");
    // Stopping joins the stream's threads: not on the async threads.
    let _ = tokio::task::spawn_blocking(move || source.stop()).await;
}
