//! Snapcast-compatible control: the JSON-RPC API Snapcast's apps speak (Home Assistant's
//! Snapcast integration through the `snapcast` Python library, Snapweb, Snapdroid, Music
//! Assistant), answered from the hub's own state.
//!
//! Snapcast's model maps onto Tutti's: a **client** is a player (its id is the node's id), a
//! **group** is a zone with players in it (its id is the zone's name; a player in no zone is a
//! group of its own, id `player:<node id>`, as Snapcast gives a new client), a **stream** is a
//! source (its id is the source node's id; `none` is "nothing routed"). Every change takes the
//! path the API's takes (saved, announced, sent to the nodes), so the dashboard, MQTT and Home
//! Assistant see it too. A client's Snapcast `latency` (how much earlier it must play for a
//! slow device) is minus Tutti's per-device delay (how much later a player plays); a group's
//! mute mutes every player of its zone (Tutti has no separate zone mute).
//!
//! Three ways in, one session loop: newline-delimited JSON over TCP (`tutti serve --snapcast
//! ADDR`, Snapcast's port 1705; every message ends in `\r\n`), one `POST /jsonrpc` and a
//! WebSocket at `/jsonrpc` on the hub's API. A Snapcast app has no token: the TCP listener is
//! off unless asked, and admits only peers in its allow-list (loopback unless
//! `--snapcast-allow` says more); `/jsonrpc` on the API needs the API's tokens (the read-only
//! token may call only `…GetStatus` and `Server.GetRPCVersion`). docs/security.md says why.
//!
//! Notifications: after each request and on every change the hub announces (and once a second
//! for what nodes report: connections, tracks), a session compares the Snapcast view it last
//! showed with the current one and sends what differs (`Client.OnVolumeChanged`, …,
//! `Server.OnUpdate` when groups, members or streams changed). The session that made a change
//! gets its response, not a notification of it, as with Snapcast.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tutti_proto::control::{Command, NodeView, StreamView, Zone, plays};

use crate::api::Access;
use crate::registry::{RegistryError, SettingsPatch};
use crate::{ControlError, Hub};

/// The Snapcast server version Tutti answers as: the control API it implements (apps refuse
/// some calls to older servers).
pub const SNAPSERVER_VERSION: &str = "0.28.0";

/// The longest JSON-RPC message taken (a line, a POST body, a WebSocket message).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Snapcast's TCP control port.
pub const DEFAULT_PORT: u16 = 1705;

/// The group id of a player in no zone.
const SOLO: &str = "player:";

/// The stream id of "nothing routed".
const NO_STREAM: &str = "none";

/// Where the Snapcast JSON-RPC listener listens and whom it admits.
#[derive(Clone, Debug)]
pub struct SnapcastSetup {
    /// TCP address (Snapcast's is port 1705).
    pub listen: SocketAddr,
    /// Peers admitted besides loopback (a Snapcast app has no credential).
    pub allow: Vec<ipnet::IpNet>,
}

