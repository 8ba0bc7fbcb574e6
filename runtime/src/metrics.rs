//! The process's Prometheus recorder: installed once, whichever component asks first, so an
//! ingress and workers running in one process (tests, a single-binary deployment) share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets of every `*_seconds` histogram: from half a millisecond (a confirm on an
/// idle local broker) to 30 s (a transaction retried through an outage).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets when nothing scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The handle that renders `/metrics`.
///
/// The recorder keeps every histogram sample until something folds them into the buckets,
/// which rendering `/metrics` does. Without a scrape (Prometheus down, scraping not configured,
/// a benchmark) they would pile up, about 1 MiB per 50 000 samples, for ever: a thread folds
/// them every few seconds, which rendering also does first, so what `/metrics` shows is
/// unchanged.
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
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is scraped");
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
