//! `tutti-clicks`: measures the real device path. Plays a click every 250 ms through the
//! audio engine into an output device, records an input device (the output's monitor on a
//! PulseAudio null sink), and prints where the engine said each click reached the DAC against
//! where it was heard.
//!
//! ```text
//! tutti-clicks [--host pulse|alsa] [--out DEVICE] [--in DEVICE] [--buffer FRAMES]... [--seconds S] [--json]
//! defaults: --host pulse --out out --in out.monitor --buffer 128 --buffer 256 --seconds 6
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tutti_audio::backend::cpal::CpalBackend;
use tutti_audio::measure::click_alignment;

fn main() -> ExitCode {
    let mut host = "pulse".to_owned();
    let mut out = "out".to_owned();
    let mut inp = "out.monitor".to_owned();
    let mut buffers = Vec::new();
    let mut seconds = 6.0;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value")),
        };
        let r = match a.as_str() {
            "--host" => val("--host").map(|v| host = v),
            "--out" => val("--out").map(|v| out = v),
            "--in" => val("--in").map(|v| inp = v),
            "--buffer" => val("--buffer").and_then(|v| {
                v.parse()
                    .map(|b| buffers.push(b))
                    .map_err(|_| format!("--buffer: `{v}` is not a frame count"))
            }),
            "--seconds" => val("--seconds").and_then(|v| {
                v.parse()
                    .map(|s| seconds = s)
                    .map_err(|_| format!("--seconds: `{v}` is not a number"))
            }),
            "--json" => {
                json = true;
                Ok(())
            }
            other => Err(format!(
                "unknown argument `{other}`; see the doc comment in src/bin/tutti-clicks.rs"
            )),
        };
        if let Err(e) = r {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    if buffers.is_empty() {
        buffers = vec![128, 256];
    }
    let backend = match host.as_str() {
        "pulse" => CpalBackend::pulse(),
        "alsa" => CpalBackend::alsa(),
        h => {
            eprintln!("--host: `{h}` is not pulse or alsa");
            return ExitCode::from(2);
        }
    };
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e} (is a PulseAudio server running? PULSE_SERVER points cpal at one)");
            return ExitCode::FAILURE;
        }
    };
    for b in buffers {
        match click_alignment(&backend, Some(&out), Some(&inp), b, seconds) {
            Ok(r) => {
                if json {
                    println!(
                        "{{\"buffer_frames\":{},\"output_latency_ms\":{:.3},\"clicks\":{},\"expected\":{},\"error_median_ms\":{:.3},\"error_p95_ms\":{:.3},\"jitter_p95_ms\":{:.3},\"error_max_ms\":{:.3},\"underrun_frames\":{}}}",
                        r.buffer_frames,
                        r.output_latency.as_millis_f64(),
                        r.clicks,
                        r.expected,
                        r.error_median.as_millis_f64(),
                        r.error_p95.as_millis_f64(),
                        r.error_jitter_p95.as_millis_f64(),
                        r.error_max.as_millis_f64(),
                        r.underrun_frames
                    );
                } else {
                    println!(
                        "buffer {:>4} frames: output latency {:.2} ms; {} of {} clicks heard; heard − claimed: median {:.3} ms, p95 |error| {:.3} ms, p95 jitter ±{:.3} ms, max {:.3} ms; underrun frames {}",
                        r.buffer_frames,
                        r.output_latency.as_millis_f64(),
                        r.clicks,
                        r.expected,
                        r.error_median.as_millis_f64(),
                        r.error_p95.as_millis_f64(),
                        r.error_jitter_p95.as_millis_f64(),
                        r.error_max.as_millis_f64(),
                        r.underrun_frames
                    );
                }
            }
            Err(e) => {
                eprintln!("buffer {b}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
