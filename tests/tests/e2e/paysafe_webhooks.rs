//! Paysafe webhooks end to end (DESIGN.md §5, §2.1): over the real TLS ingress, without a client
//! certificate (Paysafe has none), into the real RabbitMQ. A signed webhook is one persistent
//! `paysafe.webhook` message carrying the body byte for byte and its `Signature`; every refusal
//! enqueues nothing. Every log line written meanwhile is captured, and must contain neither a
//! key nor a signature.

use serde_json::Value;

use connector_e2e_tests::{TestApp, TestPki, logs, spawn_tls_app_with};
use connector_schema::paysafe::webhook_signature;
use connector_schema::{IntakeEnvelope, IntakeKind};

const PATH: &str = "/webhooks/paysafe";
/// The key Paysafe signs with today, and the one a rotation brings in.
const KEY: &str = "paysafe-webhook-key-2025-Zq8";
const NEXT_KEY: &str = "paysafe-webhook-key-2026-Xw3";

/// A payment event as Paysafe sends it: spaced out, members in its order, the event name under
/// `name_member` (`eventName` or its alias `type`).
fn event(name_member: &str, event_name: &str, payment_id: &str) -> String {
    format!(
        "{{\"id\": \"evt-{payment_id}\", \"{name_member}\": \"{event_name}\", \"attemptNumber\": \"1\", \
         \"resourceId\": \"{payment_id}\", \"eventDate\": \"2025-11-19T07:10:00Z\", \"mode\": \"test\",\n  \
         \"payload\": {{\"id\": \"{payment_id}\", \"merchantRefNum\": \"order 42  (two spaces)\", \
         \"amount\": 546, \"currencyCode\": \"CAD\", \"status\": \"COMPLETED\"}}}}"
    )
}

fn sign(key: &str, body: &str) -> String {
    webhook_signature(key.as_bytes(), body.as_bytes())
}

/// No key and none of `signatures` in any log line; the event fields are there.
fn assert_no_secret_logged(signatures: &[String]) {
    let mut secrets = vec![KEY, NEXT_KEY, "not-the-configured-key"];
    secrets.extend(signatures.iter().map(String::as_str));
    logs::assert_absent("paysafe_webhook", &secrets);
}

struct Paysafe {
    app: TestApp,
    /// Presents no client certificate: Paysafe has none.
    client: reqwest::Client,
    _pki: TestPki,
}

async fn spawn(configure: impl FnOnce(&mut connector_ingress::config::Settings)) -> Paysafe {
    logs::install();
    let (app, pki) = spawn_tls_app_with(configure).await;
    let client = pki.client(None);
    Paysafe {
        app,
        client,
        _pki: pki,
    }
}

