//! Acoustic calibration, sans-IO: the test sequence a zone's speakers play, and the estimator
//! that finds, in one microphone recording, when each speaker's sound arrived.
//!
//! **The sequence** ([`Plan`]). Every speaker plays the same chirp (a linear sweep down,
//! [`CHIRP_HIGH_HZ`]–[`CHIRP_LOW_HZ`] in [`CHIRP_S`], faded in and out) in slots of its own,
//! [`SLOT_S`] apart (plus [`ROUND_GAP_S`] more each round), in [`ROUNDS`] rounds: speaker 0, 1,
//! …, n−1, then backwards, then forwards again. A second is long enough for most rooms' echoes
//! to fade, and what is left of the slot before never lands at the same moment twice, so it is
//! not taken for an arrival. Whatever a speaker adds before its sound leaves it (a TV's HDMI
//! path, a Bluetooth link, a DSP) and the flight to the microphone delay its chirp; the
//! microphone's own capture latency delays every chirp alike and cancels out, because only
//! differences are applied. The slots are wide enough that a speaker up to [`LATENCY_MAX_S`]
//! late, heard by a microphone whose recording is dated up to [`MIC_OFFSET_MAX_S`] wrong either
//! way, is still found in its own slot.
//!
//! **The estimator** ([`Estimator`]). Each slot's window is correlated with the chirp (a
//! matched filter weighted across the band: 500 ms × 6.5 kHz of time–bandwidth, 35 dB of
//! processing gain) and its quadrature, whose magnitude is the correlation's envelope. Every
//! peak before the slot's loudest sound, up to [`SEARCH_DB`] below it and [`MIN_PEAK_DB`] above
//! the noise, is a candidate, refined to a fraction of a sample. The microphone's clock may run
//! a few hundred ppm off the stream's (100 ppm over a 10 s sequence is 1 ms): every loud sound
//! that recurs in each of a speaker's rounds on one line of lateness against time gives a
//! slope, and the slope most of them agree on is the skew. The direct sound is then the
//! earliest candidate that recurs at the same lateness in every round (a reflection can be
//! louder than the direct sound, never earlier; noise does not recur).
//!
//! **Confidence.** A speaker's arrival is *confident* when every round's loudest sound stands
//! at least [`MIN_PEAK_DB`] + [`SEARCH_DB`] above the noise floor (so that a direct sound
//! [`SEARCH_DB`] weaker than an echo would still have been seen), no earlier sound recurred in
//! some rounds only, and its rounds agree within [`MAX_SPREAD_MS`] once the skew is out.
//! Anything else is refused, with the reason, and never applied: [`Estimate::delays_ms`] has no
//! delay for a refused speaker.
//!
//! **The drift watch** ([`watch`]): with music playing, no test signal, the program's arrivals
//! at a microphone against a baseline; a speaker whose latency changed shows, by how much.
//!
//! `crates/sim` proves it in simulated rooms (`tutti-sim --calibration`): image-source
//! reverberation, band-limited and clipping speakers, hidden latencies, clock skew, noise.

#![forbid(unsafe_code)]

pub mod watch;

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use serde::Serialize;

/// Length of the chirp, seconds.
pub const CHIRP_S: f64 = 0.5;
/// The chirp's lowest frequency, Hz (above a small speaker's bass roll-off and most room noise).
pub const CHIRP_LOW_HZ: f64 = 500.0;
/// The chirp's highest frequency, Hz (below a cheap speaker's or a Bluetooth codec's top).
pub const CHIRP_HIGH_HZ: f64 = 7_000.0;
/// Fade in and out of the chirp, seconds (raised cosine: no click at its ends).
const FADE_S: f64 = 0.01;
/// The chirp's peak level (−6 dBFS: headroom for a speaker's own processing).
pub const CHIRP_LEVEL: f32 = 0.5;
/// Spacing of the slots, seconds.
pub const SLOT_S: f64 = 1.0;
/// How much longer the slots of each round are spaced than the round before, seconds: what the
/// room still returns of the slot before (a loud neighbour's reverberation behind a quiet
/// speaker) then lands at another moment of each round and never recurs like an arrival.
pub const ROUND_GAP_S: f64 = 0.05;

/// The spacing after a slot of `round`.
fn slot_spacing_s(round: usize) -> f64 {
    SLOT_S + ROUND_GAP_S * round as f64
}

/// Silence before the first slot, seconds.
pub const LEAD_S: f64 = 0.2;
/// How many times every speaker plays the chirp.
pub const ROUNDS: usize = 3;
/// The most a speaker may add before its sound arrives (device latency plus flight), seconds.
pub const LATENCY_MAX_S: f64 = 0.33;
/// How wrong the recording's dating may be, either way, seconds (the microphone's own unknown
/// capture latency, or a timestamp's error).
pub const MIC_OFFSET_MAX_S: f64 = 0.1;
/// Slack for the microphone's clock skew over the sequence, seconds.
const SKEW_SLACK_S: f64 = 0.005;
/// A sound must stand this far above the correlation's noise floor (measured before anything
/// the speaker sent arrived) to be a candidate for the direct sound, dB. Noise passes it now
/// and then; it does not recur at the same instant in every round.
pub const MIN_PEAK_DB: f64 = 9.0;
/// How far below the loudest sound of a slot the direct sound is looked for, dB: a speaker
/// facing away from the microphone can be heard louder by an echo off the wall it faces (a
/// speaker's back is 10–20 dB down at these frequencies, a wall returns most of it, and
/// several echoes can add up).
pub const SEARCH_DB: f64 = 22.0;
/// A speaker's rounds must agree within this once the skew is out, milliseconds.
pub const MAX_SPREAD_MS: f64 = 0.25;
/// The largest microphone clock skew believed, ppm (a crystal is within ±100).
pub const MAX_SKEW_PPM: f64 = 500.0;
/// Candidates for the direct sound are looked for up to this long before a slot's loudest
/// sound, seconds (an echo louder than the direct sound comes off a wall near the speaker).
const DIRECT_LOOKBACK_S: f64 = 0.05;
/// The median of a Rayleigh-distributed envelope times this is its root mean square.
const RAYLEIGH_MEDIAN_TO_RMS: f64 = 1.2011;

