//! The wire format: a fixed 32-byte preamble, then an rkyv-archived body read in place with
//! validation, sealed by the [crypto](crate::crypto) envelope when the network has a key.
//!
//! ```text
//!  0      2   3    4        8                   24                32
//!  +------+---+----+--------+-------------------+-----------------+---------------------+-----+
//!  | "Tu" |ver|kind| key id | sender (128 bits) | packet number   | body (rkyv archive) | tag |
//!  +------+---+----+--------+-------------------+-----------------+---------------------+-----+
//!   all little-endian; key id 0 = plaintext (no tag); the preamble is the AEAD's associated data
//! ```
//!
//! Bodies are archived with rkyv's unaligned little-endian format, so they can be validated
//! and read straight out of any receive buffer. Decoding never panics: every malformed input
//! is an [`RxError`] that the caller counts in [`RxErrorCounts`] and drops.

use rkyv::api::low::{LowSerializer, access, to_bytes_in_with_alloc};
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::with::InlineAsBox;
use rkyv::{Archive, Serialize};

use crate::crypto::{KeyId, ReplayGuard, Security, TAG_LEN};
use crate::time::{MediaTime, Nanos, SeqNo, StreamTime};

/// The magic bytes every Tutti datagram starts with.
pub const MAGIC: [u8; 2] = *b"Tu";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Length of the fixed preamble.
pub const PREAMBLE_LEN: usize = 32;
/// The largest datagram Tutti sends (keeps clear of fragmentation on any LAN).
pub const MAX_DATAGRAM: usize = 1200;
/// The largest audio or shard payload that fits in one datagram with its headers.
pub const MAX_PAYLOAD: usize = 1100;
/// Longest node or stream name carried on the wire, in bytes.
pub const MAX_NAME: usize = 64;
/// The most channels a stream may carry.
pub const MAX_CHANNELS: u8 = 16;
/// The most frames one audio packet may carry (120 ms at 48 kHz, Opus's largest frame).
pub const MAX_FRAMES_PER_PACKET: u16 = 5760;

/// Packet kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// A player asks to join a stream.
    Hello = 1,
    /// A source describes its stream (answer to `Hello`, and periodically).
    Announce = 2,
    /// A source refuses a player (server full, unknown stream, ...).
    Refuse = 3,
    /// Either side leaves.
    Bye = 4,
    /// Clock probe (player → source).
    ClockProbe = 5,
    /// Clock reply (source → player).
    ClockReply = 6,
    /// Audio frame.
    Audio = 7,
    /// Forward-error-correction repair shard.
    Repair = 8,
    /// Negative acknowledgement: frames a player is missing.
    Nack = 9,
    /// Receiver report: a player's statistics, also its keep-alive.
    Report = 10,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Announce,
            3 => Kind::Refuse,
            4 => Kind::Bye,
            5 => Kind::ClockProbe,
            6 => Kind::ClockReply,
            7 => Kind::Audio,
            8 => Kind::Repair,
            9 => Kind::Nack,
            10 => Kind::Report,
            _ => return None,
        })
    }
}

/// Audio encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// Signed 16-bit little-endian PCM, interleaved.
    Pcm16 = 1,
    /// Signed 24-bit little-endian PCM (3 bytes per sample), interleaved.
    Pcm24 = 2,
    /// 32-bit float little-endian PCM, interleaved.
    PcmF32 = 3,
    /// Opus packets.
    Opus = 4,
}

impl Announce<'_> {
    /// The stream's format as announced.
    pub fn format(&self) -> crate::StreamFormat {
        crate::StreamFormat {
            sample_rate: self.sample_rate,
            channels: self.channels,
            codec: self.codec,
            frames_per_packet: self.frames_per_packet,
        }
    }
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        Some(match v {
            1 => Codec::Pcm16,
            2 => Codec::Pcm24,
            3 => Codec::PcmF32,
            4 => Codec::Opus,
            _ => return None,
        })
    }
    /// Bytes per sample for PCM codecs; `None` for compressed ones.
    pub fn pcm_bytes(self) -> Option<usize> {
        match self {
            Codec::Pcm16 => Some(2),
            Codec::Pcm24 => Some(3),
            Codec::PcmF32 => Some(4),
            Codec::Opus => None,
        }
    }
}

