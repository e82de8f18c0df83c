//! The case store: alerts, the cases that group them and the response actions taken on
//! them, behind the [`CaseStore`] trait, with the SQLite implementation used standalone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::alert::{Alert, Level};
use crate::audit::{self, AuditEntry, Change, SYSTEM_ACTOR};

mod analyst;
mod ceiling;
pub mod dead_letters;
mod group_commit;
pub mod keys;
mod location;
mod merge;
mod nis2;
mod outputs;
mod postgres;
pub mod privacy;
mod readers;
pub use location::{open, StoreUrl};
pub use postgres::PostgresStore;
pub use privacy::PrivacyStore;

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
    #[error("connecting to the PostgreSQL case store {url}")]
    Connect {
        /// The URL without its password.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the case-store URL {url:?} is not usable: {reason}")]
    Url { url: String, reason: String },
    #[error("applying the case-store migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("locking {path} to open the case store")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("{reason}")]
    Conflict { reason: String },
    #[error("the alert writer could not store the alert: {reason}")]
    Writer { reason: String },
    /// A statement on one of the synchronous SQLite connections (the readers and the
    /// alert batch connection).
    #[error("case-store statement {what}")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("a case-store read stopped before answering: {reason}")]
    ReadTask { reason: String },
}

// rusqlite's row iterators need it; the decoders name the column themselves.
impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            what: "row",
            source,
        }
    }
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
    /// Its approval window passed while it was pending; it will not run.
    Expired,
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
                    other => Err(format!(
                        "unknown {} {other:?}; one of: {}",
                        stringify!($ty),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(CaseStatus { Open => "open", InProgress => "in_progress", Closed => "closed" });

/// The Traffic Light Protocol 2.0 levels, least to most restricted; also used for PAP.
/// Stored as their rank, as TheHive numbers them (0 clear … 4 red).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    #[serde(rename = "clear")]
    Clear = 0,
    #[serde(rename = "green")]
    Green = 1,
    #[serde(rename = "amber")]
    Amber = 2,
    #[serde(rename = "amber+strict")]
    AmberStrict = 3,
    #[serde(rename = "red")]
    Red = 4,
}

text_enum!(Tlp {
    Clear => "clear",
    Green => "green",
    Amber => "amber",
    AmberStrict => "amber+strict",
    Red => "red",
});

/// How a closed case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    TruePositive,
    FalsePositive,
    Benign,
    Duplicate,
}

text_enum!(Resolution {
    TruePositive => "true_positive",
    FalsePositive => "false_positive",
    Benign => "benign",
    Duplicate => "duplicate",
});

/// An analyst's decision on one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertTriage {
    Acknowledge,
    Ignore { reason: String },
}

impl Tlp {
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Option<Tlp> {
        Tlp::ALL.into_iter().find(|tlp| tlp.rank() == rank)
    }
}
text_enum!(ActionStatus {
    Pending => "pending",
    Approved => "approved",
    Rejected => "rejected",
    Succeeded => "succeeded",
    Failed => "failed",
    Expired => "expired",
});

/// A stored alert with its place in triage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub case_id: Option<i64>,
    /// `new`, `acknowledged` or `ignored`.
    pub status: String,
    /// Why it was ignored.
    pub status_reason: Option<String>,
    pub triaged_by: Option<String>,
    pub triaged_at: Option<DateTime<Utc>>,
    pub alert: Alert,
}

/// An alert row as stored: its triage columns and the alert's JSON body unparsed, for an
/// answer that copies the body's events out as they are instead of building them into
/// JSON trees and serialising them again (a case's alerts are most of a case read).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub id: String,
    pub case_id: Option<i64>,
    pub status: String,
    pub status_reason: Option<String>,
    pub triaged_by: Option<String>,
    pub triaged_at: Option<DateTime<Utc>>,
    /// The [`Alert`] as JSON.
    pub body: String,
}

impl StoredAlert {
    /// The record with its alert serialised.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the alert cannot be serialised.
    pub fn from_record(record: AlertRecord) -> Result<Self, StoreError> {
        Ok(StoredAlert {
            body: serde_json::to_string(&record.alert).map_err(|e| StoreError::Corrupt {
                what: "alert",
                reason: e.to_string(),
            })?,
            id: record.id,
            case_id: record.case_id,
            status: record.status,
            status_reason: record.status_reason,
            triaged_by: record.triaged_by,
            triaged_at: record.triaged_at,
        })
    }

    /// The record with its body parsed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the body is not an alert.
    pub fn parse(self) -> Result<AlertRecord, StoreError> {
        Ok(AlertRecord {
            alert: parse_json("alert", &self.body)?,
            id: self.id,
            case_id: self.case_id,
            status: self.status,
            status_reason: self.status_reason,
            triaged_by: self.triaged_by,
            triaged_at: self.triaged_at,
        })
    }
}

/// A case with its earliest alerts (bodies as stored) and all its response actions: what
/// `GET /api/v1/cases/{id}` answers, read in one go ([`CaseStore::case_detail`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseDetailRecord {
    pub case: CaseRecord,
    /// Ordered by event time, then id.
    pub alerts: Vec<StoredAlert>,
    /// Ordered by id.
    pub actions: Vec<ActionRecord>,
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
    pub tlp: Tlp,
    pub pap: Tlp,
    pub description: String,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    /// Set when the case is closed.
    pub resolution: Option<Resolution>,
    pub summary: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The fields of a case a person may change; `None` leaves a field as it is, and
