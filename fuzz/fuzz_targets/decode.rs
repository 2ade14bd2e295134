//! Fuzzes the datagram decoder: raw datagrams in plaintext and sealed modes, and archive
//! bodies behind a valid preamble of every kind (so the fuzzer explores the rkyv validation
//! and field checks, not just the magic). Nothing may panic.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tutti_proto::crypto::{NetworkKey, ReplayGuard, Security};
use tutti_proto::wire::{self, MAGIC, PREAMBLE_LEN, VERSION};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let _ = wire::decode(&mut buf, &Security::Plaintext, &mut ReplayGuard::default());
    let mut buf = data.to_vec();
    let sealed = Security::encrypted(NetworkKey::from_bytes([7; 32]));
    let _ = wire::decode(&mut buf, &sealed, &mut ReplayGuard::default());
    if let Some((&kind, body)) = data.split_first() {
        let mut pkt = vec![0u8; PREAMBLE_LEN];
        pkt[..2].copy_from_slice(&MAGIC);
        pkt[2] = VERSION;
        pkt[3] = kind % 12;
        pkt[8] = 1;
        pkt.extend_from_slice(body);
        let _ = wire::decode(&mut pkt, &Security::Plaintext, &mut ReplayGuard::default());
    }
});
