//! Tutti's deterministic simulator.
//!
//! Runs the real `tutti-proto` source and player sessions over simulated links (delay,
//! jitter, Bernoulli and Gilbert–Elliott loss, duplication, reordering, asymmetric paths),
//! on node clocks with offsets and skews, into fake DACs with their own crystal error — all on
//! virtual time with seeded randomness, so ten minutes of a scenario take seconds and every
//! run with the same seed is identical.
//!
//! # Layout
//! - [`rng`]: the seeded generator.
//! - [`link`]: path models.
//! - [`world`]: the event loop, node clocks, DACs and measurement.
//! - [`metrics`]: the figures of a run.
//! - [`scenarios`]: the named scenarios of the benchmark.
//! - [`room`], [`calibration`]: simulated rooms and the acoustic calibration benchmark.

#![forbid(unsafe_code)]

pub mod calibration;
pub mod link;
pub mod metrics;
pub mod rng;
pub mod room;
pub mod scenarios;
pub mod world;

pub use metrics::Outcome;
pub use world::{Scenario, run};
