//! The hub's secrets: the network's identity, the API tokens, the stream keys and the paired
//! nodes' credentials. Created on first run, kept in one owner-only file (mode 0600, written
//! atomically), never served by the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::store::FileError;
use tutti_proto::control::{KEYS_CONTEXT, KeySet, to_hex};
use tutti_proto::pairing::Token;
use tutti_proto::{Credential, NetworkKey};

pub use tutti_os::random;

fn now_unix() -> u64 {
    tutti_os::unix_seconds()
}

/// A paired node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedNode {
    /// Its credential (32 bytes, hex).
    pub credential: String,
    /// The name it asked for.
    pub name: String,
    /// When it was paired (Unix seconds).
    pub paired_at: u64,
}

/// What the secrets file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// The network's name.
    pub network: String,
    /// The network's own key material (hex): the MQTT login derives from it.
    pub network_key: String,
    /// Full control of the API.
    pub admin_token: String,
    /// Read-only API access (GET only).
    pub read_token: String,
    /// The stream keys paired nodes hold now.
    pub keys: KeySet,
    /// When the sending key was made (Unix seconds).
    pub keys_since: u64,
    /// Paired nodes by id.
    #[serde(default)]
    pub nodes: BTreeMap<String, PairedNode>,
    /// Revoked node ids, with when (Unix seconds).
    #[serde(default)]
    pub revoked: BTreeMap<String, u64>,
    /// The embedded MQTT broker's password for user `tutti` (derived from the network key;
    /// kept here so that it is found here rather than in a log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mqtt_password: String,
    /// Guests by id (phones that took a guest invitation).
    #[serde(default)]
    pub guests: BTreeMap<String, Guest>,
}

/// A guest: listens and sings, never changes settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// Its name.
    pub name: String,
    /// SHA-256 of its cookie's secret (hex): the secret itself lives only in the phone.
    pub secret_sha256: String,
    /// When it joined (Unix seconds).
    pub joined_at: u64,
    /// When its credential stops working (Unix seconds).
    pub expires_at: u64,
}

impl Secrets {
    /// A new network's secrets, all fresh random.
    pub fn generate(network: &str) -> Self {
        Secrets {
            network: network.to_owned(),
            network_key: to_hex(&random::<32>()),
            admin_token: format!("admin-{}", to_hex(&random::<24>())),
            read_token: format!("read-{}", to_hex(&random::<24>())),
            keys: KeySet {
                send: to_hex(&random::<32>()),
                accept: Vec::new(),
                note: None,
                stream: None,
            },
            keys_since: now_unix(),
            nodes: BTreeMap::new(),
            revoked: BTreeMap::new(),
            mqtt_password: String::new(),
            guests: BTreeMap::new(),
        }
    }

    /// Reads `path`, or creates it with fresh secrets (owner-only) on first run; the second
    /// value says whether it was created.
    pub fn load_or_create(path: &Path, network: &str) -> Result<(Self, bool), FileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    if let Ok(m) = std::fs::metadata(path)
                        && m.permissions().mode() & 0o077 != 0
                    {
                        tracing::warn!(
                            "{} is readable by others (mode {:o}): chmod 600 it",
                            path.display(),
                            m.permissions().mode() & 0o777
                        );
                    }
                }
                let s = serde_json::from_str(&text).map_err(|e| FileError::Damaged {
                    path: path.to_owned(),
                    what: "secrets file",
                    reason: e.to_string(),
                    fix: "restore it from a backup, or move it away to start a new network \
                          (every node then pairs again)",
                })?;
                Ok((s, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = Self::generate(network);
                s.save(path)?;
                Ok((s, true))
            }
            Err(e) => Err(FileError::io(path, e)),
        }
    }

    /// Writes the secrets atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| FileError::io(path, e.into()))?;
        crate::store::write_atomic(path, text.as_bytes(), 0o600).map_err(|e| FileError::io(path, e))
    }

    /// The network key (for the MQTT login).
    pub fn network_key(&self) -> NetworkKey {
        let b = tutti_proto::control::key_from_hex(&self.network_key).unwrap_or([0; 32]);
        NetworkKey::from_bytes(b)
    }

    /// The keys of one stream (`label`: the id of the source node sending it): derived from
    /// the hub's keys, rotation included. The hub's own keys never leave it.
    pub fn stream_keys(&self, label: &str) -> KeySet {
        let derive = |hex: &String| {
            let master = tutti_proto::control::key_from_hex(hex).unwrap_or([0; 32]);
            to_hex(&tutti_proto::crypto::stream_key(&master, label))
        };
        KeySet {
            send: derive(&self.keys.send),
            accept: self.keys.accept.iter().map(derive).collect(),
            note: None,
            stream: None,
        }
    }

    /// `set` sealed for a node's credential (hex), as the link sends it.
    pub fn seal_for(credential: &str, set: &KeySet) -> Option<String> {
        let c = credential_of(credential)?;
        let plain = serde_json::to_vec(set).ok()?;
        Some(to_hex(&c.seal(random(), KEYS_CONTEXT, &plain)))
    }

    /// Pairs a node asking to be called `name`: a fresh id (the name made DNS-label safe,
    /// numbered if taken) and credential.
    pub fn pair(&mut self, name: &str) -> (String, String) {
        let base: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .chars()
            .take(40)
            .collect();
        let base = if base.is_empty() { "node".to_owned() } else { base };
        let mut id = base.clone();
        let mut n = 2;
        while self.nodes.contains_key(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        let credential = to_hex(&random::<32>());
        self.nodes.insert(
            id.clone(),
            PairedNode {
                credential: credential.clone(),
                name: name.to_owned(),
                paired_at: now_unix(),
            },
        );
        self.revoked.remove(&id);
        (id, credential)
    }

    /// Forgets a node's credential; `false` if it was not paired.
    pub fn revoke(&mut self, id: &str) -> bool {
        let was = self.nodes.remove(id).is_some();
        if was {
            self.revoked.insert(id.to_owned(), now_unix());
        }
        was
    }
}

