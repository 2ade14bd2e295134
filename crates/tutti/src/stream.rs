//! `tutti stream`: a source.

use crate::*;

pub(crate) fn parse_codec(name: &str) -> Result<Codec> {
    Ok(match name {
        "pcm" | "pcm16" | "s16le" => Codec::Pcm16,
        "pcm24" | "s24le" => Codec::Pcm24,
        "f32" | "f32le" => Codec::PcmF32,
        "opus" => Codec::Opus,
        other => bail!("--codec `{other}`: use pcm, pcm24, f32 or opus"),
    })
}

/// Frames per packet for `--frame-ms` (checked: a packet holds at least a frame, PCM fits one
/// datagram, Opus takes its own frame sizes); the error names the flag and the fix.
pub(crate) fn frame_flag(ms: f64, codec: Codec, rate: u32, channels: u8) -> Result<u16> {
    let frames = f64::from(rate) * ms / 1000.0;
    if !frames.is_finite() || frames.round() < 1.0 {
        bail!("--frame-ms {ms}: a packet holds at least one frame: use 2.5, 5 or 10");
    }
    if codec == Codec::Opus {
        let sizes = [2.5, 5.0, 10.0, 20.0];
        if rate != 48_000 || !sizes.contains(&ms) {
            bail!("--frame-ms {ms}: Opus packets are 2.5, 5, 10 or 20 ms (at 48 kHz)");
        }
    }
    let format =
        tutti_proto::StreamFormat { sample_rate: rate, channels, codec, frames_per_packet: 0 };
    if let Some(fit) = format.max_pcm_frames()
        && frames.round() as usize > fit
    {
        bail!(
            "--frame-ms {ms}: {channels}-channel {} at {rate} Hz fits {:.2} ms in one \
             datagram: use 5 or less, or --codec opus",
            match codec {
                Codec::Pcm24 => "24-bit PCM",
                Codec::PcmF32 => "float PCM",
                _ => "16-bit PCM",
            },
            fit as f64 * 1000.0 / f64::from(rate)
        );
    }
    Ok(frames.round().min(f64::from(u16::MAX)) as u16)
}

/// `tutti stream` as it will run: every flag merged with the config file's `[stream]` and
/// checked (naming the flag and the fix) before anything starts.
pub(crate) struct StreamPlan {
    /// The stream's configuration (the first stream's; stems count up from it).
    pub(crate) base: SourceConfig,
    /// Codec and bitrate.
    pub(crate) encoding: Encoding,
    /// The first stream's port (stems take the next ones).
    pub(crate) port: u16,
    /// The address to bind.
    pub(crate) bind_ip: std::net::IpAddr,
    /// Raw input's sample format (`--stdin`, `--stdin-live`).
    pub(crate) raw_format: Codec,
    /// `--rtp-in`'s address and the senders it admits besides loopback (`--rtp-allow`).
    pub(crate) rtp_in: Option<(SocketAddr, Vec<ipnet::IpNet>)>,
}

