//! The simulated world: one source, N players, seeded links, drifting clocks and DACs, all
//! on virtual time. Nodes run the real `tutti-proto` sessions; only the sockets, clocks and
//! sound cards are simulated.
//!
//! True time is a `u64` of nanoseconds since the start of the run. Each node reads its own
//! clock `local(T) = base + offset + T·(1 + skew)`; each player's DAC consumes frames at
//! `rate·(1 + dac_ppm)` true frames per second, calling back one period ahead of playback
//! with the local instant its buffer will be heard (plus a little timestamp noise, as real
//! drivers report).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tutti_proto::jitter::Playout;
use tutti_proto::playback::Coupled;
use tutti_proto::source::SourceSession;
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::{
    Destination, LocalTime, Mode, Nanos, NetworkKey, PlayerConfig, Security, SeqNo, SourceConfig,
};

use crate::link::{Link, LinkModel};
use crate::metrics::{Outcome, PlayerRecord};
use crate::rng::{Rng, splitmix};

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name printed in the results.
    pub name: &'static str,
    /// What it shows.
    pub description: &'static str,
    /// Players.
    pub players: usize,
    /// Virtual seconds to simulate.
    pub seconds: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Sync or live.
    pub mode: Mode,
    /// Frames per packet.
    pub frames_per_packet: u16,
    /// Sample rate.
    pub sample_rate: u32,
    /// Group latency (sync mode).
    pub group_latency: Nanos,
    /// FEC block.
    pub fec: Option<(u8, u8)>,
    /// Source → player path.
    pub down: LinkModel,
    /// Player → source path.
    pub up: LinkModel,
    /// Node clock offsets are uniform in ± this many seconds.
    pub clock_offset_s: f64,
    /// Node clock skews are uniform in ± this many ppm.
    pub clock_skew_ppm: f64,
    /// DAC crystal errors are uniform in ± this many ppm.
    pub dac_ppm: f64,
    /// DAC callback period in frames.
    pub dac_period: u32,
    /// DAC timestamp noise, ± seconds (uniform).
    pub dac_noise: f64,
    /// When each player joins (seconds); missing entries join at 0.
    pub joins: Vec<f64>,
    /// Encrypt traffic (the default).
    pub encrypted: bool,
    /// Clock probe interval.
    pub probe_interval: Nanos,
    /// Send to a multicast group (players listen without joining) instead of unicast fan-out.
    pub multicast: bool,
}

/// The multicast group of multicast scenarios (a simulated address: nothing is sent).
pub const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 77, 1)), 5004);

#[derive(Clone, Copy, Debug)]
struct NodeClock {
    offset: f64,
    skew: f64,
}

impl NodeClock {
    const BASE: f64 = 1e12;

    fn local(&self, t: u64) -> LocalTime {
        LocalTime((Self::BASE + self.offset + t as f64 * (1.0 + self.skew)).round() as u64)
    }

    /// The first true instant at which this clock reads at least `l`.
    fn true_at(&self, l: LocalTime) -> u64 {
        let t = (l.0 as f64 - Self::BASE - self.offset) / (1.0 + self.skew);
        t.max(0.0).ceil() as u64 + 1
    }
}

