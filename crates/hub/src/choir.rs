//! Headphones mode ("everyone on headphones, singing together"): the hub mixes the voices of
//! the guests singing from their browsers and sends each singer who asked to hear the others
//! the mix of everyone but themselves, as soon as the voices are in.
//!
//! Each singing page stamps its blocks with the hub instant they reached it
//! ([`crate::sing`]), so a voice's frames land in a ring indexed by the hub's clock: frame
//! `n` of the ring is hub instant `n / 48 kHz`, whichever page sent it. A mixer task wakes
//! every [`TICK`], mixes everything up to `now − delay` (a ring slot written in an earlier lap
//! of the ring is silence, not a second-old voice); the delay
//! is the [`PERCENTILE`] of every voice's blocks' lateness over the last [`WINDOW`] (plus
//! [`MARGIN`]), so the mix waits for the slowest singer but not for a rare stall. Frames that
//! arrive after their instant was mixed are counted (`late`) and dropped. Each listener's block is
//! the sum less its own voice: `(Σ v) − v_k`, exact when the others are silent.
//!
//! A voice is written contiguously: a block whose stamp is within [`SLIP`] of where the last
//! one ended continues it (a page's clock and the hub's drift by a few ppm: the difference
//! is taken up one frame per block); a block further off starts the voice over at its stamp.
//! Blocks for the page are the listening relay's: `f64` hub µs of the first frame, `u32`
//! frames, `u32` rate, `u16` channels (1), 6 bytes zero, `i16` frames.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::mpsc;
use tutti_proto::{LocalTime, Nanos};

use crate::sing::RATE;

/// The ring: a second of every voice.
const RING: u64 = RATE as u64;
/// How often the mix is made (and sent).
pub(crate) const TICK: Duration = Duration::from_millis(5);
/// Lateness is taken over this long ...
const WINDOW: Nanos = Nanos::from_secs(4);
/// ... at this percentile (a block in a hundred may come too late).
const PERCENTILE: f64 = 0.99;
/// The most latenesses kept (a choir of 10 sends 4000 blocks in 4 s).
const LATENESSES: usize = 4096;
/// Fewer latenesses than this (a choir's first half second) say too little: the delay is at
/// least [`FIRST_DELAY`] then.
const FEW_LATENESSES: usize = 200;
const FIRST_DELAY: Nanos = Nanos::from_millis(40);
/// The delay is worked out again this often.
const RECKON_EVERY: Nanos = Nanos::from_millis(250);
/// Added to the lateness percentile.
const MARGIN: Nanos = Nanos::from_micros(2_500);
/// The mix never waits less, or more, than this.
const MIN_DELAY: Nanos = Nanos::from_millis(5);
const MAX_DELAY: Nanos = Nanos::from_millis(150);
/// A block this close to where its voice stopped continues it.
const SLIP: u64 = 48 * 5;
/// Blocks queued for one listener before the newest are dropped (a stalled page).
const QUEUE: usize = 64;
/// Header of a block for a page (as the listening relay's).
const HEADER: usize = 24;

/// The hub's choir: the voices of the browsers singing, mixed for those who listen.
#[derive(Clone, Default)]
pub(crate) struct Choir(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    voices: Vec<Voice>,
    next_id: u64,
    /// The hub frame mixed up to (exclusive), once mixing.
    mixed: Option<u64>,
    /// Every block's lateness over the last [`WINDOW`]: when it came, how late (ns).
    lateness: std::collections::VecDeque<(LocalTime, i64)>,
    /// The delay, and when it was worked out.
    delay: Option<(LocalTime, Nanos)>,
    scratch: Vec<i64>,
    /// Whether a mixer task runs.
    mixing: bool,
}

struct Voice {
    id: u64,
    ring: Box<[f32]>,
    /// Which lap of the ring (hub frame / [`RING`]) each slot holds: a slot from an earlier
    /// lap (sung a second ago, or never) is silence.
    lap: Box<[u32]>,
    /// The next hub frame this voice writes.
    next: Option<u64>,
    hears: Option<mpsc::Sender<Bytes>>,
    /// Frames that came after their instant was mixed.
    late: u64,
}

