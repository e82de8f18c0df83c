//! The record formats a Sensor can declare, the entry point that parses one line in a
//! given format, and the guess at a format from a sample line.

use std::fmt;
use std::str::FromStr;

use kastell_core::Event;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{json_type_name, ParseError};
use crate::{suricata, wazuh};

/// The default for [`ParseOptions::max_line_bytes`]: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// A record format this build can parse, named as the Sensor resource's `format` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Suricata EVE JSON, one object per line.
    SuricataEve,
    /// Wazuh's `alerts.json`, one alert per line.
    WazuhAlerts,
}

/// Sensor formats that the resource schema allows but this build cannot parse yet.
const PLANNED: [&str; 5] = ["zeek", "ossec", "syslog", "json-lines", "greenbone"];

impl Format {
    pub const ALL: [Format; 2] = [Format::SuricataEve, Format::WazuhAlerts];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::SuricataEve => "suricata-eve",
            Format::WazuhAlerts => "wazuh-alerts",
        }
    }

    /// The ECS `event.dataset` of events in this format.
    pub fn dataset(self) -> &'static str {
        match self {
            Format::SuricataEve => suricata::DATASET,
            Format::WazuhAlerts => wazuh::DATASET,
        }
    }

    /// Parses one record (without its line terminator) into a normalised event.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event in this format.
    pub fn parse(self, line: &[u8], ctx: &ParseContext) -> Result<Event, ParseError> {
        parse_line(self, line, ctx)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a format name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("format {0} is not supported by this build yet")]
    NotSupportedYet(String),
    #[error("unknown format {0:?}; expected one of suricata-eve, wazuh-alerts, zeek, ossec, syslog, json-lines, greenbone")]
    Unknown(String),
}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if let Some(format) = Format::ALL.into_iter().find(|f| f.as_str() == name) {
            return Ok(format);
        }
        if PLANNED.contains(&name) {
            return Err(FormatError::NotSupportedYet(name.to_owned()));
        }
        Err(FormatError::Unknown(name.to_owned()))
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Limits and switches that apply to every parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Longer lines are rejected without being parsed.
    pub max_line_bytes: usize,
    /// Keep the raw line as `event.original`. Off by default: it roughly doubles the size
    /// of every event, and the whole record is kept under the source's namespace anyway.
    pub keep_original: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            keep_original: false,
        }
    }
}

/// What a parser needs beyond the line: the Sensor it came through and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseContext {
    /// The Sensor resource's name, written to `observer.name`.
    pub sensor: String,
    pub options: ParseOptions,
}

impl ParseContext {
    pub fn new(sensor: impl Into<String>) -> Self {
        ParseContext {
            sensor: sensor.into(),
            options: ParseOptions::default(),
        }
    }

    pub fn with_options(mut self, options: ParseOptions) -> Self {
        self.options = options;
        self
    }
}

/// Parses one record in `format`. The checks every format shares (length, encoding,
/// JSON object) happen here; the mapping to ECS is the format module's.
///
/// # Errors
///
/// A [`ParseError`] saying why the record is not a valid event in this format.
pub fn parse_line(format: Format, line: &[u8], ctx: &ParseContext) -> Result<Event, ParseError> {
    let max = ctx.options.max_line_bytes;
    if line.len() > max {
        return Err(ParseError::TooLong {
            len: line.len(),
            max,
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| ParseError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches(['\r', '\n']);
    let record = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(record)) => record,
        Ok(other) => {
            return Err(ParseError::NotAnObject {
                found: json_type_name(&other),
            })
        }
        Err(e) => return Err(ParseError::InvalidJson(e.to_string())),
    };
    let original = ctx.options.keep_original.then_some(text);
    match format {
        Format::SuricataEve => suricata::normalise(record, original, ctx),
        Format::WazuhAlerts => wazuh::normalise(record, original, ctx),
    }
}

/// Guesses the format of a stream from one of its lines: Suricata EVE records carry an
/// `event_type`, Wazuh alerts a `rule` and an `agent` object. `None` when the line is not
/// a JSON object or matches neither.
pub fn detect_format(line: &[u8]) -> Option<Format> {
    let text = std::str::from_utf8(line).ok()?;
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(text.trim()) else {
        return None;
    };
    if record.get("event_type").is_some_and(Value::is_string) {
        return Some(Format::SuricataEve);
    }
    let is_object = |key| record.get(key).is_some_and(Value::is_object);
    if is_object("rule") && is_object("agent") {
        return Some(Format::WazuhAlerts);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_sensor_schema() {
        for format in Format::ALL {
            assert_eq!(format.as_str().parse::<Format>(), Ok(format));
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), format);
        }
    }

    #[test]
    fn planned_formats_say_they_are_not_supported_yet() {
        for name in PLANNED {
            let err = name.parse::<Format>().unwrap_err();
            assert_eq!(err, FormatError::NotSupportedYet(name.to_owned()));
            assert_eq!(
                err.to_string(),
                format!("format {name} is not supported by this build yet")
            );
        }
        assert!(matches!(
            "suricata".parse::<Format>(),
            Err(FormatError::Unknown(_))
        ));
        let err = serde_json::from_str::<Format>("\"zeek\"").unwrap_err();
        assert!(err.to_string().contains("not supported by this build yet"));
    }
}
