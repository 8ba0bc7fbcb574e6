//! A broker connection whose socket the publisher can abort.
//!
//! Why: when RabbitMQ blocks publishers (`connection.blocked`, a memory or disk alarm), lapin
//! stops writing to the socket and keeps every frame queued in its own buffers, publishes
//! included, until `connection.unblocked`. A `channel.close` or `connection.close` would queue
//! behind those publishes and let them out first. The only way to make sure a publish that was
//! answered 503 never reaches the broker is to end the TCP connection without letting lapin
//! flush: we hand lapin the socket ourselves (`Connection::connector`), keep a duplicate of it,
//! and `shutdown` that duplicate (with a zero linger, so the last close resets rather than
//! drains). lapin then sees a dead socket and fails everything pending on it.

use std::net::{Shutdown, TcpStream as StdTcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_compat::Compat;
use lapin::tcp::{AsyncTcpStream, TLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, ErrorKind};

/// The duplicate of a connection's socket; [`Abort::abort`] ends the connection at once.
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<Mutex<Option<StdTcpStream>>>);

impl Abort {
    fn arm(&self, socket: StdTcpStream) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket);
    }

    /// Ends the connection: nothing lapin still holds for it is ever written.
    pub fn abort(&self) {
        if let Some(socket) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Connects to `url` (amqp or amqps) like `Connection::connect`, keeping an [`Abort`].
pub async fn connect(url: &str, name: &str) -> anyhow::Result<(Connection, Abort)> {
    let uri: AMQPUri = url
        .parse()
        .map_err(|error: String| anyhow::anyhow!(error))
        .context("parsing broker.url")?;
    let abort = Abort::default();
    let armed = abort.clone();
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = Connection::connector(
        uri,
        lapin::runtime::default_runtime()?,
        async move |uri: AMQPUri, _runtime| {
            let stream = open(&uri, &armed)
                .await
                .map_err(|error| lapin::Error::from(ErrorKind::IOError(Arc::new(error))))?;
            Ok(stream)
        },
        properties,
    )
    .await
    .context("opening the AMQP connection")?;
    Ok((connection, abort))
}

async fn open(
    uri: &AMQPUri,
    abort: &Abort,
) -> std::io::Result<AsyncTcpStream<Compat<tokio::net::TcpStream>>> {
    let host = uri.authority.host.as_str();
    let stream = tokio::net::TcpStream::connect((host, uri.authority.port)).await?;
    stream.set_nodelay(true)?;
    let stream = stream.into_std()?;
    abort.arm(stream.try_clone()?);
    let stream = AsyncTcpStream::Plain(Compat::new(tokio::net::TcpStream::from_std(stream)?));
    match uri.scheme {
        AMQPScheme::AMQP => Ok(stream),
        AMQPScheme::AMQPS => stream.into_tls(host, TLSConfig::default()).await,
    }
}
