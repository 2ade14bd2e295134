//! HTTPS to a hub pinned to its certificate. A hub on a home LAN has no certificate authority:
//! it is its own root of trust and prints its certificate's SHA-256 (`tutti serve`, `tutti
//! hubs`, the pairing page). The app trusts exactly that certificate, whatever names it
//! carries, and says which one it saw when it is not the one asked for.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A certificate's SHA-256 as the hub prints it: `AB:CD:…` (32 bytes).
pub(crate) fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// `AB:CD:…` from what a person pasted (any case, colons or not, spaces around); `None` when
/// it is not 32 bytes of hex.
pub(crate) fn normalize(pasted: &str) -> Option<String> {
    let hex: String = pasted.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<String> =
        hex.as_bytes().chunks(2).map(|p| String::from_utf8_lossy(p).to_uppercase()).collect();
    Some(bytes.join(":"))
}

/// Trusts the one certificate whose SHA-256 is `pin`; remembers the last one it was shown.
#[derive(Debug)]
pub(crate) struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<String>>,
}

impl Pinned {
    /// The certificate shown by the last handshake refused (for the error message).
    pub(crate) fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        cert: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(cert.as_ref());
        if seen == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(seen);
        }
        Err(rustls::Error::General("not the hub's certificate".into()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client that trusts only the certificate `pin` names, and its verifier (to ask what
/// it saw).
pub(crate) fn connector(
    pin: &str,
) -> Result<(tokio_rustls::TlsConnector, Arc<Pinned>), rustls::Error> {
    // ring, as the hub (no C toolchain beyond a compiler to build).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Arc::new(Pinned {
        pin: pin.to_owned(),
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), pinned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_fingerprints_are_read_whatever_their_case_and_colons() {
        let canonical = fingerprint(b"a certificate");
        assert_eq!(canonical.len(), 32 * 3 - 1);
        assert_eq!(normalize(&canonical), Some(canonical.clone()));
        assert_eq!(normalize(&canonical.replace(':', "").to_lowercase()), Some(canonical.clone()));
        assert_eq!(normalize(&format!(" {canonical} ")), Some(canonical.clone()));
        assert_eq!(normalize(&canonical[3..]), None, "31 bytes");
        assert_eq!(normalize(&canonical.replace('A', "G")), None, "not hex");
    }
}
