//! BNC account-binding callbacks end to end (DESIGN.md §4): over TLS without a client
//! certificate, signed in the test with a freshly generated RSA key, through the real RabbitMQ
//! to PostgreSQL and the ledger. Every log line written meanwhile is captured, and must contain
//! neither the card token nor the account number.

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::Value;
use time::{Duration, OffsetDateTime, UtcOffset};

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline_on};
use connector_e2e_tests::{TestApp, TestPki, logs, spawn_tls_app_with};
use connector_ingress::auth::snap::sign;
use connector_ingress::config::BncPartner;
use connector_schema::bnc::string_to_sign;

const PATH: &str = "/callbacks/bnc/account-binding";
const TOKEN: &str = "c9fead3d790f41d4819456ebc13f2910";
const ACCOUNT_NO: &str = "585945******2348";

/// Whitespace between members and inside a string, and a limit written `500000.00`: what a
/// naive re-serialisation would change, and the signature must not.
fn body(reference: &str, token: &str) -> String {
    format!(
        "{{ \"partnerReferenceNo\": \"{reference}\", \"accountNo\": \"{ACCOUNT_NO}\",\n  \
         \"accountTransactionLimit\": 500000.00, \"accountCurrency\": \"IDR\",\n  \
         \"additionalInfo\": {{ \"userId\": \"8881701\", \"token\": \"{token}\", \"bindStatus\": \"1\" }},\n  \
         \"note\": \"two  spaces  kept\" }}"
    )
}

fn assert_no_secret_logged() {
    logs::assert_absent("bnc_callback", &[TOKEN, ACCOUNT_NO]);
}

/// A BNC partner: its client key and RSA private key (the ingress has the public half).
struct Partner {
    client_key: &'static str,
    key: PKey<Private>,
}

impl Partner {
    fn new(client_key: &'static str) -> Self {
        Self {
            client_key,
            key: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        }
    }

    fn settings(&self, dir: &std::path::Path) -> BncPartner {
        let file = dir.join(format!("{}.pem", self.client_key));
        std::fs::write(&file, self.key.public_key_to_pem().unwrap()).unwrap();
        BncPartner {
            client_key: self.client_key.into(),
            public_key_files: vec![file.into()],
        }
    }

    /// The five SNAP headers for `body` sent to `path`, signed over `signed_body` at `at`.
    fn headers(
        &self,
        path: &str,
        signed_body: &str,
        at: OffsetDateTime,
        external_id: &str,
    ) -> Vec<(&'static str, String)> {
        let timestamp = snap_timestamp(at);
        let to_sign = string_to_sign("POST", path, signed_body.as_bytes(), &timestamp).unwrap();
        let signature = sign(&self.key.private_key_to_pem_pkcs8().unwrap(), &to_sign).unwrap();
        vec![
            ("X-TIMESTAMP", timestamp),
            ("X-CLIENT-KEY", self.client_key.into()),
            ("X-SIGNATURE", signature),
            ("X-EXTERNAL-ID", external_id.into()),
            ("CHANNEL-ID", "95221".into()),
        ]
    }
}

/// `2022-09-06T13:00:00+07:00`: BNC's form, Jakarta time, whole seconds.
fn snap_timestamp(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(UtcOffset::from_hms(7, 0, 0).unwrap())
        .replace_nanosecond(0)
        .unwrap();
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

struct Bnc {
    pipeline: Pipeline,
    /// Presents no client certificate: BNC has none.
    client: reqwest::Client,
    partner: Partner,
    _pki: TestPki,
    _keys: tempfile::TempDir,
}

async fn spawn() -> Bnc {
    logs::install();
    let partner = Partner::new("BNC_PARTNER_1");
    let keys = tempfile::tempdir().unwrap();
    let settings = partner.settings(keys.path());
    let (app, pki) = spawn_tls_app_with(move |s| s.bnc.partners = vec![settings]).await;
    let client = pki.client(None);
    Bnc {
        pipeline: spawn_pipeline_on(app).await,
        client,
        partner,
        _pki: pki,
        _keys: keys,
    }
}

impl Bnc {
    fn app(&self) -> &TestApp {
        &self.pipeline.app
    }

    /// Sends `body` with `headers` (exactly); returns the status and the SNAP answer.
    async fn post(&self, path: &str, headers: &[(&str, String)], body: String) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.app().base_url))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn send(&self, body: &str, external_id: &str) -> (u16, Value) {
        let headers = self
            .partner
            .headers(PATH, body, OffsetDateTime::now_utc(), external_id);
        self.post(PATH, &headers, body.to_owned()).await
    }
}

