//! Tutti's hub: the control plane. It knows every node (what it is, what it reports, how it is
//! set), groups players into zones, persists settings, and exposes all of it through an
//! HTTP and WebSocket API. Nodes keep a link to it (TCP, JSON lines, authenticated by each node's
//! credential from pairing, or by a passphrase network's key); commands reach them over that link at once. The hub is never on the audio path:
//! stop it and music plays on; start it and nodes reconnect within a second or two.
//!
//! # Layout
//! The JSON types (nodes, settings, zones, commands, events, link messages) are
//! [`tutti_proto::control`]'s: nodes speak them too.
//!
//! - this file: [`Hub`], the shared state (registry, event stream, node links) and the
//!   changes made to it (saved before they count).
//! - [`registry`]: the state and its rules, without I/O.
//! - [`store`]: settings on disk, written atomically.
//! - [`link`]: the node link's server side (and pairing).
//! - [`secrets`]: the network's keys, API tokens and paired nodes (owner-only file).
//! - `vault`: the secrets in use (tokens, credentials, pairing, revocation).
//! - `keys`: stream keys per stream, handed out over the links, rotated.
//! - `server`: [`HubConfig`], [`start`] (API, HTTPS, link, MQTT, mDNS) and [`RunningHub`].
//! - [`api`]: the HTTP + WebSocket API.
//! - [`mqtt`]: the MQTT bridge and the embedded broker.
//! - [`tls`]: the hub's own certificate and the HTTPS listener.
//! - [`discovery`]: mDNS (the hub advertised, nodes heard).
//! - [`guests`]: guest invitations (QR), guest credentials, the guest page.
//! - [`ha`]: Home Assistant MQTT discovery (a device per player and per zone).
//! - [`listen`]: a room's stream relayed to browsers, to play in sync with its players.
//! - [`sing`]: a guest's browser microphone sent on to the party host.
//! - [`calibrate`]: acoustic calibration: the sequence played, the recording estimated, the
//!   delays set, each node's history.
//! - [`watch`]: the passive drift watch: a microphone's snippets against the zone's program.
//! - [`snapcast`]: Snapcast's JSON-RPC control API (TCP, `/jsonrpc`), mapped onto zones,
//!   players and sources, for the apps that speak it.
//! - [`snapstream`]: Snapcast's stream protocol: snapclients play rooms as players of the hub.

#![forbid(unsafe_code)]
// The OpenAPI document is one `json!` literal.
#![recursion_limit = "256"]

pub mod api;
pub mod calibrate;
mod choir;
pub mod dashboard;
pub mod discovery;
pub mod guests;
pub mod ha;
mod keys;
pub mod link;
pub mod listen;
pub mod mqtt;
pub mod registry;
pub mod secrets;
mod server;
pub mod sing;
pub mod snapcast;
pub mod snapstream;
pub mod store;
pub mod tls;
mod vault;
pub mod watch;

pub(crate) use keys::Holder;
pub use keys::{ANNOUNCED_FOR, KEY_PROMOTE, KEY_RETIRE, NoStream, PARTY_KEYS};
pub use server::{HubConfig, MqttSetup, RunningHub, TOKEN_TTL, mqtt_credentials, start};
pub use vault::CredentialError;
pub(crate) use vault::Vault;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tutti_proto::NetworkKey;

use crate::registry::{Registry, RegistryError, SettingsPatch};
use crate::secrets::{PairedNode, Secrets, TokenError, Tokens};
use tutti_proto::control::{
    Command, DiscoveryStatus, Event, HealthMinute, HubStatus, KeySet, LinkMessage, NodeInfo,
    NodeView, PairedView, PairingOffer, StreamView, Zone, to_hex,
};
use tutti_proto::pairing::{PairGrant, PairLink, Token};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A socket could not be bound.
    #[error("{addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS's reason.
        message: String,
    },
    /// The state file is unreadable.
    #[error(transparent)]
    State(#[from] store::FileError),
    /// The HTTPS certificate could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Why a control request was not done (the API answers it with a status; MQTT publishes it on
/// the node's `command/error` topic).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such node or zone, or an invalid value.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The node cannot do that.
    #[error("node `{id}` cannot {kind} (it can: {can})")]
    Unsupported {
        /// The node.
        id: String,
        /// The action.
        kind: &'static str,
        /// What it can do.
        can: String,
    },
    /// A setting sent as an action.
    #[error(
        "`kind`: resync, identify, test_tone, say, say_status, start, pause, stop or skip here; volume, mute and delay are settings (PATCH /api/nodes/{{id}} or MQTT tutti/<node>/command with {{\"volume\": 40}})"
    )]
    NotAnAction,
    /// The node is not connected.
    #[error("node `{0}` is not connected")]
    Offline(String),
}

