//! The real device path through a private, headless PulseAudio server with a null sink:
//! clicks played by the engine through cpal's PulseAudio host into the sink, recorded from
//! its monitor, must land where the engine said they would.
//!
//! Needs `pulseaudio` (Debian: `pulseaudio pulseaudio-utils`); `.ci/run` installs it. Without
//! it the test fails when `CI` is set and is skipped (with a message) otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pulse {
    child: Child,
    dir: PathBuf,
}

impl Pulse {
    fn start(dir: &Path, sinks: &[&str]) -> Option<Pulse> {
        std::fs::create_dir_all(dir.join("run")).ok()?;
        let mut script = String::from(".fail\n");
        script += &format!(
            "load-module module-native-protocol-unix auth-anonymous=1 socket={}/native\n",
            dir.display()
        );
        for s in sinks {
            script += &format!(
                "load-module module-null-sink sink_name={s} rate=48000 channels=2 sink_properties=device.description={s}\n"
            );
        }
        script +=
            &format!("set-default-sink {}\nset-default-source {}.monitor\n", sinks[0], sinks[0]);
        std::fs::write(dir.join("lab.pa"), script).ok()?;
        let child = Command::new("pulseaudio")
            .args(["-n", "-F"])
            .arg(dir.join("lab.pa"))
            .args(["--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--system=false"])
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
                return Some(Pulse { child, dir: dir.to_owned() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
    fn server(&self) -> String {
        format!("unix:{}/native", self.dir.display())
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(json: &str, key: &str) -> f64 {
    json.split(&format!("\"{key}\":"))
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {json}"))
}

#[test]
fn clicks_through_a_pulseaudio_null_sink_land_where_the_engine_says() {
    if Command::new("pulseaudio").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must install pulseaudio (.ci/packages.sh)");
        eprintln!(
            "skipped: pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("tutti-pulse-{}", std::process::id()));
    let pulse = Pulse::start(&dir, &["out", "mic"]).expect("a private PulseAudio server starts");
    let run = Command::new(env!("CARGO_BIN_EXE_tutti-clicks"))
        .args(["--json", "--seconds", "6", "--buffer", "256", "--buffer", "128"])
        .env("PULSE_SERVER", pulse.server())
        .output()
        .expect("tutti-clicks runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let heard = field(line, "clicks");
        let expected = field(line, "expected");
        assert!(expected >= 15.0 && heard >= expected - 1.0, "clicks heard: {line}");
        assert!(field(line, "error_median_ms").abs() <= 1.5, "systematic error: {line}");
        assert!(field(line, "jitter_p95_ms") <= 1.5, "timing jitter: {line}");
        let latency = field(line, "output_latency_ms");
        let buffer = field(line, "buffer_frames");
        assert!(
            latency > 0.0 && latency < 4.0 * buffer / 48.0,
            "device latency {latency} ms for {buffer} frames"
        );
    }
    drop(pulse);
    let _ = std::fs::remove_dir_all(&dir);
}
