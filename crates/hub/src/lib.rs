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
//! - [`registry`]: the state and its rules, without I/O.
//! - [`store`]: settings on disk, written atomically.
//! - [`link`]: the node link's server side (and pairing).
//! - [`secrets`]: the network's keys, API tokens and paired nodes (owner-only file).
//! - [`api`]: the HTTP + WebSocket API.

#![forbid(unsafe_code)]

pub mod api;
pub mod discovery;
pub mod link;
pub mod mqtt;
pub mod registry;
pub mod secrets;
pub mod store;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tutti_proto::NetworkKey;

use crate::registry::{Registry, RegistryError, SettingsPatch};
use crate::secrets::{PairedNode, Secrets, TokenError, Tokens};
use tutti_proto::control::{Command, Event, KeySet, LinkMessage, NodeInfo, NodeView, to_hex};
use tutti_proto::pairing::{PairGrant, PairLink, Token};

/// How long a new stream key is accepted before sources send with it (every node has it by
/// then: the hub pushes keys to all links at once).
pub const KEY_PROMOTE: Duration = Duration::from_secs(2);
/// How long the previous stream key is still accepted after the switch (packets in flight,
/// retransmissions).
pub const KEY_RETIRE: Duration = Duration::from_secs(10);
/// How long a pairing token lives unless asked otherwise.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// How to run a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// HTTP + WebSocket API address (plain: keep it on 127.0.0.1, see `https`).
    pub http: SocketAddr,
    /// HTTPS + WebSocket address of the same API, with the hub's own certificate (kept beside
    /// `state_file`; `None`: no HTTPS).
    pub https: Option<SocketAddr>,
    /// Node link address.
    pub link: SocketAddr,
    /// Where settings are kept (`None`: memory only).
    pub state_file: Option<PathBuf>,
    /// A passphrase network's key: nodes holding it join without pairing (`None`: paired
    /// nodes only).
    pub key: Option<NetworkKey>,
    /// The network's secrets (tokens, stream keys, paired nodes).
    pub secrets: Secrets,
    /// Where the secrets are kept (`None`: memory only).
    pub secrets_file: Option<PathBuf>,
    /// The address nodes reach the link at, for pairing links (`host:port`; `None`: found
    /// from the link address and this machine's interfaces).
    pub advertise: Option<String>,
    /// How often the stream keys rotate.
    pub key_lifetime: Duration,
    /// MQTT: an embedded broker, an external one, or none.
    pub mqtt: Option<MqttSetup>,
    /// Advertise the hub and listen for nodes on mDNS.
    pub mdns: bool,
}

/// Where the hub's MQTT tree lives.
#[derive(Clone, Debug)]
pub enum MqttSetup {
    /// A broker of the hub's own (rumqttd) on this address, admitting these credentials.
    Embedded {
        /// Listen address (port 0: any free port).
        listen: SocketAddr,
        /// User name and password clients must give.
        credentials: (String, String),
    },
    /// An external broker (Mosquitto, say).
    External(mqtt::BrokerAddr),
}

/// The MQTT user name and password for a network: anyone holding the network key can derive
/// them (`tutti serve` prints them).
pub fn mqtt_credentials(key: &NetworkKey) -> (String, String) {
    let proof = key.prove(b"tutti mqtt password");
    ("tutti".to_owned(), tutti_proto::control::to_hex(&proof[..12]))
}

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

/// Why a node has no credential on this hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// It was revoked.
    #[error("node `{0}` was revoked: it can pair again only with a new token from the hub")]
    Revoked(String),
    /// It was never paired here.
    #[error("no paired node `{0}` on this hub: pair it with `tutti pair LINK`")]
    Unknown(String),
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
        "`kind`: resync, identify, start, pause, stop or skip here; volume, mute and delay are settings (PATCH /api/nodes/{{id}} or MQTT tutti/<node>/command with {{\"volume\": 40}})"
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
    links: Arc<Mutex<HashMap<String, Link>>>,
    state_file: Option<PathBuf>,
    key: Option<NetworkKey>,
    vault: Arc<Mutex<Vault>>,
    heard: discovery::Heard,
    covers: Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>,
    /// Paired sources that fetched their keys, by id, with when (see [`Hub::announce`]).
    announced: Arc<Mutex<HashMap<String, (Holder, Instant)>>>,
}