impl ControlError {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Registry(RegistryError::NoNode(_)) => "no_such_node",
            ControlError::Registry(RegistryError::NoZone(_)) => "no_such_zone",
            ControlError::Registry(RegistryError::Invalid { .. }) => "invalid",
            ControlError::Registry(RegistryError::NotSaved(_)) => "not_saved",
            ControlError::Unsupported { .. } => "unsupported",
            ControlError::NotAnAction => "invalid",
            ControlError::Offline(_) => "node_offline",
        }
    }
}

/// The hub's shared state: the registry, the event stream, and a command channel per
/// connected node.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    events: broadcast::Sender<Event>,
    /// The same events but the nodes' reports (a dashboard draws those from the registry at
    /// its own pace instead of waking for each).
    changes: broadcast::Sender<Event>,
    links: Arc<Mutex<HashMap<String, Link>>>,
    state_file: Option<PathBuf>,
    key: Option<NetworkKey>,
    vault: Arc<Mutex<Vault>>,
    heard: discovery::Heard,
    covers: Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>,
    /// Paired sources that fetched their keys, by id, with when (see [`Hub::announce`]).
    announced: Arc<Mutex<HashMap<String, (Holder, Instant)>>>,
    /// The rooms relayed to browsers (see [`listen`]).
    relays: listen::Relays,
    /// The browsers singing, mixed for those on headphones (see [`choir`]).
    choir: choir::Choir,
    /// Calibration runs (see [`calibrate`]).
    calibration_runs: calibrate::Runs,
    /// The zones whose drift is watched (see [`watch`]).
    watches: watch::Watches,
}

