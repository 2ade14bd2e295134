//! Singing from a browser: a guest's phone is one more microphone of the party.
//!
//! The guest page captures the microphone (echo cancellation, noise suppression and automatic
//! gain off: the mixer wants the voice as it is) with an `AudioWorklet` and sends it over a
//! WebSocket as it comes, 16-bit mono PCM at 48 kHz in 2.5 ms blocks, each stamped with the
//! hub instant its first frame reached the page (the page keeps the hub's clock with pings, as
//! a listening page does). The hub fits a device clock through those stamps (as for a capture
//! device) and sends the voice on as a live stream of its own, named after the guest, to the
//! party host (a node of role `mixer`, `tutti party`) — exactly what `tutti party --to HOST
//! --mic` sends, so the host mixes it like any microphone, at the gain its host sets, and the
//! latency the host plays it at counts from the page: the way to the hub is inside it.
//! A block without a usable stamp (the page has no clock yet, or one a second off) is stamped
//! with its arrival less its length.
//!
//! | | |
//! | --- | --- |
//! | `GET /guest/sing` | WebSocket, a guest's cookie; `?host=ID` picks a party host (the first linked otherwise); `?hear=true`: headphones mode |
//!
//! Every singer is also a voice of the hub's choir (`choir.rs`): with `?hear=true` (or
//! the text `{"type":"hear","on":true}` later) the hub sends the singer, as binary messages
//! laid out as the listening relay's blocks, the mix of the other voices; a singer on
//! headphones needs no party host (without one and without `hear`, the socket closes with
//! 4001).
//!
//! The hub says `{"type":"hello","host":HOST_NAME|null,"name":NAME,"hears":BOOL}` once the
//! stream to the host runs, takes binary messages (little-endian `f64` the hub instant of the
//! first frame, µs, or NaN; then whole `i16` frames, at most [`MAX_FRAMES`]), answers `{"type":"ping","id":N}` with
//! `{"type":"pong","id":N,"hub_us":T}`, says each second `{"type":"stats","sent_frames":N,
//! "transit_ms":M,"transit_max_ms":X,"malformed":K,"voices":V,"mix_delay_ms":D,
//! "late_frames":L}` (the way from the page to the hub, median and worst, from the stamps; the
//! choir's size, how long after the voices it mixes, this voice's frames that came too late
//! for it), and closes with a reason (4001: no party host; 4003: the host sent the guest
//! away; 1011: the stream could not be started). A message that is not a stamp and whole
//! frames is counted (`malformed`) and dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tutti_audio::capture::{CaptureFeeder, CaptureSource};
use tutti_node::security::Keys;
use tutti_node::source::{Encoding, Input, RunningSource, run_source};
use tutti_proto::control::Event;
use tutti_proto::source::SourceConfig;
use tutti_proto::{Codec, LocalTime, Mode, Nanos};

use crate::Hub;
use crate::listen::say_and_close;

/// The sample rate a page sends.
pub const RATE: u32 = 48_000;
/// The most frames one message may hold (100 ms).
pub const MAX_FRAMES: usize = 4_800;
/// Frames per packet to the host (2.5 ms, as `tutti party --mic`).
const FRAMES_PER_PACKET: u16 = 120;
/// A message's stamp: `f64`, µs of the hub's clock.
const STAMP: usize = 8;
/// How far a page's stamp may be from the block's arrival before it is not believed.
const STAMP_TRUSTED: Nanos = Nanos::from_secs(1);

/// A block from the page: the local instant its first frame reached the page, and how long
/// the rest of the way to the hub took (when the page said), or nothing (malformed).
fn block(message: &[u8], now: LocalTime, pcm: &mut Vec<f32>) -> Option<(LocalTime, Option<Nanos>)> {
    let (stamp, frames) = message.split_first_chunk::<STAMP>()?;
    if frames.is_empty() || frames.len() % 2 != 0 || frames.len() > MAX_FRAMES * 2 {
        return None;
    }
    pcm.clear();
    pcm.extend(
        frames.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0),
    );
    let length = Nanos::from_frames(pcm.len() as u64, RATE);
    let said = f64::from_le_bytes(*stamp);
    let said = (said.is_finite() && said >= 0.0).then(|| LocalTime((said * 1e3).round() as u64));
    // The last frame reached the page at `said + length`; the hub has it `now`.
    match said.map(|s| (s, now - (s + length))) {
        Some((s, transit)) if transit.abs() < STAMP_TRUSTED => Some((s, Some(transit))),
        _ => Some((now - length, None)),
    }
}

