//! The dashboard's backend over a hub's HTTP + WebSocket API: the calls `curl` would make,
//! and the hub's event stream, its nodes' reports gathered and handed on once a period.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{Either, LocalBoxFuture};
use futures_util::stream::LocalBoxStream;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_proto::control::{
    Event, GuestInvite, GuestView, HubStatus, NodeState, NodeView, PairedView, PairingOffer, Zone,
};
use tutti_ui::{Action, Backend, Change, Done, Snapshot, UiError};

/// Where a hub's API listens, and (HTTPS) the one certificate trusted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    /// HTTPS: the SHA-256 of the hub's certificate (`AB:CD:…`; empty when none was given:
    /// every certificate is refused, naming the one seen).
    pin: Option<String>,
}

impl Endpoint {
    /// `http://HOST:PORT`, or `https://HOST:PORT` with the certificate's SHA-256 `fingerprint`
    /// (a trailing `/` is fine). Says what is wrong and the fix.
    pub(crate) fn parse(url: &str, fingerprint: Option<&str>) -> Result<Self, String> {
        let fix = "use https://HOST:PORT (with --fingerprint) or http://HOST:PORT";
        let (rest, tls) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (rest, true),
            (_, Some(rest)) => (rest, false),
            _ => return Err(format!("--hub {url}: {fix}")),
        };
        let rest = rest.trim_end_matches('/');
        let Some((host, port)) = rest.rsplit_once(':').filter(|(h, _)| !h.is_empty()) else {
            return Err(format!("--hub {url}: no port; {fix}"));
        };
        let Ok(port) = port.parse() else { return Err(format!("--hub {url}: bad port; {fix}")) };
        if host.contains('/') {
            return Err(format!("--hub {url}: {fix}"));
        }
        let pin = match (tls, fingerprint) {
            (true, Some(f)) => Some(crate::tls::normalize(f).ok_or_else(|| {
                format!(
                    "--fingerprint {f}: the SHA-256 of the hub's certificate, 32 bytes in hex \
                     (`tutti serve` and `tutti hubs` print it)"
                )
            })?),
            // Asked without a pin: the handshake refuses and says which certificate it saw.
            (true, None) => Some(String::new()),
            (false, _) => None,
        };
        Ok(Endpoint { host: host.trim_matches(['[', ']']).to_owned(), port, pin })
    }

    /// `HOST:PORT` (an IPv6 host in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Where the API is, for people.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.pin.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// A connection to it: TCP, and TLS trusting only the pinned certificate.
    async fn connect(&self) -> Result<Box<dyn Io>, UiError> {
        let addr = (self.host.as_str(), self.port);
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| unreachable_hub("no answer within 5 s"))?
                .map_err(unreachable_hub)?;
        let _ = tcp.set_nodelay(true);
        let Some(pin) = &self.pin else { return Ok(Box::new(tcp)) };
        let (connector, pinned) = crate::tls::connector(pin).map_err(unreachable_hub)?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| unreachable_hub(format!("{}: {e}", self.host)))?;
        let handshake = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp));
        match handshake.await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(match pinned.seen() {
                Some(seen) if pin.is_empty() => UiError {
                    code: "certificate".into(),
                    message: format!(
                        "the hub at {} shows a certificate with SHA-256 {seen}: if `tutti serve` \
                         printed the same, pass --fingerprint {seen}",
                        self.url()
                    ),
                },
                Some(seen) => UiError {
                    code: "certificate".into(),
                    message: format!(
                        "the hub at {} shows a certificate with SHA-256 {seen}, not {pin}: \
                         another machine answers there, or the hub made a new certificate \
                         (its state was lost); check what `tutti serve` prints",
                        self.url()
                    ),
                },
                None => unreachable_hub(format!("TLS: {e}")),
            }),
            Err(_) => Err(unreachable_hub("no TLS handshake within 5 s")),
        }
    }
}

/// A connection to the hub: plain TCP or TLS.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A hub's API, as one login (admin or read-only).
#[derive(Clone, Debug)]
pub(crate) struct HubClient {
    endpoint: Endpoint,
    token: String,
}

/// `GET /api/hub`.
#[derive(Deserialize)]
struct HubAnswer {
    #[serde(flatten)]
    status: HubStatus,
    access: String,
}

/// `GET /api/pairing`.
#[derive(Deserialize)]
struct PairingAnswer {
    nodes: Vec<PairedView>,
}

/// An API error's body.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    message: String,
}

fn unreachable_hub(e: impl std::fmt::Display) -> UiError {
    UiError { code: "unreachable".into(), message: format!("the hub does not answer: {e}") }
}