/// Playout mode of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Multi-room: fixed group latency, every player plays each sample at the same instant.
    Sync = 1,
    /// Karaoke: minimal adaptive latency per player.
    Live = 2,
}

impl Mode {
    fn from_u8(v: u8) -> Option<Mode> {
        match v {
            1 => Some(Mode::Sync),
            2 => Some(Mode::Live),
            _ => None,
        }
    }
}

/// Why a source refused a player.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The source already serves its maximum number of receivers.
    ServerFull = 1,
    /// The source has no stream with the requested id.
    UnknownStream = 2,
    /// Something else; see the message.
    Other = 255,
}

impl RefuseReason {
    fn from_u8(v: u8) -> RefuseReason {
        match v {
            1 => RefuseReason::ServerFull,
            2 => RefuseReason::UnknownStream,
            _ => RefuseReason::Other,
        }
    }
}

/// The decoded preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Packet kind.
    pub kind: Kind,
    /// Key id (`None` for plaintext).
    pub key: Option<KeyId>,
    /// Sender id: 128 random bits per sender run, part of the nonce.
    pub sender: u128,
    /// The sender's packet number: never repeats for one sender id.
    pub packet_number: u64,
}

/// A player asks to join `stream_id` (0: the source's first stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Requested stream.
    pub stream_id: u32,
    /// The player's human name.
    pub name: &'a str,
    /// A multicast listener asking only for the stream description (not to be added to the
    /// unicast fan-out).
    pub listen_only: bool,
    /// The return-routability cookie from the source's last [`Announce`] to this player (0:
    /// none yet). A source serves a player only once it echoes a cookie, which proves the
    /// player receives at the address it sends from.
    pub cookie: u64,
}

/// A stream's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce<'a> {
    /// Stream id within the source.
    pub stream_id: u32,
    /// Identity of the stream across restarts of its source (the same for every run).
    pub origin: u64,
    /// When this run of the stream began (nanoseconds of the source's wall clock): a later
    /// run of the same origin has a larger epoch, so a replayed older run can be told apart.
    pub epoch: u64,
    /// Return-routability cookie (0 in periodic announces). In the answer to a `Hello`: the
    /// cookie it carried if that proved the player's address (it is served), else a fresh one
    /// to echo in its next `Hello`.
    pub cookie: u64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u8,
    /// Codec of the audio frames.
    pub codec: Codec,
    /// Frames per audio packet.
    pub frames_per_packet: u16,
    /// Playout mode.
    pub mode: Mode,
    /// Group latency (sync mode): presentation time minus capture time.
    pub group_latency: Nanos,
    /// FEC data shards per block (0: no FEC).
    pub fec_data: u8,
    /// FEC repair shards per block.
    pub fec_repair: u8,
    /// Stream's human name (track title, stem name...).
    pub name: &'a str,
}

/// A refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refuse<'a> {
    /// The stream asked for.
    pub stream_id: u32,
    /// Why.
    pub reason: RefuseReason,
    /// The sender id of the `Hello` refused: a player takes a refusal meant for itself only
    /// (a replayed one from an earlier run is ignored).
    pub to: u128,
    /// Human-readable detail.
    pub message: &'a str,
}

/// Leaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bye {
    /// The stream being left (or ended).
    pub stream_id: u32,
}

/// A clock probe: `t1` is the player's local send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockProbe {
    /// Probe id, echoed in the reply.
    pub id: u32,
    /// Player's local time at send (nanoseconds).
    pub t1: u64,
}

/// A clock reply: `t2` and `t3` are the source's receive and transmit times (stream clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockReply {
    /// Probe id echoed.
    pub id: u32,
    /// Echo of the probe's `t1` (player local clock).
    pub t1: u64,
    /// Source's stream time when the probe arrived.
    pub t2: StreamTime,
    /// Source's stream time when the reply left.
    pub t3: StreamTime,
}

