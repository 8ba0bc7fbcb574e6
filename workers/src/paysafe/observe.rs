//! One fact about a Paysafe item applied inside the caller's transaction: the item row, its
//! history and, for a final status, its ledger event. Amounts are Paysafe's: a track command's
//! amount is kept as the merchant's claim, and a disagreement is recorded, never resolved
//! silently (DESIGN.md §5).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::events::{LedgerEvent, Source};
use connector_schema::paysafe::{PaysafeStatus, TrackedKind};

use super::transitions::{Effect, Known, event_type, poll_delay, transition};
use crate::config::PaysafeSettings;
use crate::outbox;
use crate::outcome::ApplyError;
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
    /// The amount (minor units) and currency this source states: Paysafe's own for a webhook or
    /// a poll answer, the merchant's claim for a track command.
    pub amount: Option<i64>,
    pub currency_code: Option<&'a str>,
    pub source: FactSource,
    pub event_name: Option<&'a str>,
    pub message_id: Option<Uuid>,
}

/// What an observation did, for the caller to report once its transaction has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub effect: Effect,
    /// This fact revealed, for the first time, that Paysafe's amount or currency differs from
    /// the merchant's track command (recorded in the history as PAYSAFE_AMOUNT_MISMATCH).
    pub amount_mismatch: bool,
}

/// Applies `observation` to its item inside `tx` (on `Err` the caller rolls back). A new
/// non-final item is scheduled for its first poll; a final one stops polling.
pub async fn observe(
    tx: &mut PgConnection,
    o: &Observation<'_>,
    settings: &PaysafeSettings,
) -> Result<Observed, ApplyError> {
    let row: Option<(String, String, String, bool)> = sqlx::query_as(
        "SELECT kind, status, tracking, reversed_at IS NOT NULL
         FROM paysafe_items WHERE id = $1 FOR UPDATE",
    )
    .bind(o.id)
    .fetch_optional(&mut *tx)
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
    // Paysafe's values and the merchant's claim are kept apart: only Paysafe's reach the ledger.
    let (paysafe_amount, paysafe_currency, merchant_amount, merchant_currency) = match o.source {
        FactSource::Track => (None, None, o.amount, o.currency_code),
        FactSource::Webhook | FactSource::Poll => (o.amount, o.currency_code, None, None),
    };
    let tracking = if o.status.is_final() {
        "final"
    } else {
        "polling"
    };
    match effect {
        Effect::Created => {
            let inserted = sqlx::query(
                "INSERT INTO paysafe_items (id, kind, merchant_ref_num, amount, currency_code, status,
                                            tracking, status_at, next_poll_at, deadline_at,
                                            merchant_amount, merchant_currency_code)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                         CASE WHEN $7 = 'polling' THEN now() + $9 * interval '1 millisecond' END,
                         now() + $10 * interval '1 second', $11, $12)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(o.id)
            .bind(o.kind.as_str())
            .bind(o.merchant_ref_num)
            .bind(paysafe_amount)
            .bind(paysafe_currency)
            .bind(o.status.as_str())
            .bind(tracking)
            .bind(o.status_at)
            .bind(poll_delay(settings, 0).as_millis() as f64)
            .bind(settings.deadline(o.kind).as_secs() as f64)
            .bind(merchant_amount)
            .bind(merchant_currency)
            .execute(&mut *tx)
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
                     amount = COALESCE($7, amount), currency_code = COALESCE($8, currency_code),
                     merchant_amount = COALESCE(merchant_amount, $9),
                     merchant_currency_code = COALESCE(merchant_currency_code, $10),
                     updated_at = now()
                 WHERE id = $1",
            )
            .bind(o.id)
            .bind(o.status.as_str())
            .bind(o.status_at)
            .bind(tracking)
            .bind(effect == Effect::Reversed)
            .bind(o.merchant_ref_num)
            .bind(paysafe_amount)
            .bind(paysafe_currency)
            .bind(merchant_amount)
            .bind(merchant_currency)
            .execute(&mut *tx)
            .await?;
        }
        Effect::Unchanged | Effect::Stale => {
            // Nothing moves, but details a webhook lacked may come with a later fact. An old
            // fact never changes an amount already known (it may have reached the ledger).
            sqlx::query(
                "UPDATE paysafe_items
                 SET merchant_ref_num = COALESCE(merchant_ref_num, $2),
                     amount = COALESCE(amount, $3), currency_code = COALESCE(currency_code, $4),
                     merchant_amount = COALESCE(merchant_amount, $5),
                     merchant_currency_code = COALESCE(merchant_currency_code, $6)
                 WHERE id = $1",
            )
            .bind(o.id)
            .bind(o.merchant_ref_num)
            .bind(paysafe_amount)
            .bind(paysafe_currency)
            .bind(merchant_amount)
            .bind(merchant_currency)
            .execute(&mut *tx)
            .await?;
        }
    }
    let mismatch = amount_mismatch(tx, o.id).await?;
    sqlx::query(
        "INSERT INTO paysafe_item_history (item_id, source, event_name, status, previous_status, effect, message_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(o.id)
    .bind(o.source.as_str())
    .bind(o.event_name)
    .bind(o.status.as_str())
    .bind(known.map(|k| k.status.as_str()))
    .bind(effect.as_str())
    .bind(o.message_id)
    .bind(&mismatch)
    .execute(&mut *tx)
    .await?;
    if let Some(detail) = &mismatch {
        tracing::warn!(id = o.id, reported_by = o.source.as_str(), %detail, "Paysafe amount differs from the track command");
    }

    if let Some(event_type) = event_type(o.kind, o.status, effect) {
        let (merchant_ref_num, amount, currency_code): (
            Option<String>,
            Option<i64>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT merchant_ref_num, amount, currency_code FROM paysafe_items WHERE id = $1",
        )
        .bind(o.id)
        .fetch_one(&mut *tx)
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
        outbox::write(tx, &[event], o.message_id).await?;
    }
    Ok(Observed {
        effect,
        amount_mismatch: mismatch.is_some(),
    })
}

/// Marks the item the first time Paysafe's amount or currency and the merchant's claim are
/// both known and differ, and says how. Once per item: the history keeps the fact, the alert
/// fires once, and the ledger event (already or later) carries Paysafe's values.
async fn amount_mismatch(tx: &mut PgConnection, id: &str) -> Result<Option<String>, ApplyError> {
    let found: Option<(i64, Option<String>, i64, Option<String>)> = sqlx::query_as(
        "UPDATE paysafe_items SET amount_mismatch_at = now()
         WHERE id = $1 AND amount_mismatch_at IS NULL
           AND amount IS NOT NULL AND merchant_amount IS NOT NULL
           AND (amount <> merchant_amount
                OR currency_code IS DISTINCT FROM merchant_currency_code)
         RETURNING merchant_amount, merchant_currency_code, amount, currency_code",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.map(|(claimed, claimed_currency, paysafe, currency)| {
        format!(
            "PAYSAFE_AMOUNT_MISMATCH: the track command said {claimed} {}, Paysafe says {paysafe} {}",
            claimed_currency.as_deref().unwrap_or("(no currency)"),
            currency.as_deref().unwrap_or("(no currency)"),
        )
    }))
}
