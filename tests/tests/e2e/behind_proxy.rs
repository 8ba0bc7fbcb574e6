//! Behind a TLS-terminating load balancer: the proxy forwards the bank's verified certificate
//! in a header, which is believed only from the configured proxy addresses. The ingress runs
//! plain HTTP here, as it does behind such a proxy; the test plays the proxy from 127.0.0.1.

use serde_json::Value;

use connector_e2e_tests::{TestApp, spawn_app_with, unit_body};
use connector_ingress::pki::{DevCa, IssuedCertificate};

const UNIT: &str = "/callbacks/orders/status";
const HEADER: &str = "X-Client-Cert";

/// URL-encoded PEM, as nginx's `$ssl_client_escaped_cert`.
fn escaped(certificate: &IssuedCertificate) -> String {
    certificate
        .cert_pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A correctly signed BANK_X callback, with the forwarded certificate header if given.
async fn send(app: &TestApp, reference: &str, forwarded: Option<&str>) -> (u16, String) {
    let (status, body) = send_all(app, reference, forwarded.as_slice()).await;
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or("ACCEPTED")
        .to_owned();
    (status, code)
}

/// A correctly signed BANK_X callback with one forwarded certificate header per value.
async fn send_all(app: &TestApp, reference: &str, forwarded: &[&str]) -> (u16, Value) {
    let body = unit_body(reference, "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), reference);
    let mut headers = signed.pairs().to_vec();
    headers.extend(forwarded.iter().map(|value| (HEADER, *value)));
    let response = app.post(UNIT, &headers, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// An ingress trusting the proxy at `trusted`, with BANK_X bound to `bank_x`.
async fn behind_proxy(bank_x: &IssuedCertificate, trusted: &str) -> TestApp {
    let fingerprint = bank_x.sha256.clone();
    let trusted = trusted.to_owned();
    spawn_app_with(move |settings| {
        settings.proxy.trusted_addresses = vec![trusted];
        settings.corelink.clients[0].certificate_sha256 = vec![fingerprint];
    })
    .await
}

#[tokio::test]
async fn a_certificate_forwarded_by_a_trusted_proxy_binds_the_bank() {
    let ca = DevCa::new("load balancer test CA").unwrap();
    let bank_x = ca.client("BANK_X").unwrap();
    let bank_y = ca.client("BANK_Y").unwrap();
    let app = behind_proxy(&bank_x, "127.0.0.0/8").await;

    assert_eq!(
        send(&app, "PAY-LB1", Some(&escaped(&bank_x))).await,
        (200, "ACCEPTED".into())
    );
    assert_eq!(
        send(&app, "PAY-LB2", None).await,
        (401, "CLIENT_CERT_REQUIRED".into()),
        "the proxy forwarded no certificate"
    );
    assert_eq!(
        send(&app, "PAY-LB3", Some(&escaped(&bank_y))).await,
        (403, "CLIENT_MISMATCH".into()),
        "another bank's certificate naming BANK_X"
    );
    assert_eq!(
        send(
            &app,
            "PAY-LB4",
            Some("-----BEGIN%20CERTIFICATE-----%0Agarbage")
        )
        .await,
        (401, "CLIENT_CERT_REQUIRED".into()),
        "an unreadable forwarded certificate is no certificate"
    );
    assert_eq!(
        app.broker.intake_depth().await,
        1,
        "only the first was enqueued"
    );
}

#[tokio::test]
async fn the_header_from_an_untrusted_address_is_ignored() {
    let ca = DevCa::new("load balancer test CA").unwrap();
    let bank_x = ca.client("BANK_X").unwrap();
    // Only 10.255.0.1 is the proxy; the test connects from 127.0.0.1.
    let app = behind_proxy(&bank_x, "10.255.0.1").await;

    assert_eq!(
        send(&app, "PAY-LB5", Some(&escaped(&bank_x))).await,
        (401, "CLIENT_CERT_REQUIRED".into()),
        "a client cannot claim a bank's certificate by sending the header itself"
    );
    assert_eq!(app.broker.intake_depth().await, 0);
}

/// A proxy that appends its header to one the client sent forwards two: which is the bank's
/// cannot be known, so the request is refused rather than one picked (the first could be the
/// client's own forgery).
#[tokio::test]
async fn a_certificate_header_forwarded_twice_is_refused() {
    let ca = DevCa::new("load balancer test CA").unwrap();
    let bank_x = ca.client("BANK_X").unwrap();
    let other = ca.client("BANK_Y").unwrap();
    let app = behind_proxy(&bank_x, "127.0.0.0/8").await;
    let (genuine, forged) = (escaped(&bank_x), escaped(&other));

    for (name, values) in [
        ("the forgery first", vec![genuine.as_str(), forged.as_str()]),
        (
            "the same certificate twice",
            vec![genuine.as_str(), genuine.as_str()],
        ),
        (
            "forged, then genuine",
            vec![forged.as_str(), genuine.as_str()],
        ),
    ] {
        let (status, body) = send_all(&app, "PAY-LB6", &values).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_HEADER", "{name}");
        assert_eq!(
            body["error"]["details"][0]["field"], "x-client-cert",
            "{name}: {body}"
        );
    }
    let joined = format!("{forged}, {genuine}");
    let (status, body) = send_all(&app, "PAY-LB7", &[joined.as_str()]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_HEADER")),
        "two values joined into one header: {body}"
    );
    assert_eq!(app.broker.intake_depth().await, 0, "nothing enqueued");
    assert_eq!(
        send(&app, "PAY-LB8", Some(&genuine)).await,
        (200, "ACCEPTED".into()),
        "sent once, the same certificate is accepted"
    );
}
