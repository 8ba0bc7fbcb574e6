//! What the workers believe of a delivery from the intake queue (DESIGN.md §2.7): its kind is
//! the routing key it was published with (a `type` property that says otherwise is a forgery),
//! and every kind that claims an authenticated source carries the ingress's seal, checked
//! here. Anything else is refused before a single row is touched: the apply role dead-letters
//! it and counts it, and `dead-letters replay` leaves it where it is.

use lapin::BasicProperties;

use connector_schema::seal::{self, SealKeys};
use connector_schema::{IntakeEnvelope, IntakeKind};

/// Why a delivery is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an envelope at all: dead-lettered as unreadable.
    #[error("unreadable message: {0}")]
    Unreadable(String),
    /// It claims what it is not: dead-lettered as forged, and counted by `reason`.
    #[error("forged message ({reason}): {detail}")]
    Forged {
        reason: &'static str,
        detail: String,
    },
}

/// A delivery the workers may apply: its envelope, and the seal it carried (kept with it if it
/// is quarantined, so that a release checks it again).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub envelope: IntakeEnvelope,
    pub seal: Option<String>,
}

/// Reads a delivery published to the intake exchange with `routing_key`.
pub fn admit(
    routing_key: &str,
    properties: &BasicProperties,
    body: &[u8],
    keys: &SealKeys,
) -> Result<Admitted, Refusal> {
    let forged = |reason, detail: String| Refusal::Forged { reason, detail };
    let kind = IntakeKind::from_routing_key(routing_key).ok_or_else(|| {
        forged(
            "unknown_kind",
            format!("routing key {routing_key} is no intake kind"),
        )
    })?;
    if let Some(claimed) = properties.kind()
        && claimed.as_str() != routing_key
    {
        return Err(forged(
            "type_mismatch",
            format!("published as {routing_key} but typed {claimed}"),
        ));
    }
    let envelope = match IntakeEnvelope::from_amqp(properties, body) {
        Ok(envelope) => envelope,
        // A track command published by the merchant's service carries no ingress headers.
        Err(_) if kind == IntakeKind::PaysafeTrack => {
            IntakeEnvelope::from_published_command(kind, properties, body)
        }
        Err(error) => return Err(Refusal::Unreadable(error.to_string())),
    };
    let carried = seal::of(properties);
    if seal::required(kind) {
        keys.verify(&envelope, carried.as_deref())
            .map_err(|error| forged(error.label(), error.to_string()))?;
    }
    Ok(Admitted {
        envelope,
        seal: carried,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;

    fn keys() -> SealKeys {
        SealKeys::single("k1", &[1; 32])
    }

    fn envelope(kind: IntakeKind) -> IntakeEnvelope {
        IntakeEnvelope {
            message_id: Uuid::now_v7(),
            kind,
            received_at: time::OffsetDateTime::now_utc(),
            client_id: Some("BANK_X".into()),
            request_path: Some("/callbacks/orders/status".into()),
            headers: vec![("x-nonce".into(), "n1".into())],
            body: Bytes::from_static(b"{}"),
            verification: None,
        }
    }

    #[test]
    fn a_sealed_envelope_under_its_own_routing_key_is_admitted() {
        let envelope = envelope(IntakeKind::CorelinkStatus);
        let properties = keys().sealed_properties(&envelope);
        let admitted = admit("corelink.status", &properties, &envelope.body, &keys()).unwrap();
        assert_eq!(admitted.envelope, envelope);
        assert!(admitted.seal.is_some());
    }

    #[test]
    fn the_kind_is_the_routing_key_and_a_bank_callback_needs_the_seal() {
        let envelope = envelope(IntakeKind::CorelinkStatus);
        let sealed = keys().sealed_properties(&envelope);
        let reason = |result: Result<Admitted, Refusal>| match result {
            Err(Refusal::Forged { reason, .. }) => reason,
            other => panic!("expected a forgery, got {other:?}"),
        };
        // A bank callback slipped in under the routing key the merchant may publish.
        assert_eq!(
            reason(admit("paysafe.track", &sealed, &envelope.body, &keys())),
            "type_mismatch"
        );
        assert_eq!(
            reason(admit(
                "corelink.status",
                &envelope.amqp_properties(),
                &envelope.body,
                &keys()
            )),
            "seal_missing"
        );
        assert_eq!(
            reason(admit(
                "corelink.status",
                &sealed,
                b"{\"edited\":true}",
                &keys()
            )),
            "seal_mismatch"
        );
        let other_key = SealKeys::single("k2", &[2; 32]);
        assert_eq!(
            reason(admit(
                "corelink.status",
                &sealed,
                &envelope.body,
                &other_key
            )),
            "seal_unknown_key"
        );
        assert_eq!(
            reason(admit("nothing.known", &sealed, &envelope.body, &keys())),
            "unknown_kind"
        );
    }

    #[test]
    fn a_track_command_needs_no_seal() {
        let properties = BasicProperties::default();
        let admitted = admit("paysafe.track", &properties, b"{}", &keys()).unwrap();
        assert_eq!(admitted.envelope.kind, IntakeKind::PaysafeTrack);
        assert_eq!(admitted.seal, None);
    }
}
