//! `tutti-sim`: runs every named scenario and prints its figures.
//!
//! ```text
//! cargo run --release -p tutti-sim              # a readable table
//! cargo run --release -p tutti-sim -- --json    # one JSON object per line
//! options: --scenario NAME (repeatable)  --seconds N  --seed N  --list
//!
//! cargo run --release -p tutti-sim -- --calibration [--json] [--rooms N] [--seed N]
//!     # acoustic calibration in simulated rooms: one row (or JSON line) per SNR
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tutti_sim::{Outcome, run, scenarios};

struct Args {
    json: bool,
    calibration: bool,
    rooms: usize,
    list: bool,
    only: Vec<String>,
    seconds: Option<f64>,
    seed: Option<u64>,
}

/// A command line this program cannot run (said, with exit status 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse() -> Result<Args, Usage> {
    let mut a = Args {
        json: false,
        calibration: false,
        rooms: 1000,
        list: false,
        only: Vec::new(),
        seconds: None,
        seed: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| it.next().ok_or_else(|| Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--json" => a.json = true,
            "--calibration" => a.calibration = true,
            "--rooms" => {
                let v = value("--rooms")?;
                a.rooms =
                    v.parse().ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| {
                        Usage(format!("--rooms: `{v}` is not a count of 1–100000"))
                    })?;
            }
            "--list" => a.list = true,
            "--scenario" => a.only.push(value("--scenario")?),
            "--seconds" => {
                let v = value("--seconds")?;
                a.seconds = Some(
                    v.parse().map_err(|_| Usage(format!("--seconds: `{v}` is not a number")))?,
                );
            }
            "--seed" => {
                let v = value("--seed")?;
                a.seed =
                    Some(v.parse().map_err(|_| Usage(format!("--seed: `{v}` is not an integer")))?);
            }
            "-h" | "--help" => {
                return Err(Usage("usage: tutti-sim [--json] [--list] [--scenario NAME]... [--seconds N] [--seed N]\n       tutti-sim --calibration [--json] [--rooms N] [--seed N]".into()));
            }
            other => return Err(Usage(format!("unknown argument `{other}` (try --help)"))),
        }
    }
    Ok(a)
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "never".into() }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.calibration {
        calibration(&args);
        return ExitCode::SUCCESS;
    }
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!("{:<11} {}", s.name, s.description);
        }
        return ExitCode::SUCCESS;
    }
    for name in &args.only {
        if !all.iter().any(|s| s.name == name) {
            let names: Vec<_> = all.iter().map(|s| s.name).collect();
            eprintln!("unknown scenario `{name}`: choose from {}", names.join(", "));
            return ExitCode::from(2);
        }
    }
    if !args.json {
        println!(
            "{:<11} {:>3} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "scenario",
            "pl",
            "sim_s",
            "sync_p99",
            "sync_max",
            "err_p99",
            "err_max",
            "lat_ms",
            "resid%",
            "conc%",
            "conv_ms",
            "wall_s"
        );
    }
    for mut s in
        all.into_iter().filter(|s| args.only.is_empty() || args.only.iter().any(|n| n == s.name))
    {
        if let Some(secs) = args.seconds {
            s.seconds = secs;
        }
        if let Some(seed) = args.seed {
            s.seed = seed;
        }
        let o: Outcome = run(&s);
        if args.json {
            println!("{}", serde_json::to_string(&o).expect("outcomes serialize"));
        } else {
            println!(
                "{:<11} {:>3} {:>6.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7.1}",
                o.scenario,
                o.players,
                o.sim_seconds,
                f(o.sync_p99_us, 1),
                f(o.sync_max_us, 1),
                f(o.error_p99_us, 1),
                f(o.error_max_us, 1),
                f(o.latency_ms, 2),
                f(o.residual_loss_pct, 4),
                f(o.concealed_pct, 4),
                f(o.converge_ms, 0),
                o.wall_ms as f64 / 1e3
            );
        }
    }
    if !args.json {
        println!(
            "(µs for sync/err; resid% = packets lost after FEC+NACK; conc% = concealed or skipped)"
        );
    }
    ExitCode::SUCCESS
}

/// `--calibration`: the estimator in simulated rooms, one row per SNR.
fn calibration(args: &Args) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !args.json {
        println!(
            "{:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}",
            "snr_db",
            "rooms",
            "speakers",
            "p50_ms",
            "p95_ms",
            "max_ms",
            "wrong>2",
            "refused%",
            "skew_ppm",
            "wall_s"
        );
    }
    for &snr in &tutti_sim::calibration::SNRS_DB {
        let started = std::time::Instant::now();
        let row =
            tutti_sim::calibration::bench(&[snr], args.rooms, args.seed.unwrap_or(1), threads)
                .remove(0);
        if args.json {
            println!("{}", serde_json::to_string(&row).expect("rows serialize"));
        } else {
            println!(
                "{:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7.1}",
                row.snr_db,
                row.rooms,
                row.speakers,
                f(row.error_p50_ms, 3),
                f(row.error_p95_ms, 3),
                f(row.error_max_ms, 3),
                row.confident_wrong_gt_2ms,
                f(row.refused_pct, 1),
                f(row.skew_error_max_ppm, 1),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if !args.json {
        println!(
            "(|error| of confident speakers' arrivals, relative within each room; skew_ppm = largest error of the fitted microphone skew)"
        );
    }
}
