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
//! delays. The estimator finds the skew from the slope of the points' convex hulls (after the
//! linear-programming fit of Moon, Skelly and Towsley, with the slope averaged over the middle
//! of the window for stability), lays a support line of that slope under the forward points
//! and over the backward points, and takes the offset midway between the two lines: offset *and* skew, with no lag on a
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
        Nanos(
            (self.t2.offset_from(self.t1).0 / 2).saturating_add(self.t3.offset_from(self.t4).0 / 2),
        )
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
///
/// Besides full probes, any packet stamped with its departure time on the stream clock (every
/// audio packet is) is a *backward* observation: [`add_oneway`](Self::add_oneway) feeds it.
/// A stream sends hundreds per second, so the backward envelope is found far more precisely
/// than probes alone allow.
#[derive(Debug)]
pub struct ClockEstimator {
    config: ClockConfig,
    /// `(t1, t2 − t1)` of each probe, sorted by `t1`.
    forward: VecDeque<(LocalTime, Nanos)>,
    /// `(t4, t3 − t4)`: probe replies and one-way packets, sorted by `t4`, the best of each
    /// [`ONEWAY_BIN`] kept.
    backward: VecDeque<(LocalTime, Nanos)>,
    /// `(t4, round trip)` of each probe.
    rtts: VecDeque<(LocalTime, Nanos)>,
    newest: LocalTime,
    estimate: Option<ClockEstimate>,
    fwd_points: Vec<(f64, f64)>,
    back_points: Vec<(f64, f64)>,
    hull: Vec<(f64, f64)>,
    rejected: u64,
    /// The hulls' slope, when it was found and the points it was found from.
    slope: Option<(f64, LocalTime)>,
    /// Points added since.
    fresh: usize,
}

/// The hulls' slope (the skew) is found again once this share of the window's points is new,
/// or [`SLOPE_EVERY`] after it last was; the support lines (the offset) at every probe. The
/// slope of a minute of points moves little with a second more; finding it costs a pass over
/// all of them (12,000 one-way points), which at every probe was a third of a player's CPU.
pub const SLOPE_FRESH_SHARE: usize = 16;
/// See [`SLOPE_FRESH_SHARE`].
pub const SLOPE_EVERY: Nanos = Nanos::from_secs(1);

/// One-way observations closer together than this share one slot (the least delayed wins).
pub const ONEWAY_BIN: Nanos = Nanos::from_millis(5);

fn insert_sorted(q: &mut VecDeque<(LocalTime, Nanos)>, item: (LocalTime, Nanos)) {
    let i = q.iter().rposition(|x| x.0 <= item.0).map_or(0, |i| i + 1);
    q.insert(i, item);
}

impl ClockEstimator {
    /// A new estimator with no samples.
    pub fn new(config: ClockConfig) -> Self {
        ClockEstimator {
            config,
            forward: VecDeque::with_capacity(config.max_samples),
            backward: VecDeque::new(),
            rtts: VecDeque::with_capacity(config.max_samples),
            newest: LocalTime(0),
            estimate: None,
            fwd_points: Vec::new(),
            back_points: Vec::new(),
            hull: Vec::new(),
            rejected: 0,
            slope: None,
            fresh: 0,
        }
    }

    /// Forgets every sample (the source changed).
    pub fn reset(&mut self) {
        self.forward.clear();
        self.backward.clear();
        self.rtts.clear();
        self.estimate = None;
        self.slope = None;
        self.fresh = 0;
    }

    /// The current estimate, once at least one probe came back.
    pub fn estimate(&self) -> Option<&ClockEstimate> {
        self.estimate.as_ref()
    }

    /// Probes in the window.
    pub fn len(&self) -> usize {
        self.rtts.len()
    }

    /// No probes yet.
    pub fn is_empty(&self) -> bool {
        self.rtts.is_empty()
    }

