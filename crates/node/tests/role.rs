//! The player as a handle: a zone's route is taken inside it — the stream it plays changes
//! nothing, a new one is joined keeping the levels, a silent one is waited for and said, an
//! address that does not resolve is refused while it plays on — and commands sent while it
//! waits are applied once it plays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tutti_audio::source::Tone;
use tutti_node::output::OutputKind;
use tutti_node::player::PlayerOptions;
use tutti_node::role::{Player, PlayerCommand, PlayerNotice, PlayerView};
use tutti_node::source::{Encoding, Input, RunningSource, run_source};
use tutti_proto::{Codec, Nanos, NetworkKey, PlayerConfig, Security, SourceConfig};

fn keys() -> Security {
    Security::encrypted(NetworkKey::from_bytes([7; 32]))
}

fn source(hz: f64) -> RunningSource {
    let input = Input::Paced { source: Box::new(Tone::new(48_000, 2, hz, 0.5)) };
    let encoding = Encoding { codec: Codec::Pcm16, bitrate: 0 };
    let config = SourceConfig::new(1, 48_000, 2);
    run_source(input, config, encoding, "127.0.0.1:0".parse().unwrap(), keys(), None).unwrap()
}

fn options(source: SocketAddr) -> PlayerOptions {
    PlayerOptions {
        config: PlayerConfig::new(source),
        bind: "127.0.0.1:0".parse().unwrap(),
        group: None,
        output: OutputKind::Null,
        buffer_frames: None,
        volume: 100.0,
        join_timeout: Duration::from_millis(1_500),
    }
}

/// Waits (at most `limit`) until `ok` holds for what the player said so far and its view.
fn until(
    p: &Player,
    said: &mut Vec<PlayerNotice>,
    limit: Duration,
    what: &str,
    ok: impl Fn(&[PlayerNotice], &PlayerView) -> bool,
) {
    let t = Instant::now();
    loop {
        said.extend(p.notices());
        let v = p.view();
        if ok(said, &v) {
            return;
        }
        assert!(t.elapsed() < limit, "{what} within {limit:?}: said {said:?}, view {v:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_player_takes_its_zones_routes_by_itself_and_keeps_its_levels() {
    let (a, b) = (source(300.0), source(700.0));
    let (a_addr, b_addr) = (a.local_addr, b.local_addr);
    let p = Player::start(options(a_addr), keys().into()).expect("joins a");
    let mut said = Vec::new();
    let s = Duration::from_secs(5);
    until(&p, &mut said, s, "plays a", |_, v| v.snapshot.streaming && v.source == Some(a_addr));
    p.command(PlayerCommand::Volume { percent: 40.0, at: None });
    p.command(PlayerCommand::Delay { ms: 3.0 });

    // The stream it plays, routed again: nothing changes (no re-join, no gap).
    let before = p.view().snapshot.stats.received;
    p.command(PlayerCommand::Route { source: a_addr.to_string(), latency: None });
    std::thread::sleep(Duration::from_millis(600));
    said.extend(p.notices());
    assert!(!said.iter().any(|n| matches!(n, PlayerNotice::NowPlaying(_))), "{said:?}");
    assert!(p.view().snapshot.stats.received > before, "the same session kept receiving");

    // The same stream at a new latency: changed in place, not joined again.
    p.command(PlayerCommand::Route {
        source: a_addr.to_string(),
        latency: Some(Nanos::from_millis(180)),
    });
    until(&p, &mut said, s, "the new latency", |said, v| {
        said.contains(&PlayerNotice::Latency(Some(Nanos::from_millis(180))))
            // (the player's latency includes its own 3 ms delay)
            && v.snapshot.latency.is_some_and(|l| (l - Nanos::from_millis(183)).0.abs() < 1_000_000)
    });
    assert!(!said.iter().any(|n| matches!(n, PlayerNotice::NowPlaying(_))), "{said:?}");

    // Another stream: joined inside, levels kept.
    p.command(PlayerCommand::Route { source: b_addr.to_string(), latency: None });
    until(&p, &mut said, s, "plays b", |said, v| {
        said.contains(&PlayerNotice::NowPlaying(b_addr))
            && v.snapshot.streaming
            && v.source == Some(b_addr)
    });
    let v = p.view();
    assert_eq!((v.volume, v.delay_ms), (Some(40.0), Some(3.0)), "levels kept");

    // An address that does not resolve: refused, said, and b plays on.
    p.command(PlayerCommand::Route { source: "nowhere.invalid:7400".into(), latency: None });
    until(&p, &mut said, s, "a bad route said", |said, v| {
        said.iter()
            .any(|n| matches!(n, PlayerNotice::BadRoute(w) if w.contains("does not resolve")))
            && v.problem.as_deref().is_some_and(|p| p.contains("nowhere.invalid"))
    });
    assert!(p.view().snapshot.streaming && p.view().source == Some(b_addr), "b plays on");

    // A silent source: waited for and said, retried; a volume set meanwhile is kept.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    p.command(PlayerCommand::Route { source: silent_addr.clone(), latency: None });
    until(&p, &mut said, s, "the wait said", |said, v| {
        said.iter()
            .any(|n| matches!(n, PlayerNotice::Waiting { source, .. } if *source == silent_addr))
            && v.problem.as_deref().is_some_and(|p| p.contains("waiting for the zone's source"))
    });
    p.command(PlayerCommand::Volume { percent: 25.0, at: None });
    // Back to a: joined (the player was down, waiting), the problem cleared.
    p.command(PlayerCommand::Route { source: a_addr.to_string(), latency: None });
    until(&p, &mut said, s, "plays a again", |said, v| {
        said.iter().filter(|n| **n == PlayerNotice::NowPlaying(a_addr)).count() == 1
            && v.snapshot.streaming
            && v.source == Some(a_addr)
            && v.problem.is_none()
    });
    assert_eq!(p.view().volume, Some(25.0));
    p.stop();
    drop((a, b, silent));
}

#[test]
fn a_zone_latency_too_short_for_the_opened_device_reopens_it_and_a_longer_one_does_not() {
    let a = source(300.0);
    let a_addr = a.local_addr;
    let p = Player::start(options(a_addr), keys().into()).expect("joins a");
    let mut said = Vec::new();
    let s = Duration::from_secs(5);
    until(&p, &mut said, s, "plays a", |_, v| v.snapshot.streaming);
    // The device was sized for the stream's 100 ms; 20 ms needs a smaller one: joined again.
    p.command(PlayerCommand::Route {
        source: a_addr.to_string(),
        latency: Some(Nanos::from_millis(20)),
    });
    until(&p, &mut said, s, "a at 20 ms", |said, v| {
        said.contains(&PlayerNotice::NowPlaying(a_addr))
            && v.snapshot.streaming
            && v.snapshot.latency.is_some_and(|l| (l - Nanos::from_millis(20)).0.abs() < 1_000_000)
    });
    // Back to a longer one: the small device fits it, changed in place.
    p.command(PlayerCommand::Route { source: a_addr.to_string(), latency: None });
    until(&p, &mut said, s, "a at 100 ms", |said, v| {
        said.contains(&PlayerNotice::Latency(None))
            && v.snapshot.latency.is_some_and(|l| (l - Nanos::from_millis(100)).0.abs() < 1_000_000)
    });
    let rejoins = said.iter().filter(|n| **n == PlayerNotice::NowPlaying(a_addr)).count();
    assert_eq!(rejoins, 1, "{said:?}");
    p.stop();
    drop(a);
}
