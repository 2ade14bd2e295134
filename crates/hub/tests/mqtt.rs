//! The hub's MQTT tree for real: against its embedded broker (rumqttd) and against Mosquitto,
//! with a node on the hub's link (the `tutti play --hub` side) and an MQTT client doing what
//! `mosquitto_sub` / `mosquitto_pub` would.

use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tutti_hub::mqtt::BrokerAddr;
mod common;
use common::until;
use tutti_hub::{HubConfig, MqttSetup, RunningHub};
use tutti_proto::NetworkKey;
use tutti_proto::control::{Command, NodeInfo, NodeState, Settings};

fn key() -> NetworkKey {
    NetworkKey::from_bytes([7; 32])
}

async fn hub(mqtt: MqttSetup) -> RunningHub {
    common::start(HubConfig { key: Some(key()), mqtt: Some(mqtt), ..common::config() }).await
}

#[derive(Clone, Default)]
struct Seen {
    commands: Arc<Mutex<Vec<(Instant, Command)>>>,
}

impl tutti_node::hub::HubHandler for Seen {
    fn state(&mut self) -> NodeState {
        NodeState {
            streaming: true,
            offset_us: Some(2.5),
            skew_ppm: Some(-3.0),
            ..NodeState::default()
        }
    }
    fn settings(&mut self, _: &Settings) {}
    fn command(&mut self, c: &Command) {
        self.commands.lock().unwrap().push((Instant::now(), c.clone()));
    }
}

fn node(h: &RunningHub, id: &str, seen: &Seen) -> tutti_node::hub::HubLink {
    let info = NodeInfo {
        id: id.into(),
        name: format!("{id} speaker"),
        role: "player".into(),
        device: "null".into(),
        capabilities: vec!["volume".into(), "mute".into(), "delay".into(), "resync".into()],
        address: "127.0.0.1:7401".into(),
        streams: Vec::new(),
        version: "test".into(),
    };
    tutti_node::hub::HubLink::spawn(h.link, info, key(), Duration::from_millis(100), seen.clone())
        .unwrap()
}

type Inbox = mpsc::UnboundedReceiver<(String, String)>;

/// An MQTT client whose event loop runs on its own task (as mosquitto_sub's does): what it
/// hears arrives in the inbox, a successful connection as `("$connack", "")`.
fn client(
    b: &BrokerAddr,
    name: &str,
    credentials: Option<(String, String)>,
) -> (AsyncClient, Inbox) {
    let mut o = MqttOptions::new(name, b.host.clone(), b.port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = credentials {
        o.set_credentials(u, p);
    }
    let (c, mut ev) = AsyncClient::new(o, 100);
    ev.network_options.set_tcp_nodelay(true);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let sent = match ev.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    tx.send((p.topic, String::from_utf8_lossy(&p.payload).into_owned()))
                }
                Ok(MqttEvent::Incoming(Packet::ConnAck(a)))
                    if a.code == rumqttc::ConnectReturnCode::Success =>
                {
                    tx.send(("$connack".into(), String::new()))
                }
                Ok(_) => Ok(()),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    (c, rx)
}

/// The next message matching `pred`, within 5 s.
async fn next_publish(inbox: &mut Inbox, pred: impl Fn(&str, &str) -> bool) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, b) = tokio::time::timeout(left, inbox.recv())
            .await
            .expect("a publish within 5 s")
            .expect("the client runs");
        if pred(&t, &b) {
            return (t, b);
        }
    }
}