impl SnapcastSetup {
    /// Is a peer at `ip` admitted?
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_loopback() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A Snapcast client: a player.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Client {
    id: String,
    connected: bool,
    config: ClientConfig,
    host: Host,
    snapclient: Product,
    #[serde(rename = "lastSeen")]
    last_seen: LastSeen,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct ClientConfig {
    instance: u32,
    latency: i64,
    name: String,
    volume: Volume,
}

/// A client's volume, as Snapcast says it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Volume {
    muted: bool,
    percent: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Host {
    arch: String,
    ip: String,
    mac: String,
    name: String,
    os: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Product {
    name: String,
    #[serde(rename = "protocolVersion")]
    protocol_version: u32,
    version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
struct LastSeen {
    sec: u64,
    usec: u64,
}

/// A Snapcast group: a zone with players, or a player in none.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    id: String,
    name: String,
    muted: bool,
    stream_id: String,
    clients: Vec<Client>,
}

/// A Snapcast stream: a source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stream {
    id: String,
    status: String,
    uri: Value,
    properties: Value,
}

/// What `Server.GetStatus` answers: the hub as Snapcast sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Server {
    groups: Vec<Group>,
    server: Value,
    streams: Vec<Stream>,
}

impl Server {
    /// The Snapcast view of `nodes`, `zones` and `streams`, `now` being the wall clock.
    pub fn build(
        nodes: &[NodeView],
        zones: &[Zone],
        streams: &[StreamView],
        now: SystemTime,
    ) -> Server {
        let players: Vec<&NodeView> = nodes.iter().filter(|n| n.info.role == "player").collect();
        let stream_of = |zone: &Zone| match &zone.source {
            None => NO_STREAM.to_owned(),
            Some(s) => streams
                .iter()
                .find(|v| plays(s, &v.address))
                .map_or_else(|| s.clone(), |v| v.id.clone()),
        };
        let mut groups = Vec::new();
        for zone in zones {
            let members: Vec<&NodeView> = players
                .iter()
                .copied()
                .filter(|p| p.settings.zone.as_deref() == Some(zone.name.as_str()))
                .collect();
            // Snapcast has no empty groups (its apps divide by the number of clients).
            if members.is_empty() {
                continue;
            }
            groups.push(Group {
                id: zone.name.clone(),
                name: zone.name.clone(),
                muted: members.iter().all(|p| p.settings.mute),
                stream_id: stream_of(zone),
                clients: members.iter().map(|p| client(p, now)).collect(),
            });
        }
        for p in players.iter().filter(|p| {
            p.settings.zone.as_ref().is_none_or(|z| !zones.iter().any(|zone| &zone.name == z))
        }) {
            groups.push(Group {
                id: format!("{SOLO}{}", p.info.id),
                name: String::new(),
                muted: p.settings.mute,
                stream_id: NO_STREAM.to_owned(),
                clients: vec![client(p, now)],
            });
        }
        let mut out: Vec<Stream> = streams.iter().map(stream).collect();
        out.push(Stream {
            id: NO_STREAM.into(),
            status: "idle".into(),
            uri: uri(NO_STREAM, ""),
            properties: json!({ "canControl": false, "playbackStatus": "stopped" }),
        });
        // A zone routed to an address no source has claimed (yet) is a stream too: every
        // group's stream is one of the list.
        for g in &groups {
            if !out.iter().any(|s| s.id == g.stream_id) {
                out.push(Stream {
                    id: g.stream_id.clone(),
                    status: "idle".into(),
                    uri: uri(&g.stream_id, &g.stream_id),
                    properties: json!({ "canControl": false, "playbackStatus": "stopped" }),
                });
            }
        }
        let host = tutti_os::hostname();
        Server {
            groups,
            server: json!({
                "host": { "arch": std::env::consts::ARCH, "ip": "", "mac": "", "name": host,
                          "os": std::env::consts::OS },
                "snapserver": { "controlProtocolVersion": 1, "name": "Snapserver",
                                "protocolVersion": 1, "version": SNAPSERVER_VERSION },
            }),
            streams: out,
        }
    }

    fn client(&self, id: &str) -> Option<&Client> {
        self.groups.iter().flat_map(|g| &g.clients).find(|c| c.id == id)
    }

    fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// The notifications that take a Snapcast app that saw `self` to `now`.
    pub fn notifications(&self, now: &Server) -> Vec<Value> {
        if shape(self) != shape(now) {
            return vec![note("Server.OnUpdate", json!({ "server": now }))];
        }
        let mut out = Vec::new();
        for (old, new) in self.groups.iter().zip(&now.groups) {
            for (a, b) in old.clients.iter().zip(&new.clients) {
                if a.connected != b.connected {
                    let method =
                        if b.connected { "Client.OnConnect" } else { "Client.OnDisconnect" };
                    out.push(note(method, json!({ "id": b.id, "client": b })));
                }
                if a.config.volume != b.config.volume {
                    out.push(note(
                        "Client.OnVolumeChanged",
                        json!({ "id": b.id, "volume": b.config.volume }),
                    ));
                }
                if a.config.latency != b.config.latency {
                    out.push(note(
                        "Client.OnLatencyChanged",
                        json!({ "id": b.id, "latency": b.config.latency }),
                    ));
                }
                if a.config.name != b.config.name {
                    out.push(note(
                        "Client.OnNameChanged",
                        json!({ "id": b.id, "name": b.config.name }),
                    ));
                }
            }
            if old.muted != new.muted {
                out.push(note("Group.OnMute", json!({ "id": new.id, "mute": new.muted })));
            }
            if old.stream_id != new.stream_id {
                out.push(note(
                    "Group.OnStreamChanged",
                    json!({ "id": new.id, "stream_id": new.stream_id }),
                ));
            }
            if old.name != new.name {
                out.push(note("Group.OnNameChanged", json!({ "id": new.id, "name": new.name })));
            }
        }
        for (a, b) in self.streams.iter().zip(&now.streams) {
            if a.status != b.status || a.uri != b.uri {
                out.push(note("Stream.OnUpdate", json!({ "id": b.id, "stream": b })));
            } else if a.properties != b.properties {
                out.push(note(
                    "Stream.OnProperties",
                    json!({ "id": b.id, "properties": b.properties }),
                ));
            }
        }
        out
    }
}

/// What a Snapcast app's idea of the server is built on: the groups with their clients, and
/// the streams (a change to them is a whole `Server.OnUpdate`).
fn shape(s: &Server) -> (Vec<(&str, Vec<&str>)>, Vec<&str>) {
    let groups = s
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.clients.iter().map(|c| c.id.as_str()).collect()))
        .collect();
    (groups, s.streams.iter().map(|s| s.id.as_str()).collect())
}

