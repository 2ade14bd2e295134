//! Fuzzes what the hub's HTTP API and MQTT take from a client: request bodies (a node's
//! settings patch, a zone, a zone command, a command) parsed and applied to a registry with a
//! node and a zone. Nothing may panic; whatever is accepted keeps the registry within its
//! ranges.
#![no_main]
#![forbid(unsafe_code)]

use std::time::Instant;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tutti_hub::registry::{Registry, SettingsPatch};
use tutti_proto::control::{Command, NodeInfo, NodeState, Zone};

#[derive(Arbitrary, Debug)]
enum Request {
    Patch(Vec<u8>),
    PutZone(String, Vec<u8>),
    ZoneCommand(String, Vec<u8>),
    DeleteZone(String),
    Report(Vec<u8>),
}

fuzz_target!(|requests: Vec<Request>| {
    let now = Instant::now();
    let mut reg = Registry::new(Default::default());
    let info = NodeInfo { id: "kitchen".into(), name: "Kitchen".into(), role: "player".into(), ..NodeInfo::default() };
    let _ = reg.connect(info, now);
    let _ = reg.put_zone(Zone { name: "den".into(), source: Some("127.0.0.1:7400".into()), latency_ms: None });
    for r in requests.into_iter().take(256) {
        match r {
            Request::Patch(body) => {
                if let Ok(p) = serde_json::from_slice::<SettingsPatch>(&body) {
                    let _ = reg.patch("kitchen", p);
                }
            }
            Request::PutZone(name, body) => {
                #[derive(serde::Deserialize)]
                struct Body {
                    source: Option<String>,
                    latency_ms: Option<f64>,
                }
                if let Ok(b) = serde_json::from_slice::<Body>(&body) {
                    let _ = reg.put_zone(Zone { name, source: b.source, latency_ms: b.latency_ms });
                }
            }
            Request::ZoneCommand(name, body) => {
                if let Ok(c) = serde_json::from_slice::<Command>(&body) {
                    let _ = reg.zone_command(&name, &c, now);
                }
            }
            Request::DeleteZone(name) => {
                let _ = reg.delete_zone(&name);
            }
            Request::Report(body) => {
                if let Ok(s) = serde_json::from_slice::<NodeState>(&body) {
                    let _ = reg.report("kitchen", s, now);
                }
            }
        }
        let view = reg.node("kitchen", now).expect("the node stays");
        assert!((0.0..=100.0).contains(&view.settings.volume), "{:?}", view.settings);
        assert!((-1000.0..=1000.0).contains(&view.settings.delay_ms), "{:?}", view.settings);
        for z in reg.zones() {
            assert!(z.latency_ms.is_none_or(|l| (10.0..=5000.0).contains(&l)), "{z:?}");
        }
    }
});
