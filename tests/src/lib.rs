//! Helpers shared by the end-to-end tests in `tests/tests/`: a real ingress on loopback ports
//! against the real RabbitMQ, with its own exchanges and queues per test so that tests run in
//! parallel and never collide, plus a signing bank and a broker-side inspector.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cleanup;
pub mod console;
pub mod logs;
pub mod pipeline;
pub mod private_broker;
pub mod proxy;
pub mod raw;
pub mod tap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use josekit::jwk::Jwk;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, message::Delivery};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use uuid::Uuid;

use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{
    RequestSigner, SignedHeaders, generate_key_pair, random_nonce,
};
use connector_ingress::clock::SystemClock;
use connector_ingress::config::{ClientSettings, KeySettings, LogFormat, Settings};
use connector_ingress::startup::Application;
use connector_schema::Topology;
use connector_schema::seal::{SealKeySettings, SealKeys, SealSettings};

/// The broker the tests use; `CONNECTOR_TEST_AMQP_URL` points them elsewhere.
pub fn amqp_url() -> String {
    std::env::var("CONNECTOR_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker's address, for a [`proxy::FaultProxy`] in front of it.
pub fn amqp_addr() -> SocketAddr {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("AMQP URL");
    let host = if uri.authority.host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        uri.authority.host
    };
    format!("{host}:{}", uri.authority.port)
        .parse()
        .expect("broker address")
}

/// The seal key every test ingress and its workers share (DESIGN.md §2.7).
pub const TEST_SEAL_KEY: &str = "test-seal-key-0123456789abcdef0123456789";

/// The `[seal]` section of a test ingress or workers process.
pub fn test_seal() -> SealSettings {
    SealSettings {
        keys: vec![SealKeySettings {
            id: "test-seal".into(),
            key: Some(TEST_SEAL_KEY.into()),
            key_file: None,
        }],
    }
}

/// The test seal, loaded: for workers built in the test process and for admin commands.
pub fn test_seal_keys() -> SealKeys {
    SealKeys::from_settings(&test_seal().keys).expect("the test seal key is valid")
}

/// The test seal for a process configured through its environment.
pub fn test_seal_env() -> (&'static str, String) {
    (
        "CONNECTOR_SEAL__KEYS",
        format!(r#"[{{id="test-seal", key="{TEST_SEAL_KEY}"}}]"#),
    )
}

/// A bank with a fresh ES256 key, registered with the ingress under test.
#[derive(Debug)]
pub struct TestBank {
    pub signer: RequestSigner,
    pub kid: String,
    /// For tests that forge or hand-craft signatures.
    pub private_jwk: Jwk,
    pub public_jwk: Jwk,
    pub public_key_file: PathBuf,
}

impl TestBank {
    pub fn new(client_id: &str, dir: &std::path::Path) -> Self {
        Self::with_kid(client_id, &format!("{client_id}-key-1"), dir)
    }

    /// A bank whose key is `kid`: a second key of the same bank, during a rotation.
    pub fn with_kid(client_id: &str, kid: &str, dir: &std::path::Path) -> Self {
        let kid = kid.to_owned();
        let (private, public) = generate_key_pair(JwsAlgorithm::Es256, &kid).unwrap();
        let public_key_file = dir.join(format!("{kid}.public.jwk"));
        std::fs::write(&public_key_file, public.to_string()).unwrap();
        let signer = RequestSigner::from_private_jwk(client_id, &private).unwrap();
        Self {
            signer,
            kid,
            private_jwk: private,
            public_jwk: public,
            public_key_file,
        }
    }

    pub fn client_settings(&self) -> ClientSettings {
        ClientSettings {
            id: self.signer.client_id().to_owned(),
            keys: vec![KeySettings {
                kid: self.kid.clone(),
                alg: "ES256".into(),
                jwk_file: Some(self.public_key_file.clone().into()),
                jwks_file: None,
                pem_file: None,
            }],
            certificate_sha256: Vec::new(),
        }
    }

    /// Headers of a correctly signed POST of `body` to `path`, now, with a fresh nonce.
    pub fn sign(&self, path: &str, body: &[u8], idempotency_key: &str) -> SignedHeaders {
        self.sign_at(path, body, idempotency_key, OffsetDateTime::now_utc())
    }

    pub fn sign_at(
        &self,
        path: &str,
        body: &[u8],
        idempotency_key: &str,
        at: OffsetDateTime,
    ) -> SignedHeaders {
        self.signer
            .sign(path, body, idempotency_key, at, &random_nonce())
            .unwrap()
    }
}

/// A running ingress and everything a test needs to talk to it and look behind it.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    pub ops_url: String,
    pub http: reqwest::Client,
    pub bank: TestBank,
    /// The settings it runs with, for a second instance or workers that must match them.
    pub settings: Settings,
    pub topology: Topology,
    pub broker: BrokerInspector,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _key_dir: tempfile::TempDir,
    /// Last: the topology goes once the ingress has been told to stop.
    _topology: Option<cleanup::TopologyGuard>,
}

/// Starts an ingress on ephemeral ports against the real broker, with `configure` applied to
/// its settings (the broker URL can point at a [`proxy::FaultProxy`]). Waits until it is ready.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let key_dir = tempfile::tempdir().unwrap();
    let bank = TestBank::new("BANK_X", key_dir.path());

    // The tests run without TLS (mostly) and as the broker's guest user.
    let mut settings = Settings {
        mode: connector_ingress::config::Mode::Development,
        ..Settings::default()
    };
    settings.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.http.ops_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.log.format = LogFormat::Pretty;
    settings.broker.url = amqp_url();
    let own_prefix = format!("test-{}", Uuid::new_v4());
    settings.topology.prefix = own_prefix.clone();
    settings.topology.queue_expires_secs = Some(600);
    settings.broker.reconnect_initial_ms = 50;
    settings.broker.reconnect_max_ms = 500;
    settings.corelink.clients = vec![bank.client_settings()];
    settings.seal = test_seal();
    configure(&mut settings);
    let topology = settings.topology.topology();
    let topology_prefix_kept = settings.topology.prefix == own_prefix;

    let application = Application::build_with_clock(settings.clone(), Arc::new(SystemClock))
        .await
        .expect("ingress builds");
    let base_url = format!("http://{}", application.public_addr());
    let ops_url = format!("http://{}", application.ops_addr());
    let publisher = application.publisher();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // Generous: a shared broker can stall for a minute while it deletes many expired quorum
    // queues (earlier runs' throw-away topologies), which is not what these tests are about.
    tokio::time::timeout(
        std::time::Duration::from_secs(180),
        publisher.wait_until_connected(),
    )
    .await
    .expect("the ingress connects to the broker");

    TestApp {
        base_url,
        ops_url,
        http: reqwest::Client::new(),
        bank,
        settings,
        broker: BrokerInspector::connect(topology.clone()).await,
        topology: topology.clone(),
        shutdown: Some(shutdown),
        task: Some(task),
        _key_dir: key_dir,
        // Only a topology of its own: an instance that joins another's leaves it to that one.
        _topology: topology_prefix_kept.then(|| cleanup::TopologyGuard::new(topology.clone())),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// POSTs `body` to `path` with exactly `headers`.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the ingress answers")
    }

    /// POSTs a correctly signed request.
    pub async fn post_signed(
        &self,
        path: &str,
        body: &str,
        idempotency_key: &str,
    ) -> reqwest::Response {
        let signed = self.bank.sign(path, body.as_bytes(), idempotency_key);
        self.post(path, &signed.pairs(), body.to_owned()).await
    }

    /// POSTs a correctly signed request, requires its 200, and takes the intake message it
    /// became off the queue, so the test decides when and how often the workers see it.
    pub async fn accepted_intake(&self, path: &str, body: &str, idempotency_key: &str) -> Delivery {
        let response = self.post_signed(path, body, idempotency_key).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        self.broker.take_intake().await.expect("the intake message")
    }

    /// Asks the ingress to stop and waits for it, as SIGTERM would.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.take().expect("running").await?
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The broker seen from the side: what is on a test's queues.
#[derive(Debug)]
pub struct BrokerInspector {
    connection: Connection,
    pub channel: lapin::Channel,
    topology: Topology,
}

impl BrokerInspector {
    pub async fn connect(topology: Topology) -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("the test broker is reachable");
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
            topology,
        }
    }

    /// Messages ready on the intake queue.
    pub async fn intake_depth(&self) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(
                self.topology.intake_queue.as_str().into(),
                options,
                FieldTable::default(),
            )
            .await
            .expect("the intake queue exists")
            .message_count()
    }

    /// Takes the next intake message (acknowledged), if any.
    pub async fn take_intake(&self) -> Option<Delivery> {
        self.channel
            .basic_get(
                self.topology.intake_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
            .map(|message| message.delivery)
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// A unit body for `reference`.
/// The `/metrics` text of the ops listener at `ops` (`http://host:port`).
pub async fn scrape_metrics(ops: &str) -> String {
    reqwest::get(format!("{ops}/metrics"))
        .await
        .expect("the ops listener answers")
        .text()
        .await
        .expect("a metrics page")
}

pub fn unit_body(reference: &str, status: &str) -> String {
    connector_chaos::bodies::order_json(reference, status)
}

/// A batch body of `references`, all SUCCESS, with `batch_id`.
pub fn batch_body(batch_id: &str, references: &[&str]) -> String {
    let orders: Vec<String> = references.iter().map(|r| unit_body(r, "SUCCESS")).collect();
    format!(
        "{{\n  \"batch_id\": \"{batch_id}\",\n  \"sent_at\": \"2025-11-19T07:15:00Z\",\n  \"orders\": [\n    {}\n  ]\n}}",
        orders.join(",\n    ")
    )
}

/// Polls `condition` every 50 ms until it holds or `within` elapses. For states that settle
/// asynchronously (a reconnection); it asserts an outcome, never a speed.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The `connector-workers` binary, for tests that must kill a real process.
pub fn workers_binary() -> PathBuf {
    binary("connector-workers", "connector-workers")
}

/// Binary `name` of package `package`, built (or found up to date) once per test process, so a
/// test never runs a stale binary: for tests that run what an operator or a bank runs.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let mut build = std::process::Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build");
    assert!(status.success(), "building {name}");
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target directory")
        .join(name);
    built.push((name.to_owned(), path.clone()));
    path
}

/// A development PKI for TLS tests: the CA, and BANK_X's client certificate.
#[derive(Debug)]
pub struct TestPki {
    pub ca: connector_ingress::pki::DevCa,
    pub bank_x: connector_ingress::pki::IssuedCertificate,
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A client trusting the test CA, presenting `identity` (or no certificate).
    pub fn client(
        &self,
        identity: Option<&connector_ingress::pki::IssuedCertificate>,
    ) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem.as_bytes()).unwrap(),
            );
        if let Some(identity) = identity {
            let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A raw TLS connector (HTTP/1.1 only) trusting the test CA, presenting `identity` (or no
    /// certificate): for tests that write bytes by hand, such as a client that stalls.
    pub fn tls_connector(
        &self,
        identity: Option<&connector_ingress::pki::IssuedCertificate>,
    ) -> tokio_rustls::TlsConnector {
        self.connector(identity, b"http/1.1")
    }

    /// The same, offering HTTP/2 only (ALPN `h2`): for tests that drive an HTTP/2 client.
    pub fn h2_connector(
        &self,
        identity: Option<&connector_ingress::pki::IssuedCertificate>,
    ) -> tokio_rustls::TlsConnector {
        self.connector(identity, b"h2")
    }

    fn connector(
        &self,
        identity: Option<&connector_ingress::pki::IssuedCertificate>,
        alpn: &[u8],
    ) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => {
                let chain =
                    vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap()];
                let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// An ingress serving TLS with client certificates, BANK_X bound to its certificate; the
/// app's `http` client presents that certificate.
pub async fn spawn_tls_app_with(configure: impl FnOnce(&mut Settings)) -> (TestApp, TestPki) {
    let ca = connector_ingress::pki::DevCa::new("connector test CA").unwrap();
    let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    let bank_x = ca.client("BANK_X").unwrap();
    let pki = TestPki {
        ca,
        bank_x,
        dir: tempfile::tempdir().unwrap(),
    };
    let (cert, key, cas) = (
        pki.write("server.pem", &server.cert_pem),
        pki.write("server.key", &server.key_pem),
        pki.write("ca.pem", &pki.ca.cert_pem),
    );
    let fingerprint = pki.bank_x.sha256.clone();
    let mut app = spawn_app_with(move |settings| {
        settings.tls.cert_file = Some(cert.into());
        settings.tls.key_file = Some(key.into());
        settings.tls.client_ca_files = vec![cas.into()];
        settings.corelink.clients[0].certificate_sha256 = vec![fingerprint];
        configure(settings);
    })
    .await;
    app.base_url = app.base_url.replace("http://", "https://");
    app.http = pki.client(Some(&pki.bank_x));
    (app, pki)
}