fn note(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

fn client(p: &NodeView, now: SystemTime) -> Client {
    let seen = now
        .checked_sub(Duration::from_millis(if p.online { 0 } else { p.last_seen_ms }))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let ip = p.info.address.parse::<SocketAddr>().map(|a| a.ip().to_string()).unwrap_or_default();
    Client {
        id: p.info.id.clone(),
        connected: p.online,
        config: ClientConfig {
            instance: 1,
            latency: (-p.settings.delay_ms).round() as i64,
            name: p.name.clone(),
            volume: Volume {
                muted: p.settings.mute,
                percent: p.settings.volume.round().clamp(0.0, 100.0) as u32,
            },
        },
        host: Host {
            arch: String::new(),
            ip,
            mac: String::new(),
            name: p.info.id.clone(),
            os: p.info.device.clone(),
        },
        snapclient: Product {
            name: "Tutti".into(),
            protocol_version: 2,
            version: p.info.version.clone(),
        },
        last_seen: LastSeen { sec: seen.as_secs(), usec: u64::from(seen.subsec_micros()) },
    }
}

fn uri(name: &str, address: &str) -> Value {
    json!({
        "raw": format!("tutti://{address}?name={name}"),
        "scheme": "tutti",
        "host": address,
        "path": "",
        "fragment": "",
        "query": { "name": name },
    })
}

fn stream(v: &StreamView) -> Stream {
    let track = v.track.as_ref();
    let transport = track.map_or("", |t| t.transport.as_str());
    let playing = v.online && (transport == "playing" || (track.is_none() && v.stream.is_some()));
    let can = |k: &str| v.controls.iter().any(|c| c == k);
    let mut metadata = serde_json::Map::new();
    if let Some(t) = track {
        if let Some(x) = &t.title {
            metadata.insert("title".into(), json!(x));
        }
        if let Some(x) = &t.artist {
            metadata.insert("artist".into(), json!([x]));
        }
        if let Some(x) = &t.album {
            metadata.insert("album".into(), json!(x));
        }
        if let Some(x) = t.duration_s {
            metadata.insert("duration".into(), json!(x));
        }
        if t.count > 0 {
            metadata.insert("trackNumber".into(), json!(t.index));
        }
    }
    Stream {
        id: v.id.clone(),
        status: if playing { "playing" } else { "idle" }.into(),
        uri: uri(&v.name, &v.address),
        properties: json!({
            "canControl": !v.controls.is_empty(),
            "canGoNext": can("skip"),
            "canGoPrevious": false,
            "canPause": can("pause"),
            "canPlay": can("start"),
            "canSeek": false,
            "playbackStatus": match transport {
                "paused" => "paused",
                "stopped" => "stopped",
                _ if playing => "playing",
                _ => "stopped",
            },
            "metadata": metadata,
        }),
    }
}

/// A JSON-RPC error.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn params(message: impl Into<String>) -> Self {
        RpcError { code: -32602, message: message.into() }
    }
}

impl From<RegistryError> for RpcError {
    fn from(e: RegistryError) -> Self {
        RpcError::params(e.to_string())
    }
}

impl From<ControlError> for RpcError {
    fn from(e: ControlError) -> Self {
        let code = if matches!(e, ControlError::Offline(_)) { -32603 } else { -32602 };
        RpcError { code, message: e.to_string() }
    }
}

/// The hub's state as Snapcast sees it now.
pub fn status(hub: &Hub) -> Server {
    let (nodes, zones) = (hub.nodes(), hub.zones());
    let streams = StreamView::list(&nodes, &zones);
    Server::build(&nodes, &zones, &streams, SystemTime::now())
}

