//! `tutti calibrate`: a microphone here, a zone's speakers anywhere. The hub plays the test
//! sequence through the zone's speakers (see `tutti_hub::calibrate`); this records it, dated on
//! the hub's clock, uploads it, and prints what the hub found and set. With `--watch` it then
//! keeps listening to the music: a snippet every `--every` seconds goes to the hub's drift
//! watch (`tutti_hub::watch`), and when the hub answers that the sound moved, it records the
//! calibration the hub starts to find out which speaker did.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tutti_audio::source::Source;
use tutti_proto::control::{CalibrationState, CalibrationView};

use crate::*;

/// How many clock exchanges with the hub; the fastest dates the recording.
const CLOCK_EXCHANGES: usize = 12;

/// Recorded beyond what the hub asks for, either way.
const SLACK: Duration = Duration::from_millis(300);

/// The most the microphone keeps, seconds (a sequence for 32 speakers is 100 s).
const KEEP_S: f64 = 150.0;

pub(crate) fn calibrate(a: CalibrateArgs) -> Result<()> {
    let hub = HubUrl::parse(&a.hub)?;
    let mic = Mic::open(&a)?;
    let until = a.seconds.map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
    if !a.no_calibrate {
        let body = serde_json::json!({ "zone": a.zone, "apply": !a.measure_only }).to_string();
        let run: CalibrationView =
            serde_json::from_value(hub.json("POST", "/api/calibrations", &a.token, Some(&body))?)
                .context("the hub's answer")?;
        let run = record_run(&hub, &a.token, &mic, run)?;
        if !a.watch {
            return match run.state {
                CalibrationState::Applied | CalibrationState::Measured => Ok(()),
                _ => bail!("{}", run.message),
            };
        }
    }
    if !a.watch {
        bail!("nothing to do: --no-calibrate needs --watch");
    }
    // The drift watch: a snippet every --every seconds, read by the hub against what the zone
    // played.
    let every = Duration::from_secs_f64(a.every.max(tutti_hub::watch::SNIPPET_S + 1.0));
    let snippet = Duration::from_secs_f64(tutti_hub::watch::SNIPPET_S);
    eprintln!(
        "watching zone `{}`: a {} s snippet every {} s",
        a.zone,
        snippet.as_secs(),
        every.as_secs()
    );
    loop {
        let start = tutti_audio::clock::now();
        // The hub needs the program up to the snippet's end and its search range after it.
        let end = start + Nanos::from(snippet);
        tutti_audio::clock::sleep_until(end + Nanos::from_millis(600));
        let offset_us = clock_offset(&hub, &a.token)?;
        let (first, samples) = mic.span(start, end)?;
        let path = format!(
            "/api/zones/{}/watch?rate={}&start_hub_us={:.1}",
            segment(&a.zone),
            a.rate,
            first.0 as f64 / 1e3 + offset_us
        );
        let (status, answer) = hub.request(
            "POST",
            &path,
            &a.token,
            Some(("application/octet-stream", &pcm(&samples))),
        )?;
        let view: serde_json::Value = serde_json::from_slice(&answer)
            .with_context(|| format!("the hub answered {status} with no JSON"))?;
        if status >= 300 {
            bail!("the hub refused the snippet ({status}): {}", view["message"]);
        }
        let lines: Vec<String> = view["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{:.2} ms ({:.0} dB, {:.0} %)",
                    l["lag_ms"].as_f64().unwrap_or(0.0),
                    l["db"].as_f64().unwrap_or(0.0),
                    l["share"].as_f64().unwrap_or(0.0) * 100.0
                )
            })
            .collect();
        println!(
            "watch: drift {} | heard {} | {}",
            view["drift_ms"].as_f64().map_or("—".into(), |d| format!("{d:+.2} ms")),
            if lines.is_empty() { "nothing".into() } else { lines.join(", ") },
            view["message"].as_str().unwrap_or("")
        );
        if let Some(run) = view.get("calibrate").filter(|r| !r.is_null()) {
            let run: CalibrationView =
                serde_json::from_value(run.clone()).context("the hub's calibration")?;
            if let Err(e) = record_run(&hub, &a.token, &mic, run) {
                eprintln!("the drift calibration: {e:#}");
            }
        }
        if until.is_some_and(|u| std::time::Instant::now() >= u) {
            return Ok(());
        }
        tutti_audio::clock::sleep_until(start + Nanos::from(every));
    }
}

