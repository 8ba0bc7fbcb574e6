//! The Corelink request headers (DESIGN.md §3): their canonical names, as the envelope records
//! them, and the exact grammars of the two whose value the ingress judges before the signature
//! (`X-Timestamp`, `Content-Type`). The other headers are checked where they are used (the
//! visible-ASCII rule in `validation`, the JWS in the ingress).

use time::OffsetDateTime;

use crate::validation::parse_rfc3339;

// The names in lower case: HTTP header names are case-insensitive, and the envelope keeps them
// in this one spelling so a worker re-verifying a request finds them.
pub const CLIENT_ID: &str = "x-client-id";
pub const TIMESTAMP: &str = "x-timestamp";
pub const NONCE: &str = "x-nonce";
pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
pub const SIGNATURE: &str = "x-signature";
pub const CONTENT_TYPE: &str = "content-type";

/// `X-Timestamp` as §3 accepts it, parsed: RFC 3339 in UTC, exactly
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1..=9 digits, then `Z` or `+00:00` (the same
/// instant written as an offset). Anything else is `None`: another offset, `-00:00` (RFC 3339's
/// "offset unknown"), a lower-case `t` or `z`, or a date that does not exist. The OpenAPI
/// description gives the same grammar as a pattern.
pub fn parse_request_timestamp(text: &str) -> Option<OffsetDateTime> {
    let date_time = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (seconds, fraction) = match date_time.split_once('.') {
        Some((seconds, fraction)) => (seconds, Some(fraction)),
        None => (date_time, None),
    };
    let shape_ok = seconds.len() == 19
        && seconds.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
        && fraction
            .is_none_or(|f| (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()));
    if !shape_ok {
        return None;
    }
    parse_rfc3339(text)
}

/// `Content-Type` as §3 accepts it: `application/json`, alone or with the one parameter
/// `charset=utf-8` (JSON is UTF-8, RFC 8259), the media type and charset in any case. The
/// signature covers the header as sent, whichever of these the bank chose.
pub fn is_json_content_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return false;
    }
    match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(parameter), None) => parameter
            .trim()
            .split_once('=')
            .is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("charset")
                    && ["utf-8", "\"utf-8\""]
                        .iter()
                        .any(|accepted| value.eq_ignore_ascii_case(accepted))
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timestamps_are_utc_rfc3339_exactly() {
        for accepted in [
            "2025-11-19T07:15:00Z",
            "2025-11-19T07:15:00+00:00",
            "2025-11-19T07:15:00.5Z",
            "2025-11-19T07:15:00.123456789+00:00",
            "2024-02-29T23:59:59Z",
        ] {
            assert!(parse_request_timestamp(accepted).is_some(), "{accepted}");
        }
        for refused in [
            "2025-11-19T07:15:00+01:00",
            "2025-11-19T07:15:00-00:00",
            "2025-11-19t07:15:00Z",
            "2025-11-19T07:15:00z",
            "2025-11-19 07:15:00Z",
            "2025-11-19T07:15Z",
            "2025-11-19T07:15:00.Z",
            "2025-11-19T07:15:00.1234567890Z",
            "2025-02-30T07:15:00Z",
            "2025-13-01T07:15:00Z",
            "+2025-11-19T07:15:00Z",
            "2025-11-19T07:15:00",
            "",
        ] {
            assert!(parse_request_timestamp(refused).is_none(), "{refused}");
        }
        assert_eq!(
            parse_request_timestamp("2025-11-19T07:15:00+00:00"),
            parse_request_timestamp("2025-11-19T07:15:00Z")
        );
    }

    #[test]
    fn the_json_content_type_with_or_without_its_charset() {
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
        ] {
            assert!(is_json_content_type(accepted), "{accepted}");
        }
        for refused in [
            "text/json",
            "application/json; charset=latin-1",
            "application/json; charset=utf-8; version=2",
            "application/json; version=2",
            "application/jsonx",
            "application/json-patch+json",
            "",
        ] {
            assert!(!is_json_content_type(refused), "{refused}");
        }
    }
}
