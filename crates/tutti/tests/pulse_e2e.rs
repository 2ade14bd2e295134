//! Three players into three PulseAudio null sinks (a private headless server): recording the
//! sinks' monitors shows the same click at the same instant on all three.
//!
//! Needs `pulseaudio` (`.ci/run` installs it): fails under `CI` without it, skips otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tutti");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_pulse(dir: &Path, sinks: &[&str]) -> Option<Proc> {
    std::fs::create_dir_all(dir.join("run")).ok()?;
    let mut script = format!(
        ".fail\nload-module module-native-protocol-unix auth-anonymous=1 socket={}/native\n",
        dir.display()
    );
    for s in sinks {
        script += &format!(
            "load-module module-null-sink sink_name={s} rate=48000 channels=2 sink_properties=device.description={s}\n"
        );
    }
    std::fs::write(dir.join("lab.pa"), script).ok()?;
    let child = Command::new("pulseaudio")
        .args(["-n", "-F"])
        .arg(dir.join("lab.pa"))
        .args(["--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"])
        .arg(format!("--log-target=file:{}/pulse.log", dir.display()))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("HOME", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if dir.join("native").exists() {
            std::thread::sleep(Duration::from_millis(200));
            return Some(Proc(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `tutti args` on the PulseAudio server at `server` (no mDNS), its output piped.
fn tutti_on(server: &str, passphrase: &str, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("PULSE_SERVER", server)
        .env("TUTTI_PASSPHRASE", passphrase)
        .env("TUTTI_MDNS", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn clicks_wav(path: &Path, seconds: f64) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let click = tutti_audio::source::Clicks::click();
    for i in 0..(48_000.0 * seconds) as usize {
        let k = i % 12_000;
        let v = if k < click.len() { (click[k] * 30_000.0) as i16 } else { 0 };
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn three_players_into_three_null_sinks_are_aligned_within_half_a_millisecond() {
    if Command::new("pulseaudio").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must install pulseaudio (.ci/packages.sh)");
        eprintln!("skipped: pulseaudio is not installed");
        return;
    }
    // The instrument (a PulseAudio monitor recording, timed by cpal's interpolated capture
    // latency) sometimes wanders by milliseconds for seconds after a stall of the machine,
    // while the players report no resync and no jump. A disturbed measurement is taken once
    // more, on fresh processes; a real misalignment fails both.
    if let Err(first) = measure(0) {
        eprintln!("first measurement failed ({first}); measuring once more");
        if let Err(second) = measure(1) {
            panic!("twice: {first}; then {second}");
        }
    }
}

/// One measurement: three players into three null sinks, a recorder on their monitors.
fn measure(attempt: u16) -> Result<(), String> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tutti-pulse3-{}-{attempt}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _pulse = start_pulse(&dir, &["s1", "s2", "s3"]).expect("private PulseAudio starts");
    let server = format!("unix:{}/native", dir.display());
    let wav = dir.join("clicks.wav");
    clicks_wav(&wav, 6.0);
    let sp = 21_000 + (std::process::id() % 400) as u16 * 100 + 90 + attempt;
    let spawn = |args: &[&str]| tutti_on(&server, "pulse three sinks", args);
    let run = |args: &[&str]| Proc(spawn(args));
    let mut players: Vec<Proc> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| {
            run(&[
                "play",
                &format!("127.0.0.1:{sp}"),
                "--host",
                "pulse",
                "--device",
                s,
                "--buffer",
                "256",
                "--seconds",
                "9",
                "--quiet",
            ])
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2)); // PulseAudio wakes its first streams slowly
    let recorder = spawn(&[
        "record",
        "--in",
        "s1.monitor",
        "--in",
        "s2.monitor",
        "--in",
        "s3.monitor",
        "--seconds",
        "6",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let _source = run(&[
        "stream",
        "--file",
        wav.to_str().unwrap(),
        "--port",
        &sp.to_string(),
        "--bind",
        "127.0.0.1",
        "--quiet",
    ]);
    let out = recorder.wait_with_output().expect("recorder runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let per_device: Vec<Vec<i64>> = text
        .lines()
        .map(|l| {
            let list = l.split('[').nth(1).and_then(|r| r.split(']').next()).unwrap_or("");
            list.split(',').filter(|x| !x.is_empty()).map(|x| x.parse().unwrap()).collect()
        })
        .collect();
    assert_eq!(per_device.len(), 3, "{text}");
    // Match each click of s1 with the nearest on s2 and s3.
    let mut spreads = Vec::new();
    // The first click meets streams still starting up (PulseAudio's latency reports settle).
    for &t in per_device[0].iter().skip(1) {
        let nearest: Vec<i64> = per_device[1..]
            .iter()
            .filter_map(|d| d.iter().copied().min_by_key(|x| (x - t).abs()))
            .collect();
        if nearest.len() == 2 && nearest.iter().all(|x| (x - t).abs() < 50_000_000) {
            let all = [t, nearest[0], nearest[1]];
            spreads.push(all.iter().max().unwrap() - all.iter().min().unwrap());
        }
    }
    spreads.sort_unstable();
    let at = |q: f64| {
        spreads.get(((spreads.len() - 1) as f64 * q).round() as usize).copied().unwrap_or(0) as f64
            / 1e6
    };
    eprintln!(
        "{} clicks on all three sinks; spread (max − min): median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        spreads.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    // Each player's own account (underruns, resyncs) goes with the figures.
    for (p, sink) in players.iter_mut().zip(["s1", "s2", "s3"]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.0.kill();
        let mut out = String::new();
        if let Some(mut o) = p.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        eprintln!("player {sink}: {}", out.trim());
    }
    assert!(spreads.len() >= 10, "too few clicks heard on all three: {text}");
    // The recording's own timestamps (cpal's interpolated PulseAudio latency) jitter by a few
    // hundred µs, and one run in five or so has a recorder stream whose tail wanders to ~1 ms:
    // the typical click is judged against the 0.5 ms target, the tail against 1 ms.
    let _ = std::fs::remove_dir_all(&dir);
    if at(0.5) > 0.5 {
        return Err(format!("sinks misaligned: {spreads:?}"));
    }
    if at(0.9) > 1.0 {
        return Err(format!("sinks' tail misaligned: {spreads:?}"));
    }
    Ok(())
}

#[test]
fn a_player_whose_sound_server_restarts_plays_again() {
    if Command::new("pulseaudio").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must install pulseaudio (.ci/packages.sh)");
        eprintln!("skipped: pulseaudio is not installed");
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tutti-pulse-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pulse = start_pulse(&dir, &["s1"]).expect("private PulseAudio starts");
    let server = format!("unix:{}/native", dir.display());
    let wav = dir.join("clicks.wav");
    clicks_wav(&wav, 30.0);
    let sp = 21_000 + (std::process::id() % 400) as u16 * 100 + 95;
    let child = |args: &[&str]| tutti_on(&server, "pulse restart", args);
    let spawn = |args: &[&str]| Proc(child(args));
    let mut player = spawn(&[
        "play",
        &format!("127.0.0.1:{sp}"),
        "--host",
        "pulse",
        "--device",
        "s1",
        "--seconds",
        "14",
    ]);
    let _source = spawn(&[
        "stream",
        "--file",
        wav.to_str().unwrap(),
        "--port",
        &sp.to_string(),
        "--bind",
        "127.0.0.1",
        "--quiet",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    // The sound server dies under the player (a crash, `pulseaudio -k`) and comes back.
    drop(pulse);
    let _ = std::fs::remove_file(dir.join("native"));
    std::thread::sleep(Duration::from_millis(1_500));
    let _pulse = start_pulse(&dir, &["s1"]).expect("PulseAudio starts again");
    std::thread::sleep(Duration::from_secs(2));
    // The clicks (one every 250 ms) are heard on the sink again.
    let out = child(&["record", "--in", "s1.monitor", "--seconds", "3"])
        .wait_with_output()
        .expect("recorder runs");
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let clicks = out
        .lines()
        .find_map(|l| l.split('[').nth(1).and_then(|r| r.split(']').next()))
        .map_or(0, |list| list.split(',').filter(|x| !x.is_empty()).count());
    let deadline = Instant::now() + Duration::from_secs(15);
    while player.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = player.0.kill();
    let mut log = String::new();
    if let Some(mut e) = player.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut log);
    }
    eprintln!("recorder: {out}\nplayer: {log}");
    assert!(log.contains("audio device stopped"), "the player says its device stopped: {log}");
    assert!(log.contains("audio device playing again"), "and that it plays again: {log}");
    assert!(clicks >= 8, "{clicks} clicks heard in 3 s after the restart (12 sent): {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
