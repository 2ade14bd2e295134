//! The source session: stamps, paces, protects and fans out one stream.
//!
//! # Driving it
//! ```text
//! loop {
//!     while source.wants_frame(now) { source.push_paced(now, &encoded_frame)?; }   // files
//!     // or: source.push_captured(now, capture_instant, &encoded_frame)?;          // devices
//!     on datagram:  source.handle_datagram(now, from, &mut buf[..n]);
//!     on deadline:  source.handle_timeout(now);
//!     while let Some(t) = source.poll_transmit(now, &mut out) { send(t, &out[..t.len]) }
//!     while let Some(e) = source.poll_event() { ... }
//!     sleep until source.poll_timeout()
//! }
//! ```
//! [`Destination::Fanout`] means: send the same bytes to every address of
//! [`SourceSession::fanout`] (the unicast receivers and the multicast group).
//!
//! # Pacing
//! In paced mode (files, tones, stdin) frame `n` leaves at exactly `t0 + n × frame duration`
//! on the source's clock, computed from `n` each time (never by adding durations), so the
//! stream cannot drift from its schedule. Its presentation time is its departure time plus
//! the group latency. In captured mode (devices) frames leave as soon as they are pushed,
//! stamped with their capture instant.
//!
//! The stream clock *is* the source's local clock: `StreamTime(local.0)`.

use std::collections::VecDeque;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use crate::crypto::{ReplayGuard, Security};
use crate::fec::FecEncoder;
use crate::format::StreamFormat;
use crate::time::{LocalTime, MediaTime, Nanos, SeqNo, StreamTime};
use crate::wire::{
    self, Announce, AudioFrame, MAX_PAYLOAD, Mode, Packet, RefuseReason, Repair, RxErrorCounts,
};
use crate::{Destination, Transmit};

/// Configuration of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// Stream id (distinguishes the streams of a multitrack source).
    pub stream_id: u32,
    /// Human name (track title, stem name).
    pub name: String,
    /// Rate, channels, codec of the payloads pushed, and packet size.
    pub format: StreamFormat,
    /// Sync (fixed group latency) or live (minimal latency).
    pub mode: Mode,
    /// Presentation time minus capture time. Sync mode: the whole group's playout delay;
    /// live mode: normally zero (players add their own adaptive latency).
    pub group_latency: Nanos,
    /// FEC `(data, repair)` packets per block; `None` disables FEC.
    pub fec: Option<(u8, u8)>,
    /// How long sent packets stay available for retransmission.
    pub history: Nanos,
    /// Most receivers served by unicast; further `Hello`s get "server full".
    pub max_receivers: usize,
    /// Receivers to send to from the start, without waiting for their `Hello`.
    pub receivers: Vec<SocketAddr>,
    /// Multicast group to send every packet to.
    pub multicast: Option<SocketAddr>,
    /// Where a standard RTP copy of the stream goes (L16, announced by SAP: see
    /// [`rtp`](crate::rtp)); the node sends it, a PCM16 stream only.
    pub rtp: Option<SocketAddr>,
    /// A unicast receiver silent this long is dropped.
    pub receiver_timeout: Nanos,
    /// The stream description is re-sent this often.
    pub announce_interval: Nanos,
    /// Identity of the stream across restarts (the node derives it from its name, port and
    /// stream id): players follow a restart only to a run of the same origin.
    pub origin: u64,
    /// When this run began, in nanoseconds of the wall clock (0: use the session's local
    /// start time). A player playing one run switches only to a run with a later epoch.
    pub epoch: u64,
}

