//! Measurements of the real device path: play clicks at known instants, record them back, and
//! compare where the engine *says* each click reached the DAC with where it shows up.
//!
//! On a headless machine this runs through a PulseAudio null sink: play into the sink, record
//! its monitor (see `../shared/lab/pulse-lab.sh` or the tests). Used by the `pulse` test and
//! the `click_latency` example.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tutti_proto::{LocalTime, Nanos};

use crate::AudioError;
use crate::backend::{Backend, StreamSpec};
use crate::clock;
use crate::engine::{EngineConfig, Voice, output};
use crate::ramp::SharedGain;
use crate::source::{CLICK_LEN, Clicks};
use crate::timeline::LocalTimeline;

/// What a click run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ClickReport {
    /// Device buffer size asked for.
    pub buffer_frames: u32,
    /// Output latency the device reported (DAC instant − callback instant), median.
    pub output_latency: Nanos,
    /// Clicks found in the recording.
    pub clicks: usize,
    /// Clicks played.
    pub expected: usize,
    /// Median of (heard − claimed).
    pub error_median: Nanos,
    /// 95th percentile of |heard − claimed − median| (the jitter around the median).
    pub error_jitter_p95: Nanos,
    /// 95th percentile of |heard − claimed|.
    pub error_p95: Nanos,
    /// Largest |heard − claimed|.
    pub error_max: Nanos,
    /// Underrun frames during the run.
    pub underrun_frames: u64,
}

