//! Group commit of new alerts on SQLite: alerts stored at the same moment (concurrent
//! TheHive create-alert requests, a burst from the pipeline) share one write transaction
//! instead of taking SQLite's single write lock one after the other.
//!
//! A batch is written through a rusqlite connection of its own on tokio's blocking pool:
//! one hand-off for the whole transaction (begin, insert each alert, read the audit
//! chain's head, append each audit entry, index each observable, commit), where sqlx's
//! SQLite driver hands every statement to the connection's worker thread and back
//! (`super::readers` says why rusqlite). The batch holds sqlx's writer connection
//! meanwhile, which every other write transaction takes, so SQLite's one-writer rule is
//! kept by queueing, never by the busy handler. Each alert keeps its own audit entry, in
//! the same transaction as the alert, chained in the batch's order, so the chain is
//! exactly what storing them one by one gives.
//!
//! There is no timer and no batch size to wait for: each `insert_alert` queues its alert
//! and, unless a drain task is running already, starts one, which takes the writer
//! connection and then everything queued, batch after batch until the queue is empty. An
//! alert queued while another batch commits goes in the next one. (One drain at a time:
//! a drain per alert made every request take and give back the writer connection, most of
//! them to find their alert stored by an earlier drain.) The drain runs as its own task so
//! that a caller that goes away (a client hanging up) cannot abort a batch that holds
//! other callers' alerts. When a batch fails, each of its alerts is retried in a
//! transaction of its own, so one bad alert fails only its own request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use sqlx::SqlitePool;
use tokio::sync::oneshot;

use super::{alert_state, analyst, level_rank, ts, StoreError};
use crate::alert::Alert;
use crate::audit::{self, AuditEntry, Change, SYSTEM_ACTOR};
use crate::error_chain;

/// The most alerts one transaction stores: a batch of this size already amortises the
/// per-transaction cost (the commit, the hand-off to the blocking pool) almost entirely,
/// and holding the write lock longer would only delay the other writers.
const MAX_BATCH: usize = 128;

/// An alert ready to store: its columns, body, audit state and observables, computed by
/// the caller so the writer does nothing but SQL.
pub(super) struct PendingAlert {
    pub(super) id: String,
    pub(super) rule_id: String,
    pub(super) rule_title: String,
    pub(super) level: &'static str,
    pub(super) level_rank: i64,
    pub(super) host: Option<String>,
    pub(super) sensor: Option<String>,
    pub(super) timestamp: String,
    pub(super) detected_at: String,
    pub(super) intel_count: i64,
    pub(super) body: String,
    pub(super) audit_after: Value,
    pub(super) observables: BTreeMap<(String, String), bool>,
}

impl PendingAlert {
    pub(super) fn new(alert: &Alert) -> Result<Self, StoreError> {
        let body = serde_json::to_string(alert).map_err(|e| StoreError::Corrupt {
            what: "alert",
            reason: e.to_string(),
        })?;
        Ok(PendingAlert {
            id: alert.id.clone(),
            rule_id: alert.rule.id.clone(),
            rule_title: alert.rule.title.clone(),
            level: alert.rule.level.as_str(),
            level_rank: level_rank(alert.rule.level),
            host: alert.host.clone(),
            sensor: alert.sensor.clone(),
            timestamp: ts(alert.timestamp),
            detected_at: ts(alert.detected_at),
            intel_count: alert.intel.len() as i64,
            body,
            audit_after: alert_state(alert),
            observables: analyst::alert_observables(alert),
        })
    }
}

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// How a store writes one batch: in one transaction, appending one audit entry per new
/// alert, and alert by alert when the batch fails (so one bad alert fails only its own
/// request).
#[async_trait]
pub(super) trait BatchWriter: Send + Sync + 'static {
    /// For each alert, whether it was new, or why it could not be stored.
    async fn store(&self, alerts: Vec<PendingAlert>) -> Vec<Result<bool, StoreError>>;
}

/// Alerts waiting for the writer.
pub(super) struct AlertQueue<W> {
    pending: Mutex<Vec<(PendingAlert, Reply)>>,
    /// Whether a drain task is running; it empties the queue before it stops.
    draining: AtomicBool,
    writer: W,
}

impl<W: BatchWriter> AlertQueue<W> {
    pub(super) fn new(writer: W) -> Self {
        AlertQueue {
            pending: Mutex::default(),
            draining: AtomicBool::new(false),
            writer,
        }
    }

