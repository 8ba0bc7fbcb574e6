//! What a Paysafe webhook's event name means (DESIGN.md §5): the names Paysafe sends, and the
//! one fact behind several of them (PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are one payment
//! COMPLETED), so the workers emit one ledger event per fact.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::status::{PaysafeStatus, TrackedKind};

/// A webhook event name (§5), from `eventName`, `eventType` or `type`.
///
/// Names the connector does not know are kept as [`WebhookEvent::Other`] rather than refused:
/// the body is signed by Paysafe, so refusing it would only make Paysafe retry; the workers
/// record it and change nothing, and the poller still finds the truth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// `PAYMENT_HANDLE_PAYABLE`, `_COMPLETED`, `_EXPIRED`, `_FAILED`, ...: the whole family (the
    /// full name is kept). About the payment handle (a single-use token), not about a payment.
    PaymentHandle(String),
    PaymentProcessing,
    PaymentPending,
    PaymentCompleted,
    SettlementCompleted,
    PaymentFailed,
    PaymentErrored,
    SettlementFailed,
    /// Named by the seed ("Vous recevrez SA_CREDIT_PROCESSING immédiatement"), not by §5.
    SaCreditProcessing,
    SaCreditPending,
    SaCreditCompleted,
    SaCreditFailed,
    SaCreditCancelled,
    SaCreditErrored,
    /// A well-formed name this build does not know.
    Other(String),
}

/// What a webhook tells the workers, whatever its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookFact {
    /// The payment or credit `resourceId` has this status. A final status here is applied as
    /// if the poller had read it (one ledger event per final status).
    Status {
        kind: TrackedKind,
        status: PaysafeStatus,
    },
    /// A `PAYMENT_HANDLE_*` event: its `resourceId` is a payment handle, not a tracked payment
    /// or credit, and the seed shows a payment may still complete after its handle expired or
    /// failed. Workers record it (history/audit) and change no status.
    PaymentHandle,
    /// An unknown event name: record and count it, change no status.
    Unrecognised,
}

const PAYMENT_HANDLE_PREFIX: &str = "PAYMENT_HANDLE_";

