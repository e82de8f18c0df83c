//! The PostgreSQL case store, for a platform whose cases stage runs in a cluster (several
//! replicas, one shared database). It keeps the same tables as the SQLite store (see
//! `migrations/postgres`), decodes rows with the same code and appends to the audit
//! chain under the same rule: a change and its entry commit together.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

use super::group_commit::{self, BatchWriter, PendingAlert};
use super::{
    action_change, action_from_row, alert_from_row, api_key_from_row, apply_update, audit_from_row,
    case_change, case_from_row, level_rank, query_err, to_state, ts, ActionFilter, ActionRecord,
    ActionStatus, AlertFilter, AlertRecord, AlertTriage, ApiKeyRecord, CaseDraft, CaseFilter,
    CaseRecord, CaseStatus, CaseStore, CaseUpdate, Decision, NewAction, NewCase, NewObservable,
    NewTask, ObservableOwner, ObservableRecord, Resolution, SearchHits, SeverityFigures,
    StoreError, StoredAlert, TaskRecord, TaskUpdate, TimelineEntry, Tlp,
};
use crate::alert::Alert;
use crate::audit::{self, AuditEntry, Change, SYSTEM_ACTOR};

mod analyst;
mod merge;
mod nis2;
mod outputs;

/// The key of the transaction-level advisory lock every write takes first. The audit
/// chain needs one writer at a time: each entry holds the hash of the one before it, so
/// two transactions that read the same head would fork the chain (the primary key on
/// `seq` would refuse the second, failing a change that should have succeeded). The lock
/// is the PostgreSQL counterpart of SQLite's `BEGIN IMMEDIATE`, and like it also makes a
/// change's read-then-write (deciding a pending action, closing an open case) atomic.
/// The value is arbitrary but fixed: `"kastell"` in ASCII.
const WRITE_LOCK: i64 = 0x006B_6173_7465_6C6C;

/// Begins a transaction and takes [`WRITE_LOCK`], written out in decimal as a simple
/// query takes no parameters (checked against the constant when compiling).
const BEGIN_LOCKED: &str = "BEGIN; SELECT pg_advisory_xact_lock(30224971009977452)";

const _: () = assert!(lock_key_in(BEGIN_LOCKED, WRITE_LOCK));

/// Whether the number between the parentheses of `sql` is `key`.
const fn lock_key_in(sql: &str, key: i64) -> bool {
    let bytes = sql.as_bytes();
    let mut at = 0;
    while at < bytes.len() && bytes[at] != b'(' {
        at += 1;
    }
    at += 1;
    let mut number: i64 = 0;
    while at < bytes.len() && bytes[at] != b')' {
        number = number * 10 + (bytes[at] - b'0') as i64;
        at += 1;
    }
    number == key
}

/// Connections per store; the cases stage's API handlers and pipeline share them.
const MAX_CONNECTIONS: u32 = 16;

/// A pooled connection idle longer than this is pinged before it is used again.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(30);

/// The case store in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// New alerts waiting to be stored together ([`group_commit`]).
    alerts: Arc<group_commit::AlertQueue<PgBatches>>,
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

impl PostgresStore {
    /// Connects to `postgres://…` or `postgresql://…` and applies the migrations. TLS is
    /// set by the URL's `sslmode` (through rustls); the tables go to the first schema of
    /// the connection's `search_path`.
    ///
    /// # Errors
    /// When the URL does not parse, the server cannot be reached or refuses the login, or
    /// a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
            url: redact(url),
            reason: e.to_string(),
        })?;
        Self::connect_with(options).await
    }

    /// As [`PostgresStore::connect`], with options built by the caller (a test's own
    /// schema through `search_path`, for example).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let shown = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // sqlx pings every connection it hands out by default: one more round trip
            // per query. Only a connection idle for a while is checked, as one in steady
            // use fails its next query anyway if the server went away.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        tracing::debug!(url = %shown, "postgresql case store ready");
        Ok(PostgresStore {
            alerts: Arc::new(group_commit::AlertQueue::new(PgBatches {
                pool: pool.clone(),
            })),
            pool,
        })
    }

    /// The connection pool, for the privacy procedures and for tests that tamper with
    /// the stored rows.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction that holds [`WRITE_LOCK`] until it ends, begun and locked in one
    /// round trip (one simple query of two statements) rather than two: every write
    /// holds the lock for its round trips, so each one fewer is more writes a second.
    /// sqlx reads only the query's end of this statement: were the lock to fail (a
    /// statement timeout), the transaction is aborted and the write's next statement
    /// fails, so nothing is written without the lock.
    pub(super) async fn write_tx(&self) -> Result<Tx, StoreError> {
        self.pool
            .begin_with(BEGIN_LOCKED)
            .await
            .map_err(query_err("begin and take the write lock"))
    }
}

