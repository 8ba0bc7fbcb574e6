//! The workers: background roles that turn durably enqueued notifications into database state
//! and ledger events, exactly once (DESIGN.md §2.3, §2.4), plus the operators' admin commands.
//! They depend on `connector-schema` only; any number run side by side.

pub mod admin;
pub mod apply;
pub mod audit;
pub mod bnc;
pub mod broker;
pub mod config;
pub mod console;
pub mod corelink;
pub mod db;
pub mod evidence;
pub mod gauges;
pub mod group_transaction;
pub mod intake;
pub mod lifecycle;
pub mod metrics;
pub mod outbox;
pub mod outcome;
pub mod paysafe;
pub mod poller;
pub mod probes;
pub mod quarantine;
pub mod relay;
pub mod startup;

/// What one step of a steppable loop did, so tests drive the loops without sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Processed,
    Idle,
}