impl SourceConfig {
    /// A sync-mode PCM stream with Tutti's defaults (5 ms packets, 8+2 FEC, 2 s history).
    pub fn new(stream_id: u32, sample_rate: u32, channels: u8) -> Self {
        SourceConfig {
            stream_id,
            name: String::new(),
            format: StreamFormat::pcm(sample_rate, channels),
            mode: Mode::Sync,
            group_latency: Nanos::from_millis(100),
            fec: Some((8, 2)),
            history: Nanos::from_secs(2),
            max_receivers: 64,
            receivers: Vec::new(),
            multicast: None,
            rtp: None,
            receiver_timeout: Nanos::from_secs(10),
            announce_interval: Nanos::from_secs(1),
            origin: u64::from(stream_id),
            epoch: 0,
        }
    }

    /// Duration of one packet's frames.
    pub fn frame_duration(&self) -> Nanos {
        self.format.packet_duration()
    }

    /// Checks the configuration; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, fix: String| Err(ConfigError { field, fix });
        self.format.validate()?;
        if let Some((d, r)) = self.fec
            && (d == 0 || r == 0 || u32::from(d) + u32::from(r) > 64)
        {
            return bad(
                "fec",
                "use 1..=63 data and 1..=63 repair packets per block, 64 at most together".into(),
            );
        }
        if self.group_latency < Nanos::ZERO || self.group_latency > Nanos::from_secs(60) {
            return bad("group_latency", "use a latency between 0 and 60 s".into());
        }
        if self.history < self.frame_duration() {
            return bad("history", "keep at least one packet of history".into());
        }
        if self.name.len() > wire::MAX_NAME {
            return bad("name", format!("use at most {} bytes", wire::MAX_NAME));
        }
        Ok(())
    }
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {fix}")]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What to do instead.
    pub fix: String,
}

/// Why a frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The payload does not fit one datagram, or does not match the PCM format.
    #[error("payload of {len} bytes does not match the stream format (expected {expected})")]
    BadPayload {
        /// Bytes given.
        len: usize,
        /// Bytes expected (0 for compressed codecs: at most `MAX_PAYLOAD`).
        expected: usize,
    },
    /// Frames were pushed faster than they can leave: wait until `wants_frame`.
    #[error("send queue full: push only when wants_frame() says so")]
    Full,
}

/// Something the driver may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceEvent {
    /// A receiver joined.
    ReceiverJoined {
        /// Its address.
        addr: SocketAddr,
        /// Its name.
        name: String,
    },
    /// A receiver left (bye) or went silent.
    ReceiverLeft {
        /// Its address.
        addr: SocketAddr,
        /// True when it timed out rather than saying bye.
        timed_out: bool,
    },
    /// A receiver was refused because `max_receivers` are already served.
    ReceiverRefused {
        /// Its address.
        addr: SocketAddr,
    },
}

/// A unicast receiver and what it last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    /// Address audio is sent to.
    pub addr: SocketAddr,
    /// The sender id of the player run that joined (`None` for a configured receiver, which
    /// any run at its address may speak for).
    pub sender: Option<u128>,
    /// Name from its `Hello`.
    pub name: String,
    /// When it was last heard.
    pub last_heard: LocalTime,
    /// Its latest report.
    pub report: wire::Report,
}

/// Counters of a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Audio packets sent (first transmissions).
    pub frames_sent: u64,
    /// Datagrams handed to the driver (each fan-out counts once).
    pub datagrams: u64,
    /// Bytes handed to the driver (each fan-out counts once).
    pub bytes: u64,
    /// FEC repair shards sent.
    pub repairs_sent: u64,
    /// NACK packets received.
    pub nacks_received: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// NACKed packets no longer in the history.
    pub retransmits_expired: u64,
    /// Clock probes answered.
    pub probes_answered: u64,
    /// `Hello`s answered with a cookie to echo (the sender was not yet served).
    pub cookies_sent: u64,
    /// `Hello`s left unanswered because their address had its share of cookies this second
    /// (a stranger replaying many captured Hellos at a victim).
    pub cookies_withheld: u64,
    /// Authenticated datagrams dropped because their sender has not proved its address
    /// (no echoed cookie) or is not the run that joined from that address (a replay).
    pub unverified: u64,
    /// Datagrams dropped, by reason.
    pub rx_errors: RxErrorCounts,
}

