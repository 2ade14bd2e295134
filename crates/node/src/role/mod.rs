//! Roles as handles: each role is started once, then driven by commands (the hub link's
//! too, through its `HubHandler`) and read by views and typed notices.
//!
//! - [`player`]: [`Player`] — takes a zone's route inside (re-joins, or changes the latency
//!   in place), keeps its levels, waits for a silent source.
//! - [`source`]: [`Source`] — a stream or a multitrack's stems: transport, track changes,
//!   cover art.
//!
//! The party host's handle is [`RunningMixer::control`](crate::mixer::RunningMixer::control).

pub mod player;
pub mod source;

pub use player::{Player, PlayerCommand, PlayerControl, PlayerNotice, PlayerView, ROUTE_RETRY};
pub use source::{Source, SourceCommand, SourceControl, SourceNotice, SourceView};