impl HubClient {
    pub(crate) fn new(endpoint: Endpoint, token: String) -> Self {
        HubClient { endpoint, token }
    }

    /// Whether the hub answers and takes the token; says why not. Returns whether the login
    /// is read-only.
    pub(crate) async fn check(&self) -> anyhow::Result<bool> {
        let hub = self.hub().await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(hub.1)
    }

    async fn hub(&self) -> Result<(HubStatus, bool), UiError> {
        let a: HubAnswer = self.json("GET", "/api/hub", None).await?;
        Ok((a.status, a.access != "admin"))
    }

    /// One request: (status, body). HTTP/1.1, one connection each (the hub is on the LAN).
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), UiError> {
        let (status, _, body) = self.request_bytes(method, path, body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// One request: (status, content type, body bytes).
    async fn request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String, Vec<u8>), UiError> {
        let mut s = self.endpoint.connect().await?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.endpoint.authority(),
            self.token,
            body.len()
        );
        s.write_all(head.as_bytes()).await.map_err(unreachable_hub)?;
        s.write_all(body.as_bytes()).await.map_err(unreachable_hub)?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .map_err(|_| unreachable_hub("no answer within 10 s"))?
            .map_err(unreachable_hub)?;
        parse_response(&raw).ok_or_else(|| unreachable_hub("an answer that is not HTTP"))
    }

    /// A request whose answer is JSON of type `T`; an error answer in the API's words.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<T, UiError> {
        let (status, text) = self.request(method, path, body.as_deref()).await?;
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_str::<ErrorAnswer>(&text) {
                Ok(e) => UiError { code: e.error, message: e.message },
                Err(_) => UiError { code: status.to_string(), message: format!("HTTP {status}") },
            });
        }
        serde_json::from_str(&text).map_err(|e| UiError {
            code: "bad_answer".into(),
            message: format!("{method} {path}: {e}"),
        })
    }

    /// A request whose answer does not matter beyond its status.
    async fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<u16, UiError> {
        let (status, text) = self.request(method, path, body.as_deref()).await?;
        if (200..300).contains(&status) {
            return Ok(status);
        }
        Err(match serde_json::from_str::<ErrorAnswer>(&text) {
            Ok(e) => UiError { code: e.error, message: e.message },
            Err(_) => UiError { code: status.to_string(), message: format!("HTTP {status}") },
        })
    }
}