/// Answers one JSON-RPC message (a request, a notification or a batch); `None` when nothing
/// is to be answered (notifications only).
pub(crate) fn answer(hub: &Hub, access: Access, text: &str) -> Option<Value> {
    let message: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(error_reply(Value::Null, -32700, format!("parse error: {e}"))),
    };
    match message {
        Value::Array(batch) if batch.is_empty() => {
            Some(error_reply(Value::Null, -32600, "an empty batch".into()))
        }
        Value::Array(batch) => {
            let replies: Vec<Value> = batch.iter().filter_map(|m| one(hub, access, m)).collect();
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        m => one(hub, access, &m),
    }
}

fn error_reply(id: Value, code: i64, message: String) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn one(hub: &Hub, access: Access, m: &Value) -> Option<Value> {
    let id = m.get("id").cloned();
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        return Some(error_reply(
            id.unwrap_or(Value::Null),
            -32600,
            "invalid request: no `method`".into(),
        ));
    };
    let empty = json!({});
    let params = m.get("params").unwrap_or(&empty);
    let result = call(hub, access, method, params);
    // A notification (no id) is done, whatever came of it.
    let id = id?;
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => error_reply(id, e.code, e.message),
    })
}

fn text<'a>(params: &'a Value, key: &str) -> Result<&'a str, RpcError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::params(format!("`params.{key}`: a string is needed")))
}