/// How long a source that fetched its keys counts as sending before its link is up.
pub const ANNOUNCED_FOR: Duration = Duration::from_secs(30);

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

/// Who holds stream keys, as far as choosing them goes: a node's role, the streams it sends
/// (a source: its addresses as players reach them) or the stream it follows (a player).
#[derive(Clone, Debug, Default)]
pub(crate) struct Holder {
    pub(crate) id: String,
    pub(crate) role: String,
    pub(crate) sends: Vec<SocketAddr>,
    pub(crate) follows: Option<String>,
}

impl Holder {
    /// From a node's hello, its link coming from `peer`: a stream bound to every interface
    /// is reached at the peer's address; a source cannot claim an address that is not its
    /// machine's (another source's players would be handed its keys).
    pub(crate) fn of(info: &NodeInfo, peer: std::net::IpAddr) -> Self {
        let sends = if info.role == "source" {
            info.streams
                .iter()
                .filter_map(|s| s.parse::<SocketAddr>().ok())
                .map(|a| if a.ip().is_unspecified() { SocketAddr::new(peer, a.port()) } else { a })
                .filter(|a| a.ip() == peer || (is_local(a.ip()) && is_local(peer)))
                .collect()
        } else {
            Vec::new()
        };
        Holder {
            id: info.id.clone(),
            role: info.role.clone(),
            sends,
            follows: if info.role == "player" { info.streams.first().cloned() } else { None },
        }
    }
}

/// Why the hub hands a node no stream's keys (said to it, and shown as its problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoStream {
    /// A role that sends or plays no stream.
    #[error("a node of role `{0}` holds no stream keys")]
    Role(String),
    /// A player in no zone (or one that plays nothing) that was started with no stream.
    #[error("this player follows no stream")]
    FollowsNone,
    /// A player in no zone following a stream a zone plays.
    #[error("{stream} is zone `{zone}`'s stream: put this player in that zone to hear it")]
    Zones {
        /// The stream it follows.
        stream: String,
        /// The zone that plays it.
        zone: String,
    },
    /// No source linked to the hub sends that stream (yet).
    #[error("no source linked to the hub sends {0} yet: its keys come when it does")]
    NotLinked(String),
}

/// The label of the key every party process (microphones, mixers) shares.
pub const PARTY_KEYS: &str = "party";

/// Whether `ip` is this machine's (loopback, or an address a socket can bind).
fn is_local(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The addresses `stream` (`host:port`) names; a host name is looked up (off the async
/// threads).
fn addresses(stream: &str) -> Vec<SocketAddr> {
    if let Ok(a) = stream.parse::<SocketAddr>() {
        return vec![a];
    }
    store::blocking(|| {
        use std::net::ToSocketAddrs;
        stream.to_socket_addrs().map(Iterator::collect).unwrap_or_default()
    })
}

/// Whether two stream addresses are one: the same port on the same address, or on two
/// addresses of this machine (a source on the hub's machine links from 127.0.0.1).
fn same_stream(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.port() == y.port() && (x.ip() == y.ip() || (is_local(x.ip()) && is_local(y.ip())))
        })
    })
}

/// Whether `b` tells a node nothing new after `a`: equal, or both "no stream" for the same
/// reason (their random keys differ and open nothing either way).
fn same_keys(a: &KeySet, b: &KeySet) -> bool {
    a == b || (a.note.is_some() && a.note == b.note)
}

struct Vault {
    secrets: Secrets,
    file: Option<PathBuf>,
    tokens: Tokens,
    link: String,
    rotation: u64,
    /// The HTTPS certificate's SHA-256 fingerprint, when serving HTTPS.
    fingerprint: Option<String>,
}

