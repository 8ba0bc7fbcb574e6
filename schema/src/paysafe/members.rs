//! The member rules that Paysafe's webhook and the `paysafe.track` command share (DESIGN.md §5):
//! ids safe to put in a URL and a log, merchant references, amounts in whole minor units,
//! currency codes, and Paysafe's date-times. Each reader reports into the caller's list, at the
//! path the caller gives, so the webhook's `payload.amount` and the command's `amount` follow
//! one rule.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::json::{check_length, optional_string, required_string};
use crate::validation::{Count, FieldError, is_currency_code, parse_rfc3339};

/// Longest Paysafe id accepted (payment, credit, payment handle). Paysafe ids are UUIDs (36
/// characters); the bound leaves room and keeps a hostile id out of URLs and logs.
pub const MAX_ID_CHARS: usize = 64;

/// Paysafe's own limit on `merchantRefNum`.
pub const MAX_MERCHANT_REF_CHARS: usize = 255;

/// A Paysafe id as the connector accepts it: 1..=64 of `A-Z a-z 0-9 - _`. Paysafe ids are
/// UUIDs; the restriction lets an id go into a URL path and a log line as it is.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An id member (see [`is_valid_id`]) that may be absent or null.
pub(super) fn optional_id(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let id = optional_string(object, name, path, errors)?;
    if is_valid_id(&id) {
        Some(id)
    } else {
        errors.push(FieldError::new(
            path,
            format!("must be 1..={MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '-' and '_'"),
        ));
        None
    }
}

/// `merchantRefNum`: 1..=255 characters.
pub(super) fn merchant_ref(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let s = string(object, path, required, errors)?;
    check_length(&s, 1..=MAX_MERCHANT_REF_CHARS, Count::Chars, path, errors).then_some(s)
}

/// Whole minor units: a non-negative JSON integer or a string of digits, at most i64::MAX.
pub(super) fn amount(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    let parsed = match object.get(member_name(path)) {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new(path, "is required"));
            }
            return None;
        }
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 0),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok()
        }
        Some(_) => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::new(
            path,
            "must be a non-negative integer amount in minor units (546 for 5.46)",
        ));
    }
    parsed
}

/// `currencyCode`: ISO 4217, three upper-case letters.
pub(super) fn currency(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let s = string(object, path, required, errors)?;
    if is_currency_code(&s) {
        Some(s)
    } else {
        errors.push(FieldError::new(
            path,
            "must be an ISO 4217 code of three upper-case letters, such as CAD",
        ));
        None
    }
}

/// The string member that `path` ends with (`payload.amount` is member `amount`).
fn string(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let name = member_name(path);
    if required {
        required_string(object, name, path, errors)
    } else {
        optional_string(object, name, path, errors)
    }
}

fn member_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Paysafe's date-times: RFC 3339 (`2021-10-06T13:18:58Z`), or the offset without a colon that
/// some of its objects use (`2021-10-06T13:18:58.000+0000`, in the seed's `settlements`).
pub fn parse_paysafe_time(s: &str) -> Option<OffsetDateTime> {
    let compact_offset = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][offset_minute]"
    );
    parse_rfc3339(s).or_else(|| OffsetDateTime::parse(s, compact_offset).ok())
}
