//! The live mixer: many voices (microphones over the network, a backing track) into one
//! output, each with gain, mute and pan, a soft limiter on the sum, and peak/RMS meters the
//! UI reads without locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tutti_proto::LocalTime;

use crate::engine::Program;
use crate::ramp::GainRamp;

/// Peak and RMS of the last block, written by the media thread, read by anyone.
#[derive(Debug, Default)]
pub struct Meter {
    peak: AtomicU32,
    rms: AtomicU32,
}

impl Meter {
    /// Measures a block.
    pub fn measure(&self, samples: &[f32]) {
        let mut peak = 0.0f32;
        let mut sum = 0.0f64;
        for s in samples {
            peak = peak.max(s.abs());
            sum += f64::from(*s) * f64::from(*s);
        }
        let rms = if samples.is_empty() { 0.0 } else { (sum / samples.len() as f64).sqrt() as f32 };
        self.peak.store(peak.to_bits(), Ordering::Relaxed);
        self.rms.store(rms.to_bits(), Ordering::Relaxed);
    }
    /// Peak of the last block (linear).
    pub fn peak(&self) -> f32 {
        f32::from_bits(self.peak.load(Ordering::Relaxed))
    }
    /// RMS of the last block (linear).
    pub fn rms(&self) -> f32 {
        f32::from_bits(self.rms.load(Ordering::Relaxed))
    }
    /// Peak in dBFS (−∞ for silence).
    pub fn peak_db(&self) -> f32 {
        20.0 * self.peak().log10()
    }
}

/// Controls of one mixer input, shared with whoever controls the mix.
#[derive(Debug)]
pub struct InputControls {
    gain: AtomicU32,
    pan: AtomicU32,
    muted: AtomicBool,
    /// The input's level before gain.
    pub meter: Meter,
}

impl InputControls {
    fn new() -> Arc<Self> {
        Arc::new(InputControls {
            gain: AtomicU32::new(1.0f32.to_bits()),
            pan: AtomicU32::new(0.0f32.to_bits()),
            muted: AtomicBool::new(false),
            meter: Meter::default(),
        })
    }
    /// Linear gain (0–4).
    pub fn set_gain(&self, g: f32) {
        let g = if g.is_finite() { g.clamp(0.0, 4.0) } else { 0.0 };
        self.gain.store(g.to_bits(), Ordering::Relaxed);
    }
    /// Gain in dB.
    pub fn set_gain_db(&self, db: f32) {
        self.set_gain(10f32.powf(db / 20.0));
    }
    /// Pan, −1 (left) to 1 (right).
    pub fn set_pan(&self, p: f32) {
        let p = if p.is_finite() { p.clamp(-1.0, 1.0) } else { 0.0 };
        self.pan.store(p.to_bits(), Ordering::Relaxed);
    }
    /// Mutes or unmutes.
    pub fn set_muted(&self, m: bool) {
        self.muted.store(m, Ordering::Relaxed);
    }
    fn gain(&self) -> f32 {
        if self.muted.load(Ordering::Relaxed) {
            0.0
        } else {
            f32::from_bits(self.gain.load(Ordering::Relaxed))
        }
    }
    fn pan(&self) -> f32 {
        f32::from_bits(self.pan.load(Ordering::Relaxed))
    }
}

/// A limiter that never lets the sum exceed its ceiling: instant attack on peaks, smooth
/// release, and a soft knee so that even single-sample overs bend instead of clip.
#[derive(Clone, Copy, Debug)]
pub struct SoftLimiter {
    ceiling: f32,
    gain: f32,
    release: f32,
}

impl SoftLimiter {
    /// A limiter at `ceiling` (linear) with a release of `release_ms` at `rate`.
    pub fn new(ceiling: f32, release_ms: f32, rate: u32) -> Self {
        let release = 1.0 - (-1.0 / (release_ms * 1e-3 * rate as f32)).exp();
        SoftLimiter { ceiling, gain: 1.0, release }
    }

