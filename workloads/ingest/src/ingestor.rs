//! One record's way through ingest: parsed in the Sensor's format, then published as an
//! event, or counted, logged and dead-lettered with the reason it was refused. Every
//! transport (files now, network listeners later) hands its records to an [`Ingestor`].

use std::net::SocketAddr;

use kastell_core::{Bus, BusError, Event, Message, Topic};

use crate::ecs::EventJson;
use serde::{Deserialize, Serialize};

use crate::error::RejectReason;
use crate::format::{parse_record_from, Format, ParseContext, ParseOptions};
use crate::stats::IngestStats;
use crate::ParseError;

/// How much of a rejected record a dead letter carries.
pub const DEAD_LETTER_RAW_BYTES: usize = 4096;

/// Rejections kept in detail per report by default; later ones are only counted.
pub const DEFAULT_MAX_REJECTIONS_KEPT: usize = 1000;

/// Parses records of one Sensor and publishes the results.
#[derive(Debug, Clone)]
pub struct Ingestor {
    format: Format,
    ctx: ParseContext,
    max_rejections_kept: usize,
}

/// One record as a transport read it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The file path or the transport's origin, used in message ids and dead letters.
    pub origin: &'a str,
    /// 1-based line (or record) number within the origin.
    pub line: u64,
    /// The record without its terminator, or only its first bytes when it was too long
    /// to keep whole (then `len` says how long it really was).
    pub bytes: &'a [u8],
    pub len: usize,
}

impl<'a> RecordRef<'a> {
    pub fn new(origin: &'a str, line: u64, bytes: &'a [u8]) -> Self {
        RecordRef {
            origin,
            line,
            bytes,
            len: bytes.len(),
        }
    }
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published,
    Rejected(Rejection),
}

/// A record that did not become an event, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The file path, or the transport's origin.
    pub path: String,
    /// 1-based.
    pub line: u64,
    pub kind: RejectReason,
    pub reason: String,
}

/// The message published on [`Topic::DeadLetters`] for every rejected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Always `ingest` from this crate.
    pub stage: String,
    pub sensor: String,
    pub format: Format,
    pub path: String,
    pub line: u64,
    pub kind: RejectReason,
    pub reason: String,
    /// The record's first [`DEAD_LETTER_RAW_BYTES`] bytes, invalid UTF-8 replaced by U+FFFD.
    pub raw: String,
    /// The record's full length in bytes.
    pub raw_bytes: usize,
    pub raw_truncated: bool,
}

/// What an event is published as: an [`Event`] is serialised, an [`EventJson`] already
/// is the message's payload.
pub trait Payload {
    /// # Errors
    ///
    /// [`BusError::Encode`] when the event cannot be written as JSON.
    fn into_message(self) -> Result<Message, BusError>;
}

impl Payload for Event {
    fn into_message(self) -> Result<Message, BusError> {
        Message::json(&self)
    }
}

impl Payload for EventJson {
    fn into_message(self) -> Result<Message, BusError> {
        Ok(Message {
            id: None,
            key: None,
            payload: bytes::Bytes::from(self.into_bytes()),
        })
    }
}

/// What stops a source: the input cannot be read, or the bus refuses a message. Bad
/// records never do; they become [`Rejection`]s.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} after line {line}")]
    Read {
        path: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("publishing line {line} of {path} to {topic}")]
    Publish {
        path: String,
        line: u64,
        topic: Topic,
        #[source]
        source: BusError,
    },
}

impl IngestError {
    /// Events sent pipelined from `origin` that the bus gave up on while they were
    /// awaited (`line`: the last one sent).
    pub(crate) fn events_not_stored(origin: &str, line: u64, source: BusError) -> Self {
        IngestError::Publish {
            path: origin.to_owned(),
            line,
            topic: Topic::Events,
            source,
        }
    }
}

impl Ingestor {
    pub fn new(format: Format, sensor: impl Into<String>) -> Self {
        Ingestor {
            format,
            ctx: ParseContext::new(sensor),
            max_rejections_kept: DEFAULT_MAX_REJECTIONS_KEPT,
        }
    }

    pub fn with_options(mut self, options: ParseOptions) -> Self {
        self.ctx.options = options;
        self
    }

