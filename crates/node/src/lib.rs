//! Tutti's runtime: drives the sans-IO sessions of `tutti-proto` over real UDP sockets and
//! wires them to the audio engine of `tutti-audio`.
//!
//! # Layout
//! - [`net`]: sockets (unicast, multicast), receive loops with deadlines.
//! - [`source`]: a running stream: an encoder thread reading a [`Source`](tutti_audio::source::Source)
//!   and a network thread owning the [`SourceSession`](tutti_proto::SourceSession).
//! - [`player`]: a running player: a network thread owning the session's network half
//!   ([`PlayerSession`](tutti_proto::PlayerSession)), the media thread owning its playout
//!   half ([`Playback`](tutti_proto::Playback)) and rendering through the audio engine, and
//!   the device callback; the halves talk through lock-free rings only.
//! - [`role`]: roles as handles: a [`Player`](role::Player) driven by commands (the hub
//!   link's too) that takes a zone's route by itself, read by snapshots and typed notices.
//! - [`mixer`]: the party host: many live microphones mixed into one output.
//! - [`output`]: where players play (devices, WAV files, null).
//! - [`rtp_in`]: standard RTP (L16) captured as a source's input.
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
pub mod rtp_in;
pub mod security;
pub mod source;

/// Errors of the runtime, each naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A socket could not be opened or used.
    #[error("network: {what}: {source}")]
    Socket {
        /// What was asked of it (an address, a group to join).
        what: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Nothing was heard from a source in time.
    #[error(
        "no stream heard from {addr} within {waited:?}: is the source running, and is the \
         passphrase the same?"
    )]
    Silent {
        /// The source's address.
        addr: std::net::SocketAddr,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// The media thread ended before it opened the output (it panicked).
    #[error("the media thread ended before opening the output")]
    MediaThread,
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
    #[error("{addr}: refused ({reason:?}): {message}")]
    Refused {
        /// The source's address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: tutti_proto::wire::RefuseReason,
        /// The source's words.
        message: String,
    },
    /// No key to join the network with.
    #[error(
        "no network passphrase: pass --passphrase (or set TUTTI_PASSPHRASE), the same on every \
         node; --insecure sends audio unencrypted"
    )]
    NoKey,
    /// A file of this node's (its pairing) could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file of this node's is there but not what it should be.
    #[error("{}: not a Tutti {what} ({reason}); {fix}", path.display())]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// What it should be.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
    /// The stored credential does not decode.
    #[error("the stored credential is damaged: pair again")]
    BadCredential,
    /// No file of a playlist opens.
    #[error("no file of the playlist opens (see the messages above)")]
    EmptyPlaylist,
    /// Opus cannot frame packets of this size.
    #[error("Opus frames are 2.5, 5, 10 or 20 ms at 48 kHz, not {0} frames")]
    OpusFrames(usize),
    /// An RTP copy asked of a stream that is not 16-bit PCM.
    #[error("--rtp sends L16 (16-bit PCM): use --codec pcm16 with it")]
    RtpCodec,
    /// A thread could not be started.
    #[error("a thread could not be started: {0}")]
    Thread(#[source] std::io::Error),
    /// Pairing with a hub failed.
    #[error(transparent)]
    Pair(#[from] PairFailed),
    /// The operating system's random generator failed (keys and nonces need it).
    #[error(transparent)]
    Random(#[from] tutti_os::RandomError),
}

/// Why pairing with a hub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairFailed {
    /// The link's hub address does not resolve.
    #[error("the hub `{0}` resolves to nothing")]
    Unresolved(String),
    /// The hub could not be reached or stopped answering.
    #[error("hub {hub}: {source}")]
    Io {
        /// The hub.
        hub: std::net::SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Something else answers at the hub's address.
    #[error("{0} is not a Tutti hub's node link (no challenge)")]
    NotAHub(std::net::SocketAddr),
    /// The handshake failed (a wrong or altered token, a hub without it).
    #[error(transparent)]
    Handshake(#[from] tutti_proto::pairing::PairError),
    /// The hub said no (a used or expired token).
    #[error("the hub refused: {0}")]
    Refused(String),
    /// The hub closed without an answer.
    #[error("hub {0}: no answer to the pairing")]
    NoAnswer(std::net::SocketAddr),
}
