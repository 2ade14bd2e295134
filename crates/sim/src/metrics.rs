//! Figures of a run: sync between players, error against the intended instant, latency,
//! losses and convergence.

use serde::Serialize;
use tutti_proto::player::PlayerStats;

use crate::world::Scenario;

/// What one player did.
#[derive(Clone, Debug, Default)]
pub struct PlayerRecord {
    /// True time it joined (ns).
    pub joined_at: u64,
    /// `(true time ns, playout error µs, capture→playout latency ms)` every 10 ms while playing.
    pub samples: Vec<(u64, f32, f32)>,
    /// Packets played or concealed.
    pub frames: u64,
    /// Packets concealed.
    pub concealed: u64,
    /// Packets whose payload differed from what the source sent.
    pub corrupt: u64,
    /// The session's counters at the end.
    pub stats: PlayerStats,
}

/// One scenario's results (one JSON line).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Players.
    pub players: usize,
    /// Virtual seconds simulated.
    pub sim_seconds: f64,
    /// p99 of pairwise skew between settled players playing the same instant, µs.
    pub sync_p99_us: f64,
    /// Largest pairwise skew between settled players, µs.
    pub sync_max_us: f64,
    /// p99 of |playout − intended instant| over the whole run from first playout, µs.
    pub error_p99_us: f64,
    /// Largest |error| after convergence, µs (0 if a player never converged).
    pub error_max_us: f64,
    /// Median capture → playout latency, ms.
    pub latency_ms: f64,
    /// Packets not recovered by their playout time, % of packets played.
    pub residual_loss_pct: f64,
    /// Packets concealed (lost or late) plus packets skipped by resyncs, % of packets played.
    pub concealed_pct: f64,
    /// Worst time from a player's join until its error is below 100 µs for good (1 s), ms;
    /// `null` in JSON if some player never got there (`asymmetric`: the path's bias is
    /// invisible to two-way sync).
    pub converge_ms: f64,
    /// Packets the network dropped, % of those sent (both directions).
    pub network_loss_pct: f64,
    /// Packets rebuilt by FEC, all players.
    pub recovered_fec: u64,
    /// Packets recovered by retransmission, all players.
    pub recovered_retx: u64,
    /// NACK datagrams sent, all players.
    pub nacks: u64,
    /// Hard resyncs after the first lock, all players.
    pub resyncs: u64,
    /// Packets played whose bytes differ from what the source sent (must be 0).
    pub corrupt: u64,
    /// Datagrams dropped by the players' decoders (replays of duplicates included).
    pub rx_dropped: u64,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock time of the run, ms.
    pub wall_ms: u64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    *v.select_nth_unstable_by(i, |a, b| a.total_cmp(b)).1
}

/// Index of the first sample after which |error − center| stays below `limit` µs for `hold` ns.
fn converged_at(samples: &[(u64, f32, f32)], center: f32, limit: f32, hold: u64) -> Option<usize> {
    let mut start: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        if (s.1 - center).abs() < limit {
            let st = *start.get_or_insert(i);
            if s.0 - samples[st].0 >= hold {
                return Some(st);
            }
        } else {
            start = None;
        }
    }
    None
}

impl Outcome {
    /// Computes the figures from the players' records.
    pub fn compute(
        s: &Scenario,
        players: Vec<PlayerRecord>,
        offered: u64,
        dropped: u64,
        events: u64,
        wall: std::time::Duration,
    ) -> Outcome {
        let mut errors = Vec::new();
        let mut latencies = Vec::new();
        let mut converge_ms: f64 = 0.0;
        let mut conv_times = Vec::new();
        let mut error_max: f64 = 0.0;
        for p in &players {
            errors.extend(p.samples.iter().map(|x| f64::from(x.1.abs())));
            latencies.extend(p.samples.iter().map(|x| f64::from(x.2)));
            match converged_at(&p.samples, 0.0, 100.0, 1_000_000_000) {
                Some(i) => {
                    let t = p.samples[i].0;
                    converge_ms = converge_ms.max((t - p.joined_at) as f64 / 1e6);
                    error_max =
                        p.samples[i..].iter().fold(error_max, |m, x| m.max(f64::from(x.1.abs())));
                }
                None => converge_ms = f64::INFINITY,
            }
            // Sync counts from when a player settled on its final error (for a biased path
            // such as `asymmetric`, that is not zero: every player shares the bias).
            let mut tail: Vec<f64> =
                p.samples[p.samples.len() / 2..].iter().map(|x| f64::from(x.1)).collect();
            let center = percentile(&mut tail, 0.5) as f32;
            let center = if center.is_finite() { center } else { 0.0 };
            conv_times.push(
                converged_at(&p.samples, center, 100.0, 1_000_000_000)
                    .map_or(u64::MAX, |i| p.samples[i].0),
            );
        }
        // Pairwise skew at each measurement instant, between converged players.
        let mut pairs = Vec::new();
        let mut cursor = vec![0usize; players.len()];
        let mut instants: Vec<u64> =
            players.iter().flat_map(|p| p.samples.iter().map(|x| x.0)).collect();
        instants.sort_unstable();
        instants.dedup();
        let mut now_err: Vec<Option<f32>> = vec![None; players.len()];
        for t in instants {
            for (i, p) in players.iter().enumerate() {
                while cursor[i] < p.samples.len() && p.samples[cursor[i]].0 < t {
                    cursor[i] += 1;
                }
                now_err[i] = p
                    .samples
                    .get(cursor[i])
                    .filter(|x| x.0 == t && t >= conv_times[i])
                    .map(|x| x.1);
            }
            for a in 0..players.len() {
                for b in a + 1..players.len() {
                    if let (Some(x), Some(y)) = (now_err[a], now_err[b]) {
                        pairs.push(f64::from((x - y).abs()));
                    }
                }
            }
        }
        let sync_max = pairs.iter().fold(0.0f64, |m, x| m.max(*x));
        let frames: u64 = players.iter().map(|p| p.frames).sum();
        let concealed: u64 = players.iter().map(|p| p.concealed).sum();
        let skipped: u64 = players.iter().map(|p| p.stats.skipped).sum();
        let pct = |n: u64| if frames == 0 { 0.0 } else { 100.0 * n as f64 / frames as f64 };
        Outcome {
            scenario: s.name.to_owned(),
            players: players.len(),
            sim_seconds: s.seconds,
            sync_p99_us: percentile(&mut pairs, 0.99),
            sync_max_us: sync_max,
            error_p99_us: percentile(&mut errors, 0.99),
            error_max_us: error_max,
            latency_ms: percentile(&mut latencies, 0.5),
            residual_loss_pct: pct(concealed),
            concealed_pct: pct(concealed + skipped),
            converge_ms,
            network_loss_pct: if offered == 0 {
                0.0
            } else {
                100.0 * dropped as f64 / offered as f64
            },
            recovered_fec: players.iter().map(|p| p.stats.recovered_fec).sum(),
            recovered_retx: players.iter().map(|p| p.stats.recovered_retx).sum(),
            nacks: players.iter().map(|p| p.stats.nacks_sent).sum(),
            resyncs: players.iter().map(|p| p.stats.resyncs.saturating_sub(1)).sum(),
            corrupt: players.iter().map(|p| p.corrupt).sum(),
            rx_dropped: players.iter().map(|p| p.stats.rx_errors.total()).sum(),
            events,
            wall_ms: wall.as_millis() as u64,
        }
    }
}
