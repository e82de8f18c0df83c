//! The record formats a Sensor can declare, the entry point that parses one line in a
//! given format, and the guess at a format from a sample line.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use kastell_core::Event;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ecs::{EventJson, Output};
use crate::error::ParseError;
use crate::json::Members;
use crate::zone::LocalZone;
use crate::{greenbone, json_lines, ossec, suricata, syslog, wazuh, zeek};

/// The default for [`ParseOptions::max_line_bytes`]: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// A record format this build can parse, named as the Sensor resource's `format` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Suricata EVE JSON, one object per line.
    SuricataEve,
    /// Wazuh's `alerts.json`, one alert per line.
    WazuhAlerts,
    /// Zeek logs, TSV (with their `#` header) or JSON.
    Zeek,
    /// OSSEC alerts: `alerts.json` lines or the classic multi-line `alerts.log`.
    Ossec,
    /// Syslog RFC 5424 or RFC 3164, with CEF in the message read too.
    Syslog,
    /// Any JSON object per line, its time in the field the Sensor names.
    JsonLines,
    /// Greenbone / OpenVAS report XML (GMP `get_reports`): one event per result.
    Greenbone,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::SuricataEve,
        Format::WazuhAlerts,
        Format::Zeek,
        Format::Ossec,
        Format::Syslog,
        Format::JsonLines,
        Format::Greenbone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::SuricataEve => "suricata-eve",
            Format::WazuhAlerts => "wazuh-alerts",
            Format::Zeek => "zeek",
            Format::Ossec => "ossec",
            Format::Syslog => "syslog",
            Format::JsonLines => "json-lines",
            Format::Greenbone => "greenbone",
        }
    }

    /// The ECS `event.dataset` of events in this format; Zeek's is `zeek.<log path>`, so
    /// this is its prefix.
    pub fn dataset(self) -> &'static str {
        match self {
            Format::SuricataEve => suricata::DATASET,
            Format::WazuhAlerts => wazuh::DATASET,
            Format::Zeek => zeek::DATASET_PREFIX,
            Format::Ossec => ossec::DATASET,
            Format::Syslog => syslog::DATASET,
            Format::JsonLines => json_lines::DATASET,
            Format::Greenbone => greenbone::DATASET,
        }
    }

    /// Whether a record is exactly one line. The others (Zeek TSV's header, OSSEC's
    /// alerts.log blocks, Greenbone's XML document) need a [`crate::Decoder`] that keeps
    /// state across lines.
    pub fn is_line_per_record(self) -> bool {
        matches!(
            self,
            Format::SuricataEve | Format::WazuhAlerts | Format::Syslog | Format::JsonLines
        )
    }

    /// Parses one record (without its line terminator) into a normalised event.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event in this format.
    pub fn parse(self, line: &[u8], ctx: &ParseContext) -> Result<Event, ParseError> {
        parse_line(self, line, ctx)
    }

    /// [`Self::parse`] into the JSON bytes the ingest stage publishes (see
    /// [`parse_line_json`]).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event in this format.
    pub fn parse_json(self, line: &[u8], ctx: &ParseContext) -> Result<EventJson, ParseError> {
        parse_record(self, line, ctx)
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
    #[error("unknown format {0:?}; expected one of suricata-eve, wazuh-alerts, zeek, ossec, syslog, json-lines, greenbone")]
    Unknown(String),
}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if let Some(format) = Format::ALL.into_iter().find(|f| f.as_str() == name) {
            return Ok(format);
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
    /// For `json-lines`: the field holding the event time, a dotted path. `None` tries
    /// `@timestamp`, `timestamp` and `time` in that order.
    pub timestamp_field: Option<String>,
    /// The zone of timestamps written without one (RFC 3164 syslog, OSSEC's alerts.log,
    /// naive JSON times): UTC unless the Sensor sets `timezone`.
    pub timezone: LocalZone,
    /// A whole-document format (Greenbone XML) larger than this is rejected unread.
    pub max_document_bytes: usize,
}

