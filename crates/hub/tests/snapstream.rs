//! Snapcast's stream protocol on the hub, spoken byte by byte as a snapclient speaks it: the
//! hello answered with the player's settings, time requests answered on the hub's clock, the
//! snapclient a player of the hub, and what it may not send.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tutti_hub::HubConfig;
use tutti_hub::snapcast::SnapcastSetup;
use tutti_hub::snapstream::{BASE, Base, Tv, json_payload, kind, read_json};

mod common;
use common::{http, until};

async fn read(s: &mut TcpStream) -> (Base, Vec<u8>) {
    let mut head = [0u8; BASE];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("a message within 5 s")
        .unwrap();
    let base = Base::parse(&head);
    let mut payload = vec![0u8; base.size as usize];
    s.read_exact(&mut payload).await.unwrap();
    (base, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapclient_is_answered_timed_and_listed_and_a_huge_message_ends_it() {
    let setup = SnapcastSetup { listen: "127.0.0.1:0".parse().unwrap(), allow: Vec::new() };
    let h = common::start(HubConfig { snapcast_stream: Some(setup), ..common::config() }).await;
    let addr = h.snapcast_stream.expect("the stream listener");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = json!({ "Arch": "armv6l", "ClientName": "Snapclient", "HostName": "pi-den",
                        "ID": "b8:27:eb:00:00:01", "Instance": 1, "MAC": "b8:27:eb:00:00:01",
                        "OS": "Raspbian", "SnapStreamProtocolVersion": 2, "Version": "0.26.0" });
    let m = Base { kind: kind::HELLO, id: 41, ..Base::default() }.message(&json_payload(&hello));
    s.write_all(&m).await.unwrap();
    // The answer to the hello: its settings, referring to it.
    let (base, payload) = read(&mut s).await;
    assert_eq!((base.kind, base.refers_to), (kind::SERVER_SETTINGS, 41));
    let settings = read_json(&payload).unwrap();
    assert_eq!(settings, json!({ "bufferMs": 100, "latency": 0, "muted": false, "volume": 100 }));
    // A time request: answered with the hub's receipt less the client's sending instant.
    let sent = Tv { sec: 5, usec: 250_000 };
    let m = Base { kind: kind::TIME, id: 42, sent, ..Base::default() }.message(&[0; 8]);
    s.write_all(&m).await.unwrap();
    let (base, payload) = read(&mut s).await;
    assert_eq!((base.kind, base.refers_to), (kind::TIME, 42));
    let latency = Tv {
        sec: i32::from_le_bytes(payload[0..4].try_into().unwrap()),
        usec: i32::from_le_bytes(payload[4..8].try_into().unwrap()),
    };
    assert_eq!(latency.micros(), base.received.micros() - sent.micros(), "{base:?}");
    let hub_now = (tutti_audio::clock::now().0 / 1_000) as i64;
    assert!((hub_now - base.sent.micros()).abs() < 1_000_000, "stamped on the hub's clock");
    // The snapclient is a player of the hub; a volume set on it reaches it as settings.
    let id = "snapclient-b8-27-eb-00-00-01";
    until("listed", || h.hub.nodes().iter().any(|n| n.info.id == id && n.online)).await;
    let (status, body) =
        http(h.http, "PATCH", &format!("/api/nodes/{id}"), Some("{\"volume\":35,\"delay_ms\":12}"))
            .await;
    assert_eq!(status, 200, "{body}");
    let t = Instant::now();
    let settings: Value = loop {
        let (base, payload) = read(&mut s).await;
        if base.kind == kind::SERVER_SETTINGS {
            let v = read_json(&payload).unwrap();
            if v["latency"] == -12 {
                break v;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    };
    assert_eq!(settings["volume"], 35, "{settings}");
    // Its own mixer moved: the player's setting follows.
    let info = json!({ "volume": 60, "muted": true });
    let m =
        Base { kind: kind::CLIENT_INFO, id: 43, ..Base::default() }.message(&json_payload(&info));
    s.write_all(&m).await.unwrap();
    until("the snapclient's volume taken", || {
        h.hub
            .nodes()
            .iter()
            .any(|n| n.info.id == id && n.settings.volume == 60.0 && n.settings.mute)
    })
    .await;
    // A message bigger than any a snapclient sends ends the connection; the node is lost.
    let m = Base { kind: kind::CLIENT_INFO, size: 0, ..Base::default() }.message(&[]);
    let mut huge = m[..BASE - 4].to_vec();
    huge.extend_from_slice(&(64u32 << 20).to_le_bytes());
    s.write_all(&huge).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a 64 MiB message did not end the connection");
    until("lost", || h.hub.nodes().iter().any(|n| n.info.id == id && !n.online)).await;
    // No hello with an ID: nothing is listed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let m = Base { kind: kind::HELLO, id: 1, ..Base::default() }.message(&json_payload(&json!({})));
    s.write_all(&m).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "a hello without an ID is not answered");
    assert_eq!(h.hub.nodes().len(), 1);
    h.stop();
}