/// Something a calibration cannot work with, said with what would fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrationError {
    /// No speakers, or more than a sequence holds.
    #[error("speakers: {0} (calibrate 1–32 speakers at a time)")]
    Speakers(usize),
    /// A sample rate the chirp does not fit.
    #[error("sample rate {0} Hz: use 16 000–384 000 Hz")]
    SampleRate(f64),
    /// The recording does not cover a slot's window.
    #[error(
        "the recording covers {have_s:.3}–{end_s:.3} s of the sequence but slot {slot} needs \
         {need_from_s:.3}–{need_to_s:.3} s: record from {earliest_s:.3} s to {latest_s:.3} s \
         (the sequence, the microphone's latency and the slowest speaker)"
    )]
    Short {
        /// The slot that did not fit.
        slot: usize,
        /// Where the recording starts, sequence seconds.
        have_s: f64,
        /// Where it ends.
        end_s: f64,
        /// Where that slot's window starts.
        need_from_s: f64,
        /// Where it ends.
        need_to_s: f64,
        /// Where a recording must start to cover every slot.
        earliest_s: f64,
        /// Where it must end.
        latest_s: f64,
    },
    /// A sample that is not a number.
    #[error("sample {0} of the recording is not a finite number")]
    NotFinite(usize),
    /// A drift watch's snippet too short, or a lag range it cannot hold.
    #[error(
        "snippets of {snippet_s} s with lags up to ±{max_lag_s} s: use snippets of 0.5 s or \
         more and a lag range above zero and at most the snippet"
    )]
    Snippet {
        /// The snippet's length asked for.
        snippet_s: f64,
        /// The lag range asked for.
        max_lag_s: f64,
    },
    /// A snippet or its reference of the wrong length.
    #[error(
        "a snippet of {mic} samples against a reference of {reference}: the correlator takes \
         {want_mic} and {want_reference}"
    )]
    SnippetLength {
        /// The microphone's samples given.
        mic: usize,
        /// The program's.
        reference: usize,
        /// What it takes.
        want_mic: usize,
        /// What it takes.
        want_reference: usize,
    },
    /// A speaker the plan does not have.
    #[error("speaker {speaker}: the plan has speakers 0–{last}")]
    NoSuchSpeaker {
        /// The one asked for.
        speaker: usize,
        /// The plan's last.
        last: usize,
    },
}

/// One speaker's turn: it plays the chirp from `start_s` (sequence seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    /// Which speaker (index into the plan's speakers).
    pub speaker: usize,
    /// Which round.
    pub round: usize,
    /// When its chirp starts, seconds from the sequence's start.
    pub start_s: f64,
}

/// The test sequence for `speakers` speakers.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    speakers: usize,
}

impl Plan {
    /// The sequence for `speakers` speakers (1–32).
    pub fn new(speakers: usize) -> Result<Plan, CalibrationError> {
        if !(1..=32).contains(&speakers) {
            return Err(CalibrationError::Speakers(speakers));
        }
        Ok(Plan { speakers })
    }

    /// How many speakers it calibrates.
    pub fn speakers(&self) -> usize {
        self.speakers
    }

    /// Every slot, in the order they play.
    pub fn slots(&self) -> Vec<Slot> {
        let n = self.speakers;
        let mut start_s = LEAD_S;
        (0..ROUNDS)
            .flat_map(|round| {
                (0..n).map(move |i| (round, if round % 2 == 0 { i } else { n - 1 - i }))
            })
            .map(|(round, speaker)| {
                let slot = Slot { speaker, round, start_s };
                start_s += slot_spacing_s(round);
                slot
            })
            .collect()
    }

    /// How long the sequence plays, seconds (the last slot's chirp and the slowest speaker's
    /// sound included).
    pub fn duration_s(&self) -> f64 {
        self.slots().last().map_or(LEAD_S, |s| s.start_s) + SLOT_S + LATENCY_MAX_S
    }

    /// What a recording must cover, sequence seconds: from the first slot's earliest window
    /// to the last one's latest.
    pub fn recording_span_s(&self) -> (f64, f64) {
        let slots = self.slots();
        let first = slots.first().map_or(LEAD_S, |s| s.start_s);
        let last = slots.last().map_or(LEAD_S, |s| s.start_s);
        (first + window_from_s(), last + window_to_s() + CHIRP_S)
    }

