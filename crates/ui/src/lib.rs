//! Tutti's dashboard: the hub's face for a household.
//!
//! The components here are written once with [dioxus] and shown two ways: the hub serves them as
//! its web page (dioxus liveview: the components run in the hub, the browser draws what they
//! render and sends back what the user does, over one WebSocket), and the desktop app shows them
//! in a window of its own. Both drive a [`Backend`]: the hub's own state in-process for the web
//! page, the hub's HTTP + WebSocket API for the desktop app. Every change goes through the same
//! calls the API makes, so a change from the dashboard is a change from the API.
//!
//! # Layout
//! - this file: [`Backend`], the [`Snapshot`] it starts from, the [`Change`]s that follow, the
//!   [`Action`]s a user takes, and [`Model`] (the snapshot kept current by the changes).
//! - `app`: the components ([`App`]) and the page's style ([`STYLE`]).

#![forbid(unsafe_code)]

mod app;

use std::collections::BTreeMap;
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use tutti_proto::control::{
    CalibrationView, Command, Event, GuestInvite, GuestView, HealthMinute, HubStatus, NodeState,
    NodeView, PairedView, PairingOffer, SettingsPatch, StreamView, Zone,
};

pub use app::{App, AppProps, STYLE};

/// Everything the dashboard shows, at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every node, online or lost.
    pub nodes: Vec<NodeView>,
    /// Every zone.
    pub zones: Vec<Zone>,
    /// Paired nodes.
    pub paired: Vec<PairedView>,
    /// Guests.
    pub guests: Vec<GuestView>,
    /// The hub itself.
    pub hub: HubStatus,
}

/// What happened since the snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A change the hub announced (drawn at once).
    Event(Event),
    /// What every node reports now (offsets, latencies, counters), by id: a backend sends
    /// these at most every [`REPORTS_EVERY`] (nodes report several times a second).
    Reports(Vec<(String, NodeState)>),
    /// Changes were missed (a slow page): take a new snapshot.
    Lagged,
}

/// What a user asks for. Each is one API call.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `PATCH /api/nodes/{id}`.
    Patch {
        /// The node.
        id: String,
        /// What changes.
        patch: SettingsPatch,
    },
    /// `POST /api/nodes/{id}/command` (resync, identify; start, pause, stop, skip).
    Command {
        /// The node.
        id: String,
        /// The action.
        command: Command,
    },
    /// `PUT /api/zones/{name}`.
    PutZone(Zone),
    /// `DELETE /api/zones/{name}`.
    DeleteZone(String),
    /// `POST /api/zones/{name}/command` (volume, mute on one frame; resync, identify).
    ZoneCommand {
        /// The zone.
        name: String,
        /// The command.
        command: Command,
    },
    /// `POST /api/pairing`: a one-time link for a new node.
    Pair,
    /// `DELETE /api/pairing/{id}`.
    Revoke(String),
    /// `POST /api/guests`: a one-time guest invitation (QR).
    InviteGuest,
    /// `DELETE /api/guests/{id}`: send a guest away.
    Kick(String),
}

/// What an action gave back.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// Done (what changed comes back as the hub's event).
    Ok,
    /// Saved, but the node has not taken it yet (it is offline or busy): it takes it when it
    /// is back.
    Saved,
    /// A pairing link.
    Pairing(PairingOffer),
    /// A guest invitation.
    Invite(GuestInvite),
}

/// Why an action was not done, in the API's words.
#[derive(Clone, Debug, PartialEq)]
pub struct UiError {
    /// The API's error code (`invalid`, `node_offline`, `read_only`...).
    pub code: String,
    /// The API's message: what is wrong and the fix.
    pub message: String,
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for UiError {}

/// Where the dashboard's data comes from and its actions go.
pub trait Backend {
    /// Everything, now.
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<Snapshot, UiError>>;
    /// The changes after [`snapshot`](Self::snapshot), as they happen (no polling).
    fn changes(&self) -> LocalBoxStream<'static, Change>;
    /// Does what the user asked.
    fn perform(&self, action: Action) -> LocalBoxFuture<'static, Result<Done, UiError>>;
    /// Each node's last hour of reports, a minute each, by id (`GET /api/health`).
    fn health(
        &self,
    ) -> LocalBoxFuture<'static, Result<BTreeMap<String, Vec<HealthMinute>>, UiError>>;
    /// Whether this login may only look.
    fn read_only(&self) -> bool;
    /// What an `<img>` shows for stream `id`'s cover art: the hub's own URL (a page on the
    /// hub, whose session cookie opens it), or the picture itself (an app elsewhere).
    fn cover_src(&self, id: &str) -> LocalBoxFuture<'static, Option<String>> {
        let url = format!("/api/streams/{id}/cover");
        Box::pin(async move { Some(url) })
    }
}

