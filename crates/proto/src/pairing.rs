//! Pairing: a node turns a one-time token into credentials of its own.
//!
//! The hub issues a token — an id (public, names the token) and a 128-bit secret — shown as a
//! link (`tutti://HOST:PORT/pair/ID.SECRET`) or its QR code. The node runs a Noise
//! `NNpsk0` handshake with the hub, the token's secret as the pre-shared key:
//!
//! ```text
//! node → hub   {"pair":{"token":"ID","noise":"<-> psk, e + PairRequest (encrypted)>"}}
//! hub  → node  {"paired":{"noise":"<- e, ee + PairGrant (encrypted)>"}}   or refused
//! ```
//!
//! Only a holder of the token completes the handshake, and only the hub that issued it can
//! answer; the grant (the node's credential) is encrypted under fresh ephemeral keys, so a
//! recording of the exchange opens nothing even if the token leaks later. The hub forgets a
//! token once used, and refuses one past its expiry. Sans-IO: bytes in, bytes out.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::control::{from_hex, to_hex};

/// The Noise protocol used.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";

/// Why pairing failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairError {
    /// The link or token text is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The handshake failed: wrong token, or someone altered the exchange.
    #[error("the pairing handshake failed (wrong or altered token): {0}")]
    Handshake(String),
    /// The payload is not what pairing carries.
    #[error("the pairing payload is malformed: {0}")]
    Payload(String),
}

fn noise(e: snow::Error) -> PairError {
    PairError::Handshake(e.to_string())
}

/// A one-time pairing token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Public: names the token (8 hex digits).
    pub id: String,
    /// Secret: the pre-shared key's seed.
    pub secret: [u8; 16],
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Token").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Token {
    /// A token from 20 random bytes (4 for the id, 16 for the secret).
    pub fn from_random(random: [u8; 20]) -> Self {
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&random[4..]);
        Token { id: to_hex(&random[..4]), secret }
    }

    /// `ID.SECRET`, as written in links.
    pub fn text(&self) -> String {
        format!("{}.{}", self.id, to_hex(&self.secret))
    }

    /// Parses `ID.SECRET`.
    pub fn parse(text: &str) -> Result<Self, PairError> {
        let bad = || {
            PairError::Malformed(format!(
                "`{text}` is not a pairing token: expected 8 hex digits, a dot, 32 hex digits \
                 (ask the hub for a fresh one: `tutti serve` prints it, or POST /api/pairing)"
            ))
        };
        let (id, secret) = text.trim().split_once('.').ok_or_else(bad)?;
        if id.len() != 8 || from_hex(id).is_none() {
            return Err(bad());
        }
        let secret: [u8; 16] = from_hex(secret).and_then(|s| s.try_into().ok()).ok_or_else(bad)?;
        Ok(Token { id: id.to_ascii_lowercase(), secret })
    }

    fn psk(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tutti pairing psk v1");
        h.update(self.secret);
        h.finalize().into()
    }

    fn prologue(&self) -> Vec<u8> {
        let mut p = b"tutti pairing v1 ".to_vec();
        p.extend_from_slice(self.id.as_bytes());
        p
    }

    fn builder_state(&self, initiator: bool) -> Result<snow::HandshakeState, PairError> {
        let params: snow::params::NoiseParams = PATTERN.parse().map_err(noise)?;
        let psk = self.psk();
        let prologue = self.prologue();
        let b = snow::Builder::new(params).psk(0, &psk).map_err(noise)?;
        let b = b.prologue(&prologue).map_err(noise)?;
        if initiator { b.build_initiator() } else { b.build_responder() }.map_err(noise)
    }
}

/// A pairing link: where the hub's node link listens, and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairLink {
    /// The hub's node link, `host:port`.
    pub hub: String,
    /// The one-time token.
    pub token: Token,
}

impl PairLink {
    /// `tutti://HOST:PORT/pair/ID.SECRET`.
    pub fn text(&self) -> String {
        format!("tutti://{}/pair/{}", self.hub, self.token.text())
    }

    /// Parses a link (`tutti://HOST:PORT/pair/ID.SECRET`).
    pub fn parse(text: &str) -> Result<Self, PairError> {
        let rest = text.trim().strip_prefix("tutti://").ok_or_else(|| {
            PairError::Malformed(format!(
                "`{text}` is not a pairing link: it starts with tutti:// (the hub prints one)"
            ))
        })?;
        let (hub, token) = rest.split_once("/pair/").ok_or_else(|| {
            PairError::Malformed(format!("`{text}`: expected tutti://HOST:PORT/pair/TOKEN"))
        })?;
        if hub.is_empty() || !hub.contains(':') {
            return Err(PairError::Malformed(format!(
                "`{text}`: the hub's address `{hub}` needs a port (HOST:PORT)"
            )));
        }
        Ok(PairLink { hub: hub.to_owned(), token: Token::parse(token)? })
    }
}

/// What a node asks for (in the first, psk-encrypted message).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRequest {
    /// The node's display name.
    pub name: String,
}