/// `assignee: Some(None)` unassigns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<Level>,
    pub tlp: Option<Tlp>,
    pub pap: Option<Tlp>,
    pub status: Option<CaseStatus>,
    pub assignee: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

/// A case an analyst opens by hand, or by promoting an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseDraft {
    pub title: String,
    pub description: String,
    pub severity: Level,
    pub tlp: Tlp,
    pub pap: Tlp,
    pub tags: Vec<String>,
    pub assignee: Option<String>,
}

/// The group key of a case opened by hand or by promotion. Grouping keys are always
/// `rule|host`, so a key without `|` never receives the stage's alerts.
pub const MANUAL_GROUP_KEY: &str = "manual";

/// What an observable belongs to: a case, or (as TheHive has them) an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservableOwner {
    Case(i64),
    Alert(String),
}

/// An observable to add; adding one whose `(kind, value)` its owner has already merges
/// the tags and raises the `ioc` and `sighted` flags instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewObservable {
    /// ip, domain, url, md5, sha1, sha256, sha512, email, filename, or any other type a
    /// client uses (TheHive's `dataType`).
    pub kind: String,
    pub value: String,
    pub ioc: bool,
    pub sighted: bool,
    pub tags: Vec<String>,
}

/// A stored observable with, for a case's, the intel matches of the case's alerts on
/// the same type and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservableRecord {
    pub id: i64,
    pub case_id: Option<i64>,
    pub alert_id: Option<String>,
    pub kind: String,
    pub value: String,
    pub ioc: bool,
    pub sighted: bool,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Not stored: read from the alerts at each read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enrichment: Vec<crate::alert::IntelMatch>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Done,
}

text_enum!(TaskStatus { Open => "open", InProgress => "in_progress", Done => "done" });

/// A piece of work on a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: i64,
    pub case_id: i64,
    pub title: String,
    pub assignee: Option<String>,
    pub status: TaskStatus,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: String,
    pub assignee: Option<String>,
}

/// The fields of a task to change; `assignee: Some(None)` unassigns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskUpdate {
    pub title: Option<String>,
    pub assignee: Option<Option<String>>,
    pub status: Option<TaskStatus>,
}

/// One line of a case's timeline: a comment, or an event the store recorded with the
/// change it describes. `kind` and the keys of `details`:
///
/// | kind | details |
/// | --- | --- |
/// | `created` | `title`, `alert_id` (when opened for or promoted from an alert) |
/// | `updated` | `fields`: each changed field's `{"from", "to"}` |
/// | `closed` | `resolution`, `summary` |
/// | `alert_attached` | `alert_id` (grouped by the stage) |
/// | `alert_merged` | `alert_id`, `from_case` (when it moved from another case) |
/// | `alert_moved_out` | `alert_id`, `to_case` |
/// | `case_merged` | `from_case`, `alert_ids` (the alerts that came with it) |
/// | `merged_into` | `to_case`, `alert_ids` (the alerts that left with the merge) |
/// | `observable_added`, `observable_updated` | `observable_id`, `type`, `value` |
/// | `task_created` | `task_id`, `title` |
/// | `task_updated` | `task_id`, `fields` as for `updated` |
/// | `action_approved`, `action_rejected` | `action_id`, `playbook`, `step`, `reason` |
/// | `action_executed` | `action_id`, `playbook`, `step`, `status` (`succeeded`/`failed`) |
/// | `comment` | `text` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub id: i64,
    pub case_id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub details: Value,
}

/// The SOC figures of one severity over a time range, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityFigures {
    pub severity: Level,
    /// Alerts detected in the range.
    pub alerts: i64,
    /// Mean of `detected_at - timestamp` (event time to alert) over those alerts.
    pub mean_time_to_detect: Option<f64>,
    /// How many of them someone has touched (acknowledged, ignored, promoted, merged).
    pub acknowledged: i64,
    /// Mean of `acknowledged_at - detected_at` over those.
    pub mean_time_to_acknowledge: Option<f64>,
    /// Cases of this severity closed in the range.
    pub resolved: i64,
    /// Mean of `closed_at - created_at` over those cases.
    pub mean_time_to_resolve: Option<f64>,
}

/// What a text search found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchHits {
    /// Cases whose title or description contains the text.
    pub cases: Vec<CaseRecord>,
    /// Case observables whose value contains the text.
    pub observables: Vec<ObservableRecord>,
}

/// A stored API key: everything but the key, of which only the argon2 hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The public part of the key (`kst_<id>_<secret>`), to find its hash.
    pub id: String,
    pub name: String,
    pub role: String,
    /// The most restricted TLP the key may read.
    pub tlp: Tlp,
    /// The argon2 PHC string of the secret.
    #[serde(skip_serializing)]
    pub hash: String,
    pub created_at: DateTime<Utc>,
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
    Reject {
        reason: String,
    },
    /// Nobody decided before the action's approval window closed (the respond stage's
    /// sweep); `reason` says when it closed.
    Expire {
        reason: String,
    },
}

impl Decision {
    /// The action's status after the decision, and the reason stored with it.
    pub(crate) fn outcome(&self) -> (ActionStatus, Option<&str>) {
        match self {
            Decision::Approve => (ActionStatus::Approved, None),
            Decision::Reject { reason } => (ActionStatus::Rejected, Some(reason.as_str())),
            Decision::Expire { reason } => (ActionStatus::Expired, Some(reason.as_str())),
        }
    }

