//! The playout half of a player: which samples go to the DAC, and when.
//!
//! A player is two objects with one owner each (as quinn and str0m give their protocol object
//! one owner): the network half, [`PlayerSession`], owns the socket side — the wire, the
//! replay window, the clock estimator, loss recovery and the jitter buffer it NACKs from — and
//! [`Playback`] owns playout — its own copy of the packets in order, the position controller
//! ([`PlayoutScheduler`]), the live latency and the device's delay. They talk through two
//! lock-free rings ([`rtrb`]), one each way, and nothing else:
//! - network → playout: the stream's description when it is joined, each packet once it is
//!   held (copied: the payload moves with it), the clock estimate when it changes, the
//!   arrival spread (live mode), whether the source is heard, and the commands that move
//!   playout (device delay, zone latency, resync);
//! - playout → network: where playout stands (its cursor, the frame it last played, the
//!   latency it adds and its render lead) and its counters, latest wins.
//!
//! The network half uses what comes back to stop NACKing what was played and to date NACK
//! deadlines; a copy that is a few milliseconds old only makes it NACK a packet already
//! concealed. Decoding happens on the playout side without any lock: the packets are its own.
//!
//! [`Coupled`] drives both halves on one thread, exchanging everything before each call:
//! the simulator and the tests run the very objects a node runs on two threads.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::Transmit;
use crate::clock::ClockEstimate;
use crate::crypto::Security;
use crate::jitter::{Inserted, JitterBuffer, Origin, Playout};
use crate::player::{
    LiveLatency, PlayerConfig, PlayerEvent, PlayerSession, PlayerStats, StreamInfo, Timing,
};
use crate::playout::{PlayoutConfig, PlayoutScheduler, Render};
use crate::time::{LocalTime, MediaTime, Nanos, SeqNo, StreamTime};
use crate::wire::{AudioFrame, Codec, MAX_PAYLOAD, Mode};

/// A packet on its way from the network half to playout (its payload copied in: nothing is
/// allocated per packet).
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) seq: SeqNo,
    pub(crate) media: MediaTime,
    pub(crate) presentation: StreamTime,
    pub(crate) codec: Codec,
    pub(crate) channels: u8,
    pub(crate) frames: u16,
    pub(crate) origin: Origin,
    pub(crate) at: LocalTime,
    pub(crate) first_nack: LocalTime,
    pub(crate) len: usize,
    pub(crate) payload: [u8; MAX_PAYLOAD],
}

impl Held {
    pub(crate) fn new(
        frame: &AudioFrame<'_>,
        origin: Origin,
        at: LocalTime,
        first_nack: LocalTime,
    ) -> Self {
        let len = frame.payload.len().min(MAX_PAYLOAD);
        let mut payload = [0u8; MAX_PAYLOAD];
        payload[..len].copy_from_slice(&frame.payload[..len]);
        Held {
            seq: frame.seq,
            media: frame.media,
            presentation: frame.presentation,
            codec: frame.codec,
            channels: frame.channels,
            frames: frame.frames,
            origin,
            at,
            first_nack,
            len,
            payload,
        }
    }

    pub(crate) fn frame(&self, stream_id: u32) -> AudioFrame<'_> {
        AudioFrame {
            stream_id,
            seq: self.seq,
            media: self.media,
            presentation: self.presentation,
            sent: StreamTime(0),
            codec: self.codec,
            channels: self.channels,
            frames: self.frames,
            retransmit: self.origin == Origin::Retransmit,
            payload: &self.payload[..self.len],
        }
    }
}

/// What the network half tells playout (see the module docs).
// Items travel by value so that the ring, allocated once, is all the memory a packet needs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Handoff {
    /// A stream was joined (its run number for [`Report`]s): playout starts over on it.
    Joined { generation: u64, info: StreamInfo },
    /// The stream was dropped (the source restarted): playout stops until the next `Joined`.
    Reset { generation: u64 },
    /// Whether the source is heard.
    Streaming(bool),
    /// A packet now held (received, retransmitted or rebuilt).
    Packet(Held),
    /// Live mode: how late a packet arrived against its presentation time.
    Arrival { at: LocalTime, lateness: Nanos },
    /// The clock estimate changed.
    Clock(Option<ClockEstimate>),
    /// The device's delay changed.
    DeviceOffset(Nanos),
    /// The zone's latency changed.
    LatencyOverride(Option<Nanos>),
    /// Re-lock playout at once.
    Resync,
}

