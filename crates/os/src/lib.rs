//! Tutti's edge to the operating system, in one place, for the node runtime and the hub:
//! randomness (never a fallback), files written atomically (and owner-only where they hold
//! secrets), the machine's name and DNS labels made from any text, the wall clock.
//!
//! The monotonic clock that audio runs on is `tutti_audio::clock`'s.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The operating system's random generator failed: nothing that makes keys or nonces falls
/// back to the clock, so whoever needed it refuses to start.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed ({0}): keys and nonces need it")]
pub struct RandomError(#[source] getrandom::Error);

/// `N` bytes from the operating system's generator, or why there are none.
pub fn try_random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(RandomError)?;
    Ok(b)
}

/// `N` bytes from the operating system's generator; panics if it fails (for code that
/// already drew from it at start-up, where [`try_random`] said so).
pub fn random<const N: usize>() -> [u8; N] {
    match try_random() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// Writes `bytes` to `path` atomically: into a file beside it (created with `mode`, less
/// the umask), synced, then renamed over it — a crash leaves the old file or the new one,
/// never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes a secret to `path` atomically, owner-only (0600); its directory is made (0700) if
/// it does not exist.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    write_atomic(path, bytes, 0o600)
}

/// This machine's name (`/etc/hostname`; `tutti` if there is none).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tutti".into())
}

/// A DNS label from any text: letters, digits and dashes (anything else becomes a dash);
/// `tutti` for nothing.
pub fn dns_label(s: &str) -> String {
    let out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    if out.is_empty() { "tutti".into() } else { out }
}

/// Nanoseconds since the Unix epoch by the wall clock (0 if it reads before 1970): a
/// stream run's epoch, which only needs to grow from one run to the next.
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch by the wall clock (0 if it reads before 1970).
pub fn unix_seconds() -> u64 {
    wall_clock_ns() / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_owner_only_in_a_new_owner_only_directory_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tutti-os-{}", std::process::id()));
        let path = dir.join("inner/secret.json");
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("inner")), 0o700);
        assert!(!dir.join("inner/secret.json.tmp").exists(), "nothing left beside it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn labels_are_dns_safe_and_never_empty() {
        assert_eq!(dns_label("Living Room_1"), "Living-Room-1");
        assert_eq!(dns_label(""), "tutti");
        assert_ne!(random::<16>(), random::<16>());
    }
}