    /// The kind of the case-timeline entry it leaves.
    pub(crate) fn timeline_kind(&self) -> &'static str {
        match self {
            Decision::Approve => "action_approved",
            Decision::Reject { .. } => "action_rejected",
            Decision::Expire { .. } => "action_expired",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub level: Option<Level>,
    /// `new`, `acknowledged` or `ignored`.
    pub status: Option<String>,
    pub rule_id: Option<String>,
    pub case_id: Option<i64>,
    /// Only alerts with an observable of exactly this value.
    pub observable: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Leaves out alerts of cases above this TLP.
    pub max_tlp: Option<Tlp>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    /// Leaves out cases above this TLP.
    pub max_tlp: Option<Tlp>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    pub status: Option<ActionStatus>,
    pub case_id: Option<i64>,
    /// Leaves out actions of cases above this TLP.
    pub max_tlp: Option<Tlp>,
}

/// The store the cases and respond stages share. Implementations must make
/// [`CaseStore::insert_alert`] and [`CaseStore::create_action`] idempotent, because a
/// durable bus redelivers messages, and must append an [`AuditEntry`] for every change
/// in the change's own transaction, chained as [`crate::audit`] describes.
#[async_trait]
pub trait CaseStore: Send + Sync {
    /// Stores an alert; `false` when an alert with that id was stored before.
    async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError>;
    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError>;
    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError>;
    /// As [`CaseStore::list_alerts`], with each body left as stored. The SQL stores read
    /// the bodies as they are; this default serialises the records of `list_alerts`.
    async fn list_stored_alerts(
        &self,
        filter: &AlertFilter,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        self.list_alerts(filter)
            .await?
            .into_iter()
            .map(StoredAlert::from_record)
            .collect()
    }

