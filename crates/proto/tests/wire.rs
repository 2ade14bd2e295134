//! Wire format: every packet kind round-trips, and every kind of garbage is a counted error.

use proptest::prelude::*;
use tutti_proto::crypto::{NetworkKey, ReplayGuard, Security};
use tutti_proto::wire::{
    self, Announce, AudioFrame, ClockProbe, ClockReply, Codec, Hello, MAX_DATAGRAM, Mode, Nack,
    PREAMBLE_LEN, Packet, Refuse, RefuseReason, Repair, Report, RxError,
};
use tutti_proto::{MediaTime, Nanos, SeqNo, StreamTime};

fn samples() -> Vec<Packet<'static>> {
    static PCM: [u8; 960] = [7; 960];
    static SHARD: [u8; 500] = [3; 500];
    vec![
        Packet::Hello(Hello { stream_id: 3, name: "kitchen", listen_only: true, cookie: 0xC00C1E }),
        Packet::Announce(Announce {
            stream_id: 3,
            origin: 99,
            epoch: 1_765_000_000_000_000_000,
            cookie: 7,
            sample_rate: 48_000,
            channels: 2,
            codec: Codec::Pcm16,
            frames_per_packet: 240,
            mode: Mode::Sync,
            group_latency: Nanos::from_millis(100),
            fec_data: 8,
            fec_repair: 2,
            name: "Bass stem",
        }),
        Packet::Refuse(Refuse {
            stream_id: 3,
            reason: RefuseReason::ServerFull,
            to: u128::MAX - 5,
            message: "server full",
        }),
        Packet::Bye(wire::Bye { stream_id: 3 }),
        Packet::ClockProbe(ClockProbe { id: 5, t1: 123_456_789 }),
        Packet::ClockReply(ClockReply {
            id: 5,
            t1: 123_456_789,
            t2: StreamTime(42),
            t3: StreamTime(43),
        }),
        Packet::Audio(AudioFrame {
            stream_id: 3,
            seq: SeqNo(1 << 40),
            media: MediaTime(240 << 40),
            presentation: StreamTime(9_000_000_000),
            sent: StreamTime(0),
            codec: Codec::Pcm16,
            channels: 2,
            frames: 240,
            retransmit: true,
            payload: &PCM,
        }),
        Packet::Repair(Repair {
            stream_id: 3,
            block: SeqNo(80),
            data: 8,
            repair: 2,
            index: 1,
            shard: &SHARD,
        }),
        Packet::Nack(Nack { stream_id: 3, base: SeqNo(77), mask: 0b1011 }),
        Packet::Report(Report {
            stream_id: 3,
            received: 10,
            lost: 2,
            offset_ns: -5,
            skew_ppb: 1200,
            ..Report::default()
        }),
    ]
}

fn key() -> Security {
    Security::encrypted(NetworkKey::from_bytes([1; 32]))
}

#[test]
fn every_kind_round_trips_plain_and_sealed() {
    for security in [Security::Plaintext, key()] {
        let mut replay = ReplayGuard::default();
        for (i, p) in samples().into_iter().enumerate() {
            let mut buf = [0u8; MAX_DATAGRAM];
            let len = wire::encode(&p, 77, i as u64, &security, &mut buf).unwrap();
            assert!(len <= MAX_DATAGRAM);
            let (pre, got) = wire::decode(&mut buf[..len], &security, &mut replay).unwrap();
            assert_eq!(pre.sender, 77);
            assert_eq!(pre.packet_number, i as u64);
            assert_eq!(got, p);
        }
    }
}