/// What playout counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayoutCounts {
    /// Packets concealed at playout.
    pub concealed: u64,
    /// Packets played as silence because nothing newer had arrived.
    pub stalled: u64,
    /// Packets skipped by a forward resync.
    pub skipped: u64,
    /// Hard resyncs of the playout position (of the stream playing).
    pub resyncs: u64,
    /// Packets handed over after playout had passed them.
    pub late: u64,
}

/// Where playout stands, for the network half (latest wins).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// The [`Handoff::Joined`] run this describes (cursor and reference are per run).
    pub(crate) generation: u64,
    pub(crate) next_out: Option<SeqNo>,
    pub(crate) reference: Option<(MediaTime, StreamTime)>,
    pub(crate) extra: Nanos,
    pub(crate) lead: Nanos,
    pub(crate) counts: PlayoutCounts,
}

/// The network half's ends of the two rings.
#[derive(Debug)]
pub(crate) struct NetEnds {
    to_playback: Producer<Handoff>,
    from_playback: Consumer<Report>,
    /// Items the ring had no room for yet, in order.
    outbox: VecDeque<Handoff>,
    /// Items past which the outbox drops its oldest packets while playout is not reading.
    outbox_limit: usize,
    /// The latest clock estimate not yet handed over, and the last one handed over.
    pending_clock: Option<Option<ClockEstimate>>,
    sent_clock: Option<ClockEstimate>,
    /// Packets (and arrivals) dropped because playout did not read for too long.
    pub(crate) dropped: u64,
}

impl NetEnds {
    /// Hands an item over (after those waiting). Only if playout has not read for a whole
    /// buffer's worth does a packet go: the oldest waiting (stale by then; what playout needs
    /// when it reads again is the newest), counted.
    pub(crate) fn send(&mut self, item: Handoff) {
        // Nothing waiting: straight into the ring (the outbox only keeps the order when the
        // ring is full).
        let item = match self.outbox.is_empty() {
            true => match self.to_playback.push(item) {
                Ok(()) => return self.flush(),
                Err(PushError::Full(item)) => item,
            },
            false => item,
        };
        let bulk = |h: &Handoff| matches!(h, Handoff::Packet(_) | Handoff::Arrival { .. });
        if bulk(&item)
            && self.outbox.len() >= self.outbox_limit
            && let Some(oldest) = self.outbox.iter().position(bulk)
        {
            self.outbox.remove(oldest);
            self.dropped += 1;
        }
        self.outbox.push_back(item);
        self.flush();
    }

    /// Hands the clock estimate over if it changed (latest wins).
    pub(crate) fn clock(&mut self, estimate: Option<&ClockEstimate>) {
        let c = estimate.copied();
        if self.pending_clock.is_some() || c != self.sent_clock {
            self.pending_clock = Some(c);
        }
        self.flush();
    }

    /// Pushes what waits, in order; the clock goes last (it is the latest state).
    pub(crate) fn flush(&mut self) {
        while let Some(item) = self.outbox.pop_front() {
            if let Err(PushError::Full(item)) = self.to_playback.push(item) {
                self.outbox.push_front(item);
                return;
            }
        }
        if let Some(c) = self.pending_clock
            && self.to_playback.push(Handoff::Clock(c)).is_ok()
        {
            self.sent_clock = c;
            self.pending_clock = None;
        }
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.outbox.len()
    }

    /// The latest report playout sent, if any came.
    pub(crate) fn latest(&mut self) -> Option<Report> {
        let mut last = None;
        while let Ok(r) = self.from_playback.pop() {
            last = Some(r);
        }
        last
    }
}

/// The two ends for a player of `config` (rings sized from its jitter buffer).
pub(crate) fn rings(config: &PlayerConfig) -> (NetEnds, Playback) {
    let packets = config.buffer_packets.max(64);
    let (to_playback, from_net) = RingBuffer::new(packets + 64);
    let (to_net, from_playback) = RingBuffer::new(256);
    let net = NetEnds {
        to_playback,
        from_playback,
        outbox: VecDeque::new(),
        outbox_limit: packets,
        pending_clock: None,
        sent_clock: None,
        dropped: 0,
    };
    let playback = Playback {
        config: config.clone(),
        from_net,
        to_net,
        generation: 0,
        info: None,
        streaming: false,
        clock: None,
        jitter: JitterBuffer::new(config.buffer_packets, config.stream_id, 1),
        reference: None,
        scheduler: None,
        live: LiveLatency::new(),
        extra: Nanos::ZERO,
        lead: Nanos::ZERO,
        counts: PlayoutCounts::default(),
        dirty: false,
    };
    (net, playback)
}