fn snap(code: &str, message: &str) -> Value {
    serde_json::json!({"responseCode": code, "responseMessage": message})
}

#[tokio::test]
async fn a_signed_callback_is_applied_once_and_emits_one_event() {
    let bnc = spawn().await;
    let p = &bnc.pipeline;
    let first = body("BEL2210170001", TOKEN);

    assert_eq!(
        bnc.send(&first, "77778042022091500001").await,
        (200, snap("2000000", "Successful"))
    );
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1, "one bnc.account.bound");
    let (event, properties, routing_key) = &events[0];
    assert_eq!(routing_key, "bnc.account.bound");
    assert_eq!(event.reference, "BEL2210170001");
    assert_eq!(event.status, "1");
    assert_eq!(event.data["account_transaction_limit"], "500000.00");
    assert_eq!(event.data["user_id"], "8881701");
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        event.event_id.to_string()
    );
    let event_text = serde_json::to_string(event).unwrap();
    assert!(!event_text.contains(TOKEN), "no token in the ledger event");

    let (limit, token): (String, String) = sqlx::query_as(
        "SELECT b.account_transaction_limit::text, t.token
         FROM bnc_account_bindings b JOIN bnc_binding_tokens t USING (partner_reference_no)",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert_eq!((limit.as_str(), token.as_str()), ("500000.00", TOKEN));
    let audit: Vec<u8> = sqlx::query_scalar("SELECT body FROM received_messages")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    let audit = String::from_utf8(audit).unwrap();
    assert!(
        !audit.contains(TOKEN) && !audit.contains(ACCOUNT_NO),
        "{audit}"
    );
    let readable: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('connector_token_reader', 'bnc_binding_tokens', 'SELECT')
            AND NOT has_table_privilege('public', 'bnc_binding_tokens', 'SELECT')",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert!(readable, "only connector_token_reader may read tokens");

    // The same callback again (BNC retrying), then the same binding under a new external id.
    assert_eq!(bnc.send(&first, "77778042022091500001").await.0, 200);
    let reformatted = first.replace("\n  ", " ");
    assert_eq!(bnc.send(&reformatted, "77778042022091500002").await.0, 200);
    assert_eq!(p.apply_all().await, 2);
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty(), "no second event");
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM received_messages ORDER BY processed_at")
            .fetch_all(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["applied", "duplicate", "duplicate"]);

    // The same reference bound again with another token is a conflict, held for a human.
    let other = body("BEL2210170001", "0000aaaa1111bbbb2222cccc3333dddd");
    assert_eq!(bnc.send(&other, "77778042022091500003").await.0, 200);
    assert_eq!(p.apply_all().await, 1);
    let quarantined = p.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].0, "BINDING_CONFLICT");
    let token_now: String = sqlx::query_scalar("SELECT token FROM bnc_binding_tokens")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(token_now, TOKEN, "the first binding stands");

    // Another binding, then the first one's content under the second one's external id.
    let second = body("BEL2210170002", "1111aaaa2222bbbb3333cccc4444dddd");
    assert_eq!(bnc.send(&second, "77778042022091500010").await.0, 200);
    assert_eq!(bnc.send(&first, "77778042022091500010").await.0, 200);
    assert_eq!(p.apply_all().await, 2);
    let reasons: Vec<String> = p.quarantined().await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(reasons, ["BINDING_CONFLICT", "BINDING_CONFLICT"]);
    p.relay_all().await;
    assert_eq!(
        p.ledger_events().await.len(),
        1,
        "only the second binding's event"
    );

    assert_no_secret_logged();
    bnc.pipeline.teardown().await;
}

