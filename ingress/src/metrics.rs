//! Prometheus metrics of the ingress. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms) and are the ones the dashboards and alert rules in `ops/` use.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

/// Requests by `route` and outcome `code` (`ACCEPTED` or the contract's error code).
pub const REQUESTS_TOTAL: &str = "connector_ingress_requests_total";
/// Refused requests by `route`, `sender` (the configured bank, BNC partner, or `paysafe`, that
/// the request named; `unknown` when it named none we know: the label set stays bounded by the
/// configuration, whatever callers send) and `code`: what the operator console's per-bank view
/// shows, from Prometheus.
pub const REFUSALS_BY_SENDER_TOTAL: &str = "connector_ingress_refusals_by_sender_total";
/// Time from request arrival to response, by `route`.
pub const REQUEST_DURATION_SECONDS: &str = "connector_ingress_request_duration_seconds";
/// Time from publish to the broker's confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "connector_ingress_publish_confirm_duration_seconds";
/// Requests being handled right now.
pub const REQUESTS_IN_FLIGHT: &str = "connector_ingress_requests_in_flight";
/// 1 while the publisher holds a usable broker connection, else 0.
pub const BROKER_CONNECTED: &str = "connector_ingress_broker_connected";
/// 1 while the broker blocks this ingress's publishing (memory or disk alarm), else 0.
pub const BROKER_BLOCKED: &str = "connector_ingress_broker_blocked";
/// Connections lost and re-established.
pub const BROKER_RECONNECTS_TOTAL: &str = "connector_ingress_broker_reconnects_total";

/// Connections to the public listener open now.
pub const CONNECTIONS_OPEN: &str = "connector_ingress_connections_open";
/// Connections closed at accept because a cap was full, by `reason` (the setting: `max_connections`,
/// `max_connections_per_address`, `max_concurrent_handshakes`).
pub const CONNECTIONS_REFUSED_TOTAL: &str = "connector_ingress_connections_refused_total";

/// The process's recorder (shared, with its upkeep thread); the handle renders `/metrics`.
pub fn install() -> PrometheusHandle {
    connector_runtime::metrics::prometheus()
}

pub fn record_request(route: &'static str, code: &'static str, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "route" => route, "code" => code).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

pub fn record_refusal_by_sender(route: &'static str, sender: String, code: &'static str) {
    counter!(REFUSALS_BY_SENDER_TOTAL, "route" => route, "sender" => sender, "code" => code)
        .increment(1);
}

pub fn refusal_by_sender_at_zero(route: &'static str, sender: &str, code: &'static str) {
    counter!(REFUSALS_BY_SENDER_TOTAL, "route" => route, "sender" => sender.to_owned(), "code" => code)
        .increment(0);
}

/// `route`'s request counter for `code`, at zero (an existing one keeps its value).
pub fn request_at_zero(route: &'static str, code: &'static str) {
    counter!(REQUESTS_TOTAL, "route" => route, "code" => code).increment(0);
}

/// The reasons of [`CONNECTIONS_REFUSED_TOTAL`].
pub const REFUSAL_REASONS: [&str; 3] = [
    "max_connections",
    "max_connections_per_address",
    "max_concurrent_handshakes",
];

/// The counters without a route, at zero from the start (see `routes::respond::Answer::CODES`).
pub fn export_at_zero() {
    counter!(BROKER_RECONNECTS_TOTAL).increment(0);
    for reason in REFUSAL_REASONS {
        counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
}

pub fn record_confirm_latency(elapsed: Duration) {
    histogram!(PUBLISH_CONFIRM_SECONDS).record(elapsed.as_secs_f64());
}

pub fn set_broker_connected(connected: bool) {
    gauge!(BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

pub fn set_broker_blocked(blocked: bool) {
    gauge!(BROKER_BLOCKED).set(if blocked { 1.0 } else { 0.0 });
}

pub fn count_broker_reconnect() {
    counter!(BROKER_RECONNECTS_TOTAL).increment(1);
}

pub fn connection_opened() {
    gauge!(CONNECTIONS_OPEN).increment(1.0);
}

pub fn connection_closed() {
    gauge!(CONNECTIONS_OPEN).decrement(1.0);
}

pub fn count_connection_refused(reason: &'static str) {
    debug_assert!(
        REFUSAL_REASONS.contains(&reason),
        "reason {reason} not listed"
    );
    counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts a request as in flight until dropped, whatever path the handler leaves by.
#[derive(Debug)]
pub struct InFlight;

impl InFlight {
    pub fn start() -> Self {
        gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}
