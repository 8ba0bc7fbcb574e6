//! The Corelink routes over real TLS with client certificates: the right bank's certificate is
//! accepted; none, another bank's, an expired one or one from no configured CA are refused,
//! at the handshake or with the contract's code; nothing refused is enqueued.

use serde_json::Value;
use time::{Duration, OffsetDateTime};

use connector_e2e_tests::{TestApp, spawn_tls_app_with, unit_body};
use connector_ingress::pki::self_signed_client;

const UNIT: &str = "/callbacks/orders/status";

/// A correctly signed unit callback from BANK_X, sent through `client`.
async fn send(
    app: &TestApp,
    client: &reqwest::Client,
    reference: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let body = unit_body(reference, "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), reference);
    let mut request = client.post(format!("{}{UNIT}", app.base_url)).body(body);
    for (name, value) in signed.pairs() {
        request = request.header(name, value);
    }
    request.send().await
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn only_the_banks_own_valid_certificate_gets_through() {
    let (app, pki) = spawn_tls_app_with(|_| {}).await;

    let accepted = send(&app, &app.http, "PAY-T1").await.unwrap();
    assert_eq!(accepted.status(), 200, "BANK_X with its certificate");

    let anonymous = send(&app, &pki.client(None), "PAY-T2").await.unwrap();
    assert_eq!(code(anonymous).await, (401, "CLIENT_CERT_REQUIRED".into()));

    // Another bank's certificate (same CA) naming BANK_X.
    let other = pki.ca.client("BANK_Y").unwrap();
    let mismatch = send(&app, &pki.client(Some(&other)), "PAY-T3")
        .await
        .unwrap();
    assert_eq!(code(mismatch).await, (403, "CLIENT_MISMATCH".into()));

    // Refused at the handshake: expired, and from no configured CA.
    let now = OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .client_valid("BANK_X", now - Duration::days(30), now - Duration::days(1))
        .unwrap();
    assert!(
        send(&app, &pki.client(Some(&expired)), "PAY-T4")
            .await
            .is_err(),
        "expired"
    );
    let not_yet = pki
        .ca
        .client_valid("BANK_X", now + Duration::days(1), now + Duration::days(30))
        .unwrap();
    assert!(
        send(&app, &pki.client(Some(&not_yet)), "PAY-T5")
            .await
            .is_err(),
        "not yet valid"
    );
    let rogue = self_signed_client("BANK_X").unwrap();
    assert!(
        send(&app, &pki.client(Some(&rogue)), "PAY-T6")
            .await
            .is_err(),
        "self-signed"
    );

    assert_eq!(
        app.broker.intake_depth().await,
        1,
        "only the first request was enqueued"
    );
}