#[tokio::test]
async fn each_field_missing_too_long_or_malformed_gets_its_snap_code() {
    let bnc = spawn().await;
    let valid: Value = serde_json::from_str(&body("BEL2210170009", TOKEN)).unwrap();
    let mut failures = Vec::new();

    // Body cases: (mutation, field, code). Each body is correctly signed.
    type Mutation = fn(&mut Value);
    let body_cases: Vec<(&str, Mutation, &str, &str)> = vec![
        (
            "partnerReferenceNo missing",
            |v| drop(v.as_object_mut().unwrap().remove("partnerReferenceNo")),
            "4000002",
            "partnerReferenceNo",
        ),
        (
            "partnerReferenceNo 23 chars",
            |v| v["partnerReferenceNo"] = "P".repeat(23).into(),
            "4000001",
            "partnerReferenceNo",
        ),
        (
            "accountNo missing",
            |v| drop(v.as_object_mut().unwrap().remove("accountNo")),
            "4000002",
            "accountNo",
        ),
        (
            "accountNo 17 chars",
            |v| v["accountNo"] = "5".repeat(17).into(),
            "4000001",
            "accountNo",
        ),
        (
            "accountNo a number",
            |v| v["accountNo"] = 5859.into(),
            "4000001",
            "accountNo",
        ),
        (
            "limit missing",
            |v| drop(v.as_object_mut().unwrap().remove("accountTransactionLimit")),
            "4000002",
            "accountTransactionLimit",
        ),
        (
            "limit with 3 decimals",
            |v| v["accountTransactionLimit"] = "1.234".into(),
            "4000001",
            "accountTransactionLimit",
        ),
        (
            "limit not a number",
            |v| v["accountTransactionLimit"] = "lots".into(),
            "4000001",
            "accountTransactionLimit",
        ),
        (
            "additionalInfo missing",
            |v| drop(v.as_object_mut().unwrap().remove("additionalInfo")),
            "4000002",
            "additionalInfo",
        ),
        (
            "userId missing",
            |v| {
                drop(
                    v["additionalInfo"]
                        .as_object_mut()
                        .unwrap()
                        .remove("userId"),
                )
            },
            "4000002",
            "additionalInfo.userId",
        ),
        (
            "userId 65 chars",
            |v| v["additionalInfo"]["userId"] = "u".repeat(65).into(),
            "4000001",
            "additionalInfo.userId",
        ),
        (
            "token missing",
            |v| drop(v["additionalInfo"].as_object_mut().unwrap().remove("token")),
            "4000002",
            "additionalInfo.token",
        ),
        (
            "token 37 chars",
            |v| v["additionalInfo"]["token"] = "t".repeat(37).into(),
            "4000001",
            "additionalInfo.token",
        ),
        (
            "bindStatus empty",
            |v| v["additionalInfo"]["bindStatus"] = "".into(),
            "4000002",
            "additionalInfo.bindStatus",
        ),
        (
            "bindStatus 3 chars",
            |v| v["additionalInfo"]["bindStatus"] = "123".into(),
            "4000001",
            "additionalInfo.bindStatus",
        ),
        (
            "accountCurrency lower case",
            |v| v["accountCurrency"] = "idr".into(),
            "4000001",
            "accountCurrency",
        ),
    ];
    for (case, mutate, code, field) in body_cases {
        let mut value = valid.clone();
        mutate(&mut value);
        let text = value.to_string();
        let got = bnc.send(&text, "EXT-FIELDS").await;
        let message = if code == "4000002" {
            format!("Invalid Mandatory Field {field}")
        } else {
            format!("Invalid Field Format {field}")
        };
        if got != (400, snap(code, &message)) {
            failures.push(format!("{case}: got {got:?}"));
        }
    }
    let got = bnc.send("{\"partnerReferenceNo\":", "EXT-FIELDS").await;
    if got != (400, snap("4000001", "Invalid Field Format requestBody")) {
        failures.push(format!("not JSON: got {got:?}"));
    }

    // Header cases: each header missing, over-long or malformed, on a correctly signed body.
    let text = body("BEL2210170009", TOKEN);
    let signed = bnc
        .partner
        .headers(PATH, &text, OffsetDateTime::now_utc(), "EXT-HEADERS");
    let header_cases: Vec<(&str, Option<String>, &str)> = vec![
        ("X-TIMESTAMP", None, "4000002"),
        ("X-TIMESTAMP", Some("06/09/2022 13:00".into()), "4000001"),
        ("X-CLIENT-KEY", None, "4000002"),
        ("X-CLIENT-KEY", Some("K".repeat(33)), "4000001"),
        ("X-SIGNATURE", None, "4000002"),
        ("X-SIGNATURE", Some("A".repeat(2049)), "4000001"),
        ("X-EXTERNAL-ID", None, "4000002"),
        ("X-EXTERNAL-ID", Some("E".repeat(37)), "4000001"),
        ("CHANNEL-ID", None, "4000002"),
        ("CHANNEL-ID", Some("952210".into()), "4000001"),
    ];
    for (name, value, code) in header_cases {
        let mut headers: Vec<(&str, String)> =
            signed.iter().filter(|(n, _)| *n != name).cloned().collect();
        if let Some(value) = &value {
            headers.push((name, value.clone()));
        }
        let message = if code == "4000002" {
            format!("Invalid Mandatory Field {name}")
        } else {
            format!("Invalid Field Format {name}")
        };
        let got = bnc.post(PATH, &headers, text.clone()).await;
        if got != (400, snap(code, &message)) {
            failures.push(format!("{name} = {value:?}: got {got:?}"));
        }
    }
    let mut twice = signed.clone();
    twice.push(("X-EXTERNAL-ID", "EXT-OTHER".into()));
    let got = bnc.post(PATH, &twice, text.clone()).await;
    if got != (400, snap("4000001", "Invalid Field Format X-EXTERNAL-ID")) {
        failures.push(format!("X-EXTERNAL-ID twice: got {got:?}"));
    }

    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(bnc.app().broker.intake_depth().await, 0, "nothing enqueued");
    assert_no_secret_logged();
    bnc.pipeline.teardown().await;
}