/// Plays a click every 250 ms for `seconds` on `output` of `backend` and records `input`.
pub fn click_alignment(
    backend: &dyn Backend,
    output_device: Option<&str>,
    input_device: Option<&str>,
    buffer_frames: u32,
    seconds: f64,
) -> Result<ClickReport, AudioError> {
    let rate = 48_000;
    let spec = StreamSpec::new(rate, 2, buffer_frames);
    let period = u64::from(rate) / 4;

    // Recording: (capture instant of the chunk's first frame, left channel).
    let recorded: Arc<Mutex<Vec<(LocalTime, Vec<f32>)>>> = Arc::new(Mutex::new(Vec::new()));
    let rec = recorded.clone();
    let recording = Arc::new(AtomicBool::new(false));
    let rec_on = recording.clone();
    let delivering = Arc::new(AtomicBool::new(false));
    let deliv = delivering.clone();
    let mut input = backend.open_input(
        input_device,
        &StreamSpec::new(rate, 2, buffer_frames),
        Box::new(move |data, t| {
            deliv.store(true, Ordering::Relaxed);
            // The measurement harness records from a normal thread's point of view; a lock
            // here is fine (this is a test rig, not the playout path).
            if rec_on.load(Ordering::Relaxed)
                && let Ok(mut r) = rec.lock()
            {
                r.push((t.captured, data.iter().step_by(2).copied().collect()));
            }
        }),
    )?;

    // The recorder must be running before the first click: a monitor's first data can take
    // a second or two (the server wakes the sink).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !delivering.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }

    // Playback: clicks from the first block's DAC instant; every block's claim is recorded.
    let claims: Arc<Mutex<Vec<(LocalTime, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let c2 = claims.clone();
    let timeline = LocalTimeline::new(Clicks::new(rate, 2, period), None);
    let mut voice = Voice::new(timeline, 2, rate, rate);
    voice.on_block(move |dac_time, plan, _| {
        if let Ok(mut c) = c2.lock() {
            c.push((dac_time, plan.position));
        }
    });
    let config = EngineConfig {
        device_rate: rate,
        channels: 2,
        block: 64,
        lookahead: buffer_frames as usize * 2,
        max_lookahead: buffer_frames as usize * 2,
    };
    let (mut engine, mut renderer, shared) = output(voice, config, SharedGain::new());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let media = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            engine.fill(clock::now());
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let latencies: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let lat2 = latencies.clone();
    let mut out = backend.open_output(
        output_device,
        &spec,
        Box::new(move |data, t| {
            renderer.render(data, t.now, t.dac_time);
            if let Ok(mut l) = lat2.try_lock() {
                l.push((t.dac_time - t.now).0);
            }
        }),
    )?;
    recording.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    out.stop();
    recording.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    input.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = media.join();

    let claims = claims.lock().map_err(|_| AudioError::Device("poisoned".into()))?.clone();
    let recorded = recorded.lock().map_err(|_| AudioError::Device("poisoned".into()))?.clone();
    let mut lat = latencies.lock().map_err(|_| AudioError::Device("poisoned".into()))?.clone();
    lat.sort_unstable();
    // Claimed instant of media position m: from the block that contains it.
    let claimed = |m: f64| -> Option<LocalTime> {
        let i = claims.partition_point(|c| c.1 <= m);
        let (t, p) = *claims.get(i.checked_sub(1)?)?;
        Some(t + Nanos::from_secs_f64((m - p) / f64::from(rate)))
    };
    let heard = find_clicks(&recorded, rate);
    let mut errors: Vec<i64> = Vec::new();
    let first_pos = claims.first().map_or(0.0, |c| c.1.max(0.0));
    let last_pos = claims.last().map_or(0.0, |c| c.1);
    let mut expected = 0;
    // The first half second is the streams' start-up (the server has not reported latency yet).
    let mut k = ((first_pos + f64::from(rate) / 2.0) / period as f64).ceil() as u64;
    while (k * period) as f64 + 4_800.0 < last_pos {
        expected += 1;
        if let Some(c) = claimed((k * period) as f64)
            && let Some(h) = heard.iter().min_by_key(|h| (**h - c).abs())
        {
            let e = *h - c;
            if e.abs() < Nanos::from_millis(100) {
                errors.push(e.0);
            }
        }
        k += 1;
    }
    if std::env::var_os("TUTTI_CLICKS_DEBUG").is_some() {
        eprintln!(
            "errors (µs, in order): {:?}",
            errors.iter().map(|e| e / 1000).collect::<Vec<_>>()
        );
        eprintln!(
            "latencies (µs): {:?}",
            lat.iter().step_by((lat.len() / 20).max(1)).map(|e| e / 1000).collect::<Vec<_>>()
        );
    }
    errors.sort_unstable();
    let median = errors.get(errors.len() / 2).copied().unwrap_or(0);
    let p95 = |mut v: Vec<i64>| {
        v.sort_unstable();
        v.get((v.len() as f64 * 0.95) as usize).or(v.last()).copied().unwrap_or(0)
    };
    let jitter = p95(errors.iter().map(|e| (e - median).abs()).collect());
    let abs95 = p95(errors.iter().map(|e| e.abs()).collect());
    Ok(ClickReport {
        buffer_frames,
        output_latency: Nanos(lat.get(lat.len() / 2).copied().unwrap_or(0)),
        clicks: errors.len(),
        expected,
        error_median: Nanos(median),
        error_jitter_p95: Nanos(jitter),
        error_p95: Nanos(abs95),
        error_max: Nanos(errors.iter().map(|e| e.abs()).max().unwrap_or(0)),
        underrun_frames: shared.underrun_frames.load(Ordering::Relaxed),
    })
}

/// The capture instants of a recording's chunks (mono), steadied: a capture clock ticks
/// evenly, but each callback's timestamp carries its own jitter (the callback's wake-up, the
/// host's interpolated latency: hundreds of µs through PulseAudio). A least-squares line of
/// instant against frame count replaces them, piecewise: a jump of more than 2 ms from the
/// line (an overrun, a restart) starts a new piece.
pub fn steady_times(recorded: &[(LocalTime, Vec<f32>)], rate: u32) -> Vec<LocalTime> {
    let mut out = Vec::with_capacity(recorded.len());
    let period = 1e9 / f64::from(rate.max(1));
    let mut frames = 0u64;
    // (frame count, instant − nominal instant) of the current piece.
    let mut piece: Vec<(f64, f64)> = Vec::new();
    let mut origin: Option<LocalTime> = None;
    let flush = |piece: &mut Vec<(f64, f64)>, origin: LocalTime, out: &mut Vec<LocalTime>| {
        let n = piece.len() as f64;
        let (sx, sy) = piece.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (sxx, sxy) = piece
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (x - mx), b + (x - mx) * (y - my)));
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        for (x, _) in piece.iter() {
            let fitted = my + slope * (x - mx) + x * period;
            out.push(origin + Nanos(fitted.round() as i64));
        }
        piece.clear();
    };
    for (t, chunk) in recorded {
        let o = *origin.get_or_insert(*t);
        let x = frames as f64;
        let y = (*t - o).0 as f64 - x * period;
        if let Some(&(_, last)) = piece.last()
            && (y - last).abs() > 2e6
        {
            flush(&mut piece, o, &mut out);
        }
        piece.push((x, y));
        frames += chunk.len() as u64;
    }
    if let Some(o) = origin
        && !piece.is_empty()
    {
        flush(&mut piece, o, &mut out);
    }
    out
}