/// What a user does with mosquitto_sub / mosquitto_pub, against the hub's broker.
async fn state_and_commands_over_mqtt(
    broker_name: &str,
    h: &RunningHub,
    credentials: Option<(String, String)>,
) {
    let broker = h.mqtt.clone().expect("the hub has a broker");
    let seen = Seen::default();
    let link = node(h, "kitchen", &seen);
    let (c, mut ev) = client(&broker, "test-client", credentials);
    next_publish(&mut ev, |t, _| t == "$connack").await;
    c.subscribe("tutti/#", QoS::AtLeastOnce).await.unwrap();
    // Retained state: the node, its drift and delay, the config, the hub's status.
    // (A broker hands retained messages over in any order.)
    let mut latest = std::collections::HashMap::new();
    while !(latest.get("tutti/kitchen/state").is_some_and(|b: &String| b.contains("offset_us"))
        && latest.get("tutti/kitchen/drift").is_some_and(|b| b.contains("skew_ppm\":-3")))
    {
        let (t, b) = next_publish(&mut ev, |t, _| t.starts_with("tutti/kitchen/")).await;
        latest.insert(t, b);
    }
    let state = &latest["tutti/kitchen/state"];
    assert!(state.contains("\"online\":true") && state.contains("kitchen speaker"), "{state}");
    // Commands land at the node within 100 ms, measured at the node.
    let mut lags = Vec::new();
    for (i, v) in [30.0, 45.0, 60.0, 75.0, 90.0].iter().enumerate() {
        let t = Instant::now();
        c.publish("tutti/kitchen/command", QoS::AtLeastOnce, false, format!("{{\"volume\": {v}}}"))
            .await
            .unwrap();
        until("the command at the node", || seen.commands.lock().unwrap().len() > i).await;
        let (at, got) = seen.commands.lock().unwrap()[i].clone();
        assert_eq!(got, Command::Volume { percent: *v, at: None });
        lags.push(at - t);
    }
    lags.sort();
    eprintln!(
        "MQTT ({broker_name}) → node command latency: median {:?}, max {:?}",
        lags[2], lags[4]
    );
    assert!(lags[4] < Duration::from_millis(100), "{lags:?}");
    // The delay topic, and its retained echo.
    c.publish("tutti/kitchen/delay/set", QoS::AtLeastOnce, false, "-12.5").await.unwrap();
    let (_, delay) = next_publish(&mut ev, |t, b| t == "tutti/kitchen/delay" && b == "-12.5").await;
    assert_eq!(delay, "-12.5");
    // (The echo is published as the setting changes, a moment before the node hears it.)
    until("the delay at the node", || {
        seen.commands.lock().unwrap().iter().any(|(_, c)| *c == Command::Delay { ms: -12.5 })
    })
    .await;
    // The API sees what MQTT set: one registry.
    let view = h.hub.with(|r| (r.node("kitchen", Instant::now()), vec![], false)).unwrap();
    assert_eq!((view.settings.volume, view.settings.delay_ms), (90.0, -12.5));
    // A bad command is answered on the error topic, naming the field; nothing changes.
    c.publish("tutti/kitchen/command", QoS::AtLeastOnce, false, "{\"volume\": 400}").await.unwrap();
    let (_, err) = next_publish(&mut ev, |t, _| t == "tutti/kitchen/command/error").await;
    assert!(err.contains("\"error\":\"invalid\"") && err.contains("volume"), "{err}");
    c.publish("tutti/kitchen/command", QoS::AtLeastOnce, false, "{\"kind\": \"resync\"}")
        .await
        .unwrap();
    until("resync at the node", || {
        seen.commands.lock().unwrap().iter().any(|(_, c)| *c == Command::Resync)
    })
    .await;
    // The node leaves: its retained state says so.
    link.stop();
    next_publish(&mut ev, |t, b| t == "tutti/kitchen/state" && b.contains("\"online\":false"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_carries_state_and_commands_and_wants_credentials() {
    let credentials = tutti_hub::mqtt_credentials(&key());
    let h = hub(MqttSetup::Embedded {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials: credentials.clone(),
    })
    .await;
    state_and_commands_over_mqtt("embedded rumqttd", &h, Some(credentials.clone())).await;
    // No credentials, or wrong ones: never connected, never told anything.
    let broker = h.mqtt.clone().unwrap();
    for creds in [None, Some((credentials.0.clone(), "guess".to_owned()))] {
        let (c, mut inbox) = client(&broker, "stranger", creds);
        c.subscribe("tutti/#", QoS::AtLeastOnce).await.unwrap();
        if let Ok(Some((t, _))) = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await {
            panic!("a stranger got `{t}`");
        }
    }
    // Refused with a reason (a CONNACK), not a bare hang-up: 4 for a wrong login, 5 for none.
    for (login, want) in [(Some((credentials.0.as_str(), "guess")), 4u8), (None, 5u8)] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s =
            tokio::net::TcpStream::connect((broker.host.as_str(), broker.port)).await.unwrap();
        s.write_all(&connect_packet("stranger-raw", login)).await.unwrap();
        let mut ack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut ack))
            .await
            .expect("a CONNACK in time")
            .expect("a CONNACK, not a hang-up");
        assert_eq!(ack, [0x20, 0x02, 0x00, want], "login {login:?}");
    }
    h.stop();
}

