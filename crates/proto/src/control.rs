//! The control plane's vocabulary: what the hub knows about nodes (what they are, what they
//! report, how they are set), zones, and the commands, events and node-link messages that
//! travel between them. JSON on the wire (serde); the hub and every node share these types.

use serde::{Deserialize, Serialize};

/// The DNS-SD service nodes advertise (their audio port; TXT `role`, `id`, `version`).
pub const MDNS_NODE_SERVICE: &str = "_tutti._udp.local.";
/// The DNS-SD service the hub advertises (its node link; TXT `role=hub`, `id`, `network`, `http`,
/// `https` and `fp` (its certificate's SHA-256) when it serves HTTPS, `mqtt`, `version`).
pub const MDNS_HUB_SERVICE: &str = "_tutti._tcp.local.";

/// What a node is: sent once when it connects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Stable id (chosen by the node, e.g. hostname + role + port).
    pub id: String,
    /// Name shown to users (the hub's setting overrides it).
    pub name: String,
    /// `player`, `source` or `mixer`.
    pub role: String,
    /// Output or input device in use.
    #[serde(default)]
    pub device: String,
    /// What it can do (`volume`, `delay`, `resync`, `identify`...).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Where its audio socket listens.
    #[serde(default)]
    pub address: String,
    /// The streams it sends (a source: every stream's `host:port`) or follows (a player: the
    /// source it was started with); the hub hands out stream keys by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
    /// Tutti version.
    #[serde(default)]
    pub version: String,
}

/// What a node reports, a few times a second. Every field is optional: a source has no
/// buffer, a player no receivers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Hearing its source (players) or sending (sources).
    #[serde(default)]
    pub streaming: bool,
    /// Stream it plays or sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Clock offset to the source, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_us: Option<f64>,
    /// Clock skew to the source, ppm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_ppm: Option<f64>,
    /// Capture-to-playout latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Packets buffered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<u64>,
    /// The audio those packets hold, ms (players): how far ahead of the speaker the node has
    /// its stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered_ms: Option<f64>,
    /// How much the packets' transit time varies from one to the next (RFC 3550's
    /// interarrival jitter, players), ms: the link's quality against the group latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Packets recovered (FEC + retransmission).
    #[serde(default)]
    pub recovered: u64,
    /// Packets concealed.
    #[serde(default)]
    pub concealed: u64,
    /// Times the player dropped its buffer and started over on its stream (the clock
    /// jumped, the stream restarted, it fell too far behind).
    #[serde(default)]
    pub resyncs: u64,
    /// Device underruns (frames).
    #[serde(default)]
    pub underruns: u64,
    /// Output level, dBFS peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_db: Option<f64>,
    /// The stream frame playing now (players, before their own delay; the same on every
    /// player of a stream at one instant): zone-wide changes are scheduled from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The stream's sample rate, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// What a source is playing (title, artist, position), if it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Players (sources) or microphones (mixers) connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<u32>,
    /// The output device's own latency, ms (players).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_latency_ms: Option<f64>,
    /// What keeps the node from playing as asked, in one line, while it lasts: its device
    /// stopped or cannot be opened, or the group latency does not fit the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Datagrams dropped before they reached the stream: not decodable or not authentic
    /// (another key, forged, altered, replayed, malformed).
    #[serde(default)]
    pub rejected: u64,
    /// Authentic datagrams of another stream or of an earlier run (relayed, replayed):
    /// ignored.
    #[serde(default)]
    pub foreign: u64,
}

/// A source's current track.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Title (else the file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// The file (or input) it comes from.
    #[serde(default)]
    pub file: String,
    /// Its number in the playlist (from 1) and the playlist's length.
    #[serde(default)]
    pub index: u32,
    /// Tracks in the playlist.
    #[serde(default)]
    pub count: u32,
    /// Seconds played.
    #[serde(default)]
    pub elapsed_s: f64,
    /// Its length, seconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// `playing`, `paused` or `stopped`.
    #[serde(default)]
    pub transport: String,
    /// It has cover art (`GET /api/streams/{id}/cover`).
    #[serde(default)]
    pub cover: bool,
}

/// What the hub sets on a node; survives restarts of both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Name given by the user (else the node's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Volume, percent (0–100).
    pub volume: f32,
    /// Muted.
    pub mute: bool,
    /// Per-device delay, ms (−1000 to +1000): what no software can see (HDMI, Bluetooth).
    pub delay_ms: f64,
    /// Zone it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { name: None, volume: 100.0, mute: false, delay_ms: 0.0, zone: None }
    }
}

