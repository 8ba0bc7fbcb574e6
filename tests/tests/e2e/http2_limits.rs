//! The edge's HTTP/2 limits (DESIGN.md §2.8), over the real TLS listener (ALPN h2, a bank's
//! client certificate) and the real broker: streams past `http.http2_max_concurrent_streams`
//! are refused while a bank is served; a peer that stops answering pings is dropped; an idle
//! HTTP/2 connection gets a GOAWAY and is closed, and one with a request in flight, or one
//! sent as the GOAWAY crossed it, is not cut.
//! The client is the `h2` crate over a [`Tap`], so the test sees every frame and decides when
//! the client reads and whether it answers at all.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use connector_e2e_tests::tap::{Frame, NO_ERROR, REFUSED_STREAM, Tap, frames};
use connector_e2e_tests::{TestApp, TestPki, eventually, spawn_tls_app_with, unit_body};

const UNIT: &str = "/callbacks/orders/status";
const CAP: usize = 4;
/// The idle or keep-alive timeouts these tests configure.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond a timeout, for a loaded machine to get round to the close.
const MARGIN: Duration = Duration::from_secs(8);
/// Closed no earlier than this: a timer closed it, not a refusal.
const NOT_BEFORE: Duration = Duration::from_secs(1);
/// Longer than any test here: a limit under test must not be beaten by another.
const LONG_SECS: u64 = 120;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// One HTTP/2 connection of a bank: the client, its tap and the task that drives it.
struct H2 {
    send: SendRequest<Bytes>,
    tap: Tap<Tls>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

/// Connects with BANK_X's certificate over HTTP/2; `reads_open` false holds back everything
/// the server sends (its SETTINGS first) until the test opens reads.
async fn connect(app: &TestApp, pki: &TestPki, reads_open: bool) -> H2 {
    let address = app.base_url.split("://").nth(1).unwrap();
    let tcp = TcpStream::connect(address).await.unwrap();
    let tls = pki
        .h2_connector(Some(&pki.bank_x))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let tap = Tap::new(tls);
    tap.open_reads(reads_open);
    let (send, connection) = h2::client::handshake(tap.clone()).await.unwrap();
    H2 {
        send,
        tap,
        driver: tokio::spawn(connection),
    }
}

/// A signed unit callback for `reference`, its headers and its body apart.
fn signed(app: &TestApp, reference: &str) -> (http::Request<()>, Bytes) {
    let body = unit_body(reference, "PENDING");
    let signed = app.bank.sign(UNIT, body.as_bytes(), reference);
    let mut request = http::Request::post(format!("https://localhost{UNIT}"))
        .header("content-length", body.len());
    for (name, value) in signed.pairs() {
        request = request.header(name, value);
    }
    (request.body(()).unwrap(), Bytes::from(body))
}

/// A request answered at once without a body (a Paysafe webhook without a signature: 401);
/// its status.
async fn answered_at_once(h2: &mut H2) -> u16 {
    let send = h2.send.clone().ready().await.unwrap();
    h2.send = send;
    let request = http::Request::post("https://localhost/webhooks/paysafe")
        .body(())
        .unwrap();
    let (response, _) = h2.send.send_request(request, true).unwrap();
    response.await.unwrap().status().as_u16()
}

/// Sends `body` on a stream whose headers went out, and waits for the answer.
async fn finish(
    response: h2::client::ResponseFuture,
    mut body: h2::SendStream<Bytes>,
    bytes: Bytes,
) -> u16 {
    body.send_data(bytes, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("answered")
        .unwrap();
    response.status().as_u16()
}

fn count(frames: &[Frame], kind: u8) -> usize {
    frames.iter().filter(|frame| frame.kind == kind).count()
}

/// PINGs, or their acknowledgements.
fn pings(frames: &[Frame], ack: bool) -> usize {
    frames
        .iter()
        .filter(|frame| frame.kind == Frame::PING && (frame.flags & Frame::ACK != 0) == ack)
        .count()
}

#[tokio::test]
async fn past_the_stream_cap_new_streams_are_refused_and_a_bank_on_another_connection_is_served() {
    let (app, pki) = spawn_tls_app_with(|settings| {
        settings.http.http2_max_concurrent_streams = CAP as u32;
        // Stalled bodies must hold their streams for the whole test.
        settings.http.body_timeout_secs = LONG_SECS;
        settings.http.idle_timeout_secs = LONG_SECS;
    })
    .await;
    // Until the server's SETTINGS are read the client knows no cap, and opens every stream:
    // what a client that ignores the cap does.
    let mut h2 = connect(&app, &pki, false).await;
    let mut streams = Vec::new();
    for i in 0..CAP + 2 {
        let (request, body) = signed(&app, &format!("PAY-H2-CAP-{i}"));
        let (response, sender) = h2.send.send_request(request, false).unwrap();
        streams.push((response, sender, body));
    }
    let all_sent = eventually(Duration::from_secs(10), || async {
        count(&h2.tap.sent(), Frame::HEADERS) == CAP + 2
    })
    .await;
    assert!(all_sent, "the client sent every stream's headers");
    h2.tap.open_reads(true);

    // The streams past the cap are refused, and the client learns the cap.
    for (i, (response, _, _)) in streams.drain(CAP..).enumerate() {
        let refused = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answered")
            .expect_err("refused");
        assert_eq!(refused.reason(), Some(h2::Reason::REFUSED_STREAM), "{i}");
    }
    let received = h2.tap.received();
    let cap = received
        .iter()
        .find_map(|frame| frame.setting(Frame::MAX_CONCURRENT_STREAMS));
    assert_eq!(cap, Some(CAP as u32), "the server's SETTINGS");
    assert_eq!(h2.send.current_max_send_streams(), CAP);
    let mut refused: Vec<u32> = received
        .iter()
        .filter(|frame| frame.error_code() == Some(REFUSED_STREAM))
        .map(|frame| frame.stream)
        .collect();
    refused.sort_unstable();
    // Client streams are odd: the 5th and 6th are 9 and 11.
    assert_eq!(refused, [9, 11], "only the streams past the cap");
    let reset_or_answered = received
        .iter()
        .filter(|frame| frame.stream != 0 && frame.stream < 9)
        .count();
    assert_eq!(reset_or_answered, 0, "the streams under the cap are held");

    // A bank on another connection is served meanwhile.
    let response = app
        .post_signed(UNIT, &unit_body("PAY-H2-OTHER", "PENDING"), "PAY-H2-OTHER")
        .await;
    assert_eq!(response.status(), 200);

    // The streams under the cap were held, not dropped: each is served once its body comes,
    // and the place it leaves takes a new stream on the same connection.
    let (response, sender, body) = streams.remove(0);
    assert_eq!(finish(response, sender, body).await, 200);
    assert_eq!(answered_at_once(&mut h2).await, 401);
    for (response, sender, body) in streams {
        assert_eq!(finish(response, sender, body).await, 200);
    }
    assert!(!h2.tap.closed_by_peer());
    h2.driver.abort();
}

/// Reads `socket` until the server closes it, at most `within`: how long that took, and what
/// it sent meanwhile.
async fn read_until_closed(socket: &mut Tls, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(within, read).await.is_ok();
    closed.then(|| (started.elapsed(), received))
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_and_one_that_answers_is_kept() {
    let (app, pki) = spawn_tls_app_with(|settings| {
        settings.http.http2_keep_alive_interval_secs = TIMEOUT.as_secs();
        settings.http.http2_keep_alive_timeout_secs = TIMEOUT.as_secs();
        // The idle timer must not be what closes either connection.
        settings.http.idle_timeout_secs = LONG_SECS;
    })
    .await;
    let started = Instant::now();
    let mut live = connect(&app, &pki, true).await;
    let mut dead = connect(&app, &pki, true).await;
    assert_eq!(answered_at_once(&mut live).await, 401);
    assert_eq!(answered_at_once(&mut dead).await, 401);

    // The h2 client answers pings only while its connection is polled: stop it, and take the
    // socket back so nothing answers.
    dead.driver.abort();
    let _ = (&mut dead.driver).await;
    let mut socket = dead.tap.detach().expect("still attached");
    let bound = TIMEOUT + TIMEOUT + MARGIN;
    let (after, unanswered) = read_until_closed(&mut socket, bound)
        .await
        .expect("a peer that stops answering pings is dropped");
    assert!(after >= NOT_BEFORE, "dropped after {after:?}");
    let unanswered = frames(&unanswered);
    assert!(
        pings(&unanswered, false) > 0,
        "the server pinged before dropping it: {unanswered:?}"
    );

    // The peer that answers stays, pinged and answering, past several intervals and timeouts.
    tokio::time::sleep_until(started + (TIMEOUT + TIMEOUT) * 3).await;
    assert!(!live.tap.closed_by_peer(), "a live peer is kept");
    assert!(pings(&live.tap.received(), false) >= 2);
    assert!(pings(&live.tap.sent(), true) >= 2);
    assert_eq!(answered_at_once(&mut live).await, 401);
    live.driver.abort();
}

/// Waits until the server tells `h2`'s connection it is closed as idle (a GOAWAY, no error)
/// and closes it.
async fn closed_as_idle(h2: &mut H2) {
    let started = Instant::now();
    let bound = TIMEOUT + MARGIN;
    let told = eventually(bound, || async {
        count(&h2.tap.received(), Frame::GOAWAY) > 0
    })
    .await;
    assert!(told, "an idle HTTP/2 connection gets a GOAWAY");
    // Told, the client may end on its own before it reads the close: then read it here.
    let ended = eventually(bound, || async {
        h2.tap.closed_by_peer() || h2.driver.is_finished()
    })
    .await;
    assert!(ended, "the connection ends after its GOAWAY");
    if !h2.tap.closed_by_peer() {
        let driven = (&mut h2.driver).await.unwrap();
        assert!(
            driven.is_ok(),
            "the client saw a graceful close: {driven:?}"
        );
        let mut socket = h2.tap.detach().expect("still attached");
        let closed = read_until_closed(&mut socket, bound).await;
        assert!(closed.is_some(), "the server closes the connection");
    }
    let after = started.elapsed();
    assert!(after >= NOT_BEFORE, "closed after {after:?}");
    let goaway: Vec<_> = h2
        .tap
        .received()
        .into_iter()
        .filter(|frame| frame.kind == Frame::GOAWAY)
        .collect();
    assert!(
        goaway
            .iter()
            .all(|frame| frame.error_code() == Some(NO_ERROR)),
        "gracefully: {goaway:?}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_one_with_a_request_in_flight_is_not_cut() {
    let (app, pki) = spawn_tls_app_with(|settings| {
        settings.http.idle_timeout_secs = TIMEOUT.as_secs();
        // Neither keep-alive nor the body timeout may act within the test.
        settings.http.http2_keep_alive_interval_secs = LONG_SECS;
        settings.http.body_timeout_secs = LONG_SECS;
    })
    .await;
    let mut idle = connect(&app, &pki, true).await;
    let mut busy = connect(&app, &pki, true).await;
    assert_eq!(answered_at_once(&mut idle).await, 401);

    // A request whose body is held for two idle timeouts.
    let (request, body) = signed(&app, "PAY-H2-IN-FLIGHT");
    let (response, sender) = busy.send.send_request(request, false).unwrap();

    closed_as_idle(&mut idle).await;

    tokio::time::sleep(TIMEOUT * 2).await;
    assert!(!busy.tap.closed_by_peer(), "not cut mid-request");
    let goaway = count(&busy.tap.received(), Frame::GOAWAY);
    assert_eq!(goaway, 0, "no GOAWAY while a request is in flight");
    assert_eq!(finish(response, sender, body).await, 200);

    // Answered, it is idle in turn.
    closed_as_idle(&mut busy).await;
}

#[tokio::test]
async fn a_request_that_crosses_the_idle_goaway_is_served_not_cut() {
    let (app, pki) = spawn_tls_app_with(|settings| {
        settings.http.idle_timeout_secs = TIMEOUT.as_secs();
        settings.http.http2_keep_alive_interval_secs = LONG_SECS;
        settings.http.body_timeout_secs = LONG_SECS;
    })
    .await;
    let mut h2 = connect(&app, &pki, true).await;
    assert_eq!(answered_at_once(&mut h2).await, 401);

    // The client stops seeing what the server sends, so it does not learn of the GOAWAY and
    // sends a request after it: the race of a pooled connection closed as idle. The server's
    // first GOAWAY names no last stream yet, so it takes the request.
    h2.tap.open_reads(false);
    let told = eventually(TIMEOUT + MARGIN, || async {
        count(&h2.tap.received(), Frame::GOAWAY) > 0
    })
    .await;
    assert!(told, "the idle connection is told to go away");
    let (request, body) = signed(&app, "PAY-H2-CROSSING");
    let (response, sender) = h2.send.send_request(request, false).unwrap();
    let sent = eventually(Duration::from_secs(10), || async {
        count(&h2.tap.sent(), Frame::HEADERS) == 2
    })
    .await;
    assert!(sent, "the request went out after the GOAWAY");

    // Its body comes well after the grace an idle connection has to close.
    tokio::time::sleep(TIMEOUT * 2).await;
    assert!(!h2.tap.closed_by_peer(), "not cut mid-request");
    h2.tap.open_reads(true);
    assert_eq!(finish(response, sender, body).await, 200);
    let ended = eventually(TIMEOUT + MARGIN, || async {
        h2.tap.closed_by_peer() || h2.driver.is_finished()
    })
    .await;
    assert!(ended, "then the connection ends");
}
