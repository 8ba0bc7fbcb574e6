//! `openapi.yaml` is what bank integrators code against: every operation it describes must
//! exist in the real router, and every route the router serves must be described.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use connector_ingress::auth::hmac::WebhookKeys;
use connector_ingress::auth::keys::{ClientRegistry, KeyStore};
use connector_ingress::auth::replay::ReplayCache;
use connector_ingress::auth::snap::partners::BncPartners;
use connector_ingress::clock::SystemClock;
use connector_ingress::config::{BncSettings, BrokerSettings, CorelinkSettings, PaysafeSettings};
use connector_ingress::publisher::IntakePublisher;
use connector_ingress::routes::corelink::ROUTES;
use connector_ingress::startup::public_router;
use connector_ingress::state::{AppState, SharedState};
use connector_schema::topology::TopologySettings;

fn description() -> Value {
    serde_yaml_ng::from_str(include_str!("../openapi.yaml")).unwrap()
}

/// The real router; its publisher points at a closed port, as no request here gets that far.
fn router(shutdown: &CancellationToken) -> axum::Router {
    let broker = BrokerSettings {
        url: "amqp://127.0.0.1:1/%2f".into(),
        ..BrokerSettings::default()
    };
    let (publisher, _) = IntakePublisher::spawn(
        &broker,
        TopologySettings::default().topology(),
        connector_schema::seal::SealKeys::single("test", &[7; 32]),
        shutdown.clone(),
    );
    public_router(AppState::new(SharedState {
        keys: KeyStore::new(ClientRegistry::default(), None),
        replay: ReplayCache::new(10, std::time::Duration::from_secs(300)),
        rate_limiter: connector_ingress::rate_limit::ClientRateLimiter::new(0, 0),
        publisher,
        clock: Arc::new(SystemClock),
        corelink: CorelinkSettings::default(),
        mtls: false,
        proxies: None,
        bnc: BncSettings::default(),
        bnc_partners: BncPartners::from_pems(Vec::<(String, Vec<Vec<u8>>)>::new()).unwrap(),
        paysafe_path: PaysafeSettings::default().path,
        paysafe_keys: WebhookKeys::new(["paysafe-key"]),
        paysafe_max_body_bytes: 1024,
        max_body_bytes: 1024,
        body_budget: connector_ingress::budget::BodyBudget::new(4096, 5),
        body_timeout: std::time::Duration::from_secs(30),
        retry_after_secs: 5,
    }))
}

async fn status_of(router: &axum::Router, method: &str, path: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn the_description_and_the_router_agree() {
    let spec = description();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let described: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| (path.clone(), method.to_uppercase()))
        })
        .collect();
    let paysafe_path = PaysafeSettings::default().path;
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(path, _)| path.to_string())
        .chain([BncSettings::default().path, paysafe_path.clone()])
        .map(|path| (path, "POST".into()))
        .collect();
    assert_eq!(
        described, routed,
        "the description lists exactly the routed operations"
    );

    let shutdown = CancellationToken::new();
    let router = router(&shutdown);
    for (path, method) in &described {
        // Every route wants its headers first (400), but the Paysafe webhook has one header,
        // its signature, and judges it before anything else (401 SIGNATURE_MISSING).
        let expected = if *path == paysafe_path {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        let status = status_of(&router, method, path).await;
        assert_eq!(
            status, expected,
            "{method} {path} is served (and wants its headers)"
        );
        assert_eq!(
            status_of(&router, "GET", path).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}"
        );
    }
    assert_eq!(
        status_of(&router, "POST", "/callbacks/orders").await,
        StatusCode::NOT_FOUND
    );
    shutdown.cancel();
}

#[test]
fn every_error_code_the_ingress_produces_is_described() {
    let spec = description();
    let codes: BTreeSet<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in connector_ingress::routes::error::ApiError::CODES {
        assert!(codes.contains(code), "{code} is not in the description");
    }
}
