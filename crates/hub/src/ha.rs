//! Home Assistant MQTT discovery: every player a device with its entities, every zone a device
//! with its own, published retained under `homeassistant/` so Home Assistant (with its MQTT
//! integration) shows them without YAML. The entities read the hub's own topics and command
//! through them, so a change from Home Assistant takes the API's path (validated, saved, sent).
//!
//! | entity | of | reads | commands |
//! | --- | --- | --- | --- |
//! | `number` volume (slider, %) | player | `tutti/<node>/state` | `tutti/<node>/command` `{"volume": N}` |
//! | `switch` mute | player | `tutti/<node>/state` | `{"mute": true/false}` |
//! | `select` zone (options: `(none)` and every zone) | player | `tutti/<node>/state` | `{"zone": "…"}` |
//! | `number` delay (ms, config) | player | `tutti/<node>/delay` | `tutti/<node>/delay/set` |
//! | `sensor` offset, drift, latency, jitter, underruns (diagnostic) | player | `tutti/<node>/state` | — |
//! | `button` resync, identify | player | — | `{"kind": "resync"}`, `{"kind": "identify"}` |
//! | `button` test tone, say status (diagnostic) | player | — | `{"kind": "test_tone"}`, `{"kind": "say_status"}` |
//! | `number` volume, `switch` mute | zone | `tutti/zone/<zone>/state` | `tutti/zone/<zone>/command` (the scheduled same-sample change) |
//! | `select` stream (options: `(none)` and every source) | zone | `tutti/zone/<zone>/state` | `{"stream": "…"}` |
//!
//! Every entity is available while the hub is (`tutti/hub/status`, its last will) and, for a
//! player, while the player is online. A discovery topic no longer wanted (a zone deleted) gets
//! an empty retained payload, which removes the entity; all of them go out again when Home
//! Assistant says `online` on `homeassistant/status` (it restarted).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tutti_proto::control::{NodeView, StreamView, Zone};

use crate::mqtt::topic_id;

/// Where Home Assistant listens for discovery.
pub const PREFIX: &str = "homeassistant";
/// Where Home Assistant says it (re)started.
pub const BIRTH_TOPIC: &str = "homeassistant/status";
/// The zone select's and the stream select's "nothing" option.
pub const NONE: &str = "(none)";

/// A name as Home Assistant's discovery topics and unique ids take it (`[A-Za-z0-9_-]`).
fn ha_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// One entity's discovery message: the retained config topic and its JSON.
type Entity = (String, Value);

/// What Tutti says it is, in every config.
fn origin() -> Value {
    json!({ "name": "Tutti", "sw_version": env!("CARGO_PKG_VERSION") })
}

/// Entity `what` of device `object`: `base` (its device, origin, availability) with its name,
/// ids and `fields`, under `homeassistant/<component>/<object>/<what>/config`.
fn entity_config(
    base: &Value,
    object: &str,
    component: &str,
    what: &str,
    name: &str,
    fields: Value,
) -> Entity {
    let mut config = base.clone();
    if let Value::Object(map) = &mut config {
        map.insert("name".into(), json!(name));
        map.insert("unique_id".into(), json!(format!("{object}_{what}")));
        map.insert("object_id".into(), json!(format!("{object}_{what}")));
        if let Value::Object(f) = fields {
            map.extend(f);
        }
    }
    (format!("{PREFIX}/{component}/{object}/{what}/config"), config)
}

/// The discovery messages of every player (its zone select listing `zones`) and every zone
/// (its stream select listing `streams`), by topic.
pub fn configs(
    nodes: &[NodeView],
    zones: &[Zone],
    streams: &[StreamView],
) -> BTreeMap<String, Value> {
    let zone_names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
    let mut all = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.info.role == "player") {
        all.extend(player(n, &zone_names));
    }
    for z in zones {
        all.extend(zone(z, streams));
    }
    all
}

