//! The network half of a player: joins a stream, locks its clock to the stream clock,
//! buffers, recovers losses, and hands each packet to the playout half ([`Playback`]).
//!
//! # Driving it
//! ```text
//! let (session, playback) = PlayerSession::new(config, security, random, now);
//! network thread (owns `session`):
//!     on datagram:  session.handle_datagram(now, from, &mut buf[..n]);
//!     on deadline:  session.handle_timeout(now);
//!     while let Some(t) = session.poll_transmit(now, &mut out) { send(to session.source(), ..) }
//!     while let Some(e) = session.poll_event() { ... }
//!     sleep until session.poll_timeout()
//! media thread (owns `playback`): see [`Playback`].
//! ```
//! The two halves talk through lock-free rings only (see [`crate::playback`]);
//! [`Coupled`](crate::playback::Coupled) runs both on one thread.
//!
//! # Timing
//! A sample with presentation time `P` (stream clock) is heard at the local instant where
//! `stream(t) = P + device_offset + extra`, with `extra` the zone's latency override (sync
//! mode) or the adaptive latency (live mode). `stream(t)` comes from the [`ClockEstimator`];
//! the [`PlayoutScheduler`](crate::playout::PlayoutScheduler) (in [`Playback`]) turns the resulting target position into a smooth read position.
//!
//! # Loss recovery
//! A gap in sequence numbers marks packets missing. FEC repairs rebuild them when enough
//! shards arrive; otherwise a NACK goes out after a reordering grace period and is repeated
//! every round trip while the packet can still arrive before it is due. What is still missing
//! at playout is handed out as [`Playout::Missing`](crate::jitter::Playout::Missing) for the codec's concealment.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::Transmit;
use crate::clock::{ClockConfig, ClockEstimate, ClockEstimator, ClockSample};
use crate::crypto::{ReplayGuard, Security};
use crate::fec::{FecDecoder, block_of};
use crate::format::StreamFormat;
use crate::jitter::{Inserted, JitterBuffer, Origin};
use crate::playback::{self, Handoff, Held, NetEnds, Playback, PlayoutCounts};
use crate::time::{LocalTime, MediaTime, Nanos, SeqNo, StreamTime};
use crate::wire::{self, AudioFrame, Mode, Packet, RefuseReason, RxErrorCounts};

/// Configuration of a player.
#[derive(Clone, Debug, PartialEq)]
pub struct PlayerConfig {
    /// The source's address (clock probes, NACKs, reports and hellos go there).
    pub source: SocketAddr,
    /// Stream to join (0: the source's first).
    pub stream_id: u32,
    /// This player's name, sent in its `Hello`.
    pub name: String,
    /// Send `Hello`s to be added to the source's unicast fan-out. `false` for multicast
    /// listeners: their `Hello`s only ask for the stream description.
    pub join: bool,
    /// Per-device offset: positive plays later, negative earlier (to compensate a speaker's
    /// own hidden latency).
    pub device_offset: Nanos,
    /// Sync mode: play at this group latency instead of the source's (zones).
    pub latency_override: Option<Nanos>,
    /// Steady-state clock probe interval.
    pub probe_interval: Nanos,
    /// Probe interval during the burst after joining.
    pub burst_interval: Nanos,
    /// Probes in the join burst.
    pub burst_probes: u32,
    /// Receiver report interval.
    pub report_interval: Nanos,
    /// The source is considered lost after this much silence.
    pub source_timeout: Nanos,
    /// `Hello` repeat interval while joining.
    pub hello_interval: Nanos,
    /// Jitter buffer size in packets.
    pub buffer_packets: usize,
    /// Live mode: safety margin added to the measured arrival spread.
    pub live_margin: Nanos,
    /// Send NACKs for missing packets.
    pub nack: bool,
    /// Clock estimator tunables.
    pub clock: ClockConfig,
    /// Playback starts only once the clock estimate spans this long (the join burst gives a
    /// sample every 10 ms): early estimates wobble by tens of µs, and a jump after the first
    /// sample is heard would be audible.
    pub lock_span: Nanos,
}

impl PlayerConfig {
    /// Defaults for joining the stream at `source`.
    pub fn new(source: SocketAddr) -> Self {
        PlayerConfig {
            source,
            stream_id: 0,
            name: String::new(),
            join: true,
            device_offset: Nanos::ZERO,
            latency_override: None,
            probe_interval: Nanos::from_millis(50),
            burst_interval: Nanos::from_millis(10),
            burst_probes: 100,
            report_interval: Nanos::from_secs(1),
            source_timeout: Nanos::from_secs(2),
            hello_interval: Nanos::from_millis(500),
            buffer_packets: 1024,
            live_margin: Nanos::from_micros(250),
            nack: true,
            clock: ClockConfig::default(),
            lock_span: Nanos::from_millis(250),
        }
    }
}

/// The stream as announced by its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream id.
    pub stream_id: u32,
    /// Identity of the stream across its source's restarts.
    pub origin: u64,
    /// When this run of the stream began (the source's wall clock, ns).
    pub epoch: u64,
    /// Rate, channels, codec and packet size.
    pub format: StreamFormat,
    /// Playout mode.
    pub mode: Mode,
    /// Source's group latency.
    pub group_latency: Nanos,
    /// FEC block shape.
    pub fec: Option<(u8, u8)>,
    /// Stream name.
    pub name: String,
}

