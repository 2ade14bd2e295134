//! The API over HTTPS with the hub's own certificate: a client that pins the fingerprint the
//! hub prints gets the same answers as over plain HTTP (tokens still required); the
//! certificate survives a restart; a silent client holds up no one.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tutti_hub::{HubConfig, RunningHub};

mod common;
use common::ADMIN;

async fn hub(dir: &std::path::Path) -> RunningHub {
    let https = Some("127.0.0.1:0".parse().unwrap());
    let state_file = Some(dir.join("hub.json"));
    common::start(HubConfig { https, state_file, ..common::config() }).await
}

/// Trusts exactly one certificate: the one with this SHA-256 fingerprint (as a phone that
/// accepted the hub's certificate once, or a client given the fingerprint).
#[derive(Debug)]
struct Pinned(String, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        cert: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: Vec<String> =
            Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02X}")).collect();
        if seen.join(":") == self.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the hub's certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTPS request, pinning `fingerprint`: (status, body), or the TLS error.
async fn https(
    addr: std::net::SocketAddr,
    fingerprint: &str,
    request: &str,
) -> Result<(u16, String), String> {
    let (status, _, body) = https_with_head(addr, fingerprint, request).await?;
    Ok((status, body))
}

/// One HTTPS request, pinning `fingerprint`: (status, head, body), or the TLS error.
async fn https_with_head(
    addr: std::net::SocketAddr,
    fingerprint: &str,
    request: &str,
) -> Result<(u16, String, String), String> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(fingerprint.to_owned(), provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https_with_the_hubs_own_pinned_certificate() {
    let dir = std::env::temp_dir().join(format!("tutti-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let h = hub(&dir).await;
    let (addr, fingerprint) = h.https.clone().expect("serves HTTPS");
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    // Tokens still rule over TLS.
    let (s, body) = https(addr, &fingerprint, &get("/api/nodes", Some(ADMIN))).await.unwrap();
    assert_eq!((s, body.as_str()), (200, "[]"));
    let (s, _) = https(addr, &fingerprint, &get("/api/nodes", None)).await.unwrap();
    assert_eq!(s, 401);
    // Another certificate (a man in the middle) is refused by a pinning client.
    let wrong =
        fingerprint.replace(&fingerprint[..2], if &fingerprint[..2] == "00" { "01" } else { "00" });
    assert!(https(addr, &wrong, &get("/api/nodes", Some(ADMIN))).await.is_err());
    // The pairing answer carries the fingerprint (for the QR page).
    let post = format!(
        "POST /api/pairing HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let (s, body) = https(addr, &fingerprint, &post).await.unwrap();
    assert!(s == 201 && body.contains(&fingerprint), "{s} {body}");
    // ... and so does the QR code's picture, under the code.
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let svg = answer["qr_svg"].as_str().unwrap();
    assert!(svg.contains(&fingerprint[..47]) && svg.contains(&fingerprint[48..]), "{svg}");
    std::fs::write(dir.join("pairing-qr.svg"), svg).unwrap();
    // A dashboard login over HTTPS keeps its cookie to HTTPS (`Secure`); over plain HTTP
    // (the hub's own machine) it cannot.
    let form = format!("token={ADMIN}");
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let (s, head, _) = https_with_head(addr, &fingerprint, &login).await.unwrap();
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"));
    assert!(s == 303 && cookie.is_some_and(|c| c.ends_with("; Secure")), "{s} {head}");
    let (s, head, _) = common::raw_http(h.http, "POST /login", "", &form).await;
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"));
    assert!(s == 303 && cookie.is_some_and(|c| !c.contains("Secure")), "{s} {head}");
    // Silent clients (no handshake) hold up no one.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let t = std::time::Instant::now();
    let (s, _) = https(addr, &fingerprint, &get("/api/zones", Some(ADMIN))).await.unwrap();
    assert!(s == 200 && t.elapsed() < Duration::from_secs(2), "{s} in {:?}", t.elapsed());
    drop(idle);
    // The certificate is kept (owner-only key): the same after a restart.
    let key = dir.join("tls-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o077, 0, "key private");
    h.stop();
    let h = hub(&dir).await;
    assert_eq!(h.https.as_ref().map(|x| x.1.clone()), Some(fingerprint));
    h.stop();
    if std::env::var_os("TUTTI_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