/// Status, content type and body of an HTTP/1.1 response (a chunked body decoded).
fn parse_response(raw: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (String::from_utf8_lossy(&raw[..split]), &raw[split + 4..]);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let kind = header("content-type").unwrap_or_default();
    if !header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Some((status, kind, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line]).ok()?.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, kind, out));
        }
        let after = &rest[line + 2..];
        out.extend_from_slice(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// An `<img>` source holding the picture itself: `data:TYPE;base64,…`.
fn data_url(kind: &str, bytes: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = format!("data:{kind};base64,");
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { B64[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Path segment encoding for ids and zone names.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Backend for HubClient {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<Snapshot, UiError>> {
        let c = self.clone();
        async move {
            let nodes: Vec<NodeView> = c.json("GET", "/api/nodes", None).await?;
            let zones: Vec<Zone> = c.json("GET", "/api/zones", None).await?;
            let paired: PairingAnswer = c.json("GET", "/api/pairing", None).await?;
            let guests: Vec<GuestView> = c.json("GET", "/api/guests", None).await?;
            let (hub, _) = c.hub().await?;
            Ok(Snapshot { nodes, zones, paired: paired.nodes, guests, hub })
        }
        .boxed_local()
    }

    fn changes(&self) -> LocalBoxStream<'static, Change> {
        let url = format!("{}/api/events?token={}", self.endpoint.url(), self.token)
            .replacen("http", "ws", 1);
        let endpoint = self.endpoint.clone();
        // Lost (a hub restart, the network): a new connection and a new snapshot, after a
        // pause (the dashboard asks again when it hears `Lagged`).
        let again = || {
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Change::Lagged
            })
        };
        futures_util::stream::once(async move {
            let io = endpoint.connect().await.ok()?;
            tokio_tungstenite::client_async(url, io).await.ok().map(|(ws, _)| ws)
        })
        .flat_map(move |ws| match ws {
            Some(ws) => events(ws).chain(again()).boxed_local(),
            None => again().boxed_local(),
        })
        .boxed_local()
    }

    fn perform(&self, action: Action) -> LocalBoxFuture<'static, Result<Done, UiError>> {
        let c = self.clone();
        async move {
            match action {
                Action::Patch { id, patch } => {
                    // 200: the node took it; 202: saved, the node takes it when it is back.
                    let path = format!("/api/nodes/{}", segment(&id));
                    let status = c.call("PATCH", &path, Some(body(&patch))).await?;
                    Ok(if status == 200 { Done::Ok } else { Done::Saved })
                }
                Action::Command { id, command } => {
                    let path = format!("/api/nodes/{}/command", segment(&id));
                    c.call("POST", &path, Some(body(&command))).await.map(|_| Done::Ok)
                }
                Action::PutZone(zone) => {
                    let path = format!("/api/zones/{}", segment(&zone.name));
                    let zone =
                        serde_json::json!({"source": zone.source, "latency_ms": zone.latency_ms});
                    c.call("PUT", &path, Some(zone.to_string())).await.map(|_| Done::Ok)
                }
                Action::DeleteZone(name) => {
                    let path = format!("/api/zones/{}", segment(&name));
                    c.call("DELETE", &path, None).await.map(|_| Done::Ok)
                }
                Action::ZoneCommand { name, command } => {
                    let path = format!("/api/zones/{}/command", segment(&name));
                    c.call("POST", &path, Some(body(&command))).await.map(|_| Done::Ok)
                }
                Action::Pair => {
                    let offer: PairingOffer =
                        c.json("POST", "/api/pairing", Some("{}".into())).await?;
                    Ok(Done::Pairing(offer))
                }
                Action::InviteGuest => {
                    let invite: GuestInvite =
                        c.json("POST", "/api/guests", Some("{}".into())).await?;
                    Ok(Done::Invite(invite))
                }
                Action::Kick(id) => {
                    let path = format!("/api/guests/{}", segment(&id));
                    c.call("DELETE", &path, None).await.map(|_| Done::Ok)
                }
                Action::Revoke(id) => {
                    let path = format!("/api/pairing/{}", segment(&id));
                    c.call("DELETE", &path, None).await.map(|_| Done::Ok)
                }
            }
        }
        .boxed_local()
    }

    fn health(
        &self,
    ) -> LocalBoxFuture<
        'static,
        Result<
            std::collections::BTreeMap<String, Vec<tutti_proto::control::HealthMinute>>,
            UiError,
        >,
    > {
        let c = self.clone();
        async move { c.json("GET", "/api/health", None).await }.boxed_local()
    }

    fn read_only(&self) -> bool {
        crate::READ_ONLY.get().copied().unwrap_or(true)
    }

    /// The picture itself (this window's pages are not the hub's: no cookie opens its URL).
    fn cover_src(&self, id: &str) -> LocalBoxFuture<'static, Option<String>> {
        let c = self.clone();
        let path = format!("/api/streams/{}/cover", segment(id));
        async move {
            let (status, kind, body) = c.request_bytes("GET", &path, None).await.ok()?;
            (status == 200 && kind.starts_with("image/")).then(|| data_url(&kind, &body))
        }
        .boxed_local()
    }
}