/// A multicast listener that proved its address: its NACKs and probes are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listener {
    addr: SocketAddr,
    sender: u128,
    last_heard: LocalTime,
}

/// Most multicast listeners remembered (their NACKs are answered).
const MAX_LISTENERS: usize = 1024;

/// A cookie is good for this long to one, up to twice as long at most (current and previous
/// period).
const COOKIE_LIFETIME: Nanos = Nanos::from_secs(30);

/// Cookie answers to one IP address per second, at most: a player needs one (a few if they
/// are lost) and a host may run a few dozen players, so replayed Hellos aimed at a victim get
/// it at most this many small datagrams (~3.6 kB) a second.
const COOKIES_PER_ADDRESS: usize = 32;
/// Recent cookie answers remembered for that limit (beyond, the oldest are forgotten).
const COOKIE_MEMORY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Reply { to: SocketAddr, id: u32, t1: u64, t2: StreamTime },
    Announce { to: Destination, cookie: u64 },
    Refuse { to: SocketAddr, sender: u128, stream_id: u32, reason: RefuseReason },
    Retransmit { to: SocketAddr, seq: SeqNo },
    Repair { index: u8 },
    Bye,
}

fn audio_frame<'a>(
    config: &SourceConfig,
    slot: &'a Slot,
    seq: SeqNo,
    retransmit: bool,
    now: LocalTime,
) -> AudioFrame<'a> {
    AudioFrame {
        stream_id: config.stream_id,
        seq,
        media: slot.media,
        presentation: slot.presentation,
        sent: StreamTime(now.0),
        codec: config.format.codec,
        channels: config.format.channels,
        frames: slot.frames,
        retransmit,
        payload: &slot.payload,
    }
}

#[derive(Debug)]
struct Slot {
    seq: Option<SeqNo>,
    media: MediaTime,
    presentation: StreamTime,
    send_at: LocalTime,
    frames: u16,
    payload: Vec<u8>,
}

/// The sending side of one stream (see the module docs for the driving loop).
#[derive(Debug)]
pub struct SourceSession {
    config: SourceConfig,
    security: Security,
    sender: u128,
    epoch: u64,
    cookie_key: [u8; 32],
    packet_number: u64,
    t0: Option<LocalTime>,
    next_seq: SeqNo,
    next_send: SeqNo,
    slots: Vec<Slot>,
    fec: Option<FecEncoder>,
    repair_block: SeqNo,
    control: VecDeque<Pending>,
    repairs: VecDeque<Pending>,
    retransmits: VecDeque<Pending>,
    receivers: Vec<Receiver>,
    listeners: Vec<Listener>,
    /// When and to which IP address cookies went in the last second.
    cookies_out: VecDeque<(LocalTime, std::net::IpAddr)>,
    next_announce: LocalTime,
    events: VecDeque<SourceEvent>,
    replay: ReplayGuard,
    stats: SourceStats,
    ended: bool,
}

