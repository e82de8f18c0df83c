//! The SQLite store's reads on the request path (a case with its alerts and actions, the
//! API key of each request, an alert's observables), run synchronously through rusqlite
//! on tokio's blocking pool: one hand-off per read, however many statements it runs.
//!
//! Why a second driver: sqlx runs each SQLite connection on a thread of its own and every
//! statement (and every batch of rows) is a hand-off to that thread and back. Under load,
//! half of the server's CPU went to those hand-offs (futex wake-ups and context switches,
//! `docs/performance.md`). sqlx's `SqliteConnection::lock_handle` gives the raw handle
//! but still costs a hand-off to unlock it and leaves only unsafe FFI calls to run SQL
//! with; rusqlite is the well-kept synchronous driver, and links the same libsqlite3-sys
//! as sqlx (the workspace pins the two together), so both drivers share one SQLite
//! library and one database file in WAL mode. Writes stay on sqlx's writer connection:
//! this module opens its connections with `query_only`, so it cannot write.
//!
//! Each read runs in one read transaction, so a case, its alerts and its actions are one
//! snapshot even while the writer commits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use super::keys::ApiKeyStatus;
use super::{
    analyst, parse_json, parse_text, parse_ts, ActionRecord, ApiKeyRecord, CaseDetailRecord,
    CaseRecord, ObservableRecord, StoreError, StoredAlert, Tlp,
};
use crate::alert::Alert;

/// Connections kept open between reads. More are opened when more reads run at once and
/// closed afterwards; tokio's blocking pool bounds how many run.
const MAX_IDLE: usize = 16;

/// Statements each connection keeps prepared: every read on the request path is one of a
/// handful of fixed statements.
const STATEMENT_CACHE: usize = 32;

/// As long as the sqlx connections wait for a lock (WAL readers rarely wait at all: only
/// while the WAL index is rebuilt after a crash).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only rusqlite connections to the store's file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn read_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { what, source }
}

impl Readers {
    /// Readers of the SQLite file at `path`, which the sqlx pool has opened (created and
    /// migrated) already.
    pub(super) fn new(path: &Path) -> Arc<Self> {
        Arc::new(Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `read` on a connection, inside one read transaction, on the blocking pool.
    pub(super) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.checkout()?;
            let result = conn
                .unchecked_transaction()
                .map_err(read_err("begin a read"))
                .and_then(|tx| read(&tx));
            readers.checkin(conn);
            result
        })
        .await
        .map_err(|error| StoreError::ReadTask {
            reason: error.to_string(),
        })?
    }

    fn checkout(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        // Not SQLITE_OPEN_CREATE: the sqlx pool made the file and its schema.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(read_err("open a read connection"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(read_err("set the busy timeout"))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(read_err("make the read connection query-only"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        tracing::debug!(path = %self.path.display(), "opened a sqlite read connection");
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

/// The case with its first `alert_limit` alerts (by event time, then id) and all its
/// actions; `None` without the case.
pub(super) fn case_detail(
    conn: &Connection,
    id: i64,
    alert_limit: i64,
) -> Result<Option<CaseDetailRecord>, StoreError> {
    let Some(case) = case(conn, id)? else {
        return Ok(None);
    };
    let mut alerts = conn
        .prepare_cached(
            "SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body \
             FROM alerts WHERE case_id = ?1 ORDER BY timestamp, id LIMIT ?2",
        )
        .map_err(read_err("list the case's alerts"))?;
    let alerts = alerts
        .query_and_then((id, alert_limit), stored_alert)
        .map_err(read_err("list the case's alerts"))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut actions = conn
        .prepare_cached("SELECT * FROM actions WHERE case_id = ?1 ORDER BY id")
        .map_err(read_err("list the case's actions"))?;
    let actions = actions
        .query_and_then([id], action)
        .map_err(read_err("list the case's actions"))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(CaseDetailRecord {
        case,
        alerts,
        actions,
    }))
}

pub(super) fn case(conn: &Connection, id: i64) -> Result<Option<CaseRecord>, StoreError> {
    conn.prepare_cached("SELECT * FROM cases WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([id], |row| Ok(case_from(row)))
                .optional()
        })
        .map_err(read_err("get case"))?
        .transpose()
}

/// The key with its revocation and last use.
pub(super) fn api_key_status(
    conn: &Connection,
    id: &str,
) -> Result<Option<ApiKeyStatus>, StoreError> {
    conn.prepare_cached("SELECT * FROM api_keys WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([id], |row| Ok(api_key_status_from(row)))
                .optional()
        })
        .map_err(read_err("get api key"))?
        .transpose()
}

/// An alert's observables by id with their enrichment (the alert's intel matches).
pub(super) fn alert_observables(
    conn: &Connection,
    alert_id: &str,
) -> Result<Vec<ObservableRecord>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT * FROM observables WHERE alert_id = ?1 ORDER BY id")
        .map_err(read_err("list observables"))?;
    let mut observables = statement
        .query_and_then([alert_id], observable)
        .map_err(read_err("list observables"))?
        .collect::<Result<Vec<_>, _>>()?;
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM alerts WHERE id = ?1")
        .and_then(|mut statement| statement.query_row([alert_id], |row| row.get(0)).optional())
        .map_err(read_err("read the alert's intel matches"))?;
    if let Some(body) = body {
        let intel = parse_json::<Alert>("alert", &body)?.intel;
        analyst::enrich(&mut observables, &intel);
    }
    Ok(observables)
}