/// The hub's clock against ours, µs (hub = local + offset): the fastest of a few round trips
/// has its answer in the middle (a LAN's round trip is a millisecond; the estimator takes
/// ±100 ms).
fn clock_offset(hub: &HubUrl, token: &str) -> Result<f64> {
    let mut best: Option<(Nanos, f64)> = None;
    for _ in 0..CLOCK_EXCHANGES {
        let sent = tutti_audio::clock::now();
        let answer = hub.json("GET", "/api/clock", token, None)?;
        let back = tutti_audio::clock::now();
        let hub_us = answer["hub_us"].as_f64().ok_or_else(|| anyhow!("/api/clock: no hub_us"))?;
        let rtt = back - sent;
        let mid_us = (sent.0 as f64 + rtt.0 as f64 / 2.0) / 1e3;
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, hub_us - mid_us));
        }
    }
    best.map(|(_, o)| o).ok_or_else(|| anyhow!("no clock exchange with the hub"))
}

/// Records what a calibration run asks for, uploads it, prints the result.
fn record_run(
    hub: &HubUrl,
    token: &str,
    mic: &Mic,
    run: CalibrationView,
) -> Result<CalibrationView> {
    eprintln!(
        "calibration {}: {} speakers of zone `{}` play the sequence; recording…",
        run.id,
        run.speakers.len(),
        run.zone
    );
    let offset_us = clock_offset(hub, token)?;
    let local = |hub_us: f64| tutti_proto::LocalTime(((hub_us - offset_us) * 1e3).max(0.0) as u64);
    let (from, to) = (local(run.record_from_hub_us), local(run.record_to_hub_us));
    tutti_audio::clock::sleep_until(to + Nanos::from(SLACK));
    let (first, samples) = mic.span(from - Nanos::from(SLACK), to + Nanos::from(SLACK))?;
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    eprintln!(
        "recorded {:.1} s, peak {:.1} dBFS; the hub estimates…",
        samples.len() as f64 / f64::from(mic.rate),
        20.0 * f64::from(peak.max(1e-9)).log10()
    );
    let path = format!(
        "/api/calibrations/{}/recording?rate={}&start_hub_us={:.1}",
        run.id,
        mic.rate,
        first.0 as f64 / 1e3 + offset_us
    );
    let (status, answer) =
        hub.request("POST", &path, token, Some(("application/octet-stream", &pcm(&samples))))?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)
        .with_context(|| format!("the hub answered {status} with no JSON"))?;
    if status >= 300 {
        bail!("the hub refused the recording ({status}): {}", answer["message"]);
    }
    let run: CalibrationView = serde_json::from_value(answer).context("the hub's answer")?;
    print_run(&run);
    Ok(run)
}

/// Mono samples as s16le.
fn pcm(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect()
}

/// A path segment, percent-encoded where it must be.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The microphone, captured from start to finish on a thread of its own, each frame dated on
/// the local clock.
struct Mic {
    rate: u32,
    name: String,
    held: Arc<Mutex<Held>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _stream: Box<dyn tutti_audio::backend::ActiveStream>,
}

/// What the microphone holds: the last [`KEEP_S`], and the local instant of the first.
#[derive(Default)]
struct Held {
    samples: VecDeque<f32>,
    first: Option<LocalTime>,
    overruns: u64,
    failed: Option<String>,
}

