//! Tutti's audio edge.
#![forbid(unsafe_code)]

pub mod clock;
pub mod format;
pub mod pcm;
pub mod ramp;
pub mod resample;