/// A connected node's channel, the paired node it proved to be (if any), and what decides
/// its stream keys.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) tx: mpsc::UnboundedSender<LinkMessage>,
    pub(crate) paired: Option<String>,
    pub(crate) holder: Holder,
    /// The key set last sent on this link (`None`: none yet).
    pub(crate) sent: Option<KeySet>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub").field("state_file", &self.state_file).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the settings in `state_file` (if any), the network's `secrets`, and (a
    /// passphrase network) `key`.
    pub fn new(
        state_file: Option<PathBuf>,
        key: Option<NetworkKey>,
        secrets: Secrets,
        secrets_file: Option<PathBuf>,
    ) -> Result<Self, HubError> {
        let persisted = match &state_file {
            Some(p) => store::load(p).map_err(HubError::State)?,
            None => Default::default(),
        };
        let (events, _) = broadcast::channel(1024);
        let (changes, _) = broadcast::channel(256);
        Ok(Hub {
            registry: Arc::new(Mutex::new(Registry::new(persisted))),
            events,
            changes,
            links: Arc::default(),
            state_file,
            key,
            vault: Arc::new(Mutex::new(Vault {
                secrets,
                file: secrets_file,
                tokens: Tokens::default(),
                link: String::new(),
                rotation: 0,
                fingerprint: None,
                mqtt: None,
                logins: Vec::new(),
                discovery: DiscoveryStatus::Off,
                invites: Vec::new(),
                web: String::new(),
            })),
            heard: Arc::default(),
            covers: Arc::default(),
            announced: Arc::default(),
            relays: listen::Relays::default(),
            choir: choir::Choir::default(),
            calibration_runs: calibrate::Runs::default(),
            watches: watch::Watches::default(),
        })
    }

    /// Makes a change to the registry that must last (settings, zones): saved before anyone
    /// hears of it, or undone and refused with [`RegistryError::NotSaved`]. Events are
    /// published once saved.
    pub fn change<R>(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<(R, Vec<Event>), RegistryError>,
    ) -> Result<R, RegistryError> {
        let (r, events) = {
            let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            let before = reg.persisted().clone();
            let (r, events) = f(&mut reg)?;
            if let Some(p) = &self.state_file
                && let Err(e) = store::save(p, reg.persisted())
            {
                reg.restore(before);
                return Err(RegistryError::NotSaved(e.to_string()));
            }
            (r, events)
        };
        for e in events {
            self.publish(e);
        }
        // A zone's stream or a node's zone may have changed: keys go out before any route.
        self.push_keys();
        Ok(r)
    }

    /// Runs `f` on the registry; publishes the events it returns and saves the settings if
    /// it says they changed (best effort: what a node reports, not what a user asked; user
    /// changes go through [`change`](Self::change)).
    pub fn with<R>(&self, f: impl FnOnce(&mut Registry) -> (R, Vec<Event>, bool)) -> R {
        let (r, events) = {
            let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            let (r, events, save) = f(&mut reg);
            if save && let Some(p) = &self.state_file {
                // A full disk loses the save, not the hub: the error is reported and the
                // settings stay in memory.
                if let Err(e) = store::save(p, reg.persisted()) {
                    tracing::warn!("could not save settings: {e}");
                }
            }
            (r, events)
        };
        for e in events {
            self.publish(e);
        }
        r
    }

    /// Subscribes to every change.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Subscribes to every change but the nodes' reports ([`Event::NodeState`]).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Event> {
        self.changes.subscribe()
    }

    /// Announces `e` to the API's, MQTT's and the dashboards' listeners.
    fn publish(&self, e: Event) {
        if !matches!(e, Event::NodeState { .. }) {
            let _ = self.changes.send(e.clone());
        }
        let _ = self.events.send(e);
    }

    /// Sends commands to a connected node; false if it is not connected.
    pub fn command(&self, id: &str, commands: Vec<Command>) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        match links.get(id) {
            Some(l) => commands.into_iter().all(|c| l.tx.send(LinkMessage::Command(c)).is_ok()),
            None => false,
        }
    }

    /// Changes a node's settings (as `PATCH /api/nodes/{id}` and MQTT do): saved, announced,
    /// and sent to the node if it is connected. Returns the node and whether it was reached
    /// (false: connected but its link refused the commands).
    pub fn apply(&self, id: &str, patch: SettingsPatch) -> Result<(NodeView, bool), RegistryError> {
        let (commands, view) = self.change(|r| {
            let (commands, events) = r.patch(id, patch)?;
            Ok(((commands, r.node(id, Instant::now())?), events))
        })?;
        let delivered = commands.is_empty() || !view.online || self.command(id, commands);
        Ok((view, delivered))
    }

    /// Sends an action (resync, identify) to a node that can do it.
    pub fn act(&self, id: &str, action: Command) -> Result<(), ControlError> {
        let view = self.with(|r| (r.node(id, Instant::now()), vec![], false))?;
        let kind = match &action {
            Command::Resync => "resync",
            Command::Identify => "identify",
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Stop => "stop",
            Command::Skip => "skip",
            Command::TestTone => "test_tone",
            Command::Say { text } => {
                let n = text.chars().count();
                if n == 0 || n > 500 || text.chars().any(char::is_control) {
                    return Err(ControlError::Registry(RegistryError::Invalid {
                        field: "text",
                        message: format!(
                            "{n} characters: say 1–500 characters of plain text, one line"
                        ),
                    }));
                }
                "say"
            }
            Command::SayStatus => "say",
            _ => return Err(ControlError::NotAnAction),
        };
        let action = match action {
            Command::SayStatus => {
                let latest = self.with(|r| (r.latest_calibration(id), vec![], false));
                Command::Say { text: spoken_status(&view, latest) }
            }
            other => other,
        };
        if !view.info.capabilities.iter().any(|k| k == kind) {
            return Err(ControlError::Unsupported {
                id: id.to_owned(),
                kind,
                can: view.info.capabilities.join(", "),
            });
        }
        if self.command(id, vec![action]) {
            Ok(())
        } else {
            Err(ControlError::Offline(id.to_owned()))
        }
    }

    /// A command for every player of zone `name` (see [`Registry::zone_command`]): volume and
    /// mute land on one stream frame everywhere. Returns how many players were reached.
    pub fn zone_act(&self, name: &str, command: &Command) -> Result<usize, ControlError> {
        let commands = self.change(|r| r.zone_command(name, command, Instant::now()))?;
        Ok(commands.into_iter().filter(|(id, c)| self.command(id, vec![c.clone()])).count())
    }

    /// Creates or changes a zone (as `PUT /api/zones/{name}` does): saved, announced, and its
    /// players routed to its stream.
    pub fn put_zone(&self, zone: Zone) -> Result<Zone, RegistryError> {
        let routes = self.change(|r| {
            let e = r.put_zone(zone.clone())?;
            Ok((r.zone_routes(&zone.name), vec![e]))
        })?;
        for (id, route) in routes {
            self.command(&id, vec![route]);
        }
        Ok(zone)
    }

    /// Removes a zone (its players stay, in no zone).
    pub fn delete_zone(&self, name: &str) -> Result<(), RegistryError> {
        self.change(|r| Ok(((), r.delete_zone(name)?)))
    }

    /// Every node, online or lost.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.with(|r| (r.nodes(Instant::now()), vec![], false))
    }

    /// Every zone.
    pub fn zones(&self) -> Vec<Zone> {
        self.with(|r| (r.zones(), vec![], false))
    }

    /// Each node's last hour of reports, a minute each, by id.
    pub fn health(&self) -> std::collections::BTreeMap<String, Vec<HealthMinute>> {
        self.with(|r| (r.health(Instant::now()), vec![], false))
    }

    /// The sources, with what they play and the zones that play them.
    pub fn streams(&self) -> Vec<StreamView> {
        let (nodes, zones) = self.with(|r| ((r.nodes(Instant::now()), r.zones()), vec![], false));
        StreamView::list(&nodes, &zones)
    }

    /// A one-time pairing token valid for `ttl_s` seconds: its link, and the link as a QR code
    /// with the HTTPS certificate's fingerprint under it (for a careful person to compare with
    /// what the browser shows).
    pub fn pairing_offer(&self, ttl_s: u64) -> PairingOffer {
        let link = self.issue_token(Duration::from_secs(ttl_s));
        let text = link.text();
        let qr_svg = self.qr_with_fingerprint(&text);
        let fingerprint = self.tls_fingerprint();
        PairingOffer {
            token: link.token.text(),
            how: format!("on the new node: tutti pair '{text}'"),
            link: text,
            hub: link.hub,
            expires_in_s: ttl_s,
            qr_svg,
            tls_fingerprint: fingerprint,
        }
    }

    /// `text` as a QR code (SVG), with the HTTPS certificate's fingerprint under it when the
    /// hub serves HTTPS (for a careful person to compare with what the browser shows).
    pub(crate) fn qr_with_fingerprint(&self, text: &str) -> String {
        let svg = qrcode::QrCode::new(text.as_bytes())
            .map(|q| q.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
            .unwrap_or_default();
        match self.tls_fingerprint() {
            Some(f) if f.len() > 48 => api::with_caption(
                &svg,
                &["HTTPS certificate SHA-256".to_owned(), f[..47].to_owned(), f[48..].to_owned()],
            ),
            _ => svg,
        }
    }

    /// Paired nodes (no credentials).
    pub fn paired_views(&self) -> Vec<PairedView> {
        self.paired()
            .0
            .into_iter()
            .map(|(id, n)| PairedView { id, name: n.name, paired_at: n.paired_at })
            .collect()
    }

    /// A source's cover art (MIME type, bytes), as it last sent it.
    pub fn cover(&self, id: &str) -> Option<(String, Vec<u8>)> {
        self.covers.lock().ok()?.get(id).cloned()
    }

    pub(crate) fn set_cover(&self, id: &str, cover: Option<(String, Vec<u8>)>) {
        if let Ok(mut c) = self.covers.lock() {
            match cover {
                Some(c2) => c.insert(id.to_owned(), c2),
                None => c.remove(id),
            };
        }
    }

    /// Nodes heard on mDNS, each with whether it is linked to this hub now.
    pub fn discovered(&self) -> Vec<(discovery::Discovered, bool)> {
        let heard: Vec<_> =
            self.heard.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        let online: Vec<String> = self.with(|r| {
            let ids = r.nodes(Instant::now()).into_iter().filter(|n| n.online).map(|n| n.info.id);
            (ids.collect(), vec![], false)
        });
        heard
            .into_iter()
            .map(|d| {
                let linked = online.contains(&d.id);
                (d, linked)
            })
            .collect()
    }

    /// A passphrase network's key, if nodes may join with it.
    pub fn key(&self) -> Option<&NetworkKey> {
        self.key.as_ref()
    }

    pub(crate) fn attach(&self, id: &str, link: Link) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), link);
    }

    pub(crate) fn detach(&self, id: &str, tx: &mpsc::UnboundedSender<LinkMessage>) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let current = links.get(id).is_some_and(|t| t.tx.same_channel(tx));
        if current {
            links.remove(id);
        }
        current
    }
}

