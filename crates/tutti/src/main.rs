//! `tutti`: audio over a local network, in time.
//!
//! ```text
//! tutti stream --file song.flac --to 192.168.1.20:7400      # a source
//! tutti play 192.168.1.10:7400                              # a player
//! tutti devices                                             # what can play and record here
//! tutti demo                                                # a source and three players, here
//! tutti calibrate --zone kitchen --mic usb-mic              # align the kitchen's speakers
//! ```
//! Only this binary uses `anyhow`; the crates below return typed errors.
//!
//! # Layout
//! - `main.rs`: the command line (flags), `main` and dispatch.
//! - [`config`]: the TOML config file.
//! - [`membership`]: how a node belongs to its network (keys, pairing, the hub link, ids).
//! - [`stream`](mod@stream), [`play`](mod@play), [`party`](mod@party), [`serve`](mod@serve),
//!   [`demo`](mod@demo), [`calibrate`](mod@calibrate): one subcommand (role) each.
//! - [`status`]: status lines and log fields; [`logging`]: log lines (`tracing`).
//! - [`measure`]: measurement tools (`record`, `clicks-wav`, `skew`).

#![forbid(unsafe_code)]

mod calibrate;
mod config;
mod demo;
mod logging;
mod measure;
mod membership;
mod party;
mod play;
mod serve;
mod status;
mod stream;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
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

use demo::*;
use measure::*;
use membership::*;
use party::*;
use play::*;
use serve::*;
use status::*;
use stream::*;

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
    /// List the hubs that advertise themselves on this network (mDNS): their addresses, web
    /// app and HTTPS fingerprint (compare it with what `tutti serve` printed).
    Hubs {
        /// How long to listen.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
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
    /// Calibrate a zone's speakers with a microphone here: the hub plays a test sequence
    /// through them, this records it, and the hub sets each speaker's delay so that all arrive
    /// together at the microphone.
    Calibrate(CalibrateArgs),
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
struct CalibrateArgs {
    /// The zone whose speakers to calibrate.
    #[arg(long)]
    zone: String,
    /// The microphone (an input device, as `tutti devices` lists them; default: the default
    /// input). Put it where people listen.
    #[arg(long)]
    mic: Option<String>,
    /// The hub's API, plain HTTP (`tutti serve --http`).
    #[arg(long, default_value = "http://127.0.0.1:7480")]
    hub: String,
    /// The hub's admin token (its secrets file has it; `tutti serve` says where).
    #[arg(long, env = "TUTTI_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Measure only: show what would be set, change nothing.
    #[arg(long)]
    measure_only: bool,
    /// Then keep listening to the music: the hub's drift watch reads a snippet every --every
    /// seconds, and when part of the sound moves it calibrates again (this records it).
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between snippets (each is 4 s).
    #[arg(long, default_value_t = 10.0)]
    every: f64,
    /// With --watch: do not calibrate first (the watch's baseline is the first snippet).
    #[arg(long, requires = "watch")]
    no_calibrate: bool,
    /// Stop watching after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// The microphone's sample rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Audio host: pulse or alsa.
    #[arg(long, default_value = "pulse")]
    host: String,
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

fn parse_gain(s: &str) -> Result<(String, f32)> {
    let (name, db) =
        s.split_once('=').ok_or_else(|| anyhow!("`{s}`: write NAME=DB, e.g. alice=-6"))?;
    let db: f32 = db.parse().map_err(|_| anyhow!("`{s}`: `{db}` is not a number of dB"))?;
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
    /// Answer Snapcast's JSON-RPC control API on this TCP address (Snapcast's is
    /// 0.0.0.0:1705), so Home Assistant's Snapcast integration, Snapweb, Snapdroid and Music
    /// Assistant steer zones, players and sources. Off unless given. Snapcast apps have no
    /// token: only loopback and --snapcast-allow peers are admitted.
    #[arg(long)]
    snapcast: Option<SocketAddr>,
    /// Serve Snapcast's stream protocol on this TCP address (Snapcast's is 0.0.0.0:1704): a
    /// snapclient that connects becomes a player of the hub (put it in a room, set its volume
    /// and delay as any player's) and plays its room in sync with the room's players. Off
    /// unless given; audio goes in clear, to loopback and --snapcast-allow peers only.
    #[arg(long)]
    snapcast_stream: Option<SocketAddr>,
    /// Admit Snapcast apps and snapclients from these networks too (CIDR, comma-separated or
    /// repeated, e.g. 192.168.1.0/24): apps may change volumes, rooms and streams, as the
    /// admin token may; snapclients hear their rooms.
    #[arg(long, value_delimiter = ',')]
    snapcast_allow: Vec<String>,
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
    /// Standard RTP in: listen for L16 (16-bit big-endian PCM) at this address, a multicast
    /// group (e.g. 239.255.77.77:46000) or a local HOST:PORT, at --rate and --channels, as
    /// PulseAudio's `module-rtp-send`, PipeWire's RTP sink, ffmpeg or VLC send it: one sender,
    /// captured live (lost packets play as silence). Senders on this machine only, unless
    /// --rtp-allow admits others.
    #[arg(long, group = "input")]
    rtp_in: Option<String>,
    /// With --rtp-in: admit senders from these networks too (CIDR or address, comma-separated
    /// or repeated, e.g. 192.168.1.20). Plain RTP carries no credentials: anyone who can send
    /// from an admitted address can play into the stream.
    #[arg(long, value_delimiter = ',', requires = "rtp_in")]
    rtp_allow: Vec<String>,
    /// Unicast receivers (players can also join by themselves).
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    /// A multicast group to send to (e.g. 239.255.77.1:7400).
    #[arg(long)]
    multicast: Option<String>,
    /// Also send the stream as standard RTP (L16, 16-bit big-endian PCM, announced by SAP on
    /// 224.0.0.56:9875) to this address, e.g. a group 239.255.77.77:5004: PulseAudio's
    /// module-rtp-recv, ffmpeg and VLC play it (not in sync with Tutti's players). 16-bit PCM
    /// streams only; with --dir, stream N goes to the port + 2N.
    #[arg(long)]
    rtp: Option<String>,
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
    logging::init();
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
        Command::Stream(a) => stream(configured_input(a, &cfg.stream)?, &cfg),
        Command::Play(a) => play(a, &cfg),
        Command::Devices => devices(),
        Command::Hubs { seconds } => hubs(seconds),
        Command::Serve(a) => serve(a, &cfg),
        Command::Pair(a) => pair(a),
        Command::Demo(a) => demo(a),
        Command::Party(a) => party(a, &cfg),
        Command::Record(a) => record(a),
        Command::Calibrate(a) => calibrate::calibrate(a),
        Command::ClicksWav { out, seconds } => clicks_wav(&out, seconds),
        Command::Skew { wavs } => skew(&wavs),
    }
}

/// Networks given to `flag` (CIDR, or an address for just it), each checked.
fn networks(list: &[String], flag: &str) -> Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|n| {
            let n = n.trim();
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow!("{flag} {n}: a network (192.168.1.0/24) or an address (192.168.1.20)")
                })
        })
        .collect()
}

