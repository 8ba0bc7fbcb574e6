//! The probes a workers process serves on its ops listener (`ops.listen`), so that the
//! orchestrator and Prometheus can watch it: `/healthz` (alive), `/readyz` (database reachable
//! and every running role connected to the broker) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;

/// What `/readyz` looks at.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub pool: PgPool,
    /// (role, connected) of each running role.
    pub brokers: Vec<(&'static str, Arc<AtomicBool>)>,
}

#[derive(Debug, Clone)]
struct ProbeState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(ProbeState { readiness, metrics })
}

async fn readyz(State(state): State<ProbeState>) -> impl IntoResponse {
    let database = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&state.readiness.pool)
        )
        .await,
        Ok(Ok(_))
    );
    let brokers: serde_json::Map<String, serde_json::Value> = state
        .readiness
        .brokers
        .iter()
        .map(|(role, flag)| ((*role).to_owned(), json!(flag.load(Ordering::Relaxed))))
        .collect();
    let ready = database && brokers.values().all(|v| v == &json!(true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "database": database, "broker": brokers})),
    )
}

async fn render_metrics(State(state): State<ProbeState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
