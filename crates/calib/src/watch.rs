//! The passive drift watch, sans-IO: what a microphone hears of the music against what the
//! zone played, with no test signal.
//!
//! [`Correlator::lags`] cross-correlates a few seconds of the microphone with the program (the
//! zone's stream as it was due to be heard, on the same clock as the microphone's dating) by
//! GCC-PHAT: the cross-spectrum whitened to its phase across the band, so that music's strong
//! low notes do not smear the peak and every arrival is a sharp line. Each speaker that plays
//! the program is one line at its lateness; speakers that arrive together are one line.
//!
//! [`DriftWatch`] follows the lines from one snippet to the next against a baseline (the
//! arrival right after a calibration): a speaker whose latency changed (a TV switching modes)
//! shows as a line that left the baseline, by so many milliseconds, with its share of the
//! sound. It is *declared* only once two snippets in a row agree within [`AGREE_MS`]
//! (hysteresis: a cough, a door, a loud passage do not move anything).

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use serde::Serialize;

use crate::CalibrationError;

/// The band the correlation is whitened over, Hz (room noise below, nothing above in most
/// program material).
const BAND_HZ: (f64, f64) = (250.0, 8_000.0);

/// A line must stand this far above the correlation's noise to count, dB: the noise's own
/// largest peak over ±0.4 s of lags stands 13–16 dB above its σ (another program correlated
/// against this one read 15.8), a speaker heard clearly 30–40.
pub const LINE_DB: f64 = 20.0;

/// A line this weak against the strongest is not reported.
const MIN_SHARE: f64 = 0.2;

/// Two snippets in a row agree when their drifts are this close, ms.
pub const AGREE_MS: f64 = 1.0;

/// A line this close to the baseline is the baseline, ms.
pub const STILL_MS: f64 = 1.0;

/// A line farther than this from the baseline is not the sound that moved but an echo of the
/// program in itself (music that repeats: a bar, a loop), ms.
pub const MOVE_MAX_MS: f64 = 250.0;

/// One arrival of the program at the microphone.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Line {
    /// How late the microphone heard the program against when it was due, ms (in the
    /// microphone's dating: its own latency included).
    pub lag_ms: f64,
    /// How far the line stands above the correlation's noise, dB.
    pub db: f64,
    /// Its height against the strongest line (1.0 for the strongest).
    pub share: f64,
}

/// GCC-PHAT for snippets of one length at one rate.
pub struct Correlator {
    rate: f64,
    snippet: usize,
    max_lag: usize,
    n: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("rate", &self.rate)
            .field("snippet", &self.snippet)
            .field("max_lag", &self.max_lag)
            .finish()
    }
}

impl Correlator {
    /// Snippets of `snippet_s` seconds at `rate` Hz, lines searched within ±`max_lag_s`.
    pub fn new(rate: f64, snippet_s: f64, max_lag_s: f64) -> Result<Correlator, CalibrationError> {
        crate::check_rate(rate)?;
        let snippet = (snippet_s * rate).round() as usize;
        let max_lag = (max_lag_s * rate).round() as usize;
        if snippet < (0.5 * rate) as usize || max_lag == 0 || max_lag > snippet {
            return Err(CalibrationError::Snippet { snippet_s, max_lag_s });
        }
        let n = (snippet + 2 * max_lag + snippet).next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        Ok(Correlator {
            rate,
            snippet,
            max_lag,
            n,
            forward: planner.plan_fft_forward(n),
            inverse: planner.plan_fft_inverse(n),
        })
    }

    /// The sample rate it was made for, Hz.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// A snippet's length, samples.
    pub fn snippet_len(&self) -> usize {
        self.snippet
    }

    /// The samples of program a snippet needs: from `max_lag` before the microphone's first
    /// sample to `max_lag` after its last.
    pub fn reference_len(&self) -> usize {
        self.snippet + 2 * self.max_lag
    }

