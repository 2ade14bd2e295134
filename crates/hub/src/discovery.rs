//! The hub on mDNS / DNS-SD: it advertises its node link (`_tutti._tcp.local.`, TXT
//! `role=hub`, `http`, `https` with `fp`, `mqtt`) so nodes join and the desktop app finds it
//! without configuration, and lists the nodes that
//! advertise themselves (`_tutti._udp.local.`), linked or not (`GET /api/discovered`). With
//! Snapcast's control API on (`--snapcast`), it also advertises `_snapcast-jsonrpc._tcp`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;
use tutti_proto::control::{MDNS_HUB_SERVICE, MDNS_NODE_SERVICE};

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

/// The DNS-SD service of Snapcast's JSON-RPC control API.
pub const SNAPCAST_SERVICE: &str = "_snapcast-jsonrpc._tcp.local.";
/// The DNS-SD service of Snapcast's stream (what snapclients look for).
pub const SNAPCAST_STREAM_SERVICE: &str = "_snapcast._tcp.local.";

/// The ports of Snapcast's control API and stream, when the hub serves them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapcastPorts {
    /// JSON-RPC control (`_snapcast-jsonrpc._tcp`).
    pub control: Option<u16>,
    /// The stream snapclients play (`_snapcast._tcp`).
    pub stream: Option<u16>,
}

/// A node heard on mDNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discovered {
    /// Its id (TXT `id`).
    pub id: String,
    /// `player`, `source`, `mixer` (TXT `role`).
    pub role: String,
    /// Its addresses with its audio port.
    pub addresses: Vec<String>,
    /// Its Tutti version.
    pub version: String,
}

/// What the hub has heard, by mDNS instance name.
pub type Heard = Arc<Mutex<BTreeMap<String, Discovered>>>;

/// The hub's mDNS responder and browser; stops (saying goodbye) on drop.
pub struct HubDiscovery {
    daemon: ServiceDaemon,
}

impl core::fmt::Debug for HubDiscovery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HubDiscovery").finish_non_exhaustive()
    }
}

impl HubDiscovery {
    /// Advertises the hub of `network` (link on `link_port`; HTTPS on a port with its
    /// certificate's fingerprint, when it serves it) as `NETWORK-HOST-hub` (two hubs of two
    /// networks on one host stay apart) and starts listening for nodes into `heard`.
    pub fn start(
        network: &str,
        link_port: u16,
        http_port: u16,
        https: Option<(u16, &str)>,
        mqtt_port: Option<u16>,
        snapcast: SnapcastPorts,
        heard: Heard,
    ) -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Mdns)?;
        let host = tutti_os::dns_label(&tutti_os::hostname());
        let http = http_port.to_string();
        let https_port = https.map(|(p, _)| p.to_string()).unwrap_or_default();
        let mqtt = mqtt_port.map(|p| p.to_string()).unwrap_or_default();
        // A DNS-SD instance name is one label: 63 bytes at most (ASCII here).
        let mut instance = format!("{}-{host}-hub", tutti_os::dns_label(network));
        instance.truncate(63);
        let txt = [
            ("role", "hub"),
            ("id", host.as_str()),
            ("network", network),
            ("http", http.as_str()),
            ("https", https_port.as_str()),
            ("fp", https.map_or("", |(_, fp)| fp)),
            ("mqtt", mqtt.as_str()),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        let info = ServiceInfo::new(
            MDNS_HUB_SERVICE,
            &instance,
            &format!("{host}.local."),
            "",
            link_port,
            &txt[..],
        )
        .map_err(DiscoveryError::Mdns)?
        .enable_addr_auto();
        daemon.register(info).map_err(DiscoveryError::Mdns)?;
        // Snapcast's apps look for its control API by this service type, snapclients for
        // its stream by the other.
        for (service, port) in
            [(SNAPCAST_SERVICE, snapcast.control), (SNAPCAST_STREAM_SERVICE, snapcast.stream)]
        {
            let Some(port) = port else { continue };
            let info = ServiceInfo::new(
                service,
                &instance,
                &format!("{host}.local."),
                "",
                port,
                &[("via", "tutti")][..],
            )
            .map_err(DiscoveryError::Mdns)?
            .enable_addr_auto();
            daemon.register(info).map_err(DiscoveryError::Mdns)?;
        }
        let rx = daemon.browse(MDNS_NODE_SERVICE).map_err(DiscoveryError::Mdns)?;
        let h = heard;
        std::thread::Builder::new().name("tutti-hub-mdns".into()).spawn(move || {
            while let Ok(event) = rx.recv() {
                match event {
                    ServiceEvent::ServiceResolved(s) => {
                        let prop = |k: &str| s.get_property_val_str(k).unwrap_or("").to_owned();
                        let mut addresses: Vec<String> = s
                            .get_addresses_v4()
                            .into_iter()
                            .map(|ip| format!("{ip}:{}", s.get_port()))
                            .collect();
                        addresses.sort();
                        let node = Discovered {
                            id: prop("id"),
                            role: prop("role"),
                            addresses,
                            version: prop("version"),
                        };
                        if let Ok(mut map) = h.lock() {
                            let new = map.get(s.get_fullname()) != Some(&node);
                            if new {
                                println!(
                                    "hub: discovered {} `{}` at {} (mDNS)",
                                    node.role,
                                    node.id,
                                    node.addresses.join(", ")
                                );
                            }
                            map.insert(s.get_fullname().to_owned(), node);
                        }
                    }
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        if let Ok(mut map) = h.lock() {
                            map.remove(&fullname);
                        }
                    }
                    _ => {}
                }
            }
        })?;
        Ok(HubDiscovery { daemon })
    }
}

impl Drop for HubDiscovery {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}
