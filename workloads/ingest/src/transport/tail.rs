//! The file tail: follows a file as a sensor appends to it, across rotation by rename
//! (a new file at the path) and by copytruncate (the same file cut to zero), and keeps a
//! checkpoint (the file's device and inode, the byte offset after the last line handed
//! to the bus, and that line's number) so a restart neither loses nor repeats lines.
//!
//! A last line without its newline is held until the writer completes it; at shutdown
//! it is either left for the next run (the checkpoint stays before it) or, with
//! [`PartialLines::RejectAtShutdown`], dead-lettered as `partial_line`.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kastell_core::bus::{Bus, Pipelined};
use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use crate::ingestor::IngestError;
use crate::source::PUBLISH_WINDOW;
use crate::transport::inlet::{Frame, Inlet, TransportReject};

/// How often the tail looks for new data, rotation and truncation once at the end.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

const READ_CHUNK: usize = 64 * 1024;

/// What happens to a last line still without its newline when the tail stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialLines {
    /// Left in the file for the next run, which reads it once it is complete.
    #[default]
    KeepForNextRun,
    /// Dead-lettered as `partial_line`; the next run starts after it.
    RejectAtShutdown,
}

/// One tailed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailConfig {
    pub path: PathBuf,
    /// Where the checkpoint is kept (a small JSON file, replaced atomically).
    pub checkpoint: PathBuf,
    pub poll_interval: Duration,
    pub partial_lines: PartialLines,
}

impl TailConfig {
    pub fn new(path: impl Into<PathBuf>, checkpoint: impl Into<PathBuf>) -> Self {
        TailConfig {
            path: path.into(),
            checkpoint: checkpoint.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            partial_lines: PartialLines::default(),
        }
    }
}

/// Where a tail stands: the file (by identity, since its path changes on rotation) and
/// the position after the last complete line handed to the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
    /// The number of the last line handed over, so numbering goes on after a restart.
    pub line: u64,
}

/// What stops a tail.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("reading the checkpoint {path}")]
    ReadCheckpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint {path} is not a tail checkpoint")]
    BadCheckpoint {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the checkpoint {path}")]
    WriteCheckpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Follows `config.path` into `inlet` until `shutdown` is cancelled; returns the final
/// checkpoint.
///
/// # Errors
///
/// When the checkpoint cannot be read or written, the file cannot be read, or the bus
/// refuses a message.
pub async fn tail_file(
    config: &TailConfig,
    inlet: &Inlet,
    shutdown: CancellationToken,
) -> Result<Checkpoint, TailError> {
    let mut tail = Tail {
        config,
        inlet,
        origin: config.path.display().to_string(),
        shutdown,
        pending: Pending::default(),
    };
    tail.run().await
}

/// The bytes of a line not yet ended: at most the record limit, and the real length.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    len: usize,
}

/// An open file and where the tail stands in it.
struct Position {
    file: File,
    checkpoint: Checkpoint,
}

struct Tail<'a> {
    config: &'a TailConfig,
    inlet: &'a Inlet,
    origin: String,
    shutdown: CancellationToken,
    pending: Pending,
}