/// Local instants of click onsets in a recording: normalised cross-correlation with the click,
/// peak-picked, refined to a fraction of a sample by parabolic interpolation.
pub fn find_clicks(recorded: &[(LocalTime, Vec<f32>)], rate: u32) -> Vec<LocalTime> {
    let template = Clicks::click();
    let energy: f32 = template.iter().map(|x| x * x).sum();
    // Flatten with a timestamp per sample (chunks carry their own capture instants, steadied).
    let mut samples = Vec::new();
    let mut times = Vec::new();
    let steady = steady_times(recorded, rate);
    for (t, (_, chunk)) in steady.iter().zip(recorded) {
        for (i, s) in chunk.iter().enumerate() {
            samples.push(*s);
            times.push(*t + Nanos::from_frames(i as u64, rate));
        }
    }
    let n = template.len();
    if samples.len() < n {
        return Vec::new();
    }
    let corr: Vec<f32> = (0..=samples.len() - n)
        .map(|j| samples[j..j + n].iter().zip(&template).map(|(a, b)| a * b).sum::<f32>() / energy)
        .collect();
    let mut out = Vec::new();
    let mut j = 1;
    while j + 1 < corr.len() {
        if corr[j] > 0.5 && corr[j] >= corr[j - 1] && corr[j] >= corr[j + 1] {
            let (a, b, c) = (corr[j - 1], corr[j], corr[j + 1]);
            let denom = a - 2.0 * b + c;
            let frac = if denom.abs() > 1e-9 { 0.5 * (a - c) / denom } else { 0.0 };
            out.push(times[j] + Nanos::from_secs_f64(f64::from(frac) / f64::from(rate)));
            j += CLICK_LEN as usize;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steadied_times_lose_the_callbacks_jitter_and_keep_a_jump() {
        // 128-frame chunks from a capture clock 50 ppm fast, stamped with ±400 µs of jitter;
        // after chunk 300 the stream restarts 10 ms later.
        let period = 1e9 / 48_000.0 * (1.0 - 50e-6);
        let mut x = 12345u32;
        let truth: Vec<f64> = (0..600)
            .map(|k| 1e9 + k as f64 * 128.0 * period + if k >= 300 { 1e7 } else { 0.0 })
            .collect();
        let recorded: Vec<(LocalTime, Vec<f32>)> = truth
            .iter()
            .map(|t| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let jitter = (f64::from(x >> 8) / f64::from(1u32 << 24) - 0.5) * 8e5;
                (LocalTime((t + jitter) as u64), vec![0.0; 128])
            })
            .collect();
        let steady = steady_times(&recorded, 48_000);
        let worst =
            steady.iter().zip(&truth).map(|(s, t)| (s.0 as f64 - t).abs()).fold(0.0, f64::max);
        assert!(worst < 60e3, "worst error {worst} ns");
    }
}
