//! Webhook delivery to a small receiver that checks the signature with the connector's own
//! verifier and parses the body with its own validator, over plain HTTP and over TLS with a
//! development CA.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use connector_schema::paysafe::{
    PaysafeStatus, TrackedKind, WebhookEvent, WebhookFact, parse_webhook, verify_webhook_signature,
};
use paysafe_sim::{
    EventNameSpelling, ItemScript, SignatureMode, SimConfig, SimHandle, Step, WebhookRequest,
};
use serde_json::{Value, json};

const KEY: &[u8] = b"paysafe-webhook-hmac-key-2025";

/// What the receiver saw: (answer, body, signature header).
type Seen = Arc<Mutex<Vec<(u16, String, Option<String>)>>>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    /// Answer 503 to this many deliveries first (Paysafe retries non-2xx).
    unavailable: Arc<Mutex<u32>>,
}

/// The ingress's rules in miniature: 401 without a valid signature, 400 for a body that is not
/// a Paysafe event, else 200.
async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = {
        let mut unavailable = receiver.unavailable.lock().expect("lock");
        if *unavailable > 0 {
            *unavailable -= 1;
            StatusCode::SERVICE_UNAVAILABLE
        } else if !signature
            .as_deref()
            .is_some_and(|s| verify_webhook_signature(&[KEY], &body, s))
        {
            StatusCode::UNAUTHORIZED
        } else if parse_webhook(&body).is_err() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    };
    receiver.seen.lock().expect("lock").push((
        status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
        signature,
    ));
    status
}

fn receiver_app() -> (Router, Receiver) {
    let receiver = Receiver {
        seen: Arc::default(),
        unavailable: Arc::default(),
    };
    let app = Router::new()
        .route("/webhooks/paysafe", post(receive))
        .with_state(receiver.clone());
    (app, receiver)
}

/// A plain-HTTP receiver; its webhook URL.
async fn http_receiver() -> (String, Receiver) {
    let (app, receiver) = receiver_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/webhooks/paysafe"), receiver)
}

async fn sim(url: &str) -> SimHandle {
    let mut config = SimConfig::new("u", "p").with_webhook(url, KEY);
    config.items = vec![
        ItemScript::new(
            TrackedKind::Payment,
            "568530f0-262a-453f-b681-1088195d9439",
            "b9405251-5ede-4439-b844-73ff553144a5",
            546,
            "CAD",
            vec![Step::new("PROCESSING", None)],
        ),
        ItemScript::new(
            TrackedKind::StandaloneCredit,
            "cred-1",
            "wd-1",
            500,
            "CAD",
            vec![Step::new("PROCESSING", None)],
        ),
    ];
    paysafe_sim::spawn(config).await.expect("simulator starts")
}

#[tokio::test]
async fn signed_webhooks_reach_the_receiver() {
    let (url, receiver) = http_receiver().await;
    let sim = sim(&url).await;
    let payment = "568530f0-262a-453f-b681-1088195d9439";

    let outcome = sim
        .send_webhook(WebhookRequest::event(payment, "PAYMENT_COMPLETED"))
        .await
        .unwrap();
    assert_eq!((outcome.status, outcome.attempts.clone()), (200, vec![200]));
    let hook = parse_webhook(outcome.sent_body.as_bytes()).unwrap();
    assert_eq!(hook.resource_id, payment);
    assert_eq!(hook.amount, Some(546));
    assert_eq!(
        hook.merchant_ref_num.as_deref(),
        Some("b9405251-5ede-4439-b844-73ff553144a5")
    );
    assert_eq!(
        hook.fact(),
        WebhookFact::Status {
            kind: TrackedKind::Payment,
            status: PaysafeStatus::Completed
        }
    );
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].1, outcome.sent_body,
            "the body is delivered byte for byte"
        );
    }

    // Every spelling of the event name, for a credit.
    for spelling in [
        EventNameSpelling::Type,
        EventNameSpelling::EventType,
        EventNameSpelling::EventTypeAndEventName,
    ] {
        let mut request = WebhookRequest::event("cred-1", "SA_CREDIT_CANCELLED");
        request.spelling = spelling;
        let outcome = sim.send_webhook(request).await.unwrap();
        assert_eq!(outcome.status, 200, "{spelling:?}");
        let hook = parse_webhook(outcome.sent_body.as_bytes()).unwrap();
        assert_eq!(hook.event, WebhookEvent::SaCreditCancelled);
        assert_eq!(hook.payload_status.as_deref(), Some("CANCELLED"));
    }

    // Wrong, missing or garbage signatures are refused by the receiver.
    for mode in [
        SignatureMode::WrongKey,
        SignatureMode::Missing,
        SignatureMode::Garbage,
    ] {
        let mut request = WebhookRequest::event(payment, "PAYMENT_FAILED");
        request.signature = mode;
        let outcome = sim.send_webhook(request).await.unwrap();
        assert_eq!(outcome.status, 401, "{mode:?}");
    }
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(
            seen.last().map(|s| s.2.as_deref()),
            Some(Some("not*base64!"))
        );
        assert!(seen[seen.len() - 2].2.is_none());
    }

    // A signed body that is not a Paysafe event.
    let mut request = WebhookRequest::event(payment, "PAYMENT_COMPLETED");
    request.raw_body = Some(r#"{"hello":"world"}"#.to_owned());
    assert_eq!(sim.send_webhook(request).await.unwrap().status, 400);

    // An exact duplicate: the same bytes again.
    let mut duplicate = WebhookRequest::event(payment, "PAYMENT_COMPLETED");
    duplicate.raw_body = Some(outcome_body(&receiver, 0));
    let again = sim.send_webhook(duplicate).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.sent_body, outcome_body(&receiver, 0));

    // Unknown item: refused before sending.
    assert!(
        sim.send_webhook(WebhookRequest::event("nope", "PAYMENT_COMPLETED"))
            .await
            .is_err()
    );
    sim.shutdown().await.unwrap();
}