/// What the hub grants (in the second message, under fresh keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairGrant {
    /// The node's id on this network (it says it on the link from now on).
    pub node: String,
    /// The node's credential (32 bytes, hex): keep it owner-only.
    pub credential: String,
    /// The network's name.
    pub network: String,
}

const MAX_MSG: usize = 65_535;

/// The node's side of a pairing.
pub struct Initiator {
    state: snow::HandshakeState,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Initiator(..)")
    }
}

impl Initiator {
    /// Starts pairing with `token`; returns the first message (hex) to send.
    pub fn start(token: &Token, request: &PairRequest) -> Result<(Self, String), PairError> {
        let mut state = token.builder_state(true)?;
        let payload = serde_json::to_vec(request).map_err(|e| PairError::Payload(e.to_string()))?;
        let mut msg = vec![0u8; MAX_MSG];
        let n = state.write_message(&payload, &mut msg).map_err(noise)?;
        Ok((Initiator { state }, to_hex(&msg[..n])))
    }

    /// Reads the hub's answer (hex): the grant.
    pub fn finish(mut self, answer: &str) -> Result<PairGrant, PairError> {
        let msg = from_hex(answer).ok_or_else(|| PairError::Payload("not hex".into()))?;
        let mut payload = vec![0u8; MAX_MSG];
        let n = self.state.read_message(&msg, &mut payload).map_err(noise)?;
        if !self.state.is_handshake_finished() {
            return Err(PairError::Handshake("the handshake did not finish".into()));
        }
        serde_json::from_slice(&payload[..n]).map_err(|e| PairError::Payload(e.to_string()))
    }
}

/// The hub's side: reads the node's first message with `token` (the one its id names) and
/// returns the request and a responder that seals the grant.
pub fn respond(token: &Token, first: &str) -> Result<(PairRequest, Responder), PairError> {
    let msg = from_hex(first).ok_or_else(|| PairError::Payload("not hex".into()))?;
    let mut state = token.builder_state(false)?;
    let mut payload = vec![0u8; MAX_MSG];
    let n = state.read_message(&msg, &mut payload).map_err(noise)?;
    let request: PairRequest =
        serde_json::from_slice(&payload[..n]).map_err(|e| PairError::Payload(e.to_string()))?;
    Ok((request, Responder { state }))
}

/// The hub's side after a good first message.
pub struct Responder {
    state: snow::HandshakeState,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Responder(..)")
    }
}

impl Responder {
    /// The answer (hex) carrying `grant`.
    pub fn grant(mut self, grant: &PairGrant) -> Result<String, PairError> {
        let payload = serde_json::to_vec(grant).map_err(|e| PairError::Payload(e.to_string()))?;
        let mut msg = vec![0u8; MAX_MSG];
        let n = self.state.write_message(&payload, &mut msg).map_err(noise)?;
        Ok(to_hex(&msg[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(seed: u8) -> Token {
        Token::from_random([seed; 20])
    }

    #[test]
    fn links_and_tokens_round_trip_and_bad_ones_say_why() {
        let link = PairLink { hub: "10.0.0.2:7481".into(), token: token(3) };
        assert_eq!(PairLink::parse(&link.text()).unwrap(), link);
        for bad in [
            "http://10.0.0.2:7481/pair/x",
            "tutti://10.0.0.2/pair/03030303.03030303030303030303030303030303",
            "tutti://10.0.0.2:7481/pair/0303.03",
            "tutti://10.0.0.2:7481/",
        ] {
            let e = PairLink::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) || e.contains("`0303.03`"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_right_token_pairs_and_a_wrong_or_altered_one_does_not() {
        let t = token(1);
        let (node, first) = Initiator::start(&t, &PairRequest { name: "kitchen".into() }).unwrap();
        let (req, hub) = respond(&t, &first).unwrap();
        assert_eq!(req.name, "kitchen");
        let grant = PairGrant {
            node: "kitchen".into(),
            credential: "ab".repeat(32),
            network: "home".into(),
        };
        let answer = hub.grant(&grant).unwrap();
        assert_eq!(node.finish(&answer).unwrap(), grant);

        // Another token (same id, other secret): the hub cannot read the request.
        let mut other = token(1);
        other.secret[0] ^= 1;
        let (_, first) = Initiator::start(&other, &PairRequest { name: "x".into() }).unwrap();
        assert!(matches!(respond(&t, &first), Err(PairError::Handshake(_))));

        // An altered answer is refused by the node.
        let (node, first) = Initiator::start(&t, &PairRequest { name: "y".into() }).unwrap();
        let (_, hub) = respond(&t, &first).unwrap();
        let mut answer = from_hex(&hub.grant(&grant).unwrap()).unwrap();
        let last = answer.len() - 1;
        answer[last] ^= 0x40;
        assert!(matches!(node.finish(&to_hex(&answer)), Err(PairError::Handshake(_))));

        // Garbage never panics.
        assert!(respond(&t, "zz").is_err());
        assert!(respond(&t, "00").is_err());
        assert!(respond(&t, &"00".repeat(200)).is_err());
    }
}