#[derive(Deserialize)]
pub(crate) struct SingQuery {
    host: Option<String>,
    /// Headphones mode: the hub sends the others' mix back.
    hear: Option<bool>,
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
    ws.max_message_size(STAMP + MAX_FRAMES * 2)
        .on_upgrade(move |socket| serve(hub, guest.id, guest.name, q, socket))
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

/// What a page may say besides its blocks: `{"type":"hear","on":BOOL}` (headphones mode).
#[derive(Deserialize)]
struct Hear {
    #[serde(rename = "type")]
    kind: String,
    on: bool,
}

/// The next block of the others' mix, or never (not listening).
async fn next_heard(heard: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match heard {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One singer's socket.
async fn serve(hub: Hub, id: String, name: String, q: SingQuery, mut socket: WebSocket) {
    let mut changes = hub.subscribe_changes();
    let hear = q.hear.unwrap_or(false);
    // The party host, if there is one: without one, only singing into the choir (everyone
    // on headphones) is possible.
    let (host_name, mut stream) = match hub.party_host(q.host.as_deref()) {
        Some((host, at, security)) => match start(&name, at, Keys::from(security)) {
            Ok(s) => {
                tracing::info!("guest {name} ({id}) sings into {host} at {at}");
                let n = hub.nodes().into_iter().find(|n| n.info.id == host);
                (Some(n.map_or(host, |n| n.info.name)), Some(s))
            }
            Err(e) => {
                let m = format!("cannot sing: {e}");
                return say_and_close(&mut socket, 1011, "cannot sing", &m).await;
            }
        },
        None if hear => (None, None),
        None => {
            let m = "no party host to sing into: start `tutti party` (a host) on this network,                      or sing with the others on headphones";
            return say_and_close(&mut socket, 4001, "cannot sing", m).await;
        }
    };
    let (seat, mut heard) = hub.choir().join(hear);
    tracing::info!("guest {name} ({id}) joins the choir (hears the others: {hear})");
    let hello = json!({"type": "hello", "host": host_name, "name": name, "hears": hear});
    let _ = socket.send(Message::Text(hello.to_string().into())).await;
    let mut pcm = Vec::with_capacity(MAX_FRAMES);
    let mut transits: Vec<Nanos> = Vec::with_capacity(1024);
    let mut malformed = 0u64;
    let mut report = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let now = tutti_audio::clock::now();
                    match block(&b, now, &mut pcm) {
                        Some((first, transit)) => {
                            if let Some((feeder, _)) = stream.as_mut() {
                                feeder.push(&pcm, first);
                            }
                            seat.sing(first, &pcm, now);
                            if let Some(t) = transit.filter(|_| transits.len() < 4096) {
                                transits.push(t);
                            }
                        }
                        None => malformed += 1,
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(pong) = crate::listen::pong(&t) {
                        if socket.send(pong).await.is_err() {
                            break;
                        }
                    } else if let Ok(h) = serde_json::from_str::<Hear>(&t)
                        && h.kind == "hear"
                    {
                        heard = seat.hear(h.on);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            Some(b) = next_heard(&mut heard) => {
                if socket.send(Message::Binary(b)).await.is_err() {
                    break;
                }
            }
            _ = report.tick() => {
                let sent = stream.as_ref().map_or(0, |(_, s)| s.progress.frames.load(Ordering::Relaxed));
                let said: Vec<String> = stream
                    .as_ref()
                    .and_then(|(_, s)| s.progress.events.lock().ok().map(|mut e| e.drain(..).map(|e| e.to_string()).collect()))
                    .unwrap_or_default();
                for e in said {
                    tracing::info!("guest {name} singing: {e}");
                }
                transits.sort_unstable();
                let ms = |t: Option<&Nanos>| t.map(|t| t.0 as f64 / 1e6);
                let choir = seat.stats();
                let stats = json!({
                    "type": "stats",
                    "sent_frames": sent,
                    "transit_ms": ms(transits.get(transits.len() / 2)),
                    "transit_max_ms": ms(transits.last()),
                    "malformed": malformed,
                    "voices": choir.voices,
                    "mix_delay_ms": choir.delay.0 as f64 / 1e6,
                    "late_frames": choir.late_frames,
                });
                transits.clear();
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
    drop(seat);
    // Stopping joins the stream's threads: not on the async threads.
    if let Some((_, source)) = stream.take() {
        let _ = tokio::task::spawn_blocking(move || source.stop()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(stamp_us: f64, frames: &[i16]) -> Vec<u8> {
        let mut m = stamp_us.to_le_bytes().to_vec();
        m.extend(frames.iter().flat_map(|f| f.to_le_bytes()));
        m
    }

    #[test]
    fn a_block_counts_from_the_page_when_the_page_says_and_is_believable() {
        let mut pcm = Vec::new();
        let now = LocalTime(100_000_000_000);
        let length = Nanos::from_frames(120, RATE);
        // Reached the page 3 ms before the hub had its last frame.
        let said = (now - length - Nanos::from_millis(3)).0 as f64 / 1e3;
        let (first, transit) = block(&message(said, &[16_384; 120]), now, &mut pcm).unwrap();
        assert_eq!(first, now - length - Nanos::from_millis(3));
        assert_eq!(transit, Some(Nanos::from_millis(3)));
        assert_eq!(pcm, vec![0.5; 120]);
        // No clock yet (NaN), or a clock a minute off: its arrival less its length.
        for said in [f64::NAN, said - 60e6, f64::INFINITY] {
            let (first, transit) = block(&message(said, &[0; 120]), now, &mut pcm).unwrap();
            assert_eq!((first, transit), (now - length, None), "{said}");
        }
    }

    #[test]
    fn a_message_that_is_not_a_stamp_and_whole_frames_is_dropped() {
        let mut pcm = Vec::new();
        let now = LocalTime(100_000_000_000);
        let mut odd = message(0.0, &[1, 2]);
        odd.push(7);
        for bad in
            [vec![], vec![0u8; 7], message(0.0, &[]), odd, message(0.0, &vec![0; MAX_FRAMES + 1])]
        {
            assert!(block(&bad, now, &mut pcm).is_none(), "{} bytes", bad.len());
        }
    }
}
