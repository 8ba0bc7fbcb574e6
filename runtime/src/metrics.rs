//! The process's Prometheus recorder: installed once, whichever component asks first, so an
//! ingress and workers running in one process (tests, a single-binary deployment) share it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets of every `*_seconds` histogram: from half a millisecond (a confirm on an
/// idle local broker) to 30 s (a transaction retried through an outage).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The handle that renders `/metrics`.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                // Only fails on an empty bucket list, which LATENCY_BUCKETS is not.
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder was installed first; /metrics will be empty"
                );
            }
            handle
        })
        .clone()
}

/// The body of a `/metrics` answer.
pub fn render() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}
