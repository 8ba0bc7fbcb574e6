//! What a bank's engineer meets first, driven with the tools we hand them: keys made by an
//! independent JOSE library sign requests the ingress accepts through `corelink-sign`, the keys
//! `corelink-sign keygen` writes carry the members standard libraries require, the header forms
//! the integration guide documents are accepted (and only those), and a second bank is
//! onboarded exactly as the README's "Onboard a bank" section says, with the real binaries.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use connector_e2e_tests::cleanup::TopologyGuard;
use connector_e2e_tests::{amqp_url, binary, eventually, spawn_tls_app_with, unit_body};
use connector_ingress::auth::signing::random_nonce;
use connector_ingress::config::KeySettings;
use connector_schema::Topology;
use connector_schema::corelink::{SignedRequestClaims, body_sha256};
use connector_schema::topology::QueueOptions;

const UNIT: &str = "/callbacks/orders/status";

/// The shared private JWKs, made by Python's jwcrypto: `(alg, private, public)`.
fn shared_keys() -> Vec<(String, Value, Value)> {
    let file: Value = serde_json::from_str(include_str!(
        "../../../ingress/tests/vectors/private-jwks.json"
    ))
    .unwrap();
    file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["alg"].as_str().unwrap().to_owned(),
                key["private_jwk"].clone(),
                key["public_jwk"].clone(),
            )
        })
        .collect()
}

