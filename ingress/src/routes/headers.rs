//! Reading request headers the way every route must: a header the contract names may appear at
//! most once, since with two copies nobody can tell which one was signed. What a missing or
//! malformed header costs differs by route; the Corelink helpers below give §3.3's codes.

use axum::http::header::AsHeaderName;
use axum::http::{HeaderMap, HeaderValue};

use connector_schema::validation::is_visible_ascii;

use crate::routes::error::ApiError;

/// A header sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentTwice;

/// The value of header `name`: `None` when absent, [`SentTwice`] when repeated.
pub fn once<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<&HeaderValue>, SentTwice> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        None => Ok(first),
        Some(_) => Err(SentTwice),
    }
}

/// The text of header `name`, if sent: once, and visible ASCII (400 `INVALID_HEADER` otherwise).
pub fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = once(headers, name).map_err(|SentTwice| ApiError::InvalidHeader {
        header: name,
        reason: "must appear once".into(),
    })?
    else {
        return Ok(None);
    };
    value
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::InvalidHeader {
            header: name,
            reason: "must be visible ASCII".into(),
        })
}

/// The text of a header the contract requires: 400 `MISSING_HEADER` when absent, and
/// `INVALID_HEADER` when empty.
pub fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    match single(headers, name)? {
        None => Err(ApiError::MissingHeader(name)),
        Some("") => Err(ApiError::InvalidHeader {
            header: name,
            reason: "must not be empty".into(),
        }),
        Some(value) => Ok(value),
    }
}

/// A required header holding an identifier: 1..128 visible ASCII characters (§3).
pub fn token<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    let value = required(headers, name)?;
    if is_visible_ascii(value, 128) {
        Ok(value)
    } else {
        Err(ApiError::InvalidHeader {
            header: name,
            reason: "must be 1..128 visible ASCII characters".into(),
        })
    }
}
