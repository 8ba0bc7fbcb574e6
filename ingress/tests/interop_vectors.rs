//! The Corelink JWS vectors signed by an independent implementation (Python jwcrypto, in
//! `tests/vectors/`, copied from the shared contract) must verify exactly as expected, with
//! the verifier's clock set to each vector's `now`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use josekit::jwk::Jwk;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use connector_ingress::auth::keys::{BankClient, ClientRegistry, JwsAlgorithm, VerifyingKey};
use connector_ingress::routes::corelink::{CorelinkHeaders, authenticate};
use connector_ingress::routes::error::ApiError;

const TOLERANCE: Duration = Duration::from_secs(300);

/// The vector's key as BANK_X's only key, and its request headers.
fn registry_and_headers(vector: &Value) -> (ClientRegistry, Result<CorelinkHeaders, ApiError>) {
    let jwk = Jwk::from_bytes(vector["public_jwk"].to_string()).unwrap();
    let alg = JwsAlgorithm::from_name(vector["alg"].as_str().unwrap()).unwrap();
    let key = VerifyingKey::from_jwk(jwk.key_id().unwrap(), alg, &jwk).unwrap();
    let registry = ClientRegistry::new([BankClient::new("BANK_X", [key])]);
    let mut headers = HeaderMap::new();
    for (header, value) in vector["headers"].as_object().unwrap() {
        headers.insert(
            HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
        );
    }
    (registry, CorelinkHeaders::from_headers(&headers))
}

#[test]
fn corelink_vectors_verify_as_the_independent_implementation_expects() {
    let file: Value = serde_json::from_str(include_str!("vectors/corelink-jws.json")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 24, "all algorithms and cases are present");

    let mut failures = Vec::new();
    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let (registry, headers) = registry_and_headers(vector);
        let now = OffsetDateTime::parse(vector["now"].as_str().unwrap(), &Rfc3339).unwrap();
        let outcome = headers.and_then(|headers| {
            authenticate(
                &registry,
                None,
                &headers,
                vector["method"].as_str().unwrap(),
                vector["path"].as_str().unwrap(),
                vector["body"].as_str().unwrap().as_bytes(),
                now,
                TOLERANCE,
            )
        });
        let got = match &outcome {
            Ok(_) => "ACCEPT",
            Err(error) => error.code(),
        };
        let expected = vector["expect"].as_str().unwrap();
        if got != expected {
            failures.push(format!(
                "{name}: expected {expected}, got {got} ({outcome:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_vectors_fail_against_the_wall_clock() {
    // Guards the test above: it passes because the clock is injected, not by accident.
    let file: Value = serde_json::from_str(include_str!("vectors/corelink-jws.json")).unwrap();
    let vector = &file["vectors"][0];
    assert_eq!(vector["expect"], "ACCEPT");
    let (registry, headers) = registry_and_headers(vector);
    let headers = headers.unwrap();
    let error = authenticate(
        &registry,
        None,
        &headers,
        "POST",
        vector["path"].as_str().unwrap(),
        vector["body"].as_str().unwrap().as_bytes(),
        OffsetDateTime::now_utc(),
        TOLERANCE,
    )
    .unwrap_err();
    assert_eq!(error.code(), "TIMESTAMP_OUT_OF_WINDOW");
}