impl StreamPlan {
    /// Merges and checks `a` and `cfg`.
    pub(crate) fn new(a: &StreamArgs, cfg: &config::Config) -> Result<Self> {
        let s = &cfg.stream;
        let codec = parse_codec(a.codec.as_deref().or(s.codec.as_deref()).unwrap_or(if a.live {
            "opus"
        } else {
            "pcm"
        }))?;
        // A captured input's packet leaves when its last frame is captured: at a tight group
        // latency, shorter packets leave more of it to the network and the players' devices.
        let latency_ms =
            in_range("--latency-ms", a.latency_ms.or(s.latency_ms), 10.0, 5000.0, "ms")?;
        let bitrate = in_range("--bitrate", a.bitrate.or(s.bitrate), 6_000, 510_000, "bits/s")?;
        let captured = a.device.is_some() || a.stdin_live || a.rtp_in.is_some();
        let tight = captured && latency_ms.is_some_and(|l| l < 40.0);
        let frame_ms = a.frame_ms.or(s.frame_ms).unwrap_or(if a.live || tight { 2.5 } else { 5.0 });
        let fpp = frame_flag(frame_ms, codec, a.rate, a.channels)?;
        let mut base = SourceConfig::new(1, a.rate, a.channels);
        base.format.codec = codec;
        base.format.frames_per_packet = fpp;
        base.mode = if a.live { Mode::Live } else { Mode::Sync };
        base.group_latency = if a.live {
            Nanos::ZERO
        } else {
            Nanos::from_secs_f64(latency_ms.unwrap_or(100.0) / 1e3)
        };
        if a.live {
            base.fec = None;
        }
        base.max_receivers = a.max_receivers.or(s.max_receivers).unwrap_or(64);
        let to: Vec<String> =
            if a.to.is_empty() { s.to.clone().unwrap_or_default() } else { a.to.clone() };
        base.receivers = to.iter().map(|t| resolve(t, "--to")).collect::<Result<_>>()?;
        base.multicast = a
            .multicast
            .as_deref()
            .or(s.multicast.as_deref())
            .map(|m| resolve(m, "--multicast"))
            .transpose()?;
        if let Some(g) = base.multicast.filter(|g| !g.ip().is_multicast()) {
            bail!(
                "`--multicast`: {} is not a multicast group: use 224.0.0.0–239.255.255.255 (e.g. 239.255.77.1:7400), or --to for unicast",
                g.ip()
            );
        }
        base.rtp =
            a.rtp.as_deref().or(s.rtp.as_deref()).map(|r| resolve(r, "--rtp")).transpose()?;
        if base.rtp.is_some() && codec != Codec::Pcm16 {
            bail!("--rtp sends L16 (16-bit PCM): leave --codec at pcm (or drop --rtp)");
        }
        base.validate().map_err(|e| {
            let flag = match e.field {
                "sample_rate" => "--rate",
                "channels" => "--channels",
                "frames_per_packet" => "--frame-ms",
                "group_latency" => "--latency-ms",
                other => other,
            };
            anyhow!("{flag}: {}", e.fix)
        })?;
        let encoding = Encoding { codec, bitrate: bitrate.unwrap_or(128_000) };
        let port = a.port.or(s.port).unwrap_or(7400);
        let bind_ip: std::net::IpAddr =
            a.bind.parse().with_context(|| format!("--bind `{}`: use an IP address", a.bind))?;
        let raw_format = parse_codec(&a.format)
            .ok()
            .filter(|c| *c != Codec::Opus)
            .ok_or_else(|| anyhow!("--format `{}`: use s16le, s24le or f32le", a.format))?;
        if !a.rtp_allow.is_empty() && a.rtp_in.is_none() {
            bail!(
                "--rtp-allow admits senders to --rtp-in: give --rtp-in ADDR (or drop --rtp-allow)"
            );
        }
        let rtp_in = match &a.rtp_in {
            Some(addr) => {
                let addr = resolve(addr, "--rtp-in")?;
                if addr.is_ipv6() && addr.ip().is_multicast() {
                    bail!(
                        "--rtp-in {addr}: IPv6 groups are not joined yet: use an IPv4 group or an address of this machine"
                    );
                }
                Some((addr, networks(&a.rtp_allow, "--rtp-allow")?))
            }
            None => None,
        };
        if a.input_latency_ms != 0.0 && !a.stdin_live {
            bail!(
                "--input-latency-ms is the latency of a --stdin-live producer: give --stdin-live (or drop it)"
            );
        }
        if a.stdin_live && (!a.input_latency_ms.is_finite() || a.input_latency_ms.abs() > 10_000.0)
        {
            bail!(
                "--input-latency-ms {}: give the producer's latency in ms, within ±10000",
                a.input_latency_ms
            );
        }
        Ok(StreamPlan { base, encoding, port, bind_ip, raw_format, rtp_in })
    }
}

