//! Paysafe Interac e-Transfer (DESIGN.md §5): what Paysafe tells the connector about a payment
//! (money in) or a standalone credit (money out), and what the merchant's service asks it to
//! follow.
//!
//! - `status`: the statuses of a payment or credit, and which kind of item is tracked;
//! - `event`: what a webhook's event name means (one fact for several spellings);
//! - `webhook`: the webhook body and its validation;
//! - `track`: the `paysafe.track` command and its validation;
//! - `members`: the member rules the webhook and the track command share (ids, amounts,
//!   currencies, Paysafe's date-times);
//! - `signature`: the webhook's HMAC signature;
//! - `api`: the answers of Paysafe's GET API (a transaction, or Paysafe's error body).
//!
//! The webhook and track-command validators walk a `serde_json::Value` by hand, like
//! [`crate::corelink`], so one answer lists every problem with its JSON path. The GET answers are
//! plain serde types: they come from Paysafe, and a poller must not choke on members it does not
//! know, so every member but `id` and `status` is optional.

mod api;
mod event;
mod members;
mod signature;
mod status;
mod track;
mod webhook;

pub use api::{
    ERROR_CODE_INTERNAL, ERROR_CODE_INVALID_CREDENTIALS, ERROR_CODE_NOT_FOUND,
    ERROR_CODE_RATE_LIMITED, GatewayResponse, PaysafeError, PaysafeErrorBody, PaysafeFieldError,
    PaysafeTransaction,
};
pub use event::{WebhookEvent, WebhookFact};
pub use members::{MAX_ID_CHARS, MAX_MERCHANT_REF_CHARS, is_valid_id, parse_paysafe_time};
pub use signature::{
    SIGNATURE_HEADER, verify_webhook_signature, webhook_signature, webhook_signature_key,
};
pub use status::{PaysafeStatus, TrackedKind};
pub use track::{TrackCommand, parse_track_command};
pub use webhook::{PaysafeWebhook, parse_webhook};
