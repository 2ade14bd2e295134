//! An identification chime mixed over whatever a player plays ("this is the kitchen speaker"):
//! three rising notes, each faded in and out, asked for from any thread and rendered on the
//! media thread without allocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The notes, Hz (E5, A5, C#6: a major arpeggio, distinct from any test tone).
const NOTES: [f64; 3] = [659.26, 880.0, 1108.73];
/// Each note's length, seconds.
const NOTE_S: f64 = 0.18;
/// Fade in and out of each note, seconds.
const FADE_S: f64 = 0.012;
/// Peak level (linear): −12 dBFS.
const LEVEL: f32 = 0.25;

/// Asks a [`Chime`] to play (shared between the control side and the renderer).
#[derive(Debug, Default)]
pub struct Cue {
    asked: AtomicBool,
}

impl Cue {
    /// A cue nobody has asked for yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Cue::default())
    }
    /// Plays the chime once (from the next rendered block; asking again while it plays is
    /// ignored).
    pub fn ask(&self) {
        self.asked.store(true, Ordering::Release);
    }
}

/// Renders the chime when its [`Cue`] asks.
#[derive(Debug)]
pub struct Chime {
    cue: Arc<Cue>,
    rate: f64,
    /// Frame within the chime, while one plays.
    at: Option<u64>,
}

impl Chime {
    /// A chime for output at `rate` Hz, played when `cue` asks.
    pub fn new(cue: Arc<Cue>, rate: u32) -> Self {
        Chime { cue, rate: f64::from(rate.max(1)), at: None }
    }

    /// The chime's length in frames.
    pub fn frames(&self) -> u64 {
        (NOTE_S * NOTES.len() as f64 * self.rate) as u64
    }

    /// Adds the chime (if one plays) to interleaved `out`, every channel alike.
    pub fn mix_into(&mut self, out: &mut [f32], channels: usize) {
        if self.at.is_none() && self.cue.asked.swap(false, Ordering::AcqRel) {
            self.at = Some(0);
        }
        let Some(mut n) = self.at else { return };
        let channels = channels.max(1);
        let (note_len, fade) = ((NOTE_S * self.rate) as u64, FADE_S * self.rate);
        let end = self.frames();
        for frame in out.chunks_mut(channels) {
            if n >= end {
                break;
            }
            let (k, i) = ((n / note_len) as usize, (n % note_len) as f64);
            let envelope = (i / fade).min((note_len as f64 - i) / fade).min(1.0);
            let phase = std::f64::consts::TAU * NOTES[k] * i / self.rate;
            let s = (phase.sin() * envelope) as f32 * LEVEL;
            for x in frame {
                *x += s;
            }
            n += 1;
        }
        self.at = (n < end).then_some(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_once_when_asked_and_fades_at_its_edges() {
        let cue = Cue::new();
        let mut chime = Chime::new(cue.clone(), 48_000);
        let mut out = vec![0.0f32; 2 * 48_000];
        chime.mix_into(&mut out, 2);
        assert!(out.iter().all(|&s| s == 0.0), "silent until asked");
        cue.ask();
        chime.mix_into(&mut out, 2);
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        let len = chime.frames() as usize;
        assert_eq!(len, 25_920);
        let peak = left[..len].iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - LEVEL).abs() < 0.01, "peak {peak}");
        assert!(left[0].abs() < 0.01 && left[len - 1].abs() < 0.02, "faded edges");
        assert!(left[len..].iter().all(|&s| s == 0.0), "once");
        assert_eq!(out[100], out[101], "every channel alike");
        // Over; a block later nothing more plays.
        let mut more = vec![0.0f32; 256];
        chime.mix_into(&mut more, 2);
        assert!(more.iter().all(|&s| s == 0.0));
    }
}
