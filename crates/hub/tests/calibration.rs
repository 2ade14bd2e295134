//! Calibration through the hub's API, with nodes on its link (the node side is the link
//! `tutti play` runs) and a microphone's recording made here: three speakers with hidden
//! latencies play their parts of the sequence, the recording of their sum (dated 40 ms wrong,
//! with noise) is uploaded, and the hub sets delays that make them arrive together.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_hub::{HubConfig, RunningHub};

mod common;
use common::{ADMIN, http, until};
use tutti_proto::NetworkKey;
use tutti_proto::control::{Command, NodeInfo, NodeState, Settings};

const RATE: f64 = 48_000.0;

fn key() -> NetworkKey {
    NetworkKey::from_bytes([7; 32])
}

/// A player that reports the stream frame it plays (48 kHz since `start`) and keeps the
/// commands it gets.
#[derive(Clone)]
struct Speaker {
    start: Instant,
    commands: Arc<Mutex<Vec<Command>>>,
    settings: Arc<Mutex<Vec<Settings>>>,
}

impl Speaker {
    /// The calibration parts it was told to play.
    fn parts(&self) -> Vec<Command> {
        let commands = self.commands.lock().unwrap();
        commands.iter().filter(|c| matches!(c, Command::Calibrate { .. })).cloned().collect()
    }
}

impl tutti_node::hub::HubHandler for Speaker {
    fn state(&mut self) -> NodeState {
        NodeState {
            streaming: true,
            position: Some((self.start.elapsed().as_secs_f64() * RATE) as u64),
            rate: Some(RATE as u32),
            ..NodeState::default()
        }
    }
    fn settings(&mut self, s: &Settings) {
        self.settings.lock().unwrap().push(s.clone());
    }
    fn command(&mut self, c: &Command) {
        self.commands.lock().unwrap().push(c.clone());
    }
}

fn info(id: &str, calibrates: bool) -> NodeInfo {
    let mut capabilities = vec!["volume".to_owned(), "mute".into(), "delay".into()];
    if calibrates {
        capabilities.extend(["calibrate".into(), "test_tone".into(), "say".into()]);
    }
    NodeInfo {
        id: id.into(),
        name: id.into(),
        role: "player".into(),
        device: "null".into(),
        capabilities,
        address: "127.0.0.1:7401".into(),
        streams: Vec::new(),
        version: "test".into(),
    }
}

/// A binary POST as the admin: (status, JSON).
async fn post_bytes(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: \
         application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let (start, end) = (body.find('{').unwrap_or(0), body.rfind('}').map_or(0, |e| e + 1));
    (status, serde_json::from_str(&body[start..end.max(start)]).unwrap_or(Value::Null))
}

