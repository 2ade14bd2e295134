//! `tutti party`: the party host, a microphone, or headphones mode.

use crate::*;

/// Which party process this is.
pub(crate) enum PartyRole {
    /// A microphone sending live to a host.
    Mic { host: SocketAddr },
    /// Headphones mode: a mixer on `port` for the peers' voices, the microphone sent from
    /// `port + 1` to each peer.
    Headphones { peers: Vec<SocketAddr>, port: u16 },
    /// The host mixing the microphones that send to `port`.
    Host { port: u16 },
}

/// `tutti party` as it will run: every flag checked (naming the flag and the fix) before
/// anything starts.
pub(crate) struct PartyPlan {
    pub(crate) role: PartyRole,
    /// The microphone's codec.
    pub(crate) codec: Codec,
    /// The microphone's packet, frames at 48 kHz.
    pub(crate) frames_per_packet: u16,
}

impl PartyPlan {
    pub(crate) fn new(a: &PartyArgs) -> Result<Self> {
        let codec = match parse_codec(&a.codec)? {
            Codec::Pcm24 | Codec::PcmF32 => bail!("--codec `{}`: use opus or pcm", a.codec),
            c => c,
        };
        // 48 kHz, one channel (two for a file): what a packet may hold.
        let channels = if a.file.is_some() && a.mic.is_none() && a.tone.is_none() { 2 } else { 1 };
        let frames_per_packet = frame_flag(a.frame_ms, codec, 48_000, channels)?;
        in_range("--buffer", Some(a.buffer), 32, 16_384, "frames")?;
        in_range("--max-mics", Some(a.max_mics), 1, 256, "microphones")?;
        in_range("--monitor-db", Some(a.monitor_db), -60.0, 20.0, "dB")?;
        in_range("--tone", a.tone, 20.0, 20_000.0, "Hz")?;
        in_range("--seconds", a.seconds, 0.0, 1e9, "s")?;
        for (name, db) in &a.gain {
            in_range(&format!("--gain {name}"), Some(*db), -60.0, 20.0, "dB")?;
        }
        let role = if let Some(host) = &a.to {
            PartyRole::Mic { host: resolve(host, "--to")? }
        } else if !a.peers.is_empty() {
            let port = a.port.unwrap_or(7500);
            if port == u16::MAX {
                bail!(
                    "--port {port}: headphones mode also sends from the next port: use at most 65534"
                );
            }
            let peers = a.peers.iter().map(|p| resolve(p, "--peers")).collect::<Result<_>>()?;
            PartyRole::Headphones { peers, port }
        } else {
            PartyRole::Host { port: a.port.unwrap_or(7500) }
        };
        Ok(PartyPlan { role, codec, frames_per_packet })
    }
}

