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
        let dir = std::env::temp_dir().join(format!("tutti-mosquitto-{}", std::process::id()));
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
