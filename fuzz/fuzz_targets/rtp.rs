//! Fuzzes the RTP (L16) receiver `tutti stream --rtp-in` reads a network's datagrams with:
//! raw bytes, and packets built from fields (any version, flags, CSRC count, extension and
//! padding lengths, payload type, sequence, timestamp and source) so the reordering, loss,
//! late and source-change paths are reached. Nothing may panic, every datagram is either
//! played or counted, and a gap is never more than a second of frames.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tutti_proto::rtp::L16Receiver;

#[derive(Arbitrary, Debug)]
enum Datagram {
    Raw(Vec<u8>),
    Built { first: u8, payload_type: u8, seq: u16, timestamp: u32, ssrc: u8, tail: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Script {
    rate_44k: bool,
    stereo: bool,
    steps: Vec<(u16, Datagram)>,
}

fuzz_target!(|script: Script| {
    let rate = if script.rate_44k { 44_100 } else { 48_000 };
    let channels = if script.stereo { 2 } else { 1 };
    let mut r = L16Receiver::new(rate, channels);
    let mut now = 0u64;
    let mut seen = 0u64;
    for (wait_ms, d) in script.steps {
        now += u64::from(wait_ms) * 1_000_000;
        let bytes = match d {
            Datagram::Raw(b) => b,
            Datagram::Built { first, payload_type, seq, timestamp, ssrc, tail } => {
                let mut b = vec![first, payload_type];
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&timestamp.to_be_bytes());
                b.extend_from_slice(&u32::from(ssrc % 3).to_be_bytes());
                b.extend_from_slice(&tail);
                b
            }
        };
        if let Ok(a) = r.receive(now, &bytes) {
            assert!(a.gap < rate);
            assert_eq!(a.samples.len(), a.frames as usize * 2 * channels);
        }
        seen += 1;
        let s = r.stats();
        assert_eq!(s.packets + s.malformed + s.payload_type + s.foreign + s.late, seen);
    }
});