    /// The open case of this grouping key whose last alert is not older than `since`.
    async fn find_open_case(
        &self,
        group_key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<CaseRecord>, StoreError>;
    async fn open_case(&self, new: &NewCase, first: &Alert) -> Result<CaseRecord, StoreError>;
    /// Adds a stored alert to a case, widening its time span and raising its severity.
    async fn attach_alert(&self, case_id: i64, alert: &Alert) -> Result<CaseRecord, StoreError>;
    /// The open cases of this grouping key whose span reaches into `[from, to]` (last
    /// alert not before `from`, first alert not after `to`), earliest first alert first,
    /// then by id.
    async fn open_cases_near(
        &self,
        group_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CaseRecord>, StoreError>;
    /// Merges the open case `from` into the open case `into` of the same grouping key, as
    /// `by`, in one transaction: `from`'s alerts and tasks move to `into`, its observables
    /// are added to `into`'s (a `(type, value)` `into` has already keeps its tags and
    /// gains the flags), and `into` takes the union of both: the wider span, the higher
    /// severity, the stricter TLP and PAP, the tags of both. `from` stays as a record,
    /// closed as a `duplicate` with no alerts, its summary naming `into`; its timeline and
    /// actions stay with it. Both timelines say so (`case_merged`, `merged_into`), and the
    /// change is audited as `case.merge`. Returns `into` as it is after.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the two are one case, either is closed, or their
    /// grouping keys differ; [`StoreError::NotFound`] when either does not exist.
    async fn merge_cases(&self, into: i64, from: i64, by: &str) -> Result<CaseRecord, StoreError>;
    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError>;
    /// The case with its first `alert_limit` alerts (by event time, then id) and all its
    /// actions; `None` without the case. This default makes the three reads at once; a
    /// store that can read them together (one snapshot, one round trip) does.
    async fn case_detail(
        &self,
        id: i64,
        alert_limit: i64,
    ) -> Result<Option<CaseDetailRecord>, StoreError> {
        let alerts = AlertFilter {
            case_id: Some(id),
            limit: Some(alert_limit),
            ..AlertFilter::default()
        };
        let actions = ActionFilter {
            case_id: Some(id),
            ..ActionFilter::default()
        };
        let (case, alerts, actions) = futures::try_join!(
            self.get_case(id),
            self.list_stored_alerts(&alerts),
            self.list_actions(&actions),
        )?;
        Ok(case.map(|case| CaseDetailRecord {
            case,
            alerts,
            actions,
        }))
    }
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

    /// Changes a case's fields as `by`; an update that changes nothing is not audited.
    async fn update_case(
        &self,
        id: i64,
        update: &CaseUpdate,
        by: &str,
    ) -> Result<CaseRecord, StoreError>;

    /// Stores a new API key; a name already taken is a [`StoreError::Conflict`].
    async fn create_api_key(&self, key: &ApiKeyRecord, by: &str) -> Result<(), StoreError>;
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The key with its revocation and last use, for authenticating a request. A store
    /// that keeps neither (a test wrapper) answers the bare record.
    async fn get_api_key_status(&self, id: &str) -> Result<Option<keys::ApiKeyStatus>, StoreError> {
        Ok(self.get_api_key(id).await?.map(|key| keys::ApiKeyStatus {
            key,
            revoked_at: None,
            last_used_at: None,
        }))
    }
    /// Records that a request authenticated with the key at `at` (see
    /// [`keys::LAST_USED_RESOLUTION`]); a store that does not track use ignores it.
    async fn mark_api_key_used(&self, _id: &str, _at: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Acknowledges or ignores an alert as `by`; an alert already in that state is left
    /// as it is and not audited again.
    async fn triage_alert(
        &self,
        id: &str,
        triage: &AlertTriage,
        by: &str,
    ) -> Result<AlertRecord, StoreError>;

    /// Closes a case with its resolution and summary; closing a closed case is a
    /// [`StoreError::Conflict`].
    async fn close_case(
        &self,
        id: i64,
        resolution: Resolution,
        summary: &str,
        by: &str,
    ) -> Result<CaseRecord, StoreError>;

    /// Audit entries with `seq` greater than `after`, in order, at most `limit`.
    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Appends a note about a case to its timeline and the audit log as `by`, in one
    /// transaction: what a response step did, or a case operation the store keeps no
    /// record of. `kind` names it (`respond.step_result`); `details` must hold no secret,
    /// the chain keeps it forever.
    async fn append_case_note(
        &self,
        case_id: i64,
        kind: &'static str,
        details: &Value,
        by: &str,
    ) -> Result<(), StoreError>;

    /// Opens a case by hand as `by` (group key [`MANUAL_GROUP_KEY`], no rule, no
    /// alerts); audited as `case.create`.
    async fn create_case(&self, draft: &CaseDraft, by: &str) -> Result<CaseRecord, StoreError>;
    /// Opens a case from one alert as `by`: the alert moves to the new case (leaving the
    /// case the stage grouped it in, if any), its status becomes `promoted` and its
    /// observables are copied to the case. Audited as `alert.promote`.
    async fn promote_alert(
        &self,
        alert_id: &str,
        draft: &CaseDraft,
        by: &str,
    ) -> Result<CaseRecord, StoreError>;
    /// Moves an alert into a case as `by`, widening the case's span, raising its
    /// severity and copying the alert's observables; the alert's status becomes
    /// `merged`. An alert already in that case changes nothing. A closed case is a
    /// [`StoreError::Conflict`]. Audited as `alert.merge`.
    async fn merge_alert(
        &self,
        alert_id: &str,
        case_id: i64,
        by: &str,
    ) -> Result<CaseRecord, StoreError>;

    /// Adds an observable as `by`; `true` when it is new. A `(kind, value)` the owner has
    /// already is merged (tags joined, flags raised) and `false` returned; a merge that
    /// changes nothing is not audited. Audited as `observable.create` / `observable.update`.
    async fn add_observable(
        &self,
        owner: &ObservableOwner,
        new: &NewObservable,
        by: &str,
    ) -> Result<(ObservableRecord, bool), StoreError>;
    /// The owner's observables by id; a case's with their enrichment.
    async fn list_observables(
        &self,
        owner: &ObservableOwner,
    ) -> Result<Vec<ObservableRecord>, StoreError>;

    /// Adds an `open` task to a case; audited as `task.create`.
    async fn create_task(
        &self,
        case_id: i64,
        new: &NewTask,
        by: &str,
    ) -> Result<TaskRecord, StoreError>;
    async fn list_tasks(&self, case_id: i64) -> Result<Vec<TaskRecord>, StoreError>;
    /// Changes a task of the case; a task of another case is [`StoreError::NotFound`], an
    /// update that changes nothing is not audited. Audited as `task.update`.
    async fn update_task(
        &self,
        case_id: i64,
        task_id: i64,
        update: &TaskUpdate,
        by: &str,
    ) -> Result<TaskRecord, StoreError>;

    /// Adds a comment to the case's timeline; audited as `case.comment`.
    async fn add_comment(
        &self,
        case_id: i64,
        text: &str,
        by: &str,
    ) -> Result<TimelineEntry, StoreError>;
    /// The case's timeline entries with `id` greater than `after`, oldest first.
    async fn timeline(
        &self,
        case_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The SOC figures per severity: alerts detected, and cases closed, in
    /// `[from, to)`. Severities without alerts or cases are left out.
    async fn figures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SeverityFigures>, StoreError>;

    /// Cases (title, description) and case observables (value) containing `text`,
    /// case-insensitively for ASCII, at most `limit` of each, within `max_tlp`.
    async fn search(&self, text: &str, max_tlp: Tlp, limit: i64) -> Result<SearchHits, StoreError>;

    /// Flags or unflags the case as a significant incident under NIS2 (art. 23); a change
    /// is audited (`case.significant_incident`) and noted on the case's timeline. Returns
    /// the flag as it now is.
    async fn set_significant_incident(
        &self,
        case_id: i64,
        significant: bool,
        by: &str,
    ) -> Result<bool, StoreError>;
    /// Whether the case is flagged as a significant incident; `NotFound` without the case.
    async fn significant_incident(&self, case_id: i64) -> Result<bool, StoreError>;
    /// The ids of the cases flagged as significant incidents, in order.
    async fn significant_incidents(&self) -> Result<Vec<i64>, StoreError>;
    /// Whether a respond-stage output with this idempotency key was applied already.
    async fn response_output_applied(&self, key: &str) -> Result<bool, StoreError>;
    /// Records that the output with this key was applied to `case_id` (`kind`:
    /// `step_result`, `case_action`); `false` when it was recorded before. Bookkeeping
    /// only, so not audited: the change the output made has its own audit entry.
    async fn record_response_output(
        &self,
        key: &str,
        case_id: i64,
        kind: &str,
    ) -> Result<bool, StoreError>;
    /// As [`CaseStore::figures`], over the alerts without a case or in a case at most
    /// `max_tlp`, and the cases at most `max_tlp`: the figures a caller with that ceiling
    /// may see.
    ///
    /// # Errors
    /// A store that cannot restrict its figures (a wrapper that does not forward this)
    /// refuses rather than count what the caller may not see.
    async fn figures_within(
        &self,
        _from: DateTime<Utc>,
        _to: DateTime<Utc>,
        max_tlp: Tlp,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        Err(StoreError::Conflict {
            reason: format!("this case store cannot restrict its figures to TLP {max_tlp}"),
        })
    }
}

/// The embedded store: one SQLite file in the data directory.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection that every write transaction takes (see [`SqliteStore::write_tx`]).
    writer: SqlitePool,
    /// New alerts waiting to be stored together ([`group_commit`]).
    alerts: std::sync::Arc<group_commit::AlertQueue<group_commit::SqliteBatches>>,
    /// Synchronous connections for the reads on the request path ([`readers`]).
    readers: std::sync::Arc<readers::Readers>,
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
        let _opening = OpenLock::acquire(path).await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Under WAL, NORMAL syncs at checkpoints rather than at every commit: still
            // crash-safe and consistent (a change and its audit entry commit together),
            // but a power loss may drop the last commits. SQLite's documented trade-off
            // for WAL; it removes one fsync per write from the hot path.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        // sqlx pings a connection on every acquire by default: for SQLite a round trip to
        // the connection's worker thread per query, for a file that cannot hang up.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        // SQLite runs one writer at a time. Writers sharing the read pool collide on
        // `BEGIN IMMEDIATE` and wait in SQLite's busy handler, which sleeps in steps of
        // up to 100 ms; through one connection of their own they queue in the pool
        // instead, in order and without sleeping, and readers keep their connections.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(SqliteStore {
            pool,
            alerts: std::sync::Arc::new(group_commit::AlertQueue::new(
                group_commit::SqliteBatches::new(writer.clone(), path),
            )),
            writer,
            readers: readers::Readers::new(path),
        })
    }
}

/// An exclusive lock on `<database>.open-lock`, held while a store opens its database.
/// Processes that share one store (the cases and respond stages) start together; on a new
/// file, both switched it to WAL at once (one failed with "database is locked": the busy
/// timeout does not cover that switch) and both applied the migrations (sqlx takes no
/// lock around SQLite migrations, as it does for PostgreSQL; one failed with "duplicate
/// column name"). The lock is advisory (flock on Linux) and released when the file is
/// closed, also by a process that dies holding it.
struct OpenLock {
    /// Held, not read: closing it releases the lock.
    _file: std::fs::File,
}

impl OpenLock {
    async fn acquire(database: &Path) -> Result<Self, StoreError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".open-lock");
        let path = PathBuf::from(name);
        let lock_error = |source| StoreError::OpenLock {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        // Waiting for the lock blocks the thread, so off the async workers.
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| lock_error(std::io::Error::other(e)))?
            .map_err(lock_error)?;
        Ok(OpenLock { _file: file })
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

// The row decoders serve both backends: their migrations give every column the same type
// (TEXT or 64-bit integer).
fn alert_from_row<R>(row: &R) -> Result<AlertRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    stored_alert_from_row(row)?.parse()
}