/// What a singer sees of the choir.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ChoirStats {
    /// Voices in the choir (this one included).
    pub voices: usize,
    /// How long after its instant a frame is mixed, now.
    pub delay: Nanos,
    /// This voice's frames that came too late for the mix.
    pub late_frames: u64,
}

/// One singer's place in the choir; leaves it when dropped.
pub(crate) struct Seat {
    choir: Choir,
    id: u64,
}

/// The hub frame of local instant `t`.
fn frame_of(t: LocalTime) -> u64 {
    (u128::from(t.0) * u128::from(RATE) / 1_000_000_000) as u64
}

/// The local instant of hub frame `f`.
fn instant_of(f: u64) -> LocalTime {
    LocalTime((u128::from(f) * 1_000_000_000 / u128::from(RATE)) as u64)
}

impl Choir {
    /// A new voice; it hears the others (the mix less itself, blocks for its page on the
    /// receiver) when `hears`.
    pub(crate) fn join(&self, hears: bool) -> (Seat, Option<mpsc::Receiver<Bytes>>) {
        let (id, rx) = {
            let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let id = c.next_id;
            c.next_id += 1;
            c.voices.push(Voice {
                id,
                ring: vec![0.0; RING as usize].into_boxed_slice(),
                lap: vec![u32::MAX; RING as usize].into_boxed_slice(),
                next: None,
                hears: None,
                late: 0,
            });
            (id, None::<mpsc::Receiver<Bytes>>)
        };
        let seat = Seat { choir: self.clone(), id };
        let rx = if hears { seat.hear(true) } else { rx };
        (seat, rx)
    }

    /// Mixes what is due at `now`: every listener's block (the sum less its own voice), sent.
    /// Returns whether anyone still listens.
    fn mix(&self, now: LocalTime) -> bool {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !c.voices.iter().any(|v| v.hears.is_some()) {
            c.mixing = false;
            c.mixed = None;
            return false;
        }
        let delay = c.delay(now);
        let due = frame_of(now).saturating_sub(frame_of(LocalTime(delay.0 as u64)));
        let from = match c.mixed {
            Some(m) if m <= due && due - m < RING / 4 => m,
            // Ahead (the delay grew): wait.
            Some(m) if m > due && m - due < RING / 4 => return true,
            // Starting, or far behind (the hub stalled): from now.
            _ => due,
        };
        let frames = (due - from) as usize;
        c.mixed = Some(due);
        if frames == 0 {
            return true;
        }
        let mut sum = vec![0.0f32; frames];
        for v in &c.voices {
            for (i, s) in sum.iter_mut().enumerate() {
                *s += v.at(from + i as u64);
            }
        }
        let stamp = (instant_of(from).0 as f64 / 1e3).to_le_bytes();
        for v in &mut c.voices {
            if let Some(tx) = &v.hears {
                let mut block = Vec::with_capacity(HEADER + frames * 2);
                block.extend_from_slice(&stamp);
                block.extend_from_slice(&(frames as u32).to_le_bytes());
                block.extend_from_slice(&RATE.to_le_bytes());
                block.extend_from_slice(&1u16.to_le_bytes());
                block.extend_from_slice(&[0; 6]);
                for (i, s) in sum.iter().enumerate() {
                    let own = v.at(from + i as u64);
                    let x = ((s - own) * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
                    block.extend_from_slice(&x.to_le_bytes());
                }
                // A page that does not keep up loses blocks, not the others their mix.
                let _ = tx.try_send(Bytes::from(block));
            }
        }
        true
    }

    /// Mixes every [`TICK`] while anyone listens.
    fn start_mixing(&self) {
        let choir = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !choir.mix(tutti_audio::clock::now()) {
                    return;
                }
            }
        });
    }
}

impl Voice {
    /// Hub frame `f` as this voice sang it (silence if it did not, or not in this lap).
    fn at(&self, f: u64) -> f32 {
        let slot = (f % RING) as usize;
        if self.lap[slot] == (f / RING) as u32 { self.ring[slot] } else { 0.0 }
    }
}

