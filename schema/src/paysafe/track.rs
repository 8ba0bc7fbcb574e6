//! The `paysafe.track` command (DESIGN.md §5): the merchant's payment service asks the connector
//! to follow a payment or credit that Paysafe answered PROCESSING to. It can only start tracking:
//! it never sets a status, and its amount is checked against Paysafe's, never trusted over it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::members::{amount, currency, merchant_ref, optional_id};
use super::status::TrackedKind;
use crate::json;
use crate::validation::{BodyError, FieldError};

/// The `paysafe.track` command (§5): the merchant's payment service asks the connector to
/// follow a payment or credit that Paysafe answered PROCESSING (non-final) to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackCommand {
    pub kind: TrackedKind,
    /// The Paysafe payment or credit id (see [`super::is_valid_id`]).
    pub id: String,
    pub merchant_ref_num: String,
    /// Minor units (cents), 0..=i64::MAX.
    pub amount: i64,
    /// ISO 4217, three upper-case letters.
    pub currency_code: String,
}

/// Parses and validates a track command: every member is required. An amount may be a JSON
/// integer or a string of digits (Paysafe's own requests spell it `"amount":"546"`).
pub fn parse_track_command(body: &[u8]) -> Result<TrackCommand, BodyError> {
    let object = json::parse_object(body)?;
    let mut errors = Vec::new();

    let kind = match object.get("kind") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("kind", "is required"));
            None
        }
        Some(value) => {
            let kind = value.as_str().and_then(TrackedKind::parse);
            if kind.is_none() {
                errors.push(FieldError::new(
                    "kind",
                    "must be \"payment\" or \"standalone_credit\"",
                ));
            }
            kind
        }
    };
    let id = optional_id(&object, "id", "id", &mut errors);
    if id.is_none() && !errors.iter().any(|e| e.field == "id") {
        errors.push(FieldError::new("id", "is required"));
    }
    let merchant_ref_num = merchant_ref(&object, "merchantRefNum", true, &mut errors);
    let amount = amount(&object, "amount", true, &mut errors);
    let currency_code = currency(&object, "currencyCode", true, &mut errors);

    match (kind, id, merchant_ref_num, amount, currency_code) {
        (Some(kind), Some(id), Some(merchant_ref_num), Some(amount), Some(currency_code))
            if errors.is_empty() =>
        {
            Ok(TrackCommand {
                kind,
                id,
                merchant_ref_num,
                amount,
                currency_code,
            })
        }
        _ => Err(BodyError::Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: BodyError) -> Vec<String> {
        match error {
            BodyError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            BodyError::Malformed(reason) => panic!("expected Invalid, got Malformed({reason})"),
        }
    }

    #[test]
    fn track_command_valid() {
        let command = parse_track_command(
            br#"{"kind":"standalone_credit","id":"b7759f69-b194-41ad-aab2-164432596c04",
                "merchantRefNum":"4f55a9f1-f19d-4bc7-b52f-7ef7133995a1","amount":500,
                "currencyCode":"CAD","extra":true}"#,
        )
        .unwrap();
        assert_eq!(command.kind, TrackedKind::StandaloneCredit);
        assert_eq!(command.amount, 500);
        assert_eq!(
            command.kind.api_path(&command.id),
            "/paymenthub/v1/standalonecredits/b7759f69-b194-41ad-aab2-164432596c04"
        );
        // Serialises back to the wire shape.
        let round =
            parse_track_command(serde_json::to_string(&command).unwrap().as_bytes()).unwrap();
        assert_eq!(round, command);

        let payment = parse_track_command(
            br#"{"kind":"payment","id":"p1","merchantRefNum":"m","amount":"546","currencyCode":"CAD"}"#,
        )
        .unwrap();
        assert_eq!(payment.kind.api_path("p1"), "/paymenthub/v1/payments/p1");
        assert_eq!(payment.amount, 546);
    }

    #[test]
    fn track_command_invalid() {
        let error = parse_track_command(b"{}").unwrap_err();
        assert_eq!(
            fields(error),
            ["kind", "id", "merchantRefNum", "amount", "currencyCode"]
        );
        let error = parse_track_command(
            br#"{"kind":"refund","id":"a/b","merchantRefNum":7,"amount":-5,"currencyCode":"CA"}"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(error),
            ["kind", "id", "merchantRefNum", "amount", "currencyCode"]
        );
        let too_big = format!(
            r#"{{"kind":"payment","id":"p","merchantRefNum":"{}","amount":18446744073709551615,"currencyCode":"CAD"}}"#,
            "m".repeat(256)
        );
        assert_eq!(
            fields(parse_track_command(too_big.as_bytes()).unwrap_err()),
            ["merchantRefNum", "amount"]
        );
        assert!(matches!(
            parse_track_command(b"[]"),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            parse_track_command(b""),
            Err(BodyError::Malformed(_))
        ));
    }
}
