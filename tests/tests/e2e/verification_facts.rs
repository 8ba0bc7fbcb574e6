//! Every intake message records how the ingress verified it (the evidence a bank dispute needs
//! years later): the scheme, the key id, the SHA-256 of the public key's SubjectPublicKeyInfo
//! and of the client certificate, and the path the signature covered. Driven from outside
//! through the real TLS ingress, RabbitMQ and PostgreSQL; the fingerprints are recomputed here
//! from the keys and certificates themselves. The facts are sealed: stripped or edited on the
//! broker or in a quarantine row, the message is never applied or released.

use base64::Engine as _;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;
use uuid::Uuid;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline, spawn_pipeline_on};
use connector_e2e_tests::{spawn_app_with, spawn_tls_app_with, test_seal_keys, unit_body};
use connector_ingress::config::{KeyEncoding, WebhookKey};
use connector_ingress::pki::{DevCa, IssuedCertificate};
use connector_schema::paysafe::webhook_signature;
use connector_schema::verification::HEADER;
use connector_schema::{IntakeEnvelope, Verification, VerificationScheme};
use connector_workers::admin;

const UNIT: &str = "/callbacks/orders/status";

/// Lower-case hex SHA-256, with OpenSSL's digest (not the code under test).
fn sha256_hex(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The DER inside a PEM block, decoded here.
fn pem_der(pem: &str) -> Vec<u8> {
    let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .unwrap()
}

/// The SPKI fingerprint of the test bank's ES256 JWK, built by hand: a P-256 SubjectPublicKeyInfo
/// is a fixed DER prefix (id-ecPublicKey, prime256v1, a 66-byte BIT STRING) and the
/// uncompressed point `04 || x || y`.
fn p256_jwk_spki_sha256(jwk: &josekit::jwk::Jwk) -> String {
    const PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    let member = |name| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk.parameter(name).unwrap().as_str().unwrap())
            .unwrap()
    };
    let mut der: Vec<u8> = (0..PREFIX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PREFIX[i..i + 2], 16).unwrap())
        .collect();
    der.push(0x04);
    der.extend(member("x"));
    der.extend(member("y"));
    sha256_hex(&der)
}

/// The `verification` column of the one received message of `kind`.
async fn recorded(p: &Pipeline, kind: &str) -> Value {
    sqlx::query_scalar::<_, Option<Value>>(
        "SELECT verification FROM received_messages WHERE kind = $1",
    )
    .bind(kind)
    .fetch_one(&p.db.pool)
    .await
    .unwrap()
    .expect("a verification record")
}

#[tokio::test]
async fn a_corelink_callback_over_mtls_records_its_kid_key_and_certificate() {
    let (app, pki) = spawn_tls_app_with(|_| {}).await;
    let p = spawn_pipeline_on(app).await;
    let response = p
        .app
        .post_signed(UNIT, &unit_body("PAY-VF1", "SUCCESS"), "PAY-VF1")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(p.apply_all().await, 1);

    let facts = recorded(&p, "corelink.status").await;
    assert_eq!(
        facts,
        serde_json::json!({
            "scheme": "jws",
            "key_id": p.app.bank.kid,
            "key_sha256": p256_jwk_spki_sha256(&p.app.bank.public_jwk),
            "client_cert_sha256": sha256_hex(&pem_der(&pki.bank_x.cert_pem)),
            "signed_path": UNIT,
            "result": "verified",
        })
    );
    // The order timeline names the key that verified each notification.
    let timeline = admin::order_timeline(&p.db.pool, "PAY-VF1").await.unwrap();
    assert!(
        timeline.contains(&format!("verified kid={}", p.app.bank.kid)),
        "{timeline}"
    );
    p.teardown().await;
}

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

#[tokio::test]
async fn behind_a_proxy_the_forwarded_certificate_and_the_prefixed_signed_path_are_recorded() {
    let ca = DevCa::new("load balancer test CA").unwrap();
    let bank_x = ca.client("BANK_X").unwrap();
    let fingerprint = bank_x.sha256.clone();
    let app = spawn_app_with(move |settings| {
        settings.proxy.trusted_addresses = vec!["127.0.0.0/8".into()];
        settings.corelink.clients[0].certificate_sha256 = vec![fingerprint];
        settings.corelink.external_path_prefix = "/edge".into();
    })
    .await;
    let p = spawn_pipeline_on(app).await;
    let body = unit_body("PAY-VF2", "SUCCESS");
    // The bank signs the path it called; the proxy strips `/edge` before the ingress.
    let signed = p
        .app
        .bank
        .sign(&format!("/edge{UNIT}"), body.as_bytes(), "PAY-VF2");
    let forwarded = escaped(&bank_x);
    let mut headers = signed.pairs().to_vec();
    headers.push(("X-Client-Cert", forwarded.as_str()));
    assert_eq!(p.app.post(UNIT, &headers, body).await.status(), 200);
    assert_eq!(p.apply_all().await, 1);

    let facts = recorded(&p, "corelink.status").await;
    assert_eq!(
        facts["client_cert_sha256"],
        sha256_hex(&pem_der(&bank_x.cert_pem))
    );
    assert_eq!(facts["signed_path"], "/edge/callbacks/orders/status");
    let request_path: String = sqlx::query_scalar("SELECT request_path FROM received_messages")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(request_path, UNIT, "as received, without the prefix");
    p.teardown().await;
}