impl Inner {
    /// How long after its instant a frame is mixed (worked out again every
    /// [`RECKON_EVERY`]).
    fn delay(&mut self, now: LocalTime) -> Nanos {
        if let Some((at, d)) = self.delay
            && now - at < RECKON_EVERY
            && now >= at
        {
            return d;
        }
        while self.lateness.front().is_some_and(|&(t, _)| now - t > WINDOW) {
            self.lateness.pop_front();
        }
        self.scratch.clear();
        self.scratch.extend(self.lateness.iter().map(|l| l.1));
        self.scratch.sort_unstable();
        let p = self.scratch.get((self.scratch.len() as f64 * PERCENTILE) as usize);
        let late = p.or(self.scratch.last()).copied().unwrap_or(0);
        let mut d = (Nanos(late) + MARGIN).clamp(MIN_DELAY, MAX_DELAY);
        if self.scratch.len() < FEW_LATENESSES {
            // Too few blocks to know the way yet: wait long enough for a page's first ones.
            d = d.max(FIRST_DELAY);
        }
        self.delay = Some((now, d));
        d
    }

    /// Notes a block's lateness at `now`.
    fn lateness(&mut self, late: Nanos, now: LocalTime) {
        if self.lateness.len() >= LATENESSES {
            self.lateness.pop_front();
        }
        self.lateness.push_back((now, late.0));
    }
}

impl Seat {
    /// This voice's frames `pcm`, the first at hub instant `first`, arrived at `now`.
    pub(crate) fn sing(&self, first: LocalTime, pcm: &[f32], now: LocalTime) {
        let mut c = self.choir.0.lock().unwrap_or_else(|e| e.into_inner());
        let length = Nanos::from_frames(pcm.len() as u64, RATE);
        c.lateness(now - (first + length), now);
        let mixed = c.mixed;
        let Some(v) = c.voices.iter_mut().find(|v| v.id == self.id) else { return };
        let at = frame_of(first);
        let start = match v.next {
            Some(next) if at.abs_diff(next) <= SLIP => {
                // Drifting: one frame a block toward the stamps.
                if at > next + 1 {
                    next + 1
                } else if at + 1 < next {
                    next - 1
                } else {
                    next
                }
            }
            _ => at,
        };
        v.next = Some(start + pcm.len() as u64);
        for (i, s) in pcm.iter().enumerate() {
            let f = start + i as u64;
            if mixed.is_some_and(|m| f < m) {
                v.late += 1;
                continue;
            }
            v.ring[(f % RING) as usize] = *s;
            v.lap[(f % RING) as usize] = (f / RING) as u32;
        }
    }

