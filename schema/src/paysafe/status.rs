//! The statuses of a Paysafe payment or standalone credit, and which of the two is tracked
//! (DESIGN.md §5): what the poller reads, the webhook reports, and the workers' state machine
//! moves between.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The status of a Paysafe payment or standalone credit (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaysafeStatus {
    Received,
    Initiated,
    Processing,
    Pending,
    Held,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl PaysafeStatus {
    pub const ALL: [PaysafeStatus; 9] = [
        Self::Received,
        Self::Initiated,
        Self::Processing,
        Self::Pending,
        Self::Held,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "RECEIVED",
            Self::Initiated => "INITIATED",
            Self::Processing => "PROCESSING",
            Self::Pending => "PENDING",
            Self::Held => "HELD",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    /// COMPLETED, FAILED, CANCELLED, EXPIRED: polling stops and a ledger event is due. A
    /// standalone credit may still move COMPLETED → FAILED/CANCELLED (a reversal, §5).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    /// `None` for anything Paysafe may add later: callers treat an unknown status as non-final
    /// (keep polling, never invent a final status).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl fmt::Display for PaysafeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the connector tracks at Paysafe: a payment (money in) or a standalone credit (money
/// out, a withdrawal). They have different endpoints, deadlines and ledger events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackedKind {
    Payment,
    StandaloneCredit,
}

impl TrackedKind {
    pub const ALL: [TrackedKind; 2] = [Self::Payment, Self::StandaloneCredit];

    /// The wire name in a `paysafe.track` command: `payment` or `standalone_credit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::StandaloneCredit => "standalone_credit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "payment" => Some(Self::Payment),
            "standalone_credit" => Some(Self::StandaloneCredit),
            _ => None,
        }
    }

    /// The collection segment of the GET API: `/paymenthub/v1/{segment}/{id}`.
    pub fn api_segment(self) -> &'static str {
        match self {
            Self::Payment => "payments",
            Self::StandaloneCredit => "standalonecredits",
        }
    }

    /// `/paymenthub/v1/payments/{id}` or `/paymenthub/v1/standalonecredits/{id}`. The id must
    /// have passed [`super::is_valid_id`] (the validators guarantee it), so it needs no escaping.
    pub fn api_path(self, id: &str) -> String {
        format!("/paymenthub/v1/{}/{id}", self.api_segment())
    }
}

impl fmt::Display for TrackedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statuses() {
        let finals: Vec<_> = PaysafeStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(PaysafeStatus::as_str)
            .collect();
        assert_eq!(finals, ["COMPLETED", "FAILED", "CANCELLED", "EXPIRED"]);
        for status in PaysafeStatus::ALL {
            assert_eq!(PaysafeStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
        assert_eq!(PaysafeStatus::parse("ERRORED"), None);
        assert_eq!(PaysafeStatus::parse("completed"), None);
    }
}
