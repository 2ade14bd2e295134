//! Fuzzes the node link's secure channel and messages: a hub reading an arbitrary opening, a
//! node reading an arbitrary answer, both ends opening arbitrary frames after a real
//! handshake, and arbitrary bytes as link messages. Nothing may panic; nothing unauthentic
//! may open.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tutti_proto::control::LinkMessage;
use tutti_proto::link::{Opening, accept, frame_len};

#[derive(Arbitrary, Debug)]
struct Input {
    opening: Vec<u8>,
    answer: Vec<u8>,
    frames: Vec<Vec<u8>>,
    stream: Vec<u8>,
    json: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let psk = [7u8; 32];
    // The hub reading a stranger's opening: refused, never accepted.
    assert!(accept(&psk, b"challenge", None, &input.opening).is_err(), "a forged opening");
    // A node reading an impostor's answer.
    if let Ok((opening, _)) = Opening::start(&psk, b"challenge", Some("kitchen")) {
        assert!(opening.finish(&input.answer).is_err(), "a forged answer opened");
    }
    // After a real handshake, arbitrary frames: none opens (they are not sealed by the peer).
    let (node, first) = Opening::start(&psk, b"c", None).expect("handshake");
    let (hub, answer) = accept(&psk, b"c", None, &first).expect("accept");
    let _node = node.finish(&answer).expect("finish");
    let (_, mut opener) = hub.split(1 << 20);
    for f in &input.frames {
        assert!(opener.open(f).is_err(), "an arbitrary frame opened");
    }
    // A byte stream cut into frames as a reader would.
    let mut rest = input.stream.as_slice();
    while rest.len() >= 2 {
        let n = frame_len([rest[0], rest[1]]);
        let Some(frame) = rest.get(2..2 + n) else { break };
        let _ = opener.open(frame);
        rest = &rest[2 + n..];
    }
    let _ = serde_json::from_slice::<LinkMessage>(&input.json);
});
