//! Tutti's audio edge.
#![forbid(unsafe_code)]

pub mod backend;
pub mod clock;
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

/// Errors of the audio layer: each says what failed and, where it can, what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// A file or stream could not be read.
    #[error("I/O error: {0}")]
    Io(String),
    /// A file's format or codec is not supported or is corrupt.
    #[error("cannot decode: {0}")]
    Format(String),
    /// A configuration value is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The audio device failed or does not exist.
    #[error("audio device: {0}")]
    Device(String),
    /// Opus failed.
    #[error("opus: {0}")]
    Opus(String),
}