    /// The lines in `mic` (a snippet, `snippet_s` long) against `reference`, which starts
    /// `max_lag_s` before the microphone's first sample (both dated on one clock) and is
    /// [`reference_len`](Self::reference_len) long. Strongest first; none when nothing stands
    /// [`LINE_DB`] above the noise (silence, speech over music, the wrong stream).
    pub fn lags(&self, reference: &[f32], mic: &[f32]) -> Result<Vec<Line>, CalibrationError> {
        if mic.len() != self.snippet || reference.len() != self.reference_len() {
            return Err(CalibrationError::SnippetLength {
                mic: mic.len(),
                reference: reference.len(),
                want_mic: self.snippet,
                want_reference: self.reference_len(),
            });
        }
        if let Some(i) = mic.iter().chain(reference).position(|s| !s.is_finite()) {
            return Err(CalibrationError::NotFinite(i));
        }
        let spectrum = |x: &[f32]| {
            let mut input = self.forward.make_input_vec();
            input[..x.len()].copy_from_slice(x);
            let mut out = self.forward.make_output_vec();
            self.forward.process(&mut input, &mut out).expect("buffers sized by the plan");
            out
        };
        let (m, r) = (spectrum(mic), spectrum(reference));
        // Σ_i mic[i]·ref[i + k], whitened: its phase alone across the band.
        let bin_hz = self.rate / self.n as f64;
        let mut cross: Vec<Complex<f32>> = m
            .iter()
            .zip(&r)
            .enumerate()
            .map(|(k, (a, b))| {
                let f = k as f64 * bin_hz;
                if !(BAND_HZ.0..=BAND_HZ.1).contains(&f) {
                    return Complex::default();
                }
                let c = a.conj() * b;
                let mag = c.norm();
                if mag > 1e-20 { c / mag } else { Complex::default() }
            })
            .collect();
        let last = cross.len() - 1;
        cross[0] = Complex::default();
        cross[last] = Complex::default();
        let mut corr = self.inverse.make_output_vec();
        self.inverse.process(&mut cross, &mut corr).expect("buffers sized by the plan");
        // Lag k of the reference is lateness max_lag − k.
        let corr = &corr[..=2 * self.max_lag];
        let mut magnitudes: Vec<f32> = corr.iter().map(|c| c.abs()).collect();
        let mid = magnitudes.len() / 2;
        let median = *magnitudes.select_nth_unstable_by(mid, f32::total_cmp).1;
        // |Gaussian|'s median is 0.674 σ.
        let sigma = (f64::from(median) / 0.674).max(f64::MIN_POSITIVE);
        // Nothing arrives before it was due, but for the microphone's dating error: earlier
        // lines are the program's own repetitions (a bar, a loop), not arrivals.
        let earliest = self.max_lag + (crate::MIC_OFFSET_MAX_S * self.rate) as usize;
        let mut peaks: Vec<(usize, f64)> = (1..corr.len() - 1)
            .filter(|&k| k <= earliest)
            .filter(|&k| {
                let v = corr[k];
                v > 0.0 && v >= corr[k - 1] && v >= corr[k + 1]
            })
            .map(|k| (k, f64::from(corr[k])))
            .filter(|&(_, v)| 20.0 * (v / sigma).log10() >= LINE_DB)
            .collect();
        peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
        let Some(&(_, top)) = peaks.first() else { return Ok(Vec::new()) };
        // Lines closer than a millisecond to a stronger one are its own side lobes.
        let mut lines: Vec<(usize, f64)> = Vec::new();
        for (k, v) in peaks {
            if v < MIN_SHARE * top {
                break;
            }
            if lines.iter().all(|&(j, _)| k.abs_diff(j) as f64 > 1e-3 * self.rate) {
                lines.push((k, v));
            }
            if lines.len() == 4 {
                break;
            }
        }
        Ok(lines
            .into_iter()
            .map(|(k, v)| {
                let (a, b, c) = (corr[k - 1], corr[k], corr[k + 1]);
                let denom = a - 2.0 * b + c;
                let frac = if denom < 0.0 {
                    f64::from(0.5 * (a - c) / denom).clamp(-0.5, 0.5)
                } else {
                    0.0
                };
                Line {
                    lag_ms: (self.max_lag as f64 - (k as f64 + frac)) / self.rate * 1e3,
                    db: 20.0 * (v / sigma).log10(),
                    share: v / top,
                }
            })
            .collect())
    }
}