/// A request's JSON body.
fn body(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// The hub's events as changes: reports gathered and handed on once every
/// [`tutti_ui::REPORTS_EVERY`], everything else at once.
fn events(ws: Socket) -> LocalBoxStream<'static, Change> {
    struct State {
        ws: Socket,
        reports: HashMap<String, NodeState>,
        due: Option<tokio::time::Instant>,
    }
    let state = State { ws, reports: HashMap::new(), due: None };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let next = match st.due {
                None => Either::Left(st.ws.next().await),
                Some(at) => {
                    match futures_util::future::select(
                        st.ws.next(),
                        Box::pin(tokio::time::sleep_until(at)),
                    )
                    .await
                    {
                        Either::Left((m, _)) => Either::Left(m),
                        Either::Right(_) => Either::Right(()),
                    }
                }
            };
            let message = match next {
                Either::Right(()) => {
                    st.due = None;
                    let reports = st.reports.drain().collect();
                    return Some((Change::Reports(reports), st));
                }
                Either::Left(None | Some(Err(_))) => return None,
                Either::Left(Some(Ok(m))) => m,
            };
            let Ok(text) = message.into_text() else { continue };
            match serde_json::from_str::<Event>(&text) {
                Ok(Event::NodeState { id, state }) => {
                    st.reports.insert(id, *state);
                    st.due.get_or_insert_with(|| {
                        tokio::time::Instant::now() + tutti_ui::REPORTS_EVERY
                    });
                }
                Ok(e) => return Some((Change::Event(e), st)),
                Err(_) if text.contains("\"lagged\"") => return Some((Change::Lagged, st)),
                Err(_) => {}
            }
        }
    })
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_answers_parse() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7480/", None),
            Ok(Endpoint { host: "127.0.0.1".into(), port: 7480, pin: None })
        );
        let fp = crate::tls::fingerprint(b"hub");
        let https = Endpoint::parse("https://[::1]:7443", Some(&fp.replace(':', ""))).unwrap();
        assert_eq!(https, Endpoint { host: "::1".into(), port: 7443, pin: Some(fp) });
        assert_eq!(https.url(), "https://[::1]:7443");
        assert!(
            Endpoint::parse("https://hub:7443", Some("12:34")).unwrap_err().contains("32 bytes")
        );
        assert!(Endpoint::parse("http://hub", None).unwrap_err().contains("no port"));
        assert!(Endpoint::parse("ftp://hub:1", None).unwrap_err().contains("https://HOST:PORT"));
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain), Some((200, String::new(), b"[]".to_vec())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        let json = "application/json".to_owned();
        assert_eq!(parse_response(chunked), Some((404, json, b"{\"a\"}".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        // A picture's bytes come through whole (not as text), chunked or not.
        let png = [0x89, b'P', b'N', b'G', 0xff, 0x00, b'\r', b'\n'];
        let mut raw = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n8\r\n".to_vec();
        raw.extend_from_slice(&png);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(parse_response(&raw), Some((200, "image/png".into(), png.to_vec())));
        assert_eq!(data_url("image/png", &png), "data:image/png;base64,iVBOR/8ADQo=");
        assert_eq!(data_url("image/jpeg", b"ab"), "data:image/jpeg;base64,YWI=");
        assert_eq!(data_url("image/jpeg", b"a"), "data:image/jpeg;base64,YQ==");
        assert_eq!(segment("living room/1"), "living%20room%2F1");
    }

    /// A hub on loopback serving HTTPS with a new certificate, and its admin token.
    async fn https_hub() -> (tutti_hub::RunningHub, String) {
        let secrets = tutti_hub::secrets::Secrets::generate("gui-test");
        let admin = secrets.admin_token.clone();
        let config = tutti_hub::HubConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            https: Some("127.0.0.1:0".parse().unwrap()),
            link: "127.0.0.1:0".parse().unwrap(),
            state_file: None,
            key: None,
            secrets,
            secrets_file: None,
            advertise: None,
            key_lifetime: Duration::from_secs(86_400),
            mqtt: None,
            mdns: false,
            snapcast: None,
            snapcast_stream: None,
        };
        (tutti_hub::start(config).await.expect("hub starts"), admin)
    }

    #[test]
    fn over_https_only_the_pinned_certificate_is_trusted() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (hub, admin) = rt.block_on(https_hub());
        let (addr, fingerprint) = hub.https.clone().unwrap();
        let url = format!("https://{addr}");
        let client =
            |pin: Option<&str>| HubClient::new(Endpoint::parse(&url, pin).unwrap(), admin.clone());
        // The right certificate: the dashboard's snapshot and the event stream, over TLS.
        let pinned = client(Some(&fingerprint));
        let snapshot = rt.block_on(pinned.snapshot()).expect("a snapshot over HTTPS");
        assert_eq!(snapshot.hub.network, "gui-test");
        assert_eq!(snapshot.hub.tls_fingerprint.as_deref(), Some(fingerprint.as_str()));
        let mut changes = pinned.changes();
        let zone = Zone { name: "den".into(), source: None, latency_ms: None };
        let event = rt.block_on(async {
            // The socket opens as the stream is first asked; a change made once it is open is
            // heard.
            let change = async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                pinned.perform(Action::PutZone(zone)).await.expect("admin may");
            };
            let heard = tokio::time::timeout(Duration::from_secs(5), changes.next());
            tokio::join!(heard, change).0
        });
        assert!(
            matches!(event, Ok(Some(Change::Event(Event::ZoneChanged { ref zone }))) if zone.name == "den"),
            "the event stream over wss: {event:?}"
        );
        // Another certificate (the pin of some other machine): refused before the token goes
        // out, naming the certificate seen.
        let other = crate::tls::fingerprint(b"some other hub");
        let e = rt.block_on(client(Some(&other)).snapshot()).unwrap_err();
        assert!(e.message.contains(&format!("SHA-256 {fingerprint}, not {other}")), "{e:?}");
        // No pin: refused, and told which certificate to check.
        let e = rt.block_on(client(None).snapshot()).unwrap_err();
        assert!(e.message.contains(&format!("pass --fingerprint {fingerprint}")), "{e:?}");
        hub.stop();
    }
}
