//! Keys for the network: from a passphrase (or plaintext, loudly, for labs).

use tutti_proto::{NetworkKey, Security};

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
        return Err(NodeError::Refused(
            "no network passphrase: pass --passphrase (or set TUTTI_PASSPHRASE), the same on every node; \
             --insecure sends audio unencrypted"
                .into(),
        ));
    };
    Ok(Security::encrypted(NetworkKey::from_passphrase(p, network)?))
}