impl Mic {
    fn open(a: &CalibrateArgs) -> Result<Mic> {
        let name = a.mic.clone().unwrap_or_else(|| "default".into());
        let backend = if a.host == "alsa" {
            tutti_audio::backend::cpal::CpalBackend::alsa()?
        } else {
            tutti_audio::backend::cpal::CpalBackend::pulse()?
        };
        let (mut capture, stream) = tutti_audio::capture::CaptureSource::open(
            &backend,
            a.mic.as_deref(),
            &StreamSpec::new(a.rate, 1, 128),
        )
        .with_context(|| format!("opening the microphone `{name}`"))?;
        let held = Arc::new(Mutex::new(Held::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (held, stop) = (held.clone(), stop.clone());
            let keep = (KEEP_S * f64::from(a.rate)) as usize;
            std::thread::Builder::new().name("tutti-calibrate-mic".into()).spawn(move || {
                let mut chunk = Vec::with_capacity(480);
                while !stop.load(Ordering::Relaxed) {
                    chunk.clear();
                    if let Err(e) = capture.read(&mut chunk, 480) {
                        if let Ok(mut h) = held.lock() {
                            h.failed = Some(e.to_string());
                        }
                        break;
                    }
                    // The first frame held, dated by the device clock fitted through every
                    // chunk's timestamp up to now.
                    let rate = capture.sample_rate();
                    let next = capture.next_capture_time();
                    let Ok(mut h) = held.lock() else { break };
                    h.samples.extend(&chunk);
                    let drop = h.samples.len().saturating_sub(keep);
                    h.samples.drain(..drop);
                    let len = h.samples.len() as u64;
                    h.first = next.map(|t| t - Nanos::from_frames(len, rate));
                    h.overruns = capture.overruns();
                }
            })?
        };
        Ok(Mic { rate: a.rate, name, held, stop, thread: Some(thread), _stream: stream })
    }

    /// What was captured from local instant `from` to `to` (waits until it was), and the
    /// instant of its first sample.
    fn span(&self, from: LocalTime, to: LocalTime) -> Result<(LocalTime, Vec<f32>)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            {
                let h = self.held.lock().map_err(|_| anyhow!("the microphone's thread died"))?;
                if let Some(why) = &h.failed {
                    bail!("the microphone `{}`: {why}", self.name);
                }
                if let Some(first) = h.first {
                    let at = |t: LocalTime| {
                        ((t - first).0 as f64 * 1e-9 * f64::from(self.rate)).round() as i64
                    };
                    let (a, b) = (at(from).max(0), at(to));
                    if b <= h.samples.len() as i64 {
                        if a >= b {
                            bail!(
                                "the microphone `{}` holds nothing of that span (it keeps the last {KEEP_S:.0} s)",
                                self.name
                            );
                        }
                        if h.overruns > 0 {
                            eprintln!(
                                "warning: the microphone lost {} frames (this machine was too busy)",
                                h.overruns
                            );
                        }
                        let samples = h.samples.range(a as usize..b as usize).copied().collect();
                        return Ok((first + Nanos::from_frames(a as u64, self.rate), samples));
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("the microphone `{}` delivers nothing (or not in real time)", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn print_run(run: &CalibrationView) {
    println!("calibration {} of zone `{}`: {:?}: {}", run.id, run.zone, run.state, run.message);
    println!("  {:<24} {:>11} {:>8} {:>9}  delay", "speaker", "arrival", "peak", "spread");
    for s in &run.speakers {
        let delay = match (s.delay_ms, s.applied) {
            (Some(d), true) => format!("{:.2} → {d:.2} ms", s.previous_delay_ms),
            (Some(d), false) => format!("{:.2} ms (would be {d:.2})", s.previous_delay_ms),
            (None, _) => format!("{:.2} ms (kept)", s.previous_delay_ms),
        };
        println!(
            "  {:<24} {:>11} {:>8} {:>9}  {delay}{}",
            s.name,
            s.arrival_ms.map_or("—".into(), |a| format!("{a:+.2} ms")),
            s.peak_db.map_or("—".into(), |p| format!("{p:.0} dB")),
            s.spread_ms.map_or("—".into(), |p| format!("{p:.3} ms")),
            s.refused.as_ref().map_or(String::new(), |r| format!("  refused: {r}"))
        );
    }
    if let Some(skew) = run.skew_ppm {
        println!("  microphone clock against the stream's: {skew:+.1} ppm");
    }
}

/// The hub's plain-HTTP API address.
struct HubUrl {
    host: String,
}

impl HubUrl {
    fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!(
                "--hub `{url}`: give the hub's plain HTTP API address, http://HOST:PORT \
                 (`tutti serve --http`; https is not spoken here yet)"
            )
        })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            bail!("--hub `{url}`: write http://HOST:PORT, nothing after the port");
        }
        Ok(HubUrl { host: host.to_owned() })
    }

    /// A request with a JSON answer (an error status is an error, in the hub's words).
    fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value> {
        let (status, answer) =
            self.request(method, path, token, body.map(|b| ("application/json", b.as_bytes())))?;
        let value: serde_json::Value = serde_json::from_slice(&answer)
            .with_context(|| format!("{method} {path}: the hub answered {status} with no JSON"))?;
        if status >= 300 {
            bail!("{method} {path}: {status}: {}", value["message"].as_str().unwrap_or("?"));
        }
        Ok(value)
    }

    /// One HTTP/1.1 request on a connection of its own: status and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut tcp = TcpStream::connect(&self.host)
            .with_context(|| format!("connecting to the hub at {}", self.host))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_nodelay(true)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n",
            self.host
        );
        if let Some((kind, bytes)) = body {
            head.push_str(&format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", bytes.len()));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes())?;
        if let Some((_, bytes)) = body {
            tcp.write_all(bytes)?;
        }
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        parse_response(&raw).ok_or_else(|| anyhow!("{method} {path}: not an HTTP answer"))
    }
}

/// Status and body of a whole HTTP/1.1 response (`Content-Length` or chunked).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let (mut out, mut rest) = (Vec::new(), body);
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_a_length_or_in_chunks() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((201, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((200, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
    }

    #[test]
    fn the_hub_address_must_be_plain_http() {
        assert_eq!(HubUrl::parse("http://127.0.0.1:7480/").unwrap().host, "127.0.0.1:7480");
        let e = HubUrl::parse("https://hub:7443").err().unwrap().to_string();
        assert!(e.contains("--hub") && e.contains("http://HOST:PORT"), "{e}");
        assert!(HubUrl::parse("http://hub:7480/api").is_err());
    }
}