    /// Limits interleaved `buf` in place.
    pub fn process(&mut self, buf: &mut [f32], channels: usize) {
        for frame in buf.chunks_mut(channels.max(1)) {
            let peak = frame.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            let target = if peak * self.gain > self.ceiling { self.ceiling / peak } else { 1.0 };
            self.gain = if target < self.gain {
                target
            } else {
                self.gain + (target - self.gain) * self.release
            };
            for s in frame.iter_mut() {
                *s = soft_clip(*s * self.gain, self.ceiling);
            }
        }
    }

    /// Gain reduction now (1 = none).
    pub fn gain(&self) -> f32 {
        self.gain
    }
}

/// A soft knee: linear below 90 % of `ceiling`, bending smoothly to never exceed it.
fn soft_clip(x: f32, ceiling: f32) -> f32 {
    let knee = 0.9 * ceiling;
    let a = x.abs();
    if a <= knee {
        x
    } else {
        let over = (a - knee) / (ceiling - knee);
        let y = knee + (ceiling - knee) * over.tanh();
        y.copysign(x)
    }
}

struct Input {
    id: u64,
    program: Box<dyn Program>,
    channels: usize,
    controls: Arc<InputControls>,
    left: GainRamp,
    right: GainRamp,
}

/// The mixer (see the module docs). It is itself a [`Program`]: give it to an
/// [`OutputEngine`](crate::engine::OutputEngine).
pub struct Mixer {
    inputs: Vec<Input>,
    channels: usize,
    scratch: Vec<f32>,
    limiter: SoftLimiter,
    /// Level of the output after the limiter.
    pub master: Arc<Meter>,
    next_id: u64,
    ramp_frames: u32,
}

impl core::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mixer").field("inputs", &self.inputs.len()).finish_non_exhaustive()
    }
}

impl Mixer {
    /// A mixer producing `channels` (1 or 2) at `rate`, blocks of at most `max_block` frames.
    pub fn new(channels: usize, rate: u32, max_block: usize) -> Self {
        Mixer {
            inputs: Vec::new(),
            channels: channels.clamp(1, 2),
            scratch: vec![0.0; max_block * channels.clamp(1, 2)],
            limiter: SoftLimiter::new(0.98, 200.0, rate),
            master: Arc::new(Meter::default()),
            next_id: 1,
            ramp_frames: rate / 200,
        }
    }

    /// Adds an input producing this mixer's channel count; returns its id and controls.
    pub fn add(&mut self, program: Box<dyn Program>) -> (u64, Arc<InputControls>) {
        self.add_with_channels(program, self.channels)
    }

    /// Adds a mono input (a microphone), placed in the stereo field by its pan.
    pub fn add_mono(&mut self, program: Box<dyn Program>) -> (u64, Arc<InputControls>) {
        self.add_with_channels(program, 1)
    }

    fn add_with_channels(
        &mut self,
        program: Box<dyn Program>,
        channels: usize,
    ) -> (u64, Arc<InputControls>) {
        let controls = InputControls::new();
        let id = self.next_id;
        self.next_id += 1;
        self.inputs.push(Input {
            id,
            program,
            channels: channels.clamp(1, self.channels),
            controls: controls.clone(),
            left: GainRamp::new(0.0, self.ramp_frames),
            right: GainRamp::new(0.0, self.ramp_frames),
        });
        (id, controls)
    }

    /// Removes input `id`.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.inputs.len();
        self.inputs.retain(|i| i.id != id);
        before != self.inputs.len()
    }

    /// Inputs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }
    /// No inputs.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
    /// The limiter's current gain (1 = not limiting).
    pub fn limiter_gain(&self) -> f32 {
        self.limiter.gain()
    }
}

