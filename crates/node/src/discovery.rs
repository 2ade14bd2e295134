//! mDNS / DNS-SD: nodes advertise themselves (`_tutti._udp.local.`, TXT `role`, `id`,
//! `version`) and find the hub (`_tutti._tcp.local.`, TXT `role=hub`, its link on the
//! service's port) without configuration.
//!
//! The daemon (mdns-sd) answers on every interface that has an address; `TUTTI_MDNS=off` (or
//! `--no-mdns`) keeps a node silent, which tests outside a network namespace use.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

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
    hub: Arc<Mutex<Option<SocketAddr>>>,
    browsing: bool,
}

impl core::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Discovery").field("hub", &self.hub).finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts the mDNS daemon.
    pub fn start() -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
        Ok(Discovery { daemon, hub: Arc::default(), browsing: false })
    }

    /// Advertises this node: `id` (the instance name), `role`, and the UDP `port` its audio
    /// socket listens on.
    pub fn advertise(&self, id: &str, role: &str, port: u16) -> Result<(), String> {
        let host = format!("{}.local.", sanitize(&crate::hostname()));
        let txt = [("role", role), ("id", id), ("version", env!("CARGO_PKG_VERSION"))];
        let info = ServiceInfo::new(NODE_SERVICE, &sanitize(id), &host, "", port, &txt[..])
            .map_err(|e| format!("mDNS: {e}"))?
            .enable_addr_auto();
        self.daemon.register(info).map_err(|e| format!("mDNS: {e}"))
    }

    /// Looks for a hub in the background; [`hub`](Self::hub) says what was found (the latest
    /// to answer).
    pub fn watch_hub(&mut self) -> Result<Arc<Mutex<Option<SocketAddr>>>, String> {
        if !self.browsing {
            let rx = self.daemon.browse(HUB_SERVICE).map_err(|e| format!("mDNS: {e}"))?;
            let slot = self.hub.clone();
            std::thread::Builder::new()
                .name("tutti-mdns-browse".into())
                .spawn(move || {
                    while let Ok(event) = rx.recv() {
                        if let ServiceEvent::ServiceResolved(s) = event {
                            if s.get_property_val_str("role") != Some("hub") {
                                continue;
                            }
                            // Prefer an IPv4 address (every LAN has one).
                            let mut v4: Vec<_> = s.get_addresses_v4().into_iter().collect();
                            v4.sort();
                            if let Some(ip) = v4.first() {
                                let addr = SocketAddr::new(IpAddr::V4(*ip), s.get_port());
                                if let Ok(mut h) = slot.lock() {
                                    *h = Some(addr);
                                }
                            }
                        }
                    }
                })
                .map_err(|e| format!("mDNS: {e}"))?;
            self.browsing = true;
        }
        Ok(self.hub.clone())
    }

    /// The hub found so far.
    pub fn hub(&self) -> Option<SocketAddr> {
        self.hub.lock().ok().and_then(|h| *h)
    }

    /// Waits up to `limit` for a hub to answer.
    pub fn find_hub(&mut self, limit: Duration) -> Option<SocketAddr> {
        self.watch_hub().ok()?;
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Some(h) = self.hub() {
                return Some(h);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Says goodbye (unregisters) and stops the daemon's thread.
        let _ = self.daemon.shutdown();
    }
}

/// A DNS label from any string.
fn sanitize(s: &str) -> String {
    let out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    if out.is_empty() { "tutti".into() } else { out }
}
