//! Sounds a player plays over its stream:
//!
//! - an identification chime ("this is the kitchen speaker"): three rising notes, each faded
//!   in and out, asked for from any thread and rendered on the media thread without
//!   allocation ([`Cue`], [`Chime`]);
//! - a prepared sound on a given stream frame, the stream silenced under it (a calibration's
//!   test sequence: every speaker's part starts on the same frame, so on the same instant):
//!   rendered beforehand by its owner, handed over and back through lock-free rings
//!   ([`Overlay`], [`OverlayMix`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtrb::{Consumer, Producer, RingBuffer};

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

/// A sound to play from stream frame `at`, one sample per frame (every channel alike).
#[derive(Debug)]
struct Scheduled {
    samples: Vec<f32>,
    at: u64,
    /// The [`Overlay`]'s cancel count when it was handed over.
    generation: u64,
}

/// How long the stream fades out before a scheduled sound and back in after it, seconds.
const DUCK_S: f64 = 0.01;

/// The owner's end of a player's overlay: schedules a prepared sound on a stream frame, or
/// cancels it. Any thread; the allocation and the freeing happen here, never on the media
/// thread.
#[derive(Debug)]
pub struct Overlay {
    rings: Mutex<(Producer<Box<Scheduled>>, Consumer<Box<Scheduled>>)>,
    /// Bumped by [`Overlay::cancel`]: a sound handed over before is dropped.
    cancels: AtomicU64,
}

/// The media thread's end (inside the [`Voice`](crate::engine::Voice)).
#[derive(Debug)]
pub struct OverlayMix {
    incoming: Consumer<Box<Scheduled>>,
    done: Producer<Box<Scheduled>>,
    playing: Option<Box<Scheduled>>,
    overlay: Arc<Overlay>,
    duck: f64,
}

impl Overlay {
    /// Both ends, for a stream at `rate` Hz.
    pub fn new(rate: u32) -> (Arc<Overlay>, OverlayMix) {
        let (tx, incoming) = RingBuffer::new(2);
        let (done, back) = RingBuffer::new(4);
        let overlay =
            Arc::new(Overlay { rings: Mutex::new((tx, back)), cancels: AtomicU64::new(0) });
        let mix = OverlayMix {
            incoming,
            done,
            playing: None,
            overlay: overlay.clone(),
            duck: (DUCK_S * f64::from(rate.max(1))).max(1.0),
        };
        (overlay, mix)
    }

    /// Plays `samples` (mono, at the stream's rate) from stream frame `at` on, instead of the
    /// stream (faded out 10 ms before and back in 10 ms after). A sound still playing or
    /// waiting is replaced. False if the media side has not taken the last two yet.
    pub fn schedule(&self, samples: Vec<f32>, at: u64) -> bool {
        self.cancel();
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        while rings.1.pop().is_ok() {}
        let generation = self.cancels.load(Ordering::Acquire);
        rings.0.push(Box::new(Scheduled { samples, at, generation })).is_ok()
    }

    /// Stops whatever was scheduled (the stream comes back on the next block).
    pub fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::AcqRel);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        while rings.1.pop().is_ok() {}
    }
}

impl OverlayMix {
    /// Mixes into interleaved `out`, whose first frame is stream frame `position`: the
    /// scheduled sound where it falls, the stream faded out under it. Real-time safe.
    pub fn mix_into(&mut self, position: f64, out: &mut [f32], channels: usize) {
        let generation = self.overlay.cancels.load(Ordering::Acquire);
        if let Ok(next) = self.incoming.pop() {
            self.retire();
            self.playing = Some(next);
        }
        let Some(sound) = self.playing.as_ref() else { return };
        if sound.generation != generation {
            return self.retire();
        }
        let channels = channels.max(1);
        let len = sound.samples.len() as f64;
        let first = position.round() - sound.at as f64;
        let frames = out.len() / channels;
        if first + frames as f64 <= -self.duck {
            return;
        }
        for (j, frame) in out.chunks_mut(channels).enumerate() {
            let k = first + j as f64;
            // The stream's gain: 1 well away from the sound, 0 under it, ramps between.
            let keep = if k < 0.0 {
                (-k / self.duck).min(1.0)
            } else if k >= len {
                ((k - len + 1.0) / self.duck).min(1.0)
            } else {
                0.0
            } as f32;
            let s = if k >= 0.0 && k < len { sound.samples[k as usize] } else { 0.0 };
            for x in frame {
                *x = *x * keep + s;
            }
        }
        if first + frames as f64 >= len + self.duck {
            self.retire();
        }
    }

    /// Whether a sound plays or waits for its frame.
    pub fn is_busy(&self) -> bool {
        self.playing.is_some()
    }

    /// Hands the sound back to its owner to be freed there.
    fn retire(&mut self) {
        if let Some(s) = self.playing.take() {
            // The ring holds four and cannot fill: the owner empties it on every schedule,
            // and no more than three sounds (two handed over, one playing) exist between two
            // schedules.
            let _ = self.done.push(s);
        }
    }
}

/// A test tone at `rate` Hz: 1 kHz at −12 dBFS for 2 s, faded in and out over 20 ms (to
/// schedule on an [`Overlay`]: is this speaker alive, and which one is it?).
pub fn test_tone(rate: u32) -> Vec<f32> {
    let rate = f64::from(rate.max(1));
    let n = (2.0 * rate) as usize;
    let fade = 0.02 * rate;
    (0..n)
        .map(|i| {
            let edge = (i.min(n - 1 - i) as f64 / fade).min(1.0);
            let phase = std::f64::consts::TAU * 1_000.0 * i as f64 / rate;
            (phase.sin() * edge * f64::from(LEVEL)) as f32
        })
        .collect()
}

