//! The named scenarios of the benchmark (`cargo run --release -p tutti-sim`).

use std::net::SocketAddr;

use tutti_proto::player::PlayerConfig;
use tutti_proto::{Mode, Nanos};

use crate::link::{Jitter, LinkModel, Loss};
use crate::world::Scenario;

/// A wired LAN path: 0.2 ± 0.1 ms.
pub fn lan_link() -> LinkModel {
    LinkModel { jitter: Jitter::Uniform(0.0001), ..LinkModel::fixed(0.0002) }
}

/// The baseline: 8 players on a LAN, offsets ±10 s, skews ±200 ppm, DACs ±100 ppm.
pub fn lan() -> Scenario {
    Scenario {
        name: "lan",
        description: "8 players, wired LAN 0.2±0.1 ms, clocks ±10 s / ±200 ppm, DACs ±100 ppm",
        players: 8,
        seconds: 600.0,
        seed: 1,
        mode: Mode::Sync,
        frames_per_packet: 240,
        sample_rate: 48_000,
        group_latency: Nanos::from_millis(100),
        fec: Some((8, 2)),
        down: lan_link(),
        up: lan_link(),
        clock_offset_s: 10.0,
        clock_skew_ppm: 200.0,
        dac_ppm: 100.0,
        dac_period: 256,
        dac_noise: 2e-6,
        joins: Vec::new(),
        encrypted: true,
        probe_interval: PlayerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))).probe_interval,
        multicast: false,
    }
}

/// Every scenario of the benchmark, in order.
pub fn all() -> Vec<Scenario> {
    let wifi_link = LinkModel {
        base: 0.002,
        jitter: Jitter::Exponential(0.010),
        loss: Loss::GilbertElliott {
            p_good_bad: 0.0095,
            p_bad_good: 0.28,
            loss_good: 0.0,
            loss_bad: 0.9,
        },
        duplicate: 0.001,
        reorder: 0.0,
        reorder_delay: 0.0,
    };
    let lossy = |p: f64| LinkModel { loss: Loss::Bernoulli(p), ..lan_link() };
    vec![
        lan(),
        Scenario {
            name: "wifi",
            description: "Wi-Fi: 2 ms + exponential jitter (mean 10 ms), 3% bursty loss, 0.1% duplicates, 200 ms latency",
            group_latency: Nanos::from_millis(200),
            down: wifi_link,
            up: wifi_link,
            seed: 2,
            ..lan()
        },
        Scenario {
            name: "drift",
            description: "clocks and DACs at up to ±500 ppm",
            clock_skew_ppm: 500.0,
            dac_ppm: 500.0,
            seed: 3,
            ..lan()
        },
        Scenario {
            name: "loss5",
            description: "5% random loss both ways",
            down: lossy(0.05),
            up: lossy(0.05),
            seed: 4,
            ..lan()
        },
        Scenario {
            name: "loss15",
            description: "15% random loss both ways",
            down: lossy(0.15),
            up: lossy(0.15),
            seed: 5,
            ..lan()
        },
        Scenario {
            name: "late-join",
            description: "4 players at start, then one more every minute",
            joins: vec![0.0, 0.0, 0.0, 0.0, 60.0, 120.0, 180.0, 240.0],
            seed: 6,
            ..lan()
        },
        Scenario {
            name: "asymmetric",
            description: "source→player path 5 ms longer than the way back",
            down: LinkModel { base: 0.0052, ..lan_link() },
            seed: 7,
            ..lan()
        },
        Scenario {
            name: "multicast",
            description: "lan, but one multicast stream that players listen to without joining",
            multicast: true,
            down: lossy(0.01),
            seed: 9,
            ..lan()
        },
        Scenario {
            name: "live-lan",
            description: "live mode, 2.5 ms packets, 32-frame device periods, LAN 0.2±0.1 ms",
            players: 4,
            mode: Mode::Live,
            frames_per_packet: 120,
            fec: None,
            dac_period: 32,
            seed: 8,
            ..lan()
        },
    ]
}