/// One audio frame (a packet of `frames` frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFrame<'a> {
    /// Stream id.
    pub stream_id: u32,
    /// Sequence number (one per audio packet).
    pub seq: SeqNo,
    /// Media time of the packet's first frame.
    pub media: MediaTime,
    /// When the first frame must be heard, on the stream clock.
    pub presentation: StreamTime,
    /// When this packet left the source (stream clock): a one-way clock observation for free.
    pub sent: StreamTime,
    /// Encoding of `payload`.
    pub codec: Codec,
    /// Channel count.
    pub channels: u8,
    /// Frames in this packet.
    pub frames: u16,
    /// This is a retransmission answering a NACK.
    pub retransmit: bool,
    /// Encoded audio.
    pub payload: &'a [u8],
}

/// One FEC repair shard of the block of `data` audio packets starting at `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repair<'a> {
    /// Stream id.
    pub stream_id: u32,
    /// Sequence number of the block's first audio packet.
    pub block: SeqNo,
    /// Audio packets in the block.
    pub data: u8,
    /// Repair shards in the block.
    pub repair: u8,
    /// This shard's index among the repair shards.
    pub index: u8,
    /// The shard.
    pub shard: &'a [u8],
}

/// Audio packets a player is missing: bit `i` of `mask` set means `base + i` is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack {
    /// Stream id.
    pub stream_id: u32,
    /// First sequence number covered.
    pub base: SeqNo,
    /// Bitmap of missing packets.
    pub mask: u64,
}

/// A player's statistics (also its keep-alive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Stream id.
    pub stream_id: u32,
    /// Audio packets received (first copies).
    pub received: u64,
    /// Audio packets found missing on arrival of later ones.
    pub lost: u64,
    /// Packets rebuilt from FEC.
    pub recovered_fec: u64,
    /// Packets recovered by retransmission.
    pub recovered_retx: u64,
    /// Packets concealed at playout.
    pub concealed: u64,
    /// Clock offset estimate (stream − local), nanoseconds.
    pub offset_ns: i64,
    /// Clock skew estimate, parts per billion.
    pub skew_ppb: i64,
    /// Clock uncertainty bound, nanoseconds.
    pub uncertainty_ns: u64,
    /// Playout latency (presentation − arrival margin), nanoseconds.
    pub buffer_ns: u64,
}

