//! Stream keys: which stream's keys each node holds (a source its own, a player its zone's),
//! handing them out over the links, and rotating them.

use super::*;
use tutti_proto::crypto::Security;

/// How long a new stream key is accepted before sources send with it (every node has it by
/// then: the hub pushes keys to all links at once).
pub const KEY_PROMOTE: Duration = Duration::from_secs(2);

/// How long the previous stream key is still accepted after the switch (packets in flight,
/// retransmissions).
pub const KEY_RETIRE: Duration = Duration::from_secs(10);

/// How long a source that fetched its keys counts as sending before its link is up.
pub const ANNOUNCED_FOR: Duration = Duration::from_secs(30);

/// Who holds stream keys, as far as choosing them goes: a node's role, the streams it sends
/// (a source: its addresses as players reach them) or the stream it follows (a player).
#[derive(Clone, Debug, Default)]
pub(crate) struct Holder {
    pub(crate) id: String,
    pub(crate) role: String,
    pub(crate) sends: Vec<SocketAddr>,
    pub(crate) follows: Option<String>,
    /// Where a party host (role `mixer`) takes microphones: its address, an unspecified one
    /// made the link's peer.
    pub(crate) takes: Option<SocketAddr>,
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
        let takes = (info.role == "mixer")
            .then(|| info.address.parse::<SocketAddr>().ok())
            .flatten()
            .map(|a| if a.ip().is_unspecified() { SocketAddr::new(peer, a.port()) } else { a });
        Holder {
            id: info.id.clone(),
            role: info.role.clone(),
            sends,
            follows: if info.role == "player" { info.streams.first().cloned() } else { None },
            takes,
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

impl Hub {
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
        let label = self.sender_of(&at).ok_or(NoStream::NotLinked(target))?;
        Ok((label, routed))
    }

    /// The paired source sending the stream at `at` (linked, or announced lately): its
    /// stream keys' label.
    fn sender_of(&self, at: &[SocketAddr]) -> Option<String> {
        let sends = |h: &Holder| h.role == "source" && same_stream(&h.sends, at);
        let linked = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|l| l.paired.is_some() && sends(&l.holder))
            .map(|l| l.holder.id.clone());
        linked.or_else(|| {
            let a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            a.values()
                .find(|(h, at)| at.elapsed() < ANNOUNCED_FOR && sends(h))
                .map(|(h, _)| h.id.clone())
        })
    }

    /// The browsers singing, mixed for those on headphones.
    pub(crate) fn choir(&self) -> &crate::choir::Choir {
        &self.choir
    }

    /// The party host (role `mixer`) that takes microphones (the one with id `id`, or the
    /// first linked): its id, name, address, and the keys it opens (the party's stream keys
    /// when it is paired, the passphrase's otherwise).
    pub(crate) fn party_host(&self, id: Option<&str>) -> Option<(String, SocketAddr, Security)> {
        let hosts: Vec<(String, Link)> = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(i, l)| l.holder.role == "mixer" && id.is_none_or(|id| id == *i))
            .map(|(i, l)| (i.clone(), l.clone()))
            .collect();
        let (host, link) = hosts.into_iter().min_by(|a, b| a.0.cmp(&b.0))?;
        let at = link.holder.takes?;
        let security = match (&link.paired, &self.key) {
            (Some(_), _) => {
                let set = self.vault(|v| v.secrets.stream_keys(PARTY_KEYS));
                tutti_node::security::from_keyset(&set)?
            }
            (None, Some(key)) => Security::encrypted(key.clone()),
            (None, None) => return None,
        };
        Some((host, at, security))
    }

    /// The keys that open the stream at `source` (`host:port`) for the hub's own listening
    /// (see [`crate::listen`]): a paired source's stream keys, and the network's passphrase
    /// key when it has one; with the stream keys' description (what changes on a rotation).
    /// `None`: nothing the hub holds opens it.
    pub(crate) fn stream_security(&self, source: &str) -> Option<(Security, Option<KeySet>)> {
        let set =
            self.sender_of(&addresses(source)).map(|l| self.vault(|v| v.secrets.stream_keys(&l)));
        let security = match (set.as_ref().and_then(tutti_node::security::from_keyset), &self.key) {
            (Some(Security::Encrypted { send, mut accept }), key) => {
                accept.extend(key.iter().cloned());
                Security::Encrypted { send, accept }
            }
            (_, Some(key)) => Security::encrypted(key.clone()),
            _ => return None,
        };
        Some((security, set))
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
                tracing::warn!("key rotation {n} stopped before sending with the new key: {e}");
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
                tracing::warn!("key rotation {n} could not retire the old key: {e}");
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
}