/// The playout half of a player (see the module docs): owned by whoever feeds the device.
///
/// Once per device callback (`dac_time` = when its first frame is heard):
/// ```text
/// if let Some(r) = playback.render(now, dac_time, frames) {
///     while let Some(p) = playback.next_frame(r.end(frames) + margin) { decode or conceal p }
///     playback.publish();
///     resample from r.position by r.step
/// } else { silence }
/// ```
#[derive(Debug)]
pub struct Playback {
    config: PlayerConfig,
    from_net: Consumer<Handoff>,
    to_net: Producer<Report>,
    generation: u64,
    info: Option<StreamInfo>,
    streaming: bool,
    clock: Option<ClockEstimate>,
    jitter: JitterBuffer,
    reference: Option<(MediaTime, StreamTime)>,
    scheduler: Option<PlayoutScheduler>,
    live: LiveLatency,
    extra: Nanos,
    lead: Nanos,
    counts: PlayoutCounts,
    /// Something changed since the last report.
    dirty: bool,
}

impl Playback {
    /// Takes in what the network half handed over. [`render`](Self::render) does it first; a
    /// thread holding the playback before the device starts calls it so the ring never fills.
    pub fn absorb(&mut self) {
        while let Ok(item) = self.from_net.pop() {
            self.take(item);
        }
    }

    fn take(&mut self, item: Handoff) {
        match item {
            Handoff::Joined { generation, info } => {
                self.generation = generation;
                self.jitter.reset_for(info.stream_id, info.format.frames_per_packet);
                if info.mode == Mode::Sync {
                    self.jitter.set_lookback(lookback(&info));
                }
                let mut pc = PlayoutConfig::new(info.format.sample_rate);
                if info.mode == Mode::Live {
                    pc.resync_threshold = Nanos::from_millis(2);
                }
                self.scheduler = Some(PlayoutScheduler::new(pc));
                self.reference = None;
                self.live = LiveLatency::new();
                self.info = Some(info);
            }
            Handoff::Reset { generation } => {
                self.generation = generation;
                self.jitter.clear();
                self.reference = None;
                self.scheduler = None;
                self.live = LiveLatency::new();
                self.info = None;
            }
            Handoff::Streaming(s) => self.streaming = s,
            Handoff::Packet(h) => {
                let stream_id = self.info.as_ref().map_or(0, |i| i.stream_id);
                let frame = h.frame(stream_id);
                if self.jitter.insert(h.at, &frame, h.origin, h.first_nack) == Inserted::Late {
                    self.counts.late += 1;
                }
                if self.reference.is_none() && h.origin != Origin::Fec {
                    self.reference = Some((h.media, h.presentation));
                }
            }
            Handoff::Arrival { at, lateness } => self.live.arrival(at, lateness),
            Handoff::Clock(c) => self.clock = c,
            Handoff::DeviceOffset(d) => self.config.device_offset = d,
            Handoff::LatencyOverride(l) => self.config.latency_override = l,
            Handoff::Resync => {
                if let Some(s) = self.scheduler.as_mut() {
                    s.reset();
                }
            }
        }
        self.dirty = true;
    }

