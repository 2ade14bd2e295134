//! The analysis of a recording: channel 0 is the source's sink (what was played into the
//! source), every other channel one player's sink, all on one sample clock.
//!
//! Per event (a chirp every 250 ms, see [`crate::signal`]): its position in the source
//! channel, and in every player channel by normalized cross-correlation with the event's own
//! chirp kind, refined to a fraction of a sample (parabola through the peak). From those, per
//! 250 ms window: each player's latency (player − source), the spread between players (the
//! largest minus the smallest player position), whether the window is missing (no chirp of
//! the right kind: silence, or audio from the wrong place), silent, glitched (the window's
//! audio, against the source's delayed by the interpolated latency, has a 5 ms stretch whose
//! residual is more than −10 dB of the signal: a gap, a repeat, a click), and steps (the
//! latency changing by half a sample or more from one window to the next).

use crate::signal::{CHIRP, KINDS, PERIOD, RATE, kind_of, template};

/// A recording: `channels` channels of samples.
#[derive(Clone, Debug)]
pub struct Recording {
    /// One vector per channel.
    pub channels: Vec<Vec<f32>>,
}

impl Recording {
    /// Reads interleaved 16-bit little-endian samples of `channels` channels.
    pub fn from_s16(bytes: &[u8], channels: usize) -> Self {
        let frames = bytes.len() / (2 * channels);
        let mut out = vec![Vec::with_capacity(frames); channels];
        for frame in bytes.chunks_exact(2 * channels) {
            for (c, s) in frame.chunks_exact(2).enumerate() {
                out[c].push(f32::from(i16::from_le_bytes([s[0], s[1]])) / 32_768.0);
            }
        }
        Recording { channels: out }
    }
    /// Reads interleaved 32-bit float little-endian samples of `channels` channels.
    pub fn from_f32(bytes: &[u8], channels: usize) -> Self {
        let frames = bytes.len() / (4 * channels);
        let mut out = vec![Vec::with_capacity(frames); channels];
        for frame in bytes.chunks_exact(4 * channels) {
            for (c, s) in frame.chunks_exact(4).enumerate() {
                out[c].push(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            }
        }
        Recording { channels: out }
    }
    /// From interleaved 16-bit samples.
    pub fn from_i16(samples: &[i16], channels: usize) -> Self {
        let mut out = vec![Vec::with_capacity(samples.len() / channels); channels];
        for frame in samples.chunks_exact(channels) {
            for (c, s) in frame.iter().enumerate() {
                out[c].push(f32::from(*s) / 32_768.0);
            }
        }
        Recording { channels: out }
    }
}

/// How to analyze.
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    /// Player names (channels 1..).
    pub names: Vec<String>,
    /// Seconds from the first event before the steady state (spread, steps).
    pub settle: f64,
    /// A moment (seconds from the recording's start) where `mark_player` was disturbed: its
    /// recovery is measured from there.
    pub mark: Option<(f64, usize)>,
    /// The widest latency searched when a player is first found or lost, seconds.
    pub max_latency: f64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions { names: Vec::new(), settle: 10.0, mark: None, max_latency: 2.0 }
    }
}

/// Percentiles of a set of values.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// How many.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Of `v` (empty: zeros).
    pub fn of(v: &[f64]) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        Stats { n: s.len(), p50: at(0.5), p99: at(0.99), min: s[0], max: s[s.len() - 1] }
    }
}

/// One player's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlayerReport {
    /// Its name.
    pub name: String,
    /// Windows (events) in the source.
    pub windows: usize,
    /// Windows whose chirp was not found (silence included).
    pub missing: usize,
    /// Windows with no sound at all.
    pub silent: usize,
    /// Windows with a gap, repeat or click.
    pub glitched: usize,
    /// Latency, ms, over the steady state.
    pub latency_ms: Stats,
    /// Steps of ≥ 0.5 sample between consecutive windows in the steady state.
    pub steps: usize,
    /// The largest of them, µs.
    pub max_step_us: f64,
    /// Missing windows in the steady state.
    pub missing_steady: usize,
    /// Glitched windows in the steady state.
    pub glitched_steady: usize,
    /// Its distance from the other players' median latency per steady-state window (all
    /// found), µs: how far apart it plays from the rest of the room.
    pub from_others_us: Stats,
    /// Latency per window, µs (`None`: missing).
    #[serde(skip)]
    pub latency_us: Vec<Option<f64>>,
}

