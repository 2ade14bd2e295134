//! `tutti play` and `tutti devices`: a player.

use crate::*;

pub(crate) fn play_options(a: &PlayArgs, cfg: &config::Config) -> Result<(PlayerOptions, Member)> {
    let p = &cfg.play;
    let source = a.source.clone().or_else(|| p.source.clone()).ok_or_else(|| {
        anyhow!("which source? `tutti play HOST:PORT` (or [play] source = ... in the config)")
    })?;
    let source = resolve(&source, "source")?;
    let mut pc = PlayerConfig::new(source);
    pc.name = a.name.clone().or_else(|| p.name.clone()).unwrap_or_else(hostname);
    pc.stream_id = a.stream_id;
    let delay = in_range("--delay-ms", a.delay_ms.or(p.delay_ms), -1000.0, 1000.0, "ms")?;
    pc.device_offset = Nanos::from_secs_f64(delay.unwrap_or(0.0) / 1e3);
    let latency = in_range("--latency-ms", a.latency_ms, 10.0, 5000.0, "ms")?;
    pc.latency_override = latency.map(|l| Nanos::from_secs_f64(l / 1e3));
    let volume = in_range("--volume", a.volume.or(p.volume), 0.0, 100.0, "percent")?;
    let buffer = in_range("--buffer", a.buffer.or(p.buffer), 32, 16_384, "frames")?;
    let group = a.group.as_deref().map(|g| resolve(g, "--group")).transpose()?;
    pc.join = group.is_none();
    let output = if let Some(w) = &a.wav {
        OutputKind::Wav(w.clone())
    } else if a.null {
        OutputKind::Null
    } else {
        OutputKind::Device {
            host: a.host.clone().or_else(|| p.host.clone()),
            name: a.device.clone().or_else(|| p.device.clone()),
        }
    };
    let bind: SocketAddr = match group {
        Some(g) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), g.port()),
        None => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), a.port),
    };
    let opts = PlayerOptions {
        config: pc,
        bind,
        group,
        output,
        buffer_frames: buffer,
        volume: volume.unwrap_or(100.0),
        join_timeout: Duration::from_secs(5),
    };
    Ok((opts, member(&a.net, cfg)?))
}

