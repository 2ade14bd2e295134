//! Clock synchronisation: estimates the stream clock from this node's local clock.
//!
//! A player sends probes stamped `t1` (local); the source stamps arrival `t2` and departure
//! `t3` (stream clock); the reply arrives at `t4` (local). Model: `stream(t) = t + θ(t)` with
//! `θ(t) = θ₀ + skew · (t − ref)`. Every probe gives two one-way observations:
//!
//! - forward  `t2 − t1 = θ(t1) + d→`  (d→ ≥ 0: the request's network delay)
//! - backward `t3 − t4 = θ(t4) − d←`  (d← ≥ 0: the reply's network delay)
//!
//! Queueing only ever *adds* delay, so the forward points lie on or above the line
//! `θ(t) + D→` and the backward points on or below `θ(t) − D←`, where `D` are the paths' base
//! delays. The estimator fits each envelope separately with a support line of the points'
//! convex hull (after the linear-programming fit of Moon, Skelly and Towsley, with the slope
//! averaged over the middle of the window for stability), and averages the two lines: offset *and* skew, with no lag on a
//! drifting clock (a median of offsets lags by half its window), and using the *least delayed*
//! packet of each direction independently (a min-RTT filter needs both directions lucky in the
//! same probe). Assuming `D→ = D←` is the physical limit of any two-way method: an asymmetric
//! path biases the offset by half the asymmetry, and nothing on the wire can reveal it.
//!
//! The uncertainty reported is half the gap between the two envelopes: the true offset lies
//! within ± that bound whatever the asymmetry (if clocks drift linearly over the window).

use std::collections::VecDeque;

use crate::time::{LocalTime, Nanos, StreamTime};

/// One completed probe: the four timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// Probe sent (local clock).
    pub t1: LocalTime,
    /// Probe received by the source (stream clock).
    pub t2: StreamTime,
    /// Reply sent by the source (stream clock).
    pub t3: StreamTime,
    /// Reply received (local clock).
    pub t4: LocalTime,
}

impl ClockSample {
    /// Round-trip network delay (excluding the source's turnaround).
    pub fn rtt(&self) -> Nanos {
        (self.t4 - self.t1) - (self.t3 - self.t2)
    }
    /// The classic NTP offset estimate of this sample alone (stream − local).
    pub fn offset(&self) -> Nanos {
        Nanos((self.t2.offset_from(self.t1).0 / 2).saturating_add(self.t3.offset_from(self.t4).0 / 2))
    }
}

/// The current mapping between local time and stream time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockEstimate {
    /// Local instant the offset refers to.
    pub reference: LocalTime,
    /// `stream − local` at `reference`, in nanoseconds.
    pub offset: Nanos,
    /// Rate of the stream clock relative to the local clock, minus one (e.g. `1e-6` when the
    /// stream clock runs 1 ppm fast).
    pub skew: f64,
    /// Half the gap between the delay envelopes at `reference`: a hard bound on the offset error.
    pub uncertainty: Nanos,
    /// Smallest round trip in the window.
    pub min_rtt: Nanos,
    /// Samples in the window.
    pub samples: usize,
    /// Time covered by the window.
    pub span: Nanos,
}

impl ClockEstimate {
    /// Maps a local instant to the stream clock.
    pub fn to_stream(&self, t: LocalTime) -> StreamTime {
        let dt = (t - self.reference).0 as f64;
        StreamTime(t.0) + self.offset + Nanos((self.skew * dt).round() as i64)
    }

    /// Maps a stream instant to the local clock.
    pub fn to_local(&self, s: StreamTime) -> LocalTime {
        // s = ref + off + (t − ref)(1 + skew)  ⇒  t = ref + (s − ref − off) / (1 + skew)
        let rel = (s - (StreamTime(self.reference.0) + self.offset)).0 as f64;
        self.reference + Nanos((rel / (1.0 + self.skew)).round() as i64)
    }

    /// Skew in parts per million.
    pub fn skew_ppm(&self) -> f64 {
        self.skew * 1e6
    }
}

/// Tunables of the [`ClockEstimator`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockConfig {
    /// Samples older than this (relative to the newest) are forgotten.
    pub window: Nanos,
    /// At most this many samples are kept.
    pub max_samples: usize,
    /// Skew estimates beyond this magnitude are clamped (real oscillators stay within ±500 ppm).
    pub max_skew: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { window: Nanos::from_secs(60), max_samples: 1024, max_skew: 2000e-6 }
    }
}

/// Estimates offset and skew of the stream clock from probe samples (see the module docs).
#[derive(Debug)]
pub struct ClockEstimator {
    config: ClockConfig,
    samples: VecDeque<ClockSample>,
    estimate: Option<ClockEstimate>,
    forward: Vec<(f64, f64)>,
    backward: Vec<(f64, f64)>,
    hull: Vec<(f64, f64)>,
    rejected: u64,
}

