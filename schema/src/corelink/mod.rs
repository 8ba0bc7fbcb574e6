//! Corelink bank callbacks (DESIGN.md §3): what a bank pushes to the connector about its payment
//! orders, one order (unit) or many (batch), authenticated by mTLS and a JWS over the request.
//!
//! - `body`: the unit and batch bodies and their validation rules (§3.2);
//! - `claims`: the members a bank signs, and the body hash among them (§3.1);
//! - `headers`: the request header names and the grammars of `X-Timestamp` and `Content-Type`
//!   (§3).
//!
//! Everything is re-exported here, so callers name `corelink::parse_unit` and
//! `corelink::headers::NONCE` whatever file holds them.

mod body;
mod claims;
pub mod headers;

pub use body::{
    BatchStatusNotification, DEFAULT_MAX_BATCH_ORDERS, MAX_REFERENCE_CHARS, OrderStatus,
    OrderStatusUpdate, parse_batch, parse_unit,
};
pub use claims::{SignedRequestClaims, body_sha256};
pub use headers::{is_json_content_type, parse_request_timestamp};
