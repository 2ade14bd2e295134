//! Local playback: a [`Timeline`] that plays a [`Source`] from a local instant, through the
//! same drift control as network playback (the DAC's clock is steered onto the local clock).

use tutti_proto::LocalTime;
use tutti_proto::playout::{PlayoutConfig, PlayoutScheduler, Render};

use crate::engine::Timeline;
use crate::pcm::PcmBuffer;
use crate::source::Source;

/// Plays `source` so that its frame `n` is heard at `start + n / rate` on the local clock.
pub struct LocalTimeline<S: Source> {
    source: S,
    scheduler: PlayoutScheduler,
    start: Option<LocalTime>,
    rate: u32,
    pulled: u64,
    scratch: Vec<f32>,
    ended_at: Option<u64>,
}

impl<S: Source> core::fmt::Debug for LocalTimeline<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalTimeline")
            .field("start", &self.start)
            .field("pulled", &self.pulled)
            .finish()
    }
}

impl<S: Source> LocalTimeline<S> {
    /// Plays `source` from `start` (or from the first block asked for, if `None`).
    pub fn new(source: S, start: Option<LocalTime>) -> Self {
        let rate = source.sample_rate();
        LocalTimeline {
            scheduler: PlayoutScheduler::new(PlayoutConfig::new(rate)),
            source,
            start,
            rate,
            pulled: 0,
            scratch: Vec::new(),
            ended_at: None,
        }
    }

    /// The instant frame 0 is heard.
    pub fn start(&self) -> Option<LocalTime> {
        self.start
    }

    /// The media position intended at local instant `t`.
    pub fn intended(&self, t: LocalTime) -> Option<f64> {
        Some((t - self.start?).0 as f64 * f64::from(self.rate) / 1e9)
    }

    /// Frames of the source decoded so far, and whether it ended (at which frame).
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.pulled, self.ended_at)
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: Source> Timeline for LocalTimeline<S> {
    fn plan(&mut self, _now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render> {
        self.start.get_or_insert(dac_time);
        let target = self.intended(dac_time)?;
        if target + f64::from(frames) < 0.0 {
            return None;
        }
        Some(self.scheduler.schedule(dac_time, frames, target, 1.0))
    }

    fn pull(&mut self, until: f64, pcm: &mut PcmBuffer) {
        let channels = self.source.channels();
        while (self.pulled as f64) < until {
            self.scratch.clear();
            let want = ((until - self.pulled as f64).ceil() as usize).clamp(256, 4096);
            let got = if self.ended_at.is_some() {
                0
            } else {
                self.source.read(&mut self.scratch, want).unwrap_or(0)
            };
            if got == 0 {
                // Past the end (or a read error): silence keeps the clock running.
                self.ended_at.get_or_insert(self.pulled);
                self.scratch.resize(want * channels, 0.0);
            }
            let frames = self.scratch.len() / channels;
            pcm.push(self.pulled, &self.scratch);
            self.pulled += frames as u64;
        }
    }
}
