//! Paysafe payments and standalone credits (DESIGN.md §5): what a webhook, a track command or a
//! poll answer does to a tracked item, in one transaction with its history and ledger events.
//!
//! Idempotency is by state, not by message: PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are the
//! same fact, a webhook delivered again or late finds the status already there (or further on)
//! and changes nothing, and the `event_id` of each ledger event is deterministic, so a fact is
//! emitted once however many times and ways it arrives.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::events::{EventType, LedgerEvent, Source};
use connector_schema::paysafe::{self, PaysafeStatus, TrackedKind, WebhookEvent, WebhookFact};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::audit::{self, Received};
use crate::config::PaysafeSettings;
use crate::outbox;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::QuarantineReason;

/// Where a fact about an item came from; the history's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactSource {
    Track,
    Webhook,
    Poll,
}

impl FactSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Webhook => "webhook",
            Self::Poll => "poll",
        }
    }
}

/// One fact about a Paysafe item: its status as of some moment, with what we know of it.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub kind: TrackedKind,
    pub id: &'a str,
    pub status: PaysafeStatus,
    /// When Paysafe says the status was reached.
    pub status_at: Option<OffsetDateTime>,
    pub merchant_ref_num: Option<&'a str>,
    pub amount: Option<i64>,
    pub currency_code: Option<&'a str>,
    pub source: FactSource,
    pub event_name: Option<&'a str>,
    pub message_id: Option<Uuid>,
}

/// What an observation does to the item's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The item was not tracked: it is now.
    Created,
    /// The status moved forward.
    Applied,
    /// Already so.
    Unchanged,
    /// Older than what we know (a late or out-of-order webhook): ignored.
    Stale,
    /// A standalone credit failed or was cancelled after COMPLETED.
    Reversed,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
            Self::Reversed => "reversed",
        }
    }
}

/// What we know of an item before the observation.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub status: PaysafeStatus,
    /// The credit was COMPLETED and then reversed: a late COMPLETED is old news.
    pub reversed: bool,
}

/// How far along a non-final status is, so a late PROCESSING never overwrites PENDING.
fn progress(status: PaysafeStatus) -> u8 {
    match status {
        PaysafeStatus::Received => 0,
        PaysafeStatus::Initiated => 1,
        PaysafeStatus::Processing => 2,
        PaysafeStatus::Pending | PaysafeStatus::Held => 3,
        _ => 4,
    }
}

fn is_failure(status: PaysafeStatus) -> bool {
    status.is_final() && status != PaysafeStatus::Completed
}

/// The state machine of §5. `Err` is a contradiction between two final statuses: quarantined
/// (a webhook) or reported (a poll), never applied.
pub fn transition(
    kind: TrackedKind,
    known: Option<Known>,
    new: PaysafeStatus,
) -> Result<Effect, PaysafeStatus> {
    let Some(known) = known else {
        return Ok(Effect::Created);
    };
    let current = known.status;
    if !current.is_final() {
        return Ok(if new.is_final() || progress(new) > progress(current) {
            Effect::Applied
        } else if new == current {
            Effect::Unchanged
        } else {
            Effect::Stale
        });
    }
    if !new.is_final() {
        return Ok(Effect::Stale);
    }
    if new == current {
        return Ok(Effect::Unchanged);
    }
    match (kind, current, new) {
        // One failure reported two ways (FAILED, then CANCELLED or EXPIRED): one fact.
        (_, c, n) if is_failure(c) && is_failure(n) => Ok(Effect::Unchanged),
        (
            TrackedKind::StandaloneCredit,
            PaysafeStatus::Completed,
            PaysafeStatus::Failed | PaysafeStatus::Cancelled,
        ) => Ok(Effect::Reversed),
        (TrackedKind::StandaloneCredit, _, PaysafeStatus::Completed) if known.reversed => {
            Ok(Effect::Stale)
        }
        _ => Err(current),
    }
}

/// The ledger event a final status (or a reversal) emits.
#[doc(hidden)]
pub fn event_type(kind: TrackedKind, status: PaysafeStatus, effect: Effect) -> Option<EventType> {
    if effect == Effect::Reversed {
        return Some(EventType::PaysafeCreditReversed);
    }
    if !matches!(effect, Effect::Created | Effect::Applied) || !status.is_final() {
        return None;
    }
    Some(match (kind, status) {
        (TrackedKind::Payment, PaysafeStatus::Completed) => EventType::PaysafePaymentCompleted,
        (TrackedKind::Payment, _) => EventType::PaysafePaymentFailed,
        (TrackedKind::StandaloneCredit, PaysafeStatus::Completed) => {
            EventType::PaysafeCreditCompleted
        }
        (TrackedKind::StandaloneCredit, _) => EventType::PaysafeCreditFailed,
    })
}