impl Paysafe {
    /// POSTs `body` with exactly `headers`; the status, and the JSON answer.
    async fn post(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{PATH}", self.app.base_url))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the ingress answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Sends `body` signed with `key`, as Paysafe does.
    async fn deliver(&self, key: &str, body: &str) -> (u16, Value) {
        let signature = sign(key, body);
        self.post(
            &[
                ("Content-Type", "application/json"),
                ("Signature", signature.as_str()),
            ],
            body.to_owned(),
        )
        .await
    }

    /// The next intake message: checks what every accepted webhook's message must be, and
    /// returns its envelope.
    async fn next_message(&self) -> IntakeEnvelope {
        let delivery = self
            .app
            .broker
            .take_intake()
            .await
            .expect("a message on the intake queue");
        assert_eq!(delivery.routing_key.as_str(), "paysafe.webhook");
        assert_eq!(
            delivery.properties.kind().as_ref().map(|k| k.as_str()),
            Some("paysafe.webhook"),
            "AMQP type"
        );
        assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
        let envelope = IntakeEnvelope::from_amqp(&delivery.properties, &delivery.data).unwrap();
        assert_eq!(envelope.kind, IntakeKind::PaysafeWebhook);
        assert_eq!(envelope.client_id, None, "Paysafe has no client id");
        assert_eq!(envelope.request_path.as_deref(), Some(PATH));
        envelope
    }
}

/// A request the route must refuse, and the refusal it must get.
struct Refused {
    name: &'static str,
    /// Each sent as one `Signature` header.
    signatures: Vec<String>,
    content_type: &'static str,
    body: String,
    expected: (u16, &'static str),
}

fn error_code(answer: &(u16, Value)) -> (u16, &str) {
    (
        answer.0,
        answer.1["error"]["code"].as_str().unwrap_or("(none)"),
    )
}

#[tokio::test]
async fn signed_webhooks_are_enqueued_byte_for_byte_under_either_key_and_spelling() {
    let paysafe = spawn(|s| s.paysafe.webhook_keys = vec![KEY.into(), NEXT_KEY.into()]).await;
    let cases = [
        ("eventName, first key", "eventName", KEY, "pay-0001"),
        ("type spelling", "type", KEY, "pay-0002"),
        ("second key (rotation)", "eventName", NEXT_KEY, "pay-0003"),
    ];
    let mut signatures = Vec::new();
    for (name, member, key, payment) in cases {
        let body = event(member, "PAYMENT_COMPLETED", payment);
        let (status, answer) = paysafe.deliver(key, &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["status"], "ACCEPTED", "{name}");
        assert!(answer["received_at"].is_string(), "{name}: {answer}");
        assert_eq!(paysafe.app.broker.intake_depth().await, 1, "{name}");

        let envelope = paysafe.next_message().await;
        assert_eq!(envelope.body, body.as_bytes(), "{name}: the raw body");
        let signature = sign(key, &body);
        assert_eq!(
            envelope.header("signature"),
            Some(signature.as_str()),
            "{name}"
        );
        assert_eq!(
            envelope.header("content-type"),
            Some("application/json"),
            "{name}"
        );
        signatures.push(signature);
    }
    assert_eq!(paysafe.app.broker.intake_depth().await, 0);
    assert_no_secret_logged(&signatures);
}

#[tokio::test]
async fn refused_webhooks_enqueue_nothing() {
    let paysafe = spawn(|s| {
        s.paysafe.webhook_keys = vec![KEY.into()];
        s.paysafe.max_body_bytes = 4096;
    })
    .await;
    let valid = event("eventName", "SA_CREDIT_COMPLETED", "credit-0001");
    let good = sign(KEY, &valid);
    let malformed = "{\"eventName\": \"PAYMENT_COMPLETED\", \"resourceId\": ";
    let not_an_event = r#"{"hello": "world", "resourceId": "pay-0009"}"#;
    let large = format!(
        "{{\"eventName\": \"PAYMENT_COMPLETED\", \"resourceId\": \"p\", \"pad\": \"{}\"}}",
        "x".repeat(5000)
    );

    // Accepted: the first, and one without Content-Type (the signature proves the sender).
    assert_eq!(paysafe.deliver(KEY, &valid).await.0, 200);
    let bare = paysafe
        .post(&[("Signature", good.as_str())], valid.clone())
        .await;
    assert_eq!(bare.0, 200, "no Content-Type: {}", bare.1);

    let bad_hmac = sign("not-the-configured-key", &valid);
    let case = |name, signatures: &[&str], content_type, body: &str, expected| Refused {
        name,
        signatures: signatures.iter().map(|s| (*s).to_owned()).collect(),
        content_type,
        body: body.to_owned(),
        expected,
    };
    let json = "application/json";
    let (sign_malformed, sign_not_an_event) = (sign(KEY, malformed), sign(KEY, not_an_event));
    let sign_large = sign(KEY, &large);
    let cases = [
        case(
            "signed with another key",
            &[&bad_hmac],
            json,
            &valid,
            (401, "SIGNATURE_INVALID"),
        ),
        case(
            "body changed after signing",
            &[&good],
            json,
            &valid.replace("546", "5460"),
            (401, "SIGNATURE_INVALID"),
        ),
        case(
            "no Signature",
            &[],
            json,
            &valid,
            (401, "SIGNATURE_MISSING"),
        ),
        case(
            "empty Signature",
            &[""],
            json,
            &valid,
            (401, "SIGNATURE_MISSING"),
        ),
        case(
            "Signature twice",
            &[&good, &good],
            json,
            &valid,
            (401, "SIGNATURE_MISSING"),
        ),
        case(
            "Signature not base64",
            &["not base64 at all!"],
            json,
            &valid,
            (401, "SIGNATURE_INVALID"),
        ),
        case(
            "unsigned garbage",
            &[&good],
            json,
            "{oops",
            (401, "SIGNATURE_INVALID"),
        ),
        case(
            "signed malformed JSON",
            &[&sign_malformed],
            json,
            malformed,
            (400, "MALFORMED_JSON"),
        ),
        case(
            "signed JSON that is not a Paysafe event",
            &[&sign_not_an_event],
            json,
            not_an_event,
            (400, "VALIDATION_FAILED"),
        ),
        case(
            "signed, but declared text/plain",
            &[&good],
            "text/plain",
            &valid,
            (415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        case(
            "signed, over the size limit",
            &[&sign_large],
            json,
            &large,
            (413, "PAYLOAD_TOO_LARGE"),
        ),
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let mut headers = vec![("Content-Type", case.content_type)];
        headers.extend(case.signatures.iter().map(|s| ("Signature", s.as_str())));
        let answer = paysafe.post(&headers, case.body.clone()).await;
        if error_code(&answer) != case.expected {
            failures.push(format!(
                "{}: expected {:?}, got {answer:?}",
                case.name, case.expected
            ));
        }
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        if message.contains(&good) || message.contains(KEY) {
            failures.push(format!(
                "{}: the answer shows a secret: {message}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    assert_eq!(
        paysafe.app.broker.intake_depth().await,
        2,
        "only the accepted webhooks are on the queue"
    );
    for _ in 0..2 {
        assert_eq!(paysafe.next_message().await.body, valid.as_bytes());
    }
    assert!(paysafe.app.broker.take_intake().await.is_none());
    assert_no_secret_logged(&[good, bad_hmac]);
}

/// Some Paysafe accounts issue the HMAC key base64-encoded and sign with the decoded bytes;
/// each configured key says which it is. Over the real TLS ingress: a raw key, a base64 key
/// inline and a base64 key in a file, side by side.
#[tokio::test]
async fn each_key_is_used_as_its_encoding_says() {
    use base64::Engine as _;
    use connector_ingress::config::{KeyEncoding, WebhookKey};

    let secret: &[u8] = b"\x9c\x00binary-key-from-paysafe\xfe";
    let file_secret: &[u8] = b"another\x01decoded\xffkey";
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    let file_encoded = base64::engine::general_purpose::STANDARD.encode(file_secret);
    let dir = std::env::temp_dir().join(format!("paysafe-b64-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("paysafe.b64");
    std::fs::write(&key_file, format!("{file_encoded}\n")).unwrap();

    let (inline, file) = (encoded.clone(), key_file.clone());
    let paysafe = spawn(move |s| {
        s.paysafe.webhook_keys = vec![
            KEY.into(),
            WebhookKey::inline(&inline, KeyEncoding::Base64),
            WebhookKey::file(file, KeyEncoding::Base64),
        ]
    })
    .await;
    let deliver_with = |key: &[u8], payment: &str| {
        let body = event("eventName", "PAYMENT_COMPLETED", payment);
        let signature = webhook_signature(key, body.as_bytes());
        let paysafe = &paysafe;
        async move {
            let answer = paysafe
                .post(
                    &[
                        ("Content-Type", "application/json"),
                        ("Signature", signature.as_str()),
                    ],
                    body,
                )
                .await;
            (error_code(&answer).0, answer.1["error"]["code"].clone())
        }
    };

    assert_eq!(
        deliver_with(KEY.as_bytes(), "pay-raw").await.0,
        200,
        "raw key"
    );
    assert_eq!(
        deliver_with(secret, "pay-b64").await.0,
        200,
        "inline base64: decoded bytes"
    );
    assert_eq!(
        deliver_with(file_secret, "pay-b64-file").await.0,
        200,
        "base64 key file"
    );
    // The base64 text itself is not the key.
    assert_eq!(
        deliver_with(encoded.as_bytes(), "pay-b64-text").await,
        (401, Value::from("SIGNATURE_INVALID"))
    );
    assert_eq!(
        deliver_with(file_encoded.as_bytes(), "pay-b64-file-text").await,
        (401, Value::from("SIGNATURE_INVALID"))
    );
    assert_eq!(
        paysafe.app.broker.intake_depth().await,
        3,
        "only the three signed right"
    );
    logs::assert_absent("paysafe_webhook", &[KEY, &encoded, &file_encoded]);
    std::fs::remove_dir_all(dir).unwrap();
}
