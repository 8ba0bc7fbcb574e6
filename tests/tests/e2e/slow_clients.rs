//! The edge under slow and hostile clients (DESIGN.md §2.8), over the real listener and the real
//! broker: half-sent requests and silent connections are cut at their timeout while a bank keeps
//! getting 200s; idle kept-alive connections are closed; past a connection cap a new connection
//! is closed at once while those already open are served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use connector_e2e_tests::raw::{closed_within, exchange};
use connector_e2e_tests::{TestApp, eventually, spawn_app_with, spawn_tls_app_with, unit_body};
use connector_ingress::config::Settings;

const UNIT: &str = "/callbacks/orders/status";
const HALF_A_REQUEST_LINE: &[u8] = b"POST /callbacks/orders/st";
/// The header-read, handshake or idle timeout these tests configure.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond the timeout, for a loaded machine to get round to the close.
const MARGIN: Duration = Duration::from_secs(8);
/// Cut no earlier than this after the client went quiet: the timer cut it, not a refusal.
const NOT_BEFORE: Duration = Duration::from_secs(1);

fn address(app: &TestApp) -> String {
    app.base_url.split("://").nth(1).unwrap().to_owned()
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// The bank sends signed callbacks one after another until `stop`; every answer must be 200.
async fn bank_keeps_sending(app: &TestApp, stop: &AtomicBool) -> usize {
    let mut accepted = 0;
    while !stop.load(Ordering::SeqCst) {
        let reference = format!("PAY-SLOW-{accepted}");
        let response = app
            .post_signed(UNIT, &unit_body(&reference, "PENDING"), &reference)
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        accepted += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted
}

fn slow_settings(settings: &mut Settings) {
    settings.http.header_read_timeout_secs = TIMEOUT.as_secs();
    settings.http.tls_handshake_timeout_secs = TIMEOUT.as_secs();
    // Every client here comes from 127.0.0.1.
    settings.http.max_connections_per_address = 0;
    settings.http.max_concurrent_handshakes = 1000;
}

/// Runs the slow clients `spawn` starts while the bank sends; checks each was cut within the
/// timeout and the margin, not before, and that the bank got its 200s meanwhile.
async fn cut_while_the_bank_is_served(app: &TestApp, mut slow: JoinSet<Option<Duration>>) {
    let stop = AtomicBool::new(false);
    let bank = bank_keeps_sending(app, &stop);
    let clients = async {
        let mut cut = Vec::new();
        while let Some(joined) = slow.join_next().await {
            cut.push(joined.unwrap());
        }
        stop.store(true, Ordering::SeqCst);
        cut
    };
    let (accepted, cut) = tokio::join!(bank, clients);
    assert!(accepted > 0, "the bank was served meanwhile");
    let still_open = cut.iter().filter(|cut| cut.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {} slow clients still open",
        cut.len()
    );
    let early: Vec<_> = cut
        .iter()
        .flatten()
        .filter(|after| **after < NOT_BEFORE)
        .collect();
    assert!(early.is_empty(), "cut before their timeout: {early:?}");
}

#[tokio::test]
async fn hundreds_of_slow_tls_clients_are_cut_at_their_timeout_while_a_bank_is_served() {
    let (app, pki) = spawn_tls_app_with(slow_settings).await;
    let address = address(&app);
    let connector = pki.tls_connector(None);
    // Handshakes a few at a time, so that a busy test machine does not turn them slow.
    let connecting = Arc::new(tokio::sync::Semaphore::new(16));
    let mut slow = JoinSet::new();
    for i in 0..300 {
        let (address, connector, connecting) =
            (address.clone(), connector.clone(), connecting.clone());
        slow.spawn(async move {
            let permit = connecting.acquire_owned().await.unwrap();
            let tcp = TcpStream::connect(&address).await.unwrap();
            if i % 2 == 1 {
                // Connects and never says hello: the handshake timeout cuts it.
                drop(permit);
                let mut tcp = tcp;
                return closed_within(&mut tcp, TIMEOUT + MARGIN).await;
            }
            let mut tls = connector.connect(localhost(), tcp).await.unwrap();
            drop(permit);
            tls.write_all(HALF_A_REQUEST_LINE).await.unwrap();
            tls.flush().await.unwrap();
            closed_within(&mut tls, TIMEOUT + MARGIN).await
        });
    }
    cut_while_the_bank_is_served(&app, slow).await;
}

#[tokio::test]
async fn hundreds_of_slow_plain_http_clients_are_cut_at_the_header_timeout_while_a_bank_is_served()
{
    let app = spawn_app_with(slow_settings).await;
    let address = address(&app);
    let mut slow = JoinSet::new();
    for _ in 0..300 {
        let address = address.clone();
        slow.spawn(async move {
            let mut tcp = TcpStream::connect(&address).await.unwrap();
            tcp.write_all(HALF_A_REQUEST_LINE).await.unwrap();
            closed_within(&mut tcp, TIMEOUT + MARGIN).await
        });
    }
    cut_while_the_bank_is_served(&app, slow).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (app, pki) = spawn_tls_app_with(|settings| {
        settings.http.idle_timeout_secs = TIMEOUT.as_secs();
        // Longer than the test: the idle timer, not the header timer, must close these.
        settings.http.header_read_timeout_secs = 60;
    })
    .await;
    let address = address(&app);
    let connector = pki.tls_connector(None);

    // Kept alive after an answer, then silent.
    let tcp = TcpStream::connect(&address).await.unwrap();
    let mut kept_alive = connector.connect(localhost(), tcp).await.unwrap();
    let status = exchange(&mut kept_alive).await.expect("answered");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let after = closed_within(&mut kept_alive, TIMEOUT + MARGIN)
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(after >= NOT_BEFORE, "closed after {after:?}");

    // A handshake, and never a request.
    let tcp = TcpStream::connect(&address).await.unwrap();
    let mut silent = connector.connect(localhost(), tcp).await.unwrap();
    let after = closed_within(&mut silent, TIMEOUT + MARGIN)
        .await
        .expect("a connection without any request is closed");
    assert!(after >= NOT_BEFORE, "closed after {after:?}");
}

/// The count of `reason` in the refusal metric, from the ops listener.
async fn refused(app: &TestApp, reason: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("connector_ingress_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

type Configure = fn(&mut Settings);

#[tokio::test]
async fn past_a_connection_cap_a_new_connection_is_closed_at_once_and_open_ones_are_served() {
    let caps: [(&str, Configure); 2] = [
        ("max_connections_per_address", |s| {
            s.http.max_connections_per_address = 3;
        }),
        ("max_connections", |s| {
            s.http.max_connections = 3;
            s.http.max_connections_per_address = 0;
        }),
    ];
    for (reason, configure) in caps {
        let app = spawn_app_with(configure).await;
        let address = address(&app);
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut tcp = TcpStream::connect(&address).await.unwrap();
            let status = exchange(&mut tcp).await.expect("admitted and answered");
            assert!(status.starts_with("HTTP/1.1 401"), "{reason}: {status}");
            open.push(tcp);
        }
        let refused_before = refused(&app, reason).await;

        // Closed at once: long before any timeout (header 10 s, idle 60 s).
        let mut one_too_many = TcpStream::connect(&address).await.unwrap();
        assert!(
            closed_within(&mut one_too_many, Duration::from_secs(3))
                .await
                .is_some(),
            "{reason}: the connection past the cap is closed"
        );
        assert!(
            refused(&app, reason).await > refused_before,
            "{reason}: counted"
        );

        // The connections already open are still served.
        for tcp in &mut open {
            let status = exchange(tcp).await.expect("still served");
            assert!(status.starts_with("HTTP/1.1 401"), "{reason}: {status}");
        }

        // A place given back is a place for the next connection.
        drop(open.pop());
        let admitted = eventually(Duration::from_secs(10), || async {
            let mut tcp = TcpStream::connect(&address).await.unwrap();
            exchange(&mut tcp).await.is_some()
        })
        .await;
        assert!(admitted, "{reason}: a new connection once one closed");
    }
}

#[tokio::test]
async fn past_the_handshake_cap_a_new_connection_is_closed_and_a_connected_bank_is_served() {
    let (app, pki) =
        spawn_tls_app_with(|settings| settings.http.max_concurrent_handshakes = 2).await;
    let address = address(&app);
    let bank = pki.tls_connector(Some(&pki.bank_x));
    let stranger = pki.tls_connector(None);

    let tcp = TcpStream::connect(&address).await.unwrap();
    let mut bank_connection = bank.connect(localhost(), tcp).await.unwrap();
    assert!(exchange(&mut bank_connection).await.is_some());
    let refused_before = refused(&app, "max_concurrent_handshakes").await;

    // Two connections that never say hello hold both handshake places.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    let tcp = TcpStream::connect(&address).await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(5), stranger.connect(localhost(), tcp))
        .await
        .expect("refused at once, not left waiting");
    assert!(third.is_err(), "a third handshake is refused");
    assert!(refused(&app, "max_concurrent_handshakes").await > refused_before);

    // The bank, connected before, is served throughout.
    let status = exchange(&mut bank_connection).await.expect("still served");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");

    // Once the silent ones leave, handshakes are admitted again.
    drop(silent);
    let admitted = eventually(Duration::from_secs(10), || async {
        let tcp = TcpStream::connect(&address).await.unwrap();
        match stranger.connect(localhost(), tcp).await {
            Ok(mut tls) => exchange(&mut tls).await.is_some(),
            Err(_) => false,
        }
    })
    .await;
    assert!(admitted, "handshakes admitted again");
}

#[tokio::test]
async fn a_bank_whose_pooled_connection_was_closed_for_idleness_is_served_on_a_new_one() {
    let (app, _pki) =
        spawn_tls_app_with(|settings| settings.http.idle_timeout_secs = TIMEOUT.as_secs()).await;
    for round in 0..2 {
        let reference = format!("PAY-IDLE-{round}");
        let response = app
            .post_signed(UNIT, &unit_body(&reference, "PENDING"), &reference)
            .await;
        assert_eq!(response.status(), 200, "round {round}");
        // The connection the client keeps in its pool is closed meanwhile, gracefully: the
        // next request must not fail on it.
        tokio::time::sleep(TIMEOUT + Duration::from_secs(1)).await;
    }
}