fn parse_all(stored: Vec<StoredAlert>) -> Result<Vec<AlertRecord>, StoreError> {
    stored.into_iter().map(StoredAlert::parse).collect()
}

fn stored_alert_from_row<R>(row: &R) -> Result<StoredAlert, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let triaged_at: Option<String> = row.get("triaged_at");
    Ok(StoredAlert {
        id: row.get("id"),
        case_id: row.get("case_id"),
        status: row.get("status"),
        status_reason: row.get("status_reason"),
        triaged_by: row.get("triaged_by"),
        triaged_at: triaged_at
            .map(|t| parse_ts("alert triaged_at", &t))
            .transpose()?,
        body: row.get("body"),
    })
}

fn case_from_row<R>(row: &R) -> Result<CaseRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let rank = |column: &str| -> Result<Tlp, StoreError> {
        let rank: i64 = row.get(column);
        Tlp::from_rank(rank).ok_or_else(|| StoreError::Corrupt {
            what: "case tlp or pap",
            reason: format!("{column} rank {rank} is not 0 to 4"),
        })
    };
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
        tlp: rank("tlp")?,
        pap: rank("pap")?,
        description: row.get("description"),
        assignee: row.get("assignee"),
        tags: parse_json("case tags", row.get("tags"))?,
        resolution: row
            .get::<Option<String>, _>("resolution")
            .map(|r| parse_text("case resolution", &r))
            .transpose()?,
        summary: row.get("summary"),
        closed_at: row
            .get::<Option<String>, _>("closed_at")
            .map(|t| parse_ts("case closed_at", &t))
            .transpose()?,
        created_at: parse_ts("case created_at", row.get("created_at"))?,
        updated_at: parse_ts("case updated_at", row.get("updated_at"))?,
    })
}

fn action_from_row<R>(row: &R) -> Result<ActionRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
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

