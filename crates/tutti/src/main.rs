//! `tutti`: audio over a local network, in time.
//!
//! ```text
//! tutti stream --file song.flac --to 192.168.1.20:7400      # a source
//! tutti play 192.168.1.10:7400                              # a player
//! tutti devices                                             # what can play and record here
//! tutti demo                                                # a source and three players, here
//! ```
//! Only `main` uses `anyhow`; the crates below return typed errors.

#![forbid(unsafe_code)]

mod config;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tutti_audio::backend::StreamSpec;
use tutti_audio::capture::CaptureSource;
use tutti_audio::source::{Converted, FileSource, RawPcm, Source, Tone};
use tutti_node::output::OutputKind;
use tutti_node::player::{PlayerOptions, PlayerSnapshot, RunningPlayer, run_player};
use tutti_node::source::{Encoding, Input, RunningSource, run_source};
use tutti_proto::{Codec, LocalTime, Mode, Nanos, PlayerConfig, Security, SourceConfig};

/// Audio over a local network, in time: one source on many speakers in sync, or many
/// microphones mixed live.
#[derive(Parser, Debug)]
#[command(name = "tutti", version, about, long_about = None)]
struct Cli {
    /// A TOML config file (sections `[network]`, `[stream]`, `[play]`); flags override it.
    #[arg(long, global = true, env = "TUTTI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream audio to players (a source).
    Stream(StreamArgs),
    /// Play a stream (a player).
    Play(PlayArgs),
    /// List audio input and output devices.
    Devices,
    /// Run the hub: the control plane every node can join (HTTP + WebSocket API, node link).
    Serve(ServeArgs),
    /// Join this node to a hub's network with a one-time pairing link (`tutti serve` prints
    /// one; POST /api/pairing makes more). The node keeps its own credential (owner-only).
    Pair(PairArgs),
    /// Run a source and several players on this machine and show them in sync.
    Demo(DemoArgs),
    /// Karaoke: with --to, send this device's microphone live to a host; with --peers,
    /// headphones mode (send it to every peer, mix theirs with your own monitor); with
    /// neither, be the host that mixes every microphone sent to it and plays the mix.
    Party(PartyArgs),
    /// Record input devices with capture timestamps and print the clicks found in each, one
    /// JSON line per device (a measurement tool: are several players in sync?).
    #[command(hide = true)]
    Record(RecordArgs),
    /// Inter-player skew of WAV outputs (written by `tutti play --wav` from a stream of
    /// clicks): matches each click across the files by their first-sample instants.
    #[command(hide = true)]
    Skew {
        /// The players' WAV files (two or more).
        #[arg(required = true, num_args = 2..)]
        wavs: Vec<PathBuf>,
    },
    /// Write a WAV of clicks every 250 ms (for measurements).
    #[command(hide = true)]
    ClicksWav {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Length.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

#[derive(Args, Debug)]
struct PairArgs {
    /// The link: `tutti://HOST:PORT/pair/ID.SECRET`.
    link: String,
    /// How the hub will show this node (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Where to keep the pairing (default ~/.config/tutti/pairing.json; also TUTTI_PAIRING).
    #[arg(long, env = "TUTTI_PAIRING")]
    pairing: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Input devices (e.g. the monitors of null sinks).
    #[arg(long = "in", required = true)]
    inputs: Vec<String>,
    /// How long to record.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Audio host: pulse or alsa.
    #[arg(long, default_value = "pulse")]
    host: String,
}

#[derive(Args, Debug)]
struct PartyArgs {
    /// The host to send this microphone to (participant mode).
    #[arg(long, conflicts_with = "peers")]
    to: Option<String>,
    /// Headphones mode: every singer's node, comma-separated (HOST:PORT of their `tutti party
    /// --peers`). This node sends its microphone to each and mixes theirs with its own
    /// monitor; it listens on --port and sends from --port + 1.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Headphones mode: your own voice in your mix, dB.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    monitor_db: f32,
    /// Headphones mode: leave your own voice out of your mix.
    #[arg(long)]
    no_monitor: bool,
    /// Input device (participant; default input if omitted).
    #[arg(long, conflicts_with_all = ["file", "tone"])]
    mic: Option<String>,
    /// Send a file instead of a microphone (participant; tests, backing tracks).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Send a tone instead of a microphone (participant).
    #[arg(long)]
    tone: Option<f64>,
    /// Codec (participant): opus (default) or pcm.
    #[arg(long, default_value = "opus")]
    codec: String,
    /// Packet duration, ms (participant).
    #[arg(long, default_value_t = 2.5)]
    frame_ms: f64,
    /// Port (host: where microphones send; participant: local).
    #[arg(long)]
    port: Option<u16>,
    /// Host: write the mix to a WAV file.
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Host: play the mix into nothing.
    #[arg(long)]
    null: bool,
    /// Host: output device.
    #[arg(long)]
    device: Option<String>,
    /// Host: device buffer, frames.
    #[arg(long, default_value_t = 128)]
    buffer: u32,
    /// Host: a microphone's gain, by (part of) its stream name: NAME=DB (repeatable).
    #[arg(long, value_parser = parse_gain)]
    gain: Vec<(String, f32)>,
    /// Host: most microphones.
    #[arg(long, default_value_t = 32)]
    max_mics: usize,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Host: join a hub (`tutti serve`) at HOST:PORT (its node link, 7481): it lists this
    /// party with its microphones and level, and sets its volume. Without it, the hub mDNS
    /// finds (if any).
    #[arg(long)]
    hub: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_gain(s: &str) -> std::result::Result<(String, f32), String> {
    let (name, db) =
        s.split_once('=').ok_or_else(|| format!("`{s}`: write NAME=DB, e.g. alice=-6"))?;
    let db: f32 = db.parse().map_err(|_| format!("`{s}`: `{db}` is not a number of dB"))?;
    Ok((name.to_owned(), db))
}

#[derive(Args, Debug, Clone, Default)]
struct NetArgs {
    /// The network's passphrase (the same on every node).
    #[arg(long, env = "TUTTI_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    /// The network's name (salts the passphrase).
    #[arg(long)]
    network: Option<String>,
    /// Send and accept unencrypted, unauthenticated audio (labs only: anyone on the LAN can
    /// listen and inject).
    #[arg(long)]
    insecure: bool,
    /// This node's pairing (from `tutti pair`), used when no passphrase is given; default
    /// ~/.config/tutti/pairing.json.
    #[arg(long, env = "TUTTI_PAIRING")]
    pairing: Option<PathBuf>,
    /// Neither advertise this node over mDNS nor look for a hub there (also TUTTI_MDNS=off).
    #[arg(long)]
    no_mdns: bool,
}

impl NetArgs {
    fn mdns(&self) -> bool {
        !self.no_mdns && tutti_node::discovery::enabled_by_env()
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Plain HTTP + WebSocket API address: this machine only (a loopback address) unless
    /// --plain-http-anywhere; every request needs the admin or read-only token either way.
    #[arg(long, default_value = "127.0.0.1:7480")]
    http: SocketAddr,
    /// The same API and the web app over HTTPS, with the hub's own certificate (made on first
    /// start, kept beside the settings; its fingerprint is printed).
    #[arg(long, default_value = "0.0.0.0:7443", conflicts_with = "no_https")]
    https: SocketAddr,
    /// No HTTPS.
    #[arg(long)]
    no_https: bool,
    /// Allow --http on an address other machines reach (tokens then cross the network in
    /// clear: only on a segment you trust, or behind a TLS proxy).
    #[arg(long)]
    plain_http_anywhere: bool,
    /// Where nodes connect: paired nodes with their credential, or (with --passphrase) any
    /// node holding the network key.
    #[arg(long, default_value = "0.0.0.0:7481")]
    link: SocketAddr,
    /// The address nodes reach the link at, as written in pairing links (default: this
    /// machine's address on its default route, and the link's port).
    #[arg(long)]
    advertise: Option<String>,
    /// Use this admin token for the API instead of the generated one (16+ characters; it is
    /// saved in the secrets file).
    #[arg(long, env = "TUTTI_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Rotate the stream keys this often (hours).
    #[arg(long, default_value_t = 24.0)]
    key_hours: f64,
    /// Settings file (names, zones, volumes, delays); default ~/.local/state/tutti/hub.json.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Keep settings in memory only.
    #[arg(long, conflicts_with = "state")]
    no_state: bool,
    /// The embedded MQTT broker's address (clients log in with the credentials the hub prints).
    #[arg(long, default_value = "0.0.0.0:1883")]
    mqtt: SocketAddr,
    /// Use an external MQTT broker instead of the embedded one:
    /// `mqtt://[user:password@]host[:port]` (Mosquitto, say).
    #[arg(long, conflicts_with = "no_mqtt")]
    mqtt_url: Option<String>,
    /// No MQTT at all.
    #[arg(long)]
    no_mqtt: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
struct StreamArgs {
    /// An audio file (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A...).
    #[arg(long, group = "input")]
    file: Option<PathBuf>,
    /// Tracks one after another on one stream: a folder (its audio files by name) or an
    /// .m3u list. The hub can start, pause, stop and skip it.
    #[arg(long, group = "input")]
    playlist: Option<PathBuf>,
    /// A folder: one synchronized stream per file (multitrack), on consecutive ports.
    #[arg(long, group = "input")]
    dir: Option<PathBuf>,
    /// A test tone (Hz).
    #[arg(long, group = "input", num_args = 0..=1, default_missing_value = "440")]
    tone: Option<f64>,
    /// Raw PCM from standard input (see --format, --rate, --channels), read at the stream's
    /// pace (a file, or a decoder writing faster than real time).
    #[arg(long, group = "input")]
    stdin: bool,
    /// Raw PCM from a live producer on standard input (`parec`, `arecord`): captured as it
    /// arrives, what was queued before the stream started dropped, every frame played a group
    /// latency after it arrived.
    #[arg(long, group = "input")]
    stdin_live: bool,
    /// With --stdin-live: how long after it arrives a frame is heard where it comes from, ms.
    /// A monitor's data leaves its sink before the sink plays it: give that sink's latency
    /// (`pactl list sinks` shows it) and players sync to what the sink plays. Negative for a
    /// producer that delivers what it captured late.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, requires = "stdin_live")]
    input_latency_ms: f64,
    /// Capture from an input device (e.g. "out.monitor" to stream this computer's sound).
    #[arg(long, group = "input")]
    device: Option<String>,
    /// Unicast receivers (players can also join by themselves).
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    /// A multicast group to send to (e.g. 239.255.77.1:7400).
    #[arg(long)]
    multicast: Option<String>,
    /// Local UDP port (the first of several with --dir).
    #[arg(long)]
    port: Option<u16>,
    /// Local address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// Codec: pcm (16-bit), pcm24, f32, opus.
    #[arg(long)]
    codec: Option<String>,
    /// Packet duration in ms (2.5, 5, 10, 20 for Opus); 5 by default, 2.5 live and for a captured input (device, stdin) under 40 ms of group latency.
    #[arg(long)]
    frame_ms: Option<f64>,
    /// Group latency in ms (sync mode): every player plays this long after capture.
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Live mode: minimal adaptive latency (microphones).
    #[arg(long)]
    live: bool,
    /// Start the input again when it ends.
    #[arg(long = "loop")]
    looping: bool,
    /// Most unicast receivers; others are told "server full".
    #[arg(long)]
    max_receivers: Option<usize>,
    /// Opus bitrate, bits per second.
    #[arg(long)]
    bitrate: Option<i32>,
    /// Sample rate of the stream.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Channels of the stream.
    #[arg(long, default_value_t = 2)]
    channels: u8,
    /// Raw input format with --stdin: s16le, s24le, f32le.
    #[arg(long, default_value = "s16le")]
    format: String,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Join a hub (`tutti serve`) at HOST:PORT (its node link, 7481): it lists this source
    /// with its track and starts, pauses, stops and skips a playlist. Without it, the hub
    /// mDNS finds (if any).
    #[arg(long)]
    hub: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
struct PlayArgs {
    /// The source's address (host:port), or a multicast group with --group.
    source: Option<String>,
    /// Join a hub (`tutti serve`) at HOST:PORT (its node link, 7481): it lists this player
    /// and sets its volume, mute and delay.
    #[arg(long)]
    hub: Option<String>,
    /// Output device (see `tutti devices`); the default device if omitted.
    #[arg(long)]
    device: Option<String>,
    /// Audio host: pulse or alsa.
    #[arg(long)]
    host: Option<String>,
    /// Write to a WAV file instead of a device.
    #[arg(long, conflicts_with_all = ["device", "null"])]
    wav: Option<PathBuf>,
    /// Play into nothing (for tests and measurements).
    #[arg(long)]
    null: bool,
    /// Volume, percent.
    #[arg(long)]
    volume: Option<f32>,
    /// Per-device delay in ms: positive plays later, negative earlier.
    #[arg(long, allow_hyphen_values = true)]
    delay_ms: Option<f64>,
    /// Play at this group latency instead of the source's (zones).
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Device buffer in frames (default: a fifth of the group latency, at most 1024)
    #[arg(long)]
    buffer: Option<u32>,
    /// Listen to a multicast group (the source address still receives clock probes).
    #[arg(long)]
    group: Option<String>,
    /// Stream id to join (a multitrack's stem).
    #[arg(long, default_value_t = 0)]
    stream_id: u32,
    /// This player's name.
    #[arg(long)]
    name: Option<String>,
    /// Local port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// No status line.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Players.
    #[arg(long, default_value_t = 3)]
    players: usize,
    /// How long to run.
    #[arg(long, default_value_t = 12.0)]
    seconds: f64,
    /// Also play on this machine's default sound device (if it has one).
    #[arg(long)]
    speaker: bool,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("tutti: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let cfg = match &cli.config {
        Some(p) => config::load(p)?,
        None => config::Config::default(),
    };
    match cli.command {
        Command::Stream(a) => stream(a, &cfg),
        Command::Play(a) => play(a, &cfg),
        Command::Devices => devices(),
        Command::Serve(a) => serve(a, &cfg),
        Command::Pair(a) => pair(a),
        Command::Demo(a) => demo(a),
        Command::Party(a) => party(a, &cfg),
        Command::Record(a) => record(a),
        Command::ClicksWav { out, seconds } => clicks_wav(&out, seconds),
        Command::Skew { wavs } => skew(&wavs),
    }
}

/// How this node belongs to its network: the keys its sessions use, how it proves itself to
/// the hub, the hub its pairing names, and the prefix of its node ids.
struct Member {
    keys: tutti_node::security::Keys,
    auth: Option<tutti_node::hub::LinkAuth>,
    hub: Option<String>,
    prefix: String,
}

/// `--insecure`, else a passphrase, else this node's pairing (`tutti pair`).
fn member(net: &NetArgs, cfg: &config::Config) -> Result<Member> {
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

fn security(net: &NetArgs, cfg: &config::Config) -> Result<Security> {
    let insecure = net.insecure || cfg.network.insecure.unwrap_or(false);
    let pass = net.passphrase.clone().or_else(|| cfg.network.passphrase.clone());
    let name = net
        .network
        .clone()
        .or_else(|| cfg.network.name.clone())
        .unwrap_or_else(|| tutti_node::security::DEFAULT_NETWORK.into());
    if insecure {
        eprintln!(
            "tutti: WARNING: --insecure: audio goes unencrypted and unauthenticated; anyone on this network can listen and inject"
        );
    }
    Ok(tutti_node::security::from_options(pass.as_deref(), &name, insecure)?)
}

fn resolve(addr: &str, what: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("{what} `{addr}`: use host:port, e.g. 192.168.1.20:7400"))?
        .next()
        .ok_or_else(|| anyhow!("{what} `{addr}` resolves to nothing"))
}

fn parse_codec(name: &str) -> Result<Codec> {
    Ok(match name {
        "pcm" | "pcm16" | "s16le" => Codec::Pcm16,
        "pcm24" | "s24le" => Codec::Pcm24,
        "f32" | "f32le" => Codec::PcmF32,
        "opus" => Codec::Opus,
        other => bail!("--codec `{other}`: use pcm, pcm24, f32 or opus"),
    })
}

fn stream(a: StreamArgs, cfg: &config::Config) -> Result<()> {
    let m = member(&a.net, cfg)?;
    let s = &cfg.stream;
    let codec = parse_codec(a.codec.as_deref().or(s.codec.as_deref()).unwrap_or(if a.live {
        "opus"
    } else {
        "pcm"
    }))?;
    // A captured input's packet leaves when its last frame is captured: at a tight group
    // latency, shorter packets leave more of it to the network and the players' devices.
    let latency_ms = in_range("--latency-ms", a.latency_ms.or(s.latency_ms), 10.0, 5000.0, "ms")?;
    let bitrate = in_range("--bitrate", a.bitrate.or(s.bitrate), 6_000, 510_000, "bits/s")?;
    let tight = (a.device.is_some() || a.stdin_live) && latency_ms.is_some_and(|l| l < 40.0);
    let frame_ms = a.frame_ms.or(s.frame_ms).unwrap_or(if a.live || tight { 2.5 } else { 5.0 });
    let fpp = (f64::from(a.rate) * frame_ms / 1000.0).round() as u16;
    let mut base = SourceConfig::new(1, a.rate, a.channels);
    base.codec = codec;
    base.frames_per_packet = fpp;
    base.mode = if a.live { Mode::Live } else { Mode::Sync };
    base.group_latency =
        if a.live { Nanos::ZERO } else { Nanos::from_secs_f64(latency_ms.unwrap_or(100.0) / 1e3) };
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
    let encoding = Encoding { codec, bitrate: bitrate.unwrap_or(128_000) };
    let port = a.port.or(s.port).unwrap_or(7400);
    let bind_ip: std::net::IpAddr =
        a.bind.parse().with_context(|| format!("--bind `{}`: use an IP address", a.bind))?;
    let (rate, ch) = (a.rate, usize::from(a.channels));

    // Inputs: one per stream.
    let mut inputs: Vec<(String, Input)> = Vec::new();
    let opener = move || -> tutti_node::source::Opener {
        Box::new(move |p: &std::path::Path| {
            let src = FileSource::open(p).map_err(|e| e.to_string())?;
            Ok(Box::new(Converted::new(src, rate, ch).map_err(|e| e.to_string())?)
                as Box<dyn Source>)
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
        let fmt = parse_codec(&a.format)
            .ok()
            .filter(|c| *c != Codec::Opus)
            .ok_or_else(|| anyhow!("--format `{}`: use s16le, s24le or f32le", a.format))?;
        // A live producer (`parec | tutti stream --stdin-live`) is captured as it comes, its
        // backlog dropped, each frame played a group latency after it arrived; anything else
        // is read at the stream's pace (a pipe cannot say whether its writer is live).
        let stdin = std::io::stdin();
        if a.stdin_live {
            if !a.input_latency_ms.is_finite() || a.input_latency_ms.abs() > 10_000.0 {
                bail!(
                    "--input-latency-ms {}: give the producer's latency in ms, within ±10000",
                    a.input_latency_ms
                );
            }
            let heard_after = Nanos((a.input_latency_ms * 1e6).round() as i64);
            let cap = CaptureSource::from_reader(stdin, "stdin", fmt, rate, ch, heard_after)?;
            inputs.push(("stdin".into(), Input::Captured(Box::new(cap))));
        } else {
            let raw = RawPcm::new(stdin, fmt, rate, ch)?;
            inputs.push(("stdin".into(), Input::Paced { source: Box::new(raw) }));
        }
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
        bail!("nothing to stream: give --file, --playlist, --dir, --tone, --stdin or --device");
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
    let handler = SourceHub {
        progress: running.iter().map(|r| r.progress.clone()).collect(),
        name: first_name,
        rate,
        cover_sent: None,
    };
    let log = first.progress.clone();
    let say = move |m: String| {
        if let Ok(mut l) = log.log.lock() {
            l.push(m);
        }
    };
    let hub = a.hub.as_deref().or(m.hub.as_deref());
    let _link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, handler, say)?;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let mut status_log = StatusLog::new();
    let mut shown_track = 0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(now) = first.progress.now_playing.lock()
            && now.serial != shown_track
        {
            shown_track = now.serial;
            if now.count > 1 || shown_track > 1 {
                let title = now.metadata.title.clone().unwrap_or_else(|| now.file.clone());
                let by =
                    now.metadata.artist.as_deref().map(|a| format!(" by {a}")).unwrap_or_default();
                eprintln!(
                    "{}now playing {}/{}: {title}{by}",
                    if tty { "\r\x1b[K" } else { "" },
                    now.index + 1,
                    now.count
                );
            }
        }
        for r in &running {
            if let Ok(mut log) = r.progress.log.lock() {
                for l in log.drain(..) {
                    eprintln!("{}{l}", if tty { "\r\x1b[K" } else { "" });
                }
            }
        }
        if !a.quiet {
            let r = &running[0];
            let p = &r.progress;
            let (stats, rx) = p.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
            let pos = p.frames.load(Ordering::Relaxed) as f64 / f64::from(rate);
            let total = p.total.load(Ordering::Relaxed) as f64 / f64::from(rate);
            let lost: u64 = rx.iter().map(|x| x.2.lost).sum();
            let conc: u64 = rx.iter().map(|x| x.2.concealed).sum();
            let line = format!(
                "{} {:>6.1}{} s | receivers {} | sent {} pkts, {:.0} kB/s | NACKs {} retx {} | players lost {} concealed {}",
                if total > 0.0 { "▶" } else { "●" },
                pos,
                if total > 0.0 { format!(" / {total:.1}") } else { String::new() },
                rx.len(),
                stats.frames_sent,
                stats.bytes as f64 / 1e3 / (pos.max(0.001)),
                stats.nacks_received,
                stats.retransmits,
                lost,
                conc
            );
            if tty {
                eprint!("\r\x1b[K{line}");
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
        if running.iter().all(|r| r.finished()) {
            if tty {
                eprintln!();
            }
            println!("stream ended");
            return Ok(());
        }
    }
}

/// The files of folder `dir` that open as audio, by name (`flag` names it in errors).
fn audio_files(dir: &std::path::Path, flag: &str) -> Result<Vec<PathBuf>> {
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
fn playlist_files(p: &std::path::Path) -> Result<Vec<PathBuf>> {
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

/// `value` of `field` (a flag or its config key) within `lo..=hi`, or an error that names both
/// and the range, as the hub's API says it.
fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    value: Option<T>,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<Option<T>> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => {
            bail!("`{field}`: {v} is outside {lo}–{hi} ({unit})")
        }
        v => Ok(v),
    }
}

fn play_options(a: &PlayArgs, cfg: &config::Config) -> Result<(PlayerOptions, Member)> {
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

fn hostname() -> String {
    tutti_node::hostname()
}

/// Status for a log (stderr not a terminal: a service's journal, a file): one `status:` line
/// of `key=value` fields whenever the counters that matter change, and every 10 s.
struct StatusLog {
    last: Option<(std::time::Instant, String)>,
}

impl StatusLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        StatusLog { last: None }
    }

    /// Prints `fields` if `key` (the counters that matter) changed or 10 s went by.
    fn tick(&mut self, key: String, fields: impl FnOnce() -> String) {
        let due = match &self.last {
            None => true,
            Some((at, k)) => *k != key || at.elapsed() >= Self::EVERY,
        };
        if due {
            eprintln!("status: {}", fields());
            self.last = Some((std::time::Instant::now(), key));
        }
    }
}

/// A player's status as `key=value` fields (see [`StatusLog`]).
fn status_fields(s: &PlayerSnapshot) -> String {
    let c = s.clock.as_ref();
    format!(
        "state={} offset_us={} skew_ppm={:.2} latency_ms={} device_latency_ms={:.2} buffer_pkts={} underrun_frames={} resyncs={} concealed={} stalled={} recovered_fec={} recovered_nack={} foreign={}",
        if s.streaming { "playing" } else { "waiting" },
        c.map_or("?".into(), |c| format!("{:.1}", c.offset.0 as f64 / 1e3)),
        c.map_or(0.0, |c| c.skew_ppm()),
        s.latency.map_or("?".into(), |l| format!("{:.3}", l.0 as f64 / 1e6)),
        s.device_latency.0 as f64 / 1e6,
        s.buffered,
        s.underrun_frames,
        s.stats.resyncs,
        s.stats.concealed,
        s.stats.stalled,
        s.stats.recovered_fec,
        s.stats.recovered_retx,
        s.stats.foreign,
    )
}

fn status_line(s: &PlayerSnapshot) -> String {
    let c = s.clock.as_ref();
    // Datagrams of other streams or of earlier runs (relayed, replayed): ignored, but said.
    let foreign = match s.stats.foreign {
        0 => String::new(),
        n => format!(" | ignored {n} of other streams"),
    };
    format!(
        "{} offset {} | skew {:+.2} ppm | ±{} | buffer {} pkts, latency {} | recovered FEC {} NACK {} | concealed {} | stalled {} | resyncs {} | underruns {}{foreign}",
        if s.streaming { "▶" } else { "…" },
        c.map_or("?".into(), |c| c.offset.to_string()),
        c.map_or(0.0, |c| c.skew_ppm()),
        c.map_or("?".into(), |c| c.uncertainty.to_string()),
        s.buffered,
        s.latency.map_or("?".into(), |l| l.to_string()),
        s.stats.recovered_fec,
        s.stats.recovered_retx,
        s.stats.concealed,
        s.stats.stalled,
        s.stats.resyncs,
        s.underrun_frames
    )
}

/// mDNS: advertises this node (and listens for the hub), unless `--no-mdns`.
fn discovery_for(
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
                eprintln!("tutti: {e} (the hub will not discover this {role})");
            }
            Some(d)
        }
        Err(e) => {
            eprintln!("tutti: {e} (no discovery: name the hub with --hub)");
            None
        }
    }
}

/// A paired node's first keys, before its sessions start (a player must decode what it
/// joins; a source must not send its first packets under no key): those of the session
/// `role`/`id` that sends or follows `streams`. `None` for nodes that are not paired. The
/// hub's note (why the keys open no stream) is in the answer.
fn fetch_keys(
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
fn wait_for_keys(
    m: &Member,
    hub: Option<&str>,
    id: &str,
    follows: Vec<String>,
    seconds: Option<f64>,
) -> Result<Option<tutti_node::hub::Granted>> {
    let started = std::time::Instant::now();
    let mut said = None;
    loop {
        let Some(granted) = fetch_keys(m, hub, "player", id, follows.clone())? else {
            return Ok(None);
        };
        let Some(note) = granted.note.clone() else {
            if said.is_some() {
                eprintln!("tutti: the hub handed over the stream's keys");
            }
            return Ok(Some(granted));
        };
        if said.as_ref() != Some(&note) {
            eprintln!("tutti: waiting for the hub to hand over the stream's keys: {note}");
            said = Some(note.clone());
        }
        if seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
            bail!("no stream keys from the hub within {:.0} s: {note}", seconds.unwrap_or(0.0));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where and how a paired node asks for its keys (`None`: not a paired node).
fn key_request(
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
fn join_hub(
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
                eprintln!("tutti: {e} (no discovery: name the hub with --hub)");
                None
            }
        },
        _ => None,
    })
}

/// A node id: stable across restarts (the hub keeps settings by id), DNS-label safe.
fn node_id(parts: &str) -> String {
    parts
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}

fn play(a: PlayArgs, cfg: &config::Config) -> Result<()> {
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
    // A paired player needs its keys before it can hear the stream it joins.
    let mut opts = opts;
    let follows = vec![opts.config.source.to_string()];
    let granted = wait_for_keys(&m, a.hub.as_deref(), &id, follows.clone(), a.seconds)?;
    // The hub chose the stream (its zone's): play that one from the start.
    if let Some(zone_stream) = granted.and_then(|g| g.stream) {
        let s = resolve(&zone_stream, "the zone's stream")?;
        if s != opts.config.source {
            eprintln!("tutti: zone: playing {zone_stream} (this player's zone's stream)");
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
            eprintln!("{clear}{n}");
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

fn devices() -> Result<()> {
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

fn demo(a: DemoArgs) -> Result<()> {
    println!(
        "Tutti demo: one source, {} players on this machine (loopback, encrypted), {} s.",
        a.players, a.seconds
    );
    let key = Security::encrypted(tutti_proto::NetworkKey::from_bytes(
        tutti_node::security::try_random()?,
    ));
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.name = "demo chord".into();
    let src = run_source(
        Input::Paced { source: Box::new(Tone::new(48_000, 2, 440.0, 0.2)) },
        cfg,
        Encoding { codec: Codec::Pcm16, bitrate: 0 },
        "127.0.0.1:0".parse()?,
        key.clone(),
        None,
    )?;
    println!(
        "source on {} (PCM 48 kHz stereo, 100 ms group latency, FEC 8+2, NACK)",
        src.local_addr
    );
    let mut players: Vec<RunningPlayer> = Vec::new();
    for i in 0..a.players {
        let mut pc = PlayerConfig::new(src.local_addr);
        pc.name = format!("player-{}", i + 1);
        let output = if a.speaker && i == 0 {
            OutputKind::Device { host: None, name: None }
        } else {
            OutputKind::Null
        };
        let opts = PlayerOptions {
            config: pc,
            bind: "127.0.0.1:0".parse()?,
            group: None,
            output,
            buffer_frames: None,
            volume: 100.0,
            join_timeout: Duration::from_secs(5),
        };
        players.push(run_player(opts, key.clone())?);
    }
    println!(
        "{:>5}  {:>12}  per player: clock offset ± bound, skew, buffer, recovered/concealed",
        "t (s)", "sync spread"
    );
    let start = std::time::Instant::now();
    while start.elapsed().as_secs_f64() < a.seconds {
        std::thread::sleep(Duration::from_secs(1));
        // Where each player will play the same sample: the spread is their disagreement.
        let media = tutti_proto::MediaTime((start.elapsed().as_secs() + 2) * 48_000);
        let due: Vec<Option<tutti_proto::LocalTime>> =
            players.iter().map(|p| p.session.lock().ok().and_then(|s| s.due_at(media))).collect();
        let known: Vec<_> = due.iter().flatten().collect();
        let spread = match (known.iter().min(), known.iter().max()) {
            (Some(lo), Some(hi)) if known.len() == players.len() => {
                format!("{:.1} µs", (**hi - **lo).as_micros_f64())
            }
            _ => "locking".into(),
        };
        let per: Vec<String> = players
            .iter()
            .map(|p| {
                let s = p.status.lock().map(|s| s.clone()).unwrap_or_default();
                s.clock.map_or("locking".into(), |c| {
                    format!(
                        "{} ±{} {:+.1}ppm {}pk {}/{}",
                        c.offset,
                        c.uncertainty,
                        c.skew_ppm(),
                        s.buffered,
                        s.stats.recovered_fec + s.stats.recovered_retx,
                        s.stats.concealed
                    )
                })
            })
            .collect();
        println!("{:>5.0}  {:>12}  {}", start.elapsed().as_secs_f64(), spread, per.join(" | "));
    }
    for p in players {
        p.stop();
    }
    src.stop();
    println!(
        "\nOn a machine with a sound card: `tutti stream --tone --passphrase SECRET` on one, \
         `tutti play HOST:7400 --passphrase SECRET` on each speaker (`tutti devices` lists outputs)."
    );
    Ok(())
}

fn party(a: PartyArgs, cfg: &config::Config) -> Result<()> {
    let m = member(&a.net, cfg)?;
    fetch_keys(&m, a.hub.as_deref(), "party", &m.prefix, vec![])?;
    let hub = a.hub.as_deref().or(m.hub.as_deref());
    let until = a.seconds.map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
    let running = || until.is_none_or(|u| std::time::Instant::now() < u);
    if let Some(host) = &a.to {
        // A participant: a live stream to the host.
        let host = resolve(host, "--to")?;
        let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), a.port.unwrap_or(0));
        let src = party_mic(&a, vec![host], bind, m.keys.clone())?;
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
        let handler = SourceHub {
            progress: vec![src.progress.clone()],
            name: info.device.clone(),
            rate: 48_000,
            cover_sent: None,
        };
        let say = |m: String| eprintln!("{m}");
        let link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, handler, say)?;
        while !src.finished() && running() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(l) = link {
            l.stop();
        }
        drop(discovery);
        src.stop();
        return Ok(());
    }
    if !a.peers.is_empty() {
        // Headphones mode: a mixer here (the others' voices and our monitor), our microphone
        // to every peer and, over loopback, to our own mixer.
        let port = a.port.unwrap_or(7500);
        let mut to = a.peers.iter().map(|p| resolve(p, "--peers")).collect::<Result<Vec<_>>>()?;
        let own_from = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port + 1);
        let monitor = (!a.no_monitor).then_some((own_from, a.monitor_db));
        if monitor.is_some() {
            to.push(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port));
        }
        let host = party_host(&a, port, monitor, m.keys.clone())?;
        let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port + 1);
        let src = party_mic(&a, to, bind, m.keys.clone())?;
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
    let host = party_host(&a, a.port.unwrap_or(7500), None, m.keys.clone())?;
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
fn mixer_link(
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
    let handler = MixerHub {
        inputs: host.inputs.clone(),
        refused: host.refused.clone(),
        master: host.master.clone(),
        shared: host.shared.clone(),
    };
    let say = |m: String| eprintln!("{m}");
    let link = join_hub(hub, m.auth.clone(), discovery.as_mut(), info, handler, say)?;
    Ok((link, discovery))
}

/// What a party host tells the hub, and how it obeys it.
struct MixerHub {
    inputs: std::sync::Arc<std::sync::Mutex<Vec<tutti_node::mixer::MixInput>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    master: std::sync::Arc<tutti_audio::mixer::Meter>,
    shared: std::sync::Arc<tutti_audio::engine::OutputShared>,
}

impl tutti_node::hub::HubHandler for MixerHub {
    fn state(&mut self) -> tutti_proto::control::NodeState {
        let inputs = self.inputs.lock().map(|i| i.clone()).unwrap_or_default();
        let mut latencies: Vec<f64> =
            inputs.iter().filter_map(|i| i.latency.map(|l| l.0 as f64 / 1e6)).collect();
        latencies.sort_by(f64::total_cmp);
        let peak = self.master.peak_db();
        tutti_proto::control::NodeState {
            streaming: !inputs.is_empty(),
            peers: Some(inputs.len() as u32),
            latency_ms: latencies.get(latencies.len() / 2).copied(),
            recovered: inputs.iter().map(|i| i.stats.recovered_fec + i.stats.recovered_retx).sum(),
            concealed: inputs.iter().map(|i| i.stats.concealed).sum(),
            underruns: self.shared.underrun_frames.load(Ordering::Relaxed),
            level_db: peak.is_finite().then_some(f64::from(peak)),
            rejected: self.refused.load(Ordering::Relaxed),
            foreign: inputs.iter().map(|i| i.stats.foreign).sum(),
            ..Default::default()
        }
    }
    fn settings(&mut self, settings: &tutti_proto::control::Settings) {
        self.shared.gain.set_volume_percent(settings.volume);
        self.shared.gain.set_muted(settings.mute);
    }
    fn command(&mut self, command: &tutti_proto::control::Command) {
        use tutti_proto::control::Command;
        match command {
            Command::Volume { percent, .. } => self.shared.gain.set_volume_percent(*percent),
            Command::Mute { mute, .. } => self.shared.gain.set_muted(*mute),
            _ => {}
        }
    }
}

/// A live microphone (or file, or tone) sent to `to`.
fn party_mic(
    a: &PartyArgs,
    to: Vec<SocketAddr>,
    bind: SocketAddr,
    sec: tutti_node::security::Keys,
) -> Result<tutti_node::source::RunningSource> {
    let codec = parse_codec(&a.codec)?;
    let mut c = SourceConfig::new(
        1,
        48_000,
        if a.tone.is_some() || a.mic.is_some() || a.file.is_none() { 1 } else { 2 },
    );
    c.mode = Mode::Live;
    c.codec = codec;
    c.frames_per_packet = (48.0 * a.frame_ms).round() as u16;
    c.group_latency = Nanos::ZERO;
    c.fec = None;
    c.receivers = to;
    let ch = usize::from(c.channels);
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
fn party_host(
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
    in_range("--buffer", Some(a.buffer), 32, 16_384, "frames")?;
    in_range("--max-mics", Some(a.max_mics), 1, 256, "microphones")?;
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
fn show_mix(host: &tutti_node::mixer::RunningMixer, running: &dyn Fn() -> bool) {
    let tty = std::io::stderr().is_terminal();
    let clear = if tty { "\r\x1b[K" } else { "" };
    let mut known: Vec<(SocketAddr, String)> = Vec::new();
    while running() {
        std::thread::sleep(Duration::from_millis(250));
        let inputs = host.inputs.lock().map(|i| i.clone()).unwrap_or_default();
        for i in inputs.iter().filter(|i| !known.iter().any(|(a, _)| *a == i.addr)) {
            eprintln!("{clear}mic `{}` joined from {}", i.name, i.addr);
        }
        for (addr, name) in known.iter().filter(|(a, _)| !inputs.iter().any(|i| i.addr == *a)) {
            eprintln!(
                "{clear}mic `{name}` left ({addr} silent for {} s): its place is free",
                tutti_node::mixer::DEPARTED_EXPIRY.0 / 1_000_000_000
            );
        }
        known = inputs.iter().map(|i| (i.addr, i.name.clone())).collect();
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
        eprintln!(
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
    eprintln!(
        "mix: {underruns} underrun frames; rendering {:.1} ms ahead of the device; mics that \
         left: {departed}; datagrams refused (not of this network's streams): {refused}",
        lead as f64 / 48.0
    );
}

fn serve(a: ServeArgs, cfg: &config::Config) -> Result<()> {
    if a.net.insecure || cfg.network.insecure.unwrap_or(false) {
        bail!(
            "the hub has no insecure mode: its API and node link always need credentials (nodes \
             pair with `tutti pair`, or hold --passphrase)"
        );
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
    if !a.http.ip().is_loopback() && !a.plain_http_anywhere {
        bail!(
            "--http {}: plain HTTP would carry the API's tokens across the network in clear; \
             use the HTTPS API (--https, on by default at 0.0.0.0:7443), keep --http on \
             127.0.0.1, or say --plain-http-anywhere",
            a.http
        );
    }
    if !(0.01..=24.0 * 365.0).contains(&a.key_hours) {
        bail!("--key-hours {}: use 0.01 to 8760 hours", a.key_hours);
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
        if let Some((addr, fingerprint)) = &hub.https {
            // What a browser shows for the hub's own certificate: check it once, then trust it.
            let shown = if addr.ip().is_unspecified() {
                format!("https://{}:{}", tutti_node::hostname(), addr.port())
            } else {
                format!("https://{addr}")
            };
            println!("hub: HTTPS on {shown} (listening on {addr}); certificate SHA-256 {fingerprint}");
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

fn pair(a: PairArgs) -> Result<()> {
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

/// What a source tells the hub (its track, its players), and how it obeys it.
struct SourceHub {
    progress: Vec<std::sync::Arc<tutti_node::source::SourceProgress>>,
    name: String,
    rate: u32,
    /// The track whose cover the hub has (`None`: none sent on this link yet).
    cover_sent: Option<u64>,
}

impl tutti_node::hub::HubHandler for SourceHub {
    fn state(&mut self) -> tutti_proto::control::NodeState {
        let p = &self.progress[0];
        let rate = f64::from(self.rate);
        let (stats, receivers) = p.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let track = p.transport().and_then(|t| {
            let now = p.now_playing.lock().ok()?.clone();
            let total = p.total.load(Ordering::Relaxed);
            Some(tutti_proto::control::Track {
                title: now.metadata.title.clone(),
                artist: now.metadata.artist.clone(),
                album: now.metadata.album.clone(),
                file: now.file.clone(),
                index: now.index as u32 + 1,
                count: now.count as u32,
                elapsed_s: p.frames.load(Ordering::Relaxed) as f64 / rate,
                duration_s: (total > 0).then(|| total as f64 / rate),
                transport: t.as_str().into(),
                cover: now.metadata.cover.is_some(),
            })
        });
        tutti_proto::control::NodeState {
            streaming: !p.ended.load(Ordering::Relaxed),
            stream: Some(self.name.clone()),
            rate: Some(self.rate),
            peers: Some(receivers.len() as u32),
            track,
            rejected: stats.rx_errors.total(),
            // Authentic requests from player runs that never proved their address (replays).
            foreign: stats.unverified,
            ..Default::default()
        }
    }
    fn settings(&mut self, _: &tutti_proto::control::Settings) {
        // A new link: the hub has no cover from us yet.
        self.cover_sent = None;
    }
    fn command(&mut self, command: &tutti_proto::control::Command) {
        use tutti_node::source::Request;
        use tutti_proto::control::Command;
        let r = match command {
            Command::Start => Request::Start,
            Command::Pause => Request::Pause,
            Command::Stop => Request::Stop,
            Command::Skip => Request::Skip,
            _ => return,
        };
        // Stems of a multitrack move together.
        for p in &self.progress {
            p.request(r);
        }
    }
    fn status(&mut self, message: &str) {
        if let Ok(mut l) = self.progress[0].log.lock() {
            l.push(message.to_owned());
        }
    }
    fn outbox(&mut self) -> Vec<tutti_proto::control::LinkMessage> {
        let Ok(now) = self.progress[0].now_playing.lock().map(|n| n.clone()) else {
            return Vec::new();
        };
        if self.cover_sent == Some(now.serial) {
            return Vec::new();
        }
        self.cover_sent = Some(now.serial);
        // Covers up to 512 kB go to the hub (`GET /api/streams/{id}/cover`); none clears it.
        let (mime, data) = match &now.metadata.cover {
            Some((mime, bytes)) if bytes.len() <= 512 * 1024 => {
                (mime.clone(), tutti_proto::control::to_hex(bytes))
            }
            _ => (String::new(), String::new()),
        };
        vec![tutti_proto::control::LinkMessage::Cover { mime, data }]
    }
}

fn record(a: RecordArgs) -> Result<()> {
    use std::sync::{Arc, Mutex};
    use tutti_audio::backend::Backend;
    let backend = if a.host == "alsa" {
        tutti_audio::backend::cpal::CpalBackend::alsa()?
    } else {
        tutti_audio::backend::cpal::CpalBackend::pulse()?
    };
    type Recording = Arc<Mutex<Vec<(tutti_proto::LocalTime, Vec<f32>)>>>;
    let mut streams = Vec::new();
    let mut recordings: Vec<(String, Recording)> = Vec::new();
    for name in &a.inputs {
        let rec: Recording = Arc::new(Mutex::new(Vec::new()));
        let r2 = rec.clone();
        // A measurement rig, not a playout path: a lock in this callback is acceptable.
        let stream = backend.open_input(
            Some(name),
            &StreamSpec::new(48_000, 2, 128),
            Box::new(move |data, t| {
                if let Ok(mut r) = r2.lock() {
                    r.push((t.captured, data.iter().step_by(2).copied().collect()));
                }
            }),
        )?;
        streams.push(stream);
        recordings.push((name.clone(), rec));
    }
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    for mut s in streams {
        s.stop();
    }
    for (name, rec) in recordings {
        let rec = rec.lock().map(|r| r.clone()).unwrap_or_default();
        let clicks: Vec<String> = tutti_audio::measure::find_clicks(&rec, 48_000)
            .iter()
            .map(|t| t.0.to_string())
            .collect();
        println!("{{\"device\":\"{name}\",\"clicks_ns\":[{}]}}", clicks.join(","));
    }
    Ok(())
}

/// Click instants in a WAV written by a player, on the local clock (10 s pieces, so hours of
/// audio fit in memory).
fn wav_clicks(path: &std::path::Path) -> Result<Vec<i64>> {
    let first = tutti_audio::backend::wav::WavBackend::first_sample_time(path)?;
    let mut reader = hound::WavReader::open(path).with_context(|| format!("{}", path.display()))?;
    let spec = reader.spec();
    let (rate, ch) = (spec.sample_rate, usize::from(spec.channels.max(1)));
    let piece = rate as usize * 10;
    let mut clicks = Vec::new();
    let mut chunk = Vec::with_capacity(piece);
    let mut at = 0u64;
    let mut samples = reader.samples::<i16>();
    loop {
        chunk.clear();
        for s in samples.by_ref().step_by(ch).take(piece) {
            chunk.push(f32::from(s.with_context(|| format!("{}", path.display()))?) / 32768.0);
        }
        if chunk.is_empty() {
            break;
        }
        let t = first + Nanos::from_frames(at, rate);
        // Exact instants: a file's frames are evenly spaced by construction.
        let frames: Vec<(LocalTime, Vec<f32>)> = chunk
            .chunks(rate as usize / 100)
            .enumerate()
            .map(|(k, c)| (t + Nanos::from_frames((k * c.len()) as u64, rate), c.to_vec()))
            .collect();
        clicks.extend(tutti_audio::measure::find_clicks(&frames, rate).iter().map(|c| c.0 as i64));
        at += chunk.len() as u64;
    }
    Ok(clicks)
}

fn skew(wavs: &[PathBuf]) -> Result<()> {
    let all: Vec<Vec<i64>> = wavs.iter().map(|w| wav_clicks(w)).collect::<Result<_>>()?;
    let mut spreads = Vec::new();
    let mut offsets: Vec<Vec<i64>> = Vec::new();
    let mut per_minute: Vec<i64> = Vec::new();
    for &t in &all[0] {
        let near: Vec<i64> = all[1..]
            .iter()
            .filter_map(|c| {
                let i = c.partition_point(|&x| x < t);
                [i.checked_sub(1), Some(i)]
                    .into_iter()
                    .flatten()
                    .filter_map(|i| c.get(i).copied())
                    .min_by_key(|x| (x - t).abs())
            })
            .filter(|x| (x - t).abs() < 100_000_000)
            .collect();
        if near.len() == all.len() - 1 {
            offsets.push(near.iter().map(|x| x - t).collect::<Vec<_>>());
            let hi = near.iter().copied().chain([t]).max().unwrap_or(t);
            let lo = near.iter().copied().chain([t]).min().unwrap_or(t);
            spreads.push(hi - lo);
            let minute = ((t - all[0][0]) / 60_000_000_000) as usize;
            if per_minute.len() <= minute {
                per_minute.resize(minute + 1, 0);
            }
            per_minute[minute] = per_minute[minute].max(hi - lo);
        }
    }
    if spreads.is_empty() {
        bail!("no click is in every file");
    }
    spreads.sort_unstable();
    let q = |f: f64| spreads[((spreads.len() - 1) as f64 * f).round() as usize] as f64 / 1e3;
    println!(
        "{} clicks in all {} files ({} in the first): spread median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        spreads.len(),
        wavs.len(),
        all[0].len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    if per_minute.len() > 1 {
        let m: Vec<String> = per_minute.iter().map(|x| format!("{:.0}", *x as f64 / 1e3)).collect();
        println!("  worst spread per minute, µs: {}", m.join(" "));
    }
    for (k, w) in wavs.iter().enumerate().skip(1) {
        let mut o: Vec<i64> = offsets.iter().map(|v| v[k - 1]).collect();
        o.sort_unstable();
        println!(
            "  {} − {}: median {:+.1} µs, from {:+.1} to {:+.1} µs",
            w.display(),
            wavs[0].display(),
            o[o.len() / 2] as f64 / 1e3,
            o[0] as f64 / 1e3,
            o[o.len() - 1] as f64 / 1e3
        );
    }
    Ok(())
}

fn clicks_wav(path: &std::path::Path, seconds: f64) -> Result<()> {
    let mut src =
        tutti_audio::source::Clicks::new(48_000, 2, 12_000).with_limit((seconds * 48_000.0) as u64);
    let mut pcm = Vec::new();
    while src.read(&mut pcm, 4_096)? > 0 {}
    let mut bytes = Vec::new();
    tutti_audio::format::encode_pcm(Codec::Pcm16, &pcm, &mut bytes);
    let frames = pcm.len() / 2;
    let mut out = Vec::with_capacity(44 + bytes.len());
    let data = bytes.len() as u32;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&48_000u32.to_le_bytes());
    out.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    out.extend_from_slice(&bytes);
    std::fs::write(path, out).with_context(|| format!("{}", path.display()))?;
    println!("{} frames of clicks (every 250 ms) in {}", frames, path.display());
    Ok(())
}
