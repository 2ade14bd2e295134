//! Volume and mute as atomics the real-time callback reads, applied with short linear ramps so
//! that no change ever clicks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Volume and mute shared between a control thread and the audio callback, with at most one
/// change scheduled on a stream frame (see [`schedule`](Self::schedule)).
#[derive(Debug)]
pub struct SharedGain {
    gain: AtomicU32,
    muted: AtomicBool,
    /// Stream frame the pending change is due at (`u64::MAX`: none).
    pending_at: AtomicU64,
    /// The pending change: gain bits (0..32), "sets gain" (32), "sets mute" (33), mute (34).
    pending: AtomicU64,
}

const SETS_GAIN: u64 = 1 << 32;
const SETS_MUTE: u64 = 1 << 33;
const MUTED: u64 = 1 << 34;

/// Volume in percent (0–100 = 0 dB at 100, with a perceptual square-law taper) as a linear gain.
pub fn percent_to_gain(pct: f32) -> f32 {
    let v = (pct / 100.0).clamp(0.0, 1.5);
    v * v
}

impl SharedGain {
    /// Unity gain, not muted.
    pub fn new() -> Arc<Self> {
        Arc::new(SharedGain {
            gain: AtomicU32::new(1.0f32.to_bits()),
            muted: AtomicBool::new(false),
            pending_at: AtomicU64::new(u64::MAX),
            pending: AtomicU64::new(0),
        })
    }
    /// Sets the linear gain (clamped to 0..=4).
    pub fn set_gain(&self, gain: f32) {
        let g = if gain.is_finite() { gain.clamp(0.0, 4.0) } else { 0.0 };
        self.gain.store(g.to_bits(), Ordering::Relaxed);
    }
    /// Sets the volume in percent (0–100 = 0 dB at 100, with a perceptual square-law taper).
    pub fn set_volume_percent(&self, pct: f32) {
        self.set_gain(percent_to_gain(pct));
    }
    /// The linear gain.
    pub fn gain(&self) -> f32 {
        f32::from_bits(self.gain.load(Ordering::Relaxed))
    }
    /// Mutes or unmutes.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }
    /// Muted?
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }
    /// The gain to apply now (0 when muted).
    pub fn effective(&self) -> f32 {
        if self.muted() { 0.0 } else { self.gain() }
    }

    /// Schedules a change of gain and/or mute on stream frame `at`: whoever renders the stream
    /// (a player's [`Voice`](crate::engine::Voice)) applies it from exactly that frame, so a
    /// zone-wide change lands on the same sample on every player. One change is pending at a
    /// time: a second one before the first is due merges into it (and takes its frame).
    /// Called from one control thread.
    pub fn schedule(&self, gain: Option<f32>, muted: Option<bool>, at: u64) {
        let mut bits = if self.pending_at.load(Ordering::Acquire) == u64::MAX {
            0
        } else {
            self.pending.load(Ordering::Relaxed)
        };
        if let Some(g) = gain {
            let g = if g.is_finite() { g.clamp(0.0, 4.0) } else { 0.0 };
            bits = (bits & !0xFFFF_FFFF) | u64::from(g.to_bits()) | SETS_GAIN;
        }
        if let Some(m) = muted {
            bits = (bits & !MUTED) | SETS_MUTE | if m { MUTED } else { 0 };
        }
        // Withdraw, rewrite, republish: a reader that saw the old frame sees it change and
        // leaves the change for its next block.
        self.pending_at.store(u64::MAX, Ordering::Release);
        self.pending.store(bits, Ordering::Release);
        self.pending_at.store(at.min(u64::MAX - 1), Ordering::Release);
    }

    /// The stream frame of the pending change, if one is pending.
    pub fn pending_at(&self) -> Option<u64> {
        Some(self.pending_at.load(Ordering::Acquire)).filter(|&a| a != u64::MAX)
    }

    /// Applies the pending change due at `at` (as [`pending_at`](Self::pending_at) said); false
    /// if it was replaced meanwhile.
    pub fn commit_pending(&self, at: u64) -> bool {
        let bits = self.pending.load(Ordering::Acquire);
        if self
            .pending_at
            .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if bits & SETS_GAIN != 0 {
            self.gain.store(bits as u32, Ordering::Relaxed);
        }
        if bits & SETS_MUTE != 0 {
            self.muted.store(bits & MUTED != 0, Ordering::Relaxed);
        }
        true
    }
}