/// A credential from its hex.
pub fn credential_of(hex: &str) -> Option<Credential> {
    tutti_proto::control::key_from_hex(hex).map(Credential::from_bytes)
}

/// One-time pairing tokens not yet used (memory only: a hub restart voids them).
#[derive(Debug, Default)]
pub struct Tokens {
    live: BTreeMap<String, (Token, Instant)>,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued, or already used.
    #[error(
        "this pairing token is unknown or was already used (each works once): ask the hub for a new one"
    )]
    Unknown,
    /// Past its expiry.
    #[error("this pairing token expired {0} s ago: ask the hub for a new one")]
    Expired(u64),
}

impl Tokens {
    /// Issues a token valid for `ttl`.
    pub fn issue(&mut self, ttl: Duration, now: Instant) -> Token {
        self.live.retain(|_, (_, until)| *until > now);
        let t = Token::from_random(random());
        self.live.insert(t.id.clone(), (t.clone(), now + ttl));
        t
    }

    /// Takes the token `id` names (it cannot be used again, whatever happens next).
    pub fn take(&mut self, id: &str, now: Instant) -> Result<Token, TokenError> {
        let (t, until) = self.live.remove(id).ok_or(TokenError::Unknown)?;
        if now > until {
            return Err(TokenError::Expired((now - until).as_secs()));
        }
        Ok(t)
    }

    /// How many are outstanding.
    pub fn outstanding(&self, now: Instant) -> usize {
        self.live.values().filter(|(_, u)| *u > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_owner_only_and_reread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tutti-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secrets.json");
        let (a, created) = Secrets::load_or_create(&path, "home").unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, created) = Secrets::load_or_create(&path, "home").unwrap();
        assert!(!created);
        assert_eq!(a, b);
        assert_ne!(a.admin_token, a.read_token);
        std::fs::write(&path, "nope").unwrap();
        assert!(
            Secrets::load_or_create(&path, "home")
                .unwrap_err()
                .to_string()
                .contains("move it away")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tokens_work_once_and_expire() {
        let mut t = Tokens::default();
        let now = Instant::now();
        let a = t.issue(Duration::from_secs(60), now);
        assert_eq!(t.take(&a.id, now).unwrap(), a);
        assert_eq!(t.take(&a.id, now), Err(TokenError::Unknown));
        let b = t.issue(Duration::from_secs(60), now);
        assert_eq!(t.take(&b.id, now + Duration::from_secs(90)), Err(TokenError::Expired(30)));
        assert_eq!(t.take("nothing", now), Err(TokenError::Unknown));
    }

    #[test]
    fn pairing_names_are_unique_and_revocation_forgets() {
        let mut s = Secrets::generate("home");
        let (a, ca) = s.pair("Living Room!");
        let (b, cb) = s.pair("living room");
        assert_eq!(a, "living-room");
        assert_eq!(b, "living-room-2");
        assert_ne!(ca, cb);
        assert!(Secrets::seal_for(&ca, &s.stream_keys("x")).is_some());
        assert!(s.revoke(&a));
        assert!(!s.revoke(&a));
        assert!(s.revoked.contains_key(&a) && !s.nodes.contains_key(&a));
    }

    #[test]
    fn each_stream_has_its_own_keys_and_they_rotate_with_the_hubs() {
        let mut s = Secrets::generate("home");
        let (a, b) = (s.stream_keys("house-source-7400"), s.stream_keys("house-source-7401"));
        assert_ne!(a.send, b.send, "two streams, two keys");
        assert_ne!(a.send, s.keys.send, "the hub's own key never leaves it");
        assert_eq!(a, s.stream_keys("house-source-7400"), "the same stream, the same key");
        // A rotation in progress: the stream's next key is accepted, derived from the hub's.
        s.keys.accept.push(to_hex(&random::<32>()));
        let r = s.stream_keys("house-source-7400");
        assert_eq!(r.send, a.send);
        assert_eq!(r.accept.len(), 1);
        assert_ne!(r.accept[0], s.keys.accept[0]);
        assert_ne!(r.accept[0], s.stream_keys("house-source-7401").accept[0]);
        // Sealed for one node's credential, opened by it alone.
        let (_, ca) = s.pair("kitchen");
        let (_, cb) = s.pair("den");
        let sealed = tutti_proto::control::from_hex(&Secrets::seal_for(&ca, &r).unwrap()).unwrap();
        let open = |c: &str| credential_of(c).unwrap().open(KEYS_CONTEXT, &sealed);
        let opened: KeySet = serde_json::from_slice(&open(&ca).expect("its own")).unwrap();
        assert_eq!(opened, r);
        assert!(open(&cb).is_none(), "another node's credential opens nothing");
    }
}