impl ClockEstimator {
    /// A new estimator with no samples.
    pub fn new(config: ClockConfig) -> Self {
        ClockEstimator {
            config,
            samples: VecDeque::with_capacity(config.max_samples),
            estimate: None,
            forward: Vec::with_capacity(config.max_samples),
            backward: Vec::with_capacity(config.max_samples),
            hull: Vec::with_capacity(config.max_samples),
            rejected: 0,
        }
    }

    /// Forgets every sample (the source changed).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.estimate = None;
    }

    /// The current estimate, once at least one sample arrived.
    pub fn estimate(&self) -> Option<&ClockEstimate> {
        self.estimate.as_ref()
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No samples yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples refused as inconsistent (negative round trip or turnaround).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Adds a sample and updates the estimate. Returns `false` (and ignores it) when the
    /// sample is physically impossible.
    pub fn add(&mut self, s: ClockSample) -> bool {
        if s.t4 < s.t1 || s.t3 < s.t2 || s.rtt() < Nanos::ZERO {
            self.rejected += 1;
            return false;
        }
        let newest = self.samples.iter().map(|x| x.t4).max().unwrap_or(s.t4).max(s.t4);
        self.samples.push_back(s);
        while self.samples.len() > self.config.max_samples
            || self.samples.front().is_some_and(|o| newest - o.t4 > self.config.window)
        {
            self.samples.pop_front();
        }
        self.recompute(newest);
        true
    }

    fn recompute(&mut self, newest: LocalTime) {
        let first = *self.samples.front().expect("recompute runs after a push");
        let x0 = first.t1;
        let y0 = first.offset();
        let prior = self.estimate.map_or(0.0, |e| e.skew);
        self.forward.clear();
        self.backward.clear();
        let mut min_rtt = Nanos::MAX;
        let mut oldest = newest;
        for s in &self.samples {
            self.forward.push(((s.t1 - x0).0 as f64, (s.t2.offset_from(s.t1) - y0).0 as f64));
            self.backward.push(((s.t4 - x0).0 as f64, (s.t3.offset_from(s.t4) - y0).0 as f64));
            min_rtt = min_rtt.min(s.rtt());
            oldest = if s.t1 < oldest { s.t1 } else { oldest };
        }
        let (af, bf) = support_line(&mut self.forward, &mut self.hull, false, prior);
        let (ab, bb) = support_line(&mut self.backward, &mut self.hull, true, prior);
        let skew = ((bf + bb) / 2.0).clamp(-self.config.max_skew, self.config.max_skew);
        let xr = (newest - x0).0 as f64;
        let lower = af + bf * xr;
        let upper = ab + bb * xr;
        let theta = (lower + upper) / 2.0;
        self.estimate = Some(ClockEstimate {
            reference: newest,
            offset: y0 + Nanos(theta.round() as i64),
            skew,
            uncertainty: Nanos(((lower - upper) / 2.0).max(0.0).round() as i64),
            min_rtt,
            samples: self.samples.len(),
            span: newest - oldest,
        });
    }
}

