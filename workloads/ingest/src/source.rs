//! Sources: where records come from. A [`Source`] reads its transport, cuts it into
//! records and hands each to an [`Ingestor`]; this module also has the bounded line
//! reader that every line-oriented transport shares.

use async_trait::async_trait;
use kastell_core::bus::Pipelined;
use kastell_core::Bus;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::decoder::Decoder;
use crate::ingestor::{IngestError, Ingestor, Outcome, RecordRef, Rejection};
use crate::stats::IngestStats;

/// Events a source has sent to the bus before it waits for the oldest to be stored: on
/// JetStream one loopback round trip is about 2 ms, so one at a time caps a source near
/// 500 events/s; this many in flight hide the round trip while bounding what a failure
/// leaves unconfirmed.
pub const PUBLISH_WINDOW: usize = 256;

/// A transport that feeds one Sensor's records to ingest.
#[async_trait]
pub trait Source: Send + Sync {
    /// Names the source in logs and reports: a path, a listen address.
    fn describe(&self) -> String;

    /// Reads the source to its end, ingesting every record.
    ///
    /// # Errors
    ///
    /// When the transport fails or the bus refuses a message; bad records are not errors.
    async fn run(
        &self,
        ingestor: &Ingestor,
        bus: &dyn Bus,
        stats: &IngestStats,
    ) -> Result<IngestReport, IngestError>;
}

/// What one run of a source did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub source: String,
    /// Every line, blank ones included.
    pub lines: u64,
    pub blank_lines: u64,
    /// Records read, each published or rejected: a non-blank line in line-per-record
    /// formats; a data row, an alerts.log block or a report result in the others.
    pub records: u64,
    pub published: u64,
    pub rejected: u64,
    /// The first rejections in detail, in line order (see
    /// [`Ingestor::with_max_rejections_kept`]).
    pub rejections: Vec<Rejection>,
    /// Rejections counted in `rejected` but not listed.
    pub rejections_not_kept: u64,
}

/// Ingests newline-delimited records from `reader` until its end. Blank lines are
/// skipped, a trailing `\r` is dropped, and a line longer than the ingestor's limit is
/// rejected without ever being held whole in memory.
///
/// # Errors
///
/// When reading fails or the bus refuses a message.
pub async fn ingest_lines<R: AsyncRead + Unpin + Send>(
    reader: R,
    origin: &str,
    ingestor: &Ingestor,
    bus: &dyn Bus,
    stats: &IngestStats,
) -> Result<IngestReport, IngestError> {
    // Several events in flight on a durable bus instead of one round trip each; the
    // report (what the caller answers for) comes only after every one is stored.
    let pipelined = Pipelined::new(bus, PUBLISH_WINDOW);
    let bus: &dyn Bus = &pipelined;
    let mut lines = LineReader::new(reader, ingestor.options().max_line_bytes);
    let mut decoder =
        Decoder::new(ingestor.format(), ingestor.context().clone()).with_origin(origin);
    let mut decoded = Vec::new();
    let mut report = IngestReport {
        source: origin.to_owned(),
        ..IngestReport::default()
    };
    loop {
        let line = lines.next().await.map_err(|source| IngestError::Read {
            path: origin.to_owned(),
            line: report.lines,
            source,
        })?;
        let Some(line) = line else {
            break;
        };
        report.lines += 1;
        if line.is_blank() {
            report.blank_lines += 1;
        }
        decoder.push_json(line.number, line.bytes, line.len, &mut decoded);
        for record in decoded.drain(..) {
            // A record that ends on this line is dead-lettered with it; one closed by a
            // later line (an alerts.log block, a report) only with its line number.
            let (bytes, len) = if record.line == line.number {
                (line.bytes, line.len)
            } else {
                (&b""[..], 0)
            };
            let at = RecordRef {
                origin,
                line: record.line,
                bytes,
                len,
            };
            deliver(ingestor, at, record.result, bus, stats, &mut report).await?;
        }
    }
    decoder.finish_json(&mut decoded);
    for record in decoded.drain(..) {
        let at = RecordRef::new(origin, record.line, b"");
        deliver(ingestor, at, record.result, bus, stats, &mut report).await?;
    }
    pipelined
        .flush()
        .await
        .map_err(|source| IngestError::events_not_stored(origin, report.lines, source))?;
    tracing::info!(
        path = origin,
        sensor = ingestor.sensor(),
        records = report.records,
        published = report.published,
        rejected = report.rejected,
        "source drained"
    );
    Ok(report)
}

async fn deliver(
    ingestor: &Ingestor,
    record: RecordRef<'_>,
    parsed: Result<crate::EventJson, crate::ParseError>,
    bus: &dyn Bus,
    stats: &IngestStats,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    report.records += 1;
    match ingestor.deliver(record, parsed, bus, stats).await? {
        Outcome::Published => report.published += 1,
        Outcome::Rejected(rejection) => {
            report.rejected += 1;
            if report.rejections.len() < ingestor.max_rejections_kept() {
                report.rejections.push(rejection);
            } else {
                report.rejections_not_kept += 1;
            }
        }
    }
    Ok(())
}

/// Reads lines while keeping at most `max` bytes of any one of them.
pub(crate) struct LineReader<R> {
    reader: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
    number: u64,
}

/// One line: its first `max` bytes (without terminator) and its real length.
pub(crate) struct Line<'a> {
    pub(crate) number: u64,
    pub(crate) bytes: &'a [u8],
    pub(crate) len: usize,
}

impl Line<'_> {
    pub(crate) fn is_blank(&self) -> bool {
        self.len == self.bytes.len() && self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        LineReader {
            reader: BufReader::with_capacity(64 * 1024, reader),
            max,
            buf: Vec::new(),
            number: 0,
        }
    }

    /// The next line, or `None` at the end of input.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut read_any = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                break;
            }
            read_any = true;
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            len = len.saturating_add(chunk.len());
            let consumed = chunk.len() + usize::from(newline.is_some());
            self.reader.consume(consumed);
            if newline.is_some() {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        if len == self.buf.len() && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
            len -= 1;
        }
        self.number += 1;
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buf,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<(u64, Vec<u8>, usize)> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next().await.unwrap() {
            out.push((line.number, line.bytes.to_vec(), line.len));
        }
        out
    }

    #[tokio::test]
    async fn lines_are_numbered_and_crlf_and_a_missing_final_newline_are_handled() {
        let lines = read_all(b"a\r\n\nbc\nlast", 100).await;
        assert_eq!(
            lines,
            vec![
                (1, b"a".to_vec(), 1),
                (2, b"".to_vec(), 0),
                (3, b"bc".to_vec(), 2),
                (4, b"last".to_vec(), 4),
            ]
        );
    }

    #[tokio::test]
    async fn over_long_lines_keep_only_a_prefix_but_report_their_length() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\nok\n");
        let lines = read_all(&input, 4).await;
        assert_eq!(
            lines,
            vec![(1, b"xxxx".to_vec(), 10), (2, b"ok".to_vec(), 2)]
        );
    }

    #[tokio::test]
    async fn lines_spanning_many_buffer_fills_are_reassembled() {
        let long = "y".repeat(200_000);
        let input = format!("{long}\nz\n");
        let lines = read_all(input.as_bytes(), 1 << 20).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].1.len(), 200_000);
        assert_eq!(lines[0].2, 200_000);
        assert_eq!(lines[1].1, b"z");
    }
}