/// Something the driver may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlayerEvent {
    /// The stream was announced (first time, or after the source restarted).
    Joined(StreamInfo),
    /// The source refused us.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// The source's message.
        message: String,
    },
    /// The source fell silent.
    SourceLost,
    /// The source is heard again (same run).
    SourceBack,
    /// The source ended the stream.
    Ended,
}

/// Counters of a player.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayerStats {
    /// Audio packets received (first copies).
    pub received: u64,
    /// Duplicate packets (already held).
    pub duplicates: u64,
    /// Packets found missing when later ones arrived.
    pub lost: u64,
    /// Missing packets rebuilt by FEC.
    pub recovered_fec: u64,
    /// Missing packets recovered by retransmission.
    pub recovered_retx: u64,
    /// Missing packets that simply arrived late (reordering).
    pub reordered: u64,
    /// Packets arriving after their playout.
    pub late: u64,
    /// Packets concealed at playout.
    pub concealed: u64,
    /// Packets played as silence because nothing newer had arrived (the source paused or
    /// ended, or the network is down): not losses.
    pub stalled: u64,
    /// Packets skipped by a forward resync.
    pub skipped: u64,
    /// NACK datagrams sent.
    pub nacks_sent: u64,
    /// Hard resyncs of the playout position.
    pub resyncs: u64,
    /// Authenticated datagrams from another sender than the run of the stream this player
    /// follows (relayed from another stream, replayed from an earlier run, or an older run
    /// announcing itself while a newer one plays): dropped without touching playout.
    pub foreign: u64,
    /// Source restarts followed (a newer run of the same stream announced itself).
    pub restarts: u64,
    /// Datagrams dropped, by reason.
    pub rx_errors: RxErrorCounts,
    /// Packets the playout half did not take in time (it stopped reading for a whole
    /// buffer's worth): dropped before playout, concealed there.
    pub handoff_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No stream description yet.
    Joining,
    /// Hearing the source.
    Streaming,
    /// The source went silent.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    Hello,
    Probe,
    Report,
    Nack { base: SeqNo, mask: u64 },
    Bye,
}

/// The interarrival jitter of a stream's packets (RFC 3550, 6.4.1): how much the transit time
/// (arrival on this clock minus the source's send time on its own) varies from one packet to
/// the next, smoothed over ~16 packets. The clocks' offset cancels in the difference; their
/// skew (ppm) is far below a nanosecond per packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArrivalJitter {
    last_transit: Option<i64>,
    /// The estimate, ns, scaled by 16 (RFC 3550's integer form), once two packets arrived.
    j16: Option<i64>,
}

impl ArrivalJitter {
    /// Transit differences above this are a gap in the stream (a pause, a source restart), not
    /// jitter: they restart the estimate's reference without entering it.
    const GAP: i64 = 1_000_000_000;

    /// A packet sent at `sent` (the source's stream time) arrived at `arrived` (local time).
    pub fn arrival(&mut self, arrived: LocalTime, sent: StreamTime) {
        // Minus the transit: only its changes count.
        let transit = sent.offset_from(arrived).0;
        if let Some(last) = self.last_transit.replace(transit) {
            let d = transit.saturating_sub(last).saturating_abs();
            if d < Self::GAP {
                let j16 = self.j16.get_or_insert(0);
                *j16 += d - (*j16 + 8) / 16;
            }
        }
    }

    /// The estimate, once two packets arrived.
    pub fn get(&self) -> Option<Nanos> {
        self.j16.map(|j| Nanos(j / 16))
    }

    /// Forgets everything (another stream).
    pub fn reset(&mut self) {
        *self = ArrivalJitter::default();
    }
}

/// Live-mode latency: the spread of arrivals plus how far ahead the device asks for audio.
#[derive(Debug)]
pub(crate) struct LiveLatency {
    /// Per 200 ms: the two largest latenesses.
    buckets: [(i64, Nanos, Nanos); 10],
    lead: Nanos,
    samples: u64,
    current: Option<Nanos>,
    lower_since: Option<LocalTime>,
}

impl LiveLatency {
    const BUCKET: i64 = 200_000_000;

    pub(crate) fn new() -> Self {
        LiveLatency {
            buckets: [(i64::MIN, Nanos::ZERO, Nanos::ZERO); 10],
            lead: Nanos::ZERO,
            samples: 0,
            current: None,
            lower_since: None,
        }
    }

    pub(crate) fn arrival(&mut self, now: LocalTime, lateness: Nanos) {
        let b = now.0 as i64 / Self::BUCKET;
        let slot = &mut self.buckets[(b as usize) % self.buckets.len()];
        if slot.0 != b {
            *slot = (b, lateness, Nanos(i64::MIN));
        } else if lateness > slot.1 {
            slot.2 = slot.1;
            slot.1 = lateness;
        } else if lateness > slot.2 {
            slot.2 = lateness;
        }
        self.samples += 1;
    }

    /// The second-largest lateness of the last 2 s: one packet delayed by a hiccup is
    /// concealed rather than added to every packet's latency; two are not.
    fn spread(&self, now: LocalTime) -> Nanos {
        let b = now.0 as i64 / Self::BUCKET;
        let (mut first, mut second) = (Nanos(i64::MIN), Nanos(i64::MIN));
        for &(k, m1, m2) in &self.buckets {
            if b.saturating_sub(k) >= self.buckets.len() as i64 {
                continue;
            }
            for m in [m1, m2] {
                if m > first {
                    second = first;
                    first = m;
                } else if m > second {
                    second = m;
                }
            }
        }
        if second.0 == i64::MIN { first.max(Nanos::ZERO) } else { second.max(Nanos::ZERO) }
    }

