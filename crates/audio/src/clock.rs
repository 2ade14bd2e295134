//! The local clock: `CLOCK_MONOTONIC` in nanoseconds, as [`LocalTime`].
//!
//! Every process on a machine reads the same monotonic clock, so instants recorded by
//! different processes (a WAV file's first sample, a packet's arrival) line up directly; the
//! clock is also shared across network namespaces. Reading it is a vDSO call: safe in the
//! real-time callback.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};
use tutti_proto::{LocalTime, Nanos};

/// Now, on the local monotonic clock.
pub fn now() -> LocalTime {
    let t = clock_gettime(ClockId::Monotonic);
    LocalTime(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// A pair of readings taken together, to convert between [`Instant`] and [`LocalTime`].
fn anchor() -> (Instant, LocalTime) {
    static ANCHOR: OnceLock<(Instant, LocalTime)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        // Take the tightest of a few bracketed readings.
        let mut best = (Duration::MAX, Instant::now(), now());
        for _ in 0..8 {
            let a = Instant::now();
            let l = now();
            let b = Instant::now();
            if b - a < best.0 {
                best = (b - a, a + (b - a) / 2, l);
            }
        }
        (best.1, best.2)
    })
}

/// An [`Instant`] on the local clock.
pub fn to_local(t: Instant) -> LocalTime {
    let (i, l) = anchor();
    if t >= i { l + Nanos::from(t - i) } else { l - Nanos::from(i - t) }
}

/// A local instant as an [`Instant`] (for sleeping until it).
pub fn to_instant(t: LocalTime) -> Instant {
    let (i, l) = anchor();
    let d = t - l;
    if d >= Nanos::ZERO {
        i + d.to_duration()
    } else {
        i.checked_sub((-d).to_duration()).unwrap_or(i)
    }
}

/// Sleeps until local instant `t` (returns at once if it has passed).
pub fn sleep_until(t: LocalTime) {
    let d = t - now();
    if d > Nanos::ZERO {
        std::thread::sleep(d.to_duration());
    }
}

/// Asks the scheduler to prefer the calling thread (nice `nice`, e.g. −10): the threads that
/// must wake on time to keep a device fed. Needs CAP_SYS_NICE (root, or a PAM limit);
/// without it nothing changes and `false` says so.
pub fn prefer_current_thread(nice: i32) -> bool {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice).is_ok()
}

/// A device's sample clock seen from the local clock: which local instant device frame `f`
/// is at, from the timestamps its callbacks report.
///
/// One point per 50 ms bin (the mean of its timestamps against the frame count: their errors
/// are even — cpal's PulseAudio host dates every latency reading by the server's own clock,
/// and a sink draining in blocks makes it a sawtooth), a least-squares line through the last ~10 s of them (so the
/// timestamps' jitter averages out), its rate shrunk toward the nominal one by how well the
/// fit knows it (±0.3 ms of jitter over 1 s is 300 ppm: a young history must not invent a
/// crystal that far off); the nominal rate until there is half a second. A timestamp 50 ms
/// off the line (a device restart, a clock step) starts it over.
#[derive(Clone, Debug)]
pub struct DeviceClock {
    history: VecDeque<(u64, LocalTime)>,
    bin: Option<(LocalTime, u32, f64)>,
    nominal_ns: f64,
    line: Option<Line>,
}

/// `t = t1 + a + b·(f − f1)`, anchored at the newest point.
#[derive(Clone, Copy, Debug)]
struct Line {
    f1: u64,
    t1: LocalTime,
    a: f64,
    b: f64,
}

impl DeviceClock {
    /// A clock at a nominal `rate` Hz.
    pub fn new(rate: u32) -> Self {
        DeviceClock {
            history: VecDeque::new(),
            bin: None,
            nominal_ns: 1e9 / f64::from(rate.max(1)),
            line: None,
        }
    }

    /// Forgets everything (a device restarted).
    pub fn reset(&mut self) {
        self.history.clear();
        self.bin = None;
        self.line = None;
    }