/// How often the figures that nodes report (offset, latency, counters; several reports a
/// second per node) are redrawn ([`Change::Reports`]): what a user changes is shown at once,
/// the reports of fifty nodes at most this often, so that a page left open costs the hub next
/// to nothing.
pub const REPORTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The dashboard's backend, shared by every component.
pub type SharedBackend = Rc<dyn Backend>;

/// The hub's state as the dashboard keeps it: a snapshot, kept current by the changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Nodes by id.
    pub nodes: BTreeMap<String, NodeView>,
    /// Zones by name.
    pub zones: BTreeMap<String, Zone>,
    /// Paired nodes.
    pub paired: Vec<PairedView>,
    /// Guests.
    pub guests: Vec<GuestView>,
    /// The hub.
    pub hub: HubStatus,
    /// Each zone's latest calibration heard of since the page opened, by zone.
    pub calibrations: BTreeMap<String, CalibrationView>,
    /// Each watched zone's acoustic drift (ms) as last declared, by zone.
    pub drift: BTreeMap<String, Option<f64>>,
    /// A snapshot has arrived.
    pub loaded: bool,
}

impl Model {
    /// The model of a snapshot.
    pub fn new(s: Snapshot) -> Self {
        Model {
            nodes: s.nodes.into_iter().map(|n| (n.info.id.clone(), n)).collect(),
            zones: s.zones.into_iter().map(|z| (z.name.clone(), z)).collect(),
            paired: s.paired,
            guests: s.guests,
            hub: s.hub,
            calibrations: BTreeMap::new(),
            drift: BTreeMap::new(),
            loaded: true,
        }
    }

    /// Applies an announced change; false when it changed nothing shown.
    pub fn apply(&mut self, e: Event) -> bool {
        match e {
            Event::NodeOnline { node } => {
                let node = *node;
                let same = self.nodes.get(&node.info.id) == Some(&node);
                self.nodes.insert(node.info.id.clone(), node);
                !same
            }
            Event::NodeLost { id } => match self.nodes.get_mut(&id) {
                Some(n) if n.online => {
                    n.online = false;
                    true
                }
                _ => false,
            },
            Event::NodeState { id, state } => match self.nodes.get_mut(&id) {
                Some(n) if n.state != *state => {
                    n.state = *state;
                    n.online = true;
                    n.last_seen_ms = 0;
                    true
                }
                _ => false,
            },
            Event::NodeSettings { id, settings } => match self.nodes.get_mut(&id) {
                Some(n) => {
                    n.name = settings
                        .name
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| n.info.name.clone());
                    n.settings = settings;
                    true
                }
                None => false,
            },
            Event::ZoneChanged { zone } => {
                self.zones.insert(zone.name.clone(), zone);
                true
            }
            Event::ZoneRemoved { name } => self.zones.remove(&name).is_some(),
            Event::Paired { nodes } => {
                let same = self.paired == nodes;
                self.paired = nodes;
                !same
            }
            Event::Guests { guests } => {
                let same = self.guests == guests;
                self.guests = guests;
                !same
            }
            Event::Calibration { run } => {
                let same = self.calibrations.get(&run.zone) == Some(&run);
                self.calibrations.insert(run.zone.clone(), *run);
                !same
            }
            Event::ZoneDrift { zone, drift_ms, .. } => {
                self.drift.insert(zone, drift_ms) != Some(drift_ms)
            }
        }
    }

    /// Takes the nodes' latest reports; false when none changed.
    pub fn report(&mut self, reports: Vec<(String, NodeState)>) -> bool {
        let mut changed = false;
        for (id, state) in reports {
            if let Some(n) = self.nodes.get_mut(&id)
                && n.state != state
            {
                n.state = state;
                changed = true;
            }
        }
        changed
    }

    /// The players, by name.
    pub fn players(&self) -> Vec<&NodeView> {
        let mut p: Vec<_> = self.nodes.values().filter(|n| n.info.role != "source").collect();
        p.sort_by(|a, b| a.name.cmp(&b.name).then(a.info.id.cmp(&b.info.id)));
        p
    }

    /// The sources, with what they play and the zones that play them.
    pub fn streams(&self) -> Vec<StreamView> {
        let nodes: Vec<NodeView> = self.nodes.values().cloned().collect();
        let zones: Vec<Zone> = self.zones.values().cloned().collect();
        StreamView::list(&nodes, &zones)
    }

    /// The players of zone `name`.
    pub fn members(&self, name: &str) -> Vec<&NodeView> {
        self.players().into_iter().filter(|n| n.settings.zone.as_deref() == Some(name)).collect()
    }
}

