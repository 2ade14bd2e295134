//! The hub on MQTT: the same state and commands as the HTTP API, as a topic tree.
//!
//! | topic | retained | what |
//! | --- | --- | --- |
//! | `tutti/hub/status` | yes | `online`, or `offline` (the hub's last will) |
//! | `tutti/config` | yes | `{"zones": [...], "nodes": [ids]}` |
//! | `tutti/<node>/state` | yes | the node as `GET /api/nodes/{id}` shows it |
//! | `tutti/<node>/drift` | yes | `{"offset_us", "skew_ppm", "latency_ms", "online", "acoustic"}`: its clock against the source's, and `acoustic`, what the room's microphone last heard of it (`{"drift_ms", "measured_ms", "delay_ms", "kind", "at"}` from its latest calibration record, `null` before one) |
//! | `tutti/<node>/delay` | yes | its per-device delay, ms (a plain number) |
//! | `tutti/<node>/command` | no | publish a settings change `{"volume": 40, "mute": false, "delay_ms": 12, "zone": "kitchen", "name": ...}` or an action `{"kind": "resync"}` / `{"kind": "identify"}` |
//! | `tutti/<node>/delay/set` | no | publish a delay, ms (a plain number) |
//! | `tutti/<node>/command/error` | no | why a command was refused: `{"error", "message"}` |
//! | `tutti/zone/<zone>/state` | yes | `{"volume", "mute", "stream", "source", "players"}` (the members' mean volume, muted when all are) |
//! | `tutti/zone/<zone>/drift` | yes | `{"acoustic": true, "drift_ms", "baseline_ms", "moved_ms"}`: the zone's drift watch (see [`crate::watch`]) |
//! | `tutti/zone/<zone>/command` | no | a zone-wide command `{"kind": "volume", "percent": 40}` (mute, resync, identify) or `{"stream": NAME}` |
//! | `homeassistant/…/config` | yes | Home Assistant discovery (see [`crate::ha`]) |
//!
//! A command on MQTT goes through exactly the path an API call does ([`Hub::apply`],
//! [`Hub::act`]): validated, saved, sent to the node.
//!
//! The broker is embedded (rumqttd, started with the hub) unless the hub is given an external
//! one (`mqtt://[user:password@]host[:port]`, e.g. Mosquitto). The embedded broker admits
//! clients with the hub's MQTT credentials only.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::mpsc;
use tutti_proto::control::{CalibrationState, Command, Event, NodeView, Zone};

use crate::registry::{RegistryError, SettingsPatch};
use crate::{ControlError, Hub, HubError, ha};

/// Retained state goes out at QoS 0: a broker acknowledging every state report (QoS 1) keeps
/// unacknowledged bytes in flight toward the hub, and Nagle's algorithm on the broker's side
/// then holds a command behind them until the hub's delayed ACK (~40 ms).
const STATE_QOS: QoS = QoS::AtMostOnce;

/// Where the hub's MQTT broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

/// Why an MQTT broker's URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}`: {why}")]
pub struct BadBrokerUrl {
    /// The URL given.
    pub url: String,
    /// What is wrong, and the form that works.
    pub why: String,
}

impl BrokerAddr {
    /// Parses `mqtt://[user:password@]host[:port]` (port 1883 if absent; `tcp://` and a bare
    /// `host:port` are accepted too).
    pub fn parse(url: &str) -> Result<Self, BadBrokerUrl> {
        let bad = |why: String| BadBrokerUrl { url: url.to_owned(), why };
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url)
            .trim_end_matches('/');
        if rest.contains("://") {
            return Err(bad("only plain MQTT over TCP is supported (mqtt://host:port)".into()));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((user, hp)) => {
                let (u, p) = user.split_once(':').unwrap_or((user, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, rest),
        };
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad(format!("the port `{p}` is not a number (mqtt://host:1883)")))
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) =
                v6.split_once(']').ok_or_else(|| bad("unclosed `[` (mqtt://[::1]:1883)".into()))?;
            match after.strip_prefix(':') {
                Some(p) => (h, port_of(p)?),
                None => (h, 1883),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (hostport, 1883),
            }
        };
        if host.is_empty() {
            return Err(bad("no host (mqtt://host:1883)".into()));
        }
        Ok(BrokerAddr { host: host.to_owned(), port, credentials })
    }
}

