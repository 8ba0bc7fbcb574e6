//! The simulated GET API and the control API, over real HTTP: Basic auth, progressions, faults
//! and their recovery, delays and concurrency counting, 404s.

use std::time::{Duration, Instant};

use connector_schema::paysafe::{
    ERROR_CODE_INTERNAL, ERROR_CODE_INVALID_CREDENTIALS, ERROR_CODE_NOT_FOUND,
    ERROR_CODE_RATE_LIMITED, PaysafeErrorBody, PaysafeStatus, PaysafeTransaction, TrackedKind,
};
use paysafe_sim::{Fault, ItemScript, SimConfig, SimHandle, Step};
use reqwest::StatusCode;
use serde_json::{Value, json};

const USER: &str = "merchant-api";
const PASSWORD: &str = "B-qa2-0-5f9a-s3cr3t";

async fn sim() -> SimHandle {
    paysafe_sim::spawn(SimConfig::new(USER, PASSWORD))
        .await
        .expect("simulator starts")
}

fn payment(id: &str, steps: Vec<Step>) -> ItemScript {
    ItemScript::new(TrackedKind::Payment, id, "mref-1", 546, "CAD", steps)
}

fn credit(id: &str, steps: Vec<Step>) -> ItemScript {
    ItemScript::new(
        TrackedKind::StandaloneCredit,
        id,
        "mref-2",
        500,
        "CAD",
        steps,
    )
}

/// GET `kind`'s `id` with the right credentials.
async fn poll(
    client: &reqwest::Client,
    sim: &SimHandle,
    kind: TrackedKind,
    id: &str,
) -> reqwest::Response {
    client
        .get(format!("{}{}", sim.base_url(), kind.api_path(id)))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("the simulator answers")
}

