//! What applying one intake message did, or why it could not, whatever its source: the apply
//! worker turns these into an ack, a quarantine, a dead-letter or a retry.

use crate::quarantine::QuarantineReason;

/// What applying a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its facts were recorded (orders, a binding, a Paysafe status; some may have been
    /// unchanged or stale), with this many ledger events written to the outbox.
    Applied { items: usize, events: usize },
    /// The same content was already applied under this message's key.
    Duplicate,
    /// This exact request was already handled.
    Replay,
    /// Valid, and recorded for audit, but it carries no fact we track (a Paysafe payment-handle
    /// event, or an event name this build does not know).
    Ignored,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Duplicate => "duplicate",
            Self::Replay => "replay",
            Self::Ignored => "ignored",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Cannot be read as a message of its kind: dead-lettered at once.
    #[error("unreadable message: {0}")]
    Invalid(String),
    /// Valid, but must not be applied: quarantined.
    #[error("{}: {detail}", .reason.as_str())]
    Quarantine {
        reason: QuarantineReason,
        detail: String,
    },
    /// Another worker created the same row between our lock and our insert: retry.
    #[error("concurrent creation of a row; retrying")]
    Contention,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
