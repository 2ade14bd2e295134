//! The passive drift watch, the hub's half: a microphone in a zone sends a few seconds of what
//! it hears every so often (`tutti calibrate --watch`); the hub holds the zone's program as it
//! was due to be heard (its listening relay: the same player a phone's browser listens
//! through, paced by the hub's clock) and cross-correlates the two
//! ([`tutti_calib::watch`]).
//!
//! Right after a calibration every speaker arrives at once: one line, the baseline. A speaker
//! whose latency changes (a TV switching picture modes) splits off a line of its own; once two
//! snippets agree ([`tutti_calib::watch::DriftWatch`]: hysteresis), the zone's drift is
//! declared (the API, an event, MQTT `tutti/zone/<zone>/drift`). Only a test sequence can say
//! which speaker moved when one microphone hears them all, so a declared drift of
//! [`ACT_MS`] or more starts a calibration (at most one per [`ACT_EVERY`]; the answer to the
//! snippet tells the microphone to record it) whose reason is `drift`: it records, in each
//! speaker's history, how far its arrival left the others' (its acoustic drift), and aligns
//! them as any calibration does (the latest keeps its delay, the others wait for it; no delay
//! moves by more than [`MAX_CORRECTION_MS`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tutti_calib::watch::{Correlator, DriftWatch, Line, Reading};
use tutti_proto::control::{CalibrationView, Event};

use crate::Hub;
use crate::calibrate::CalibrationError;

/// A snippet's length, seconds.
pub const SNIPPET_S: f64 = 4.0;
/// Lines are searched this far either side of when the program was due, seconds (a
/// Bluetooth speaker, and the microphone's own dating).
pub const MAX_LAG_S: f64 = 0.4;
/// How much program the hub keeps per watched zone, seconds.
const HELD_S: f64 = 30.0;
/// A declared drift this large starts a calibration, ms.
pub const ACT_MS: f64 = 2.0;
/// At most one drift calibration per zone this often.
pub const ACT_EVERY: Duration = Duration::from_secs(60);
/// A drift calibration moves no delay by more than this, ms (more is refused: calibrate the
/// zone on purpose).
pub const MAX_CORRECTION_MS: f64 = 250.0;
/// A watch nobody sent a snippet to for this long stops (and its relay with it).
const IDLE: Duration = Duration::from_secs(120);

/// The zones watched.
#[derive(Clone, Default)]
pub(crate) struct Watches(Arc<Mutex<HashMap<String, Arc<Mutex<ZoneWatch>>>>>);

struct ZoneWatch {
    program: Arc<Mutex<Program>>,
    watch: DriftWatch,
    correlator: Correlator,
    last_snippet: Instant,
    last_act: Option<Instant>,
    last: Option<WatchView>,
    stop: Arc<AtomicBool>,
}

/// The program as it was due to be heard: mono, and the hub instant of its first sample.
#[derive(Default)]
struct Program {
    rate: u32,
    start_us: f64,
    samples: VecDeque<f32>,
}

impl Program {
    /// Appends a block due at `at_us`; a block that does not follow on starts over.
    fn push(&mut self, at_us: f64, rate: u32, mono: &[f32]) {
        let end_us = self.start_us + self.samples.len() as f64 * 1e6 / f64::from(self.rate.max(1));
        if rate != self.rate || self.samples.is_empty() || (at_us - end_us).abs() > 1_000.0 {
            self.samples.clear();
            self.rate = rate;
            self.start_us = at_us;
        }
        self.samples.extend(mono);
        let keep = (HELD_S * f64::from(rate)) as usize;
        if self.samples.len() > keep {
            let drop = self.samples.len() - keep;
            self.samples.drain(..drop);
            self.start_us += drop as f64 * 1e6 / f64::from(rate);
        }
    }

