use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use time::macros::datetime;
use uuid::Uuid;

use connector_ingress::config::Settings as IngressSettings;
use connector_schema::corelink::body_sha256;
use connector_schema::evidence::ArchiveEntry;
use connector_schema::paysafe::webhook_signature;

use super::*;

const KEY: &[u8] = b"paysafe-webhook-key";
const BODY: &[u8] = br#"{"id":"e-1","eventName":"PAYMENT_COMPLETED","payload":{"id":"pay-1"}}"#;

fn webhook(signature: &str) -> ArchiveEntry {
    ArchiveEntry {
        message_id: Uuid::from_u128(1),
        kind: "paysafe.webhook".into(),
        received_at: datetime!(2026-12-01 10:00 UTC),
        processed_at: datetime!(2026-12-01 10:00:01 UTC),
        client_id: None,
        idempotency_key: None,
        nonce: None,
        request_path: Some("/webhooks/paysafe".into()),
        headers: serde_json::json!({"signature": signature}),
        body_base64: STANDARD.encode(BODY),
        body_sha256: body_sha256(BODY),
        body_redacted: false,
        signature: Some(signature.into()),
        verification: None,
        outcome: "applied".into(),
        events: Vec::new(),
    }
}

fn reason(proof: &Proof) -> &str {
    match &proof.verdict {
        Verdict::NotProven(reason) => reason,
        Verdict::Proven => panic!("proven: {proof:?}"),
    }
}

#[test]
fn a_paysafe_webhook_is_proven_with_its_key_only() {
    let entry = webhook(&webhook_signature(KEY, BODY));
    let settings = IngressSettings::default();
    let proof = prove_entry(&entry, &settings, Some(KEY)).unwrap();
    assert_eq!(proof.verdict, Verdict::Proven);

    let proof = prove_entry(&entry, &settings, None).unwrap();
    assert!(reason(&proof).contains("--paysafe-key-file"));

    let proof = prove_entry(&entry, &settings, Some(b"another key")).unwrap();
    assert!(reason(&proof).contains("does not verify"));
}

#[test]
fn a_paysafe_proof_names_the_key_the_ingress_recorded() {
    let mut entry = webhook(&webhook_signature(KEY, BODY));
    entry.verification = Some(serde_json::json!({
        "scheme": "paysafe_hmac",
        "key_id": "paysafe-2026",
        "result": "verified",
    }));
    let named = ("key id (recorded)", "paysafe-2026".to_owned());
    for key in [None, Some(KEY), Some(&b"another key"[..])] {
        let proof = prove_entry(&entry, &IngressSettings::default(), key).unwrap();
        assert!(proof.details.contains(&named), "{key:?}: {proof:?}");
    }
}

#[test]
fn an_altered_paysafe_body_is_not_proven() {
    let mut entry = webhook(&webhook_signature(KEY, BODY));
    entry.body_base64 = STANDARD.encode(b"{}");
    let proof = prove_entry(&entry, &IngressSettings::default(), Some(KEY)).unwrap();
    assert!(reason(&proof).contains("does not hash"));
}

#[test]
fn a_track_command_has_no_signature_to_prove() {
    let mut entry = webhook("");
    entry.kind = "paysafe.track".into();
    let proof = prove_entry(&entry, &IngressSettings::default(), None).unwrap();
    assert!(reason(&proof).contains("no sender signature"));
}

#[test]
fn an_unknown_bank_or_partner_is_named() {
    let mut entry = webhook("a.b.c");
    entry.kind = "corelink.status".into();
    entry.client_id = Some("BANK_Z".into());
    let proof = prove_entry(&entry, &IngressSettings::default(), None).unwrap();
    assert!(reason(&proof).contains("`BANK_Z` is not in the ingress configuration"));

    entry.kind = "bnc.account_binding".into();
    entry.headers = serde_json::json!({"x-client-key": "NOPE"});
    let proof = prove_entry(&entry, &IngressSettings::default(), None).unwrap();
    assert!(reason(&proof).contains("`NOPE` is not in the ingress configuration"));
}
