//! The node link's secure channel, sans-IO: a Noise `NNpsk0` handshake whose pre-shared key
//! is the network key's (passphrase networks) or the node's own credential's (paired nodes),
//! then every message sealed in length-prefixed frames.
//!
//! ```text
//! hub  → node  {"challenge":{"nonce":N}}                        plain line (the banner)
//! node → hub   {"open":{"paired":ID?,"noise":"-> psk, e"}}      plain line
//! hub  → node  {"opened":{"noise":"<- e, ee"}}  or {"refused":…} plain line
//! then, both ways: [u16 big-endian length][ciphertext] frames, each a piece of one message
//! ```
//!
//! Each side proves it holds the key before the other believes anything: the hub cannot open
//! the first handshake message without it, and the node cannot open the answer unless the hub
//! holds it too — so a node refuses an impostor (a host that advertised itself over mDNS, or
//! took the hub's address) before any welcome, setting, key or command. The prologue binds
//! the hub's challenge and the claimed paired id; fresh ephemeral keys make every session's
//! traffic keys new, so a recording of one session opens nothing later. After the handshake
//! everything (names, titles, settings, commands, keys) is encrypted and authenticated, in
//! order: a frame dropped, replayed, reordered or altered fails to open and ends the link.

use std::sync::Arc;

/// The Noise protocol used.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// The largest frame (ciphertext, without its 2-byte length).
pub const MAX_FRAME: usize = 65_535;
const TAG: usize = 16;
/// Plaintext per frame: a flag byte (more follows, or last) and the message's next piece.
const CHUNK: usize = MAX_FRAME - TAG - 1;
const MORE: u8 = 1;
const LAST: u8 = 0;

/// Why the channel failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The handshake did not complete: the other side does not hold the key (an impostor,
    /// another network, a revoked or re-paired node) or the exchange was altered.
    #[error(
        "the handshake failed: the other side does not hold this network's key (or this node's credential)"
    )]
    Handshake,
    /// A frame did not open: altered, replayed, reordered, or not from this session.
    #[error("a frame did not open (altered, replayed or out of order)")]
    Frame,
    /// A message grew past the limit.
    #[error("a message longer than {0} bytes")]
    TooLong(usize),
    /// Noise could not be set up (a bug, not an attack).
    #[error("noise: {0}")]
    Noise(String),
}

fn handshake(
    psk: &[u8; 32],
    challenge: &[u8],
    paired: Option<&str>,
    initiator: bool,
) -> Result<snow::HandshakeState, LinkError> {
    let noise = |e: snow::Error| LinkError::Noise(e.to_string());
    let params: snow::params::NoiseParams = PATTERN.parse().map_err(noise)?;
    let mut prologue = b"tutti link v1\0".to_vec();
    prologue.extend_from_slice(challenge);
    prologue.push(0);
    prologue.extend_from_slice(paired.unwrap_or("").as_bytes());
    let b = snow::Builder::new(params).psk(0, psk).map_err(noise)?;
    let b = b.prologue(&prologue).map_err(noise)?;
    if initiator { b.build_initiator() } else { b.build_responder() }.map_err(noise)
}

/// The node's side of a handshake in progress.
pub struct Opening(snow::HandshakeState);

impl core::fmt::Debug for Opening {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Opening(..)")
    }
}

impl Opening {
    /// Starts the handshake with the hub's `challenge`, as the paired node `paired` (its
    /// credential's key) or a member of a passphrase network (`None`, the network key's):
    /// returns the first message for `{"open":…}`.
    pub fn start(
        psk: &[u8; 32],
        challenge: &[u8],
        paired: Option<&str>,
    ) -> Result<(Opening, Vec<u8>), LinkError> {
        let mut hs = handshake(psk, challenge, paired, true)?;
        let mut first = vec![0u8; 128];
        let n = hs.write_message(&[], &mut first).map_err(|e| LinkError::Noise(e.to_string()))?;
        first.truncate(n);
        Ok((Opening(hs), first))
    }

    /// Reads the hub's answer: the channel, or [`LinkError::Handshake`] if the hub does not
    /// hold the key (an impostor).
    pub fn finish(mut self, answer: &[u8]) -> Result<Channel, LinkError> {
        let mut scratch = vec![0u8; answer.len()];
        self.0.read_message(answer, &mut scratch).map_err(|_| LinkError::Handshake)?;
        Channel::from(self.0)
    }
}

