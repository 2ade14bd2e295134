//! A stranger's attempts on the control plane, each of which must fail, and the happy path:
//! API tokens, origins and body limits; pairing tokens (once, before expiry, exact); paired
//! links (credential, id, revocation, key rotation).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_hub::{HubConfig, RunningHub};
use tutti_node::hub::{HubLink, LinkAuth};
use tutti_node::security::Keys;
use tutti_proto::control::{Command, NodeInfo, NodeState, Settings};
use tutti_proto::pairing::PairLink;
use tutti_proto::{NetworkKey, Security};

mod common;
use common::{ADMIN, bearer, until};

async fn hub(passphrase_key: Option<NetworkKey>) -> RunningHub {
    common::start(HubConfig { key: passphrase_key, ..common::config() }).await
}

async fn http(addr: SocketAddr, req: &str, extra: &str, body: &str) -> (u16, String, String) {
    common::raw_http(addr, req, extra, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_strangers_read_only_writers_other_origins_and_huge_bodies() {
    let h = hub(None).await;
    let (_, read) = h.hub.api_tokens();
    let admin = bearer(ADMIN);
    let patch = r#"{"name":"x"}"#;

    let (s, head, body) = http(h.http, "GET /api/nodes", "", "").await;
    assert_eq!(s, 401, "no token: {body}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("Authorization: Bearer"), "says how: {body}");
    let (s, _, _) = http(h.http, "GET /api/nodes", &bearer("admin-guess"), "").await;
    assert_eq!(s, 401, "a wrong token");
    let (s, _, _) = http(h.http, "GET /api/nodes?token=nope", "", "").await;
    assert_eq!(s, 401, "a wrong token in the query");
    let (s, _, _) = http(h.http, "POST /api/keys/rotate", "", "").await;
    assert_eq!(s, 401, "a change without a token");

    let (s, _, _) = http(h.http, "GET /api/nodes", &bearer(&read), "").await;
    assert_eq!(s, 200, "the read-only token reads");
    let (s, _, body) = http(h.http, "PUT /api/zones/kitchen", &bearer(&read), "{}").await;
    assert_eq!(s, 403, "the read-only token changes nothing: {body}");
    let (s, _, _) = http(h.http, "POST /api/pairing", &bearer(&read), "").await;
    assert_eq!(s, 403, "nor pairs");
    let (s, _, body) = http(h.http, "GET /api/pairing", &bearer(&read), "").await;
    assert_eq!(s, 200);
    assert!(!body.contains("credential\":\"0") && !body.contains(ADMIN), "{body}");

    let evil = format!("{admin}Origin: http://evil.example\r\n");
    let (s, _, body) = http(h.http, "PATCH /api/nodes/x", &evil, patch).await;
    assert_eq!(s, 403, "another site's page, with the admin's token: {body}");
    let own = format!("{admin}Origin: http://{}\r\n", h.http);
    let (s, _, _) = http(h.http, "GET /api/nodes", &own, "").await;
    assert_eq!(s, 200, "the hub's own origin");

    let huge = format!(r#"{{"name":"{}"}}"#, "a".repeat(100 * 1024));
    let (s, _, body) = http(h.http, "PUT /api/zones/kitchen", &admin, &huge).await;
    assert_eq!(s, 413, "{body}");
    let (s, _, _) = http(h.http, "PUT /api/zones/kitchen", &admin, "{}").await;
    assert_eq!(s, 200, "the admin token changes things");
    h.stop();
}

#[derive(Clone, Default)]
struct Quiet {
    statuses: Arc<Mutex<Vec<String>>>,
}

impl tutti_node::hub::HubHandler for Quiet {
    fn state(&mut self) -> NodeState {
        NodeState { streaming: true, ..NodeState::default() }
    }
    fn settings(&mut self, _: &Settings) {}
    fn command(&mut self, _: &Command) {}
    fn status(&mut self, m: &str) {
        self.statuses.lock().unwrap().push(m.to_owned());
    }
}

/// A player following the stream at 127.0.0.1:7400.
fn info(id: &str) -> NodeInfo {
    follower(id, "127.0.0.1:7400")
}

/// A player following the stream at `source`.
fn follower(id: &str, source: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        name: id.into(),
        role: "player".into(),
        streams: vec![source.into()],
        ..NodeInfo::default()
    }
}

/// A source sending streams at `streams`.
fn sender(id: &str, streams: &[&str]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        name: id.into(),
        role: "source".into(),
        streams: streams.iter().map(|s| (*s).to_owned()).collect(),
        ..NodeInfo::default()
    }
}

async fn new_link(h: &RunningHub, ttl_s: u64) -> PairLink {
    let body = format!(r#"{{"ttl_s":{ttl_s}}}"#);
    let (s, _, body) = http(h.http, "POST /api/pairing", &bearer(ADMIN), &body).await;
    assert_eq!(s, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["qr_svg"].as_str().unwrap().contains("<svg"), "a QR code comes with it");
    PairLink::parse(v["link"].as_str().unwrap()).unwrap()
}

async fn pair(link: PairLink, name: &str) -> Result<tutti_proto::pairing::PairGrant, String> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || tutti_node::hub::pair(&link, &name))
        .await
        .unwrap()
        .map_err(|e| e.to_string())
}

fn sending_id(k: &Keys) -> Option<tutti_proto::crypto::KeyId> {
    match k.current() {
        Security::Encrypted { send, .. } => Some(send.id()),
        Security::Plaintext => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_tokens_work_once_only_exact_and_unexpired_and_revocation_locks_a_node_out() {
    let h = hub(None).await;

    // A token pairs once.
    let link = new_link(&h, 600).await;
    let grant = pair(link.clone(), "Kitchen").await.expect("pairs");
    assert_eq!(grant.node, "kitchen");
    let again = pair(link.clone(), "Kitchen").await.unwrap_err();
    assert!(again.contains("already used"), "{again}");

    // A token with the right id but a guessed secret: refused, and burnt.
    let mut forged = new_link(&h, 600).await;
    let real = forged.clone();
    forged.token.secret[3] ^= 0x10;
    let e = pair(forged, "mallory").await.unwrap_err();
    assert!(e.contains("refused"), "{e}");
    let e = pair(real, "late").await.unwrap_err();
    assert!(e.contains("already used"), "a token tried once is gone: {e}");

    // An expired token.
    let old = h.hub.issue_token(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = pair(old, "slow").await.unwrap_err();
    assert!(e.contains("expired"), "{e}");

    // The paired node links with its credential and receives the keys of the stream it
    // follows (no zone plays it) once its source links.
    let credential = tutti_hub::secrets::credential_of(&grant.credential).unwrap();
    let kitchen_keys = Keys::pending();
    let auth = |keys: &Keys, node: &str, c: &tutti_proto::Credential| LinkAuth::Paired {
        node: node.into(),
        credential: c.clone(),
        keys: keys.clone(),
    };
    let g0 = pair(new_link(&h, 600).await, "house").await.unwrap();
    let house_keys = Keys::pending();
    let house = HubLink::spawn(
        h.link,
        sender("house-source-7400", &["0.0.0.0:7400"]),
        auth(&house_keys, "house", &tutti_hub::secrets::credential_of(&g0.credential).unwrap()),
        Duration::from_millis(100),
        Quiet::default(),
    )
    .unwrap();
    until("the source gets keys", || house_keys.version() > 0).await;
    let kq = Quiet::default();
    let link = HubLink::spawn(
        h.link,
        info("kitchen-default"),
        auth(&kitchen_keys, "kitchen", &credential),
        Duration::from_millis(100),
        kq.clone(),
    )
    .unwrap();
    until("the kitchen gets keys", || kitchen_keys.version() > 0).await;

    // A second paired node, to watch the keys move on without the first.
    let g2 = pair(new_link(&h, 600).await, "hall").await.unwrap();
    let hall_keys = Keys::pending();
    let hall_c = tutti_hub::secrets::credential_of(&g2.credential).unwrap();
    let hall = HubLink::spawn(
        h.link,
        info("hall"),
        auth(&hall_keys, "hall", &hall_c),
        Duration::from_millis(100),
        Quiet::default(),
    )
    .unwrap();
    until("the hall gets keys", || hall_keys.version() > 0).await;
    assert_eq!(sending_id(&hall_keys), sending_id(&kitchen_keys), "one stream, one key");
    assert_eq!(sending_id(&house_keys), sending_id(&kitchen_keys), "the source's");

    // Strangers on the link: a wrong credential, another node's id, no pairing at all.
    for (id, node, c, want) in [
        ("kitchen", "kitchen", tutti_proto::Credential::from_bytes([9; 32]), "wrong credential"),
        ("hall-x", "kitchen", credential.clone(), "is not `kitchen`'s"),
        ("ghost", "ghost", credential.clone(), "no paired node"),
    ] {
        let q = Quiet::default();
        let l = HubLink::spawn(
            h.link,
            info(id),
            auth(&Keys::pending(), node, &c),
            Duration::from_millis(100),
            q.clone(),
        )
        .unwrap();
        until(want, || q.statuses.lock().unwrap().iter().any(|s| s.contains(want))).await;
        l.stop();
    }
    let q = Quiet::default();
    let l = HubLink::spawn(
        h.link,
        info("passphrase-node"),
        NetworkKey::from_bytes([1; 32]),
        Duration::from_millis(100),
        q.clone(),
    )
    .unwrap();
    until("paired only", || {
        q.statuses.lock().unwrap().iter().any(|s| s.contains("paired nodes only"))
    })
    .await;
    l.stop();

    // Revoke the kitchen: its link is closed, it cannot come back, and the keys rotate past it.
    let before = sending_id(&kitchen_keys);
    let (s, _, body) = http(h.http, "DELETE /api/pairing/kitchen", &bearer(ADMIN), "").await;
    assert_eq!(s, 200, "{body}");
    until("the kitchen is told", || {
        kq.statuses.lock().unwrap().iter().any(|s| s.contains("revoked"))
    })
    .await;
    // It keeps trying; each time the hub says why not.
    until("the kitchen is refused on reconnect", || {
        kq.statuses.lock().unwrap().iter().filter(|s| s.contains("revoked")).count() >= 1
            && h.hub.paired().1.iter().any(|(id, _)| id == "kitchen")
    })
    .await;
    // The hall accepts a new key, then sends with it; the kitchen never hears of it.
    until("the hall sends with a new key", || sending_id(&hall_keys) != before).await;
    assert_eq!(sending_id(&kitchen_keys), before, "the revoked node's keys are the old ones");
    let kitchen_accepts = match kitchen_keys.current() {
        Security::Encrypted { send, accept } => {
            std::iter::once(send.id()).chain(accept.iter().map(NetworkKey::id)).collect::<Vec<_>>()
        }
        Security::Plaintext => vec![],
    };
    assert!(!kitchen_accepts.contains(&sending_id(&hall_keys).unwrap()));
    let (s, _, body) = http(h.http, "DELETE /api/pairing/kitchen", &bearer(ADMIN), "").await;
    assert_eq!(s, 404, "revoked already: {body}");
    link.stop();
    hall.stop();
    house.stop();
    h.stop();
}

/// Whether a datagram sealed under `from` opens under `to`.
fn opens(from: &Keys, to: &Keys) -> bool {
    use tutti_proto::wire::{Hello, Packet, decode, encode};
    let hello = Packet::Hello(Hello { stream_id: 1, name: "x", listen_only: false, cookie: 0 });
    let mut buf = [0u8; 256];
    let n = encode(&hello, 7, 1, &from.current(), &mut buf).unwrap();
    let mut guard = tutti_proto::crypto::ReplayGuard::new(4);
    decode(&mut buf[..n], &to.current(), &mut guard).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_zone_decodes_only_its_own_stream_and_a_move_hands_the_keys_over() {
    let h = hub(None).await;
    let auth = |keys: &Keys, g: &tutti_proto::pairing::PairGrant| LinkAuth::Paired {
        node: g.node.clone(),
        credential: tutti_hub::secrets::credential_of(&g.credential).unwrap(),
        keys: keys.clone(),
    };
    let spawn = |info: NodeInfo, keys: &Keys, g: &tutti_proto::pairing::PairGrant, q: &Quiet| {
        HubLink::spawn(h.link, info, auth(keys, g), Duration::from_millis(100), q.clone()).unwrap()
    };
    let house = pair(new_link(&h, 600).await, "house").await.unwrap();
    let kitchen = pair(new_link(&h, 600).await, "kitchen").await.unwrap();
    let den = pair(new_link(&h, 600).await, "den").await.unwrap();
    // One machine sends two streams (one per room); they are two streams with two keys.
    let (low, high, eaves, kp) =
        (Keys::pending(), Keys::pending(), Keys::pending(), Keys::pending());
    let q = Quiet::default();
    let _low = spawn(sender("house-source-7400", &["0.0.0.0:7400"]), &low, &house, &q);
    let _high = spawn(sender("house-source-7402", &["127.0.0.1:7402"]), &high, &house, &q);
    until("both sources get keys", || low.version() > 0 && high.version() > 0).await;
    assert!(!opens(&low, &high) && !opens(&high, &low), "two streams, two keys");
    for (zone, source) in [("kitchen", 7400), ("den", 7402)] {
        let body = format!(r#"{{"source":"127.0.0.1:{source}"}}"#);
        let path = format!("PUT /api/zones/{zone}");
        let (s, _, body) = http(h.http, &path, &bearer(ADMIN), &body).await;
        assert_eq!(s, 200, "{body}");
    }
    // The kitchen's speaker; and a node of the den that would listen to the kitchen's
    // stream (its multicast reaches every machine).
    let _k = spawn(follower("kitchen-default", "127.0.0.1:7400"), &kp, &kitchen, &q);
    let eq = Quiet::default();
    let _e = spawn(follower("den-default", "127.0.0.1:7400"), &eaves, &den, &eq);
    until("both players linked", || kp.version() > 0 && eaves.version() > 0).await;
    let patch = |id: &'static str, zone: &'static str| {
        let addr = h.http;
        async move {
            let body = format!(r#"{{"zone":"{zone}"}}"#);
            let (s, _, body) =
                http(addr, &format!("PATCH /api/nodes/{id}"), &bearer(ADMIN), &body).await;
            assert_eq!(s, 200, "{body}");
        }
    };
    // In no zone, following a stream a zone plays: no keys, and the reason.
    until("the den's node is told why", || {
        eq.statuses.lock().unwrap().iter().any(|s| s.contains("zone `kitchen`'s stream"))
    })
    .await;
    assert!(!opens(&low, &eaves) && !opens(&eaves, &low), "no keys for a zone's stream");
    patch("kitchen-default", "kitchen").await;
    patch("den-default", "den").await;
    until("the kitchen decodes its stream", || opens(&low, &kp) && opens(&kp, &low)).await;
    until("the den decodes its stream", || opens(&high, &eaves)).await;
    assert!(!opens(&low, &eaves), "a paired node of the den cannot decode the kitchen's stream");
    assert!(!opens(&eaves, &low), "nor join it (its hello does not open at the source)");
    assert!(!opens(&high, &kp), "and the other way round");
    // Moving hands the keys over: the den's node now hears the kitchen and not the den.
    patch("den-default", "kitchen").await;
    until("the moved node decodes its new zone's stream", || opens(&low, &eaves)).await;
    assert!(!opens(&high, &eaves), "and no longer its old zone's");
    // A zone that changes its stream hands its players the new one's keys.
    let (s, _, body) =
        http(h.http, "PUT /api/zones/kitchen", &bearer(ADMIN), r#"{"source":"127.0.0.1:7402"}"#)
            .await;
    assert_eq!(s, 200, "{body}");
    until("the zone's players follow its new stream", || {
        opens(&high, &kp) && opens(&high, &eaves) && !opens(&low, &kp)
    })
    .await;
    // A rotation moves every stream's key on, and each player keeps only its own.
    let rotation_before = tutti_proto::crypto::KeyId::clone(&sending(&high));
    h.hub.rotate_keys().unwrap();
    until("everyone accepts the next key", || {
        opens(&kp, &high) && opens(&high, &kp) && !opens(&low, &kp)
    })
    .await;
    assert_eq!(sending(&high), rotation_before, "sending with the old key until promoted");
    h.stop();
}

fn sending(k: &Keys) -> tutti_proto::crypto::KeyId {
    sending_id(k).expect("encrypted")
}

/// This process's resident memory, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Writes up to `total` bytes without a newline; returns how many the hub took before it
/// closed the connection.
async fn flood(addr: SocketAddr, total: usize) -> usize {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_less_flood_and_a_crowd_of_silent_connections_cost_the_hub_nothing() {
    let h = hub(Some(NetworkKey::from_bytes([7; 32]))).await;
    let before = rss();
    // Ten connections, 20 MB each, never a newline (200 MB): each is cut after the longest
    // hello (16 KiB) and whatever the sockets buffer.
    let floods: Vec<_> = (0..10).map(|_| tokio::spawn(flood(h.link, 20 << 20))).collect();
    let mut taken = Vec::new();
    for f in floods {
        taken.push(f.await.unwrap());
    }
    let grown = rss().saturating_sub(before);
    eprintln!("flood: bytes taken per connection {taken:?}; RSS grew {} kB", grown / 1024);
    assert!(taken.iter().all(|&t| t < 8 << 20), "a connection took {taken:?} bytes");
    assert!(grown < 64 << 20, "the hub grew {grown} bytes under the flood");
    // A crowd of silent connections from one address: 8 get a challenge, the rest are closed
    // at once; after the hello timeout they are all gone and a real node joins.
    let mut crowd = Vec::new();
    let mut challenged = 0;
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(h.link).await.unwrap();
        let mut b = [0u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
            challenged += 1;
        }
        crowd.push(s);
    }
    assert_eq!(challenged, 8, "silent connections from one address get 8 challenges");
    // Two thousand idle connections from 25 more addresses: at most 64 unproven are held in
    // all (the crowd has 8), the rest closed at once; the hub stays small.
    let before = rss();
    let mut idle = Vec::new();
    for i in 0..2_000u32 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from(([127, 0, 0, 2 + (i % 25) as u8], 0))).unwrap();
        idle.push(sock.connect(h.link).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut held, mut closed) = (0, 0);
    for s in &idle {
        let mut b = [0u8; 256];
        match s.try_read(&mut b) {
            Ok(0) => closed += 1,
            Ok(_) => held += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    let grown = rss().saturating_sub(before);
    eprintln!(
        "2,000 idle connections: {held} held (challenged), {closed} closed at once; RSS grew {} kB",
        grown / 1024
    );
    assert!(held <= 64 - 8, "{held} held beyond the cap");
    assert!(closed >= 2_000 - 64, "only {closed} closed");
    assert!(grown < 64 << 20, "the hub grew {grown} bytes with 2,000 idle connections");
    drop(idle);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let key = NetworkKey::from_bytes([7; 32]);
    let q = Quiet::default();
    let node = HubLink::spawn(
        h.link,
        info("after-the-crowd"),
        LinkAuth::Network(key),
        Duration::from_millis(100),
        q.clone(),
    )
    .unwrap();
    until("the node joins after the crowd timed out", || {
        q.statuses.lock().unwrap().iter().any(|m| m.ends_with("connected"))
    })
    .await;
    node.stop();
    drop(crowd);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_hub_flooding_a_node_with_a_newline_less_line_costs_it_nothing() {
    // A fake hub: a challenge that never ends (100 MB, no newline).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(0usize));
    let counter = sent.clone();
    let fake = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else { return };
        let chunk = vec![b'a'; 64 * 1024];
        let _ = s.write_all(b"{\"challenge\":{\"nonce\":\"").await;
        for _ in 0..1_600 {
            match tokio::time::timeout(Duration::from_secs(3), s.write_all(&chunk)).await {
                Ok(Ok(())) => *counter.lock().unwrap() += chunk.len(),
                _ => return,
            }
        }
    });
    let before = rss();
    let q = Quiet::default();
    let node = HubLink::spawn(
        addr,
        info("flooded"),
        LinkAuth::Network(NetworkKey::from_bytes([7; 32])),
        Duration::from_millis(100),
        q.clone(),
    )
    .unwrap();
    until("the node gives the flooding hub up", || {
        q.statuses.lock().unwrap().iter().any(|m| m.contains("longer than"))
    })
    .await;
    let grown = rss().saturating_sub(before);
    let taken = *sent.lock().unwrap();
    eprintln!(
        "hostile hub: {} kB sent before the node hung up; RSS grew {} kB",
        taken / 1024,
        grown / 1024
    );
    assert!(grown < 64 << 20, "the node grew {grown} bytes");
    assert!(taken < 8 << 20, "the node read {taken} bytes of one line");
    node.stop();
    fake.abort();
}

/// A node's handler that records everything a hub makes it do.
#[derive(Clone, Default)]
struct Watcher {
    statuses: Arc<Mutex<Vec<String>>>,
    obeyed: Arc<Mutex<Vec<String>>>,
}

impl tutti_node::hub::HubHandler for Watcher {
    fn state(&mut self) -> NodeState {
        NodeState::default()
    }
    fn settings(&mut self, s: &Settings) {
        self.obeyed.lock().unwrap().push(format!("settings {s:?}"));
    }
    fn command(&mut self, c: &Command) {
        self.obeyed.lock().unwrap().push(format!("command {c:?}"));
    }
    fn status(&mut self, m: &str) {
        self.statuses.lock().unwrap().push(m.to_owned());
    }
}

/// A fake hub on `listener`: `noise` false speaks the old protocol (a welcome with the volume
/// at 10 % and muted, then commands, whatever the node says); `noise` true answers the
/// handshake as well as it can without the key (with its own handshake under a guessed key).
async fn impostor(listener: tokio::net::TcpListener, noise: bool) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        let challenge = [9u8; 32];
        let hello = format!("{{\"challenge\":{{\"nonce\":\"{}\"}}}}\n", "09".repeat(32));
        let _ = s.write_all(hello.as_bytes()).await;
        let mut buf = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        let guessed = NetworkKey::from_bytes([66; 32]).link_psk();
        let mut lines = Vec::new();
        if noise {
            let (_, own) = tutti_proto::link::Opening::start(&guessed, &challenge, None).unwrap();
            let (_, answer) = tutti_proto::link::accept(&guessed, &challenge, None, &own).unwrap();
            lines.push(format!(
                "{{\"opened\":{{\"noise\":\"{}\"}}}}",
                tutti_proto::control::to_hex(&answer)
            ));
        }
        lines.push(
            r#"{"welcome":{"settings":{"volume":10,"mute":true,"delay_ms":1000,"zone":null}}}"#
                .into(),
        );
        lines.push(r#"{"command":{"kind":"volume","percent":10}}"#.into());
        lines.push(r#"{"command":{"kind":"mute","mute":true}}"#.into());
        for l in lines {
            let _ = s.write_all(format!("{l}\n").as_bytes()).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_hub_without_the_key_cannot_command_a_node() {
    let credential = tutti_proto::Credential::from_bytes([5; 32]);
    let auths = [
        ("passphrase", LinkAuth::Network(NetworkKey::from_bytes([7; 32]))),
        ("paired", LinkAuth::Paired { node: "kitchen".into(), credential, keys: Keys::pending() }),
    ];
    for (kind, auth) in auths {
        for noise in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let fake = tokio::spawn(impostor(listener, noise));
            let w = Watcher::default();
            let node = HubLink::spawn(
                addr,
                info("kitchen"),
                auth.clone(),
                Duration::from_millis(100),
                w.clone(),
            )
            .unwrap();
            let expect = if noise { "impostor" } else { "no answer to the handshake" };
            until("the node refuses the impostor", || {
                w.statuses.lock().unwrap().iter().any(|m| m.contains(expect))
            })
            .await;
            // Two more attempts (it retries every second): still nothing obeyed.
            tokio::time::sleep(Duration::from_millis(2_100)).await;
            let obeyed = w.obeyed.lock().unwrap().clone();
            assert!(obeyed.is_empty(), "{kind} node, noise {noise}: obeyed {obeyed:?}");
            eprintln!("{kind} node vs impostor (noise {noise}): {:?}", w.statuses.lock().unwrap());
            node.stop();
            fake.abort();
        }
    }
}

async fn hub_from(dir: &std::path::Path) -> RunningHub {
    let secrets_file = dir.join("secrets.json");
    let (mut secrets, _) =
        tutti_hub::secrets::Secrets::load_or_create(&secrets_file, "test").unwrap();
    secrets.admin_token = ADMIN.into();
    let state_file = Some(dir.join("hub.json"));
    let secrets_file = Some(secrets_file);
    common::start(HubConfig { state_file, secrets, secrets_file, ..common::config() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_hub_cannot_save_is_refused_and_a_revocation_is_never_lost() {
    let dir = std::env::temp_dir().join(format!("tutti-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let h = hub_from(&dir).await;
    let grant = pair(new_link(&h, 600).await, "Kitchen").await.expect("pairs");
    let admin = bearer(ADMIN);
    let zone = r#"{"source":"127.0.0.1:7400"}"#;
    // The state directory goes away (a full or read-only disk looks the same to the hub).
    std::fs::remove_dir_all(&dir).unwrap();
    let (s, _, body) = http(h.http, "PUT /api/zones/kitchen", &admin, zone).await;
    assert!(s == 503 && body.contains("not_saved") && body.contains("nothing changed"), "{body}");
    let (_, _, zones) = http(h.http, "GET /api/zones", &admin, "").await;
    assert!(!zones.contains("kitchen"), "the zone was not made: {zones}");
    let path = format!("DELETE /api/pairing/{}", grant.node);
    let (s, _, body) = http(h.http, &path, &admin, "").await;
    assert!(s == 503 && body.contains("not_saved"), "{body}");
    assert!(h.hub.paired().0.iter().any(|(id, _)| *id == grant.node), "still paired, and said so");
    let (s, _, body) = http(h.http, "POST /api/keys/rotate", &admin, "").await;
    assert!(s == 503 && body.contains("not_saved"), "{body}");
    assert!(!h.hub.rotating(), "no rotation half-made");
    let e = pair(new_link(&h, 600).await, "Lounge").await.unwrap_err();
    assert!(e.contains("could not save"), "a pairing that cannot be saved is refused: {e}");
    // The disk is back: the revocation is made, saved, and survives a restart.
    std::fs::create_dir_all(&dir).unwrap();
    let (s, _, body) = http(h.http, &path, &admin, "").await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = http(h.http, "PUT /api/zones/kitchen", &admin, zone).await;
    assert_eq!(s, 200, "{body}");
    h.stop();
    let h = hub_from(&dir).await;
    assert!(h.hub.paired().1.iter().any(|(id, _)| *id == grant.node), "revoked after a restart");
    let q = Quiet::default();
    let c = tutti_hub::secrets::credential_of(&grant.credential).unwrap();
    let l = HubLink::spawn(
        h.link,
        info(&grant.node),
        LinkAuth::Paired { node: grant.node.clone(), credential: c, keys: Keys::pending() },
        Duration::from_millis(100),
        q.clone(),
    )
    .unwrap();
    until("the revoked node is refused", || {
        q.statuses.lock().unwrap().iter().any(|s| s.contains("revoked"))
    })
    .await;
    let (_, _, zones) = http(h.http, "GET /api/zones", &admin, "").await;
    assert!(zones.contains("kitchen"), "{zones}");
    l.stop();
    h.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_rotation_was_lost_rotates_at_the_next_start() {
    let dir = std::env::temp_dir().join(format!("tutti-revoked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Saved secrets where a node was revoked after the sending key was made, and no rotation
    // is under way (the rotation that should have followed was never saved).
    let mut s = tutti_hub::secrets::Secrets::generate("test");
    s.revoked.insert("kitchen".into(), s.keys_since + 5);
    s.save(&dir.join("secrets.json")).unwrap();
    let h = hub_from(&dir).await;
    assert!(h.hub.rotating(), "the keys rotate past the revoked node at start");
    h.stop();
    // Once the keys are newer than every revocation, a start does not rotate.
    let mut s = tutti_hub::secrets::Secrets::generate("test");
    s.revoked.insert("kitchen".into(), s.keys_since - 5);
    s.save(&dir.join("secrets.json")).unwrap();
    let h = hub_from(&dir).await;
    assert!(!h.hub.rotating());
    h.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
