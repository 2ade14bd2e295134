//! Acoustic calibration, the hub's half: a zone's speakers play the test sequence
//! ([`tutti_calib::Plan`]) on one stream frame, a microphone records it, the estimator finds
//! each speaker's arrival, and the hub sets each speaker's per-device delay so that all arrive
//! together at the microphone.
//!
//! 1. `POST /api/calibrations {"zone"}` ([`Hub::start_calibration`]): the hub picks a stream
//!    frame [`LEAD`] ahead of what the zone plays now and tells every online player of the
//!    zone that can (`calibrate` among its capabilities) which part to play from it
//!    ([`Command::Calibrate`]; the stream is silenced under the sequence, other zones play
//!    on). The answer says, on the hub's clock (`GET /api/clock`), when the sequence starts
//!    and what a recording must cover.
//! 2. A microphone anywhere records that span and uploads it, dated on the hub's clock
//!    (`POST /api/calibrations/{id}/recording`: `tutti calibrate` does both; a browser's
//!    microphone can, later, through the same call): [`Hub::calibration_recording`]. Its
//!    dating may be off by up to [`tutti_calib::MIC_OFFSET_MAX_S`] (the capture's own
//!    latency, the clock exchange): only the differences between speakers are applied.
//! 3. Confident speakers get their new delay: the old one plus what makes them arrive with
//!    the latest, which keeps its own (so the zone as a whole is heard when its latest speaker
//!    was, and calibrating again moves nothing but what changed); refused ones keep theirs.
//!    Fewer than two confident speakers: nothing is applied. A delay that cannot be set puts
//!    every changed one back. Each speaker's result joins its node's calibration history
//!    (`GET /api/nodes/{id}/calibrations`); a calibration the drift watch started
//!    ([`crate::watch`]) also records how far each speaker's sound had moved.
//!
//! `DELETE /api/calibrations/{id}` cancels one that plays: the players stop the sequence and
//! the stream comes back; nothing changes. One that gets no recording fails after
//! [`RECORDING_WAIT`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tutti_calib::{Estimator, Plan, Recording};
use tutti_proto::control::{
    CalibratedSpeaker, CalibrationRecord, CalibrationState, CalibrationView, Command, Event,
    SettingsPatch,
};

use crate::Hub;
use crate::registry::RegistryError;

/// How far ahead of what the zone plays now the sequence starts: time for the command to
/// reach every player and for a microphone to start recording.
pub const LEAD: Duration = Duration::from_millis(1500);

/// How long after the sequence's end a recording is waited for.
pub const RECORDING_WAIT: Duration = Duration::from_secs(60);

/// What a recording should cover beyond the sequence's span, either way, seconds.
const MARGIN_S: f64 = 0.25;

/// How many runs the hub remembers.
const KEEP: usize = 20;

/// The runs, newest last.
#[derive(Clone, Debug, Default)]
pub(crate) struct Runs(Arc<Mutex<RunsInner>>);

#[derive(Debug, Default)]
struct RunsInner {
    runs: VecDeque<Run>,
    next: u64,
}

#[derive(Debug, Clone)]
struct Run {
    view: CalibrationView,
    plan: Plan,
    /// The hub instant the sequence starts at the speakers, ns.
    starts_ns: f64,
    /// When it gives up waiting for a recording.
    deadline: Instant,
}

/// Why a calibration cannot start or go on, said with the fix.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// No such zone (or node).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No such run.
    #[error("no calibration `{0}`: GET /api/calibrations lists them")]
    NoRun(String),
    /// Too few speakers to align.
    #[error(
        "zone `{zone}` has {count} online player(s) that can calibrate: calibration aligns \
         speakers with each other, so it needs at least two (put players in the zone, or \
         update the ones that cannot)"
    )]
    TooFew {
        /// The zone.
        zone: String,
        /// How many it has.
        count: usize,
    },
    /// Nothing plays in the zone, so there is no stream frame to start on.
    #[error(
        "zone `{0}` plays nothing now: the sequence plays over the zone's stream, so start \
         its source (or route the zone to one) and try again"
    )]
    Silent(String),
    /// One runs there already.
    #[error(
        "zone `{zone}` is being calibrated (`{id}`): wait for it, or DELETE /api/calibrations/{id}"
    )]
    Busy {
        /// The zone.
        zone: String,
        /// The run.
        id: String,
    },
    /// The run is not waiting for a recording.
    #[error("calibration `{id}` is {state:?}: it takes no recording now (start another)")]
    NotWaiting {
        /// The run.
        id: String,
        /// Where it stands.
        state: CalibrationState,
    },
    /// The recording does not fit the sequence.
    #[error("the recording: {0}")]
    Recording(String),
    /// A player could not be told.
    #[error("node `{0}` is not connected: nothing was changed, try again")]
    Offline(String),
}