impl Tail<'_> {
    async fn run(&mut self) -> Result<Checkpoint, TailError> {
        let saved = self.load_checkpoint().await?;
        let Some(mut at) = self.resume(saved).await? else {
            return Ok(saved.unwrap_or(Checkpoint {
                device: 0,
                inode: 0,
                offset: 0,
                line: 0,
            }));
        };
        tracing::info!(sensor = self.inlet.sensor(), path = %self.origin, offset = at.checkpoint.offset, "tailing");
        loop {
            if self.read_available(&mut at).await? {
                break;
            }
            match self.look_around(&at).await? {
                Change::None => {}
                Change::Truncated => {
                    tracing::info!(path = %self.origin, "file truncated; reading from its start");
                    self.pending = Pending::default();
                    at.file
                        .seek(SeekFrom::Start(0))
                        .await
                        .map_err(|e| self.read_error(e))?;
                    at.checkpoint.offset = 0;
                    self.save(&at.checkpoint).await?;
                    continue;
                }
                Change::Replaced => {
                    // The writer may have added lines before it let go of the old file.
                    if self.read_available(&mut at).await? {
                        break;
                    }
                    self.finish_rotated(&mut at).await?;
                    let Some(next) = self.open_new(at.checkpoint.line).await? else {
                        break;
                    };
                    tracing::info!(path = %self.origin, "file rotated; following the new one");
                    at = next;
                    self.save(&at.checkpoint).await?;
                    continue;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = self.shutdown.cancelled() => break,
            }
        }
        self.stop(&mut at).await
    }

    /// Reads and hands over every complete line available; `true` when shutdown was
    /// asked for meanwhile.
    async fn read_available(&mut self, at: &mut Position) -> Result<bool, TailError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = at
                .file
                .read(&mut chunk)
                .await
                .map_err(|e| self.read_error(e))?;
            if self.shutdown.is_cancelled() {
                // At the end, what is pending is the file's true last line; anywhere
                // else the next run reads the rest again, whole.
                if n > 0 {
                    self.rewind(at).await?;
                }
                return Ok(true);
            }
            if n == 0 {
                return Ok(false);
            }
            // The chunk's lines are published without waiting for each to be stored, and
            // all of them are stored before the checkpoint moves past them.
            let inlet = self.inlet;
            let pipelined = Pipelined::new(inlet.bus(), PUBLISH_WINDOW);
            let taken = self.take_lines(&chunk[..n], at, &pipelined).await;
            let stored = pipelined.flush().await;
            let stopped = taken?;
            stored.map_err(|source| {
                IngestError::events_not_stored(&self.origin, at.checkpoint.line, source)
            })?;
            self.save(&at.checkpoint).await?;
            if stopped {
                return Ok(true);
            }
        }
    }

    /// Splits a chunk into lines and hands over the complete ones; `true` when it
    /// stopped early for shutdown (the file is then re-positioned after the last line).
    async fn take_lines(
        &mut self,
        chunk: &[u8],
        at: &mut Position,
        bus: &dyn Bus,
    ) -> Result<bool, TailError> {
        let max = self.inlet.max_record_bytes();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            if self.shutdown.is_cancelled() {
                self.rewind(at).await?;
                return Ok(true);
            }
            self.pending.push(&rest[..newline], max);
            let line_bytes = self.pending.len as u64 + 1;
            let pending = std::mem::take(&mut self.pending);
            at.checkpoint.line += 1;
            self.hand_over(&pending, at.checkpoint.line, bus).await?;
            at.checkpoint.offset += line_bytes;
            rest = &rest[newline + 1..];
        }
        self.pending.push(rest, max);
        Ok(false)
    }

    /// Forgets what was read past the last line handed over: stopping anywhere but at
    /// the end of the file, the next run reads it again, whole.
    async fn rewind(&mut self, at: &mut Position) -> Result<(), TailError> {
        at.file
            .seek(SeekFrom::Start(at.checkpoint.offset))
            .await
            .map_err(|e| self.read_error(e))?;
        self.pending = Pending::default();
        Ok(())
    }

    async fn hand_over(&self, line: &Pending, number: u64, bus: &dyn Bus) -> Result<(), TailError> {
        let mut bytes = line.bytes.as_slice();
        let mut len = line.len;
        if len == bytes.len() && bytes.last() == Some(&b'\r') {
            bytes = &bytes[..bytes.len() - 1];
            len -= 1;
        }
        if len == bytes.len() && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let mut frame = Frame::new(&self.origin, number, bytes);
        frame.len = len;
        let Some(_admission) = self.inlet.admit(1).await else {
            return Ok(());
        };
        self.inlet.ingest_on(frame, bus).await?;
        Ok(())
    }

    /// The file's last line at shutdown, and the final checkpoint.
    async fn stop(&mut self, at: &mut Position) -> Result<Checkpoint, TailError> {
        if self.pending.len > 0 && self.config.partial_lines == PartialLines::RejectAtShutdown {
            self.reject_partial(at).await?;
        }
        self.save(&at.checkpoint).await?;
        tracing::info!(sensor = self.inlet.sensor(), path = %self.origin, offset = at.checkpoint.offset, line = at.checkpoint.line, "tail stopped");
        Ok(at.checkpoint)
    }

    async fn reject_partial(&mut self, at: &mut Position) -> Result<(), TailError> {
        let pending = std::mem::take(&mut self.pending);
        at.checkpoint.line += 1;
        let mut frame = Frame::new(&self.origin, at.checkpoint.line, &pending.bytes);
        frame.len = pending.len;
        let reason = format!(
            "the file ended {} bytes into a line without its newline",
            pending.len
        );
        self.inlet
            .reject(frame, TransportReject::PartialLine, reason)
            .await?;
        at.checkpoint.offset += pending.len as u64;
        Ok(())
    }

    /// A rotated-away file is complete: its unterminated last line is handed over as is.
    async fn finish_rotated(&mut self, at: &mut Position) -> Result<(), TailError> {
        if self.pending.len == 0 {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        at.checkpoint.line += 1;
        self.hand_over(&pending, at.checkpoint.line, self.inlet.bus())
            .await?;
        at.checkpoint.offset += pending.len as u64;
        Ok(())
    }

    /// What changed at the path since the tail last looked.
    async fn look_around(&self, at: &Position) -> Result<Change, TailError> {
        let open = at.file.metadata().await.map_err(|e| self.read_error(e))?;
        let read_up_to = at.checkpoint.offset + self.pending.len as u64;
        match tokio::fs::metadata(&self.config.path).await {
            Ok(meta) if identity(&meta) != (at.checkpoint.device, at.checkpoint.inode) => {
                Ok(Change::Replaced)
            }
            Ok(_) if open.len() < read_up_to => Ok(Change::Truncated),
            Ok(_) => Ok(Change::None),
            // Between the rename and the create there is no file: wait for the new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Change::None),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Opens the file where the checkpoint says, or finishes the rotated file the
    /// checkpoint names first. `None` if shutdown came before the file appeared.
    async fn resume(&mut self, saved: Option<Checkpoint>) -> Result<Option<Position>, TailError> {
        let Some(saved) = saved else {
            return self.open_new(0).await;
        };
        let Some(mut at) = self.open_new(saved.line).await? else {
            return Ok(None);
        };
        if (at.checkpoint.device, at.checkpoint.inode) == (saved.device, saved.inode) {
            let len = at
                .file
                .metadata()
                .await
                .map_err(|e| self.read_error(e))?
                .len();
            // A file shorter than the checkpoint was truncated while the tail was away.
            let offset = if len >= saved.offset { saved.offset } else { 0 };
            at.file
                .seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| self.read_error(e))?;
            at.checkpoint.offset = offset;
            return Ok(Some(at));
        }
        if let Some(rotated) = self.find_rotated(&saved).await {
            let drained = self.drain_rotated(rotated, saved).await?;
            if self.shutdown.is_cancelled() {
                return Ok(None);
            }
            let Some(next) = self.open_new(drained.line).await? else {
                return Ok(None);
            };
            at = next;
        } else {
            tracing::warn!(path = %self.origin, "the checkpointed file is gone; reading the current one from its start");
        }
        Ok(Some(at))
    }

    /// Reads a rotated file from the checkpoint to its end, as it was when the tail
    /// stopped before the rotation.
    async fn drain_rotated(
        &mut self,
        path: PathBuf,
        saved: Checkpoint,
    ) -> Result<Checkpoint, TailError> {
        tracing::info!(path = %path.display(), offset = saved.offset, "finishing the file rotated while stopped");
        let mut file = File::open(&path).await.map_err(|e| self.read_error(e))?;
        file.seek(SeekFrom::Start(saved.offset))
            .await
            .map_err(|e| self.read_error(e))?;
        let mut at = Position {
            file,
            checkpoint: saved,
        };
        if !self.read_available(&mut at).await? {
            self.finish_rotated(&mut at).await?;
            self.save(&at.checkpoint).await?;
        }
        Ok(at.checkpoint)
    }

    /// The file beside the tailed one that has the checkpoint's identity (`eve.json.1`).
    async fn find_rotated(&self, saved: &Checkpoint) -> Option<PathBuf> {
        let dir = self
            .config
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut entries = tokio::fs::read_dir(dir).await.ok()?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Ok(meta) = entry.metadata().await {
                if meta.is_file() && identity(&meta) == (saved.device, saved.inode) {
                    return Some(entry.path());
                }
            }
        }
        None
    }

    /// Opens the file at the path from its start, waiting for it to exist.
    async fn open_new(&mut self, line: u64) -> Result<Option<Position>, TailError> {
        loop {
            match File::open(&self.config.path).await {
                Ok(file) => {
                    let meta = file.metadata().await.map_err(|e| self.read_error(e))?;
                    let (device, inode) = identity(&meta);
                    self.pending = Pending::default();
                    return Ok(Some(Position {
                        file,
                        checkpoint: Checkpoint {
                            device,
                            inode,
                            offset: 0,
                            line,
                        },
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.read_error(e)),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = self.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, TailError> {
        let path = &self.config.checkpoint;
        let text = match tokio::fs::read(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TailError::ReadCheckpoint {
                    path: path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| TailError::BadCheckpoint {
                path: path.clone(),
                source,
            })
    }

    /// Replaces the checkpoint file atomically, so a crash leaves the old one or the new.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), TailError> {
        let path = &self.config.checkpoint;
        let error = |source| TailError::WriteCheckpoint {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec(checkpoint).map_err(|e| error(std::io::Error::other(e)))?;
        let mut temp = path.clone().into_os_string();
        temp.push(".tmp");
        tokio::fs::write(&temp, json).await.map_err(error)?;
        tokio::fs::rename(&temp, path).await.map_err(error)
    }

    fn read_error(&self, source: std::io::Error) -> TailError {
        TailError::Read {
            path: self.config.path.clone(),
            source,
        }
    }
}

enum Change {
    None,
    Truncated,
    Replaced,
}

impl Pending {
    fn push(&mut self, bytes: &[u8], max: usize) {
        let room = max.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.len = self.len.saturating_add(bytes.len());
    }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}