/// A decoded packet, borrowing its variable-length parts from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet<'a> {
    /// See [`Hello`].
    Hello(Hello<'a>),
    /// See [`Announce`].
    Announce(Announce<'a>),
    /// See [`Refuse`].
    Refuse(Refuse<'a>),
    /// See [`Bye`].
    Bye(Bye),
    /// See [`ClockProbe`].
    ClockProbe(ClockProbe),
    /// See [`ClockReply`].
    ClockReply(ClockReply),
    /// See [`AudioFrame`].
    Audio(AudioFrame<'a>),
    /// See [`Repair`].
    Repair(Repair<'a>),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Report`].
    Report(Report),
}

impl Packet<'_> {
    /// The packet's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Packet::Hello(_) => Kind::Hello,
            Packet::Announce(_) => Kind::Announce,
            Packet::Refuse(_) => Kind::Refuse,
            Packet::Bye(_) => Kind::Bye,
            Packet::ClockProbe(_) => Kind::ClockProbe,
            Packet::ClockReply(_) => Kind::ClockReply,
            Packet::Audio(_) => Kind::Audio,
            Packet::Repair(_) => Kind::Repair,
            Packet::Nack(_) => Kind::Nack,
            Packet::Report(_) => Kind::Report,
        }
    }
}

/// Why a received datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RxError {
    /// Shorter than the preamble (or than its tag).
    #[error("datagram truncated")]
    Truncated,
    /// Does not start with Tutti's magic.
    #[error("not a Tutti datagram")]
    BadMagic,
    /// A protocol version this node does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A packet kind this node does not know.
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    /// Sealed with a key this node does not have.
    #[error("unknown key id {0:#x}")]
    UnknownKey(u32),
    /// Plaintext on a network that requires encryption.
    #[error("plaintext packet on an encrypted network")]
    Plaintext,
    /// Encrypted packet but this node runs in plaintext mode.
    #[error("encrypted packet but no key configured")]
    NoKey,
    /// The authentication tag did not verify (forged, modified, or wrong key).
    #[error("authentication failed")]
    Unauthenticated,
    /// A packet number already seen (or too old) from this sender.
    #[error("replayed or duplicate packet")]
    Replayed,
    /// The body is not a valid archive of the kind's type.
    #[error("malformed body")]
    Malformed,
    /// A field is out of range.
    #[error("invalid field `{0}`")]
    InvalidField(&'static str),
}

impl RxError {
    /// Every variant, in counter order.
    pub const ALL: [RxError; 11] = [
        RxError::Truncated,
        RxError::BadMagic,
        RxError::UnsupportedVersion(0),
        RxError::UnknownKind(0),
        RxError::UnknownKey(0),
        RxError::Plaintext,
        RxError::NoKey,
        RxError::Unauthenticated,
        RxError::Replayed,
        RxError::Malformed,
        RxError::InvalidField(""),
    ];

    fn index(self) -> usize {
        match self {
            RxError::Truncated => 0,
            RxError::BadMagic => 1,
            RxError::UnsupportedVersion(_) => 2,
            RxError::UnknownKind(_) => 3,
            RxError::UnknownKey(_) => 4,
            RxError::Plaintext => 5,
            RxError::NoKey => 6,
            RxError::Unauthenticated => 7,
            RxError::Replayed => 8,
            RxError::Malformed => 9,
            RxError::InvalidField(_) => 10,
        }
    }

    /// A short stable name for counters and logs.
    pub fn name(self) -> &'static str {
        [
            "truncated",
            "bad_magic",
            "unsupported_version",
            "unknown_kind",
            "unknown_key",
            "plaintext",
            "no_key",
            "unauthenticated",
            "replayed",
            "malformed",
            "invalid_field",
        ][self.index()]
    }
}

/// Counters of dropped datagrams, one per [`RxError`] variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxErrorCounts([u64; 11]);

impl RxErrorCounts {
    /// Counts one error.
    pub fn count(&mut self, e: RxError) {
        self.0[e.index()] += 1;
    }
    /// How many of this kind of error (the variant's payload is ignored).
    pub fn get(&self, e: RxError) -> u64 {
        self.0[e.index()]
    }
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Non-zero counters by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RxError::ALL.iter().map(|e| (e.name(), self.get(*e))).filter(|(_, n)| *n > 0)
    }
}

/// Why a packet could not be encoded (a caller bug: buffer too small or payload too large).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the packet.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A payload or name is larger than the wire allows.
    #[error("field `{0}` too large for one datagram")]
    TooLarge(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Bodies as archived on the wire. Private: the public API is the plain structs above.

#[derive(Archive, Serialize)]
struct HelloBody<'a> {
    stream_id: u32,
    flags: u8,
    cookie: u64,
    #[rkyv(with = InlineAsBox)]
    name: &'a str,
}

#[derive(Archive, Serialize)]
struct AnnounceBody<'a> {
    stream_id: u32,
    origin: u64,
    epoch: u64,
    cookie: u64,
    sample_rate: u32,
    channels: u8,
    codec: u8,
    frames_per_packet: u16,
    mode: u8,
    group_latency_ns: u64,
    fec_data: u8,
    fec_repair: u8,
    #[rkyv(with = InlineAsBox)]
    name: &'a str,
}

#[derive(Archive, Serialize)]
struct RefuseBody<'a> {
    stream_id: u32,
    reason: u8,
    to: u128,
    #[rkyv(with = InlineAsBox)]
    message: &'a str,
}

#[derive(Archive, Serialize)]
struct ByeBody {
    stream_id: u32,
}

#[derive(Archive, Serialize)]
struct ProbeBody {
    id: u32,
    t1: u64,
}