impl Vault {
    /// Changes the secrets and saves them; a change that cannot be saved is undone and
    /// refused (a revocation that a restart would forget must not look done).
    fn change<R>(&mut self, f: impl FnOnce(&mut Secrets) -> R) -> Result<R, RegistryError> {
        let before = self.secrets.clone();
        let r = f(&mut self.secrets);
        if let Some(p) = &self.file
            && let Err(e) = self.secrets.save(p)
        {
            self.secrets = before;
            return Err(RegistryError::NotSaved(e.to_string()));
        }
        Ok(r)
    }
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
        Ok(Hub {
            registry: Arc::new(Mutex::new(Registry::new(persisted))),
            events,
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
            })),
            heard: Arc::default(),
            covers: Arc::default(),
            announced: Arc::default(),
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
            let _ = self.events.send(e);
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
                    eprintln!("tutti hub: could not save settings: {e}");
                }
            }
            (r, events)
        };
        for e in events {
            let _ = self.events.send(e);
        }
        r
    }

    /// Subscribes to every change.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
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
        let kind = match action {
            Command::Resync => "resync",
            Command::Identify => "identify",
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Stop => "stop",
            Command::Skip => "skip",
            _ => return Err(ControlError::NotAnAction),
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

    fn vault<R>(&self, f: impl FnOnce(&mut Vault) -> R) -> R {
        f(&mut self.vault.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The admin and read-only API tokens.
    pub fn api_tokens(&self) -> (String, String) {
        self.vault(|v| (v.secrets.admin_token.clone(), v.secrets.read_token.clone()))
    }

    /// The SHA-256 fingerprint of the hub's HTTPS certificate (when it serves HTTPS).
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.vault(|v| v.fingerprint.clone())
    }

    /// The network's name.
    pub fn network(&self) -> String {
        self.vault(|v| v.secrets.network.clone())
    }

    /// Issues a one-time pairing token valid for `ttl`, as a link.
    pub fn issue_token(&self, ttl: Duration) -> PairLink {
        self.vault(|v| {
            let token = v.tokens.issue(ttl, Instant::now());
            PairLink { hub: v.link.clone(), token }
        })
    }

    pub(crate) fn take_token(&self, id: &str) -> Result<Token, TokenError> {
        self.vault(|v| v.tokens.take(id, Instant::now()))
    }

    /// Pairs a node that presented a good token: its id and credential, saved (or refused).
    pub(crate) fn grant(&self, name: &str) -> Result<PairGrant, RegistryError> {
        self.vault(|v| {
            let (node, credential) = v.change(|s| s.pair(name))?;
            Ok(PairGrant { node, credential, network: v.secrets.network.clone() })
        })
    }

    /// A paired node's credential (hex), or why it has none.
    pub(crate) fn credential(&self, id: &str) -> Result<String, CredentialError> {
        self.vault(|v| match (v.secrets.nodes.get(id), v.secrets.revoked.get(id)) {
            (Some(n), _) => Ok(n.credential.clone()),
            (None, Some(_)) => Err(CredentialError::Revoked(id.to_owned())),
            (None, None) => Err(CredentialError::Unknown(id.to_owned())),
        })
    }

    /// The stream keys `holder` gets: a source its own stream's; a player the keys of the
    /// stream its zone plays, or, in a zone that plays nothing or in none, of the stream it
    /// follows unless a zone plays that one (join the zone to hear it); party processes the
    /// party's. Otherwise fresh random keys that open nothing, with the reason.
    pub(crate) fn keys_for(&self, holder: &Holder) -> KeySet {
        match self.stream_of(holder) {
            Ok((label, stream)) => {
                KeySet { stream, ..self.vault(|v| v.secrets.stream_keys(&label)) }
            }
            Err(why) => KeySet {
                send: to_hex(&tutti_os::random::<32>()),
                accept: Vec::new(),
                note: Some(why.to_string()),
                stream: None,
            },
        }
    }

    /// A source about to send (it fetched its keys): its players get its keys from now on,
    /// before its link is up.
    pub(crate) fn announce(&self, holder: Holder) {
        let mut a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|_, (_, at)| at.elapsed() < ANNOUNCED_FOR);
        a.insert(holder.id.clone(), (holder, Instant::now()));
    }

    /// The label of the stream `holder` may decode and, when its zone chose it, the stream's
    /// address; or why none.
    fn stream_of(&self, holder: &Holder) -> Result<(String, Option<String>), NoStream> {
        match holder.role.as_str() {
            "source" => return Ok((holder.id.clone(), None)),
            "mic" | "mixer" | "party" => return Ok((PARTY_KEYS.to_owned(), None)),
            "player" => {}
            other => return Err(NoStream::Role(other.to_owned())),
        }
        let (zone, zones) = self.with(|r| {
            let zone = r.settings(&holder.id).zone;
            let zones = r.zones();
            ((zone, zones), vec![], false)
        });
        let routed = zone
            .as_deref()
            .and_then(|z| zones.iter().find(|x| x.name == z))
            .and_then(|z| z.source.clone());
        let target = match (&routed, &holder.follows) {
            (Some(s), _) | (None, Some(s)) => s.clone(),
            (None, None) => return Err(NoStream::FollowsNone),
        };
        let at = addresses(&target);
        if routed.is_none()
            && let Some(z) = zones
                .iter()
                .find(|z| z.source.as_deref().is_some_and(|s| same_stream(&addresses(s), &at)))
        {
            return Err(NoStream::Zones { stream: target, zone: z.name.clone() });
        }
        let sends = |h: &Holder| h.role == "source" && same_stream(&h.sends, &at);
        let linked = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|l| l.paired.is_some() && sends(&l.holder))
            .map(|l| l.holder.id.clone());
        let label = linked
            .or_else(|| {
                let a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
                a.values()
                    .find(|(h, at)| at.elapsed() < ANNOUNCED_FOR && sends(h))
                    .map(|(h, _)| h.id.clone())
            })
            .ok_or(NoStream::NotLinked(target))?;
        Ok((label, routed))
    }

    /// Sends every paired link whose keys changed its new keys (sealed with its credential),
    /// before anything else is said to it.
    pub(crate) fn push_keys(&self) {
        let links: Vec<(String, Link)> = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        for (id, l) in links {
            let Some(p) = &l.paired else { continue };
            let Ok(c) = self.credential(p) else { continue };
            let set = self.keys_for(&l.holder);
            if l.sent.as_ref().is_some_and(|s| same_keys(s, &set)) {
                continue;
            }
            let Some(sealed) = Secrets::seal_for(&c, &set) else { continue };
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            // Sent on the link it was made for (a node that reconnected meanwhile got its
            // keys in its welcome).
            if let Some(now) = links.get_mut(&id)
                && now.tx.same_channel(&l.tx)
            {
                let _ = now.tx.send(LinkMessage::Keys { sealed });
                now.sent = Some(set);
            }
        }
    }

    /// Paired nodes by id (credentials left out), and revoked ids with when.
    pub fn paired(&self) -> (Vec<(String, PairedNode)>, Vec<(String, u64)>) {
        self.vault(|v| {
            let nodes = v
                .secrets
                .nodes
                .iter()
                .map(|(id, n)| (id.clone(), PairedNode { credential: String::new(), ..n.clone() }))
                .collect();
            (nodes, v.secrets.revoked.iter().map(|(k, t)| (k.clone(), *t)).collect())
        })
    }

    /// Revokes a paired node: its credential is forgotten, its links are closed, and the
    /// stream keys rotate so what it holds stops working. `Ok(false)` if it was not paired;
    /// an error (and nothing revoked) if the revocation cannot be saved.
    pub fn revoke(&self, id: &str) -> Result<bool, RegistryError> {
        if !self.vault(|v| v.change(|s| s.revoke(id)))? {
            return Ok(false);
        }
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for l in links.values().filter(|l| l.paired.as_deref() == Some(id)) {
            let message = "this node was revoked by the hub's administrator".to_owned();
            let _ = l.tx.send(LinkMessage::Refused { message });
        }
        drop(links);
        // The revocation is saved; a rotation that cannot be saved now is retried by the
        // periodic one (the revoked node is refused on the link meanwhile).
        if let Err(e) = self.rotate_keys() {
            eprintln!("tutti hub: {e}");
        }
        Ok(true)
    }

    /// Rotates the stream keys in three steps: every paired node accepts a new key; after
    /// [`KEY_PROMOTE`] everyone sends with it; after [`KEY_RETIRE`] more the old key is
    /// refused. Needs a tokio runtime. Returns the rotation's number, or an error (and no
    /// rotation) if the new key cannot be saved. A later step that cannot be saved is not
    /// taken (the old key keeps working) and said.
    pub fn rotate_keys(&self) -> Result<u64, RegistryError> {
        let new = to_hex(&tutti_os::random::<32>());
        let (old, n) = self.vault(|v| {
            v.change(|s| s.keys.accept.push(new.clone()))?;
            v.rotation += 1;
            Ok::<_, RegistryError>((v.secrets.keys.send.clone(), v.rotation))
        })?;
        self.push_keys();
        let hub = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEY_PROMOTE).await;
            let promoted = hub.vault(|v| {
                v.change(|s| {
                    if s.keys.send == old {
                        s.keys.accept.retain(|a| *a != new);
                        s.keys.accept.insert(0, old.clone());
                        s.keys.send = new.clone();
                        s.keys_since = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                    }
                })
            });
            if let Err(e) = promoted {
                eprintln!(
                    "tutti hub: key rotation {n} stopped before sending with the new key: {e}"
                );
                return;
            }
            hub.push_keys();
            tokio::time::sleep(KEY_RETIRE).await;
            let retired = hub.vault(|v| {
                // The latest rotation retires every older key; an earlier one only its own.
                let latest = v.rotation == n;
                v.change(|s| {
                    if latest {
                        s.keys.accept.clear();
                    } else {
                        s.keys.accept.retain(|a| *a != old);
                    }
                })
            });
            if let Err(e) = retired {
                eprintln!("tutti hub: key rotation {n} could not retire the old key: {e}");
                return;
            }
            hub.push_keys();
        });
        Ok(n)
    }

    /// Whether a key rotation is under way (a new key accepted, or an old one not retired).
    pub fn rotating(&self) -> bool {
        self.vault(|v| !v.secrets.keys.accept.is_empty())
    }

    /// Whether a node was revoked after the sending key was made (its rotation did not happen
    /// or was not saved): the keys must rotate.
    pub fn revoked_since_keys(&self) -> bool {
        self.vault(|v| v.secrets.revoked.values().any(|&at| at > v.secrets.keys_since))
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

/// A running hub.
#[derive(Debug)]
pub struct RunningHub {
    /// The shared state.
    pub hub: Hub,
    /// Where the API listens.
    pub http: SocketAddr,
    /// Where the API listens with TLS, and the certificate's SHA-256 fingerprint.
    pub https: Option<(SocketAddr, String)>,
    /// Where nodes connect.
    pub link: SocketAddr,
    /// The MQTT broker the hub publishes to.
    pub mqtt: Option<mqtt::BrokerAddr>,
    discovery: Option<discovery::HubDiscovery>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    /// Stops serving.
    pub fn stop(self) {
        drop(self.discovery);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts the hub's servers on the current tokio runtime.
pub async fn start(config: HubConfig) -> Result<RunningHub, HubError> {
    let hub = Hub::new(
        config.state_file.clone(),
        config.key.clone(),
        config.secrets.clone(),
        config.secrets_file.clone(),
    )?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HubError::Bind { addr, message: e.to_string() })
    };
    let http_listener = bind(config.http).await?;
    let link_listener = bind(config.link).await?;
    let http = http_listener
        .local_addr()
        .map_err(|e| HubError::Bind { addr: config.http, message: e.to_string() })?;
    let link = link_listener
        .local_addr()
        .map_err(|e| HubError::Bind { addr: config.link, message: e.to_string() })?;
    let advertised = config.advertise.clone().unwrap_or_else(|| {
        let ip = if link.ip().is_unspecified() { primary_ip() } else { link.ip() };
        SocketAddr::new(ip, link.port()).to_string()
    });
    hub.vault(|v| v.link = advertised);
    let router = api::router(hub.clone());
    let mut tasks = Vec::new();
    let https = match config.https {
        None => None,
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|e| HubError::Bind { addr, message: e.to_string() })?;
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let host = tutti_os::hostname();
            names.extend([format!("{host}.local"), host]);
            let ip = if local.ip().is_unspecified() { primary_ip() } else { local.ip() };
            names.push(ip.to_string());
            if let Some(a) = &config.advertise
                && let Some((h, _)) = a.rsplit_once(':')
            {
                names.push(h.trim_matches(['[', ']']).to_owned());
            }
            names.sort();
            names.dedup();
            let dir = tls::cert_dir(config.state_file.as_deref());
            let (cert, _) = tls::HubCert::load_or_make(dir.as_deref(), &names)?;
            let fingerprint = cert.fingerprint();
            let listener = tls::TlsListener::new(listener, &cert)?;
            let router = router.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            }));
            hub.vault(|v| v.fingerprint = Some(fingerprint.clone()));
            Some((local, fingerprint))
        }
    };
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(http_listener, router).await;
    }));
    tasks.push(tokio::spawn(link::serve(hub.clone(), link_listener)));
    // A rotation cut short by a restart (the send key may be one a revoked node holds), or a
    // revocation whose rotation was never saved: rotate afresh; its last step retires every
    // older key.
    if (hub.rotating() || hub.revoked_since_keys())
        && let Err(e) = hub.rotate_keys()
    {
        eprintln!("tutti hub: {e}");
    }
    let h = hub.clone();
    let lifetime = config.key_lifetime.max(Duration::from_secs(60));
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lifetime).await;
            if let Err(e) = h.rotate_keys() {
                eprintln!("tutti hub: the periodic key rotation: {e}");
            }
        }
    }));
    let h = hub.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            h.with(|r| ((), r.expire(Instant::now()), false));
        }
    }));
    let broker = match config.mqtt {
        None => None,
        Some(MqttSetup::External(b)) => Some(b),
        Some(MqttSetup::Embedded { listen, credentials }) => {
            let addr = mqtt::start_embedded(listen, credentials.clone())?;
            let host = if addr.ip().is_unspecified() {
                if addr.is_ipv4() { "127.0.0.1".to_owned() } else { "::1".to_owned() }
            } else {
                addr.ip().to_string()
            };
            Some(mqtt::BrokerAddr { host, port: addr.port(), credentials: Some(credentials) })
        }
    };
    if let Some(b) = &broker {
        tasks.extend(mqtt::bridge(hub.clone(), b.clone()));
    }
    let discovery = if config.mdns {
        let mqtt_port = broker.as_ref().map(|b| b.port);
        match discovery::HubDiscovery::start(link.port(), http.port(), mqtt_port, hub.heard.clone())
        {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("tutti hub: {e} (nodes must be given --hub)");
                None
            }
        }
    } else {
        None
    };
    Ok(RunningHub { hub, http, https, link, mqtt: broker, discovery, tasks })
}

/// This machine's address on its default route (no packet is sent: a UDP `connect` only
/// picks the route), else loopback.
fn primary_ip() -> std::net::IpAddr {
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    probe().ok().filter(|ip| !ip.is_unspecified()).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
}
