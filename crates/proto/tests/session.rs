//! Source and player sessions driven together over a perfect in-memory network on virtual
//! time: joining, refusal, loss recovery, source loss and restart, and what a stranger who
//! relays or replays genuine datagrams can (not) do.

use std::collections::VecDeque;
use std::net::SocketAddr;

use tutti_proto::jitter::Playout;
use tutti_proto::playback::Coupled;
use tutti_proto::player::PlayerEvent;
use tutti_proto::source::SourceEvent;
use tutti_proto::wire::RefuseReason;
use tutti_proto::{
    Destination, LocalTime, Nanos, NetworkKey, PlayerConfig, Security, SeqNo, SourceConfig,
    SourceSession,
};

const SRC: &str = "127.0.0.1:5000";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Decides whether a datagram to an address is lost.
type DropFilter = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

/// One source and some players sharing one clock, with a fixed one-way delay and a
/// programmable drop filter.
struct Net {
    now: LocalTime,
    source: SourceSession,
    players: Vec<(SocketAddr, Coupled)>,
    in_flight: VecDeque<(LocalTime, SocketAddr, SocketAddr, Vec<u8>)>,
    delay: Nanos,
    drop: DropFilter,
    security: Security,
    /// Milliseconds run so far (players render every 5th).
    tick: u64,
}

impl Net {
    fn new(config: SourceConfig) -> Net {
        let security = Security::encrypted(NetworkKey::from_bytes([4; 32]));
        let now = LocalTime(1_000_000_000);
        Net {
            now,
            source: SourceSession::new(config, security.clone(), 11, now).unwrap(),
            players: Vec::new(),
            in_flight: VecDeque::new(),
            delay: Nanos::from_micros(300),
            drop: Box::new(|_, _| false),
            security,
            tick: 0,
        }
    }

    fn add_player(&mut self, port: u16) -> usize {
        let mut cfg = PlayerConfig::new(SRC.parse().unwrap());
        cfg.name = format!("p{port}");
        let p = Coupled::new(cfg, self.security.clone(), u128::from(port), self.now);
        self.players.push((addr(port), p));
        self.players.len() - 1
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if !(self.drop)(to, data) {
            self.in_flight.push_back((self.now + self.delay, from, to, data.to_vec()));
        }
    }

    /// Runs the world for `d`, 1 ms at a time, pushing paced frames and rendering every
    /// player with 5 ms device callbacks.
    fn run(&mut self, d: Nanos, rendered: &mut [Vec<Played>]) {
        let end = self.now + d;
        let mut buf = [0u8; 1500];
        let payload = [0u8; 960];
        while self.now < end {
            self.now += Nanos::from_millis(1);
            self.tick += 1;
            let tick = self.tick;
            while self.in_flight.front().is_some_and(|x| x.0 <= self.now) {
                let (_, from, to, mut data) = self.in_flight.pop_front().unwrap();
                let now = self.now;
                if to == addr(5000) {
                    self.source.handle_datagram(now, from, &mut data);
                } else if let Some((_, p)) = self.players.iter_mut().find(|(a, _)| *a == to) {
                    p.handle_datagram(now, from, &mut data);
                }
            }
            while self.source.wants_frame(self.now, Nanos::from_millis(20)) {
                self.source.push_paced(self.now, &payload).unwrap();
            }
            self.source.handle_timeout(self.now);
            let mut outgoing = Vec::new();
            while let Some(t) = self.source.poll_transmit(self.now, &mut buf) {
                let targets: Vec<SocketAddr> = match t.destination {
                    Destination::To(a) => vec![a],
                    Destination::Fanout => self.source.fanout().collect(),
                };
                outgoing.push((targets, buf[..t.len].to_vec()));
            }
            for (targets, bytes) in outgoing {
                for a in targets {
                    self.send(addr(5000), a, &bytes);
                }
            }
            let now = self.now;
            let mut replies = Vec::new();
            for (i, (a, p)) in self.players.iter_mut().enumerate() {
                let a = *a;
                p.handle_timeout(now);
                let mut out = Vec::new();
                while let Some(t) = p.poll_transmit(now, &mut buf) {
                    out.push(buf[..t.len].to_vec());
                }
                if tick.is_multiple_of(5)
                    && let Some(r) = p.render(now, now + Nanos::from_millis(5), 240)
                {
                    while let Some(f) = p.next_frame(r.end(240)) {
                        rendered[i].push(match f {
                            Playout::Frame(fr) => Played::Frame(fr.seq.0),
                            Playout::Missing { seq, .. } => Played::Concealed(seq.0),
                        });
                    }
                }
                replies.extend(out.into_iter().map(|o| (a, o)));
            }
            for (a, o) in replies {
                self.send(a, addr(5000), &o);
            }
        }
    }
}

