//! The BNC SNAP vectors signed by an independent implementation (Python cryptography, in
//! `tests/vectors/bnc-snap.json`, copied from the shared contract) must give exactly the
//! expected SNAP code, with the verifier's clock set to each vector's `now`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use connector_ingress::auth::snap::partners::BncPartners;
use connector_ingress::auth::snap::{SnapAuthError, verify};
use connector_ingress::routes::bnc::check_request;
use connector_schema::bnc::{SnapResponse, minify, string_to_sign, validate_headers};

const TOLERANCE: Duration = Duration::from_secs(300);

fn vectors() -> Vec<Value> {
    let file: Value = serde_json::from_str(include_str!("vectors/bnc-snap.json")).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

/// The request headers as the router would see them (`HeaderMap`, case-insensitive).
fn header_map(vector: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in vector["headers"].as_object().unwrap() {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
        );
    }
    headers
}

/// The vector's key as the only key of the client key its request sends.
fn partners(vector: &Value) -> BncPartners {
    BncPartners::from_pems([(
        vector["headers"]["X-CLIENT-KEY"].as_str().unwrap(),
        vec![vector["public_key_pem"].as_str().unwrap()],
    )])
    .unwrap()
}

fn now(vector: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(vector["now"].as_str().unwrap(), &Rfc3339).unwrap()
}

/// The SNAP answer for the vector's request, checked at the vector's `now`.
fn answer(vector: &Value, partners: &BncPartners, now: OffsetDateTime) -> SnapResponse {
    let headers = header_map(vector);
    assert_eq!(vector["method"], "POST");
    match check_request(
        partners,
        |name| headers.get(name),
        vector["path"].as_str().unwrap(),
        vector["body"].as_str().unwrap().as_bytes(),
        now,
        TOLERANCE,
    ) {
        Ok(_) => SnapResponse::success(),
        Err(rejection) => rejection.response(),
    }
}

#[test]
fn bnc_vectors_give_the_expected_snap_code() {
    let vectors = vectors();
    assert!(vectors.len() >= 3, "valid, re-serialised body, other path");
    assert!(
        vectors.iter().any(|v| v["expect"] == "2000000"),
        "at least one valid vector"
    );

    let mut failures = Vec::new();
    for vector in &vectors {
        let name = vector["name"].as_str().unwrap();
        let response = answer(vector, &partners(vector), now(vector));
        let expected = vector["expect"].as_str().unwrap();
        if response.response_code != expected {
            failures.push(format!("{name}: expected {expected}, got {response:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_vectors_match_their_published_intermediate_values() {
    for vector in vectors().iter().filter(|v| v["expect"] == "2000000") {
        let body = vector["body"].as_str().unwrap().as_bytes();
        let headers = header_map(vector);
        let snap = validate_headers(|name| headers.get(name)).unwrap();
        if let Some(minified) = vector["minified"].as_str() {
            assert_eq!(minify(body).unwrap(), minified.as_bytes());
        }
        if let Some(expected) = vector["string_to_sign"].as_str() {
            let signed = string_to_sign(
                vector["method"].as_str().unwrap(),
                vector["path"].as_str().unwrap(),
                body,
                snap.timestamp,
            )
            .unwrap();
            assert_eq!(signed, expected);
        }
    }
}

#[test]
fn failing_vectors_fail_for_the_signature_not_the_clock_or_the_key() {
    for vector in vectors().iter().filter(|v| v["expect"] == "4010000") {
        let headers = header_map(vector);
        let snap = validate_headers(|name| headers.get(name)).unwrap();
        assert_eq!(
            verify(
                &partners(vector),
                &snap,
                vector["path"].as_str().unwrap(),
                vector["body"].as_str().unwrap().as_bytes(),
                now(vector),
                TOLERANCE,
            ),
            Err(SnapAuthError::InvalidSignature),
            "{}",
            vector["name"]
        );
    }
}

#[test]
fn the_valid_vector_fails_against_the_wall_clock_and_another_key() {
    // Guards the tests above: they pass because the clock and the key are the vector's.
    let vectors = vectors();
    let vector = vectors.iter().find(|v| v["expect"] == "2000000").unwrap();
    let response = answer(vector, &partners(vector), OffsetDateTime::now_utc());
    assert_eq!(
        response,
        SnapResponse::unauthorized("Timestamp outside the allowed window")
    );
    assert_eq!(response.http_status(), 401);

    let other_key = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let other = BncPartners::from_pems([("BNC_PARTNER_1", vec![other_key])]).unwrap();
    assert_eq!(
        answer(vector, &other, now(vector)),
        SnapResponse::unauthorized("Invalid signature")
    );
}