/// Starts the embedded broker on `listen`, admitting only `credentials`. Returns the address
/// it listens on (`listen` with port 0 gets a free port).
pub fn start_embedded(
    listen: SocketAddr,
    credentials: (String, String),
) -> Result<SocketAddr, HubError> {
    // rumqttd binds inside its own thread and only logs a failure: bind here first so a busy
    // port is an error the user sees (and port 0 becomes a real one).
    let probe = std::net::TcpListener::bind(listen).map_err(|e| HubError::Bind {
        addr: listen,
        message: format!(
            "MQTT: {e} (a broker already there? use it with --mqtt-url mqtt://localhost:{}, \
             or move ours with --mqtt ADDR, or run without MQTT: --no-mqtt)",
            listen.port()
        ),
    })?;
    let addr = probe
        .local_addr()
        .map_err(|e| HubError::Bind { addr: listen, message: format!("MQTT: {e}") })?;
    drop(probe);
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 256,
        auth: Some(HashMap::from([credentials])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "tutti-mqtt".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("tutti".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("tutti-mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("the embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| HubError::Bind { addr, message: format!("MQTT: {e}") })?;
    // Ready when it accepts a connection (a few milliseconds).
    let local = match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    // Waited for off the async runtime's workers (their other tasks move on meanwhile).
    crate::store::blocking(|| {
        let until = Instant::now() + Duration::from_secs(3);
        while std::net::TcpStream::connect_timeout(&local, Duration::from_millis(100)).is_err() {
            if Instant::now() > until {
                return Err(HubError::Bind {
                    addr,
                    message: "MQTT: the embedded broker did not start".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(addr)
    })
}

/// Topic-safe form of a node id (MQTT reserves `/`, `+` and `#`).
pub fn topic_id(id: &str) -> String {
    id.chars().map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c }).collect()
}

/// What a message on `tutti/<node>/command` asks.
#[derive(Debug, PartialEq)]
enum Request {
    Patch(SettingsPatch),
    Act(Command),
}

/// Why a message on a command topic was not obeyed (published on its `error` topic).
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("not JSON ({0}): publish {{\"volume\": 40}} or {{\"kind\": \"resync\"}}")]
    NotJson(serde_json::Error),
    #[error("command: {0}")]
    Command(serde_json::Error),
    #[error("settings: {0}")]
    Settings(serde_json::Error),
}

fn parse_command(payload: &[u8]) -> Result<Request, CommandError> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(CommandError::NotJson)?;
    if v.get("kind").is_some() {
        let c: Command = serde_json::from_value(v).map_err(CommandError::Command)?;
        // A setting sent the API's command way is still a setting.
        return Ok(match c {
            Command::Volume { percent, .. } => {
                Request::Patch(SettingsPatch { volume: Some(percent), ..Default::default() })
            }
            Command::Mute { mute, .. } => {
                Request::Patch(SettingsPatch { mute: Some(mute), ..Default::default() })
            }
            Command::Delay { ms } => {
                Request::Patch(SettingsPatch { delay_ms: Some(ms), ..Default::default() })
            }
            other => Request::Act(other),
        });
    }
    serde_json::from_value(v).map(Request::Patch).map_err(CommandError::Settings)
}

/// The hub's MQTT client: publishes the registry, obeys commands. Reconnects by itself (a
/// broker restart costs a second).
pub fn bridge(hub: Hub, broker: BrokerAddr) -> Vec<tokio::task::JoinHandle<()>> {
    let client_id = format!("tutti-hub-{}", std::process::id());
    let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    opts.set_last_will(LastWill::new("tutti/hub/status", "offline", QoS::AtLeastOnce, true));
    if let Some((u, p)) = &broker.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    // Commands are tiny and must not wait for an ACK (Nagle would hold them ~40 ms).
    eventloop.network_options.set_tcp_nodelay(true);
    // The outgoing side publishes only while connected (a connection starts with the whole
    // picture), and only after the subscriptions are asked for: a command published the
    // moment the hub's state appears is heard.
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<bool>();
    let incoming = {
        let (hub, client) = (hub.clone(), client.clone());
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        warned = false;
                        let _ = client.try_subscribe("tutti/+/command", QoS::AtLeastOnce);
                        let _ = client.try_subscribe("tutti/+/delay/set", QoS::AtLeastOnce);
                        let _ = client.try_subscribe("tutti/zone/+/command", QoS::AtLeastOnce);
                        let _ = client.try_subscribe(ha::BIRTH_TOPIC, QoS::AtLeastOnce);
                        let _ = connected_tx.send(true);
                    }
                    // Home Assistant (re)started: everything again, its discovery included.
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == ha::BIRTH_TOPIC => {
                        if p.payload.as_ref() == b"online" {
                            let _ = connected_tx.send(true);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        handle(&hub, &client, &p.topic, &p.payload).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = connected_tx.send(false);
                        if !warned {
                            tracing::warn!(
                                "MQTT broker {}:{}: {e} (retrying every second)",
                                broker.host,
                                broker.port
                            );
                            warned = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    let outgoing = tokio::spawn(async move {
        let mut events = hub.subscribe();
        let mut connected = false;
        // Home Assistant's discovery as last published, by topic.
        let mut discovery = BTreeMap::new();
        loop {
            tokio::select! {
                c = connected_rx.recv() => match c {
                    None => return,
                    Some(false) => connected = false,
                    Some(true) => {
                        connected = true;
                        let _ = client.publish("tutti/hub/status", STATE_QOS, true, "online").await;
                        publish_all(&hub, &client).await;
                        // Everything again: the broker (or Home Assistant) may have lost it.
                        discovery.clear();
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                },
                e = events.recv(), if connected => match e {
                    Ok(Event::ZoneChanged { .. } | Event::ZoneRemoved { .. }) => {
                        publish_config(&hub, &client).await;
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                    Ok(Event::NodeOnline { node }) => {
                        publish_node(&hub, &client, &node, Parts::ALL).await;
                        publish_config(&hub, &client).await;
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                    Ok(Event::NodeLost { id }) => {
                        publish_id(&hub, &client, &id, Parts::ALL).await;
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                    Ok(Event::NodeState { id, .. }) => {
                        publish_id(&hub, &client, &id, Parts { state: true, drift: true, delay: false }).await;
                    }
                    Ok(Event::NodeSettings { id, .. }) => {
                        publish_id(&hub, &client, &id, Parts { state: true, drift: false, delay: true }).await;
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                    Ok(Event::ZoneDrift { zone, drift_ms, baseline_ms, moved_ms }) => {
                        let topic = format!("tutti/zone/{}/drift", topic_id(&zone));
                        let body = json!({
                            "acoustic": true,
                            "drift_ms": drift_ms,
                            "baseline_ms": baseline_ms,
                            "moved_ms": moved_ms,
                        });
                        let _ = client.publish(topic, STATE_QOS, true, body.to_string()).await;
                    }
                    // A finished calibration: what the microphone heard of each speaker.
                    Ok(Event::Calibration { run }) => {
                        if !matches!(run.state, CalibrationState::Playing | CalibrationState::Estimating) {
                            for s in &run.speakers {
                                publish_id(&hub, &client, &s.id, Parts { state: false, drift: true, delay: false }).await;
                            }
                        }
                    }
                    // Who is paired and the guests are not published on MQTT (the API lists
                    // them).
                    Ok(Event::Paired { .. } | Event::Guests { .. }) => {}
                    // Fell behind: the whole picture again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        publish_all(&hub, &client).await;
                        publish_discovery(&hub, &client, &mut discovery).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    vec![incoming, outgoing]
}

async fn handle(hub: &Hub, client: &AsyncClient, topic: &str, payload: &[u8]) {
    let mut parts = topic.split('/');
    let (Some("tutti"), Some(node)) = (parts.next(), parts.next()) else { return };
    let rest: Vec<&str> = parts.collect();
    if let ("zone", [zone, "command"]) = (node, rest.as_slice()) {
        return handle_zone(hub, client, zone, payload).await;
    }
    let id = hub.with(|r| {
        let id =
            r.nodes(Instant::now()).into_iter().map(|n| n.info.id).find(|i| topic_id(i) == node);
        (id, vec![], false)
    });
    let request = match rest.as_slice() {
        ["command"] => parse_command(payload).map_err(|e| ("bad_json", e.to_string())),
        ["delay", "set"] => std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|ms| Request::Patch(SettingsPatch { delay_ms: Some(ms), ..Default::default() }))
            .ok_or(("invalid", "delay_ms: publish a number of milliseconds, e.g. 12.5".into())),
        _ => return,
    };
    let unknown = || ControlError::from(RegistryError::NoNode(node.to_owned()));
    let result = id.ok_or_else(unknown).map_err(|e| (e.code(), e.to_string())).and_then(|id| {
        let done = match request? {
            Request::Patch(p) => hub.apply(&id, p).map(|_| ()).map_err(ControlError::from),
            Request::Act(c) => hub.act(&id, c),
        };
        done.map_err(|e| (e.code(), e.to_string()))
    });
    if let Err((code, message)) = result {
        let body = json!({ "error": code, "message": message }).to_string();
        let _ = client
            .publish(format!("tutti/{node}/command/error"), QoS::AtLeastOnce, false, body)
            .await;
    }
}

/// What a message on `tutti/zone/<zone>/command` asks: a zone-wide command (`{"kind":
/// "volume", "percent": 40}`, mute, resync, identify), or `{"stream": NAME}` (a source by the
/// name Home Assistant's select shows, `(none)` for nothing).
async fn handle_zone(hub: &Hub, client: &AsyncClient, zone_topic: &str, payload: &[u8]) {
    let zones = hub.zones();
    let result = match zones.iter().find(|z| topic_id(&z.name) == zone_topic) {
        None => Err(("no_zone", format!("no zone `{zone_topic}`: tutti/config lists them"))),
        Some(zone) => match serde_json::from_slice::<serde_json::Value>(payload) {
            Err(e) => Err((
                "bad_json",
                format!(
                    "not JSON ({e}): publish {{\"kind\": \"volume\", \"percent\": 40}} or {{\"stream\": \"NAME\"}}"
                ),
            )),
            Ok(v) => match v.get("stream").map(|s| s.as_str()) {
                Some(Some(name)) => route_zone(hub, zone, name),
                Some(None) => Err(("invalid", "stream: a source's name (a string)".into())),
                None => match serde_json::from_value::<Command>(v) {
                    Ok(c) => hub
                        .zone_act(&zone.name, &c)
                        .map(|_| ())
                        .map_err(|e| (e.code(), e.to_string())),
                    Err(e) => Err(("invalid", format!("command: {e}"))),
                },
            },
        },
    };
    if let Err((code, message)) = result {
        let body = json!({ "error": code, "message": message }).to_string();
        let topic = format!("tutti/zone/{zone_topic}/command/error");
        let _ = client.publish(topic, QoS::AtLeastOnce, false, body).await;
    }
}

/// Routes `zone` to the source Home Assistant's select names (`(none)`: to nothing).
fn route_zone(hub: &Hub, zone: &Zone, name: &str) -> Result<(), (&'static str, String)> {
    let source = if name == ha::NONE {
        None
    } else {
        let names = ha::stream_names(&hub.streams());
        match names.into_iter().find(|(n, _)| n == name) {
            Some((_, address)) => Some(address),
            None => {
                return Err((
                    "invalid",
                    format!("stream: no source `{name}`: the select lists them"),
                ));
            }
        }
    };
    let zone = Zone { source, ..zone.clone() };
    hub.put_zone(zone).map(|_| ()).map_err(|e| {
        let e = ControlError::from(e);
        (e.code(), e.to_string())
    })
}

/// Home Assistant's discovery (and the zones' state its entities read): what changed since
/// `sent` goes out retained; what is no longer wanted gets an empty payload (removed).
async fn publish_discovery(hub: &Hub, client: &AsyncClient, sent: &mut BTreeMap<String, String>) {
    let (nodes, zones, streams) = (hub.nodes(), hub.zones(), hub.streams());
    let wanted = ha::configs(&nodes, &zones, &streams);
    for topic in sent.keys().filter(|t| !wanted.contains_key(*t)).cloned().collect::<Vec<_>>() {
        let _ = client.publish(topic.clone(), QoS::AtLeastOnce, true, "").await;
        sent.remove(&topic);
    }
    for (topic, config) in wanted {
        let body = config.to_string();
        if sent.get(&topic) != Some(&body) {
            let _ = client.publish(topic.clone(), QoS::AtLeastOnce, true, body.clone()).await;
            sent.insert(topic, body);
        }
    }
    for z in &zones {
        let members: Vec<&NodeView> =
            nodes.iter().filter(|n| n.settings.zone.as_deref() == Some(z.name.as_str())).collect();
        let state = ha::zone_state(z, &members, &streams).to_string();
        let topic = format!("tutti/zone/{}/state", topic_id(&z.name));
        let _ = client.publish(topic, STATE_QOS, true, state).await;
    }
}

async fn publish_all(hub: &Hub, client: &AsyncClient) {
    let nodes = hub.nodes();
    for n in &nodes {
        publish_node(hub, client, n, Parts::ALL).await;
    }
    publish_config(hub, client).await;
}

async fn publish_config(hub: &Hub, client: &AsyncClient) {
    let (zones, nodes) = hub.with(|r| {
        let ids: Vec<String> = r.nodes(Instant::now()).into_iter().map(|n| n.info.id).collect();
        ((r.zones(), ids), vec![], false)
    });
    let body = json!({ "zones": zones, "nodes": nodes }).to_string();
    let _ = client.publish("tutti/config", STATE_QOS, true, body).await;
}

/// Which of a node's retained topics to publish.
#[derive(Clone, Copy)]
struct Parts {
    state: bool,
    drift: bool,
    delay: bool,
}

impl Parts {
    const ALL: Parts = Parts { state: true, drift: true, delay: true };
}

async fn publish_id(hub: &Hub, client: &AsyncClient, id: &str, parts: Parts) {
    if let Ok(view) = hub.with(|r| (r.node(id, Instant::now()), vec![], false)) {
        publish_node(hub, client, &view, parts).await;
    }
}

async fn publish_node(hub: &Hub, client: &AsyncClient, n: &NodeView, parts: Parts) {
    let t = topic_id(&n.info.id);
    if parts.state {
        let state = serde_json::to_string(n).unwrap_or_default();
        let _ = client.publish(format!("tutti/{t}/state"), STATE_QOS, true, state).await;
    }
    if parts.drift {
        let latest = hub.with(|r| (r.latest_calibration(&n.info.id), vec![], false));
        let drift = json!({
            "online": n.online,
            "offset_us": n.state.offset_us,
            "skew_ppm": n.state.skew_ppm,
            "latency_ms": n.state.latency_ms,
            "acoustic": latest.map(|c| json!({
                "drift_ms": c.acoustic_drift_ms,
                "measured_ms": c.measured_ms,
                "delay_ms": c.applied_delay_ms.unwrap_or(c.previous_delay_ms),
                "kind": c.kind,
                "at": c.at,
            })),
        })
        .to_string();
        let _ = client.publish(format!("tutti/{t}/drift"), STATE_QOS, true, drift).await;
    }
    if parts.delay {
        let delay = n.settings.delay_ms.to_string();
        let _ = client.publish(format!("tutti/{t}/delay"), STATE_QOS, true, delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_say_what_is_wrong() {
        let a = BrokerAddr::parse("mqtt://u:p@broker.lan:1884").unwrap();
        assert_eq!(a.host, "broker.lan");
        assert_eq!(a.port, 1884);
        assert_eq!(a.credentials, Some(("u".into(), "p".into())));
        assert_eq!(BrokerAddr::parse("127.0.0.1").unwrap().port, 1883);
        assert_eq!(BrokerAddr::parse("tcp://[::1]:1885").unwrap().host, "::1");
        let err = |u: &str| BrokerAddr::parse(u).unwrap_err().to_string();
        assert!(err("mqtts://x").contains("plain MQTT"));
        assert!(err("mqtt://x:abc").contains("not a number"));
        assert!(err("mqtt://").contains("no host"));
    }

    #[test]
    fn commands_are_settings_or_actions() {
        assert_eq!(
            parse_command(br#"{"volume": 40, "mute": true}"#).unwrap(),
            Request::Patch(SettingsPatch {
                volume: Some(40.0),
                mute: Some(true),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_command(br#"{"kind": "delay", "ms": -12.5}"#).unwrap(),
            Request::Patch(SettingsPatch { delay_ms: Some(-12.5), ..Default::default() })
        );
        assert_eq!(parse_command(br#"{"kind": "resync"}"#).unwrap(), Request::Act(Command::Resync));
        assert!(parse_command(b"{\"volum\": 4}").unwrap_err().to_string().contains("volum"));
        assert!(parse_command(b"loud").unwrap_err().to_string().contains("not JSON"));
    }
}