    /// Tells the network half where playout stands (if anything changed). A full ring keeps
    /// the news for the next call.
    pub fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.counts.resyncs = self.scheduler.as_ref().map_or(0, |s| s.resyncs());
        let report = Report {
            generation: self.generation,
            next_out: self.jitter.next_out(),
            reference: self.reference,
            extra: self.extra,
            lead: self.lead,
            counts: self.counts,
        };
        if self.to_net.push(report).is_ok() {
            self.dirty = false;
        }
    }

    /// The stream, once joined.
    pub fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    /// What playout counted.
    pub fn counts(&self) -> PlayoutCounts {
        let mut c = self.counts;
        c.resyncs = self.scheduler.as_ref().map_or(0, |s| s.resyncs());
        c
    }

    /// Latency added to presentation times: the zone override (sync) or the adaptive
    /// latency (live).
    pub fn extra_latency(&self) -> Nanos {
        self.extra
    }

    fn locked_clock(&self) -> Option<&ClockEstimate> {
        self.clock.as_ref().filter(|c| c.samples >= 3 && c.span >= self.config.lock_span)
    }

    /// Plans one device callback: `frames` output frames, the first heard at local instant
    /// `dac_time`, asked for at `now`. `None` means "play silence" (not locked, or no stream).
    pub fn render(&mut self, now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render> {
        self.absorb();
        let render = self.plan(now, dac_time, frames);
        self.publish();
        render
    }

    fn plan(&mut self, now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render> {
        let info = self.info.as_ref()?;
        if !self.streaming {
            return None;
        }
        self.dirty = true;
        let rate = info.format.sample_rate;
        let lead = (dac_time - now) + Nanos::from_frames(u64::from(frames), rate);
        self.lead =
            if lead > self.lead { lead } else { self.lead - Nanos((self.lead - lead).0 / 1000) };
        self.extra = match info.mode {
            Mode::Sync => {
                self.config.latency_override.map_or(Nanos::ZERO, |l| l - info.group_latency)
            }
            Mode::Live => self.live.update(now, lead, self.config.live_margin)?,
        };
        let clock = *self.locked_clock()?;
        let (m0, p0) = self.reference?;
        let stream_now = clock.to_stream(dac_time);
        let since = stream_now - (p0 + self.config.device_offset + self.extra);
        let target = m0.0 as f64 + since.0 as f64 * f64::from(rate) / 1e9;
        let scheduler = self.scheduler.as_mut()?;
        let first = scheduler.resyncs() == 0;
        let render = scheduler.schedule(dac_time, frames, target, 1.0 + clock.skew);
        if render.position > 0.0 {
            let position = MediaTime(render.position.floor() as u64);
            let mut skipped = self.jitter.skip_before(position);
            // A jump past everything held (playout stopped reading for a while and the
            // network half handed over only the newest) starts over at the position: what lies
            // between is gone, not to be concealed packet by packet.
            let fpp = u64::from(info.format.frames_per_packet.max(1));
            if render.resynced
                && !first
                && let Some(n) = self.jitter.next_out()
                && (n.0 + 1) * fpp <= position.0
            {
                let to = SeqNo(position.0 / fpp);
                skipped += to.0 - n.0;
                self.jitter.advance_to(to);
            }
            // Joining mid-stream drops what is already past; only later jumps lose audio.
            if render.resynced && !first {
                self.counts.skipped += skipped;
            }
        }
        Some(render)
    }

    /// The next packet to decode (or conceal) for playout up to media position `until`.
    pub fn next_frame(&mut self, until: f64) -> Option<Playout<'_>> {
        if !self.streaming || until <= 0.0 {
            return None;
        }
        let p = self.jitter.pop(MediaTime(until.ceil() as u64))?;
        self.dirty = true;
        match p {
            Playout::Frame(f) => self.reference = Some((f.media, f.presentation)),
            Playout::Missing { stalled: false, .. } => self.counts.concealed += 1,
            Playout::Missing { stalled: true, .. } => self.counts.stalled += 1,
        }
        Some(p)
    }
}

/// Packets before a sync stream's first arrival that are awaited (and NACKed) like any gap: a
/// quarter of the group latency's worth, 16 at most, so a stream's opening survives early
/// losses (the first packets heard may not be the first sent).
pub(crate) fn lookback(info: &StreamInfo) -> u64 {
    let packet = Nanos::from_frames(
        u64::from(info.format.frames_per_packet.max(1)),
        info.format.sample_rate,
    );
    ((info.group_latency.0 / packet.0.max(1)) as u64 / 4).min(16)
}

/// Both halves of a player on one thread (the simulator, tests, fuzzing): everything one half
/// says reaches the other before the next call, so it behaves as one object.
#[derive(Debug)]
pub struct Coupled {
    net: PlayerSession,
    playback: Playback,
}

impl Coupled {
    /// A new player (see [`PlayerSession::new`]).
    pub fn new(config: PlayerConfig, security: Security, random: u128, now: LocalTime) -> Self {
        let (net, playback) = PlayerSession::new(config, security, random, now);
        Coupled { net, playback }
    }

    /// The network half, caught up with playout.
    pub fn net(&mut self) -> &mut PlayerSession {
        self.playback.publish();
        self.net.absorb();
        &mut self.net
    }

    /// The playout half, caught up with the network.
    pub fn playback(&mut self) -> &mut Playback {
        self.net.flush();
        self.playback.absorb();
        &mut self.playback
    }

