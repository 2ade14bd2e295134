//! The dashboard's backend over a hub's HTTP + WebSocket API: the calls `curl` would make,
//! and the hub's event stream, its nodes' reports gathered and handed on once a period.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{Either, LocalBoxFuture};
use futures_util::stream::LocalBoxStream;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_proto::control::{Event, NodeState, NodeView, PairedView, PairingOffer, Zone};
use tutti_ui::{Action, Backend, Change, Done, HubInfo, Snapshot, UiError};

/// Where a hub's API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// `http://HOST:PORT` (a trailing `/` is fine).
    pub(crate) fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("http://")?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':')?;
        if host.is_empty() || host.contains('/') {
            return None;
        }
        Some(Endpoint { host: host.trim_matches(['[', ']']).to_owned(), port: port.parse().ok()? })
    }
}

/// A hub's API, as one login (admin or read-only).
#[derive(Clone, Debug)]
pub(crate) struct HubClient {
    endpoint: Endpoint,
    token: String,
}

/// `GET /api/hub`.
#[derive(Deserialize)]
struct HubAnswer {
    network: String,
    version: String,
    #[serde(default)]
    tls_fingerprint: Option<String>,
    #[serde(default)]
    mqtt: Option<String>,
    #[serde(default)]
    rotating: bool,
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

    async fn hub(&self) -> Result<(HubInfo, bool), UiError> {
        let a: HubAnswer = self.json("GET", "/api/hub", None).await?;
        let info = HubInfo {
            network: a.network,
            version: a.version,
            tls_fingerprint: a.tls_fingerprint,
            mqtt: a.mqtt,
            rotating: a.rotating,
        };
        Ok((info, a.access != "admin"))
    }

    /// One request: (status, body). HTTP/1.1, one connection each (the hub is on the LAN).
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), UiError> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let connect = tokio::net::TcpStream::connect(addr);
        let mut s = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| unreachable_hub("no answer within 5 s"))?
            .map_err(unreachable_hub)?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.endpoint.host,
            self.endpoint.port,
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

/// Status and body of an HTTP/1.1 response (a chunked body decoded).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
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
            let (hub, _) = c.hub().await?;
            Ok(Snapshot { nodes, zones, paired: paired.nodes, hub })
        }
        .boxed_local()
    }

    fn changes(&self) -> LocalBoxStream<'static, Change> {
        let url = format!(
            "ws://{}:{}/api/events?token={}",
            self.endpoint.host, self.endpoint.port, self.token
        );
        // Lost (a hub restart, the network): a new connection and a new snapshot, after a
        // pause (the dashboard asks again when it hears `Lagged`).
        let again = || {
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Change::Lagged
            })
        };
        futures_util::stream::once(async move {
            tokio_tungstenite::connect_async(url).await.ok().map(|(ws, _)| ws)
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
}

/// A request's JSON body.
fn body(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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
            Endpoint::parse("http://127.0.0.1:7480/"),
            Some(Endpoint { host: "127.0.0.1".into(), port: 7480 })
        );
        assert_eq!(Endpoint::parse("https://hub:7443"), None);
        assert_eq!(Endpoint::parse("http://hub"), None);
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain), Some((200, "[]".into())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((404, "{\"a\"}".into())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(segment("living room/1"), "living%20room%2F1");
    }
}
