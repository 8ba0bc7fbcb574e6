//! The soak's operator: held quarantine rows wait for a person and are never purged, so a soak
//! with short retentions reviews quarantine as an operator would each day. Every conflict loser
//! the load sends on purpose (the harness's conflict pairs) is discarded through the shipped
//! admin command once held for [`HELD_FOR_SECS`]; the lifecycle role then purges it after the
//! resolved-quarantine retention, and the table levels off like the others.

use anyhow::Context as _;

use crate::harness::Harness;

/// How long a conflict stays held before the review discards it.
pub const HELD_FOR_SECS: u64 = 60;

/// Discards the conflicts held longer than [`HELD_FOR_SECS`]; returns how many.
pub async fn discard_conflict_losers(harness: &Harness) -> anyhow::Result<u64> {
    let held_for = HELD_FOR_SECS.to_string();
    let said = harness
        .workers_admin(&[
            "quarantine",
            "discard",
            "--reason",
            "FINAL_STATUS_CONFLICT",
            "--held-for",
            &held_for,
            "--note",
            "soak review: the harness sends both final statuses of a conflict pair on purpose",
        ])
        .await?;
    said.strip_prefix("discarded ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected answer from the discard: {said}"))
}