    /// See [`PlayerSession::handle_datagram`].
    pub fn handle_datagram(&mut self, now: LocalTime, from: SocketAddr, buf: &mut [u8]) {
        self.net().handle_datagram(now, from, buf);
    }
    /// See [`PlayerSession::handle_timeout`].
    pub fn handle_timeout(&mut self, now: LocalTime) {
        self.net().handle_timeout(now);
    }
    /// See [`PlayerSession::poll_transmit`].
    pub fn poll_transmit(&mut self, now: LocalTime, buf: &mut [u8]) -> Option<Transmit> {
        self.net().poll_transmit(now, buf)
    }
    /// See [`PlayerSession::poll_event`].
    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.net().poll_event()
    }
    /// See [`PlayerSession::poll_timeout`].
    pub fn poll_timeout(&mut self) -> Option<LocalTime> {
        self.net().poll_timeout()
    }
    /// See [`Playback::render`].
    pub fn render(&mut self, now: LocalTime, dac_time: LocalTime, frames: u32) -> Option<Render> {
        self.playback().render(now, dac_time, frames)
    }
    /// See [`Playback::next_frame`].
    pub fn next_frame(&mut self, until: f64) -> Option<Playout<'_>> {
        self.playback().next_frame(until)
    }
    /// Counters of both halves.
    pub fn stats(&mut self) -> PlayerStats {
        self.net().stats()
    }
    /// See [`PlayerSession::clock`].
    pub fn clock(&mut self) -> Option<ClockEstimate> {
        self.net().clock().copied()
    }
    /// See [`PlayerSession::buffered`].
    pub fn buffered(&mut self) -> u64 {
        self.net().buffered()
    }
    /// See [`Playback::extra_latency`].
    pub fn extra_latency(&mut self) -> Nanos {
        self.playback().extra_latency()
    }
    /// See [`PlayerSession::latency`].
    pub fn latency(&mut self) -> Option<Nanos> {
        self.net().latency()
    }
    /// See [`PlayerSession::info`].
    pub fn info(&mut self) -> Option<StreamInfo> {
        self.net().info().cloned()
    }
    /// See [`PlayerSession::timing`].
    pub fn timing(&mut self) -> Option<Timing> {
        self.net().timing()
    }
    /// See [`PlayerSession::first_due`].
    pub fn first_due(&mut self) -> Option<LocalTime> {
        self.net().first_due()
    }
    /// See [`PlayerSession::set_device_offset`].
    pub fn set_device_offset(&mut self, offset: Nanos) {
        self.net().set_device_offset(offset);
    }
    /// See [`PlayerSession::set_latency_override`].
    pub fn set_latency_override(&mut self, latency: Option<Nanos>) {
        self.net().set_latency_override(latency);
    }
    /// See [`PlayerSession::resync`].
    pub fn resync(&mut self) {
        self.net().resync();
    }
    /// See [`PlayerSession::set_security`].
    pub fn set_security(&mut self, security: Security) {
        self.net().set_security(security);
    }
    /// See [`PlayerSession::close`].
    pub fn close(&mut self) {
        self.net().close();
    }
    /// See [`PlayerSession::source`].
    pub fn source(&self) -> SocketAddr {
        self.net.source()
    }
    /// See [`PlayerSession::is_streaming`].
    pub fn is_streaming(&mut self) -> bool {
        self.net().is_streaming()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceConfig, SourceSession};
    use crate::{Destination, NetworkKey};

    const SOURCE: &str = "127.0.0.1:5000";
    const ME: &str = "127.0.0.1:6000";

    /// A source and a player's two halves driven apart, as a node drives them: the network
    /// half on every millisecond, playout only when `render` says (every 5 ms then).
    struct Apart {
        now: LocalTime,
        source: SourceSession,
        net: PlayerSession,
        playback: Playback,
        buf: Vec<u8>,
    }

    impl Apart {
        fn new(buffer_packets: usize) -> Self {
            let security = Security::encrypted(NetworkKey::from_bytes([3; 32]));
            let now = LocalTime(1_000_000_000);
            let source =
                SourceSession::new(SourceConfig::new(1, 48_000, 2), security.clone(), 5, now)
                    .expect("a valid source");
            let mut config = PlayerConfig::new(SOURCE.parse().expect("an address"));
            config.buffer_packets = buffer_packets;
            let (net, playback) = PlayerSession::new(config, security, 6, now);
            Apart { now, source, net, playback, buf: vec![0; 1500] }
        }

        /// Runs for `d`; returns what playout played (seq, concealed?) if it rendered.
        fn run(&mut self, d: Nanos, render: bool) -> Vec<(u64, bool)> {
            let me: SocketAddr = ME.parse().expect("an address");
            let mut played = Vec::new();
            let end = self.now + d;
            while self.now < end {
                self.now += Nanos::from_millis(1);
                let now = self.now;
                while self.source.wants_frame(now, Nanos::from_millis(20)) {
                    self.source.push_paced(now, &[0u8; 960]).expect("a frame");
                }
                self.source.handle_timeout(now);
                let mut to_me = Vec::new();
                while let Some(t) = self.source.poll_transmit(now, &mut self.buf) {
                    if matches!(t.destination, Destination::Fanout | Destination::To(_)) {
                        to_me.push(self.buf[..t.len].to_vec());
                    }
                }
                for mut d in to_me {
                    self.net.handle_datagram(now, SOURCE.parse().expect("an address"), &mut d);
                }
                self.net.handle_timeout(now);
                let mut to_source = Vec::new();
                while let Some(t) = self.net.poll_transmit(now, &mut self.buf) {
                    to_source.push(self.buf[..t.len].to_vec());
                }
                for mut d in to_source {
                    self.source.handle_datagram(now, me, &mut d);
                }
                if render
                    && (now.0 / 1_000_000).is_multiple_of(5)
                    && let Some(r) = self.playback.render(now, now + Nanos::from_millis(5), 240)
                {
                    while let Some(p) = self.playback.next_frame(r.end(240)) {
                        played.push(match p {
                            Playout::Frame(f) => (f.seq.0, false),
                            Playout::Missing { seq, .. } => (seq.0, true),
                        });
                    }
                    self.playback.publish();
                }
            }
            played
        }
    }

    #[test]
    fn a_playout_half_that_starts_late_still_gets_every_packet() {
        let mut p = Apart::new(1024);
        // The device takes a second to open: the network half joins, locks and holds on.
        assert!(p.run(Nanos::from_secs(1), false).is_empty());
        assert!(p.net.info().is_some(), "joined");
        let played = p.run(Nanos::from_secs(2), true);
        assert!(played.len() > 300, "played {} packets", played.len());
        assert!(played.iter().all(|&(_, concealed)| !concealed), "nothing concealed");
        assert!(played.windows(2).all(|w| w[1].0 == w[0].0 + 1), "in order, no gap");
        // Playout's cursor came back: the network half holds only what is still to play.
        assert!(p.net.buffered() < 40, "network half holds {} packets", p.net.buffered());
        assert_eq!(p.net.stats().handoff_dropped, 0);
    }

    #[test]
    fn a_playout_half_that_stops_reading_costs_a_count_not_memory_and_recovers() {
        let mut p = Apart::new(64);
        p.run(Nanos::from_millis(500), true);
        // Playout stalls for 2 s (400 packets, six times what the ring and outbox keep).
        p.run(Nanos::from_secs(2), false);
        let dropped = p.net.stats().handoff_dropped;
        assert!(dropped > 200, "dropped {dropped}");
        let waiting = p.net.handoff_waiting();
        assert!(waiting <= 64 + 8, "outbox {waiting}");
        // It reads again: what waited is the newest, so the stream plays on at once (past the
        // gap), every packet.
        let played = p.run(Nanos::from_secs(1), true);
        let concealed = played.iter().filter(|&&(_, c)| c).count();
        assert!(concealed <= 2, "{concealed} concealed after the stall: {played:?}");
        assert!(played.len() > 150, "plays again: {played:?}");
    }

    #[test]
    fn commands_reach_playout_in_order_through_the_network_half() {
        let mut p = Apart::new(1024);
        p.run(Nanos::from_secs(1), true);
        let before = p.playback.extra_latency();
        p.net.set_latency_override(Some(Nanos::from_millis(150)));
        p.net.set_device_offset(Nanos::from_millis(3));
        p.run(Nanos::from_millis(20), true);
        assert_eq!(p.playback.extra_latency() - before, Nanos::from_millis(50));
        assert_eq!(p.net.extra_latency(), Nanos::from_millis(50), "and it hears back");
        assert_eq!(p.net.latency(), Some(Nanos::from_millis(153)));
        let resyncs = p.playback.counts().resyncs;
        p.net.resync();
        p.run(Nanos::from_millis(20), true);
        assert_eq!(p.playback.counts().resyncs, resyncs + 1);
    }
}