/// The URL with its password replaced, for error messages and logs.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Appends the change's audit entry and commits: the entry lands in the same transaction
/// as the change it records, or neither does.
pub(super) async fn commit_audited(mut tx: Tx, change: Change) -> Result<(), StoreError> {
    append_audit(&mut tx, change).await?;
    tx.commit().await.map_err(query_err("commit"))
}

/// Appends one change to the audit chain; the transaction must hold [`WRITE_LOCK`].
pub(super) async fn append_audit(tx: &mut Tx, change: Change) -> Result<AuditEntry, StoreError> {
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("read the audit chain's head"))?;
    let head = last.map(|row| (row.get::<i64, _>("seq"), row.get::<String, _>("hash")));
    append_after(tx, head, change).await
}

/// Appends `change` after the chain's `head` (its last seq and hash; `None` for an empty
/// chain), read by the caller under [`WRITE_LOCK`] in this transaction.
/// PostgreSQL's alert batches ([`group_commit`]): the same transaction as a lone alert's
/// (take the write lock, insert, read the chain's head, append, index observables,
/// commit), for every alert queued meanwhile, in 4 or 5 round trips and one WAL flush for
/// the whole batch. The write lock is held for those round trips instead of for 5 per
/// alert, which is what bounded the alerts a second.
pub(super) struct PgBatches {
    pool: PgPool,
}

/// The most observable rows one statement inserts (9 bound values each, far below
/// PostgreSQL's 65,535 per statement).
const MAX_OBSERVABLE_ROWS: usize = 3_000;

#[async_trait]
impl BatchWriter for PgBatches {
    async fn store(&self, alerts: Vec<PendingAlert>) -> Vec<Result<bool, StoreError>> {
        match self.store_batch(&alerts).await {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(error) if alerts.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(alerts = alerts.len(), error = %error, "alert batch failed, storing its alerts one by one");
                let mut results = Vec::with_capacity(alerts.len());
                for alert in &alerts {
                    let one = self.store_batch(std::slice::from_ref(alert)).await;
                    results.push(one.map(|inserted| inserted[0]));
                }
                results
            }
        }
    }
}

impl PgBatches {
    /// Stores `alerts` in one transaction; for each, whether it was new.
    async fn store_batch(&self, alerts: &[PendingAlert]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self
            .pool
            .begin_with(BEGIN_LOCKED)
            .await
            .map_err(query_err("begin and take the write lock"))?;
        // The insert and the read of the audit chain's head in one round trip; each
        // stored row carries the head (the CTE's insert does not touch the audit log).
        let mut sql = sqlx::QueryBuilder::new(
            "WITH stored AS (INSERT INTO alerts (id, rule_id, rule_title, level, level_rank, \
             host, sensor, timestamp, detected_at, intel_count, body) ",
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
        sql.push(
            " ON CONFLICT (id) DO NOTHING RETURNING id) \
             SELECT stored.id, head.seq, head.hash FROM stored LEFT JOIN \
             (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS head ON true",
        );
        let rows = sql
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("insert alerts"))?;
        let head = rows.first().and_then(|row| {
            row.get::<Option<i64>, _>("seq")
                .zip(row.get::<Option<String>, _>("hash"))
        });
        let stored: HashSet<String> = rows.iter().map(|row| row.get("id")).collect();
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
            append_alert_entries(&mut tx, head, &new).await?;
            index_observables(&mut tx, &new).await?;
        }
        tx.commit().await.map_err(query_err("commit"))?;
        Ok(inserted)
    }
}