fn call(hub: &Hub, access: Access, method: &str, params: &Value) -> Result<Value, RpcError> {
    let reads = matches!(
        method,
        "Server.GetStatus" | "Server.GetRPCVersion" | "Client.GetStatus" | "Group.GetStatus"
    );
    if !reads && access == Access::Read {
        return Err(RpcError { code: -32600, message: crate::api::READ_ONLY.into() });
    }
    let now = status(hub);
    match method {
        "Server.GetRPCVersion" => Ok(json!({ "major": 2, "minor": 0, "patch": 0 })),
        "Server.GetStatus" => Ok(json!({ "server": now })),
        "Client.GetStatus" => {
            let id = text(params, "id")?;
            Ok(json!({ "client": known_client(&now, id)? }))
        }
        "Group.GetStatus" => {
            let id = text(params, "id")?;
            Ok(json!({ "group": known_group(&now, id)? }))
        }
        "Client.SetVolume" => {
            let id = text(params, "id")?;
            let old = known_client(&now, id)?.config.volume;
            let v = params.get("volume").ok_or_else(|| {
                RpcError::params("`params.volume`: {\"percent\": 0–100, \"muted\": bool} is needed")
            })?;
            let percent = match v.get("percent") {
                None => None,
                Some(p) => {
                    Some(p.as_f64().filter(|p| (0.0..=100.0).contains(p)).ok_or_else(|| {
                        RpcError::params("`params.volume.percent`: a number from 0 to 100")
                    })?)
                }
            };
            let muted = match v.get("muted") {
                None => None,
                Some(m) => Some(
                    m.as_bool()
                        .ok_or_else(|| RpcError::params("`params.volume.muted`: true or false"))?,
                ),
            };
            let patch = SettingsPatch {
                volume: percent.map(|p| p as f32),
                mute: muted,
                ..Default::default()
            };
            hub.apply(id, patch)?;
            let volume = Volume {
                muted: muted.unwrap_or(old.muted),
                percent: percent.map_or(old.percent, |p| p.round() as u32),
            };
            Ok(json!({ "volume": volume }))
        }
        "Client.SetLatency" => {
            let id = text(params, "id")?;
            known_client(&now, id)?;
            let latency = params
                .get("latency")
                .and_then(Value::as_i64)
                .filter(|l| (-1000..=1000).contains(l))
                .ok_or_else(|| {
                    RpcError::params("`params.latency`: whole milliseconds, −1000 to 1000")
                })?;
            hub.apply(id, SettingsPatch { delay_ms: Some(-latency as f64), ..Default::default() })?;
            Ok(json!({ "latency": latency }))
        }
        "Client.SetName" => {
            let id = text(params, "id")?;
            known_client(&now, id)?;
            let name = text(params, "name")?;
            let (view, _) =
                hub.apply(id, SettingsPatch { name: Some(name.to_owned()), ..Default::default() })?;
            Ok(json!({ "name": view.name }))
        }
        "Group.SetMute" => {
            let id = text(params, "id")?;
            let group = known_group(&now, id)?;
            let mute = params
                .get("mute")
                .and_then(Value::as_bool)
                .ok_or_else(|| RpcError::params("`params.mute`: true or false"))?;
            match id.strip_prefix(SOLO) {
                Some(player) => {
                    hub.apply(player, SettingsPatch { mute: Some(mute), ..Default::default() })?;
                }
                None => {
                    hub.zone_act(&group.id, &Command::Mute { mute, at: None })?;
                }
            }
            Ok(json!({ "mute": mute }))
        }
        "Group.SetStream" => {
            let id = text(params, "id")?;
            known_group(&now, id)?;
            let stream_id = text(params, "stream_id")?;
            let source = if stream_id == NO_STREAM {
                None
            } else {
                let s = now.streams.iter().find(|s| s.id == stream_id).ok_or_else(|| {
                    RpcError::params(format!(
                        "no stream `{stream_id}`: Server.GetStatus lists the streams"
                    ))
                })?;
                Some(s.uri["host"].as_str().unwrap_or_default().to_owned())
            };
            let zone = zone_for(hub, &now, id)?;
            hub.put_zone(Zone { source, ..zone })?;
            Ok(json!({ "stream_id": stream_id }))
        }
        "Group.SetClients" => {
            let id = text(params, "id")?;
            known_group(&now, id)?;
            let wanted: Vec<String> = params
                .get("clients")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| RpcError::params("`params.clients`: a list of client ids"))?;
            for c in &wanted {
                known_client(&now, c)?;
            }
            let zone = zone_for(hub, &now, id)?;
            let members: Vec<String> = status(hub)
                .group(&zone.name)
                .map(|g| g.clients.iter().map(|c| c.id.clone()).collect())
                .unwrap_or_default();
            for c in &wanted {
                if !members.contains(c) {
                    hub.apply(c, zone_patch(&zone.name))?;
                }
            }
            for c in members.iter().filter(|c| !wanted.contains(c)) {
                hub.apply(c, zone_patch(""))?;
            }
            Ok(json!({ "server": status(hub) }))
        }
        "Group.SetName" => {
            let id = text(params, "id")?;
            known_group(&now, id)?;
            let name = text(params, "name")?.trim().to_owned();
            if name.is_empty() {
                return Err(RpcError::params("`params.name`: a zone needs a name"));
            }
            rename(hub, &now, id, &name)?;
            Ok(json!({ "name": name }))
        }
        "Server.DeleteClient" => {
            let id = text(params, "id")?;
            known_client(&now, id)?;
            Err(RpcError::params(format!(
                "Tutti keeps every node it has seen; to lock `{id}` out, revoke it (the \
                 dashboard's pairing list, or DELETE /api/pairing/{id})"
            )))
        }
        "Stream.Control" => {
            let id = text(params, "id")?;
            if !now.streams.iter().any(|s| s.id == id) || id == NO_STREAM {
                return Err(RpcError::params(format!("no stream `{id}`")));
            }
            let command = text(params, "command")?;
            let action = match command.to_ascii_lowercase().as_str() {
                "play" => Command::Start,
                "pause" => Command::Pause,
                "playpause" => {
                    let playing = now.streams.iter().any(|s| {
                        s.id == id && s.properties["playbackStatus"].as_str() == Some("playing")
                    });
                    if playing { Command::Pause } else { Command::Start }
                }
                "stop" => Command::Stop,
                "next" => Command::Skip,
                other => {
                    return Err(RpcError::params(format!(
                        "`{other}`: a Tutti source takes play, pause, playPause, stop and next"
                    )));
                }
            };
            hub.act(id, action)?;
            Ok(json!("ok"))
        }
        "Stream.AddStream" | "Stream.RemoveStream" | "Stream.SetProperty" | "Stream.SetMeta" => {
            Err(RpcError {
                code: -32601,
                message: format!(
                    "{method}: Tutti's streams are its sources (`tutti stream` on any machine), \
                     not the hub's to add or remove"
                ),
            })
        }
        other => Err(RpcError { code: -32601, message: format!("method not found: {other}") }),
    }
}

fn known_client<'a>(now: &'a Server, id: &str) -> Result<&'a Client, RpcError> {
    now.client(id).ok_or_else(|| {
        RpcError::params(format!("no client `{id}`: Server.GetStatus lists the clients"))
    })
}

