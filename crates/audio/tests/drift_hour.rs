//! An hour of virtual audio through the whole playout path (timeline → drift control →
//! rubato → ring → real-time renderer) into a fake DAC whose crystal runs 300 ppm fast and
//! whose timestamps jitter by ±20 µs. What the DAC plays is compared, sample by sample, with
//! the tone that should be heard at each true instant.

use tutti_audio::backend::fake::{FakeDac, SampleClock};
use tutti_audio::engine::{EngineConfig, Voice, output};
use tutti_audio::ramp::SharedGain;
use tutti_audio::source::Tone;
use tutti_audio::timeline::LocalTimeline;
use tutti_proto::{LocalTime, Nanos};

const RATE: u32 = 48_000;
const FREQ: f64 = 997.0;
const AMP: f32 = 0.5;

#[test]
fn an_hour_at_300_ppm_stays_within_50_us_without_glitches() {
    let seconds: f64 =
        std::env::var("TUTTI_DRIFT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3600.0);
    let t0 = LocalTime(10_000_000_000);
    let clock = SampleClock { start: t0, rate: RATE, ppm: 300.0 };
    let mut dac = FakeDac::new(clock, 1, 256, Nanos::from_micros(20));
    let start = t0 + Nanos::from_millis(50);
    let timeline = LocalTimeline::new(Tone::new(RATE, 1, FREQ, AMP), Some(start));
    let voice = Voice::new(timeline, 1, RATE, RATE);
    let config = EngineConfig {
        device_rate: RATE,
        channels: 1,
        block: 128,
        lookahead: 512,
        max_lookahead: 512,
    };
    let (mut engine, mut renderer, shared) = output(voice, config, SharedGain::new());

    // Phase of the played tone against the intended one, per 100 ms window.
    let (mut s_acc, mut c_acc, mut n_acc) = (0.0f64, 0.0f64, 0usize);
    let mut worst_after_lock: f64 = 0.0;
    let mut windows = 0;
    let (mut prev2, mut prev1): (Option<f32>, Option<f32>) = (None, None);
    let mut worst_jump: f32 = 0.0;
    let smooth_limit =
        2.0 * AMP * ((std::f64::consts::TAU * FREQ / f64::from(RATE)).powi(2)) as f32;
    let end = t0 + Nanos::from_secs_f64(seconds);
    let sample_clock = dac.clock;
    while dac.next_callback() < end {
        let now = dac.next_callback();
        engine.fill(now);
        let (first, played) = dac.tick(&mut |out, t| renderer.render(out, t.now, t.dac_time));
        for (i, &x) in played.iter().enumerate() {
            let f = first + i as u64;
            let t = sample_clock.time_of(f);
            if t < start + Nanos::from_millis(100) {
                continue;
            }
            // Glitch check: the second difference of a pure tone is bounded.
            if let (Some(a), Some(b)) = (prev2, prev1) {
                worst_jump = worst_jump.max((x - 2.0 * b + a).abs());
            }
            prev2 = prev1;
            prev1 = Some(x);
            let theta = std::f64::consts::TAU * FREQ * (t - start).as_secs_f64();
            s_acc += f64::from(x) * theta.sin();
            c_acc += f64::from(x) * theta.cos();
            n_acc += 1;
            if n_acc == 4_800 {
                // x = A·sin(θ + φ): φ > 0 means the tone is ahead (played early).
                let phi = c_acc.atan2(s_acc);
                let err_us = phi / (std::f64::consts::TAU * FREQ) * 1e6;
                windows += 1;
                if windows > 10 {
                    worst_after_lock = worst_after_lock.max(err_us.abs());
                }
                (s_acc, c_acc, n_acc) = (0.0, 0.0, 0);
            }
        }
    }
    let underruns = shared.underrun_frames.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{seconds} s at +300 ppm: worst error after 1 s {worst_after_lock:.2} µs, worst 2nd difference {worst_jump:.5} (limit {smooth_limit:.5}), underrun frames {underruns}"
    );
    assert!(windows as f64 >= seconds * 10.0 - 20.0);
    assert!(worst_after_lock < 50.0, "playout error {worst_after_lock} µs");
    assert!(
        worst_jump < smooth_limit,
        "a discontinuity of {worst_jump} (a smooth tone stays below {smooth_limit})"
    );
    assert_eq!(underruns, 0);
}
