//! Reading a JSON body the way every validator reads it (DESIGN.md §3.2, §4, §5): one strict
//! parser, and the member readers that turn a wrong member into a [`FieldError`] at its path.
//!
//! The validators walk a `serde_json::Value` by hand instead of deriving `Deserialize`, so that
//! one answer lists every problem with its JSON path rather than serde's first error only; these
//! are the steps they share. The wording of each error is part of the contract (bodies in §3.3
//! and §5 carry it), so a reader here never rewords what a caller passes in.

use std::ops::RangeInclusive;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::validation::{BodyError, Count, FieldError};

/// Parses JSON, refusing a member name repeated in one object: parsers disagree on which
/// occurrence wins, and the signer may have read the other one.
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice::<StrictValue>(body)
        .map(|strict| strict.0)
        .map_err(|e| BodyError::Malformed(e.to_string()))
}

/// [`parse_json`], then the body must be an object: every body of the contract is one.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match parse_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(BodyError::Invalid(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )])),
    }
}

/// A `serde_json::Value` whose objects have unique member names.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "member `{name}` appears twice"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// A member that may be absent or null, and is a string otherwise.
pub fn optional_string(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
    }
}

/// A member that must be a string: absent or null is "is required".
pub fn required_string(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    if object.get(name).is_none_or(Value::is_null) {
        errors.push(FieldError::new(path, "is required"));
        return None;
    }
    optional_string(object, name, path, errors)
}

/// Whether `s` is `allowed` long, counted as `count`; if not, one error at `path`: "must be at
/// most N characters" for a range from 0, "must be M..=N characters" otherwise.
pub fn check_length(
    s: &str,
    allowed: RangeInclusive<usize>,
    count: Count,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> bool {
    if allowed.contains(&count.of(s)) {
        return true;
    }
    let (min, max) = allowed.into_inner();
    let message = if min == 0 {
        format!("must be at most {max} characters")
    } else {
        format!("must be {min}..={max} characters")
    };
    errors.push(FieldError::new(path, message));
    false
}

/// A date-time: a string that `parse` accepts; anything else is `expected` at `path`. Each
/// source has its own date-time grammar and its own example in the message, so both are given.
pub fn date_time(
    value: &Value,
    parse: impl FnOnce(&str) -> Option<OffsetDateTime>,
    expected: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<OffsetDateTime> {
    let parsed = value.as_str().and_then(parse);
    if parsed.is_none() {
        errors.push(FieldError::new(path, expected));
    }
    parsed
}

/// [`date_time`] of a member that may be absent or null.
pub fn optional_date_time(
    object: &Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&str) -> Option<OffsetDateTime>,
    expected: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<OffsetDateTime> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(value) => date_time(value, parse, expected, path, errors),
    }
}
