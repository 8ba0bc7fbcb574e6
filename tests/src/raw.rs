//! A client that writes HTTP/1.1 by hand on a raw TCP or TLS stream, for tests of what a
//! well-behaved client library never does: stall, send half a request line, hold a connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

/// Waits until the peer closes `stream` (end of stream or reset), at most `within`; returns how
/// long that took, or `None` when it stayed open. Whatever the peer sends first is skipped.
pub async fn closed_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Reads one answer (head and `Content-Length` body) within `within`: the status line and the
/// whole text, or `None` when the connection closed (or stayed silent) first.
pub async fn read_answer<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<(String, String)> {
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(&bytes, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + length {
                    let text = String::from_utf8_lossy(&bytes[..end + 4 + length]).into_owned();
                    let status = head.lines().next().unwrap_or_default().to_owned();
                    return Some((status, text));
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Sends a request that needs no body and is answered at once (a Paysafe webhook without a
/// signature: 401), and reads the answer: `None` when the connection is closed.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<String> {
    let request =
        b"POST /webhooks/paysafe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    stream.write_all(request).await.ok()?;
    stream.flush().await.ok()?;
    read_answer(stream, Duration::from_secs(10))
        .await
        .map(|(status, _)| status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