    /// Updates the latency at a render; returns it once enough arrivals were seen.
    pub(crate) fn update(&mut self, now: LocalTime, lead: Nanos, margin: Nanos) -> Option<Nanos> {
        self.lead =
            if lead > self.lead { lead } else { self.lead - Nanos((self.lead - lead).0 / 1000) };
        if self.samples < 20 {
            return None;
        }
        let wanted = self.spread(now) + self.lead + margin;
        let current = match self.current {
            None => wanted,
            Some(c) if wanted > c => wanted,
            Some(c) if wanted + margin < c => {
                // After 2 s of lower need: far too high (a start-up transient) drops at once
                // (one resync); a little too high comes down by 100 µs/s (inaudible slewing).
                let since = *self.lower_since.get_or_insert(now);
                if now - since <= Nanos::from_secs(2) {
                    c
                } else if c - wanted > Nanos::from_millis(5) {
                    self.lower_since = None;
                    wanted
                } else {
                    c - Nanos::from_micros(1)
                }
            }
            Some(c) => {
                self.lower_since = None;
                c
            }
        };
        self.current = Some(current);
        Some(current)
    }
}

/// The network half of a player (see the module docs).
#[derive(Debug)]
pub struct PlayerSession {
    config: PlayerConfig,
    security: Security,
    sender: u128,
    packet_number: u64,
    link: Link,
    info: Option<StreamInfo>,
    source_sender: Option<u128>,
    /// The followed stream's origin and epoch (from the adopted run's announce).
    origin: Option<u64>,
    epoch: u64,
    /// When the followed run was adopted: clock replies to probes sent before are not ours.
    adopted_at: LocalTime,
    /// While joining: the sender whose clock replies the estimator holds (kept if that run is
    /// the one adopted, dropped otherwise).
    probe_sender: Option<u128>,
    /// The source's return-routability cookie, echoed in our `Hello`s.
    cookie: u64,
    /// The source confirmed our cookie: we are served (until the run changes).
    proven: bool,
    last_heard: LocalTime,
    clock: ClockEstimator,
    probe_id: u32,
    probes_sent: u32,
    next_probe: LocalTime,
    next_report: LocalTime,
    next_hello: LocalTime,
    srtt: Option<Nanos>,
    jitter: JitterBuffer,
    fec: FecDecoder,
    /// Packets rebuilt by FEC, held until they are inserted into the jitter buffer.
    fec_scratch: Vec<Held>,
    /// Where playout stands, as it last said (the frame it played, the latency it adds, its
    /// render lead, its counters): NACK deadlines and reports are dated with it.
    reference: Option<(MediaTime, StreamTime)>,
    extra: Nanos,
    lead: Nanos,
    played: PlayoutCounts,
    /// The run of the stream playout is told about: its reports of an older one are stale.
    generation: u64,
    playback: NetEnds,
    outgoing: VecDeque<Outgoing>,
    events: VecDeque<PlayerEvent>,
    replay: ReplayGuard,
    stats: PlayerStats,
    arrivals: ArrivalJitter,
}

impl PlayerSession {
    /// A new player: its network half and its playout half, to be owned by one thread each.
    /// `random` is its sender id (128 bits of OS randomness in a node, a seed in simulation);
    /// `now` is the local time.
    pub fn new(
        config: PlayerConfig,
        security: Security,
        random: u128,
        now: LocalTime,
    ) -> (Self, Playback) {
        let mut outgoing = VecDeque::new();
        outgoing.push_back(Outgoing::Hello);
        let (ends, playback) = playback::rings(&config);
        let session = PlayerSession {
            security,
            sender: crate::sender_id(random),
            packet_number: 0,
            link: Link::Joining,
            info: None,
            source_sender: None,
            origin: None,
            epoch: 0,
            adopted_at: now,
            probe_sender: None,
            cookie: 0,
            proven: false,
            last_heard: now,
            clock: ClockEstimator::new(config.clock),
            probe_id: 0,
            probes_sent: 0,
            next_probe: now,
            next_report: now + config.report_interval,
            next_hello: now + config.hello_interval.min(Nanos::from_millis(100)),
            srtt: None,
            jitter: JitterBuffer::new(config.buffer_packets, config.stream_id, 1),
            fec: FecDecoder::new(64),
            fec_scratch: Vec::new(),
            reference: None,
            extra: Nanos::ZERO,
            lead: Nanos::ZERO,
            played: PlayoutCounts::default(),
            generation: 0,
            playback: ends,
            outgoing,
            events: VecDeque::new(),
            replay: ReplayGuard::default(),
            stats: PlayerStats::default(),
            arrivals: ArrivalJitter::default(),
            config,
        };
        (session, playback)
    }

    /// Takes in where playout stands (its latest report). Every `handle_*` does it first.
    pub fn absorb(&mut self) {
        let Some(r) = self.playback.latest() else { return };
        self.extra = r.extra;
        self.lead = r.lead;
        self.played = r.counts;
        if r.generation == self.generation {
            if r.reference.is_some() {
                self.reference = r.reference;
            }
            if let Some(n) = r.next_out {
                self.jitter.advance_to(n);
            }
        }
    }