async fn status_of(
    client: &reqwest::Client,
    sim: &SimHandle,
    kind: TrackedKind,
    id: &str,
) -> String {
    let response = poll(client, sim, kind, id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let transaction: PaysafeTransaction = response.json().await.expect("a transaction");
    assert_eq!(transaction.id, id);
    transaction.status
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String, Option<String>) {
    let status = response.status();
    let header = response
        .headers()
        .get("x-application-status-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: PaysafeErrorBody = response.json().await.expect("Paysafe's error body");
    assert_eq!(header.as_deref(), Some(body.error.code.as_str()));
    (status, body.error.code, Some(body.error.message))
}

#[tokio::test]
async fn basic_auth_is_required() {
    let sim = sim().await;
    sim.set_script(payment("pay-1", vec![Step::new("PROCESSING", None)]))
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/paymenthub/v1/payments/pay-1", sim.base_url());

    let ok = client
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let transaction: PaysafeTransaction = ok.json().await.unwrap();
    assert_eq!(transaction.parsed_status(), Some(PaysafeStatus::Processing));
    assert_eq!(transaction.merchant_ref_num.as_deref(), Some("mref-1"));
    assert_eq!(transaction.amount, Some(546));
    assert_eq!(transaction.currency_code.as_deref(), Some("CAD"));
    assert!(transaction.status_changed_at().is_some());

    let wrong_password = client.get(&url).basic_auth(USER, Some("nope")).send();
    let wrong_user = client.get(&url).basic_auth("other", Some(PASSWORD)).send();
    let missing = client.get(&url).send();
    let bearer = client.get(&url).bearer_auth(PASSWORD).send();
    for request in [wrong_password, wrong_user, missing, bearer] {
        let response = request.await.unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        let (status, code, message) = error_of(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(code, ERROR_CODE_INVALID_CREDENTIALS);
        // The answer never echoes the credentials.
        assert!(!message.unwrap_or_default().contains(PASSWORD));
    }
    // Refused GETs are not polls of the item.
    assert_eq!(sim.poll_count("pay-1"), 1);
    assert_eq!(sim.global_stats().unauthorized, 4);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn progression_after_n_polls_and_last_step_sticks() {
    let sim = sim().await;
    sim.set_script(payment(
        "pay-2",
        vec![
            Step::new("PROCESSING", Some(3)),
            Step::new("COMPLETED", None),
        ],
    ))
    .unwrap();
    sim.set_script(credit("cred-forever", vec![Step::new("PROCESSING", None)]))
        .unwrap();
    let client = reqwest::Client::new();

    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(status_of(&client, &sim, TrackedKind::Payment, "pay-2").await);
    }
    assert_eq!(
        seen,
        [
            "PROCESSING",
            "PROCESSING",
            "PROCESSING",
            "COMPLETED",
            "COMPLETED",
            "COMPLETED"
        ]
    );
    assert_eq!(sim.poll_count("pay-2"), 6);
    assert_eq!(sim.stats("pay-2").answered, 6);

    for _ in 0..20 {
        assert_eq!(
            status_of(&client, &sim, TrackedKind::StandaloneCredit, "cred-forever").await,
            "PROCESSING"
        );
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn credit_reversal_scripted_over_the_control_api() {
    let sim = sim().await;
    let client = reqwest::Client::new();
    let script = json!({
        "kind": "standalone_credit",
        "id": "cred-rev",
        "merchantRefNum": "wd-77",
        "amount": 500,
        "currencyCode": "CAD",
        "steps": [
            {"status": "PROCESSING", "polls": 1},
            {"status": "COMPLETED", "polls": 2},
            {"status": "CANCELLED", "error": {"code": "3406", "message": "Recalled by the bank"}}
        ]
    });
    let created = client
        .post(format!("{}/__sim/items", sim.base_url()))
        .json(&script)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);

    let mut seen = Vec::new();
    for _ in 0..5 {
        let response = poll(&client, &sim, TrackedKind::StandaloneCredit, "cred-rev").await;
        let transaction: PaysafeTransaction = response.json().await.unwrap();
        seen.push((
            transaction.status,
            transaction.error.map(|e| e.code).unwrap_or_default(),
        ));
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(s, c)| (s.as_str(), c.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("PROCESSING", ""),
            ("COMPLETED", ""),
            ("COMPLETED", ""),
            ("CANCELLED", "3406"),
            ("CANCELLED", "3406")
        ]
    );

    // The control API reads the counters back.
    let detail: Value = client
        .get(format!("{}/__sim/items/cred-rev", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["stats"]["polls"], 5);
    assert_eq!(detail["stats"]["maxConcurrent"], 1);
    assert_eq!(detail["stats"]["currentStatus"], "CANCELLED");
    assert_eq!(detail["script"]["merchantRefNum"], "wd-77");

    // A bad script is refused with a reason.
    let refused = client
        .post(format!("{}/__sim/items", sim.base_url()))
        .json(
            &json!({"kind": "payment", "id": "x", "merchantRefNum": "m", "amount": 1,
            "currencyCode": "CAD", "steps": [{"status": "PROCESSING"}, {"status": "COMPLETED"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let reason: Value = refused.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("steps[0].polls"));

    // Reset forgets everything.
    let reset = client
        .post(format!("{}/__sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.poll_count("cred-rev"), 0);
    let gone = poll(&client, &sim, TrackedKind::StandaloneCredit, "cred-rev").await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_limit_and_server_errors_then_recovery() {
    let sim = sim().await;
    sim.set_script(
        payment(
            "pay-3",
            vec![
                Step::new("PROCESSING", Some(1)),
                Step::new("COMPLETED", None),
            ],
        )
        .with_faults(vec![
            Fault::RateLimit {
                count: Some(2),
                retry_after_secs: Some(7),
            },
            Fault::ServerError { count: Some(1) },
        ]),
    )
    .unwrap();
    let client = reqwest::Client::new();

    for _ in 0..2 {
        let response = poll(&client, &sim, TrackedKind::Payment, "pay-3").await;
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, ERROR_CODE_RATE_LIMITED)
        );
    }
    let (status, code, _) =
        error_of(poll(&client, &sim, TrackedKind::Payment, "pay-3").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, ERROR_CODE_INTERNAL)
    );

    // Faults did not advance the progression.
    assert_eq!(
        status_of(&client, &sim, TrackedKind::Payment, "pay-3").await,
        "PROCESSING"
    );
    assert_eq!(
        status_of(&client, &sim, TrackedKind::Payment, "pay-3").await,
        "COMPLETED"
    );
    let stats = sim.stats("pay-3");
    assert_eq!((stats.polls, stats.faulted, stats.answered), (5, 3, 2));

    // Faults added later (over HTTP) queue without restarting the progression; global faults
    // hit every id first, known or not.
    let added = client
        .post(format!("{}/__sim/items/pay-3/faults", sim.base_url()))
        .json(&json!({"faults": [{"fault": "http_error", "status": 503, "code": "1000", "count": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::NO_CONTENT);
    sim.set_global_faults(vec![Fault::Unauthorized { count: Some(1) }])
        .unwrap();
    let (status, code, _) =
        error_of(poll(&client, &sim, TrackedKind::Payment, "nobody").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, ERROR_CODE_INVALID_CREDENTIALS)
    );
    let (status, _, _) = error_of(poll(&client, &sim, TrackedKind::Payment, "pay-3").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        status_of(&client, &sim, TrackedKind::Payment, "pay-3").await,
        "COMPLETED"
    );

    // A global fault without a count lasts until replaced.
    let down = client
        .post(format!("{}/__sim/faults", sim.base_url()))
        .json(&json!({"faults": [{"fault": "server_error"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::NO_CONTENT);
    for _ in 0..3 {
        let (status, _, _) =
            error_of(poll(&client, &sim, TrackedKind::Payment, "pay-3").await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    sim.set_global_faults(Vec::new()).unwrap();
    assert_eq!(
        status_of(&client, &sim, TrackedKind::Payment, "pay-3").await,
        "COMPLETED"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn delays_and_concurrency_counting() {
    let sim = sim().await;
    sim.set_script(
        payment("pay-slow", vec![Step::new("PROCESSING", None)]).with_faults(vec![Fault::Delay {
            ms: 400,
            count: Some(2),
        }]),
    )
    .unwrap();
    sim.set_script(payment("pay-serial", vec![Step::new("PROCESSING", None)]))
        .unwrap();
    let client = reqwest::Client::new();

    // Two GETs of one id at once, both slowed down: both are in flight together.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        poll(&client, &sim, TrackedKind::Payment, "pay-slow"),
        poll(&client, &sim, TrackedKind::Payment, "pay-slow")
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_millis(4000));
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(sim.max_concurrent("pay-slow"), 2);
    assert_eq!(sim.stats("pay-slow").in_flight, 0);

    // The delay is used up: the next answer is immediate.
    let started = Instant::now();
    assert_eq!(
        status_of(&client, &sim, TrackedKind::Payment, "pay-slow").await,
        "PROCESSING"
    );
    assert!(started.elapsed() < Duration::from_millis(400));

    // One after the other: never more than one at once.
    for _ in 0..5 {
        status_of(&client, &sim, TrackedKind::Payment, "pay-serial").await;
    }
    assert_eq!(sim.poll_count("pay-serial"), 5);
    assert_eq!(sim.max_concurrent("pay-serial"), 1);

    // A client that gives up mid-delay is no longer counted in flight.
    sim.add_faults(
        "pay-serial",
        vec![Fault::Delay {
            ms: 2000,
            count: Some(1),
        }],
    )
    .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(format!(
            "{}/paymenthub/v1/payments/pay-serial",
            sim.base_url()
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.stats("pay-serial").in_flight, 0);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_ids_are_404_in_paysafe_format() {
    let sim = sim().await;
    sim.set_script(payment("pay-4", vec![Step::new("COMPLETED", None)]))
        .unwrap();
    let client = reqwest::Client::new();

    let (status, code, _) =
        error_of(poll(&client, &sim, TrackedKind::Payment, "no-such-payment").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, ERROR_CODE_NOT_FOUND)
    );
    // A payment is not a standalone credit.
    let (status, code, _) =
        error_of(poll(&client, &sim, TrackedKind::StandaloneCredit, "pay-4").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, ERROR_CODE_NOT_FOUND)
    );
    // An id that is not a Paysafe id, and a path the API does not have.
    for path in [
        "/paymenthub/v1/payments/bad%20id",
        "/paymenthub/v1/refunds/pay-4",
    ] {
        let response = client
            .get(format!("{}{path}", sim.base_url()))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, ERROR_CODE_NOT_FOUND),
            "{path}"
        );
    }
    // Removing an item makes it unknown.
    assert!(sim.remove_script("pay-4"));
    let response = poll(&client, &sim, TrackedKind::Payment, "pay-4").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.poll_count("no-such-payment"), 1);
    sim.shutdown().await.unwrap();
}
