//! Tutti's runtime: drives the sans-IO sessions of `tutti-proto` over real UDP sockets and
//! wires them to the audio engine of `tutti-audio`.
//!
//! # Layout
//! - [`net`]: sockets (unicast, multicast), receive loops with deadlines.
//! - [`source`]: a running stream: an encoder thread reading a [`Source`](tutti_audio::source::Source)
//!   and a network thread owning the [`SourceSession`](tutti_proto::SourceSession).
//! - [`player`]: a running player: a network thread owning the
//!   [`PlayerSession`](tutti_proto::PlayerSession) (shared with the media thread), the media
//!   thread rendering through the audio engine, and the device callback.
//! - [`role`]: roles as handles: a [`Player`](role::Player) driven by commands (the hub
//!   link's too) that takes a zone's route by itself, read by snapshots and typed notices.
//! - [`mixer`]: the party host: many live microphones mixed into one output.
//! - [`output`]: where players play (devices, WAV files, null).
//! - [`security`]: keys from passphrases.
//!
//! Threads, not async: each session has one network thread blocking on its socket with a
//! deadline, which is simpler, and as fast, for a handful of sockets per process.

#![forbid(unsafe_code)]

pub mod discovery;
pub mod hub;
pub mod mixer;
pub mod net;
pub mod output;
pub mod player;
pub mod role;
pub mod security;
pub mod source;

/// Errors of the runtime, each naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A socket could not be opened or used.
    #[error("network: {0}")]
    Net(String),
    /// The audio side failed.
    #[error(transparent)]
    Audio(#[from] tutti_audio::AudioError),
    /// A configuration value cannot work.
    #[error(transparent)]
    Config(#[from] tutti_proto::source::ConfigError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] tutti_proto::crypto::KeyError),
    /// The source refused this player.
    #[error("{0}")]
    Refused(String),
    /// The operating system's random generator failed (keys and nonces need it).
    #[error(transparent)]
    Random(#[from] tutti_os::RandomError),
}