    /// Samples refused as inconsistent (negative round trip or turnaround).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Adds a probe and updates the estimate. Returns `false` (and ignores it) when the
    /// sample is physically impossible.
    pub fn add(&mut self, s: ClockSample) -> bool {
        if s.t4 < s.t1 || s.t3 < s.t2 || s.rtt() < Nanos::ZERO {
            self.rejected += 1;
            return false;
        }
        insert_sorted(&mut self.forward, (s.t1, s.t2.offset_from(s.t1)));
        self.push_backward(s.t4, s.t3.offset_from(s.t4));
        insert_sorted(&mut self.rtts, (s.t4, s.rtt()));
        self.trim();
        self.recompute();
        true
    }

    /// Adds a one-way observation: a packet left the source at `sent` (stream clock) and
    /// arrived at `arrived` (local clock). Takes effect at the next probe.
    pub fn add_oneway(&mut self, sent: StreamTime, arrived: LocalTime) {
        if self.forward.is_empty() {
            return;
        }
        self.push_backward(arrived, sent.offset_from(arrived));
        self.trim();
    }

    fn push_backward(&mut self, t4: LocalTime, y: Nanos) {
        self.newest = self.newest.max(t4);
        self.fresh += 1;
        let bin = |t: LocalTime| t.0 / ONEWAY_BIN.0 as u64;
        match self.backward.back_mut() {
            Some(last) if bin(last.0) == bin(t4) => {
                if y > last.1 {
                    *last = (t4, y);
                }
            }
            Some(last) if last.0 > t4 => insert_sorted(&mut self.backward, (t4, y)),
            _ => self.backward.push_back((t4, y)),
        }
    }

    fn trim(&mut self) {
        let (newest, window) = (self.newest, self.config.window);
        let max = self.config.max_samples;
        for q in [&mut self.forward, &mut self.rtts] {
            while q.len() > max || q.front().is_some_and(|o| newest - o.0 > window) {
                q.pop_front();
            }
        }
        while self.backward.front().is_some_and(|o| newest - o.0 > window) {
            self.backward.pop_front();
        }
    }

    fn recompute(&mut self) {
        let Some(&(x0, y0)) = self.forward.front() else { return };
        let prior = self.estimate.map_or(0.0, |e| e.skew);
        let rel = |&(x, y): &(LocalTime, Nanos)| ((x - x0).0 as f64, (y - y0).0 as f64);
        let points = self.forward.len() + self.backward.len();
        let skew = match self.slope {
            Some((skew, at))
                if self.fresh * SLOPE_FRESH_SHARE < points && self.newest - at < SLOPE_EVERY =>
            {
                skew
            }
            _ => {
                self.fwd_points.clear();
                self.fwd_points.extend(self.forward.iter().map(rel));
                self.back_points.clear();
                self.back_points.extend(self.backward.iter().map(rel));
                let bf = hull_slope(&mut self.fwd_points, &mut self.hull, false);
                let bb = hull_slope(&mut self.back_points, &mut self.hull, true);
                // One slope for both envelopes, weighting each hull's slope by its precision:
                // an envelope's distance from the true line falls as 1/n with n points, so its
                // weight is n². One-way packets make the backward envelope far denser than the
                // probes' forward one.
                let skew = match (bf, bb) {
                    (Some(f), Some(b)) => {
                        let wf = (self.fwd_points.len() as f64).powi(2);
                        let wb = (self.back_points.len() as f64).powi(2);
                        (wf * f + wb * b) / (wf + wb)
                    }
                    (Some(x), None) | (None, Some(x)) => x,
                    (None, None) => prior,
                }
                .clamp(-self.config.max_skew, self.config.max_skew);
                self.slope = Some((skew, self.newest));
                self.fresh = 0;
                skew
            }
        };
        let af = support_intercept(self.forward.iter().map(rel), skew, false);
        let ab = support_intercept(self.backward.iter().map(rel), skew, true);
        let newest = self.newest;
        let xr = (newest - x0).0 as f64;
        let lower = af + skew * xr;
        let upper = ab + skew * xr;
        let theta = (lower + upper) / 2.0;
        let oldest = self.rtts.front().map_or(newest, |r| r.0);
        self.estimate = Some(ClockEstimate {
            reference: newest,
            offset: y0 + Nanos(theta.round() as i64),
            skew,
            uncertainty: Nanos(((lower - upper) / 2.0).max(0.0).round() as i64),
            min_rtt: self.rtts.iter().map(|r| r.1).min().unwrap_or(Nanos::ZERO),
            samples: self.rtts.len(),
            span: newest - oldest,
        });
    }
}