/// The whole analysis.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Events found in the source channel.
    pub events: usize,
    /// Where the first one is, seconds into the recording (the series' `t_s` counts from it).
    pub first_s: f64,
    /// Per player.
    pub players: Vec<PlayerReport>,
    /// Spread between players per steady-state window where all were found, µs.
    pub spread_us: Stats,
    /// Recovery of the marked player: ms from the mark until it is back within 100 µs of the
    /// others (and stays there 2 s); `None` if it never is.
    pub recovery_ms: Option<f64>,
    /// The marked player's largest distance from the others after its recovery, µs.
    pub after_recovery_max_us: Option<f64>,
}

/// Normalized cross-correlation of `t` against `x` at lags `from..to` (start indices into
/// `x`): every local maximum above `threshold`, refined to a fraction of a sample (parabola
/// through the peak), with its correlation.
fn matches(x: &[f32], t: &[f32], from: i64, to: i64, threshold: f64) -> Vec<(f64, f64)> {
    let n = t.len();
    let from = from.max(0) as usize;
    let to = (to.max(0) as usize).min(x.len().saturating_sub(n + 1));
    if from + 2 > to {
        return Vec::new();
    }
    let tn: f64 = t.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let mut energy: f64 = x[from..from + n].iter().map(|v| f64::from(*v).powi(2)).sum();
    let mut corr = Vec::with_capacity(to - from);
    for l in from..to {
        if l > from {
            energy += f64::from(x[l + n - 1]).powi(2) - f64::from(x[l - 1]).powi(2);
        }
        let dot: f32 = x[l..l + n].iter().zip(t).map(|(a, b)| a * b).sum();
        let norm = (energy.max(0.0)).sqrt() * tn;
        corr.push(if norm > 1e-9 { f64::from(dot) / norm } else { 0.0 });
    }
    let mut out = Vec::new();
    for i in 0..corr.len() {
        let c = corr[i];
        let left = if i > 0 { corr[i - 1] } else { f64::MIN };
        let right = corr.get(i + 1).copied().unwrap_or(f64::MIN);
        if c <= threshold || c < left || c <= right {
            continue;
        }
        let frac = if i > 0 && i + 1 < corr.len() {
            let d = left - 2.0 * c + right;
            if d < 0.0 { 0.5 * (left - right) / d } else { 0.0 }
        } else {
            0.0
        };
        out.push(((from + i) as f64 + frac, c));
    }
    out
}

/// The best match of `t` in `x` at lags `from..to`.
fn best_match(x: &[f32], t: &[f32], from: i64, to: i64) -> Option<(f64, f64)> {
    matches(x, t, from, to, f64::MIN).into_iter().max_by(|a, b| a.1.total_cmp(&b.1))
}

/// How alike the source's bed from the chirp at frame `s` on and a player's from `p` on are:
/// the normalized correlation of [`LIKENESS`] frames, longer than a chord, with the chirps
/// left out. 1 for the same audio, low for audio from elsewhere in the bed. (A chord's notes
/// repeat every half second, and chirps of one kind too: a window within one chord, or one
/// with the chirps in, finds a chirp a period or two off nearly as alike.)
fn similarity(src: &[f32], y: &[f32], s: f64, p: f64) -> f64 {
    let (s, p) = (s.round() as usize, p.round() as usize);
    let len = LIKENESS.min(src.len().saturating_sub(s)).min(y.len().saturating_sub(p));
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for i in (0..len).filter(|i| i % PERIOD >= CHIRP) {
        let (a, b) = (f64::from(src[s + i]), f64::from(y[p + i]));
        dot += a * b;
        na += a * a;
        nb += b * b;
    }
    if na * nb > 0.0 { dot / (na * nb).sqrt() } else { 0.0 }
}