    /// Caps the rejections a report lists in detail, so a file of garbage cannot fill
    /// memory with them; the counters and dead letters still cover every one.
    pub fn with_max_rejections_kept(mut self, max: usize) -> Self {
        self.max_rejections_kept = max;
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn sensor(&self) -> &str {
        &self.ctx.sensor
    }

    pub fn context(&self) -> &ParseContext {
        &self.ctx
    }

    pub fn options(&self) -> &ParseOptions {
        &self.ctx.options
    }

    pub fn max_rejections_kept(&self) -> usize {
        self.max_rejections_kept
    }

    /// Parses one record and publishes the event on [`Topic::Events`] (message id
    /// `<sensor>:<origin>:<line>`), or counts, logs and dead-letters the rejection.
    ///
    /// # Errors
    ///
    /// [`IngestError::Publish`] when the bus refuses the event or the dead letter.
    pub async fn ingest(
        &self,
        record: RecordRef<'_>,
        bus: &dyn Bus,
        stats: &IngestStats,
    ) -> Result<Outcome, IngestError> {
        let parsed = self.parse_json(&record);
        self.deliver(record, parsed, bus, stats).await
    }

    /// Parses one record in the Sensor's format, refusing it unread when it is over the
    /// size limit. Transports that time the parse call this, then [`Self::deliver`].
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event.
    pub fn parse(&self, record: &RecordRef<'_>) -> Result<Event, ParseError> {
        let max = self.ctx.options.max_line_bytes;
        if record.len > max {
            return Err(ParseError::TooLong {
                len: record.len,
                max,
            });
        }
        self.format.parse(record.bytes, &self.ctx)
    }

    /// [`Self::parse`] into the JSON bytes that go on the bus, without building an
    /// [`Event`]: what a transport uses unless it changes the event before publishing.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event.
    pub fn parse_json(&self, record: &RecordRef<'_>) -> Result<EventJson, ParseError> {
        self.parse_json_from(record, None)
    }

    /// [`Self::parse_json`] of a record a socket peer sent: syslog events keep the
    /// sender's address (see docs/ingest-transports.md, "The sender's address").
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why the record is not a valid event.
    pub fn parse_json_from(
        &self,
        record: &RecordRef<'_>,
        sender: Option<SocketAddr>,
    ) -> Result<EventJson, ParseError> {
        let max = self.ctx.options.max_line_bytes;
        if record.len > max {
            return Err(ParseError::TooLong {
                len: record.len,
                max,
            });
        }
        parse_record_from(self.format, record.bytes, &self.ctx, sender)
    }

    /// Publishes what [`Self::parse`] or a [`crate::Decoder`] made of a record: the event on
    /// [`Topic::Events`] (message id `<sensor>:<origin>:<line>`), or the rejection counted,
    /// logged and dead-lettered.
    ///
    /// # Errors
    ///
    /// [`IngestError::Publish`] when the bus refuses the event or the dead letter.
    pub async fn deliver<P: Payload>(
        &self,
        record: RecordRef<'_>,
        parsed: Result<P, ParseError>,
        bus: &dyn Bus,
        stats: &IngestStats,
    ) -> Result<Outcome, IngestError> {
        stats.record_in();
        let id = format!("{}:{}:{}", self.ctx.sensor, record.origin, record.line);

        match parsed {
            Ok(event) => {
                let message = event.into_message().map(|m| m.with_id(id));
                Self::publish(bus, Topic::Events, message, &record).await?;
                stats.record_published();
                Ok(Outcome::Published)
            }
            Err(error) => {
                let rejection = self.reject(&record, &error, id, bus, stats).await?;
                Ok(Outcome::Rejected(rejection))
            }
        }
    }

    /// Counts, logs and dead-letters one refused record.
    async fn reject(
        &self,
        record: &RecordRef<'_>,
        error: &ParseError,
        id: String,
        bus: &dyn Bus,
        stats: &IngestStats,
    ) -> Result<Rejection, IngestError> {
        let kind = error.reason();
        stats.record_rejected(kind);
        tracing::warn!(
            sensor = %self.ctx.sensor,
            path = record.origin,
            line = record.line,
            kind = kind.as_str(),
            reason = %error,
            "rejected line"
        );

        let reason = error.to_string();
        let letter = self.dead_letter(record, kind, reason.clone());
        let message = Message::json(&letter).map(|m| m.with_id(id));
        Self::publish(bus, Topic::DeadLetters, message, record).await?;
        Ok(Rejection {
            path: record.origin.to_owned(),
            line: record.line,
            kind,
            reason,
        })
    }

    async fn publish(
        bus: &dyn Bus,
        topic: Topic,
        message: Result<Message, BusError>,
        record: &RecordRef<'_>,
    ) -> Result<(), IngestError> {
        let sent = match message {
            Ok(message) => bus.publish(topic, message).await,
            Err(e) => Err(e),
        };
        sent.map_err(|source| IngestError::Publish {
            path: record.origin.to_owned(),
            line: record.line,
            topic,
            source,
        })
    }

    fn dead_letter(
        &self,
        record: &RecordRef<'_>,
        kind: RejectReason,
        reason: String,
    ) -> DeadLetter {
        let kept = record.bytes.len().min(DEAD_LETTER_RAW_BYTES);
        DeadLetter {
            stage: "ingest".to_owned(),
            sensor: self.ctx.sensor.clone(),
            format: self.format,
            path: record.origin.to_owned(),
            line: record.line,
            kind,
            reason,
            raw: String::from_utf8_lossy(&record.bytes[..kept]).into_owned(),
            raw_bytes: record.len,
            raw_truncated: kept < record.len,
        }
    }
}