impl CalibrationError {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CalibrationError::Registry(RegistryError::NoZone(_)) => "no_such_zone",
            CalibrationError::Registry(RegistryError::NoNode(_)) => "no_such_node",
            CalibrationError::Registry(_) => "invalid",
            CalibrationError::NoRun(_) => "no_such_calibration",
            CalibrationError::TooFew { .. } => "too_few_speakers",
            CalibrationError::Silent(_) => "zone_silent",
            CalibrationError::Busy { .. } => "busy",
            CalibrationError::NotWaiting { .. } => "not_waiting",
            CalibrationError::Recording(_) => "bad_recording",
            CalibrationError::Offline(_) => "node_offline",
        }
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl RunsInner {
    /// Runs still waiting past their deadline fail (their speakers are silent again by then).
    fn expire(&mut self, now: Instant) -> Vec<CalibrationView> {
        let mut ended = Vec::new();
        for run in &mut self.runs {
            if run.view.state == CalibrationState::Playing && now > run.deadline {
                run.view.state = CalibrationState::Failed;
                run.view.message = format!(
                    "no recording arrived within {} s of the sequence's end: nothing changed \
                     (record with `tutti calibrate`, or upload to \
                     /api/calibrations/{}/recording)",
                    RECORDING_WAIT.as_secs(),
                    run.view.id
                );
                ended.push(run.view.clone());
            }
        }
        ended
    }

    fn get(&mut self, id: &str) -> Result<&mut Run, CalibrationError> {
        self.runs.iter_mut().find(|r| r.view.id == id).ok_or(CalibrationError::NoRun(id.into()))
    }
}

impl Hub {
    /// The calibration runs the hub remembers, newest last.
    pub fn calibrations(&self) -> Vec<CalibrationView> {
        let (views, ended) = {
            let mut runs = self.calibration_runs.0.lock().unwrap_or_else(|e| e.into_inner());
            let ended = runs.expire(Instant::now());
            (runs.runs.iter().map(|r| r.view.clone()).collect(), ended)
        };
        self.announce_runs(ended);
        views
    }