    /// Device frame `frame` was (or will be) at local instant `t`.
    pub fn update(&mut self, frame: u64, t: LocalTime) {
        if let Some(predicted) = self.time_of(frame)
            && (predicted - t).abs() > Nanos::from_millis(50)
        {
            self.reset();
        }
        let nominal = self.nominal_ns;
        // A point's offset from the nominal line: comparable across frames.
        let early = |f: u64, t: LocalTime| t.0 as f64 - f as f64 * nominal;
        match (self.bin, self.history.back_mut()) {
            (Some((start, n, sum)), Some(last)) if t - start < Nanos::from_millis(50) => {
                // The bin's mean offset, placed at its newest frame.
                let sum = sum + early(frame, t);
                let n = n + 1;
                self.bin = Some((start, n, sum));
                let at = sum / f64::from(n) + frame as f64 * nominal;
                *last = (frame, LocalTime(at.round().max(0.0) as u64));
            }
            _ => {
                self.bin = Some((t, 1, early(frame, t)));
                self.history.push_back((frame, t));
                while self.history.len() > 200 {
                    self.history.pop_front();
                }
            }
        }
        self.line = self.fit();
    }

    /// The local instant of device frame `frame`.
    pub fn time_of(&self, frame: u64) -> Option<LocalTime> {
        let Line { f1, t1, a, b } = self.line?;
        Some(t1 + Nanos((a + b * (frame as f64 - f1 as f64)).round() as i64))
    }

    /// The device's rate against the local clock, ppm (positive: its frames last longer).
    pub fn skew_ppm(&self) -> Option<f64> {
        self.line.map(|l| (l.b / self.nominal_ns - 1.0) * 1e6)
    }

    fn fit(&self) -> Option<Line> {
        let &(f1, t1) = self.history.back()?;
        let n = self.history.len() as f64;
        let span = t1 - self.history.front()?.1;
        if self.history.len() < 4 || span < Nanos::from_millis(500) {
            // Anchored on the newest point at the nominal rate: shift by the mean offset of
            // what there is, so one odd point does not move the whole map.
            let nominal = self.nominal_ns;
            let mean = self
                .history
                .iter()
                .map(|&(f, t)| (t - t1).0 as f64 - (f as f64 - f1 as f64) * nominal)
                .sum::<f64>()
                / n;
            return Some(Line { f1, t1, a: mean, b: nominal });
        }
        let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
        for &(f, t) in &self.history {
            let x = f as f64 - f1 as f64;
            let y = (t - t1).0 as f64;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
        let b_fit = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        let (mx, my) = (sx / n, sy / n);
        let sxx_c = sxx - n * mx * mx;
        let mut rss = 0.0;
        for &(f, t) in &self.history {
            let x = f as f64 - f1 as f64;
            let y = (t - t1).0 as f64;
            let r = y - my - b_fit * (x - mx);
            rss += r * r;
        }
        let var_fit = if n > 2.0 && sxx_c > 0.0 { rss / (n - 2.0) / sxx_c } else { f64::INFINITY };
        let prior = (100e-6 * self.nominal_ns).powi(2);
        let b = self.nominal_ns + (b_fit - self.nominal_ns) * (prior / (prior + var_fit));
        Some(Line { f1, t1, a: my - b * mx, b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_clock_averages_jitter_and_follows_a_skewed_crystal() {
        // A device 80 ppm slow against the local clock, timestamps jittering by ±0.4 ms in a
        // fixed pseudo-random pattern, a callback every 256 frames for 12 s.
        let mut c = DeviceClock::new(48_000);
        let truth = |f: u64| 5e9 + f as f64 * (1e9 / 48_000.0) * (1.0 + 80e-6);
        let mut x = 12_345u64;
        for k in 0..2_250u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let u = (x >> 33) as f64 / (1u64 << 31) as f64;
            let jitter = (u - 0.5) * 8e5;
            let f = k * 256;
            c.update(f, LocalTime((truth(f) + jitter) as u64));
        }
        let f = 2_250 * 256;
        let err = c.time_of(f).unwrap().0 as f64 - truth(f);
        assert!(err.abs() < 100_000.0, "{err} ns off");
        let skew = c.skew_ppm().unwrap();
        assert!((skew - 80.0).abs() < 15.0, "{skew} ppm");
    }

    #[test]
    fn instants_round_trip_and_track_the_monotonic_clock() {
        let a = Instant::now();
        let l = to_local(a);
        let back = to_instant(l);
        let diff = if back > a { back - a } else { a - back };
        assert!(diff.as_nanos() <= 1);
        let direct = now();
        let via = to_local(Instant::now());
        assert!((via - direct).abs() < Nanos::from_micros(100), "{:?}", via - direct);
    }
}
