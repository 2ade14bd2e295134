//! The drift controller: turns "where the stream should be at this DAC instant" into "which
//! samples go to the DAC now", smoothly.
//!
//! The audio backend calls [`PlayoutScheduler::schedule`] once per device callback with the
//! local instant its first frame reaches the DAC and the target stream position for that
//! instant. The scheduler keeps its own continuous read position (`cursor`, in fractional
//! media frames) and returns it with a `step`: media frames to advance per output frame, for
//! the resampler. The step is
//!
//! - a **feed-forward** rate: the stream clock's rate against the local clock (the clock
//!   estimate's skew, given by the caller) times the local time per DAC frame, measured from
//!   the callbacks' timestamps over the last couple of seconds (the DAC's crystal error,
//!   whatever its size; a step in those timestamps — the device map re-levelled, the device
//!   jumped after a stall — is taken out of that history, not read as a rate), plus
//! - a **proportional correction** that pulls the cursor onto the target over
//!   `correction_time` (a 20 µs error becomes a ~40 ppm nudge: inaudible),
//!
//! and it jumps (a hard resync, which the audio layer crossfades) only when the error exceeds
//! `resync_threshold`: at start, after an underrun, or when the group latency changes.

use std::collections::VecDeque;

use crate::time::{LocalTime, Nanos};

/// Tunables of the [`PlayoutScheduler`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayoutConfig {
    /// Stream sample rate (media frames per second).
    pub sample_rate: u32,
    /// Media frames per output frame at nominal clocks (1.0 unless the device runs at another
    /// rate than the stream).
    pub nominal_step: f64,
    /// Errors beyond this are fixed by a jump instead of a slew.
    pub resync_threshold: Nanos,
    /// Time constant of the proportional correction, seconds.
    pub correction_time: f64,
    /// Largest correction applied on top of the measured rate, parts per million.
    pub max_correction_ppm: f64,
    /// Span over which the feed-forward rate is measured.
    pub rate_window: Nanos,
}

impl PlayoutConfig {
    /// Defaults for a stream at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        PlayoutConfig {
            sample_rate,
            nominal_step: 1.0,
            resync_threshold: Nanos::from_millis(3),
            correction_time: 0.3,
            max_correction_ppm: 1000.0,
            rate_window: Nanos::from_secs(2),
        }
    }
}

/// What to play for one device callback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Render {
    /// Media position (fractional frame index) of the callback's first output frame.
    pub position: f64,
    /// Media frames to advance per output frame.
    pub step: f64,
    /// The position jumped: the audio layer should crossfade instead of continuing.
    pub resynced: bool,
    /// `cursor − target` before this callback's correction, in media frames.
    pub error_frames: f64,
}

impl Render {
    /// The position just after this callback's `frames` output frames.
    pub fn end(&self, frames: u32) -> f64 {
        self.position + self.step * f64::from(frames)
    }
}

/// Smooth playout position control (see the module docs).
#[derive(Debug)]
pub struct PlayoutScheduler {
    config: PlayoutConfig,
    cursor: Option<f64>,
    dac_frames: u64,
    history: VecDeque<(LocalTime, u64)>,
    /// The previous callback: its DAC instant and frames (where this one should start).
    last: Option<(LocalTime, u32)>,
    resyncs: u64,
}

/// A callback whose DAC instant is this far from where the previous one ended has stepped
/// (its device map moved): the step is a change of level, not of rate. Consecutive
/// callbacks of a drifting DAC differ from the nominal by far less (500 ppm of a 20 ms
/// callback is 10 µs).
pub const DAC_STEP: Nanos = Nanos::from_micros(100);

impl PlayoutScheduler {
    /// A scheduler that has not played yet.
    pub fn new(config: PlayoutConfig) -> Self {
        PlayoutScheduler {
            config,
            cursor: None,
            dac_frames: 0,
            history: VecDeque::with_capacity(256),
            last: None,
            resyncs: 0,
        }
    }

    /// Forgets the position and the measured rate (new stream, device restarted).
    pub fn reset(&mut self) {
        self.cursor = None;
        self.history.clear();
        self.last = None;
        self.dac_frames = 0;
    }

    /// Hard resyncs so far (the first lock included).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// The DAC's measured period: local nanoseconds per output frame.
    pub fn dac_period_ns(&self) -> Option<f64> {
        let (&(t0, f0), &(t1, f1)) = (self.history.front()?, self.history.back()?);
        (t1 - t0 >= Nanos::from_millis(60) && f1 > f0)
            .then(|| (t1 - t0).0 as f64 / (f1 - f0) as f64)
    }

