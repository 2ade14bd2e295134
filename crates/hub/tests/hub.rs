//! The hub for real: its HTTP API and WebSocket over TCP on loopback, nodes on its link
//! (the node side is `tutti_node::hub::HubLink`, the one `tutti play --hub` runs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_hub::{HubConfig, RunningHub};

mod common;
use common::{ADMIN, http, until};
use tutti_proto::NetworkKey;
use tutti_proto::control::{Command, LinkMessage, NodeInfo, NodeState, Settings, from_hex, to_hex};

async fn hub(state: Option<std::path::PathBuf>) -> RunningHub {
    let key = Some(key("living room party"));
    common::start(HubConfig { state_file: state, key, ..common::config() }).await
}

fn key(pass: &str) -> NetworkKey {
    NetworkKey::from_bytes(*blake(pass))
}

/// 32 bytes from a string (tests need distinct keys, not slow passphrase hashing).
fn blake(s: &str) -> Box<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, b) in s.bytes().enumerate() {
        out[i % 32] ^= b.wrapping_mul(31).wrapping_add(i as u8);
    }
    Box::new(out)
}

#[derive(Clone, Default)]
struct Seen {
    settings: Arc<Mutex<Vec<Settings>>>,
    commands: Arc<Mutex<Vec<(Instant, Command)>>>,
}

impl tutti_node::hub::HubHandler for Seen {
    fn state(&mut self) -> NodeState {
        NodeState { streaming: true, offset_us: Some(1.5), ..NodeState::default() }
    }
    fn settings(&mut self, s: &Settings) {
        self.settings.lock().unwrap().push(s.clone());
    }
    fn command(&mut self, c: &Command) {
        self.commands.lock().unwrap().push((Instant::now(), c.clone()));
    }
}