impl WebhookEvent {
    /// `None` when the text is not shaped like a Paysafe event name (1..=64 of `A-Z 0-9 _`,
    /// starting with a letter).
    pub fn parse(name: &str) -> Option<Self> {
        let well_formed = name.len() <= 64
            && name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return None;
        }
        Some(match name {
            "PAYMENT_PROCESSING" => Self::PaymentProcessing,
            "PAYMENT_PENDING" => Self::PaymentPending,
            "PAYMENT_COMPLETED" => Self::PaymentCompleted,
            "SETTLEMENT_COMPLETED" => Self::SettlementCompleted,
            "PAYMENT_FAILED" => Self::PaymentFailed,
            "PAYMENT_ERRORED" => Self::PaymentErrored,
            "SETTLEMENT_FAILED" => Self::SettlementFailed,
            "SA_CREDIT_PROCESSING" => Self::SaCreditProcessing,
            "SA_CREDIT_PENDING" => Self::SaCreditPending,
            "SA_CREDIT_COMPLETED" => Self::SaCreditCompleted,
            "SA_CREDIT_FAILED" => Self::SaCreditFailed,
            "SA_CREDIT_CANCELLED" => Self::SaCreditCancelled,
            "SA_CREDIT_ERRORED" => Self::SaCreditErrored,
            _ if name.len() > PAYMENT_HANDLE_PREFIX.len()
                && name.starts_with(PAYMENT_HANDLE_PREFIX) =>
            {
                Self::PaymentHandle(name.to_owned())
            }
            _ => Self::Other(name.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::PaymentHandle(name) | Self::Other(name) => name,
            Self::PaymentProcessing => "PAYMENT_PROCESSING",
            Self::PaymentPending => "PAYMENT_PENDING",
            Self::PaymentCompleted => "PAYMENT_COMPLETED",
            Self::SettlementCompleted => "SETTLEMENT_COMPLETED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::PaymentErrored => "PAYMENT_ERRORED",
            Self::SettlementFailed => "SETTLEMENT_FAILED",
            Self::SaCreditProcessing => "SA_CREDIT_PROCESSING",
            Self::SaCreditPending => "SA_CREDIT_PENDING",
            Self::SaCreditCompleted => "SA_CREDIT_COMPLETED",
            Self::SaCreditFailed => "SA_CREDIT_FAILED",
            Self::SaCreditCancelled => "SA_CREDIT_CANCELLED",
            Self::SaCreditErrored => "SA_CREDIT_ERRORED",
        }
    }

    /// The fact the event reports.
    ///
    /// - PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are one fact, payment COMPLETED (seed: "comme
    ///   il s'agit de settlewithauth= true, nous pouvons supposer que les deux sont
    ///   identiques"), so they produce one ledger event.
    /// - PAYMENT_FAILED, PAYMENT_ERRORED and SETTLEMENT_FAILED are payment FAILED: FAILED is
    ///   "le PSP en aval a renvoyé une erreur (état http 402)", ERRORED is "une erreur non liée
    ///   à un état http 402", SETTLEMENT_FAILED is the settlement (identical to the payment
    ///   under settleWithAuth) becoming FAILED or ERRORED. ERRORED is not a status of §5; all
    ///   three are Paysafe saying the payment did not go through, and the event name is kept
    ///   in the history and the ledger event's data.
    /// - SA_CREDIT_ERRORED is credit FAILED for the same reason.
    pub fn fact(&self) -> WebhookFact {
        use PaysafeStatus as S;
        use TrackedKind::{Payment, StandaloneCredit};
        let (kind, status) = match self {
            Self::PaymentHandle(_) => return WebhookFact::PaymentHandle,
            Self::Other(_) => return WebhookFact::Unrecognised,
            Self::PaymentProcessing => (Payment, S::Processing),
            Self::PaymentPending => (Payment, S::Pending),
            Self::PaymentCompleted | Self::SettlementCompleted => (Payment, S::Completed),
            Self::PaymentFailed | Self::PaymentErrored | Self::SettlementFailed => {
                (Payment, S::Failed)
            }
            Self::SaCreditProcessing => (StandaloneCredit, S::Processing),
            Self::SaCreditPending => (StandaloneCredit, S::Pending),
            Self::SaCreditCompleted => (StandaloneCredit, S::Completed),
            Self::SaCreditFailed | Self::SaCreditErrored => (StandaloneCredit, S::Failed),
            Self::SaCreditCancelled => (StandaloneCredit, S::Cancelled),
        };
        WebhookFact::Status { kind, status }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WebhookEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebhookEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("`{name}` is not an event name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_mapping() {
        use PaysafeStatus as S;
        use TrackedKind::{Payment, StandaloneCredit};
        let status = |kind, status| WebhookFact::Status { kind, status };
        let cases = [
            ("PAYMENT_PROCESSING", status(Payment, S::Processing)),
            ("PAYMENT_PENDING", status(Payment, S::Pending)),
            ("PAYMENT_COMPLETED", status(Payment, S::Completed)),
            ("SETTLEMENT_COMPLETED", status(Payment, S::Completed)),
            ("PAYMENT_FAILED", status(Payment, S::Failed)),
            ("PAYMENT_ERRORED", status(Payment, S::Failed)),
            ("SETTLEMENT_FAILED", status(Payment, S::Failed)),
            (
                "SA_CREDIT_PROCESSING",
                status(StandaloneCredit, S::Processing),
            ),
            ("SA_CREDIT_PENDING", status(StandaloneCredit, S::Pending)),
            (
                "SA_CREDIT_COMPLETED",
                status(StandaloneCredit, S::Completed),
            ),
            ("SA_CREDIT_FAILED", status(StandaloneCredit, S::Failed)),
            (
                "SA_CREDIT_CANCELLED",
                status(StandaloneCredit, S::Cancelled),
            ),
            ("SA_CREDIT_ERRORED", status(StandaloneCredit, S::Failed)),
            ("PAYMENT_HANDLE_PAYABLE", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_EXPIRED", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_COMPLETED", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_FAILED", WebhookFact::PaymentHandle),
            ("PAYMENT_REFUNDED", WebhookFact::Unrecognised),
            ("PAYMENT_HANDLE_", WebhookFact::Unrecognised),
        ];
        for (name, fact) in cases {
            let event = WebhookEvent::parse(name).unwrap();
            assert_eq!(event.as_str(), name);
            assert_eq!(event.fact(), fact, "{name}");
            let round: WebhookEvent =
                serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
            assert_eq!(round, event);
        }
        for bad in ["", "payment_completed", "1PAYMENT", "PAYMENT COMPLETED"] {
            assert_eq!(WebhookEvent::parse(bad), None, "{bad:?}");
        }
    }
}