#[derive(Archive, Serialize)]
struct ReplyBody {
    id: u32,
    t1: u64,
    t2: u64,
    t3: u64,
}

#[derive(Archive, Serialize)]
struct AudioBody<'a> {
    stream_id: u32,
    seq: u64,
    media: u64,
    presentation_ns: u64,
    sent_ns: u64,
    codec: u8,
    channels: u8,
    frames: u16,
    flags: u8,
    #[rkyv(with = InlineAsBox)]
    payload: &'a [u8],
}

#[derive(Archive, Serialize)]
struct RepairBody<'a> {
    stream_id: u32,
    block: u64,
    data: u8,
    repair: u8,
    index: u8,
    #[rkyv(with = InlineAsBox)]
    shard: &'a [u8],
}

#[derive(Archive, Serialize)]
struct NackBody {
    stream_id: u32,
    base: u64,
    mask: u64,
}

#[derive(Archive, Serialize)]
struct ReportBody {
    stream_id: u32,
    received: u64,
    lost: u64,
    recovered_fec: u64,
    recovered_retx: u64,
    concealed: u64,
    offset_ns: i64,
    skew_ppb: i64,
    uncertainty_ns: u64,
    buffer_ns: u64,
}

const FLAG_RETRANSMIT: u8 = 1;

/// Encodes `packet` into `buf`, sealing it when `security` has a key. Returns the length.
pub fn encode(
    packet: &Packet<'_>,
    sender: u128,
    packet_number: u64,
    security: &Security,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let key = security.sending_key();
    let tag_len = if key.is_some() { TAG_LEN } else { 0 };
    if buf.len() < PREAMBLE_LEN + tag_len {
        return Err(EncodeError::BufferTooSmall);
    }
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = VERSION;
    buf[3] = packet.kind() as u8;
    buf[4..8].copy_from_slice(&key.map_or(0, |k| k.id().0).to_le_bytes());
    buf[8..24].copy_from_slice(&sender.to_le_bytes());
    buf[24..32].copy_from_slice(&packet_number.to_le_bytes());
    let room = buf.len() - tag_len;
    let body_len = encode_body(packet, &mut buf[PREAMBLE_LEN..room])?;
    let end = PREAMBLE_LEN + body_len;
    if let Some(key) = key {
        let (head, rest) = buf.split_at_mut(PREAMBLE_LEN);
        let tag = key.seal(sender, packet_number, head, &mut rest[..body_len]);
        buf[end..end + TAG_LEN].copy_from_slice(&tag);
    }
    Ok(end + tag_len)
}

fn check_name(name: &str, field: &'static str) -> Result<(), EncodeError> {
    if name.len() > MAX_NAME { Err(EncodeError::TooLarge(field)) } else { Ok(()) }
}

