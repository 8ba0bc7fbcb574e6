//! The poller against the Paysafe simulator over HTTPS, as the compose stack runs it: the
//! simulator serves a certificate from the development CA, and the poller trusts that CA through
//! `paysafe.ca_file`. Without it, a poll is a `tls` outcome (the item stays, polled again later),
//! never a crash; and the shipped `connector-workers` binary, in `mode = "production"` (which
//! refuses a plain-http API), polls a payment to COMPLETED with the certificates `corelink-sign`
//! issues for the stack.

use std::path::Path;
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use paysafe_sim::{ItemScript, SimConfig, SimHandle, Step as SimStep};
use tokio_util::sync::CancellationToken;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{amqp_url, binary, eventually, workers_binary};
use connector_ingress::pki::DevCa;
use connector_schema::paysafe::{TrackCommand, TrackedKind};
use connector_workers::admin;
use connector_workers::config::PaysafeSettings;
use connector_workers::poller::Poller;

const USER: &str = "merchant-api";
const PASSWORD: &str = "paysafe-https-password";

/// A simulator serving HTTPS with `cert_pem`/`key_pem`, knowing payment `id`: PROCESSING
/// for one poll, then COMPLETED.
async fn simulator(cert_pem: &str, key_pem: &str, id: &str) -> SimHandle {
    let sim = paysafe_sim::spawn(
        SimConfig::new(USER, PASSWORD).with_tls(cert_pem.as_bytes(), key_pem.as_bytes()),
    )
    .await
    .unwrap();
    sim.set_script(ItemScript::new(
        TrackedKind::Payment,
        id,
        &format!("order-{id}"),
        546,
        "CAD",
        vec![
            SimStep::new("PROCESSING", Some(1)),
            SimStep::new("COMPLETED", None),
        ],
    ))
    .unwrap();
    assert!(sim.base_url().starts_with("https://"), "{}", sim.base_url());
    sim
}

fn settings(sim: &SimHandle, ca_file: Option<&Path>) -> PaysafeSettings {
    PaysafeSettings {
        base_url: sim.base_url(),
        ca_file: ca_file.map(RelativePathBuf::from),
        api_username: USER.into(),
        api_password: PASSWORD.into(),
        first_poll_after_secs: 0,
        rate_limit_per_second: 1_000,
        request_timeout_ms: 2_000,
        idle_interval_ms: 10,
        ..PaysafeSettings::default()
    }
}

/// The merchant's `paysafe.track` command for `id`, applied with `settings` (due at once).
async fn track(p: &mut Pipeline, settings: &PaysafeSettings, id: &str) {
    p.worker = p.worker.clone().with_paysafe(settings.clone());
    let (_connection, channel) = admin::confirm_channel(&amqp_url()).await.unwrap();
    let command = TrackCommand {
        kind: TrackedKind::Payment,
        id: id.into(),
        merchant_ref_num: format!("order-{id}"),
        amount: 546,
        currency_code: "CAD".into(),
    };
    admin::paysafe_track(&channel, &p.app.topology, &command)
        .await
        .unwrap();
    assert_eq!(p.apply_all().await, 1);
}

