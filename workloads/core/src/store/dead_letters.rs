//! The dead-letter log `kastell run` keeps beside its case store (`DIR/dead-letters.jsonl`,
//! one rejected or failed message per line) and the GDPR procedures over it.
//!
//! A dead letter carries the raw record a stage refused, which may name a data subject
//! (a Wazuh line with a user name, an e-mail address in a Zeek SMTP log), so a subject's
//! export must show the letters that mention them, an erasure must scrub them and the
//! retention period applies to them as to closed cases. The matching and erasing rules are
//! the case store's ([`Subject`]), so a subject is found in the same places.
//!
//! The log is appended to by the running pipeline and rewritten by the procedures, which
//! may run in another process (`kastell gdpr`). Both hold an exclusive `flock` on a lock
//! file beside the log (the log itself is replaced by a rename, so it cannot carry the
//! lock), and the writer reopens the log when the path no longer names the file it holds
//! open: no line is written into a replaced file and lost.
//!
//! Each line is stamped with [`LOGGED_AT`] when written, which retention reads. Lines
//! written before the stamp existed have none: they are dropped only once the whole file
//! was last changed before the cutoff, the one date known to be later than theirs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use super::privacy::Subject;
use super::StoreError;

/// The log's file name inside the data directory.
pub const DEAD_LETTER_FILE: &str = "dead-letters.jsonl";

/// The field each written line gets: when it was logged, RFC 3339 in UTC.
pub const LOGGED_AT: &str = "logged_at";

/// A procedure over the dead-letter log failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Subject(#[from] StoreError),
}

/// The dead-letter log at one path.
#[derive(Debug, Clone)]
pub struct DeadLetterLog {
    path: PathBuf,
}

/// What a subject's erasure did to the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scrub {
    pub file: String,
    /// Lines in the log.
    pub lines: usize,
    /// Lines that mentioned the subject and now hold `[erased]` in its place.
    pub scrubbed: usize,
}

/// What the retention period did to the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub file: String,
    /// Lines still in the log.
    pub kept: usize,
    /// Lines logged before the cutoff, removed.
    pub dropped: usize,
    /// Kept lines without a [`LOGGED_AT`] stamp (written by an older version), kept
    /// because the file changed after the cutoff, so they may be younger than it.
    pub undated_kept: usize,
}

impl DeadLetterLog {
    /// The log in data directory `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        DeadLetterLog::at(dir.join(DEAD_LETTER_FILE))
    }

    pub fn at(path: PathBuf) -> Self {
        DeadLetterLog { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> DeadLetterError + '_ {
        move |source| DeadLetterError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    /// Takes the lock every writer and rewriter of the log holds; released when the
    /// returned file is dropped.
    fn lock(&self) -> Result<File, DeadLetterError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .map_err(self.io("opening the lock file of"))?;
        lock.lock().map_err(self.io("locking"))?;
        Ok(lock)
    }

    /// A writer that appends to the log.
    pub fn writer(&self) -> DeadLetterWriter {
        DeadLetterWriter {
            log: self.clone(),
            file: None,
        }
    }

    /// The lines, each parsed as JSON (a line that is not JSON becomes a string), with
    /// the file's last change; an absent log has none.
    fn read(&self) -> Result<(Vec<Value>, Option<DateTime<Utc>>), DeadLetterError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
            Err(e) => return Err(self.io("opening")(e)),
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(self.io("reading the change time of"))?;
        let mut lines = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(self.io("reading"))?;
            if line.trim().is_empty() {
                continue;
            }
            lines.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        Ok((lines, Some(modified.into())))
    }

    /// Replaces the log with `lines`: written to a file beside it, synced, then renamed
    /// over it, so a crash leaves the old log or the new one, never half of one.
    fn replace(&self, lines: &[Value]) -> Result<(), DeadLetterError> {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".rewrite");
        let temporary = self.path.with_file_name(name);
        let mut out = io::BufWriter::new(
            File::create(&temporary).map_err(self.io("creating the rewrite of"))?,
        );
        for line in lines {
            let text = match line {
                // A line that was not JSON stays the text it was.
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(self.io("writing the rewrite of"))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| self.io("writing the rewrite of")(e.into_error()))?;
        if let Ok(permissions) = fs::metadata(&self.path).map(|m| m.permissions()) {
            file.set_permissions(permissions)
                .map_err(self.io("copying the permissions of"))?;
        }
        file.sync_all().map_err(self.io("syncing the rewrite of"))?;
        fs::rename(&temporary, &self.path).map_err(self.io("replacing"))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is synced.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io("syncing the directory of"))?;
        }
        Ok(())
    }

    /// The letters that mention `subject`, matched as the case store matches it.
    ///
    /// # Errors
    /// A subject shorter than the store accepts, or a log that cannot be read.
    pub fn export(&self, subject: &str) -> Result<Vec<Value>, DeadLetterError> {
        let subject = Subject::new(subject)?;
        let _lock = self.lock()?;
        let (lines, _) = self.read()?;
        Ok(lines
            .into_iter()
            .filter(|line| subject.in_value(line))
            .collect())
    }

    /// Replaces every mention of `subject` in the letters with `[erased]`; the log is
    /// rewritten only when a line changed.
    ///
    /// # Errors
    /// As [`DeadLetterLog::export`], and when the log cannot be rewritten.
    pub fn erase(&self, subject: &str) -> Result<Scrub, DeadLetterError> {
        let subject = Subject::new(subject)?;
        let _lock = self.lock()?;
        let (mut lines, _) = self.read()?;
        let mut scrubbed = 0;
        for line in &mut lines {
            if subject.erase_in(line) {
                scrubbed += 1;
            }
        }
        if scrubbed > 0 {
            self.replace(&lines)?;
        }
        Ok(Scrub {
            file: self.path.display().to_string(),
            lines: lines.len(),
            scrubbed,
        })
    }

    /// Removes the letters logged before `cutoff`; the log is rewritten only when one
    /// was.
    ///
    /// # Errors
    /// When the log cannot be read or rewritten.
    pub fn expire(&self, cutoff: DateTime<Utc>) -> Result<Expiry, DeadLetterError> {
        let _lock = self.lock()?;
        let (lines, modified) = self.read()?;
        let total = lines.len();
        // Undated lines are at least as old as the file's last change.
        let undated_expired = modified.is_some_and(|m| m < cutoff);
        let mut undated_kept = 0;
        let kept: Vec<Value> = lines
            .into_iter()
            .filter(|line| match logged_at(line) {
                Some(at) => at >= cutoff,
                None if undated_expired => false,
                None => {
                    undated_kept += 1;
                    true
                }
            })
            .collect();
        let dropped = total - kept.len();
        if dropped > 0 {
            self.replace(&kept)?;
        }
        Ok(Expiry {
            file: self.path.display().to_string(),
            kept: kept.len(),
            dropped,
            undated_kept,
        })
    }
}