/// A player's status in words, for speech: "Kitchen. Room: living room. Online, playing.
/// Volume 40 percent. Delay 75 milliseconds, calibrated."
pub fn spoken_status(
    view: &NodeView,
    calibrated: Option<tutti_proto::control::CalibrationRecord>,
) -> String {
    let ms = |v: f64| {
        let sign = if v < 0.0 { "minus " } else { "" };
        if v.abs() < 10.0 && v.fract().abs() > 0.05 {
            format!("{sign}{:.1} milliseconds", v.abs())
        } else {
            format!("{sign}{:.0} milliseconds", v.abs())
        }
    };
    let mut parts = vec![view.name.clone()];
    parts.push(match &view.settings.zone {
        Some(z) => format!("Room: {z}"),
        None => "In no room".into(),
    });
    parts.push(match (view.online, view.state.streaming) {
        (false, _) => "Offline".into(),
        (true, true) => "Online, playing".into(),
        (true, false) => "Online, waiting for its stream".into(),
    });
    if let Some(p) = &view.state.problem {
        parts.push(format!("Problem: {p}"));
    }
    if view.settings.mute {
        parts.push("Muted".into());
    } else {
        parts.push(format!("Volume {:.0} percent", view.settings.volume));
    }
    let delay = format!("Delay {}", ms(view.settings.delay_ms));
    parts.push(match calibrated {
        Some(c) if c.applied_delay_ms.is_some() => format!("{delay}, calibrated"),
        Some(_) => format!("{delay}; the last calibration could not hear it"),
        None => format!("{delay}; not calibrated"),
    });
    parts.join(". ") + "."
}
