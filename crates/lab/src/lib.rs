//! Tutti's speaker-sync instrument (see `docs/instrument.md`): the test signal, a real-time
//! reader that makes a PulseAudio pipe sink play on `CLOCK_MONOTONIC`, and the analysis of a
//! recording where every player's sink is one channel of that sink.

#![forbid(unsafe_code)]

pub mod analyze;
pub mod record;
pub mod signal;