impl SourceSession {
    /// A new stream. `random` is the sender id and seeds the cookie key (pass 128 bits of OS
    /// randomness in the node, a seed in simulation). `now` is the local time at creation.
    pub fn new(
        config: SourceConfig,
        security: Security,
        random: u128,
        now: LocalTime,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let slots = (config.history.0 / config.frame_duration().0.max(1)) as usize + 64;
        let fec = config.fec.map(|(d, r)| FecEncoder::new(d, r));
        let receivers = config
            .receivers
            .iter()
            .map(|&addr| Receiver {
                addr,
                sender: None,
                name: String::new(),
                last_heard: now,
                report: wire::Report::default(),
            })
            .collect();
        let sender = crate::sender_id(random);
        let cookie_key = crate::derive(random, b"tutti cookie key");
        Ok(SourceSession {
            security,
            sender,
            epoch: if config.epoch == 0 { now.0 } else { config.epoch },
            cookie_key,
            packet_number: 0,
            t0: None,
            next_seq: SeqNo(0),
            next_send: SeqNo(0),
            slots: (0..slots)
                .map(|_| Slot {
                    seq: None,
                    media: MediaTime(0),
                    presentation: StreamTime(0),
                    send_at: LocalTime(0),
                    frames: 0,
                    payload: Vec::with_capacity(MAX_PAYLOAD),
                })
                .collect(),
            fec,
            repair_block: SeqNo(0),
            control: VecDeque::new(),
            repairs: VecDeque::new(),
            retransmits: VecDeque::new(),
            receivers,
            listeners: Vec::new(),
            cookies_out: VecDeque::new(),
            next_announce: now,
            events: VecDeque::new(),
            replay: ReplayGuard::default(),
            stats: SourceStats::default(),
            ended: false,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }
    /// Counters.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }
    /// The unicast receivers currently served.
    pub fn receivers(&self) -> &[Receiver] {
        &self.receivers
    }
    /// This run's epoch (see [`SourceConfig::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// This run's sender id.
    pub fn sender(&self) -> u128 {
        self.sender
    }
    /// The next sequence number to be pushed.
    pub fn next_seq(&self) -> SeqNo {
        self.next_seq
    }

    /// Frames pushed but not yet sent (paced frames waiting for their departure time).
    pub fn unsent(&self) -> u64 {
        self.next_seq.0 - self.next_send.0
    }

    /// Every address a [`Destination::Fanout`] datagram goes to.
    pub fn fanout(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.receivers.iter().map(|r| r.addr).chain(self.config.multicast)
    }

    /// The departure time of frame `seq` in paced mode (`None` before the first push).
    pub fn send_time(&self, seq: SeqNo) -> Option<LocalTime> {
        let t0 = self.t0?;
        let frames = u128::from(seq.0) * u128::from(self.config.format.frames_per_packet);
        Some(
            t0 + Nanos(
                (frames * 1_000_000_000 / u128::from(self.config.format.sample_rate)) as i64,
            ),
        )
    }

    /// In paced mode: should the driver push the next frame now? True while the next frame's
    /// departure is less than `lookahead` away (and there is room in the history).
    pub fn wants_frame(&self, now: LocalTime, lookahead: Nanos) -> bool {
        if self.next_seq.0 - self.next_send.0 >= (self.slots.len() / 2) as u64 {
            return false;
        }
        self.send_time(self.next_seq).is_none_or(|t| t - now <= lookahead)
    }

    fn check_payload(&self, payload: &[u8]) -> Result<(), PushError> {
        let expected = self.config.format.codec.pcm_bytes().map_or(0, |b| {
            usize::from(self.config.format.frames_per_packet)
                * usize::from(self.config.format.channels)
                * b
        });
        let ok =
            if expected > 0 { payload.len() == expected } else { payload.len() <= MAX_PAYLOAD };
        if ok { Ok(()) } else { Err(PushError::BadPayload { len: payload.len(), expected }) }
    }

    /// Changes the keys (a rotation): packets from now on are sealed with the new sending key;
    /// the replay windows carry on (packet numbers never restart).
    pub fn set_security(&mut self, security: Security) {
        self.security = security;
    }

    /// Fixes the paced schedule's origin: frame 0 leaves at `t0` (before the first push only).
    /// Streams that must start together (the stems of a multitrack) share one `t0`.
    pub fn set_start(&mut self, t0: LocalTime) {
        if self.next_seq == SeqNo(0) {
            self.t0 = Some(t0);
        }
    }

    /// Queues the next frame of a paced stream (file, tone, stdin): it leaves at
    /// `t0 + n × frame duration` and must be heard `group_latency` later.
    pub fn push_paced(&mut self, now: LocalTime, payload: &[u8]) -> Result<SeqNo, PushError> {
        self.check_payload(payload)?;
        self.t0.get_or_insert(now);
        let seq = self.next_seq;
        let send_at = self.send_time(seq).expect("t0 is set");
        self.store(seq, send_at, StreamTime(send_at.0), payload)
    }

    /// Sends a captured frame now. `captured` is the local instant of its first frame at the
    /// ADC; it must be heard `group_latency` after that.
    pub fn push_captured(
        &mut self,
        now: LocalTime,
        captured: LocalTime,
        payload: &[u8],
    ) -> Result<SeqNo, PushError> {
        self.check_payload(payload)?;
        self.t0.get_or_insert(captured);
        let seq = self.next_seq;
        self.store(seq, now, StreamTime(captured.0), payload)
    }

    fn store(
        &mut self,
        seq: SeqNo,
        send_at: LocalTime,
        captured: StreamTime,
        payload: &[u8],
    ) -> Result<SeqNo, PushError> {
        let n = self.slots.len();
        if self.next_seq.0 - self.next_send.0 >= n as u64 - 1 {
            return Err(PushError::Full);
        }
        let slot = &mut self.slots[(seq.0 % n as u64) as usize];
        slot.seq = Some(seq);
        slot.media = MediaTime(seq.0 * u64::from(self.config.format.frames_per_packet));
        slot.presentation = captured + self.config.group_latency;
        slot.send_at = send_at;
        slot.frames = self.config.format.frames_per_packet;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        self.next_seq = seq.next();
        Ok(seq)
    }

    fn slot(&self, seq: SeqNo) -> Option<&Slot> {
        let slot = &self.slots[(seq.0 % self.slots.len() as u64) as usize];
        (slot.seq == Some(seq)).then_some(slot)
    }

    /// Ends the stream: a `Bye` goes to every receiver.
    pub fn close(&mut self) {
        if !self.ended {
            self.ended = true;
            self.control.push_back(Pending::Bye);
        }
    }

    /// Feeds a received datagram (decrypted in place in `buf`).
    pub fn handle_datagram(&mut self, now: LocalTime, from: SocketAddr, buf: &mut [u8]) {
        let (preamble, packet) = match wire::decode(buf, &self.security, &mut self.replay) {
            Ok(x) => x,
            Err(e) => {
                self.stats.rx_errors.count(e);
                return;
            }
        };
        let sender = preamble.sender;
        match packet {
            Packet::Hello(h) => return self.on_hello(now, from, sender, &h),
            // Answered from anyone with the keys, proven or not: a joining player locks its
            // clock while it joins, and a reply is one datagram barely larger than the probe
            // (nothing to amplify). The player takes replies only to its own recent probes.
            Packet::ClockProbe(p) => {
                if self.control.len() < 4096 {
                    self.control.push_back(Pending::Reply {
                        to: from,
                        id: p.id,
                        t1: p.t1,
                        t2: StreamTime(now.0),
                    });
                }
                return;
            }
            _ => {}
        }
        // Everything else only from a player run that proved its address (or a configured
        // receiver): a replayed NACK, report or bye from another run, or from a forged
        // address, gets no answer and changes nothing.
        if !self.verified(now, from, sender) {
            self.stats.unverified += 1;
            return;
        }
        match packet {
            Packet::Nack(n) if n.stream_id == self.config.stream_id => {
                self.stats.nacks_received += 1;
                self.touch(now, from);
                for i in 0..64 {
                    if n.mask & (1 << i) == 0 {
                        continue;
                    }
                    let seq = SeqNo(n.base.0.saturating_add(i));
                    let sent = seq < self.next_send && self.slot(seq).is_some();
                    if !sent {
                        self.stats.retransmits_expired += 1;
                    } else if self.retransmits.len() < 4096 {
                        self.retransmits.push_back(Pending::Retransmit { to: from, seq });
                    }
                }
            }
            Packet::Report(r) if r.stream_id == self.config.stream_id => {
                if let Some(rx) = self.receivers.iter_mut().find(|x| x.addr == from) {
                    rx.report = r;
                }
            }
            Packet::Bye(b) if b.stream_id == self.config.stream_id => {
                if let Some(i) = self.receivers.iter().position(|x| x.addr == from) {
                    self.receivers.remove(i);
                    self.events
                        .push_back(SourceEvent::ReceiverLeft { addr: from, timed_out: false });
                }
            }
            _ => {}
        }
    }

    fn touch(&mut self, now: LocalTime, from: SocketAddr) {
        if let Some(rx) = self.receivers.iter_mut().find(|x| x.addr == from) {
            rx.last_heard = now;
        }
    }

    /// Whether `sender` at `from` is a run this source serves (refreshing it if so).
    fn verified(&mut self, now: LocalTime, from: SocketAddr, sender: u128) -> bool {
        if let Some(rx) = self.receivers.iter_mut().find(|x| x.addr == from) {
            if rx.sender.is_none_or(|s| s == sender) {
                rx.last_heard = now;
                return true;
            }
            return false;
        }
        if let Some(l) = self.listeners.iter_mut().find(|l| l.addr == from && l.sender == sender) {
            l.last_heard = now;
            return true;
        }
        false
    }

    /// The return-routability cookie for `sender` at `from` in time bucket `bucket`: only a
    /// player that receives at `from` learns it, and it dies with this source run.
    fn cookie(&self, from: SocketAddr, sender: u128, bucket: u64) -> u64 {
        let mut h = Sha256::new()
            .chain_update(self.cookie_key)
            .chain_update(sender.to_le_bytes())
            .chain_update(bucket.to_le_bytes())
            .chain_update(from.port().to_le_bytes());
        match from.ip() {
            std::net::IpAddr::V4(a) => h.update(a.octets()),
            std::net::IpAddr::V6(a) => h.update(a.octets()),
        }
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 of 32 bytes")).max(1)
    }

    fn cookie_bucket(now: LocalTime) -> u64 {
        now.0 / COOKIE_LIFETIME.0 as u64
    }

    fn on_hello(&mut self, now: LocalTime, from: SocketAddr, sender: u128, h: &wire::Hello<'_>) {
        let stream_id = h.stream_id;
        if stream_id != 0 && stream_id != self.config.stream_id {
            self.control.push_back(Pending::Refuse {
                to: from,
                sender,
                stream_id,
                reason: RefuseReason::UnknownStream,
            });
            return;
        }
        if self.control.len() >= 4096 {
            return;
        }
        let known = self.receivers.iter().any(|x| x.addr == from);
        if !h.listen_only && !known && self.receivers.len() >= self.config.max_receivers {
            // Full: a refusal (as small as the Hello, bound to its sender) whatever the cookie.
            self.control.push_back(Pending::Refuse {
                to: from,
                sender,
                stream_id,
                reason: RefuseReason::ServerFull,
            });
            self.events.push_back(SourceEvent::ReceiverRefused { addr: from });
            return;
        }
        // Return routability: a Hello without this run's cookie for its address (a new
        // player, a replay, a forged address) gets one announce carrying the cookie and
        // nothing else; the player echoes it in its next Hello.
        let bucket = Self::cookie_bucket(now);
        let proven = h.cookie != 0
            && (h.cookie == self.cookie(from, sender, bucket)
                || h.cookie == self.cookie(from, sender, bucket.wrapping_sub(1)));
        if !proven {
            while self.cookies_out.front().is_some_and(|(t, _)| now - *t > Nanos::from_secs(1))
                || self.cookies_out.len() >= COOKIE_MEMORY
            {
                self.cookies_out.pop_front();
            }
            let ip = from.ip();
            if self.cookies_out.iter().filter(|(_, a)| *a == ip).count() >= COOKIES_PER_ADDRESS {
                self.stats.cookies_withheld += 1;
                return;
            }
            self.cookies_out.push_back((now, ip));
            let cookie = self.cookie(from, sender, bucket);
            self.stats.cookies_sent += 1;
            self.control.push_back(Pending::Announce { to: Destination::To(from), cookie });
            return;
        }
        if h.listen_only {
            if let Some(l) = self.listeners.iter_mut().find(|l| l.addr == from) {
                l.sender = sender;
                l.last_heard = now;
            } else if self.listeners.len() < MAX_LISTENERS {
                self.listeners.push(Listener { addr: from, sender, last_heard: now });
            }
        } else if let Some(rx) = self.receivers.iter_mut().find(|x| x.addr == from) {
            // The same player, or a new run of it at the same address (it proved the address).
            rx.last_heard = now;
            if rx.sender.is_some() {
                rx.sender = Some(sender);
            }
            if rx.name.is_empty() && !h.name.is_empty() {
                rx.name = h.name.to_owned();
            }
        } else {
            self.receivers.push(Receiver {
                addr: from,
                sender: Some(sender),
                name: h.name.to_owned(),
                last_heard: now,
                report: wire::Report::default(),
            });
            self.events
                .push_back(SourceEvent::ReceiverJoined { addr: from, name: h.name.to_owned() });
        }
        // The answer echoes the proven cookie: the player knows it is served.
        self.control.push_back(Pending::Announce { to: Destination::To(from), cookie: h.cookie });
    }

    /// Timers: periodic announce, receiver expiry.
    pub fn handle_timeout(&mut self, now: LocalTime) {
        if now >= self.next_announce {
            self.next_announce = now + self.config.announce_interval;
            if self.receivers.iter().any(|r| !self.config.receivers.contains(&r.addr))
                || self.config.multicast.is_some()
                || !self.config.receivers.is_empty()
            {
                self.control.push_back(Pending::Announce { to: Destination::Fanout, cookie: 0 });
            }
        }
        let timeout = self.config.receiver_timeout;
        let statics = &self.config.receivers;
        let events = &mut self.events;
        self.receivers.retain(|r| {
            let keep = statics.contains(&r.addr) || now - r.last_heard <= timeout;
            if !keep {
                events.push_back(SourceEvent::ReceiverLeft { addr: r.addr, timed_out: true });
            }
            keep
        });
        self.listeners.retain(|l| now - l.last_heard <= timeout);
    }

    /// The next instant this session needs [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn poll_timeout(&self) -> Option<LocalTime> {
        let mut t = self.next_announce;
        if self.next_send < self.next_seq
            && let Some(s) = self.slot(self.next_send)
        {
            t = t.min(s.send_at);
        }
        Some(t)
    }

    /// True when something is ready to send at `now`.
    pub fn has_transmit(&self, now: LocalTime) -> bool {
        !self.control.is_empty()
            || !self.repairs.is_empty()
            || !self.retransmits.is_empty()
            || (self.next_send < self.next_seq
                && self.slot(self.next_send).is_some_and(|s| s.send_at <= now))
    }

    /// Encodes the next datagram due at `now` into `buf`. Order: clock replies and control,
    /// then audio due by its schedule, then FEC repairs, then retransmissions.
    pub fn poll_transmit(&mut self, now: LocalTime, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let (pending, destination) = if let Some(p) = self.control.pop_front() {
                let d = match p {
                    Pending::Reply { to, .. } | Pending::Refuse { to, .. } => Destination::To(to),
                    Pending::Announce { to, .. } => to,
                    _ => Destination::Fanout,
                };
                (p, d)
            } else if self.next_send < self.next_seq
                && self.slot(self.next_send).is_some_and(|s| s.send_at <= now)
            {
                let seq = self.next_send;
                self.next_send = seq.next();
                return self.send_audio(now, seq, buf);
            } else if let Some(p) = self.repairs.pop_front() {
                (p, Destination::Fanout)
            } else if let Some(p) = self.retransmits.pop_front() {
                let Pending::Retransmit { to, .. } = p else { continue };
                (p, Destination::To(to))
            } else {
                return None;
            };
            if let Some(len) = self.encode_pending(now, pending, buf) {
                return Some(self.sent(destination, len));
            }
        }
    }

