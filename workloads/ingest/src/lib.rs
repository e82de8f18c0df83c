//! Kastell's ingest stage: sensor records parsed and normalised to Elastic Common Schema
//! events, published on the bus for correlation.
//!
//! - [`Format`] names what a Sensor sends; [`parse_line`] turns one record of it into a
//!   [`kastell_core::Event`], or a [`ParseError`] saying why not. One module per format:
//!   `suricata` (EVE JSON) and `wazuh` (alerts.json).
//! - An [`Ingestor`] takes records from any transport, publishes events on
//!   `Topic::Events` and dead-letters rejections on `Topic::DeadLetters`, counting both
//!   in [`IngestStats`].
//! - [`transport`] holds the listeners (HTTP, `_bulk`, syslog, file tail) that feed a
//!   Sensor's [`transport::Inlet`].
//! - A [`Source`] is a transport; [`FileSource`] (and [`ingest_file`]) read JSON-lines
//!   files.
//!
//! The field mapping, rejection rules and limitations are in `docs/ingest.md`.

mod ecs;
mod error;
mod file;
mod format;
mod ingestor;
mod source;
mod stats;
mod suricata;
pub mod transport;
mod wazuh;

pub use error::{ParseError, RejectReason};
pub use file::{detect_file_format, ingest_file, FileSource};
pub use format::{
    detect_format, parse_line, Format, FormatError, ParseContext, ParseOptions,
    DEFAULT_MAX_LINE_BYTES,
};
pub use ingestor::{
    DeadLetter, IngestError, Ingestor, Outcome, RecordRef, Rejection, DEAD_LETTER_RAW_BYTES,
    DEFAULT_MAX_REJECTIONS_KEPT,
};
pub use source::{ingest_lines, IngestReport, Source};
pub use stats::{IngestStats, StatsSnapshot};
