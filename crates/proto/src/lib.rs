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
//! - [`jitter`]: the jitter buffer keyed by sequence number and media time.
//! - [`source`]: [`SourceSession`], pacing, fan-out, retransmission, FEC.
//! - [`player`]: [`PlayerSession`], jitter buffer, loss recovery, playout scheduling.
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
pub mod jitter;
pub mod link;
pub mod pairing;
pub mod player;
pub mod playout;
pub mod source;
pub mod time;
pub mod wire;

pub use clock::{ClockEstimate, ClockEstimator};
pub use crypto::{Credential, NetworkKey, Security};
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

/// A 128-bit sender id from a caller's random value (never 0). Nodes pass 128 bits of OS
/// randomness; the simulator a seed, spread so that small seeds give unrelated ids.
pub(crate) fn sender_id(random: u128) -> u128 {
    let lo = mix_seed(random as u64);
    let hi = mix_seed((random >> 64) as u64 ^ 0x5DEE_CE66_D1CE_4E5B);
    ((u128::from(hi) << 64) | u128::from(lo)).max(1)
}

/// Spreads the bits of a caller's seed (SplitMix64), so that small or similar seeds still give
/// unrelated sender ids and instance ids.
pub(crate) fn mix_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
