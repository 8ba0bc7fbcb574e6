//! Logging never fails a request nor holds up a shutdown: the shipped ingress and workers
//! processes, with their log reader gone (a collector restarting, the `tee` of a terminal killed
//! by Ctrl-C first) or stalled (a collector that stopped reading), keep answering and applying
//! under load, count the lines they dropped, and still stop gracefully on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

use connector_e2e_tests::cleanup::TopologyGuard;
use connector_e2e_tests::pipeline::spawn_pipeline;
use connector_e2e_tests::{TestBank, amqp_url, binary, eventually, unit_body, workers_binary};
use connector_schema::Topology;
use connector_schema::topology::QueueOptions;

const UNIT: &str = "/callbacks/orders/status";

/// What happens to the process's stderr once it has started.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Closed: every write fails (EPIPE).
    Gone,
    /// Open but never read again: the pipe fills and writes would block.
    Stalled,
}

/// Reads `stderr` until a JSON line with `message`; answers that line and the reader.
async fn wait_for_line(
    stderr: ChildStderr,
    message: &str,
) -> (Value, Lines<BufReader<ChildStderr>>) {
    let mut lines = BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"] == message
            {
                return event;
            }
        }
        panic!("the process stopped before logging `{message}`");
    })
    .await
    .expect("the process starts");
    (line, lines)
}

/// Cuts or stalls the log reader, as `reader` says; a stalled reader is returned, to be kept.
fn cut(
    lines: Lines<BufReader<ChildStderr>>,
    reader: Reader,
) -> Option<Lines<BufReader<ChildStderr>>> {
    match reader {
        Reader::Gone => None,
        Reader::Stalled => Some(lines),
    }
}

/// The lines the process says it dropped, from its metrics.
async fn dropped_lines(ops: &str) -> f64 {
    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("connector_log_lines_dropped_total "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// SIGTERM, then a clean exit within 30 s.
async fn stops_gracefully(mut process: Child) {
    let pid = process.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("stops on SIGTERM although nothing reads its logs")
        .unwrap();
    assert!(status.success(), "exits cleanly: {status}");
}

async fn ingress_keeps_answering(reader: Reader) {
    let dir = tempfile::tempdir().unwrap();
    let bank = TestBank::new("BANK_X", dir.path());
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let _cleanup = TopologyGuard::new(Topology::with_prefix(&prefix, QueueOptions::default()));
    let config = dir.path().join("ingress.toml");
    std::fs::write(
        &config,
        format!(
            r#"mode = "development"
[http]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
[corelink]
rate_limit_per_second = 0
[[corelink.clients]]
id = "BANK_X"
keys = [{{ kid = "{}", alg = "ES256", jwk_file = "{}" }}]
"#,
            bank.kid,
            bank.public_key_file.display()
        ),
    )
    .unwrap();
    let mut ingress =
        tokio::process::Command::new(binary("connector-ingress", "connector-ingress"))
            .args(["--config", config.to_str().unwrap()])
            .env("CONNECTOR_BROKER__URL", amqp_url())
            .envs([connector_e2e_tests::test_seal_env()])
            .env("CONNECTOR_MODE", "development")
            .env("CONNECTOR_TOPOLOGY__PREFIX", &prefix)
            .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
            .env("CONNECTOR_LOG__FORMAT", "json")
            // A short queue, so that a stalled reader makes it overflow within the test.
            .env("CONNECTOR_LOG__QUEUED_LINES", "100")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let (listening, lines) =
        wait_for_line(ingress.stderr.take().unwrap(), "ingress listening").await;
    let (base, ops) = (
        format!("http://{}", listening["listen"].as_str().unwrap()),
        listening["ops_listen"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(60), || async {
        matches!(http.get(format!("http://{ops}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "the ingress connects to the broker");
    let _stalled = cut(lines, reader);

    for round in 0..10 {
        let answers = join_all((0..30).map(|i| {
            let reference = format!("PAY-LOG-{round}-{i}");
            let body = unit_body(&reference, "SUCCESS");
            let signed = bank.sign(UNIT, body.as_bytes(), &reference);
            let mut request = http.post(format!("{base}{UNIT}")).body(body);
            for (name, value) in signed.pairs() {
                request = request.header(name, value);
            }
            async move {
                request
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
            }
        }))
        .await;
        for answer in answers {
            assert_eq!(
                answer.ok(),
                Some(200),
                "{reader:?}: every request answered 200"
            );
        }
    }
    let ready = http
        .get(format!("http://{ops}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        dropped_lines(&ops).await > 0.0,
        "{reader:?}: the lost lines are counted"
    );
    stops_gracefully(ingress).await;
}

#[tokio::test]
async fn the_ingress_keeps_answering_when_its_log_reader_is_gone() {
    ingress_keeps_answering(Reader::Gone).await;
}

#[tokio::test]
async fn the_ingress_keeps_answering_when_its_log_reader_stalls() {
    ingress_keeps_answering(Reader::Stalled).await;
}

async fn workers_keep_applying(reader: Reader) {
    // Built first: a build blocks this thread, and the pipeline's broker connection with it.
    let exe = workers_binary();
    let p = spawn_pipeline().await;
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops = format!("127.0.0.1:{ops_port}");
    let mut workers = tokio::process::Command::new(exe)
        .args(["run", "--role", "apply", "--role", "relay"])
        .env("CONNECTOR_DATABASE__URL", &p.db.url)
        .env("CONNECTOR_BROKER__URL", amqp_url())
        .envs([connector_e2e_tests::test_seal_env()])
        .env("CONNECTOR_MODE", "development")
        .env(
            "CONNECTOR_TOPOLOGY__PREFIX",
            &p.app.settings.topology.prefix,
        )
        .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
        .env("CONNECTOR_OPS__LISTEN", &ops)
        .env("CONNECTOR_LOG__FORMAT", "json")
        .env("CONNECTOR_LOG__QUEUED_LINES", "100")
        .env("RUST_LOG", "debug") // a line per statement: the stalled pipe fills at once
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (_, lines) = wait_for_line(workers.stderr.take().unwrap(), "workers running").await;
    let _stalled = cut(lines, reader);

    const CALLBACKS: i64 = 200;
    for i in 0..CALLBACKS {
        let reference = format!("PAY-WLOG-{i}");
        let response = p
            .app
            .post_signed(UNIT, &unit_body(&reference, "SUCCESS"), &reference)
            .await;
        assert_eq!(response.status(), 200);
    }
    let applied = eventually(Duration::from_secs(60), || async {
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NOT NULL")
            .await
            == CALLBACKS
    })
    .await;
    assert!(
        applied,
        "{reader:?}: every callback applied and its event published"
    );
    assert!(
        dropped_lines(&ops).await > 0.0,
        "{reader:?}: the lost lines are counted"
    );
    stops_gracefully(workers).await;
    p.teardown().await;
}

#[tokio::test]
async fn the_workers_keep_applying_when_their_log_reader_is_gone() {
    workers_keep_applying(Reader::Gone).await;
}

#[tokio::test]
async fn the_workers_keep_applying_when_their_log_reader_stalls() {
    workers_keep_applying(Reader::Stalled).await;
}
