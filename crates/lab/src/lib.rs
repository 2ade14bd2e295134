//! Tutti's speaker-sync instrument (see `docs/instrument.md`): the test signal, a real-time
//! reader that makes a PulseAudio pipe sink play on `CLOCK_MONOTONIC`, and the analysis of a
//! recording where every player's sink is one channel of that sink.

#![forbid(unsafe_code)]

pub mod analyze;
pub mod record;
pub mod signal;

use std::path::{Path, PathBuf};

/// Why a lab tool failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file or the pipe could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The pipe could not be resized to what the reader asked.
    #[error("{}: cannot resize the pipe: {errno}", path.display())]
    Resize {
        /// The FIFO.
        path: PathBuf,
        /// The system's reason.
        errno: rustix::io::Errno,
    },
    /// A WAV file could not be written.
    #[error("{}: {source}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: hound::Error,
    },
    /// A summary or report could not be written as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The recording holds no usable test signal.
    #[error("no test signal in channel 0 (the source's sink)")]
    NoSignal,
    /// The recording is too short to measure.
    #[error("only {0} events in the source channel: too short a recording")]
    TooShort(usize),
    /// The command line cannot be run: what is wrong and the form that works.
    #[error("{0}")]
    Usage(String),
}

impl LabError {
    /// An I/O failure on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LabError::Io { path: path.to_owned(), source }
    }
}