/// What the watch makes of one snippet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reading {
    /// The lines heard, strongest first.
    pub lines: Vec<Line>,
    /// The baseline's lateness, ms, once there is one.
    pub baseline_ms: Option<f64>,
    /// How far the sound that moved now arrives from the baseline, ms (positive: later), and
    /// its share of the sound; `None` when nothing moved (or nothing was heard).
    pub moved: Option<(f64, f64)>,
    /// The drift declared: the last two snippets agree that part of the sound moved this
    /// far, ms; `Some(0.0)` while everything arrives at the baseline; `None` before a baseline,
    /// or while they disagree.
    pub drift_ms: Option<f64>,
}

/// Follows the program's arrivals against a baseline (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct DriftWatch {
    baseline: Option<f64>,
    last: Option<Option<f64>>,
}

impl DriftWatch {
    /// A watch whose first clear snippet sets the baseline.
    pub fn new() -> DriftWatch {
        DriftWatch::default()
    }

    /// Forgets the baseline (after a calibration changed the delays): the next clear
    /// snippet sets it again.
    pub fn rebase(&mut self) {
        *self = DriftWatch::default();
    }

    /// The baseline, ms, if set.
    pub fn baseline_ms(&self) -> Option<f64> {
        self.baseline
    }

    /// Takes one snippet's lines.
    pub fn push(&mut self, lines: Vec<Line>) -> Reading {
        let Some(strongest) = lines.first().copied() else {
            return Reading { lines, baseline_ms: self.baseline, ..Reading::default() };
        };
        let baseline = *self.baseline.get_or_insert(strongest.lag_ms);
        // The sound that moved: the strongest line away from the baseline, if any (and not
        // so far away that it is the program repeating itself).
        let moved = lines
            .iter()
            .find(|l| {
                (l.lag_ms - baseline).abs() > STILL_MS && (l.lag_ms - baseline).abs() <= MOVE_MAX_MS
            })
            .map(|l| (l.lag_ms - baseline, l.share));
        let now = moved.map(|(d, _)| d);
        let drift_ms = match (self.last, now) {
            (Some(Some(a)), Some(b)) if (a - b).abs() <= AGREE_MS => Some((a + b) / 2.0),
            (Some(None), None) => Some(0.0),
            _ => None,
        };
        self.last = Some(now);
        Reading { lines, baseline_ms: Some(baseline), moved, drift_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Music-like program: a few notes with harmonics, changing every 180 ms, plus a little
    /// noise (seeded).
    fn program(len: usize, rate: f64, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let note = (0.18 * rate) as usize;
        let mut out = vec![0.0f32; len];
        let mut freqs = [0.0f64; 3];
        for (i, o) in out.iter_mut().enumerate() {
            if i % note == 0 {
                for f in &mut freqs {
                    *f = 110.0 * 2f64.powf((next() * 36.0).floor() / 12.0);
                }
            }
            let t = i as f64 / rate;
            let mut v = 0.0;
            for f in freqs {
                for h in 1..6 {
                    v += (std::f64::consts::TAU * f * h as f64 * t).sin() / h as f64;
                }
            }
            *o = (0.05 * v + 0.01 * (next() - 0.5)) as f32;
        }
        out
    }

    /// What a microphone hears: each speaker's copy of `program` `late_s` late at `gain`,
    /// summed, plus white noise at `noise` RMS; its snippet starts `at` samples into the
    /// program.
    fn heard(
        program: &[f32],
        rate: f64,
        speakers: &[(f64, f32)],
        noise: f32,
        at: usize,
        len: usize,
    ) -> Vec<f32> {
        let mut state = 0x1234_5678_9abc_def1u64;
        (0..len)
            .map(|i| {
                let mut v = 0.0f32;
                for &(late_s, gain) in speakers {
                    let k = (at + i) as f64 - late_s * rate;
                    v += program[k.round() as usize] * gain;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v + noise * 3.46 * ((state >> 11) as f32 / (1u64 << 53) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn three_speakers_a_part_apart_are_three_lines() {
        let rate = 48_000.0;
        let c = Correlator::new(rate, 4.0, 0.3).unwrap();
        let p = program(20 * 48_000, rate, 7);
        let at = 5 * 48_000;
        let mic =
            heard(&p, rate, &[(0.040, 0.5), (0.0605, 0.3), (0.0812, 0.25)], 0.005, at, c.snippet);
        let reference = &p[at - c.max_lag..at - c.max_lag + c.reference_len()];
        let lines = c.lags(reference, &mic).unwrap();
        let mut lags: Vec<f64> = lines.iter().map(|l| l.lag_ms).collect();
        lags.sort_by(f64::total_cmp);
        assert_eq!(lags.len(), 3, "{lines:?}");
        for (found, truth) in lags.iter().zip([40.0, 60.5, 81.2]) {
            assert!((found - truth).abs() < 0.05, "{lines:?}");
        }
        assert!((lines[0].lag_ms - 40.0).abs() < 0.05 && lines[0].share == 1.0);
        // Silence hears nothing; another program neither.
        let quiet = vec![0.0f32; c.snippet];
        assert!(c.lags(reference, &quiet).unwrap().is_empty());
        let other = program(20 * 48_000, rate, 99);
        let elsewhere = heard(&other, rate, &[(0.04, 0.5)], 0.005, at, c.snippet);
        assert!(c.lags(reference, &elsewhere).unwrap().is_empty(), "a stream it does not play");
        // Wrong lengths are said.
        let e = c.lags(&reference[1..], &mic).unwrap_err().to_string();
        assert!(e.contains("reference"), "{e}");
    }

    #[test]
    fn music_that_repeats_every_half_second_moves_nothing() {
        let rate = 48_000.0;
        let c = Correlator::new(rate, 4.0, 0.4).unwrap();
        // A bar of half a second, looped.
        let bar = program(24_000, rate, 5);
        let p: Vec<f32> = bar.iter().cycle().take(20 * 48_000).copied().collect();
        let mut watch = DriftWatch::new();
        for second in [5, 10] {
            let at = second * 48_000;
            let mic = heard(&p, rate, &[(0.112, 0.5)], 0.005, at, c.snippet);
            let lines =
                c.lags(&p[at - c.max_lag..at - c.max_lag + c.reference_len()], &mic).unwrap();
            assert!(lines.iter().all(|l| l.lag_ms > -100.0), "{lines:?}");
            let r = watch.push(lines);
            assert!((r.baseline_ms.unwrap() - 112.0).abs() < 0.05, "{r:?}");
            assert_eq!(r.moved, None, "{r:?}");
        }
    }

    #[test]
    fn a_speaker_that_moves_20_ms_is_declared_after_two_snippets_and_not_before() {
        let rate = 48_000.0;
        let c = Correlator::new(rate, 4.0, 0.3).unwrap();
        let p = program(80 * 48_000, rate, 3);
        let mut watch = DriftWatch::new();
        let snippet = |speakers: &[(f64, f32)], second: usize| {
            let at = second * 48_000;
            let mic = heard(&p, rate, speakers, 0.01, at, c.snippet);
            c.lags(&p[at - c.max_lag..at - c.max_lag + c.reference_len()], &mic).unwrap()
        };
        // Three speakers aligned (a calibration's result): one line, the baseline.
        let aligned = [(0.050, 0.4f32), (0.050, 0.3), (0.050, 0.3)];
        let first = watch.push(snippet(&aligned, 5));
        assert!((first.baseline_ms.unwrap() - 50.0).abs() < 0.05, "{first:?}");
        assert_eq!(first.drift_ms, None, "one snippet declares nothing");
        assert_eq!(watch.push(snippet(&aligned, 10)).drift_ms, Some(0.0));
        // The third one's TV switches modes: 20 ms later from now on.
        let moved = [(0.050, 0.4f32), (0.050, 0.3), (0.070, 0.3)];
        let once = watch.push(snippet(&moved, 15));
        let (d, share) = once.moved.unwrap();
        assert!((d - 20.0).abs() < 0.1 && share < 0.8, "{once:?}");
        assert_eq!(once.drift_ms, None, "hysteresis: not yet");
        let twice = watch.push(snippet(&moved, 20));
        assert!((twice.drift_ms.unwrap() - 20.0).abs() < 0.1, "{twice:?}");
        // A snippet of something else (a door, silence) declares nothing and moves nothing.
        let silent = watch.push(Vec::new());
        assert_eq!((silent.drift_ms, silent.moved), (None, None));
        assert!((silent.baseline_ms.unwrap() - 50.0).abs() < 0.05);
        // After a calibration, the next snippet is the new baseline.
        watch.rebase();
        assert!(watch.baseline_ms().is_none());
        let again = watch.push(snippet(&aligned, 30));
        assert!((again.baseline_ms.unwrap() - 50.0).abs() < 0.05);
    }
}