fn api_key_from_row<R>(row: &R) -> Result<ApiKeyRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let rank: i64 = row.get("tlp");
    Ok(ApiKeyRecord {
        id: row.get("id"),
        name: row.get("name"),
        role: row.get("role"),
        tlp: Tlp::from_rank(rank).ok_or_else(|| StoreError::Corrupt {
            what: "api key tlp",
            reason: format!("rank {rank} is not 0 to 4"),
        })?,
        hash: row.get("hash"),
        created_at: parse_ts("api key created_at", row.get("created_at"))?,
    })
}

fn audit_from_row<R>(row: &R) -> Result<AuditEntry, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state = |column: &str| -> Result<Option<Value>, StoreError> {
        let raw: Option<String> = row.get(column);
        raw.map(|raw| parse_json("audit state", &raw)).transpose()
    };
    Ok(AuditEntry {
        seq: row.get("seq"),
        at: row.get("at"),
        actor: row.get("actor"),
        action: row.get("action"),
        object_kind: row.get("object_kind"),
        object_id: row.get("object_id"),
        before: state("before")?,
        after: state("after")?,
        before_digest: row.get("before_digest"),
        after_digest: row.get("after_digest"),
        prev_hash: row.get("prev_hash"),
        hash: row.get("hash"),
    })
}

fn to_state<T: Serialize>(what: &'static str, value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// What the audit log keeps of an alert's triage.
fn triage_state(alert: &AlertRecord) -> Value {
    serde_json::json!({
        "status": alert.status,
        "status_reason": alert.status_reason,
        "triaged_by": alert.triaged_by,
    })
}

/// What the audit log keeps of a new alert: enough to identify it, not its whole event,
/// which stays in the alerts table unchanged.
fn alert_state(alert: &Alert) -> Value {
    serde_json::json!({
        "id": alert.id,
        "rule_id": alert.rule.id,
        "rule_title": alert.rule.title,
        "level": alert.rule.level.as_str(),
        "host": alert.host,
        "timestamp": ts(alert.timestamp),
    })
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Appends one change to the audit chain inside the change's transaction. The
/// transaction must hold the write lock (see [`SqliteStore::write_tx`]) so that no other
/// writer appends between reading the last hash and inserting.
/// Appends the change's audit entry and commits: the entry lands in the same transaction
/// as the change it records, or neither does.
async fn commit_audited(mut tx: Tx, change: Change) -> Result<(), StoreError> {
    append_audit(&mut tx, change).await?;
    tx.commit().await.map_err(query_err("commit"))
}

/// The entry that links `change` to the chain after `prev_hash`, stamped now.
fn chain_entry(seq: i64, prev_hash: String, change: Change) -> AuditEntry {
    let mut entry = AuditEntry {
        seq,
        at: ts(Utc::now()),
        actor: change.actor,
        action: change.action.to_owned(),
        object_kind: change.object_kind.to_owned(),
        object_id: change.object_id,
        before_digest: change.before.as_ref().map(audit::digest),
        after_digest: change.after.as_ref().map(audit::digest),
        before: change.before,
        after: change.after,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry.computed_hash();
    entry
}

async fn append_audit(tx: &mut Tx, change: Change) -> Result<(), StoreError> {
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("read the audit chain's head"))?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.get::<i64, _>("seq") + 1, row.get::<String, _>("hash")),
        None => (1, audit::GENESIS.to_owned()),
    };
    let entry = chain_entry(seq, prev_hash, change);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, object_kind, object_id, before, \
         after, before_digest, after_digest, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    Ok(())
}

async fn fetch_case(tx: &mut Tx, id: i64) -> Result<CaseRecord, StoreError> {
    sqlx::query("SELECT * FROM cases WHERE id = ?")
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
         FROM alerts WHERE id = ?",
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
    sqlx::query("SELECT * FROM actions WHERE id = ?")
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

fn case_change(
    actor: &str,
    action: &'static str,
    before: Option<&CaseRecord>,
    after: &CaseRecord,
) -> Result<Change, StoreError> {
    Ok(Change {
        actor: actor.to_owned(),
        action,
        object_kind: "case",
        object_id: after.id.to_string(),
        before: before.map(|case| to_state("case", case)).transpose()?,
        after: Some(to_state("case", after)?),
    })
}

fn action_change(
    actor: &str,
    action: &'static str,
    before: Option<&ActionRecord>,
    after: &ActionRecord,
) -> Result<Change, StoreError> {
    Ok(Change {
        actor: actor.to_owned(),
        action,
        object_kind: "action",
        object_id: after.id.to_string(),
        before: before.map(|a| to_state("action", a)).transpose()?,
        after: Some(to_state("action", after)?),
    })
}

/// The case with `update` applied.
fn apply_update(case: &CaseRecord, update: &CaseUpdate) -> CaseRecord {
    let mut next = case.clone();
    if let Some(title) = &update.title {
        next.title = title.clone();
    }
    if let Some(description) = &update.description {
        next.description = description.clone();
    }
    if let Some(severity) = update.severity {
        next.severity = severity;
    }
    if let Some(tlp) = update.tlp {
        next.tlp = tlp;
    }
    if let Some(pap) = update.pap {
        next.pap = pap;
    }
    if let Some(status) = update.status {
        next.status = status;
    }
    if let Some(assignee) = &update.assignee {
        next.assignee = assignee.clone();
    }
    if let Some(tags) = &update.tags {
        next.tags = tags.clone();
    }
    next
}

/// The SQL condition keeping rows whose case (column `case_column`) is at most `tlp`.
fn push_tlp_ceiling(
    sql: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
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

impl SqliteStore {
    /// A transaction holding SQLite's write lock from its start: each change reads the
    /// audit chain's head and the object's state before writing, and a deferred
    /// transaction could read them before another writer commits (and then fail to
    /// upgrade). PostgreSQL would take `LOCK TABLE audit_log` instead.
    async fn write_tx(&self) -> Result<Tx, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query_err("begin"))
    }
}