fn encode_body(packet: &Packet<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    match *packet {
        Packet::Hello(h) => {
            check_name(h.name, "name")?;
            archive(
                &HelloBody {
                    stream_id: h.stream_id,
                    flags: u8::from(h.listen_only),
                    cookie: h.cookie,
                    name: h.name,
                },
                out,
            )
        }
        Packet::Announce(a) => {
            check_name(a.name, "name")?;
            archive(
                &AnnounceBody {
                    stream_id: a.stream_id,
                    origin: a.origin,
                    epoch: a.epoch,
                    cookie: a.cookie,
                    sample_rate: a.sample_rate,
                    channels: a.channels,
                    codec: a.codec as u8,
                    frames_per_packet: a.frames_per_packet,
                    mode: a.mode as u8,
                    group_latency_ns: a.group_latency.0.max(0) as u64,
                    fec_data: a.fec_data,
                    fec_repair: a.fec_repair,
                    name: a.name,
                },
                out,
            )
        }
        Packet::Refuse(r) => {
            if r.message.len() > 4 * MAX_NAME {
                return Err(EncodeError::TooLarge("message"));
            }
            archive(
                &RefuseBody {
                    stream_id: r.stream_id,
                    reason: r.reason as u8,
                    to: r.to,
                    message: r.message,
                },
                out,
            )
        }
        Packet::Bye(b) => archive(&ByeBody { stream_id: b.stream_id }, out),
        Packet::ClockProbe(p) => archive(&ProbeBody { id: p.id, t1: p.t1 }, out),
        Packet::ClockReply(r) => {
            archive(&ReplyBody { id: r.id, t1: r.t1, t2: r.t2.0, t3: r.t3.0 }, out)
        }
        Packet::Audio(a) => {
            if a.payload.len() > MAX_PAYLOAD {
                return Err(EncodeError::TooLarge("payload"));
            }
            archive(
                &AudioBody {
                    stream_id: a.stream_id,
                    seq: a.seq.0,
                    media: a.media.0,
                    presentation_ns: a.presentation.0,
                    sent_ns: a.sent.0,
                    codec: a.codec as u8,
                    channels: a.channels,
                    frames: a.frames,
                    flags: if a.retransmit { FLAG_RETRANSMIT } else { 0 },
                    payload: a.payload,
                },
                out,
            )
        }
        Packet::Repair(r) => {
            if r.shard.len() > MAX_PAYLOAD + crate::fec::SHARD_HEADER {
                return Err(EncodeError::TooLarge("shard"));
            }
            archive(
                &RepairBody {
                    stream_id: r.stream_id,
                    block: r.block.0,
                    data: r.data,
                    repair: r.repair,
                    index: r.index,
                    shard: r.shard,
                },
                out,
            )
        }
        Packet::Nack(n) => {
            archive(&NackBody { stream_id: n.stream_id, base: n.base.0, mask: n.mask }, out)
        }
        Packet::Report(r) => archive(
            &ReportBody {
                stream_id: r.stream_id,
                received: r.received,
                lost: r.lost,
                recovered_fec: r.recovered_fec,
                recovered_retx: r.recovered_retx,
                concealed: r.concealed,
                offset_ns: r.offset_ns,
                skew_ppb: r.skew_ppb,
                uncertainty_ns: r.uncertainty_ns,
                buffer_ns: r.buffer_ns,
            },
            out,
        ),
    }
}

fn archive<T>(value: &T, out: &mut [u8]) -> Result<usize, EncodeError>
where
    T: for<'b, 'c> Serialize<LowSerializer<Buffer<'b>, SubAllocator<'c>, Failure>>,
{
    // Our bodies hold no collections that need scratch space; a small arena suffices.
    let mut scratch = [core::mem::MaybeUninit::<u8>::uninit(); 64];
    match to_bytes_in_with_alloc::<_, _, Failure>(
        value,
        Buffer::from(out),
        SubAllocator::new(&mut scratch),
    ) {
        Ok(written) => Ok(written.len()),
        Err(_) => Err(EncodeError::BufferTooSmall),
    }
}

/// Parses and authenticates a datagram in place: checks the preamble, opens the envelope
/// (decrypting `buf` in place), checks the replay window, and validates the body.
///
/// On success the returned packet borrows from `buf`. Every failure is an [`RxError`];
/// nothing here panics on any input.
pub fn decode<'a>(
    buf: &'a mut [u8],
    security: &Security,
    replay: &mut ReplayGuard,
) -> Result<(Preamble, Packet<'a>), RxError> {
    let preamble = parse_preamble(buf)?;
    let body: &'a [u8] = match (preamble.key, security) {
        (None, Security::Encrypted { .. }) => return Err(RxError::Plaintext),
        (None, Security::Plaintext) => {
            if !replay.check_and_update(preamble.sender, preamble.packet_number) {
                return Err(RxError::Replayed);
            }
            &buf[PREAMBLE_LEN..]
        }
        (Some(_), Security::Plaintext) => return Err(RxError::NoKey),
        (Some(id), sec) => {
            let key = sec.key_for(id).ok_or(RxError::UnknownKey(id.0))?;
            if buf.len() < PREAMBLE_LEN + TAG_LEN {
                return Err(RxError::Truncated);
            }
            if !replay.check(preamble.sender, preamble.packet_number) {
                return Err(RxError::Replayed);
            }
            let tag_at = buf.len() - TAG_LEN;
            let (head, rest) = buf.split_at_mut(PREAMBLE_LEN);
            let (body, tag) = rest.split_at_mut(tag_at - PREAMBLE_LEN);
            if !key.open(preamble.sender, preamble.packet_number, head, body, tag) {
                return Err(RxError::Unauthenticated);
            }
            // Only authenticated packets move the window, so forgeries cannot block real ones.
            replay.check_and_update(preamble.sender, preamble.packet_number);
            &buf[PREAMBLE_LEN..tag_at]
        }
    };
    Ok((preamble, parse_body(preamble.kind, body)?))
}

