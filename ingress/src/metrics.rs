//! Prometheus metrics of the ingress. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms) and are the ones the dashboards and alert rules in `ops/` use.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by `route` and outcome `code` (`ACCEPTED` or the contract's error code).
pub const REQUESTS_TOTAL: &str = "connector_ingress_requests_total";
/// Time from request arrival to response, by `route`.
pub const REQUEST_DURATION_SECONDS: &str = "connector_ingress_request_duration_seconds";
/// Time from publish to the broker's confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "connector_ingress_publish_confirm_duration_seconds";
/// Requests being handled right now.
pub const REQUESTS_IN_FLIGHT: &str = "connector_ingress_requests_in_flight";
/// 1 while the publisher holds a usable broker connection, else 0.
pub const BROKER_CONNECTED: &str = "connector_ingress_broker_connected";
/// Connections lost and re-established.
pub const BROKER_RECONNECTS_TOTAL: &str = "connector_ingress_broker_reconnects_total";

/// Latency buckets from half a millisecond (a confirm on an idle local broker) to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder once and returns the handle that renders `/metrics`.
/// Idempotent, so several applications in one test process share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "a metrics recorder was already installed; /metrics may be empty"
                        );
                    }
                    handle
                }
                // Only fails on an empty bucket list, which LATENCY_BUCKETS is not.
                Err(error) => {
                    tracing::error!(%error, "metrics disabled");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

pub fn record_request(route: &'static str, code: &'static str, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "route" => route, "code" => code).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

pub fn record_confirm_latency(elapsed: Duration) {
    histogram!(PUBLISH_CONFIRM_SECONDS).record(elapsed.as_secs_f64());
}

pub fn set_broker_connected(connected: bool) {
    gauge!(BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

pub fn count_broker_reconnect() {
    counter!(BROKER_RECONNECTS_TOTAL).increment(1);
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
