//! How a node belongs to its network: its keys, its link to the hub, its ids.

use crate::*;

/// How this node belongs to its network: the keys its sessions use, how it proves itself to
/// the hub, the hub its pairing names, and the prefix of its node ids.
pub(crate) struct Member {
    pub(crate) keys: tutti_node::security::Keys,
    pub(crate) auth: Option<tutti_node::hub::LinkAuth>,
    pub(crate) hub: Option<String>,
    pub(crate) prefix: String,
}

/// `--insecure`, else a passphrase, else this node's pairing (`tutti pair`).
pub(crate) fn member(net: &NetArgs, cfg: &config::Config) -> Result<Member> {
    let insecure = net.insecure || cfg.network.insecure.unwrap_or(false);
    let pass = net.passphrase.is_some() || cfg.network.passphrase.is_some();
    if insecure || pass {
        let sec = security(net, cfg)?;
        let auth = sec.sending_key().cloned().map(tutti_node::hub::LinkAuth::Network);
        return Ok(Member { keys: sec.into(), auth, hub: None, prefix: hostname() });
    }
    let path = net.pairing.clone().unwrap_or_else(tutti_node::security::Pairing::default_path);
    let Some(p) = tutti_node::security::Pairing::load(&path)? else {
        bail!(
            "this node belongs to no network yet: pair it with `tutti pair LINK` (`tutti serve` \
             prints a link; POST /api/pairing on the hub makes more), or give every node the \
             same --passphrase (no pairing file at {})",
            path.display()
        );
    };
    let keys = tutti_node::security::Keys::pending();
    let auth = tutti_node::hub::LinkAuth::Paired {
        node: p.node.clone(),
        credential: p.credential()?,
        keys: keys.clone(),
    };
    Ok(Member { keys, auth: Some(auth), hub: Some(p.hub.clone()), prefix: p.node })
}

pub(crate) fn security(net: &NetArgs, cfg: &config::Config) -> Result<Security> {
    let insecure = net.insecure || cfg.network.insecure.unwrap_or(false);
    let pass = net.passphrase.clone().or_else(|| cfg.network.passphrase.clone());
    let name = net
        .network
        .clone()
        .or_else(|| cfg.network.name.clone())
        .unwrap_or_else(|| tutti_node::security::DEFAULT_NETWORK.into());
    if insecure {
        tracing::warn!(
            "--insecure: audio goes unencrypted and unauthenticated; anyone on this network can listen and inject"
        );
    }
    Ok(tutti_node::security::from_options(pass.as_deref(), &name, insecure)?)
}

pub(crate) fn resolve(addr: &str, what: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("{what} `{addr}`: use host:port, e.g. 192.168.1.20:7400"))?
        .next()
        .ok_or_else(|| anyhow!("{what} `{addr}` resolves to nothing"))
}

pub(crate) fn hostname() -> String {
    tutti_os::hostname()
}

/// mDNS: advertises this node (and listens for the hub), unless `--no-mdns`.
pub(crate) fn discovery_for(
    net: &NetArgs,
    id: &str,
    role: &str,
    port: u16,
) -> Option<tutti_node::discovery::Discovery> {
    if !net.mdns() {
        return None;
    }
    match tutti_node::discovery::Discovery::start() {
        Ok(d) => {
            if let Err(e) = d.advertise(id, role, port) {
                tracing::warn!("{e} (the hub will not discover this {role})");
            }
            Some(d)
        }
        Err(e) => {
            tracing::warn!("{e} (no discovery: name the hub with --hub)");
            None
        }
    }
}

/// A paired node's first keys, before its sessions start (a player must decode what it
/// joins; a source must not send its first packets under no key): those of the session
/// `role`/`id` that sends or follows `streams`. `None` for nodes that are not paired. The
/// hub's note (why the keys open no stream) is in the answer.
pub(crate) fn fetch_keys(
    m: &Member,
    hub: Option<&str>,
    role: &str,
    id: &str,
    streams: Vec<String>,
) -> Result<Option<tutti_node::hub::Granted>> {
    let Some((hub, info, auth)) = key_request(m, hub, role, id, streams)? else {
        return Ok(None);
    };
    let granted = tutti_node::hub::fetch_keys(hub, &info, &auth).with_context(|| {
        format!("getting this node's stream keys from the hub at {hub} (is `tutti serve` running?)")
    })?;
    Ok(Some(granted))
}

