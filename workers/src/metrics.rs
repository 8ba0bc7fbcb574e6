//! Prometheus metrics of the workers; the names the dashboards and alert rules use.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use time::OffsetDateTime;

/// Intake messages by `kind` and `outcome` ([`MESSAGE_OUTCOMES`]).
pub const MESSAGES_TOTAL: &str = "connector_worker_messages_total";
/// Intake messages refused as forged, by `reason` ([`FORGED_REASONS`]): dead-lettered,
/// nothing applied.
pub const FORGED_TOTAL: &str = "connector_worker_forged_total";
/// Quarantined messages by `reason`.
pub const QUARANTINED_TOTAL: &str = "connector_worker_quarantined_total";
/// Messages held in quarantine now, by `reason` (from the database).
pub const QUARANTINE_HELD: &str = "connector_worker_quarantine_held";
/// Time to apply one message (its transaction, retries included), by `kind`.
pub const APPLY_DURATION_SECONDS: &str = "connector_worker_apply_duration_seconds";
/// Transient failures retried while holding the message (database down, deadlock, ...).
pub const TRANSIENT_RETRIES_TOTAL: &str = "connector_worker_transient_retries_total";
/// Messages applied per group transaction (group commit).
pub const APPLY_GROUP_SIZE: &str = "connector_worker_apply_group_size";
/// Groups that kept failing, or failed for a reason of their own, and were applied one
/// message at a time.
pub const APPLY_GROUP_SPLITS_TOTAL: &str = "connector_worker_apply_group_splits_total";
/// 1 while the role holds a broker connection, by `role`.
pub const BROKER_CONNECTED: &str = "connector_worker_broker_connected";
/// 1 while the apply role has stopped consuming because the database does not answer.
pub const APPLY_PAUSED: &str = "connector_worker_apply_paused";
/// Ledger events confirmed by the broker, by `event_type`.
pub const RELAY_PUBLISHED_TOTAL: &str = "connector_relay_published_total";
/// Ledger events not confirmed, by `reason` (nack, unroutable, timeout, channel).
pub const RELAY_FAILURES_TOTAL: &str = "connector_relay_failures_total";
/// Confirmed ledger events whose marking as published failed and was retried (database away).
pub const RELAY_RECORD_RETRIES_TOTAL: &str = "connector_relay_record_retries_total";
/// Time from publish to confirm of one relay batch.
pub const RELAY_PUBLISH_SECONDS: &str = "connector_relay_publish_duration_seconds";
/// Outbox rows not yet published, and the age of the oldest.
pub const OUTBOX_BACKLOG: &str = "connector_outbox_backlog";
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "connector_outbox_oldest_unpublished_age_seconds";
/// Seen nonces removed by the retention purge.
pub const NONCES_PURGED_TOTAL: &str = "connector_nonces_purged_total";
/// Calls to Paysafe by `kind` and `outcome` (pending, final, rate_limited, server_error,
/// timeout, network, tls, unauthorized, not_found, unexpected).
pub const PAYSAFE_POLLS_TOTAL: &str = "connector_paysafe_polls_total";
pub const PAYSAFE_POLL_SECONDS: &str = "connector_paysafe_poll_duration_seconds";
/// Tracked items by `kind`, `tracking` (polling, final, stale) and Paysafe `status`.
pub const PAYSAFE_ITEMS: &str = "connector_paysafe_items";
/// Age of the oldest item still polled (non-final), by `kind`: a payment stuck in PROCESSING.
pub const PAYSAFE_OLDEST_POLLING_AGE_SECONDS: &str = "connector_paysafe_oldest_polling_age_seconds";
/// Items that reached their deadline still non-final, by `kind`.
pub const PAYSAFE_STALE_TOTAL: &str = "connector_paysafe_stale_total";
/// 1 while Paysafe refuses our credentials (401/403) and the poller is paused.
pub const PAYSAFE_AUTH_FAILED: &str = "connector_paysafe_poller_auth_failed";
/// Webhooks with an event name this build does not know (recorded, not applied).
pub const PAYSAFE_UNRECOGNISED_WEBHOOKS_TOTAL: &str =
    "connector_paysafe_unrecognised_webhooks_total";
/// Paysafe items whose amount or currency (webhook or poll) differs from the merchant's track
/// command: once per item; the ledger event carries Paysafe's values.
pub const PAYSAFE_AMOUNT_MISMATCHES_TOTAL: &str = "connector_paysafe_amount_mismatches_total";

/// BNC callbacks whose account number came unmasked (only its masked form was kept).
pub const BNC_UNMASKED_ACCOUNT_NUMBERS_TOTAL: &str = "connector_bnc_unmasked_account_numbers_total";