fn logged_at(line: &Value) -> Option<DateTime<Utc>> {
    let text = line.get(LOGGED_AT)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Appends letters to the log, keeping the file open between letters.
#[derive(Debug)]
pub struct DeadLetterWriter {
    log: DeadLetterLog,
    /// The open log and its inode, to notice that a procedure replaced it.
    file: Option<(File, u64)>,
}

impl DeadLetterWriter {
    /// Appends one letter, stamped with [`LOGGED_AT`] when it is a JSON object without
    /// one (anything else is written as it came).
    ///
    /// # Errors
    /// When the log cannot be opened or written.
    pub fn append(&mut self, payload: &[u8], now: DateTime<Utc>) -> Result<(), DeadLetterError> {
        let line = stamped(payload, now);
        let _lock = self.log.lock()?;
        let current = fs::metadata(&self.log.path).map(|m| m.ino()).ok();
        let (mut file, ino) = match (self.file.take(), current) {
            (Some((file, held)), Some(current)) if held == current => (file, held),
            // Never opened, or replaced (or removed) since: open what the path names now.
            _ => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log.path)
                    .map_err(self.log.io("opening"))?;
                let ino = file.metadata().map_err(self.log.io("reading"))?.ino();
                (file, ino)
            }
        };
        let mut bytes = line;
        bytes.push(b'\n');
        // One write per line: an append of one buffer is not interleaved with another's.
        let written = file.write_all(&bytes).map_err(self.log.io("appending to"));
        self.file = Some((file, ino));
        written
    }
}

fn stamped(payload: &[u8], now: DateTime<Utc>) -> Vec<u8> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut letter)) if !letter.contains_key(LOGGED_AT) => {
            letter.insert(
                LOGGED_AT.to_owned(),
                Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
            serde_json::to_vec(&letter).unwrap_or_else(|_| payload.to_vec())
        }
        _ => payload.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_letter_is_stamped_and_a_replaced_log_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeadLetterLog::in_dir(dir.path());
        let mut writer = log.writer();
        writer
            .append(
                br#"{"stage":"ingest","raw":"a"}"#,
                at("2026-01-01T00:00:00Z"),
            )
            .unwrap();
        writer
            .append(b"not json", at("2026-01-02T00:00:00Z"))
            .unwrap();
        let text = fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"stage": "ingest", "raw": "a", "logged_at": "2026-01-01T00:00:00.000Z"})
        );
        assert_eq!(lines[1..], ["not json"]);
        let expiry = log.expire(at("2026-01-01T12:00:00Z")).unwrap();
        // The undated line is younger than the file's change time (now), so it stays.
        assert_eq!(
            (expiry.dropped, expiry.kept, expiry.undated_kept),
            (1, 1, 1)
        );
        writer
            .append(br#"{"stage":"cases"}"#, at("2026-01-03T00:00:00Z"))
            .unwrap();
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last[LOGGED_AT], "2026-01-03T00:00:00.000Z");
    }
}