/// An MQTT 3.1.1 CONNECT (clean session, 60 s keep-alive), with a login if given.
fn connect_packet(client: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let field = |s: &str| {
        let mut f = (s.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(s.as_bytes());
        f
    };
    let flags = 0x02 | if login.is_some() { 0xC0 } else { 0 };
    let mut body = field("MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    body.extend(field(client));
    if let Some((user, password)) = login {
        body.extend(field(user));
        body.extend(field(password));
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A private Mosquitto on a free loopback port, stopped on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Mosquitto {
    fn start() -> Option<Self> {
        if Process::new("mosquitto").arg("-h").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install mosquitto (.ci/packages.sh)"
            );
            eprintln!("skipped: mosquitto is not installed (apt-get install mosquitto)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir =
            std::env::temp_dir().join(format!("tutti-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"),
        )
        .unwrap();
        let child = Process::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let until = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "mosquitto listens within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Mosquitto { child, port, dir })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_mosquitto_carries_the_same_tree() {
    let Some(m) = Mosquitto::start() else { return };
    let h = hub(MqttSetup::External(
        BrokerAddr::parse(&format!("mqtt://127.0.0.1:{}", m.port)).unwrap(),
    ))
    .await;
    state_and_commands_over_mqtt("Mosquitto", &h, None).await;
    h.stop();
    drop(m);
}

/// The latest retained payload of every topic matching `filter` a new subscriber is handed, once
/// `done` holds for them (within 5 s).
async fn retained(
    broker: &BrokerAddr,
    name: &str,
    filter: &str,
    done: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> std::collections::HashMap<String, String> {
    let (c, mut ev) = client(broker, name, None);
    next_publish(&mut ev, |t, _| t == "$connack").await;
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut latest = std::collections::HashMap::new();
    while !done(&latest) {
        let (t, b) = next_publish(&mut ev, |_, _| true).await;
        latest.insert(t, b);
    }
    let _ = c.disconnect().await;
    latest
}

fn json_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovers_players_and_rooms_and_commands_them_through_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let broker = BrokerAddr::parse(&format!("mqtt://127.0.0.1:{}", m.port)).unwrap();
    let h = hub(MqttSetup::External(broker.clone())).await;
    let seen = Seen::default();
    let link = node(&h, "kitchen", &seen);
    until("the node joins", || h.hub.nodes().iter().any(|n| n.online)).await;
    let den = tutti_proto::control::Zone { name: "den".into(), source: None, latency_ms: None };
    h.hub.put_zone(den).unwrap();
    // What Home Assistant finds when it subscribes (retained: it may start after the hub).
    let volume_topic = "homeassistant/number/tutti_kitchen/volume/config";
    let select_topic = "homeassistant/select/tutti_kitchen/zone/config";
    let expected = [
        volume_topic,
        "homeassistant/switch/tutti_kitchen/mute/config",
        "homeassistant/number/tutti_kitchen/delay/config",
        "homeassistant/sensor/tutti_kitchen/offset/config",
        "homeassistant/button/tutti_kitchen/resync/config",
        "homeassistant/number/tutti_zone_den/volume/config",
    ];
    let found = retained(&broker, "ha-1", "homeassistant/#", |m| {
        expected.iter().all(|t| m.contains_key(*t))
            && m.get(select_topic).is_some_and(|s| json_of(s)["options"][1] == "den")
    })
    .await;
    // Field by field, as Home Assistant's MQTT `number` reads them.
    let v = json_of(&found[volume_topic]);
    assert_eq!(v["name"], "Volume");
    assert_eq!(v["unique_id"], "tutti_kitchen_volume");
    assert_eq!(v["state_topic"], "tutti/kitchen/state");
    assert_eq!(v["value_template"], "{{ value_json.settings.volume }}");
    assert_eq!(v["command_topic"], "tutti/kitchen/command");
    assert_eq!(v["command_template"], "{\"volume\": {{ value }}}");
    assert_eq!(
        (v["min"].as_f64(), v["max"].as_f64(), v["step"].as_f64()),
        (Some(0.0), Some(100.0), Some(1.0))
    );
    assert_eq!(
        (v["mode"].as_str(), v["unit_of_measurement"].as_str()),
        (Some("slider"), Some("%"))
    );
    assert_eq!(v["device"]["identifiers"], serde_json::json!(["tutti_kitchen"]));
    assert_eq!(v["device"]["name"], "kitchen speaker");
    assert_eq!(v["device"]["manufacturer"], "Tutti");
    assert_eq!(v["origin"]["name"], "Tutti");
    assert_eq!(v["availability_mode"], "all");
    assert_eq!(v["availability"][0]["topic"], "tutti/hub/status", "the hub's last will");
    assert_eq!(v["availability"][1]["topic"], "tutti/kitchen/state");
    let s = json_of(&found[select_topic]);
    assert_eq!(s["options"], serde_json::json!(["(none)", "den"]));
    let mute = json_of(&found["homeassistant/switch/tutti_kitchen/mute/config"]);
    assert_eq!(
        (mute["payload_on"].as_str(), mute["state_on"].as_str()),
        (Some("{\"mute\": true}"), Some("ON"))
    );
    let delay = json_of(&found["homeassistant/number/tutti_kitchen/delay/config"]);
    assert_eq!(
        (delay["command_topic"].as_str(), delay["entity_category"].as_str()),
        (Some("tutti/kitchen/delay/set"), Some("config"))
    );
    let offset = json_of(&found["homeassistant/sensor/tutti_kitchen/offset/config"]);
    assert_eq!(
        (offset["unit_of_measurement"].as_str(), offset["entity_category"].as_str()),
        (Some("µs"), Some("diagnostic"))
    );
    let resync = json_of(&found["homeassistant/button/tutti_kitchen/resync/config"]);
    assert_eq!(resync["payload_press"], "{\"kind\": \"resync\"}");
    assert!(
        !found.contains_key("homeassistant/button/tutti_kitchen/identify/config"),
        "no identify button for a node that cannot"
    );
    // Home Assistant's commands (its templates rendered) take the API's path.
    let (c, mut ev) = client(&broker, "ha-2", None);
    next_publish(&mut ev, |t, _| t == "$connack").await;
    c.subscribe("tutti/#", QoS::AtLeastOnce).await.unwrap();
    c.subscribe("homeassistant/#", QoS::AtLeastOnce).await.unwrap();
    c.publish("tutti/kitchen/command", QoS::AtLeastOnce, false, "{\"zone\": \"den\"}")
        .await
        .unwrap();
    c.publish("tutti/kitchen/command", QoS::AtLeastOnce, false, "{\"volume\": 40}").await.unwrap();
    c.publish(
        "tutti/kitchen/command",
        QoS::AtLeastOnce,
        false,
        resync["payload_press"].as_str().unwrap(),
    )
    .await
    .unwrap();
    until("the kitchen in the den at 40 %", || {
        h.hub
            .nodes()
            .iter()
            .any(|n| n.settings.zone.as_deref() == Some("den") && n.settings.volume == 40.0)
    })
    .await;
    until("resync at the node", || {
        seen.commands.lock().unwrap().iter().any(|(_, c)| *c == Command::Resync)
    })
    .await;
    // The room: its state, and a room-wide volume from its slider.
    next_publish(&mut ev, |t, b| t == "tutti/zone/den/state" && json_of(b)["volume"] == 40.0).await;
    let room = "{\"kind\": \"volume\", \"percent\": 25}";
    c.publish("tutti/zone/den/command", QoS::AtLeastOnce, false, room).await.unwrap();
    until("the room's volume at its player", || {
        seen.commands
            .lock()
            .unwrap()
            .iter()
            .any(|(_, c)| matches!(c, Command::Volume { percent, .. } if *percent == 25.0))
    })
    .await;
    c.publish("tutti/zone/den/command", QoS::AtLeastOnce, false, "{\"stream\": \"nowhere\"}")
        .await
        .unwrap();
    let (_, err) = next_publish(&mut ev, |t, _| t == "tutti/zone/den/command/error").await;
    assert!(err.contains("no source `nowhere`"), "{err}");
    // The room deleted: its entities are removed (empty retained payloads), the select loses it.
    h.hub.delete_zone("den").unwrap();
    next_publish(&mut ev, |t, b| {
        t == "homeassistant/number/tutti_zone_den/volume/config" && b.is_empty()
    })
    .await;
    next_publish(&mut ev, |t, b| {
        t == select_topic && json_of(b)["options"] == serde_json::json!(["(none)"])
    })
    .await;
    // Home Assistant restarts: it says so, and everything is published again.
    c.publish("homeassistant/status", QoS::AtLeastOnce, false, "online").await.unwrap();
    next_publish(&mut ev, |t, _| t == volume_topic).await;
    link.stop();
    h.stop();
    drop(m);
}
