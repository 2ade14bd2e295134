//! `tutti-sim`: runs every named scenario and prints its figures.
//!
//! ```text
//! cargo run --release -p tutti-sim              # a readable table
//! cargo run --release -p tutti-sim -- --json    # one JSON object per line
//! options: --scenario NAME (repeatable)  --seconds N  --seed N  --list
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tutti_sim::{Outcome, run, scenarios};

struct Args {
    json: bool,
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
    let mut a = Args { json: false, list: false, only: Vec::new(), seconds: None, seed: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| it.next().ok_or_else(|| Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--json" => a.json = true,
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
                return Err(Usage("usage: tutti-sim [--json] [--list] [--scenario NAME]... [--seconds N] [--seed N]".into()));
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