/// Frames [`similarity`] compares: 1.75 s, so a chord changes within it.
const LIKENESS: usize = 84_000;

/// A correlation this good is the chirp.
const FOUND: f64 = 0.6;

/// `x` at fractional position `p` (windowed sinc, 32 taps).
fn at(x: &[f32], p: f64) -> f64 {
    let i = p.floor() as i64;
    let f = p - i as f64;
    if f.abs() < 1e-9 {
        return x.get(i as usize).map_or(0.0, |v| f64::from(*v));
    }
    let mut acc = 0.0;
    for k in -15..=16i64 {
        let j = i + k;
        if j < 0 || j as usize >= x.len() {
            continue;
        }
        let d = k as f64 - f;
        let sinc = (core::f64::consts::PI * d).sin() / (core::f64::consts::PI * d);
        let w = 0.42
            + 0.5 * (core::f64::consts::PI * d / 16.0).cos()
            + 0.08 * (2.0 * core::f64::consts::PI * d / 16.0).cos();
        acc += f64::from(x[j as usize]) * sinc * w;
    }
    acc
}

/// Analyzes `rec` (channel 0: the source).
pub fn analyze(rec: &Recording, opts: &AnalyzeOptions) -> Result<Report, crate::LabError> {
    let rate = f64::from(RATE);
    let src = &rec.channels[0];
    let templates: Vec<Vec<f32>> = (0..KINDS.len()).map(template).collect();
    // The first event in the source: the earliest place kind 0 matches.
    let mut first = None;
    let mut from = 0usize;
    while from + CHIRP < src.len() {
        let to = (from + PERIOD).min(src.len());
        if let Some((p, r)) = best_match(src, &templates[0], from as i64, to as i64)
            && r > 0.9
        {
            first = Some(p);
            break;
        }
        from += PERIOD - CHIRP;
    }
    let Some(first) = first else {
        return Err(crate::LabError::NoSignal);
    };
    // Every event of the source, refined (the source plays on the recording's own clock).
    let mut events = Vec::new();
    loop {
        let k = events.len();
        let guess = first + (k * PERIOD) as f64;
        if guess as usize + PERIOD + CHIRP >= src.len() {
            break;
        }
        match best_match(src, &templates[kind_of(k)], guess as i64 - 48, guess as i64 + 48) {
            Some((p, r)) if r > 0.9 => events.push(p),
            _ => break,
        }
    }
    if events.len() < 8 {
        return Err(crate::LabError::TooShort(events.len()));
    }
    let settle_k = (opts.settle * rate / PERIOD as f64).ceil() as usize;
    let window = 20e-3 * rate; // tracking search, each side
    let mut players = Vec::new();
    for (c, y) in rec.channels.iter().enumerate().skip(1) {
        let name = opts.names.get(c - 1).cloned().unwrap_or_else(|| format!("ch{c}"));
        let mut lat: Vec<Option<f64>> = Vec::with_capacity(events.len());
        let mut track: Option<f64> = None;
        let mut lost = 0usize;
        let mut silent = vec![false; events.len()];
        for (k, &s) in events.iter().enumerate() {
            let (a, b) = (s as usize, (s as usize + PERIOD).min(y.len()));
            let rms = if a < b {
                (y[a..b].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / (b - a) as f64).sqrt()
            } else {
                0.0
            };
            let t = &templates[kind_of(k)];
            let found = match track {
                Some(l) => best_match(y, t, (s + l - window) as i64, (s + l + window) as i64)
                    .filter(|m| m.1 > FOUND),
                None => None,
            };
            let found = found.or_else(|| {
                // Lost: search wide, once a second.
                // Of the chirps of the right kind, the one whose surroundings are the source's.
                if (track.is_none() || lost >= 4) && k % 4 == 0 && rms > 1e-4 {
                    let from = (s - 0.05 * rate) as i64;
                    let to = (s + opts.max_latency * rate) as i64;
                    matches(y, t, from, to, FOUND)
                        .into_iter()
                        .map(|m| (m, similarity(src, y, s, m.0)))
                        .filter(|(_, sim)| *sim > 0.8)
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(m, _)| m)
                } else {
                    None
                }
            });
            match found {
                Some((p, _)) => {
                    track = Some(p - s);
                    lost = 0;
                    lat.push(Some((p - s) / rate * 1e6));
                }
                None => {
                    lost += 1;
                    lat.push(None);
                }
            }
            // Silence: nothing above −80 dBFS over the window where this player's audio is.
            let off = track.unwrap_or(0.0) as usize;
            let (a, b) =
                ((s as usize + off).min(y.len()), (s as usize + off + PERIOD).min(y.len()));
            silent[k] = a >= b || y[a..b].iter().all(|v| v.abs() < 1e-4);
        }
        // Glitches: the window against the source delayed by the interpolated latency.
        let mut glitched = vec![false; events.len()];
        for k in 0..events.len().saturating_sub(1) {
            let (Some(l0), Some(l1)) = (lat[k], lat[k + 1]) else { continue };
            let (l0, l1) = (l0 * 1e-6 * rate, l1 * 1e-6 * rate);
            let start = events[k] + l0 + CHIRP as f64;
            let len = events[k + 1] + l1 - start;
            let block = 240usize;
            let blocks = (len as usize).saturating_sub(CHIRP) / block;
            let mut xs = Vec::with_capacity(blocks * block);
            let mut ys = Vec::with_capacity(blocks * block);
            for i in 0..blocks * block {
                let p = start + i as f64;
                let u = i as f64 / len;
                let d = l0 + (l1 - l0) * u;
                let yi = p.round() as usize;
                if yi >= y.len() {
                    break;
                }
                // y at integer frame yi; the source at yi − d.
                xs.push(at(src, yi as f64 - d));
                ys.push(f64::from(y[yi]));
            }
            let sxx: f64 = xs.iter().map(|v| v * v).sum();
            let sxy: f64 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
            if sxx <= 0.0 {
                continue;
            }
            let g = sxy / sxx;
            let mean = sxx / xs.len().max(1) as f64;
            for (bx, by) in xs.chunks(block).zip(ys.chunks(block)) {
                let ex: f64 = bx.iter().map(|v| v * v).sum::<f64>() / block as f64;
                let er: f64 =
                    bx.iter().zip(by).map(|(a, b)| (b - g * a).powi(2)).sum::<f64>() / block as f64;
                if er > 0.1 * ex.max(0.1 * mean) {
                    glitched[k] = true;
                    break;
                }
            }
        }
        let steady: Vec<f64> = lat.iter().skip(settle_k).flatten().copied().collect();
        let mut steps = 0;
        let mut max_step: f64 = 0.0;
        for k in settle_k.max(1)..lat.len() {
            if let (Some(a), Some(b)) = (lat[k - 1], lat[k]) {
                let d = (b - a).abs();
                if d >= 0.5e6 / rate {
                    steps += 1;
                    max_step = max_step.max(d);
                }
            }
        }
        players.push(PlayerReport {
            name,
            windows: events.len(),
            missing: lat.iter().filter(|l| l.is_none()).count(),
            silent: silent.iter().filter(|s| **s).count(),
            glitched: glitched.iter().filter(|g| **g).count(),
            latency_ms: Stats::of(&steady.iter().map(|v| v / 1e3).collect::<Vec<_>>()),
            steps,
            max_step_us: max_step,
            missing_steady: lat.iter().skip(settle_k).filter(|l| l.is_none()).count(),
            glitched_steady: glitched.iter().skip(settle_k).filter(|g| **g).count(),
            from_others_us: Stats::default(),
            latency_us: lat,
        });
    }
    for i in 0..players.len() {
        let apart: Vec<f64> = (settle_k..events.len())
            .filter_map(|k| {
                let own = players[i].latency_us[k]?;
                let mut others = players
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| p.latency_us[k])
                    .collect::<Option<Vec<f64>>>()?;
                others.sort_by(f64::total_cmp);
                let n = others.len();
                let median = match n {
                    0 => return None,
                    _ if n % 2 == 1 => others[n / 2],
                    _ => (others[n / 2 - 1] + others[n / 2]) / 2.0,
                };
                Some((own - median).abs())
            })
            .collect();
        players[i].from_others_us = Stats::of(&apart);
    }
    let mut spread = Vec::new();
    for k in settle_k..events.len() {
        let v: Option<Vec<f64>> = players.iter().map(|p| p.latency_us[k]).collect();
        if let Some(v) = v
            && v.len() > 1
        {
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            spread.push(max - min);
        }
    }
    let mut report = Report {
        events: events.len(),
        first_s: first / rate,
        spread_us: Stats::of(&spread),
        players,
        recovery_ms: None,
        after_recovery_max_us: None,
    };
    if let Some((mark, who)) = opts.mark
        && who < report.players.len()
        && report.players.len() > 1
    {
        let distance = |k: usize| -> Option<f64> {
            let own = report.players[who].latency_us[k]?;
            let mut others: Vec<f64> = report
                .players
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != who)
                .filter_map(|(_, p)| p.latency_us[k])
                .collect();
            others.sort_by(f64::total_cmp);
            let median = *others.get(others.len() / 2)?;
            Some((own - median).abs())
        };
        let mark_frame = mark * rate;
        let start = events.iter().position(|&s| s >= mark_frame).unwrap_or(events.len());
        let hold = 8; // 2 s
        for k in start..events.len().saturating_sub(hold) {
            if (k..k + hold).all(|j| distance(j).is_some_and(|d| d <= 100.0)) {
                report.recovery_ms = Some((events[k] - mark_frame) / rate * 1e3);
                report.after_recovery_max_us =
                    (k..events.len()).filter_map(distance).reduce(f64::max);
                break;
            }
        }
    }
    Ok(report)
}

