//! `tutti-lab`: the speaker-sync instrument's tools (driven by `scripts/speakers.sh`).
//!
//! ```text
//! tutti-lab signal OUT.wav --seconds S [--channels N] [--delay-us D]
//! tutti-lab record FIFO OUT.raw --channels C --keep K --seconds S [--format s16le|float32le] [--pipe-bytes B] [--log LOG.tsv] [--summary JSON]
//!                  [--mic MIC.fifo --mic-channels 1,2,3 --mic-delays-ms 37,112,5 [--mic-gain 0.3] [--mic-noise-rms 0.03] [--mic-change 60:1:+20]]
//! tutti-lab analyze REC.raw --channels K [--format s16le|float32le] [--names a,b,c] [--settle S] [--mark SECONDS:PLAYER] [--label L] [--json OUT] [--series OUT.tsv]
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use tutti_lab::LabError;
use tutti_lab::analyze::{AnalyzeOptions, Recording, analyze};
use tutti_lab::record::{RecordOptions, Room, record};
use tutti_lab::signal::{RATE, render};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tutti-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: String) -> LabError {
    LabError::Usage(message)
}

/// Positional arguments and `--flag value` pairs.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse(args: Vec<String>) -> Result<Args, LabError> {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let v = it.next().ok_or_else(|| usage(format!("--{name} needs a value")))?;
                flags.push((name.to_owned(), v));
            } else {
                positional.push(a);
            }
        }
        Ok(Args { positional, flags })
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, LabError> {
        match self.get(name) {
            Some(v) => v.parse().map_err(|_| usage(format!("--{name} {v}: not a number"))),
            None => default.ok_or_else(|| usage(format!("--{name} is required"))),
        }
    }
    fn path(&self, i: usize, what: &str) -> Result<PathBuf, LabError> {
        self.positional
            .get(i + 1)
            .map(PathBuf::from)
            .ok_or_else(|| usage(format!("missing {what}")))
    }
    fn check(&self, known: &[&str]) -> Result<(), LabError> {
        for (n, _) in &self.flags {
            if !known.contains(&n.as_str()) {
                return Err(usage(format!("unknown flag --{n} (known: --{})", known.join(", --"))));
            }
        }
        Ok(())
    }
}

/// Bytes per sample of `--format` (s16le, the default, or float32le).
fn sample_bytes(format: Option<&str>) -> Result<usize, LabError> {
    match format.unwrap_or("s16le") {
        "s16le" => Ok(2),
        "float32le" => Ok(4),
        f => Err(usage(format!("--format {f}: use s16le or float32le"))),
    }
}

