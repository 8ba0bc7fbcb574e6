//! The Corelink ingress end to end over mTLS (as banks reach it), against the real RabbitMQ:
//! 200 only once the whole request is durably on the intake queue; every refusal the contract
//! names, with nothing enqueued. Only the ops listener and shutdown are tested over plain HTTP.

use std::time::Duration;

use lapin::types::AMQPValue;
use serde_json::Value;
use time::OffsetDateTime;

use connector_e2e_tests::{TestPki, batch_body, spawn_app, spawn_tls_app_with, unit_body};
use connector_schema::IntakeEnvelope;

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";

/// (name, headers, body, expected status, expected code)
type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16, &'a str);

async fn error_code(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["details"].is_array(), "{body}");
    (status, code, body)
}

#[tokio::test]
async fn a_signed_unit_callback_is_enqueued_exactly_as_received() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let body = unit_body("PAY-2025-0001", "SUCCESS");

    let response = app.post_signed(UNIT, &body, "PAY-2025-0001").await;

    assert_eq!(response.status(), 200);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "ACCEPTED");
    assert_eq!(accepted["idempotency_key"], "PAY-2025-0001");
    assert_eq!(accepted["orders"], 1);
    assert!(accepted["received_at"].as_str().unwrap().ends_with('Z'));

    let delivery = app
        .broker
        .take_intake()
        .await
        .expect("one message on the intake queue");
    assert_eq!(
        delivery.data,
        body.as_bytes(),
        "the raw body, byte for byte"
    );
    assert_eq!(delivery.routing_key.as_str(), "corelink.status");
    assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
    let envelope = IntakeEnvelope::from_amqp(&delivery.properties, &delivery.data).unwrap();
    assert_eq!(envelope.client_id.as_deref(), Some("BANK_X"));
    assert_eq!(envelope.request_path.as_deref(), Some(UNIT));
    assert_eq!(envelope.header("x-idempotency-key"), Some("PAY-2025-0001"));
    assert!(
        envelope
            .header("x-signature")
            .is_some_and(|s| s.split('.').count() == 3)
    );
    assert!(
        app.broker.take_intake().await.is_none(),
        "exactly one message"
    );
}

#[tokio::test]
async fn a_signed_batch_is_one_message_and_the_aliases_work() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let body = batch_body("batch-20251119-001", &["PAY-1", "PAY-2", "PAY-3"]);

    let response = app.post_signed(BATCH, &body, "batch-20251119-001").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["orders"], 3);

    let alias_body = batch_body("batch-20251119-002", &["PAY-4"]);
    let response = app
        .post_signed("/callbacks/batch-status", &alias_body, "batch-20251119-002")
        .await;
    assert_eq!(response.status(), 200);
    let unit = unit_body("PAY-5", "PENDING");
    let response = app
        .post_signed("/callbacks/payment-status", &unit, "PAY-5")
        .await;
    assert_eq!(response.status(), 200);

    let first = app.broker.take_intake().await.unwrap();
    assert_eq!(first.routing_key.as_str(), "corelink.status.batch");
    assert_eq!(first.data, body.as_bytes());
    let second = app.broker.take_intake().await.unwrap();
    assert_eq!(second.routing_key.as_str(), "corelink.status.batch");
    let third = app.broker.take_intake().await.unwrap();
    assert_eq!(third.routing_key.as_str(), "corelink.status");
    let path = match third
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .inner()
        .get("connector-request-path")
    {
        Some(AMQPValue::LongString(path)) => String::from_utf8(path.as_bytes().to_vec()).unwrap(),
        other => panic!("request path header: {other:?}"),
    };
    assert_eq!(path, "/callbacks/payment-status");
}

