//! The file transport: a JSON-lines file read once to its end, as `kastell run --replay`
//! and the bundled samples use it.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kastell_core::Bus;
use tracing::Instrument;

use crate::format::{detect_stream_format, Format};
use crate::ingestor::{IngestError, Ingestor};
use crate::source::{ingest_lines, IngestReport, LineReader, Source};
use crate::stats::IngestStats;

/// A file of newline-delimited records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Source for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn run(
        &self,
        ingestor: &Ingestor,
        bus: &dyn Bus,
        stats: &IngestStats,
    ) -> Result<IngestReport, IngestError> {
        let path = self.describe();
        let span = tracing::info_span!(
            "ingest_file",
            path = %path,
            sensor = ingestor.sensor(),
            format = %ingestor.format()
        );
        async {
            let file =
                tokio::fs::File::open(&self.path)
                    .await
                    .map_err(|source| IngestError::Open {
                        path: path.clone(),
                        source,
                    })?;
            ingest_lines(file, &path, ingestor, bus, stats).await
        }
        .instrument(span)
        .await
    }
}

/// Ingests a whole file with default parse options: every good line is published on
/// `Topic::Events`, every bad one is rejected, dead-lettered and reported.
///
/// # Errors
///
/// When the file cannot be opened or read, or the bus refuses a message.
pub async fn ingest_file(
    path: &Path,
    format: Format,
    sensor: &str,
    bus: &dyn Bus,
    stats: &IngestStats,
) -> Result<IngestReport, IngestError> {
    let ingestor = Ingestor::new(format, sensor);
    FileSource::new(path).run(&ingestor, bus, stats).await
}

/// How many leading records format detection looks at before it gives up.
pub const DETECT_RECORDS: usize = 100;

/// Guesses a file's format from the first of its leading [`DETECT_RECORDS`] records that
/// [`detect_stream_format`] recognises, for `kastell run --replay FILE` without a format.
/// `Ok(None)` when the file holds no record or none of them is recognised.
///
/// # Errors
///
/// When the file cannot be opened or read.
pub async fn detect_file_format(
    path: &Path,
    max_line_bytes: usize,
) -> Result<Option<Format>, IngestError> {
    let shown = path.display().to_string();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| IngestError::Open {
            path: shown.clone(),
            source,
        })?;
    let mut lines = LineReader::new(file, max_line_bytes);
    let mut seen = 0;
    let mut records = 0;
    loop {
        let line = lines.next().await.map_err(|source| IngestError::Read {
            path: shown.clone(),
            line: seen,
            source,
        })?;
        let Some(line) = line else {
            return Ok(None);
        };
        seen = line.number;
        // A bad first record (truncated, a BOM) must not make the whole file unreadable:
        // the first recognisable one of the leading records decides. An over-long line
        // is looked at by its start, which is enough for a header or a root element (a
        // Greenbone report is often one long line) and never parses as a JSON record.
        if line.is_blank() {
            continue;
        }
        records += 1;
        if let Some(format) = detect_stream_format(line.bytes) {
            return Ok(Some(format));
        }
        if records >= DETECT_RECORDS {
            return Ok(None);
        }
    }
}
