//! Reading a request body with the two limits every route applies: its size (413) and the time
//! it may take to arrive (408, the connection then closed), so neither a huge nor a trickling
//! body can hold memory or a connection.

use std::time::Duration;

use axum::body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ApiError;

/// Reads at most `limit` bytes within `timeout`; more is 413 whatever `Content-Length` claimed.
pub async fn read(body: Body, limit: usize, timeout: Duration) -> Result<bytes::Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(error) => Err(ApiError::MalformedJson(format!(
            "the body could not be read: {error}"
        ))),
    }
}

/// The request target as the sender wrote it: path and query. What signatures cover and what the
/// envelope records.
pub fn target_as_sent(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}