/// What a player handed to its device, by sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Played {
    Frame(u64),
    Concealed(u64),
}

impl Played {
    fn seq(self) -> u64 {
        match self {
            Played::Frame(s) | Played::Concealed(s) => s,
        }
    }
}

fn events(p: &mut Coupled) -> Vec<PlayerEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

#[test]
fn players_join_lock_and_play_every_packet() {
    let mut net = Net::new(SourceConfig::new(1, 48_000, 2));
    net.add_player(6000);
    net.add_player(6001);
    let mut rendered = vec![Vec::new(), Vec::new()];
    net.run(Nanos::from_secs(3), &mut rendered);
    assert_eq!(net.source.receivers().len(), 2);
    let joined: Vec<_> = std::iter::from_fn(|| net.source.poll_event()).collect();
    assert!(joined.iter().filter(|e| matches!(e, SourceEvent::ReceiverJoined { .. })).count() == 2);
    for (i, r) in rendered.iter().enumerate() {
        assert!(r.len() > 400, "player {i} played {} packets", r.len());
        assert!(r.iter().all(|p| matches!(p, Played::Frame(_))), "nothing concealed");
        let seqs: Vec<u64> = r.iter().map(|p| p.seq()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps");
        let c = net.players[i].1.clock().unwrap();
        assert!(
            c.offset.abs() < Nanos::from_micros(5),
            "same clock, symmetric path: {:?}",
            c.offset
        );
    }
}

#[test]
fn receiver_beyond_the_limit_is_told_server_full() {
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.max_receivers = 1;
    let mut net = Net::new(cfg);
    net.add_player(6000);
    net.add_player(6001);
    let mut rendered = vec![Vec::new(), Vec::new()];
    net.run(Nanos::from_millis(200), &mut rendered);
    assert_eq!(net.source.receivers().len(), 1);
    let ev = events(&mut net.players[1].1);
    assert!(
        ev.iter()
            .any(|e| matches!(e, PlayerEvent::Refused { reason: RefuseReason::ServerFull, .. })),
        "{ev:?}"
    );
    assert!(
        std::iter::from_fn(|| net.source.poll_event())
            .any(|e| matches!(e, SourceEvent::ReceiverRefused { .. }))
    );
}

#[test]
fn lost_packets_are_retransmitted_in_time() {
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.fec = None;
    let mut net = Net::new(cfg);
    net.add_player(6000);
    // Drop every 7th first transmission to the player (audio datagrams are the big ones).
    let mut n = 0u32;
    net.drop = Box::new(move |to, data| {
        if to.port() == 6000 && data.len() > 900 {
            n += 1;
            return n.is_multiple_of(7);
        }
        false
    });
    let mut rendered = vec![Vec::new()];
    net.run(Nanos::from_secs(3), &mut rendered);
    let stats = net.players[0].1.stats();
    assert!(stats.lost > 50, "{stats:?}");
    assert!(stats.recovered_retx > 0 && stats.concealed == 0, "{stats:?}");
    assert!(net.source.stats().retransmits >= stats.recovered_retx);
}

#[test]
fn player_survives_the_source_going_away_and_a_new_source_run() {
    let mut net = Net::new(SourceConfig::new(1, 48_000, 2));
    net.add_player(6000);
    let mut rendered = vec![Vec::new()];
    net.run(Nanos::from_secs(1), &mut rendered);
    let first = net.players[0].1.info().unwrap().epoch;
    // The source dies: silence for 3 s.
    net.drop = Box::new(|_, _| true);
    net.run(Nanos::from_secs(3), &mut rendered);
    assert!(events(&mut net.players[0].1).contains(&PlayerEvent::SourceLost));
    assert!(!net.players[0].1.is_streaming());
    // A new run of the source on the same address.
    net.drop = Box::new(|_, _| false);
    net.source =
        SourceSession::new(SourceConfig::new(1, 48_000, 2), net.security.clone(), 77, net.now)
            .unwrap();
    rendered[0].clear();
    net.run(Nanos::from_secs(2), &mut rendered);
    let p = &mut net.players[0].1;
    assert!(p.is_streaming());
    assert!(p.info().unwrap().epoch > first, "re-locked onto the new run");
    assert_eq!(p.stats().restarts, 1);
    assert!(rendered[0].len() > 200, "playing again: {}", rendered[0].len());
    assert_eq!(net.source.receivers().len(), 1);
}

#[test]
fn silent_receivers_time_out_and_byes_are_honoured() {
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.receiver_timeout = Nanos::from_secs(2);
    let mut net = Net::new(cfg);
    net.add_player(6000);
    net.add_player(6001);
    let mut rendered = vec![Vec::new(), Vec::new()];
    net.run(Nanos::from_millis(500), &mut rendered);
    assert_eq!(net.source.receivers().len(), 2);
    net.players[1].1.close();
    net.run(Nanos::from_millis(100), &mut rendered);
    assert_eq!(net.source.receivers().len(), 1);
    // Player 6000 goes silent (its packets are dropped).
    net.drop = Box::new(|to, _| to.port() == 5000);
    net.run(Nanos::from_secs(3), &mut rendered);
    assert_eq!(net.source.receivers().len(), 0);
    let ev: Vec<_> = std::iter::from_fn(|| net.source.poll_event()).collect();
    assert!(ev.iter().any(|e| matches!(e, SourceEvent::ReceiverLeft { timed_out: false, .. })));
    assert!(ev.iter().any(|e| matches!(e, SourceEvent::ReceiverLeft { timed_out: true, .. })));
}

#[test]
fn config_errors_name_the_field_and_the_fix() {
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.format.frames_per_packet = 480;
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.field, "frames_per_packet");
    assert!(e.to_string().contains("at most 275 frames"), "{e}");
    let mut cfg = SourceConfig::new(1, 1_000, 2);
    cfg.format.frames_per_packet = 10;
    assert_eq!(cfg.validate().unwrap_err().field, "sample_rate");
    let _ = SeqNo(0);
}

