//! `tutti serve` (the hub) and `tutti pair`.

use crate::*;

pub(crate) fn serve(a: ServeArgs, cfg: &config::Config) -> Result<()> {
    let _span = tracing::info_span!("hub").entered();
    if a.net.insecure || cfg.network.insecure.unwrap_or(false) {
        bail!(
            "the hub has no insecure mode: its API and node link always need credentials (nodes \
             pair with `tutti pair`, or hold --passphrase)"
        );
    }
    // Every flag is checked before anything is created or started.
    if !a.http.ip().is_loopback() && !a.plain_http_anywhere {
        bail!(
            "--http {}: plain HTTP would carry the API's tokens across the network in clear; \
             use the HTTPS API (--https, on by default at 0.0.0.0:7443), keep --http on \
             127.0.0.1, or say --plain-http-anywhere",
            a.http
        );
    }
    let allow = networks(&a.snapcast_allow, "--snapcast-allow")?;
    if !allow.is_empty() && a.snapcast.is_none() && a.snapcast_stream.is_none() {
        bail!("--snapcast-allow admits to --snapcast or --snapcast-stream: give one of them");
    }
    let setup = |listen| tutti_hub::snapcast::SnapcastSetup { listen, allow: allow.clone() };
    let (snapcast, snapcast_stream) = (a.snapcast.map(setup), a.snapcast_stream.map(setup));
    if !(0.01..=24.0 * 365.0).contains(&a.key_hours) {
        bail!("--key-hours {}: use 0.01 to 8760 hours", a.key_hours);
    }
    if let Some(t) = &a.admin_token
        && t.chars().count() < 16
    {
        bail!("--admin-token (TUTTI_ADMIN_TOKEN): use at least 16 characters");
    }
    // A passphrase network: its nodes may join without pairing.
    let key = match a.net.passphrase.is_some() || cfg.network.passphrase.is_some() {
        true => security(&a.net, cfg)?.sending_key().cloned(),
        false => None,
    };
    let network = a
        .net
        .network
        .clone()
        .or_else(|| cfg.network.name.clone())
        .unwrap_or_else(|| tutti_node::security::DEFAULT_NETWORK.into());
    let state_file = if a.no_state {
        None
    } else {
        Some(a.state.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".local/state")
            });
            base.join("tutti/hub.json")
        }))
    };
    if let Some(dir) = state_file.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let secrets_file = state_file.as_ref().map(|p| p.with_file_name("secrets.json"));
    let (mut secrets, created) = match &secrets_file {
        Some(f) => {
            tutti_hub::secrets::Secrets::load_or_create(f, &network).map_err(|e| anyhow!(e))?
        }
        None => (tutti_hub::secrets::Secrets::generate(&network), true),
    };
    if let Some(t) = &a.admin_token {
        if t.chars().count() < 16 || t == &secrets.read_token {
            bail!(
                "--admin-token (TUTTI_ADMIN_TOKEN): use at least 16 characters, not the read token"
            );
        }
        if *t != secrets.admin_token {
            secrets.admin_token = t.clone();
            if let Some(f) = &secrets_file {
                secrets.save(f).map_err(|e| anyhow!(e))?;
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the hub's runtime")?;
    let credentials = tutti_hub::mqtt_credentials(key.as_ref().unwrap_or(&secrets.network_key()));
    if secrets.mqtt_password != credentials.1 {
        secrets.mqtt_password.clone_from(&credentials.1);
        if let Some(f) = &secrets_file {
            secrets.save(f).map_err(|e| anyhow!(e))?;
        }
    }
    // Secrets go to a person (a terminal) or the first run's output, never to every start's
    // log: a service says where they are instead.
    let show_secrets = created || secrets_file.is_none() || std::io::stdout().is_terminal();
    let mqtt = if a.no_mqtt {
        None
    } else if let Some(url) = &a.mqtt_url {
        Some(tutti_hub::MqttSetup::External(
            tutti_hub::mqtt::BrokerAddr::parse(url).map_err(|e| anyhow!("--mqtt-url {e}"))?,
        ))
    } else {
        Some(tutti_hub::MqttSetup::Embedded { listen: a.mqtt, credentials: credentials.clone() })
    };
    rt.block_on(async {
        let hub = tutti_hub::start(tutti_hub::HubConfig {
            http: a.http,
            https: (!a.no_https).then_some(a.https),
            link: a.link,
            state_file: state_file.clone(),
            key,
            secrets: secrets.clone(),
            secrets_file: secrets_file.clone(),
            advertise: a.advertise.clone(),
            key_lifetime: Duration::from_secs_f64(a.key_hours * 3600.0),
            mqtt,
            mdns: a.net.mdns(),
            snapcast,
            snapcast_stream,
        })
        .await?;
        let tokens = match &secrets_file {
            Some(f) => format!(
                "tokens in {} (try: curl -H \"Authorization: Bearer $(jq -r .admin_token {})\" http://{}/api/nodes)",
                f.display(),
                f.display(),
                hub.http
            ),
            None => format!("admin token {} (--no-state: not saved)", secrets.admin_token),
        };
        println!(
            "hub: network `{network}`{}; API on http://{}, {tokens}{}",
            if created { " (new: its keys were just made)" } else { "" },
            hub.http,
            state_file.map_or(String::new(), |p| format!("; settings in {}", p.display()))
        );
        let admits = if a.snapcast_allow.is_empty() {
            "loopback".to_owned()
        } else {
            format!("loopback and {}", a.snapcast_allow.join(", "))
        };
        if let Some(addr) = hub.snapcast {
            println!("hub: Snapcast control API on {addr} (JSON-RPC; admits {admits})");
        }
        if let Some(addr) = hub.snapcast_stream {
            println!(
                "hub: snapclients play rooms from {addr} (snapclient -h HOST -p {}; admits {admits})",
                addr.port()
            );
        }
        if let Some((addr, fingerprint)) = &hub.https {
            // What a browser shows for the hub's own certificate: check it once, then trust it.
            let shown = if addr.ip().is_unspecified() {
                format!("https://{}:{}", tutti_os::hostname(), addr.port())
            } else {
                format!("https://{addr}")
            };
            println!("hub: HTTPS on {shown} (listening on {addr}); certificate SHA-256 {fingerprint}");
        }
        // The dashboard: a one-time link that logs a browser in as admin (a secret, like the
        // tokens), else where it is and how to log in.
        let page = format!("http://{}", hub.http);
        if show_secrets {
            println!(
                "hub: dashboard on {page}/ (this link logs a browser in once, for {} min: \
                 {page}/login?code={})",
                tutti_hub::dashboard::LOGIN_CODE_TTL.as_secs() / 60,
                hub.hub.login_code()
            );
        } else {
            println!("hub: dashboard on {page}/ (log in with the admin or read-only token)");
        }
        let passphrase_nodes =
            if hub.hub.key().is_some() { "; passphrase nodes join with --hub too" } else { "" };
        if show_secrets {
            let invite = hub.hub.issue_token(tutti_hub::TOKEN_TTL);
            println!(
                "hub: add a node: on it run  tutti pair '{}'  (works once, for {} min; more: POST /api/pairing){passphrase_nodes}",
                invite.text(),
                tutti_hub::TOKEN_TTL.as_secs() / 60,
            );
            if std::io::stdout().is_terminal()
                && let Ok(q) = qrcode::QrCode::new(invite.text().as_bytes())
            {
                println!(
                    "{}",
                    q.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build()
                );
            }
        } else {
            println!(
                "hub: add a node: POST /api/pairing makes a one-time pairing link (or run `tutti \
                 serve` in a terminal){passphrase_nodes}"
            );
        }
        if let Some(b) = &hub.mqtt {
            let login = match (&b.credentials, &secrets_file) {
                (Some((u, p)), _) if show_secrets => format!(" -u {u} -P {p}"),
                (Some((u, _)), Some(f)) => {
                    format!(" -u {u} -P \"$(jq -r .mqtt_password {})\"", f.display())
                }
                _ => String::new(),
            };
            println!(
                "hub: MQTT on {}:{}{} (try: mosquitto_sub -h {} -p {}{login} -t 'tutti/#' -v)",
                b.host,
                b.port,
                if a.mqtt_url.is_some() { "" } else { " (embedded broker)" },
                b.host,
                b.port
            );
        }
        match a.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        hub.stop();
        Ok(())
    })
}

pub(crate) fn pair(a: PairArgs) -> Result<()> {
    let link = tutti_proto::pairing::PairLink::parse(&a.link)?;
    let path = a.pairing.clone().unwrap_or_else(tutti_node::security::Pairing::default_path);
    let name = a.name.clone().unwrap_or_else(hostname);
    let grant = tutti_node::hub::pair(&link, &name)?;
    let p = tutti_node::security::Pairing::from_grant(&grant, &link.hub);
    p.save(&path)?;
    println!(
        "paired as `{}` on network `{}` (hub {}); credential in {} (owner-only). This node now \
         joins with it: `tutti play HOST:7400`, `tutti stream ...` need no passphrase.",
        grant.node,
        grant.network,
        link.hub,
        path.display()
    );
    Ok(())
}