    /// Items waiting for room in the ring to playout.
    #[cfg(test)]
    pub(crate) fn handoff_waiting(&self) -> usize {
        self.playback.waiting()
    }

    /// Hands over what waits for playout (its ring was full).
    pub fn flush(&mut self) {
        self.playback.flush();
    }

    fn set_link(&mut self, link: Link) {
        let was = self.link == Link::Streaming;
        self.link = link;
        if was != (link == Link::Streaming) {
            self.playback.send(Handoff::Streaming(link == Link::Streaming));
        }
    }

    /// The source's address.
    pub fn source(&self) -> SocketAddr {
        self.config.source
    }
    /// The stream, once announced.
    pub fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
    /// The clock estimate, once a probe came back.
    pub fn clock(&self) -> Option<&ClockEstimate> {
        self.clock.estimate()
    }
    /// Changes the keys (a rotation): reports and NACKs are sealed with the new sending key,
    /// datagrams under any key of `security` are accepted.
    pub fn set_security(&mut self, security: Security) {
        self.security = security;
    }

    /// Counters since the session started (playout's as it last said).
    pub fn stats(&self) -> PlayerStats {
        let mut s = self.stats;
        s.concealed = self.played.concealed;
        s.stalled = self.played.stalled;
        s.skipped = self.played.skipped;
        s.resyncs = self.played.resyncs;
        s.late += self.played.late;
        s.handoff_dropped = self.playback.dropped;
        s
    }
    /// Packets buffered ahead of playout (present or missing).
    pub fn buffered(&self) -> u64 {
        self.jitter.depth()
    }
    /// The interarrival jitter of the stream's packets (RFC 3550), once two arrived.
    pub fn arrival_jitter(&self) -> Option<Nanos> {
        self.arrivals.get()
    }
    /// Latency added to presentation times: the zone override (sync) or the adaptive
    /// latency (live).
    pub fn extra_latency(&self) -> Nanos {
        self.extra
    }
    /// Capture-to-playout latency this player plays at.
    pub fn latency(&self) -> Option<Nanos> {
        self.info.as_ref().map(|i| i.group_latency + self.extra + self.config.device_offset)
    }
    /// True while the source is heard.
    pub fn is_streaming(&self) -> bool {
        self.link == Link::Streaming
    }

    /// Changes the per-device offset (takes effect at playout's next render, by slewing or a
    /// jump).
    pub fn set_device_offset(&mut self, offset: Nanos) {
        self.config.device_offset = offset;
        self.playback.send(Handoff::DeviceOffset(offset));
    }

    /// Changes the sync-mode latency override (playout moves by the difference at its next
    /// render).
    pub fn set_latency_override(&mut self, latency: Option<Nanos>) {
        self.config.latency_override = latency;
        self.playback.send(Handoff::LatencyOverride(latency));
    }

    /// Leaves the stream: a `Bye` goes to the source.
    pub fn close(&mut self) {
        self.outgoing.push_back(Outgoing::Bye);
    }

    fn reset_stream(&mut self) {
        self.jitter.clear();
        self.fec = FecDecoder::new(64);
        self.reference = None;
        self.clock.reset();
        self.arrivals.reset();
        self.probes_sent = 0;
        self.info = None;
        self.generation += 1;
        self.playback.send(Handoff::Reset { generation: self.generation });
    }

    /// Feeds a received datagram (decrypted in place in `buf`).
    pub fn handle_datagram(&mut self, now: LocalTime, from: SocketAddr, buf: &mut [u8]) {
        self.absorb();
        self.on_datagram(now, from, buf);
        self.playback.clock(self.clock.estimate());
    }

