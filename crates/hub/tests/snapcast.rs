//! Snapcast's JSON-RPC control API on the hub, spoken as a Snapcast app speaks it: raw TCP
//! (`\r\n`-ended JSON), `POST /jsonrpc` and the `/jsonrpc` WebSocket, with nodes on the hub's
//! link receiving what each call changes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tutti_hub::HubConfig;
use tutti_hub::snapcast::SnapcastSetup;

mod common;
use common::{ADMIN, bearer, http, raw_http, until};
use tutti_proto::NetworkKey;
use tutti_proto::control::{Command, NodeInfo, NodeState, Settings, Track};

#[derive(Clone, Default)]
struct Node {
    commands: Arc<Mutex<Vec<Command>>>,
    source: bool,
}

impl tutti_node::hub::HubHandler for Node {
    fn state(&mut self) -> NodeState {
        let track = self.source.then(|| Track {
            title: Some("Soul Town".into()),
            artist: Some("Passport".into()),
            transport: "playing".into(),
            ..Track::default()
        });
        NodeState { streaming: true, stream: Some("lab".into()), track, ..NodeState::default() }
    }
    fn settings(&mut self, _: &Settings) {}
    fn command(&mut self, c: &Command) {
        self.commands.lock().unwrap().push(c.clone());
    }
}

impl Node {
    fn saw(&self, f: impl Fn(&Command) -> bool) -> bool {
        self.commands.lock().unwrap().iter().any(f)
    }
}

fn key() -> NetworkKey {
    NetworkKey::from_bytes([7; 32])
}

fn info(id: &str, role: &str, port: u16, capabilities: &[&str]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        name: id.into(),
        role: role.into(),
        device: "null".into(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        address: format!("127.0.0.1:{port}"),
        streams: Vec::new(),
        version: "test".into(),
    }
}

/// A Snapcast app on the TCP port.
struct App {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
    next: u64,
    /// Notifications read while waiting for an answer.
    notes: Vec<Value>,
}

impl App {
    async fn connect(addr: std::net::SocketAddr) -> App {
        let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
        App { lines: BufReader::new(read).lines(), write, next: 0, notes: Vec::new() }
    }

    async fn send(&mut self, text: &str) {
        self.write.write_all(format!("{text}\r\n").as_bytes()).await.unwrap();
    }

    async fn message(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("a message within 5 s")
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Calls `method`; the whole reply (result or error).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let request = json!({ "id": id, "jsonrpc": "2.0", "method": method, "params": params });
        self.send(&request.to_string()).await;
        loop {
            let m = self.message().await.expect("an answer");
            if m["id"] == json!(id) {
                return m;
            }
            self.notes.push(m);
        }
    }

    /// Waits for notification `method` (read before or now); its params.
    async fn note(&mut self, method: &str) -> Value {
        let t = Instant::now();
        loop {
            if let Some(i) = self.notes.iter().position(|n| n["method"] == method) {
                return self.notes.remove(i)["params"].clone();
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no {method}: {:?}", self.notes);
            let m = self.message().await.expect("a notification");
            self.notes.push(m);
        }
    }

    /// What arrives within `d` (nothing should, for the session that made a change).
    async fn quiet_for(&mut self, d: Duration) -> Vec<Value> {
        let mut got = std::mem::take(&mut self.notes);
        let end = tokio::time::Instant::now() + d;
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(end, self.lines.next_line()).await {
            got.push(serde_json::from_str(&line).unwrap());
        }
        got
    }
}

/// The next message on a `/jsonrpc` WebSocket that `wanted` (within 5 s each).
async fn next_where(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if wanted(&v) {
            return v;
        }
    }
}