fn keyed(send: u8, accept: &[u8]) -> Security {
    Security::Encrypted {
        send: NetworkKey::from_bytes([send; 32]),
        accept: accept.iter().map(|a| NetworkKey::from_bytes([*a; 32])).collect(),
    }
}

#[test]
fn a_stranger_hears_nothing_and_a_capture_replayed_after_a_rotation_plays_nothing() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use tutti_proto::wire::RxError;
    let mut net = Net::new(SourceConfig::new(1, 48_000, 2));
    net.add_player(6000);
    // An unpaired player: it holds some other key.
    let mut cfg = PlayerConfig::new(SRC.parse().unwrap());
    cfg.name = "stranger".into();
    net.players.push((addr(6001), Coupled::new(cfg, keyed(9, &[]), 9, net.now)));
    let capture: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let c = capture.clone();
    net.drop = Box::new(move |to, data| {
        if to == addr(6000) {
            c.borrow_mut().push(data.to_vec());
        }
        false
    });
    let mut rendered = vec![Vec::new(), Vec::new()];
    net.run(Nanos::from_secs(2), &mut rendered);
    assert!(rendered[0].len() > 300, "the member plays");
    assert!(rendered[1].is_empty(), "the stranger plays nothing");
    let stranger = net.players[1].1.stats();
    assert_eq!(stranger.received, 0);
    // Its join requests never reach the source as a receiver, and each is counted there.
    assert_eq!(net.source.receivers().len(), 1);
    assert!(net.source.stats().rx_errors.get(RxError::UnknownKey(0)) > 0);

    // Later, after the keys rotated (new key 5 only), the capture is replayed to a player.
    let mut cfg = PlayerConfig::new(SRC.parse().unwrap());
    cfg.name = "victim".into();
    let t = net.now + Nanos::from_secs(60);
    let mut victim = Coupled::new(cfg, keyed(5, &[]), 7, t);
    for (i, d) in capture.borrow().iter().enumerate() {
        let mut d = d.clone();
        victim.handle_datagram(t + Nanos::from_millis(i as i64), SRC.parse().unwrap(), &mut d);
    }
    assert!(events(&mut victim).is_empty(), "nothing joined");
    assert!(victim.render(t, t + Nanos::from_millis(5), 240).is_none(), "nothing to play");
    let s = victim.stats();
    assert_eq!(s.received, 0);
    assert_eq!(s.rx_errors.total(), capture.borrow().len() as u64, "every datagram counted");

    // The member itself, fed its own capture again: all replays.
    let member = &mut net.players[0].1;
    let before = member.stats().rx_errors.get(RxError::Replayed);
    for d in capture.borrow().iter().rev().take(50) {
        let mut d = d.clone();
        member.handle_datagram(net.now, SRC.parse().unwrap(), &mut d);
    }
    assert_eq!(member.stats().rx_errors.get(RxError::Replayed) - before, 50);
}