    /// `len` samples from hub instant `from_us`, if held.
    fn span(&self, from_us: f64, len: usize) -> Option<Vec<f32>> {
        let k = ((from_us - self.start_us) * 1e-6 * f64::from(self.rate)).round();
        if k < 0.0 || k as usize + len > self.samples.len() {
            return None;
        }
        Some(self.samples.range(k as usize..k as usize + len).copied().collect())
    }
}

/// What the watch of a zone says after a snippet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchView {
    /// The zone.
    pub zone: String,
    /// `watching`: the snippet was read; `warming_up`: the hub does not hold the program
    /// that long yet (its relay just started): send more.
    pub state: &'static str,
    /// What was read, and what it means (see [`Reading`]).
    #[serde(flatten)]
    pub reading: Reading,
    /// A calibration started because of the drift: record it (see [`crate::calibrate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrate: Option<CalibrationView>,
    /// In a sentence.
    pub message: String,
}

impl Hub {
    /// Takes a snippet of what a microphone in `zone` heard: mono `samples` at `rate` Hz, the
    /// first captured at hub instant `start_hub_us` (see the module docs).
    pub async fn watch_snippet(
        &self,
        zone: &str,
        rate: f64,
        start_hub_us: f64,
        samples: Vec<f32>,
    ) -> Result<WatchView, CalibrationError> {
        let watch = self.zone_watch(zone, rate).await?;
        let hub = self.clone();
        let zone = zone.to_owned();
        tokio::task::spawn_blocking(move || hub.read_snippet(&zone, &watch, start_hub_us, &samples))
            .await
            .map_err(|e| CalibrationError::Recording(e.to_string()))?
    }