fn player(n: &NodeView, zones: &[String]) -> Vec<Entity> {
    let t = topic_id(&n.info.id);
    let object = format!("tutti_{}", ha_id(&n.info.id));
    let state = format!("tutti/{t}/state");
    let command = format!("tutti/{t}/command");
    let can = |c: &str| n.info.capabilities.iter().any(|k| k == c);
    let base = json!({
        "device": {
            "identifiers": [object.clone()],
            "name": n.name,
            "manufacturer": "Tutti",
            "model": format!("{} ({})", n.info.role, n.info.device),
            "sw_version": n.info.version,
        },
        "origin": origin(),
        "availability": [
            { "topic": "tutti/hub/status" },
            { "topic": state, "value_template": "{{ 'online' if value_json.online else 'offline' }}" },
        ],
        "availability_mode": "all",
    });
    let entity = |component: &str, what: &str, name: &str, fields: Value| {
        entity_config(&base, &object, component, what, name, fields)
    };
    let mut out = Vec::new();
    if can("volume") {
        out.push(entity(
            "number",
            "volume",
            "Volume",
            json!({
                "state_topic": state, "value_template": "{{ value_json.settings.volume }}",
                "command_topic": command, "command_template": "{\"volume\": {{ value }}}",
                "min": 0, "max": 100, "step": 1, "mode": "slider", "unit_of_measurement": "%",
                "icon": "mdi:volume-high",
            }),
        ));
    }
    if can("mute") {
        out.push(entity(
            "switch",
            "mute",
            "Mute",
            json!({
                "state_topic": state,
                "value_template": "{{ 'ON' if value_json.settings.mute else 'OFF' }}",
                "command_topic": command,
                "payload_on": "{\"mute\": true}", "payload_off": "{\"mute\": false}",
                "state_on": "ON", "state_off": "OFF", "icon": "mdi:volume-off",
            }),
        ));
    }
    let mut options = vec![NONE.to_owned()];
    options.extend(zones.iter().cloned());
    out.push(entity("select", "zone", "Room", json!({
        "state_topic": state,
        "value_template": format!("{{{{ value_json.settings.zone or '{NONE}' }}}}"),
        "command_topic": command,
        "command_template": format!("{{\"zone\": {{{{ ('' if value == '{NONE}' else value) | tojson }}}}}}"),
        "options": options, "icon": "mdi:sofa",
    })));
    if can("delay") {
        out.push(entity("number", "delay", "Delay", json!({
            "state_topic": format!("tutti/{t}/delay"), "command_topic": format!("tutti/{t}/delay/set"),
            "min": -1000, "max": 1000, "step": 0.5, "mode": "box", "unit_of_measurement": "ms",
            "entity_category": "config", "icon": "mdi:timer-sand",
        })));
    }
    for (what, name, field, unit) in [
        ("offset", "Clock offset", "offset_us", "µs"),
        ("drift", "Clock drift", "skew_ppm", "ppm"),
        ("latency", "Latency", "latency_ms", "ms"),
        ("jitter", "Arrival jitter", "jitter_ms", "ms"),
    ] {
        out.push(entity("sensor", what, name, json!({
            "state_topic": state, "value_template": format!("{{{{ value_json.state.{field} }}}}"),
            "unit_of_measurement": unit, "state_class": "measurement",
            "entity_category": "diagnostic",
        })));
    }
    out.push(entity(
        "sensor",
        "underruns",
        "Underruns",
        json!({
            "state_topic": state, "value_template": "{{ value_json.state.underruns }}",
            "state_class": "total_increasing", "entity_category": "diagnostic",
            "icon": "mdi:alert-circle-outline",
        }),
    ));
    // Buttons: (capability, object id and the command's kind, name, what else HA is told).
    let buttons = [
        ("resync", "resync", "Resync", json!({"entity_category": "config", "icon": "mdi:sync"})),
        ("identify", "identify", "Identify", json!({"device_class": "identify"})),
        (
            "test_tone",
            "test_tone",
            "Test tone",
            json!({"entity_category": "diagnostic", "icon": "mdi:sine-wave"}),
        ),
        (
            "say",
            "say_status",
            "Say status",
            json!({"entity_category": "diagnostic", "icon": "mdi:account-voice"}),
        ),
    ];
    for (capability, what, name, mut fields) in buttons {
        if can(capability) {
            fields["command_topic"] = json!(command);
            fields["payload_press"] = json!(format!("{{\"kind\": \"{what}\"}}"));
            out.push(entity("button", what, name, fields));
        }
    }
    out
}

fn zone(z: &Zone, streams: &[StreamView]) -> Vec<Entity> {
    let t = topic_id(&z.name);
    let object = format!("tutti_zone_{}", ha_id(&z.name));
    let state = format!("tutti/zone/{t}/state");
    let command = format!("tutti/zone/{t}/command");
    let base = json!({
        "device": {
            "identifiers": [object.clone()],
            "name": format!("{} (Tutti room)", z.name),
            "manufacturer": "Tutti",
            "model": "room",
        },
        "origin": origin(),
        "availability": [{ "topic": "tutti/hub/status" }],
    });
    let entity = |component: &str, what: &str, name: &str, fields: Value| {
        entity_config(&base, &object, component, what, name, fields)
    };
    let mut options = vec![NONE.to_owned()];
    options.extend(stream_names(streams).into_iter().map(|(name, _)| name));
    vec![
        entity(
            "number",
            "volume",
            "Volume",
            json!({
                "state_topic": state, "value_template": "{{ value_json.volume }}",
                "command_topic": command,
                "command_template": "{\"kind\": \"volume\", \"percent\": {{ value }}}",
                "min": 0, "max": 100, "step": 1, "mode": "slider", "unit_of_measurement": "%",
                "icon": "mdi:volume-high",
            }),
        ),
        entity(
            "switch",
            "mute",
            "Mute",
            json!({
                "state_topic": state,
                "value_template": "{{ 'ON' if value_json.mute else 'OFF' }}",
                "command_topic": command,
                "payload_on": "{\"kind\": \"mute\", \"mute\": true}",
                "payload_off": "{\"kind\": \"mute\", \"mute\": false}",
                "state_on": "ON", "state_off": "OFF", "icon": "mdi:volume-off",
            }),
        ),
        entity(
            "select",
            "stream",
            "Stream",
            json!({
                "state_topic": state,
                "value_template": format!("{{{{ value_json.stream or '{NONE}' }}}}"),
                "command_topic": command,
                "command_template": "{\"stream\": {{ value | tojson }}}",
                "options": options, "icon": "mdi:playlist-music",
            }),
        ),
    ]
}