/// The hub's side: reads the node's first message under `psk` (the paired node's credential,
/// or the network key) and answers. [`LinkError::Handshake`] if the node does not hold it.
pub fn accept(
    psk: &[u8; 32],
    challenge: &[u8],
    paired: Option<&str>,
    first: &[u8],
) -> Result<(Channel, Vec<u8>), LinkError> {
    let mut hs = handshake(psk, challenge, paired, false)?;
    let mut scratch = vec![0u8; first.len()];
    hs.read_message(first, &mut scratch).map_err(|_| LinkError::Handshake)?;
    let mut answer = vec![0u8; 128];
    let n = hs.write_message(&[], &mut answer).map_err(|e| LinkError::Noise(e.to_string()))?;
    answer.truncate(n);
    Ok((Channel::from(hs)?, answer))
}

/// An established channel: split it into its sending and receiving halves (they may live on
/// different threads).
pub struct Channel(Arc<snow::StatelessTransportState>);

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Channel(..)")
    }
}

impl Channel {
    fn from(hs: snow::HandshakeState) -> Result<Channel, LinkError> {
        let t = hs.into_stateless_transport_mode().map_err(|e| LinkError::Noise(e.to_string()))?;
        Ok(Channel(Arc::new(t)))
    }

    /// The halves; `max` bounds a message received (bytes).
    pub fn split(self, max: usize) -> (Sealer, Opener) {
        (
            Sealer { state: self.0.clone(), nonce: 0 },
            Opener { state: self.0, nonce: 0, partial: Vec::new(), max },
        )
    }
}

/// Seals messages into frames.
pub struct Sealer {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl core::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sealer").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl Sealer {
    /// `message` as frames ready to write: `[u16 BE length][ciphertext]`, as many as it takes.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut out = Vec::with_capacity(message.len() + 2 + TAG + 1);
        let mut chunks = message.chunks(CHUNK).peekable();
        let mut plain = Vec::with_capacity(CHUNK.min(message.len()) + 1);
        let mut cipher = vec![0u8; MAX_FRAME];
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            plain.clear();
            plain.push(if last { LAST } else { MORE });
            plain.extend_from_slice(chunk);
            let n = self
                .state
                .write_message(self.nonce, &plain, &mut cipher)
                .map_err(|e| LinkError::Noise(e.to_string()))?;
            self.nonce += 1;
            out.extend_from_slice(&u16::try_from(n).expect("frames fit u16").to_be_bytes());
            out.extend_from_slice(&cipher[..n]);
            if last {
                return Ok(out);
            }
        }
    }
}

/// Opens frames into messages.
pub struct Opener {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
    partial: Vec<u8>,
    max: usize,
}

impl core::fmt::Debug for Opener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opener").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl Opener {
    /// Opens one frame (its ciphertext, without the length): the whole message once its last
    /// frame arrived, `None` while more are to come.
    pub fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, LinkError> {
        if frame.len() < TAG + 1 {
            return Err(LinkError::Frame);
        }
        let mut plain = vec![0u8; frame.len()];
        let n =
            self.state.read_message(self.nonce, frame, &mut plain).map_err(|_| LinkError::Frame)?;
        self.nonce += 1;
        let (flag, piece) = plain[..n].split_first().ok_or(LinkError::Frame)?;
        if self.partial.len() + piece.len() > self.max {
            return Err(LinkError::TooLong(self.max));
        }
        self.partial.extend_from_slice(piece);
        match *flag {
            LAST => Ok(Some(std::mem::take(&mut self.partial))),
            MORE => Ok(None),
            _ => Err(LinkError::Frame),
        }
    }
}

/// The bytes that carry `m` on the link: a clear JSON line (the handshake and pairing), or
/// sealed in frames once the channel is open (`sealer`). Both ends write with it.
pub fn encode(
    m: &crate::control::LinkMessage,
    sealer: Option<&mut Sealer>,
) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    match sealer {
        Some(s) => bytes = s.seal(&bytes).map_err(std::io::Error::other)?,
        None => bytes.push(b'\n'),
    }
    Ok(bytes)
}

