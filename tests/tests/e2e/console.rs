//! The operator console over HTTP, as a browser sends it (cookies, forms, CSRF tokens taken
//! from the pages), on a real pipeline: sign-in and its refusals, roles, CSRF and cross-site
//! refusals, four eyes, dead-letter replay by filter, search, the per-bank view, and the audit
//! trail of all of it. (`console_browser` drives the same pages from Chromium.)

use reqwest::StatusCode;
use uuid::Uuid;

use connector_e2e_tests::console::{PASSWORD, Session, TestConsole, spawn_console};
use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline, worker_settings};
use connector_e2e_tests::unit_body;
use connector_schema::{IntakeEnvelope, IntakeKind};

const UNIT: &str = "/callbacks/orders/status";

async fn post(p: &Pipeline, body: &str, key: &str) {
    let response = p.app.post_signed(UNIT, body, key).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A FINAL_STATUS_CONFLICT held in quarantine; its message id.
async fn quarantined_conflict(p: &Pipeline, reference: &str) -> Uuid {
    post(
        p,
        &unit_body(reference, "SUCCESS"),
        &format!("{reference}-s"),
    )
    .await;
    post(
        p,
        &unit_body(reference, "FAILED"),
        &format!("{reference}-f"),
    )
    .await;
    p.apply_all().await;
    held(p, "FINAL_STATUS_CONFLICT").await
}

/// An IDEMPOTENCY_KEY_REUSED held in quarantine whose cause has gone, as it goes when the
/// lifecycle purges the key at the end of its retention: released, it applies.
async fn releasable(p: &Pipeline, reference: &str) -> Uuid {
    let key = format!("{reference}-k");
    post(
        p,
        &unit_body(&format!("{reference}-first"), "SUCCESS"),
        &key,
    )
    .await;
    post(p, &unit_body(reference, "SUCCESS"), &key).await;
    p.apply_all().await;
    let id = held(p, "IDEMPOTENCY_KEY_REUSED").await;
    sqlx::query("DELETE FROM idempotency_keys WHERE idempotency_key = $1")
        .bind(&key)
        .execute(&p.db.pool)
        .await
        .unwrap();
    id
}

async fn held(p: &Pipeline, reason: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT message_id FROM quarantined_messages WHERE reason = $1 AND state = 'held'",
    )
    .bind(reason)
    .fetch_one(&p.db.pool)
    .await
    .unwrap()
}

async fn state_of(p: &Pipeline, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT state, resolution_note FROM quarantined_messages WHERE message_id = $1")
        .bind(id)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

/// The console's audit trail: (account, action, outcome), oldest first.
async fn audit(p: &Pipeline) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT account, action, outcome FROM console_audit ORDER BY id")
        .fetch_all(&p.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_is_checked_refused_and_audited() {
    let p = spawn_pipeline().await;
    let console = spawn_console(&p, false).await;

    let sign_in_page = console.get_anonymous("/login").await;
    let header = |name: &str| sign_in_page.headers[name].to_str().unwrap().to_owned();
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "no-store");
    let anonymous = console.get_anonymous("/quarantine").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location.as_deref(), Some("/login"));

    let (wrong, cookie) = console.try_sign_in("olga", "not the password").await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(
        wrong.body.contains("unknown account or wrong password"),
        "{}",
        wrong.body
    );
    assert!(cookie.is_none(), "no session for a wrong password");
    let (unknown, _) = console.try_sign_in("mallory", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert!(unknown.body.contains("unknown account or wrong password"));

    let olga = console.sign_in("olga").await;
    assert!(olga.cookie.starts_with("__Host-console-session="));
    let signed_out = olga.post("/logout", &[]).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    let after = olga.get("/quarantine").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie signs nobody in"
    );

    // Guessing is limited per account: after five failures in a minute even the right password
    // is refused unchecked; successful sign-ins are not counted, and other accounts go on.
    for _ in 0..5 {
        let (answer, _) = console.try_sign_in("vera", "guess").await;
        assert!(answer.body.contains("unknown account or wrong password"));
    }
    let (limited, cookie) = console.try_sign_in("vera", PASSWORD).await;
    assert!(
        limited.body.contains("too many sign-in attempts"),
        "{}",
        limited.body
    );
    assert!(cookie.is_none());
    for _ in 0..6 {
        console.sign_in("abe").await;
    }
    let trail = audit(&p).await;
    assert!(trail.contains(&(
        "olga".into(),
        "sign-in".into(),
        "refused: unknown account or wrong password".into()
    )));
    assert!(trail.contains(&("olga".into(), "sign-in".into(), "ok".into())));
    assert!(trail.contains(&("olga".into(), "sign-out".into(), "ok".into())));
    assert!(trail.iter().any(|(a, _, _)| a == "mallory"));
    // The session table keeps hashes of tokens, never the cookie's token.
    let token = olga.cookie.split_once('=').unwrap().1.to_owned();
    let stored = p
        .db
        .count(&format!(
            "SELECT count(*) FROM console_sessions WHERE encode(token_sha256, 'escape') LIKE '%{token}%'"
        ))
        .await;
    assert_eq!(stored, 0);
    p.teardown().await;
}

