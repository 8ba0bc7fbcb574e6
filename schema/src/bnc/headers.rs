//! The five SNAP request headers of the BNC callback (DESIGN.md §4, seed §3.1): their names,
//! their length limits, and their validation, first problem first in the seed's order.

use time::OffsetDateTime;

use super::answers::SnapFieldError;
use crate::validation::{is_visible_ascii, parse_rfc3339};

// The names as the seed spells them. Header lookup must be case-insensitive (as
// `http::HeaderMap` is).
pub const X_TIMESTAMP: &str = "X-TIMESTAMP";
pub const X_CLIENT_KEY: &str = "X-CLIENT-KEY";
pub const X_SIGNATURE: &str = "X-SIGNATURE";
pub const X_EXTERNAL_ID: &str = "X-EXTERNAL-ID";
pub const CHANNEL_ID: &str = "CHANNEL-ID";

/// Header length limits (seed §3.1, DESIGN.md §4), in characters (all are ASCII).
pub const MAX_CLIENT_KEY_CHARS: usize = 32;
pub const MAX_SIGNATURE_CHARS: usize = 2048;
pub const MAX_EXTERNAL_ID_CHARS: usize = 36;
pub const MAX_CHANNEL_ID_CHARS: usize = 5;

/// The five SNAP headers, validated. Borrowed from the request: the signature check needs
/// `timestamp` exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapHeaders<'a> {
    /// `X-TIMESTAMP` verbatim; it is signed as text, so never re-format it.
    pub timestamp: &'a str,
    /// `X-TIMESTAMP` parsed (ISO-8601 / RFC 3339 with an offset), for the freshness window.
    pub sent_at: OffsetDateTime,
    /// `X-CLIENT-KEY`: selects the partner and its public keys.
    pub client_key: &'a str,
    /// `X-SIGNATURE`: base64 of the RSA signature (decoded by the verifier).
    pub signature: &'a str,
    /// `X-EXTERNAL-ID`: the partner's request id; with the client key, the dedupe key.
    pub external_id: &'a str,
    /// `CHANNEL-ID`.
    pub channel_id: &'a str,
}