/// (status, tracking, last poll outcome) of an item.
async fn item(p: &Pipeline, id: &str) -> (String, String, Option<String>) {
    sqlx::query_as("SELECT status, tracking, last_poll_outcome FROM paysafe_items WHERE id = $1")
        .bind(id)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

fn poller(p: &Pipeline, settings: &PaysafeSettings) -> Poller {
    Poller::new(
        p.db.pool.clone(),
        settings.clone(),
        CancellationToken::new(),
    )
    .unwrap()
}

/// Steps `poller` until `id` is no longer polled (at most 20 rounds).
async fn poll_until_final(p: &Pipeline, poller: &Poller, id: &str) {
    for _ in 0..20 {
        poller.run_once().await.unwrap();
        if item(p, id).await.1 != "polling" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} still polled: {:?}", item(p, id).await);
}

#[tokio::test]
async fn the_poller_reaches_completed_over_https_trusting_paysafe_ca_file_and_not_without_it() {
    let mut p = spawn_pipeline().await;
    let ca = DevCa::new("paysafe https test CA").unwrap();
    let server = ca.server(&["127.0.0.1", "localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let sim = simulator(&server.cert_pem, &server.key_pem, "pay-https-1").await;
    let untrusting = settings(&sim, None);
    track(&mut p, &untrusting, "pay-https-1").await;

    // Without the CA: the handshake fails; the round still completes (no error, no crash),
    // the item stays polled with a `tls` outcome, and the API was never reached.
    let without = poller(&p, &untrusting);
    without
        .run_once()
        .await
        .expect("a TLS failure is an outcome");
    assert_eq!(
        item(&p, "pay-https-1").await,
        ("PROCESSING".into(), "polling".into(), Some("tls".into()))
    );
    assert_eq!(sim.poll_count("pay-https-1"), 0);

    // With paysafe.ca_file naming the CA, the same item is polled to COMPLETED.
    let trusting = settings(&sim, Some(&ca_file));
    sqlx::query("UPDATE paysafe_items SET next_poll_at = now() WHERE id = $1")
        .bind("pay-https-1")
        .execute(&p.db.pool)
        .await
        .unwrap();
    poll_until_final(&p, &poller(&p, &trusting), "pay-https-1").await;
    assert_eq!(
        item(&p, "pay-https-1").await,
        ("COMPLETED".into(), "final".into(), Some("final".into()))
    );
    assert_eq!(sim.poll_count("pay-https-1"), 2);
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.event_type, "paysafe.payment.completed");
    assert_eq!(events[0].0.reference, "pay-https-1");

    sim.shutdown().await.unwrap();
    p.teardown().await;
}

/// Runs `corelink-sign args...`, which must succeed.
fn corelink_sign(args: &[&str]) {
    let output = std::process::Command::new(binary("connector-ingress", "corelink-sign"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "corelink-sign {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_workers_binary_in_production_polls_the_simulator_over_https_with_the_dev_ca() {
    let mut p = spawn_pipeline().await;
    // The compose stack's PKI, made as dev-init makes it.
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_arg = pki.to_str().unwrap();
    corelink_sign(&["dev-pki", "--out-dir", pki_arg, "--bank", "BANK_X"]);
    corelink_sign(&[
        "dev-server-cert",
        "--pki-dir",
        pki_arg,
        "--name",
        "paysafe-sim",
        "--host",
        "paysafe-sim",
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
    ]);
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let sim = simulator(
        &read("paysafe-sim.pem"),
        &read("paysafe-sim.key"),
        "pay-https-2",
    )
    .await;

    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Production, as the compose pollers run: an https API and the CA file (relative to the
    // configuration's folder). The broker URL only has to name a user other than guest: the
    // poller role never connects to the broker.
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        format!(
            r#"mode = "production"
[database]
url = "{}"
[broker]
url = "amqp://connector-workers:not-used@127.0.0.1:5672/connector"
[ops]
listen = "127.0.0.1:{ops_port}"
[paysafe]
base_url = "{}"
ca_file = "pki/ca.pem"
first_poll_after_secs = 0
idle_interval_ms = 50
"#,
            p.db.url,
            sim.base_url()
        ),
    )
    .unwrap();
    let mut command = tokio::process::Command::new(workers_binary());
    command
        .arg("--config")
        .arg(&config)
        .args(["run", "--role", "poller"]);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("CONNECTOR_") {
            command.env_remove(variable);
        }
    }
    let workers = command
        // The API key from the environment, as compose gives it.
        .env("CONNECTOR_PAYSAFE__API_USERNAME", USER)
        .env("CONNECTOR_PAYSAFE__API_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ops = format!("http://127.0.0.1:{ops_port}");
    let http = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(30), || async {
            matches!(http.get(format!("{ops}/readyz")).send().await, Ok(r) if r.status() == 200)
        })
        .await,
        "the production poller starts and is ready"
    );

    let due_at_once = settings(&sim, None);
    track(&mut p, &due_at_once, "pay-https-2").await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            item(&p, "pay-https-2").await.1 == "final"
        })
        .await,
        "polled to final: {:?}",
        item(&p, "pay-https-2").await
    );
    assert_eq!(item(&p, "pay-https-2").await.0, "COMPLETED");
    assert_eq!(sim.poll_count("pay-https-2"), 2);
    let metrics = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let final_poll = r#"connector_paysafe_polls_total{kind="payment",outcome="final"} 1"#;
    assert!(
        metrics.contains(final_poll),
        "{final_poll} not in:\n{metrics}"
    );
    // No TLS failure: its series, exported at zero from the start, stayed there.
    let tls: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains(r#"outcome="tls""#))
        .collect();
    assert!(!tls.is_empty(), "{metrics}");
    assert!(tls.iter().all(|line| line.ends_with(" 0")), "{tls:?}");

    stop(workers).await;
    sim.shutdown().await.unwrap();
    p.teardown().await;
}

/// SIGTERM, then a clean exit within 20 s.
async fn stop(mut workers: tokio::process::Child) {
    let pid = workers.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), workers.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "exits cleanly: {status}");
}
