//! Measurement tools: record a sink in real time, find clicks, compare clocks.

use crate::*;

pub(crate) fn record(a: RecordArgs) -> Result<()> {
    use std::sync::{Arc, Mutex};
    use tutti_audio::backend::Backend;
    let backend = if a.host == "alsa" {
        tutti_audio::backend::cpal::CpalBackend::alsa()?
    } else {
        tutti_audio::backend::cpal::CpalBackend::pulse()?
    };
    type Recording = Arc<Mutex<Vec<(tutti_proto::LocalTime, Vec<f32>)>>>;
    let mut streams = Vec::new();
    let mut recordings: Vec<(String, Recording)> = Vec::new();
    for name in &a.inputs {
        let rec: Recording = Arc::new(Mutex::new(Vec::new()));
        let r2 = rec.clone();
        // A measurement rig, not a playout path: a lock in this callback is acceptable.
        let stream = backend.open_input(
            Some(name),
            &StreamSpec::new(48_000, 2, 128),
            Box::new(move |data, t| {
                if let Ok(mut r) = r2.lock() {
                    r.push((t.captured, data.iter().step_by(2).copied().collect()));
                }
            }),
        )?;
        streams.push(stream);
        recordings.push((name.clone(), rec));
    }
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    for mut s in streams {
        s.stop();
    }
    for (name, rec) in recordings {
        let rec = rec.lock().map(|r| r.clone()).unwrap_or_default();
        let clicks: Vec<String> = tutti_audio::measure::find_clicks(&rec, 48_000)
            .iter()
            .map(|t| t.0.to_string())
            .collect();
        println!("{{\"device\":\"{name}\",\"clicks_ns\":[{}]}}", clicks.join(","));
    }
    Ok(())
}

/// Click instants in a WAV written by a player, on the local clock (10 s pieces, so hours of
/// audio fit in memory).
pub(crate) fn wav_clicks(path: &std::path::Path) -> Result<Vec<i64>> {
    let first = tutti_audio::backend::wav::WavBackend::first_sample_time(path)?;
    let mut reader = hound::WavReader::open(path).with_context(|| format!("{}", path.display()))?;
    let spec = reader.spec();
    let (rate, ch) = (spec.sample_rate, usize::from(spec.channels.max(1)));
    let piece = rate as usize * 10;
    let mut clicks = Vec::new();
    let mut chunk = Vec::with_capacity(piece);
    let mut at = 0u64;
    let mut samples = reader.samples::<i16>();
    loop {
        chunk.clear();
        for s in samples.by_ref().step_by(ch).take(piece) {
            chunk.push(f32::from(s.with_context(|| format!("{}", path.display()))?) / 32768.0);
        }
        if chunk.is_empty() {
            break;
        }
        let t = first + Nanos::from_frames(at, rate);
        // Exact instants: a file's frames are evenly spaced by construction.
        let frames: Vec<(LocalTime, Vec<f32>)> = chunk
            .chunks(rate as usize / 100)
            .enumerate()
            .map(|(k, c)| (t + Nanos::from_frames((k * c.len()) as u64, rate), c.to_vec()))
            .collect();
        clicks.extend(tutti_audio::measure::find_clicks(&frames, rate).iter().map(|c| c.0 as i64));
        at += chunk.len() as u64;
    }
    Ok(clicks)
}

pub(crate) fn skew(wavs: &[PathBuf]) -> Result<()> {
    let all: Vec<Vec<i64>> = wavs.iter().map(|w| wav_clicks(w)).collect::<Result<_>>()?;
    let mut spreads = Vec::new();
    let mut offsets: Vec<Vec<i64>> = Vec::new();
    let mut per_minute: Vec<i64> = Vec::new();
    for &t in &all[0] {
        let near: Vec<i64> = all[1..]
            .iter()
            .filter_map(|c| {
                let i = c.partition_point(|&x| x < t);
                [i.checked_sub(1), Some(i)]
                    .into_iter()
                    .flatten()
                    .filter_map(|i| c.get(i).copied())
                    .min_by_key(|x| (x - t).abs())
            })
            .filter(|x| (x - t).abs() < 100_000_000)
            .collect();
        if near.len() == all.len() - 1 {
            offsets.push(near.iter().map(|x| x - t).collect::<Vec<_>>());
            let hi = near.iter().copied().chain([t]).max().unwrap_or(t);
            let lo = near.iter().copied().chain([t]).min().unwrap_or(t);
            spreads.push(hi - lo);
            let minute = ((t - all[0][0]) / 60_000_000_000) as usize;
            if per_minute.len() <= minute {
                per_minute.resize(minute + 1, 0);
            }
            per_minute[minute] = per_minute[minute].max(hi - lo);
        }
    }
    if spreads.is_empty() {
        bail!("no click is in every file");
    }
    spreads.sort_unstable();
    let q = |f: f64| spreads[((spreads.len() - 1) as f64 * f).round() as usize] as f64 / 1e3;
    println!(
        "{} clicks in all {} files ({} in the first): spread median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        spreads.len(),
        wavs.len(),
        all[0].len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    if per_minute.len() > 1 {
        let m: Vec<String> = per_minute.iter().map(|x| format!("{:.0}", *x as f64 / 1e3)).collect();
        println!("  worst spread per minute, µs: {}", m.join(" "));
    }
    for (k, w) in wavs.iter().enumerate().skip(1) {
        let mut o: Vec<i64> = offsets.iter().map(|v| v[k - 1]).collect();
        o.sort_unstable();
        println!(
            "  {} − {}: median {:+.1} µs, from {:+.1} to {:+.1} µs",
            w.display(),
            wavs[0].display(),
            o[o.len() / 2] as f64 / 1e3,
            o[0] as f64 / 1e3,
            o[o.len() - 1] as f64 / 1e3
        );
    }
    Ok(())
}

pub(crate) fn clicks_wav(path: &std::path::Path, seconds: f64) -> Result<()> {
    let mut src =
        tutti_audio::source::Clicks::new(48_000, 2, 12_000).with_limit((seconds * 48_000.0) as u64);
    let mut pcm = Vec::new();
    while src.read(&mut pcm, 4_096)? > 0 {}
    let mut bytes = Vec::new();
    tutti_audio::format::encode_pcm(Codec::Pcm16, &pcm, &mut bytes);
    let frames = pcm.len() / 2;
    let mut out = Vec::with_capacity(44 + bytes.len());
    let data = bytes.len() as u32;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&48_000u32.to_le_bytes());
    out.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    out.extend_from_slice(&bytes);
    std::fs::write(path, out).with_context(|| format!("{}", path.display()))?;
    println!("{} frames of clicks (every 250 ms) in {}", frames, path.display());
    Ok(())
}