/// Reads and validates the five SNAP headers, stopping at the first problem in the seed's
/// order.
///
/// `get` looks a header up by one of the names above and must be case-insensitive; with axum
/// it is simply `|name| request.headers().get(name)` (a `HeaderValue` is `AsRef<[u8]>`), in
/// tests `|name| map.get(name).copied()` over `&str`s. A header sent twice should be refused by
/// the caller before this (a closure returns one value).
///
/// Rules: every header is mandatory (absent or empty: 4000002) and must be visible ASCII
/// (4000001 otherwise). `X-TIMESTAMP` is RFC 3339 with an explicit offset (`Z` or `+07:00`;
/// fractional seconds allowed, so the seed's 25 characters are not enforced as a maximum);
/// `X-CLIENT-KEY` ≤ 32; `X-SIGNATURE` ≤ 2048 and only base64 characters (whether it decodes
/// is the verifier's call and answered 401); `X-EXTERNAL-ID` ≤ 36; `CHANNEL-ID` ≤ 5.
pub fn validate_headers<'a, V>(
    get: impl Fn(&str) -> Option<&'a V>,
) -> Result<SnapHeaders<'a>, SnapFieldError>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let text = |name: &str, max: usize| -> Result<&'a str, SnapFieldError> {
        let bytes = get(name).map(AsRef::as_ref).unwrap_or_default();
        if bytes.is_empty() {
            return Err(SnapFieldError::mandatory(name));
        }
        match std::str::from_utf8(bytes) {
            Ok(value) if is_visible_ascii(value, max) => Ok(value),
            _ => Err(SnapFieldError::format(name)),
        }
    };

    // Generous bound: the longest RFC 3339 text with nanoseconds is 35 characters.
    let timestamp = text(X_TIMESTAMP, 64)?;
    let sent_at = parse_rfc3339(timestamp).ok_or_else(|| SnapFieldError::format(X_TIMESTAMP))?;
    let client_key = text(X_CLIENT_KEY, MAX_CLIENT_KEY_CHARS)?;
    let signature = text(X_SIGNATURE, MAX_SIGNATURE_CHARS)?;
    if !signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(SnapFieldError::format(X_SIGNATURE));
    }
    let external_id = text(X_EXTERNAL_ID, MAX_EXTERNAL_ID_CHARS)?;
    let channel_id = text(CHANNEL_ID, MAX_CHANNEL_ID_CHARS)?;
    Ok(SnapHeaders {
        timestamp,
        sent_at,
        client_key,
        signature,
        external_id,
        channel_id,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn valid_headers() -> HashMap<&'static str, String> {
        HashMap::from([
            ("X-TIMESTAMP", "2022-09-06T13:00:00+07:00".to_owned()),
            ("X-CLIENT-KEY", "BNC_PARTNER_1".to_owned()),
            ("X-SIGNATURE", "IC8NFuiJ+/w==".to_owned()),
            ("X-EXTERNAL-ID", "77778042022091500001".to_owned()),
            ("CHANNEL-ID", "95221".to_owned()),
        ])
    }

    fn check<'a>(
        headers: &'a HashMap<&'static str, String>,
    ) -> Result<SnapHeaders<'a>, SnapFieldError> {
        validate_headers(|name| headers.get(name).map(String::as_str))
    }

    #[test]
    fn valid_headers_are_borrowed_and_the_timestamp_parsed() {
        let map = valid_headers();
        let headers = check(&map).unwrap();
        assert_eq!(headers.timestamp, "2022-09-06T13:00:00+07:00");
        assert_eq!(headers.sent_at.unix_timestamp(), 1_662_444_000);
        assert_eq!(headers.sent_at.offset().whole_hours(), 7);
        assert_eq!(headers.client_key, "BNC_PARTNER_1");
        assert_eq!(headers.external_id, "77778042022091500001");
        assert_eq!(headers.channel_id, "95221");

        for timestamp in ["2022-09-06T06:00:00Z", "2022-09-06T13:00:00.123+07:00"] {
            let mut map = valid_headers();
            map.insert("X-TIMESTAMP", timestamp.into());
            assert_eq!(check(&map).unwrap().sent_at.unix_timestamp(), 1_662_444_000);
        }
        // Bytes work too (an http::HeaderValue is AsRef<[u8]>).
        let bytes: HashMap<&str, Vec<u8>> = valid_headers()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        assert!(validate_headers(|name| bytes.get(name)).is_ok());
    }

    #[test]
    fn each_header_missing_empty_too_long_or_malformed() {
        for (name, max) in [
            ("X-TIMESTAMP", 0),
            ("X-CLIENT-KEY", 32),
            ("X-SIGNATURE", 2048),
            ("X-EXTERNAL-ID", 36),
            ("CHANNEL-ID", 5),
        ] {
            let mut map = valid_headers();
            map.remove(name);
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidMandatory(name.into()))
            );
            map.insert(name, String::new());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidMandatory(name.into()))
            );
            for bad in ["has space", "tab\t", "é"] {
                map.insert(name, bad.into());
                assert_eq!(
                    check(&map),
                    Err(SnapFieldError::InvalidFormat(name.into())),
                    "{name}: {bad:?}"
                );
            }
            if max > 0 {
                map.insert(name, "A".repeat(max));
                assert!(check(&map).is_ok(), "{name} at {max}");
                map.insert(name, "A".repeat(max + 1));
                assert_eq!(check(&map), Err(SnapFieldError::InvalidFormat(name.into())));
            }
        }
        let bytes: HashMap<&str, Vec<u8>> = valid_headers()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    if k == "CHANNEL-ID" {
                        vec![0xff]
                    } else {
                        v.into_bytes()
                    },
                )
            })
            .collect();
        assert_eq!(
            validate_headers(|name| bytes.get(name)),
            Err(SnapFieldError::InvalidFormat("CHANNEL-ID".into()))
        );
    }

    #[test]
    fn timestamps_need_an_offset_and_signatures_base64_characters() {
        for bad in [
            "2022-09-06T13:00:00",
            "2022-09-06 13:00:00+07:00",
            "2022-09-06T13:00:00+0700",
            "06/09/2022",
            "1662444000",
        ] {
            let mut map = valid_headers();
            map.insert("X-TIMESTAMP", bad.into());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidFormat("X-TIMESTAMP".into())),
                "{bad}"
            );
        }
        for bad in ["abc-_", "abc*", "YWJj\\"] {
            let mut map = valid_headers();
            map.insert("X-SIGNATURE", bad.into());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidFormat("X-SIGNATURE".into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_are_checked_in_seed_order() {
        let empty: HashMap<&str, String> = HashMap::new();
        assert_eq!(
            check(&empty),
            Err(SnapFieldError::InvalidMandatory("X-TIMESTAMP".into()))
        );
        let mut map = valid_headers();
        map.remove("CHANNEL-ID");
        map.insert("X-CLIENT-KEY", "K".repeat(33));
        map.insert("X-EXTERNAL-ID", String::new());
        assert_eq!(
            check(&map),
            Err(SnapFieldError::InvalidFormat("X-CLIENT-KEY".into()))
        );
    }
}