    fn on_datagram(&mut self, now: LocalTime, from: SocketAddr, buf: &mut [u8]) {
        let (preamble, packet) = match wire::decode(buf, &self.security, &mut self.replay) {
            Ok(x) => x,
            Err(e) => {
                self.stats.rx_errors.count(e);
                return;
            }
        };
        // A refusal names the run of ours it answers: an old one replayed is not for us.
        if let Packet::Refuse(r) = packet {
            if r.to == self.sender && from == self.config.source {
                self.events.push_back(PlayerEvent::Refused {
                    reason: r.reason,
                    message: r.message.to_owned(),
                });
            } else {
                self.stats.foreign += 1;
            }
            return;
        }
        if from != self.config.source
            && !matches!(packet, Packet::Audio(_) | Packet::Repair(_) | Packet::Announce(_))
        {
            return;
        }
        // Only the followed run of the stream is heard. The first is the first announce from
        // the source's address; another sender takes over only by an authenticated announce
        // from there of the same stream (its origin) that is newer (its epoch), or after the
        // followed run fell silent: relayed packets of another stream and replays of an
        // earlier run are counted and dropped, and playout never notices.
        if self.source_sender != Some(preamble.sender) {
            // Joining: the source's clock replies count already (the clock locks while the
            // join completes), provisionally, for the run that sent them.
            if let Packet::ClockReply(r) = packet
                && self.source_sender.is_none()
                && from == self.config.source
            {
                if self.probe_sender.is_some_and(|s| s != preamble.sender) {
                    self.clock.reset();
                }
                self.probe_sender = Some(preamble.sender);
                self.on_clock_reply(now, &r);
                return;
            }
            let Packet::Announce(a) = &packet else {
                self.stats.foreign += 1;
                return;
            };
            if from != self.config.source || !self.may_follow(a) {
                self.stats.foreign += 1;
                return;
            }
            if self.source_sender.is_some() {
                self.reset_stream();
                self.set_link(Link::Joining);
                self.stats.restarts += 1;
                self.adopted_at = now;
            } else if self.probe_sender != Some(preamble.sender) {
                self.clock.reset();
                self.adopted_at = now;
            }
            self.source_sender = Some(preamble.sender);
            self.origin = Some(a.origin);
            self.epoch = a.epoch;
            self.cookie = 0;
            self.proven = false;
        }
        if let Packet::Announce(a) = &packet
            && a.cookie != 0
        {
            if a.cookie == self.cookie {
                self.proven = true;
            } else {
                // The source asks us to prove our address: echo its cookie at once (and
                // again while joining, in case this Hello is lost).
                self.cookie = a.cookie;
                self.proven = false;
                self.outgoing.push_back(Outgoing::Hello);
            }
        }
        self.last_heard = now;
        if self.link == Link::Lost {
            self.set_link(if self.info.is_some() { Link::Streaming } else { Link::Joining });
            self.events.push_back(PlayerEvent::SourceBack);
            self.probes_sent = 0;
            self.next_probe = now;
        }
        match packet {
            Packet::Announce(a) => self.on_announce(now, &a),
            Packet::ClockReply(r) => self.on_clock_reply(now, &r),
            Packet::Audio(frame) => self.on_audio(now, &frame),
            Packet::Repair(r) => {
                if self.info.as_ref().is_some_and(|i| i.stream_id == r.stream_id)
                    && let Some(block) = self.fec.add_repair(&r)
                {
                    self.try_fec(now, block);
                }
            }
            Packet::Bye(b) if self.info.as_ref().is_some_and(|i| i.stream_id == b.stream_id) => {
                self.events.push_back(PlayerEvent::Ended);
                self.set_link(Link::Lost);
            }
            _ => {}
        }
    }

    fn on_clock_reply(&mut self, now: LocalTime, r: &wire::ClockReply) {
        let sample = ClockSample { t1: LocalTime(r.t1), t2: r.t2, t3: r.t3, t4: now };
        // Only answers to probes sent since this run was followed (or, joining, since this
        // player started): a replayed reply echoes an older t1.
        if r.t1 <= now.0 && r.t1 >= self.adopted_at.0 && self.clock.add(sample) {
            let rtt = sample.rtt();
            self.srtt = Some(match self.srtt {
                None => rtt,
                Some(s) => s + Nanos((rtt - s).0 / 8),
            });
        }
    }

    /// Whether an announce from a sender other than the followed run may take over: the
    /// stream asked for, of the same origin as the one followed, and a newer run of it (or
    /// any run once the followed one has gone silent, as after a machine's clock reset).
    fn may_follow(&self, a: &wire::Announce<'_>) -> bool {
        if self.config.stream_id != 0 && a.stream_id != self.config.stream_id {
            return false;
        }
        if self.source_sender.is_none() {
            return true;
        }
        self.origin == Some(a.origin) && (a.epoch > self.epoch || self.link == Link::Lost)
    }

    fn on_announce(&mut self, now: LocalTime, a: &wire::Announce<'_>) {
        if self.config.stream_id != 0 && a.stream_id != self.config.stream_id {
            return;
        }
        if let Some(i) = &self.info {
            if i.epoch == a.epoch && i.stream_id == a.stream_id {
                self.set_link(Link::Streaming);
                return;
            }
            self.reset_stream();
        }
        let info = StreamInfo {
            stream_id: a.stream_id,
            origin: a.origin,
            epoch: a.epoch,
            format: a.format(),
            mode: a.mode,
            group_latency: a.group_latency,
            fec: (a.fec_data > 0).then_some((a.fec_data, a.fec_repair)),
            name: a.name.to_owned(),
        };
        self.jitter.reset_for(a.stream_id, a.frames_per_packet);
        if a.mode == Mode::Sync {
            self.jitter.set_lookback(playback::lookback(&info));
        }
        self.generation += 1;
        self.playback.send(Handoff::Joined { generation: self.generation, info: info.clone() });
        self.events.push_back(PlayerEvent::Joined(info.clone()));
        self.info = Some(info);
        self.set_link(Link::Streaming);
        // The source is here now: (re)start the join burst if no probe has come back yet.
        if self.clock.is_empty() {
            self.probes_sent = 0;
            self.next_probe = now;
        }
    }

    fn nack_delay(&self) -> Nanos {
        // Grace for reordering: a few times the path's jitter, at least 1 ms.
        let rtt = self.srtt.unwrap_or(Nanos::from_millis(2));
        Nanos::from_millis(1).max(Nanos(rtt.0 / 4))
    }

