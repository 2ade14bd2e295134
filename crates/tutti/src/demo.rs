//! `tutti demo`: a source and three players on this machine.

use crate::*;

pub(crate) fn demo(a: DemoArgs) -> Result<()> {
    println!(
        "Tutti demo: one source, {} players on this machine (loopback, encrypted), {} s.",
        a.players, a.seconds
    );
    let key = Security::encrypted(tutti_proto::NetworkKey::from_bytes(tutti_os::try_random()?));
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.name = "demo chord".into();
    let src = run_source(
        Input::Paced { source: Box::new(Tone::new(48_000, 2, 440.0, 0.2)) },
        cfg,
        Encoding { codec: Codec::Pcm16, bitrate: 0 },
        "127.0.0.1:0".parse()?,
        key.clone(),
        None,
    )?;
    println!(
        "source on {} (PCM 48 kHz stereo, 100 ms group latency, FEC 8+2, NACK)",
        src.local_addr
    );
    let mut players: Vec<RunningPlayer> = Vec::new();
    for i in 0..a.players {
        let mut pc = PlayerConfig::new(src.local_addr);
        pc.name = format!("player-{}", i + 1);
        let output = if a.speaker && i == 0 {
            OutputKind::Device { host: None, name: None }
        } else {
            OutputKind::Null
        };
        let opts = PlayerOptions {
            config: pc,
            bind: "127.0.0.1:0".parse()?,
            group: None,
            output,
            buffer_frames: None,
            volume: 100.0,
            join_timeout: Duration::from_secs(5),
        };
        players.push(run_player(opts, key.clone())?);
    }
    println!(
        "{:>5}  {:>12}  per player: clock offset ± bound, skew, buffer, recovered/concealed",
        "t (s)", "sync spread"
    );
    let start = std::time::Instant::now();
    while start.elapsed().as_secs_f64() < a.seconds {
        std::thread::sleep(Duration::from_secs(1));
        // Where each player will play the same sample: the spread is their disagreement.
        let media = tutti_proto::MediaTime((start.elapsed().as_secs() + 2) * 48_000);
        let due: Vec<Option<tutti_proto::LocalTime>> =
            players.iter().map(|p| p.status.lock().ok()?.timing.map(|t| t.due_at(media))).collect();
        let known: Vec<_> = due.iter().flatten().collect();
        let spread = match (known.iter().min(), known.iter().max()) {
            (Some(lo), Some(hi)) if known.len() == players.len() => {
                format!("{:.1} µs", (**hi - **lo).as_micros_f64())
            }
            _ => "locking".into(),
        };
        let per: Vec<String> = players
            .iter()
            .map(|p| {
                let s = p.status.lock().map(|s| s.clone()).unwrap_or_default();
                s.clock.map_or("locking".into(), |c| {
                    format!(
                        "{} ±{} {:+.1}ppm {}pk {}/{}",
                        c.offset,
                        c.uncertainty,
                        c.skew_ppm(),
                        s.buffered,
                        s.stats.recovered_fec + s.stats.recovered_retx,
                        s.stats.concealed
                    )
                })
            })
            .collect();
        println!("{:>5.0}  {:>12}  {}", start.elapsed().as_secs_f64(), spread, per.join(" | "));
    }
    for p in players {
        p.stop();
    }
    src.stop();
    println!(
        "\nOn a machine with a sound card: `tutti stream --tone --passphrase SECRET` on one, \
         `tutti play HOST:7400 --passphrase SECRET` on each speaker (`tutti devices` lists outputs)."
    );
    Ok(())
}
