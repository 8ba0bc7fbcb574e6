//! A stream shared between a client library (an HTTP/2 client) and the test that drives it: the
//! test can hold back what the server sent, see every byte either way as HTTP/2 frames, learn
//! when the server closed the connection, and take the socket back from the client to stop it
//! answering. For tests of connection limits, where what matters is what the server did.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A handle on the tapped stream; clones share it.
#[derive(Debug)]
pub struct Tap<S>(Arc<Mutex<State<S>>>);

impl<S> Clone for Tap<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

#[derive(Debug)]
struct State<S> {
    /// `None` once the test took it back.
    io: Option<S>,
    /// While false, the client reads nothing: what the server sends is read (and recorded)
    /// but held back from the client.
    reads_open: bool,
    read_waker: Option<Waker>,
    received: Vec<u8>,
    held: Vec<u8>,
    sent: Vec<u8>,
    closed_by_peer: bool,
}

/// One HTTP/2 frame as it crossed the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const ACK: u8 = 0x1;

    /// The identifier of SETTINGS_MAX_CONCURRENT_STREAMS in a SETTINGS frame.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;

    /// The value of setting `id` in a SETTINGS frame (not an acknowledgement).
    pub fn setting(&self, id: u16) -> Option<u32> {
        if self.kind != Self::SETTINGS || self.flags & Self::ACK != 0 {
            return None;
        }
        self.payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            Self::RST_STREAM => 0,
            Self::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// The HTTP/2 error codes the tests look for (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const REFUSED_STREAM: u32 = 0x7;
/// The client connection preface, before the client's first frame.
const PREFACE_LEN: usize = 24;

impl<S> Tap<S> {
    pub fn new(io: S) -> Self {
        Self(Arc::new(Mutex::new(State {
            io: Some(io),
            reads_open: true,
            read_waker: None,
            received: Vec::new(),
            held: Vec::new(),
            sent: Vec::new(),
            closed_by_peer: false,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State<S>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds back (false) or lets through (true) what the server sends.
    pub fn open_reads(&self, open: bool) {
        let mut state = self.state();
        state.reads_open = open;
        if open && let Some(waker) = state.read_waker.take() {
            waker.wake();
        }
    }

    /// Whether the server ended the connection (end of stream or an error on read).
    pub fn closed_by_peer(&self) -> bool {
        self.state().closed_by_peer
    }

    /// The frames the server sent so far.
    pub fn received(&self) -> Vec<Frame> {
        frames(&self.state().received)
    }

    /// The frames the client sent so far, after its preface.
    pub fn sent(&self) -> Vec<Frame> {
        let state = self.state();
        frames(state.sent.get(PREFACE_LEN..).unwrap_or_default())
    }

    /// Takes the stream back from the client, which gets errors from then on.
    pub fn detach(&self) -> Option<S> {
        self.state().io.take()
    }
}

/// The whole frames in `bytes`; a partial frame at the end is left out.
pub fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream,
            payload: bytes[9..9 + length].to_vec(),
        });
        bytes = &bytes[9 + length..];
    }
    frames
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "taken back by the test")
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.state();
        let State {
            io,
            reads_open,
            read_waker,
            received,
            held,
            closed_by_peer,
            ..
        } = &mut *state;
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Err(detached()));
        };
        // Everything the socket has is read, so the test sees it even while the client may not;
        // reading on to `Pending` keeps the client's task woken for what comes next.
        while !*closed_by_peer {
            let mut chunk = [0u8; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => *closed_by_peer = true,
                Poll::Ready(Ok(())) => {
                    received.extend_from_slice(read.filled());
                    held.extend_from_slice(read.filled());
                }
                Poll::Ready(Err(_)) => *closed_by_peer = true,
                Poll::Pending => break,
            }
        }
        if !*reads_open {
            *read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !held.is_empty() {
            let n = held.len().min(buf.remaining());
            buf.put_slice(&held[..n]);
            held.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if *closed_by_peer {
            // The end of the stream.
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        let State { io, sent, .. } = &mut *state;
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Err(detached()));
        };
        let polled = Pin::new(io).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = &polled {
            sent.extend_from_slice(&data[..*written]);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.state().io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(detached())),
        }
    }

    /// Never closes the stream: a client that ends its side after a GOAWAY would make the
    /// server close in turn, and the tests must see the server close on its own.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_whole_with_their_error_codes() {
        let mut bytes = vec![0, 0, 4, Frame::RST_STREAM, 0, 0, 0, 0, 9, 0, 0, 0, 7];
        bytes.extend([
            0,
            0,
            8,
            Frame::GOAWAY,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
        ]);
        bytes.extend([0, 0, 6, Frame::SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4]);
        bytes.extend([0, 0, 8, Frame::PING]);
        let frames = frames(&bytes);
        assert_eq!(frames.len(), 3, "the partial frame is left out");
        assert_eq!(frames[0].stream, 9);
        assert_eq!(frames[0].error_code(), Some(REFUSED_STREAM));
        assert_eq!(frames[1].error_code(), Some(NO_ERROR));
        assert_eq!(frames[2].setting(Frame::MAX_CONCURRENT_STREAMS), Some(4));
        assert_eq!(frames[2].setting(0x4), None);
    }
}
