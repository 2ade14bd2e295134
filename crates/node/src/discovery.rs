//! mDNS / DNS-SD: nodes advertise themselves (`_tutti._udp.local.`, TXT `role`, `id`,
//! `version`) and find the hub (`_tutti._tcp.local.`, TXT `role=hub`, its link on the
//! service's port) without configuration.
//!
//! The daemon (mdns-sd) answers on every interface that has an address; `TUTTI_MDNS=off` (or
//! `--no-mdns`) keeps a node silent, which tests outside a network namespace use.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// Why mDNS could not be used (no multicast-capable interface, the daemon failed).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon refused.
    #[error("mDNS: {0}")]
    Mdns(#[source] mdns_sd::Error),
    /// Its thread could not be started.
    #[error("mDNS: {0}")]
    Thread(#[from] std::io::Error),
}

pub use tutti_proto::control::{
    MDNS_HUB_SERVICE as HUB_SERVICE, MDNS_NODE_SERVICE as NODE_SERVICE,
};

/// False when the environment says to stay off mDNS (`TUTTI_MDNS=off`).
pub fn enabled_by_env() -> bool {
    !matches!(std::env::var("TUTTI_MDNS").as_deref(), Ok("off" | "0" | "false" | "no"))
}

/// An mDNS responder and browser for one node.
pub struct Discovery {
    daemon: ServiceDaemon,
    hubs: Hubs,
    browsing: bool,
}

impl core::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Discovery").field("hubs", &self.hubs).finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts the mDNS daemon.
    pub fn start() -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Mdns)?;
        Ok(Discovery { daemon, hubs: Hubs::default(), browsing: false })
    }

    /// Advertises this node: `id` (the instance name), `role`, and the UDP `port` its audio
    /// socket listens on.
    pub fn advertise(&self, id: &str, role: &str, port: u16) -> Result<(), DiscoveryError> {
        let host = format!("{}.local.", tutti_os::dns_label(&tutti_os::hostname()));
        let txt = [("role", role), ("id", id), ("version", env!("CARGO_PKG_VERSION"))];
        let info =
            ServiceInfo::new(NODE_SERVICE, &tutti_os::dns_label(id), &host, "", port, &txt[..])
                .map_err(DiscoveryError::Mdns)?
                .enable_addr_auto();
        self.daemon.register(info).map_err(DiscoveryError::Mdns)
    }

    /// Looks for hubs in the background: every host that advertises one is a candidate (mDNS
    /// only suggests an address; the link's handshake decides whether it is ours).
    pub fn watch_hub(&mut self) -> Result<Hubs, DiscoveryError> {
        if !self.browsing {
            let rx = self.daemon.browse(HUB_SERVICE).map_err(DiscoveryError::Mdns)?;
            let slot = self.hubs.clone();
            std::thread::Builder::new().name("tutti-mdns-browse".into()).spawn(move || {
                while let Ok(event) = rx.recv() {
                    if let ServiceEvent::ServiceResolved(s) = event {
                        if s.get_property_val_str("role") != Some("hub") {
                            continue;
                        }
                        // Prefer an IPv4 address (every LAN has one).
                        let mut v4: Vec<_> = s.get_addresses_v4().into_iter().collect();
                        v4.sort();
                        if let Some(ip) = v4.first() {
                            slot.found(SocketAddr::new(IpAddr::V4(*ip), s.get_port()));
                        }
                    }
                }
            })?;
            self.browsing = true;
        }
        Ok(self.hubs.clone())
    }
}

/// A hub as it advertises itself on mDNS: a suggestion, not a proof (anyone on the LAN can
/// advertise; the link's handshake, or the HTTPS certificate's fingerprint compared with what
/// `tutti serve` printed, decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubAd {
    /// Its mDNS instance (`NETWORK-HOST-hub._tutti._tcp.local.`).
    pub instance: String,
    /// Its host's name (TXT `id`).
    pub id: String,
    /// Its network's name (TXT `network`).
    pub network: String,
    /// Its IPv4 addresses, sorted; loopback only when it has no other.
    pub addresses: Vec<std::net::Ipv4Addr>,
    /// Its node link's port.
    pub link_port: u16,
    /// Its plain HTTP API's port (often bound to the hub's own loopback only).
    pub http_port: Option<u16>,
    /// Its HTTPS API's port.
    pub https_port: Option<u16>,
    /// Its HTTPS certificate's SHA-256 fingerprint (`AB:CD:…`), as it says.
    pub fingerprint: Option<String>,
    /// Its version.
    pub version: String,
}