/// The process's recorder; the handle renders `/metrics`.
pub fn install() -> PrometheusHandle {
    connector_runtime::metrics::prometheus()
}

// Every value a counter's labels can take, so that each role exports its counters at zero from
// its start ([`at_zero`], called for each role as it starts): a series born at its first
// increment hides that increment from `increase()` and `rate()`, and a panel or an alert on it
// misses the first forged message, STALE item or relay failure. The recording functions check
// (in debug builds) that what they are given is listed here or in the role's own enums.

/// `outcome` of [`MESSAGES_TOTAL`].
pub const MESSAGE_OUTCOMES: [&str; 9] = [
    "applied",
    "duplicate",
    "replay",
    "ignored",
    "quarantined",
    "dead_lettered",
    "forged",
    "requeued",
    "given_back",
];
/// `reason` of [`FORGED_TOTAL`].
pub const FORGED_REASONS: [&str; 6] = [
    "type_mismatch",
    "unknown_kind",
    "seal_missing",
    "seal_malformed",
    "seal_unknown_key",
    "seal_mismatch",
];
/// `reason` of [`RELAY_FAILURES_TOTAL`].
pub const RELAY_FAILURE_REASONS: [&str; 4] = ["nack", "unroutable", "timeout", "channel"];
/// `table` of [`ROWS_PURGED_TOTAL`].
pub const PURGED_TABLES: [&str; 3] = ["idempotency_keys", "seen_nonces", "quarantined_messages"];

/// Exports counter `name` with `labels` at zero (an existing one keeps its value).
pub fn at_zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(key, value)| metrics::Label::new(*key, *value))
        .collect();
    counter!(name, labels).increment(0);
}

