//! Reading a request body with the limits every route applies: its size (413, refused from
//! `Content-Length` before a byte is read when it says too much), the time it may take to
//! arrive (408, the connection then closed) and the process's in-flight budget (503), so
//! neither a huge nor a trickling body, nor many of them, can hold memory or a connection. And the honest end of a connection whose body was never read: routes
//! refuse on headers first, without reading what an unauthenticated caller sends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::budget::{BodyBudget, HeldBytes};
use crate::routes::error::ApiError;

/// 413 at once when `Content-Length` declares more than `limit` bytes: no need to read them.
pub fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// A body read to its end, with its bytes held in the in-flight budget until dropped: keep it
/// until the request is answered.
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: bytes::Bytes,
    pub held: HeldBytes,
}

/// Reads at most `limit` bytes within `timeout`, taking each chunk from `budget` as it arrives;
/// more than `limit` is 413 whatever `Content-Length` claimed, a spent budget 503 `OVERLOADED`
/// at once.
pub async fn read(
    body: Body,
    limit: usize,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<ReadBody, ApiError> {
    let collect = async {
        let mut body = Limited::new(body, limit);
        let mut held = budget.share();
        let mut bytes = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                if error.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::MalformedJson(format!("the body could not be read: {error}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                held.grow(data.len()).map_err(|_| ApiError::Overloaded {
                    retry_after_secs: budget.retry_after_secs,
                })?;
                bytes.extend_from_slice(&data);
            }
        }
        Ok(ReadBody {
            bytes: bytes.freeze(),
            held,
        })
    };
    tokio::time::timeout(timeout, collect)
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?
}

/// The request target as the sender wrote it: path and query. What signatures cover and what the
/// envelope records.
pub fn target_as_sent(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// Says `Connection: close` on an HTTP/1 answer given before the request's body was read to
/// its end. The server cannot reuse such a connection (the unread bytes are still on it) and
/// closes it after the answer; without the header a client would send its next request on a
/// connection that is about to vanish.
pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers
        .get(CONTENT_LENGTH)
        .map_or(headers.contains_key(TRANSFER_ENCODING), |length| {
            length != "0"
        });
    if request.version() > Version::HTTP_11 || !has_body {
        return next.run(request).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let tracked = {
        let ended = ended.clone();
        request.map(|inner| Body::new(TrackEnd { inner, ended }))
    };
    let mut response = next.run(tracked).await;
    if !ended.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it was read to its end.
struct TrackEnd {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for TrackEnd {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