/// What the microphone hears: each speaker's part `hidden[i]` seconds late, summed, plus
/// seeded white noise at `noise` RMS; the recording covers the run's span and starts
/// `dating_error_s` earlier than its date says.
fn recording(run: &Value, hidden: &[f64], noise: f32, dating_error_s: f64) -> (Vec<u8>, f64) {
    let plan = tutti_calib::Plan::new(hidden.len()).unwrap();
    let starts = run["starts_hub_us"].as_f64().unwrap();
    let from_us = run["record_from_hub_us"].as_f64().unwrap();
    let to_us = run["record_to_hub_us"].as_f64().unwrap();
    // Sequence time of the first sample, as truly captured.
    let first_s = (from_us - starts) / 1e6;
    let len = ((to_us - from_us) / 1e6 * RATE) as usize;
    let mut mix = vec![0.0f32; len];
    for (i, late) in hidden.iter().enumerate() {
        let part = plan.render(i, RATE).unwrap();
        let shift = ((late - first_s) * RATE).round() as isize;
        for (k, s) in part.iter().enumerate() {
            let j = k as isize + shift;
            if (0..len as isize).contains(&j) {
                mix[j as usize] += s * 0.3;
            }
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let pcm = mix
        .iter()
        .flat_map(|s| {
            let v = s + noise * 3.46 * uniform();
            ((v.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes()
        })
        .collect();
    (pcm, from_us + dating_error_s * 1e6)
}

/// A hub with its own MQTT broker.
async fn start_hub() -> RunningHub {
    let mqtt = tutti_hub::MqttSetup::Embedded {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials: tutti_hub::mqtt_credentials(&key()),
    };
    common::start(HubConfig { key: Some(key()), mqtt: Some(mqtt), ..common::config() }).await
}

/// The retained message on `topic` of the hub's broker once `pred` holds for it (10 s at
/// most), as a client subscribed to it sees it.
async fn retained_until(h: &RunningHub, topic: &str, pred: impl Fn(&str) -> bool) -> String {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let broker = h.mqtt.clone().expect("the hub has a broker");
    let (user, password) = tutti_hub::mqtt_credentials(&key());
    let mut o = MqttOptions::new("calibration-test", broker.host.clone(), broker.port);
    o.set_credentials(user, password);
    let (c, mut ev) = AsyncClient::new(o, 10);
    c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while let Ok(e) = tokio::time::timeout_at(deadline, ev.poll()).await {
        if let Ok(Event::Incoming(Packet::Publish(p))) = e {
            last = String::from_utf8_lossy(&p.payload).into_owned();
            if pred(&last) {
                return last;
            }
        }
    }
    panic!("{topic}: not as expected within 10 s; last: {last}");
}

/// Joins `id` to the hub as a player that can calibrate (or not).
fn join(
    h: &RunningHub,
    start: Instant,
    id: &str,
    calibrates: bool,
) -> (Speaker, tutti_node::hub::HubLink) {
    let s = Speaker { start, commands: Arc::default(), settings: Arc::default() };
    let link = tutti_node::hub::HubLink::spawn(
        h.link,
        info(id, calibrates),
        key(),
        Duration::from_millis(100),
        s.clone(),
    )
    .unwrap();
    (s, link)
}

/// Puts `id` in `zone` with a delay of 2.5 ms.
async fn place(h: &RunningHub, id: &str, zone: &str) {
    let patch = format!(r#"{{"zone":"{zone}","delay_ms":2.5}}"#);
    let (status, body) = http(h.http, "PATCH", &format!("/api/nodes/{id}"), Some(&patch)).await;
    assert_eq!(status, 200, "{body}");
}

/// The delay the hub holds for `id`, ms.
async fn delay_of(h: &RunningHub, id: &str) -> f64 {
    let (_, body) = http(h.http, "GET", &format!("/api/nodes/{id}"), None).await;
    let node: Value = serde_json::from_str(&body).unwrap();
    node["settings"]["delay_ms"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_of_three_hidden_latencies_sets_delays_that_align_them() {
    let h = start_hub().await;
    let start = Instant::now();
    let speakers: Vec<_> =
        ["den", "kitchen", "tv"].iter().map(|id| join(&h, start, id, true)).collect();
    // A player that cannot calibrate is left out of the sequence.
    let (old, _old_link) = join(&h, start, "old", false);
    until("every node's welcome", || {
        speakers.iter().all(|(s, _)| !s.settings.lock().unwrap().is_empty())
            && !old.settings.lock().unwrap().is_empty()
    })
    .await;
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert_eq!(status, 404, "no such zone yet: {body}");
    let zone = r#"{"source":"127.0.0.1:7400","latency_ms":100}"#;
    assert_eq!(http(h.http, "PUT", "/api/zones/lounge", Some(zone)).await.0, 200);
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("too_few_speakers") && body.contains("at least two"), "{body}");
    for id in ["den", "kitchen", "tv", "old"] {
        place(&h, id, "lounge").await;
    }
    // Their reports carry the stream's position: then it starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(run["state"], "playing");
    let names: Vec<&str> =
        run["speakers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(names, ["den", "kitchen", "tv"], "the ones that can, in a fixed order");
    // Each was told its part, all on one stream frame about 1.5 s ahead.
    until("every speaker's part", || {
        speakers.iter().all(|(s, _)| {
            s.commands.lock().unwrap().iter().any(|c| matches!(c, Command::Calibrate { .. }))
        })
    })
    .await;
    let at = run["at_frame"].as_u64().unwrap();
    let now_frame = (start.elapsed().as_secs_f64() * RATE) as u64;
    assert!(at > now_frame + 48_000 && at < now_frame + 96_000, "at {at}, now {now_frame}");
    for (i, (s, _)) in speakers.iter().enumerate() {
        assert_eq!(s.parts(), [Command::Calibrate { speakers: 3, speaker: i as u32, at }]);
    }
    assert!(
        !old.commands.lock().unwrap().iter().any(|c| matches!(c, Command::Calibrate { .. })),
        "the old player plays on"
    );
    // One run per zone at a time.
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert!(status == 409 && body.contains("busy") && body.contains(&id), "{body}");

    // A recording that misses the sequence's end, or says nothing of its rate, is refused
    // in words and the run waits on.
    let hidden = [0.037, 0.112, 0.005];
    let (pcm, first_us) = recording(&run, &hidden, 0.003, -0.040);
    let path = |q: &str| format!("/api/calibrations/{id}/recording{q}");
    let (status, body) = post_bytes(h.http, &path(""), &pcm).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("rate=48000"), "{body}");
    let short = format!("?rate=48000&start_hub_us={first_us}");
    let (status, body) = post_bytes(h.http, &path(&short), &pcm[..pcm.len() / 2]).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("record from hub instant"), "{body}");
    let (status, body) = post_bytes(h.http, &path(&short), &pcm[..pcm.len() - 1]).await;
    assert!(status == 422 && body["message"].as_str().unwrap().contains("whole number"), "{body}");

    // The whole recording: the delays that align them are set.
    let t = Instant::now();
    let (status, done) = post_bytes(h.http, &path(&short), &pcm).await;
    eprintln!("estimated in {:?}: {done}", t.elapsed());
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "applied", "{done}");
    // Arrivals: hidden latency plus 2.5 ms of delay each (the dating error is common).
    let arrivals: Vec<f64> = done["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["arrival_ms"].as_f64().unwrap())
        .collect();
    for (a, h) in arrivals.iter().zip(hidden) {
        let expected = arrivals[0] + (h - hidden[0]) * 1e3;
        assert!((a - expected).abs() < 0.05, "arrivals {arrivals:?}, hidden {hidden:?}");
    }
    // New delays: the latest (kitchen) keeps its 2.5 ms, the others wait for it.
    let expected = [2.5 + 75.0, 2.5, 2.5 + 107.0];
    for (s, e) in done["speakers"].as_array().unwrap().iter().zip(expected) {
        let d = s["delay_ms"].as_f64().unwrap();
        assert!((d - e).abs() < 0.05, "{}: {d} ms, expected {e}", s["id"]);
        assert_eq!(s["applied"], true);
        assert_eq!(s["confident"], true);
    }
    // The settings changed, and reached the nodes.
    until("the kitchen's and tv's new delays", || {
        [0, 2].iter().all(|&i| {
            speakers[i]
                .0
                .commands
                .lock()
                .unwrap()
                .iter()
                .any(|c| matches!(c, Command::Delay { ms } if (ms - expected[i]).abs() < 0.05))
        })
    })
    .await;
    let (_, nodes) = http(h.http, "GET", "/api/nodes/tv", None).await;
    let tv: Value = serde_json::from_str(&nodes).unwrap();
    assert!((tv["settings"]["delay_ms"].as_f64().unwrap() - expected[2]).abs() < 0.05, "{tv}");
    // Each node's history has it.
    let (status, body) = http(h.http, "GET", "/api/nodes/den/calibrations", None).await;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["run"], id.as_str());
    assert_eq!(history[0]["previous_delay_ms"], 2.5);
    assert!((history[0]["applied_delay_ms"].as_f64().unwrap() - expected[0]).abs() < 0.05);
    assert_eq!(http(h.http, "GET", "/api/nodes/attic/calibrations", None).await.0, 404);
    // And so does its drift on MQTT: what the microphone heard of it, beside its clock.
    let drift =
        retained_until(&h, "tutti/den/drift", |b| b.contains(r#""kind":"calibration""#)).await;
    let drift: Value = serde_json::from_str(&drift).unwrap();
    let acoustic = &drift["acoustic"];
    assert!((acoustic["delay_ms"].as_f64().unwrap() - expected[0]).abs() < 0.05, "{drift}");
    assert!(
        acoustic["measured_ms"].as_f64().is_some() && acoustic["at"].as_u64().is_some(),
        "{drift}"
    );
    assert!(drift["skew_ppm"].is_null() && drift["online"] == true, "{drift}");
    // Its status, in words the node says (the hub composes them).
    let (status, body) =
        http(h.http, "POST", "/api/nodes/den/command", Some(r#"{"kind":"say_status"}"#)).await;
    assert_eq!(status, 202, "{body}");
    until("the den's words", || {
        speakers[0].0.commands.lock().unwrap().iter().any(|c| {
            matches!(c, Command::Say { text } if text.starts_with("den. Room: lounge. Online, playing.")
                && text.contains("Delay 7") && text.ends_with("milliseconds, calibrated."))
        })
    })
    .await;
    let (status, body) =
        http(h.http, "POST", "/api/nodes/den/command", Some(r#"{"kind":"test_tone"}"#)).await;
    assert_eq!(status, 202, "{body}");
    until("the den's test tone", || {
        speakers[0].0.commands.lock().unwrap().contains(&Command::TestTone)
    })
    .await;
    let long = format!(r#"{{"kind":"say","text":"{}"}}"#, "la ".repeat(200));
    let (status, body) = http(h.http, "POST", "/api/nodes/den/command", Some(&long)).await;
    assert!(status == 422 && body.contains("1–500 characters"), "{body}");
    let (status, body) =
        http(h.http, "POST", "/api/nodes/old/command", Some(r#"{"kind":"say_status"}"#)).await;
    assert!(status == 422 && body.contains("cannot say"), "an old player cannot: {body}");
    // Done runs take no more recordings.
    let (status, body) = post_bytes(h.http, &path(&short), &pcm).await;
    assert!(status == 409 && body["error"] == "not_waiting", "{body}");

    // A room too noisy to hear them: refused, nothing changed.
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let id2 = run["id"].as_str().unwrap().to_owned();
    let (pcm, first_us) = recording(&run, &[0.0, 0.0, 0.0], 0.5, 0.0);
    let q = format!("/api/calibrations/{id2}/recording?rate=48000&start_hub_us={first_us}");
    let (status, refused) = post_bytes(h.http, &q, &pcm).await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["state"], "refused", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("nothing applied"), "{refused}");
    let (_, nodes) = http(h.http, "GET", "/api/nodes/tv", None).await;
    let tv: Value = serde_json::from_str(&nodes).unwrap();
    assert!((tv["settings"]["delay_ms"].as_f64().unwrap() - expected[2]).abs() < 0.05, "{tv}");
    let (_, body) = http(h.http, "GET", "/api/nodes/den/calibrations", None).await;
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[1]["confident"], false);
    assert!(history[1].get("applied_delay_ms").is_none(), "{history}");

    // A third, cancelled: its speakers are told to stop; nothing changes.
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge","apply":false}"#)).await;
    assert_eq!(status, 201, "{body}");
    let id3 = serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    let (status, body) = http(h.http, "DELETE", &format!("/api/calibrations/{id3}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"cancelled\""), "{body}");
    until("the cancel at every speaker", || {
        speakers
            .iter()
            .all(|(s, _)| s.commands.lock().unwrap().contains(&Command::CancelCalibration))
    })
    .await;
    let (status, _) = http(h.http, "DELETE", &format!("/api/calibrations/{id3}"), None).await;
    assert_eq!(status, 409, "a cancelled run cannot be cancelled again");
    let (_, list) = http(h.http, "GET", "/api/calibrations", None).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let states: Vec<&str> =
        list.as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["applied", "refused", "cancelled"]);
    // The read-only token may look, not start one.
    let read = h.hub.api_tokens().1;
    let (status, _, _) = common::raw_http(
        h.http,
        "POST /api/calibrations",
        &common::bearer(&read),
        r#"{"zone":"lounge"}"#,
    )
    .await;
    assert_eq!(status, 403);
    drop(speakers);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_gone_before_its_delay_is_set_puts_the_others_back_and_other_rooms_play_on() {
    let h = start_hub().await;
    let start = Instant::now();
    let mut lounge: Vec<_> =
        ["den", "kitchen", "tv"].iter().map(|id| join(&h, start, id, true)).collect();
    let patio: Vec<_> = ["deck", "shed"].iter().map(|id| join(&h, start, id, true)).collect();
    until("every node's welcome", || {
        lounge.iter().chain(&patio).all(|(s, _)| !s.settings.lock().unwrap().is_empty())
    })
    .await;
    for (zone, ids) in [("lounge", &["den", "kitchen", "tv"][..]), ("patio", &["deck", "shed"])] {
        let body = r#"{"source":"127.0.0.1:7400","latency_ms":100}"#;
        assert_eq!(http(h.http, "PUT", &format!("/api/zones/{zone}"), Some(body)).await.0, 200);
        for id in ids {
            place(&h, id, zone).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"lounge"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    // Another room calibrates at the same time (one run per room, not per hub)...
    let (status, body) =
        http(h.http, "POST", "/api/calibrations", Some(r#"{"zone":"patio"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let patio_run: Value = serde_json::from_str(&body).unwrap();
    until("every speaker's part", || {
        lounge.iter().chain(&patio).all(|(s, _)| {
            s.commands.lock().unwrap().iter().any(|c| matches!(c, Command::Calibrate { .. }))
        })
    })
    .await;
    // ...and each room's speakers hear of their own room's sequence only.
    for (room, speakers, n) in [("lounge", &lounge, 3), ("patio", &patio, 2)] {
        for (s, _) in speakers.iter() {
            let parts = s.parts();
            assert!(
                parts.len() == 1
                    && matches!(parts[0], Command::Calibrate { speakers, .. } if speakers == n),
                "{room}: {parts:?}"
            );
        }
    }

    // The tv goes away while the microphone records.
    let (_, tv_link) = lounge.pop().unwrap();
    tv_link.stop();
    let mut gone = false;
    for _ in 0..100 {
        let (_, body) = http(h.http, "GET", "/api/nodes/tv", None).await;
        if serde_json::from_str::<Value>(&body).unwrap()["online"] == false {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the hub saw the tv go");
    // The recording shows all three (the den and the tv would move, the kitchen is the
    // latest): the den's delay is set, then the tv's cannot be, and the den's goes back.
    let (pcm, first_us) = recording(&run, &[0.037, 0.112, 0.005], 0.003, 0.0);
    let q = format!("/api/calibrations/{id}/recording?rate=48000&start_hub_us={first_us}");
    let (status, done) = post_bytes(h.http, &q, &pcm).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "failed", "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(
        message.contains("`tv` went away") && message.contains("previous delays are back"),
        "{message}"
    );
    assert_eq!(delay_of(&h, "den").await, 2.5, "the den's delay is back");
    assert_eq!(delay_of(&h, "kitchen").await, 2.5);
    until("the den told its new delay, then its old one", || {
        let delays: Vec<f64> = lounge[0]
            .0
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Command::Delay { ms } => Some(*ms),
                _ => None,
            })
            .collect();
        delays.len() >= 2
            && (delays[delays.len() - 2] - 77.5).abs() < 0.05
            && delays[delays.len() - 1] == 2.5
    })
    .await;
    // The history keeps what was measured, and that nothing was applied.
    let (_, body) = http(h.http, "GET", "/api/nodes/den/calibrations", None).await;
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["run"], id.as_str());
    assert!(history[0]["measured_ms"].as_f64().is_some(), "{history}");
    assert!(history[0].get("applied_delay_ms").is_none(), "{history}");

    // The patio's run went on untouched by all this; cancelled, its delays stay.
    let patio_id = patio_run["id"].as_str().unwrap();
    let (_, body) = http(h.http, "GET", &format!("/api/calibrations/{patio_id}"), None).await;
    assert!(body.contains("\"state\":\"playing\""), "{body}");
    let (status, body) =
        http(h.http, "DELETE", &format!("/api/calibrations/{patio_id}"), None).await;
    assert_eq!(status, 200, "{body}");
    for id in ["deck", "shed"] {
        assert_eq!(delay_of(&h, id).await, 2.5, "{id}");
    }
    assert!(
        patio.iter().all(|(s, _)| !s
            .commands
            .lock()
            .unwrap()
            .iter()
            .any(|c| matches!(c, Command::Delay { ms } if *ms != 2.5))),
        "no patio speaker was told a delay but the one it was given"
    );
    drop((lounge, patio));
    h.stop();
}