fn corelink_sign(args: &[&str]) -> String {
    let output = Command::new(binary("connector-ingress", "corelink-sign"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "corelink-sign {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `corelink-sign request --format headers`, as a bank runs it: the headers to send.
fn signed_headers(key: &Path, client_id: &str, body: &Path) -> Vec<(String, String)> {
    corelink_sign(&[
        "request",
        "--key",
        key.to_str().unwrap(),
        "--client-id",
        client_id,
        "--body",
        body.to_str().unwrap(),
        "--format",
        "headers",
    ])
    .lines()
    .map(|line| {
        let (name, value) = line.split_once(": ").unwrap();
        (name.to_owned(), value.to_owned())
    })
    .collect()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn members(jwk: &Value) -> BTreeSet<String> {
    jwk.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn keys_made_by_another_jose_library_sign_requests_the_ingress_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = shared_keys();
    let mut registered = Vec::new();
    for (alg, _, public) in &keys {
        let kid = public["kid"].as_str().unwrap();
        let file = dir.path().join(format!("{kid}.public.jwk"));
        std::fs::write(&file, public.to_string()).unwrap();
        registered.push(KeySettings {
            kid: kid.to_owned(),
            alg: alg.clone(),
            jwk_file: Some(file.into()),
            jwks_file: None,
            pem_file: None,
        });
    }
    let (app, _pki) = spawn_tls_app_with(|settings| {
        settings.corelink.clients[0].keys.extend(registered);
    })
    .await;

    for (alg, private, _) in &keys {
        let key = dir.path().join(format!("{alg}.private.jwk"));
        std::fs::write(&key, private.to_string()).unwrap();
        let reference = format!("PAY-SHARED-{alg}");
        let body = dir.path().join(format!("{alg}.json"));
        std::fs::write(&body, unit_body(&reference, "SUCCESS")).unwrap();

        let headers = signed_headers(&key, "BANK_X", &body);
        let (status, answer) = post(
            &app.http,
            &format!("{}{UNIT}", app.base_url),
            &headers,
            std::fs::read(&body).unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{alg}: {answer}");
        assert_eq!(answer["idempotency_key"], reference.as_str());
    }
}

#[test]
fn keygen_writes_the_members_a_standard_library_writes() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, shared_private, shared_public) in shared_keys() {
        let private = dir.path().join(format!("{alg}.private.jwk"));
        let public = dir.path().join(format!("{alg}.public.jwk"));
        let jwks = dir.path().join(format!("{alg}.jwks.json"));
        corelink_sign(&[
            "keygen",
            "--alg",
            &alg,
            "--kid",
            "bank-test-1",
            "--private-out",
            private.to_str().unwrap(),
            "--public-out",
            public.to_str().unwrap(),
            "--jwks-out",
            jwks.to_str().unwrap(),
        ]);
        let read = |path: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        let (ours_private, ours_public) = (read(&private), read(&public));
        assert_eq!(
            members(&ours_private),
            members(&shared_private),
            "{alg}: private JWK members"
        );
        assert_eq!(
            members(&ours_public),
            members(&shared_public),
            "{alg}: public JWK members"
        );
        assert_eq!(read(&jwks)["keys"][0], ours_public, "{alg}: the JWK set");
        for (name, value) in ours_public.as_object().unwrap() {
            assert_eq!(&ours_private[name], value, "{alg}: {name} in both halves");
        }
    }
}

#[tokio::test]
async fn the_documented_header_forms_are_accepted_and_only_those() {
    let (app, _pki) = spawn_tls_app_with(|_| {}).await;
    let url = format!("{}{UNIT}", app.base_url);
    // Signed by the bank over exactly these header values.
    let send = |reference: &str, timestamp: String, content_type: &str| {
        let body = unit_body(reference, "SUCCESS");
        let claims = SignedRequestClaims {
            method: "POST".into(),
            path: UNIT.into(),
            client_id: "BANK_X".into(),
            timestamp: timestamp.clone(),
            nonce: random_nonce(),
            idempotency_key: reference.into(),
            content_type: content_type.into(),
            body_sha256: body_sha256(body.as_bytes()),
        };
        let signature = app.bank.signer.sign_claims(&claims).unwrap();
        let headers: Vec<(String, String)> = [
            ("Content-Type", content_type),
            ("X-Client-Id", "BANK_X"),
            ("X-Timestamp", &timestamp),
            ("X-Nonce", &claims.nonce),
            ("X-Idempotency-Key", reference),
            ("X-Signature", &signature),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let (client, url) = (app.http.clone(), url.clone());
        async move { post(&client, &url, &headers, body.into_bytes()).await }
    };
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let zulu = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(zulu.ends_with('Z'), "{zulu}");
    let offset = zulu.replace('Z', "+00:00");
    let fraction = zulu.replace('Z', ".250Z");

    for (reference, timestamp, content_type) in [
        ("PAY-FORM-1", zulu.clone(), "application/json"),
        ("PAY-FORM-2", offset.clone(), "application/json"),
        ("PAY-FORM-3", fraction, "application/json"),
        (
            "PAY-FORM-4",
            zulu.clone(),
            "application/json; charset=utf-8",
        ),
        ("PAY-FORM-5", zulu.clone(), "application/json;charset=UTF-8"),
    ] {
        let (status, answer) = send(reference, timestamp, content_type).await;
        assert_eq!(status, 200, "{reference}: {answer}");
    }

    for (reference, timestamp, content_type, expected) in [
        (
            "PAY-FORM-6",
            zulu.replace('Z', "-00:00"),
            "application/json",
            (400, "INVALID_HEADER", "X-Timestamp"),
        ),
        (
            "PAY-FORM-7",
            zulu.replace('Z', "z"),
            "application/json",
            (400, "INVALID_HEADER", "X-Timestamp"),
        ),
        (
            "PAY-FORM-8",
            zulu.replace('T', " "),
            "application/json",
            (400, "INVALID_HEADER", "X-Timestamp"),
        ),
        (
            "PAY-FORM-9",
            zulu.clone(),
            "application/json; charset=iso-8859-1",
            (415, "UNSUPPORTED_MEDIA_TYPE", ""),
        ),
        (
            "PAY-FORM-10",
            zulu.clone(),
            "application/json; profile=x",
            (415, "UNSUPPORTED_MEDIA_TYPE", ""),
        ),
    ] {
        let (status, answer) = send(reference, timestamp, content_type).await;
        let (expected_status, expected_code, field) = expected;
        assert_eq!(status, expected_status, "{reference}: {answer}");
        assert_eq!(answer["error"]["code"], expected_code, "{reference}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["details"][0]["field"], field, "{reference}");
        }
    }

    // A missing signature is reported like any other missing header: its canonical name in
    // the message and in `details`.
    let body = unit_body("PAY-FORM-11", "SUCCESS");
    let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-FORM-11");
    let without: Vec<(String, String)> = signed
        .pairs()
        .iter()
        .filter(|(name, _)| *name != "X-Signature")
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let (status, answer) = post(&app.http, &url, &without, body.into_bytes()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], "SIGNATURE_MISSING");
    assert_eq!(
        answer["error"]["details"],
        serde_json::json!([{"field": "X-Signature", "message": "is required"}])
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("header X-Signature "),
        "{answer}"
    );
}

/// A client presenting `certificate`, trusting the development CA in `pki`.
fn bank_client(pki: &Path, certificate: &str) -> reqwest::Client {
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let identity = [
        read(&format!("{certificate}.pem")),
        read(&format!("{certificate}.key")),
    ]
    .concat();
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap()
}

/// The ingress as shipped, on `config`, with a throw-away topology; answers it with its public
/// address and its ops address once it is ready.
async fn spawn_ingress(config: &Path, prefix: &str) -> (tokio::process::Child, String, String) {
    let mut ingress =
        tokio::process::Command::new(binary("connector-ingress", "connector-ingress"))
            .args(["--config", config.to_str().unwrap()])
            .env("CONNECTOR_BROKER__URL", amqp_url())
            .envs([connector_e2e_tests::test_seal_env()])
            .env("CONNECTOR_MODE", "development")
            .env("CONNECTOR_TOPOLOGY__PREFIX", prefix)
            .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
            .env("CONNECTOR_LOG__FORMAT", "json")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(ingress.stderr.take().unwrap()).lines();
    let (listen, ops) = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "ingress listening" {
                let address = |field: &str| event[field].as_str().unwrap().to_owned();
                return (address("listen"), address("ops_listen"));
            }
        }
        panic!("the ingress stopped before listening");
    })
    .await
    .expect("the ingress starts");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ready = eventually(Duration::from_secs(60), || async {
        matches!(reqwest::get(format!("http://{ops}/readyz")).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "the ingress is ready (connected to the broker)");
    (
        ingress,
        format!("https://{listen}"),
        format!("http://{ops}"),
    )
}

#[tokio::test]
async fn a_second_bank_is_onboarded_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, keys) = (dir.path().join("pki"), dir.path().join("keys"));
    std::fs::create_dir_all(&keys).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    // The local run's set-up: the development PKI with BANK_X, and BANK_X's key.
    let bank_x_fingerprint =
        corelink_sign(&["dev-pki", "--out-dir", &path(&pki), "--bank", "BANK_X"]);
    corelink_sign(&[
        "keygen",
        "--alg",
        "ES256",
        "--kid",
        "bank-x-dev-1",
        "--private-out",
        &path(&keys.join("bank_x.private.jwk")),
        "--public-out",
        &path(&keys.join("bank_x.public.jwk")),
    ]);
    let config = dir.path().join("ingress.toml");
    std::fs::write(
        &config,
        format!(
            r#"mode = "development"
[http]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"

[tls]
cert_file = "pki/server.pem"
key_file = "pki/server.key"
client_ca_files = ["pki/ca.pem"]

[[corelink.clients]]
id = "BANK_X"
keys = [{{ kid = "bank-x-dev-1", alg = "ES256", jwk_file = "keys/bank_x.public.jwk" }}]
certificate_sha256 = ["{}"]
"#,
            bank_x_fingerprint.trim()
        ),
    )
    .unwrap();
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let _cleanup = TopologyGuard::new(Topology::with_prefix(&prefix, QueueOptions::default()));
    let (mut ingress, base_url, ops) = spawn_ingress(&config, &prefix).await;

    // Before its first request, every route's counter of every code it can answer is there at
    // zero, so that the first refusal of a kind is an increase `rate()` and the alerts see.
    let metrics = connector_e2e_tests::scrape_metrics(&ops).await;
    for series in [
        r#"connector_ingress_requests_total{route="corelink_status",code="SIGNATURE_INVALID"} 0"#,
        r#"connector_ingress_requests_total{route="corelink_status_batch",code="ACCEPTED"} 0"#,
        r#"connector_ingress_requests_total{route="paysafe_webhook",code="OVERLOADED"} 0"#,
        r#"connector_ingress_requests_total{route="bnc_account_binding",code="4010000"} 0"#,
        r#"connector_ingress_connections_refused_total{reason="max_connections"} 0"#,
        // Each configured bank's refusals, and unknown senders', for the per-bank view.
        r#"connector_ingress_refusals_by_sender_total{route="corelink_status",sender="BANK_X",code="SIGNATURE_INVALID"} 0"#,
        r#"connector_ingress_refusals_by_sender_total{route="corelink_status_batch",sender="unknown",code="UNKNOWN_CLIENT"} 0"#,
        "connector_ingress_broker_reconnects_total 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }

    // 1. The bank's signing key; it hands over the public half.
    corelink_sign(&[
        "keygen",
        "--alg",
        "ES256",
        "--kid",
        "bank-y-2026",
        "--private-out",
        &path(&keys.join("bank_y.private.jwk")),
        "--public-out",
        &path(&keys.join("bank_y.public.jwk")),
    ]);
    // 2. Its client certificate, from the development CA; the fingerprint binds it.
    let bank_y_fingerprint = corelink_sign(&[
        "dev-client-cert",
        "--pki-dir",
        &path(&pki),
        "--bank",
        "BANK_Y",
    ]);
    // 3. Its block in the ingress's configuration.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[corelink.clients]]
id = "BANK_Y"
keys = [{{ kid = "bank-y-2026", alg = "ES256", jwk_file = "keys/bank_y.public.jwk" }}]
certificate_sha256 = ["{}"]
"#,
        bank_y_fingerprint.trim()
    ));
    std::fs::write(&config, text).unwrap();
    // 4. Reload.
    let pid = ingress.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );

    // 5. The first 200, signed with BANK_Y's key, sent with BANK_Y's certificate.
    let body = dir.path().join("body.json");
    std::fs::write(&body, unit_body("PAY-BANK-Y-0001", "SUCCESS")).unwrap();
    let url = format!("{base_url}{UNIT}");
    let bank_y = bank_client(&pki, "bank_y");
    // The reload is asynchronous: until it lands, BANK_Y is an unknown client (401).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (status, answer) = loop {
        let headers = signed_headers(&keys.join("bank_y.private.jwk"), "BANK_Y", &body);
        let answer = post(&bank_y, &url, &headers, std::fs::read(&body).unwrap()).await;
        if answer.0 != 401 || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "BANK_Y's first 200 after the reload: {answer}");

    // BANK_X's certificate cannot post in BANK_Y's name, even with BANK_Y's signature.
    let headers = signed_headers(&keys.join("bank_y.private.jwk"), "BANK_Y", &body);
    let (status, answer) = post(
        &bank_client(&pki, "bank_x"),
        &url,
        &headers,
        std::fs::read(&body).unwrap(),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("CLIENT_MISMATCH"))
    );
    // A name no configuration knows: refused, and never a label of its own.
    let headers = signed_headers(&keys.join("bank_y.private.jwk"), "EVIL_BANK", &body);
    let (status, _) = post(&bank_y, &url, &headers, std::fs::read(&body).unwrap()).await;
    assert_eq!(status, 401);

    // Refusals by the bank the request named, as the console's per-bank view reads them.
    let metrics = connector_e2e_tests::scrape_metrics(&ops).await;
    assert!(
        metrics.contains(
            r#"connector_ingress_refusals_by_sender_total{route="corelink_status",sender="BANK_Y",code="CLIENT_MISMATCH"} 1"#
        ),
        "{metrics}"
    );
    let unknown_clients = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                r#"connector_ingress_refusals_by_sender_total{route="corelink_status",sender="unknown",code="UNKNOWN_CLIENT"} "#,
            )
        })
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        unknown_clients.is_some_and(|n| n >= 1.0),
        "EVIL_BANK's refusal counted as unknown's: {unknown_clients:?}"
    );
    assert!(!metrics.contains("EVIL_BANK"), "{metrics}");

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), ingress.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(stopped.success(), "{stopped}");
}