#[async_trait]
impl CaseStore for SqliteStore {
    async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError> {
        // Stored with the alerts that arrive at the same moment, in one transaction.
        let pending = group_commit::PendingAlert::new(alert)?;
        self.alerts.insert(pending).await
    }

    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query("SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get alert"))?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        parse_all(self.list_stored_alerts(filter).await?)
    }

    async fn list_stored_alerts(
        &self,
        filter: &AlertFilter,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let mut sql =
            sqlx::QueryBuilder::new("SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body FROM alerts WHERE 1 = 1");
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
        sql.push(" ORDER BY timestamp, id LIMIT ")
            .push_bind(filter.limit.unwrap_or(-1))
            .push(" OFFSET ")
            .push_bind(filter.offset.unwrap_or(0));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list alerts"))?;
        rows.iter().map(stored_alert_from_row).collect()
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
        let mut tx = self.write_tx().await?;
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
        self.readers.read(move |conn| readers::case(conn, id)).await
    }

    async fn case_detail(
        &self,
        id: i64,
        alert_limit: i64,
    ) -> Result<Option<CaseDetailRecord>, StoreError> {
        self.readers
            .read(move |conn| readers::case_detail(conn, id, alert_limit))
            .await
    }

    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new("SELECT * FROM cases WHERE 1 = 1");
        if let Some(status) = filter.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(tlp) = filter.max_tlp {
            sql.push(" AND tlp <= ").push_bind(tlp.rank());
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
        let mut tx = self.write_tx().await?;
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
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("create action"))?;
        if let Some(row) = inserted {
            let action = fetch_action(&mut tx, row.get("id")).await?;
            let change = action_change(SYSTEM_ACTOR, "action.create", None, &action)?;
            commit_audited(tx, change).await?;
            return Ok((action, true));
        }
        let existing =
            sqlx::query("SELECT * FROM actions WHERE playbook = ? AND step = ? AND alert_id = ?")
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
        // The write lock taken at the start makes two concurrent decisions safe: the
        // second one reads the action after the first committed.
        let mut tx = self.write_tx().await?;
        let before = fetch_action(&mut tx, id).await?;
        if before.status != ActionStatus::Pending {
            return Err(StoreError::NotPending {
                id,
                status: before.status,
            });
        }
        sqlx::query(
            "UPDATE actions SET status = ?, reason = ?, decided_by = ?, updated_at = ? \
             WHERE id = ?",
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
        sqlx::query("UPDATE actions SET status = ?, result = ?, updated_at = ? WHERE id = ?")
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
            "UPDATE cases SET title = ?, description = ?, severity = ?, tlp = ?, pap = ?, \
             status = ?, assignee = ?, tags = ?, updated_at = ? WHERE id = ?",
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
            sqlx::query("UPDATE cases SET closed_at = NULL WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("clear a reopened case's closed_at"))?;
        }
        let after = fetch_case(&mut tx, id).await?;
        let change = case_change(by, "case.update", Some(&before), &after)?;
        if let (Some(from), Some(to)) = (&change.before, &change.after) {
            let fields = analyst::changed_fields(from, to, analyst::CASE_FIELDS);
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
             VALUES (?, ?, ?, ?, ?, ?)",
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
            "UPDATE alerts SET status = ?, status_reason = ?, triaged_by = ?, triaged_at = ? \
             WHERE id = ?",
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
            before: Some(triage_state(&before)),
            after: Some(triage_state(&after)),
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
            "UPDATE cases SET status = 'closed', resolution = ?, summary = ?, closed_at = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(resolution.as_str())
        .bind(summary)
        .bind(&now)
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

    async fn get_api_key_status(&self, id: &str) -> Result<Option<keys::ApiKeyStatus>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| readers::api_key_status(conn, &id))
            .await
    }

    async fn mark_api_key_used(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.mark_api_key_used_impl(id, at).await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get api key"))?
            .as_ref()
            .map(api_key_from_row)
            .transpose()
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

    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read the audit log"))?;
        rows.iter().map(audit_from_row).collect()
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
        match owner {
            // TheHive's create-alert answers with the count of the alert's observables.
            ObservableOwner::Alert(id) => {
                let id = id.clone();
                self.readers
                    .read(move |conn| readers::alert_observables(conn, &id))
                    .await
            }
            ObservableOwner::Case(_) => self.list_observables_impl(owner).await,
        }
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
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max_tlp: Tlp,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        self.figures_within_impl(from, to, max_tlp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RuleRef;
    use crate::event::Event;
    use serde_json::json;

    #[test]
    fn an_unknown_level_names_the_accepted_ones() {
        let error = "PURPLE".parse::<Tlp>().unwrap_err();
        assert_eq!(
            error,
            "unknown Tlp \"PURPLE\"; one of: clear, green, amber, amber+strict, red"
        );
        assert_eq!("amber+strict".parse::<Tlp>(), Ok(Tlp::AmberStrict));
    }

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
        let actions: Vec<String> = store
            .audit_entries(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| format!("{} {}", entry.actor, entry.action))
            .collect();
        assert_eq!(
            actions,
            [
                "system:kastell alert.create",
                "system:kastell case.open",
                "system:kastell action.create",
                "alice action.decide",
                "system:kastell action.finish",
            ]
        );
    }

    /// A store with five audited changes: an alert, its case, and three case updates.
    async fn audited_store() -> (tempfile::TempDir, SqliteStore) {
        let (dir, store) = store().await;
        let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
        store.insert_alert(&a).await.unwrap();
        let new = NewCase {
            title: "t".into(),
            group_key: "k".into(),
            rule_id: "r1".into(),
            host: None,
        };
        let case = store.open_case(&new, &a).await.unwrap();
        for title in ["one", "two", "three"] {
            let update = CaseUpdate {
                title: Some(title.into()),
                ..Default::default()
            };
            store.update_case(case.id, &update, "bob").await.unwrap();
        }
        (dir, store)
    }

    async fn verdict(store: &SqliteStore) -> audit::Verdict {
        audit::verify(&store.audit_entries(0, i64::MAX).await.unwrap())
    }

    async fn tamper(store: &SqliteStore, sql: &'static str) {
        sqlx::query(sql).execute(&store.pool).await.unwrap();
    }

    #[tokio::test]
    async fn case_updates_are_audited_with_before_and_after() {
        let (_dir, store) = audited_store().await;
        assert_eq!(verdict(&store).await, audit::Verdict::Intact { entries: 5 });
        let entries = store.audit_entries(3, 10).await.unwrap();
        assert_eq!(entries[0].seq, 4);
        assert_eq!(entries[0].actor, "bob");
        assert_eq!(entries[0].before.as_ref().unwrap()["title"], "one");
        assert_eq!(entries[0].after.as_ref().unwrap()["title"], "two");
        assert_eq!(
            entries[0].prev_hash,
            store.audit_entries(2, 1).await.unwrap()[0].hash
        );
        let unchanged = CaseUpdate {
            title: Some("three".into()),
            ..Default::default()
        };
        store.update_case(1, &unchanged, "bob").await.unwrap();
        assert_eq!(verdict(&store).await, audit::Verdict::Intact { entries: 5 });
    }

    #[tokio::test]
    async fn alerts_are_triaged_and_cases_closed_once_with_audit() {
        let (_dir, store) = audited_store().await;
        let id = store.list_alerts(&AlertFilter::default()).await.unwrap()[0]
            .id
            .clone();
        let ignore = AlertTriage::Ignore {
            reason: "lab scanner".into(),
        };
        let ignored = store.triage_alert(&id, &ignore, "carol").await.unwrap();
        assert_eq!(ignored.status, "ignored");
        assert_eq!(ignored.status_reason.as_deref(), Some("lab scanner"));
        assert_eq!(ignored.triaged_by.as_deref(), Some("carol"));
        store.triage_alert(&id, &ignore, "carol").await.unwrap();
        let only_ignored = AlertFilter {
            status: Some("ignored".into()),
            ..Default::default()
        };
        assert_eq!(store.list_alerts(&only_ignored).await.unwrap().len(), 1);
        let missing = store
            .triage_alert("nope", &AlertTriage::Acknowledge, "carol")
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })));

        let closed = store
            .close_case(1, Resolution::Benign, "lab traffic", "dave")
            .await
            .unwrap();
        assert_eq!(closed.status, CaseStatus::Closed);
        assert_eq!(closed.resolution, Some(Resolution::Benign));
        assert!(closed.closed_at.is_some());
        let again = store.close_case(1, Resolution::Benign, "x", "dave").await;
        assert!(matches!(again, Err(StoreError::Conflict { .. })));
        let entries = store.audit_entries(5, 10).await.unwrap();
        let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["alert.ignore", "case.close"]);
        assert_eq!(verdict(&store).await, audit::Verdict::Intact { entries: 7 });
    }

    #[tokio::test]
    async fn verify_names_an_altered_entry() {
        let (_dir, store) = audited_store().await;
        tamper(
            &store,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4",
        )
        .await;
        assert_eq!(verdict(&store).await, audit::Verdict::Altered { seq: 4 });
    }

    #[tokio::test]
    async fn verify_names_an_entry_whose_state_was_edited() {
        let (_dir, store) = audited_store().await;
        tamper(
            &store,
            "UPDATE audit_log SET after = replace(after, '\"two\"', '\"edited\"') WHERE seq = 4",
        )
        .await;
        assert_eq!(verdict(&store).await, audit::Verdict::Altered { seq: 4 });
    }

    #[tokio::test]
    async fn verify_names_a_removed_entry() {
        let (_dir, store) = audited_store().await;
        tamper(&store, "DELETE FROM audit_log WHERE seq = 3").await;
        assert_eq!(verdict(&store).await, audit::Verdict::Removed { seq: 3 });
    }

    #[tokio::test]
    async fn verify_names_reordered_entries() {
        let (_dir, store) = audited_store().await;
        tamper(&store, "UPDATE audit_log SET seq = -1 WHERE seq = 3").await;
        tamper(&store, "UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
        tamper(&store, "UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
        assert_eq!(verdict(&store).await, audit::Verdict::Reordered { seq: 3 });
    }
}