pub(crate) fn play(a: PlayArgs, cfg: &config::Config) -> Result<()> {
    let (opts, m) = play_options(&a, cfg)?;
    // Stable across restarts (the hub keeps settings by id): host and output, and the port
    // when one was given.
    let output = match (&a.wav, a.null, &a.device) {
        (Some(w), _, _) => format!(
            "wav-{}",
            w.file_stem().map_or("out".into(), |s| s.to_string_lossy().into_owned())
        ),
        (None, true, _) => "null".into(),
        (None, false, Some(d)) => d.clone(),
        (None, false, None) => "default".into(),
    };
    let id = match a.port {
        0 => format!("{}-{output}", m.prefix),
        p => format!("{}-{output}-{p}", m.prefix),
    };
    // Everything it logs, from every thread, names this node.
    let _span = tracing::info_span!("player", node = %node_id(&id)).entered();
    // A paired player needs its keys before it can hear the stream it joins.
    let mut opts = opts;
    let follows = vec![opts.config.source.to_string()];
    let granted = wait_for_keys(&m, a.hub.as_deref(), &id, follows.clone(), a.seconds)?;
    // The hub chose the stream (its zone's): play that one from the start.
    if let Some(zone_stream) = granted.and_then(|g| g.stream) {
        let s = resolve(&zone_stream, "the zone's stream")?;
        if s != opts.config.source {
            tracing::info!("zone: playing {zone_stream} (this player's zone's stream)");
            opts.config.source = s;
        }
    }
    let source = opts.config.source;
    let name = opts.config.name.clone();
    let local = opts.bind;
    let player = tutti_node::role::Player::start(opts, m.keys.clone())
        .with_context(|| format!("playing {source}"))?;
    let port = player.view().local_addr.map_or(0, |a| a.port());
    let info = tutti_proto::control::NodeInfo {
        id: node_id(&id),
        name: name.clone(),
        role: "player".into(),
        device: a.device.clone().unwrap_or_else(|| {
            if a.null {
                "null".into()
            } else if a.wav.is_some() {
                "wav".into()
            } else {
                "default".into()
            }
        }),
        capabilities: vec![
            "volume".into(),
            "mute".into(),
            "delay".into(),
            "route".into(),
            "resync".into(),
            "identify".into(),
            "calibrate".into(),
            "test_tone".into(),
            "say".into(),
        ],
        address: format!("{}:{}", local.ip(), port),
        streams: follows,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut discovery = discovery_for(&a.net, &info.id, "player", port);
    // The hub link drives the player itself: settings, commands, a zone's route.
    let control = player.control();
    let said = player.control();
    let say = move |m: String| said.say(m);
    let hub = a.hub.as_deref().or(m.hub.as_deref());
    let link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, control, say)?;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let clear = if tty { "\r\x1b[K" } else { "" };
    let mut status_log = StatusLog::new();
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        for n in player.notices() {
            use tutti_node::role::PlayerNotice;
            match &n {
                PlayerNotice::Playing(e) if e.is_trouble() => tracing::warn!("{n}"),
                PlayerNotice::Playing(_)
                | PlayerNotice::Said(_)
                | PlayerNotice::NowPlaying(_)
                | PlayerNotice::Latency(_) => tracing::info!("{n}"),
                _ => tracing::warn!("{n}"),
            }
        }
        let snap = player.view().snapshot;
        if tty {
            eprint!("{clear}{}", status_line(&snap));
            let _ = std::io::stderr().flush();
        } else if !a.quiet {
            let key = format!(
                "{} {} {} {}",
                snap.streaming, snap.underrun_frames, snap.stats.resyncs, snap.stats.concealed
            );
            status_log.tick(key, || status_fields(&snap));
        }
        if a.seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
            break;
        }
    }
    if tty {
        eprintln!();
    }
    println!("{}", status_line(&player.view().snapshot));
    if let Some(l) = link {
        l.stop();
    }
    drop(discovery);
    player.stop();
    Ok(())
}

/// `tutti hubs`: the hubs mDNS finds within `seconds`, one block each.
pub(crate) fn hubs(seconds: f64) -> Result<()> {
    if !(0.1..=60.0).contains(&seconds) {
        anyhow::bail!("--seconds {seconds}: listen for 0.1–60 s");
    }
    let found = tutti_node::discovery::find_hubs(std::time::Duration::from_secs_f64(seconds))
        .map_err(|e| anyhow::anyhow!("{e}: no multicast-capable network interface?"))?;
    if found.is_empty() {
        println!("no hub answered on mDNS within {seconds} s");
        return Ok(());
    }
    for h in found {
        let addresses: Vec<String> = h.addresses.iter().map(|a| a.to_string()).collect();
        println!(
            "hub of network `{}` on `{}` (version {}) at {}",
            h.network,
            h.id,
            h.version,
            addresses.join(", ")
        );
        println!("  link: port {}", h.link_port);
        if let Some(url) = h.url() {
            println!("  web app: {url}/");
        }
        if let Some(fp) = &h.fingerprint {
            println!("  HTTPS certificate SHA-256: {fp}");
        }
    }
    Ok(())
}

pub(crate) fn devices() -> Result<()> {
    let list = tutti_audio::backend::list_devices();
    println!("{:<6} {:<6} {:<40} id", "host", "dir", "name");
    for d in list {
        let dir = match (d.input, d.output) {
            (true, true) => "in/out",
            (true, false) => "in",
            _ => "out",
        };
        println!(
            "{:<6} {:<6} {:<40} {}{}",
            d.host,
            dir,
            d.name,
            d.description,
            if d.default { "  (default)" } else { "" }
        );
    }
    Ok(())
}
