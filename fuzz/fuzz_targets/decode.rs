//! Fuzzes the datagram decoder, in plaintext and sealed modes: it must never panic.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tutti_proto::crypto::{NetworkKey, ReplayGuard, Security};
use tutti_proto::wire;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let _ = wire::decode(&mut buf, &Security::Plaintext, &mut ReplayGuard::default());
    let mut buf = data.to_vec();
    let sealed = Security::encrypted(NetworkKey::from_bytes([7; 32]));
    let _ = wire::decode(&mut buf, &sealed, &mut ReplayGuard::default());
});
