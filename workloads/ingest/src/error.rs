//! Why a record was rejected: the typed [`ParseError`] every parser returns, and the
//! [`RejectReason`] label it is counted under.

use std::fmt;

use crate::json::Doc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Values quoted in error messages are cut to this many characters, so a garbage field
/// cannot make a reason as long as the line it came from.
const QUOTED_VALUE_CHARS: usize = 64;

/// Why one line could not become an event. The message is meant for a person reading a
/// dead letter or a log line; [`ParseError::reason`] gives the label it is counted under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line is {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("line is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("not JSON: {0}")]
    InvalidJson(String),
    /// JSON nested deeper than the event can hold and still be read back (counted as
    /// `invalid_json`, which is what the stages reading it would find).
    #[error("JSON nested more than {max} levels deep, too deep for the event to be read back")]
    TooDeep { max: usize },
    #[error("JSON value is {found}, not an object")]
    NotAnObject { found: &'static str },
    #[error("missing {field}")]
    MissingField { field: &'static str },
    /// The record lacks the timestamp field the Sensor names (`timestampField`).
    #[error("missing the Sensor's timestampField {field:?}")]
    MissingTimestampField { field: String },
    #[error("field {field}: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field {field}: {value:?} is not a timestamp with a UTC offset")]
    InvalidTimestamp { field: String, value: String },
    #[error("field {field}: {value:?} is not an IP address")]
    InvalidIp { field: String, value: String },
    #[error("row has {found} columns, the #fields header declares {expected}")]
    ColumnCount { found: usize, expected: usize },
    #[error("field {field}: {value:?} {problem}")]
    InvalidValue {
        field: String,
        value: String,
        problem: &'static str,
    },
}

impl ParseError {
    /// The label this rejection is counted under.
    pub fn reason(&self) -> RejectReason {
        match self {
            ParseError::TooLong { .. } => RejectReason::TooLong,
            ParseError::InvalidUtf8 { .. } => RejectReason::InvalidUtf8,
            ParseError::InvalidJson(_) | ParseError::TooDeep { .. } => RejectReason::InvalidJson,
            ParseError::NotAnObject { .. } => RejectReason::NotAnObject,
            ParseError::MissingField { .. } | ParseError::MissingTimestampField { .. } => {
                RejectReason::MissingField
            }
            ParseError::WrongType { .. } => RejectReason::WrongType,
            ParseError::InvalidTimestamp { .. } => RejectReason::InvalidTimestamp,
            ParseError::InvalidIp { .. } => RejectReason::InvalidIp,
            ParseError::InvalidValue { .. } | ParseError::ColumnCount { .. } => {
                RejectReason::InvalidValue
            }
        }
    }

    pub(crate) fn wrong_type(field: &str, expected: &'static str, found: &impl JsonType) -> Self {
        ParseError::WrongType {
            field: field.to_owned(),
            expected,
            found: found.json_type_name(),
        }
    }

    pub(crate) fn invalid_timestamp(field: &str, value: &str) -> Self {
        ParseError::InvalidTimestamp {
            field: field.to_owned(),
            value: quoted(value),
        }
    }

    pub(crate) fn invalid_ip(field: &str, value: &str) -> Self {
        ParseError::InvalidIp {
            field: field.to_owned(),
            value: quoted(value),
        }
    }

    pub(crate) fn invalid_value(field: &str, value: &str, problem: &'static str) -> Self {
        ParseError::InvalidValue {
            field: field.to_owned(),
            value: quoted(value),
            problem,
        }
    }
}

/// The kind of a rejection: a small closed set, fit to be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    TooLong,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidTimestamp,
    InvalidIp,
    InvalidValue,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::TooLong,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidTimestamp,
        RejectReason::InvalidIp,
        RejectReason::InvalidValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLong => "too_long",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::InvalidIp => "invalid_ip",
            RejectReason::InvalidValue => "invalid_value",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON value of either representation, named by its type in error messages.
pub(crate) trait JsonType {
    fn json_type_name(&self) -> &'static str;
}

impl JsonType for Value {
    fn json_type_name(&self) -> &'static str {
        json_type_name(self)
    }
}

impl JsonType for crate::json::Doc<'_> {
    fn json_type_name(&self) -> &'static str {
        match self {
            Doc::Null => "null",
            Doc::Bool(_) => "a boolean",
            Doc::Number(_) => "a number",
            Doc::String(_) => "a string",
            Doc::Array(_) => "an array",
            Doc::Object(_) => "an object",
        }
    }
}

/// "a string", "an object"…: how error messages name what was found.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_index_and_label() {
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            let json = serde_json::to_string(reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let value = "x".repeat(500);
        let message = ParseError::invalid_ip("src_ip", &value).to_string();
        assert!(message.len() < 120, "{message}");
        assert!(message.contains('…'));
    }
}
