//! What every hub test sets up the same way: a hub on loopback with a known admin token, a
//! raw HTTP/1.1 client, and waiting for a condition.

#![allow(dead_code)] // each test file uses its part

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_hub::{HubConfig, RunningHub};

/// The API's admin token in these tests.
pub(crate) const ADMIN: &str = "admin-token-for-hub-tests";

/// A hub's configuration for a test: loopback only (any free ports), plain HTTP, no state
/// file, no passphrase, fresh secrets with [`ADMIN`], no MQTT, no mDNS. Change what a test
/// needs with struct update syntax.
pub(crate) fn config() -> HubConfig {
    let mut secrets = tutti_hub::secrets::Secrets::generate("test");
    secrets.admin_token = ADMIN.into();
    HubConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        https: None,
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
    }
}

/// Starts a hub (panics if it cannot).
pub(crate) async fn start(config: HubConfig) -> RunningHub {
    tutti_hub::start(config).await.expect("hub starts")
}

/// Raw HTTP/1.1 over TCP: `request` is `METHOD PATH`, `extra` more header lines (each ending
/// in `\r\n`). Returns (status, head, body).
pub(crate) async fn raw_http(
    addr: SocketAddr,
    request: &str,
    extra: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (method, path) = request.split_once(' ').unwrap();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(text.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

/// The header line that carries `token`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// `method path` as the admin: (status, the JSON of the body).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) =
        raw_http(addr, &format!("{method} {path}"), &bearer(ADMIN), body.unwrap_or("")).await;
    // Chunked bodies: keep the JSON between the first { or [ and the last } or ].
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    (status, body[start..end.max(start)].to_owned())
}

/// Waits until `f` holds, at most 5 s (panics naming `what`).
pub(crate) async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