// The decoders below read the columns the sqlx decoders of `store.rs` read, by name;
// the conformance suite runs both paths against the same data.

/// A column, with a rusqlite error made a store error naming the column.
fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, name: &'static str) -> Result<T, StoreError> {
    row.get(name).map_err(read_err(name))
}

fn time(
    row: &Row<'_>,
    what: &'static str,
    name: &'static str,
) -> Result<DateTime<Utc>, StoreError> {
    parse_ts(what, &column::<String>(row, name)?)
}

fn optional_time(
    row: &Row<'_>,
    what: &'static str,
    name: &'static str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    column::<Option<String>>(row, name)?
        .map(|text| parse_ts(what, &text))
        .transpose()
}

fn tlp(row: &Row<'_>, what: &'static str, name: &'static str) -> Result<Tlp, StoreError> {
    let rank: i64 = column(row, name)?;
    Tlp::from_rank(rank).ok_or_else(|| StoreError::Corrupt {
        what,
        reason: format!("{name} rank {rank} is not 0 to 4"),
    })
}

fn case_from(row: &Row<'_>) -> Result<CaseRecord, StoreError> {
    Ok(CaseRecord {
        id: column(row, "id")?,
        title: column(row, "title")?,
        severity: parse_text("case severity", &column::<String>(row, "severity")?)?,
        status: parse_text("case status", &column::<String>(row, "status")?)?,
        group_key: column(row, "group_key")?,
        rule_id: column(row, "rule_id")?,
        host: column(row, "host")?,
        first_seen: time(row, "case first_seen", "first_seen")?,
        last_seen: time(row, "case last_seen", "last_seen")?,
        alert_count: column(row, "alert_count")?,
        tlp: tlp(row, "case tlp or pap", "tlp")?,
        pap: tlp(row, "case tlp or pap", "pap")?,
        description: column(row, "description")?,
        assignee: column(row, "assignee")?,
        tags: parse_json("case tags", &column::<String>(row, "tags")?)?,
        resolution: column::<Option<String>>(row, "resolution")?
            .map(|r| parse_text("case resolution", &r))
            .transpose()?,
        summary: column(row, "summary")?,
        closed_at: optional_time(row, "case closed_at", "closed_at")?,
        created_at: time(row, "case created_at", "created_at")?,
        updated_at: time(row, "case updated_at", "updated_at")?,
    })
}

fn stored_alert(row: &Row<'_>) -> Result<StoredAlert, StoreError> {
    Ok(StoredAlert {
        id: column(row, "id")?,
        case_id: column(row, "case_id")?,
        status: column(row, "status")?,
        status_reason: column(row, "status_reason")?,
        triaged_by: column(row, "triaged_by")?,
        triaged_at: optional_time(row, "alert triaged_at", "triaged_at")?,
        body: column(row, "body")?,
    })
}

fn action(row: &Row<'_>) -> Result<ActionRecord, StoreError> {
    Ok(ActionRecord {
        id: column(row, "id")?,
        case_id: column(row, "case_id")?,
        alert_id: column(row, "alert_id")?,
        playbook: column(row, "playbook")?,
        step: column(row, "step")?,
        step_type: column(row, "step_type")?,
        approval_required: column::<i64>(row, "approval_required")? != 0,
        status: parse_text("action status", &column::<String>(row, "status")?)?,
        params: parse_json("action params", &column::<String>(row, "params")?)?,
        reason: column(row, "reason")?,
        decided_by: column(row, "decided_by")?,
        result: column::<Option<String>>(row, "result")?
            .map(|r| parse_json("action result", &r))
            .transpose()?,
        created_at: time(row, "action created_at", "created_at")?,
        updated_at: time(row, "action updated_at", "updated_at")?,
    })
}

fn api_key_status_from(row: &Row<'_>) -> Result<ApiKeyStatus, StoreError> {
    Ok(ApiKeyStatus {
        key: ApiKeyRecord {
            id: column(row, "id")?,
            name: column(row, "name")?,
            role: column(row, "role")?,
            tlp: tlp(row, "api key tlp", "tlp")?,
            hash: column(row, "hash")?,
            created_at: time(row, "api key created_at", "created_at")?,
        },
        revoked_at: optional_time(row, "api key revoked_at", "revoked_at")?,
        last_used_at: optional_time(row, "api key last_used_at", "last_used_at")?,
    })
}

fn observable(row: &Row<'_>) -> Result<ObservableRecord, StoreError> {
    Ok(ObservableRecord {
        id: column(row, "id")?,
        case_id: column(row, "case_id")?,
        alert_id: column(row, "alert_id")?,
        kind: column(row, "type")?,
        value: column(row, "value")?,
        ioc: column::<i64>(row, "ioc")? != 0,
        sighted: column::<i64>(row, "sighted")? != 0,
        tags: parse_json("observable tags", &column::<String>(row, "tags")?)?,
        created_by: column(row, "created_by")?,
        created_at: time(row, "observable created_at", "created_at")?,
        updated_at: time(row, "observable updated_at", "updated_at")?,
        enrichment: Vec::new(),
    })
}