#[test]
fn keys_rotate_under_a_playing_stream_without_a_gap() {
    let mut net = Net::new(SourceConfig::new(1, 48_000, 2));
    net.add_player(6000);
    let mut rendered = vec![Vec::new()];
    net.run(Nanos::from_secs(1), &mut rendered);
    // Step 1: everyone accepts the new key (8); step 2: the source sends with it; step 3:
    // the old one (4) is retired.
    net.players[0].1.set_security(keyed(4, &[8]));
    net.source.set_security(keyed(4, &[8]));
    net.run(Nanos::from_millis(500), &mut rendered);
    net.source.set_security(keyed(8, &[4]));
    net.players[0].1.set_security(keyed(8, &[4]));
    net.run(Nanos::from_millis(500), &mut rendered);
    net.source.set_security(keyed(8, &[]));
    net.players[0].1.set_security(keyed(8, &[]));
    net.run(Nanos::from_secs(1), &mut rendered);
    let r = &rendered[0];
    assert!(r.len() > 500, "{} packets", r.len());
    assert!(r.iter().all(|p| matches!(p, Played::Frame(_))), "nothing concealed");
    let seqs: Vec<u64> = r.iter().map(|p| p.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps");
    assert_eq!(net.players[0].1.stats().rx_errors.total(), 0);
}

/// Every datagram a `source` sends to its configured receivers over `d` from `start`, with
/// the addresses it sent them to.
fn datagrams_of(
    source: &mut SourceSession,
    start: LocalTime,
    d: Nanos,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    let payload = [7u8; 960];
    let mut now = start;
    while now < start + d {
        now += Nanos::from_millis(1);
        while source.wants_frame(now, Nanos::from_millis(20)) {
            source.push_paced(now, &payload).unwrap();
        }
        source.handle_timeout(now);
        while let Some(t) = source.poll_transmit(now, &mut buf) {
            let targets: Vec<SocketAddr> = match t.destination {
                Destination::To(a) => vec![a],
                Destination::Fanout => source.fanout().collect(),
            };
            out.extend(targets.into_iter().map(|a| (a, buf[..t.len].to_vec())));
        }
    }
    out
}

#[test]
fn relayed_and_replayed_datagrams_of_other_runs_never_touch_playout() {
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.origin = 0xA;
    let mut net = Net::new(cfg.clone());
    net.add_player(6000);
    let mut rendered = vec![Vec::new()];
    net.run(Nanos::from_secs(3), &mut rendered);
    assert!(net.players[0].1.is_streaming());

    // A capture of an earlier run of the same stream (older epoch), and a live stream of
    // another source on the network (same keys, same stream id, another origin, newer).
    let mut old = cfg.clone();
    old.receivers = vec![addr(6000)];
    old.epoch = 1;
    let t_old = LocalTime(1_000);
    let mut old_run = SourceSession::new(old, net.security.clone(), 501, t_old).unwrap();
    let replay = datagrams_of(&mut old_run, t_old, Nanos::from_millis(500));
    let mut other = SourceConfig::new(1, 48_000, 2);
    other.origin = 0xB;
    other.receivers = vec![addr(6000)];
    other.epoch = u64::MAX / 2;
    let mut other_run = SourceSession::new(other, net.security.clone(), 502, net.now).unwrap();
    let relay = datagrams_of(&mut other_run, net.now, Nanos::from_millis(500));
    assert!(replay.len() > 100 && relay.len() > 100);

    // The stranger forwards both (with the real source's address forged) while the stream
    // plays: ~8 per 1 ms tick.
    let mut injected = 0u64;
    let mut attack: VecDeque<Vec<u8>> = replay.into_iter().chain(relay).map(|(_, d)| d).collect();
    rendered[0].clear();
    let resyncs = net.players[0].1.stats().resyncs;
    while !attack.is_empty() {
        for _ in 0..8 {
            if let Some(mut d) = attack.pop_front() {
                let now = net.now;
                net.players[0].1.handle_datagram(now, SRC.parse().unwrap(), &mut d);
                injected += 1;
            }
        }
        net.run(Nanos::from_millis(1), &mut rendered);
    }
    net.run(Nanos::from_millis(500), &mut rendered);
    let p = &mut net.players[0].1;
    let s = p.stats();
    assert_eq!(s.foreign, injected, "every foreign datagram counted: {s:?}");
    assert_eq!((s.restarts, s.resyncs - resyncs, s.concealed), (0, 0, 0), "{s:?}");
    assert_eq!(p.info().unwrap().epoch, net.source.epoch(), "still the same run");
    let seqs: Vec<u64> = rendered[0].iter().map(|p| p.seq()).collect();
    assert!(seqs.len() > 100, "played on: {}", seqs.len());
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no jump");
    assert!(rendered[0].iter().all(|p| matches!(p, Played::Frame(_))), "nothing concealed");

    // A genuine newer run of the stream (the source restarted, sending to this player as a
    // configured receiver, or to a multicast group) is followed at once.
    let mut newer = cfg.clone();
    newer.epoch = net.source.epoch() + 1;
    newer.receivers = vec![addr(6000)];
    net.source = SourceSession::new(newer, net.security.clone(), 503, net.now).unwrap();
    net.run(Nanos::from_millis(300), &mut rendered);
    let p = &mut net.players[0].1;
    assert_eq!(p.stats().restarts, 1);
    assert_eq!(p.info().unwrap().epoch, net.source.epoch());
    assert!(p.is_streaming());
}

#[test]
fn a_replayed_hello_gets_one_small_answer_and_replayed_requests_get_none() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = Net::new(SourceConfig::new(1, 48_000, 2));
    net.add_player(6000);
    // Capture what the player sends (its Hellos, probes, NACKs, reports).
    let capture: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let c = capture.clone();
    net.drop = Box::new(move |to, data| {
        if to == addr(5000) {
            c.borrow_mut().push(data.to_vec());
        }
        false
    });
    let mut rendered = vec![Vec::new()];
    net.run(Nanos::from_secs(1), &mut rendered);
    assert_eq!(net.source.receivers().len(), 1, "the player proved its address and joined");
    assert!(net.source.stats().cookies_sent >= 1);

    // The source restarts; the stranger replays everything the player ever sent, forging
    // the address of a victim.
    let victim = addr(6666);
    let start = net.now;
    let mut fresh =
        SourceSession::new(SourceConfig::new(1, 48_000, 2), net.security.clone(), 99, start)
            .unwrap();
    let mut buf = [0u8; 1500];
    let payload = [0u8; 960];
    let (mut to_victim, mut bytes, mut largest) = (0usize, 0usize, 0usize);
    let mut now = start;
    let replayed = capture.borrow().clone();
    for (i, d) in replayed.iter().enumerate() {
        now = start + Nanos::from_millis(i as i64);
        let mut d = d.clone();
        fresh.handle_datagram(now, victim, &mut d);
    }
    // ...and the source streams on for 10 s.
    while now < start + Nanos::from_secs(10) {
        now += Nanos::from_millis(1);
        while fresh.wants_frame(now, Nanos::from_millis(20)) {
            fresh.push_paced(now, &payload).unwrap();
        }
        fresh.handle_timeout(now);
        while let Some(t) = fresh.poll_transmit(now, &mut buf) {
            let to: Vec<SocketAddr> = match t.destination {
                Destination::To(a) => vec![a],
                Destination::Fanout => fresh.fanout().collect(),
            };
            if to.contains(&victim) {
                to_victim += 1;
                bytes += t.len;
                largest = largest.max(t.len);
            }
        }
    }
    let st = *fresh.stats();
    let hellos = st.cookies_sent as usize;
    let sent: usize = replayed.iter().map(Vec::len).sum();
    assert!(hellos >= 1, "the replayed Hellos were answered with a cookie");
    // One small answer per replayed Hello (the announce with a cookie) or probe (the clock
    // reply), nothing else: no audio, no retransmission, no fan-out.
    assert_eq!(to_victim, hellos + st.probes_answered as usize, "{st:?}");
    assert!(largest < 200, "only small answers: the largest was {largest} bytes");
    assert!(bytes <= 2 * sent, "{bytes} bytes out for {sent} bytes replayed");
    assert!(fresh.receivers().is_empty());
    assert_eq!(st.retransmits, 0);
    assert!(st.unverified > 0, "the NACKs and reports were counted: {st:?}");
}

