//! The local clock: `CLOCK_MONOTONIC` in nanoseconds, as [`LocalTime`].
//!
//! Every process on a machine reads the same monotonic clock, so instants recorded by
//! different processes (a WAV file's first sample, a packet's arrival) line up directly; the
//! clock is also shared across network namespaces. Reading it is a vDSO call: safe in the
//! real-time callback.

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

#[cfg(test)]
mod tests {
    use super::*;

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
