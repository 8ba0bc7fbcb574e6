//! The probe listener (`http.ops_listen`): `/metrics` for Prometheus, `/healthz` (the process
//! is alive) and `/readyz` (it can accept work: broker connected and not blocking publishers). Separate from the public
//! listener so banks never reach it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::publisher::{BrokerState, IntakePublisher};

#[derive(Debug, Clone)]
struct OpsState {
    publisher: IntakePublisher,
    metrics: PrometheusHandle,
}

pub fn router(publisher: IntakePublisher, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { publisher, metrics })
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    // Blocked (a broker resource alarm) is not ready either: requests would only get 503.
    let broker = state.publisher.state();
    if broker == BrokerState::Connected {
        (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "broker": broker.as_str()})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "broker": broker.as_str()})),
        )
    }
}

async fn render_metrics(State(state): State<OpsState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