impl Program for Mixer {
    fn render(&mut self, now: LocalTime, dac_time: LocalTime, out: &mut [f32]) -> bool {
        out.fill(0.0);
        let ch = self.channels;
        let frames = out.len() / ch;
        let mut any = false;
        for input in &mut self.inputs {
            let buf = &mut self.scratch[..frames * input.channels];
            if !input.program.render(now, dac_time, buf) {
                continue;
            }
            any = true;
            input.controls.meter.measure(buf);
            let g = input.controls.gain();
            // Equal-power pan (unity at centre on each side), applied by two ramps so a move
            // or a fader never clicks.
            let (gl, gr) = if ch == 1 {
                (g, g)
            } else {
                let angle = (input.controls.pan() + 1.0) * std::f32::consts::FRAC_PI_4;
                (
                    g * angle.cos() * std::f32::consts::SQRT_2,
                    g * angle.sin() * std::f32::consts::SQRT_2,
                )
            };
            input.left.retarget(gl);
            input.right.retarget(gr);
            match (ch, input.channels) {
                (1, _) => input.left.mix_into(buf, 1, out, 1, 0),
                (_, 1) => {
                    input.left.mix_into(buf, 1, out, 2, 0);
                    input.right.mix_into(buf, 1, out, 2, 1);
                }
                _ => {
                    input.left.mix_into(buf, 2, out, 2, 0);
                    input.right.mix_into(buf, 2, out, 2, 1);
                }
            }
        }
        self.limiter.process(out, ch);
        self.master.measure(out);
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dc(f32);
    impl Program for Dc {
        fn render(&mut self, _: LocalTime, _: LocalTime, out: &mut [f32]) -> bool {
            out.fill(self.0);
            true
        }
    }

    #[test]
    fn mono_inputs_are_panned_into_stereo() {
        let mut m = Mixer::new(2, 48_000, 256);
        let (_, a) = m.add_mono(Box::new(Dc(0.5)));
        a.set_pan(1.0);
        let mut out = vec![0.0f32; 512];
        for _ in 0..4 {
            m.render(LocalTime(0), LocalTime(0), &mut out);
        }
        assert!(
            out[510].abs() < 1e-3 && (out[511] - 0.5 * std::f32::consts::SQRT_2).abs() < 1e-3,
            "{:?}",
            &out[510..]
        );
    }

    #[test]
    fn gains_sum_and_meters_are_right() {
        let mut m = Mixer::new(2, 48_000, 256);
        let (_, a) = m.add(Box::new(Dc(0.2)));
        let (b_id, b) = m.add(Box::new(Dc(0.1)));
        a.set_gain(1.0);
        b.set_gain_db(6.0206);
        let mut out = vec![0.0f32; 512];
        for _ in 0..4 {
            m.render(LocalTime(0), LocalTime(0), &mut out);
        }
        // After the 5 ms ramps: 0.2 + 0.2 at centre pan (unity on each side).
        assert!((out[510] - 0.4).abs() < 1e-3, "{}", out[510]);
        assert!((a.meter.peak() - 0.2).abs() < 1e-6);
        b.set_muted(true);
        for _ in 0..4 {
            m.render(LocalTime(0), LocalTime(0), &mut out);
        }
        assert!((out[510] - 0.2).abs() < 1e-3);
        a.set_pan(-1.0);
        for _ in 0..4 {
            m.render(LocalTime(0), LocalTime(0), &mut out);
        }
        assert!(out[511].abs() < 1e-3, "hard left: right channel silent");
        assert!(m.remove(b_id));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn limiter_never_exceeds_its_ceiling_and_is_transparent_below() {
        let mut lim = SoftLimiter::new(0.98, 100.0, 48_000);
        let mut quiet: Vec<f32> = (0..4800).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
        let orig = quiet.clone();
        lim.process(&mut quiet, 1);
        assert_eq!(quiet, orig);
        let mut loud: Vec<f32> = (0..4800).map(|i| 3.0 * (i as f32 * 0.05).sin()).collect();
        lim.process(&mut loud, 1);
        assert!(loud.iter().all(|x| x.abs() <= 0.98));
    }
}