/// The slope of the points' lower (or, with `upper`, upper) convex hull, averaged over the
/// middle half of the window's time span: far steadier than the slope of any single hull edge.
/// `None` when the points span too little time for a meaningful slope.
fn hull_slope(points: &mut [(f64, f64)], hull: &mut Vec<(f64, f64)>, upper: bool) -> Option<f64> {
    // Spans shorter than this give a meaningless slope from timestamp noise.
    const MIN_SPAN_NS: f64 = 20e6;
    let sign = if upper { -1.0 } else { 1.0 };
    // The estimator's points come in time order (one per instant): sorting them again cost
    // more than the hull itself.
    if !points.is_sorted_by(|a, b| a.0 < b.0) {
        points.sort_unstable_by(|a, b| {
            a.0.total_cmp(&b.0).then((sign * a.1).total_cmp(&(sign * b.1)))
        });
    }
    hull.clear();
    for &(x, y) in points.iter() {
        let p = (x, sign * y);
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
    if n < 2 || hull[n - 1].0 - hull[0].0 < MIN_SPAN_NS {
        return None;
    }
    let quarter = (hull[n - 1].0 - hull[0].0) / 4.0;
    let (lo, hi) = (hull[0].0 + quarter, hull[n - 1].0 - quarter);
    Some(sign * (hull_at(hull, hi) - hull_at(hull, lo)) / (hi - lo))
}

/// The intercept of the support line of slope `b` below (or, with `upper`, above) every point.
fn support_intercept(points: impl Iterator<Item = (f64, f64)>, b: f64, upper: bool) -> f64 {
    let it = points.map(|p| p.1 - b * p.0);
    if upper { it.fold(f64::NEG_INFINITY, f64::max) } else { it.fold(f64::INFINITY, f64::min) }
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
    fn sample(
        true_t: f64,
        offset: f64,
        skew: f64,
        d_fwd: f64,
        d_back: f64,
        turn: f64,
    ) -> ClockSample {
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
        let bad = ClockSample {
            t1: LocalTime(10),
            t2: StreamTime(100),
            t3: StreamTime(50),
            t4: LocalTime(20),
        };
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

    #[test]
    fn one_way_packets_sharpen_the_backward_envelope() {
        // Probes alone every 100 ms over heavy jitter, versus the same plus one-way packets
        // every 5 ms: the one-way stream finds the backward minimum far better.
        let (off, skew) = (1.5e9, 80e-6);
        let mut rng = 9u64;
        let mut errs = [0.0f64; 2];
        for (k, with_oneway) in [false, true].into_iter().enumerate() {
            let mut est = ClockEstimator::new(ClockConfig::default());
            for i in 0..600 {
                let t = 5e9 + i as f64 * 1e8;
                let df = 1e6 - 5e6 * (1.0 - lcg(&mut rng)).ln();
                let db = 1e6 - 5e6 * (1.0 - lcg(&mut rng)).ln();
                est.add(sample(t, off, skew, df, db, 0.0));
                if with_oneway {
                    for j in 1..20 {
                        let sent = t + j as f64 * 5e6;
                        let d = 1e6 - 5e6 * (1.0 - lcg(&mut rng)).ln();
                        let stream = StreamTime((sent * (1.0 + skew) + off).round() as u64);
                        est.add_oneway(stream, LocalTime((sent + d).round() as u64));
                    }
                }
            }
            let e = est.estimate().unwrap();
            let t = e.reference.0 as f64;
            errs[k] = (e.offset.0 as f64 - true_offset(t, off, skew)).abs();
        }
        eprintln!("ERRS {errs:?}");
        assert!(errs[1] < 20_000.0, "with one-way packets: {} ns", errs[1]);
    }
}