    /// Starts (or stops) sending this singer the others' mix; the blocks come on the
    /// receiver.
    pub(crate) fn hear(&self, on: bool) -> Option<mpsc::Receiver<Bytes>> {
        let mut c = self.choir.0.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = if on {
            let (tx, rx) = mpsc::channel(QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if let Some(v) = c.voices.iter_mut().find(|v| v.id == self.id) {
            v.hears = tx;
        }
        if on && !c.mixing {
            c.mixing = true;
            drop(c);
            self.choir.start_mixing();
        }
        rx
    }

    /// The choir as this singer sees it.
    pub(crate) fn stats(&self) -> ChoirStats {
        let mut c = self.choir.0.lock().unwrap_or_else(|e| e.into_inner());
        ChoirStats {
            voices: c.voices.len(),
            delay: c.delay(tutti_audio::clock::now()),
            late_frames: c.voices.iter().find(|v| v.id == self.id).map_or(0, |v| v.late),
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut c = self.choir.0.lock().unwrap_or_else(|e| e.into_inner());
        c.voices.retain(|v| v.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Every block on `rx` now, as (hub µs, samples).
    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<(f64, Vec<i16>)> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            let stamp = f64::from_le_bytes(b[..8].try_into().unwrap());
            let frames = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), RATE);
            assert_eq!(u16::from_le_bytes(b[16..18].try_into().unwrap()), 1);
            let pcm: Vec<i16> =
                b[HEADER..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            assert_eq!(pcm.len(), frames);
            out.push((stamp, pcm));
        }
        out
    }

    /// Two singers on headphones and one who only sings: each listener hears the others, not
    /// itself, sample for sample, once the slowest voice's blocks are in.
    #[tokio::test]
    async fn each_listener_hears_the_others_and_not_itself() {
        let choir = Choir::default();
        let (a, rx_a) = choir.join(true);
        let (b, rx_b) = choir.join(true);
        let (c, none) = choir.join(false);
        assert!(none.is_none());
        let (mut rx_a, mut rx_b) = (rx_a.unwrap(), rx_b.unwrap());
        // 20 ms of each, in 2.5 ms blocks: a = 0.25, b = 0.125, c = −0.5; each block reaches
        // the hub 3 ms after its last frame (so the mix waits 5.5 ms, once it has seen enough
        // blocks: 200 earlier ones say so).
        let t0 = 3_000 * MS;
        {
            let mut c = choir.0.lock().unwrap();
            assert_eq!(c.delay(LocalTime(0)), FIRST_DELAY, "knowing nothing");
            for _ in 0..FEW_LATENESSES {
                c.lateness(Nanos::from_millis(3), LocalTime(t0 - 2 * MS));
            }
            // What a voice sang a second before anyone listened is not heard.
            c.voices[2].ring.fill(0.75);
            c.voices[2].lap.fill(((t0 - 2_000 * MS) * 48 / MS / RING) as u32);
        }
        // The first tick (1 ms before they sing) sets where the mix starts: 5.5 ms before it.
        choir.mix(LocalTime(t0 - MS));
        for k in 0..8u64 {
            let first = LocalTime(t0 + k * 2_500_000);
            let now = first + Nanos::from_micros(2_500 + 3_000);
            a.sing(first, &[0.25; 120], now);
            b.sing(first, &[0.125; 120], now);
            c.sing(first, &[-0.5; 120], now);
        }
        assert_eq!(
            choir.0.lock().unwrap().delay(LocalTime(t0 + 20 * MS)),
            Nanos::from_micros(5_500)
        );
        // The next mixes up to 5.5 ms ago.
        choir.mix(LocalTime(t0 + 25 * MS));
        let (heard_a, heard_b) = (drain(&mut rx_a), drain(&mut rx_b));
        let all = |h: &[(f64, Vec<i16>)]| h.iter().flat_map(|b| b.1.clone()).collect::<Vec<_>>();
        let (sa, sb) = (all(&heard_a), all(&heard_b));
        // From t0 − 6.5 ms to t0 + 19.5 ms: 26 ms, of which 19.5 ms sung.
        assert_eq!(sa.len(), 1_248);
        assert_eq!(heard_a[0].0, (t0 - 6 * MS - MS / 2) as f64 / 1e3);
        let sung = &sa[312..];
        assert!(sung.iter().all(|&s| s == (32_768.0f32 * (0.125 - 0.5)) as i16), "{sung:?}");
        assert!(sb[312..].iter().all(|&s| s == (32_768.0f32 * (0.25 - 0.5)) as i16));
        assert!(sa[..312].iter().all(|&s| s == 0), "silence before anyone sang: {:?}", &sa[..312]);
        // A block of c's that comes after its instant was mixed is dropped, counted.
        c.sing(LocalTime(t0 + 2 * MS), &[1.0; 120], LocalTime(t0 + 26 * MS));
        assert_eq!(c.stats().late_frames, 120);
        // One leaves: the choir is two.
        drop(b);
        assert_eq!(a.stats().voices, 2);
    }

    /// A voice's blocks follow each other even when the stamps wander by a frame or two, and
    /// a block far off starts the voice over at its stamp.
    #[tokio::test]
    async fn a_voice_is_written_contiguously_and_starts_over_when_far_off() {
        let choir = Choir::default();
        let (a, _) = choir.join(false);
        let t0 = 1_000 * MS;
        a.sing(LocalTime(t0), &[0.5; 120], LocalTime(t0 + 3 * MS));
        // 2 frames later than where it ended: taken up one frame.
        a.sing(LocalTime(t0 + 2_500_000 + 41_667), &[0.5; 120], LocalTime(t0 + 6 * MS));
        let next = |c: &Choir| c.0.lock().unwrap().voices[0].next.unwrap();
        assert_eq!(next(&choir), frame_of(LocalTime(t0)) + 241);
        // 100 ms off: starts over there.
        a.sing(LocalTime(t0 + 100 * MS), &[0.5; 120], LocalTime(t0 + 103 * MS));
        assert_eq!(next(&choir), frame_of(LocalTime(t0 + 100 * MS)) + 120);
    }
}