/// The default for [`ParseOptions::max_document_bytes`]: 64 MiB, room for a scan report of
/// tens of thousands of results.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            keep_original: false,
            timestamp_field: None,
            timezone: LocalZone::default(),
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
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
    parse_record(format, line, ctx)
}

/// [`parse_line`] into the JSON bytes the ingest stage publishes: the same bytes as
/// `serde_json::to_vec` of [`parse_line`]'s event, without building the event.
///
/// # Errors
///
/// A [`ParseError`] saying why the record is not a valid event in this format.
pub fn parse_line_json(
    format: Format,
    line: &[u8],
    ctx: &ParseContext,
) -> Result<EventJson, ParseError> {
    parse_record(format, line, ctx)
}

/// [`parse_line`] into either output.
pub(crate) fn parse_record<O: Output>(
    format: Format,
    line: &[u8],
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    parse_record_from(format, line, ctx, None)
}

/// [`parse_record`] of a record received from `sender`, a socket peer: syslog events keep
/// it (`log.source.address`, and `source.*` when the message names no source); the other
/// formats carry their sources in the record.
pub(crate) fn parse_record_from<O: Output>(
    format: Format,
    line: &[u8],
    ctx: &ParseContext,
    sender: Option<SocketAddr>,
) -> Result<O, ParseError> {
    let max = ctx.options.max_line_bytes;
    if line.len() > max {
        return Err(ParseError::TooLong {
            len: line.len(),
            max,
        });
    }
    // Zeek escapes bad bytes itself and may meet raw ones: its parser decides.
    if format == Format::Zeek {
        return zeek_line(line, None, ctx);
    }
    let text = std::str::from_utf8(line).map_err(|e| ParseError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches(['\r', '\n']);
    let original = ctx.options.keep_original.then_some(text);
    if format == Format::Ossec && !text.starts_with('{') {
        return Err(ParseError::MissingField {
            field: "the ** Alert header of an alerts.log block",
        });
    }
    if matches!(
        format,
        Format::SuricataEve | Format::WazuhAlerts | Format::Ossec | Format::JsonLines
    ) {
        crate::json::check_depth(text.as_bytes())?;
    }
    let normalise = match format {
        Format::SuricataEve => return suricata::normalise(text, original, ctx),
        Format::WazuhAlerts => wazuh::normalise::<O>,
        Format::Ossec => ossec::normalise_json::<O>,
        Format::JsonLines => json_lines::normalise::<O>,
        Format::Zeek => return zeek_line(line, None, ctx),
        Format::Greenbone => return greenbone::single_result(line, ctx),
        Format::Syslog => return syslog::parse(text, ctx, sender),
    };
    normalise(json_object(text)?, original, ctx)
}

/// One Zeek JSON line, or a TSV row when the stream's header is known.
pub(crate) fn zeek_line<O: Output>(
    line: &[u8],
    header: Option<&mut zeek::TsvHeader>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let original = || ctx.options.keep_original.then(|| zeek::lossy_escaped(line));
    match header {
        Some(header) => match header.classify(line) {
            zeek::Line::Meta => Err(ParseError::MissingField { field: "data row" }),
            zeek::Line::BadHeader(error) => Err(error),
            zeek::Line::Row(row) => {
                let record = Members::from_map(header.row(row)?);
                zeek::normalise(record, header.path(), original().as_deref(), ctx)
            }
            zeek::Line::Json(json) => {
                let record = zeek::json_record(json)?;
                zeek::normalise(record, None, original().as_deref(), ctx)
            }
        },
        None => {
            let record = zeek::json_record(line)?;
            zeek::normalise(record, None, original().as_deref(), ctx)
        }
    }
}

pub(crate) fn json_object(text: &str) -> Result<Members<'_>, ParseError> {
    crate::json::members_of(crate::json::doc_from_str(text))
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

/// Guesses the format of a file or stream from one of its leading lines, as
/// `kastell run --replay` needs it: what [`detect_format`] knows, plus the formats whose
/// first lines say what they are. `None` for a line that tells nothing (an XML
/// declaration, a comment) or matches no format, so the caller may look at the next one.
///
/// | line | format |
/// | --- | --- |
/// | JSON with a string `event_type` | Suricata EVE |
/// | JSON with `rule` and `agent` objects | Wazuh alerts |
/// | JSON with a string `_path`, or with `ts` and one of `uid`, `fuid`, `note` | Zeek (JSON) |
/// | `#separator ` (Zeek's first header line) | Zeek (TSV) |
/// | `** Alert ` | OSSEC alerts.log |
/// | `<report` or `<get_reports_response` as the first element | Greenbone |
/// | a line the syslog parser reads (RFC 5424, or RFC 3164 with or without `<PRI>`) | syslog |
pub fn detect_stream_format(line: &[u8]) -> Option<Format> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let trimmed = line.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        return detect_format(trimmed).or_else(|| detect_zeek_json(trimmed));
    }
    if line.starts_with(b"#separator ") {
        return Some(Format::Zeek);
    }
    if line.starts_with(b"** Alert ") {
        return Some(Format::Ossec);
    }
    if let Some(element) = trimmed.strip_prefix(b"<") {
        let name_end = element
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'))
            .unwrap_or(element.len());
        match &element[..name_end] {
            b"report" | b"get_reports_response" => return Some(Format::Greenbone),
            // An XML declaration or comment says nothing yet; `<34>` is a syslog priority.
            name if name.first().is_some_and(|b| matches!(b, b'?' | b'!')) => return None,
            _ => {}
        }
    }
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        return None;
    }
    syslog::parse::<Event>(text, &ParseContext::new("detect"), None)
        .ok()
        .map(|_| Format::Syslog)
}