fn info(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        name: format!("{id} speaker"),
        role: "player".into(),
        device: "null".into(),
        capabilities: vec!["volume".into(), "mute".into(), "delay".into()],
        address: "127.0.0.1:7401".into(),
        streams: Vec::new(),
        version: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_report_and_obey_within_100_ms() {
    let h = hub(None).await;
    let mut events =
        tokio_tungstenite::connect_async(format!("ws://{}/api/events?token={ADMIN}", h.http))
            .await
            .expect("websocket")
            .0;
    let seen = Seen::default();
    let link = tutti_node::hub::HubLink::spawn(
        h.link,
        info("kitchen"),
        key("living room party"),
        Duration::from_millis(100),
        seen.clone(),
    )
    .unwrap();
    until("the node's welcome", || !seen.settings.lock().unwrap().is_empty()).await;
    // The WebSocket tells of the node.
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap();
    let text = first.unwrap().unwrap().into_text().unwrap().to_string();
    assert!(text.contains("node_online") && text.contains("kitchen"), "{text}");
    // The API lists it with the state it reported.
    let mut listed = String::new();
    for _ in 0..50 {
        listed = http(h.http, "GET", "/api/nodes", None).await.1;
        if listed.contains("offset_us") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed.contains("\"online\":true") && listed.contains("\"offset_us\":1.5"), "{listed}");
    // A volume change reaches the node within 100 ms, measured at the node.
    let mut lags = Vec::new();
    for (i, v) in [40.0, 55.5, 70.0, 12.0, 99.0].iter().enumerate() {
        let t = Instant::now();
        let (status, body) =
            http(h.http, "PATCH", "/api/nodes/kitchen", Some(&format!("{{\"volume\":{v}}}"))).await;
        assert_eq!(status, 200, "{body}");
        until("the command", || seen.commands.lock().unwrap().len() > i).await;
        let (at, c) = seen.commands.lock().unwrap()[i].clone();
        assert_eq!(c, Command::Volume { percent: *v, at: None });
        lags.push(at - t);
    }
    lags.sort();
    eprintln!("API → node command latency: median {:?}, max {:?}", lags[2], lags[4]);
    assert!(lags[4] < Duration::from_millis(100), "{lags:?}");
    // Bad requests are named, not guessed at.
    let (status, body) =
        http(h.http, "PATCH", "/api/nodes/kitchen", Some("{\"volume\":400}")).await;
    assert_eq!(status, 422);
    assert!(body.contains("\"error\":\"invalid\"") && body.contains("volume"), "{body}");
    let (status, body) = http(h.http, "PATCH", "/api/nodes/kitchen", Some("{\"volum\":4}")).await;
    assert_eq!(status, 400);
    assert!(body.contains("volum"), "{body}");
    let (status, body) = http(h.http, "GET", "/api/nodes/attic", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("no_such_node"), "{body}");
    let (status, body) =
        http(h.http, "POST", "/api/nodes/kitchen/command", Some("{\"kind\":\"identify\"}")).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = http(h.http, "GET", "/api/openapi.json", None).await;
    assert!(status == 200 && body.contains("\"openapi\":\"3.0.3\""), "{body}");
    // The node leaves: lost, not forgotten.
    link.stop();
    until("the node marked lost", || {
        let h2 = h.hub.clone();
        h2.with(|r| (r.nodes(Instant::now()).iter().any(|n| !n.online), vec![], false))
    })
    .await;
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_without_the_key_is_refused() {
    let h = hub(None).await;
    let mut s = tokio::net::TcpStream::connect(h.link).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let challenge: LinkMessage = serde_json_line(&buf[..n]);
    let LinkMessage::Challenge { nonce } = challenge else { panic!("{challenge:?}") };
    let (_, first) = tutti_proto::link::Opening::start(
        &key("guessing").link_psk(),
        &from_hex(&nonce).unwrap(),
        None,
    )
    .unwrap();
    let open = LinkMessage::Open { paired: None, noise: to_hex(&first) };
    let mut line = serde_json::to_vec(&open).unwrap();
    line.push(b'\n');
    s.write_all(&line).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let reply: LinkMessage = serde_json_line(&buf[..n]);
    assert!(
        matches!(&reply, LinkMessage::Refused { message } if message.contains("network key")),
        "{reply:?}"
    );
    let (_, listed) = http(h.http, "GET", "/api/nodes", None).await;
    assert_eq!(listed, "[]");
    h.stop();
}

fn serde_json_line(bytes: &[u8]) -> LinkMessage {
    let text = String::from_utf8_lossy(bytes);
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_zones_survive_a_hub_restart() {
    let dir = std::env::temp_dir().join(format!("tutti-hub-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("hub.json");
    let h = hub(Some(state.clone())).await;
    let seen = Seen::default();
    let link = tutti_node::hub::HubLink::spawn(
        h.link,
        info("den"),
        key("living room party"),
        Duration::from_millis(100),
        seen.clone(),
    )
    .unwrap();
    until("the node", || !seen.settings.lock().unwrap().is_empty()).await;
    let (status, body) = http(
        h.http,
        "PATCH",
        "/api/nodes/den",
        Some("{\"volume\":35,\"delay_ms\":-20,\"zone\":\"upstairs\",\"name\":\"Den\"}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        http(h.http, "PUT", "/api/zones/upstairs", Some("{\"latency_ms\":150}")).await;
    assert_eq!(status, 200);
    link.stop();
    h.stop();
    // A new hub on the same file: the node is listed (lost) with its settings, and gets them
    // back when it reconnects.
    let h = hub(Some(state)).await;
    let (_, listed) = http(h.http, "GET", "/api/nodes", None).await;
    assert!(listed.contains("\"name\":\"Den\"") && listed.contains("\"online\":false"), "{listed}");
    let (_, zones) = http(h.http, "GET", "/grouping", None).await;
    assert!(zones.contains("\"latency_ms\":150.0"), "{zones}");
    let again = Seen::default();
    let link = tutti_node::hub::HubLink::spawn(
        h.link,
        info("den"),
        key("living room party"),
        Duration::from_millis(100),
        again.clone(),
    )
    .unwrap();
    until("the node back", || !again.settings.lock().unwrap().is_empty()).await;
    let s = again.settings.lock().unwrap()[0].clone();
    assert_eq!((s.volume, s.delay_ms, s.zone.as_deref()), (35.0, -20.0, Some("upstairs")));
    link.stop();
    h.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_map_lists_each_nodes_minutes() {
    let h = hub(None).await;
    let _link = tutti_node::hub::HubLink::spawn(
        h.link,
        info("porch"),
        key("living room party"),
        Duration::from_millis(50),
        Seen::default(),
    )
    .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        body = http(h.http, "GET", "/api/health", None).await.1;
        if body.contains("\"reports\":3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
    let minute = &v["porch"][0];
    assert_eq!(minute["ago_min"], 0, "{body}");
    assert_eq!(
        (minute["offset_min_us"].as_f64(), minute["offset_max_us"].as_f64()),
        (Some(1.5), Some(1.5)),
        "{body}"
    );
    assert_eq!(minute["concealed"], 0, "{body}");
}