/// Follows a target gain with a linear ramp of fixed length (per-callback state, no locks).
#[derive(Clone, Copy, Debug)]
pub struct GainRamp {
    current: f32,
    target: f32,
    step: f32,
    remaining: u32,
    ramp_frames: u32,
}

impl GainRamp {
    /// A ramp starting at `gain`, taking `ramp_frames` frames for each change.
    pub fn new(gain: f32, ramp_frames: u32) -> Self {
        GainRamp {
            current: gain,
            target: gain,
            step: 0.0,
            remaining: 0,
            ramp_frames: ramp_frames.max(1),
        }
    }

    /// The gain reached so far.
    pub fn current(&self) -> f32 {
        self.current
    }

    /// Sets a new target (the ramp towards it starts at the next sample processed).
    pub fn retarget(&mut self, target: f32) {
        if target != self.target {
            self.target = target;
            self.step = (target - self.current) / self.ramp_frames as f32;
            self.remaining = self.ramp_frames;
        }
    }

    /// Adds channel `from_ch` of `src` (`src_channels` interleaved), times the ramped gain, to
    /// channel `to_ch` of `dst` (`dst_channels` interleaved).
    pub fn mix_into(
        &mut self,
        src: &[f32],
        src_channels: usize,
        dst: &mut [f32],
        dst_channels: usize,
        to_ch: usize,
    ) {
        let from_ch = to_ch.min(src_channels - 1);
        let frames = (src.len() / src_channels).min(dst.len() / dst_channels);
        let mut i = 0;
        while self.remaining > 0 && i < frames {
            self.remaining -= 1;
            self.current = if self.remaining == 0 { self.target } else { self.current + self.step };
            dst[i * dst_channels + to_ch] += src[i * src_channels + from_ch] * self.current;
            i += 1;
        }
        let g = self.current;
        if g == 0.0 || i >= frames {
            return;
        }
        let dsts = dst[i * dst_channels + to_ch..].iter_mut().step_by(dst_channels);
        let srcs = src[i * src_channels + from_ch..].iter().step_by(src_channels);
        for (d, s) in dsts.zip(srcs).take(frames - i) {
            *d += *s * g;
        }
    }

    /// Applies the ramp towards `target` to interleaved `buf` of `channels` channels.
    pub fn apply(&mut self, target: f32, buf: &mut [f32], channels: usize) {
        if target != self.target {
            self.target = target;
            self.step = (target - self.current) / self.ramp_frames as f32;
            self.remaining = self.ramp_frames;
        }
        let channels = channels.max(1);
        if self.remaining == 0 {
            if self.current != 1.0 {
                for s in buf.iter_mut() {
                    *s *= self.current;
                }
            }
            return;
        }
        for frame in buf.chunks_mut(channels) {
            if self.remaining > 0 {
                self.remaining -= 1;
                self.current =
                    if self.remaining == 0 { self.target } else { self.current + self.step };
            }
            for s in frame {
                *s *= self.current;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_without_jumps_and_settles() {
        let mut r = GainRamp::new(1.0, 100);
        let mut buf = vec![1.0f32; 2 * 300];
        r.apply(0.0, &mut buf, 2);
        let left: Vec<f32> = buf.iter().step_by(2).copied().collect();
        assert!(
            left.windows(2).all(|w| (w[0] - w[1]).abs() <= 0.0101),
            "no step larger than 1/100"
        );
        assert_eq!(left[99], 0.0);
        assert_eq!(*left.last().unwrap(), 0.0);
        assert_eq!(buf[0], buf[1], "channels of a frame share the gain");
    }

    #[test]
    fn shared_gain_mutes_and_tapers() {
        let g = SharedGain::new();
        g.set_volume_percent(50.0);
        assert!((g.gain() - 0.25).abs() < 1e-6);
        g.set_muted(true);
        assert_eq!(g.effective(), 0.0);
        g.set_gain(f32::NAN);
        assert_eq!(g.gain(), 0.0);
    }
}
