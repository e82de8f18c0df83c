//! Group commit of new alerts on SQLite: alerts stored at the same moment (concurrent
//! TheHive create-alert requests, a burst from the pipeline) share one write transaction
//! instead of taking SQLite's single write lock one after the other.
//!
//! SQLite runs one writer at a time, and each of sqlx's statements is a round trip to the
//! connection's worker thread; an alert alone costs six (begin, insert, read the audit
//! chain's head, append, index observables, commit). A batch costs the same six for all
//! its alerts: one multi-row insert of the alerts, one read of the head, one multi-row
//! append of their audit entries (chained in memory, in the batch's order), one multi-row
//! insert of their observables. Each alert keeps its own audit entry, in the same
//! transaction as the alert, so the chain is exactly what storing them one by one gives.
//!
//! There is no timer and no batch size to wait for: each `insert_alert` queues its alert
//! and starts a drain task, which takes the writer connection and then everything queued.
//! An alert queued while another batch commits goes in the next one. The drain runs as its
//! own task so that a caller that goes away (a client hanging up) cannot abort a batch that
//! holds other callers' alerts. When a batch fails, each of its alerts is retried in a
//! transaction of its own, so one bad alert fails only its own request.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::{Connection, Row, SqlitePool};
use tokio::sync::oneshot;

use super::{alert_state, analyst, level_rank, query_err, ts, StoreError};
use crate::alert::Alert;
use crate::audit::{self, Change, SYSTEM_ACTOR};

/// The most alerts one transaction stores: 12 bound values per audit entry keep a full
/// batch far below SQLite's limit of 32,766 bound values per statement, and a batch of
/// this size already amortises the per-transaction cost almost entirely.
const MAX_BATCH: usize = 128;

/// The most observable rows one statement inserts (9 bound values each).
const MAX_OBSERVABLE_ROWS: usize = 3_000;

/// An alert ready to store: its columns, body, audit state and observables, computed by
/// the caller so the writer does nothing but SQL.
pub(super) struct PendingAlert {
    id: String,
    rule_id: String,
    rule_title: String,
    level: &'static str,
    level_rank: i64,
    host: Option<String>,
    sensor: Option<String>,
    timestamp: String,
    detected_at: String,
    intel_count: i64,
    body: String,
    audit_after: Value,
    observables: BTreeMap<(String, String), bool>,
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

/// Alerts waiting for the writer.
#[derive(Default)]
pub(super) struct AlertQueue {
    pending: Mutex<Vec<(PendingAlert, Reply)>>,
}

impl AlertQueue {
    /// Stores `alert` in the next batch; whether it was new (`false` for an id stored
    /// before, or earlier in the same batch).
    pub(super) async fn insert(
        self: &Arc<Self>,
        writer: &SqlitePool,
        alert: PendingAlert,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| StoreError::Writer {
                reason: "a writer panicked while queueing".to_owned(),
            })?
            .push((alert, reply));
        let queue = Arc::clone(self);
        let writer = writer.clone();
        tokio::spawn(async move { queue.drain(&writer).await });
        answer.await.map_err(|_| StoreError::Writer {
            reason: "the batch holding the alert stopped before answering".to_owned(),
        })?
    }