const PAYSAFE_KEY: &str = "paysafe-webhook-key-2025-Zq8";
const PAYSAFE_NEXT_KEY: &str = "paysafe-webhook-key-2026-Xw3";

#[tokio::test]
async fn a_paysafe_webhook_records_its_key_id_and_nothing_of_the_secret() {
    let (app, pki) = spawn_tls_app_with(|s| {
        s.paysafe.webhook_keys = vec![PAYSAFE_KEY.into(), PAYSAFE_NEXT_KEY.into()];
    })
    .await;
    let p = spawn_pipeline_on(app).await;
    let body = r#"{"id":"evt-1","eventName":"PAYMENT_COMPLETED","resourceId":"pay-vf3","attemptNumber":"1"}"#;
    let signature = webhook_signature(PAYSAFE_NEXT_KEY.as_bytes(), body.as_bytes());
    let response = pki
        .client(None)
        .post(format!("{}/webhooks/paysafe", p.app.base_url))
        .header("Content-Type", "application/json")
        .header("Signature", &signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(p.apply_all().await, 1);

    let facts = recorded(&p, "paysafe.webhook").await;
    assert_eq!(
        facts,
        serde_json::json!({
            "scheme": "paysafe_hmac",
            "key_id": "webhook_keys[1]",
            "key_sha256": null,
            "client_cert_sha256": null,
            "signed_path": null,
            "result": "verified",
        })
    );
    let row: String = sqlx::query_scalar("SELECT verification::text FROM received_messages")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    let secret = PAYSAFE_NEXT_KEY.as_bytes();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    for form in [
        PAYSAFE_NEXT_KEY.to_owned(),
        hex.clone(),
        hex.to_ascii_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        sha256_hex(secret),
    ] {
        assert!(!row.contains(&form), "{form} in {row}");
    }
    p.teardown().await;
}

/// A key given an explicit `id` is recorded by it, not by its position: the id an archived
/// record names stays the same key when a rotation reorders or removes keys.
#[tokio::test]
async fn a_paysafe_webhook_verified_by_a_key_with_an_id_records_that_id() {
    let (app, pki) = spawn_tls_app_with(|s| {
        s.paysafe.webhook_keys = vec![
            PAYSAFE_KEY.into(),
            WebhookKey::inline(PAYSAFE_NEXT_KEY, KeyEncoding::Raw).with_id("paysafe-2026"),
        ];
    })
    .await;
    let p = spawn_pipeline_on(app).await;
    let body = r#"{"id":"evt-2","eventName":"PAYMENT_COMPLETED","resourceId":"pay-vf4","attemptNumber":"1"}"#;
    let response = pki
        .client(None)
        .post(format!("{}/webhooks/paysafe", p.app.base_url))
        .header("Content-Type", "application/json")
        .header(
            "Signature",
            webhook_signature(PAYSAFE_NEXT_KEY.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(p.apply_all().await, 1);

    let facts = recorded(&p, "paysafe.webhook").await;
    assert_eq!(facts["scheme"], "paysafe_hmac");
    assert_eq!(facts["key_id"], "paysafe-2026", "{facts}");
    assert_eq!(facts["result"], "verified");
    p.teardown().await;
}

/// Republishes `delivery` with its seal and its verification header edited by `edit`.
async fn republish_edited(
    p: &Pipeline,
    delivery: &lapin::message::Delivery,
    edit: impl FnOnce(&mut FieldTable),
) {
    let mut headers = delivery.properties.headers().clone().unwrap();
    edit(&mut headers);
    admin::publish_confirmed(
        &p.relay_channel,
        &p.app.topology.intake_exchange,
        delivery.routing_key.as_str(),
        &delivery.data,
        delivery.properties.clone().with_headers(headers),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn stripped_or_edited_verification_facts_are_dead_lettered_as_forged() {
    let p = spawn_pipeline().await;
    for reference in ["PAY-VF4", "PAY-VF5", "PAY-VF7"] {
        let response = p
            .app
            .post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
            .await;
        assert_eq!(response.status(), 200);
    }
    let first = p.app.broker.take_intake().await.unwrap();
    let second = p.app.broker.take_intake().await.unwrap();
    let third = p.app.broker.take_intake().await.unwrap();
    // Removed in transit: the seal covers the facts, so it no longer matches.
    republish_edited(&p, &first, |headers| {
        let mut without = FieldTable::default();
        for (name, value) in headers.inner() {
            if name.as_str() != HEADER {
                without.insert(name.clone(), value.clone());
            }
        }
        *headers = without;
    })
    .await;
    // Edited in transit: another key claimed.
    republish_edited(&p, &second, |headers| {
        let Some(AMQPValue::FieldTable(facts)) = headers.inner().get(HEADER).cloned() else {
            panic!("the ingress sent verification facts");
        };
        let mut facts = facts;
        facts.insert(
            "key_id".into(),
            AMQPValue::LongString(LongString::from("another-key")),
        );
        headers.insert(HEADER.into(), AMQPValue::FieldTable(facts));
    })
    .await;

    // Replaced by something that is not the facts' table: not even readable.
    republish_edited(&p, &third, |headers| {
        headers.insert(
            HEADER.into(),
            AMQPValue::LongString(LongString::from("jws")),
        );
    })
    .await;

    assert_eq!(p.apply_all().await, 3);
    assert_eq!(p.db.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        0
    );
    let dead = p.app.topology.intake_dead_letter_queue.clone();
    assert!(p.depth_reaches(&dead, 3).await);
    let listed = admin::dead_letters_replay(
        p.app.broker.connection(),
        &p.app.topology,
        &test_seal_keys(),
        admin::DeadLetterQueue::Intake,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        listed.matches("forged message (seal_mismatch)").count(),
        2,
        "{listed}"
    );
    // The unreadable one goes back (a newer build might read it) and is dead-lettered again.
    assert!(listed.starts_with("replayed 1 message(s)"), "{listed}");
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.db.count("SELECT count(*) FROM orders").await, 0);
    let all_back = connector_e2e_tests::eventually(std::time::Duration::from_secs(10), || async {
        p.depth(&dead).await == 3
    })
    .await;
    assert!(all_back, "all three are on the dead-letter queue");
    p.teardown().await;
}

#[tokio::test]
async fn a_quarantined_message_keeps_its_facts_through_release_and_an_edited_column_is_refused() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let p = spawn_pipeline_on(app).await;
    for status in ["SUCCESS", "FAILED"] {
        let response = p
            .app
            .post_signed(
                UNIT,
                &unit_body("PAY-VF6", status),
                &format!("PAY-VF6-{status}"),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(p.apply_all().await, 2);
    let quarantined = p.quarantined().await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let (reason, held) = quarantined[0].clone();
    assert_eq!(reason, "FINAL_STATUS_CONFLICT");
    let original: Value =
        sqlx::query_scalar("SELECT verification FROM quarantined_messages WHERE message_id = $1")
            .bind(held)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(original["key_id"], p.app.bank.kid.as_str());
    assert_eq!(original["result"], "verified");
    let shown = admin::quarantine_show(&p.db.pool, held).await.unwrap();
    assert!(shown.contains(&p.app.bank.kid), "{shown}");

    let keys = test_seal_keys();
    let release = || {
        admin::quarantine_release(
            &p.db.pool,
            &p.relay_channel,
            &p.app.topology,
            &keys,
            held,
            "bank confirmed",
        )
    };
    // Someone with write access claims another key verified it, or removes the facts.
    let edited = {
        let mut edited = original.clone();
        edited["key_sha256"] = "0".repeat(64).into();
        edited
    };
    for column in [Some(edited), None] {
        set_verification(&p, held, column.as_ref()).await;
        let error = release().await.unwrap_err();
        assert!(
            error.to_string().contains("not as the ingress sealed it"),
            "{error}"
        );
        assert_eq!(p.apply_all().await, 0, "nothing was published");
    }
    // Or writes something that is no verification record at all.
    let mut failed = original.clone();
    failed["result"] = "failed".into();
    set_verification(&p, held, Some(&failed)).await;
    let error = release().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("verification column is not one the workers wrote"),
        "{error}"
    );
    assert_eq!(p.apply_all().await, 0, "nothing was published");

    // As the workers wrote it, the release goes through and the facts travel with it.
    set_verification(&p, held, Some(&original)).await;
    release().await.unwrap();
    let released = p
        .app
        .broker
        .take_intake()
        .await
        .expect("the released message");
    let envelope = IntakeEnvelope::from_amqp(&released.properties, &released.data).unwrap();
    assert_eq!(envelope.message_id, held);
    let facts = envelope
        .verification
        .clone()
        .expect("the facts travel with it");
    assert_eq!(
        facts,
        Verification::from_audit_json(&original).unwrap(),
        "as recorded"
    );
    assert_eq!(facts.scheme, VerificationScheme::Jws);
    assert_eq!(
        test_seal_keys().verify(
            &envelope,
            connector_schema::seal::of(&released.properties).as_deref()
        ),
        Ok(())
    );
    p.teardown().await;
}

async fn set_verification(p: &Pipeline, message_id: Uuid, column: Option<&Value>) {
    sqlx::query("UPDATE quarantined_messages SET verification = $2 WHERE message_id = $1")
        .bind(message_id)
        .bind(column)
        .execute(&p.db.pool)
        .await
        .unwrap();
}
