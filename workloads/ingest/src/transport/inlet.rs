//! An inlet: where every listening transport hands one Sensor's framed records. It
//! admits records against a bounded queue (so a full bus slows senders instead of
//! filling memory), parses them with the Sensor's decoder, publishes events, and
//! dead-letters and counts what it refuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use kastell_core::{Bus, BusError, Message, Topic};
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::format::ParseContext;
use crate::ingestor::{IngestError, Ingestor, Outcome, RecordRef, DEAD_LETTER_RAW_BYTES};
use crate::stats::IngestStats;
use crate::transport::metrics::SensorMetrics;
use crate::transport::raw_syslog::raw_syslog_event;
use crate::ParseError;

/// Records an inlet admits before it answers "slow down" (HTTP 429) or stops reading
/// (TCP): enough for a few shipper batches in flight, small enough to bound memory.
pub const DEFAULT_QUEUE_RECORDS: usize = 4096;

/// How a Sensor's records become events.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// Parsed by the Sensor's format.
    Format(Ingestor),
    /// Syslog messages carried whole by [`raw_syslog_event`] until the syslog format
    /// parser replaces it.
    RawSyslog(ParseContext),
}

impl Decoder {
    pub fn sensor(&self) -> &str {
        match self {
            Decoder::Format(ingestor) => ingestor.sensor(),
            Decoder::RawSyslog(ctx) => &ctx.sensor,
        }
    }

    fn format_name(&self) -> &'static str {
        match self {
            Decoder::Format(ingestor) => ingestor.format().as_str(),
            Decoder::RawSyslog(_) => "syslog",
        }
    }

    fn max_record_bytes(&self) -> usize {
        match self {
            Decoder::Format(ingestor) => ingestor.options().max_line_bytes,
            Decoder::RawSyslog(ctx) => ctx.options.max_line_bytes,
        }
    }
}

/// One record as a transport framed it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Where it came from (`http:<peer>`, `syslog-tcp:<peer>`, a file path), used in
    /// message ids and dead letters.
    pub origin: &'a str,
    /// 1-based record number within the origin.
    pub seq: u64,
    /// The record, or its first bytes when it was too long to keep (see `len`).
    pub bytes: &'a [u8],
    pub len: usize,
    pub peer: Option<SocketAddr>,
}

impl<'a> Frame<'a> {
    pub fn new(origin: &'a str, seq: u64, bytes: &'a [u8]) -> Self {
        Frame {
            origin,
            seq,
            bytes,
            len: bytes.len(),
            peer: None,
        }
    }

    pub fn from_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Published,
    Rejected { kind: String, reason: String },
}

/// Refusals that happen in the transport, before any format sees the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportReject {
    /// A last line without its newline, when a file tail is told to give up on it.
    PartialLine,
    /// A `_bulk` action line that is not `{"create"|"index": {...}}`.
    InvalidBulkAction,
    /// A syslog octet count that is not `DIGITS SP`.
    InvalidFrame,
    /// A syslog stream that ended inside an octet-counted message.
    TruncatedFrame,
}

impl TransportReject {
    pub const ALL: [TransportReject; 4] = [
        TransportReject::PartialLine,
        TransportReject::InvalidBulkAction,
        TransportReject::InvalidFrame,
        TransportReject::TruncatedFrame,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransportReject::PartialLine => "partial_line",
            TransportReject::InvalidBulkAction => "invalid_bulk_action",
            TransportReject::InvalidFrame => "invalid_frame",
            TransportReject::TruncatedFrame => "truncated_frame",
        }
    }
}

/// The dead letter of a record refused by a transport or by the raw syslog decoder;
/// shaped like [`crate::DeadLetter`], with the format as a plain name because raw
/// syslog has no [`crate::Format`] yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportDeadLetter {
    pub stage: String,
    pub sensor: String,
    pub format: String,
    pub path: String,
    pub line: u64,
    pub kind: String,
    pub reason: String,
    pub raw: String,
    pub raw_bytes: usize,
    pub raw_truncated: bool,
}