    /// Takes the writer, then every queued alert, and stores them.
    async fn drain(&self, writer: &SqlitePool) {
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(source) => {
                tracing::warn!(error = %source, "alert batch could not take the writer");
                for (_, reply) in self.take(usize::MAX) {
                    let _ = reply.send(Err(StoreError::Writer {
                        reason: source.to_string(),
                    }));
                }
                return;
            }
        };
        loop {
            let batch = self.take(MAX_BATCH);
            if batch.is_empty() {
                return;
            }
            let (alerts, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match store_batch(&mut conn, &alerts).await {
                Ok(inserted) => {
                    for (reply, new) in replies.into_iter().zip(inserted) {
                        let _ = reply.send(Ok(new));
                    }
                }
                Err(error) if alerts.len() == 1 => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Err(error));
                    }
                }
                Err(error) => {
                    tracing::warn!(alerts = alerts.len(), error = %error, "alert batch failed, storing its alerts one by one");
                    for (alert, reply) in alerts.iter().zip(replies) {
                        let one = store_batch(&mut conn, std::slice::from_ref(alert))
                            .await
                            .map(|inserted| inserted[0]);
                        let _ = reply.send(one);
                    }
                }
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

/// Stores `alerts` in one transaction; for each, whether it was new.
async fn store_batch(
    conn: &mut sqlx::SqliteConnection,
    alerts: &[PendingAlert],
) -> Result<Vec<bool>, StoreError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(query_err("begin"))?;
    let mut sql = sqlx::QueryBuilder::new(
        "INSERT INTO alerts (id, rule_id, rule_title, level, level_rank, host, sensor, \
         timestamp, detected_at, intel_count, body) ",
    );
    sql.push_values(alerts, |mut row, alert| {
        row.push_bind(&alert.id)
            .push_bind(&alert.rule_id)
            .push_bind(&alert.rule_title)
            .push_bind(alert.level)
            .push_bind(alert.level_rank)
            .push_bind(&alert.host)
            .push_bind(&alert.sensor)
            .push_bind(&alert.timestamp)
            .push_bind(&alert.detected_at)
            .push_bind(alert.intel_count)
            .push_bind(&alert.body);
    });
    sql.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
    let stored: HashSet<String> = sql
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("insert alerts"))?
        .iter()
        .map(|row| row.get("id"))
        .collect();
    // An id twice in one batch is stored once: the first is the new one.
    let mut seen = HashSet::new();
    let inserted: Vec<bool> = alerts
        .iter()
        .map(|alert| stored.contains(&alert.id) && seen.insert(alert.id.as_str()))
        .collect();
    let new: Vec<&PendingAlert> = alerts
        .iter()
        .zip(&inserted)
        .filter_map(|(alert, new)| new.then_some(alert))
        .collect();
    if !new.is_empty() {
        append_audit_entries(&mut tx, &new).await?;
        index_observables(&mut tx, &new).await?;
    }
    tx.commit().await.map_err(query_err("commit"))?;
    Ok(inserted)
}

/// Appends one `alert.create` entry per alert, chained after the head in order.
async fn append_audit_entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    alerts: &[&PendingAlert],
) -> Result<(), StoreError> {
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("read the audit chain's head"))?;
    let (mut seq, mut prev_hash) = match last {
        Some(row) => (row.get::<i64, _>("seq") + 1, row.get::<String, _>("hash")),
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
    insert_entries(tx, &entries).await
}

/// Inserts chained audit entries in one statement.
pub(super) async fn insert_entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    entries: &[audit::AuditEntry],
) -> Result<(), StoreError> {
    let mut sql = sqlx::QueryBuilder::new(
        "INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, before, \
         after, before_digest, after_digest, prev_hash, hash) ",
    );
    sql.push_values(entries, |mut row, entry| {
        row.push_bind(entry.seq)
            .push_bind(&entry.at)
            .push_bind(&entry.actor)
            .push_bind(&entry.action)
            .push_bind(&entry.object_kind)
            .push_bind(&entry.object_id)
            .push_bind(entry.before.as_ref().map(audit::canonical_json))
            .push_bind(entry.after.as_ref().map(audit::canonical_json))
            .push_bind(&entry.before_digest)
            .push_bind(&entry.after_digest)
            .push_bind(&entry.prev_hash)
            .push_bind(&entry.hash);
    });
    sql.build()
        .execute(&mut **tx)
        .await
        .map_err(query_err("append to the audit log"))?;
    Ok(())
}

/// The observables of the alerts' events, as `insert_alert` indexes them one alert at a
/// time.
async fn index_observables(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    alerts: &[&PendingAlert],
) -> Result<(), StoreError> {
    let rows: Vec<(&PendingAlert, &(String, String), bool)> = alerts
        .iter()
        .flat_map(|alert| {
            alert
                .observables
                .iter()
                .map(move |(key, ioc)| (*alert, key, *ioc))
        })
        .collect();
    for chunk in rows.chunks(MAX_OBSERVABLE_ROWS) {
        let mut sql = sqlx::QueryBuilder::new(
            "INSERT INTO observables (alert_id, type, value, ioc, sighted, tags, created_by, \
             created_at, updated_at) ",
        );
        sql.push_values(chunk, |mut row, (alert, (kind, value), ioc)| {
            row.push_bind(&alert.id)
                .push_bind(kind)
                .push_bind(value)
                .push_bind(i64::from(*ioc))
                .push_bind(0_i64)
                .push_bind("[]")
                .push_bind(SYSTEM_ACTOR)
                .push_bind(&alert.detected_at)
                .push_bind(&alert.detected_at);
        });
        sql.push(" ON CONFLICT DO NOTHING");
        sql.build()
            .execute(&mut **tx)
            .await
            .map_err(query_err("index alert observables"))?;
    }
    Ok(())
}