    /// Stores `alert` in the next batch; whether it was new (`false` for an id stored
    /// before, or earlier in the same batch).
    pub(super) async fn insert(self: &Arc<Self>, alert: PendingAlert) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| StoreError::Writer {
                reason: "a writer panicked while queueing".to_owned(),
            })?
            .push((alert, reply));
        if !self.draining.swap(true, Ordering::AcqRel) {
            let queue = Arc::clone(self);
            tokio::spawn(async move { queue.drain_all().await });
        }
        answer.await.map_err(|_| StoreError::Writer {
            reason: "the batch holding the alert stopped before answering".to_owned(),
        })?
    }

    /// Drains until the queue is empty and no alert can be left behind: an alert queued
    /// after the last look saw `draining` set and started no drain of its own, so the
    /// queue is looked at again after the flag is cleared.
    async fn drain_all(&self) {
        loop {
            self.drain().await;
            self.draining.store(false, Ordering::Release);
            if self.is_empty() || self.draining.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pending
            .lock()
            .map_or(true, |pending| pending.is_empty())
    }

    /// Stores batches until the queue is empty.
    async fn drain(&self) {
        loop {
            let batch = self.take(MAX_BATCH);
            if batch.is_empty() {
                return;
            }
            let (alerts, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = self.writer.store(alerts).await;
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    fn take(&self, most: usize) -> Vec<(PendingAlert, Reply)> {
        match self.pending.lock() {
            Ok(mut pending) => {
                let count = pending.len().min(most);
                pending.drain(..count).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// The same error for each of `count` alerts.
fn fail_all(count: usize, reason: &str) -> Vec<Result<bool, StoreError>> {
    (0..count)
        .map(|_| {
            Err(StoreError::Writer {
                reason: reason.to_owned(),
            })
        })
        .collect()
}

/// SQLite's batches: written through a rusqlite connection of their own on the blocking
/// pool, while holding sqlx's writer connection.
pub(super) struct SqliteBatches {
    /// Held, not used, while a batch writes: every other write transaction goes through
    /// this one sqlx connection, so holding it keeps them out.
    writer: SqlitePool,
    /// The store's file, for the batch connection.
    path: PathBuf,
    /// The rusqlite connection batches are written through, opened at the first batch;
    /// out of its slot while a batch runs.
    connection: Mutex<Option<Connection>>,
}

impl SqliteBatches {
    pub(super) fn new(writer: SqlitePool, path: &Path) -> Self {
        SqliteBatches {
            writer,
            path: path.to_owned(),
            connection: Mutex::new(None),
        }
    }
}

#[async_trait]
impl BatchWriter for SqliteBatches {
    async fn store(&self, alerts: Vec<PendingAlert>) -> Vec<Result<bool, StoreError>> {
        let count = alerts.len();
        let _write_lock = match self.writer.acquire().await {
            Ok(conn) => conn,
            Err(source) => {
                tracing::warn!(error = %source, "alert batch could not take the writer");
                return fail_all(count, &source.to_string());
            }
        };
        let conn = self.connection.lock().ok().and_then(|mut conn| conn.take());
        let path = self.path.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut conn = match conn {
                Some(conn) => conn,
                None => match open_batch_connection(&path) {
                    Ok(conn) => conn,
                    Err(error) => return (None, fail_all(count, &error_chain(&error))),
                },
            };
            let results = store_each(&mut conn, &alerts);
            (Some(conn), results)
        })
        .await;
        match stored {
            Ok((conn, results)) => {
                if let (Some(conn), Ok(mut slot)) = (conn, self.connection.lock()) {
                    *slot = Some(conn);
                }
                results
            }
            Err(error) => fail_all(count, &format!("the alert batch stopped: {error}")),
        }
    }
}

/// The batch connection: a rusqlite connection of its own to the store's file, with the
/// settings the sqlx connections have (`SqliteStore::open_file`).
fn open_batch_connection(path: &Path) -> Result<Connection, StoreError> {
    let err = |what| move |source| StoreError::Sqlite { what, source };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("open the alert batch connection"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err("set the busy timeout"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err("set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(err("enable foreign keys"))?;
    Ok(conn)
}

/// Stores the batch in one transaction; when that fails, each alert in a transaction of
/// its own, so that one bad alert fails only its own request.
fn store_each(conn: &mut Connection, alerts: &[PendingAlert]) -> Vec<Result<bool, StoreError>> {
    match store_batch(conn, alerts) {
        Ok(inserted) => inserted.into_iter().map(Ok).collect(),
        Err(error) if alerts.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(alerts = alerts.len(), error = %error, "alert batch failed, storing its alerts one by one");
            alerts
                .iter()
                .map(|alert| store_batch(conn, std::slice::from_ref(alert)).map(|new| new[0]))
                .collect()
        }
    }
}

/// Stores `alerts` in one transaction; for each, whether it was new. Prepared statements
/// run once per row: without a hand-off per statement, a row costs microseconds, and
/// multi-row statements would only add SQL building.
fn store_batch(conn: &mut Connection, alerts: &[PendingAlert]) -> Result<Vec<bool>, StoreError> {
    let err = |what| move |source| StoreError::Sqlite { what, source };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let mut inserted = Vec::with_capacity(alerts.len());
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO alerts (id, rule_id, rule_title, level, level_rank, host, sensor, \
                 timestamp, detected_at, intel_count, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(err("insert alerts"))?;
        // An id twice in one batch is stored once: the first is the new one.
        for alert in alerts {
            let changed = insert
                .execute(params![
                    alert.id,
                    alert.rule_id,
                    alert.rule_title,
                    alert.level,
                    alert.level_rank,
                    alert.host,
                    alert.sensor,
                    alert.timestamp,
                    alert.detected_at,
                    alert.intel_count,
                    alert.body,
                ])
                .map_err(err("insert alerts"))?;
            inserted.push(changed == 1);
        }
    }
    let new: Vec<&PendingAlert> = alerts
        .iter()
        .zip(&inserted)
        .filter_map(|(alert, new)| new.then_some(alert))
        .collect();
    if !new.is_empty() {
        append_audit_entries(&tx, &new)?;
        index_observables(&tx, &new)?;
    }
    tx.commit().map_err(err("commit"))?;
    Ok(inserted)
}

/// One `alert.create` entry per alert, chained in order after `head` (the chain's last
/// sequence number and hash; `None` for an empty log). Both stores' batch writers append
/// these.
pub(super) fn alert_entries(
    head: Option<(i64, String)>,
    alerts: &[&PendingAlert],
) -> Vec<AuditEntry> {
    let (mut seq, mut prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, audit::GENESIS.to_owned()),
    };
    let mut entries = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let change = Change {
            actor: SYSTEM_ACTOR.to_owned(),
            action: "alert.create",
            object_kind: "alert",
            object_id: alert.id.clone(),
            before: None,
            after: Some(alert.audit_after.clone()),
        };
        let entry = super::chain_entry(seq, prev_hash, change);
        seq += 1;
        prev_hash = entry.hash.clone();
        entries.push(entry);
    }
    entries
}

/// Appends one `alert.create` entry per alert, chained after the head in order.
fn append_audit_entries(tx: &Connection, alerts: &[&PendingAlert]) -> Result<(), StoreError> {
    let err = |what| move |source| StoreError::Sqlite { what, source };
    let head: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .and_then(|mut statement| {
            statement
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(err("read the audit chain's head"))?;
    let mut append = tx
        .prepare_cached(
            "INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, before, \
             after, before_digest, after_digest, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(err("append to the audit log"))?;
    for entry in alert_entries(head, alerts) {
        append
            .execute(params![
                entry.seq,
                entry.at,
                entry.actor,
                entry.action,
                entry.object_kind,
                entry.object_id,
                entry.before.as_ref().map(audit::canonical_json),
                entry.after.as_ref().map(audit::canonical_json),
                entry.before_digest,
                entry.after_digest,
                entry.prev_hash,
                entry.hash,
            ])
            .map_err(err("append to the audit log"))?;
    }
    Ok(())
}

/// The observables of the alerts' events, as `insert_alert` indexes them one alert at a
/// time.
fn index_observables(tx: &Connection, alerts: &[&PendingAlert]) -> Result<(), StoreError> {
    let err = |what| move |source| StoreError::Sqlite { what, source };
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO observables (alert_id, type, value, ioc, sighted, tags, created_by, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 0, '[]', ?5, ?6, ?6) \
             ON CONFLICT DO NOTHING",
        )
        .map_err(err("index alert observables"))?;
    for alert in alerts {
        for ((kind, value), ioc) in &alert.observables {
            insert
                .execute(params![
                    alert.id,
                    kind,
                    value,
                    i64::from(*ioc),
                    SYSTEM_ACTOR,
                    alert.detected_at,
                ])
                .map_err(err("index alert observables"))?;
        }
    }
    Ok(())
}