/// Zeek's JSON writer names the log in `_path` when several share a stream; a log file
/// of its own has `ts` and what ties its records to a connection, a file or a notice
/// (`uid` in conn, dns, http, ssl…; `fuid` in files; `note` in notice).
fn detect_zeek_json(line: &[u8]) -> Option<Format> {
    let text = std::str::from_utf8(line).ok()?;
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let named = record.get("_path").is_some_and(Value::is_string);
    let keyed = ["uid", "fuid", "note"]
        .iter()
        .any(|key| record.get(*key).is_some_and(Value::is_string));
    (named || (record.contains_key("ts") && keyed)).then_some(Format::Zeek)
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
    fn stream_detection_reads_headers_and_first_elements() {
        let cases: [(&[u8], Option<Format>); 11] = [
            (b"#separator \\x09", Some(Format::Zeek)),
            (br#"{"_path":"conn","ts":1.5}"#, Some(Format::Zeek)),
            (
                br#"{"ts":"2020-01-01T00:00:00Z","uid":"C1"}"#,
                Some(Format::Zeek),
            ),
            (
                br#"{"event_type":"flow","ts":1,"uid":"C1"}"#,
                Some(Format::SuricataEve),
            ),
            (
                b"** Alert 1565277360.1234: mail  - syslog,",
                Some(Format::Ossec),
            ),
            (
                b"<get_reports_response status=\"200\">",
                Some(Format::Greenbone),
            ),
            (b"  <report id=\"x\">", Some(Format::Greenbone)),
            (b"<?xml version=\"1.0\"?>", None),
            (
                b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
                Some(Format::Syslog),
            ),
            (b"{\"message\":\"plain json\"}", None),
            (b"just some words", None),
        ];
        for (line, expected) in cases {
            assert_eq!(
                detect_stream_format(line),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = "suricata".parse::<Format>().unwrap_err();
        assert!(matches!(err, FormatError::Unknown(_)));
        assert!(err.to_string().contains("greenbone"), "{err}");
    }
}
