//! `accountTransactionLimit` of the BNC callback (DESIGN.md §4, seed §3.2): a decimal(8,2)
//! kept exact, from its text, never through a float.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `accountTransactionLimit` is a decimal(8,2): at most 6 digits before the point and 2 after.
pub const MAX_LIMIT_INTEGER_DIGITS: usize = 6;
pub const MAX_LIMIT_FRACTION_DIGITS: usize = 2;

/// `accountTransactionLimit`: a non-negative decimal(8,2), kept exact. Holds the normalised
/// text (`"500000.00"`: no leading zeros, exactly two decimals) and the same value in minor
/// units (`50000000`); never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionLimit {
    text: String,
    minor_units: i64,
}

impl TransactionLimit {
    /// Parses the limit's text: digits, optionally `.` and one or two digits. Refused: a sign,
    /// an exponent (`1e5`: a signer may have minified it differently and the value is not a
    /// decimal(8,2) literal), a third decimal place (even a zero: `1.230`), a bare `.5` or
    /// `5.`, surrounding spaces, and more than 6 significant integer digits. Leading zeros are
    /// accepted and dropped.
    pub fn parse(text: &str) -> Option<Self> {
        let (integer, fraction) = match text.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(integer) {
            return None;
        }
        if let Some(fraction) = fraction
            && (!all_digits(fraction) || fraction.len() > MAX_LIMIT_FRACTION_DIGITS)
        {
            return None;
        }
        let integer = integer.trim_start_matches('0');
        if integer.len() > MAX_LIMIT_INTEGER_DIGITS {
            return None;
        }
        let integer = if integer.is_empty() { "0" } else { integer };
        let mut fraction = fraction.unwrap_or_default().to_owned();
        while fraction.len() < MAX_LIMIT_FRACTION_DIGITS {
            fraction.push('0');
        }
        let minor_units = format!("{integer}{fraction}").parse::<i64>().ok()?;
        Some(Self {
            text: format!("{integer}.{fraction}"),
            minor_units,
        })
    }

    /// The normalised decimal text, such as `500000.00`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in hundredths (`500000.00` → `50000000`).
    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }
}

impl fmt::Display for TransactionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Serialised as its normalised string (`"500000.00"`), so it survives any JSON reader.
impl Serialize for TransactionLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Reads a string (what [`Serialize`] writes) or an integer. A JSON number with a fraction is
/// refused here because serde would already have turned it into a float; bodies as received
/// go through [`super::parse_account_binding`], which reads the number's text.
impl<'de> Deserialize<'de> for TransactionLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;
        impl serde::de::Visitor<'_> for LimitVisitor {
            type Value = TransactionLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal(8,2) as a string such as \"500000.00\", or an integer")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                TransactionLimit::parse(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(LimitVisitor)
    }
}
