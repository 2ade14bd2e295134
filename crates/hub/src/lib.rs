//! Tutti's hub: the control plane. It knows every node (what it is, what it reports, how it is
//! set), groups players into zones, persists settings, and exposes all of it through an
//! HTTP and WebSocket API. Nodes keep a link to it (TCP, JSON lines, authenticated by the network
//! key); commands reach them over that link at once. The hub is never on the audio path:
//! stop it and music plays on; start it and nodes reconnect within a second or two.
//!
//! # Layout
//! The JSON types (nodes, settings, zones, commands, events, link messages) are
//! [`tutti_proto::control`]'s: nodes speak them too.
//!
//! - [`registry`]: the state and its rules, without I/O.
//! - [`store`]: settings on disk, written atomically.
//! - [`link`]: the node link's server side.
//! - [`api`]: the HTTP + WebSocket API.

#![forbid(unsafe_code)]

pub mod api;
pub mod link;
pub mod registry;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tutti_proto::NetworkKey;

use crate::registry::Registry;
use tutti_proto::control::{Command, Event};

/// How to run a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// HTTP + WebSocket API address.
    pub http: SocketAddr,
    /// Node link address.
    pub link: SocketAddr,
    /// Where settings are kept (`None`: memory only).
    pub state_file: Option<PathBuf>,
    /// The network key nodes must prove they hold.
    pub key: NetworkKey,
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
    #[error("{0}")]
    State(String),
}

/// The hub's shared state: the registry, the event stream, and a command channel per
/// connected node.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    events: broadcast::Sender<Event>,
    links: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Command>>>>,
    state_file: Option<PathBuf>,
    key: NetworkKey,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub").field("state_file", &self.state_file).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the settings in `state_file` (if any), checking nodes against `key`.
    pub fn new(state_file: Option<PathBuf>, key: NetworkKey) -> Result<Self, HubError> {
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
        })
    }

    /// Runs `f` on the registry; publishes the events it returns and saves the settings if
    /// it says they changed.
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
            Some(tx) => commands.into_iter().all(|c| tx.send(c).is_ok()),
            None => false,
        }
    }

    /// The network key.
    pub fn key(&self) -> &NetworkKey {
        &self.key
    }

    pub(crate) fn attach(&self, id: &str, tx: mpsc::UnboundedSender<Command>) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), tx);
    }

    pub(crate) fn detach(&self, id: &str, tx: &mpsc::UnboundedSender<Command>) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let current = links.get(id).is_some_and(|t| t.same_channel(tx));
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
    /// Where nodes connect.
    pub link: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    /// Stops serving.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts the hub's servers on the current tokio runtime.
pub async fn start(config: HubConfig) -> Result<RunningHub, HubError> {
    let hub = Hub::new(config.state_file.clone(), config.key.clone())?;
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
    let router = api::router(hub.clone());
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(http_listener, router).await;
    }));
    tasks.push(tokio::spawn(link::serve(hub.clone(), link_listener)));
    let h = hub.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            h.with(|r| ((), r.expire(Instant::now()), false));
        }
    }));
    Ok(RunningHub { hub, http, link, tasks })
}