/// Parses the preamble only (no authentication).
pub fn parse_preamble(buf: &[u8]) -> Result<Preamble, RxError> {
    if buf.len() < PREAMBLE_LEN {
        return Err(RxError::Truncated);
    }
    if buf[0..2] != MAGIC {
        return Err(RxError::BadMagic);
    }
    if buf[2] != VERSION {
        return Err(RxError::UnsupportedVersion(buf[2]));
    }
    let kind = Kind::from_u8(buf[3]).ok_or(RxError::UnknownKind(buf[3]))?;
    let le32 = |r: core::ops::Range<usize>| {
        u32::from_le_bytes(buf[r].try_into().expect("range of 4 bytes"))
    };
    let key = le32(4..8);
    Ok(Preamble {
        kind,
        key: (key != 0).then_some(KeyId(key)),
        sender: u128::from_le_bytes(buf[8..24].try_into().expect("range of 16 bytes")),
        packet_number: u64::from_le_bytes(buf[24..32].try_into().expect("range of 8 bytes")),
    })
}

fn name_field(s: &str, field: &'static str) -> Result<(), RxError> {
    if s.len() > 4 * MAX_NAME { Err(RxError::InvalidField(field)) } else { Ok(()) }
}

/// Validates and reads a body of `kind` in place.
pub fn parse_body(kind: Kind, body: &[u8]) -> Result<Packet<'_>, RxError> {
    macro_rules! view {
        ($t:ty) => {
            access::<$t, Failure>(body).map_err(|_| RxError::Malformed)?
        };
    }
    Ok(match kind {
        Kind::Hello => {
            let b = view!(ArchivedHelloBody<'_>);
            name_field(&b.name, "name")?;
            Packet::Hello(Hello {
                stream_id: b.stream_id.to_native(),
                name: &b.name,
                listen_only: b.flags & 1 != 0,
                cookie: b.cookie.to_native(),
            })
        }
        Kind::Announce => {
            let b = view!(ArchivedAnnounceBody<'_>);
            let sample_rate = b.sample_rate.to_native();
            if !(8_000..=384_000).contains(&sample_rate) {
                return Err(RxError::InvalidField("sample_rate"));
            }
            if b.channels == 0 || b.channels > MAX_CHANNELS {
                return Err(RxError::InvalidField("channels"));
            }
            let fpp = b.frames_per_packet.to_native();
            if fpp == 0 || fpp > MAX_FRAMES_PER_PACKET {
                return Err(RxError::InvalidField("frames_per_packet"));
            }
            if b.fec_data > 0 && b.fec_repair == 0 {
                return Err(RxError::InvalidField("fec_repair"));
            }
            let latency = b.group_latency_ns.to_native();
            if latency > 60_000_000_000 {
                return Err(RxError::InvalidField("group_latency"));
            }
            name_field(&b.name, "name")?;
            Packet::Announce(Announce {
                stream_id: b.stream_id.to_native(),
                origin: b.origin.to_native(),
                epoch: b.epoch.to_native(),
                cookie: b.cookie.to_native(),
                sample_rate,
                channels: b.channels,
                codec: Codec::from_u8(b.codec).ok_or(RxError::InvalidField("codec"))?,
                frames_per_packet: fpp,
                mode: Mode::from_u8(b.mode).ok_or(RxError::InvalidField("mode"))?,
                group_latency: Nanos(latency as i64),
                fec_data: b.fec_data,
                fec_repair: b.fec_repair,
                name: &b.name,
            })
        }
        Kind::Refuse => {
            let b = view!(ArchivedRefuseBody<'_>);
            name_field(&b.message, "message")?;
            Packet::Refuse(Refuse {
                stream_id: b.stream_id.to_native(),
                reason: RefuseReason::from_u8(b.reason),
                to: b.to.to_native(),
                message: &b.message,
            })
        }
        Kind::Bye => {
            let b = view!(ArchivedByeBody);
            Packet::Bye(Bye { stream_id: b.stream_id.to_native() })
        }
        Kind::ClockProbe => {
            let b = view!(ArchivedProbeBody);
            Packet::ClockProbe(ClockProbe { id: b.id.to_native(), t1: b.t1.to_native() })
        }
        Kind::ClockReply => {
            let b = view!(ArchivedReplyBody);
            Packet::ClockReply(ClockReply {
                id: b.id.to_native(),
                t1: b.t1.to_native(),
                t2: StreamTime(b.t2.to_native()),
                t3: StreamTime(b.t3.to_native()),
            })
        }
        Kind::Audio => {
            let b = view!(ArchivedAudioBody<'_>);
            let codec = Codec::from_u8(b.codec).ok_or(RxError::InvalidField("codec"))?;
            if b.channels == 0 || b.channels > MAX_CHANNELS {
                return Err(RxError::InvalidField("channels"));
            }
            let frames = b.frames.to_native();
            if frames == 0 || frames > MAX_FRAMES_PER_PACKET {
                return Err(RxError::InvalidField("frames"));
            }
            let payload: &[u8] = &b.payload;
            if payload.len() > MAX_PAYLOAD {
                return Err(RxError::InvalidField("payload"));
            }
            if let Some(bytes) = codec.pcm_bytes()
                && payload.len() != frames as usize * b.channels as usize * bytes
            {
                return Err(RxError::InvalidField("payload"));
            }
            Packet::Audio(AudioFrame {
                stream_id: b.stream_id.to_native(),
                seq: SeqNo(b.seq.to_native()),
                media: MediaTime(b.media.to_native()),
                presentation: StreamTime(b.presentation_ns.to_native()),
                sent: StreamTime(b.sent_ns.to_native()),
                codec,
                channels: b.channels,
                frames,
                retransmit: b.flags & FLAG_RETRANSMIT != 0,
                payload,
            })
        }
        Kind::Repair => {
            let b = view!(ArchivedRepairBody<'_>);
            if b.data == 0 || b.repair == 0 || b.index >= b.repair {
                return Err(RxError::InvalidField("repair"));
            }
            let shard: &[u8] = &b.shard;
            if shard.is_empty()
                || !shard.len().is_multiple_of(2)
                || shard.len() > MAX_PAYLOAD + crate::fec::SHARD_HEADER
            {
                return Err(RxError::InvalidField("shard"));
            }
            Packet::Repair(Repair {
                stream_id: b.stream_id.to_native(),
                block: SeqNo(b.block.to_native()),
                data: b.data,
                repair: b.repair,
                index: b.index,
                shard,
            })
        }
        Kind::Nack => {
            let b = view!(ArchivedNackBody);
            Packet::Nack(Nack {
                stream_id: b.stream_id.to_native(),
                base: SeqNo(b.base.to_native()),
                mask: b.mask.to_native(),
            })
        }
        Kind::Report => {
            let b = view!(ArchivedReportBody);
            Packet::Report(Report {
                stream_id: b.stream_id.to_native(),
                received: b.received.to_native(),
                lost: b.lost.to_native(),
                recovered_fec: b.recovered_fec.to_native(),
                recovered_retx: b.recovered_retx.to_native(),
                concealed: b.concealed.to_native(),
                offset_ns: b.offset_ns.to_native(),
                skew_ppb: b.skew_ppb.to_native(),
                uncertainty_ns: b.uncertainty_ns.to_native(),
                buffer_ns: b.buffer_ns.to_native(),
            })
        }
    })
}