impl HubAd {
    /// The address of its web app and API: HTTPS when it serves it, else plain HTTP.
    pub fn url(&self) -> Option<String> {
        let ip = self.addresses.first()?;
        match (self.https_port, self.http_port) {
            (Some(p), _) => Some(format!("https://{ip}:{p}")),
            (None, Some(p)) => Some(format!("http://{ip}:{p}")),
            (None, None) => None,
        }
    }
}

/// The hubs that answer on mDNS within `wait` (browsing stops then), by instance name.
pub fn find_hubs(wait: std::time::Duration) -> Result<Vec<HubAd>, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(DiscoveryError::Mdns)?;
    let rx = daemon.browse(HUB_SERVICE).map_err(DiscoveryError::Mdns)?;
    let until = std::time::Instant::now() + wait;
    let mut found = std::collections::BTreeMap::new();
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let Ok(event) = rx.recv_timeout(left) else { break };
        if let ServiceEvent::ServiceResolved(s) = event {
            if s.get_property_val_str("role") != Some("hub") {
                continue;
            }
            let txt = |k: &str| s.get_property_val_str(k).filter(|v| !v.is_empty());
            let port = |k: &str| txt(k).and_then(|v| v.parse::<u16>().ok());
            let mut addresses: Vec<_> = s.get_addresses_v4().into_iter().collect();
            if addresses.iter().any(|a| !a.is_loopback()) {
                addresses.retain(|a| !a.is_loopback());
            }
            addresses.sort();
            let ad = HubAd {
                instance: s.get_fullname().to_owned(),
                id: txt("id").unwrap_or_default().to_owned(),
                network: txt("network").unwrap_or_default().to_owned(),
                addresses,
                link_port: s.get_port(),
                http_port: port("http"),
                https_port: port("https"),
                fingerprint: txt("fp").map(str::to_owned),
                version: txt("version").unwrap_or_default().to_owned(),
            };
            found.insert(ad.instance.clone(), ad);
        }
    }
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}

/// The hubs advertised on the network (the latest 16), tried in turn: an impostor that
/// advertises itself is refused by the link's handshake and the next candidate is tried, so
/// it cannot keep a node from its real hub.
#[derive(Clone, Debug, Default)]
pub struct Hubs(Arc<Mutex<(Vec<SocketAddr>, usize)>>);

impl Hubs {
    fn found(&self, addr: SocketAddr) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut g.0;
        list.retain(|a| *a != addr);
        list.insert(0, addr);
        list.truncate(16);
    }

    /// The next candidate to try (round robin over those advertised), `None` before any.
    pub fn next(&self) -> Option<SocketAddr> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (list, turn) = &mut *g;
        if list.is_empty() {
            return None;
        }
        *turn = (*turn + 1) % list.len();
        Some(list[*turn])
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Says goodbye (unregisters) and stops the daemon's thread.
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_hub_is_tried_in_turn() {
        let hubs = Hubs::default();
        assert_eq!(hubs.next(), None);
        let (real, fake): (SocketAddr, SocketAddr) =
            ("10.0.0.2:7481".parse().unwrap(), "10.0.0.66:7481".parse().unwrap());
        hubs.found(real);
        hubs.found(fake);
        hubs.found(fake);
        let tried: Vec<_> = (0..4).filter_map(|_| hubs.next()).collect();
        assert_eq!(tried.iter().filter(|a| **a == real).count(), 2, "{tried:?}");
        assert_eq!(tried.iter().filter(|a| **a == fake).count(), 2, "{tried:?}");
    }
}
