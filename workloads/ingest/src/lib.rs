//! Kastell's ingest stage: sensor records parsed and normalised to Elastic Common Schema
//! events, published on the bus for correlation.
//!
//! - [`Format`] names what a Sensor sends; [`parse_line`] turns one record of it into a
//!   [`kastell_core::Event`], or a [`ParseError`] saying why not. One module per format:
//!   `suricata` (EVE JSON), `wazuh` (alerts.json), `zeek` (TSV and JSON logs), `ossec`
//!   (alerts.json and alerts.log), `syslog` (RFC 5424 / 3164, with `cef`), `json_lines`
//!   and `greenbone` (GMP report XML).
//! - A [`Decoder`] cuts a stream of lines into records for the formats whose records
//!   span lines or need a header (Zeek TSV, alerts.log, Greenbone reports).
//! - An [`Ingestor`] takes records from any transport, publishes events on
//!   `Topic::Events` and dead-letters rejections on `Topic::DeadLetters`, counting both
//!   in [`IngestStats`].
//! - [`transport`] holds the listeners (HTTP, `_bulk`, syslog, file tail) that feed a
//!   Sensor's [`transport::Inlet`].
//! - A [`Source`] is a transport; [`FileSource`] (and [`ingest_file`]) read JSON-lines
//!   files.
//!
//! The field mapping, rejection rules and limitations are in `docs/ingest.md`.

mod cef;
mod decoder;
mod ecs;
mod error;
mod file;
mod format;
mod greenbone;
mod ingestor;
mod json;
mod json_lines;
mod ossec;
mod source;
mod stats;
mod suricata;
mod syslog;
pub mod transport;
mod wazuh;
mod zeek;
mod zone;

pub use decoder::{decode_reader, decode_reader_json, Decoded, Decoder};
pub use ecs::{EventJson, Output};
pub use error::{ParseError, RejectReason};
pub use file::{detect_file_format, ingest_file, FileSource};
pub use format::{
    detect_format, detect_stream_format, parse_line, parse_line_json, Format, FormatError,
    ParseContext, ParseOptions, DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_LINE_BYTES,
};
pub use ingestor::{
    DeadLetter, IngestError, Ingestor, Outcome, Payload, RecordRef, Rejection,
    DEAD_LETTER_RAW_BYTES, DEFAULT_MAX_REJECTIONS_KEPT,
};
pub use source::{ingest_lines, IngestReport, Source};
pub use stats::{IngestStats, StatsSnapshot};
pub use zone::{parse_timezone, LocalZone};
