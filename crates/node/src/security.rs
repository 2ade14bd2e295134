//! Keys for the network: from a passphrase, from the hub (a paired node), or plaintext,
//! loudly, for labs. [`Keys`] lets the hub change a running session's keys (rotation).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tutti_proto::control::{KeySet, key_from_hex};
use tutti_proto::{Credential, NetworkKey, Security};

use crate::NodeError;

/// The network name used to salt passphrases when none is configured.
pub const DEFAULT_NETWORK: &str = "tutti";

/// Encrypted with a key derived from `passphrase` on `network`, or plaintext when `insecure`.
pub fn from_options(
    passphrase: Option<&str>,
    network: &str,
    insecure: bool,
) -> Result<Security, NodeError> {
    if insecure {
        return Ok(Security::Plaintext);
    }
    let Some(p) = passphrase else {
        return Err(NodeError::NoKey);
    };
    Ok(Security::encrypted(NetworkKey::from_passphrase(p, network)?))
}

/// A session's keys, changeable while it runs: the network thread checks
/// [`changed`](Self::changed) once per loop (an atomic load; the lock only on a change).
#[derive(Clone, Debug)]
pub struct Keys(Arc<Ring>);

#[derive(Debug)]
struct Ring {
    version: AtomicU64,
    security: Mutex<Security>,
}

impl From<Security> for Keys {
    fn from(s: Security) -> Self {
        Keys(Arc::new(Ring { version: AtomicU64::new(1), security: Mutex::new(s) }))
    }
}

impl Keys {
    /// No key yet (a paired node before the hub answered): everything is sealed with a random
    /// key nobody holds and nothing is accepted. Version 0.
    pub fn pending() -> Self {
        let k = Keys::from(Security::encrypted(NetworkKey::from_bytes(tutti_os::random())));
        k.0.version.store(0, Ordering::Release);
        k
    }

    /// Replaces the keys.
    pub fn set(&self, security: Security) {
        // A poisoned lock still holds whole keys (an assignment does not half-happen): use it.
        *self.0.security.lock().unwrap_or_else(|e| e.into_inner()) = security;
        self.0.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The keys now. Fails closed: a thread that panicked holding the lock leaves the keys
    /// as they were, never plaintext.
    pub fn current(&self) -> Security {
        self.0.security.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the keys were set (0: never, still pending).
    pub fn version(&self) -> u64 {
        self.0.version.load(Ordering::Acquire)
    }

    /// The keys, if they changed since `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<Security> {
        let v = self.version();
        if v == *seen {
            return None;
        }
        *seen = v;
        Some(self.current())
    }
}

/// The security a [`KeySet`] describes (`None` if a key is not 32 bytes of hex).
pub fn from_keyset(set: &KeySet) -> Option<Security> {
    let key = |h: &String| key_from_hex(h).map(NetworkKey::from_bytes);
    let send = key(&set.send)?;
    let accept = set.accept.iter().map(key).collect::<Option<Vec<_>>>()?;
    Some(Security::Encrypted { send, accept })
}

/// What pairing gave this node, kept on disk owner-only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pairing {
    /// The node's id on the network.
    pub node: String,
    /// The credential (hex).
    pub credential: String,
    /// The hub's node link (`host:port`).
    pub hub: String,
    /// The network's name.
    pub network: String,
}

impl core::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pairing").field("node", &self.node).field("hub", &self.hub).finish()
    }
}

impl Pairing {
    /// The credential.
    pub fn credential(&self) -> Result<Credential, NodeError> {
        key_from_hex(&self.credential).map(Credential::from_bytes).ok_or(NodeError::BadCredential)
    }

    /// Where a node keeps its pairing: `$XDG_CONFIG_HOME/tutti/pairing.json` (or
    /// `~/.config/...`).
    pub fn default_path() -> PathBuf {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".config")
            })
            .join("tutti/pairing.json")
    }

    /// Reads a pairing; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, NodeError> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| NodeError::Damaged {
                path: path.to_owned(),
                what: "pairing",
                reason: e.to_string(),
                fix: "pair again with `tutti pair LINK`",
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NodeError::File { path: path.to_owned(), source }),
        }
    }

    /// Writes the pairing, readable by this user only.
    pub fn save(&self, path: &Path) -> Result<(), NodeError> {
        let file = |source| NodeError::File { path: path.to_owned(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| file(e.into()))?;
        tutti_os::write_private(path, text.as_bytes()).map_err(file)
    }

    /// A pairing from a hub's grant.
    pub fn from_grant(grant: &tutti_proto::pairing::PairGrant, hub: &str) -> Self {
        Pairing {
            node: grant.node.clone(),
            credential: grant.credential.clone(),
            hub: hub.to_owned(),
            network: grant.network.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_fail_closed_when_a_thread_panicked_holding_them() {
        let keys = Keys::from(Security::encrypted(NetworkKey::from_bytes([3; 32])));
        let held = keys.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.0.security.lock().unwrap();
            panic!("a thread dies holding the keys");
        })
        .join();
        assert!(keys.0.security.is_poisoned());
        assert!(matches!(keys.current(), Security::Encrypted { .. }), "never plaintext");
        keys.set(Security::encrypted(NetworkKey::from_bytes([4; 32])));
        assert_eq!(
            keys.current().sending_key().map(NetworkKey::id),
            Some(NetworkKey::from_bytes([4; 32]).id())
        );
    }

    use super::*;
    use tutti_proto::control::to_hex;

    fn fresh_key_hex() -> String {
        to_hex(&tutti_os::random::<32>())
    }

    #[test]
    fn keys_change_in_place_and_a_pairing_is_owner_only() {
        let keys = Keys::pending();
        assert_eq!(keys.version(), 0);

        let mut seen = 0;
        assert!(keys.changed(&mut seen).is_none());
        let set = KeySet {
            send: fresh_key_hex(),
            accept: vec![fresh_key_hex()],
            note: None,
            stream: None,
        };
        keys.set(from_keyset(&set).unwrap());
        assert_eq!(keys.version(), 1, "the first key set is there");
        assert!(
            matches!(keys.changed(&mut seen), Some(Security::Encrypted { accept, .. }) if accept.len() == 1)
        );
        assert!(keys.changed(&mut seen).is_none());
        assert!(
            from_keyset(&KeySet { send: "abcd".into(), accept: vec![], note: None, stream: None })
                .is_none()
        );

        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tutti-pairing-{}", std::process::id()));
        let path = dir.join("sub/pairing.json");
        let p = Pairing {
            node: "kitchen".into(),
            credential: fresh_key_hex(),
            hub: "127.0.0.1:7481".into(),
            network: "home".into(),
        };
        p.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Pairing::load(&path).unwrap().unwrap();
        assert_eq!(back.credential().unwrap().bytes(), p.credential().unwrap().bytes());
        assert!(Pairing::load(&dir.join("none.json")).unwrap().is_none());
        std::fs::write(&path, "{").unwrap();
        assert!(Pairing::load(&path).unwrap_err().to_string().contains("pair again"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