pub(crate) fn stream(a: StreamArgs, cfg: &config::Config) -> Result<()> {
    // Flags and the config file first: a mistake is said before anything starts.
    let StreamPlan { base, encoding, port, bind_ip, raw_format: fmt, rtp_in } =
        StreamPlan::new(&a, cfg)?;
    let m = member(&a.net, cfg)?;
    let _span =
        tracing::info_span!("source", node = %node_id(&format!("{}-source-{port}", m.prefix)))
            .entered();
    let (rate, ch) = (a.rate, usize::from(a.channels));

    // Inputs: one per stream.
    let mut inputs: Vec<(String, Input)> = Vec::new();
    let opener = move || -> tutti_node::source::Opener {
        Box::new(move |p: &std::path::Path| {
            let src = FileSource::open(p)?;
            Ok(Box::new(Converted::new(src, rate, ch)?) as Box<dyn Source>)
        })
    };
    let playlist = |files: Vec<PathBuf>, looping: bool| {
        Input::Playlist(tutti_node::source::Playlist::new(files, looping, opener()))
    };
    if let Some(f) = &a.file {
        FileSource::open(f)?;
        inputs.push((f.display().to_string(), playlist(vec![f.clone()], a.looping)));
    } else if let Some(p) = &a.playlist {
        let files = playlist_files(p)?;
        inputs.push((p.display().to_string(), playlist(files, a.looping)));
    } else if let Some(d) = &a.dir {
        let files = audio_files(d, "--dir")?;
        if files.is_empty() {
            bail!("--dir {}: no audio files found", d.display());
        }
        for f in files {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            inputs.push((name, playlist(vec![f], a.looping)));
        }
    } else if let Some(hz) = a.tone {
        inputs.push((
            format!("tone {hz} Hz"),
            Input::Paced { source: Box::new(Tone::new(rate, ch, hz, 0.25)) },
        ));
    } else if a.stdin || a.stdin_live {
        // A live producer (`parec | tutti stream --stdin-live`) is captured as it comes, its
        // backlog dropped, each frame played a group latency after it arrived; anything else
        // is read at the stream's pace (a pipe cannot say whether its writer is live).
        let stdin = std::io::stdin();
        if a.stdin_live {
            let heard_after = Nanos((a.input_latency_ms * 1e6).round() as i64);
            let cap = CaptureSource::from_reader(stdin, "stdin", fmt, rate, ch, heard_after)?;
            inputs.push(("stdin".into(), Input::Captured(Box::new(cap))));
        } else {
            let raw = RawPcm::new(stdin, fmt, rate, ch)?;
            inputs.push(("stdin".into(), Input::Paced { source: Box::new(raw) }));
        }
    } else if let Some((addr, allow)) = rtp_in {
        let admit = move |ip: std::net::IpAddr| {
            ip.is_loopback() || allow.iter().any(|n: &ipnet::IpNet| n.contains(&ip))
        };
        let (cap, rtp) = tutti_node::rtp_in::receive_rtp(
            addr,
            rate,
            usize::from(a.channels),
            admit,
            |n| match n {
                tutti_node::rtp_in::RtpInNotice::Playing(_) => tracing::info!("{n}"),
                _ => tracing::warn!("{n}"),
            },
        )
        .with_context(|| format!("--rtp-in {addr}"))?;
        eprintln!(
            "tutti: listening for RTP (L16, {rate} Hz, {} ch) on {}",
            a.channels, rtp.local_addr
        );
        // The RTP input lives as long as this process.
        std::mem::forget(rtp);
        inputs.push((format!("rtp {addr}"), Input::Captured(Box::new(cap))));
    } else if let Some(dev) = &a.device {
        let backend = tutti_audio::backend::cpal::CpalBackend::available()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no audio host for --device (no PulseAudio server, no ALSA)"))?;
        let (cap, stream) = CaptureSource::open(
            &backend,
            Some(dev),
            &StreamSpec::new(rate, u16::from(a.channels), 128),
        )?;
        // The capture stream lives as long as this process.
        std::mem::forget(stream);
        inputs.push((format!("device {dev}"), Input::Captured(Box::new(cap))));
    } else {
        bail!(
            "nothing to stream: give --file, --playlist, --dir, --tone, --stdin, --device or --rtp-in (or device, file or playlist in the config file's [stream])"
        );
    }

    // Its keys (a paired node): the hub hands this stream's keys to its players from now on.
    let streams =
        (0..inputs.len()).map(|i| SocketAddr::new(bind_ip, port + i as u16).to_string()).collect();
    fetch_keys(&m, a.hub.as_deref(), "source", &format!("{}-source-{port}", m.prefix), streams)?;
    // Stems of a multitrack start together, and every stream starts 300 ms after launch, so
    // that players already listening lock their clocks and hear it from the first sample.
    let start = Some(tutti_audio::clock::now() + Nanos::from_millis(300));
    let mut running: Vec<RunningSource> = Vec::new();
    let first_name = inputs.first().map(|(n, _)| n.clone()).unwrap_or_default();
    for (i, (name, input)) in inputs.into_iter().enumerate() {
        let mut c = base.clone();
        c.stream_id = i as u32 + 1;
        c.name = name.chars().take(64).collect();
        if let Some(r) = &mut c.rtp {
            r.set_port(r.port() + 2 * i as u16);
        }
        let addr = SocketAddr::new(bind_ip, port + i as u16);
        let r = run_source(input, c, encoding, addr, m.keys.clone(), start)
            .with_context(|| format!("stream {name} on {addr}"))?;
        let meta = &r.metadata;
        let title = meta
            .title
            .clone()
            .map(|t| {
                format!(
                    " — {t}{}",
                    meta.artist.as_deref().map(|a| format!(" by {a}")).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        println!(
            "streaming {name}{title} on {}: players run `tutti play <this-host>:{}`",
            r.local_addr,
            r.local_addr.port()
        );
        if let Some(t0) = start {
            // For measurements: the local instant the first sample counts as captured.
            println!("first_sample_local_ns={}", t0.0);
        }
        running.push(r);
    }
    // The hub: this source is listed with what it plays, and takes start/pause/stop/skip.
    let first = &running[0];
    let playlist = first.progress.transport().is_some();
    let info = tutti_proto::control::NodeInfo {
        id: node_id(&format!("{}-source-{}", m.prefix, first.local_addr.port())),
        name: format!("{} source", hostname()),
        role: "source".into(),
        device: a.device.clone().unwrap_or_default(),
        capabilities: if playlist {
            ["start", "pause", "stop", "skip"].map(String::from).to_vec()
        } else {
            Vec::new()
        },
        address: first.local_addr.to_string(),
        streams: running.iter().map(|r| r.local_addr.to_string()).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut discovery = discovery_for(&a.net, &info.id, "source", first.local_addr.port());
    let mut source = tutti_node::role::Source::of(running, first_name, rate);
    // The hub link drives the source itself: transport, cover art.
    let said = source.control();
    let say = move |m: String| said.say(m);
    let hub = a.hub.as_deref().or(m.hub.as_deref());
    let _link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, source.control(), say)?;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let clear = if tty { "\r\x1b[K" } else { "" };
    let mut status_log = StatusLog::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        for n in source.notices() {
            if n.is_trouble() {
                tracing::warn!("{n}");
            } else {
                tracing::info!("{n}");
            }
        }
        let v = source.view();
        if !a.quiet {
            let (stats, rx, pos) = (&v.stats, &v.receivers, v.position_s);
            let lost: u64 = rx.iter().map(|x| x.2.lost).sum();
            let conc: u64 = rx.iter().map(|x| x.2.concealed).sum();
            let line = format!(
                "{} {:>6.1}{} s | receivers {} | sent {} pkts, {:.0} kB/s | NACKs {} retx {} | players lost {} concealed {}",
                if v.total_s.is_some() { "▶" } else { "●" },
                pos,
                v.total_s.map(|t| format!(" / {t:.1}")).unwrap_or_default(),
                rx.len(),
                stats.frames_sent,
                stats.bytes as f64 / 1e3 / (pos.max(0.001)),
                stats.nacks_received,
                stats.retransmits,
                lost,
                conc
            );
            if tty {
                eprint!("{clear}{line}");
                let _ = std::io::stderr().flush();
            } else {
                let key = format!("{} {lost} {conc}", rx.len());
                status_log.tick(key, || {
                    format!(
                        "receivers={} position_s={pos:.1} sent_pkts={} nacks={} retransmits={} players_lost={lost} players_concealed={conc}",
                        rx.len(),
                        stats.frames_sent,
                        stats.nacks_received,
                        stats.retransmits
                    )
                });
            }
        }
        if v.ended {
            if tty {
                eprintln!();
            }
            println!("stream ended");
            return Ok(());
        }
    }
}

/// The files of folder `dir` that open as audio, by name (`flag` names it in errors).
pub(crate) fn audio_files(dir: &std::path::Path, flag: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{flag} {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && FileSource::open(f).is_ok())
        .collect();
    files.sort();
    Ok(files)
}

/// A playlist's files: a folder's audio files by name, or an .m3u list's entries (relative to
/// the list).
pub(crate) fn playlist_files(p: &std::path::Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = if p.is_dir() {
        audio_files(p, "--playlist")?
    } else {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("--playlist {}: a folder or an .m3u list", p.display()))?;
        let base = p.parent().unwrap_or(std::path::Path::new("."));
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| base.join(l))
            .collect()
    };
    if files.is_empty() {
        bail!("--playlist {}: no audio files in it", p.display());
    }
    Ok(files)
}
