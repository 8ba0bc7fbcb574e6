//! The console's audit trail: every sign-in (and refused one), every action and every refusal
//! of one, with who, when, what, the comment and how it ended. Written by the console only;
//! shown on its Audit page.

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::config::ConsoleRole;
use crate::console::session::SignedIn;

/// One line of the trail, as written.
#[derive(Debug)]
pub struct Entry<'a> {
    pub account: &'a str,
    pub role: Option<ConsoleRole>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub comment: Option<&'a str>,
    pub outcome: &'a str,
}

impl<'a> Entry<'a> {
    /// What a signed-in account did.
    pub fn by(
        who: &'a SignedIn,
        action: &'a str,
        target: Option<&'a str>,
        comment: Option<&'a str>,
        outcome: &'a str,
    ) -> Self {
        Self {
            account: &who.account,
            role: Some(who.role),
            action,
            target,
            comment,
            outcome,
        }
    }
}

pub async fn record(pool: &PgPool, entry: Entry<'_>) -> anyhow::Result<()> {
    tracing::info!(
        account = entry.account,
        action = entry.action,
        target = entry.target,
        outcome = entry.outcome,
        "console action"
    );
    sqlx::query(
        "INSERT INTO console_audit (account, role, action, target, comment, outcome)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.account)
    .bind(entry.role.map(ConsoleRole::as_str))
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.comment)
    .bind(entry.outcome)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub at: OffsetDateTime,
    pub account: String,
    pub role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub comment: Option<String>,
    pub outcome: String,
}

/// The latest `limit` lines, newest first, optionally only those about `target`.
pub async fn recent(
    pool: &PgPool,
    target: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<AuditRow>> {
    Ok(sqlx::query_as(
        "SELECT at, account, role, action, target, comment, outcome FROM console_audit
         WHERE $1::text IS NULL OR target = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(target)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
