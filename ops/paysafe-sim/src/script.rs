//! What a test tells the simulator: per item, the statuses Paysafe answers poll after poll,
//! and the faults injected before them. The JSON shapes here are the control API's and the
//! `--script` file's (see the README).

use connector_schema::paysafe::{PaysafeError, TrackedKind, is_valid_id};
use serde::{Deserialize, Serialize};

/// Longest injectable delay: long enough for any client timeout, short enough that a forgotten
/// fault does not hang a test run.
pub const MAX_DELAY_MS: u64 = 600_000;

/// One payment or standalone credit that the GET API knows, and how its status progresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemScript {
    pub kind: TrackedKind,
    /// The Paysafe id (it appears in the GET path).
    pub id: String,
    pub merchant_ref_num: String,
    /// Minor units.
    pub amount: i64,
    pub currency_code: String,
    /// Answered in order; see [`Step`]. The last step sticks.
    pub steps: Vec<Step>,
    /// Consumed in order by this item's GETs before its progression answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
}

/// One status and how many successful GETs answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Any text: a status of §5, or one the connector does not know (to test that a poller
    /// treats it as non-final).
    pub status: String,
    /// How many 200 answers carry this status before the next step; required on every step
    /// but the last, which answers forever (`[{"status":"PROCESSING"}]` never completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polls: Option<u32>,
    /// The transaction's `error` member (why it FAILED), when wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PaysafeError>,
}

impl Step {
    pub fn new(status: &str, polls: Option<u32>) -> Self {
        Self {
            status: status.to_owned(),
            polls,
            error: None,
        }
    }
}

