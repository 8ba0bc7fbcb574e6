//! Ledger events (DESIGN.md §6): what downstream consumers receive, exactly once per final
//! status, on the `connector.ledger` exchange with routing key = `event_type`.

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::PERSISTENT;

/// Who reported the fact an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Corelink,
    Paysafe,
    Bnc,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Corelink => "corelink",
            Self::Paysafe => "paysafe",
            Self::Bnc => "bnc",
        }
    }
}

/// Every event type of §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderSucceeded,
    OrderFailed,
    PaysafePaymentCompleted,
    PaysafePaymentFailed,
    PaysafeCreditCompleted,
    PaysafeCreditFailed,
    PaysafeCreditReversed,
    BncAccountBound,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::OrderSucceeded,
        Self::OrderFailed,
        Self::PaysafePaymentCompleted,
        Self::PaysafePaymentFailed,
        Self::PaysafeCreditCompleted,
        Self::PaysafeCreditFailed,
        Self::PaysafeCreditReversed,
        Self::BncAccountBound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderSucceeded => "order.succeeded",
            Self::OrderFailed => "order.failed",
            Self::PaysafePaymentCompleted => "paysafe.payment.completed",
            Self::PaysafePaymentFailed => "paysafe.payment.failed",
            Self::PaysafeCreditCompleted => "paysafe.credit.completed",
            Self::PaysafeCreditFailed => "paysafe.credit.failed",
            Self::PaysafeCreditReversed => "paysafe.credit.reversed",
            Self::BncAccountBound => "bnc.account.bound",
        }
    }
}

/// The deterministic id of the event of `event_type` for `reference` from `source`: the same
/// fact always gets the same id, so a consumer can dedupe even a republished event.
pub fn event_id(source: Source, reference: &str, event_type: EventType) -> Uuid {
    let name = format!(
        "urn:connector:{}:{reference}:{}",
        source.as_str(),
        event_type.as_str()
    );
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// The event body, member for member as §6 fixes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub source: Source,
    /// The Corelink order reference, the Paysafe payment or credit id, the BNC
    /// `partnerReferenceNo`.
    pub reference: String,
    /// The source's own final status (`SUCCESS`, `COMPLETED`, ...).
    pub status: String,
    /// When the source says it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// When the connector recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Everything else: bank reference, reason code and message, amount and currency, ...
    pub data: serde_json::Value,
}

impl LedgerEvent {
    pub fn new(
        source: Source,
        event_type: EventType,
        reference: &str,
        status: &str,
        occurred_at: OffsetDateTime,
        recorded_at: OffsetDateTime,
        data: serde_json::Value,
    ) -> Self {
        Self {
            event_id: event_id(source, reference, event_type),
            event_type: event_type.as_str().to_owned(),
            source,
            reference: reference.to_owned(),
            status: status.to_owned(),
            occurred_at,
            recorded_at,
            data,
        }
    }

    /// Persistent, with `message_id` = `event_id` and `type` = `event_type` (§6).
    pub fn amqp_properties(event_id: Uuid, event_type: &str) -> BasicProperties {
        BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(event_id.to_string().into())
            .with_type(event_type.into())
            .with_app_id("connector-relay".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuid_v5_of_the_contract_urn() {
        let id = event_id(Source::Corelink, "PAY-2025-0001", EventType::OrderSucceeded);
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(
            id,
            Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                b"urn:connector:corelink:PAY-2025-0001:order.succeeded"
            )
        );
        assert_ne!(
            id,
            event_id(Source::Corelink, "PAY-2025-0001", EventType::OrderFailed)
        );
    }

    #[test]
    fn the_body_has_exactly_the_contract_members() {
        let at = time::macros::datetime!(2025-11-19 07:09:30 UTC);
        let event = LedgerEvent::new(
            Source::Corelink,
            EventType::OrderFailed,
            "PAY-1",
            "FAILED",
            at,
            at,
            serde_json::json!({"reason_code": "X"}),
        );
        let value = serde_json::to_value(&event).unwrap();
        let mut members: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        members.sort();
        assert_eq!(
            members,
            [
                "data",
                "event_id",
                "event_type",
                "occurred_at",
                "recorded_at",
                "reference",
                "source",
                "status"
            ]
        );
        assert_eq!(value["source"], "corelink");
        assert_eq!(value["event_type"], "order.failed");
        assert_eq!(value["occurred_at"], "2025-11-19T07:09:30Z");
    }
}
