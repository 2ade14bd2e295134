//! The TOML configuration file: every flag has a key; flags override the file.
//!
//! ```toml
//! [network]
//! passphrase = "correct horse battery"   # or TUTTI_PASSPHRASE
//! name = "home"                          # salts the passphrase
//!
//! [stream]
//! device = "living.monitor"  # or file = "...", playlist = "..." (when no input flag is given)
//! to = ["192.168.1.20:7400"]
//! codec = "pcm"          # pcm, pcm24, opus
//! latency_ms = 100
//! frame_ms = 5.0
//!
//! [play]
//! source = "192.168.1.10:7400"
//! volume = 80
//! delay_ms = -12.5
//! ```

use std::path::Path;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Keys and identity.
    #[serde(default)]
    pub(crate) network: NetworkSection,
    /// `tutti stream` defaults.
    #[serde(default)]
    pub(crate) stream: StreamSection,
    /// `tutti play` defaults.
    #[serde(default)]
    pub(crate) play: PlaySection,
}

/// `[network]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkSection {
    /// Shared passphrase.
    pub(crate) passphrase: Option<String>,
    /// Network name (salt).
    pub(crate) name: Option<String>,
    /// Plaintext (labs only).
    pub(crate) insecure: Option<bool>,
}

/// `[stream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamSection {
    /// An input device to capture (used when no input flag is given).
    pub(crate) device: Option<String>,
    /// An audio file to stream (likewise).
    pub(crate) file: Option<std::path::PathBuf>,
    /// A folder or .m3u list to stream (likewise).
    pub(crate) playlist: Option<std::path::PathBuf>,
    /// Unicast receivers.
    pub(crate) to: Option<Vec<String>>,
    /// Multicast group.
    pub(crate) multicast: Option<String>,
    /// A standard RTP copy (L16 with SAP) to this address.
    pub(crate) rtp: Option<String>,
    /// Local port.
    pub(crate) port: Option<u16>,
    /// Codec.
    pub(crate) codec: Option<String>,
    /// Packet duration.
    pub(crate) frame_ms: Option<f64>,
    /// Group latency.
    pub(crate) latency_ms: Option<f64>,
    /// Receiver limit.
    pub(crate) max_receivers: Option<usize>,
    /// Opus bitrate.
    pub(crate) bitrate: Option<i32>,
}

/// `[play]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaySection {
    /// Source address.
    pub(crate) source: Option<String>,
    /// Output device.
    pub(crate) device: Option<String>,
    /// Audio host.
    pub(crate) host: Option<String>,
    /// Volume percent.
    pub(crate) volume: Option<f32>,
    /// Per-device delay.
    pub(crate) delay_ms: Option<f64>,
    /// Device buffer.
    pub(crate) buffer: Option<u32>,
    /// Player name.
    pub(crate) name: Option<String>,
}

/// Reads and checks a config file; errors name the file, the key and the fix.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}\n(the sections are [network], [stream] and [play]; keys are the long flag names with _ for -)",
            path.display(),
            e.to_string().trim_end()
        )
    })
}
