//! Hostile and malformed requests against a running ingress over mTLS and the real broker:
//! each gets the contract's status and code, and nothing is ever enqueued. The certificate
//! cases are in `mtls.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jws::{ES256, HS256, JwsSigner as _};
use serde_json::{Value, json};

use connector_e2e_tests::{TestApp, TestBank, batch_body, spawn_tls_app_with, unit_body};
use connector_ingress::auth::signing::SignedHeaders;
use connector_schema::corelink::body_sha256;

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";

/// A compact JWS with exactly this header and payload, signed by `sign` over the signing input.
fn compact(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let signature = URL_SAFE_NO_PAD.encode(sign(format!("{header}.{payload}").as_bytes()));
    format!("{header}.{payload}.{signature}")
}

fn es256(bank: &TestBank) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |input| {
        ES256
            .signer_from_jwk(&bank.private_jwk)
            .unwrap()
            .sign(input)
            .unwrap()
    }
}

/// The claims the ingress expects for `headers` and `body` on `path`.
fn claims(path: &str, headers: &SignedHeaders, body: &[u8]) -> Value {
    json!({
        "method": "POST",
        "path": path,
        "client_id": headers.client_id,
        "timestamp": headers.timestamp,
        "nonce": headers.nonce,
        "idempotency_key": headers.idempotency_key,
        "content_type": headers.content_type,
        "body_sha256": body_sha256(body),
    })
}

/// Sends `body` with `headers`, the signature replaced by `signature`; returns (status, code).
async fn send(
    app: &TestApp,
    path: &str,
    headers: &SignedHeaders,
    signature: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let mut pairs: Vec<(&str, &str)> = headers
        .pairs()
        .into_iter()
        .filter(|(n, _)| *n != "X-Signature")
        .collect();
    pairs.push(("X-Signature", signature));
    code_of(app.post(path, &pairs, body).await).await
}

async fn code_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or("(none)")
            .to_owned(),
    )
}

fn expect(case: &str, got: (u16, String), status: u16, code: &str, failures: &mut Vec<String>) {
    if got != (status, code.to_owned()) {
        failures.push(format!(
            "{case}: expected {status} {code}, got {} {}",
            got.0, got.1
        ));
    }
}

