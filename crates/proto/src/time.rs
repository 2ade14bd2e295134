//! Units of time and media, each in its own type so that clocks are never mixed implicitly.
//!
//! - [`LocalTime`]: this node's monotonic clock, in nanoseconds from an arbitrary origin.
//! - [`StreamTime`]: the source's clock, the one every presentation time is written in.
//! - [`Nanos`]: a signed duration, the difference of two instants on the *same* clock.
//! - [`MediaTime`]: a frame index within a stream (frames at the stream's sample rate).
//! - [`SeqNo`]: a packet sequence number, 64 bits wide everywhere.

use core::fmt;
use core::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::time::Duration;

/// A signed duration in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub i64);

impl Nanos {
    /// Zero.
    pub const ZERO: Nanos = Nanos(0);
    /// The largest representable duration.
    pub const MAX: Nanos = Nanos(i64::MAX);

    /// From microseconds.
    pub const fn from_micros(us: i64) -> Self {
        Nanos(us * 1_000)
    }
    /// From milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Nanos(ms * 1_000_000)
    }
    /// From whole seconds.
    pub const fn from_secs(s: i64) -> Self {
        Nanos(s * 1_000_000_000)
    }
    /// From fractional seconds (rounded to the nearest nanosecond).
    pub fn from_secs_f64(s: f64) -> Self {
        Nanos((s * 1e9).round() as i64)
    }
    /// The duration of `frames` frames at `rate` Hz, rounded down to the nanosecond.
    pub const fn from_frames(frames: u64, rate: u32) -> Self {
        Nanos((frames as i128 * 1_000_000_000 / rate as i128) as i64)
    }
    /// As fractional seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// As fractional milliseconds.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// As fractional microseconds.
    pub fn as_micros_f64(self) -> f64 {
        self.0 as f64 / 1e3
    }
    /// Absolute value.
    pub const fn abs(self) -> Nanos {
        Nanos(self.0.saturating_abs())
    }
    /// A non-negative duration as [`Duration`]; negative values become zero.
    pub fn to_duration(self) -> Duration {
        Duration::from_nanos(self.0.max(0) as u64)
    }
}

impl From<Duration> for Nanos {
    fn from(d: Duration) -> Self {
        Nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl Add for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(rhs.0))
    }
}
impl Sub for Nanos {
    type Output = Nanos;
    fn sub(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(rhs.0))
    }
}
impl Neg for Nanos {
    type Output = Nanos;
    fn neg(self) -> Nanos {
        Nanos(self.0.saturating_neg())
    }
}
impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0.unsigned_abs();
        if a >= 1_000_000_000 {
            write!(f, "{:.3} s", self.0 as f64 / 1e9)
        } else if a >= 1_000_000 {
            write!(f, "{:.3} ms", self.0 as f64 / 1e6)
        } else {
            write!(f, "{:.1} µs", self.0 as f64 / 1e3)
        }
    }
}

macro_rules! instant_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// Nanoseconds since this clock's origin.
            pub const fn as_nanos(self) -> u64 {
                self.0
            }
            /// The signed distance from `earlier` to `self`.
            pub fn since(self, earlier: $name) -> Nanos {
                self - earlier
            }
            /// The later of two instants.
            pub fn max(self, other: $name) -> $name {
                if self >= other { self } else { other }
            }
        }
        impl Add<Nanos> for $name {
            type Output = $name;
            fn add(self, rhs: Nanos) -> $name {
                $name(self.0.saturating_add_signed(rhs.0))
            }
        }
        impl AddAssign<Nanos> for $name {
            fn add_assign(&mut self, rhs: Nanos) {
                *self = *self + rhs;
            }
        }
        impl Sub<Nanos> for $name {
            type Output = $name;
            fn sub(self, rhs: Nanos) -> $name {
                $name(self.0.saturating_add_signed(rhs.0.saturating_neg()))
            }
        }
        impl SubAssign<Nanos> for $name {
            fn sub_assign(&mut self, rhs: Nanos) {
                *self = *self - rhs;
            }
        }
        impl Sub for $name {
            type Output = Nanos;
            fn sub(self, rhs: $name) -> Nanos {
                Nanos((self.0 as i128 - rhs.0 as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
            }
        }
    };
}

instant_type!(
    /// An instant on this node's monotonic clock (nanoseconds from an arbitrary origin).
    LocalTime
);
instant_type!(
    /// An instant on the stream clock: the source's monotonic clock, in which presentation
    /// times are written.
    StreamTime
);

impl StreamTime {
    /// `self − local`: the offset between the stream clock and the local clock when `self`
    /// and `local` name the same instant. The one sanctioned crossing between the two clocks.
    pub fn offset_from(self, local: LocalTime) -> Nanos {
        self - StreamTime(local.0)
    }
}

/// A position in a stream, in frames (one frame = one sample per channel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaTime(pub u64);

impl MediaTime {
    /// The frame index.
    pub const fn frames(self) -> u64 {
        self.0
    }
    /// `self + frames`.
    pub const fn add_frames(self, frames: u64) -> MediaTime {
        MediaTime(self.0 + frames)
    }
}

/// A packet sequence number. 64 bits on the wire, so it never wraps in practice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The next sequence number.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_arithmetic_saturates_and_round_trips() {
        let t = LocalTime(1_000);
        assert_eq!((t + Nanos(500)) - t, Nanos(500));
        assert_eq!(t - Nanos(5_000), LocalTime(0));
        assert_eq!(LocalTime(0) - LocalTime(u64::MAX), Nanos(i64::MIN));
        assert_eq!(LocalTime(u64::MAX) + Nanos(1), LocalTime(u64::MAX));
    }

    #[test]
    fn frames_to_nanos_is_exact_for_whole_seconds() {
        assert_eq!(Nanos::from_frames(48_000, 48_000), Nanos::from_secs(1));
        assert_eq!(Nanos::from_frames(240, 48_000), Nanos::from_millis(5));
        assert_eq!(Nanos::from_frames(1, 48_000), Nanos(20_833));
    }

    #[test]
    fn display_picks_a_readable_unit() {
        assert_eq!(Nanos::from_micros(12).to_string(), "12.0 µs");
        assert_eq!(Nanos::from_millis(-3).to_string(), "-3.000 ms");
        assert_eq!(Nanos::from_secs(2).to_string(), "2.000 s");
    }
}