/// `a` with the config file's input (`[stream]` device, file or playlist) when no input flag
/// was given; flags win.
fn configured_input(mut a: StreamArgs, s: &config::StreamSection) -> Result<StreamArgs> {
    let flagged = a.file.is_some()
        || a.playlist.is_some()
        || a.dir.is_some()
        || a.tone.is_some()
        || a.stdin
        || a.stdin_live
        || a.device.is_some()
        || a.rtp_in.is_some();
    if flagged {
        return Ok(a);
    }
    let given = [s.device.is_some(), s.file.is_some(), s.playlist.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        bail!("[stream]: give one input (device, file or playlist), not several");
    }
    a.device = s.device.clone();
    a.file = s.file.clone();
    a.playlist = s.playlist.clone();
    Ok(a)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_args(flags: &[&str]) -> StreamArgs {
        let cli = Cli::try_parse_from(["tutti", "stream"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Stream(a) => a,
            _ => unreachable!(),
        }
    }

    fn section(text: &str) -> config::StreamSection {
        toml::from_str::<config::Config>(text).unwrap().stream
    }

    #[test]
    fn the_config_files_input_is_used_when_no_flag_names_one() {
        let s = section("[stream]\ndevice = \"tv.monitor\"\n");
        let a = configured_input(stream_args(&[]), &s).unwrap();
        assert_eq!(a.device.as_deref(), Some("tv.monitor"));
        // A flag wins, whatever the file says.
        let a = configured_input(stream_args(&["--tone", "440"]), &s).unwrap();
        assert_eq!((a.device, a.tone), (None, Some(440.0)));
        let s = section("[stream]\nfile = \"a.wav\"\nplaylist = \"music\"\n");
        let err = configured_input(stream_args(&[]), &s).err().unwrap().to_string();
        assert!(err.contains("[stream]") && err.contains("one input"), "{err}");
    }

    #[test]
    fn a_flag_that_belongs_to_another_input_is_named_with_the_fix() {
        let cfg = toml::from_str::<config::Config>("").unwrap();
        let err = |flags: &[&str]| match stream::StreamPlan::new(&stream_args(flags), &cfg) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        let e = err(&["--tone", "440", "--rtp-allow", "10.0.0.1"]);
        assert!(e.contains("--rtp-allow") && e.contains("--rtp-in ADDR"), "{e}");
        let e = err(&["--tone", "440", "--input-latency-ms", "5"]);
        assert!(e.contains("--input-latency-ms") && e.contains("--stdin-live"), "{e}");
        let e = err(&["--rtp-in", "[ff02::1]:5004"]);
        assert!(e.contains("IPv6 groups"), "{e}");
        let e = err(&["--rtp-in", "239.255.77.78:46000", "--rtp-allow", "10.0.0.300"]);
        assert!(e.contains("--rtp-allow 10.0.0.300: a network"), "{e}");
        assert_eq!(err(&["--rtp-in", "239.255.77.78:46000", "--rtp-allow", "10.0.0.0/24"]), "");
        assert_eq!(err(&["--stdin-live", "--input-latency-ms", "5"]), "");
    }

    #[test]
    fn the_packaged_config_files_load() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/etc/tutti");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert_eq!(n, 3, "hub, player and source");
        // Uncommented, the examples are valid too (every key they show exists).
        for name in ["player.toml", "source.toml", "hub.toml"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let live: String = text
                .lines()
                .map(|l| l.strip_prefix("# ").filter(|r| r.contains(" = ")).unwrap_or(l))
                .map(|l| format!("{l}\n"))
                .collect();
            let mut cfg: toml::Table =
                toml::from_str(&live).unwrap_or_else(|e| panic!("{name} uncommented: {e}\n{live}"));
            // A file has one input; keep the first the example shows.
            if let Some(toml::Value::Table(s)) = cfg.get_mut("stream") {
                s.remove("file");
                s.remove("playlist");
            }
            let back = toml::to_string(&cfg).unwrap();
            toml::from_str::<config::Config>(&back)
                .unwrap_or_else(|e| panic!("{name} uncommented: {e}\n{back}"));
        }
    }
}
