//! Applying one BNC account-binding callback (DESIGN.md §4) atomically: the binding,
//! its card token (in the restricted `bnc_binding_tokens`), the `bnc.account.bound` event and
//! the audit record commit together or not at all.
//!
//! Deduplication: the same callback comes again under the same `(X-CLIENT-KEY, X-EXTERNAL-ID)`
//! (a retry) or under a new external id with the same `partnerReferenceNo` and content. Both
//! are acknowledged as duplicates and change nothing. The same external id or reference with
//! other content is a conflict: quarantined, never applied over the first binding.
//!
//! The token and the account number never reach logs, errors or quarantine details; the audit
//! copy of the body is redacted. BNC sends the account number masked; whatever it sends, only
//! a masked form (at most the first six and last four characters) is stored or reaches the
//! ledger, and an unmasked one is counted.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use connector_schema::IntakeEnvelope;
use connector_schema::bnc::{self, AccountBindingCallback, headers};
use connector_schema::corelink::body_sha256;
use connector_schema::events::{EventType, LedgerEvent, Source};

use crate::audit::{self, Received};
use crate::group_transaction::GroupKeys;
use crate::outbox;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::QuarantineReason;

/// A decoded callback, ready to apply.
#[derive(Debug)]
struct Binding {
    client_key: String,
    external_id: String,
    channel_id: String,
    signed_at: OffsetDateTime,
    callback: AccountBindingCallback,
    /// The binding's meaning, so a retry re-serialised by BNC still matches.
    content_digest: String,
}

fn decode(envelope: &IntakeEnvelope) -> Result<Binding, ApplyError> {
    let header = |name: &str| {
        envelope
            .header(name)
            .map(str::to_owned)
            .ok_or_else(|| ApplyError::Invalid(format!("header {name} is missing")))
    };
    let client_key = envelope
        .client_id
        .clone()
        .ok_or_else(|| ApplyError::Invalid("no client key".into()))?;
    let signed_at = OffsetDateTime::parse(&header(headers::X_TIMESTAMP)?, &Rfc3339)
        .map_err(|e| ApplyError::Invalid(format!("X-TIMESTAMP: {e}")))?;
    let callback = bnc::parse_account_binding(&envelope.body)
        .map_err(|e| ApplyError::Invalid(e.to_string()))?;
    let content_digest = content_digest(&callback);
    Ok(Binding {
        client_key,
        external_id: header(headers::X_EXTERNAL_ID)?,
        channel_id: header(headers::CHANNEL_ID)?,
        signed_at,
        callback,
        content_digest,
    })
}

/// SHA-256 over the validated fields, normalised (the limit as `500000.00`).
fn content_digest(c: &AccountBindingCallback) -> String {
    let fields = [
        c.partner_reference_no.as_str(),
        &c.account_no,
        c.account_transaction_limit.as_str(),
        c.account_currency.as_deref().unwrap_or(""),
        &c.additional_info.user_id,
        &c.additional_info.token,
        &c.additional_info.bind_status,
    ];
    let mut digest = Sha256::new();
    for field in fields {
        // Length-prefixed, so no two different field lists hash alike.
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What [`apply`] can write under, for a group's lock (see `crate::group_transaction`): the
/// binding's reference and its `(X-CLIENT-KEY, X-EXTERNAL-ID)`.
pub fn lock_keys(envelope: &IntakeEnvelope, keys: &mut GroupKeys) {
    if let Some(external_id) = envelope.header(headers::X_EXTERNAL_ID) {
        keys.bnc_external_id(
            envelope.client_id.as_deref().unwrap_or_default(),
            external_id,
        );
    }
    if let Ok(callback) = bnc::parse_account_binding(&envelope.body) {
        keys.bnc_binding(&callback.partner_reference_no);
    }
}

/// Applies `envelope` on `conn`, inside the caller's transaction or savepoint: on `Err` the
/// caller rolls it back, so nothing of the message is written.
pub async fn apply(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
) -> Result<Outcome, ApplyError> {
    let binding = decode(envelope)?;
    let outcome = match existing(conn, &binding).await? {
        Some(()) => Outcome::Duplicate,
        None => {
            insert(conn, envelope, &binding).await?;
            Outcome::Applied {
                items: 1,
                events: 1,
            }
        }
    };
    let redacted = bnc::redact_body(&envelope.body);
    let received = Received {
        client_id: Some(&binding.client_key),
        idempotency_key: Some(&binding.external_id),
        nonce: None,
        body_sha256: &body_sha256(&envelope.body),
        body: &redacted,
    };
    audit::record(conn, envelope, received, outcome).await?;
    Ok(outcome)
}

/// `Some(())` when this binding is already recorded with the same content; a quarantine when
/// its external id or reference belongs to another binding; `None` when it is new.
async fn existing(tx: &mut PgConnection, b: &Binding) -> Result<Option<()>, ApplyError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT partner_reference_no, client_key, external_id, content_digest
         FROM bnc_account_bindings
         WHERE partner_reference_no = $1 OR (client_key = $2 AND external_id = $3)
         FOR UPDATE",
    )
    .bind(&b.callback.partner_reference_no)
    .bind(&b.client_key)
    .bind(&b.external_id)
    .fetch_all(&mut *tx)
    .await?;
    let several = rows.len() > 1;
    let Some((reference, client_key, external_id, digest)) = rows.into_iter().next() else {
        return Ok(None);
    };
    let same_reference = reference == b.callback.partner_reference_no;
    // Two rows: the reference is one binding and the external id another's, a conflict
    // whichever row came first.
    if !several && same_reference && client_key == b.client_key && digest == b.content_digest {
        return Ok(Some(()));
    }
    let detail = if several {
        format!(
            "X-EXTERNAL-ID {} of {} and partnerReferenceNo {} belong to two different bindings",
            b.external_id, b.client_key, b.callback.partner_reference_no
        )
    } else if !same_reference {
        format!(
            "X-EXTERNAL-ID {external_id} of {client_key} already recorded partnerReferenceNo {reference}"
        )
    } else if client_key != b.client_key {
        format!("partnerReferenceNo {reference} is bound by another partner, {client_key}")
    } else {
        format!(
            "partnerReferenceNo {reference} is already bound with other content (first under X-EXTERNAL-ID {external_id})"
        )
    };
    Err(ApplyError::Quarantine {
        reason: QuarantineReason::BindingConflict,
        detail,
    })
}