/// Delay before the next poll of an item polled `attempts` times without a final answer:
/// exponential with jitter, computed with the `backoff` crate (RUSTSEC-2025-0012 flags it as
/// unmaintained; it only computes delays here) and persisted as the next poll time.
pub fn poll_delay(settings: &PaysafeSettings, attempts: u32) -> Duration {
    use backoff::backoff::Backoff as _;
    let max = Duration::from_secs(settings.max_poll_interval_secs);
    let mut schedule = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(settings.first_poll_after().min(max))
        .with_multiplier(settings.backoff_multiplier)
        .with_randomization_factor(settings.backoff_jitter)
        .with_max_interval(max)
        .with_max_elapsed_time(None)
        .build();
    // The interval reaches its cap within a few dozen steps whatever the settings.
    for _ in 0..attempts.min(64) {
        schedule.next_backoff();
    }
    schedule.next_backoff().unwrap_or(max)
}

/// Applies `observation` to its item inside `tx`. Returns the effect (on `Err` the caller rolls
/// back). A new non-final item is scheduled for its first poll; a final one stops polling.
pub async fn observe(
    tx: &mut Transaction<'_, Postgres>,
    o: &Observation<'_>,
    settings: &PaysafeSettings,
) -> Result<Effect, ApplyError> {
    let row: Option<(String, String, String, bool)> = sqlx::query_as(
        "SELECT kind, status, tracking, reversed_at IS NOT NULL
         FROM paysafe_items WHERE id = $1 FOR UPDATE",
    )
    .bind(o.id)
    .fetch_optional(&mut **tx)
    .await?;
    let known = match &row {
        None => None,
        Some((kind, status, _, reversed)) => {
            if kind != o.kind.as_str() {
                return Err(ApplyError::Quarantine {
                    reason: QuarantineReason::PaysafeConflict,
                    detail: format!(
                        "{} is tracked as a {kind}, reported as a {}",
                        o.id,
                        o.kind.as_str()
                    ),
                });
            }
            let status = PaysafeStatus::parse(status).ok_or_else(|| {
                ApplyError::Invalid(format!("stored Paysafe status {status} is unknown"))
            })?;
            Some(Known {
                status,
                reversed: *reversed,
            })
        }
    };
    let effect = transition(o.kind, known, o.status).map_err(|current| ApplyError::Quarantine {
        reason: QuarantineReason::PaysafeConflict,
        detail: format!(
            "{} {} is {current}; {} reports {}",
            o.kind.as_str(),
            o.id,
            o.source.as_str(),
            o.status
        ),
    })?;
    let tracking = if o.status.is_final() {
        "final"
    } else {
        "polling"
    };
    match effect {
        Effect::Created => {
            let inserted = sqlx::query(
                "INSERT INTO paysafe_items (id, kind, merchant_ref_num, amount, currency_code, status,
                                            tracking, status_at, next_poll_at, deadline_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                         CASE WHEN $7 = 'polling' THEN now() + $9 * interval '1 millisecond' END,
                         now() + $10 * interval '1 second')
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(o.id)
            .bind(o.kind.as_str())
            .bind(o.merchant_ref_num)
            .bind(o.amount)
            .bind(o.currency_code)
            .bind(o.status.as_str())
            .bind(tracking)
            .bind(o.status_at)
            .bind(poll_delay(settings, 0).as_millis() as f64)
            .bind(settings.deadline(o.kind).as_secs() as f64)
            .execute(&mut **tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(ApplyError::Contention);
            }
        }
        Effect::Applied | Effect::Reversed => {
            sqlx::query(
                "UPDATE paysafe_items
                 SET status = $2, status_at = COALESCE($3, status_at),
                     tracking = CASE WHEN $4 = 'final' THEN 'final' ELSE tracking END,
                     next_poll_at = CASE WHEN $4 = 'final' THEN NULL ELSE next_poll_at END,
                     reversed_at = CASE WHEN $5 THEN now() ELSE reversed_at END,
                     merchant_ref_num = COALESCE(merchant_ref_num, $6),
                     amount = COALESCE(amount, $7), currency_code = COALESCE(currency_code, $8),
                     updated_at = now()
                 WHERE id = $1",
            )
            .bind(o.id)
            .bind(o.status.as_str())
            .bind(o.status_at)
            .bind(tracking)
            .bind(effect == Effect::Reversed)
            .bind(o.merchant_ref_num)
            .bind(o.amount)
            .bind(o.currency_code)
            .execute(&mut **tx)
            .await?;
        }
        Effect::Unchanged | Effect::Stale => {
            // Nothing moves, but details a webhook lacked may come with a later fact.
            sqlx::query(
                "UPDATE paysafe_items
                 SET merchant_ref_num = COALESCE(merchant_ref_num, $2),
                     amount = COALESCE(amount, $3), currency_code = COALESCE(currency_code, $4)
                 WHERE id = $1",
            )
            .bind(o.id)
            .bind(o.merchant_ref_num)
            .bind(o.amount)
            .bind(o.currency_code)
            .execute(&mut **tx)
            .await?;
        }
    }
    sqlx::query(
        "INSERT INTO paysafe_item_history (item_id, source, event_name, status, previous_status, effect, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(o.id)
    .bind(o.source.as_str())
    .bind(o.event_name)
    .bind(o.status.as_str())
    .bind(known.map(|k| k.status.as_str()))
    .bind(effect.as_str())
    .bind(o.message_id)
    .execute(&mut **tx)
    .await?;

    if let Some(event_type) = event_type(o.kind, o.status, effect) {
        let (merchant_ref_num, amount, currency_code): (
            Option<String>,
            Option<i64>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT merchant_ref_num, amount, currency_code FROM paysafe_items WHERE id = $1",
        )
        .bind(o.id)
        .fetch_one(&mut **tx)
        .await?;
        let now = OffsetDateTime::now_utc();
        let event = LedgerEvent::new(
            Source::Paysafe,
            event_type,
            o.id,
            o.status.as_str(),
            o.status_at.unwrap_or(now),
            now,
            serde_json::json!({
                "kind": o.kind.as_str(),
                "merchant_ref_num": merchant_ref_num,
                "amount": amount,
                "currency_code": currency_code,
                "previous_status": known.map(|k| k.status.as_str()),
                "reported_by": o.source.as_str(),
                "event_name": o.event_name,
            }),
        );
        outbox::write(tx, &[event]).await?;
    }
    Ok(effect)
}

/// Applies a `paysafe.webhook` or `paysafe.track` intake message in one transaction.
pub async fn apply(
    pool: &PgPool,
    envelope: &IntakeEnvelope,
    settings: &PaysafeSettings,
) -> Result<Outcome, ApplyError> {
    let invalid = |e: connector_schema::validation::BodyError| ApplyError::Invalid(e.to_string());
    let mut tx = pool.begin().await?;
    let (outcome, key) = match envelope.kind {
        IntakeKind::PaysafeWebhook => {
            let webhook = paysafe::parse_webhook(&envelope.body).map_err(invalid)?;
            let outcome = match webhook.fact() {
                WebhookFact::Status { kind, status } => {
                    let observation = Observation {
                        kind,
                        id: &webhook.resource_id,
                        status,
                        status_at: webhook.event_date,
                        merchant_ref_num: webhook.merchant_ref_num.as_deref(),
                        amount: webhook.amount,
                        currency_code: webhook.currency_code.as_deref(),
                        source: FactSource::Webhook,
                        event_name: Some(webhook.event.as_str()),
                        message_id: Some(envelope.message_id),
                    };
                    effect_outcome(
                        observe(&mut tx, &observation, settings).await?,
                        kind,
                        status,
                    )
                }
                WebhookFact::PaymentHandle | WebhookFact::Unrecognised => {
                    tracing::info!(
                        event = webhook.event.as_str(),
                        resource_id = %webhook.resource_id,
                        "webhook recorded; it carries no payment or credit status"
                    );
                    if matches!(webhook.event, WebhookEvent::Other(_)) {
                        crate::metrics::paysafe_unrecognised_webhook();
                    }
                    Outcome::Ignored
                }
            };
            (outcome, webhook.event_id.clone())
        }
        IntakeKind::PaysafeTrack => {
            let command = paysafe::parse_track_command(&envelope.body).map_err(invalid)?;
            let observation = Observation {
                kind: command.kind,
                id: &command.id,
                // The merchant publishes it after Paysafe answered PROCESSING.
                status: PaysafeStatus::Processing,
                status_at: None,
                merchant_ref_num: Some(&command.merchant_ref_num),
                amount: Some(command.amount),
                currency_code: Some(&command.currency_code),
                source: FactSource::Track,
                event_name: None,
                message_id: Some(envelope.message_id),
            };
            let effect = observe(&mut tx, &observation, settings).await?;
            let outcome = if effect == Effect::Created {
                Outcome::Applied {
                    items: 1,
                    events: 0,
                }
            } else {
                Outcome::Duplicate
            };
            (outcome, Some(command.id.clone()))
        }
        other => {
            return Err(ApplyError::Invalid(format!(
                "{} is not a Paysafe message",
                other.routing_key()
            )));
        }
    };
    let received = Received {
        client_id: envelope.client_id.as_deref(),
        idempotency_key: key.as_deref(),
        nonce: None,
        body_sha256: &connector_schema::corelink::body_sha256(&envelope.body),
        body: &envelope.body,
    };
    audit::record(&mut tx, envelope, received, outcome).await?;
    tx.commit().await?;
    Ok(outcome)
}

fn effect_outcome(effect: Effect, kind: TrackedKind, status: PaysafeStatus) -> Outcome {
    match effect {
        Effect::Created | Effect::Applied | Effect::Reversed => Outcome::Applied {
            items: 1,
            events: usize::from(event_type(kind, status, effect).is_some()),
        },
        Effect::Unchanged | Effect::Stale => Outcome::Duplicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaysafeStatus::{Cancelled, Completed, Expired, Failed, Pending, Processing};
    use TrackedKind::{Payment, StandaloneCredit as Credit};

    fn known(status: PaysafeStatus) -> Option<Known> {
        Some(Known {
            status,
            reversed: false,
        })
    }

    #[test]
    fn statuses_only_move_forward_and_finals_never_change() {
        assert_eq!(transition(Payment, None, Processing), Ok(Effect::Created));
        assert_eq!(
            transition(Payment, known(Processing), Pending),
            Ok(Effect::Applied)
        );
        assert_eq!(
            transition(Payment, known(Pending), Processing),
            Ok(Effect::Stale)
        );
        assert_eq!(
            transition(Payment, known(Pending), Pending),
            Ok(Effect::Unchanged)
        );
        assert_eq!(
            transition(Payment, known(Pending), Completed),
            Ok(Effect::Applied)
        );
        assert_eq!(
            transition(Payment, known(Completed), Completed),
            Ok(Effect::Unchanged)
        );
        assert_eq!(
            transition(Payment, known(Completed), Processing),
            Ok(Effect::Stale)
        );
        assert_eq!(
            transition(Payment, known(Completed), Failed),
            Err(Completed)
        );
        assert_eq!(transition(Payment, known(Failed), Completed), Err(Failed));
        assert_eq!(
            transition(Payment, known(Failed), Expired),
            Ok(Effect::Unchanged)
        );
    }

    #[test]
    fn a_credit_failing_after_completion_is_reversed_once() {
        assert_eq!(
            transition(Credit, known(Completed), Failed),
            Ok(Effect::Reversed)
        );
        assert_eq!(
            transition(Credit, known(Completed), Cancelled),
            Ok(Effect::Reversed)
        );
        let reversed = Some(Known {
            status: Failed,
            reversed: true,
        });
        assert_eq!(transition(Credit, reversed, Completed), Ok(Effect::Stale));
        assert_eq!(transition(Credit, reversed, Failed), Ok(Effect::Unchanged));
        assert_eq!(transition(Credit, known(Failed), Completed), Err(Failed));
    }

    #[test]
    fn each_final_fact_has_its_event() {
        use EventType::*;
        let cases = [
            (
                Payment,
                Completed,
                Effect::Applied,
                Some(PaysafePaymentCompleted),
            ),
            (
                Payment,
                Expired,
                Effect::Created,
                Some(PaysafePaymentFailed),
            ),
            (
                Credit,
                Completed,
                Effect::Applied,
                Some(PaysafeCreditCompleted),
            ),
            (
                Credit,
                Cancelled,
                Effect::Applied,
                Some(PaysafeCreditFailed),
            ),
            (
                Credit,
                Failed,
                Effect::Reversed,
                Some(PaysafeCreditReversed),
            ),
            (Payment, Completed, Effect::Unchanged, None),
            (Payment, Pending, Effect::Applied, None),
        ];
        for (kind, status, effect, expected) in cases {
            assert_eq!(
                event_type(kind, status, effect),
                expected,
                "{kind:?} {status} {effect:?}"
            );
        }
    }

    #[test]
    fn poll_delays_grow_with_jitter_up_to_the_cap() {
        let settings = PaysafeSettings {
            first_poll_after_secs: 60,
            max_poll_interval_secs: 3_600,
            backoff_jitter: 0.3,
            ..PaysafeSettings::default()
        };
        let first = poll_delay(&settings, 0).as_secs_f64();
        assert!((42.0..=78.0).contains(&first), "{first}");
        let third = poll_delay(&settings, 2).as_secs_f64();
        assert!((168.0..=312.0).contains(&third), "{third}");
        let late = poll_delay(&settings, 40).as_secs_f64();
        assert!((2_520.0..=4_680.0).contains(&late), "{late}");
        let spread: std::collections::BTreeSet<u128> = (0..20)
            .map(|_| poll_delay(&settings, 3).as_millis())
            .collect();
        assert!(spread.len() > 1, "jitter spreads items out");
    }
}
