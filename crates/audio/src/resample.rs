//! The drift resampler: follows a playout plan (`position`, `step`) with sub-frame accuracy,
//! through rubato's polynomial asynchronous resampler.
//!
//! The plan comes from a [`PlayoutScheduler`](tutti_proto::playout::PlayoutScheduler) (drift
//! control lives there: feed-forward of both clocks' rates plus a slow proportional pull).
//! Rubato's read position cannot be set to a fraction of a frame, so after a (re)start the
//! follower sits up to half a frame off the plan; it tracks its own exact position (rubato
//! advances by `1/ratio` input frames per output frame) and nudges its ratio to close that
//! gap within ~0.1 s — a few ppm, inaudible, no sample ever dropped or doubled.

use rubato::{FastFixedOut, PolynomialDegree, Resampler};
use tutti_proto::playout::Render;

use crate::pcm::PcmBuffer;

/// In bit-exact mode, how far (frames) the plan may wander before a whole frame is slipped:
/// 4 frames, 83 µs at 48 kHz.
pub const EXACT_SLIP: f64 = 4.0;

/// Frames per resampler call at least; a block that is a multiple of it is resampled in one
/// call (the follower adopts the first block's size).
pub const CHUNK: usize = 64;
/// Rubato's polynomial resampler starts its index this many frames before its first input
/// frame (half its 8-point polynomial), and advances it by `1/ratio` *before* each output.
const START_INDEX: i64 = 4;

/// What one block cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowStats {
    /// Input frames that were not in the buffer (played as silence).
    pub missing: usize,
    /// The follower restarted at the plan's position.
    pub restarted: bool,
}

/// Follows a plan through rubato (see the module docs).
pub struct DriftFollower {
    channels: usize,
    nominal: f64,
    resampler: Option<FastFixedOut<f32>>,
    chunk: usize,
    cursor: i64,
    /// Absolute media index of rubato's internal index (the output after the next advance).
    index: f64,
    planar_in: Vec<Vec<f32>>,
    planar_out: Vec<Vec<f32>>,
    /// Bit-exact mode: whole frames copied, corrections by whole frames.
    exact: Option<i64>,
    exact_mode: bool,
    /// Exact mode: the plan's distance, smoothed over 0.25 s.
    exact_error: f64,
}

impl core::fmt::Debug for DriftFollower {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DriftFollower").field("index", &self.index).finish_non_exhaustive()
    }
}

impl DriftFollower {
    /// A follower for `channels` channels. `nominal_step` is media frames per output frame at
    /// nominal clocks (stream rate / device rate).
    pub fn new(channels: usize, nominal_step: f64) -> Self {
        let cap = (CHUNK as f64 * nominal_step * 1.2) as usize + 16;
        DriftFollower {
            channels: channels.max(1),
            nominal: nominal_step,
            resampler: None,
            chunk: CHUNK,
            cursor: 0,
            index: 0.0,
            planar_in: (0..channels.max(1)).map(|_| Vec::with_capacity(cap)).collect(),
            planar_out: (0..channels.max(1)).map(|_| vec![0.0; CHUNK]).collect(),
            exact: None,
            exact_mode: false,
            exact_error: 0.0,
        }
    }

    /// Bit-exact mode, for integer PCM streams played where the device clock *is* the local
    /// clock (WAV files, the null device): frames are copied untouched, and the plan is
    /// followed by slipping whole frames when its smoothed distance passes [`EXACT_SLIP`]
    /// frames (at once beyond 1 ms).
    /// Ignored when the device and stream rates differ.
    pub fn set_exact(&mut self, exact: bool) {
        self.exact_mode = exact && self.nominal == 1.0;
    }

    /// The media position of the next output frame at `step`.
    pub fn position(&self, step: f64) -> f64 {
        self.index + step
    }