/// One `alert.create` entry per alert, chained after `head` in order, in one statement.
async fn append_alert_entries(
    tx: &mut Tx,
    head: Option<(i64, String)>,
    alerts: &[&PendingAlert],
) -> Result<(), StoreError> {
    let entries = group_commit::alert_entries(head, alerts);
    let mut sql = sqlx::QueryBuilder::new(
        "INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, before, \
         after, before_digest, after_digest, prev_hash, hash) ",
    );
    sql.push_values(&entries, |mut row, entry| {
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

/// The observables of the alerts' events and intel matches, as a lone alert's insert
/// indexes them.
async fn index_observables(tx: &mut Tx, alerts: &[&PendingAlert]) -> Result<(), StoreError> {
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

async fn append_after(
    tx: &mut Tx,
    head: Option<(i64, String)>,
    change: Change,
) -> Result<AuditEntry, StoreError> {
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, audit::GENESIS.to_owned()),
    };
    let entry = super::chain_entry(seq, prev_hash, change);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, before, \
         after, before_digest, after_digest, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry.seq)
    .bind(&entry.at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.object_kind)
    .bind(&entry.object_id)
    .bind(entry.before.as_ref().map(audit::canonical_json))
    .bind(entry.after.as_ref().map(audit::canonical_json))
    .bind(&entry.before_digest)
    .bind(&entry.after_digest)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut **tx)
    .await
    .map_err(query_err("append to the audit log"))?;
    Ok(entry)
}

