//! The public routes, one file each: [`corelink`] (§3), [`bnc`] (§4) and [`paysafe`] (§5). A
//! handler checks the headers, has [`crate::auth`] prove the sender, has `connector_schema`
//! judge the body, and publishes; every route answers through one path ([`respond`]), so the
//! request metrics and log lines mean the same on all of them.
//!
//! The edge's shared pieces live beside them: reading headers ([`headers`]) and bodies
//! ([`body`]) within their limits, and the contract's error answers ([`error`]).

pub mod bnc;
pub mod body;
pub mod corelink;
pub mod error;
pub mod headers;
pub mod paysafe;
pub mod respond;

/// Every route's request counters, at zero from the start (`respond::Answer::CODES` says why),
/// and the refusals of each bank and partner of `settings` (one added later by a key reload
/// has its series from its first refusal).
pub fn export_counters_at_zero(settings: &crate::config::Settings) {
    corelink::export_counters_at_zero(settings);
    paysafe::export_counters_at_zero();
    bnc::export_counters_at_zero(settings);
}
