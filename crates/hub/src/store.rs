//! Settings on disk: one JSON file, replaced atomically (written beside it, synced, renamed),
//! so a crash mid-save leaves the old file or the new one, never half of one.

use std::path::{Path, PathBuf};

use crate::registry::Persisted;

/// Why one of the hub's files (settings, secrets, certificate) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The system refused (permissions, a full disk, a missing directory).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is there but not what it should be.
    #[error("{}: not a Tutti {what} ({reason}); {fix}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
}

impl FileError {
    /// An I/O failure on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        FileError::Io { path: path.to_owned(), source }
    }
}

/// Reads `path`; a missing file is an empty state.
pub fn load(path: &Path) -> Result<Persisted, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| FileError::Damaged {
            path: path.to_owned(),
            what: "hub state file",
            reason: e.to_string(),
            fix: "move it away to start afresh",
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(FileError::io(path, e)),
    }
}

/// Runs blocking file work (a write and its fsync) without stalling the async runtime: on a
/// multi-threaded runtime's worker the worker hands its other tasks over first.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Writes `state` to `path` atomically.
pub fn save(path: &Path, state: &Persisted) -> Result<(), FileError> {
    let text = serde_json::to_string_pretty(state).map_err(|e| FileError::io(path, e.into()))?;
    write_atomic(path, text.as_bytes(), 0o666).map_err(|e| FileError::io(path, e))
}

/// Writes `bytes` to `path` atomically (beside it, synced, renamed), creating the file with
/// `mode` (less the umask): 0o666 for settings, 0o600 for secrets.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    blocking(|| tutti_os::write_atomic(path, bytes, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutti_proto::control::Zone;

    #[test]
    fn round_trips_and_names_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("tutti-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.json");
        assert_eq!(load(&path).unwrap(), Persisted::default());
        let mut s = Persisted::default();
        s.zones.insert("kitchen".into(), Zone { name: "kitchen".into(), ..Zone::default() });
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        std::fs::write(&path, "{ not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("hub.json") && e.contains("move it away"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
