//! The hub's secrets in use: API tokens, pairing tokens, paired nodes' credentials,
//! revocation. Every change is saved before it counts.

use super::*;

/// Why a node has no credential on this hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// It was revoked.
    #[error("node `{0}` was revoked: it can pair again only with a new token from the hub")]
    Revoked(String),
    /// It was never paired here.
    #[error("no paired node `{0}` on this hub: pair it with `tutti pair LINK`")]
    Unknown(String),
}

pub(crate) struct Vault {
    pub(crate) secrets: Secrets,
    pub(crate) file: Option<PathBuf>,
    pub(crate) tokens: Tokens,
    pub(crate) link: String,
    pub(crate) rotation: u64,
    /// The HTTPS certificate's SHA-256 fingerprint, when serving HTTPS.
    pub(crate) fingerprint: Option<String>,
    /// Where the hub's MQTT tree lives (`host:port`), when it has one.
    pub(crate) mqtt: Option<String>,
    /// One-time dashboard login codes (admin), with when they stop working.
    pub(crate) logins: Vec<(String, Instant)>,
    /// mDNS as it started (`On`'s count is filled in when asked).
    pub(crate) discovery: DiscoveryStatus,
    /// One-time guest invitation codes, with when they stop working.
    pub(crate) invites: Vec<(String, Instant)>,
    /// The hub's web address as a phone on the LAN reaches it (`https://IP:PORT`, else the
    /// plain HTTP one), for guest links.
    pub(crate) web: String,
}

impl Vault {
    /// Changes the secrets and saves them; a change that cannot be saved is undone and
    /// refused (a revocation that a restart would forget must not look done).
    pub(crate) fn change<R>(
        &mut self,
        f: impl FnOnce(&mut Secrets) -> R,
    ) -> Result<R, RegistryError> {
        let before = self.secrets.clone();
        let r = f(&mut self.secrets);
        if let Some(p) = &self.file
            && let Err(e) = self.secrets.save(p)
        {
            self.secrets = before;
            return Err(RegistryError::NotSaved(e.to_string()));
        }
        Ok(r)
    }
}

impl Hub {
    pub(crate) fn vault<R>(&self, f: impl FnOnce(&mut Vault) -> R) -> R {
        f(&mut self.vault.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The admin and read-only API tokens.
    pub fn api_tokens(&self) -> (String, String) {
        self.vault(|v| (v.secrets.admin_token.clone(), v.secrets.read_token.clone()))
    }

    /// The SHA-256 fingerprint of the hub's HTTPS certificate (when it serves HTTPS).
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.vault(|v| v.fingerprint.clone())
    }

    /// The hub itself: network, version, HTTPS, MQTT, keys, discovery.
    pub fn status(&self) -> HubStatus {
        let heard = self.heard.lock().map_or(0, |m| m.len() as u32);
        let rotating = self.rotating();
        self.vault(|v| HubStatus {
            network: v.secrets.network.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tls_fingerprint: v.fingerprint.clone(),
            mqtt: v.mqtt.clone(),
            rotating,
            keys_age_s: tutti_os::unix_seconds().saturating_sub(v.secrets.keys_since),
            discovery: match &v.discovery {
                DiscoveryStatus::On { .. } => DiscoveryStatus::On { heard },
                d => d.clone(),
            },
        })
    }

    /// The network's name.
    pub fn network(&self) -> String {
        self.vault(|v| v.secrets.network.clone())
    }

    /// Issues a one-time pairing token valid for `ttl`, as a link.
    pub fn issue_token(&self, ttl: Duration) -> PairLink {
        self.vault(|v| {
            let token = v.tokens.issue(ttl, Instant::now());
            PairLink { hub: v.link.clone(), token }
        })
    }

    pub(crate) fn take_token(&self, id: &str) -> Result<Token, TokenError> {
        self.vault(|v| v.tokens.take(id, Instant::now()))
    }

    /// Pairs a node that presented a good token: its id and credential, saved (or refused).
    pub(crate) fn grant(&self, name: &str) -> Result<PairGrant, RegistryError> {
        self.vault(|v| {
            let (node, credential) = v.change(|s| s.pair(name))?;
            Ok(PairGrant { node, credential, network: v.secrets.network.clone() })
        })
        .inspect(|_| self.announce_paired())
    }

    /// A paired node's credential (hex), or why it has none.
    pub(crate) fn credential(&self, id: &str) -> Result<String, CredentialError> {
        self.vault(|v| match (v.secrets.nodes.get(id), v.secrets.revoked.get(id)) {
            (Some(n), _) => Ok(n.credential.clone()),
            (None, Some(_)) => Err(CredentialError::Revoked(id.to_owned())),
            (None, None) => Err(CredentialError::Unknown(id.to_owned())),
        })
    }

    /// Tells every listener (dashboards) who is paired now.
    fn announce_paired(&self) {
        self.publish(Event::Paired { nodes: self.paired_views() });
    }

    /// Paired nodes by id (credentials left out), and revoked ids with when.
    pub fn paired(&self) -> (Vec<(String, PairedNode)>, Vec<(String, u64)>) {
        self.vault(|v| {
            let nodes = v
                .secrets
                .nodes
                .iter()
                .map(|(id, n)| (id.clone(), PairedNode { credential: String::new(), ..n.clone() }))
                .collect();
            (nodes, v.secrets.revoked.iter().map(|(k, t)| (k.clone(), *t)).collect())
        })
    }

    /// Revokes a paired node: its credential is forgotten, its links are closed, and the
    /// stream keys rotate so what it holds stops working. `Ok(false)` if it was not paired;
    /// an error (and nothing revoked) if the revocation cannot be saved.
    pub fn revoke(&self, id: &str) -> Result<bool, RegistryError> {
        if !self.vault(|v| v.change(|s| s.revoke(id)))? {
            return Ok(false);
        }
        self.announce_paired();
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for l in links.values().filter(|l| l.paired.as_deref() == Some(id)) {
            let message = "this node was revoked by the hub's administrator".to_owned();
            let _ = l.tx.send(LinkMessage::Refused { message });
        }
        drop(links);
        // The revocation is saved; a rotation that cannot be saved now is retried by the
        // periodic one (the revoked node is refused on the link meanwhile).
        if let Err(e) = self.rotate_keys() {
            tracing::warn!("{e}");
        }
        Ok(true)
    }
}
