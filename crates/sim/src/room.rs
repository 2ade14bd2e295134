//! Simulated rooms for acoustic calibration: what a microphone hears when a zone's speakers
//! play [`tutti_calib`]'s test sequence.
//!
//! A shoebox room with one reflection coefficient for every wall: the direct sound and the
//! image sources up to second order per axis (Allen & Berkley), each a windowed-sinc tap at its
//! exact fractional delay, then a diffuse tail (Gaussian noise decaying with the room's
//! Sabine RT60, at the reverberant level diffuse-field theory gives the room). Each speaker has
//! a hidden latency from a class (wired, HDMI, Bluetooth, DSP), soft-clips its input and rolls
//! off below and above; the microphone's recording is dated wrong by a fixed amount, its clock
//! runs up to ±100 ppm off the stream's, and white noise is added at a chosen SNR (full band,
//! against the test signal's power while it plays).

use std::f64::consts::PI;
use std::sync::Arc;

use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use tutti_calib::{CHIRP_LEVEL, CHIRP_S, Plan};

use crate::rng::{Rng, splitmix};

/// Metres per second.
pub const SPEED_OF_SOUND: f64 = 343.0;
/// The microphone's nominal rate.
pub const SAMPLE_RATE: f64 = 48_000.0;
/// Half-width of the fractional-delay kernel, samples.
const KERNEL: usize = 16;
/// The longest impulse response kept, seconds.
const RESPONSE_S: f64 = 0.7;
/// Image sources up to this order per axis.
const ORDER: i32 = 1;

/// One speaker in a room.
#[derive(Clone, Debug)]
pub struct Speaker {
    /// Its latency class: `wired`, `hdmi`, `bluetooth` or `dsp`.
    pub class: &'static str,
    /// What it adds before its sound leaves it, seconds.
    pub latency_s: f64,
    /// Where it stands, metres.
    pub position: [f64; 3],
    /// How far from the microphone, metres.
    pub distance_m: f64,
    /// Its bass roll-off (second-order high-pass), Hz.
    pub highpass_hz: f64,
    /// Its treble roll-off (second-order low-pass), Hz.
    pub lowpass_hz: f64,
    /// How hard its amplifier clips (tanh drive: 0.5 gentle, about 3 % distortion; 2.5
    /// hard, about 20 %).
    pub drive: f64,
    /// Where it faces (a horizontal unit vector): it is quieter off axis, down to
    /// [`BACK_GAIN`] behind, so a speaker facing a wall can be heard louder by reflection
    /// than directly.
    pub facing: [f64; 3],
}

/// A speaker's gain behind it, against on axis (−16 dB).
pub const BACK_GAIN: f64 = 0.15;

/// A speaker's gain in a direction whose cosine to its axis is `cos`: a cardioid, floored.
fn directivity(cos: f64) -> f64 {
    (0.5 + 0.5 * cos).max(BACK_GAIN)
}

/// A room, its speakers and its microphone.
#[derive(Clone, Debug)]
pub struct Room {
    /// Length, width, height, metres.
    pub size: [f64; 3],
    /// Every wall's pressure reflection coefficient.
    pub reflection: f64,
    /// Sabine reverberation time, seconds.
    pub rt60_s: f64,
    /// The microphone's position.
    pub mic: [f64; 3],
    /// How wrong the recording's dating is, seconds (the microphone's unknown latency).
    pub mic_offset_s: f64,
    /// The microphone's clock against the stream's, ppm.
    pub skew_ppm: f64,
    /// The speakers, in the order the calibration plays them.
    pub speakers: Vec<Speaker>,
    /// Seeds each speaker's diffuse tail (the room answers the same way every round, and
    /// whatever the order the speakers play in).
    tail_seed: u64,
}