/// A change to a node's settings, as the API takes it (absent fields stay).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// New name (empty: back to the node's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Volume, percent (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<f32>,
    /// Muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute: Option<bool>,
    /// Per-device delay, ms (−1000 to +1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    /// Zone (empty: none). Created if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A group of players.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// Its name ("kitchen").
    pub name: String,
    /// The stream it plays (`host:port` of a source), if routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Group latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// A command for a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Volume, percent.
    Volume {
        /// 0–100.
        percent: f32,
        /// The stream frame it starts on (zone-wide changes: the same sample everywhere);
        /// absent, at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// Mute or unmute.
    Mute {
        /// Muted.
        mute: bool,
        /// The stream frame it starts on; absent, at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// Per-device delay.
    Delay {
        /// Milliseconds, ±.
        ms: f64,
    },
    /// Re-lock playout now.
    Resync,
    /// Make yourself heard ("this is the kitchen speaker"): a short chime over the stream.
    Identify,
    /// A file source: play (resume, or start over after `stop`).
    Start,
    /// A file source: hold the position and send silence.
    Pause,
    /// A file source: send silence and go back to the start of the track.
    Stop,
    /// A file source: the next track of the playlist.
    Skip,
    /// Play speaker `speaker`'s part of the calibration sequence for `speakers` speakers
    /// (`tutti_calib::Plan`) over the stream, its first sample on stream frame `at` (the
    /// stream is silenced while it plays).
    Calibrate {
        /// How many speakers the sequence has.
        speakers: u32,
        /// Which of them this node is (0-based).
        speaker: u32,
        /// The stream frame the sequence starts on.
        at: u64,
    },
    /// Stop a calibration sequence that plays or waits to (the stream comes back at once).
    CancelCalibration,
    /// Play a test tone (1 kHz, −12 dBFS, 2 s) instead of the stream: is this speaker alive,
    /// and which one is it?
    TestTone,
    /// Say `text` (speech synthesized on the node, offline: `espeak-ng`) over the stream.
    Say {
        /// What to say (at most 500 characters).
        text: String,
    },
    /// Asks the hub (API only) to have a player say its own status: name, room, state,
    /// delay and drift (the hub sends it a [`Command::Say`]).
    SayStatus,
    /// Play this stream (the zone's source), at this group latency if given.
    Route {
        /// The source, `host:port`.
        source: String,
        /// Group latency, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_ms: Option<f64>,
    },
}

/// A node as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// What it is.
    pub info: NodeInfo,
    /// Its name (setting, else its own).
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Milliseconds since it was last heard.
    pub last_seen_ms: u64,
    /// What it reported last.
    pub state: NodeState,
    /// How the hub sets it.
    pub settings: Settings,
}

/// A source as the API's `/api/streams` shows it: what it plays and who listens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamView {
    /// The source node's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Where it sends from (`host:port`; zones name it as their source).
    pub address: String,
    /// The stream it sends.
    #[serde(default)]
    pub stream: Option<String>,
    /// The current track (file sources).
    #[serde(default)]
    pub track: Option<Track>,
    /// Players receiving it.
    #[serde(default)]
    pub players: Option<u32>,
    /// The zones routed to it.
    #[serde(default)]
    pub zones: Vec<String>,
    /// The transport controls it takes (`start`, `pause`, `stop`, `skip`).
    #[serde(default)]
    pub controls: Vec<String>,
}

impl StreamView {
    /// The sources among `nodes`, each with the `zones` that play it.
    pub fn list(nodes: &[NodeView], zones: &[Zone]) -> Vec<StreamView> {
        nodes
            .iter()
            .filter(|n| n.info.role == "source")
            .map(|n| StreamView {
                zones: zones
                    .iter()
                    .filter(|z| z.source.as_deref().is_some_and(|s| plays(s, &n.info.address)))
                    .map(|z| z.name.clone())
                    .collect(),
                id: n.info.id.clone(),
                name: n.name.clone(),
                online: n.online,
                address: n.info.address.clone(),
                stream: n.state.stream.clone(),
                track: n.state.track.clone(),
                players: n.state.peers,
                controls: ["start", "pause", "stop", "skip"]
                    .into_iter()
                    .filter(|k| n.info.capabilities.iter().any(|c| c == k))
                    .map(str::to_owned)
                    .collect(),
            })
            .collect()
    }
}