pub(crate) fn party(a: PartyArgs, cfg: &config::Config) -> Result<()> {
    let _span = tracing::info_span!("party").entered();
    // Flags first: a mistake is said before anything starts.
    let plan = PartyPlan::new(&a)?;
    let m = member(&a.net, cfg)?;
    fetch_keys(&m, a.hub.as_deref(), "party", &m.prefix, vec![])?;
    let hub = a.hub.as_deref().or(m.hub.as_deref());
    let until = a.seconds.map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
    let running = || until.is_none_or(|u| std::time::Instant::now() < u);
    if let PartyRole::Mic { host } = plan.role {
        // A participant: a live stream to the host.
        let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), a.port.unwrap_or(0));
        let src = party_mic(&a, &plan, vec![host], bind, m.keys.clone())?;
        println!("sending live to {host} from {}", src.local_addr);
        // A hub citizen too (role `mic`): listed with whether it reaches the host.
        let what = a
            .mic
            .clone()
            .or_else(|| a.tone.map(|t| format!("tone{t}")))
            .unwrap_or_else(|| "default".into());
        let info = tutti_proto::control::NodeInfo {
            id: node_id(&format!("{}-mic-{what}", m.prefix)),
            name: format!("{} microphone", hostname()),
            role: "mic".into(),
            device: what,
            capabilities: Vec::new(),
            address: src.local_addr.to_string(),
            streams: Vec::new(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut discovery = discovery_for(&a.net, &info.id, "mic", src.local_addr.port());
        let mut mic = tutti_node::role::Source::of(vec![src], info.device.clone(), 48_000);
        let say = |m: String| tracing::info!("{m}");
        let link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, mic.control(), say)?;
        while !mic.view().ended && running() {
            std::thread::sleep(Duration::from_millis(100));
            for n in mic.notices() {
                if n.is_trouble() {
                    tracing::warn!("{n}");
                } else {
                    tracing::info!("{n}");
                }
            }
        }
        if let Some(l) = link {
            l.stop();
        }
        drop(discovery);
        mic.stop();
        return Ok(());
    }
    if let PartyRole::Headphones { peers, port } = &plan.role {
        // Headphones mode: a mixer here (the others' voices and our monitor), our microphone
        // to every peer and, over loopback, to our own mixer.
        let (mut to, port) = (peers.clone(), *port);
        let own_from = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port + 1);
        let monitor = (!a.no_monitor).then_some((own_from, a.monitor_db));
        if monitor.is_some() {
            to.push(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port));
        }
        let host = party_host(&a, port, monitor, m.keys.clone())?;
        let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port + 1);
        let src = party_mic(&a, &plan, to, bind, m.keys.clone())?;
        println!(
            "headphones mode: mixing on {} (peers send there), singing from {}",
            host.local_addr, src.local_addr
        );
        let (link, discovery) = mixer_link(&a, &host, &m, hub)?;
        show_mix(&host, &running);
        if let Some(l) = link {
            l.stop();
        }
        drop(discovery);
        src.stop();
        host.stop();
        return Ok(());
    }
    let PartyRole::Host { port } = plan.role else { unreachable!("the other roles returned") };
    let host = party_host(&a, port, None, m.keys.clone())?;
    println!(
        "party host on {}: microphones run `tutti party --to <this-host>:{}`",
        host.local_addr,
        host.local_addr.port()
    );
    let (link, discovery) = mixer_link(&a, &host, &m, hub)?;
    show_mix(&host, &running);
    if let Some(l) = link {
        l.stop();
    }
    drop(discovery);
    host.stop();
    Ok(())
}

/// The party host as a hub citizen (role `mixer`): its microphones, level and lead, and its
/// volume and mute set from the hub.
pub(crate) fn mixer_link(
    a: &PartyArgs,
    host: &tutti_node::mixer::RunningMixer,
    m: &Member,
    hub: Option<&str>,
) -> Result<(Option<tutti_node::hub::HubLink>, Option<tutti_node::discovery::Discovery>)> {
    let port = host.local_addr.port();
    let info = tutti_proto::control::NodeInfo {
        id: node_id(&format!("{}-mixer-{port}", m.prefix)),
        name: format!("{} party", hostname()),
        role: "mixer".into(),
        device: a.device.clone().unwrap_or_else(|| "default".into()),
        capabilities: vec!["volume".into(), "mute".into()],
        address: host.local_addr.to_string(),
        streams: Vec::new(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut discovery = discovery_for(&a.net, &info.id, "mixer", port);
    let say = |m: String| tracing::info!("{m}");
    let link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, host.control(), say)?;
    Ok((link, discovery))
}

/// A live microphone (or file, or tone) sent to `to`.
pub(crate) fn party_mic(
    a: &PartyArgs,
    plan: &PartyPlan,
    to: Vec<SocketAddr>,
    bind: SocketAddr,
    sec: tutti_node::security::Keys,
) -> Result<tutti_node::source::RunningSource> {
    let codec = plan.codec;
    let mut c = SourceConfig::new(
        1,
        48_000,
        if a.tone.is_some() || a.mic.is_some() || a.file.is_none() { 1 } else { 2 },
    );
    c.mode = Mode::Live;
    c.format.codec = codec;
    c.format.frames_per_packet = plan.frames_per_packet;
    c.group_latency = Nanos::ZERO;
    c.fec = None;
    c.receivers = to;
    let ch = usize::from(c.format.channels);
    let input = if let Some(f) = &a.file {
        c.name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        Input::Paced { source: Box::new(Converted::new(FileSource::open(f)?, 48_000, ch)?) }
    } else if let Some(hz) = a.tone {
        c.name = format!("tone {hz}");
        Input::Paced { source: Box::new(Tone::new(48_000, ch, hz, 0.25)) }
    } else {
        let backend =
            tutti_audio::backend::cpal::CpalBackend::available().into_iter().next().ok_or_else(
                || anyhow!("no audio host for the microphone (no PulseAudio server, no ALSA)"),
            )?;
        let (cap, stream) =
            CaptureSource::open(&backend, a.mic.as_deref(), &StreamSpec::new(48_000, 1, 64))?;
        std::mem::forget(stream);
        c.name = a.mic.clone().unwrap_or_else(hostname).chars().take(64).collect();
        Input::Captured(Box::new(cap))
    };
    let start = tutti_audio::clock::now() + Nanos::from_millis(300);
    let paced = matches!(input, Input::Paced { .. });
    let src = run_source(input, c, Encoding { codec, bitrate: 96_000 }, bind, sec, Some(start))?;
    if paced {
        // For measurements: the local instant the first sample counts as captured.
        println!("first_sample_local_ns={}", start.0);
    }
    Ok(src)
}

/// A mixer of live microphones on `port`.
pub(crate) fn party_host(
    a: &PartyArgs,
    port: u16,
    monitor: Option<(SocketAddr, f32)>,
    sec: tutti_node::security::Keys,
) -> Result<tutti_node::mixer::RunningMixer> {
    let output = if let Some(w) = &a.wav {
        OutputKind::Wav(w.clone())
    } else if a.null {
        OutputKind::Null
    } else {
        OutputKind::Device { host: None, name: a.device.clone() }
    };
    let opts = tutti_node::mixer::MixerOptions {
        bind: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port),
        output,
        buffer_frames: a.buffer,
        gains_db: a.gain.clone(),
        max_inputs: a.max_mics,
        monitor,
    };
    Ok(tutti_node::mixer::run_mixer(opts, sec)?)
}

