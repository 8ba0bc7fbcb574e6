//! The Paysafe webhook vectors signed by an independent implementation
//! (`tests/vectors/paysafe-webhook.json`, copied from the shared contract) must get exactly the
//! expected answer from the route's own checks ([`connector_ingress::routes::paysafe::check`]): "valid"
//! is accepted, "wrong key" (the valid signature, a verifier holding another key) is 401.

#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use connector_ingress::auth::hmac::WebhookKeys;
use connector_ingress::routes::error::ApiError;
use connector_ingress::routes::paysafe::check;
use connector_schema::paysafe::{SIGNATURE_HEADER, WebhookEvent};

fn vectors() -> Vec<Value> {
    let file: Value = serde_json::from_str(include_str!("vectors/paysafe-webhook.json")).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

/// What Paysafe sends: its `Signature` and a JSON content type.
fn headers(vector: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(vector["Signature"].as_str().unwrap()).unwrap(),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

fn body(vector: &Value) -> &[u8] {
    vector["body"].as_str().unwrap().as_bytes()
}

/// The answer the route gives once the body has arrived: "ACCEPT" or the HTTP status.
fn answer(keys: &WebhookKeys, vector: &Value) -> Result<(), ApiError> {
    check(keys, &headers(vector), body(vector)).map(|_| ())
}

fn expected(result: &Result<(), ApiError>) -> String {
    match result {
        Ok(()) => "ACCEPT".into(),
        Err(refusal) => refusal.status().as_u16().to_string(),
    }
}

#[test]
fn paysafe_vectors_get_the_expected_answer() {
    let vectors = vectors();
    let names: Vec<&str> = vectors
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["valid", "wrong key"]);

    let mut failures = Vec::new();
    for vector in &vectors {
        // The verifier holds the vector's key (and only it).
        let keys = WebhookKeys::new([vector["hmac_key"].as_str().unwrap()]);
        let result = answer(&keys, vector);
        let expect = vector["expect"].as_str().unwrap();
        if expected(&result) != expect {
            failures.push(format!(
                "{}: expected {expect}, got {}",
                vector["name"],
                expected(&result)
            ));
        }
        if expect == "401" {
            let code = result.unwrap_err().code();
            assert_eq!(code, "SIGNATURE_INVALID", "{}", vector["name"]);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_valid_vector_is_a_completed_payment_and_passes_during_a_rotation() {
    let vectors = vectors();
    let valid = vectors.iter().find(|v| v["expect"] == "ACCEPT").unwrap();
    let key = valid["hmac_key"].as_str().unwrap();

    // The key Paysafe signed with is the second of two configured keys.
    let rotating = WebhookKeys::new(["the-next-key", key]);
    let verified = check(&rotating, &headers(valid), body(valid)).unwrap();
    assert_eq!(verified.webhook.event, WebhookEvent::PaymentCompleted);
    assert_eq!(
        verified.webhook.resource_id,
        "568530f0-262a-453f-b681-1088195d9439"
    );
    assert_eq!(
        verified.headers,
        [
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "signature".to_owned(),
                valid["Signature"].as_str().unwrap().to_owned()
            ),
        ]
    );

    // Guards the test above: it passes because of the key, not whatever the key.
    let other = WebhookKeys::new(["the-next-key"]);
    let refusal = check(&other, &headers(valid), body(valid)).unwrap_err();
    assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refusal.code(), "SIGNATURE_INVALID");

    // One byte changed in the body breaks it.
    let changed = String::from_utf8(body(valid).to_vec())
        .unwrap()
        .replace("546", "547");
    let refusal = check(&rotating, &headers(valid), changed.as_bytes()).unwrap_err();
    assert_eq!(refusal.code(), "SIGNATURE_INVALID");
}
