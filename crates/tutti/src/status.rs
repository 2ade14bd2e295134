//! What a running role says on the terminal or in a log.

use crate::*;

/// Status for a log (stderr not a terminal: a service's journal, a file): one `status:` line
/// of `key=value` fields whenever the counters that matter change, and every 10 s.
pub(crate) struct StatusLog {
    last: Option<(std::time::Instant, String)>,
}

impl StatusLog {
    const EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        StatusLog { last: None }
    }

    /// Prints `fields` if `key` (the counters that matter) changed or 10 s went by.
    pub(crate) fn tick(&mut self, key: String, fields: impl FnOnce() -> String) {
        let due = match &self.last {
            None => true,
            Some((at, k)) => *k != key || at.elapsed() >= Self::EVERY,
        };
        if due {
            tracing::info!("status: {}", fields());
            self.last = Some((std::time::Instant::now(), key));
        }
    }
}

/// A player's status as `key=value` fields (see [`StatusLog`]).
pub(crate) fn status_fields(s: &PlayerSnapshot) -> String {
    let c = s.clock.as_ref();
    format!(
        "state={} offset_us={} skew_ppm={:.2} latency_ms={} device_latency_ms={:.2} buffer_pkts={} underrun_frames={} resyncs={} concealed={} stalled={} recovered_fec={} recovered_nack={} foreign={}",
        if s.streaming { "playing" } else { "waiting" },
        c.map_or("?".into(), |c| format!("{:.1}", c.offset.0 as f64 / 1e3)),
        c.map_or(0.0, |c| c.skew_ppm()),
        s.latency.map_or("?".into(), |l| format!("{:.3}", l.0 as f64 / 1e6)),
        s.device_latency.0 as f64 / 1e6,
        s.buffered,
        s.underrun_frames,
        s.stats.resyncs,
        s.stats.concealed,
        s.stats.stalled,
        s.stats.recovered_fec,
        s.stats.recovered_retx,
        s.stats.foreign,
    )
}

pub(crate) fn status_line(s: &PlayerSnapshot) -> String {
    let c = s.clock.as_ref();
    // Datagrams of other streams or of earlier runs (relayed, replayed): ignored, but said.
    let foreign = match s.stats.foreign {
        0 => String::new(),
        n => format!(" | ignored {n} of other streams"),
    };
    format!(
        "{} offset {} | skew {:+.2} ppm | ±{} | buffer {} pkts, latency {} | recovered FEC {} NACK {} | concealed {} | stalled {} | resyncs {} | underruns {}{foreign}",
        if s.streaming { "▶" } else { "…" },
        c.map_or("?".into(), |c| c.offset.to_string()),
        c.map_or(0.0, |c| c.skew_ppm()),
        c.map_or("?".into(), |c| c.uncertainty.to_string()),
        s.buffered,
        s.latency.map_or("?".into(), |l| l.to_string()),
        s.stats.recovered_fec,
        s.stats.recovered_retx,
        s.stats.concealed,
        s.stats.stalled,
        s.stats.resyncs,
        s.underrun_frames
    )
}