/// A support line `y = a + b·x` of the points' lower (or, with `upper`, upper) convex hull:
/// every point lies on its side. Its slope is the hull's mean slope over the middle half of
/// the window's time span, which is far steadier than the slope of any single hull edge.
fn support_line(
    points: &mut [(f64, f64)],
    hull: &mut Vec<(f64, f64)>,
    upper: bool,
    prior_slope: f64,
) -> (f64, f64) {
    if upper {
        for p in points.iter_mut() {
            p.1 = -p.1;
        }
    }
    points.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    // Spans shorter than this give a meaningless slope from timestamp noise.
    const MIN_SPAN_NS: f64 = 20e6;
    let sign = if upper { -1.0 } else { 1.0 };
    let prior = prior_slope * sign;
    hull.clear();
    for &p in points.iter() {
        while hull.len() >= 2 {
            let (o, a) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let cross = (a.0 - o.0) * (p.1 - o.1) - (a.1 - o.1) * (p.0 - o.0);
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        // Equal x: the lower point (sorted first) already dominates.
        if hull.last().is_some_and(|l| l.0 == p.0) {
            continue;
        }
        hull.push(p);
    }
    let n = hull.len();
    let (a, b) = if n == 0 {
        (0.0, prior)
    } else if n == 1 || hull[n - 1].0 - hull[0].0 < MIN_SPAN_NS {
        (hull.iter().map(|p| p.1 - prior * p.0).fold(f64::INFINITY, f64::min), prior)
    } else {
        // Slope: the hull's mean slope over the middle half of the window (a chord, far more
        // stable than any single edge); then the support line of that slope (it touches the
        // hull at one vertex, so every point stays on its side).
        let quarter = (hull[n - 1].0 - hull[0].0) / 4.0;
        let (lo, hi) = (hull[0].0 + quarter, hull[n - 1].0 - quarter);
        let b = (hull_at(hull, hi) - hull_at(hull, lo)) / (hi - lo);
        let a = hull.iter().map(|p| p.1 - b * p.0).fold(f64::INFINITY, f64::min);
        (a, b)
    };
    (a * sign, b * sign)
}

/// The lower hull's value at `x` (piecewise linear between vertices; `x` within its span).
fn hull_at(hull: &[(f64, f64)], x: f64) -> f64 {
    let i = hull.windows(2).position(|w| w[1].0 >= x).unwrap_or(hull.len() - 2);
    let (p, q) = (hull[i], hull[i + 1]);
    p.1 + (q.1 - p.1) * (x - p.0) / (q.0 - p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic toy: local clock = true time; stream = true·(1+skew) + offset.
    fn sample(true_t: f64, offset: f64, skew: f64, d_fwd: f64, d_back: f64, turn: f64) -> ClockSample {
        let stream = |t: f64| StreamTime((t * (1.0 + skew) + offset).round() as u64);
        ClockSample {
            t1: LocalTime(true_t.round() as u64),
            t2: stream(true_t + d_fwd),
            t3: stream(true_t + d_fwd + turn),
            t4: LocalTime((true_t + d_fwd + turn + d_back).round() as u64),
        }
    }

    fn lcg(state: &mut u64) -> f64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    fn true_offset(t: f64, offset: f64, skew: f64) -> f64 {
        t * skew + offset
    }

    #[test]
    fn exact_with_symmetric_constant_delay() {
        let mut est = ClockEstimator::new(ClockConfig::default());
        let (off, skew) = (7.3e9, 120e-6);
        for i in 0..50 {
            est.add(sample(1e9 + i as f64 * 1e8, off, skew, 2e5, 2e5, 1e4));
        }
        let e = est.estimate().unwrap();
        let t = e.reference.0 as f64;
        let err = e.offset.0 as f64 - true_offset(t, off, skew);
        assert!(err.abs() < 50.0, "offset error {err} ns");
        assert!((e.skew - skew).abs() < 1e-8, "skew {} vs {}", e.skew, skew);
    }

    #[test]
    fn tracks_drifting_clock_through_heavy_one_sided_jitter() {
        // Exponential queueing delay of mean 10 ms each way, 500 ppm drift: the median of
        // offsets would be off by milliseconds; the envelopes are off by microseconds.
        let mut est = ClockEstimator::new(ClockConfig::default());
        let (off, skew) = (-3.2e9, -500e-6);
        let mut rng = 42u64;
        let mut worst: f64 = 0.0;
        for i in 0..3000 {
            let t = 5e9 + i as f64 * 1e8;
            let df = 2e6 - 1e7 * (1.0 - lcg(&mut rng)).ln();
            let db = 2e6 - 1e7 * (1.0 - lcg(&mut rng)).ln();
            est.add(sample(t, off, skew, df, db, 5e4));
            if i >= 300 {
                let e = est.estimate().unwrap();
                let now = e.reference.0 as f64 + 3e7;
                let got = e.to_stream(LocalTime(now as u64)).0 as f64 - now;
                let err = (got - true_offset(now, off, skew)).abs();
                worst = worst.max(err);
            }
        }
        assert!(worst < 250_000.0, "worst error {worst} ns");
        let e = est.estimate().unwrap();
        assert!((e.skew - skew).abs() < 2e-6, "skew {}", e.skew_ppm());
    }

    #[test]
    fn asymmetric_path_biases_by_half_the_asymmetry_within_the_bound() {
        let mut est = ClockEstimator::new(ClockConfig::default());
        for i in 0..100 {
            est.add(sample(1e9 + i as f64 * 1e8, 0.0, 0.0, 5.2e6, 2e5, 0.0));
        }
        let e = est.estimate().unwrap();
        // Forward path 5 ms longer: the estimate is 2.5 ms off, and says so in its bound.
        assert!((e.offset.0 as f64 - 2.5e6).abs() < 10.0, "{:?}", e.offset);
        assert!(e.uncertainty.0 as f64 >= 2.5e6);
    }

    #[test]
    fn mapping_round_trips() {
        let e = ClockEstimate {
            reference: LocalTime(10_000_000_000),
            offset: Nanos(-4_000_000_000),
            skew: 350e-6,
            uncertainty: Nanos(0),
            min_rtt: Nanos(0),
            samples: 1,
            span: Nanos(0),
        };
        for t in [5_000_000_000u64, 9_999_999_999, 10_000_000_000, 70_000_000_000] {
            let back = e.to_local(e.to_stream(LocalTime(t)));
            assert!((back - LocalTime(t)).abs() <= Nanos(1), "{t}");
        }
    }

    #[test]
    fn rejects_impossible_samples() {
        let mut est = ClockEstimator::new(ClockConfig::default());
        let bad = ClockSample { t1: LocalTime(10), t2: StreamTime(100), t3: StreamTime(50), t4: LocalTime(20) };
        assert!(!est.add(bad));
        assert_eq!(est.rejected(), 1);
        assert!(est.estimate().is_none());
    }

    #[test]
    fn window_forgets_old_samples() {
        let cfg = ClockConfig { window: Nanos::from_secs(10), ..ClockConfig::default() };
        let mut est = ClockEstimator::new(cfg);
        for i in 0..100 {
            est.add(sample(1e9 + i as f64 * 1e9, 0.0, 0.0, 1e5, 1e5, 0.0));
        }
        assert_eq!(est.len(), 11);
    }
}
