//! The hub's own TLS: a self-signed certificate made on first start and kept beside the
//! settings (so a phone's one-time exception, or a pinned fingerprint, stays valid), and an
//! HTTPS listener for the API and the web app.
//!
//! There is no certificate authority on a home LAN: the hub is the root of trust. A careful
//! user compares the SHA-256 fingerprint `tutti serve` prints (and the pairing API returns)
//! with what the browser shows.

use crate::store::FileError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, at most (the rest wait in the kernel's backlog).
pub const MAX_HANDSHAKES: usize = 64;

/// The hub's certificate and key.
pub struct HubCert {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl core::fmt::Debug for HubCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HubCert").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl HubCert {
    /// The certificate kept in `dir` (`tls-cert.pem`, `tls-key.pem`, owner-only), or a new one
    /// made now for `names` (host names and IP addresses) and saved there. `None`: a new one
    /// in memory for this run.
    pub fn load_or_make(dir: Option<&Path>, names: &[String]) -> Result<(HubCert, bool), TlsError> {
        let paths = dir.map(|d| (d.join("tls-cert.pem"), d.join("tls-key.pem")));
        let damaged = |path: &Path, e: rustls::pki_types::pem::Error, what, fix| {
            FileError::Damaged { path: path.to_owned(), what, reason: e.to_string(), fix }
        };
        if let Some((c, k)) = &paths
            && c.exists()
        {
            let cert = CertificateDer::from_pem_file(c).map_err(|e| {
                damaged(c, e, "certificate", "delete it (and tls-key.pem) to make a new one")
            })?;
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| {
                damaged(k, e, "private key", "delete it and tls-cert.pem to make new ones")
            })?;
            return Ok((HubCert { cert, key }, false));
        }
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "Tutti hub");
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        if let Some((c, k)) = &paths {
            crate::store::write_atomic(k, key.serialize_pem().as_bytes(), 0o600)
                .map_err(|e| FileError::io(k, e))?;
            crate::store::write_atomic(c, cert.pem().as_bytes(), 0o644)
                .map_err(|e| FileError::io(c, e))?;
        }
        let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(TlsError::Key)?;
        Ok((HubCert { cert: cert.der().clone(), key: der }, true))
    }

    /// SHA-256 of the certificate, as browsers show it (`AB:CD:…`).
    pub fn fingerprint(&self) -> String {
        Sha256::digest(self.cert.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The certificate, DER (a client pins it).
    pub fn der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        // ring, not aws-lc-rs: no C toolchain beyond a compiler (cmake, NASM) to build, and on
        // a LAN hub's self-signed certificate X25519 without a post-quantum hybrid is enough.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Why the hub cannot serve HTTPS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate's files could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A certificate could not be made.
    #[error("the hub's certificate could not be made: {0}")]
    Make(#[from] rcgen::Error),
    /// The key made could not be used.
    #[error("the hub's key could not be used: {0}")]
    Key(&'static str),
    /// TLS could not be set up with the certificate.
    #[error("TLS with the hub's certificate: {0}")]
    Setup(#[from] rustls::Error),
    /// The listener failed.
    #[error("the HTTPS listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the certificate of a hub whose settings are in `state_file` is kept.
pub fn cert_dir(state_file: Option<&Path>) -> Option<PathBuf> {
    state_file.map(|f| f.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf))
}

/// An HTTPS listener for `axum::serve`: TCP connections whose TLS handshakes (each bounded
/// by [`HANDSHAKE_TIMEOUT`], [`MAX_HANDSHAKES`] at once) run beside the accept loop, so a slow
/// or silent client holds up no one.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `cert` on `listener`.
    pub fn new(listener: TcpListener, cert: &HubCert) -> Result<Self, TlsError> {
        let acceptor = cert.acceptor()?;
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(permit);
                    if let Ok(Ok(tls)) = hs {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (the hub stops): wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