/// Does zone source `host:port` name the stream a source at `address` sends?
pub fn plays(zone_source: &str, address: &str) -> bool {
    let (Ok(z), Ok(a)) =
        (zone_source.parse::<std::net::SocketAddr>(), address.parse::<std::net::SocketAddr>())
    else {
        // A host name: same port, and the name is the source's.
        return zone_source.rsplit_once(':').map(|(_, p)| p)
            == address.rsplit_once(':').map(|(_, p)| p);
    };
    z.port() == a.port() && (a.ip().is_unspecified() || a.ip() == z.ip())
}

/// One minute of a node's reports, for the dashboard's health map (`GET /api/health`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthMinute {
    /// How many minutes ago it started (0: the current minute).
    pub ago_min: u32,
    /// Lowest clock offset reported, µs.
    #[serde(default)]
    pub offset_min_us: Option<f64>,
    /// Highest clock offset reported, µs (the spread is how far the clock estimate moved).
    #[serde(default)]
    pub offset_max_us: Option<f64>,
    /// The highest arrival jitter reported in the minute, ms.
    #[serde(default)]
    pub jitter_max_ms: Option<f64>,
    /// Packets concealed in the minute.
    pub concealed: u64,
    /// Frames the device ran short in the minute.
    pub underruns: u64,
    /// Reports heard in the minute.
    pub reports: u32,
}

impl HealthMinute {
    /// How far the clock offset moved in the minute, µs.
    pub fn offset_spread_us(&self) -> Option<f64> {
        Some(self.offset_max_us? - self.offset_min_us?)
    }
}

/// The hub itself, as `GET /api/hub` answers it (with the asking token's `access`) and the
/// dashboard's hub card shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HubStatus {
    /// The network's name.
    pub network: String,
    /// The hub's version.
    pub version: String,
    /// The HTTPS certificate's SHA-256 fingerprint, when it serves HTTPS.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    /// Where the hub's MQTT tree lives (`host:port`), if anywhere.
    #[serde(default)]
    pub mqtt: Option<String>,
    /// Whether the stream keys are being rotated now.
    #[serde(default)]
    pub rotating: bool,
    /// How old the stream's sending key is, s (rotated when a node is revoked, or on
    /// `POST /api/keys/rotate`).
    #[serde(default)]
    pub keys_age_s: u64,
    /// mDNS: whether the hub advertises itself and how many nodes it hears.
    #[serde(default)]
    pub discovery: DiscoveryStatus,
}

/// The hub's mDNS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum DiscoveryStatus {
    /// Not started (`--no-mdns`, `TUTTI_MDNS=off`).
    #[default]
    Off,
    /// Advertising the hub and listening for nodes.
    On {
        /// Nodes heard advertising themselves now.
        heard: u32,
    },
    /// It could not start (nodes must be given `--hub`).
    Failed {
        /// Why, in the daemon's words.
        reason: String,
    },
}

impl std::fmt::Display for DiscoveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoveryStatus::Off => f.write_str("off"),
            DiscoveryStatus::On { heard: 1 } => f.write_str("advertising; 1 node heard"),
            DiscoveryStatus::On { heard } => write!(f, "advertising; {heard} nodes heard"),
            DiscoveryStatus::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// A one-time pairing token as the API's `POST /api/pairing` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairingOffer {
    /// The token (`ID.SECRET`).
    pub token: String,
    /// The link a new node takes (`tutti://HOST:PORT/pair/ID.SECRET`).
    pub link: String,
    /// Where the new node reaches the hub's link.
    pub hub: String,
    /// How long the token lives, s.
    pub expires_in_s: u64,
    /// The link as a QR code (SVG), with the HTTPS fingerprint under it when there is one.
    pub qr_svg: String,
    /// What to run on the new node.
    pub how: String,
    /// The SHA-256 fingerprint of the hub's HTTPS certificate.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
}

/// A paired node as the API's `GET /api/pairing` lists it (no credential).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedView {
    /// Its id.
    pub id: String,
    /// The name it asked for.
    pub name: String,
    /// When it was paired (Unix seconds).
    pub paired_at: u64,
}

/// A guest (a phone that scanned the host's guest QR) as the API's `GET /api/guests` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it joined (Unix seconds).
    pub joined_at: u64,
    /// When its credential stops working (Unix seconds).
    pub expires_at: u64,
}