/// Prints who joined and, on a terminal, the levels, until `running` says stop.
pub(crate) fn show_mix(host: &tutti_node::mixer::RunningMixer, running: &dyn Fn() -> bool) {
    let tty = std::io::stderr().is_terminal();
    while running() {
        std::thread::sleep(Duration::from_millis(250));
        for e in host.events() {
            if e.is_trouble() {
                tracing::warn!("{e}");
            } else {
                tracing::info!("{e}");
            }
        }
        let inputs = host.inputs.lock().map(|i| i.clone()).unwrap_or_default();
        if tty {
            let levels: Vec<String> = inputs
                .iter()
                .map(|i| {
                    format!(
                        "{} {:>5.1} dB{}",
                        i.name,
                        i.controls.meter.peak_db(),
                        i.latency.map_or(String::new(), |l| format!(" @{l}"))
                    )
                })
                .collect();
            eprint!("\r\x1b[Kmix {:>5.1} dB | {}", host.master.peak_db(), levels.join(" | "));
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    }
    // What each microphone cost, for the host's log (a dropout shows here, not only in the ear).
    let inputs = host.inputs.lock().map(|i| i.clone()).unwrap_or_default();
    for i in &inputs {
        let s = &i.stats;
        tracing::info!(
            "mic `{}`: {} packets, {} lost ({} FEC, {} resent, {} reordered), {} concealed, {} late, {} resyncs{}",
            i.name,
            s.received,
            s.lost,
            s.recovered_fec,
            s.recovered_retx,
            s.reordered,
            s.concealed,
            s.late,
            s.resyncs,
            i.latency.map_or(String::new(), |l| format!(", playing at {l}"))
        );
    }
    let underruns = host.shared.underrun_frames.load(std::sync::atomic::Ordering::Relaxed);
    let lead = host.shared.lead_frames.load(std::sync::atomic::Ordering::Relaxed);
    let refused = host.refused.load(std::sync::atomic::Ordering::Relaxed);
    let departed = host.departed.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        "mix: {underruns} underrun frames; rendering {:.1} ms ahead of the device; mics that \
         left: {departed}; datagrams refused (not of this network's streams): {refused}",
        lead as f64 / 48.0
    );
}