    /// The next media frame the resampler will read.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    fn restart(&mut self, at: f64, step: f64, pcm: &PcmBuffer, block: usize) -> usize {
        if block >= CHUNK && block.is_multiple_of(CHUNK) {
            self.chunk = block;
        }
        let resampler = FastFixedOut::<f32>::new(
            1.0 / self.nominal,
            1.1,
            PolynomialDegree::Cubic,
            self.chunk,
            self.channels,
        )
        .expect("ratio and chunk are valid");
        for ch in &mut self.planar_out {
            ch.resize(self.chunk, 0.0);
        }
        self.resampler = Some(resampler);
        // Start one chunk early and run it (discarding its output), so the resampler's
        // history holds real audio when the first heard frame comes out.
        let first = (at - step * (self.chunk as f64 + 1.0)).round() as i64;
        self.cursor = first + START_INDEX;
        self.index = first as f64;
        self.process(step, pcm)
    }

    /// Runs one chunk at `step` into `planar_out`; returns input frames that were missing.
    fn process(&mut self, step: f64, pcm: &PcmBuffer) -> usize {
        let resampler = self.resampler.as_mut().expect("started before processing");
        // Stay inside the ±10 % the resampler was built for, whatever the plan asks.
        let step = step.clamp(self.nominal / 1.09, self.nominal * 1.09);
        resampler.set_resample_ratio(1.0 / step, false).expect("clamped within ±10 % of nominal");
        let need = resampler.input_frames_next();
        for ch in &mut self.planar_in {
            ch.clear();
        }
        let missing = pcm.read_planar(self.cursor, need, &mut self.planar_in);
        let (_, produced) = resampler
            .process_into_buffer(&self.planar_in, &mut self.planar_out, None)
            .expect("buffers sized for the resampler");
        self.cursor += need as i64;
        self.index += step * produced as f64;
        missing
    }

    /// Renders `out` (interleaved) following `plan`, reading input from `pcm`.
    pub fn render(&mut self, plan: &Render, pcm: &PcmBuffer, out: &mut [f32]) -> FollowStats {
        let mut stats = FollowStats::default();
        if self.exact_mode {
            let frames = (out.len() / self.channels) as i64;
            // Follow the plan's drift, not its wobble: the distance is smoothed over 0.25 s
            // (clock estimates refine by tens of µs, more on a jittery path), and a whole frame
            // is slipped only when the smoothed distance passes EXACT_SLIP, or at once for a
            // real jump (a resync, or more than 1 ms).
            let pos = match self.exact {
                Some(p) if !plan.resynced => {
                    let err = p as f64 - plan.position;
                    let alpha = (frames as f64 / 12_000.0).min(1.0);
                    self.exact_error += (err - self.exact_error) * alpha;
                    if self.exact_error.abs() < EXACT_SLIP && err.abs() < 48.0 {
                        p
                    } else {
                        stats.restarted = true;
                        self.exact_error = 0.0;
                        plan.position.round() as i64
                    }
                }
                _ => {
                    stats.restarted = true;
                    self.exact_error = 0.0;
                    plan.position.round() as i64
                }
            };
            stats.missing = pcm.read_interleaved(pos, out);
            self.exact = Some(pos + frames);
            self.cursor = pos + frames;
            return stats;
        }
        let frames = out.len() / self.channels;
        if self.resampler.is_none()
            || plan.resynced
            || (self.position(plan.step) - plan.position).abs() > 2.0
        {
            self.restart(plan.position, plan.step, pcm, frames);
            stats.restarted = true;
        }
        let mut done = 0;
        while done < frames {
            let n = self.chunk.min(frames - done);
            let target = plan.position + plan.step * done as f64;
            let error = self.position(plan.step) - target;
            // Close the sub-frame gap over ~0.1 s of output.
            let step = (plan.step - error / 4_800.0).clamp(plan.step * 0.995, plan.step * 1.005);
            stats.missing += self.process(step, pcm);
            for i in 0..n {
                for c in 0..self.channels {
                    out[(done + i) * self.channels + c] = self.planar_out[c][i];
                }
            }
            done += n;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ramp `x[n] = n` makes every output sample equal to the exact input position it was
    /// interpolated at (cubic interpolation is exact on a line).
    fn ramp(len: u64) -> PcmBuffer {
        let mut b = PcmBuffer::new(1, len as usize);
        let v: Vec<f32> = (0..len).map(|n| n as f32).collect();
        b.push(0, &v);
        b
    }

    #[test]
    fn output_lands_exactly_where_the_plan_says() {
        let pcm = ramp(200_000);
        let mut f = DriftFollower::new(1, 1.0);
        let step = 1.0 + 250e-6;
        let mut plan = Render { position: 1000.3, step, resynced: true, error_frames: 0.0 };
        let mut out = vec![0.0f32; 256];
        let mut worst_late: f64 = 0.0;
        for block in 0..400 {
            f.render(&plan, &pcm, &mut out);
            for (k, y) in out.iter().enumerate() {
                let want = plan.position + plan.step * k as f64;
                let err = f64::from(*y) - want;
                if block == 0 && k == 0 {
                    assert!(err.abs() <= 0.5, "a restart lands within half a frame: {err}");
                }
                if block > 50 {
                    worst_late = worst_late.max(err.abs());
                }
            }
            plan.position += plan.step * 256.0;
            plan.resynced = false;
        }
        // f32 holds ~1e5 with 1/128 resolution: that is the test's precision, not the follower's.
        assert!(worst_late < 0.02, "steady-state position error {worst_late} frames");
    }
}

#[cfg(test)]
mod exact_tests {
    use super::*;

    #[test]
    fn exact_mode_copies_frames_and_slips_whole_frames() {
        let mut pcm = PcmBuffer::new(1, 300_000);
        let v: Vec<f32> = (0..300_000).map(|n| n as f32).collect();
        pcm.push(0, &v);
        let mut f = DriftFollower::new(1, 1.0);
        f.set_exact(true);
        // A plan drifting at 200 ppm (a real clock offset the plan follows) with a ±40 µs
        // wobble on top (clock estimate refinements).
        let mut plan =
            Render { position: 100.3, step: 1.0 + 200e-6, resynced: true, error_frames: 0.0 };
        let mut out = vec![0.0f32; 64];
        let mut slips = 0;
        let mut expect = 100.0f32;
        let mut base = plan.position;
        for k in 0..3_000 {
            let wobble = 2.0 * ((k as f64) * 0.37).sin();
            plan.position = base + wobble;
            let s = f.render(&plan, &pcm, &mut out);
            if k > 0 && out[0] != expect {
                slips += 1;
            }
            assert!(out.windows(2).all(|w| w[1] == w[0] + 1.0), "untouched frames within a block");
            assert_eq!(s.missing, 0);
            expect = out[63] + 1.0;
            base += plan.step * 64.0;
            plan.resynced = false;
        }
        // 200 ppm over 192,000 frames is 38 frames of drift: followed by a handful of slips,
        // none caused by the wobble, and still within a few frames of the plan at the end.
        assert!((4..=15).contains(&slips), "{slips} slips");
        assert!((f64::from(out[63]) + 1.0 - base).abs() < 8.0);
    }
}