/// A one-time guest invitation as `POST /api/guests` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestInvite {
    /// The page a guest's phone opens (`https://HOST:PORT/guest?invite=CODE`).
    pub link: String,
    /// The link as a QR code (SVG), with the HTTPS fingerprint under it when there is one.
    pub qr_svg: String,
    /// How long the invitation can be taken, s (once).
    pub expires_in_s: u64,
    /// How long a guest stays one after taking it, s.
    pub guest_for_s: u64,
}

/// One speaker of a calibration: what was found and what was done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibratedSpeaker {
    /// The node.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its per-device delay before the calibration, ms.
    pub previous_delay_ms: f64,
    /// When its sound reached the microphone, ms after it was due (in the microphone's
    /// dating: only differences between speakers mean anything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_ms: Option<f64>,
    /// The delay that makes it arrive with the others, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    /// The weakest round's direct sound above the noise, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_db: Option<f64>,
    /// How far its rounds disagreed, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_ms: Option<f64>,
    /// Whether its arrival is trusted.
    #[serde(default)]
    pub confident: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Whether `delay_ms` was set on the node.
    #[serde(default)]
    pub applied: bool,
}

/// Where a calibration stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationState {
    /// The speakers play the sequence (or are about to); the microphone's recording is
    /// awaited.
    #[default]
    Playing,
    /// The recording is being analysed.
    Estimating,
    /// Done: every confident speaker's delay was set.
    Applied,
    /// Done, measured only (asked not to apply).
    Measured,
    /// Nothing trusted enough to apply: delays left as they were.
    Refused,
    /// Cancelled: delays left as they were.
    Cancelled,
    /// It could not finish (no recording came, a node went away, a delay could not be set):
    /// the previous delays are in place.
    Failed,
}

/// A calibration run as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationView {
    /// Its id.
    pub id: String,
    /// The zone calibrated.
    pub zone: String,
    /// Where it stands.
    pub state: CalibrationState,
    /// What happened, in a sentence.
    pub message: String,
    /// Its speakers, in the sequence's order.
    pub speakers: Vec<CalibratedSpeaker>,
    /// When it was asked for, Unix seconds.
    pub created_at: u64,
    /// The stream frame the sequence starts on.
    pub at_frame: u64,
    /// The hub's clock (`GET /api/clock`), µs, when the sequence starts at the speakers.
    pub starts_hub_us: f64,
    /// A microphone must record from this hub instant, µs …
    pub record_from_hub_us: f64,
    /// … to this one.
    pub record_to_hub_us: f64,
    /// Whether confident delays are set (false: measure only).
    pub apply: bool,
    /// Why it runs: `asked` (the API, `tutti calibrate`), or `drift` (the drift watch saw
    /// part of the sound move: only the speakers that moved are corrected).
    #[serde(default = "asked")]
    pub reason: String,
    /// The microphone's clock against the stream's, ppm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_ppm: Option<f64>,
    /// The arrivals' spread before, ms (confident speakers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_before_ms: Option<f64>,
}

fn asked() -> String {
    "asked".into()
}

/// One entry of a node's calibration history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// When, Unix seconds.
    pub at: u64,
    /// The calibration run.
    pub run: String,
    /// What measured it: `calibration` (a test sequence asked for), `drift` (one the drift
    /// watch started).
    pub kind: String,
    /// How far its sound had moved from the others', ms (drift calibrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acoustic_drift_ms: Option<f64>,
    /// Its arrival, ms after it was due (microphone's dating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_ms: Option<f64>,
    /// The delay before, ms.
    pub previous_delay_ms: f64,
    /// The delay set, ms (`None`: left as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_delay_ms: Option<f64>,
    /// Its direct sound above the noise, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_db: Option<f64>,
    /// Trusted.
    pub confident: bool,
}