async fn insert(
    tx: &mut PgConnection,
    envelope: &IntakeEnvelope,
    b: &Binding,
) -> Result<(), ApplyError> {
    let c = &b.callback;
    let account_no_masked = masked_account_no(&c.account_no);
    if account_no_masked != c.account_no {
        crate::metrics::bnc_unmasked_account_number();
        tracing::warn!(
            partner_reference_no = %c.partner_reference_no,
            "BNC sent an account number that was not masked; only its masked form is kept"
        );
    }
    let inserted = sqlx::query(
        "INSERT INTO bnc_account_bindings
             (partner_reference_no, client_key, external_id, channel_id, user_id,
              account_no_masked, account_transaction_limit, account_currency, bind_status,
              content_digest, message_id, signed_at, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8, $9, $10, $11, $12, $13)
         ON CONFLICT DO NOTHING",
    )
    .bind(&c.partner_reference_no)
    .bind(&b.client_key)
    .bind(&b.external_id)
    .bind(&b.channel_id)
    .bind(&c.additional_info.user_id)
    .bind(&account_no_masked)
    .bind(c.account_transaction_limit.as_str())
    .bind(c.account_currency.as_deref())
    .bind(&c.additional_info.bind_status)
    .bind(&b.content_digest)
    .bind(envelope.message_id)
    .bind(b.signed_at)
    .bind(envelope.received_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another worker inserted it after our check: retry, and the check decides.
        return Err(ApplyError::Contention);
    }
    sqlx::query("INSERT INTO bnc_binding_tokens (partner_reference_no, token) VALUES ($1, $2)")
        .bind(&c.partner_reference_no)
        .bind(&c.additional_info.token)
        .execute(&mut *tx)
        .await?;
    let event = LedgerEvent::new(
        Source::Bnc,
        EventType::BncAccountBound,
        &c.partner_reference_no,
        &c.additional_info.bind_status,
        b.signed_at,
        OffsetDateTime::now_utc(),
        serde_json::json!({
            "client_key": b.client_key,
            "external_id": b.external_id,
            "channel_id": b.channel_id,
            "user_id": c.additional_info.user_id,
            "account_no_masked": account_no_masked,
            "account_transaction_limit": c.account_transaction_limit.as_str(),
            "account_currency": c.account_currency,
        }),
    );
    outbox::write(tx, &[event], Some(envelope.message_id)).await
}

/// The account number as it may be shown (PCI DSS): the first six and last four characters
/// of a longer one, the last four of a shorter one, the rest `*`. A number BNC masked that way
/// comes back unchanged.
fn masked_account_no(account_no: &str) -> String {
    let length = account_no.chars().count();
    let head = if length > 10 { 6 } else { 0 };
    let tail = if length > 4 { 4 } else { 0 };
    account_no
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i < head || i >= length - tail {
                c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::masked_account_no;

    #[test]
    fn only_a_masked_account_number_is_kept() {
        assert_eq!(masked_account_no("585945******2348"), "585945******2348");
        assert_eq!(masked_account_no("5859451234562348"), "585945******2348");
        assert_eq!(masked_account_no("1234567890"), "******7890");
        assert_eq!(masked_account_no("1234"), "****");
        assert_eq!(masked_account_no(""), "");
    }
}