    fn sent(&mut self, destination: Destination, len: usize) -> Transmit {
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        Transmit { destination, len }
    }

    fn next_pn(&mut self) -> u64 {
        self.packet_number += 1;
        self.packet_number
    }

    fn send_audio(&mut self, now: LocalTime, seq: SeqNo, buf: &mut [u8]) -> Option<Transmit> {
        let pn = self.next_pn();
        let slot = &self.slots[(seq.0 % self.slots.len() as u64) as usize];
        if slot.seq != Some(seq) {
            return None;
        }
        let frame = audio_frame(&self.config, slot, seq, false, now);
        let len = wire::encode(&Packet::Audio(frame), self.sender, pn, &self.security, buf).ok()?;
        if let Some(fec) = self.fec.as_mut()
            && let Some(block) = fec.push(&frame)
        {
            self.repair_block = block;
            self.repairs.clear();
            self.repairs.extend((0..fec.repair()).map(|index| Pending::Repair { index }));
        }
        self.stats.frames_sent += 1;
        Some(self.sent(Destination::Fanout, len))
    }

    fn encode_pending(
        &mut self,
        now: LocalTime,
        pending: Pending,
        buf: &mut [u8],
    ) -> Option<usize> {
        let pn = self.next_pn();
        let (sender, stream_id) = (self.sender, self.config.stream_id);
        let packet = match pending {
            Pending::Reply { id, t1, t2, .. } => {
                self.stats.probes_answered += 1;
                Packet::ClockReply(wire::ClockReply { id, t1, t2, t3: StreamTime(now.0) })
            }
            Pending::Announce { cookie, .. } => Packet::Announce(Announce {
                stream_id,
                origin: self.config.origin,
                epoch: self.epoch,
                cookie,
                sample_rate: self.config.format.sample_rate,
                channels: self.config.format.channels,
                codec: self.config.format.codec,
                frames_per_packet: self.config.format.frames_per_packet,
                mode: self.config.mode,
                group_latency: self.config.group_latency,
                fec_data: self.config.fec.map_or(0, |f| f.0),
                fec_repair: self.config.fec.map_or(0, |f| f.1),
                name: &self.config.name,
            }),
            Pending::Refuse { stream_id, reason, sender: to, .. } => {
                let message = match reason {
                    RefuseReason::ServerFull => "server full",
                    RefuseReason::UnknownStream => "unknown stream",
                    _ => "refused",
                };
                let packet = Packet::Refuse(wire::Refuse { stream_id, reason, to, message });
                return wire::encode(&packet, sender, pn, &self.security, buf).ok();
            }
            Pending::Retransmit { seq, .. } => {
                let slot = self.slot(seq)?;
                let packet = Packet::Audio(audio_frame(&self.config, slot, seq, true, now));
                let len = wire::encode(&packet, sender, pn, &self.security, buf).ok()?;
                self.stats.retransmits += 1;
                return Some(len);
            }
            Pending::Repair { index } => {
                let fec = self.fec.as_ref()?;
                let packet = Packet::Repair(Repair {
                    stream_id,
                    block: self.repair_block,
                    data: fec.data(),
                    repair: fec.repair(),
                    index,
                    shard: fec.repair_shard(index),
                });
                let len = wire::encode(&packet, sender, pn, &self.security, buf).ok()?;
                self.stats.repairs_sent += 1;
                return Some(len);
            }
            Pending::Bye => Packet::Bye(wire::Bye { stream_id }),
        };
        wire::encode(&packet, sender, pn, &self.security, buf).ok()
    }

    /// Drains events.
    pub fn poll_event(&mut self) -> Option<SourceEvent> {
        self.events.pop_front()
    }
}