    /// Plans one callback of `frames` output frames whose first frame reaches the DAC at
    /// `dac_time`, when the stream should be at media position `target` at that instant.
    /// `stream_rate` is the stream clock's rate against the local clock (`1 + skew`).
    pub fn schedule(
        &mut self,
        dac_time: LocalTime,
        frames: u32,
        target: f64,
        stream_rate: f64,
    ) -> Render {
        let nominal_period = 1e9 / f64::from(self.config.sample_rate);
        if let Some((last, last_frames)) = self.last {
            let period = self.dac_period_ns().unwrap_or(nominal_period);
            let expected = last + Nanos((period * f64::from(last_frames)).round() as i64);
            let step = dac_time - expected;
            if step.abs() > DAC_STEP {
                // Measured before the step, the history would read it as a rate (a 170 ms
                // jump in a 2 s window is +8 %): move it by the step instead.
                for (t, _) in self.history.iter_mut() {
                    *t += step;
                }
            }
        }
        self.last = Some((dac_time, frames));
        // Measure the DAC's rate against the local clock, sampling every 20 ms.
        if self.history.back().is_none_or(|&(t, _)| dac_time - t >= Nanos::from_millis(20)) {
            self.history.push_back((dac_time, self.dac_frames));
            while self.history.front().is_some_and(|&(t, _)| dac_time - t > self.config.rate_window)
            {
                self.history.pop_front();
            }
        }
        self.dac_frames += u64::from(frames);
        let dac_period = self.dac_period_ns().unwrap_or(nominal_period);
        let ff = self.config.nominal_step * stream_rate * dac_period / nominal_period;
        let threshold =
            self.config.resync_threshold.as_secs_f64() * f64::from(self.config.sample_rate);
        let (cursor, error, resynced) = match self.cursor {
            Some(c) if (c - target).abs() <= threshold => (c, c - target, false),
            Some(c) => {
                self.resyncs += 1;
                (target, c - target, true)
            }
            None => {
                self.resyncs += 1;
                (target, 0.0, true)
            }
        };
        let err_now = cursor - target;
        let gain = 1.0 / (f64::from(self.config.sample_rate) * self.config.correction_time);
        let limit = self.config.max_correction_ppm * 1e-6 * ff;
        let correction = (-err_now * gain).clamp(-limit, limit);
        let step = ff + correction;
        self.cursor = Some(cursor + step * f64::from(frames));
        Render { position: cursor, step, resynced, error_frames: error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DAC at `dac_ppm` against the local clock, playing a target that advances at
    /// `stream_ppm`; returns the error (µs) after each callback.
    fn run(dac_ppm: f64, stream_ppm: f64, seconds: f64, initial_offset_frames: f64) -> Vec<f64> {
        let rate = 48_000.0;
        let mut s = PlayoutScheduler::new(PlayoutConfig::new(48_000));
        let block = 256u32;
        let mut errors = Vec::new();
        let mut dac_frame = 0u64;
        let mut first = true;
        while (dac_frame as f64) < seconds * rate {
            let local_s = dac_frame as f64 / (rate * (1.0 + dac_ppm * 1e-6));
            let target = local_s * rate * (1.0 + stream_ppm * 1e-6) + 1_000.0;
            let target = if first { target + initial_offset_frames } else { target };
            first = false;
            let r = s.schedule(
                LocalTime((local_s * 1e9) as u64 + 1),
                block,
                target,
                1.0 + stream_ppm * 1e-6,
            );
            errors.push((r.position - target) / rate * 1e6);
            dac_frame += u64::from(block);
        }
        errors
    }

    #[test]
    fn locks_onto_fast_dac_and_slow_stream() {
        let errors = run(300.0, -200.0, 120.0, 0.0);
        let tail = &errors[errors.len() / 2..];
        let worst = tail.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(worst < 1.0, "worst steady-state error {worst} µs");
        let overall = errors.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(overall < 50.0, "worst error during lock {overall} µs");
    }

    #[test]
    fn a_jump_of_the_dac_is_one_resync_not_a_rate() {
        // A DAC whose device position jumps 170 ms ahead of its frame count 5 s in (the
        // server played silence while this process was stopped), then steps 1 ms (its map
        // re-levelled) 3 s later.
        let mut s = PlayoutScheduler::new(PlayoutConfig::new(48_000));
        let block = 1_024u32;
        let mut shift = 0.0;
        let mut worst_after = 0.0f64;
        for k in 0..1_000u64 {
            let frame = k * u64::from(block);
            if frame == 5 * 48_000 / 1_024 * 1_024 {
                shift += 0.170;
            }
            if frame == 8 * 48_000 / 1_024 * 1_024 {
                shift += 0.001;
            }
            let local_s = frame as f64 / 48_000.0 + shift;
            let target = local_s * 48_000.0 + 1_000.0;
            let r = s.schedule(LocalTime((local_s * 1e9) as u64 + 1), block, target, 1.0);
            if frame > 48_000 {
                assert!((r.step - 1.0).abs() <= 1e-3 + 1e-9, "block {k}: step {}", r.step);
            }
            if frame > 10 * 48_000 {
                worst_after = worst_after.max((r.position - target).abs() / 0.048);
            }
        }
        // The 170 ms jump resyncs (once); the 1 ms step is slewed away.
        assert_eq!(s.resyncs(), 2);
        assert!(worst_after < 10.0, "error 2 s after the step: {worst_after} µs");
        let period = s.dac_period_ns().expect("a rate");
        assert!((period / (1e9 / 48_000.0) - 1.0).abs() < 1e-6, "rate after the jumps: {period}");
    }

    #[test]
    fn small_errors_slew_large_errors_jump() {
        let mut s = PlayoutScheduler::new(PlayoutConfig::new(48_000));
        let r = s.schedule(LocalTime(0), 480, 100.0, 1.0);
        assert!(r.resynced);
        // 1 ms off: within the threshold, corrected by slewing at the clamp.
        let r = s.schedule(LocalTime(10_000_000), 480, 628.0, 1.0);
        assert!(!r.resynced);
        assert!((r.step - 1.0 - 1e-3).abs() < 1e-9, "clamped to +1000 ppm: {}", r.step);
        // 10 ms off: jump.
        let r = s.schedule(LocalTime(20_000_000), 480, 2000.0, 1.0);
        assert!(r.resynced);
        assert_eq!(r.position, 2000.0);
        assert_eq!(s.resyncs(), 2);
    }
}
