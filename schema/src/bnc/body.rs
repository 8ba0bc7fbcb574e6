//! The BNC account-binding callback body (DESIGN.md §4, seed §3.2): its fields and their rules,
//! checked first problem first in the seed's order, and the redaction of its two secrets (the
//! card token and the account number) wherever it is shown or kept.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::answers::SnapFieldError;
use super::json_scan::{minify, raw_top_level_member};
use super::limit::TransactionLimit;
use crate::json;
use crate::validation::{Count, is_blank, is_currency_code};

/// Body length limits (seed §3.2), counted in Unicode characters like the other validators.
pub const MAX_PARTNER_REFERENCE_NO_CHARS: usize = 22;
pub const MAX_ACCOUNT_NO_CHARS: usize = 16;
pub const MAX_USER_ID_CHARS: usize = 64;
pub const MAX_TOKEN_CHARS: usize = 36;
pub const MAX_BIND_STATUS_CHARS: usize = 2;

/// The field named when the body as a whole is unusable: not UTF-8 JSON, not a JSON object, or
/// an object with a repeated member name. The seed has no name for it; `requestBody` follows
/// SNAP's camelCase and reads naturally in "Invalid Field Format requestBody".
pub const BODY_FIELD: &str = "requestBody";

/// Wire names of the body members (seed §3.2).
pub mod fields {
    pub const PARTNER_REFERENCE_NO: &str = "partnerReferenceNo";
    pub const ACCOUNT_NO: &str = "accountNo";
    pub const ACCOUNT_TRANSACTION_LIMIT: &str = "accountTransactionLimit";
    pub const ACCOUNT_CURRENCY: &str = "accountCurrency";
    pub const ADDITIONAL_INFO: &str = "additionalInfo";
    pub const USER_ID: &str = "userId";
    pub const TOKEN: &str = "token";
    pub const BIND_STATUS: &str = "bindStatus";
}

/// A validated account-binding callback body. Members the seed does not list (such as a
/// `note`) are accepted and dropped.
///
/// `account_no` and `additional_info.token` are secrets (DESIGN.md §4): `Debug` redacts them,
/// but the serialised form carries them (the workers need them), so never log that.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "BindingWire")]
pub struct AccountBindingCallback {
    /// Merchant transaction reference, ≤ 22 characters; the workers dedupe on it.
    pub partner_reference_no: String,
    /// The account number as the bank sent it (masked, e.g. `585945******2348`), ≤ 16.
    pub account_no: String,
    pub account_transaction_limit: TransactionLimit,
    /// ISO 4217 code (three upper-case letters) when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_currency: Option<String>,
    pub additional_info: BindingAdditionalInfo,
}

/// `additionalInfo` of the callback.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingAdditionalInfo {
    /// Merchant generated user id, ≤ 64.
    pub user_id: String,
    /// The user's bank card token, ≤ 36. Secret.
    pub token: String,
    /// Binding status, ≤ 2 (the seed only ever shows `"1"`).
    pub bind_status: String,
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for AccountBindingCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountBindingCallback")
            .field("partner_reference_no", &self.partner_reference_no)
            .field("account_no", &format_args!("{REDACTED}"))
            .field("account_transaction_limit", &self.account_transaction_limit)
            .field("account_currency", &self.account_currency)
            .field("additional_info", &self.additional_info)
            .finish()
    }
}

impl fmt::Debug for BindingAdditionalInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingAdditionalInfo")
            .field("user_id", &self.user_id)
            .field("token", &format_args!("{REDACTED}"))
            .field("bind_status", &self.bind_status)
            .finish()
    }
}

/// Parses and validates a callback body exactly as received, reporting the first problem in
/// the order the [`crate::bnc`] module describes. Parsing is strict (a repeated member name is
/// refused: the signer may have read the other occurrence). A body that is not UTF-8 JSON, not
/// an object, or repeats a member is `InvalidFormat(`[`BODY_FIELD`]`)`.
///
/// `accountTransactionLimit` may be a string (`"500000.00"`) or a number (`500000.00`); a
/// number is read from its text in the body, so its decimals are judged as sent.
pub fn parse_account_binding(body: &[u8]) -> Result<AccountBindingCallback, SnapFieldError> {
    let invalid_body = || SnapFieldError::format(BODY_FIELD);
    let object = json::parse_object(body).map_err(|_| invalid_body())?;

    let partner_reference_no = mandatory_string(
        &object,
        fields::PARTNER_REFERENCE_NO,
        fields::PARTNER_REFERENCE_NO,
        MAX_PARTNER_REFERENCE_NO_CHARS,
    )?;
    let account_no = mandatory_string(
        &object,
        fields::ACCOUNT_NO,
        fields::ACCOUNT_NO,
        MAX_ACCOUNT_NO_CHARS,
    )?;
    let account_transaction_limit = limit(&object, body)?;
    let additional_info = match object.get(fields::ADDITIONAL_INFO) {
        None | Some(Value::Null) => return Err(SnapFieldError::mandatory(fields::ADDITIONAL_INFO)),
        Some(Value::Object(info)) => additional_info(info)?,
        Some(_) => return Err(SnapFieldError::format(fields::ADDITIONAL_INFO)),
    };
    let account_currency = currency(object.get(fields::ACCOUNT_CURRENCY))?;

    Ok(AccountBindingCallback {
        partner_reference_no,
        account_no,
        account_transaction_limit,
        account_currency,
        additional_info,
    })
}