impl Room {
    /// A random room with 2–4 speakers.
    pub fn random(rng: &mut Rng) -> Room {
        let size = [rng.range(4.0, 10.0), rng.range(3.5, 8.0), rng.range(2.4, 3.5)];
        let reflection = rng.range(0.5, 0.9);
        let mic =
            [rng.range(0.5, size[0] - 0.5), rng.range(0.5, size[1] - 0.5), rng.range(0.8, 1.8)];
        let n = 2 + (rng.next_u64() % 3) as usize;
        let speakers = (0..n)
            .map(|_| {
                let (class, lo, hi) = match rng.next_u64() % 4 {
                    0 => ("wired", 0.0, 5.0),
                    1 => ("hdmi", 20.0, 150.0),
                    2 => ("bluetooth", 100.0, 250.0),
                    _ => ("dsp", 5.0, 60.0),
                };
                let latency_s = rng.range(lo, hi) / 1e3;
                // Somewhere in the room 1–8 m from the microphone.
                let (position, distance_m) = loop {
                    let p = [
                        rng.range(0.2, size[0] - 0.2),
                        rng.range(0.2, size[1] - 0.2),
                        rng.range(0.3, 2.2),
                    ];
                    let d = dist(p, mic);
                    if (1.0..=8.0).contains(&d) {
                        break (p, d);
                    }
                };
                Speaker {
                    class,
                    latency_s,
                    position,
                    distance_m,
                    highpass_hz: rng.range(60.0, 250.0),
                    lowpass_hz: rng.range(8_000.0, 18_000.0),
                    drive: rng.range(0.5, 2.5),
                    facing: {
                        let a = rng.range(0.0, 2.0 * PI);
                        [a.cos(), a.sin(), 0.0]
                    },
                }
            })
            .collect();
        let rt60_s = sabine(size, reflection);
        Room {
            size,
            reflection,
            rt60_s,
            mic,
            mic_offset_s: rng.range(-0.08, 0.08),
            skew_ppm: rng.range(-100.0, 100.0),
            speakers,
            tail_seed: rng.next_u64(),
        }
    }

    /// When speaker `i`'s sound truly reaches the microphone after it was due, seconds.
    pub fn truth_s(&self, i: usize) -> f64 {
        let s = &self.speakers[i];
        s.latency_s + s.distance_m / SPEED_OF_SOUND
    }

    /// The microphone's recording of `plan` (one slot per speaker per round): samples at
    /// [`SAMPLE_RATE`] and the sequence time the microphone dates the first one. Noise at
    /// `snr_db`, none when `None`.
    pub fn record(&self, plan: &Plan, snr_db: Option<f64>, noise: &mut Rng) -> (Vec<f32>, f64) {
        let fs = SAMPLE_RATE;
        let (from, to) = plan.recording_span_s();
        let start_s = from - 0.02;
        let len = ((to + 0.02 - start_s) * fs).ceil() as usize;
        let skew = self.skew_ppm * 1e-6;
        // Where a sound truly at `t` lands in the recording (fractional sample).
        let index = |t: f64| (t - start_s + self.mic_offset_s) * fs * (1.0 + skew);
        let conv = Convolver::new(
            (CHIRP_S * fs) as usize
                + (0.02 * fs) as usize
                + (RESPONSE_S * fs) as usize
                + 2 * KERNEL,
        );
        let emitted: Vec<Vec<f32>> = self.speakers.iter().map(|s| speaker_output(s, fs)).collect();
        let spectra: Vec<_> = emitted.iter().map(|e| conv.spectrum(e)).collect();
        let tails: Vec<Vec<f32>> = self
            .speakers
            .iter()
            .map(|s| self.tail(&mut Rng::new(self.tail_seed ^ splitmix(s.position[0].to_bits()))))
            .collect();
        let mut out = vec![0.0f32; len];
        let slots = plan.slots();
        for slot in &slots {
            let sp = &self.speakers[slot.speaker];
            let due = slot.start_s + sp.latency_s;
            let direct = index(due + sp.distance_m / SPEED_OF_SOUND);
            let base = direct.floor() as i64 - KERNEL as i64;
            let mut h = vec![0.0f32; (RESPONSE_S * fs) as usize + 2 * KERNEL];
            for (d, gain) in self.images(sp) {
                let at = index(due + d / SPEED_OF_SOUND) - base as f64;
                add_tap(&mut h, at, gain);
            }
            // The diffuse tail, from a few ms after the direct sound.
            let tail_at = ((direct - base as f64 + 0.003 * fs) as usize).min(h.len());
            for (o, t) in h[tail_at..].iter_mut().zip(&tails[slot.speaker]) {
                *o += t;
            }
            let heard = conv.apply(&spectra[slot.speaker], &h);
            for (k, v) in heard.iter().enumerate() {
                let at = base + k as i64;
                if (0..len as i64).contains(&at) {
                    out[at as usize] += v;
                }
            }
        }
        if let Some(snr) = snr_db {
            let active = slots.len() as f64 * CHIRP_S * fs;
            let power = out.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / active;
            let sigma = (power / 10f64.powf(snr / 10.0)).sqrt();
            for o in &mut out {
                *o += (sigma * gaussian(noise)) as f32;
            }
        }
        (out, start_s)
    }

