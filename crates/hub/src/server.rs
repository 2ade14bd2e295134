//! Starting the hub: its configuration, its servers (API, HTTPS, node link, MQTT, mDNS) and
//! the handle that stops them.

use super::*;

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
    /// Snapcast's JSON-RPC control API on a TCP address of its own (`None`: off).
    pub snapcast: Option<crate::snapcast::SnapcastSetup>,
    /// Snapcast's stream protocol for snapclients on a TCP address of its own (`None`: off).
    pub snapcast_stream: Option<crate::snapcast::SnapcastSetup>,
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
    /// Where Snapcast's JSON-RPC control API listens.
    pub snapcast: Option<SocketAddr>,
    /// Where snapclients connect.
    pub snapcast_stream: Option<SocketAddr>,
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
    // The hub's tasks log in the span it was started in (the CLI's `hub`).
    let span = tracing::Span::current();
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
    let web_ip = if http.ip().is_unspecified() { primary_ip() } else { http.ip() };
    hub.vault(|v| {
        v.link = advertised;
        // Plain HTTP until HTTPS (below) says otherwise.
        v.web = format!("http://{}", SocketAddr::new(web_ip, http.port()));
    });
    let router = dashboard::router(hub.clone())
        .merge(guests::router(hub.clone()))
        .merge(api::router(hub.clone()));
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
            let router = router.clone().layer(axum::Extension(dashboard::OverTls));
            tasks.push(spawn_in(&span, async move {
                let _ = axum::serve(listener, router).await;
            }));
            hub.vault(|v| {
                v.fingerprint = Some(fingerprint.clone());
                v.web = format!("https://{}", SocketAddr::new(ip, local.port()));
            });
            Some((local, fingerprint))
        }
    };
    tasks.push(spawn_in(&span, async move {
        // No Nagle: a listener's 10 ms audio blocks (and the dashboard's small frames) must not
        // wait for the peer's delayed ACK (40 ms bursts).
        use axum::serve::ListenerExt;
        let http_listener = http_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(http_listener, router).await;
    }));
    tasks.push(spawn_in(&span, link::serve(hub.clone(), link_listener)));
    // Snapcast's control API and stream, each on a listener of its own when asked.
    let mut snapcast_listener = async |setup: Option<crate::snapcast::SnapcastSetup>,
                                       stream: bool| {
        let Some(setup) = setup else { return Ok(None) };
        let listener = bind(setup.listen).await?;
        let local = listener
            .local_addr()
            .map_err(|e| HubError::Bind { addr: setup.listen, message: e.to_string() })?;
        let h = hub.clone();
        tasks.push(if stream {
            spawn_in(&span, crate::snapstream::serve(h, listener, setup))
        } else {
            spawn_in(&span, crate::snapcast::serve(h, listener, setup))
        });
        Ok::<_, HubError>(Some(local))
    };
    let snapcast = snapcast_listener(config.snapcast, false).await?;
    let snapcast_stream = snapcast_listener(config.snapcast_stream, true).await?;
    // A rotation cut short by a restart (the send key may be one a revoked node holds), or a
    // revocation whose rotation was never saved: rotate afresh; its last step retires every
    // older key.
    if (hub.rotating() || hub.revoked_since_keys())
        && let Err(e) = hub.rotate_keys()
    {
        tracing::warn!("{e}");
    }
    let h = hub.clone();
    let lifetime = config.key_lifetime.max(Duration::from_secs(60));
    tasks.push(spawn_in(&span, async move {
        loop {
            tokio::time::sleep(lifetime).await;
            if let Err(e) = h.rotate_keys() {
                tracing::warn!("the periodic key rotation: {e}");
            }
        }
    }));
    let h = hub.clone();
    tasks.push(spawn_in(&span, async move {
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
    hub.vault(|v| v.mqtt = broker.as_ref().map(|b| format!("{}:{}", b.host, b.port)));
    if let Some(b) = &broker {
        tasks.extend(mqtt::bridge(hub.clone(), b.clone()));
    }
    let discovery = if config.mdns {
        let mqtt_port = broker.as_ref().map(|b| b.port);
        let https = https.as_ref().map(|(a, fp)| (a.port(), fp.as_str()));
        match discovery::HubDiscovery::start(
            &hub.network(),
            link.port(),
            http.port(),
            https,
            mqtt_port,
            discovery::SnapcastPorts {
                control: snapcast.map(|a| a.port()),
                stream: snapcast_stream.map(|a| a.port()),
            },
            hub.heard.clone(),
        ) {
            Ok(d) => {
                hub.vault(|v| v.discovery = DiscoveryStatus::On { heard: 0 });
                Some(d)
            }
            Err(e) => {
                tracing::warn!("{e} (nodes must be given --hub)");
                hub.vault(|v| v.discovery = DiscoveryStatus::Failed { reason: e.to_string() });
                None
            }
        }
    } else {
        None
    };
    Ok(RunningHub {
        hub,
        http,
        https,
        link,
        mqtt: broker,
        snapcast,
        snapcast_stream,
        discovery,
        tasks,
    })
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

/// Spawns `task` on the runtime, logging in `span`.
fn spawn_in(
    span: &tracing::Span,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use tracing::Instrument;
    tokio::spawn(task.instrument(span.clone()))
}