/// Every source by the name a select shows (its name; its id after it when two share one),
/// with its address.
pub fn stream_names(streams: &[StreamView]) -> Vec<(String, String)> {
    streams
        .iter()
        .map(|s| {
            let twins = streams.iter().filter(|o| o.name == s.name).count();
            let name = if twins > 1 { format!("{} ({})", s.name, s.id) } else { s.name.clone() };
            (name, s.address.clone())
        })
        .collect()
}

/// A zone's state for its entities: the members' volume (their mean), muted when every member
/// is, the stream it plays by the select's name.
pub fn zone_state(z: &Zone, members: &[&NodeView], streams: &[StreamView]) -> Value {
    let volume = if members.is_empty() {
        None
    } else {
        let sum: f32 = members.iter().map(|n| n.settings.volume).sum();
        Some((sum / members.len() as f32).round())
    };
    let mute = !members.is_empty() && members.iter().all(|n| n.settings.mute);
    let names = stream_names(streams);
    let stream = streams
        .iter()
        .zip(names)
        .find(|(s, _)| s.zones.contains(&z.name))
        .map(|(_, (name, _))| name);
    json!({ "volume": volume, "mute": mute, "stream": stream, "source": z.source, "players": members.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutti_proto::control::{NodeInfo, Settings};

    fn player(id: &str, caps: &[&str]) -> NodeView {
        NodeView {
            info: NodeInfo {
                id: id.into(),
                name: id.into(),
                role: "player".into(),
                device: "hdmi".into(),
                capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
                ..Default::default()
            },
            name: "Living room TV".into(),
            online: true,
            last_seen_ms: 0,
            state: Default::default(),
            settings: Settings::default(),
        }
    }

    #[test]
    fn a_player_is_one_device_whose_entities_name_the_hubs_topics() {
        let n = player("tv/1", &["volume", "mute", "delay", "resync", "identify"]);
        let zones = [Zone { name: "den".into(), source: None, latency_ms: None }];
        let all = configs(std::slice::from_ref(&n), &zones, &[]);
        let volume = &all["homeassistant/number/tutti_tv_1/volume/config"];
        assert_eq!(volume["unique_id"], "tutti_tv_1_volume");
        assert_eq!(volume["command_topic"], "tutti/tv_1/command");
        assert_eq!(volume["state_topic"], "tutti/tv_1/state");
        assert_eq!(volume["device"]["identifiers"][0], "tutti_tv_1");
        assert_eq!(volume["device"]["name"], "Living room TV");
        assert_eq!(volume["availability_mode"], "all");
        let select = &all["homeassistant/select/tutti_tv_1/zone/config"];
        assert_eq!(select["options"], json!(["(none)", "den"]));
        assert_eq!(
            select["command_template"],
            "{\"zone\": {{ ('' if value == '(none)' else value) | tojson }}}"
        );
        assert_eq!(select["value_template"], "{{ value_json.settings.zone or '(none)' }}");
        let identify = &all["homeassistant/button/tutti_tv_1/identify/config"];
        assert_eq!(identify["device_class"], "identify");
        let zone = &all["homeassistant/select/tutti_zone_den/stream/config"];
        assert_eq!(zone["command_topic"], "tutti/zone/den/command");
        // Without the capability, no entity.
        let quiet = configs(&[player("p", &[])], &[], &[]);
        assert!(quiet.keys().all(|k| !k.contains("volume") && !k.contains("resync")), "{quiet:?}");
        assert!(quiet.contains_key("homeassistant/sensor/tutti_p/offset/config"));
    }

    #[test]
    fn a_rooms_state_is_its_players_mean_volume_and_the_stream_routed_to_it() {
        let stream = |id: &str, name: &str, zones: &[&str]| StreamView {
            id: id.into(),
            name: name.into(),
            online: true,
            address: format!("10.0.0.1:{}", 7400 + id.len()),
            stream: None,
            track: None,
            players: None,
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            controls: Vec::new(),
        };
        let streams =
            [stream("a", "radio", &[]), stream("bb", "radio", &["den"]), stream("c", "tv", &[])];
        let names: Vec<String> = stream_names(&streams).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["radio (a)", "radio (bb)", "tv"], "twins told apart");
        let den =
            Zone { name: "den".into(), source: Some("10.0.0.1:7402".into()), latency_ms: None };
        let mut a = player("a", &[]);
        let mut b = player("b", &[]);
        (a.settings.volume, b.settings.volume) = (40.0, 61.0);
        a.settings.mute = true;
        let state = zone_state(&den, &[&a, &b], &streams);
        assert_eq!(state["volume"], 51.0);
        assert_eq!(state["mute"], false, "muted only when every player is");
        assert_eq!(state["stream"], "radio (bb)");
        let empty = zone_state(&den, &[], &streams);
        assert!(empty["volume"].is_null() && empty["mute"] == false);
    }
}
