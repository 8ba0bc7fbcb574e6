//! The quarantine commands: list, show, release, discard. Quarantine holds messages that are
//! valid but could not be applied (§2.6); only an operator, having fixed or judged the cause,
//! sends one back to the intake queue or closes it, and the row stays for audit either way.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use lapin::Channel;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;
use connector_schema::seal::{self, SealKeys};
use connector_schema::{IntakeEnvelope, IntakeKind, Topology, Verification};

use crate::admin::publish::publish_confirmed;
use crate::quarantine::QuarantineReason;

type QuarantineRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    OffsetDateTime,
    String,
);

/// One quarantined message with its raw request.
#[derive(Debug, sqlx::FromRow)]
struct HeldMessage {
    reason: String,
    detail: String,
    state: String,
    kind: String,
    client_id: Option<String>,
    request_path: Option<String>,
    received_at: OffsetDateTime,
    quarantined_at: OffsetDateTime,
    resolution_note: Option<String>,
    headers: serde_json::Value,
    body: Vec<u8>,
    /// The ingress's seal as the message carried it.
    seal: Option<String>,
    /// How the ingress verified it (`Verification::to_audit_json`), NULL if it carried none.
    verification: Option<serde_json::Value>,
}

async fn held_message(pool: &PgPool, message_id: Uuid) -> anyhow::Result<HeldMessage> {
    sqlx::query_as(
        "SELECT reason, detail, state, kind, client_id, request_path, received_at, quarantined_at,
                resolution_note, headers, body, seal, verification
         FROM quarantined_messages WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(pool)
    .await?
    .with_context(|| format!("no quarantined message {message_id}"))
}

pub async fn quarantine_list(pool: &PgPool, all: bool) -> anyhow::Result<String> {
    let rows: Vec<QuarantineRow> = sqlx::query_as(
        "SELECT message_id, reason, detail, kind, client_id, idempotency_key, quarantined_at, state
         FROM quarantined_messages WHERE $1 OR state = 'held' ORDER BY quarantined_at",
    )
    .bind(all)
    .fetch_all(pool)
    .await?;
    let mut out = format!(
        "{} quarantined message(s){}\n",
        rows.len(),
        if all { "" } else { " held" }
    );
    for (id, reason, detail, kind, client, key, at, state) in rows {
        let _ = writeln!(
            out,
            "{id}  {state:<9} {reason:<24} {kind:<22} client={} key={} at={}\n    {detail}",
            client.unwrap_or_default(),
            key.unwrap_or_default(),
            rfc3339(at),
        );
    }
    Ok(out)
}

pub async fn quarantine_show(pool: &PgPool, message_id: Uuid) -> anyhow::Result<String> {
    let m = held_message(pool, message_id).await?;
    let mut out = format!(
        "message   {message_id}\nstate     {}\nreason    {}\ndetail    {}\nkind      {}\npath      {}\nreceived  {}\nheld at   {}\n",
        m.state,
        m.reason,
        m.detail,
        m.kind,
        m.request_path.unwrap_or_default(),
        rfc3339(m.received_at),
        rfc3339(m.quarantined_at)
    );
    if let Some(note) = m.resolution_note {
        let _ = writeln!(out, "note      {note}");
    }
    // Public facts only (key ids, fingerprints of public keys and certificates).
    if let Some(verification) = &m.verification {
        let _ = writeln!(out, "verified  {verification}");
    }
    // A BNC body holds a card token and an account number: operators see a redacted copy.
    let body = if m.kind == IntakeKind::BncAccountBinding.routing_key() {
        connector_schema::bnc::redact_body(&m.body)
    } else {
        m.body
    };
    let _ = writeln!(
        out,
        "headers   {}\nbody\n{}",
        m.headers,
        String::from_utf8_lossy(&body)
    );
    Ok(out)
}

/// Sends a held message back to the intake exchange, for another try once its cause is
/// fixed. The release is recorded first, with its generation, and only then published: a
/// worker that quarantines the message again always finds the release to overwrite, so the
/// message can never vanish from the held list. A publish that fails undoes exactly this
/// release (the message is held again) and says so.
///
/// The message goes back with the seal the ingress gave it, checked first: a row edited in the
/// database (another body, another client) is refused, never applied (DESIGN.md §2.7).
pub async fn quarantine_release(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
    seal: &SealKeys,
    message_id: Uuid,
    note: &str,
) -> anyhow::Result<String> {
    let m = held_message(pool, message_id).await?;
    if m.state != "held" {
        bail!("message {message_id} is {}, not held", m.state);
    }
    let kind = IntakeKind::from_routing_key(&m.kind)
        .with_context(|| format!("unknown kind {}", m.kind))?;
    // Secret-bearing sources keep their raw body apart (the row holds a redacted copy).
    let body = match sqlx::query_scalar::<_, Vec<u8>>(
        "SELECT body FROM quarantined_secret_bodies WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(pool)
    .await?
    {
        Some(raw) => raw,
        None => m.body,
    };
    let headers = m
        .headers
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    // The facts go back as the row holds them; the seal check below refuses an edited column.
    let verification = m
        .verification
        .as_ref()
        .map(Verification::from_audit_json)
        .transpose()
        .map_err(|error| {
            anyhow::anyhow!("refused: {message_id}'s verification column is not one the workers wrote ({error}); nothing was released")
        })?;
    let envelope = IntakeEnvelope {
        message_id,
        kind,
        received_at: m.received_at,
        client_id: m.client_id,
        request_path: m.request_path,
        headers,
        body: body.into(),
        verification,
    };
    let properties = match &m.seal {
        Some(carried) => seal::properties_with_seal(&envelope, carried),
        None => envelope.amqp_properties(),
    };
    if seal::required(kind) {
        seal.verify(&envelope, m.seal.as_deref()).map_err(|error| {
            anyhow::anyhow!("refused: {message_id} is not as the ingress sealed it ({error}); nothing was released")
        })?;
    }
    let generation: i32 = sqlx::query_scalar(
        "UPDATE quarantined_messages
         SET state = 'released', release_generation = release_generation + 1,
             resolved_at = now(), resolution_note = $2
         WHERE message_id = $1 AND state = 'held'
         RETURNING release_generation",
    )
    .bind(message_id)
    .bind(note)
    .fetch_optional(pool)
    .await?
    .with_context(|| format!("message {message_id} is no longer held"))?;
    let published = publish_confirmed(
        channel,
        &topology.intake_exchange,
        kind.routing_key(),
        &envelope.body,
        properties,
    )
    .await;
    if let Err(error) = published {
        sqlx::query(
            "UPDATE quarantined_messages SET state = 'held', resolved_at = NULL, resolution_note = NULL
             WHERE message_id = $1 AND state = 'released' AND release_generation = $2",
        )
        .bind(message_id)
        .bind(generation)
        .execute(pool)
        .await?;
        return Err(error.context(format!("{message_id} was not released; it is held still")));
    }
    Ok(format!(
        "released {message_id} to {} (release {generation})\n",
        topology.intake_exchange
    ))
}

/// Closes a held message without applying it; the row (and raw request) stays for audit.
pub async fn quarantine_discard(
    pool: &PgPool,
    message_id: Uuid,
    note: &str,
) -> anyhow::Result<String> {
    if note.trim().is_empty() {
        bail!("say why with --note: the discard is audited");
    }
    let updated = sqlx::query(
        "UPDATE quarantined_messages SET state = 'discarded', resolved_at = now(), resolution_note = $2
         WHERE message_id = $1 AND state = 'held'",
    )
    .bind(message_id)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        bail!("no held quarantined message {message_id}");
    }
    Ok(format!("discarded {message_id}\n"))
}

/// Closes every message held for `reason` longer than `held_for_secs`: an operator's answer to
/// a known, judged cause (a bank that sends both final statuses by mistake, confirmed with the
/// bank), without one command per message. A reason is required, so that no filter closes
/// everything; each row records the note, as a single discard does.
pub async fn quarantine_discard_held(
    pool: &PgPool,
    reason: &str,
    held_for_secs: u64,
    note: &str,
) -> anyhow::Result<String> {
    if note.trim().is_empty() {
        bail!("say why with --note: the discard is audited");
    }
    if !QuarantineReason::ALL.iter().any(|r| r.as_str() == reason) {
        let known: Vec<&str> = QuarantineReason::ALL.iter().map(|r| r.as_str()).collect();
        bail!(
            "unknown quarantine reason `{reason}`; the reasons are {}",
            known.join(", ")
        );
    }
    let held_for = i64::try_from(held_for_secs).context("--held-for is too large")?;
    let discarded = sqlx::query(
        "UPDATE quarantined_messages SET state = 'discarded', resolved_at = now(), resolution_note = $3
         WHERE state = 'held' AND reason = $1
           AND quarantined_at < now() - make_interval(secs => $2)",
    )
    .bind(reason)
    .bind(held_for as f64)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(format!(
        "discarded {discarded} message(s) held for {reason} longer than {held_for_secs} s\n"
    ))
}
