//! The local monotonic clock as [`LocalTime`], shared by every thread of the process.

use std::sync::OnceLock;
use std::time::Instant;

use tutti_proto::{LocalTime, Nanos};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Offset of the origin, so that instants slightly before it stay positive.
const BASE: u64 = 1_000_000_000_000;

/// Now, on the local monotonic clock.
pub fn now() -> LocalTime {
    to_local(Instant::now())
}

/// An [`Instant`] on the local clock.
pub fn to_local(t: Instant) -> LocalTime {
    let o = origin();
    if t >= o {
        LocalTime(BASE + t.duration_since(o).as_nanos() as u64)
    } else {
        LocalTime(BASE.saturating_sub(o.duration_since(t).as_nanos() as u64))
    }
}

/// A local instant as an [`Instant`] (for sleeping until it).
pub fn to_instant(t: LocalTime) -> Instant {
    let o = origin();
    let d = t - LocalTime(BASE);
    if d >= Nanos::ZERO { o + d.to_duration() } else { o.checked_sub((-d).to_duration()).unwrap_or(o) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip() {
        let a = Instant::now();
        let l = to_local(a);
        let back = to_instant(l);
        let diff = if back > a { back - a } else { a - back };
        assert!(diff.as_nanos() <= 1);
        assert!(now() >= l);
    }
}
