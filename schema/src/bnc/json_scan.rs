//! A byte-level scanner of JSON text for the BNC signature (DESIGN.md §4): [`minify`] and the
//! raw text of a top-level member.
//!
//! The signature covers the body exactly as received minus the whitespace outside strings, and
//! `accountTransactionLimit` must be judged from its text as sent (`500000.00`), so neither can
//! go through a JSON parser and back. The scanner only knows where strings begin and end; the
//! JSON itself is judged by the strict parser first.

/// Why a body cannot be minified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinifyError {
    /// A string opened at this byte offset is never closed: where its end should be is
    /// unknowable, so is which whitespace to drop.
    #[error("unterminated JSON string starting at byte {0}")]
    UnterminatedString(usize),
}

/// Removes the JSON whitespace (space, tab, line feed, carriage return) outside strings, byte
/// for byte, as SNAP's `minify(<Request Body>)` does before hashing.
///
/// Everything else is kept exactly as received: numbers keep their text (`500000.00` stays
/// `500000.00`, `5e5` stays `5e5`), strings keep their spaces and escapes (`\"` and `\\` are
/// recognised so an escaped quote does not end a string), and non-ASCII bytes pass through
/// untouched (UTF-8 continuation bytes can never look like `"` or `\`). This is not a JSON
/// validator: it only needs to know where strings start and end, and leaves judging the JSON
/// to [`super::parse_account_binding`]. The only error is a string that never ends.
pub fn minify(body: &[u8]) -> Result<Vec<u8>, MinifyError> {
    let mut out = Vec::with_capacity(body.len());
    // Offset of the opening quote of the string we are in, if any.
    let mut string_start: Option<usize> = None;
    let mut escaped = false;
    for (offset, &byte) in body.iter().enumerate() {
        match string_start {
            Some(_) => {
                out.push(byte);
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    string_start = None;
                }
            }
            None => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    string_start = Some(offset);
                    out.push(byte);
                }
                _ => out.push(byte),
            },
        }
    }
    match string_start {
        Some(start) => Err(MinifyError::UnterminatedString(start)),
        None => Ok(out),
    }
}

/// The raw text of member `name` of the top-level object of `minified` (which must be
/// minified, well-formed JSON with unique member names, as the strict parser has checked).
/// Member names are compared decoded, so an escaped spelling of the name still matches.
pub(super) fn raw_top_level_member<'b>(minified: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let mut i = 0;
    if minified.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        if minified.get(i) != Some(&b'"') {
            return None; // `}` of an object without (more) members
        }
        let key_end = end_of_string(minified, i)?;
        let key: String = serde_json::from_slice(&minified[i..key_end]).ok()?;
        if minified.get(key_end) != Some(&b':') {
            return None;
        }
        let start = key_end + 1;
        let end = end_of_value(minified, start)?;
        if key == name {
            return Some(&minified[start..end]);
        }
        if minified.get(end) != Some(&b',') {
            return None;
        }
        i = end + 1;
    }
}

/// Index just after the string that opens at `start` (which holds `"`).
fn end_of_string(bytes: &[u8], start: usize) -> Option<usize> {
    let mut escaped = false;
    for (offset, &byte) in bytes.get(start + 1..)?.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            return Some(start + 1 + offset + 1);
        }
    }
    None
}

/// Index of the `,` or closing bracket that ends the value starting at `start`.
fn end_of_value(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => {
                i = end_of_string(bytes, i)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bnc::string_to_sign;

    #[test]
    fn minify_drops_only_whitespace_outside_strings() {
        let body =
            b" {\r\n\t\"a b\" : [ 1 , 2.50 , -0.0e+1 ] ,\n \"c\":{ \"d\" :\"x  y\\t\" } } \n";
        assert_eq!(
            minify(body).unwrap(),
            b"{\"a b\":[1,2.50,-0.0e+1],\"c\":{\"d\":\"x  y\\t\"}}"
        );
    }

    #[test]
    fn minify_understands_escaped_quotes_and_backslashes() {
        // `\"` does not end the string; `\\` does not escape the closing quote.
        let body = br#"{ "q" : "say \"hi  there\" ", "b" : "ends in \\", "n" : 1 }"#;
        assert_eq!(
            minify(body).unwrap(),
            br#"{"q":"say \"hi  there\" ","b":"ends in \\","n":1}"#
        );
        let body = br#"[ "\\\" still  inside" , 2 ]"#;
        assert_eq!(minify(body).unwrap(), br#"["\\\" still  inside",2]"#);
    }

    #[test]
    fn minify_keeps_unicode_and_other_bytes() {
        let body = "{ \"name\" : \"Budi  Śantoso 🙂\" , \"u\" : \"\\u00e9 \" }\u{a0}".as_bytes();
        assert_eq!(
            minify(body).unwrap(),
            "{\"name\":\"Budi  Śantoso 🙂\",\"u\":\"\\u00e9 \"}\u{a0}".as_bytes(),
            "non-breaking space is not JSON whitespace"
        );
        assert_eq!(minify(b"").unwrap(), b"");
        assert_eq!(minify(b" \n\t\r").unwrap(), b"");
    }

    #[test]
    fn minify_refuses_an_unterminated_string() {
        assert_eq!(
            minify(br#"{"a": "open"#),
            Err(MinifyError::UnterminatedString(6))
        );
        assert_eq!(
            minify(br#"{"a": "ends in escape\""#),
            Err(MinifyError::UnterminatedString(6))
        );
        assert!(string_to_sign("POST", "/p", br#"{"a"#, "t").is_err());
    }
}