#[tokio::test]
async fn a_viewer_reads_everything_and_acts_on_nothing() {
    let p = spawn_pipeline().await;
    let id = quarantined_conflict(&p, "PAY-CV1").await;
    let console = spawn_console(&p, false).await;
    let vera = console.sign_in("vera").await;

    // The filter form as a browser sends it: every field, empty ones included.
    let filtered = vera
        .get("/quarantine?reason=FINAL_STATUS_CONFLICT&source=corelink&client=&state=held&older_than_minutes=")
        .await;
    assert_eq!(filtered.status, StatusCode::OK, "{}", filtered.body);
    assert!(filtered.body.contains(&id.to_string()));
    let later = vera.get("/quarantine?older_than_minutes=60").await;
    assert!(
        !later.body.contains(&id.to_string()),
        "held for less than an hour"
    );
    let bad = vera.get("/quarantine?older_than_minutes=soon").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let list = vera.get("/quarantine").await;
    assert!(list.body.contains(&id.to_string()), "{}", list.body);
    assert!(list.body.contains("FINAL_STATUS_CONFLICT"));
    let page = vera.get(&format!("/quarantine/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("can read, not act"), "{}", page.body);
    assert!(!page.body.contains("release-form"));

    for action in ["release", "discard"] {
        let refused = vera
            .post(
                &format!("/quarantine/{id}/{action}"),
                &[("comment", "trying")],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{action}");
        assert!(
            refused.body.contains("needs the role operator"),
            "{}",
            refused.body
        );
    }
    let replay = vera
        .post(
            "/dead-letters/replay",
            &[("queue", "intake"), ("comment", "x")],
        )
        .await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN);
    assert_eq!(state_of(&p, id).await.0, "held");
    let refusals = audit(&p)
        .await
        .into_iter()
        .filter(|(account, _, outcome)| account == "vera" && outcome.starts_with("refused"))
        .count();
    assert_eq!(refusals, 3, "every refused action is audited");

    // Readable pages of every kind.
    for path in [
        "/requests",
        "/dead-letters",
        "/search?q=PAY-CV1",
        "/banks",
        "/audit",
    ] {
        let page = vera.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    }
    assert!(
        vera.get("/search?q=PAY-CV1")
            .await
            .body
            .contains("order PAY-CV1: SUCCESS")
    );
    let banks = vera.get("/banks").await.body;
    assert!(
        banks.contains("BANK_X") && banks.contains("FINAL_STATUS_CONFLICT"),
        "{banks}"
    );
    p.teardown().await;
}

#[tokio::test]
async fn actions_without_the_token_or_from_another_site_are_refused() {
    let p = spawn_pipeline().await;
    let id = quarantined_conflict(&p, "PAY-CSRF").await;
    let console = spawn_console(&p, false).await;
    let olga = console.sign_in("olga").await;
    let path = format!("/quarantine/{id}/discard");
    let comment = ("comment", "a bank error, confirmed by phone");

    let missing = olga.post_exactly(&path, &[comment], &[]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("CSRF"), "{}", missing.body);
    let wrong = olga
        .post_exactly(&path, &[comment, ("csrf", "forged")], &[])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let another = console.sign_in("abe").await;
    let other_sessions = olga
        .post_exactly(&path, &[comment, ("csrf", &another.csrf)], &[])
        .await;
    assert_eq!(
        other_sessions.status,
        StatusCode::FORBIDDEN,
        "a token is its session's only"
    );
    let token = olga.csrf.as_str();
    let cross_origin = olga
        .post_exactly(
            &path,
            &[comment, ("csrf", token)],
            &[("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(cross_origin.status, StatusCode::FORBIDDEN);
    let cross_site = olga
        .post_exactly(
            &path,
            &[comment, ("csrf", token)],
            &[("Sec-Fetch-Site", "cross-site")],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let no_comment = olga.post(&path, &[("comment", "  ")]).await;
    assert_eq!(no_comment.status, StatusCode::BAD_REQUEST);
    assert!(no_comment.body.contains("needs a comment"));
    assert_eq!(
        state_of(&p, id).await.0,
        "held",
        "nothing refused touched it"
    );

    let done = olga.post(&path, &[comment]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let (state, note) = state_of(&p, id).await;
    assert_eq!(state, "discarded");
    assert_eq!(
        note.as_deref(),
        Some("a bank error, confirmed by phone (console: olga)")
    );
    let page = olga.get(done.location.as_deref().unwrap()).await;
    assert!(page.body.contains("Discarded"), "{}", page.body);
    assert!(audit(&p).await.contains(&(
        "olga".into(),
        "discard".into(),
        format!("ok: discarded {id}")
    )));
    p.teardown().await;
}

#[tokio::test]
async fn with_four_eyes_a_release_waits_for_another_approver() {
    let p = spawn_pipeline().await;
    let id = releasable(&p, "PAY-4EYES").await;
    let console = spawn_console(&p, true).await;
    let (olga, abe, amy) = (
        console.sign_in("olga").await,
        console.sign_in("abe").await,
        console.sign_in("amy").await,
    );
    let asked = olga
        .post(
            &format!("/quarantine/{id}/release"),
            &[("comment", "key expired, bank confirmed")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.body);
    assert_eq!(
        state_of(&p, id).await.0,
        "held",
        "nothing happens before approval"
    );
    let again = abe
        .post(&format!("/quarantine/{id}/discard"), &[("comment", "no")])
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "one open request per message"
    );
    assert!(again.body.contains("already pending"));

    let request: i64 = sqlx::query_scalar("SELECT id FROM console_requests WHERE message_id = $1")
        .bind(id)
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    let confirm = format!("/requests/{request}/confirm");
    let by_operator = olga.post(&confirm, &[]).await;
    assert_eq!(
        by_operator.status,
        StatusCode::FORBIDDEN,
        "an operator cannot confirm"
    );
    let page = olga.get(&format!("/quarantine/{id}")).await.body;
    assert!(
        page.contains("requested by") && !page.contains("confirm-form"),
        "{page}"
    );

    let confirmed = abe.post(&confirm, &[("comment", "checked")]).await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    let (state, note) = state_of(&p, id).await;
    assert_eq!(state, "released");
    assert_eq!(
        note.as_deref(),
        Some("key expired, bank confirmed (console: requested by olga, confirmed by abe)")
    );
    let twice = amy.post(&confirm, &[]).await;
    assert_eq!(
        twice.status,
        StatusCode::NOT_FOUND,
        "a request is confirmed once"
    );
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(
        p.order_status("PAY-4EYES").await.as_deref(),
        Some("SUCCESS")
    );
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert!(
        events
            .iter()
            .any(|(e, _, _)| e.reference == "PAY-4EYES" && e.event_type == "order.succeeded"),
        "the released order's ledger event"
    );

    // An approver's own request needs another approver.
    let other = quarantined_conflict(&p, "PAY-4EYES-2").await;
    amy.post(
        &format!("/quarantine/{other}/discard"),
        &[("comment", "duplicate FAILED")],
    )
    .await;
    let own: i64 = sqlx::query_scalar(
        "SELECT id FROM console_requests WHERE message_id = $1 AND state = 'pending'",
    )
    .bind(other)
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    let self_confirm = amy.post(&format!("/requests/{own}/confirm"), &[]).await;
    assert_eq!(self_confirm.status, StatusCode::FORBIDDEN);
    assert!(
        self_confirm.body.contains("four eyes"),
        "{}",
        self_confirm.body
    );
    assert_eq!(state_of(&p, other).await.0, "held");
    let withdrawn = amy.post(&format!("/requests/{own}/withdraw"), &[]).await;
    assert_eq!(withdrawn.status, StatusCode::SEE_OTHER);

    let trail = audit(&p).await;
    let actions: Vec<&str> = trail.iter().map(|(_, action, _)| action.as_str()).collect();
    for expected in [
        "request-release",
        "confirm-release",
        "release",
        "request-discard",
        "confirm-discard",
        "withdraw",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    p.teardown().await;
}

#[tokio::test]
async fn dead_letters_are_inspected_and_replayed_by_filter() {
    let p = spawn_pipeline().await;
    let first = p.dead_letter_accepted("PAY-DL1").await;
    p.dead_letter_accepted("PAY-DL2").await;
    let dlq = p.app.topology.intake_dead_letter_queue.clone();
    assert!(p.depth_reaches(&dlq, 2).await);
    let console = spawn_console(&p, false).await;
    let olga = console.sign_in("olga").await;

    let listed = olga.get("/dead-letters?queue=intake").await.body;
    assert!(
        listed.contains(&first) && listed.contains("rejected"),
        "{listed}"
    );
    assert!(listed.contains("PAY-DL1"), "the body can be inspected");
    assert!(p.depth_reaches(&dlq, 2).await, "looking removes nothing");

    let none = olga
        .post(
            "/dead-letters/replay",
            &[
                ("queue", "intake"),
                ("routing_key", "corelink.status.batch"),
                ("comment", "batches"),
            ],
        )
        .await;
    assert!(none.body.contains("replayed 0 message(s)"), "{}", none.body);
    let future = olga
        .post(
            "/dead-letters/replay",
            &[
                ("queue", "intake"),
                ("since", "2999-01-01T00:00"),
                ("comment", "later"),
            ],
        )
        .await;
    assert!(
        future.body.contains("replayed 0 message(s)"),
        "{}",
        future.body
    );
    let bad_time = olga
        .post(
            "/dead-letters/replay",
            &[
                ("queue", "intake"),
                ("since", "yesterday"),
                ("comment", "x"),
            ],
        )
        .await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    assert!(p.depth_reaches(&dlq, 2).await);

    let one = olga
        .post(
            "/dead-letters/replay",
            &[
                ("queue", "intake"),
                ("message_id", &first),
                ("comment", "database was down"),
            ],
        )
        .await;
    assert!(one.body.contains("replayed 1 message(s)"), "{}", one.body);
    assert!(p.depth_reaches(&dlq, 1).await, "the other stays");
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.order_status("PAY-DL1").await.as_deref(), Some("SUCCESS"));
    assert_eq!(p.order_status("PAY-DL2").await, None);

    let window = olga
        .post(
            "/dead-letters/replay",
            &[
                ("queue", "intake"),
                ("since", "2000-01-01T00:00"),
                ("routing_key", "corelink.status"),
                ("comment", "the rest"),
            ],
        )
        .await;
    assert!(
        window.body.contains("replayed 1 message(s)"),
        "{}",
        window.body
    );
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.order_status("PAY-DL2").await.as_deref(), Some("SUCCESS"));
    let replays = audit(&p)
        .await
        .into_iter()
        .filter(|(_, action, _)| action == "replay")
        .count();
    assert_eq!(replays, 5, "every replay, with its outcome");
    p.teardown().await;
}

/// A BNC body holds a card token and an account number: published to the intake exchange by a
/// side door (no ingress seal), it is dead-lettered as forged; the console shows it redacted,
/// and a replay of everything leaves it where it is.
#[tokio::test]
async fn a_forged_bnc_dead_letter_is_shown_redacted_and_never_replayed() {
    const TOKEN: &str = "c9fead3d790f41d4819456ebc13f2910";
    const ACCOUNT_NO: &str = "585945******2348";
    let p = spawn_pipeline().await;
    let body = format!(
        r#"{{"partnerReferenceNo": "BEL-F1", "accountNo": "{ACCOUNT_NO}", "additionalInfo": {{"token": "{TOKEN}"}}}}"#
    );
    let envelope = IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: IntakeKind::BncAccountBinding,
        received_at: time::OffsetDateTime::now_utc(),
        client_id: Some("BNC_PARTNER_1".into()),
        request_path: Some("/callbacks/bnc/account-binding".into()),
        headers: vec![],
        body: body.clone().into_bytes().into(),
        verification: None,
    };
    let forged_id = envelope.message_id.to_string();
    // Envelope headers as an ingress writes them, but no ingress seal.
    connector_workers::admin::publish_confirmed(
        &p.relay_channel,
        &p.app.topology.intake_exchange,
        "bnc.account_binding",
        body.as_bytes(),
        envelope.amqp_properties(),
    )
    .await
    .unwrap();
    p.apply_all().await;
    let dlq = p.app.topology.intake_dead_letter_queue.clone();
    assert!(p.depth_reaches(&dlq, 1).await, "dead-lettered as forged");
    let console = spawn_console(&p, false).await;
    let olga = console.sign_in("olga").await;

    let listed = olga.get("/dead-letters?queue=intake").await.body;
    assert!(
        listed.contains(&forged_id) && listed.contains("BEL-F1"),
        "{listed}"
    );
    assert!(listed.contains("redacted"), "{listed}");
    assert!(
        !listed.contains(TOKEN) && !listed.contains(ACCOUNT_NO),
        "{listed}"
    );

    let replay = olga
        .post(
            "/dead-letters/replay",
            &[("queue", "intake"), ("comment", "all of them")],
        )
        .await;
    assert!(
        replay.body.contains("replayed 0 message(s)"),
        "{}",
        replay.body
    );
    assert!(
        replay.body.contains(&format!("{forged_id} kept")),
        "{}",
        replay.body
    );
    assert!(
        p.depth_reaches(&dlq, 1).await,
        "the forged message stays dead-lettered"
    );
    let audit_text: Vec<String> =
        sqlx::query_scalar("SELECT concat_ws(' ', target, comment, outcome) FROM console_audit")
            .fetch_all(&p.db.pool)
            .await
            .unwrap();
    assert!(
        audit_text
            .iter()
            .all(|line| !line.contains(TOKEN) && !line.contains(ACCOUNT_NO))
    );
    p.teardown().await;
}

#[tokio::test]
async fn the_workers_process_serves_the_console_only_when_configured() {
    let p = spawn_pipeline().await;
    let mut settings = worker_settings(&p.app, &p.db.url);
    settings.mode = connector_workers::config::Mode::Development;
    settings.ops.listen = "127.0.0.1:0".parse().unwrap();
    let off = connector_workers::startup::Workers::build(settings.clone(), vec![])
        .await
        .unwrap();
    assert_eq!(off.console_addr(), None, "off by default");
    drop(off);

    settings.console = connector_workers::console::ConsoleSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        accounts: vec![connector_workers::console::ConsoleAccount {
            name: "olga".into(),
            role: connector_workers::console::ConsoleRole::Operator,
            password_hash: connector_workers::console::hash_password(PASSWORD).unwrap(),
        }],
        ..Default::default()
    };
    settings.validate().unwrap();
    let workers = connector_workers::startup::Workers::build(settings, vec![])
        .await
        .unwrap();
    let addr = workers.console_addr().expect("the console's address");
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let run = tokio::spawn(workers.run_until_stopped(async move { stopped.cancelled().await }));
    let console = TestConsole::at(&format!("http://{addr}"));
    assert!(
        connector_e2e_tests::eventually(std::time::Duration::from_secs(10), || async {
            reqwest::get(format!("http://{addr}/login")).await.is_ok()
        })
        .await
    );
    let olga: Session = console.sign_in("olga").await;
    assert_eq!(olga.get("/banks").await.status, StatusCode::OK);
    stop.cancel();
    run.await.unwrap().unwrap();
    p.teardown().await;
}