pub fn message(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    debug_assert!(
        MESSAGE_OUTCOMES.contains(&outcome),
        "outcome {outcome} not listed"
    );
    counter!(MESSAGES_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
    histogram!(APPLY_DURATION_SECONDS, "kind" => kind).record(elapsed.as_secs_f64());
}

pub fn forged(reason: &'static str) {
    debug_assert!(
        FORGED_REASONS.contains(&reason),
        "reason {reason} not listed"
    );
    counter!(FORGED_TOTAL, "reason" => reason).increment(1);
}

pub fn quarantined(reason: &'static str) {
    counter!(QUARANTINED_TOTAL, "reason" => reason).increment(1);
}

pub fn quarantine_held(reason: String, count: i64) {
    gauge!(QUARANTINE_HELD, "reason" => reason).set(count as f64);
}

pub fn transient_retry() {
    counter!(TRANSIENT_RETRIES_TOTAL).increment(1);
}

pub fn group(size: usize) {
    histogram!(APPLY_GROUP_SIZE).record(size as f64);
}

pub fn group_split() {
    counter!(APPLY_GROUP_SPLITS_TOTAL).increment(1);
}

pub fn apply_paused(paused: bool) {
    gauge!(APPLY_PAUSED).set(if paused { 1.0 } else { 0.0 });
}

pub fn broker_connected(role: &'static str, connected: bool) {
    gauge!(BROKER_CONNECTED, "role" => role).set(if connected { 1.0 } else { 0.0 });
}

pub fn relay_published(event_type: String) {
    counter!(RELAY_PUBLISHED_TOTAL, "event_type" => event_type).increment(1);
}

pub fn relay_failure(reason: &'static str) {
    debug_assert!(
        RELAY_FAILURE_REASONS.contains(&reason),
        "reason {reason} not listed"
    );
    counter!(RELAY_FAILURES_TOTAL, "reason" => reason).increment(1);
}

pub fn relay_record_retry() {
    counter!(RELAY_RECORD_RETRIES_TOTAL).increment(1);
}

pub fn relay_batch(elapsed: Duration) {
    histogram!(RELAY_PUBLISH_SECONDS).record(elapsed.as_secs_f64());
}

pub fn outbox(backlog: i64, oldest_age_secs: f64) {
    gauge!(OUTBOX_BACKLOG).set(backlog as f64);
    gauge!(OUTBOX_OLDEST_AGE_SECONDS).set(oldest_age_secs);
}

pub fn nonces_purged(count: u64) {
    counter!(NONCES_PURGED_TOTAL).increment(count);
}

pub fn paysafe_poll(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(PAYSAFE_POLLS_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
    histogram!(PAYSAFE_POLL_SECONDS).record(elapsed.as_secs_f64());
}

pub fn paysafe_items(kind: String, tracking: String, status: String, count: i64) {
    gauge!(PAYSAFE_ITEMS, "kind" => kind, "tracking" => tracking, "status" => status)
        .set(count as f64);
}

pub fn paysafe_oldest_polling_age(kind: String, secs: f64) {
    gauge!(PAYSAFE_OLDEST_POLLING_AGE_SECONDS, "kind" => kind).set(secs);
}

pub fn paysafe_stale(kind: String) {
    counter!(PAYSAFE_STALE_TOTAL, "kind" => kind).increment(1);
}

pub fn paysafe_auth_failed(failed: bool) {
    gauge!(PAYSAFE_AUTH_FAILED).set(if failed { 1.0 } else { 0.0 });
}

pub fn paysafe_unrecognised_webhook() {
    counter!(PAYSAFE_UNRECOGNISED_WEBHOOKS_TOTAL).increment(1);
}

pub fn paysafe_amount_mismatch() {
    counter!(PAYSAFE_AMOUNT_MISMATCHES_TOTAL).increment(1);
}

pub fn bnc_unmasked_account_number() {
    counter!(BNC_UNMASKED_ACCOUNT_NUMBERS_TOTAL).increment(1);
}

/// Partitions created ahead by the `lifecycle` role, by `table`.
pub const PARTITIONS_CREATED_TOTAL: &str = "connector_worker_partitions_created_total";
/// Partitions dropped after their table's retention, by `table`.
pub const PARTITIONS_DROPPED_TOTAL: &str = "connector_worker_partitions_dropped_total";
/// Partitions past their retention but kept this cycle, by `table` and `reason`
/// (unpublished_events, no_archive, lock_timeout, archive_failed).
pub const PARTITIONS_KEPT_TOTAL: &str = "connector_worker_partitions_kept_total";
/// Future partitions that exist, by `table`: at 0, inserts fail once the current one ends.
pub const PARTITIONS_AHEAD: &str = "connector_worker_partitions_ahead";
/// Rows removed by the batched retention deletes, by `table`.
pub const ROWS_PURGED_TOTAL: &str = "connector_worker_rows_purged_total";

pub fn partition_created(table: &'static str) {
    counter!(PARTITIONS_CREATED_TOTAL, "table" => table).increment(1);
}

pub fn partition_dropped(table: &'static str) {
    counter!(PARTITIONS_DROPPED_TOTAL, "table" => table).increment(1);
}

pub fn partition_kept(table: &'static str, reason: &'static str) {
    counter!(PARTITIONS_KEPT_TOTAL, "table" => table, "reason" => reason).increment(1);
}

pub fn partitions_ahead(table: &'static str, count: usize) {
    gauge!(PARTITIONS_AHEAD, "table" => table).set(count as f64);
}

pub fn rows_purged(table: &'static str, count: u64) {
    debug_assert!(PURGED_TABLES.contains(&table), "table {table} not listed");
    counter!(ROWS_PURGED_TOTAL, "table" => table).increment(count);
}
/// Unix time (of the cycle's clock) of the last lifecycle cycle that completed without error.
/// Kept partitions (lock timeout, archive failure, unpublished events) do not make a cycle fail:
/// they have their own counter and alerts. Absent until the process's first such cycle, so a
/// process that does not run the role exports nothing the alert could mistake for a heartbeat.
pub const LIFECYCLE_LAST_SUCCESS: &str =
    "connector_worker_lifecycle_last_success_timestamp_seconds";
/// Unix time (of the cycle's clock) at which the lifecycle role last committed the drop of a
/// raw-request partition with its archive file anchored. Absent until the first.
pub const EVIDENCE_LAST_ARCHIVE: &str = "connector_worker_evidence_last_archive_timestamp_seconds";

pub fn lifecycle_succeeded(at: OffsetDateTime) {
    gauge!(LIFECYCLE_LAST_SUCCESS).set(unix_seconds(at));
}

pub fn evidence_archived(at: OffsetDateTime) {
    gauge!(EVIDENCE_LAST_ARCHIVE).set(unix_seconds(at));
}

fn unix_seconds(at: OffsetDateTime) -> f64 {
    at.unix_timestamp_nanos() as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use connector_schema::seal::SealError;

    use super::FORGED_REASONS;

    #[test]
    fn every_seal_failure_is_a_listed_forged_reason() {
        for error in [
            SealError::Missing,
            SealError::Malformed,
            SealError::UnknownKey("k".into()),
            SealError::Mismatch,
        ] {
            assert!(FORGED_REASONS.contains(&error.label()), "{}", error.label());
        }
    }
}