#[test]
fn garbage_is_named_and_counted() {
    let sec = key();
    let p = &samples()[6];
    let mut buf = [0u8; MAX_DATAGRAM];
    let len = wire::encode(p, 1, 1, &sec, &mut buf).unwrap();
    let decode = |bytes: &[u8], sec: &Security| {
        let mut copy = bytes.to_vec();
        wire::decode(&mut copy, sec, &mut ReplayGuard::default()).map(|_| ()).unwrap_err()
    };
    assert_eq!(decode(&buf[..10], &sec), RxError::Truncated);
    let mut b = buf;
    b[0] = b'X';
    assert_eq!(decode(&b[..len], &sec), RxError::BadMagic);
    let mut b = buf;
    b[2] = 9;
    assert_eq!(decode(&b[..len], &sec), RxError::UnsupportedVersion(9));
    let mut b = buf;
    b[3] = 200;
    assert_eq!(decode(&b[..len], &sec), RxError::UnknownKind(200));
    // Any flipped bit after the preamble's kind byte fails authentication (or names the key).
    for i in [4usize, 9, 13, 25, len / 2, len - 1] {
        let mut b = buf;
        b[i] ^= 0x40;
        let e = decode(&b[..len], &sec);
        assert!(matches!(e, RxError::Unauthenticated | RxError::UnknownKey(_)), "byte {i}: {e:?}");
    }
    assert_eq!(decode(&buf[..len - 1], &sec), RxError::Unauthenticated);
    let other = Security::encrypted(NetworkKey::from_bytes([2; 32]));
    assert!(matches!(decode(&buf[..len], &other), RxError::UnknownKey(_)));
    assert_eq!(decode(&buf[..len], &Security::Plaintext), RxError::NoKey);
    let mut plain = [0u8; MAX_DATAGRAM];
    let plen = wire::encode(p, 1, 1, &Security::Plaintext, &mut plain).unwrap();
    assert_eq!(decode(&plain[..plen], &sec), RxError::Plaintext);
    // The kind is authenticated: relabelling a sealed packet fails.
    let mut b = buf;
    b[3] = wire::Kind::Nack as u8;
    assert_eq!(decode(&b[..len], &sec), RxError::Unauthenticated);
    // A body too short for its kind's archive.
    assert_eq!(decode(&plain[..PREAMBLE_LEN + 3], &Security::Plaintext), RxError::Malformed);
}

#[test]
fn replays_are_dropped_but_reordering_is_not() {
    let sec = key();
    let mut replay = ReplayGuard::default();
    let p = samples()[4];
    let mut packets = Vec::new();
    for pn in [1u64, 3, 2] {
        let mut buf = [0u8; 128];
        let len = wire::encode(&p, 5, pn, &sec, &mut buf).unwrap();
        packets.push(buf[..len].to_vec());
    }
    for pkt in &packets {
        assert!(wire::decode(&mut pkt.clone(), &sec, &mut replay).is_ok());
    }
    for pkt in &packets {
        assert_eq!(
            wire::decode(&mut pkt.clone(), &sec, &mut replay).unwrap_err(),
            RxError::Replayed
        );
    }
    // A forgery with a fresh packet number neither decodes nor blocks the real packet later.
    let mut forged = packets[0].clone();
    forged[12] = 9;
    assert_eq!(wire::decode(&mut forged, &sec, &mut replay).unwrap_err(), RxError::Unauthenticated);
    let mut buf = [0u8; 128];
    let len = wire::encode(&p, 5, 9, &sec, &mut buf).unwrap();
    assert!(wire::decode(&mut buf[..len], &sec, &mut replay).is_ok());
}

#[test]
fn invalid_fields_are_refused() {
    let pcm = [0u8; 100];
    let bad = Packet::Audio(AudioFrame {
        stream_id: 1,
        seq: SeqNo(1),
        media: MediaTime(0),
        presentation: StreamTime(0),
        sent: StreamTime(0),
        codec: Codec::Pcm16,
        channels: 2,
        frames: 240,
        retransmit: false,
        payload: &pcm,
    });
    let mut buf = [0u8; MAX_DATAGRAM];
    let len = wire::encode(&bad, 1, 1, &Security::Plaintext, &mut buf).unwrap();
    let e = wire::decode(&mut buf[..len], &Security::Plaintext, &mut ReplayGuard::default())
        .unwrap_err();
    assert_eq!(e, RxError::InvalidField("payload"));
    let too_big = [0u8; 1500];
    let huge = Packet::Audio(AudioFrame {
        codec: Codec::Opus,
        payload: &too_big,
        ..match bad {
            Packet::Audio(a) => a,
            _ => unreachable!(),
        }
    });
    assert!(wire::encode(&huge, 1, 1, &Security::Plaintext, &mut buf).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let mut b = bytes.clone();
        let _ = wire::decode(&mut b, &Security::Plaintext, &mut ReplayGuard::default());
        let mut b = bytes;
        let _ = wire::decode(&mut b, &key(), &mut ReplayGuard::default());
    }

    #[test]
    fn mutated_packets_never_panic(which in 0usize..10, at in any::<prop::sample::Index>(), bits in 1u8..=255, cut in any::<prop::sample::Index>()) {
        let p = samples()[which];
        let mut buf = [0u8; MAX_DATAGRAM];
        let len = wire::encode(&p, 1, 1, &Security::Plaintext, &mut buf).unwrap();
        buf[at.index(len)] ^= bits;
        let end = PREAMBLE_LEN.min(len) + cut.index(len - PREAMBLE_LEN.min(len) + 1);
        let _ = wire::decode(&mut buf[..end.max(1)], &Security::Plaintext, &mut ReplayGuard::default());
    }
}