/// A frame's length from its 2-byte prefix.
pub fn frame_len(prefix: [u8; 2]) -> usize {
    usize::from(u16::from_be_bytes(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = frame_len([rest[0], rest[1]]);
            out.push(&rest[2..2 + n]);
            rest = &rest[2 + n..];
        }
        out
    }

    fn pair(node: &[u8; 32], hub: &[u8; 32]) -> Result<(Channel, Channel), LinkError> {
        let (opening, first) = Opening::start(node, b"challenge", Some("kitchen"))?;
        let (at_hub, answer) = accept(hub, b"challenge", Some("kitchen"), &first)?;
        Ok((opening.finish(&answer)?, at_hub))
    }

    #[test]
    fn both_ends_with_the_key_talk_in_both_directions_even_long_messages() {
        let (node, hub) = pair(&[7; 32], &[7; 32]).unwrap();
        let (mut to_hub, mut from_hub) = node.split(1 << 20);
        let (mut to_node, mut from_node) = hub.split(1 << 20);
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for m in [&b"{\"hello\":{}}"[..], &long, b""] {
            let sealed = to_hub.seal(m).unwrap();
            assert!(!sealed.windows(5).any(|w| w == b"hello"), "encrypted");
            let mut got = None;
            for f in frames(&sealed) {
                got = from_node.open(f).unwrap();
            }
            assert_eq!(got.as_deref(), Some(m));
        }
        let sealed = to_node.seal(b"welcome").unwrap();
        assert_eq!(from_hub.open(frames(&sealed)[0]).unwrap().as_deref(), Some(&b"welcome"[..]));
    }

    #[test]
    fn an_impostor_without_the_key_is_refused_by_either_side() {
        // A fake hub (wrong key) cannot read the node's opening...
        let (_, first) = Opening::start(&[7; 32], b"c", None).unwrap();
        assert_eq!(accept(&[8; 32], b"c", None, &first).unwrap_err(), LinkError::Handshake);
        // ...nor forge an answer the node takes (it answers with its own handshake).
        let (opening, first) = Opening::start(&[7; 32], b"c", None).unwrap();
        let mut fake = handshake(&[8; 32], b"c", None, false).unwrap();
        let mut scratch = [0u8; 256];
        assert!(fake.read_message(&first, &mut scratch).is_err());
        let (_, forged) =
            accept(&[8; 32], b"c", None, &Opening::start(&[8; 32], b"c", None).unwrap().1).unwrap();
        assert_eq!(opening.finish(&forged).unwrap_err(), LinkError::Handshake);
        // Another challenge or another claimed id: a replayed opening fails too.
        let (_, first) = Opening::start(&[7; 32], b"c", Some("kitchen")).unwrap();
        assert!(accept(&[7; 32], b"other", Some("kitchen"), &first).is_err());
        assert!(accept(&[7; 32], b"c", Some("lounge"), &first).is_err());
    }

    #[test]
    fn altered_replayed_or_reordered_frames_do_not_open() {
        let (node, hub) = pair(&[7; 32], &[7; 32]).unwrap();
        let (mut tx, _) = node.split(1024);
        let (_, mut rx) = hub.split(1024);
        let a = tx.seal(b"one").unwrap();
        let b = tx.seal(b"two").unwrap();
        let mut bent = a.clone();
        bent[5] ^= 1;
        let (_, mut rx2) = pair(&[7; 32], &[7; 32]).unwrap().1.split(1024);
        assert_eq!(rx2.open(&a[2..]).unwrap_err(), LinkError::Frame, "another session");
        assert_eq!(rx.open(&bent[2..]).unwrap_err(), LinkError::Frame, "altered");
        assert_eq!(rx.open(&b[2..]).unwrap_err(), LinkError::Frame, "out of order");
        let (node, hub) = pair(&[7; 32], &[7; 32]).unwrap();
        let (mut tx, _) = node.split(1024);
        let (_, mut rx) = hub.split(1024);
        let a = tx.seal(b"one").unwrap();
        assert_eq!(rx.open(&a[2..]).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(rx.open(&a[2..]).unwrap_err(), LinkError::Frame, "replayed");
        let b = tx.seal(b"two").unwrap();
        assert_eq!(
            rx.open(&b[2..]).unwrap().as_deref(),
            Some(&b"two"[..]),
            "the replay moved nothing"
        );
    }

    #[test]
    fn a_message_past_the_limit_is_refused_while_it_arrives() {
        let (node, hub) = pair(&[7; 32], &[7; 32]).unwrap();
        let (mut tx, _) = node.split(usize::MAX);
        let (_, mut rx) = hub.split(100_000);
        let sealed = tx.seal(&vec![1u8; 300_000]).unwrap();
        let f = frames(&sealed);
        assert_eq!(rx.open(f[0]).unwrap(), None);
        assert_eq!(rx.open(f[1]).unwrap_err(), LinkError::TooLong(100_000));
    }
}