/// A share of an inlet's queue, held while records are on their way to the bus.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    depth: IntGauge,
    records: i64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.depth.sub(self.records);
    }
}

/// One Sensor's entry into the pipeline, shared by its listeners.
pub struct Inlet {
    decoder: Decoder,
    bus: Arc<dyn Bus>,
    stats: Arc<IngestStats>,
    metrics: SensorMetrics,
    queue: Arc<Semaphore>,
    capacity: usize,
}

impl Inlet {
    pub fn new(
        decoder: Decoder,
        bus: Arc<dyn Bus>,
        stats: Arc<IngestStats>,
        metrics: SensorMetrics,
        capacity: usize,
    ) -> Self {
        // Permits are asked for as a u32, so the queue never holds more than that.
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Inlet {
            decoder,
            bus,
            stats,
            metrics,
            queue: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// The bus this inlet publishes on.
    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    pub fn sensor(&self) -> &str {
        self.decoder.sensor()
    }

    pub fn max_record_bytes(&self) -> usize {
        self.decoder.max_record_bytes()
    }

    pub fn metrics(&self) -> &SensorMetrics {
        &self.metrics
    }

    /// Admits `records` now, or `None` when the queue is full (the caller answers 429).
    /// A batch larger than the whole queue takes the whole queue.
    pub fn try_admit(&self, records: usize) -> Option<Admission> {
        let permits = self.permits(records);
        let permit = Arc::clone(&self.queue)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some(self.admitted(permit, records))
    }

    /// Admits `records`, waiting while the queue is full: a stream transport stops
    /// reading meanwhile, which is TCP back-pressure. `None` only if the queue was
    /// closed, which this inlet never does.
    pub async fn admit(&self, records: usize) -> Option<Admission> {
        let permits = self.permits(records);
        let permit = Arc::clone(&self.queue)
            .acquire_many_owned(permits)
            .await
            .ok()?;
        Some(self.admitted(permit, records))
    }

    fn permits(&self, records: usize) -> u32 {
        // `capacity` fits a u32 (see `new`), and so does anything clamped to it.
        u32::try_from(records.clamp(1, self.capacity)).unwrap_or(u32::MAX)
    }

    fn admitted(&self, permit: OwnedSemaphorePermit, records: usize) -> Admission {
        let records = i64::try_from(records).unwrap_or(i64::MAX);
        self.metrics.queue_depth.add(records);
        Admission {
            _permit: permit,
            depth: self.metrics.queue_depth.clone(),
            records,
        }
    }

    /// Parses one record and publishes the event, or dead-letters the rejection.
    ///
    /// # Errors
    ///
    /// [`IngestError::Publish`] when the bus refuses a message (it is closed).
    pub async fn ingest(&self, frame: Frame<'_>) -> Result<Delivered, IngestError> {
        self.ingest_on(frame, self.bus.as_ref()).await
    }

    /// [`Inlet::ingest`] with the event published on `bus` (a [`kastell_core::bus::Pipelined`]
    /// view of [`Inlet::bus`], which the caller flushes before it answers for the record).
    ///
    /// # Errors
    ///
    /// [`IngestError::Publish`] when the bus refuses a message (it is closed).
    pub async fn ingest_on(
        &self,
        frame: Frame<'_>,
        bus: &dyn Bus,
    ) -> Result<Delivered, IngestError> {
        self.metrics.records.inc();
        self.metrics.bytes.inc_by(frame.len as u64);
        let delivered = match &self.decoder {
            Decoder::Format(ingestor) => self.ingest_format(ingestor, &frame, bus).await?,
            Decoder::RawSyslog(ctx) => self.ingest_raw_syslog(ctx, &frame, bus).await?,
        };
        match &delivered {
            Delivered::Published => self.metrics.last_event.set(unix_now()),
            Delivered::Rejected { kind, .. } => self.metrics.reject(kind),
        }
        Ok(delivered)
    }

    async fn ingest_format(
        &self,
        ingestor: &Ingestor,
        frame: &Frame<'_>,
        bus: &dyn Bus,
    ) -> Result<Delivered, IngestError> {
        let record = RecordRef {
            origin: frame.origin,
            line: frame.seq,
            bytes: frame.bytes,
            len: frame.len,
        };
        let started = Instant::now();
        let parsed = ingestor.parse_json_from(&record, frame.peer);
        self.metrics
            .parse_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = ingestor.deliver(record, parsed, bus, &self.stats).await?;
        Ok(match outcome {
            Outcome::Published => Delivered::Published,
            Outcome::Rejected(rejection) => Delivered::Rejected {
                kind: rejection.kind.as_str().to_owned(),
                reason: rejection.reason,
            },
        })
    }

    async fn ingest_raw_syslog(
        &self,
        ctx: &ParseContext,
        frame: &Frame<'_>,
        bus: &dyn Bus,
    ) -> Result<Delivered, IngestError> {
        self.stats.record_in();
        let started = Instant::now();
        let parsed = if frame.len > frame.bytes.len() {
            Err(ParseError::TooLong {
                len: frame.len,
                max: ctx.options.max_line_bytes,
            })
        } else {
            raw_syslog_event(frame.bytes, Utc::now(), frame.peer, ctx)
        };
        self.metrics
            .parse_seconds
            .observe(started.elapsed().as_secs_f64());
        match parsed {
            Ok(event) => {
                let message = Message::json(&event).map(|m| m.with_id(self.message_id(frame)));
                self.publish(bus, Topic::Events, message, frame).await?;
                self.stats.record_published();
                Ok(Delivered::Published)
            }
            Err(error) => {
                self.stats.record_rejected(error.reason());
                let kind = error.reason().as_str();
                self.dead_letter(frame, kind, error.to_string()).await
            }
        }
    }

    /// Dead-letters a record the transport itself refused, and counts it.
    ///
    /// # Errors
    ///
    /// [`IngestError::Publish`] when the bus refuses the dead letter.
    pub async fn reject(
        &self,
        frame: Frame<'_>,
        why: TransportReject,
        reason: String,
    ) -> Result<Delivered, IngestError> {
        self.metrics.records.inc();
        self.metrics.bytes.inc_by(frame.len as u64);
        self.metrics.reject(why.as_str());
        self.stats.record_in();
        self.stats.record_transport_rejected(why);
        self.dead_letter(&frame, why.as_str(), reason).await
    }

    async fn dead_letter(
        &self,
        frame: &Frame<'_>,
        kind: &str,
        reason: String,
    ) -> Result<Delivered, IngestError> {
        tracing::warn!(
            sensor = self.sensor(),
            origin = frame.origin,
            record = frame.seq,
            kind,
            reason = %reason,
            "rejected record"
        );
        let kept = frame.bytes.len().min(DEAD_LETTER_RAW_BYTES);
        let letter = TransportDeadLetter {
            stage: "ingest".to_owned(),
            sensor: self.sensor().to_owned(),
            format: self.decoder.format_name().to_owned(),
            path: frame.origin.to_owned(),
            line: frame.seq,
            kind: kind.to_owned(),
            reason: reason.clone(),
            raw: String::from_utf8_lossy(&frame.bytes[..kept]).into_owned(),
            raw_bytes: frame.len,
            raw_truncated: kept < frame.len,
        };
        let message = Message::json(&letter).map(|m| m.with_id(self.message_id(frame)));
        self.publish(self.bus.as_ref(), Topic::DeadLetters, message, frame)
            .await?;
        Ok(Delivered::Rejected {
            kind: kind.to_owned(),
            reason,
        })
    }

    fn message_id(&self, frame: &Frame<'_>) -> String {
        format!("{}:{}:{}", self.sensor(), frame.origin, frame.seq)
    }

    async fn publish(
        &self,
        bus: &dyn Bus,
        topic: Topic,
        message: Result<Message, BusError>,
        frame: &Frame<'_>,
    ) -> Result<(), IngestError> {
        let sent = match message {
            Ok(message) => bus.publish(topic, message).await,
            Err(e) => Err(e),
        };
        sent.map_err(|source| IngestError::Publish {
            path: frame.origin.to_owned(),
            line: frame.seq,
            topic,
            source,
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