impl Report {
    /// Every window's latency per player, µs, one row per window (`t_s`, then one column per
    /// player; `-` where its event was missing): tab-separated, with a header.
    pub fn series(&self) -> String {
        let mut out = String::from("t_s");
        for p in &self.players {
            out.push('\t');
            out.push_str(&p.name);
        }
        out.push('\n');
        let rows = self.players.iter().map(|p| p.latency_us.len()).max().unwrap_or(0);
        for i in 0..rows {
            out.push_str(&format!("{:.2}", i as f64 * PERIOD as f64 / f64::from(RATE)));
            for p in &self.players {
                match p.latency_us.get(i).copied().flatten() {
                    Some(l) => out.push_str(&format!("\t{l:.2}")),
                    None => out.push_str("\t-"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// The report as a table (one line per player, then the spread).
    pub fn table(&self, label: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{label}: {} windows of 250 ms; spread between players (µs) p50 {:.1}  p99 {:.1}  max {:.1}  (n={})\n",
            self.events, self.spread_us.p50, self.spread_us.p99, self.spread_us.max, self.spread_us.n
        ));
        s.push_str("  player      missing silent glitched | steady: missing glitched steps max_step_us | latency ms p50     p99     min     max\n");
        for p in &self.players {
            s.push_str(&format!(
                "  {:<10} {:>7} {:>6} {:>8} | {:>15} {:>8} {:>5} {:>11.1} | {:>14.3} {:>7.3} {:>7.3} {:>7.3}\n",
                p.name,
                p.missing,
                p.silent,
                p.glitched,
                p.missing_steady,
                p.glitched_steady,
                p.steps,
                p.max_step_us,
                p.latency_ms.p50,
                p.latency_ms.p99,
                p.latency_ms.min,
                p.latency_ms.max
            ));
        }
        if self.players.len() > 1 {
            s.push_str("  from the others' median (µs, |d|):");
            for p in &self.players {
                let d = &p.from_others_us;
                s.push_str(&format!(
                    " {} p50 {:.1} p99 {:.1} max {:.1};",
                    p.name, d.p50, d.p99, d.max
                ));
            }
            s.push('\n');
        }
        if let Some(r) = self.recovery_ms {
            s.push_str(&format!(
                "  recovery: back within 100 µs of the others {r:.0} ms after the stop (then at most {:.1} µs off)\n",
                self.after_recovery_max_us.unwrap_or(0.0)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{FIRST, render};

    fn fanned(seconds: f64, channels: usize, delay_us: f64) -> Recording {
        let frames = (seconds * f64::from(RATE)) as usize;
        Recording::from_i16(&render(frames, channels, delay_us), channels)
    }

    #[test]
    fn the_same_stream_on_every_channel_reads_zero() {
        let r =
            analyze(&fanned(6.0, 4, 0.0), &AnalyzeOptions { settle: 1.0, ..Default::default() })
                .unwrap();
        assert_eq!(r.spread_us.max, 0.0);
        for p in &r.players {
            assert_eq!((p.missing, p.glitched, p.steps), (0, 0, 0), "{p:?}");
            assert_eq!(p.latency_ms.max, 0.0);
        }
    }

    #[test]
    fn known_fractional_delays_read_within_a_microsecond() {
        for delay in [3.3, 7.9, 10.4, 13.0] {
            let r = analyze(
                &fanned(5.0, 4, delay),
                &AnalyzeOptions { settle: 1.0, ..Default::default() },
            )
            .unwrap();
            for (i, p) in r.players.iter().enumerate() {
                let want = delay * (i + 1) as f64;
                let err = (p.latency_ms.p50 * 1e3 - want)
                    .abs()
                    .max((p.latency_ms.max * 1e3 - want).abs());
                assert!(err < 1.0, "delay {want} µs read as {:?} ms", p.latency_ms);
                assert_eq!((p.missing, p.glitched, p.steps), (0, 0, 0), "{p:?}");
            }
            // From the others' median: d, 2d, 3d → 1.5d, 0, 1.5d.
            let apart: Vec<f64> = r.players.iter().map(|p| p.from_others_us.p50).collect();
            for (got, want) in apart.iter().zip([1.5 * delay, 0.0, 1.5 * delay]) {
                assert!((got - want).abs() < 1.0, "from the others {apart:?} (delay {delay})");
            }
        }
    }

    #[test]
    fn a_player_that_stumbles_at_first_is_found_at_its_latency_not_a_chirp_off() {
        // 100 ms late, and its first 2 s broken: 20 ms dropouts every 30 ms (the bed around
        // its first chirps unlike the source's, its chirps whole).
        let rate = RATE as usize;
        let mut rec = fanned(12.0, 2, 0.0);
        let delay = rate / 10;
        let src = rec.channels[0].clone();
        let y = &mut rec.channels[1];
        y.fill(0.0);
        y[delay..].copy_from_slice(&src[..src.len() - delay]);
        for k in 0..(2 * rate / 1_440) {
            let a = delay + FIRST + CHIRP + k * 1_440;
            y[a..a + 960].fill(0.0);
        }
        let r = analyze(&rec, &AnalyzeOptions { settle: 3.0, ..Default::default() }).unwrap();
        let p = &r.players[0];
        assert!((p.latency_ms.p50 - 100.0).abs() < 0.01, "{p:?}");
        assert!((p.latency_ms.max - 100.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn gaps_repeats_and_shifts_are_seen() {
        let mut rec = fanned(8.0, 4, 0.0);
        let rate = RATE as usize;
        // Channel 1: 20 ms of silence at 3.1 s (a dropout).
        rec.channels[1][31 * rate / 10..31 * rate / 10 + rate / 50].fill(0.0);
        // Channel 2: from 4.05 s on, 5 frames later (a jump).
        let c2 = rec.channels[2].clone();
        let at = 405 * rate / 100;
        rec.channels[2][at + 5..].copy_from_slice(&c2[at..c2.len() - 5]);
        // Channel 3: silent throughout.
        rec.channels[3].fill(0.0);
        let r = analyze(&rec, &AnalyzeOptions { settle: 1.0, ..Default::default() }).unwrap();
        assert_eq!(r.players[0].glitched, 1, "{:?}", r.players[0]);
        assert_eq!(r.players[0].missing, 0);
        assert_eq!(r.players[1].steps, 1, "{:?}", r.players[1]);
        assert!((r.players[1].max_step_us - 5e6 / f64::from(RATE)).abs() < 1.0);
        assert_eq!(r.players[2].missing, r.events);
        assert_eq!(r.players[2].silent, r.events);
    }
}
