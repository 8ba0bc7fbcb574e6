//! TLS on the public listener, with client certificates (mTLS, DESIGN.md §3): the server's
//! rustls configuration, and the identity of the certificate a connection presented.
//!
//! A client certificate is requested at every handshake and, when presented, verified against
//! the configured CA bundle(s): an expired, not-yet-valid, wrongly signed or unknown
//! certificate fails the handshake. The handshake does not insist on one, because routes that
//! take no certificate (BNC, Paysafe) share the listener; the Corelink routes refuse a request
//! without one (401 `CLIENT_CERT_REQUIRED`). The verified certificate's SHA-256 fingerprint
//! rides on every request of its connection as a [`ClientCertificate`] extension (the
//! accept loop in `server` puts it there).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, TlsSettings};

/// The verified client certificate of the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Lower-case hex SHA-256 of the certificate's DER: what clients are bound to.
    pub sha256: String,
}

impl ClientCertificate {
    pub fn from_der(der: &[u8]) -> Self {
        Self {
            sha256: fingerprint(der),
        }
    }
}

/// Lower-case hex SHA-256 of a DER certificate (as `openssl x509 -fingerprint -sha256`
/// prints it, without the colons).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server's TLS configuration: its certificate chain and key, and the CAs that issue
/// bank certificates. Errors name the configuration key.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, ConfigError> {
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        return Err(ConfigError::new("tls", "set both cert_file and key_file"));
    };
    let chain = certificates(&cert_file.relative(), "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file.relative())
        .map_err(|e| ConfigError::new("tls.key_file", format!("no private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for (i, file) in settings.client_ca_files.iter().enumerate() {
        let at = format!("tls.client_ca_files[{i}]");
        for ca in certificates(&file.relative(), &at)? {
            roots
                .add(ca)
                .map_err(|e| ConfigError::new(&at, format!("not a CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::new(
            "tls.client_ca_files",
            "name the CA bundle(s) that issue bank certificates: mTLS is mandatory",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ConfigError::new("tls.client_ca_files", e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError::new(
                "tls.key_file",
                format!("does not match the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(certificates)
}