#[test]
fn a_refusal_from_an_earlier_run_does_not_stop_a_player() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut cfg = SourceConfig::new(1, 48_000, 2);
    cfg.max_receivers = 1;
    let mut net = Net::new(cfg);
    net.add_player(6000);
    net.add_player(6001);
    let capture: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let c = capture.clone();
    net.drop = Box::new(move |to, data| {
        if to == addr(6001) {
            c.borrow_mut().push(data.to_vec());
        }
        false
    });
    let mut rendered = vec![Vec::new(), Vec::new()];
    net.run(Nanos::from_millis(300), &mut rendered);
    assert!(events(&mut net.players[1].1).iter().any(|e| matches!(e, PlayerEvent::Refused { .. })));
    // A later run of that player (same address) is fed the refusals its predecessor got.
    let mut cfg = PlayerConfig::new(SRC.parse().unwrap());
    cfg.name = "p6001 again".into();
    let mut again = Coupled::new(cfg, net.security.clone(), 4242, net.now);
    for d in capture.borrow().iter() {
        let mut d = d.clone();
        again.handle_datagram(net.now, SRC.parse().unwrap(), &mut d);
    }
    let ev = events(&mut again);
    assert!(!ev.iter().any(|e| matches!(e, PlayerEvent::Refused { .. })), "{ev:?}");
    assert!(again.stats().foreign > 0);
}

