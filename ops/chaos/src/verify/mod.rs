//! The end-of-run checks: the client's log of 200s against the database, the ledger queue and
//! the dead-letter queues. The facts are gathered once ([`facts`]); each property is a function
//! of its own that returns its findings; [`check`] runs them in a fixed order, so that the
//! problem lines always read in the same order.

mod acknowledged;
mod dead_letters;
mod facts;
mod journal;
mod ledger;
mod orders;
mod report;

use std::collections::HashSet;

use sqlx::PgPool;

use crate::load::Bank;

pub use facts::LedgerMessage;
pub use journal::{Collector as JournalCollector, Journal};
pub use report::Report;

/// What the checks read: the bank's record, the database, and what was taken off the queues.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub bank: &'a Bank,
    pub db: &'a PgPool,
    /// The rows of the purged tables over the whole run.
    pub journal: &'a Journal,
    pub ledger: &'a [LedgerMessage],
    /// Message ids on the intake dead-letter queue.
    pub intake_dlq: &'a [String],
    /// Message ids on the ledger dead-letter queue.
    pub ledger_dlq: &'a [String],
    /// The poison messages the harness published.
    pub poison: &'a HashSet<String>,
}

/// Every property checked, one after the other; the report sums their findings.
pub async fn check(inputs: Inputs<'_>) -> anyhow::Result<Report> {
    let facts = facts::Facts::gather(inputs).await?;
    let mut report = Report::default();
    for findings in [
        acknowledged::unexpected_answers(&facts),
        acknowledged::refused_in_alarm_not_applied(&facts),
        ledger::outbox_published(&facts),
        ledger::ledger_events_match_orders(&facts),
        ledger::ledger_republishes(&facts),
        ledger::no_ledger_event_twice(&facts),
        acknowledged::acknowledged_orders_applied_once(&facts),
        acknowledged::conflict_pairs_resolved(&facts),
        dead_letters::quarantine_only_conflict_losers(&facts),
        acknowledged::batches_applied_once(&facts),
        orders::every_order_sent_and_backed(&facts),
        dead_letters::intake_dlq_only_poison(&facts),
        dead_letters::ledger_dlq_empty(&facts),
    ] {
        report.absorb(findings);
    }
    Ok(report)
}
