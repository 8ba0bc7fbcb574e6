//! The answers of Paysafe's GET API (DESIGN.md §5) that the poller reads: a payment or a
//! standalone credit, or Paysafe's error body. Plain serde types, lenient on members the
//! connector does not use, since they come from Paysafe and may grow.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::members::parse_paysafe_time;
use super::status::PaysafeStatus;

// Paysafe error codes. The seed shows no error body; these come from Paysafe's public API error
// reference ("Common Errors"), which the simulator reproduces. Pollers decide on the HTTP status
// (429 and 5xx back off, 401/403 alert); the code is for logs and alerts.

/// HTTP 429: "The API call has been denied as it has exceeded the permissible call rate limit."
pub const ERROR_CODE_RATE_LIMITED: &str = "1200";
/// HTTP 401: the API key (Basic credentials) is missing or invalid.
pub const ERROR_CODE_INVALID_CREDENTIALS: &str = "5279";
/// HTTP 404: "The ID(s) specified in the URL do not correspond to the values in the system."
pub const ERROR_CODE_NOT_FOUND: &str = "5269";
/// HTTP 500: "An internal error occurred."
pub const ERROR_CODE_INTERNAL: &str = "1000";

/// The GET answer of `/paymenthub/v1/payments/{id}` and `/paymenthub/v1/standalonecredits/{id}`
/// (the members of the seed's "Exemple de réponse à un paiement" / "pour retrait" that the
/// connector uses; the others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaysafeTransaction {
    pub id: String,
    /// As sent: parse it with [`PaysafeTransaction::parsed_status`], since Paysafe may add
    /// statuses and a poller must not fail on one it does not know.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_ref_num: Option<String>,
    /// Minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    /// `INTERAC_ETRANSFER` in the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_response: Option<GatewayResponse>,
    /// Why a FAILED transaction failed, when Paysafe says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PaysafeError>,
}

impl PaysafeTransaction {
    /// `None` for a status this build does not know: treat it as non-final.
    pub fn parsed_status(&self) -> Option<PaysafeStatus> {
        PaysafeStatus::parse(&self.status)
    }

    /// When the status was reached, as Paysafe says: `statusTime`, else `updatedTime`, else
    /// `txnTime` (the ledger event's `occurred_at`).
    pub fn status_changed_at(&self) -> Option<OffsetDateTime> {
        [&self.status_time, &self.updated_time, &self.txn_time]
            .into_iter()
            .flatten()
            .find_map(|t| parse_paysafe_time(t))
    }
}

/// `gatewayResponse` of a transaction (the processor's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `INTERAC`, `PEOPLE_TRUST`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Paysafe's error body: `{"error":{"code":"1200","message":…,"details":[…],"fieldErrors":[…]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaysafeErrorBody {
    pub error: PaysafeError,
}

impl PaysafeErrorBody {
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            error: PaysafeError {
                code: code.to_owned(),
                message: message.to_owned(),
                details: Vec::new(),
                field_errors: Vec::new(),
            },
        }
    }
}

/// The `error` object: `code` is a string of digits (also sent in the
/// `X-Application-Status-Code` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaysafeError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_errors: Vec<PaysafeFieldError>,
}

/// One entry of `fieldErrors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaysafeFieldError {
    pub field: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    #[test]
    fn get_answer_from_the_seed_parses() {
        // The seed's "Exemple de réponse à un paiement", trimmed of members the connector ignores
        // but keeping some of them to prove they are ignored.
        let answer = r#"{
            "id": "568530f0-262a-453f-b681-1088195d9439",
            "paymentType": "INTERAC_ETRANSFER",
            "merchantRefNum": "b9405251-5ede-4439-b844-73ff553144a5",
            "currencyCode": "CAD",
            "settleWithAuth": true,
            "txnTime": "2021-10-06T13:18:58Z",
            "status": "PROCESSING",
            "amount": 546,
            "updatedTime": "2021-10-06T13:20:18Z",
            "statusTime": "2021-10-06T13:20:18Z",
            "gatewayResponse": {"id": "Io27oxf1xsqOrDIe", "processor": "INTERAC", "status": "AVAILABLE"},
            "settlements": {"txnTime": "2021-10-06T13:18:58.000+0000", "status": "PROCESSING"}
        }"#;
        let txn: PaysafeTransaction = serde_json::from_str(answer).unwrap();
        assert_eq!(txn.parsed_status(), Some(PaysafeStatus::Processing));
        assert_eq!(txn.amount, Some(546));
        assert_eq!(
            txn.gateway_response
                .as_ref()
                .and_then(|g| g.processor.as_deref()),
            Some("INTERAC")
        );
        assert_eq!(
            txn.status_changed_at(),
            Some(OffsetDateTime::parse("2021-10-06T13:20:18Z", &Rfc3339).unwrap())
        );
        let minimal: PaysafeTransaction =
            serde_json::from_str(r#"{"id":"x","status":"SOMETHING_NEW"}"#).unwrap();
        assert_eq!(minimal.parsed_status(), None);
        assert_eq!(minimal.status_changed_at(), None);
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"id": "x", "status": "SOMETHING_NEW"})
        );
    }

    #[test]
    fn error_body_shape() {
        let mut body = PaysafeErrorBody::new(ERROR_CODE_RATE_LIMITED, "rate limit");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": "1200", "message": "rate limit"}})
        );
        body.error.details.push("slow down".into());
        body.error.field_errors.push(PaysafeFieldError {
            field: "amount".into(),
            error: "invalid".into(),
        });
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            json!({"error": {"code": "1200", "message": "rate limit", "details": ["slow down"],
                "fieldErrors": [{"field": "amount", "error": "invalid"}]}})
        );
        let parsed: PaysafeErrorBody = serde_json::from_value(json!({"error": {"code": "5279",
            "message": "The authentication credentials are invalid.", "links": []}}))
        .unwrap();
        assert_eq!(parsed.error.code, ERROR_CODE_INVALID_CREDENTIALS);
    }
}