    /// What `speaker` plays at `sample_rate`: the whole sequence, silent but for its slots.
    pub fn render(&self, speaker: usize, sample_rate: f64) -> Result<Vec<f32>, CalibrationError> {
        check_rate(sample_rate)?;
        if speaker >= self.speakers {
            return Err(CalibrationError::NoSuchSpeaker { speaker, last: self.speakers - 1 });
        }
        let chirp = chirp(sample_rate);
        let mut out = vec![0.0; (self.duration_s() * sample_rate).ceil() as usize];
        for slot in self.slots().into_iter().filter(|s| s.speaker == speaker) {
            let at = (slot.start_s * sample_rate).round() as usize;
            for (o, c) in out[at..].iter_mut().zip(&chirp) {
                *o = *c;
            }
        }
        Ok(out)
    }
}

/// Where a slot's window starts, relative to its chirp's start: early enough that even the
/// earliest arrival has [`DIRECT_LOOKBACK_S`] and 15 ms more of quiet before it, where the
/// noise floor is measured.
fn window_from_s() -> f64 {
    -MIC_OFFSET_MAX_S - SKEW_SLACK_S - DIRECT_LOOKBACK_S - 0.015
}

/// Where it ends.
fn window_to_s() -> f64 {
    MIC_OFFSET_MAX_S + LATENCY_MAX_S + SKEW_SLACK_S
}

fn check_rate(sample_rate: f64) -> Result<(), CalibrationError> {
    if (16_000.0..=384_000.0).contains(&sample_rate) {
        Ok(())
    } else {
        Err(CalibrationError::SampleRate(sample_rate))
    }
}

/// The chirp at `sample_rate`: a linear sweep down from [`CHIRP_HIGH_HZ`] to
/// [`CHIRP_LOW_HZ`] over [`CHIRP_S`], at [`CHIRP_LEVEL`], with raised-cosine fades.
///
/// Linear and downwards, for a speaker that distorts. An exponential sweep turns harmonic
/// distortion into sharp copies of the response *before* it (Farina's method, made to separate
/// them), and an upward linear sweep smears them before it: either way an estimator looking for
/// the earliest sound would take them for the direct sound. The harmonics of a downward sweep
/// meet the sweep's own frequencies only later in it, so they land *after* the direct sound,
/// among the echoes, smeared.
pub fn chirp(sample_rate: f64) -> Vec<f32> {
    let n = (CHIRP_S * sample_rate).round() as usize;
    let rate = (CHIRP_HIGH_HZ - CHIRP_LOW_HZ) / CHIRP_S;
    let fade = FADE_S * sample_rate;
    (0..n)
        .map(|i| {
            let t = i as f64 / sample_rate;
            let phase = 2.0 * std::f64::consts::PI * (CHIRP_HIGH_HZ * t - 0.5 * rate * t * t);
            let edge = (i as f64).min((n - 1 - i) as f64);
            let gain = if edge < fade {
                0.5 - 0.5 * (std::f64::consts::PI * edge / fade).cos()
            } else {
                1.0
            };
            (f64::from(CHIRP_LEVEL) * gain * phase.sin()) as f32
        })
        .collect()
}

/// What the microphone heard.
#[derive(Clone, Copy, Debug)]
pub struct Recording<'a> {
    /// Mono samples.
    pub samples: &'a [f32],
    /// The microphone's nominal sample rate, Hz (its real rate may differ by a few hundred
    /// ppm: the estimator measures that).
    pub sample_rate: f64,
    /// The sequence time of `samples[0]`, seconds, as the microphone's timestamps date it
    /// (wrong by up to [`MIC_OFFSET_MAX_S`] either way is fine).
    pub start_s: f64,
}

/// What was found in one slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Peak {
    /// The direct sound's arrival, sequence seconds as the microphone dates it.
    pub at_s: f64,
    /// How far it stands above the correlation's noise floor, dB.
    pub peak_db: f64,
}

/// One speaker's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arrival {
    /// When its sound arrives after it was due, milliseconds, in the microphone's dating (which
    /// is off by an unknown common amount: only differences between speakers mean anything).
    /// `None` when no sound recurred in every round.
    pub arrival_ms: Option<f64>,
    /// The weakest round's direct sound above the noise floor, dB.
    pub peak_db: f64,
    /// The weakest round's loudest sound (the direct one or an echo) above it, dB.
    pub loudest_db: f64,
    /// How far its rounds disagree once the skew is out, milliseconds.
    pub spread_ms: Option<f64>,
    /// Whether to trust and apply it.
    pub confident: bool,
    /// Why not, when not.
    pub refused: Option<String>,
    /// The direct sound in every round, in round order (the loudest ones when the rounds
    /// disagree; none without a skew).
    pub rounds: Vec<Peak>,
}

/// A calibration's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Per speaker, in the plan's order.
    pub speakers: Vec<Arrival>,
    /// The microphone's clock against the stream's, ppm (positive: it runs fast), when any
    /// speaker was heard in every round.
    pub skew_ppm: Option<f64>,
}