fn known_group<'a>(now: &'a Server, id: &str) -> Result<&'a Group, RpcError> {
    now.group(id).ok_or_else(|| {
        RpcError::params(format!("no group `{id}`: Server.GetStatus lists the groups"))
    })
}

fn zone_patch(zone: &str) -> SettingsPatch {
    SettingsPatch { zone: Some(zone.to_owned()), ..Default::default() }
}

/// The zone group `id` is; a player in no zone gets one named after it (Snapcast groups a new
/// client on its own; in Tutti a room is what plays a stream).
fn zone_for(hub: &Hub, now: &Server, id: &str) -> Result<Zone, RpcError> {
    let Some(player) = id.strip_prefix(SOLO) else {
        return hub
            .zones()
            .into_iter()
            .find(|z| z.name == id)
            .ok_or_else(|| RegistryError::NoZone(id.to_owned()).into());
    };
    let name = known_client(now, player)?.config.name.clone();
    if hub.zones().iter().any(|z| z.name == name) {
        return Err(RpcError::params(format!(
            "a room named `{name}` exists already: move `{player}` into it (Group.SetClients) \
             or rename the player first"
        )));
    }
    let zone = hub.put_zone(Zone { name: name.clone(), ..Zone::default() })?;
    hub.apply(player, zone_patch(&name))?;
    Ok(zone)
}

/// Renames group `id`: a zone's players move to a zone of the new name that keeps its stream
/// and latency (zones are known by their names); a player alone gets a zone of that name.
fn rename(hub: &Hub, now: &Server, id: &str, name: &str) -> Result<(), RpcError> {
    let group = known_group(now, id)?;
    if hub.zones().iter().any(|z| z.name == name) {
        return Err(RpcError::params(format!("a room named `{name}` exists already")));
    }
    let old = match id.strip_prefix(SOLO) {
        Some(_) => None,
        None => hub.zones().into_iter().find(|z| z.name == id),
    };
    hub.put_zone(Zone { name: name.to_owned(), ..old.clone().unwrap_or_default() })?;
    for c in &group.clients {
        hub.apply(&c.id, zone_patch(name))?;
    }
    if let Some(old) = old {
        hub.delete_zone(&old.name)?;
    }
    Ok(())
}

/// Where a session's answers and notifications go.
pub(crate) trait Outbox {
    /// Sends one message; false when the peer is gone.
    fn send(&mut self, text: String) -> impl std::future::Future<Output = bool> + Send;
}

/// A control connection: requests in, answers and notifications out.
pub(crate) struct Session {
    shown: Server,
    access: Access,
}

impl Session {
    pub(crate) fn new(hub: &Hub, access: Access) -> Self {
        Session { shown: status(hub), access }
    }

    /// Runs until `incoming` ends or the peer is gone.
    pub(crate) async fn run(
        mut self,
        hub: Hub,
        mut incoming: tokio::sync::mpsc::Receiver<String>,
        out: &mut impl Outbox,
    ) {
        let mut changes = hub.subscribe_changes();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = incoming.recv() => {
                    let Some(m) = m else { return };
                    // What changed before this request is told first.
                    if !self.tell(&hub, out).await {
                        return;
                    }
                    let reply = answer(&hub, self.access, &m);
                    // Its own changes are in its answer, not notified back.
                    self.shown = status(&hub);
                    if let Some(r) = reply && !out.send(r.to_string()).await {
                        return;
                    }
                }
                e = changes.recv() => {
                    if matches!(e, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    if !self.tell(&hub, out).await {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if !self.tell(&hub, out).await {
                        return;
                    }
                }
            }
        }
    }

    async fn tell(&mut self, hub: &Hub, out: &mut impl Outbox) -> bool {
        let now = status(hub);
        for n in self.shown.notifications(&now) {
            if !out.send(n.to_string()).await {
                return false;
            }
        }
        self.shown = now;
        true
    }
}

/// A TCP connection's writing half: `\r\n` after every message (what Snapcast sends, and
/// what the `snapcast` Python library waits for).
struct Lines<W>(W);

impl<W: AsyncWrite + Unpin + Send> Outbox for Lines<W> {
    async fn send(&mut self, mut text: String) -> bool {
        text.push_str("\r\n");
        self.0.write_all(text.as_bytes()).await.is_ok()
    }
}

