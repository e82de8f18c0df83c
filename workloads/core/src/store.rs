//! The case store: alerts, the cases that group them and the response actions taken on
//! them, behind the [`CaseStore`] trait, with the SQLite implementation used standalone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use crate::alert::{Alert, Level};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the SQLite database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying the case-store migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("case-store query {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("action {id} is {status}, only a pending action can be decided")]
    NotPending { id: i64, status: ActionStatus },
}

fn query_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// Where an alert is in its triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Open,
    InProgress,
    Closed,
}

/// The lifecycle of a response action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for a person's approval.
    Pending,
    /// Approved, about to run.
    Approved,
    Rejected,
    Succeeded,
    Failed,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($ty))),
                }
            }
        }
    };
}

text_enum!(CaseStatus { Open => "open", InProgress => "in_progress", Closed => "closed" });
text_enum!(ActionStatus {
    Pending => "pending",
    Approved => "approved",
    Rejected => "rejected",
    Succeeded => "succeeded",
    Failed => "failed",
});

/// A stored alert with its place in triage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub case_id: Option<i64>,
    pub status: String,
    pub alert: Alert,
}

/// A case: alerts of one rule on one host within the grouping window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: i64,
    pub title: String,
    pub severity: Level,
    pub status: CaseStatus,
    pub group_key: String,
    pub rule_id: String,
    pub host: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub alert_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What is needed to open a case for its first alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    pub title: String,
    pub group_key: String,
    pub rule_id: String,
    pub host: Option<String>,
}

/// A response action: one playbook step for one triggering alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: i64,
    pub case_id: i64,
    pub alert_id: String,
    pub playbook: String,
    pub step: String,
    pub step_type: String,
    pub approval_required: bool,
    pub status: ActionStatus,
    pub params: Value,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub case_id: i64,
    pub alert_id: String,
    pub playbook: String,
    pub step: String,
    pub step_type: String,
    pub approval_required: bool,
    pub params: Value,
}

/// A person's decision on a pending action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject { reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub level: Option<Level>,
    pub rule_id: Option<String>,
    pub case_id: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    pub status: Option<ActionStatus>,
    pub case_id: Option<i64>,
}

/// The store the cases and respond stages share. Implementations must make
/// [`CaseStore::insert_alert`] and [`CaseStore::create_action`] idempotent, because a
/// durable bus redelivers messages.
#[async_trait]
pub trait CaseStore: Send + Sync {
    /// Stores an alert; `false` when an alert with that id was stored before.
    async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError>;
    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError>;
    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError>;

    /// The open case of this grouping key whose last alert is not older than `since`.
    async fn find_open_case(
        &self,
        group_key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<CaseRecord>, StoreError>;
    async fn open_case(&self, new: &NewCase, first: &Alert) -> Result<CaseRecord, StoreError>;
    /// Adds a stored alert to a case, widening its time span and raising its severity.
    async fn attach_alert(&self, case_id: i64, alert: &Alert) -> Result<CaseRecord, StoreError>;
    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError>;
    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError>;

    /// Records an action; returns the existing one (and `false`) on a repeat.
    async fn create_action(&self, new: &NewAction) -> Result<(ActionRecord, bool), StoreError>;
    async fn get_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError>;
    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>, StoreError>;
    /// Approves or rejects a pending action; any other status is a conflict.
    async fn decide_action(
        &self,
        id: i64,
        decision: &Decision,
        by: &str,
    ) -> Result<ActionRecord, StoreError>;
    /// Records how an approved (or approval-free) action ended.
    async fn finish_action(
        &self,
        id: i64,
        status: ActionStatus,
        result: &Value,
    ) -> Result<ActionRecord, StoreError>;
}

/// The embedded store: one SQLite file in the data directory.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// The database file's name inside the data directory.
pub const SQLITE_FILE: &str = "kastell.sqlite";

impl SqliteStore {
    /// Opens (creating if needed) `DIR/kastell.sqlite` and applies the migrations.
    pub async fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        Self::open_file(&dir.join(SQLITE_FILE)).await
    }

    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }
}

fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(what: &'static str, raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what,
            reason: format!("time {raw:?}: {e}"),
        })
}

fn parse_text<T: FromStr<Err = E>, E: fmt::Display>(
    what: &'static str,
    raw: &str,
) -> Result<T, StoreError> {
    raw.parse().map_err(|e: E| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    raw: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

fn level_rank(level: Level) -> i64 {
    level as i64
}

fn alert_from_row(row: &SqliteRow) -> Result<AlertRecord, StoreError> {
    let body: String = row.get("body");
    Ok(AlertRecord {
        id: row.get("id"),
        case_id: row.get("case_id"),
        status: row.get("status"),
        alert: parse_json("alert", &body)?,
    })
}

fn case_from_row(row: &SqliteRow) -> Result<CaseRecord, StoreError> {
    Ok(CaseRecord {
        id: row.get("id"),
        title: row.get("title"),
        severity: parse_text("case severity", row.get("severity"))?,
        status: parse_text("case status", row.get("status"))?,
        group_key: row.get("group_key"),
        rule_id: row.get("rule_id"),
        host: row.get("host"),
        first_seen: parse_ts("case first_seen", row.get("first_seen"))?,
        last_seen: parse_ts("case last_seen", row.get("last_seen"))?,
        alert_count: row.get("alert_count"),
        created_at: parse_ts("case created_at", row.get("created_at"))?,
        updated_at: parse_ts("case updated_at", row.get("updated_at"))?,
    })
}

fn action_from_row(row: &SqliteRow) -> Result<ActionRecord, StoreError> {
    let result: Option<String> = row.get("result");
    Ok(ActionRecord {
        id: row.get("id"),
        case_id: row.get("case_id"),
        alert_id: row.get("alert_id"),
        playbook: row.get("playbook"),
        step: row.get("step"),
        step_type: row.get("step_type"),
        approval_required: row.get::<i64, _>("approval_required") != 0,
        status: parse_text("action status", row.get("status"))?,
        params: parse_json("action params", row.get("params"))?,
        reason: row.get("reason"),
        decided_by: row.get("decided_by"),
        result: result
            .map(|r| parse_json("action result", &r))
            .transpose()?,
        created_at: parse_ts("action created_at", row.get("created_at"))?,
        updated_at: parse_ts("action updated_at", row.get("updated_at"))?,
    })
}

impl SqliteStore {
    async fn require_case(&self, id: i64) -> Result<CaseRecord, StoreError> {
        self.get_case(id).await?.ok_or(StoreError::NotFound {
            kind: "case",
            id: id.to_string(),
        })
    }

    async fn require_action(&self, id: i64) -> Result<ActionRecord, StoreError> {
        self.get_action(id).await?.ok_or(StoreError::NotFound {
            kind: "action",
            id: id.to_string(),
        })
    }
}

#[async_trait]
impl CaseStore for SqliteStore {
    async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError> {
        let body = serde_json::to_string(alert).map_err(|e| StoreError::Corrupt {
            what: "alert",
            reason: e.to_string(),
        })?;
        let done = sqlx::query(
            "INSERT INTO alerts (id, rule_id, rule_title, level, level_rank, host, sensor, \
             timestamp, detected_at, intel_count, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&alert.id)
        .bind(&alert.rule.id)
        .bind(&alert.rule.title)
        .bind(alert.rule.level.as_str())
        .bind(level_rank(alert.rule.level))
        .bind(&alert.host)
        .bind(&alert.sensor)
        .bind(ts(alert.timestamp))
        .bind(ts(alert.detected_at))
        .bind(alert.intel.len() as i64)
        .bind(body)
        .execute(&self.pool)
        .await
        .map_err(query_err("insert alert"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query("SELECT id, case_id, status, body FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get alert"))?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut sql =
            sqlx::QueryBuilder::new("SELECT id, case_id, status, body FROM alerts WHERE 1 = 1");
        if let Some(level) = filter.level {
            sql.push(" AND level_rank >= ").push_bind(level_rank(level));
        }
        if let Some(rule) = &filter.rule_id {
            sql.push(" AND rule_id = ").push_bind(rule.clone());
        }
        if let Some(case_id) = filter.case_id {
            sql.push(" AND case_id = ").push_bind(case_id);
        }
        if let Some(since) = filter.since {
            sql.push(" AND timestamp >= ").push_bind(ts(since));
        }
        if let Some(until) = filter.until {
            sql.push(" AND timestamp < ").push_bind(ts(until));
        }
        sql.push(" ORDER BY timestamp, id LIMIT ")
            .push_bind(filter.limit.unwrap_or(-1))
            .push(" OFFSET ")
            .push_bind(filter.offset.unwrap_or(0));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn find_open_case(
        &self,
        group_key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<CaseRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM cases WHERE group_key = ? AND status != 'closed' AND last_seen >= ? \
             ORDER BY last_seen DESC LIMIT 1",
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
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        let id: i64 = sqlx::query(
            "INSERT INTO cases (title, severity, group_key, rule_id, host, first_seen, \
             last_seen, alert_count, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id",
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
        sqlx::query("UPDATE alerts SET case_id = ? WHERE id = ?")
            .bind(id)
            .bind(&first.id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("link first alert"))?;
        tx.commit().await.map_err(query_err("commit"))?;
        self.require_case(id).await
    }

    async fn attach_alert(&self, case_id: i64, alert: &Alert) -> Result<CaseRecord, StoreError> {
        let case = self.require_case(case_id).await?;
        let severity = case.severity.max(alert.rule.level);
        let first_seen = case.first_seen.min(alert.timestamp);
        let last_seen = case.last_seen.max(alert.timestamp);
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        sqlx::query("UPDATE alerts SET case_id = ? WHERE id = ?")
            .bind(case_id)
            .bind(&alert.id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("link alert"))?;
        sqlx::query(
            "UPDATE cases SET severity = ?, first_seen = ?, last_seen = ?, \
             alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = ?), updated_at = ? \
             WHERE id = ?",
        )
        .bind(severity.as_str())
        .bind(ts(first_seen))
        .bind(ts(last_seen))
        .bind(case_id)
        .bind(ts(Utc::now()))
        .bind(case_id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("update case"))?;
        tx.commit().await.map_err(query_err("commit"))?;
        self.require_case(case_id).await
    }

    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
        sqlx::query("SELECT * FROM cases WHERE id = ?")
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
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(filter.limit.unwrap_or(-1))
            .push(" OFFSET ")
            .push_bind(filter.offset.unwrap_or(0));
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
        let inserted = sqlx::query(
            "INSERT INTO actions (case_id, alert_id, playbook, step, step_type, \
             approval_required, status, params, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("create action"))?;
        if let Some(row) = inserted {
            return Ok((self.require_action(row.get("id")).await?, true));
        }
        let existing =
            sqlx::query("SELECT * FROM actions WHERE playbook = ? AND step = ? AND alert_id = ?")
                .bind(&new.playbook)
                .bind(&new.step)
                .bind(&new.alert_id)
                .fetch_one(&self.pool)
                .await
                .map_err(query_err("find existing action"))?;
        Ok((action_from_row(&existing)?, false))
    }

    async fn get_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError> {
        sqlx::query("SELECT * FROM actions WHERE id = ?")
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
        let (status, reason) = match decision {
            Decision::Approve => (ActionStatus::Approved, None),
            Decision::Reject { reason } => (ActionStatus::Rejected, Some(reason.as_str())),
        };
        // The status guard in the WHERE clause makes two concurrent decisions safe: only
        // one of them finds the action still pending.
        let changed = sqlx::query(
            "UPDATE actions SET status = ?, reason = ?, decided_by = ?, updated_at = ? \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(by)
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("decide action"))?;
        let action = self.require_action(id).await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NotPending {
                id,
                status: action.status,
            });
        }
        Ok(action)
    }

    async fn finish_action(
        &self,
        id: i64,
        status: ActionStatus,
        result: &Value,
    ) -> Result<ActionRecord, StoreError> {
        let changed =
            sqlx::query("UPDATE actions SET status = ?, result = ?, updated_at = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(result.to_string())
                .bind(ts(Utc::now()))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(query_err("finish action"))?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "action",
                id: id.to_string(),
            });
        }
        self.require_action(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RuleRef;
    use crate::event::Event;
    use serde_json::json;

    fn alert(rule: &str, host: &str, at: &str, level: Level) -> Alert {
        let event = Event::from_value(json!({"@timestamp": at, "host": {"name": host}})).unwrap();
        let rule = RuleRef {
            id: rule.into(),
            title: format!("rule {rule}"),
            level,
            ..Default::default()
        };
        Alert::from_event(rule, event, Utc::now())
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_dir(&dir.path().join("data"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn alerts_are_stored_once_and_read_back() {
        let (_dir, store) = store().await;
        let a = alert("r1", "web-1", "2024-01-01T10:00:00Z", Level::High);
        assert!(store.insert_alert(&a).await.unwrap());
        assert!(
            !store.insert_alert(&a).await.unwrap(),
            "second insert is a no-op"
        );
        let got = store.get_alert(&a.id).await.unwrap().unwrap();
        assert_eq!(got.alert, a);
        let high = AlertFilter {
            level: Some(Level::Critical),
            ..Default::default()
        };
        assert!(store.list_alerts(&high).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn cases_group_alerts_and_keep_the_highest_severity() {
        let (_dir, store) = store().await;
        let first = alert("r1", "web-1", "2024-01-01T10:00:00Z", Level::Low);
        let second = alert("r1", "web-1", "2024-01-01T10:05:00Z", Level::High);
        store.insert_alert(&first).await.unwrap();
        store.insert_alert(&second).await.unwrap();
        let new = NewCase {
            title: "t".into(),
            group_key: "r1|web-1".into(),
            rule_id: "r1".into(),
            host: Some("web-1".into()),
        };
        let case = store.open_case(&new, &first).await.unwrap();
        let since = second.timestamp - chrono::Duration::hours(1);
        let found = store
            .find_open_case("r1|web-1", since)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, case.id);
        let case = store.attach_alert(case.id, &second).await.unwrap();
        assert_eq!(case.alert_count, 2);
        assert_eq!(case.severity, Level::High);
        assert_eq!(case.last_seen, second.timestamp);
        let later = second.timestamp + chrono::Duration::hours(2);
        assert!(store
            .find_open_case("r1|web-1", later)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn an_action_is_decided_once() {
        let (_dir, store) = store().await;
        let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
        store.insert_alert(&a).await.unwrap();
        let case = store
            .open_case(
                &NewCase {
                    title: "t".into(),
                    group_key: "k".into(),
                    rule_id: "r1".into(),
                    host: None,
                },
                &a,
            )
            .await
            .unwrap();
        let new = NewAction {
            case_id: case.id,
            alert_id: a.id.clone(),
            playbook: "soc/pb".into(),
            step: "block".into(),
            step_type: "webhook".into(),
            approval_required: true,
            params: json!({"url": "http://127.0.0.1:1/"}),
        };
        let (action, created) = store.create_action(&new).await.unwrap();
        assert!(created);
        assert_eq!(action.status, ActionStatus::Pending);
        let (again, created) = store.create_action(&new).await.unwrap();
        assert!(!created);
        assert_eq!(again.id, action.id);
        let approved = store
            .decide_action(action.id, &Decision::Approve, "alice")
            .await
            .unwrap();
        assert_eq!(approved.status, ActionStatus::Approved);
        assert_eq!(approved.decided_by.as_deref(), Some("alice"));
        let err = store
            .decide_action(
                action.id,
                &Decision::Reject {
                    reason: "no".into(),
                },
                "bob",
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: ActionStatus::Approved,
                ..
            }
        ));
        let done = store
            .finish_action(action.id, ActionStatus::Succeeded, &json!({"status": 200}))
            .await
            .unwrap();
        assert_eq!(done.result, Some(json!({"status": 200})));
    }
}