    /// One run.
    pub fn calibration(&self, id: &str) -> Result<CalibrationView, CalibrationError> {
        self.calibrations()
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| CalibrationError::NoRun(id.into()))
    }

    fn announce_runs(&self, runs: Vec<CalibrationView>) {
        for run in runs {
            self.publish(Event::Calibration { run: Box::new(run) });
        }
    }

    /// Starts calibrating zone `zone` (see the module docs); `apply: false` measures only.
    pub fn start_calibration(
        &self,
        zone: &str,
        apply: bool,
    ) -> Result<CalibrationView, CalibrationError> {
        self.start_calibration_for(zone, apply, "asked")
    }

    /// [`start_calibration`](Self::start_calibration) for a `reason` (`asked`, `drift`).
    pub(crate) fn start_calibration_for(
        &self,
        zone: &str,
        apply: bool,
        reason: &str,
    ) -> Result<CalibrationView, CalibrationError> {
        let now = Instant::now();
        let (speakers, clock) = self.with(|r| {
            let speakers = r.zone_players(zone, "calibrate");
            ((speakers, r.zone_clock(zone)), vec![], false)
        });
        let speakers = speakers?;
        if speakers.len() < 2 {
            return Err(CalibrationError::TooFew { zone: zone.into(), count: speakers.len() });
        }
        let Some((seen, position, rate)) = clock else {
            return Err(CalibrationError::Silent(zone.into()));
        };
        let plan =
            Plan::new(speakers.len()).map_err(|e| CalibrationError::Recording(e.to_string()))?;
        let ahead = now.saturating_duration_since(seen) + LEAD;
        let at = position + (ahead.as_secs_f64() * f64::from(rate)).round() as u64;
        // The hub instant frame `at` plays: the report's instant, plus the frames between.
        let seen_ns = tutti_audio::clock::to_local(seen).0 as f64;
        let starts_ns = seen_ns + (at - position) as f64 / f64::from(rate) * 1e9;
        let (from_s, to_s) = plan.recording_span_s();
        let (id, ended) = {
            let mut runs = self.calibration_runs.0.lock().unwrap_or_else(|e| e.into_inner());
            let ended = runs.expire(now);
            if let Some(busy) = runs.runs.iter().find(|r| {
                r.view.zone == zone
                    && matches!(
                        r.view.state,
                        CalibrationState::Playing | CalibrationState::Estimating
                    )
            }) {
                return Err(CalibrationError::Busy { zone: zone.into(), id: busy.view.id.clone() });
            }
            runs.next += 1;
            let id = format!("cal-{}-{}", unix_now(), runs.next);
            let view = CalibrationView {
                id: id.clone(),
                zone: zone.into(),
                state: CalibrationState::Playing,
                message: format!(
                    "{} speakers play the sequence ({:.1} s); waiting for the microphone's \
                     recording",
                    speakers.len(),
                    plan.duration_s()
                ),
                speakers: speakers
                    .iter()
                    .map(|(id, name, delay)| CalibratedSpeaker {
                        id: id.clone(),
                        name: name.clone(),
                        previous_delay_ms: *delay,
                        ..CalibratedSpeaker::default()
                    })
                    .collect(),
                created_at: unix_now(),
                at_frame: at,
                starts_hub_us: starts_ns / 1e3,
                record_from_hub_us: (starts_ns + (from_s - MARGIN_S) * 1e9) / 1e3,
                record_to_hub_us: (starts_ns + (to_s + MARGIN_S) * 1e9) / 1e3,
                apply,
                reason: reason.to_owned(),
                skew_ppm: None,
                spread_before_ms: None,
            };
            let deadline = seen
                + Duration::from_secs_f64((at - position) as f64 / f64::from(rate) + to_s)
                + RECORDING_WAIT;
            runs.runs.push_back(Run { view, plan, starts_ns, deadline });
            while runs.runs.len() > KEEP {
                runs.runs.pop_front();
            }
            (id, ended)
        };
        self.announce_runs(ended);
        let n = speakers.len() as u32;
        for (i, (node, ..)) in speakers.iter().enumerate() {
            let command = Command::Calibrate { speakers: n, speaker: i as u32, at };
            if !self.command(node, vec![command]) {
                for (other, ..) in &speakers {
                    self.command(other, vec![Command::CancelCalibration]);
                }
                self.finish(
                    &id,
                    CalibrationState::Failed,
                    format!("node `{node}` is not connected: nothing changed"),
                );
                return Err(CalibrationError::Offline(node.clone()));
            }
        }
        let view = self.calibration(&id)?;
        self.announce_runs(vec![view.clone()]);
        Ok(view)
    }

    /// Ends run `id` in `state` with `message`.
    fn finish(
        &self,
        id: &str,
        state: CalibrationState,
        message: String,
    ) -> Option<CalibrationView> {
        let view = {
            let mut runs = self.calibration_runs.0.lock().unwrap_or_else(|e| e.into_inner());
            let run = runs.get(id).ok()?;
            run.view.state = state;
            run.view.message = message;
            run.view.clone()
        };
        self.announce_runs(vec![view.clone()]);
        Some(view)
    }

    /// Cancels run `id` if it plays: its players stop the sequence; nothing changes.
    pub fn cancel_calibration(&self, id: &str) -> Result<CalibrationView, CalibrationError> {
        let run = self.calibration(id)?;
        if run.state != CalibrationState::Playing {
            return Err(CalibrationError::NotWaiting { id: id.into(), state: run.state });
        }
        for s in &run.speakers {
            self.command(&s.id, vec![Command::CancelCalibration]);
        }
        Ok(self
            .finish(id, CalibrationState::Cancelled, "cancelled: delays left as they were".into())
            .unwrap_or(run))
    }

    /// Takes the microphone's recording of run `id`: mono `samples` at `rate` Hz, the first
    /// one captured at hub instant `start_hub_us` (µs, the hub's clock). Runs the estimator
    /// (hundreds of milliseconds: call it off the async runtime) and applies the result.
    pub fn calibration_recording(
        &self,
        id: &str,
        rate: f64,
        start_hub_us: f64,
        samples: &[f32],
    ) -> Result<CalibrationView, CalibrationError> {
        let estimator =
            Estimator::new(rate).map_err(|e| CalibrationError::Recording(e.to_string()))?;
        let (mut view, plan, start_s, ended) = {
            let mut runs = self.calibration_runs.0.lock().unwrap_or_else(|e| e.into_inner());
            let ended = runs.expire(Instant::now());
            let run = runs.get(id)?;
            let state = run.view.state;
            if state != CalibrationState::Playing {
                return Err(CalibrationError::NotWaiting { id: id.into(), state });
            }
            let start_s = (start_hub_us * 1e3 - run.starts_ns) / 1e9;
            // Checked before the work: a recording that misses a slot is refused at once and
            // the run keeps waiting for a better one.
            let (from_s, to_s) = run.plan.recording_span_s();
            let end_s = start_s + samples.len() as f64 / rate;
            if !(start_s <= from_s && end_s >= to_s) {
                return Err(CalibrationError::Recording(format!(
                    "it covers {start_s:.3}–{end_s:.3} s of the sequence, which needs \
                     {from_s:.3}–{to_s:.3} s: record from hub instant {:.0} µs to {:.0} µs",
                    run.view.record_from_hub_us, run.view.record_to_hub_us
                )));
            }
            run.view.state = CalibrationState::Estimating;
            run.view.message = "estimating each speaker's arrival".into();
            (run.view.clone(), run.plan.clone(), start_s, ended)
        };
        self.announce_runs(ended);
        self.announce_runs(vec![view.clone()]);
        let recording = Recording { samples, sample_rate: rate, start_s };
        let estimate = match estimator.estimate(&plan, &recording) {
            Ok(e) => e,
            Err(e) => {
                let v = self.finish(id, CalibrationState::Failed, format!("the estimator: {e}"));
                return v.ok_or_else(|| CalibrationError::NoRun(id.into()));
            }
        };
        let extra = estimate.delays_ms();
        view.skew_ppm = estimate.skew_ppm;
        for ((s, a), x) in view.speakers.iter_mut().zip(&estimate.speakers).zip(&extra) {
            s.arrival_ms = a.arrival_ms;
            s.peak_db = Some(a.peak_db);
            s.spread_ms = a.spread_ms;
            s.confident = a.confident;
            s.refused = a.refused.clone();
            s.delay_ms = x.map(|x| s.previous_delay_ms + x);
        }
        let arrivals: Vec<f64> =
            view.speakers.iter().filter(|s| s.confident).filter_map(|s| s.arrival_ms).collect();
        // A drift calibration says which speakers moved: those whose sound left the others'
        // (the median's) by more than the watch's stillness, and by how much (their history).
        // The delays follow the same rule as any calibration (the latest keeps its own, the
        // others wait for it): moving a late speaker earlier instead would cut into its
        // latency budget (a player 20 ms early on a 100 ms zone starved and glitched on the
        // speaker instrument), while waiting costs only latency.
        let mut moved = vec![None; view.speakers.len()];
        if view.reason == "drift" && arrivals.len() >= 2 {
            let mut sorted = arrivals.clone();
            sorted.sort_by(f64::total_cmp);
            let median = if sorted.len() % 2 == 1 {
                sorted[sorted.len() / 2]
            } else {
                (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
            };
            for (s, m) in view.speakers.iter().zip(&mut moved) {
                *m = s.arrival_ms.filter(|_| s.confident).map(|a| a - median);
            }
        }
        let confident = arrivals.len();
        if confident >= 1 {
            let (lo, hi) = arrivals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), a| (l.min(*a), h.max(*a)));
            view.spread_before_ms = Some(hi - lo);
        }
        let limit = (view.reason == "drift").then_some(crate::watch::MAX_CORRECTION_MS);
        let too_much = view.speakers.iter().find(|s| {
            limit.is_some_and(|l| s.delay_ms.is_some_and(|d| (d - s.previous_delay_ms).abs() > l))
        });
        let too_far = view.speakers.iter().find(|s| s.delay_ms.is_some_and(|d| d.abs() > 1000.0));
        let (state, message) = if confident < 2 {
            (
                CalibrationState::Refused,
                format!(
                    "{confident} of {} speakers heard clearly enough: nothing applied (a \
                     quieter room, the microphone nearer, or the speakers louder)",
                    view.speakers.len()
                ),
            )
        } else if let Some(s) = too_much {
            (
                CalibrationState::Refused,
                format!(
                    "`{}` would move by {:.1} ms, more than a drift calibration may ({:.0} ms): \
                     nothing applied (calibrate the zone when it is quiet)",
                    s.name,
                    s.delay_ms.unwrap_or_default() - s.previous_delay_ms,
                    crate::watch::MAX_CORRECTION_MS
                ),
            )
        } else if let Some(s) = too_far {
            (
                CalibrationState::Refused,
                format!(
                    "`{}` would need a delay of {:.1} ms, beyond ±1000 ms: nothing applied",
                    s.name,
                    s.delay_ms.unwrap_or_default()
                ),
            )
        } else if !view.apply {
            (CalibrationState::Measured, "measured; nothing applied (asked not to)".into())
        } else {
            match self.apply_delays(&view) {
                Ok(()) => (
                    CalibrationState::Applied,
                    format!(
                        "{confident} of {} speakers aligned (they arrived {:.2} ms apart)",
                        view.speakers.len(),
                        view.spread_before_ms.unwrap_or_default()
                    ),
                ),
                Err(why) => (CalibrationState::Failed, why),
            }
        };
        if state == CalibrationState::Applied {
            for s in &mut view.speakers {
                s.applied = s.delay_ms.is_some();
            }
        }
        let at = unix_now();
        let kind = if view.reason == "drift" { "drift" } else { "calibration" };
        let saved = self.change(|r| {
            for (s, m) in view.speakers.iter().zip(&moved) {
                r.record_calibration(
                    &s.id,
                    CalibrationRecord {
                        at,
                        run: view.id.clone(),
                        kind: kind.into(),
                        acoustic_drift_ms: *m,
                        measured_ms: s.arrival_ms,
                        previous_delay_ms: s.previous_delay_ms,
                        applied_delay_ms: if s.applied { s.delay_ms } else { None },
                        peak_db: s.peak_db,
                        confident: s.confident,
                    },
                );
            }
            Ok(((), vec![]))
        });
        if let Err(e) = saved {
            tracing::warn!("calibration {}: its history was not saved: {e}", view.id);
        }
        view.state = state;
        view.message = message;
        {
            let mut runs = self.calibration_runs.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(run) = runs.get(id) {
                run.view = view.clone();
            }
        }
        self.announce_runs(vec![view.clone()]);
        if state == CalibrationState::Applied {
            self.rebase_watch(&view.zone);
        }
        Ok(view)
    }

    /// Sets every speaker's new delay; if one cannot be set, puts back the ones that were.
    fn apply_delays(&self, view: &CalibrationView) -> Result<(), String> {
        let mut done = Vec::new();
        for s in view.speakers.iter().filter(|s| s.confident) {
            let Some(d) = s.delay_ms else { continue };
            if d == s.previous_delay_ms {
                continue;
            }
            let patch = SettingsPatch { delay_ms: Some(d), ..SettingsPatch::default() };
            let why = match self.apply(&s.id, patch) {
                Ok((v, true)) if v.online => None,
                Ok(_) => Some(format!("`{}` went away before its delay was set", s.name)),
                Err(e) => Some(format!("`{}`: {e}", s.name)),
            };
            if let Some(why) = why {
                for (id, old) in done {
                    let patch = SettingsPatch { delay_ms: Some(old), ..SettingsPatch::default() };
                    let _ = self.apply(id, patch);
                }
                return Err(format!("{why}: the previous delays are back in place"));
            }
            done.push((&s.id, s.previous_delay_ms));
        }
        Ok(())
    }
}
