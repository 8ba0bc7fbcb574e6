//! A bank rotates its signing key while requests flow: the new key is added beside the old one
//! and reloaded, the bank switches, the old key is removed and reloaded; no request in flight is
//! refused, and a reload that fails validation keeps the keys in force.

use std::sync::Arc;

use futures_util::FutureExt as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use connector_e2e_tests::cleanup::TopologyGuard;
use connector_e2e_tests::{BrokerInspector, TestBank, amqp_url, eventually, unit_body};
use connector_ingress::clock::SystemClock;
use connector_ingress::config::Settings;
use connector_ingress::startup::Application;
use connector_ingress::state::AppState;

const UNIT: &str = "/callbacks/orders/status";

/// The configuration file of the ingress under test, with BANK_X's keys as listed.
fn write_config(path: &std::path::Path, prefix: &str, keys: &[&TestBank]) {
    let keys: Vec<String> = keys
        .iter()
        .map(|bank| {
            format!(
                r#"{{ kid = "{}", alg = "ES256", jwk_file = "{}" }}"#,
                bank.kid,
                bank.public_key_file.display()
            )
        })
        .collect();
    let config = format!(
        r#"
mode = "development"
[http]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
[broker]
url = "{}"
[topology]
prefix = "{prefix}"
queue_expires_secs = 600
[corelink]
rate_limit_per_second = 0
keys_watch_interval_secs = 1
[[corelink.clients]]
id = "BANK_X"
keys = [{}]
[log]
format = "pretty"
"#,
        amqp_url(),
        keys.join(", ")
    );
    std::fs::write(path, config).unwrap();
}

async fn post(http: &reqwest::Client, base: &str, bank: &TestBank, reference: &str) -> u16 {
    let body = unit_body(reference, "SUCCESS");
    let signed = bank.sign(UNIT, body.as_bytes(), reference);
    let mut request = http.post(format!("{base}{UNIT}")).body(body);
    for (name, value) in signed.pairs() {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_key_rotates_without_a_restart_while_requests_flow() {
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(TestBank::with_kid("BANK_X", "BANK_X-key-1", dir.path()));
    let new = TestBank::with_kid("BANK_X", "BANK_X-key-2", dir.path());

    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let config = dir.path().join("ingress.toml");
    write_config(&config, &prefix, &[old.as_ref()]);
    let mut settings = Settings::load(Some(&config)).unwrap();
    settings.seal = connector_e2e_tests::test_seal();
    let topology = settings.topology.topology();
    let _cleanup = TopologyGuard::new(topology.clone());
    let application =
        Application::build_with(settings, Arc::new(SystemClock), Some(config.clone()))
            .await
            .unwrap();
    let base = format!("http://{}", application.public_addr());
    let state: AppState = application.state();
    application.publisher().wait_until_connected().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    assert_eq!(post(&http, &base, &old, "PAY-ROT-0").await, 200);
    assert_eq!(
        post(&http, &base, &new, "PAY-ROT-1").await,
        401,
        "the new key is not known yet"
    );

    // Step 1: both keys side by side, while the bank keeps sending with the old one.
    let sending = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let flow = {
        let (http, base, old) = (http.clone(), base.clone(), old.clone());
        let (sending, refused, sent) = (sending.clone(), refused.clone(), sent.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while sending.load(Ordering::Relaxed) {
                i += 1;
                if post(&http, &base, &old, &format!("PAY-FLOW-{i}")).await != 200 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    write_config(&config, &prefix, &[old.as_ref(), &new]);
    assert_eq!(state.keys.reload().unwrap(), 1);
    assert_eq!(
        post(&http, &base, &new, "PAY-ROT-2").await,
        200,
        "the new key works beside the old"
    );

    // A broken edit is refused and changes nothing.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("ES256", "HS256"),
    )
    .unwrap();
    let error = state.keys.reload().unwrap_err();
    assert!(error.key.ends_with(".alg"), "{error}");
    assert_eq!(post(&http, &base, &new, "PAY-ROT-3").await, 200);

    sending.store(false, Ordering::Relaxed);
    flow.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "no request refused while the keys changed"
    );

    // Step 2: the bank has switched; the old key goes.
    write_config(&config, &prefix, &[&new]);
    state.keys.reload().unwrap();
    assert_eq!(
        post(&http, &base, &old, "PAY-ROT-4").await,
        401,
        "the old key is gone"
    );
    assert_eq!(post(&http, &base, &new, "PAY-ROT-5").await, 200);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let broker = BrokerInspector::connect(topology).await;
    assert_eq!(
        broker.intake_depth().await as usize,
        4 + sent.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn an_edited_key_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestBank::with_kid("BANK_X", "BANK_X-key-1", dir.path());
    let new = TestBank::with_kid("BANK_X", "BANK_X-key-2", dir.path());
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let config = dir.path().join("ingress.toml");
    write_config(&config, &prefix, &[&old]);
    let mut settings = Settings::load(Some(&config)).unwrap();
    settings.seal = connector_e2e_tests::test_seal();
    let _cleanup = TopologyGuard::new(settings.topology.topology());
    let application =
        Application::build_with(settings, Arc::new(SystemClock), Some(config.clone()))
            .await
            .unwrap();
    let base = format!("http://{}", application.public_addr());
    application.publisher().wait_until_connected().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let within = std::time::Duration::from_secs(15);

    write_config(&config, &prefix, &[&old, &new]);
    assert!(
        eventually(within, || post(&http, &base, &new, "PAY-W1")
            .then(|status| async move { status == 200 }))
        .await,
        "the new key is taken once the file changes"
    );

    // The bank's key file itself is replaced by a key that is not valid for ES256: the reload
    // is refused and both keys in force keep working.
    let saved = std::fs::read(&new.public_key_file).unwrap();
    std::fs::write(
        &new.public_key_file,
        b"{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}",
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(post(&http, &base, &new, "PAY-W2").await, 200);
    assert_eq!(post(&http, &base, &old, "PAY-W3").await, 200);
    std::fs::write(&new.public_key_file, saved).unwrap();

    write_config(&config, &prefix, &[&new]);
    assert!(
        eventually(within, || post(&http, &base, &old, "PAY-W4")
            .then(|status| async move { status == 401 }))
        .await,
        "the removed key stops working once the file changes"
    );
    assert_eq!(post(&http, &base, &new, "PAY-W5").await, 200);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
