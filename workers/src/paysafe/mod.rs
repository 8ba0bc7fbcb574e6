//! Paysafe payments and standalone credits (DESIGN.md §5): what a webhook, a track command or a
//! poll answer does to a tracked item, atomically with its history and ledger events.
//!
//! Idempotency is by state, not by message: PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are the
//! same fact, a webhook delivered again or late finds the status already there (or further on)
//! and changes nothing, and the `event_id` of each ledger event is deterministic, so a fact is
//! emitted once however many times and ways it arrives.

mod observe;
mod transitions;

use sqlx::PgConnection;

use connector_schema::paysafe::{self, PaysafeStatus, TrackedKind, WebhookEvent, WebhookFact};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::audit::{self, Received};
use crate::config::PaysafeSettings;
use crate::group_transaction::GroupKeys;
use crate::outcome::{ApplyError, Outcome};

pub use observe::{FactSource, Observation, Observed, observe};
pub use transitions::{Effect, Known, event_type, poll_delay, transition};

/// What applying a Paysafe message did, with what to count once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// The message revealed an amount mismatch (see [`Observed`]).
    pub amount_mismatch: bool,
}

/// What [`apply`] can write under, for a group's lock (see `crate::group_transaction`): the
/// item a webhook or track command is about (nothing for a message that cannot be read: it
/// writes nothing).
pub fn lock_keys(envelope: &IntakeEnvelope, keys: &mut GroupKeys) {
    match envelope.kind {
        IntakeKind::PaysafeWebhook => {
            if let Ok(webhook) = paysafe::parse_webhook(&envelope.body) {
                keys.paysafe_item(&webhook.resource_id);
            }
        }
        IntakeKind::PaysafeTrack => {
            if let Ok(command) = paysafe::parse_track_command(&envelope.body) {
                keys.paysafe_item(&command.id);
            }
        }
        _ => {}
    }
}

/// Applies a `paysafe.webhook` or `paysafe.track` intake message on `conn`, inside the
/// caller's transaction or savepoint (on `Err` the caller rolls it back).
pub async fn apply(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
    settings: &PaysafeSettings,
) -> Result<Applied, ApplyError> {
    let invalid = |e: connector_schema::validation::BodyError| ApplyError::Invalid(e.to_string());
    let mut mismatch = false;
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
                    let observed = observe(conn, &observation, settings).await?;
                    mismatch |= observed.amount_mismatch;
                    effect_outcome(observed.effect, kind, status)
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
            let observed = observe(conn, &observation, settings).await?;
            mismatch |= observed.amount_mismatch;
            let outcome = if observed.effect == Effect::Created {
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
    audit::record(conn, envelope, received, outcome).await?;
    Ok(Applied {
        outcome,
        amount_mismatch: mismatch,
    })
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