#[test]
fn many_replayed_hellos_aimed_at_one_address_get_a_few_answers_a_second() {
    // Hellos captured from a joining player (it sends one every 100 ms until served): each a
    // distinct datagram, so the replay window does not stop them at a fresh source run.
    let security = Security::encrypted(NetworkKey::from_bytes([4; 32]));
    let now = LocalTime(1_000_000_000);
    let mut player =
        Coupled::new(PlayerConfig::new(SRC.parse().unwrap()), security.clone(), 3, now);
    let mut hellos = Vec::new();
    let mut buf = [0u8; 1500];
    for i in 0..400 {
        let t = now + Nanos::from_millis(100 * i);
        player.handle_timeout(t);
        while let Some(tx) = player.poll_transmit(t, &mut buf) {
            let kind = tutti_proto::wire::parse_preamble(&buf[..tx.len]).unwrap().kind;
            if kind == tutti_proto::wire::Kind::Hello {
                hellos.push(buf[..tx.len].to_vec());
            }
        }
    }
    assert!(hellos.len() >= 200, "{} hellos", hellos.len());
    // All of them replayed within 200 ms at a source, from a victim's address.
    let mut source = SourceSession::new(SourceConfig::new(1, 48_000, 2), security, 9, now).unwrap();
    let victim = addr(6666);
    let mut answers = 0;
    for (i, h) in hellos.iter().enumerate() {
        let t = now + Nanos::from_micros(500 * i as i64);
        let mut d = h.clone();
        source.handle_datagram(t, victim, &mut d);
        while let Some(tx) = source.poll_transmit(t, &mut buf) {
            assert!(matches!(tx.destination, Destination::To(a) if a == victim));
            answers += 1;
        }
    }
    assert!(answers <= 32, "{answers} answers to the victim in 200 ms");
    assert!(source.stats().cookies_withheld as usize >= hellos.len() - 32);
    // A real player at another IP address still gets its cookie at once.
    let mut p2 = Coupled::new(
        PlayerConfig::new(SRC.parse().unwrap()),
        Security::encrypted(NetworkKey::from_bytes([4; 32])),
        5,
        now,
    );
    let t = now + Nanos::from_millis(200);
    let mut answered = false;
    while let Some(tx) = p2.poll_transmit(t, &mut buf) {
        let mut d = buf[..tx.len].to_vec();
        source.handle_datagram(t, "127.0.0.2:6001".parse().unwrap(), &mut d);
        while source.poll_transmit(t, &mut buf).is_some() {
            answered = true;
        }
    }
    assert!(answered, "another address is answered");
}