/// An injected fault. `count` is how many GETs it affects (absent: every GET from then on).
/// Error answers use Paysafe's error body and do not advance the progression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// 429, code 1200, with `Retry-After` when `retryAfterSecs` is given.
    RateLimit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        #[serde(
            default,
            rename = "retryAfterSecs",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after_secs: Option<u64>,
    },
    /// 500, code 1000.
    ServerError {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    /// 401, code 5279, as if the API key had been revoked.
    Unauthorized {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    /// Any status and code, for what the others do not cover (403, 502, 503, ...).
    HttpError {
        status: u16,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    /// Wait `ms` before answering normally (the wait counts as in flight).
    Delay {
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
}

impl Fault {
    /// How many GETs it affects; `None` is forever.
    pub fn count(&self) -> Option<u32> {
        match self {
            Self::RateLimit { count, .. }
            | Self::ServerError { count }
            | Self::Unauthorized { count }
            | Self::HttpError { count, .. }
            | Self::Delay { count, .. } => *count,
        }
    }

    pub fn validate(&self) -> Result<(), ScriptError> {
        if self.count() == Some(0) {
            return Err(ScriptError::new("a fault's count must be at least 1"));
        }
        match self {
            Self::HttpError { status, code, .. } => {
                if !(400..=599).contains(status) {
                    return Err(ScriptError::new("http_error status must be 400..=599"));
                }
                if code.is_empty() {
                    return Err(ScriptError::new("http_error code must not be empty"));
                }
            }
            Self::Delay { ms, .. } if *ms > MAX_DELAY_MS => {
                return Err(ScriptError::new(format!(
                    "a delay is at most {MAX_DELAY_MS} ms"
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

impl ItemScript {
    /// A script whose item answers `steps` (no faults).
    pub fn new(
        kind: TrackedKind,
        id: &str,
        merchant_ref_num: &str,
        amount: i64,
        currency_code: &str,
        steps: Vec<Step>,
    ) -> Self {
        Self {
            kind,
            id: id.to_owned(),
            merchant_ref_num: merchant_ref_num.to_owned(),
            amount,
            currency_code: currency_code.to_owned(),
            steps,
            faults: Vec::new(),
        }
    }

    pub fn with_faults(mut self, faults: Vec<Fault>) -> Self {
        self.faults = faults;
        self
    }

    pub fn validate(&self) -> Result<(), ScriptError> {
        if !is_valid_id(&self.id) {
            return Err(ScriptError::new(
                "id must be 1..=64 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        if self.merchant_ref_num.is_empty() {
            return Err(ScriptError::new("merchantRefNum must not be empty"));
        }
        if self.amount < 0 {
            return Err(ScriptError::new("amount must not be negative"));
        }
        if self.currency_code.len() != 3
            || !self.currency_code.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(ScriptError::new(
                "currencyCode must be three upper-case letters",
            ));
        }
        let Some((_, leading)) = self.steps.split_last() else {
            return Err(ScriptError::new("steps must hold at least one step"));
        };
        for (index, step) in self.steps.iter().enumerate() {
            if step.status.is_empty() {
                return Err(ScriptError::new(format!(
                    "steps[{index}].status must not be empty"
                )));
            }
            if step.polls == Some(0) {
                return Err(ScriptError::new(format!(
                    "steps[{index}].polls must be at least 1"
                )));
            }
        }
        if let Some(index) = leading.iter().position(|step| step.polls.is_none()) {
            return Err(ScriptError::new(format!(
                "steps[{index}].polls is required: only the last step may answer forever"
            )));
        }
        self.faults.iter().try_for_each(Fault::validate)
    }
}

/// A `--script` file: a bare array of items, or items plus faults that apply to every GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScriptFile {
    Items(Vec<ItemScript>),
    Full {
        items: Vec<ItemScript>,
        #[serde(default, rename = "globalFaults")]
        global_faults: Vec<Fault>,
    },
}

impl ScriptFile {
    pub fn into_parts(self) -> (Vec<ItemScript>, Vec<Fault>) {
        match self {
            Self::Items(items) => (items, Vec::new()),
            Self::Full {
                items,
                global_faults,
            } => (items, global_faults),
        }
    }
}

/// Why a script or fault list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid script: {0}")]
pub struct ScriptError(pub String);

impl ScriptError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_readme_shapes() {
        let script: ItemScript = serde_json::from_str(
            r#"{"kind":"standalone_credit","id":"c-1","merchantRefNum":"m-1","amount":500,
               "currencyCode":"CAD",
               "steps":[{"status":"PROCESSING","polls":2},{"status":"COMPLETED","polls":1},
                        {"status":"FAILED","error":{"code":"3022","message":"returned"}}],
               "faults":[{"fault":"rate_limit","count":2,"retryAfterSecs":1},
                         {"fault":"server_error","count":1},{"fault":"delay","ms":50},
                         {"fault":"http_error","status":503,"code":"1000","count":1},
                         {"fault":"unauthorized","count":1}]}"#,
        )
        .unwrap();
        script.validate().unwrap();
        assert_eq!(script.faults.len(), 5);
        assert_eq!(script.faults[2].count(), None);
        let again: ItemScript =
            serde_json::from_value(serde_json::to_value(&script).unwrap()).unwrap();
        assert_eq!(again, script);

        let file: ScriptFile = serde_json::from_str(
            r#"{"items":[],"globalFaults":[{"fault":"delay","ms":10,"count":1}]}"#,
        )
        .unwrap();
        assert_eq!(file.into_parts().1.len(), 1);
        let file: ScriptFile = serde_json::from_str("[]").unwrap();
        assert!(file.into_parts().0.is_empty());
    }

    #[test]
    fn refuses_bad_scripts() {
        let good = ItemScript::new(
            TrackedKind::Payment,
            "p-1",
            "m",
            546,
            "CAD",
            vec![
                Step::new("PROCESSING", Some(1)),
                Step::new("COMPLETED", None),
            ],
        );
        good.validate().unwrap();
        let mut bad = good.clone();
        bad.steps = vec![Step::new("PROCESSING", None), Step::new("COMPLETED", None)];
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.steps.clear();
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.id = "a/b".into();
        assert!(bad.validate().is_err());
        let bad = good
            .clone()
            .with_faults(vec![Fault::ServerError { count: Some(0) }]);
        assert!(bad.validate().is_err());
        let bad = good.with_faults(vec![Fault::HttpError {
            status: 200,
            code: "1".into(),
            message: None,
            count: None,
        }]);
        assert!(bad.validate().is_err());
    }
}
