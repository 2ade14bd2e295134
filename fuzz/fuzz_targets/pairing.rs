//! Fuzzes pairing: links and tokens as typed or scanned (any text), and the hub answering an
//! arbitrary first handshake message for a real token. Nothing may panic; no forged message
//! pairs.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tutti_proto::pairing::{PairLink, Token, respond};

#[derive(Arbitrary, Debug)]
struct Input {
    link: String,
    token: String,
    first: String,
    first_bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let _ = PairLink::parse(&input.link);
    let _ = Token::parse(&input.token);
    let token = Token::from_random([3; 20]);
    assert!(respond(&token, &input.first).is_err(), "a forged pairing request");
    let hex: String = input.first_bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(respond(&token, &hex).is_err(), "a forged pairing request");
});