/// `text` spoken (by `espeak-ng`, offline) at `rate` Hz, mono, at about −6 dBFS peak.
pub fn speech(text: &str, rate: u32) -> Result<Vec<f32>, crate::AudioError> {
    let io = |source| crate::AudioError::Io {
        what: "speaking with espeak-ng (apt-get install espeak-ng)",
        source,
    };
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-s", "160", "--", text])
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(io)?;
    if !out.status.success() {
        return Err(io(std::io::Error::other(format!("espeak-ng failed ({})", out.status))));
    }
    let wav = |source| crate::AudioError::Wav { path: "espeak-ng's output".into(), source };
    let reader = hound::WavReader::new(std::io::Cursor::new(out.stdout)).map_err(wav)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    // Its header gives no length (it writes to a pipe): read to the end.
    let samples: Vec<f32> = reader
        .into_samples::<i16>()
        .map_while(Result::ok)
        .collect::<Vec<i16>>()
        .chunks(channels)
        .map(|f| f32::from(f[0]) / 32_768.0)
        .collect();
    // To the stream's rate, linearly (speech, not music), and to −6 dBFS.
    let step = f64::from(spec.sample_rate) / f64::from(rate.max(1));
    let n = (samples.len() as f64 / step) as usize;
    let mut out: Vec<f32> = (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let (k, f) = (x as usize, (x - x.floor()) as f32);
            let a = samples.get(k).copied().unwrap_or(0.0);
            let b = samples.get(k + 1).copied().unwrap_or(a);
            a + (b - a) * f
        })
        .collect();
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak > 0.0 {
        out.iter_mut().for_each(|s| *s *= 0.5 / peak);
    }
    Ok(out)
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

    #[test]
    fn a_scheduled_sound_starts_on_its_frame_over_a_silenced_stream() {
        let (overlay, mut mix) = Overlay::new(1_000); // a 10-frame duck
        let sound: Vec<f32> = (0..50).map(|i| 0.001 * (i + 1) as f32).collect();
        assert!(overlay.schedule(sound.clone(), 1_000));
        let mut position = 900.0;
        let mut heard = Vec::new();
        while position < 1_200.0 {
            // A stream of ones, two channels, blocks of 32 frames.
            let mut out = vec![1.0f32; 64];
            mix.mix_into(position, &mut out, 2);
            assert!(out.chunks(2).all(|f| f[0] == f[1]), "every channel alike");
            heard.extend(out.iter().step_by(2).copied());
            position += 32.0;
        }
        // Frame k of the output is stream frame 900 + k.
        let at = |frame: usize| heard[frame - 900];
        assert_eq!(at(985), 1.0, "the stream, untouched well before");
        assert!(at(995) > 0.0 && at(995) < 1.0, "fading out");
        for (i, s) in sound.iter().enumerate() {
            assert_eq!(at(1_000 + i), *s, "the sound alone, from its frame");
        }
        assert!(at(1_052) < 1.0, "fading back in");
        assert_eq!(at(1_070), 1.0, "the stream again after");
        assert!(!mix.is_busy(), "done and handed back");
        // The owner frees it when it schedules again.
        assert_eq!(overlay.rings.lock().unwrap().1.slots(), 1);
    }

    #[test]
    fn a_cancelled_sound_never_plays_and_the_stream_comes_back() {
        let (overlay, mut mix) = Overlay::new(48_000);
        assert!(overlay.schedule(vec![0.5; 48_000], 1_000));
        let mut out = vec![1.0f32; 2_048];
        mix.mix_into(0.0, &mut out, 1);
        // 10 ms (480 frames) of fade before its frame.
        assert!(out[..520].iter().all(|&s| s == 1.0), "before its frame and its fade");
        assert!(out[700] < 1.0 && out[700] > 0.0, "fading");
        assert_eq!(out[1_500], 0.5, "it plays");
        overlay.cancel();
        let mut out = vec![1.0f32; 256];
        mix.mix_into(2_048.0, &mut out, 1);
        assert!(out.iter().all(|&s| s == 1.0), "cancelled: the stream alone");
        assert!(!mix.is_busy());
        // A sound whose frame passed long ago plays nothing and is let go.
        assert!(overlay.schedule(vec![0.5; 100], 10));
        let mut out = vec![1.0f32; 256];
        mix.mix_into(10_000.0, &mut out, 1);
        assert!(out.iter().all(|&s| s == 1.0));
        assert!(!mix.is_busy());
    }

    #[test]
    fn the_test_tone_is_a_faded_kilohertz() {
        let t = test_tone(48_000);
        assert_eq!(t.len(), 96_000);
        assert!(t[0].abs() < 1e-6 && t[95_999].abs() < 0.01);
        let peak = t.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - LEVEL).abs() < 0.01);
        // 1 kHz: 2 000 rising zero crossings in 2 s.
        let rising = t.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((1_998..=2_000).contains(&rising), "{rising}");
    }

    #[test]
    fn speech_is_said_at_the_stream_rate_or_its_absence_is_named() {
        match speech("kitchen, online", 48_000) {
            Ok(s) => {
                // About a second of speech, normalised.
                assert!(s.len() > 24_000 && s.len() < 5 * 48_000, "{}", s.len());
                let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                assert!((peak - 0.5).abs() < 1e-3);
            }
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "CI installs espeak-ng: {e}");
                assert!(e.to_string().contains("apt-get install espeak-ng"), "{e}");
            }
        }
    }
}