/// What kind of output a player's device is, for its card: "HDMI", "Bluetooth", "WAV file",
/// "speaker".
pub fn device_kind(device: &str) -> &'static str {
    let d = device.to_ascii_lowercase();
    if d == "wav" || d.ends_with(".wav") {
        "WAV file"
    } else if d.contains("hdmi") {
        "HDMI"
    } else if d.contains("bluez") || d.contains("bluetooth") || d.contains("a2dp") {
        "Bluetooth"
    } else if d.contains("monitor") || d.contains("capture") || d.contains("mic") {
        "input"
    } else if d.is_empty() || d == "null" {
        "no output"
    } else {
        "speaker"
    }
}

/// A link's quality from its packets' arrival jitter (RFC 3550, ms) against the latency the
/// node plays at (ms; 100 when not known): a packet arrives up to ~4 jitters late, and what
/// arrives after the latency is lost. Class for colour (`good`, `fair`, `poor`) and word.
pub fn link_quality(jitter_ms: f64, latency_ms: Option<f64>) -> (&'static str, &'static str) {
    let latency = latency_ms.filter(|l| *l > 0.0).unwrap_or(100.0);
    let used = 4.0 * jitter_ms / latency;
    if used <= 0.25 {
        ("good", "good")
    } else if used <= 0.75 {
        ("fair", "fair")
    } else {
        ("poor", "poor")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_quality_weighs_jitter_against_the_latency() {
        assert_eq!(link_quality(0.2, Some(20.0)).1, "good", "wired LAN at karaoke latency");
        assert_eq!(link_quality(10.0, Some(200.0)).1, "good", "busy Wi-Fi at 200 ms");
        assert_eq!(link_quality(2.0, Some(20.0)).1, "fair");
        assert_eq!(link_quality(5.0, Some(20.0)).1, "poor", "packets arrive after they play");
        assert_eq!(link_quality(10.0, None).1, "fair", "100 ms when the latency is unknown");
    }
    use tutti_proto::control::{NodeInfo, NodeState, Settings};

    fn node(id: &str, role: &str) -> NodeView {
        NodeView {
            info: NodeInfo {
                id: id.into(),
                name: id.into(),
                role: role.into(),
                address: "127.0.0.1:7400".into(),
                ..Default::default()
            },
            name: id.into(),
            online: true,
            last_seen_ms: 0,
            state: NodeState::default(),
            settings: Settings { volume: 100.0, ..Default::default() },
        }
    }

    #[test]
    fn the_model_follows_the_hubs_events_and_says_when_nothing_changed() {
        let mut m = Model::new(Snapshot {
            nodes: vec![node("a", "player"), node("s", "source")],
            ..Default::default()
        });
        assert_eq!(m.players().len(), 1);
        let state = NodeState { offset_us: Some(3.0), ..Default::default() };
        assert!(m.apply(Event::NodeState { id: "a".into(), state: Box::new(state.clone()) }));
        assert!(!m.apply(Event::NodeState { id: "a".into(), state: Box::new(state) }));
        assert!(!m.apply(Event::NodeState { id: "zz".into(), state: Box::default() }));
        let settings =
            Settings { name: Some("Kitchen".into()), zone: Some("k".into()), ..Default::default() };
        assert!(m.apply(Event::NodeSettings { id: "a".into(), settings }));
        assert_eq!(m.nodes["a"].name, "Kitchen");
        let settings = Settings { name: Some(String::new()), ..Default::default() };
        assert!(m.apply(Event::NodeSettings { id: "a".into(), settings }));
        assert_eq!(m.nodes["a"].name, "a", "an empty name goes back to the node's own");
        assert!(m.apply(Event::NodeLost { id: "a".into() }));
        assert!(!m.apply(Event::NodeLost { id: "a".into() }));
        let zone =
            Zone { name: "k".into(), source: Some("127.0.0.1:7400".into()), latency_ms: None };
        assert!(m.apply(Event::ZoneChanged { zone }));
        assert_eq!(m.streams()[0].zones, vec!["k".to_owned()]);
        assert!(m.apply(Event::ZoneRemoved { name: "k".into() }));
        assert!(!m.apply(Event::ZoneRemoved { name: "k".into() }));
    }

    #[test]
    fn device_kinds_are_named_as_people_know_them() {
        assert_eq!(device_kind("wav"), "WAV file");
        assert_eq!(device_kind("alsa_output.pci-0000_00_1f.3.hdmi-stereo"), "HDMI");
        assert_eq!(device_kind("bluez_sink.00_11_22.a2dp_sink"), "Bluetooth");
        assert_eq!(device_kind("default"), "speaker");
    }
}
