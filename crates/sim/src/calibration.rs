//! The calibration benchmark: [`tutti_calib`]'s estimator in seeded simulated rooms
//! ([`crate::room`]), at several SNRs, the same rooms at every SNR.
//!
//! A speaker's *error* is its estimated arrival minus the truth (hidden latency plus flight),
//! both taken relative to the mean of the room's confident speakers: only differences are
//! applied, so an error common to a room's speakers (the microphone's own latency) is no error.
//! Rooms with fewer than two confident speakers add no error (nothing to align), but their
//! refusals count.

use serde::Serialize;
use tutti_calib::{Estimator, Plan, Recording};

use crate::rng::{Rng, splitmix};
use crate::room::{Room, SAMPLE_RATE};

/// The SNRs the benchmark runs, dB.
pub const SNRS_DB: [f64; 8] = [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 30.0];

/// One SNR's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Noise level against the test signal, dB.
    pub snr_db: f64,
    /// Rooms simulated.
    pub rooms: usize,
    /// Speakers in them.
    pub speakers: usize,
    /// Median |error| of confident speakers, ms.
    pub error_p50_ms: f64,
    /// 95th percentile.
    pub error_p95_ms: f64,
    /// Largest.
    pub error_max_ms: f64,
    /// Confident speakers more than 2 ms wrong (must be none).
    pub confident_wrong_gt_2ms: usize,
    /// Speakers refused, % of all.
    pub refused_pct: f64,
    /// Largest error of the fitted microphone skew, ppm, in rooms with a confident speaker.
    pub skew_error_max_ppm: f64,
}

/// What one room gave.
#[derive(Clone, Debug, Default)]
pub struct RoomResult {
    /// Errors of the confident speakers, ms (empty with fewer than two).
    pub errors_ms: Vec<f64>,
    /// Speakers.
    pub speakers: usize,
    /// Refused speakers.
    pub refused: usize,
    /// |fitted − true| skew, ppm, when any speaker was confident.
    pub skew_error_ppm: Option<f64>,
}

/// Room `index` of the benchmark seeded `seed`.
pub fn room(seed: u64, index: usize) -> Room {
    Room::random(&mut Rng::new(splitmix(seed ^ splitmix(index as u64))))
}

/// Runs one room at `snr_db` (none: no noise) through the estimator.
pub fn run_room(
    estimator: &Estimator,
    room: &Room,
    snr_db: Option<f64>,
    noise_seed: u64,
) -> RoomResult {
    let plan = Plan::new(room.speakers.len()).expect("2–4 speakers");
    let (samples, start_s) = room.record(&plan, snr_db, &mut Rng::new(noise_seed));
    let est = estimator
        .estimate(&plan, &Recording { samples: &samples, sample_rate: SAMPLE_RATE, start_s })
        .expect("the simulated recording covers the sequence");
    let confident: Vec<(f64, f64)> = est
        .speakers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.confident)
        .filter_map(|(i, a)| a.arrival_ms.map(|t| (t, room.truth_s(i) * 1e3)))
        .collect();
    let errors_ms = if confident.len() >= 2 {
        let n = confident.len() as f64;
        let mean_est = confident.iter().map(|c| c.0).sum::<f64>() / n;
        let mean_true = confident.iter().map(|c| c.1).sum::<f64>() / n;
        confident.iter().map(|(e, t)| (e - mean_est) - (t - mean_true)).collect()
    } else {
        Vec::new()
    };
    RoomResult {
        errors_ms,
        speakers: est.speakers.len(),
        refused: est.speakers.iter().filter(|a| !a.confident).count(),
        skew_error_ppm: est
            .skew_ppm
            .filter(|_| !confident.is_empty())
            .map(|s| (s - room.skew_ppm).abs()),
    }
}

/// The benchmark: `rooms` rooms at every SNR of `snrs`, on `threads` threads (the figures do
/// not depend on how many).
pub fn bench(snrs: &[f64], rooms: usize, seed: u64, threads: usize) -> Vec<Row> {
    let threads = threads.clamp(1, 64);
    snrs.iter()
        .map(|&snr| {
            let results: Vec<RoomResult> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        scope.spawn(move || {
                            let estimator = Estimator::new(SAMPLE_RATE).expect("48 kHz");
                            (t..rooms)
                                .step_by(threads)
                                .map(|i| {
                                    let noise = splitmix(seed ^ splitmix(i as u64) ^ snr.to_bits());
                                    (i, run_room(&estimator, &room(seed, i), Some(snr), noise))
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut all: Vec<(usize, RoomResult)> = workers
                    .into_iter()
                    .flat_map(|w| w.join().expect("a benchmark thread panicked"))
                    .collect();
                all.sort_by_key(|(i, _)| *i);
                all.into_iter().map(|(_, r)| r).collect()
            });
            summarize(snr, &results)
        })
        .collect()
}

/// One SNR's row from its rooms.
pub fn summarize(snr_db: f64, results: &[RoomResult]) -> Row {
    let mut errors: Vec<f64> =
        results.iter().flat_map(|r| r.errors_ms.iter().map(|e| e.abs())).collect();
    errors.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if errors.is_empty() {
            f64::NAN
        } else {
            errors[((errors.len() - 1) as f64 * p).round() as usize]
        }
    };
    let speakers: usize = results.iter().map(|r| r.speakers).sum();
    let refused: usize = results.iter().map(|r| r.refused).sum();
    Row {
        snr_db,
        rooms: results.len(),
        speakers,
        error_p50_ms: pct(0.5),
        error_p95_ms: pct(0.95),
        error_max_ms: errors.last().copied().unwrap_or(f64::NAN),
        confident_wrong_gt_2ms: errors.iter().filter(|e| **e > 2.0).count(),
        refused_pct: 100.0 * refused as f64 / speakers.max(1) as f64,
        skew_error_max_ppm: results.iter().filter_map(|r| r.skew_error_ppm).fold(0.0, f64::max),
    }
}