    /// The zone's watch, started (with its relay) if it is not running.
    async fn zone_watch(
        &self,
        zone: &str,
        rate: f64,
    ) -> Result<Arc<Mutex<ZoneWatch>>, CalibrationError> {
        let running = self.watches.0.lock().unwrap_or_else(|e| e.into_inner()).get(zone).cloned();
        if let Some(w) = running
            && !w.lock().unwrap_or_else(|e| e.into_inner()).stop.load(Ordering::Relaxed)
        {
            return Ok(w);
        }
        let correlator = Correlator::new(rate, SNIPPET_S, MAX_LAG_S)
            .map_err(|e| CalibrationError::Recording(e.to_string()))?;
        let (_, _, mut blocks) = self
            .listen(zone)
            .await
            .map_err(|e| CalibrationError::Recording(format!("the zone's program: {e}")))?;
        let program = Arc::new(Mutex::new(Program::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Arc::new(Mutex::new(ZoneWatch {
            program: program.clone(),
            watch: DriftWatch::new(),
            correlator,
            last_snippet: Instant::now(),
            last_act: None,
            last: None,
            stop: stop.clone(),
        }));
        self.watches
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(zone.to_owned(), watch.clone());
        // Holds the relay's blocks (mono) until nobody sends snippets for a while.
        let (hub, name, held) = (self.clone(), zone.to_owned(), watch.clone());
        tokio::spawn(async move {
            let mut mono = Vec::new();
            loop {
                let idle = held.lock().map(|w| w.last_snippet.elapsed() > IDLE).unwrap_or(true);
                if idle || stop.load(Ordering::Relaxed) {
                    break;
                }
                let block = match tokio::time::timeout(Duration::from_secs(1), blocks.recv()).await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                        continue;
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                };
                let Some((at_us, block_rate, channels, pcm)) = crate::listen::read_block(&block)
                else {
                    continue;
                };
                mono.clear();
                mono.extend(pcm.chunks(channels).map(|f| {
                    f.iter().map(|s| f32::from(*s) / 32_768.0).sum::<f32>() / channels as f32
                }));
                if let Ok(mut p) = program.lock() {
                    p.push(at_us, block_rate, &mono);
                }
            }
            stop.store(true, Ordering::Relaxed);
            let mut watches = hub.watches.0.lock().unwrap_or_else(|e| e.into_inner());
            if watches.get(&name).is_some_and(|w| Arc::ptr_eq(w, &held)) {
                watches.remove(&name);
            }
        });
        Ok(watch)
    }

    fn read_snippet(
        &self,
        zone: &str,
        watch: &Mutex<ZoneWatch>,
        start_hub_us: f64,
        samples: &[f32],
    ) -> Result<WatchView, CalibrationError> {
        let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
        w.last_snippet = Instant::now();
        let (reference, program_rate) = {
            let p = w.program.lock().unwrap_or_else(|e| e.into_inner());
            let len = samples.len() + 2 * (MAX_LAG_S * f64::from(p.rate)).round() as usize;
            (p.span(start_hub_us - MAX_LAG_S * 1e6, len), p.rate)
        };
        let Some(reference) = reference else {
            let view = WatchView {
                zone: zone.to_owned(),
                state: "warming_up",
                reading: Reading { baseline_ms: w.watch.baseline_ms(), ..Reading::default() },
                calibrate: None,
                message: format!(
                    "the hub does not hold the zone's program around that snippet (yet): it \
                     keeps the last {HELD_S:.0} s from when the watch started; send the next"
                ),
            };
            return Ok(view);
        };
        if f64::from(program_rate) != w.correlator_rate() {
            return Err(CalibrationError::Recording(format!(
                "the snippet is at {} Hz and the zone's stream at {program_rate} Hz: record at \
                 {program_rate} Hz",
                w.correlator_rate()
            )));
        }
        let lines: Vec<Line> = w
            .correlator
            .lags(&reference, samples)
            .map_err(|e| CalibrationError::Recording(e.to_string()))?;
        let reading = w.watch.push(lines);
        let mut message = match (reading.drift_ms, reading.moved) {
            (Some(d), _) if d.abs() >= ACT_MS => {
                format!("part of the sound now arrives {d:+.1} ms from where it did")
            }
            (Some(_), _) => "every speaker arrives where it did".to_owned(),
            (None, Some((d, _))) => {
                format!("part of the sound moved {d:+.1} ms (once: waiting for the next)")
            }
            (None, None) if reading.lines.is_empty() => {
                "nothing of the program heard (too quiet, too loud around, or another stream)"
                    .to_owned()
            }
            (None, None) => "baseline set".to_owned(),
        };
        let act = reading.drift_ms.is_some_and(|d| d.abs() >= ACT_MS)
            && w.last_act.is_none_or(|t| t.elapsed() >= ACT_EVERY);
        let mut calibrate = None;
        if act {
            w.last_act = Some(Instant::now());
            match self.start_calibration_for(zone, true, "drift") {
                Ok(run) => {
                    message.push_str(": calibrating to find which speaker moved (record it)");
                    calibrate = Some(run);
                }
                Err(e) => message.push_str(&format!(": cannot calibrate now ({e})")),
            }
        }
        let view =
            WatchView { zone: zone.to_owned(), state: "watching", reading, calibrate, message };
        w.last = Some(view.clone());
        drop(w);
        self.publish(Event::ZoneDrift {
            zone: zone.to_owned(),
            drift_ms: view.reading.drift_ms,
            baseline_ms: view.reading.baseline_ms,
            moved_ms: view.reading.moved.map(|m| m.0),
        });
        Ok(view)
    }

    /// A calibration changed a zone's delays: its watch starts from a new baseline.
    pub(crate) fn rebase_watch(&self, zone: &str) {
        if let Some(w) = self.watches.0.lock().unwrap_or_else(|e| e.into_inner()).get(zone) {
            w.lock().unwrap_or_else(|e| e.into_inner()).watch.rebase();
        }
    }

    /// The zone's last watch reading, if it is watched.
    pub fn watch_view(&self, zone: &str) -> Option<WatchView> {
        let w = self.watches.0.lock().unwrap_or_else(|e| e.into_inner()).get(zone).cloned()?;
        w.lock().unwrap_or_else(|e| e.into_inner()).last.clone()
    }
}

impl ZoneWatch {
    fn correlator_rate(&self) -> f64 {
        self.correlator.rate()
    }
}