    fn on_audio(&mut self, now: LocalTime, frame: &AudioFrame<'_>) {
        self.clock.add_oneway(frame.sent, now);
        let Some(info) = &self.info else { return };
        if frame.stream_id != info.stream_id || frame.frames != info.format.frames_per_packet {
            return;
        }
        let mode = info.mode;
        let origin = if frame.retransmit { Origin::Retransmit } else { Origin::Original };
        if !frame.retransmit {
            self.arrivals.arrival(now, frame.sent);
        }
        let first_nack = now + self.nack_delay();
        let first = self.jitter.next_out().is_none();
        let result = self.jitter.insert(now, frame, origin, first_nack);
        if result.stored() {
            self.playback.send(Handoff::Packet(Held::new(frame, origin, now, first_nack)));
        }
        match result {
            Inserted::New { gap } => {
                self.stats.received += 1;
                // The first packet's look-back is not a loss (yet).
                if !first {
                    self.stats.lost += gap;
                }
            }
            Inserted::Restarted => {
                self.stats.received += 1;
                self.fec = FecDecoder::new(64);
            }
            Inserted::FilledGap => match origin {
                Origin::Retransmit => self.stats.recovered_retx += 1,
                _ => {
                    self.stats.received += 1;
                    self.stats.reordered += 1;
                }
            },
            Inserted::Duplicate => self.stats.duplicates += 1,
            Inserted::Late => self.stats.late += 1,
        }
        if self.reference.is_none() {
            self.reference = Some((frame.media, frame.presentation));
        }
        if mode == Mode::Live
            && !frame.retransmit
            && let Some(c) = self.clock.estimate()
        {
            let arrival = c.to_stream(now);
            self.playback
                .send(Handoff::Arrival { at: now, lateness: arrival - frame.presentation });
        }
        if matches!(result, Inserted::New { .. } | Inserted::FilledGap)
            && let (Some((d, _)), Some(block)) = (info.fec, self.fec.block_for(frame.seq))
            && block_of(frame.seq, d) == block
        {
            self.try_fec(now, block);
        }
    }

    fn try_fec(&mut self, now: LocalTime, block: SeqNo) {
        let Some(info) = &self.info else { return };
        let stream_id = info.stream_id;
        let jitter = &self.jitter;
        // Only a packet still to be played is worth a decode: those already played have left
        // the buffer and look missing, and decoding them back (a whole Reed–Solomon decode per
        // block) was most of the network thread's time.
        let data = info.fec.map_or(0, |(d, _)| u64::from(d));
        let next = jitter.next_out();
        let wanted = (block.0..block.0 + data)
            .map(SeqNo)
            .any(|s| next.is_none_or(|n| s >= n) && jitter.get(s).is_none());
        if !wanted {
            return;
        }
        let scratch = &mut self.fec_scratch;
        scratch.clear();
        self.fec.recover(
            stream_id,
            block,
            |s| jitter.get(s),
            |f| scratch.push(Held::new(&f, Origin::Fec, now, now)),
        );
        let restored = std::mem::take(&mut self.fec_scratch);
        for held in &restored {
            let frame = held.frame(stream_id);
            let result = self.jitter.insert(now, &frame, Origin::Fec, now);
            if result == Inserted::FilledGap {
                self.stats.recovered_fec += 1;
            }
            // (A packet rebuilt before it was even missed is held too.)
            if result.stored() {
                self.playback.send(Handoff::Packet(held.clone()));
            }
        }
        self.fec_scratch = restored;
    }

    /// Local instant at which media time `media` is due at the DAC (once the clock has an
    /// estimate and a packet arrived).
    pub fn due_at(&self, media: MediaTime) -> Option<LocalTime> {
        Some(self.timing()?.due_at(media))
    }

    /// Where the stream stands against the local clock, as a copy any thread can use: which
    /// frame plays when (see [`Timing`]). `None` until the clock has an estimate and a
    /// packet arrived.
    pub fn timing(&self) -> Option<Timing> {
        let info = self.info.as_ref()?;
        let clock = *self.clock.estimate()?;
        Some(Timing {
            sample_rate: info.format.sample_rate,
            mode: info.mode,
            reference: self.reference?,
            locked: clock.samples >= 3 && clock.span >= self.config.lock_span,
            clock,
            device_offset: self.config.device_offset,
            extra: self.extra,
        })
    }

    /// Re-locks playout now: the position controller starts over and the next block plays
    /// exactly where the clock says (a jump, not a slow slew), as after joining.
    pub fn resync(&mut self) {
        self.playback.send(Handoff::Resync);
    }

    /// See [`Timing::position_at`].
    pub fn position_at(&self, at: LocalTime) -> Option<u64> {
        self.timing()?.position_at(at)
    }

    /// See [`Timing::frame_grid`].
    pub fn frame_grid(&self, after: LocalTime) -> Option<LocalTime> {
        self.timing()?.frame_grid(after)
    }

    /// When the earliest packet awaited (heard, or missing before the first heard) is due at
    /// the DAC.
    pub fn first_due(&self) -> Option<LocalTime> {
        self.due_at(self.jitter.media_of(self.jitter.next_out()?))
    }