/// A change the hub announces on its event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A node connected (or reconnected).
    NodeOnline {
        /// The node.
        node: Box<NodeView>,
    },
    /// A node went silent: marked lost, not forgotten.
    NodeLost {
        /// Its id.
        id: String,
    },
    /// A node reported new state.
    NodeState {
        /// Its id.
        id: String,
        /// The state.
        state: Box<NodeState>,
    },
    /// A node's settings changed.
    NodeSettings {
        /// Its id.
        id: String,
        /// The settings.
        settings: Settings,
    },
    /// A zone was created or changed.
    ZoneChanged {
        /// The zone.
        zone: Zone,
    },
    /// A zone was removed.
    ZoneRemoved {
        /// Its name.
        name: String,
    },
    /// A node was paired or revoked: the paired nodes now.
    Paired {
        /// Every paired node.
        nodes: Vec<PairedView>,
    },
    /// A guest joined, left or was sent away: the guests now.
    Guests {
        /// Every guest.
        guests: Vec<GuestView>,
    },
    /// A calibration started, moved on or ended.
    Calibration {
        /// It, now.
        run: Box<CalibrationView>,
    },
    /// A zone's drift watch read a snippet of what its microphone hears.
    ZoneDrift {
        /// The zone.
        zone: String,
        /// The drift declared (two snippets agree), ms: 0 while every speaker arrives where it
        /// did after the last calibration.
        drift_ms: Option<f64>,
        /// Where the sound arrived after the last calibration, ms (the microphone's dating).
        baseline_ms: Option<f64>,
        /// How far the part of the sound that moved arrived from it in this snippet, ms.
        moved_ms: Option<f64>,
    },
}

/// A line on the node link (JSON, one per line), either way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMessage {
    /// Hub → node, first (in clear): random bytes the handshake is bound to.
    Challenge {
        /// Random bytes, hex.
        nonce: String,
    },
    /// Node → hub, in clear: the first message of the link's handshake (see
    /// [`crate::link`]), under the paired node's credential or the network key.
    Open {
        /// The paired id whose credential keys the handshake (`None`: the network key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        paired: Option<String>,
        /// The Noise message, hex.
        noise: String,
    },
    /// Hub → node, in clear: the handshake's answer (it proves the hub holds the key too);
    /// everything after it travels in the channel's encrypted frames.
    Opened {
        /// The Noise message, hex.
        noise: String,
    },
    /// Node → hub, first in the channel: who I am.
    Hello {
        /// The node.
        info: NodeInfo,
        /// Only fetching this node's stream keys before its session starts: the hub answers
        /// with a welcome and closes, and does not list the node.
        #[serde(default, skip_serializing_if = "core::ops::Not::not")]
        fetch: bool,
    },
    /// Hub → node: accepted; here are your settings.
    Welcome {
        /// Settings to apply.
        settings: Settings,
        /// A paired node's stream keys, sealed for it (see [`KeySet`]); absent on passphrase
        /// networks, where every node derives the key itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keys: Option<String>,
    },
    /// Hub → paired node: the stream keys changed (rotation, a revoked node): a [`KeySet`]
    /// sealed with the node's credential (`Credential::seal`, context `b"tutti keys"`), hex.
    Keys {
        /// The sealed key set, hex.
        sealed: String,
    },
    /// Node → hub, first, instead of a hello: pair with a one-time token
    /// (see [`crate::pairing`]).
    Pair {
        /// The token's public id.
        token: String,
        /// The first Noise message, hex.
        noise: String,
    },
    /// Hub → node: paired; the Noise answer carrying the grant (then the hub closes the link).
    Paired {
        /// The second Noise message, hex.
        noise: String,
    },
    /// Hub → node: refused (then the hub closes the link).
    Refused {
        /// Why.
        message: String,
    },
    /// Node → hub: my state.
    State(Box<NodeState>),
    /// Node → hub (sources): the current track's cover art (sent when the track changes).
    Cover {
        /// MIME type.
        mime: String,
        /// The image, hex.
        data: String,
    },
    /// Hub → node: do this.
    Command(Command),
}

/// The stream keys a paired node holds (sent sealed, see [`LinkMessage::Keys`]): 32 bytes of
/// key material each, hex (`NetworkKey::from_bytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Seal new packets with this one.
    pub send: String,
    /// Also accept packets sealed with these (the keys of a rotation in progress).
    #[serde(default)]
    pub accept: Vec<String>,
    /// Why this set opens no stream (a player whose zone plays nothing, or whose source is
    /// another zone's): its keys are fresh random ones nobody else holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The stream (`host:port`) these keys open, when the hub chose it for the node: a
    /// player's zone's, which it plays instead of the one it was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// The context a [`KeySet`] is sealed in.
pub const KEYS_CONTEXT: &[u8] = b"tutti keys";

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes of key material or a credential, from 64 hex digits.
pub fn key_from_hex(s: &str) -> Option<[u8; 32]> {
    from_hex(s).and_then(|b| b.try_into().ok())
}

/// Parses lower- or upper-case hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