    /// The direct sound and the image sources of a speaker: distance to the microphone and
    /// amplitude (1 at 1 m on the speaker's axis for the direct sound).
    fn images(&self, speaker: &Speaker) -> Vec<(f64, f32)> {
        let source = speaker.position;
        let mut out = Vec::new();
        for l in -ORDER..=ORDER {
            for m in -ORDER..=ORDER {
                for n in -ORDER..=ORDER {
                    for u in 0..2 {
                        for v in 0..2 {
                            for w in 0..2 {
                                let axis = |q: i32, side: i32, i: usize| {
                                    (1 - 2 * side) as f64 * source[i]
                                        + 2.0 * q as f64 * self.size[i]
                                };
                                let p = [axis(l, u, 0), axis(m, v, 1), axis(n, w, 2)];
                                let bounces = (l - u).abs()
                                    + l.abs()
                                    + (m - v).abs()
                                    + m.abs()
                                    + (n - w).abs()
                                    + n.abs();
                                let d = dist(p, self.mic);
                                // The ray leaves the real speaker mirrored once per bounce on
                                // each axis: an odd count flips that component.
                                let cos = (0..3)
                                    .map(|i| {
                                        let flip = [u, v, w][i];
                                        (1 - 2 * flip) as f64 * (self.mic[i] - p[i]) / d
                                            * speaker.facing[i]
                                    })
                                    .sum::<f64>();
                                let gain = directivity(cos) * self.reflection.powi(bounces) / d;
                                out.push((d, gain as f32));
                            }
                        }
                    }
                }
            }
        }
        let direct = dist(source, self.mic);
        out.retain(|(d, _)| (d - direct) / SPEED_OF_SOUND < RESPONSE_S - 0.01);
        out
    }

    /// A speaker's diffuse tail: Gaussian noise rising over 10 ms and decaying with the RT60,
    /// carrying the reverberant energy of a diffuse field (16π / (S·α) relative to the direct
    /// sound at 1 m) less the early part the image sources already carry.
    fn tail(&self, rng: &mut Rng) -> Vec<f32> {
        let fs = SAMPLE_RATE;
        let energy = 0.7 * 16.0 * PI / absorption_area(self.size, self.reflection);
        let decay = 13.8 / self.rt60_s; // energy: e^(−13.8 t / RT60) is −60 dB at RT60
        let amplitude = (energy * decay / fs).sqrt();
        let n = (RESPONSE_S * 0.95 * fs) as usize;
        (0..n)
            .map(|k| {
                let t = k as f64 / fs;
                let rise = (t / 0.01).min(1.0);
                (amplitude * rise * (-0.5 * decay * t).exp() * gaussian(rng)) as f32
            })
            .collect()
    }
}