enum Ev {
    Deliver { to: usize, from: SocketAddr, data: Vec<u8> },
    Wake { node: usize },
    Dac { player: usize },
    Capture,
    Measure,
    Join { player: usize },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Dac {
    start: u64,
    rate: f64,
    period: u32,
    next: u64,
    noise: Rng,
}

impl Dac {
    /// True time at which buffer `k` starts playing.
    fn play_time(&self, k: u64) -> u64 {
        self.start + ((k * u64::from(self.period)) as f64 * 1e9 / self.rate).round() as u64
    }
}

struct PlayerNode {
    session: Coupled,
    dac: Dac,
    segments: VecDeque<(u64, f64, f64)>,
    record: PlayerRecord,
    device_offset: Nanos,
}

enum Role {
    Source(Box<SourceSession>),
    Player(Box<PlayerNode>),
    Waiting,
}

struct Node {
    addr: SocketAddr,
    clock: NodeClock,
    wake: Option<u64>,
    role: Role,
}

/// Deterministic payload of packet `seq` (what a player must play back bit-exactly).
pub fn payload(seq: SeqNo, len: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0u64;
    while out.len() < len {
        let v = splitmix(seq.0.wrapping_mul(0x1_0000_0001) ^ i);
        out.extend_from_slice(&v.to_le_bytes());
        i += 1;
    }
    out.truncate(len);
}

struct World<'s> {
    s: &'s Scenario,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    down: Vec<Link>,
    up: Vec<Link>,
    fates: Vec<f64>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    expected: Vec<u8>,
    payload_len: usize,
    frame_ns: f64,
    captured: u64,
    events: u64,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Runs a scenario to completion.
pub fn run(s: &Scenario) -> Outcome {
    let wall = std::time::Instant::now();
    let mut rng = Rng::new(s.seed);
    let security = if s.encrypted {
        Security::encrypted(NetworkKey::from_bytes(
            rng.next_u64().to_le_bytes().repeat(4).try_into().expect("32 bytes"),
        ))
    } else {
        Security::Plaintext
    };
    let clock = |rng: &mut Rng| NodeClock {
        offset: rng.range(-s.clock_offset_s, s.clock_offset_s) * 1e9,
        skew: rng.range(-s.clock_skew_ppm, s.clock_skew_ppm) * 1e-6,
    };
    let source_clock = clock(&mut rng);
    let channels = 2u8;
    let mut cfg = SourceConfig::new(1, s.sample_rate, channels);
    cfg.name = s.name.to_owned();
    cfg.mode = s.mode;
    cfg.format.frames_per_packet = s.frames_per_packet;
    cfg.group_latency = if s.mode == Mode::Live { Nanos::ZERO } else { s.group_latency };
    cfg.fec = s.fec;
    cfg.max_receivers = s.players;
    cfg.multicast = s.multicast.then_some(GROUP);
    let payload_len = usize::from(s.frames_per_packet) * usize::from(channels) * 2;
    let source = SourceSession::new(
        cfg,
        security.clone(),
        u128::from(rng.next_u64()),
        source_clock.local(0),
    )
    .expect("scenario source config is valid");
    let mut nodes = vec![Node {
        addr: addr(5000),
        clock: source_clock,
        wake: None,
        role: Role::Source(Box::new(source)),
    }];
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut joins = Vec::new();
    for p in 0..s.players {
        nodes.push(Node {
            addr: addr(6000 + p as u16),
            clock: clock(&mut rng),
            wake: None,
            role: Role::Waiting,
        });
        down.push(Link::new(s.down, rng.fork(2 * p as u64)));
        up.push(Link::new(s.up, rng.fork(2 * p as u64 + 1)));
        joins.push(s.joins.get(p).copied().unwrap_or(0.0));
    }
    let mut w = World {
        s,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes,
        down,
        up,
        fates: Vec::new(),
        buf: vec![0; MAX_DATAGRAM],
        scratch: Vec::with_capacity(MAX_DATAGRAM),
        expected: Vec::with_capacity(MAX_DATAGRAM),
        payload_len,
        frame_ns: f64::from(s.frames_per_packet) * 1e9 / f64::from(s.sample_rate),
        captured: 0,
        events: 0,
    };
    for (p, j) in joins.iter().enumerate() {
        // Stagger simultaneous joins by a few ms, as real devices never start together.
        let at = (j * 1e9) as u64 + (rng.range(0.0, 0.02) * 1e9) as u64;
        w.push(at, Ev::Join { player: p + 1 });
    }
    let mut security_rng = rng.fork(99);
    w.push(0, Ev::Wake { node: 0 });
    if s.mode == Mode::Live {
        w.push(w.capture_time(0), Ev::Capture);
    }
    w.push(10_000_000, Ev::Measure);
    let end = (s.seconds * 1e9) as u64;
    while let Some(Reverse(q)) = w.queue.pop() {
        if q.at > end {
            break;
        }
        w.now = q.at;
        w.events += 1;
        match q.ev {
            Ev::Deliver { to, from, mut data } => {
                let local = w.nodes[to].clock.local(w.now);
                match &mut w.nodes[to].role {
                    Role::Source(src) => src.handle_datagram(local, from, &mut data),
                    Role::Player(p) => p.session.handle_datagram(local, from, &mut data),
                    Role::Waiting => {}
                }
                w.service(to);
            }
            Ev::Wake { node } => {
                if w.nodes[node].wake == Some(w.now) {
                    w.nodes[node].wake = None;
                    w.service(node);
                }
            }
            Ev::Capture => w.capture(),
            Ev::Dac { player } => w.dac(player),
            Ev::Measure => {
                w.measure();
                w.push(w.now + 10_000_000, Ev::Measure);
            }
            Ev::Join { player } => w.join(player, &security, security_rng.next_u64()),
        }
    }
    w.finish(wall.elapsed())
}

impl World<'_> {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, ev }));
    }

    fn source(&self) -> &SourceSession {
        match &self.nodes[0].role {
            Role::Source(s) => s,
            _ => unreachable!("node 0 is the source"),
        }
    }

    fn capture_time(&self, n: u64) -> u64 {
        // Frame n is complete (and pushed) when the source's clock reads start + (n+1)·frame.
        let start = NodeClock::BASE as u64 + 1_000_000_000;
        let local = LocalTime(start + (((n + 1) as f64) * self.frame_ns).round() as u64);
        self.nodes[0].clock.true_at(local)
    }

    fn capture(&mut self) {
        let n = self.captured;
        self.captured += 1;
        let start = NodeClock::BASE as u64 + 1_000_000_000;
        let captured = LocalTime(start + ((n as f64) * self.frame_ns).round() as u64);
        let now = self.nodes[0].clock.local(self.now);
        payload(SeqNo(n), self.payload_len, &mut self.scratch);
        if let Role::Source(src) = &mut self.nodes[0].role {
            src.push_captured(now, captured, &self.scratch)
                .expect("captured frames match the stream format");
        }
        self.service(0);
        let next = self.capture_time(self.captured);
        self.push(next, Ev::Capture);
    }

    fn join(&mut self, player: usize, security: &Security, random: u64) {
        let s = self.s;
        let mut cfg = PlayerConfig::new(self.nodes[0].addr);
        cfg.name = format!("player-{player}");
        cfg.probe_interval = s.probe_interval;
        cfg.join = !s.multicast;
        let local = self.nodes[player].clock.local(self.now);
        let session = Coupled::new(cfg, security.clone(), u128::from(random), local);
        let mut rng = Rng::new(random);
        let dac_ppm = rng.range(-s.dac_ppm, s.dac_ppm);
        let dac = Dac {
            start: self.now + (rng.range(0.0, 0.005) * 1e9) as u64,
            rate: f64::from(s.sample_rate) * (1.0 + dac_ppm * 1e-6),
            period: s.dac_period,
            next: 1,
            noise: rng.fork(1),
        };
        let first = dac.start;
        self.nodes[player].role = Role::Player(Box::new(PlayerNode {
            session,
            dac,
            segments: VecDeque::new(),
            record: PlayerRecord { joined_at: self.now, ..PlayerRecord::default() },
            device_offset: Nanos::ZERO,
        }));
        self.push(first, Ev::Dac { player });
        self.service(player);
    }

    /// Runs a node's timers and sends what it has to send.
    fn service(&mut self, i: usize) {
        let local = self.nodes[i].clock.local(self.now);
        let mut out: Vec<(Destination, Vec<u8>)> = Vec::new();
        let deadline = match &mut self.nodes[i].role {
            Role::Source(src) => {
                if self.s.mode == Mode::Sync {
                    while src.wants_frame(local, Nanos::from_millis(20)) {
                        payload(src.next_seq(), self.payload_len, &mut self.scratch);
                        src.push_paced(local, &self.scratch)
                            .expect("paced frames match the stream format");
                    }
                }
                src.handle_timeout(local);
                while let Some(t) = src.poll_transmit(local, &mut self.buf) {
                    out.push((t.destination, self.buf[..t.len].to_vec()));
                }
                while src.poll_event().is_some() {}
                src.poll_timeout()
            }
            Role::Player(p) => {
                p.session.handle_timeout(local);
                while let Some(t) = p.session.poll_transmit(local, &mut self.buf) {
                    out.push((t.destination, self.buf[..t.len].to_vec()));
                }
                while p.session.poll_event().is_some() {}
                p.session.poll_timeout()
            }
            Role::Waiting => None,
        };
        for (dest, data) in out {
            match dest {
                Destination::To(a) => self.send(i, a, data),
                Destination::Fanout => {
                    let targets: Vec<SocketAddr> = self.source().fanout().collect();
                    for a in targets {
                        self.send(i, a, data.clone());
                    }
                }
            }
        }
        if let Some(d) = deadline {
            let at = self.nodes[i].clock.true_at(d).max(self.now + 1);
            if self.nodes[i].wake.is_none_or(|w| at < w || w <= self.now) {
                self.nodes[i].wake = Some(at);
                self.push(at, Ev::Wake { node: i });
            }
        }
    }

    fn send(&mut self, from: usize, to: SocketAddr, data: Vec<u8>) {
        if to == GROUP {
            let members: Vec<SocketAddr> = self.nodes[1..]
                .iter()
                .filter(|n| matches!(n.role, Role::Player(_)))
                .map(|n| n.addr)
                .collect();
            for m in members {
                self.send(from, m, data.clone());
            }
            return;
        }
        let Some(j) = self.nodes.iter().position(|n| n.addr == to) else { return };
        let link = if from == 0 { &mut self.down[j - 1] } else { &mut self.up[from - 1] };
        link.transmit(self.now as f64 / 1e9, &mut self.fates);
        let from_addr = self.nodes[from].addr;
        let fates = std::mem::take(&mut self.fates);
        if let Some((&last, rest)) = fates.split_last() {
            for d in rest {
                let at = self.now + (d * 1e9).round() as u64;
                self.push(at, Ev::Deliver { to: j, from: from_addr, data: data.clone() });
            }
            let at = self.now + (last * 1e9).round() as u64;
            self.push(at, Ev::Deliver { to: j, from: from_addr, data });
        }
        self.fates = fates;
    }

    fn dac(&mut self, i: usize) {
        let clock = self.nodes[i].clock;
        let now = self.now;
        let payload_len = self.payload_len;
        let Role::Player(p) = &mut self.nodes[i].role else { return };
        let k = p.dac.next;
        p.dac.next += 1;
        let play = p.dac.play_time(k);
        let noise = p.dac.noise.range(-self.s.dac_noise, self.s.dac_noise);
        let dac_time = clock.local(play) + Nanos((noise * 1e9) as i64);
        let frames = p.dac.period;
        if let Some(r) = p.session.render(clock.local(now), dac_time, frames) {
            p.segments.push_back((k, r.position, r.step));
            while p.segments.len() > 4 {
                p.segments.pop_front();
            }
            while let Some(out) = p.session.next_frame(r.end(frames)) {
                match out {
                    Playout::Frame(f) => {
                        payload(f.seq, payload_len, &mut self.expected);
                        p.record.frames += 1;
                        if f.payload != &self.expected[..] {
                            p.record.corrupt += 1;
                        }
                    }
                    Playout::Missing { seq, .. } => {
                        if std::env::var_os("TUTTI_SIM_TRACE").is_some() {
                            eprintln!(
                                "t={:.3}s player {i} concealed {seq} stats {:?}",
                                now as f64 / 1e9,
                                p.session.stats()
                            );
                        }
                        p.record.frames += 1;
                        p.record.concealed += 1;
                    }
                }
            }
        }
        let next = p.dac.play_time(k);
        self.push(next, Ev::Dac { player: i });
    }

    fn measure(&mut self) {
        let s = self.s;
        let src_clock = self.nodes[0].clock;
        let Some(t0) = self.source().send_time(SeqNo(0)) else { return };
        let latency = if s.mode == Mode::Live { Nanos::ZERO } else { s.group_latency };
        let rate = f64::from(s.sample_rate);
        let src_local = src_clock.local(self.now);
        let trace = std::env::var_os("TUTTI_SIM_TRACE").is_some();
        for node in &mut self.nodes[1..] {
            let Role::Player(p) = &mut node.role else { continue };
            let j = (self.now.saturating_sub(p.dac.start)) as f64 * p.dac.rate / 1e9;
            let k = (j / f64::from(p.dac.period)).floor() as u64;
            let Some(&(_, pos, step)) = p.segments.iter().find(|x| x.0 == k) else { continue };
            let position = pos + (j - (k * u64::from(p.dac.period)) as f64) * step;
            if position < 0.0 {
                continue;
            }
            let extra = p.session.extra_latency() + p.device_offset;
            let intended = (src_local - (t0 + latency + extra)).0 as f64 * rate / 1e9;
            let err_us = (position - intended) / rate * 1e6;
            // Latency: from the sample's capture (its paced departure) to now.
            let captured_local = t0 + Nanos((position * 1e9 / rate) as i64);
            let captured_true = src_clock.true_at(captured_local) as f64;
            let latency_ms = (self.now as f64 - captured_true) / 1e6;
            p.record.samples.push((self.now, err_us as f32, latency_ms as f32));
            if trace && self.now % 1_000_000_000 < 10_000_000 {
                let local = node.clock.local(self.now);
                let clock_err = p.session.clock().map_or(f64::NAN, |c| {
                    (c.to_stream(local) - tutti_proto::StreamTime(src_local.0)).0 as f64 / 1e3
                });
                let skew_true = (src_clock.skew - node.clock.skew) / (1.0 + node.clock.skew) * 1e6;
                eprintln!(
                    "t={:>6.2}s {} err={err_us:>8.2}us clock_err={clock_err:>8.2}us skew_err={:>7.3}ppm unc={:?} n={:?} buf={}",
                    self.now as f64 / 1e9,
                    node.addr.port(),
                    p.session.clock().map_or(f64::NAN, |c| c.skew_ppm() - skew_true),
                    p.session.clock().map(|c| c.uncertainty),
                    p.session.clock().map(|c| c.samples),
                    p.session.buffered(),
                );
            }
        }
    }

    fn finish(self, wall: std::time::Duration) -> Outcome {
        let mut players = Vec::new();
        let (mut offered, mut dropped) = (0, 0);
        for l in self.down.iter().chain(&self.up) {
            offered += l.offered;
            dropped += l.dropped;
        }
        for n in self.nodes {
            if let Role::Player(mut p) = n.role {
                let mut r = p.record;
                r.stats = p.session.stats();
                players.push(r);
            }
        }
        Outcome::compute(self.s, players, offered, dropped, self.events, wall)
    }
}