fn additional_info(info: &Map<String, Value>) -> Result<BindingAdditionalInfo, SnapFieldError> {
    const USER_ID: &str = "additionalInfo.userId";
    const TOKEN: &str = "additionalInfo.token";
    const BIND_STATUS: &str = "additionalInfo.bindStatus";
    Ok(BindingAdditionalInfo {
        user_id: mandatory_string(info, fields::USER_ID, USER_ID, MAX_USER_ID_CHARS)?,
        token: mandatory_string(info, fields::TOKEN, TOKEN, MAX_TOKEN_CHARS)?,
        bind_status: mandatory_string(
            info,
            fields::BIND_STATUS,
            BIND_STATUS,
            MAX_BIND_STATUS_CHARS,
        )?,
    })
}

/// A mandatory string member: absent, `null`, empty or all-blank → mandatory; not a string →
/// format; then [`check_text`].
fn mandatory_string(
    object: &Map<String, Value>,
    name: &str,
    field: &str,
    max_chars: usize,
) -> Result<String, SnapFieldError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(SnapFieldError::mandatory(field)),
        Some(Value::String(s)) => check_text(s, field, max_chars).map(str::to_owned),
        Some(_) => Err(SnapFieldError::format(field)),
    }
}

/// Blank → mandatory; more than `max_chars` characters or a control character (which has no
/// business in a reference, an account number or a token, and would corrupt logs) → format.
fn check_text<'s>(s: &'s str, field: &str, max_chars: usize) -> Result<&'s str, SnapFieldError> {
    if is_blank(s) {
        Err(SnapFieldError::mandatory(field))
    } else if Count::Chars.of(s) > max_chars || s.chars().any(char::is_control) {
        Err(SnapFieldError::format(field))
    } else {
        Ok(s)
    }
}

fn limit(object: &Map<String, Value>, body: &[u8]) -> Result<TransactionLimit, SnapFieldError> {
    const FIELD: &str = fields::ACCOUNT_TRANSACTION_LIMIT;
    let text = match object.get(FIELD) {
        None | Some(Value::Null) => return Err(SnapFieldError::mandatory(FIELD)),
        Some(Value::String(s)) if is_blank(s) => {
            return Err(SnapFieldError::mandatory(FIELD));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(_)) => {
            // serde_json has already turned the number into a float; take its text instead.
            let minified = minify(body).map_err(|_| SnapFieldError::format(BODY_FIELD))?;
            let raw = raw_top_level_member(&minified, FIELD)
                .ok_or_else(|| SnapFieldError::format(FIELD))?;
            String::from_utf8(raw.to_vec()).map_err(|_| SnapFieldError::format(FIELD))?
        }
        Some(_) => return Err(SnapFieldError::format(FIELD)),
    };
    TransactionLimit::parse(&text).ok_or_else(|| SnapFieldError::format(FIELD))
}

fn currency(value: Option<&Value>) -> Result<Option<String>, SnapFieldError> {
    const FIELD: &str = fields::ACCOUNT_CURRENCY;
    match value {
        // Optional: SNAP senders often write "" for "not applicable".
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if is_currency_code(s) => Ok(Some(s.clone())),
        Some(_) => Err(SnapFieldError::format(FIELD)),
    }
}

/// What `Deserialize` reads before [`TryFrom`] applies the same field rules as
/// [`parse_account_binding`]: a stored callback read back is as valid as when it came in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingWire {
    partner_reference_no: String,
    account_no: String,
    account_transaction_limit: TransactionLimit,
    #[serde(default)]
    account_currency: Option<String>,
    additional_info: BindingAdditionalInfo,
}

impl TryFrom<BindingWire> for AccountBindingCallback {
    type Error = SnapFieldError;

    fn try_from(wire: BindingWire) -> Result<Self, Self::Error> {
        check_text(
            &wire.partner_reference_no,
            fields::PARTNER_REFERENCE_NO,
            MAX_PARTNER_REFERENCE_NO_CHARS,
        )?;
        check_text(&wire.account_no, fields::ACCOUNT_NO, MAX_ACCOUNT_NO_CHARS)?;
        let info = &wire.additional_info;
        check_text(&info.user_id, "additionalInfo.userId", MAX_USER_ID_CHARS)?;
        check_text(&info.token, "additionalInfo.token", MAX_TOKEN_CHARS)?;
        check_text(
            &info.bind_status,
            "additionalInfo.bindStatus",
            MAX_BIND_STATUS_CHARS,
        )?;
        let account_currency = currency(wire.account_currency.map(Value::String).as_ref())?;
        Ok(Self {
            partner_reference_no: wire.partner_reference_no,
            account_no: wire.account_no,
            account_transaction_limit: wire.account_transaction_limit,
            account_currency,
            additional_info: wire.additional_info,
        })
    }
}

/// The body with the card token and the account number replaced by `<redacted>`, for copies
/// kept where they must not be readable (the audit table, admin output). Not byte-exact: the
/// raw body's SHA-256 is what proves what was received. A body that is not a JSON object is
/// replaced entirely.
pub fn redact_body(body: &[u8]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return REDACTED.as_bytes().to_vec();
    };
    let Some(object) = value.as_object_mut() else {
        return REDACTED.as_bytes().to_vec();
    };
    if let Some(account) = object.get_mut(fields::ACCOUNT_NO) {
        *account = REDACTED.into();
    }
    if let Some(token) = object
        .get_mut(fields::ADDITIONAL_INFO)
        .and_then(|info| info.as_object_mut())
        .and_then(|info| info.get_mut(fields::TOKEN))
    {
        *token = REDACTED.into();
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| REDACTED.as_bytes().to_vec())
}

#[cfg(test)]
mod tests;
