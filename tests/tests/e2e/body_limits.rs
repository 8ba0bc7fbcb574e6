//! Bodies at the edge (DESIGN.md §2.8), over the real TLS listener and broker: the BNC and
//! Paysafe routes refuse what needs no body before reading a byte of it, each route has its own
//! body limit, and the bodies of all requests share one in-flight budget, answered 503 while it
//! is spent.

use std::time::Duration;

use base64::Engine as _;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use rustls_pki_types::ServerName;
use time::{OffsetDateTime, UtcOffset};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use connector_e2e_tests::raw::read_answer;
use connector_e2e_tests::{TestApp, TestPki, eventually, spawn_tls_app_with, unit_body};
use connector_ingress::config::{BncPartner, Settings};
use connector_schema::paysafe::webhook_signature;

const BNC: &str = "/callbacks/bnc/account-binding";
const PAYSAFE: &str = "/webhooks/paysafe";
const KEY: &str = "paysafe-webhook-key-body-limits";
const PARTNER: &str = "BNC_PARTNER_1";
const EVENT: &str = r#"{"id":"e-1","eventName":"PAYMENT_COMPLETED","resourceId":"pay-1"}"#;
/// Well before the body timeout (30 s): an answer that did not wait for the body.
const AT_ONCE: Duration = Duration::from_secs(5);

/// An ingress with a BNC partner and a Paysafe key; `configure` adds to it.
async fn spawn(
    configure: impl FnOnce(&mut Settings) + Send + 'static,
) -> (TestApp, TestPki, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let file = keys.path().join("partner.pem");
    std::fs::write(&file, rsa.public_key_to_pem().unwrap()).unwrap();
    let (app, pki) = spawn_tls_app_with(move |settings| {
        settings.bnc.partners = vec![BncPartner {
            client_key: PARTNER.into(),
            public_key_files: vec![file.into()],
        }];
        settings.paysafe.webhook_keys = vec![KEY.into()];
        configure(settings);
    })
    .await;
    (app, pki, keys)
}

/// `X-TIMESTAMP` as BNC writes it, `ago` in the past.
fn snap_timestamp(ago: time::Duration) -> String {
    (OffsetDateTime::now_utc() - ago)
        .to_offset(UtcOffset::from_hms(7, 0, 0).unwrap())
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// SNAP headers whose only possible fault is in `client_key` or the timestamp: the signature is
/// base64 but signs nothing, which only the body could show.
fn snap_headers(client_key: &str, ago: time::Duration) -> Vec<(&'static str, String)> {
    vec![
        ("X-TIMESTAMP", snap_timestamp(ago)),
        ("X-CLIENT-KEY", client_key.into()),
        ("X-SIGNATURE", "c2lnbmF0dXJl".into()),
        ("X-EXTERNAL-ID", "EXT-BODY-LIMITS".into()),
        ("CHANNEL-ID", "95221".into()),
    ]
}

/// A Paysafe `Signature` that is well formed (base64 of 32 bytes) and signs nothing.
fn well_formed_signature() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// A TLS connection without a client certificate (as BNC and Paysafe connect) on which the
/// head of a POST to `path` declaring `length` body bytes is written, and no body.
async fn head_only(
    app: &TestApp,
    pki: &TestPki,
    path: &str,
    headers: &[(&str, String)],
    length: usize,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let address = app.base_url.trim_start_matches("https://");
    let tcp = TcpStream::connect(address).await.unwrap();
    let mut tls = pki
        .tls_connector(None)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// A refusal case: its name, the route, the headers, and what the answer must say.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
);

#[tokio::test]
async fn refusals_that_need_no_body_are_answered_before_the_body_arrives() {
    let (app, pki, _keys) = spawn(|_| {}).await;
    let hour = time::Duration::hours(1);
    let cases: [Case; 4] = [
        (
            "BNC, unknown client key",
            BNC,
            snap_headers("NOBODY", time::Duration::ZERO),
            "Unauthorized. Unknown client key",
        ),
        (
            "BNC, stale timestamp",
            BNC,
            snap_headers(PARTNER, hour),
            "Unauthorized. Timestamp outside the allowed window",
        ),
        (
            "Paysafe, no signature",
            PAYSAFE,
            Vec::new(),
            "SIGNATURE_MISSING",
        ),
        (
            "Paysafe, a signature that is no HMAC",
            PAYSAFE,
            vec![("Signature", "bm90IGl0".into())],
            "SIGNATURE_INVALID",
        ),
    ];
    for (case, path, headers, expected) in cases {
        let mut stream = head_only(&app, &pki, path, &headers, 2000).await;
        let (status, text) = read_answer(&mut stream, AT_ONCE)
            .await
            .unwrap_or_else(|| panic!("{case}: answered without the body"));
        assert!(status.starts_with("HTTP/1.1 401"), "{case}: {text}");
        assert!(text.contains(expected), "{case}: {text}");
        // The unread body is still on the connection: it cannot be reused.
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{case}: {text}"
        );
    }

    // With headers that pass, the body is awaited: no answer before it comes.
    let mut waiting = head_only(
        &app,
        &pki,
        BNC,
        &snap_headers(PARTNER, time::Duration::ZERO),
        2000,
    )
    .await;
    assert!(
        read_answer(&mut waiting, Duration::from_secs(2))
            .await
            .is_none(),
        "a request whose headers pass waits for its body"
    );
    let mut waiting = head_only(
        &app,
        &pki,
        PAYSAFE,
        &[("Signature", well_formed_signature())],
        2000,
    )
    .await;
    assert!(
        read_answer(&mut waiting, Duration::from_secs(2))
            .await
            .is_none()
    );
    assert_eq!(app.broker.intake_depth().await, 0);
}