    /// Timers: probes, reports, hellos, NACKs, source loss.
    pub fn handle_timeout(&mut self, now: LocalTime) {
        self.absorb();
        if self.link != Link::Lost && now - self.last_heard > self.config.source_timeout {
            self.set_link(Link::Lost);
            self.events.push_back(PlayerEvent::SourceLost);
        }
        if now >= self.next_probe {
            self.outgoing.push_back(Outgoing::Probe);
            self.probes_sent += 1;
            let interval = if self.probes_sent < self.config.burst_probes {
                self.config.burst_interval
            } else if self.link == Link::Lost {
                self.config.hello_interval
            } else {
                self.config.probe_interval
            };
            self.next_probe = now + interval;
        }
        if now >= self.next_report {
            self.next_report = now + self.config.report_interval;
            if self.info.is_some() && self.link == Link::Streaming {
                self.outgoing.push_back(Outgoing::Report);
            }
        }
        if now >= self.next_hello {
            // Joining, every 100 ms: a lost Hello (or Announce) must not cost the stream's
            // opening. A lost source is asked at the configured pace.
            let interval = if self.info.is_none() || !self.proven {
                self.config.hello_interval.min(Nanos::from_millis(100))
            } else {
                self.config.hello_interval
            };
            self.next_hello = now + interval;
            if self.link != Link::Streaming || !self.proven {
                self.outgoing.push_back(Outgoing::Hello);
            }
        }
        if self.config.nack && self.link == Link::Streaming {
            self.schedule_nacks(now);
        }
    }

    fn schedule_nacks(&mut self, now: LocalTime) {
        let rtt = self.srtt.unwrap_or(Nanos::from_millis(5));
        let retry = Nanos::from_millis(2).max(rtt + Nanos(rtt.0 / 2));
        // Deadline: a missing packet is useful until the device asks for it.
        let Some(n) = self.jitter.next_out() else { return };
        let base_due = self.due_at(self.jitter.media_of(n));
        let fpp = self.info.as_ref().map_or(1, |i| i.format.frames_per_packet);
        let rate = self.info.as_ref().map_or(48_000, |i| i.format.sample_rate);
        let lead = self.lead;
        let mut nack: Option<(SeqNo, u64)> = None;
        let mut nacks = Vec::new();
        for (seq, m) in self.jitter.missing_mut() {
            if m.next_nack > now {
                continue;
            }
            let due = base_due
                .map(|d| d + Nanos::from_frames((seq.0 - n.0) * u64::from(fpp), rate) - lead);
            if due.is_some_and(|d| d - now < rtt) {
                // Too late for a retransmission to help: leave it to concealment.
                m.next_nack = LocalTime(u64::MAX);
                continue;
            }
            m.nacks += 1;
            m.next_nack = now + retry;
            match &mut nack {
                Some((base, mask)) if seq.0 >= base.0 && seq.0 - base.0 < 64 => {
                    *mask |= 1 << (seq.0 - base.0)
                }
                _ => {
                    if let Some(x) = nack.take() {
                        nacks.push(x);
                    }
                    nack = Some((seq, 1));
                }
            }
        }
        nacks.extend(nack);
        nacks.sort_unstable_by_key(|x| x.0);
        // `missing_mut` walks the ring in slot order; merge neighbours across the wrap.
        let mut merged: Vec<(SeqNo, u64)> = Vec::with_capacity(nacks.len());
        for (base, mask) in nacks {
            for i in 0..64 {
                if mask & (1 << i) == 0 {
                    continue;
                }
                let seq = base.0 + i;
                match merged.last_mut() {
                    Some((b, m)) if seq - b.0 < 64 => *m |= 1 << (seq - b.0),
                    _ => merged.push((SeqNo(seq), 1)),
                }
            }
        }
        for (base, mask) in merged {
            self.outgoing.push_back(Outgoing::Nack { base, mask });
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<LocalTime> {
        let mut t = self.next_probe.min(self.next_report).min(self.next_hello);
        if self.link != Link::Lost {
            t = t.min(self.last_heard + self.config.source_timeout + Nanos(1));
        }
        if self.config.nack
            && self.link == Link::Streaming
            && let Some(n) = self.jitter.next_nack()
        {
            t = t.min(n);
        }
        Some(t)
    }

    /// Encodes the next datagram for the source into `buf`.
    pub fn poll_transmit(&mut self, now: LocalTime, buf: &mut [u8]) -> Option<Transmit> {
        let out = self.outgoing.pop_front()?;
        self.packet_number += 1;
        let stream_id = self.info.as_ref().map_or(self.config.stream_id, |i| i.stream_id);
        let packet = match out {
            Outgoing::Hello => Packet::Hello(wire::Hello {
                stream_id: self.config.stream_id,
                name: &self.config.name,
                listen_only: !self.config.join,
                cookie: self.cookie,
            }),
            Outgoing::Probe => {
                self.probe_id = self.probe_id.wrapping_add(1);
                Packet::ClockProbe(wire::ClockProbe { id: self.probe_id, t1: now.0 })
            }
            Outgoing::Report => {
                let c = self.clock.estimate();
                Packet::Report(wire::Report {
                    stream_id,
                    received: self.stats.received,
                    lost: self.stats.lost,
                    recovered_fec: self.stats.recovered_fec,
                    recovered_retx: self.stats.recovered_retx,
                    concealed: self.stats.concealed,
                    offset_ns: c.map_or(0, |c| c.offset.0),
                    skew_ppb: c.map_or(0, |c| (c.skew * 1e9) as i64),
                    uncertainty_ns: c.map_or(0, |c| c.uncertainty.0 as u64),
                    buffer_ns: self.latency().map_or(0, |l| l.0.max(0) as u64),
                })
            }
            Outgoing::Nack { base, mask } => {
                self.stats.nacks_sent += 1;
                Packet::Nack(wire::Nack { stream_id, base, mask })
            }
            Outgoing::Bye => Packet::Bye(wire::Bye { stream_id }),
        };
        let len =
            wire::encode(&packet, self.sender, self.packet_number, &self.security, buf).ok()?;
        Some(Transmit { destination: crate::Destination::To(self.config.source), len })
    }

    /// Drains events.
    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.events.pop_front()
    }
}

/// Where a player's stream stands against its local clock (a copy, as the network half last
/// knew it): which stream frame reaches the DAC when. Every player of a stream at one group
/// latency names the same frame at the same instant, so zone-wide changes are scheduled on
/// it; a file output starts on its frame grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Playout mode.
    pub mode: Mode,
    /// A frame and its presentation time (the last one played, or the first heard).
    pub reference: (MediaTime, StreamTime),
    /// The clock estimate.
    pub clock: ClockEstimate,
    /// The estimate spans long enough to play by it.
    pub locked: bool,
    /// This device's delay.
    pub device_offset: Nanos,
    /// Latency playout adds to presentation times (the zone's, or live mode's).
    pub extra: Nanos,
}