/// Serves Snapcast's TCP control protocol on `listener` to the peers `setup` admits.
pub(crate) async fn serve(hub: Hub, listener: tokio::net::TcpListener, setup: SnapcastSetup) {
    loop {
        let (tcp, peer) = accept(&listener).await;
        let (read, mut write) = tcp.into_split();
        if !setup.admits(peer.ip()) {
            tracing::warn!(
                "Snapcast control: {peer} refused (not in --snapcast-allow; loopback always is)"
            );
            let refusal = error_reply(
                Value::Null,
                -32600,
                format!(
                    "{} is not admitted: the hub's owner can allow it with `tutti serve \
                     --snapcast-allow {}/32`",
                    peer.ip(),
                    peer.ip()
                ),
            );
            let _ = Lines(&mut write).send(refusal.to_string()).await;
            continue;
        }
        let hub = hub.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            tracing::info!("Snapcast control: {peer} connected");
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let reader = tokio::spawn(read_lines(read, tx));
            Session::new(&hub, Access::Admin).run(hub, rx, &mut Lines(write)).await;
            reader.abort();
            tracing::info!(
                "Snapcast control: {peer} gone after {:.0} s",
                started.elapsed().as_secs_f64()
            );
        });
    }
}

/// The next connection on a Snapcast listener (control or stream), without Nagle's delay; a
/// failed accept (out of descriptors) is retried after 100 ms.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads `\n`-ended messages of at most [`MAX_MESSAGE`] bytes into `tx`; a longer one ends
/// the connection (nothing unbounded is kept for a peer).
async fn read_lines(read: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::Sender<String>) {
    use tokio::io::AsyncReadExt;
    let mut read = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut read).take(MAX_MESSAGE as u64 + 1);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) if buf.len() > MAX_MESSAGE => {
                tracing::warn!("Snapcast control: a message over {MAX_MESSAGE} bytes; closing");
                return;
            }
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim().to_owned();
        if !line.is_empty() && tx.send(line).await.is_err() {
            return;
        }
    }
}

/// `POST /jsonrpc`: one message (or batch) answered; notifications need a connection.
pub(crate) async fn post(
    axum::extract::State(hub): axum::extract::State<Hub>,
    axum::Extension(access): axum::Extension<Access>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if body.len() > MAX_MESSAGE {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(error_reply(Value::Null, -32600, format!("over {MAX_MESSAGE} bytes"))),
        )
            .into_response();
    }
    match answer(&hub, access, &String::from_utf8_lossy(&body)) {
        Some(reply) => axum::Json(reply).into_response(),
        None => axum::http::StatusCode::NO_CONTENT.into_response(),
    }
}

/// `GET /jsonrpc` as a WebSocket: a [`Session`], each message a JSON-RPC message.
pub(crate) async fn websocket(
    axum::extract::State(hub): axum::extract::State<Hub>,
    axum::Extension(access): axum::Extension<Access>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    use axum::extract::ws::Message;
    use futures_util::StreamExt;
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| async move {
        let (sink, mut stream) = socket.split();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                match m {
                    Message::Text(t) if tx.send(t.to_string()).await.is_err() => return,
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        });
        Session::new(&hub, access).run(hub, rx, &mut Socket(sink)).await;
        reader.abort();
    })
}

/// A WebSocket's sending half.
struct Socket(
    futures_util::stream::SplitSink<axum::extract::ws::WebSocket, axum::extract::ws::Message>,
);

impl Outbox for Socket {
    async fn send(&mut self, text: String) -> bool {
        use futures_util::SinkExt;
        self.0.send(axum::extract::ws::Message::Text(text.into())).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_the_allowed_networks_are_admitted_and_no_one_else() {
        let setup = |allow: &[&str]| SnapcastSetup {
            listen: "0.0.0.0:1705".parse().unwrap(),
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = setup(&[]);
        assert!(none.admits(ip("127.0.0.1")) && none.admits(ip("::1")));
        assert!(none.admits(ip("::ffff:127.0.0.1")), "a v4 peer on a v6 socket");
        assert!(!none.admits(ip("192.168.1.20")));
        let lan = setup(&["192.168.1.0/24", "fd00::/8"]);
        assert!(lan.admits(ip("192.168.1.20")) && lan.admits(ip("::ffff:192.168.1.20")));
        assert!(lan.admits(ip("fd12::1")));
        assert!(!lan.admits(ip("192.168.2.20")) && !lan.admits(ip("10.0.0.1")));
    }
}
