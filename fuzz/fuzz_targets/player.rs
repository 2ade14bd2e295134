//! Fuzzes a plaintext player session with arbitrary datagrams from its source's address,
//! then renders: nothing may panic whatever the network sends.
#![no_main]
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tutti_proto::{LocalTime, Nanos, PlayerConfig, PlayerSession, Security};

fuzz_target!(|data: &[u8]| {
    let source: SocketAddr = "127.0.0.1:5000".parse().expect("valid address");
    let mut player = PlayerSession::new(PlayerConfig::new(source), Security::Plaintext, 1, LocalTime(1_000_000_000));
    let mut now = LocalTime(1_000_000_000);
    let mut out = [0u8; 1500];
    for chunk in data.split(|b| *b == 0xFF) {
        now += Nanos::from_millis(1);
        let mut buf = chunk.to_vec();
        player.handle_datagram(now, source, &mut buf);
        player.handle_timeout(now);
        while player.poll_transmit(now, &mut out).is_some() {}
        if let Some(r) = player.render(now, now + Nanos::from_millis(5), 256) {
            while player.next_frame(r.end(256)).is_some() {}
        }
    }
});
