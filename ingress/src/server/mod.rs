//! The HTTP server of the public listener: accepts TCP connections under the connection caps
//! ([`limits`]), runs the TLS handshake (bounded in time), hands each connection to hyper with
//! the router as its service, cuts slow and idle connections ([`idle`], hyper's header-read
//! timer, HTTP/2 keep-alive), and on shutdown stops accepting and lets open connections finish
//! within a grace period. Limits on connections themselves (how many, how slow) belong here,
//! not in the routes.
//!
//! Plain HTTP (development, tests, or behind a proxy that terminates TLS) goes through the same
//! loop, so it gets the same limits. The client certificate a TLS connection presented rides
//! on each of its requests as a [`ClientCertificate`] extension, with the peer's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::auth::forwarded::TrustedProxies;
use crate::auth::tls::ClientCertificate;
use crate::config::HttpSettings;
use crate::metrics;

pub mod idle;
pub mod limits;

use idle::Activity;
use limits::{Admitted, ConnectionLimits};

/// What the public listener serves, and how it treats its connections.
#[derive(Debug)]
pub struct PublicServer {
    pub router: Router,
    /// TLS with client certificates; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    pub http: HttpSettings,
    /// Exempt from the per-address cap.
    pub proxies: Option<Arc<TrustedProxies>>,
}

/// Serves on `listener` until `stop`, then gives open connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    server: PublicServer,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let limits = ConnectionLimits::new(&server.http, server.proxies.clone());
    let connection = Arc::new(Connection {
        router: server.router,
        tls: server.tls.map(TlsAcceptor::from),
        builder: builder(&server.http),
        handshake_timeout: Duration::from_secs(server.http.tls_handshake_timeout_secs),
        idle_timeout: Duration::from_secs(server.http.idle_timeout_secs),
    });
    // Every connection task holds a clone; once all are dropped, every connection has ended.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
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
        let admitted = match limits.admit(peer.ip(), connection.tls.is_some()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                // Dropped unread: the cheapest answer there is.
                metrics::count_connection_refused(refused.reason());
                tracing::debug!(%peer, reason = refused.reason(), "connection refused");
                continue;
            }
        };
        // Without it, Nagle's algorithm holds the handshake's last flight until the client's
        // delayed ACK (40 ms on Linux): measured as a 44 ms p50 per new connection.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        tokio::spawn(connection.clone().run(
            tcp,
            peer,
            admitted,
            Closing {
                stop: stop.clone(),
                _open: open.clone(),
            },
        ));
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing them"
        );
    }
    Ok(())
}

/// hyper's connection settings: the header-read timer (off without a timer) and HTTP/2's
/// keep-alive and stream cap.
fn builder(http: &HttpSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(http.header_read_timeout_secs));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(http.http2_keep_alive_interval_secs))
        .keep_alive_timeout(Duration::from_secs(http.http2_keep_alive_timeout_secs))
        .max_concurrent_streams(http.http2_max_concurrent_streams);
    builder
}

/// How long a connection closed for idleness has to say so (an HTTP/2 GOAWAY) before it is
/// dropped, once no request is in flight on it.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What tells a connection to close gracefully: the listener's shutdown. Holding it keeps the
/// listener's drain waiting.
struct Closing {
    stop: CancellationToken,
    _open: tokio::sync::mpsc::Sender<()>,
}

/// What every connection of the listener shares.
struct Connection {
    router: Router,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    /// Serves one admitted connection to its end; its places under the caps go with it.
    async fn run(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        mut admitted: Admitted,
        closing: Closing,
    ) {
        let Some(acceptor) = &self.tls else {
            admitted.handshake_done();
            self.serve(tcp, peer, None, closing).await;
            return;
        };
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await;
        admitted.handshake_done();
        let tls = match handshake {
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
        self.serve(tls, peer, certificate, closing).await;
        drop(admitted);
    }

    /// Runs hyper on `io` until the client leaves or an error; at the idle timeout or the
    /// listener's shutdown, closes it gracefully (HTTP/2: GOAWAY; requests in flight finish).
    async fn serve<I>(
        &self,
        io: I,
        peer: SocketAddr,
        certificate: Option<ClientCertificate>,
        closing: Closing,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let counted = activity.clone();
        let service = self
            .router
            .clone()
            .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                request
            })
            .map_future(move |answer| {
                let in_flight = counted.request();
                async move {
                    let answer = answer.await;
                    drop(in_flight);
                    answer
                }
            });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let mut shutting_down = false;
        // Set once closed for idleness: a connection that does not end by then is dropped.
        let mut drop_at = None;
        let served = loop {
            tokio::select! {
                served = connection.as_mut() => break served,
                () = activity.idle_for(self.idle_timeout), if drop_at.is_none() => {
                    tracing::debug!(%peer, "idle connection closed");
                    connection.as_mut().graceful_shutdown();
                    drop_at = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                }
                () = closing.stop.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = quiet_after(drop_at, &activity) => break Ok(()),
            }
        };
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Resolves at `deadline`, or later once the connection has had no request in flight for
/// [`IDLE_CLOSE_GRACE`]; never without a deadline. A request that crossed the idle GOAWAY
/// (sent before the client read it) was accepted, and HTTP/2 says it is served: it is not cut,
/// and its answer gets the grace to be written; its own timeouts (body, enqueue) bound it.
async fn quiet_after(deadline: Option<tokio::time::Instant>, activity: &Activity) {
    match deadline {
        Some(deadline) => {
            tokio::time::sleep_until(deadline).await;
            activity.idle_for(IDLE_CLOSE_GRACE).await;
        }
        None => std::future::pending().await,
    }
}

/// Serves `router` over plain HTTP until `stop`, then lets in-flight requests finish: the ops
/// listener (probes and metrics), which only Prometheus and the orchestrator reach.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
}