#[tokio::test]
async fn every_refusal_has_its_contract_code_and_enqueues_nothing() {
    let (app, _pki) = spawn_tls_app_with(|settings| settings.http.max_body_bytes = 4096).await;
    let body = unit_body("PAY-REFUSED", "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-REFUSED");
    let headers = signed.pairs();

    // Headers with one replaced or removed.
    let with = |name: &str, value: Option<&'static str>| -> Vec<(&str, String)> {
        let mut out: Vec<(&str, String)> = headers
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, v)| (*n, (*v).to_owned()))
            .collect();
        if let Some(value) = value {
            out.push((
                headers.iter().find(|(n, _)| *n == name).unwrap().0,
                value.to_owned(),
            ));
        }
        out
    };

    let mut cases: Vec<Case> = vec![
        (
            "no X-Nonce",
            with("X-Nonce", None),
            body.clone(),
            400,
            "MISSING_HEADER",
        ),
        (
            "no X-Client-Id",
            with("X-Client-Id", None),
            body.clone(),
            400,
            "MISSING_HEADER",
        ),
        (
            "no Content-Type",
            with("Content-Type", None),
            body.clone(),
            400,
            "MISSING_HEADER",
        ),
        (
            "X-Timestamp not RFC 3339",
            with("X-Timestamp", Some("19/11/2025 07:15")),
            body.clone(),
            400,
            "INVALID_HEADER",
        ),
        (
            "X-Timestamp not UTC",
            with("X-Timestamp", Some("2025-11-19T08:15:00+01:00")),
            body.clone(),
            400,
            "INVALID_HEADER",
        ),
        (
            "empty X-Idempotency-Key",
            with("X-Idempotency-Key", Some("")),
            body.clone(),
            400,
            "INVALID_HEADER",
        ),
        (
            "X-Nonce with a space",
            with("X-Nonce", Some("a b")),
            body.clone(),
            400,
            "INVALID_HEADER",
        ),
        (
            "no X-Signature",
            with("X-Signature", None),
            body.clone(),
            401,
            "SIGNATURE_MISSING",
        ),
        (
            "empty X-Signature",
            with("X-Signature", Some("")),
            body.clone(),
            401,
            "SIGNATURE_MISSING",
        ),
        (
            "not a JWS",
            with("X-Signature", Some("abc")),
            body.clone(),
            401,
            "SIGNATURE_INVALID",
        ),
        (
            "unknown client",
            with("X-Client-Id", Some("BANK_Z")),
            body.clone(),
            401,
            "UNKNOWN_CLIENT",
        ),
        (
            "X-Nonce differs from the signed one",
            with("X-Nonce", Some("other-nonce")),
            body.clone(),
            401,
            "SIGNATURE_INVALID",
        ),
        (
            "text/plain",
            with("Content-Type", Some("text/plain")),
            body.clone(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "body changed by one byte",
            with("", None),
            body.replace("PAY-REFUSED", "PAY-REFUSEE"),
            401,
            "SIGNATURE_INVALID",
        ),
    ];
    // Correctly signed, but the request itself is wrong.
    let mut signed_case =
        |name: &'static str, body: String, at: OffsetDateTime, status: u16, code: &'static str| {
            let key = "PAY-SIGNED";
            let signed = app.bank.sign_at(UNIT, body.as_bytes(), key, at);
            let headers = signed
                .pairs()
                .iter()
                .map(|(n, v)| (*n, (*v).to_owned()))
                .collect();
            cases.push((name, headers, body, status, code));
        };
    let now = OffsetDateTime::now_utc();
    signed_case(
        "not JSON",
        "{\"reference\":".into(),
        now,
        400,
        "MALFORMED_JSON",
    );
    signed_case(
        "FAILED without reason",
        unit_body("PAY-F", "FAILED").replace("reasonCode", "code"),
        now,
        400,
        "VALIDATION_FAILED",
    );
    signed_case(
        "timestamp 10 minutes old",
        unit_body("PAY-OLD", "SUCCESS"),
        now - Duration::from_secs(600),
        401,
        "TIMESTAMP_OUT_OF_WINDOW",
    );
    signed_case(
        "timestamp 10 minutes ahead",
        unit_body("PAY-NEW", "SUCCESS"),
        now + Duration::from_secs(600),
        401,
        "TIMESTAMP_OUT_OF_WINDOW",
    );
    signed_case(
        "5000-byte body over a 4096 limit",
        format!("{{\"pad\":\"{}\"}}", "x".repeat(5000)),
        now,
        413,
        "PAYLOAD_TOO_LARGE",
    );

    for (name, headers, body, expected_status, expected_code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, code, error) = error_code(app.post(UNIT, &headers, body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (expected_status, expected_code),
            "{name}: {error}"
        );
    }

    // The validation error says which field, machine-readably.
    let body = unit_body("PAY-F", "FAILED").replace("reasonCode", "code");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-F");
    let (_, _, error) = error_code(app.post(UNIT, &signed.pairs(), body).await).await;
    assert_eq!(error["error"]["details"][0]["field"], "reasonCode");

    assert_eq!(app.broker.intake_depth().await, 0, "nothing was enqueued");
}