/// What a speaker sends into the room when it plays the chirp: clipped by its amplifier, then
/// rolled off by its drivers (and 20 ms for them to ring down).
fn speaker_output(s: &Speaker, fs: f64) -> Vec<f32> {
    let level = f64::from(CHIRP_LEVEL);
    let mut x: Vec<f64> = tutti_calib::chirp(fs)
        .iter()
        .map(|&v| level * (s.drive * f64::from(v) / level).tanh() / s.drive.tanh())
        .collect();
    x.extend(std::iter::repeat_n(0.0, (0.02 * fs) as usize));
    let mut hp = Biquad::highpass(s.highpass_hz, fs);
    let mut lp = Biquad::lowpass(s.lowpass_hz, fs);
    x.iter().map(|&v| lp.run(hp.run(v)) as f32).collect()
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A shoebox's equivalent absorption area S·α, m², its walls reflecting `reflection` of the
/// pressure (absorbing 1 − reflection² of the energy).
fn absorption_area(size: [f64; 3], reflection: f64) -> f64 {
    let [x, y, z] = size;
    2.0 * (x * y + x * z + y * z) * (1.0 - reflection * reflection)
}

/// Sabine's reverberation time of that shoebox.
fn sabine(size: [f64; 3], reflection: f64) -> f64 {
    0.161 * size[0] * size[1] * size[2] / absorption_area(size, reflection)
}

/// A tap of `gain` at fractional position `at` (Hann-windowed sinc, ±[`KERNEL`] samples).
fn add_tap(h: &mut [f32], at: f64, gain: f32) {
    let centre = at.floor() as i64;
    for k in centre - KERNEL as i64 + 1..=centre + KERNEL as i64 {
        if !(0..h.len() as i64).contains(&k) {
            continue;
        }
        let x = k as f64 - at;
        let sinc = if x.abs() < 1e-12 { 1.0 } else { (PI * x).sin() / (PI * x) };
        let window = 0.5 + 0.5 * (PI * x / KERNEL as f64).cos();
        h[k as usize] += gain * (sinc * window) as f32;
    }
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut Rng) -> f64 {
    let u = rng.f64().max(1e-300);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
}

/// A second-order Butterworth section (RBJ's cookbook).
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    z: [f64; 2],
}

impl Biquad {
    fn new(f: f64, fs: f64, high: bool) -> Biquad {
        let w = 2.0 * PI * f / fs;
        let alpha = w.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let c = w.cos();
        let a0 = 1.0 + alpha;
        let b = if high {
            [(1.0 + c) / 2.0, -(1.0 + c), (1.0 + c) / 2.0]
        } else {
            [(1.0 - c) / 2.0, 1.0 - c, (1.0 - c) / 2.0]
        };
        Biquad {
            b: [b[0] / a0, b[1] / a0, b[2] / a0],
            a: [-2.0 * c / a0, (1.0 - alpha) / a0],
            z: [0.0; 2],
        }
    }

    fn highpass(f: f64, fs: f64) -> Biquad {
        Biquad::new(f, fs, true)
    }

    fn lowpass(f: f64, fs: f64) -> Biquad {
        Biquad::new(f, fs, false)
    }

    fn run(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.z[0];
        self.z[0] = self.b[1] * x - self.a[0] * y + self.z[1];
        self.z[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

/// Linear convolution of a fixed-length signal with impulse responses, by FFT.
struct Convolver {
    n: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

impl Convolver {
    fn new(longest_output: usize) -> Convolver {
        let n = longest_output.next_power_of_two();
        let mut planner = RealFftPlanner::new();
        Convolver { n, forward: planner.plan_fft_forward(n), inverse: planner.plan_fft_inverse(n) }
    }

    fn spectrum(&self, x: &[f32]) -> Vec<realfft::num_complex::Complex<f32>> {
        let mut input = self.forward.make_input_vec();
        input[..x.len()].copy_from_slice(x);
        let mut out = self.forward.make_output_vec();
        self.forward.process(&mut input, &mut out).expect("sized by the plan");
        out
    }

    /// `signal` (given as its spectrum) convolved with `h`.
    fn apply(&self, signal: &[realfft::num_complex::Complex<f32>], h: &[f32]) -> Vec<f32> {
        let mut spectrum = self.spectrum(h);
        let scale = 1.0 / self.n as f32;
        for (a, b) in spectrum.iter_mut().zip(signal) {
            *a = *a * b * scale;
        }
        let mut out = self.inverse.make_output_vec();
        self.inverse.process(&mut spectrum, &mut out).expect("sized by the plan");
        out
    }
}