#[tokio::test]
async fn each_route_has_its_own_body_limit() {
    let (app, pki, _keys) = spawn(|settings| {
        settings.bnc.max_body_bytes = 1024;
        settings.paysafe.max_body_bytes = 2048;
    })
    .await;
    let client = pki.client(None);
    let pad = "x".repeat(3000);

    let large_event = format!(
        r#"{{"id":"e-2","eventName":"PAYMENT_COMPLETED","resourceId":"pay-2","pad":"{pad}"}}"#
    );
    let response = client
        .post(format!("{}{PAYSAFE}", app.base_url))
        .header("Content-Type", "application/json")
        .header(
            "Signature",
            webhook_signature(KEY.as_bytes(), large_event.as_bytes()),
        )
        .body(large_event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    // BNC answers in SNAP terms, as for any unreadable body.
    let mut request = client
        .post(format!("{}{BNC}", app.base_url))
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"partnerReferenceNo":"P-1","pad":"{}"}}"#,
            &pad[..2000]
        ));
    for (name, value) in snap_headers(PARTNER, time::Duration::ZERO) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["responseCode"], "4000001");
    assert_eq!(body["responseMessage"], "Invalid Field Format requestBody");

    // Corelink keeps its own (1 MiB): the same padding is accepted there.
    let order =
        unit_body("PAY-LIMITS", "SUCCESS").replacen('{', &format!(r#"{{"pad": "{pad}", "#), 1);
    let response = app
        .post_signed("/callbacks/orders/status", &order, "PAY-LIMITS")
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(app.broker.intake_depth().await, 1);
}

#[tokio::test]
async fn the_in_flight_body_budget_answers_503_while_spent_and_recovers() {
    let (app, pki, _keys) = spawn(|settings| {
        settings.http.max_in_flight_body_bytes = 8192;
        settings.http.max_body_bytes = 8192;
        settings.paysafe.max_body_bytes = 8192;
    })
    .await;
    let client = pki.client(None);
    let deliver = || async {
        let response = client
            .post(format!("{}{PAYSAFE}", app.base_url))
            .header("Content-Type", "application/json")
            .header(
                "Signature",
                webhook_signature(KEY.as_bytes(), EVENT.as_bytes()),
            )
            .body(EVENT)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap();
        (status, retry_after, body["error"]["code"].clone())
    };

    // A sender that stalls 12 bytes short of its body holds all but 12 bytes of the budget.
    let mut holder = head_only(
        &app,
        &pki,
        PAYSAFE,
        &[("Signature", well_formed_signature())],
        8192,
    )
    .await;
    holder.write_all(&[b' '; 8180]).await.unwrap();
    holder.flush().await.unwrap();

    // The holder's bytes arrive asynchronously: ask until the budget is seen spent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = deliver().await;
        if answer.0 == 503 || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        refused.0, 503,
        "refused while the budget is spent: {refused:?}"
    );
    let (_, retry_after, code) = refused;
    assert_eq!(code, "OVERLOADED");
    assert_eq!(retry_after.as_deref(), Some("5"));
    // Every route draws on the same budget.
    let order = unit_body("PAY-BUDGET", "SUCCESS");
    let response = app
        .post_signed("/callbacks/orders/status", &order, "PAY-BUDGET")
        .await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "OVERLOADED");
    // BNC's own form of it.
    let mut request = client
        .post(format!("{}{BNC}", app.base_url))
        .header("Content-Type", "application/json")
        .body(r#"{"partnerReferenceNo":"P-BUDGET"}"#);
    for (name, value) in snap_headers(PARTNER, time::Duration::ZERO) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["responseCode"], "5000000");

    // The stalled sender leaves: its bytes are given back.
    drop(holder);
    let recovered = eventually(Duration::from_secs(10), || async {
        deliver().await.0 == 200
    })
    .await;
    assert!(recovered, "accepted again once the budget is free");
}