/// A paired player's keys: asked for every 200 ms until the hub has them (its source has
/// not linked yet, or its stream is a zone's it is not in — meanwhile the hub lists it with
/// the reason, so that it can be put in a zone), for at most `seconds` if given.
pub(crate) fn wait_for_keys(
    m: &Member,
    hub: Option<&str>,
    id: &str,
    follows: Vec<String>,
    seconds: Option<f64>,
) -> Result<Option<tutti_node::hub::Granted>> {
    let started = std::time::Instant::now();
    let mut said = None;
    let mut unreachable = false;
    loop {
        // Asked every 200 ms at first, then every 500 ms (a zone assigned later is heard within
        // half a second, and the hub, which lists it while it asks, keeps it listed: it drops a
        // node silent for 2 s). Once the hub has answered, losing it (a restart) is waited out.
        let pause = if started.elapsed() < Duration::from_secs(5) { 200 } else { 500 };
        let granted = match fetch_keys(m, hub, "player", id, follows.clone()) {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            Err(e)
                if said.is_some()
                    && seconds.is_none_or(|s| started.elapsed().as_secs_f64() < s) =>
            {
                if !unreachable {
                    tracing::warn!("the hub does not answer ({e:#}): asking again");
                    unreachable = true;
                }
                std::thread::sleep(Duration::from_millis(pause));
                continue;
            }
            Err(e) => return Err(e),
        };
        if unreachable {
            tracing::info!("the hub answers again");
            unreachable = false;
        }
        let Some(note) = granted.note.clone() else {
            if said.is_some() {
                tracing::info!("the hub handed over the stream's keys");
            }
            return Ok(Some(granted));
        };
        if said.as_ref() != Some(&note) {
            tracing::warn!("waiting for the hub to hand over the stream's keys: {note}");
            said = Some(note.clone());
        }
        if seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
            bail!("no stream keys from the hub within {:.0} s: {note}", seconds.unwrap_or(0.0));
        }
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// Where and how a paired node asks for its keys (`None`: not a paired node).
pub(crate) fn key_request(
    m: &Member,
    hub: Option<&str>,
    role: &str,
    id: &str,
    streams: Vec<String>,
) -> Result<Option<(SocketAddr, tutti_proto::control::NodeInfo, tutti_node::hub::LinkAuth)>> {
    let (Some(auth @ tutti_node::hub::LinkAuth::Paired { .. }), Some(h)) =
        (&m.auth, hub.or(m.hub.as_deref()))
    else {
        return Ok(None);
    };
    let info = tutti_proto::control::NodeInfo {
        id: node_id(id),
        name: node_id(id),
        role: role.into(),
        streams,
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    Ok(Some((resolve(h, "the hub")?, info, auth.clone())))
}

/// Links this node to the hub `hub` names, else to the one mDNS finds (none found: the node
/// works on alone). `say` tells the user what was found.
pub(crate) fn join_hub(
    hub: Option<&str>,
    key: Option<tutti_node::hub::LinkAuth>,
    discovery: Option<&mut tutti_node::discovery::Discovery>,
    info: tutti_proto::control::NodeInfo,
    handler: impl tutti_node::hub::HubHandler,
    say: impl Fn(String) + Send + 'static,
) -> Result<Option<tutti_node::hub::HubLink>> {
    let report = Duration::from_millis(250);
    Ok(match (hub, key, discovery) {
        (Some(_), None, _) => bail!(
            "--hub: the hub admits paired nodes (`tutti pair LINK`) or a passphrase network's \
             nodes (--passphrase), not --insecure ones"
        ),
        (Some(h), Some(key), _) => {
            let hub = resolve(h, "--hub")?;
            Some(tutti_node::hub::HubLink::spawn(hub, info, key, report, handler)?)
        }
        (None, Some(key), Some(d)) => match d.watch_hub() {
            Ok(hubs) => {
                let mut said = std::collections::BTreeSet::new();
                let find = move || {
                    let hub = hubs.next();
                    if let Some(h) = hub
                        && said.insert(h)
                    {
                        say(format!("a hub advertised at {h} (mDNS): trying it"));
                    }
                    hub
                };
                Some(tutti_node::hub::HubLink::spawn_to(find, info, key, report, handler)?)
            }
            Err(e) => {
                tracing::warn!("{e} (no discovery: name the hub with --hub)");
                None
            }
        },
        _ => None,
    })
}

/// A node id: stable across restarts (the hub keeps settings by id), DNS-label safe.
pub(crate) fn node_id(parts: &str) -> String {
    parts
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}