#[tokio::test]
async fn forged_and_tampered_signatures_are_refused_for_the_right_reason() {
    let key_dir = tempfile::tempdir().unwrap();
    let other = TestBank::new("BANK_Y", key_dir.path());
    let mut other_settings = other.client_settings();
    other_settings.certificate_sha256 = vec!["0".repeat(64)]; // no connection here presents it
    let (app, _pki) =
        spawn_tls_app_with(move |settings| settings.corelink.clients.push(other_settings)).await;
    let bank = &app.bank;
    let body = unit_body("PAY-H1", "SUCCESS").into_bytes();
    // None of the forgeries authenticates, so none consumes this nonce: they can all share it.
    let headers = bank.sign(UNIT, &body, "PAY-H1");
    let good = claims(UNIT, &headers, &body);
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid});

    // Sanity: a hand-made JWS is accepted when nothing is wrong with it (its own nonce).
    let sane = bank.sign(UNIT, &body, "PAY-H1");
    let valid = compact(
        &header("ES256", &bank.kid),
        &claims(UNIT, &sane, &body),
        es256(bank),
    );
    assert_eq!(send(&app, UNIT, &sane, &valid, body.clone()).await.0, 200);

    let with_member = |member: &str, value: Option<Value>| {
        let mut claims = good.clone();
        match value {
            Some(value) => claims[member] = value,
            None => drop(claims.as_object_mut().unwrap().remove(member)),
        }
        compact(&header("ES256", &bank.kid), &claims, es256(bank))
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header("none", &bank.kid).to_string()),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let secret = bank.public_jwk.to_string();
    let hs256 = compact(&header("HS256", &bank.kid), &good, |input| {
        HS256
            .signer_from_bytes(secret.as_bytes())
            .unwrap()
            .sign(input)
            .unwrap()
    });
    let mut cases: Vec<(String, String, String)> = vec![
        ("alg none".into(), none, "compact serialization".into()),
        (
            "HS256 keyed with the public key".into(),
            hs256,
            "algorithm `HS256` is not accepted".into(),
        ),
        (
            "another algorithm than the key's".into(),
            compact(&header("PS256", &bank.kid), &good, es256(bank)),
            "is registered for ES256".into(),
        ),
        (
            "unknown kid".into(),
            compact(&header("ES256", "no-such-kid"), &good, es256(bank)),
            "no key with kid `no-such-kid`".into(),
        ),
        (
            "no kid".into(),
            compact(&json!({"alg": "ES256"}), &good, es256(bank)),
            "has no `kid`".into(),
        ),
        (
            "another client's kid and key".into(),
            compact(&header("ES256", &other.kid), &good, es256(&other)),
            "no key with kid".into(),
        ),
        (
            "another client's key under our kid".into(),
            compact(&header("ES256", &bank.kid), &good, es256(&other)),
            "does not verify".into(),
        ),
        (
            "crit".into(),
            compact(
                &json!({"alg": "ES256", "kid": bank.kid, "crit": ["exp"], "exp": 1}),
                &good,
                es256(bank),
            ),
            "`crit`".into(),
        ),
        (
            "b64 false".into(),
            compact(
                &json!({"alg": "ES256", "kid": bank.kid, "b64": false}),
                &good,
                es256(bank),
            ),
            "`b64`".into(),
        ),
        (
            "JWS JSON serialization".into(),
            json!({"payload": "e30", "signatures": []}).to_string(),
            "compact serialization".into(),
        ),
        (
            "signature bytes not a signature".into(),
            compact(&header("ES256", &bank.kid), &good, |_| vec![7; 64]),
            "does not verify".into(),
        ),
    ];
    for member in [
        "method",
        "path",
        "client_id",
        "timestamp",
        "nonce",
        "idempotency_key",
        "content_type",
        "body_sha256",
    ] {
        let different = format!("{}x", good[member].as_str().unwrap());
        cases.push((
            format!("{member} missing"),
            with_member(member, None),
            format!("has no `{member}`"),
        ));
        cases.push((
            format!("{member} different"),
            with_member(member, Some(json!(different))),
            format!("`{member}` does not match"),
        ));
        cases.push((
            format!("{member} not a string"),
            with_member(member, Some(json!(1))),
            format!("`{member}` does not match"),
        ));
    }
    let mut failures = Vec::new();
    for (case, jws, reason) in &cases {
        let mut pairs: Vec<(&str, &str)> = headers
            .pairs()
            .into_iter()
            .filter(|(n, _)| *n != "X-Signature")
            .collect();
        pairs.push(("X-Signature", jws));
        let response = app.post(UNIT, &pairs, body.clone()).await;
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap_or_default();
        if status != 401
            || error["error"]["code"] != "SIGNATURE_INVALID"
            || !message.contains(reason.as_str())
        {
            failures.push(format!(
                "{case}: expected 401 SIGNATURE_INVALID ({reason}), got {status} {error}"
            ));
        }
    }
    // The body changed by one byte after signing.
    let tampered = unit_body("PAY-H2", "SUCCESS").into_bytes();
    expect(
        "body changed",
        send(&app, UNIT, &headers, &headers.signature, tampered).await,
        401,
        "SIGNATURE_INVALID",
        &mut failures,
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        app.broker.intake_depth().await,
        1,
        "only the sanity request was enqueued"
    );
}