impl Estimate {
    /// The extra delay, milliseconds, that makes each confident speaker arrive with the
    /// latest confident one; `None` for a refused speaker (leave its delay as it is).
    pub fn delays_ms(&self) -> Vec<Option<f64>> {
        let latest = self
            .speakers
            .iter()
            .filter(|a| a.confident)
            .filter_map(|a| a.arrival_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        self.speakers
            .iter()
            .map(|a| match (a.confident, a.arrival_ms) {
                (true, Some(t)) => Some(latest - t),
                _ => None,
            })
            .collect()
    }
}

/// The matched filter, ready for recordings at one sample rate (its FFTs planned once).
pub struct Estimator {
    sample_rate: f64,
    n: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    /// The chirp's inverse filter, band-weighted (see [`Estimator::new`]).
    reference: Vec<Complex<f32>>,
    chirp_len: usize,
}

impl std::fmt::Debug for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Estimator")
            .field("sample_rate", &self.sample_rate)
            .field("n", &self.n)
            .finish()
    }
}

impl Estimator {
    /// A matched filter for recordings at `sample_rate`.
    pub fn new(sample_rate: f64) -> Result<Estimator, CalibrationError> {
        check_rate(sample_rate)?;
        let chirp = chirp(sample_rate);
        let lags = ((window_to_s() - window_from_s()) * sample_rate).ceil() as usize + 2;
        let n = (lags + chirp.len()).next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        let mut input = forward.make_input_vec();
        input[..chirp.len()].copy_from_slice(&chirp);
        let mut reference = forward.make_output_vec();
        forward.process(&mut input, &mut reference).expect("buffers sized by the plan");
        // The matched filter, weighted across the band by a Hann window (and divided by the
        // chirp's own spectrum, flat but for the fades, regularised): the room's response
        // band-limited, a main lobe of ±0.15 ms and sidelobes 31 dB down. The plain matched
        // filter's sidelobes (the band's sharp edges) would hide a quiet direct sound just
        // before a loud echo.
        let power_max = reference.iter().map(|c| c.norm_sqr()).fold(0.0f32, f32::max);
        let bin_hz = sample_rate / n as f64;
        let scale = 1.0 / n as f32;
        for (k, c) in reference.iter_mut().enumerate() {
            let f = k as f64 * bin_hz;
            let weight = if (CHIRP_LOW_HZ..=CHIRP_HIGH_HZ).contains(&f) {
                let x = (f - CHIRP_LOW_HZ) / (CHIRP_HIGH_HZ - CHIRP_LOW_HZ);
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * x).cos()) as f32
            } else {
                0.0
            };
            *c = c.conj() * (weight * scale / (c.norm_sqr() + 1e-4 * power_max));
        }
        Ok(Estimator { sample_rate, n, forward, inverse, reference, chirp_len: chirp.len() })
    }

    /// The sample rate it was made for.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Finds every speaker's arrival in `recording` (which must be at this estimator's rate).
    pub fn estimate(
        &self,
        plan: &Plan,
        recording: &Recording,
    ) -> Result<Estimate, CalibrationError> {
        if recording.sample_rate != self.sample_rate {
            return Err(CalibrationError::SampleRate(recording.sample_rate));
        }
        if let Some(i) = recording.samples.iter().position(|s| !s.is_finite()) {
            return Err(CalibrationError::NotFinite(i));
        }
        let slots = plan.slots();
        let peaks = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| self.find(plan, recording, i, slot))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(fit(plan, &slots, &peaks))
    }

    /// The correlation envelope of `segment` with the chirp, for its first `lags` lags.
    fn envelope(&self, segment: &[f32], lags: usize) -> Vec<f32> {
        let mut input = self.forward.make_input_vec();
        input[..segment.len()].copy_from_slice(segment);
        let mut spectrum = self.forward.make_output_vec();
        self.forward.process(&mut input, &mut spectrum).expect("buffers sized by the plan");
        for (s, r) in spectrum.iter_mut().zip(&self.reference) {
            *s *= r;
        }
        // The correlation, and its Hilbert transform (every positive frequency turned by
        // −90°): together, the analytic correlation, whose magnitude is the envelope.
        let mut quadrature: Vec<Complex<f32>> =
            spectrum.iter().map(|c| Complex::new(c.im, -c.re)).collect();
        let last = quadrature.len() - 1;
        quadrature[0] = Complex::default();
        quadrature[last] = Complex::default();
        let (dc, nyquist) = (spectrum[0].re, spectrum[last].re);
        spectrum[0] = Complex::new(dc, 0.0);
        spectrum[last] = Complex::new(nyquist, 0.0);
        let mut real = self.inverse.make_output_vec();
        let mut imag = self.inverse.make_output_vec();
        self.inverse.process(&mut spectrum, &mut real).expect("buffers sized by the plan");
        self.inverse.process(&mut quadrature, &mut imag).expect("buffers sized by the plan");
        real[..lags].iter().zip(&imag[..lags]).map(|(r, i)| r.hypot(*i)).collect()
    }

    /// The envelope of the room's response in `slot`'s window (for a plot, or a closer look
    /// at a refusal): the sequence time of its first value, and one value per sample.
    pub fn response(&self, recording: &Recording, slot: &Slot) -> Option<(f64, Vec<f32>)> {
        let fs = self.sample_rate;
        let lo = ((slot.start_s + window_from_s() - recording.start_s) * fs).floor();
        let hi = ((slot.start_s + window_to_s() - recording.start_s) * fs).ceil();
        let end = hi as usize + self.chirp_len;
        if lo < 0.0 || end > recording.samples.len() {
            return None;
        }
        let (lo, hi) = (lo as usize, hi as usize);
        let envelope = self.envelope(&recording.samples[lo..end], hi - lo + 1);
        Some((recording.start_s + lo as f64 / fs, envelope))
    }

    /// What one slot's window holds: its loudest sound and every sound before it (within
    /// [`DIRECT_LOOKBACK_S`]) that could be the direct one.
    fn find(
        &self,
        plan: &Plan,
        rec: &Recording,
        index: usize,
        slot: &Slot,
    ) -> Result<Heard, CalibrationError> {
        let fs = self.sample_rate;
        let from_s = slot.start_s + window_from_s();
        let to_s = slot.start_s + window_to_s();
        let lo = ((from_s - rec.start_s) * fs).floor();
        let hi = ((to_s - rec.start_s) * fs).ceil();
        let end = hi + self.chirp_len as f64;
        if lo < 0.0 || end > rec.samples.len() as f64 {
            let (earliest_s, latest_s) = plan.recording_span_s();
            return Err(CalibrationError::Short {
                slot: index,
                have_s: rec.start_s,
                end_s: rec.start_s + rec.samples.len() as f64 / fs,
                need_from_s: from_s,
                need_to_s: to_s + CHIRP_S,
                earliest_s,
                latest_s,
            });
        }
        let (lo, hi, end) = (lo as usize, hi as usize, end as usize);
        let envelope = self.envelope(&rec.samples[lo..end], hi - lo + 1);
        let (loudest, &top) = envelope
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("a window holds lags");
        let reach = (DIRECT_LOOKBACK_S * fs) as usize;
        // The noise floor: before anything this speaker sent arrived (the echoes after it
        // do not hide a direct sound, which comes first). The window starts early enough for
        // 15 ms of it at least; the whole window only when the loudest sound is right at its
        // start (a neighbour's, not this speaker's).
        let before = loudest.saturating_sub(reach);
        let quiet =
            if before >= (0.01 * fs) as usize { &envelope[..before] } else { &envelope[..] };
        let mut sorted = quiet.to_vec();
        let mid = sorted.len() / 2;
        let median = *sorted.select_nth_unstable_by(mid, f32::total_cmp).1;
        let floor = (f64::from(median) * RAYLEIGH_MEDIAN_TO_RMS).max(f64::MIN_POSITIVE);
        let db = |v: f32| 20.0 * (f64::from(v) / floor).log10();
        let peak = |k: usize| {
            let frac = match (k.checked_sub(1).map(|j| envelope[j]), envelope.get(k + 1)) {
                (Some(a), Some(&c)) => {
                    let b = envelope[k];
                    let denom = a - 2.0 * b + c;
                    if denom < 0.0 {
                        f64::from(0.5 * (a - c) / denom).clamp(-0.5, 0.5)
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            Peak {
                at_s: rec.start_s + (lo as f64 + k as f64 + frac) / fs,
                peak_db: db(envelope[k]),
            }
        };
        let fraction = 10f64.powf(-SEARCH_DB / 20.0) as f32;
        let candidates = (before.max(1)..loudest)
            .filter(|&k| {
                let v = envelope[k];
                v >= fraction * top
                    && db(v) >= MIN_PEAK_DB
                    && v >= envelope[k - 1]
                    && v >= envelope[k + 1]
            })
            .chain(std::iter::once(loudest))
            .map(peak)
            .collect();
        Ok(Heard { loudest: peak(loudest), candidates })
    }
}

/// What one slot's window holds.
#[derive(Clone, Debug)]
struct Heard {
    /// Its loudest sound: the direct one, or an echo.
    loudest: Peak,
    /// The sounds that could be the direct one, earliest first (the loudest last).
    candidates: Vec<Peak>,
}

/// Sounds within this of a slot's loudest give the microphone's skew, dB.
const LOUD_DB: f64 = 10.0;

/// How closely a sound must recur in every round, once the skew is out, to be one arrival.
const MATCH_S: f64 = 0.15e-3;

/// Every speaker's arrival from its rounds: the microphone's skew (a common slope of lateness
/// against time, [`consensus_skew`]), then, per speaker, the earliest sound heard in every
/// round at the same lateness; then the skew again from those, over the confident speakers.
fn fit(plan: &Plan, slots: &[Slot], heard: &[Heard]) -> Estimate {
    let per_speaker: Vec<Vec<(f64, &Heard)>> = (0..plan.speakers())
        .map(|i| {
            slots
                .iter()
                .zip(heard)
                .filter(|(s, _)| s.speaker == i)
                .map(|(s, h)| (s.start_s, h))
                .collect()
        })
        .collect();
    let rough = consensus_skew(&per_speaker);
    let judge = |skew: Option<f64>| -> Vec<Arrival> {
        per_speaker.iter().map(|rounds| judge_speaker(rounds, skew)).collect()
    };
    let first = judge(rough);
    let confident: Vec<Vec<(f64, f64)>> = per_speaker
        .iter()
        .zip(&first)
        .filter(|(_, a)| a.confident)
        .map(|(r, a)| r.iter().zip(&a.rounds).map(|((s, _), p)| (*s, p.at_s)).collect())
        .collect();
    let skew = if confident.is_empty() { rough } else { Some(slope(&confident)) };
    Estimate { speakers: judge(skew), skew_ppm: skew.map(|e| e * 1e6) }
}

/// The microphone's skew that most sounds agree on. Every sound that recurs in every round of
/// a speaker on one straight line (lateness against the rounds' times) gives a slope; real
/// sounds (direct or echo, any speaker) all give the microphone's skew, noise does not recur.
/// The slope most of those lines agree with, refined by least squares over them.
fn consensus_skew<'a>(per_speaker: &[Vec<(f64, &'a Heard)>]) -> Option<f64> {
    let mut lines: Vec<(f64, Vec<(f64, f64)>)> = Vec::new();
    for rounds in per_speaker.iter().filter(|r| r.len() >= 2) {
        let (s0, first) = rounds[0];
        let (sn, last) = rounds[rounds.len() - 1];
        // The loud sounds only: few, far apart, each a real arrival (a crowd of weak echoes
        // would line up by chance).
        let loud = |h: &'a Heard| {
            h.candidates.iter().filter(move |p| p.peak_db >= h.loudest.peak_db - LOUD_DB)
        };
        for a in loud(first) {
            for b in loud(last) {
                let e = ((b.at_s - sn) - (a.at_s - s0)) / (sn - s0);
                if e.abs() * 1e6 > MAX_SKEW_PPM {
                    continue;
                }
                let on_line = |s: f64, h: &Heard| {
                    let want = a.at_s - s0 + e * (s - s0);
                    h.candidates
                        .iter()
                        .map(|p| p.at_s - s)
                        .find(|l| (l - want).abs() <= MATCH_S)
                        .map(|l| (s, l + s))
                };
                let points: Option<Vec<(f64, f64)>> =
                    rounds.iter().map(|(s, h)| on_line(*s, h)).collect();
                if let Some(points) = points {
                    lines.push((e, points));
                }
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    // Lines within the slope a match allows over the sequence agree; the slope most lines
    // agree with wins (ties: the smaller skew).
    let span = per_speaker
        .iter()
        .filter_map(|r| Some(r.last()?.0 - r.first()?.0))
        .fold(0.0, f64::max)
        .max(SLOT_S);
    let tolerance = 2.0 * MATCH_S / span;
    let support = |e: f64| lines.iter().filter(|(f, _)| (f - e).abs() <= tolerance).count();
    let best = lines
        .iter()
        .map(|(e, _)| *e)
        .max_by(|a, b| support(*a).cmp(&support(*b)).then(b.abs().total_cmp(&a.abs())))
        .expect("lines is not empty");
    let near: Vec<Vec<(f64, f64)>> = lines
        .into_iter()
        .filter(|(e, _)| (e - best).abs() <= tolerance)
        .map(|(_, points)| points)
        .collect();
    Some(slope(&near))
}

/// One speaker's arrival from its rounds, with the microphone's `skew`.
fn judge_speaker(rounds: &[(f64, &Heard)], skew: Option<f64>) -> Arrival {
    let loudest_db = rounds.iter().map(|(_, h)| h.loudest.peak_db).fold(f64::INFINITY, f64::min);
    let refuse = |why: String, picks: Vec<Peak>| Arrival {
        arrival_ms: None,
        peak_db: picks.iter().map(|p| p.peak_db).fold(f64::INFINITY, f64::min),
        loudest_db,
        spread_ms: None,
        confident: false,
        refused: Some(why),
        rounds: picks,
    };
    let Some(e) = skew else {
        return refuse(
            "no speaker was heard in every round, so the microphone's clock could not be \
             measured (bring the microphone closer, raise the volume, or quiet the room)"
                .to_owned(),
            Vec::new(),
        );
    };
    if e.abs() * 1e6 > MAX_SKEW_PPM {
        return refuse(
            format!(
                "the rounds imply a microphone clock {:.0} ppm off (more than {MAX_SKEW_PPM}): \
                 echoes or noise took a round; try again, or move the microphone",
                e * 1e6
            ),
            Vec::new(),
        );
    }
    // Every sound's lateness (after its slot's start, the skew taken out), and in how many
    // rounds a sound recurs at that lateness.
    let late = |s: f64, p: &Peak| p.at_s - s - e * s;
    let recurring = |target: f64| -> Vec<Option<Peak>> {
        rounds
            .iter()
            .map(|(s, h)| {
                h.candidates
                    .iter()
                    .filter(|p| (late(*s, p) - target).abs() <= MATCH_S)
                    .min_by(|a, b| {
                        (late(*s, a) - target).abs().total_cmp(&(late(*s, b) - target).abs())
                    })
                    .copied()
            })
            .collect()
    };
    let mut sounds: Vec<(f64, usize, Vec<Option<Peak>>)> = rounds
        .iter()
        .flat_map(|(s, h)| h.candidates.iter().map(move |p| late(*s, p)))
        .map(|t| {
            let found = recurring(t);
            (t, found.iter().flatten().count(), found)
        })
        .collect();
    sounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let unclear = (loudest_db < MIN_PEAK_DB + SEARCH_DB).then(|| {
        format!(
            "not heard clearly: the weakest round's loudest sound stands {loudest_db:.1} dB above \
             the noise (needs {} dB to tell the direct sound from an echo; bring the microphone \
             closer, raise the volume, or quiet the room)",
            MIN_PEAK_DB + SEARCH_DB
        )
    });
    let Some(direct) = sounds.iter().position(|(_, n, _)| *n == rounds.len()) else {
        let picks = rounds.iter().map(|(_, h)| h.loudest).collect();
        return refuse(
            unclear.unwrap_or_else(|| {
                "the rounds disagree: no sound came back at the same time in every round; try \
                 again, or move the microphone"
                    .to_owned()
            }),
            picks,
        );
    };
    let picks: Vec<Peak> = sounds[direct].2.iter().flatten().copied().collect();
    let lateness: Vec<f64> = rounds.iter().zip(&picks).map(|((s, _), p)| late(*s, p)).collect();
    let max = lateness.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = lateness.iter().copied().fold(f64::INFINITY, f64::min);
    let spread_ms = 1e3 * (max - min);
    // The lateness is in the microphone's seconds: stretched by the skew like everything.
    let arrival_ms = 1e3 * lateness.iter().sum::<f64>() / lateness.len() as f64 / (1.0 + e);
    let peak_db = picks.iter().map(|p| p.peak_db).fold(f64::INFINITY, f64::min);
    let earlier =
        sounds[..direct].iter().any(|(t, n, _)| *n >= 2 && *t < sounds[direct].0 - MATCH_S);
    let refused = if unclear.is_some() {
        unclear
    } else if earlier {
        Some(
            "a sound before the one heard in every round came back in some rounds only: the \
             direct sound may be that one; try again, or quiet the room"
                .to_owned(),
        )
    } else if spread_ms > MAX_SPREAD_MS {
        Some(format!(
            "the rounds disagree by {spread_ms:.2} ms (more than {MAX_SPREAD_MS} ms): echoes or \
             noise took a round; try again, or move the microphone"
        ))
    } else {
        None
    };
    Arrival {
        arrival_ms: Some(arrival_ms),
        peak_db,
        loudest_db,
        spread_ms: Some(spread_ms),
        confident: refused.is_none(),
        refused,
        rounds: picks,
    }
}

/// The least-squares slope common to several speakers' lines of lateness (`at_s − start_s`)
/// against `start_s`, each with its own intercept; points are `(start_s, at_s)`.
fn slope(groups: &[Vec<(f64, f64)>]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for points in groups {
        let n = points.len() as f64;
        let xm = points.iter().map(|(s, _)| s).sum::<f64>() / n;
        let ym = points.iter().map(|(s, at)| at - s).sum::<f64>() / n;
        for (s, at) in points {
            num += (s - xm) * (at - s - ym);
            den += (s - xm) * (s - xm);
        }
    }
    if den > 0.0 { num / den } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FS: f64 = 48_000.0;

    /// A recording of `plan` where speaker i arrives `arrivals[i]` seconds late, dated from
    /// `start_s`, with the microphone's clock `skew` fast, plus a little noise.
    fn heard(plan: &Plan, arrivals: &[f64], gains: &[f32], skew: f64, start_s: f64) -> Vec<f32> {
        let (_, end) = plan.recording_span_s();
        let mut out = vec![0.0f32; ((end - start_s) * FS) as usize + 10];
        let c = chirp(FS);
        for slot in plan.slots() {
            let t = (slot.start_s + arrivals[slot.speaker] - start_s) * (1.0 + skew);
            // Whole samples here (fractions are the simulator's business).
            let at = (t * FS).round() as usize;
            for (o, s) in out[at..].iter_mut().zip(&c) {
                *o += s * gains[slot.speaker];
            }
        }
        let mut x = 12345u32;
        for o in &mut out {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *o += (x as f32 / u32::MAX as f32 - 0.5) * 0.01;
        }
        out
    }

    #[test]
    fn every_speaker_is_found_to_a_sample_and_the_delays_line_them_up() {
        let plan = Plan::new(3).unwrap();
        let arrivals = [0.004, 0.1125, 0.2708];
        let samples = heard(&plan, &arrivals, &[0.3, 0.05, 0.8], 80e-6, 0.0);
        let est = Estimator::new(FS)
            .unwrap()
            .estimate(&plan, &Recording { samples: &samples, sample_rate: FS, start_s: 0.0 })
            .unwrap();
        let skew = est.skew_ppm.unwrap();
        // Whole-sample arrivals: a few ppm of rounding.
        assert!((skew - 80.0).abs() < 5.0, "skew {skew} ppm");
        for (a, truth) in est.speakers.iter().zip(arrivals) {
            assert!(a.confident, "{a:?}");
            let got = a.arrival_ms.unwrap();
            assert!((got - truth * 1e3).abs() < 1e3 / FS, "{got} ms against {truth} s");
        }
        let delays = est.delays_ms();
        let applied: Vec<f64> =
            arrivals.iter().zip(&delays).map(|(a, d)| a * 1e3 + d.unwrap()).collect();
        assert!(applied.iter().all(|t| (t - applied[2]).abs() < 0.03), "{applied:?}");
        assert_eq!(delays[2], Some(0.0));
    }

    #[test]
    fn a_silent_speaker_is_refused_and_gets_no_delay() {
        let plan = Plan::new(2).unwrap();
        let samples = heard(&plan, &[0.01, 0.02], &[0.5, 0.0], 0.0, 0.0);
        let est = Estimator::new(FS)
            .unwrap()
            .estimate(&plan, &Recording { samples: &samples, sample_rate: FS, start_s: 0.0 })
            .unwrap();
        assert!(est.speakers[0].confident);
        assert!(!est.speakers[1].confident);
        assert!(est.speakers[1].refused.as_deref().unwrap().contains("not heard clearly"));
        assert_eq!(est.delays_ms(), vec![Some(0.0), None]);
    }

    #[test]
    fn a_recording_that_misses_a_window_says_what_to_record() {
        let plan = Plan::new(2).unwrap();
        let samples = vec![0.0; 57_600];
        let err = Estimator::new(FS)
            .unwrap()
            .estimate(&plan, &Recording { samples: &samples, sample_rate: FS, start_s: 0.0 })
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("slot 1") && text.contains("record from 0.030 s"), "{text}");
        let nan = vec![f32::NAN; 10];
        let err = Estimator::new(FS)
            .unwrap()
            .estimate(&plan, &Recording { samples: &nan, sample_rate: FS, start_s: 0.0 })
            .unwrap_err();
        assert_eq!(err, CalibrationError::NotFinite(0));
        assert_eq!(Plan::new(0), Err(CalibrationError::Speakers(0)));
        assert!(Estimator::new(8_000.0).is_err());
    }

    #[test]
    fn the_filter_keeps_an_echo_a_third_of_a_millisecond_later_apart() {
        // One clean chirp: the envelope's sidelobes must stay far below the search range, or a
        // filter's own ripple would be taken for a direct sound before a loud echo.
        let plan = Plan::new(1).unwrap();
        let (_, end) = plan.recording_span_s();
        let mut x = vec![0.0f32; (end * FS) as usize + 100];
        let at = ((LEAD_S + 0.1) * FS) as usize;
        for (o, s) in x[at..].iter_mut().zip(&chirp(FS)) {
            *o = *s;
        }
        let rec = Recording { samples: &x, sample_rate: FS, start_s: 0.0 };
        let env = Estimator::new(FS).unwrap().response(&rec, &plan.slots()[0]).unwrap().1;
        let (k, top) = env.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        let beyond = |lags: usize| {
            let worst = env
                .iter()
                .enumerate()
                .filter(|(j, _)| j.abs_diff(k) > lags)
                .map(|(_, v)| v / top)
                .fold(0.0f32, f32::max);
            20.0 * worst.log10()
        };
        // 16 samples = 0.33 ms.
        assert!(beyond(16) < -(SEARCH_DB as f32) - 6.0, "{} dB", beyond(16));
        assert!(beyond(100) < -60.0, "{} dB", beyond(100));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 24,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever a microphone delivers (any pattern of values, huge, tiny, infinite, not a
        /// number), the estimator answers: an error naming the sample, or an estimate whose
        /// every speaker is either confident with a finite arrival or refused with a reason.
        #[test]
        fn any_recording_gets_an_answer_never_a_panic(
            pattern in proptest::collection::vec(
                proptest::num::f32::POSITIVE
                    | proptest::num::f32::NEGATIVE
                    | proptest::num::f32::NORMAL
                    | proptest::num::f32::SUBNORMAL
                    | proptest::num::f32::ZERO,
                1..48,
            ),
            poison in proptest::option::weighted(0.2, (0usize..200_000, proptest::num::f32::ANY)),
            speakers in 1usize..4,
            start_s in -0.05f64..0.02,
        ) {
            let plan = Plan::new(speakers).unwrap();
            let (_, end) = plan.recording_span_s();
            let len = ((end - start_s) * FS) as usize + 1;
            let mut samples: Vec<f32> = pattern.iter().copied().cycle().take(len).collect();
            if let Some((at, v)) = poison {
                samples[at % len] = v;
            }
            let rec = Recording { samples: &samples, sample_rate: FS, start_s };
            match Estimator::new(FS).unwrap().estimate(&plan, &rec) {
                Err(CalibrationError::NotFinite(i)) => proptest::prop_assert!(!samples[i].is_finite()),
                Err(e) => proptest::prop_assert!(false, "{}", e),
                Ok(est) => {
                    proptest::prop_assert_eq!(est.speakers.len(), speakers);
                    for a in &est.speakers {
                        proptest::prop_assert!(
                            (a.confident && a.arrival_ms.is_some_and(f64::is_finite))
                                || (!a.confident && a.refused.is_some()),
                            "{:?}", a
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_speaker_renders_its_own_slots_only() {
        let plan = Plan::new(2).unwrap();
        let a = plan.render(0, FS).unwrap();
        let b = plan.render(1, FS).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(
            plan.render(2, FS).unwrap_err().to_string(),
            "speaker 2: the plan has speakers 0–1"
        );
        let on = |x: &[f32], t: f64| x[((t + 0.1) * FS) as usize].abs() > 0.0;
        for slot in plan.slots() {
            let (mine, other) = if slot.speaker == 0 { (&a, &b) } else { (&b, &a) };
            assert!(on(mine, slot.start_s) && !on(other, slot.start_s), "{slot:?}");
        }
        let last =
            LEAD_S + 2.0 * SLOT_S + 2.0 * (SLOT_S + ROUND_GAP_S) + SLOT_S + 2.0 * ROUND_GAP_S;
        assert!((plan.slots()[5].start_s - last).abs() < 1e-9);
        assert!((plan.duration_s() - (last + SLOT_S + 0.33)).abs() < 1e-9);
        let order: Vec<usize> = plan.slots().iter().map(|s| s.speaker).collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1]);
    }
}
