//! In-process TCP proxy that sits between the service under test and a real broker so end-to-end
//! tests can inject network faults (broker gone, black hole) on loopback without root or `tc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Size of each per-direction read buffer.
const BUF_SIZE: usize = 16 * 1024;

/// What the proxy currently does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Pump bytes both ways.
    Forward,
    /// Close every connection and refuse new ones.
    Cut,
    /// Keep connections open but move no bytes.
    Stall,
}

/// A fault-injecting TCP proxy listening on `127.0.0.1`; dropping it tears everything down.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect; reported by [`FaultProxy::addr`].
    addr: SocketAddr,
    /// Broadcasts mode changes to the accept loop and every connection task.
    mode: watch::Sender<Mode>,
    /// Live connection count, kept by a guard in each connection task (so aborts count too).
    open: Arc<AtomicUsize>,
    /// The accept loop; it owns the `JoinSet` of connection tasks, so aborting it aborts them all.
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds 127.0.0.1:0 and forwards every accepted connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding fault proxy")?;
        let addr = listener
            .local_addr()
            .context("reading fault proxy address")?;
        let (mode, mode_rx) = watch::channel(Mode::Forward);
        let open = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(listener, upstream, mode_rx, Arc::clone(&open)));
        Ok(FaultProxy {
            addr,
            mode,
            open,
            accept_task,
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open proxied connection (both sides) and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but stops reading/forwarding in both directions until [`Self::restore`].
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Back to normal forwarding for new connections (and resumes stalled ones).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }

    /// Number of currently open proxied connections.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Counts one open connection for as long as it lives.
struct ConnGuard(Arc<AtomicUsize>);

impl ConnGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        ConnGuard(open)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts clients (dropping them at once while cut) and owns their pump tasks.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    open: Arc<AtomicUsize>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if *mode.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                let guard = ConnGuard::new(Arc::clone(&open));
                conns.spawn(pump(client, upstream, mode.clone(), guard));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Forwards bytes both ways until either side closes (which closes both) or the mode becomes `Cut`.
async fn pump(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    _guard: ConnGuard,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut up_buf, mut down_buf) = (vec![0u8; BUF_SIZE], vec![0u8; BUF_SIZE]);
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Cut => return,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Forward => {}
        }
        let (dst, data): (&mut TcpStream, &[u8]) = tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() { return; }
                continue;
            }
            read = client.read(&mut up_buf) => match read {
                Ok(n) if n > 0 => (&mut server, &up_buf[..n]),
                _ => return,
            },
            read = server.read(&mut down_buf) => match read {
                Ok(n) if n > 0 => (&mut client, &down_buf[..n]),
                _ => return,
            },
        };
        // A write already read from the peer is finished even if stalled meanwhile; only a cut aborts it.
        tokio::select! {
            written = dst.write_all(data) => if written.is_err() { return },
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts an echo server on loopback and returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo server");
        let addr = listener.local_addr().expect("echo server addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = sock.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(sock: &mut TcpStream, msg: &[u8]) {
        sock.write_all(msg).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(2), sock.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(buf, msg);
    }

    /// True if the socket reports EOF or an error (not data, not silence) within 2 s.
    async fn sees_close(sock: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn wait_open(proxy: &FaultProxy, want: usize) {
        for _ in 0..200 {
            if proxy.open_connections() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "open_connections stayed {} (wanted {want})",
            proxy.open_connections()
        );
    }

    #[tokio::test]
    async fn forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await)
            .await
            .expect("start proxy");
        let mut sock = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut sock, b"hello").await;
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = sock.split();
        let mut echoed = vec![0u8; big.len()];
        let (wr, rd) = tokio::join!(w.write_all(&big), r.read_exact(&mut echoed));
        wr.expect("write big");
        rd.expect("read big");
        assert_eq!(echoed, big);
        wait_open(&proxy, 1).await;
        drop(sock);
        wait_open(&proxy, 0).await;
    }

    #[tokio::test]
    async fn cut_closes_and_refuses_until_restore() {
        let proxy = FaultProxy::start(echo_server().await)
            .await
            .expect("start proxy");
        let mut sock = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut sock, b"before").await;
        proxy.cut();
        assert!(
            sees_close(&mut sock).await,
            "open connection not closed by cut"
        );
        wait_open(&proxy, 0).await;
        if let Ok(mut fresh) = TcpStream::connect(proxy.addr()).await {
            assert!(
                sees_close(&mut fresh).await,
                "new connection not closed while cut"
            );
        }
        proxy.restore();
        let mut sock = TcpStream::connect(proxy.addr())
            .await
            .expect("connect after restore");
        round_trip(&mut sock, b"after").await;
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_restore() {
        let proxy = FaultProxy::start(echo_server().await)
            .await
            .expect("start proxy");
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut old, b"warm").await;
        proxy.stall();
        let mut new = TcpStream::connect(proxy.addr())
            .await
            .expect("connect while stalled");
        let mut buf = [0u8; 4];
        for sock in [&mut old, &mut new] {
            sock.write_all(b"ping").await.expect("write while stalled");
            let waited =
                tokio::time::timeout(Duration::from_millis(300), sock.read_exact(&mut buf)).await;
            assert!(waited.is_err(), "echo arrived while stalled");
        }
        wait_open(&proxy, 2).await;
        proxy.restore();
        for sock in [&mut old, &mut new] {
            tokio::time::timeout(Duration::from_secs(2), sock.read_exact(&mut buf))
                .await
                .expect("echo after restore")
                .expect("read");
            assert_eq!(&buf, b"ping");
        }
    }

    #[tokio::test]
    async fn drop_closes_connections() {
        let proxy = FaultProxy::start(echo_server().await)
            .await
            .expect("start proxy");
        let mut sock = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut sock, b"x").await;
        drop(proxy);
        assert!(
            sees_close(&mut sock).await,
            "connection survived proxy drop"
        );
    }
}