#[tokio::test]
async fn malformed_headers_are_refused() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let body = unit_body("PAY-H3", "SUCCESS");
    let mut failures = Vec::new();
    let long = "n".repeat(129);
    let huge_signature = "a".repeat(16 * 1024 + 1);
    for name in [
        "X-Client-Id",
        "X-Timestamp",
        "X-Nonce",
        "X-Idempotency-Key",
        "X-Signature",
        "Content-Type",
    ] {
        let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-H3");
        let pairs = signed.pairs();
        let others = || {
            pairs
                .iter()
                .filter(|(n, _)| *n != name)
                .copied()
                .collect::<Vec<_>>()
        };
        let value = pairs.iter().find(|(n, _)| *n == name).unwrap().1;

        let (missing_status, missing_code) = if name == "X-Signature" {
            (401, "SIGNATURE_MISSING")
        } else {
            (400, "MISSING_HEADER")
        };
        let got = code_of(app.post(UNIT, &others(), body.clone()).await).await;
        expect(
            &format!("{name} missing"),
            got,
            missing_status,
            missing_code,
            &mut failures,
        );

        let (empty_status, empty_code) = if name == "X-Signature" {
            (401, "SIGNATURE_MISSING")
        } else {
            (400, "INVALID_HEADER")
        };
        let mut empty = others();
        empty.push((name, ""));
        expect(
            &format!("{name} empty"),
            code_of(app.post(UNIT, &empty, body.clone()).await).await,
            empty_status,
            empty_code,
            &mut failures,
        );

        let mut twice = pairs.to_vec();
        twice.push((name, value));
        expect(
            &format!("{name} twice"),
            code_of(app.post(UNIT, &twice, body.clone()).await).await,
            400,
            "INVALID_HEADER",
            &mut failures,
        );

        let over_long = match name {
            "X-Signature" => Some(huge_signature.as_str()),
            "X-Client-Id" | "X-Nonce" | "X-Idempotency-Key" => Some(long.as_str()),
            _ => None,
        };
        if let Some(over_long) = over_long {
            let mut too_long = others();
            too_long.push((name, over_long));
            expect(
                &format!("{name} over-long"),
                code_of(app.post(UNIT, &too_long, body.clone()).await).await,
                400,
                "INVALID_HEADER",
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.broker.intake_depth().await, 0);
}

#[tokio::test]
async fn correctly_signed_but_hostile_bodies_are_refused() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let order = |reference: &str| unit_body(reference, "SUCCESS");
    let many: Vec<String> = (0..1001).map(|i| format!("PAY-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("non-UTF-8", UNIT, vec![0xff, 0xfe, b'{', b'}'], 400, "MALFORMED_JSON"),
        ("nested 10 000 deep", UNIT, "[".repeat(10_000).into_bytes(), 400, "MALFORMED_JSON"),
        ("a member twice", UNIT, br#"{"reference":"A","status":"SUCCESS","status":"FAILED","processed_at":"2025-11-19T07:09:30Z"}"#.to_vec(), 400, "MALFORMED_JSON"),
        ("a number out of range", UNIT, br#"{"reference":"A","status":"SUCCESS","processed_at":"2025-11-19T07:09:30Z","amount":1e999}"#.to_vec(), 400, "MALFORMED_JSON"),
        ("a top-level array", UNIT, b"[]".to_vec(), 400, "VALIDATION_FAILED"),
        ("an unknown status", UNIT, order("PAY-S").replace("SUCCESS", "DONE").into_bytes(), 400, "VALIDATION_FAILED"),
        ("FAILED without a reason", UNIT, order("PAY-F").replace("SUCCESS", "FAILED").into_bytes(), 400, "VALIDATION_FAILED"),
        ("a reference of 65 characters", UNIT, order(&"R".repeat(65)).into_bytes(), 400, "VALIDATION_FAILED"),
        ("a batch of 0 orders", BATCH, br#"{"orders":[]}"#.to_vec(), 400, "VALIDATION_FAILED"),
        ("a batch of 1001 orders", BATCH, batch_body("B-H", &many).into_bytes(), 400, "VALIDATION_FAILED"),
        ("a reference twice in a batch", BATCH, batch_body("B-H", &["PAY-D", "PAY-D"]).into_bytes(), 400, "VALIDATION_FAILED"),
        ("batch_id other than the key", BATCH, batch_body("B-OTHER", &["PAY-E"]).into_bytes(), 400, "VALIDATION_FAILED"),
    ];
    let mut failures = Vec::new();
    for (case, path, body, status, code) in cases {
        let signed = app.bank.sign(path, &body, "B-H");
        let got = code_of(app.post(path, &signed.pairs(), body).await).await;
        expect(case, got, status, code, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.broker.intake_depth().await, 0);
}
