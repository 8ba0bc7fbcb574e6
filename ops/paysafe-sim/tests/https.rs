//! The simulated API over HTTPS: the same answers as over plain HTTP to a client that trusts the
//! simulator's CA; no answer at all to one that does not; a certificate or key that is not one
//! is refused at start-up.

use connector_schema::paysafe::{PaysafeTransaction, TrackedKind};
use paysafe_sim::{ItemScript, SimConfig, Step};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const USER: &str = "merchant-api";
const PASSWORD: &str = "https-s3cr3t";

/// (CA certificate PEM, server certificate PEM for 127.0.0.1 and localhost, its key PEM)
fn pki() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("test PKI");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("test PKI");
    let ca_pem = ca_params.self_signed(&ca_key).expect("test PKI").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("test PKI");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("test PKI")
        .signed_by(&server_key, &issuer)
        .expect("test PKI");
    (ca_pem, server.pem(), server_key.serialize_pem())
}

fn client(ca_pem: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM CA"),
        );
    }
    builder.build().expect("an HTTP client")
}

#[tokio::test]
async fn the_api_is_served_over_https_to_a_client_that_trusts_the_ca() {
    let (ca_pem, cert_pem, key_pem) = pki();
    let mut config =
        SimConfig::new(USER, PASSWORD).with_tls(cert_pem.as_bytes(), key_pem.as_bytes());
    config.items = vec![ItemScript::new(
        TrackedKind::Payment,
        "pay-tls-1",
        "ref-tls-1",
        546,
        "CAD",
        vec![
            Step::new("PROCESSING", Some(1)),
            Step::new("COMPLETED", None),
        ],
    )];
    let sim = paysafe_sim::spawn(config).await.unwrap();
    let base = sim.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let url = format!("{base}{}", TrackedKind::Payment.api_path("pay-tls-1"));

    // An untrusting client gets no answer: the handshake fails, nothing is polled.
    let refused = client(None)
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // A plain-http request to the TLS port is no request either.
    let plain = format!(
        "http://{}{}",
        sim.addr(),
        TrackedKind::Payment.api_path("pay-tls-1")
    );
    let answer = client(None)
        .get(&plain)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    assert!(answer.map(|r| !r.status().is_success()).unwrap_or(true));
    assert_eq!(sim.poll_count("pay-tls-1"), 0);

    let trusting = client(Some(&ca_pem));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = trusting
            .get(&url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let transaction: PaysafeTransaction = response.json().await.unwrap();
        statuses.push(transaction.status);
    }
    assert_eq!(statuses, ["PROCESSING", "COMPLETED"]);
    assert_eq!(sim.poll_count("pay-tls-1"), 2);
    // The control API shares the listener.
    let health = trusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_certificate_or_key_that_is_not_one_is_refused_at_start() {
    let (_, cert_pem, key_pem) = pki();
    let (_, _, other_key) = pki();
    let cases = [
        (
            b"not a certificate".as_slice(),
            key_pem.as_bytes(),
            "no certificate",
        ),
        (
            cert_pem.as_bytes(),
            b"not a key".as_slice(),
            "no private key",
        ),
        (cert_pem.as_bytes(), other_key.as_bytes(), "does not match"),
    ];
    for (cert, key, why) in cases {
        let error = paysafe_sim::spawn(SimConfig::new(USER, PASSWORD).with_tls(cert, key))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains(why), "{why}: {error:#}");
    }
}

/// The shipped binary, as the compose stack runs it: `--tls-cert` and `--tls-key` (files),
/// HTTPS on the announced URL; one without the other is refused before anything starts.
#[tokio::test]
async fn the_binary_serves_https_with_the_tls_flags() {
    use tokio::io::AsyncBufReadExt as _;

    let (ca_pem, cert_pem, key_pem) = pki();
    let dir = std::env::temp_dir().join(format!("paysafe-sim-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("sim.pem"), dir.join("sim.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let exe = env!("CARGO_BIN_EXE_paysafe-sim");

    let half = std::process::Command::new(exe)
        .args(["--api-key", "u:p", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-key"));

    let mut sim = tokio::process::Command::new(exe)
        .args(["--api-key", "u:p", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(sim.stderr.take().unwrap()).lines();
    let base_url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("https://127.0.0.1:") {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                return url;
            }
        }
        panic!("the simulator exited without announcing an https URL");
    })
    .await
    .expect("announced within 30 s");
    let health = client(Some(&ca_pem))
        .get(format!("{base_url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    sim.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