#[tokio::test]
async fn a_duplicated_header_is_invalid() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let body = unit_body("PAY-DUP", "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-DUP");
    let mut headers = signed.pairs().to_vec();
    headers.push(("X-Nonce", "second-nonce"));
    let (status, code, _) = error_code(app.post(UNIT, &headers, body).await).await;
    assert_eq!((status, code.as_str()), (400, "INVALID_HEADER"));
    assert_eq!(app.broker.intake_depth().await, 0);
}

#[tokio::test]
async fn an_exact_replay_is_refused_and_enqueued_once() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let body = unit_body("PAY-REPLAY", "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-REPLAY");

    let first = app.post(UNIT, &signed.pairs(), body.clone()).await;
    assert_eq!(first.status(), 200);
    let (status, code, _) = error_code(app.post(UNIT, &signed.pairs(), body.clone()).await).await;
    assert_eq!((status, code.as_str()), (409, "NONCE_REPLAYED"));

    // A retry as the contract wants it: fresh nonce, timestamp and signature, same key.
    let retry = app.post_signed(UNIT, &body, "PAY-REPLAY").await;
    assert_eq!(retry.status(), 200);
    assert_eq!(app.broker.intake_depth().await, 2);
}

#[tokio::test]
async fn concurrent_requests_are_all_confirmed() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let requests = (0..64).map(|i| {
        let app = &app;
        async move {
            let reference = format!("PAY-CONC-{i}");
            app.post_signed(UNIT, &unit_body(&reference, "SUCCESS"), &reference)
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.broker.intake_depth().await, 64);
}

#[tokio::test]
async fn metrics_and_health_are_served_on_the_ops_listener() {
    let app = spawn_app().await;
    let response = app
        .post_signed(UNIT, &unit_body("PAY-M", "SUCCESS"), "PAY-M")
        .await;
    assert_eq!(response.status(), 200);

    let health = app
        .http
        .get(format!("{}/healthz", app.ops_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(format!("{}/readyz", app.ops_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.ops_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "connector_ingress_requests_total{route=\"corelink_status\",code=\"ACCEPTED\"}",
        "connector_ingress_request_duration_seconds_bucket",
        "connector_ingress_publish_confirm_duration_seconds_bucket",
        "connector_ingress_requests_in_flight",
        "connector_ingress_broker_connected",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // The public listener does not expose them.
    let hidden = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
}

#[tokio::test]
async fn shutdown_finishes_and_closes_the_listener() {
    let app = spawn_app().await;
    let base_url = app.base_url.clone();
    let http = app.http.clone();
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stops within the grace period")
        .expect("stops cleanly");
    assert!(
        http.post(format!("{base_url}{UNIT}")).send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_refused_without_content_length() {
    let (app, _pki) = spawn_tls_app_with(|settings| settings.http.max_body_bytes = 4096).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(8000));
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-BIG");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, code, _) = error_code(app.post(UNIT, &signed.pairs(), streamed).await).await;
    assert_eq!((status, code.as_str()), (413, "PAYLOAD_TOO_LARGE"));
    assert_eq!(app.broker.intake_depth().await, 0);
}

#[tokio::test]
async fn a_bank_over_its_rate_is_told_when_to_come_back() {
    let (app, _pki) = spawn_tls_app_with(|settings| {
        settings.corelink.rate_limit_per_second = 1;
        settings.corelink.rate_limit_burst = 2;
    })
    .await;
    for reference in ["PAY-RL1", "PAY-RL2"] {
        assert_eq!(
            app.post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
                .await
                .status(),
            200
        );
    }
    let response = app
        .post_signed(UNIT, &unit_body("PAY-RL3", "SUCCESS"), "PAY-RL3")
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (429, "RATE_LIMITED"));
    assert_eq!(
        app.broker.intake_depth().await,
        2,
        "the refused request was not enqueued"
    );

    // Limits apply to authenticated banks only: a forgery in the bank's name, sent while the
    // bank is over its rate, is refused for its signature (so it counts for nothing).
    let forged = app.bank.sign(UNIT, b"{}", "PAY-RL4");
    let mut headers = forged.pairs().to_vec();
    headers.retain(|(name, _)| *name != "X-Signature");
    headers.push(("X-Signature", "e30.e30.c2ln"));
    let (status, code, _) = error_code(app.post(UNIT, &headers, "{}").await).await;
    assert_eq!((status, code.as_str()), (401, "SIGNATURE_INVALID"));
}

/// A raw TLS connection presenting BANK_X's certificate, to write a request byte by byte.
async fn tls_connect(
    pki: &TestPki,
    address: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.bank_x.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.bank_x.key_pem.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_is_timed_out_and_disconnected() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (app, pki) = spawn_tls_app_with(|settings| settings.http.body_timeout_secs = 1).await;
    let body = unit_body("PAY-SLOW", "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-SLOW");
    let mut request = format!(
        "POST {UNIT} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in signed.pairs() {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body[..10]); // and then nothing more

    let address = app.base_url.trim_start_matches("https://");
    let mut stream = tls_connect(&pki, address).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the ingress answers and closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert_eq!(app.broker.intake_depth().await, 0);
}

#[tokio::test]
async fn the_signed_path_is_the_target_as_sent_with_query_and_external_prefix() {
    // A proxy strips `/connector` before the ingress sees the request; banks sign what they send.
    let (app, _pki) =
        spawn_tls_app_with(|settings| settings.corelink.external_path_prefix = "/connector".into())
            .await;
    let body = unit_body("PAY-PATH", "PENDING");
    let target = "/callbacks/orders/status?source=bank";
    let signed = app
        .bank
        .sign(&format!("/connector{target}"), body.as_bytes(), "PAY-PATH");
    assert_eq!(
        app.post(target, &signed.pairs(), body.clone())
            .await
            .status(),
        200
    );

    // Signed without the prefix, or without the query: not what was sent.
    for wrong in [
        target.to_owned(),
        "/connector/callbacks/orders/status".to_owned(),
    ] {
        let signed = app.bank.sign(&wrong, body.as_bytes(), "PAY-PATH");
        let (status, code, error) =
            error_code(app.post(target, &signed.pairs(), body.clone()).await).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "SIGNATURE_INVALID"),
            "{wrong}"
        );
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`path`"),
            "{error}"
        );
    }
    assert_eq!(app.broker.intake_depth().await, 1);
}

#[tokio::test]
async fn an_answer_given_before_the_body_was_read_closes_its_connection() {
    let app = spawn_app().await;
    let body = unit_body("PAY-CLOSE", "SUCCESS");
    let close = |response: &reqwest::Response| {
        response
            .headers()
            .get("connection")
            .map(|value| value.to_str().unwrap().to_owned())
    };

    // Refused on its headers: the body is never read, so the connection cannot be reused, and
    // the client is told so.
    let refused = app
        .post(UNIT, &[("Content-Type", "application/json")], body.clone())
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(close(&refused).as_deref(), Some("close"));
    let too_large = app
        .post(
            UNIT,
            &[("Content-Type", "application/json")],
            "x".repeat(2 * 1024 * 1024),
        )
        .await;
    assert_eq!(too_large.status(), 413);
    assert_eq!(close(&too_large).as_deref(), Some("close"));

    // Read to its end, accepted or refused: the connection stays open for the next request.
    let accepted = app.post_signed(UNIT, &body, "PAY-CLOSE").await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(close(&accepted), None);
    let other_body = body.replace("PAY-CLOSE", "PAY-CLOSE-2");
    let signed = app.bank.sign(UNIT, b"another body", "PAY-CLOSE-2");
    let forged = app.post(UNIT, &signed.pairs(), other_body).await;
    assert_eq!(forged.status(), 401);
    assert_eq!(close(&forged), None);
}
