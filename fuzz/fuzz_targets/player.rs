//! Fuzzes a player with whole, authentic datagrams: the input is a script of actions (announces,
//! audio, FEC repairs, clock replies, byes and refusals from a few source runs, sealed with the
//! player's key so they pass authentication and reach the jitter buffer, FEC, clock and
//! playout; raw bytes; bit flips of the last datagram; time passing; device callbacks; delay,
//! latency and resync commands). The two halves are driven as a node drives them, apart: the
//! playout half hears the network half only when a device callback comes, and the network
//! half hears back only on its next call. Nothing may panic whatever the network sends.
#![no_main]
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tutti_proto::wire::{self, Announce, AudioFrame, ClockReply, Packet, Refuse, RefuseReason, Repair};
use tutti_proto::{
    Codec, LocalTime, MediaTime, Mode, Nanos, NetworkKey, PlayerConfig, PlayerSession, Security,
    SeqNo, StreamTime,
};

#[derive(Arbitrary, Debug)]
enum Action {
    Announce { run: u8, stream: u8, epoch: u8, cookie: u64, rate: u32, channels: u8, codec: u8, fpp: u16, live: bool, latency_ms: u16, fec: (u8, u8) },
    Audio { run: u8, stream: u8, seq: u16, media: u32, presentation_ms: i32, codec: u8, channels: u8, frames: u16, retransmit: bool, payload: Vec<u8> },
    Repair { run: u8, stream: u8, block: u16, data: u8, repair: u8, index: u8, shard: Vec<u8> },
    Reply { run: u8, id: u32, t1_back_ms: u16, t2_ms: i32, t3_ms: i32 },
    Bye { run: u8, stream: u8 },
    Refuse { run: u8, to_me: bool, reason: u8 },
    Raw(Vec<u8>),
    Flip { byte: u16, bit: u8 },
    Wait { ms: u16 },
    Render { frames: u16, ahead_ms: u8 },
    Delay { ms: i16 },
    Latency { ms: Option<u16> },
    Resync,
}

const CODECS: [Codec; 4] = [Codec::Pcm16, Codec::Pcm24, Codec::PcmF32, Codec::Opus];

fuzz_target!(|actions: Vec<Action>| {
    let source: SocketAddr = "127.0.0.1:5000".parse().expect("valid address");
    let security = Security::encrypted(NetworkKey::from_bytes([7; 32]));
    let mut now = LocalTime(1_000_000_000);
    let (mut player, mut playback) =
        PlayerSession::new(PlayerConfig::new(source), security.clone(), 1, now);
    let mut out = [0u8; 1500];
    let mut last = vec![0u8; 0];
    let mut pn = 0u64;
    let stream_ns = |ms: i32| StreamTime((1_000_000_000i64 + i64::from(ms) * 1_000_000).max(0) as u64);
    for action in actions.into_iter().take(4096) {
        let mut buf = [0u8; 1500];
        pn += 1;
        let sealed = |packet: Packet<'_>, run: u8, buf: &mut [u8]| {
            wire::encode(&packet, u128::from(run % 4) + 1, pn, &security, buf).ok()
        };
        let len = match action {
            Action::Announce { run, stream, epoch, cookie, rate, channels, codec, fpp, live, latency_ms, fec } => sealed(
                Packet::Announce(Announce {
                    stream_id: u32::from(stream % 3),
                    origin: 1,
                    epoch: u64::from(epoch),
                    cookie,
                    sample_rate: 8_000 + rate % 100_000,
                    channels: channels % 4 + 1,
                    codec: CODECS[usize::from(codec % 4)],
                    frames_per_packet: fpp % 1000 + 1,
                    mode: if live { Mode::Live } else { Mode::Sync },
                    group_latency: Nanos::from_millis(i64::from(latency_ms % 2000)),
                    fec_data: fec.0 % 12,
                    fec_repair: fec.1 % 4 + 1,
                    name: "fuzz",
                }),
                run,
                &mut buf,
            ),
            Action::Audio { run, stream, seq, media, presentation_ms, codec, channels, frames, retransmit, payload } => sealed(
                Packet::Audio(AudioFrame {
                    stream_id: u32::from(stream % 3),
                    seq: SeqNo(u64::from(seq)),
                    media: MediaTime(u64::from(media)),
                    presentation: stream_ns(presentation_ms),
                    sent: stream_ns(presentation_ms.saturating_sub(100)),
                    codec: CODECS[usize::from(codec % 4)],
                    channels: channels % 4 + 1,
                    frames: frames % 2000 + 1,
                    retransmit,
                    payload: &payload[..payload.len().min(wire::MAX_PAYLOAD)],
                }),
                run,
                &mut buf,
            ),
            Action::Repair { run, stream, block, data, repair, index, shard } => sealed(
                Packet::Repair(Repair {
                    stream_id: u32::from(stream % 3),
                    block: SeqNo(u64::from(block)),
                    data,
                    repair,
                    index,
                    shard: &shard[..shard.len().min(wire::MAX_PAYLOAD)],
                }),
                run,
                &mut buf,
            ),
            Action::Reply { run, id, t1_back_ms, t2_ms, t3_ms } => sealed(
                Packet::ClockReply(ClockReply {
                    id,
                    t1: now.0.saturating_sub(u64::from(t1_back_ms) * 1_000_000),
                    t2: stream_ns(t2_ms),
                    t3: stream_ns(t3_ms),
                }),
                run,
                &mut buf,
            ),
            Action::Bye { run, stream } => sealed(Packet::Bye(wire::Bye { stream_id: u32::from(stream % 3) }), run, &mut buf),
            Action::Refuse { run, to_me, reason } => sealed(
                Packet::Refuse(Refuse {
                    stream_id: 0,
                    reason: if reason % 2 == 0 { RefuseReason::ServerFull } else { RefuseReason::UnknownStream },
                    // The player's own sender id is not known here: `to_me` aims at a likely one.
                    to: if to_me { 1 } else { 2 },
                    message: "no",
                }),
                run,
                &mut buf,
            ),
            Action::Raw(bytes) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Some(n)
            }
            Action::Flip { byte, bit } => {
                if last.is_empty() {
                    None
                } else {
                    let n = last.len();
                    buf[..n].copy_from_slice(&last);
                    buf[usize::from(byte) % n] ^= 1 << (bit % 8);
                    Some(n)
                }
            }
            Action::Wait { ms } => {
                now += Nanos::from_millis(i64::from(ms % 5000));
                None
            }
            Action::Render { frames, ahead_ms } => {
                let frames = u32::from(frames % 4096) + 1;
                if let Some(r) = playback.render(now, now + Nanos::from_millis(i64::from(ahead_ms)), frames) {
                    while playback.next_frame(r.end(frames)).is_some() {}
                    playback.publish();
                }
                None
            }
            Action::Delay { ms } => {
                player.set_device_offset(Nanos::from_millis(i64::from(ms)));
                None
            }
            Action::Latency { ms } => {
                player.set_latency_override(ms.map(|ms| Nanos::from_millis(i64::from(ms))));
                None
            }
            Action::Resync => {
                player.resync();
                None
            }
        };
        if let Some(n) = len {
            last = buf[..n].to_vec();
            player.handle_datagram(now, source, &mut buf[..n]);
        }
        player.handle_timeout(now);
        while player.poll_transmit(now, &mut out).is_some() {}
        let _ = (player.stats(), player.latency(), player.position_at(now), player.frame_grid(now));
        let _ = (player.first_due(), playback.counts(), playback.info(), playback.extra_latency());
    }
});