impl Timing {
    /// Local instant at which media time `media` is due at the DAC.
    pub fn due_at(&self, media: MediaTime) -> LocalTime {
        let (m0, p0) = self.reference;
        let dt = Nanos(
            (((media.0 as i128) - (m0.0 as i128)) * 1_000_000_000 / i128::from(self.sample_rate))
                as i64,
        );
        self.clock.to_local(p0 + dt + self.device_offset + self.extra)
    }

    /// The stream frame due at local instant `at` before this device's own delay (the inverse
    /// of [`due_at`](Self::due_at) without the device offset): "now" for every player of the
    /// stream at once. `None` until the clock is locked.
    pub fn position_at(&self, at: LocalTime) -> Option<u64> {
        if !self.locked {
            return None;
        }
        let (m0, p0) = self.reference;
        let since = self.clock.to_stream(at) - (p0 + self.extra);
        let frames = i128::from(since.0) * i128::from(self.sample_rate) / 1_000_000_000;
        u64::try_from(i128::from(m0.0) + frames).ok()
    }

    /// The first local instant at or after `after` at which a whole media frame reaches the
    /// DAC, once the clock is locked (sync mode). A device whose phase is free, a file, starts
    /// there: its samples then *are* the stream's samples, bit-exact, with no sub-frame offset
    /// between players.
    pub fn frame_grid(&self, after: LocalTime) -> Option<LocalTime> {
        if self.mode != Mode::Sync || !self.locked {
            return None;
        }
        let (_, p0) = self.reference;
        let clock = &self.clock;
        let since = clock.to_stream(after) - (p0 + self.device_offset + self.extra);
        // Frames from the reference frame to the first one due at or after `after` (the grid
        // runs on before the stream's first frame too).
        let rate = i128::from(self.sample_rate);
        let mut frames = (i128::from(since.0) * rate).div_euclid(1_000_000_000) + 1;
        loop {
            let at = p0
                + Nanos((frames * 1_000_000_000 / rate) as i64)
                + self.device_offset
                + self.extra;
            let due = clock.to_local(at);
            // Rounding to the nanosecond may land a hair before `after`: take the next frame.
            if due >= after {
                return Some(due);
            }
            frames += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ArrivalJitter;
    use crate::time::{LocalTime, Nanos, StreamTime};

    /// Packets every 2.5 ms whose path adds `delay(i)` ns, the receiver's clock `offset` ns
    /// ahead of the source's.
    fn jitter_of(n: u64, offset: u64, delay: impl Fn(u64) -> u64) -> Option<Nanos> {
        let mut j = ArrivalJitter::default();
        for i in 0..n {
            let sent = 1_000_000_000 + i * 2_500_000;
            j.arrival(LocalTime(sent + offset + delay(i)), StreamTime(sent));
        }
        j.get()
    }

    #[test]
    fn a_steady_path_has_no_jitter_whatever_the_clocks_offset() {
        assert_eq!(jitter_of(1, 7, |_| 0), None, "one packet says nothing yet");
        assert_eq!(jitter_of(1000, 123_456_789, |_| 400_000), Some(Nanos(0)));
    }

    #[test]
    fn uniform_delay_reads_a_third_of_its_width() {
        // |D| of two uniform delays on [0, w) averages w/3 (RFC 3550's estimator is its mean).
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let delays: Vec<u64> = (0..20_000).map(|_| rand() % 3_000_000).collect();
        let mut j = ArrivalJitter::default();
        let mut sum = 0.0;
        for (i, d) in delays.iter().enumerate() {
            let sent = 1_000_000_000 + i as u64 * 2_500_000;
            j.arrival(LocalTime(sent + 5_000 + d), StreamTime(sent));
            if i >= 1_000 {
                sum += j.get().unwrap().0 as f64;
            }
        }
        let mean = sum / 19_000.0;
        assert!((mean / 1e6 - 1.0).abs() < 0.05, "mean estimate {mean} ns, expected ~1 ms");
    }

    #[test]
    fn a_pause_restarts_the_reference_without_counting_as_jitter() {
        let j = jitter_of(200, 0, |i| if i < 100 { 0 } else { 5_000_000_000 });
        assert_eq!(j, Some(Nanos(0)));
        // An alternating ±0.5 ms path reads ~1 ms (every difference is 1 ms).
        let j = jitter_of(500, 0, |i| (i % 2) * 1_000_000).unwrap();
        assert!((j.0 - 1_000_000).abs() < 20_000, "{j:?}");
    }
}