#[tokio::test]
async fn forged_or_stale_callbacks_are_unauthorized() {
    let bnc = spawn().await;
    let text = body("BEL2210170005", TOKEN);
    let now = OffsetDateTime::now_utc();
    let code = |got: &(u16, Value)| {
        (
            got.0,
            got.1["responseCode"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let mut failures = Vec::new();

    let impostor = Partner {
        client_key: "BNC_PARTNER_1",
        key: Partner::new("X").key,
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "signed with another key",
            impostor.headers(PATH, &text, now, "EXT-F1"),
        ),
        (
            "signed over another path",
            bnc.partner
                .headers("/callbacks/bnc/other", &text, now, "EXT-F2"),
        ),
        (
            "signed over a re-serialised body (500000.0, no spaces)",
            bnc.partner.headers(
                PATH,
                &serde_json::from_str::<Value>(&text).unwrap().to_string(),
                now,
                "EXT-F3",
            ),
        ),
        (
            "timestamp 10 minutes old",
            bnc.partner
                .headers(PATH, &text, now - Duration::minutes(10), "EXT-F4"),
        ),
        (
            "timestamp 10 minutes ahead",
            bnc.partner
                .headers(PATH, &text, now + Duration::minutes(10), "EXT-F5"),
        ),
        (
            "unknown client key",
            Partner {
                client_key: "BNC_PARTNER_9",
                key: bnc.partner.key.clone(),
            }
            .headers(PATH, &text, now, "EXT-F6"),
        ),
    ];
    for (case, headers) in cases {
        let got = bnc.post(PATH, &headers, text.clone()).await;
        if code(&got) != (401, "4010000".to_owned()) {
            failures.push(format!("{case}: got {got:?}"));
        } else if got.0 == 401
            && !got.1["responseMessage"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Unauthorized. ")
        {
            failures.push(format!("{case}: message {got:?}"));
        }
    }
    // The same bytes the partner signed, with one byte changed.
    let headers = bnc.partner.headers(PATH, &text, now, "EXT-F7");
    let got = bnc
        .post(PATH, &headers, text.replace("500000.00", "500000.01"))
        .await;
    if code(&got) != (401, "4010000".to_owned()) {
        failures.push(format!("body changed after signing: got {got:?}"));
    }

    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(bnc.app().broker.intake_depth().await, 0, "nothing enqueued");
    assert_no_secret_logged();
    bnc.pipeline.teardown().await;
}

#[tokio::test]
async fn a_quarantined_callback_keeps_its_secrets_apart_and_can_still_be_released() {
    let bnc = spawn().await;
    let p = &bnc.pipeline;
    let first = body("BEL2210170009", TOKEN);
    let other_token = "9999aaaa1111bbbb2222cccc3333dddd";
    let conflicting = body("BEL2210170009", other_token);
    assert_eq!(bnc.send(&first, "77778042022091500090").await.0, 200);
    assert_eq!(bnc.send(&conflicting, "77778042022091500091").await.0, 200);
    assert_eq!(p.apply_all().await, 2);
    let quarantined = p.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    let held = quarantined[0].1;

    // What any database reader sees of the held message: no token, no account number.
    let readable: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM quarantined_messages WHERE message_id = $1")
            .bind(held)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    let readable = String::from_utf8(readable).unwrap();
    assert!(
        !readable.contains(other_token) && !readable.contains(ACCOUNT_NO),
        "{readable}"
    );
    assert!(
        readable.contains("BEL2210170009"),
        "the rest is readable: {readable}"
    );
    let restricted: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('connector_token_reader', 'quarantined_secret_bodies', 'SELECT')
            AND NOT has_table_privilege('public', 'quarantined_secret_bodies', 'SELECT')",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert!(
        restricted,
        "only connector_token_reader may read the raw body"
    );

    // Released once the first binding is gone: the raw body goes back, token and all.
    for table in ["bnc_binding_tokens", "bnc_account_bindings"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&p.db.pool)
            .await
            .unwrap();
    }
    connector_workers::admin::quarantine_release(
        &p.db.pool,
        &p.relay_channel,
        &p.app.topology,
        &connector_e2e_tests::test_seal_keys(),
        held,
        "first binding withdrawn by BNC",
    )
    .await
    .unwrap();
    assert_eq!(p.apply_all().await, 1);
    let token: String = sqlx::query_scalar("SELECT token FROM bnc_binding_tokens")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(token, other_token);
    assert_no_secret_logged();
    bnc.pipeline.teardown().await;
}

#[tokio::test]
async fn an_unmasked_account_number_never_reaches_the_ledger() {
    let bnc = spawn().await;
    let p = &bnc.pipeline;
    let unmasked = body("BEL2210170020", TOKEN).replace(ACCOUNT_NO, "5859451234562348");
    assert_eq!(bnc.send(&unmasked, "77778042022091500200").await.0, 200);
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.data["account_no_masked"], "585945******2348");
    let stored: String = sqlx::query_scalar("SELECT account_no_masked FROM bnc_account_bindings")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, "585945******2348");
    logs::assert_absent("bnc_callback", &["5859451234562348"]);
    bnc.pipeline.teardown().await;
}

#[tokio::test]
async fn a_callback_records_the_partner_key_that_verified_it() {
    let bnc = spawn().await;
    let p = &bnc.pipeline;
    assert_eq!(
        bnc.send(&body("BEL2210170009", TOKEN), "77778042022091500009")
            .await
            .0,
        200
    );
    assert_eq!(p.apply_all().await, 1);
    let facts: Value = sqlx::query_scalar("SELECT verification FROM received_messages")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    // The partner key's SubjectPublicKeyInfo, fingerprinted here with OpenSSL's digest.
    let spki = bnc.partner.key.public_key_to_der().unwrap();
    let key_sha256: String = openssl::sha::sha256(&spki)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        facts,
        serde_json::json!({
            "scheme": "snap_rsa",
            "key_id": "BNC_PARTNER_1",
            "key_sha256": key_sha256,
            "client_cert_sha256": null,
            "signed_path": PATH,
            "result": "verified",
        })
    );
    let text = facts.to_string();
    assert!(
        !text.contains(TOKEN) && !text.contains(ACCOUNT_NO),
        "{text}"
    );
    bnc.pipeline.teardown().await;
}
