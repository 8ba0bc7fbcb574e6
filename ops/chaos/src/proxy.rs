//! A loopback TCP proxy in front of one or several servers: it spreads new connections over the
//! servers that accept them (round-robin, skipping those that refuse) and can cut every
//! connection on demand.
//!
//! The connector takes one broker URL and one database URL. In front of a three-node RabbitMQ
//! cluster, this proxy is what lets a client that lost its node reconnect to a survivor: the
//! client reconnects to the same address, and the proxy picks a node that answers. In front of
//! a single server it is a fault injector (cut, restore), like `tests/src/proxy.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A connection attempt to one server gives up after this (then the next server is tried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    /// `true` while cut: every connection is closed and new ones are refused.
    cut: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    /// Open proxied connections per upstream, in the order given.
    open: Arc<Vec<AtomicUsize>>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Listens on 127.0.0.1:`port` (0: any) and forwards to `upstreams`.
    pub async fn start(
        name: &'static str,
        port: u16,
        upstreams: Vec<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding the {name} proxy"))?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(upstreams.iter().map(|_| AtomicUsize::new(0)).collect());
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::new(upstreams),
            cut_rx,
            Arc::clone(&accepted),
            Arc::clone(&open),
        ));
        Ok(Self {
            addr,
            cut,
            accepted,
            open,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every proxied connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Proxied connections open right now to upstream `index`.
    pub fn open_to(&self, index: usize) -> usize {
        self.open.get(index).map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstreams: Arc<Vec<SocketAddr>>,
    cut: watch::Receiver<bool>,
    accepted: Arc<AtomicUsize>,
    open: Arc<Vec<AtomicUsize>>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = listener.accept() => {
                let Ok((client, _)) = incoming else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if *cut.borrow() {
                    drop(client);
                    continue;
                }
                accepted.fetch_add(1, Ordering::Relaxed);
                connections.spawn(forward(
                    client,
                    Arc::clone(&upstreams),
                    Arc::clone(&next),
                    cut.clone(),
                    Arc::clone(&open),
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Connects to the first server that answers, starting from the next one in turn, then pumps
/// bytes both ways until either side closes or the proxy is cut.
async fn forward(
    mut client: TcpStream,
    upstreams: Arc<Vec<SocketAddr>>,
    next: Arc<AtomicUsize>,
    mut cut: watch::Receiver<bool>,
    open: Arc<Vec<AtomicUsize>>,
) {
    let start = next.fetch_add(1, Ordering::Relaxed);
    let mut server = None;
    for i in 0..upstreams.len() {
        let index = (start + i) % upstreams.len();
        if let Ok(Ok(stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstreams[index])).await
        {
            server = Some((stream, index));
            break;
        }
    }
    let Some((mut server, index)) = server else {
        return;
    };
    let _open = OpenGuard::new(Arc::clone(&open), index);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// Counts one open connection to an upstream for as long as it lives.
struct OpenGuard(Arc<Vec<AtomicUsize>>, usize);

impl OpenGuard {
    fn new(open: Arc<Vec<AtomicUsize>>, index: usize) -> Self {
        open[index].fetch_add(1, Ordering::SeqCst);
        Self(open, index)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A port nothing listens on (bound, then released).
    async fn dead_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    }

    async fn echoes(addr: SocketAddr) -> bool {
        let Ok(mut socket) = TcpStream::connect(addr).await else {
            return false;
        };
        if socket.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), socket.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }

    #[tokio::test]
    async fn skips_servers_that_refuse() {
        let proxy = Balancer::start("test", 0, vec![dead_port().await, echo_server().await])
            .await
            .expect("proxy");
        for _ in 0..4 {
            assert!(
                echoes(proxy.addr()).await,
                "a connection missed the live server"
            );
        }
        assert_eq!(proxy.accepted(), 4);
        assert_eq!(proxy.open_to(0), 0);
    }

    #[tokio::test]
    async fn cut_closes_and_refuses_until_restored() {
        let proxy = Balancer::start("test", 0, vec![echo_server().await])
            .await
            .expect("proxy");
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        socket.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 1];
        socket.read_exact(&mut buf).await.expect("echo");
        proxy.cut();
        let closed = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "not closed by the cut"
        );
        assert!(!echoes(proxy.addr()).await, "served while cut");
        proxy.restore();
        assert!(echoes(proxy.addr()).await, "not served after restore");
    }
}
