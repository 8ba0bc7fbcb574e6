//! An operator's review of quarantine through the shipped `connector-workers` binary: held
//! conflicts judged and closed in one command by reason and age, each row keeping the note,
//! nothing else touched; and the command's refusals.

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{unit_body, workers_binary};

const UNIT: &str = "/callbacks/orders/status";

async fn post(p: &Pipeline, body: &str, key: &str) {
    let response = p.app.post_signed(UNIT, body, key).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// `connector-workers quarantine discard <args>` against `p`'s database: (succeeded, stdout, stderr).
fn discard(p: &Pipeline, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(workers_binary())
        .args(["quarantine", "discard"])
        .args(args)
        .env("CONNECTOR_MODE", "development")
        .env("CONNECTOR_DATABASE__URL", &p.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn states(p: &Pipeline) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT reason, state, resolution_note FROM quarantined_messages ORDER BY quarantined_at",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn held_conflicts_are_discarded_by_reason_and_age_and_nothing_else() {
    let p = spawn_pipeline().await;
    for reference in ["PAY-R1", "PAY-R2"] {
        post(
            &p,
            &unit_body(reference, "SUCCESS"),
            &format!("{reference}-s"),
        )
        .await;
        post(
            &p,
            &unit_body(reference, "FAILED"),
            &format!("{reference}-f"),
        )
        .await;
    }
    post(&p, &unit_body("PAY-R3", "SUCCESS"), "PAY-R1-s").await; // key reuse
    p.apply_all().await;
    assert_eq!(states(&p).await.len(), 3);

    // Held for less than an hour: too young for this filter, nothing changes.
    let (ok, said, _) = discard(
        &p,
        &[
            "--reason",
            "FINAL_STATUS_CONFLICT",
            "--held-for",
            "3600",
            "--note",
            "n",
        ],
    );
    assert!(ok && said.starts_with("discarded 0 message(s)"), "{said}");
    assert!(states(&p).await.iter().all(|(_, state, _)| state == "held"));

    let note = "the bank confirmed the first status of each pair";
    let (ok, said, err) = discard(
        &p,
        &[
            "--reason",
            "FINAL_STATUS_CONFLICT",
            "--held-for",
            "0",
            "--note",
            note,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        said.starts_with("discarded 2 message(s) held for FINAL_STATUS_CONFLICT"),
        "{said}"
    );
    let after = states(&p).await;
    for (reason, state, resolution) in &after {
        if reason == "FINAL_STATUS_CONFLICT" {
            assert_eq!(
                (state.as_str(), resolution.as_deref()),
                ("discarded", Some(note))
            );
        } else {
            assert_eq!(state, "held", "another reason is left alone: {after:?}");
        }
    }
    // The orders keep the status applied first.
    assert_eq!(p.order_status("PAY-R1").await.as_deref(), Some("SUCCESS"));
    p.teardown().await;
}

#[tokio::test]
async fn a_bulk_discard_without_a_known_reason_a_note_or_an_age_is_refused() {
    let p = spawn_pipeline().await;
    post(&p, &unit_body("PAY-R4", "SUCCESS"), "PAY-R4-s").await;
    post(&p, &unit_body("PAY-R4", "FAILED"), "PAY-R4-f").await;
    p.apply_all().await;

    let (ok, _, err) = discard(
        &p,
        &[
            "--reason",
            "FINAL_STATUS_CONFLCT",
            "--held-for",
            "0",
            "--note",
            "typo",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("unknown quarantine reason `FINAL_STATUS_CONFLCT`")
            && err.contains("FINAL_STATUS_CONFLICT"),
        "{err}"
    );
    let (ok, _, err) = discard(
        &p,
        &[
            "--reason",
            "FINAL_STATUS_CONFLICT",
            "--held-for",
            "0",
            "--note",
            " ",
        ],
    );
    assert!(!ok && err.contains("say why with --note"), "{err}");
    // A reason without an age, or neither an id nor a reason: clap refuses before any work.
    let (ok, _, err) = discard(&p, &["--reason", "FINAL_STATUS_CONFLICT", "--note", "n"]);
    assert!(!ok && err.contains("--held-for"), "{err}");
    let (ok, _, err) = discard(&p, &["--note", "n"]);
    assert!(!ok && err.contains("required"), "{err}");

    assert!(
        states(&p).await.iter().all(|(_, state, _)| state == "held"),
        "every refusal left the message held"
    );
    p.teardown().await;
}