async fn fetch_case(tx: &mut Tx, id: i64) -> Result<CaseRecord, StoreError> {
    sqlx::query("SELECT * FROM cases WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("get case"))?
        .as_ref()
        .map(case_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound {
            kind: "case",
            id: id.to_string(),
        })
}

async fn fetch_alert(tx: &mut Tx, id: &str) -> Result<AlertRecord, StoreError> {
    sqlx::query(
        "SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body \
         FROM alerts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(query_err("get alert"))?
    .as_ref()
    .map(alert_from_row)
    .transpose()?
    .ok_or(StoreError::NotFound {
        kind: "alert",
        id: id.to_owned(),
    })
}

async fn fetch_action(tx: &mut Tx, id: i64) -> Result<ActionRecord, StoreError> {
    sqlx::query("SELECT * FROM actions WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("get action"))?
        .as_ref()
        .map(action_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound {
            kind: "action",
            id: id.to_string(),
        })
}

/// The SQL condition keeping rows whose case (column `case_column`) is at most `tlp`.
fn push_tlp_ceiling(
    sql: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    case_column: &str,
    tlp: Option<Tlp>,
    nullable: bool,
) {
    let Some(tlp) = tlp else { return };
    sql.push(" AND (");
    if nullable {
        sql.push(case_column).push(" IS NULL OR ");
    }
    sql.push(case_column)
        .push(" IN (SELECT id FROM cases WHERE tlp <= ")
        .push_bind(tlp.rank())
        .push("))");
}

/// `LIMIT … OFFSET …` of a page; no limit is `LIMIT NULL` in PostgreSQL.
fn push_page(
    sql: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    limit: Option<i64>,
    offset: Option<i64>,
) {
    sql.push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset.unwrap_or(0));
}

#[async_trait]
impl CaseStore for PostgresStore {
    async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError> {
        // Stored with the alerts that arrive at the same moment, in one transaction.
        let pending = group_commit::PendingAlert::new(alert)?;
        self.alerts.insert(pending).await
    }

    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query(
            "SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body \
         FROM alerts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("get alert"))?
        .as_ref()
        .map(alert_from_row)
        .transpose()
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        super::parse_all(self.list_stored_alerts(filter).await?)
    }

    async fn list_stored_alerts(
        &self,
        filter: &AlertFilter,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body \
             FROM alerts WHERE 1 = 1",
        );
        if let Some(level) = filter.level {
            sql.push(" AND level_rank >= ").push_bind(level_rank(level));
        }
        if let Some(rule) = &filter.rule_id {
            sql.push(" AND rule_id = ").push_bind(rule.clone());
        }
        if let Some(status) = &filter.status {
            sql.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(case_id) = filter.case_id {
            sql.push(" AND case_id = ").push_bind(case_id);
        }
        if let Some(value) = &filter.observable {
            sql.push(" AND id IN (SELECT alert_id FROM observables WHERE value = ")
                .push_bind(value.clone())
                .push(" AND alert_id IS NOT NULL)");
        }
        if let Some(since) = filter.since {
            sql.push(" AND timestamp >= ").push_bind(ts(since));
        }
        if let Some(until) = filter.until {
            sql.push(" AND timestamp < ").push_bind(ts(until));
        }
        push_tlp_ceiling(&mut sql, "case_id", filter.max_tlp, true);
        // `COLLATE "C"` sorts the RFC 3339 text by bytes, as SQLite does, whatever the
        // database's locale.
        sql.push(r#" ORDER BY timestamp COLLATE "C", id COLLATE "C""#);
        push_page(&mut sql, filter.limit, filter.offset);
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list alerts"))?;
        rows.iter().map(super::stored_alert_from_row).collect()
    }

    async fn find_open_case(
        &self,
        group_key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<CaseRecord>, StoreError> {
        sqlx::query(
            r#"SELECT * FROM cases WHERE group_key = $1 AND status != 'closed'
               AND last_seen COLLATE "C" >= $2 ORDER BY last_seen COLLATE "C" DESC LIMIT 1"#,
        )
        .bind(group_key)
        .bind(ts(since))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("find open case"))?
        .as_ref()
        .map(case_from_row)
        .transpose()
    }

    async fn open_case(&self, new: &NewCase, first: &Alert) -> Result<CaseRecord, StoreError> {
        let now = ts(Utc::now());
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO cases (title, severity, group_key, rule_id, host, first_seen, \
             last_seen, alert_count, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9) RETURNING id",
        )
        .bind(&new.title)
        .bind(first.rule.level.as_str())
        .bind(&new.group_key)
        .bind(&new.rule_id)
        .bind(&new.host)
        .bind(ts(first.timestamp))
        .bind(ts(first.timestamp))
        .bind(&now)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("open case"))?
        .get("id");
        sqlx::query("UPDATE alerts SET case_id = $1 WHERE id = $2")
            .bind(id)
            .bind(&first.id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("link first alert"))?;
        analyst::copy_alert_observables(&mut tx, &first.id, id, SYSTEM_ACTOR).await?;
        let details = serde_json::json!({"title": new.title, "alert_id": first.id});
        analyst::record(&mut tx, id, SYSTEM_ACTOR, "created", details).await?;
        let case = fetch_case(&mut tx, id).await?;
        let mut change = case_change(SYSTEM_ACTOR, "case.open", None, &case)?;
        change.after = Some(serde_json::json!({"case": change.after, "alert_id": first.id}));
        commit_audited(tx, change).await?;
        Ok(case)
    }

    async fn attach_alert(&self, case_id: i64, alert: &Alert) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let case = fetch_case(&mut tx, case_id).await?;
        let severity = case.severity.max(alert.rule.level);
        let first_seen = case.first_seen.min(alert.timestamp);
        let last_seen = case.last_seen.max(alert.timestamp);
        sqlx::query("UPDATE alerts SET case_id = $1 WHERE id = $2")
            .bind(case_id)
            .bind(&alert.id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("link alert"))?;
        sqlx::query(
            "UPDATE cases SET severity = $1, first_seen = $2, last_seen = $3, \
             alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = $4), updated_at = $5 \
             WHERE id = $4",
        )
        .bind(severity.as_str())
        .bind(ts(first_seen))
        .bind(ts(last_seen))
        .bind(case_id)
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(query_err("update case"))?;
        analyst::copy_alert_observables(&mut tx, &alert.id, case_id, SYSTEM_ACTOR).await?;
        let details = serde_json::json!({"alert_id": alert.id});
        analyst::record(&mut tx, case_id, SYSTEM_ACTOR, "alert_attached", details).await?;
        let after = fetch_case(&mut tx, case_id).await?;
        let mut change = case_change(SYSTEM_ACTOR, "case.attach_alert", Some(&case), &after)?;
        change.after = Some(serde_json::json!({"case": change.after, "alert_id": alert.id}));
        commit_audited(tx, change).await?;
        Ok(after)
    }

    async fn open_cases_near(
        &self,
        group_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CaseRecord>, StoreError> {
        self.open_cases_near_impl(group_key, from, to).await
    }

    async fn merge_cases(&self, into: i64, from: i64, by: &str) -> Result<CaseRecord, StoreError> {
        self.merge_cases_impl(into, from, by).await
    }

    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
        sqlx::query("SELECT * FROM cases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get case"))?
            .as_ref()
            .map(case_from_row)
            .transpose()
    }

    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new("SELECT * FROM cases WHERE 1 = 1");
        if let Some(status) = filter.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(tlp) = filter.max_tlp {
            sql.push(" AND tlp <= ").push_bind(tlp.rank());
        }
        sql.push(" ORDER BY id");
        push_page(&mut sql, filter.limit, filter.offset);
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list cases"))?;
        rows.iter().map(case_from_row).collect()
    }

    async fn create_action(&self, new: &NewAction) -> Result<(ActionRecord, bool), StoreError> {
        let now = ts(Utc::now());
        let status = if new.approval_required {
            ActionStatus::Pending
        } else {
            ActionStatus::Approved
        };
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO actions (case_id, alert_id, playbook, step, step_type, \
             approval_required, status, params, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (playbook, step, alert_id) DO NOTHING RETURNING id",
        )
        .bind(new.case_id)
        .bind(&new.alert_id)
        .bind(&new.playbook)
        .bind(&new.step)
        .bind(&new.step_type)
        .bind(i64::from(new.approval_required))
        .bind(status.as_str())
        .bind(new.params.to_string())
        .bind(&now)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("create action"))?;
        if let Some(row) = inserted {
            let action = fetch_action(&mut tx, row.get("id")).await?;
            let change = action_change(SYSTEM_ACTOR, "action.create", None, &action)?;
            commit_audited(tx, change).await?;
            return Ok((action, true));
        }
        let existing = sqlx::query(
            "SELECT * FROM actions WHERE playbook = $1 AND step = $2 AND alert_id = $3",
        )
        .bind(&new.playbook)
        .bind(&new.step)
        .bind(&new.alert_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("find existing action"))?;
        tx.commit().await.map_err(query_err("commit"))?;
        Ok((action_from_row(&existing)?, false))
    }

    async fn get_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError> {
        sqlx::query("SELECT * FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get action"))?
            .as_ref()
            .map(action_from_row)
            .transpose()
    }

    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new("SELECT * FROM actions WHERE 1 = 1");
        if let Some(status) = filter.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(case_id) = filter.case_id {
            sql.push(" AND case_id = ").push_bind(case_id);
        }
        push_tlp_ceiling(&mut sql, "case_id", filter.max_tlp, false);
        sql.push(" ORDER BY id");
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list actions"))?;
        rows.iter().map(action_from_row).collect()
    }

    async fn decide_action(
        &self,
        id: i64,
        decision: &Decision,
        by: &str,
    ) -> Result<ActionRecord, StoreError> {
        let (status, reason) = decision.outcome();
        let mut tx = self.write_tx().await?;
        let before = fetch_action(&mut tx, id).await?;
        if before.status != ActionStatus::Pending {
            return Err(StoreError::NotPending {
                id,
                status: before.status,
            });
        }
        sqlx::query(
            "UPDATE actions SET status = $1, reason = $2, decided_by = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(by)
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("decide action"))?;
        let after = fetch_action(&mut tx, id).await?;
        let kind = decision.timeline_kind();
        let details = serde_json::json!({
            "action_id": id, "playbook": after.playbook, "step": after.step, "reason": reason,
        });
        analyst::record(&mut tx, after.case_id, by, kind, details).await?;
        commit_audited(
            tx,
            action_change(by, "action.decide", Some(&before), &after)?,
        )
        .await?;
        Ok(after)
    }

    async fn finish_action(
        &self,
        id: i64,
        status: ActionStatus,
        result: &Value,
    ) -> Result<ActionRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let before = fetch_action(&mut tx, id).await?;
        sqlx::query("UPDATE actions SET status = $1, result = $2, updated_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(result.to_string())
            .bind(ts(Utc::now()))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("finish action"))?;
        let after = fetch_action(&mut tx, id).await?;
        let details = serde_json::json!({
            "action_id": id, "playbook": after.playbook, "step": after.step,
            "status": status.as_str(),
        });
        analyst::record(
            &mut tx,
            after.case_id,
            SYSTEM_ACTOR,
            "action_executed",
            details,
        )
        .await?;
        commit_audited(
            tx,
            action_change(SYSTEM_ACTOR, "action.finish", Some(&before), &after)?,
        )
        .await?;
        Ok(after)
    }

    async fn update_case(
        &self,
        id: i64,
        update: &CaseUpdate,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let before = fetch_case(&mut tx, id).await?;
        let next = apply_update(&before, update);
        if next == before {
            return Ok(before);
        }
        let tags = serde_json::to_string(&next.tags).map_err(|e| StoreError::Corrupt {
            what: "case tags",
            reason: e.to_string(),
        })?;
        sqlx::query(
            "UPDATE cases SET title = $1, description = $2, severity = $3, tlp = $4, pap = $5, \
             status = $6, assignee = $7, tags = $8, updated_at = $9 WHERE id = $10",
        )
        .bind(&next.title)
        .bind(&next.description)
        .bind(next.severity.as_str())
        .bind(next.tlp.rank())
        .bind(next.pap.rank())
        .bind(next.status.as_str())
        .bind(&next.assignee)
        .bind(tags)
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("update case"))?;
        if before.status == CaseStatus::Closed && next.status != CaseStatus::Closed {
            // A reopened case is not resolved: a kept closed_at would still count it in
            // the time-to-resolve figures and show it as closed in the report.
            sqlx::query("UPDATE cases SET closed_at = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("clear a reopened case's closed_at"))?;
        }
        let after = fetch_case(&mut tx, id).await?;
        let change = case_change(by, "case.update", Some(&before), &after)?;
        if let (Some(from), Some(to)) = (&change.before, &change.after) {
            let fields = super::analyst::changed_fields(from, to, super::analyst::CASE_FIELDS);
            let details = serde_json::json!({ "fields": fields });
            analyst::record(&mut tx, id, by, "updated", details).await?;
        }
        commit_audited(tx, change).await?;
        Ok(after)
    }

    async fn create_api_key(&self, key: &ApiKeyRecord, by: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, name, role, tlp, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.role)
        .bind(key.tlp.rank())
        .bind(&key.hash)
        .bind(ts(key.created_at))
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(error)) = &inserted {
            if error.is_unique_violation() {
                return Err(StoreError::Conflict {
                    reason: format!("an API key named {:?} exists already", key.name),
                });
            }
        }
        inserted.map_err(query_err("create api key"))?;
        let change = Change {
            actor: by.to_owned(),
            action: "apikey.create",
            object_kind: "apikey",
            object_id: key.id.clone(),
            before: None,
            // The record without its hash (`skip_serializing`).
            after: Some(to_state("api key", key)?),
        };
        commit_audited(tx, change).await?;
        Ok(())
    }

    async fn get_api_key_status(
        &self,
        id: &str,
    ) -> Result<Option<super::keys::ApiKeyStatus>, StoreError> {
        self.api_key_status_impl(id).await
    }

    async fn mark_api_key_used(
        &self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.mark_api_key_used_impl(id, at).await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get api key"))?
            .as_ref()
            .map(api_key_from_row)
            .transpose()
    }

    async fn triage_alert(
        &self,
        id: &str,
        triage: &AlertTriage,
        by: &str,
    ) -> Result<AlertRecord, StoreError> {
        let (status, reason, action) = match triage {
            AlertTriage::Acknowledge => ("acknowledged", None, "alert.acknowledge"),
            AlertTriage::Ignore { reason } => ("ignored", Some(reason.as_str()), "alert.ignore"),
        };
        let mut tx = self.write_tx().await?;
        let before = fetch_alert(&mut tx, id).await?;
        if before.status == status && before.status_reason.as_deref() == reason {
            return Ok(before);
        }
        sqlx::query(
            "UPDATE alerts SET status = $1, status_reason = $2, triaged_by = $3, \
             triaged_at = $4 WHERE id = $5",
        )
        .bind(status)
        .bind(reason)
        .bind(by)
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("triage alert"))?;
        analyst::mark_acknowledged(&mut tx, id).await?;
        let after = fetch_alert(&mut tx, id).await?;
        let change = Change {
            actor: by.to_owned(),
            action,
            object_kind: "alert",
            object_id: id.to_owned(),
            before: Some(super::triage_state(&before)),
            after: Some(super::triage_state(&after)),
        };
        commit_audited(tx, change).await?;
        Ok(after)
    }

    async fn close_case(
        &self,
        id: i64,
        resolution: Resolution,
        summary: &str,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let before = fetch_case(&mut tx, id).await?;
        if before.status == CaseStatus::Closed {
            return Err(StoreError::Conflict {
                reason: format!("case {id} is closed already"),
            });
        }
        let now = ts(Utc::now());
        sqlx::query(
            "UPDATE cases SET status = 'closed', resolution = $1, summary = $2, \
             closed_at = $3, updated_at = $3 WHERE id = $4",
        )
        .bind(resolution.as_str())
        .bind(summary)
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("close case"))?;
        let after = fetch_case(&mut tx, id).await?;
        let details = serde_json::json!({"resolution": resolution.as_str(), "summary": summary});
        analyst::record(&mut tx, id, by, "closed", details).await?;
        commit_audited(tx, case_change(by, "case.close", Some(&before), &after)?).await?;
        Ok(after)
    }

    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn append_case_note(
        &self,
        case_id: i64,
        kind: &'static str,
        details: &Value,
        by: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // A note on a case that does not exist would be an orphan in the chain.
        fetch_case(&mut tx, case_id).await?;
        analyst::record(&mut tx, case_id, by, kind, details.clone()).await?;
        let change = Change {
            actor: by.to_owned(),
            action: kind,
            object_kind: "case",
            object_id: case_id.to_string(),
            before: None,
            after: Some(details.clone()),
        };
        commit_audited(tx, change).await
    }

    async fn create_case(&self, draft: &CaseDraft, by: &str) -> Result<CaseRecord, StoreError> {
        self.create_case_impl(draft, by).await
    }

    async fn promote_alert(
        &self,
        alert_id: &str,
        draft: &CaseDraft,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        self.promote_alert_impl(alert_id, draft, by).await
    }

    async fn merge_alert(
        &self,
        alert_id: &str,
        case_id: i64,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        self.merge_alert_impl(alert_id, case_id, by).await
    }

    async fn add_observable(
        &self,
        owner: &ObservableOwner,
        new: &NewObservable,
        by: &str,
    ) -> Result<(ObservableRecord, bool), StoreError> {
        self.add_observable_impl(owner, new, by).await
    }

    async fn list_observables(
        &self,
        owner: &ObservableOwner,
    ) -> Result<Vec<ObservableRecord>, StoreError> {
        self.list_observables_impl(owner).await
    }

    async fn create_task(
        &self,
        case_id: i64,
        new: &NewTask,
        by: &str,
    ) -> Result<TaskRecord, StoreError> {
        self.create_task_impl(case_id, new, by).await
    }

    async fn list_tasks(&self, case_id: i64) -> Result<Vec<TaskRecord>, StoreError> {
        self.list_tasks_impl(case_id).await
    }

    async fn update_task(
        &self,
        case_id: i64,
        task_id: i64,
        update: &TaskUpdate,
        by: &str,
    ) -> Result<TaskRecord, StoreError> {
        self.update_task_impl(case_id, task_id, update, by).await
    }

    async fn add_comment(
        &self,
        case_id: i64,
        text: &str,
        by: &str,
    ) -> Result<TimelineEntry, StoreError> {
        self.add_comment_impl(case_id, text, by).await
    }

    async fn timeline(
        &self,
        case_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.timeline_impl(case_id, after, limit).await
    }

    async fn figures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        self.figures_impl(from, to).await
    }

    async fn search(&self, text: &str, max_tlp: Tlp, limit: i64) -> Result<SearchHits, StoreError> {
        self.search_impl(text, max_tlp, limit).await
    }

    async fn set_significant_incident(
        &self,
        case_id: i64,
        significant: bool,
        by: &str,
    ) -> Result<bool, StoreError> {
        nis2::set(self, case_id, significant, by).await
    }

    async fn significant_incident(&self, case_id: i64) -> Result<bool, StoreError> {
        nis2::get(self, case_id).await
    }

    async fn significant_incidents(&self) -> Result<Vec<i64>, StoreError> {
        nis2::all(self).await
    }

    async fn response_output_applied(&self, key: &str) -> Result<bool, StoreError> {
        self.response_output_applied_impl(key).await
    }

    async fn record_response_output(
        &self,
        key: &str,
        case_id: i64,
        kind: &str,
    ) -> Result<bool, StoreError> {
        self.record_response_output_impl(key, case_id, kind).await
    }

    async fn figures_within(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        max_tlp: Tlp,
    ) -> Result<Vec<super::SeverityFigures>, StoreError> {
        self.figures_within_impl(from, to, max_tlp).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("postgres://kastell:s3cret@127.0.0.1:5432/kastell"),
            "postgres://kastell:***@127.0.0.1:5432/kastell"
        );
        assert_eq!(redact("postgres://127.0.0.1/k"), "postgres://127.0.0.1/k");
    }
}
