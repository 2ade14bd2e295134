//! The test signal: a music-like bed (chords of a few harmonics, fading in and out) with a
//! short chirp every period, rising and falling in turn (event `k` is kind `k % 2`). The bed
//! never repeats (each chord is drawn from a hash of its index), so a chirp found a period or
//! more away from where it belongs is told apart by the audio around it: the analysis checks
//! both.
//!
//! The signal is a function of continuous time, so a copy delayed by any fraction of a sample
//! is computed exactly (no interpolation): the analysis is checked against copies delayed by
//! known amounts.

/// Sample rate of the signal and of every recording, Hz.
pub const RATE: u32 = 48_000;
/// Frames from one event to the next (250 ms).
pub const PERIOD: usize = 12_000;
/// Frames of a chirp (6 ms).
pub const CHIRP: usize = 288;
/// Frame of the first event in the signal.
pub const FIRST: usize = PERIOD / 2;
/// Peak amplitude of a chirp (−8 dBFS).
const CHIRP_LEVEL: f64 = 0.4;
/// Amplitude of a bed note's fundamental.
const BED_LEVEL: f64 = 0.035;
/// Sweep bands of the chirp kinds, Hz.
pub const KINDS: [(f64, f64); 2] = [(1_000.0, 11_000.0), (11_000.0, 1_000.0)];
/// Length of one chord of the bed, seconds.
const CHORD: f64 = 1.5;

/// The chirp of event kind `kind` (0 rising, 1 falling) at `t` seconds from its start (0 outside it).
pub fn chirp(kind: usize, t: f64) -> f64 {
    let len = CHIRP as f64 / f64::from(RATE);
    if !(0.0..len).contains(&t) {
        return 0.0;
    }
    let (f0, f1) = KINDS[kind % KINDS.len()];
    let k = (f1 - f0) / len;
    let phase = 2.0 * core::f64::consts::PI * (f0 * t + 0.5 * k * t * t);
    let hann = 0.5 - 0.5 * (2.0 * core::f64::consts::PI * t / len).cos();
    CHIRP_LEVEL * hann * phase.sin()
}

/// A small deterministic hash (SplitMix64) for the bed's chords.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The bed at `t` seconds: a chord of three notes of a pentatonic scale (with two
/// overtones each) every 1.5 s, attacking, decaying and released before the next.
pub fn bed(t: f64) -> f64 {
    if t < 0.0 {
        return 0.0;
    }
    const SCALE: [f64; 10] = [0.0, 2.0, 4.0, 7.0, 9.0, 12.0, 14.0, 16.0, 19.0, 21.0];
    let j = (t / CHORD).floor();
    let tau = t - j * CHORD;
    let env = (tau / 0.02).min(1.0) * (-tau / 0.8).exp() * ((CHORD - tau) / 0.05).clamp(0.0, 1.0);
    let h = mix(j as u64);
    let mut v = 0.0;
    for n in 0..3 {
        let step = SCALE[((h >> (8 * n)) % SCALE.len() as u64) as usize];
        let f = 220.0 * (2f64).powf(step / 12.0);
        for (harm, amp) in [(1.0, 1.0), (2.0, 0.5), (3.0, 0.25)] {
            v += amp * (2.0 * core::f64::consts::PI * f * harm * t).sin();
        }
    }
    BED_LEVEL * env * v
}

/// The whole signal at `t` seconds from its first frame.
pub fn value(t: f64) -> f64 {
    let rate = f64::from(RATE);
    let first = FIRST as f64 / rate;
    let period = PERIOD as f64 / rate;
    let mut v = bed(t);
    if t >= first {
        let k = ((t - first) / period).floor();
        v += chirp(kind_of(k as usize), t - first - k * period);
    }
    v
}

/// The event kind of event `k`.
pub fn kind_of(k: usize) -> usize {
    k % KINDS.len()
}

/// The template the analysis correlates for kind `kind`: the chirp, sampled.
pub fn template(kind: usize) -> Vec<f32> {
    (0..CHIRP).map(|n| chirp(kind, n as f64 / f64::from(RATE)) as f32).collect()
}

/// `frames` frames of `channels` interleaved channels, channel `c` delayed by `c × delay_us`
/// microseconds (exactly), as 16-bit samples.
pub fn render(frames: usize, channels: usize, delay_us: f64) -> Vec<i16> {
    let rate = f64::from(RATE);
    let mut out = Vec::with_capacity(frames * channels);
    for n in 0..frames {
        for c in 0..channels {
            let t = n as f64 / rate - c as f64 * delay_us * 1e-6;
            out.push((value(t) * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_stays_in_range_and_has_its_events() {
        let s = render(RATE as usize * 3, 1, 0.0);
        let peak = s.iter().map(|v| i32::from(*v).abs()).max().unwrap();
        assert!(peak < 32_000, "no clipping: {peak}");
        // A chirp at each event, quieter bed between them.
        let energy = |a: usize, b: usize| {
            s[a..b].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / (b - a) as f64
        };
        for k in 0..8 {
            let at = FIRST + k * PERIOD;
            assert!(
                energy(at, at + CHIRP) > 5.0 * energy(at + CHIRP + 100, at + CHIRP + 388),
                "event {k}"
            );
        }
    }

    #[test]
    fn the_kinds_do_not_match_each_other() {
        let t: Vec<Vec<f32>> = (0..KINDS.len()).map(template).collect();
        let norm = |a: &[f32]| a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        for i in 0..t.len() {
            for j in 0..t.len() {
                if i == j {
                    continue;
                }
                // The best normalized correlation of kind j against kind i, at any lag.
                let mut best: f64 = 0.0;
                for lag in -(CHIRP as i64) + 1..CHIRP as i64 {
                    let dot: f64 = (0..CHIRP as i64)
                        .filter(|n| (0..CHIRP as i64).contains(&(n + lag)))
                        .map(|n| f64::from(t[i][(n + lag) as usize]) * f64::from(t[j][n as usize]))
                        .sum();
                    best = best.max(dot.abs() / (norm(&t[i]) * norm(&t[j])));
                }
                assert!(best < 0.5, "kinds {i} and {j} correlate at {best:.2}");
            }
        }
    }
}
