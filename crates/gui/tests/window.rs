//! The desktop app as a person sees it: started under Xvfb against a hub with three speakers,
//! its window found by title and photographed (`target/tmp/gui/window.png`), and a click on a
//! card's mute button muting that speaker at the hub.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tutti-gui");
// The hub tests' setup: a hub on loopback with a known admin token.
#[path = "../../hub/tests/common/mod.rs"]
mod common;
use common::ADMIN;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Speaker;

impl tutti_node::hub::HubHandler for Speaker {
    fn state(&mut self) -> tutti_proto::control::NodeState {
        tutti_proto::control::NodeState {
            streaming: true,
            offset_us: Some(2.0),
            latency_ms: Some(100.0),
            jitter_ms: Some(0.3),
            ..Default::default()
        }
    }
    fn settings(&mut self, _: &tutti_proto::control::Settings) {}
    fn command(&mut self, _: &tutti_proto::control::Command) {}
}

/// Runs `cmd` with `args`; its stdout, or a panic naming the package to install.
fn run(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out =
        Command::new(cmd).args(args).envs(env.iter().copied()).output().unwrap_or_else(|e| {
            panic!("{cmd}: {e} (scripts/test.sh installs it: .ci/packages.sh)")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_desktop_app_opens_a_window_with_the_hubs_speakers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = tutti_proto::NetworkKey::from_bytes([7; 32]);
    let config = tutti_hub::HubConfig { key: Some(key.clone()), ..common::config() };
    let hub = rt.block_on(common::start(config));
    let _links: Vec<_> = ["Kitchen", "Living room", "Attic"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let info = tutti_proto::control::NodeInfo {
                id: format!("gui-speaker-{i}"),
                name: (*name).into(),
                role: "player".into(),
                device: "null".into(),
                capabilities: ["volume", "mute", "delay"].map(str::to_owned).to_vec(),
                address: format!("127.0.0.1:{}", 31_000 + i),
                streams: Vec::new(),
                version: "test".into(),
            };
            tutti_node::hub::HubLink::spawn(
                hub.link,
                info,
                key.clone(),
                Duration::from_millis(250),
                Speaker,
            )
            .expect("link")
        })
        .collect();
    let t = Instant::now();
    while rt.block_on(async { hub.hub.nodes() }).iter().filter(|n| n.online).count() < 3 {
        assert!(t.elapsed() < Duration::from_secs(10), "three speakers join");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A display of its own.
    let display = format!(":{}", 90 + std::process::id() % 100);
    let _xvfb = Proc(
        Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "1280x900x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (apt-get install xvfb; scripts/test.sh does)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://{}", hub.http);
    let mut app = Proc(
        Command::new(BIN)
            .args(["--hub", &url, "--token", ADMIN])
            .env("DISPLAY", &display)
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tutti-gui starts"),
    );
    // Its window, by title.
    let env = [("DISPLAY", display.as_str())];
    let t = Instant::now();
    let window = loop {
        if let Ok(Some(status)) = app.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = app.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("tutti-gui ended ({status}): {err}");
        }
        let tree = run("xwininfo", &["-root", "-tree"], &env);
        if let Some(line) = tree.lines().find(|l| l.contains("\"Tutti\"")) {
            break line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "a window called Tutti: {tree}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The page inside draws once the API answered: give it time, then photograph it.
    std::thread::sleep(Duration::from_secs(4));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gui");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("window.png");
    run("import", &["-window", &window, shot.to_str().unwrap()], &env);
    // A window that drew the dashboard is not one colour: count the colours in it.
    let colours = run("identify", &["-format", "%k", shot.to_str().unwrap()], &env);
    let colours: u32 = colours.trim().parse().unwrap_or(0);
    eprintln!("desktop app: window {window}, screenshot {} ({colours} colours)", shot.display());
    assert!(colours > 50, "the window shows the dashboard, not a blank: {colours} colours");
    // A control does what it says: the first card (Attic, by name) muted with a click on its
    // mute button reaches the hub.
    let attic = "gui-speaker-2";
    let muted = || {
        rt.block_on(async { hub.hub.nodes() }).iter().any(|n| n.info.id == attic && n.settings.mute)
    };
    assert!(!muted(), "not muted yet");
    // Where the first card's mute button is drawn (window.png shows it).
    run("xdotool", &["mousemove", "--window", &window, "58", "388", "click", "1"], &env);
    let t = Instant::now();
    while !muted() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a click on Attic's mute mutes it at the hub"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    run("import", &["-window", &window, dir.join("window-muted.png").to_str().unwrap()], &env);
    hub.stop();
}
