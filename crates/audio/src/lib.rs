//! Tutti's audio edge: where the network's samples meet real devices, files and codecs.
//!
//! Independent of the network: it knows the sync core only for its time units and its
//! [`PlayoutScheduler`](tutti_proto::playout::PlayoutScheduler) (pure logic), never its
//! packets.
//!
//! # Layout
//! - [`backend`]: the device trait and its implementations — cpal (ALSA and PulseAudio hosts),
//!   null, WAV file, fake (virtual DAC/ADC with their own ppm).
//! - [`clock`]: the local monotonic clock shared by every process.
//! - [`engine`]: playout across the real-time boundary — [`engine::Renderer`] in the device
//!   callback (rtrb, atomics, no allocation), [`engine::OutputEngine`] on the media thread;
//!   [`engine::Timeline`] says what to hear when, [`engine::Voice`] follows one timeline.
//! - [`resample`]: the drift follower over rubato, exact to a fraction of a frame.
//! - [`timeline`]: local playback of a source on the local clock.
//! - [`source`]: tones, clicks, raw PCM, files (symphonia), rate conversion; [`capture`]:
//!   input devices as sources.
//! - [`opus`]: Opus at 2.5–20 ms with concealment and in-band FEC; [`format`](mod@format): PCM.
//! - [`mixer`]: many voices, gain/mute/pan, soft limiter, lock-free meters.
//! - [`ramp`]: click-free volume and mute; [`pcm`]: decoded audio by media position.
//! - [`measure`]: click-alignment measurement of the real device path.
//!
//! # Real-time rules
//! The device callback ([`engine::Renderer::render`]) copies samples out of a ring, applies a
//! gain ramp and reports its timestamps into another ring: no locks, no allocation, no I/O,
//! no logging (`tests/realtime.rs` proves it with a counting allocator).

#![forbid(unsafe_code)]

pub mod backend;
pub mod capture;
pub mod clock;
pub mod cue;
pub mod engine;
pub mod format;
pub mod measure;
pub mod mixer;
pub mod opus;
pub mod pcm;
pub mod ramp;
pub mod resample;
pub mod source;
pub mod timeline;

/// Errors of the audio layer: each says what failed (with the underlying error as its
/// source) and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A stream (stdin, a pipe) could not be read, or a thread could not be started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file's format or codec is not supported, or it is corrupt.
    #[error("{what}: cannot decode: {source}")]
    Decode {
        /// The file (or "the input").
        what: String,
        /// The decoder's reason.
        #[source]
        source: symphonia::core::errors::Error,
    },
    /// A file holds nothing playable, or not what it should.
    #[error("{}: {why}", path.display())]
    Unusable {
        /// The file.
        path: std::path::PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// A WAV file could not be written.
    #[error("{}: {source}", path.display())]
    Wav {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: hound::Error,
    },
    /// The resampler refused.
    #[error("resampler: {0}")]
    Resample(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A configuration value is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The audio device failed or does not exist.
    #[error("audio device: {0}")]
    Device(String),
    /// Opus failed.
    #[error("opus: {0}")]
    Opus(#[from] ::opus::Error),
}