fn group_of<'a>(server: &'a Value, client: &str) -> &'a Value {
    server["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["clients"].as_array().unwrap().iter().any(|c| c["id"] == client))
        .unwrap_or_else(|| panic!("no group has {client}: {server}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapcast_apps_list_and_steer_zones_players_and_sources() {
    let snapcast = SnapcastSetup { listen: "127.0.0.1:0".parse().unwrap(), allow: Vec::new() };
    let h =
        common::start(HubConfig { key: Some(key()), snapcast: Some(snapcast), ..common::config() })
            .await;
    let rpc = h.snapcast.expect("the Snapcast listener");
    let player_caps = ["volume", "mute", "delay", "resync", "identify"];
    let (kitchen, den, radio) =
        (Node::default(), Node::default(), Node { source: true, ..Node::default() });
    let mut links = Vec::new();
    for (node, info) in [
        (&kitchen, info("kitchen", "player", 7401, &player_caps)),
        (&den, info("den", "player", 7402, &player_caps)),
        (&radio, info("radio", "source", 7400, &["start", "pause", "stop", "skip"])),
    ] {
        links.push(
            tutti_node::hub::HubLink::spawn(
                h.link,
                info,
                key(),
                Duration::from_millis(100),
                node.clone(),
            )
            .unwrap(),
        );
    }
    let mut a = App::connect(rpc).await;
    let mut b = App::connect(rpc).await;
    // Every answer ends in \r\n (the `snapcast` library waits for it).
    a.write
        .write_all(b"{\"id\":0,\"jsonrpc\":\"2.0\",\"method\":\"Server.GetRPCVersion\"}\r\n")
        .await
        .unwrap();
    // Notifications of the nodes joining may come first; every message ends in \r\n.
    let read = a.lines.get_mut();
    let v: Value = loop {
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), read.read_until(b'\n', &mut raw))
            .await
            .unwrap()
            .unwrap();
        assert!(raw.ends_with(b"\r\n"), "{:?}", String::from_utf8_lossy(&raw));
        let v: Value = serde_json::from_slice(&raw).unwrap();
        if v["id"] == 0 {
            break v;
        }
    };
    assert_eq!(v["result"], json!({ "major": 2, "minor": 0, "patch": 0 }));
    // Both players and the source are listed: each player a group of its own until zoned.
    let mut server = Value::Null;
    for _ in 0..100 {
        server = a.call("Server.GetStatus", json!({})).await["result"]["server"].clone();
        let streams = server["streams"].as_array().unwrap();
        let has_track = streams.iter().any(|s| s["properties"]["metadata"]["title"] == "Soul Town");
        if server["groups"].as_array().unwrap().len() == 2 && has_track {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server["server"]["snapserver"]["version"], "0.28.0", "{server}");
    assert_eq!(group_of(&server, "kitchen")["id"], "player:kitchen", "{server}");
    assert_eq!(group_of(&server, "den")["stream_id"], "none", "{server}");
    let radio_stream =
        server["streams"].as_array().unwrap().iter().find(|s| s["id"] == "radio").unwrap();
    assert_eq!(radio_stream["status"], "playing");
    assert_eq!(radio_stream["uri"]["query"]["name"], "radio");
    assert_eq!(radio_stream["properties"]["canGoNext"], true);
    // What `b` was told before its own look (the nodes joining) is not this test's.
    let _ = b.call("Server.GetStatus", json!({})).await;
    b.notes.clear();
    a.notes.clear();

    // Group the two (HA's "join"): a room named after the first player, both in it.
    let r = a
        .call("Group.SetClients", json!({ "id": "player:kitchen", "clients": ["kitchen", "den"] }))
        .await;
    let group = group_of(&r["result"]["server"], "den").clone();
    assert_eq!(group["id"], "kitchen", "{r}");
    assert_eq!(group["clients"].as_array().unwrap().len(), 2, "{r}");
    let update = b.note("Server.OnUpdate").await;
    assert_eq!(group_of(&update["server"], "kitchen")["id"], "kitchen");
    let (_, zones) = http(h.http, "GET", "/api/zones", None).await;
    assert!(zones.contains("\"name\":\"kitchen\""), "{zones}");

    // The room plays the radio: both players are routed to the source's address.
    let r = a.call("Group.SetStream", json!({ "id": "kitchen", "stream_id": "radio" })).await;
    assert_eq!(r["result"], json!({ "stream_id": "radio" }), "{r}");
    let changed = b.note("Group.OnStreamChanged").await;
    assert_eq!(changed, json!({ "id": "kitchen", "stream_id": "radio" }));
    for node in [&kitchen, &den] {
        until("the route", || {
            node.saw(|c| matches!(c, Command::Route { source, .. } if source == "127.0.0.1:7400"))
        })
        .await;
    }

    // A volume: the node obeys, the other app is told, the caller only answered.
    let r = a
        .call(
            "Client.SetVolume",
            json!({ "id": "den", "volume": { "muted": false, "percent": 30 } }),
        )
        .await;
    assert_eq!(r["result"], json!({ "volume": { "muted": false, "percent": 30 } }), "{r}");
    until("the volume", || {
        den.saw(|c| matches!(c, Command::Volume { percent, .. } if *percent == 30.0))
    })
    .await;
    let v = b.note("Client.OnVolumeChanged").await;
    assert_eq!(v, json!({ "id": "den", "volume": { "muted": false, "percent": 30 } }));
    // Only the percent: the mute stays.
    let r = a.call("Client.SetVolume", json!({ "id": "den", "volume": { "percent": 45 } })).await;
    assert_eq!(r["result"]["volume"], json!({ "muted": false, "percent": 45 }), "{r}");
    let own = a.quiet_for(Duration::from_millis(1500)).await;
    assert!(own.is_empty(), "the caller was notified of its own change: {own:?}");

    // A change from the API reaches both apps; Snapcast's latency is minus Tutti's delay.
    let (status, body) =
        http(h.http, "PATCH", "/api/nodes/kitchen", Some("{\"delay_ms\":12}")).await;
    assert_eq!(status, 200, "{body}");
    for app in [&mut a, &mut b] {
        assert_eq!(
            app.note("Client.OnLatencyChanged").await,
            json!({ "id": "kitchen", "latency": -12 })
        );
    }
    let r = a.call("Client.SetLatency", json!({ "id": "kitchen", "latency": 20 })).await;
    assert_eq!(r["result"], json!({ "latency": 20 }), "{r}");
    until("the delay", || kitchen.saw(|c| *c == Command::Delay { ms: -20.0 })).await;
    assert_eq!(b.note("Client.OnLatencyChanged").await, json!({ "id": "kitchen", "latency": 20 }));

    // A name, a group mute (every player of the room), a room's new name.
    let r = a.call("Client.SetName", json!({ "id": "den", "name": "Den" })).await;
    assert_eq!(r["result"], json!({ "name": "Den" }), "{r}");
    assert_eq!(b.note("Client.OnNameChanged").await, json!({ "id": "den", "name": "Den" }));
    let r = a.call("Group.SetMute", json!({ "id": "kitchen", "mute": true })).await;
    assert_eq!(r["result"], json!({ "mute": true }), "{r}");
    for node in [&kitchen, &den] {
        until("the mute", || node.saw(|c| matches!(c, Command::Mute { mute: true, .. }))).await;
    }
    assert_eq!(b.note("Group.OnMute").await, json!({ "id": "kitchen", "mute": true }));
    let r = a.call("Group.SetName", json!({ "id": "kitchen", "name": "downstairs" })).await;
    assert_eq!(r["result"], json!({ "name": "downstairs" }), "{r}");
    let update = b.note("Server.OnUpdate").await;
    let g = group_of(&update["server"], "den");
    assert_eq!((&g["id"], &g["stream_id"]), (&json!("downstairs"), &json!("radio")), "{update}");
    let (_, zones) = http(h.http, "GET", "/api/zones", None).await;
    assert!(zones.contains("downstairs") && !zones.contains("\"name\":\"kitchen\""), "{zones}");

    // Transport: the source skips.
    let r =
        a.call("Stream.Control", json!({ "id": "radio", "command": "next", "params": {} })).await;
    assert_eq!(r["result"], "ok", "{r}");
    until("the skip", || radio.saw(|c| *c == Command::Skip)).await;

    // Taking a player out of the room: a group of its own again.
    let r = a.call("Group.SetClients", json!({ "id": "downstairs", "clients": ["kitchen"] })).await;
    assert_eq!(group_of(&r["result"]["server"], "den")["id"], "player:den", "{r}");

    // Bad calls are answered with what is wrong, and the session goes on.
    let r = a.call("Client.SetVolume", json!({ "id": "attic", "volume": { "percent": 3 } })).await;
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"].as_str().unwrap().contains("no client `attic`"), "{r}");
    let r = a.call("Client.SetVolume", json!({ "id": "den", "volume": { "percent": 300 } })).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("percent"), "{r}");
    let r = a.call("Client.SetLatency", json!({ "id": "den" })).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("latency"), "{r}");
    let r = a.call("Stream.AddStream", json!({ "streamUri": "pipe:///tmp/x" })).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = a.call("Nope.Nothing", json!({})).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    a.send("{not json").await;
    let m = loop {
        let m = a.message().await.unwrap();
        if m.get("error").is_some() {
            break m;
        }
    };
    assert_eq!(m["error"]["code"], -32700, "{m}");
    // A batch is answered as a batch.
    a.send(r#"[{"id":"x","jsonrpc":"2.0","method":"Server.GetRPCVersion"},{"id":"y","jsonrpc":"2.0","method":"Group.GetStatus","params":{"id":"downstairs"}}]"#).await;
    let batch = loop {
        let m = a.message().await.unwrap();
        if m.is_array() {
            break m;
        }
    };
    assert_eq!(batch[0]["id"], "x");
    assert_eq!(batch[1]["result"]["group"]["id"], "downstairs", "{batch}");
    // A line longer than any message ends the connection (nothing unbounded is kept).
    let long = format!("{{\"id\":1,\"method\":\"{}\"}}", "x".repeat(70_000));
    let _ = a.write.write_all(long.as_bytes()).await;
    let _ = a.write.write_all(b"\r\n").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.lines.next_line().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a 70 kB line did not close the connection");

    // Over HTTP: POST /jsonrpc with the admin token; the read-only token may look, not change.
    let body = r#"{"id":1,"jsonrpc":"2.0","method":"Client.GetStatus","params":{"id":"den"}}"#;
    let (status, body) = http(h.http, "POST", "/jsonrpc", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["client"]["config"]["name"], "Den", "{v}");
    let (status, _, _) = raw_http(h.http, "POST /jsonrpc", "", body.as_str()).await;
    assert_eq!(status, 401, "no token, no answer");
    let read = h.hub.api_tokens().1;
    let (status, _, _) = raw_http(h.http, "POST /jsonrpc", &bearer(&read), "{}").await;
    assert_eq!(status, 403);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/jsonrpc?token={read}", h.http))
            .await
            .expect("websocket");
    let ask = json!({ "id": 5, "jsonrpc": "2.0", "method": "Client.SetVolume",
                      "params": { "id": "den", "volume": { "percent": 1 } } });
    ws.send(tokio_tungstenite::tungstenite::Message::Text(ask.to_string().into())).await.unwrap();
    let reply = next_where(&mut ws, |v| v["id"] == 5).await;
    assert!(reply["error"]["message"].as_str().unwrap().contains("read-only"), "{reply}");
    // The WebSocket is a session: a change from elsewhere is notified on it.
    let (status, _) = http(h.http, "PATCH", "/api/nodes/den", Some("{\"volume\":66}")).await;
    assert_eq!(status, 200);
    let note = next_where(&mut ws, |v| v["method"] == "Client.OnVolumeChanged").await;
    assert_eq!(note["params"]["volume"]["percent"], 66, "{note}");
    for l in links {
        l.stop();
    }
    h.stop();
    let _ = ADMIN;
}
