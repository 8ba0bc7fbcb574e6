//! TLS on the public listener, with client certificates (mTLS, DESIGN.md §3).
//!
//! A client certificate is requested at every handshake and, when presented, verified against
//! the configured CA bundle(s): an expired, not-yet-valid, wrongly signed or unknown
//! certificate fails the handshake. The handshake does not insist on one, because routes that
//! take no certificate (BNC, Paysafe) share the listener; the Corelink routes refuse a request
//! without one (401 `CLIENT_CERT_REQUIRED`). The verified certificate's SHA-256 fingerprint
//! rides on every request of its connection as a [`ClientCertificate`] extension.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::{ConfigError, TlsSettings};

/// A TLS handshake slower than this is dropped, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves `router` over TLS until `stop`, then gives open connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let connections = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without it, Nagle's algorithm holds the handshake's last flight until the client's
        // delayed ACK (40 ms on Linux): measured as a 44 ms p50 per new connection.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), connections.watcher());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| ClientCertificate::from_der(der));
            let service =
                router.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(certificate) = &certificate {
                        request.extensions_mut().insert(certificate.clone());
                    }
                    request
                });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "TLS connections still open after the grace period; closing them"
        );
    }
    Ok(())
}