fn run(args: Vec<String>) -> Result<(), LabError> {
    let a = Args::parse(args)?;
    match a.positional.first().map(String::as_str) {
        Some("signal") => {
            a.check(&["seconds", "channels", "delay-us"])?;
            let out = a.path(0, "the output WAV")?;
            let seconds: f64 = a.num("seconds", None)?;
            let channels: u16 = a.num("channels", Some(2))?;
            let delay: f64 = a.num("delay-us", Some(0.0))?;
            let samples = render((seconds * f64::from(RATE)) as usize, channels.into(), delay);
            let spec = hound::WavSpec {
                channels,
                sample_rate: RATE,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let wav = |source| LabError::Wav { path: out.clone(), source };
            let mut w = hound::WavWriter::create(&out, spec).map_err(wav)?;
            for s in samples {
                w.write_sample(s).map_err(wav)?;
            }
            w.finalize().map_err(wav)?;
            Ok(())
        }
        Some("record") => {
            a.check(&[
                "channels",
                "keep",
                "seconds",
                "pipe-bytes",
                "log",
                "summary",
                "format",
                "mic",
                "mic-channels",
                "mic-delays-ms",
                "mic-gain",
                "mic-noise-rms",
                "mic-change",
            ])?;
            let fifo = a.path(0, "the pipe sink's FIFO")?;
            let out = a.path(1, "the output file")?;
            let room = match a.get("mic") {
                None => None,
                Some(mic) => {
                    let list = |name: &str| -> Result<Vec<f64>, LabError> {
                        a.get(name)
                            .ok_or_else(|| usage(format!("--mic needs --{name}")))?
                            .split(',')
                            .map(|v| {
                                v.trim().parse().map_err(|_| usage(format!("--{name}: `{v}`")))
                            })
                            .collect()
                    };
                    let (channels, delays) = (list("mic-channels")?, list("mic-delays-ms")?);
                    if channels.len() != delays.len() {
                        return Err(usage("--mic-channels and --mic-delays-ms: one each".into()));
                    }
                    let heard = channels
                        .iter()
                        .zip(&delays)
                        .map(|(&c, &d)| (c as usize, (d * f64::from(RATE) / 1e3).round() as usize))
                        .collect();
                    let change = match a.get("mic-change") {
                        None => None,
                        Some(c) => {
                            let bad = || {
                                usage(format!(
                                    "--mic-change {c}: SECONDS:INDEX:+MS (e.g. 40:1:+20)"
                                ))
                            };
                            let mut it = c.split(':');
                            let (Some(t), Some(k), Some(ms), None) =
                                (it.next(), it.next(), it.next(), it.next())
                            else {
                                return Err(bad());
                            };
                            let t: f64 = t.parse().map_err(|_| bad())?;
                            let k: usize = k.parse().map_err(|_| bad())?;
                            let ms: f64 = ms.trim_start_matches('+').parse().map_err(|_| bad())?;
                            if k >= delays.len() {
                                return Err(bad());
                            }
                            Some((t, k, (ms * f64::from(RATE) / 1e3).round() as i64))
                        }
                    };
                    Some(Room {
                        fifo: PathBuf::from(mic),
                        heard,
                        gain: a.num("mic-gain", Some(0.3))?,
                        noise_rms: a.num("mic-noise-rms", Some(0.0))?,
                        change,
                    })
                }
            };
            let opts = RecordOptions {
                channels: a.num("channels", None)?,
                keep: a.num("keep", None)?,
                seconds: a.num("seconds", None)?,
                pipe_bytes: a.num("pipe-bytes", Some(4096))?,
                sample_bytes: sample_bytes(a.get("format"))?,
                room,
            };
            if let Some(r) = &opts.room
                && let Some(&(c, _)) = r.heard.iter().find(|&&(c, _)| c >= opts.channels)
            {
                return Err(usage(format!("--mic-channels: {c} is not below --channels")));
            }
            if opts.keep == 0 || opts.keep > opts.channels {
                return Err(usage(format!("--keep {} must be 1..={}", opts.keep, opts.channels)));
            }
            let log = a.get("log").map(PathBuf::from);
            let summary = record(&fifo, &out, log.as_deref(), &opts)?;
            let json = serde_json::to_string(&summary)?;
            match a.get("summary") {
                Some(p) => {
                    std::fs::write(p, json + "\n").map_err(|e| LabError::io(p.as_ref(), e))?
                }
                None => println!("{json}"),
            }
            Ok(())
        }
        Some("analyze") => {
            a.check(&[
                "channels",
                "names",
                "settle",
                "mark",
                "label",
                "json",
                "max-latency",
                "format",
                "series",
            ])?;
            let path = a.path(0, "the recording")?;
            let channels: usize = a.num("channels", None)?;
            let bytes = std::fs::read(&path).map_err(|e| LabError::io(&path, e))?;
            let rec = match sample_bytes(a.get("format"))? {
                2 => Recording::from_s16(&bytes, channels),
                _ => Recording::from_f32(&bytes, channels),
            };
            let names: Vec<String> = a
                .get("names")
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let mark = match a.get("mark") {
                Some(m) => {
                    let (t, who) =
                        m.split_once(':').ok_or_else(|| usage("--mark SECONDS:PLAYER".into()))?;
                    let t: f64 = t.parse().map_err(|_| usage(format!("--mark {m}: seconds")))?;
                    let who = names
                        .iter()
                        .position(|n| n == who)
                        .or_else(|| who.parse().ok())
                        .ok_or_else(|| usage(format!("--mark {m}: no player `{who}`")))?;
                    Some((t, who))
                }
                None => None,
            };
            let opts = AnalyzeOptions {
                names,
                settle: a.num("settle", Some(10.0))?,
                mark,
                max_latency: a.num("max-latency", Some(2.0))?,
            };
            let report = analyze(&rec, &opts)?;
            print!("{}", report.table(a.get("label").unwrap_or("recording")));
            if let Some(p) = a.get("json") {
                let json = serde_json::to_string(&report)?;
                std::fs::write(p, json + "\n").map_err(|e| LabError::io(p.as_ref(), e))?;
            }
            if let Some(p) = a.get("series") {
                std::fs::write(p, report.series()).map_err(|e| LabError::io(p.as_ref(), e))?;
            }
            Ok(())
        }
        _ => Err(usage(
            "usage: tutti-lab signal|record|analyze ... (see the source's header)".into(),
        )),
    }
}
