//! Tutti's sans-IO sync core.
//!
//! This crate holds everything that decides *when* a sample plays and *what* goes on the wire,
//! and nothing that touches a socket, a clock, a thread or a sound card. Time and randomness
//! come in as arguments, so the same objects run in the simulator (`tutti-sim`) on virtual
//! time and in the real node on the monotonic clock.
//!
//! # Layout
//! - [`time`]: units ([`LocalTime`], [`StreamTime`], [`MediaTime`], [`SeqNo`], [`Nanos`]).
//! - [`wire`]: the datagram format (preamble + rkyv bodies), decode with validation.
//! - [`crypto`]: network keys, the XChaCha20-Poly1305 envelope, replay windows.
//! - [`link`]: the node link's mutually authenticated, encrypted channel (Noise `NNpsk0`).
//! - [`pairing`]: one-time tokens turned into node credentials (Noise `NNpsk0`).
//! - [`clock`]: the clock estimator (offset *and* skew from 4-timestamp probes).
//! - [`fec`]: Reed–Solomon repair shards over blocks of audio packets.
//! - [`format`](mod@format): [`StreamFormat`], a stream's rate, channels, codec and packet size.
//! - [`jitter`]: the jitter buffer keyed by sequence number and media time.
//! - [`source`]: [`SourceSession`], pacing, fan-out, retransmission, FEC.
//! - [`player`]: [`PlayerSession`], a player's network half: joining, clock, jitter
//!   buffer, loss recovery; [`player::Timing`] (which frame plays when).
//! - [`playback`]: [`Playback`], a player's playout half, and the lock-free rings between
//!   the two; [`playback::Coupled`] runs both on one thread.
//! - [`playout`]: the drift controller that turns "where the stream should be" into
//!   "which samples go to the DAC now".
//!
//! # Driving a session
//! Sessions follow one loop (as in quinn-proto and str0m): feed inputs with `handle_*`
//! (a datagram and its arrival time, a timeout), then drain `poll_transmit` until it returns
//! `None`, and sleep until `poll_timeout`. Nothing happens between calls.

#![forbid(unsafe_code)]

pub mod clock;
pub mod control;
pub mod crypto;
pub mod fec;
pub mod format;
pub mod jitter;
pub mod link;
pub mod pairing;
pub mod playback;
pub mod player;
pub mod playout;
pub mod rtp;
pub mod source;
pub mod time;
pub mod wire;

pub use clock::{ClockEstimate, ClockEstimator};
pub use crypto::{Credential, NetworkKey, Security};
pub use format::StreamFormat;
pub use playback::Playback;
pub use player::{PlayerConfig, PlayerSession};
pub use source::{SourceConfig, SourceSession};
pub use time::{LocalTime, MediaTime, Nanos, SeqNo, StreamTime};
pub use wire::{Codec, Mode, Packet};

use std::net::SocketAddr;

/// Where a datagram produced by `poll_transmit` must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// One peer.
    To(SocketAddr),
    /// Every receiver of the stream: each unicast receiver and the multicast group, as listed
    /// by the session's `fanout()`.
    Fanout,
}

/// A datagram ready to send: the first `len` bytes of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: Destination,
    /// Bytes written into the buffer.
    pub len: usize,
}

/// A 128-bit value derived one-way from a caller's random value (nodes pass 128 bits of OS
/// randomness, the simulator a seed) for `purpose`: the public sender id and a source's secret
/// cookie key come from one draw, and knowing the first says nothing of the second.
pub(crate) fn derive(random: u128, purpose: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new().chain_update(purpose).chain_update(random.to_le_bytes()).finalize().into()
}

/// A 128-bit sender id (never 0) from a caller's random value (see [`derive`]).
pub(crate) fn sender_id(random: u128) -> u128 {
    let d = derive(random, b"tutti sender id");
    u128::from_le_bytes(d[..16].try_into().expect("16 of 32 bytes")).max(1)
}