fn outcome_body(receiver: &Receiver, index: usize) -> String {
    receiver.seen.lock().expect("lock")[index].1.clone()
}

#[tokio::test]
async fn non_2xx_answers_are_retried_with_the_next_attempt_number() {
    let (url, receiver) = http_receiver().await;
    let sim = sim(&url).await;
    *receiver.unavailable.lock().unwrap() = 2;

    let mut request = WebhookRequest::event("cred-1", "SA_CREDIT_COMPLETED");
    request.max_attempts = Some(5);
    request.retry_delay_ms = Some(10);
    request.event_id = Some("evt-42".to_owned());
    let outcome = sim.send_webhook(request).await.unwrap();
    assert_eq!(outcome.attempts, [503, 503, 200]);
    assert_eq!(outcome.status, 200);

    let seen = receiver.seen.lock().unwrap().clone();
    let attempts: Vec<(Option<u32>, Option<String>)> = seen
        .iter()
        .map(|(_, body, _)| {
            let hook = parse_webhook(body.as_bytes()).unwrap();
            (hook.attempt_number, hook.event_id)
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (Some(1), Some("evt-42".to_owned())),
            (Some(2), Some("evt-42".to_owned())),
            (Some(3), Some("evt-42".to_owned())),
        ]
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn control_api_sends_webhooks() {
    let (url, receiver) = http_receiver().await;
    // Started without a URL: it is set afterwards, as when the ingress starts later.
    let sim = sim("http://127.0.0.1:9/unused").await;
    let client = reqwest::Client::new();
    let set = client
        .put(format!("{}/__sim/webhook-url", sim.base_url()))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);

    let answer: Value = client
        .post(format!("{}/__sim/webhooks", sim.base_url()))
        .json(&json!({"id": "cred-1", "eventName": "SA_CREDIT_FAILED", "spelling": "type"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["attempts"], json!([200]));
    let sent: Value = serde_json::from_str(answer["sentBody"].as_str().unwrap()).unwrap();
    assert_eq!(sent["type"], "SA_CREDIT_FAILED");
    assert_eq!(sent["payload"]["transactionType"], "STANDALONE_CREDIT");
    assert_eq!(receiver.seen.lock().unwrap().len(), 1);

    // Unknown item, and an unreachable receiver.
    let unknown = client
        .post(format!("{}/__sim/webhooks", sim.base_url()))
        .json(&json!({"id": "nope", "eventName": "PAYMENT_COMPLETED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let unreachable = client
        .post(format!("{}/__sim/webhooks", sim.base_url()))
        .json(&json!({"id": "cred-1", "eventName": "SA_CREDIT_FAILED",
            "url": "http://127.0.0.1:9/webhooks/paysafe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unreachable.status(), 502);
    let reason: Value = unreachable.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("failed"));
    assert!(
        !reason["error"]
            .as_str()
            .unwrap()
            .contains("paysafe-webhook-hmac-key")
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn webhooks_over_tls_trust_the_given_ca() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    // A development CA and a server certificate for 127.0.0.1.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(server_cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let (app, receiver) = receiver_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    let url = format!("https://127.0.0.1:{}/webhooks/paysafe", addr.port());

    // Without the CA the certificate is not trusted: no answer at all.
    let untrusting = sim(&url).await;
    let refused = untrusting
        .send_webhook(WebhookRequest::event("cred-1", "SA_CREDIT_COMPLETED"))
        .await;
    assert!(refused.is_err());
    untrusting.shutdown().await.unwrap();

    let mut config = SimConfig::new("u", "p").with_webhook(&url, KEY);
    config.webhook_ca_pem = Some(ca_pem.into_bytes());
    config.items = vec![ItemScript::new(
        TrackedKind::StandaloneCredit,
        "cred-1",
        "wd-1",
        500,
        "CAD",
        vec![Step::new("PROCESSING", None)],
    )];
    let trusting = paysafe_sim::spawn(config).await.unwrap();
    let outcome = trusting
        .send_webhook(WebhookRequest::event("cred-1", "SA_CREDIT_COMPLETED"))
        .await
        .unwrap();
    assert_eq!(outcome.status, 200);
    assert_eq!(receiver.seen.lock().unwrap().len(), 1);
    trusting.shutdown().await.unwrap();
}
