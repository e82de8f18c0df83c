//! The JSON the cases API speaks: its resources, query parameters and request bodies,
//! each with an OpenAPI schema derived from the type.
//!
//! The resources mirror the case store's records rather than exposing them, so the API
//! can keep its shape while the store changes, and so every field is documented in the
//! OpenAPI document.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kastell_core::store::{self, ActionRecord, AlertRecord, CaseRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Sigma's rule levels, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl From<kastell_core::Level> for Level {
    fn from(level: kastell_core::Level) -> Self {
        use kastell_core::Level as Core;
        match level {
            Core::Informational => Level::Informational,
            Core::Low => Level::Low,
            Core::Medium => Level::Medium,
            Core::High => Level::High,
            Core::Critical => Level::Critical,
        }
    }
}

impl From<Level> for kastell_core::Level {
    fn from(level: Level) -> Self {
        use kastell_core::Level as Core;
        match level {
            Level::Informational => Core::Informational,
            Level::Low => Core::Low,
            Level::Medium => Core::Medium,
            Level::High => Core::High,
            Level::Critical => Core::Critical,
        }
    }
}

/// Where a case is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Open,
    InProgress,
    Closed,
}

impl From<store::CaseStatus> for CaseStatus {
    fn from(status: store::CaseStatus) -> Self {
        match status {
            store::CaseStatus::Open => CaseStatus::Open,
            store::CaseStatus::InProgress => CaseStatus::InProgress,
            store::CaseStatus::Closed => CaseStatus::Closed,
        }
    }
}

impl From<CaseStatus> for store::CaseStatus {
    fn from(status: CaseStatus) -> Self {
        match status {
            CaseStatus::Open => store::CaseStatus::Open,
            CaseStatus::InProgress => store::CaseStatus::InProgress,
            CaseStatus::Closed => store::CaseStatus::Closed,
        }
    }
}

/// Traffic Light Protocol 2.0 levels, least to most restricted (also used for PAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Tlp {
    #[serde(rename = "clear")]
    Clear,
    #[serde(rename = "green")]
    Green,
    #[serde(rename = "amber")]
    Amber,
    #[serde(rename = "amber+strict")]
    AmberStrict,
    #[serde(rename = "red")]
    Red,
}

impl From<store::Tlp> for Tlp {
    fn from(tlp: store::Tlp) -> Self {
        match tlp {
            store::Tlp::Clear => Tlp::Clear,
            store::Tlp::Green => Tlp::Green,
            store::Tlp::Amber => Tlp::Amber,
            store::Tlp::AmberStrict => Tlp::AmberStrict,
            store::Tlp::Red => Tlp::Red,
        }
    }
}

impl From<Tlp> for store::Tlp {
    fn from(tlp: Tlp) -> Self {
        match tlp {
            Tlp::Clear => store::Tlp::Clear,
            Tlp::Green => store::Tlp::Green,
            Tlp::Amber => store::Tlp::Amber,
            Tlp::AmberStrict => store::Tlp::AmberStrict,
            Tlp::Red => store::Tlp::Red,
        }
    }
}

/// How a closed case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    TruePositive,
    FalsePositive,
    Benign,
    Duplicate,
}

impl From<store::Resolution> for Resolution {
    fn from(resolution: store::Resolution) -> Self {
        match resolution {
            store::Resolution::TruePositive => Resolution::TruePositive,
            store::Resolution::FalsePositive => Resolution::FalsePositive,
            store::Resolution::Benign => Resolution::Benign,
            store::Resolution::Duplicate => Resolution::Duplicate,
        }
    }
}

impl From<Resolution> for store::Resolution {
    fn from(resolution: Resolution) -> Self {
        match resolution {
            Resolution::TruePositive => store::Resolution::TruePositive,
            Resolution::FalsePositive => store::Resolution::FalsePositive,
            Resolution::Benign => store::Resolution::Benign,
            Resolution::Duplicate => store::Resolution::Duplicate,
        }
    }
}

/// Where an alert is in its triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    New,
    Acknowledged,
    Ignored,
    /// Made into a case of its own (`POST /api/v1/alerts/{id}/promote`).
    Promoted,
    /// Moved into an existing case (`POST /api/v1/alerts/{id}/merge`).
    Merged,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::New => "new",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Ignored => "ignored",
            AlertStatus::Promoted => "promoted",
            AlertStatus::Merged => "merged",
        }
    }
}

/// The lifecycle of a response action: `pending` waits for a person, `approved` is about
/// to run, the others are final (`expired`: nobody decided within its approval window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Pending,
    Approved,
    Rejected,
    Succeeded,
    Failed,
    Expired,
}

impl From<store::ActionStatus> for ActionStatus {
    fn from(status: store::ActionStatus) -> Self {
        match status {
            store::ActionStatus::Pending => ActionStatus::Pending,
            store::ActionStatus::Approved => ActionStatus::Approved,
            store::ActionStatus::Rejected => ActionStatus::Rejected,
            store::ActionStatus::Succeeded => ActionStatus::Succeeded,
            store::ActionStatus::Failed => ActionStatus::Failed,
            store::ActionStatus::Expired => ActionStatus::Expired,
        }
    }
}

impl From<ActionStatus> for store::ActionStatus {
    fn from(status: ActionStatus) -> Self {
        match status {
            ActionStatus::Pending => store::ActionStatus::Pending,
            ActionStatus::Approved => store::ActionStatus::Approved,
            ActionStatus::Rejected => store::ActionStatus::Rejected,
            ActionStatus::Succeeded => store::ActionStatus::Succeeded,
            ActionStatus::Failed => store::ActionStatus::Failed,
            ActionStatus::Expired => store::ActionStatus::Expired,
        }
    }
}

/// Where a rule came from: the DetectionRule resource and, when known, its file and git
/// commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleSource {
    /// `namespace/name` of the DetectionRule resource.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The rule that raised an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub level: Level,
    pub tags: Vec<String>,
    /// Kept on every alert: the Detection Rule License requires it for SigmaHQ rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RuleSource>,
}

/// An observable of an alert's event that equals a threat-intel indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntelMatch {
    /// The value as seen on the event.
    pub observable: String,
    /// The observable's type: ip, domain, url, md5, sha1, sha256, sha512, email, filename.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event field the value was read from.
    pub field: String,
    /// The IntelFeed resource holding the indicator.
    pub feed: String,
    /// The indicator as the feed wrote it.
    pub indicator: String,
    /// MISP event uuid or STIX object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub tags: Vec<String>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// Stable id: the same rule on the same event always has the same id.
    pub id: String,
    /// The case the alert belongs to; absent only while the stage is grouping it.
    pub case_id: Option<i64>,
    /// Triage status: `new`, `acknowledged`, `ignored`, `promoted` or `merged`.
    pub status: String,
    /// Why it was ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Who acknowledged or ignored it, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triaged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triaged_at: Option<DateTime<Utc>>,
    pub rule: Rule,
    /// When the matching event happened.
    pub timestamp: DateTime<Utc>,
    /// When the rule fired.
    pub detected_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The matched events, ECS-shaped JSON objects.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Group-by values of a correlation rule.
    pub group: BTreeMap<String, String>,
    pub intel: Vec<IntelMatch>,
}

impl From<kastell_core::RuleRef> for Rule {
    fn from(rule: kastell_core::RuleRef) -> Self {
        Rule {
            id: rule.id,
            title: rule.title,
            level: rule.level.into(),
            tags: rule.tags,
            author: rule.author,
            source: rule.source.map(|s| RuleSource {
                resource: s.resource,
                path: s.path,
                commit: s.commit,
            }),
        }
    }
}

impl From<kastell_core::IntelMatch> for IntelMatch {
    fn from(m: kastell_core::IntelMatch) -> Self {
        IntelMatch {
            observable: m.observable,
            kind: m.kind.as_str().to_owned(),
            field: m.field,
            feed: m.feed,
            indicator: m.indicator,
            reference: m.reference,
            context: m.context,
            tags: m.tags,
        }
    }
}

impl From<AlertRecord> for Alert {
    fn from(record: AlertRecord) -> Self {
        let alert = record.alert;
        Alert {
            id: record.id,
            case_id: record.case_id,
            status: record.status,
            status_reason: record.status_reason,
            triaged_by: record.triaged_by,
            triaged_at: record.triaged_at,
            rule: alert.rule.into(),
            timestamp: alert.timestamp,
            detected_at: alert.detected_at,
            sensor: alert.sensor,
            host: alert.host,
            events: alert.events.into_iter().map(|e| e.into_value()).collect(),
            group: alert.group,
            intel: alert.intel.into_iter().map(Into::into).collect(),
        }
    }
}

/// An [`Alert`] as answered in a [`CaseDetail`], its events copied from the stored body
/// as they are: a case's events are most of its answer, and parsing them into JSON trees
/// only to serialise them again took most of a case read's time. Serialises exactly as
/// [`Alert`] does (a test compares the two), so the OpenAPI schema is `Alert`'s.
#[derive(Debug, Serialize)]
pub struct AlertAnswer {
    id: String,
    case_id: Option<i64>,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    triaged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    triaged_at: Option<DateTime<Utc>>,
    rule: Rule,
    timestamp: DateTime<Utc>,
    detected_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    events: Vec<Box<serde_json::value::RawValue>>,
    group: BTreeMap<String, String>,
    intel: Vec<IntelMatch>,
}

/// The stored body of an alert with its events left unparsed (`E` is
/// `Vec<Box<RawValue>>`), or skipped (`IgnoredAny`).
#[derive(Deserialize)]
struct LazyAlertBody<E> {
    rule: kastell_core::RuleRef,
    timestamp: DateTime<Utc>,
    detected_at: DateTime<Utc>,
    #[serde(default)]
    sensor: Option<String>,
    #[serde(default)]
    host: Option<String>,
    events: E,
    #[serde(default)]
    group: BTreeMap<String, String>,
    #[serde(default)]
    intel: Vec<kastell_core::IntelMatch>,
}

fn lazy_body<E: serde::de::DeserializeOwned>(
    stored: &store::StoredAlert,
) -> Result<LazyAlertBody<E>, store::StoreError> {
    serde_json::from_str(&stored.body).map_err(|e| store::StoreError::Corrupt {
        what: "alert",
        reason: e.to_string(),
    })
}

impl AlertAnswer {
    /// The alert as answered, with its events, or with `events` empty when `with_events`
    /// is false (`GET /api/v1/cases/{id}?events=false`).
    ///
    /// # Errors
    /// [`store::StoreError::Corrupt`] when the stored body is not an alert.
    pub fn from_stored(
        stored: store::StoredAlert,
        with_events: bool,
    ) -> Result<Self, store::StoreError> {
        if with_events {
            let mut body: LazyAlertBody<Vec<Box<serde_json::value::RawValue>>> =
                lazy_body(&stored)?;
            let events = std::mem::take(&mut body.events);
            Ok(AlertAnswer::assemble(stored, body, events))
        } else {
            let body: LazyAlertBody<serde::de::IgnoredAny> = lazy_body(&stored)?;
            Ok(AlertAnswer::assemble(stored, body, Vec::new()))
        }
    }

    fn assemble<E>(
        stored: store::StoredAlert,
        body: LazyAlertBody<E>,
        events: Vec<Box<serde_json::value::RawValue>>,
    ) -> Self {
        AlertAnswer {
            id: stored.id,
            case_id: stored.case_id,
            status: stored.status,
            status_reason: stored.status_reason,
            triaged_by: stored.triaged_by,
            triaged_at: stored.triaged_at,
            rule: body.rule.into(),
            timestamp: body.timestamp,
            detected_at: body.detected_at,
            sensor: body.sensor,
            host: body.host,
            events,
            group: body.group,
            intel: body.intel.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<store::StoredAlert> for AlertAnswer {
    type Error = store::StoreError;

    fn try_from(stored: store::StoredAlert) -> Result<Self, Self::Error> {
        AlertAnswer::from_stored(stored, true)
    }
}

/// The answer of `GET /api/v1/cases/{id}`: a [`CaseDetail`] built from the stored
/// alert bodies (see [`AlertAnswer`]).
#[derive(Debug, Serialize)]
pub struct CaseDetailAnswer {
    #[serde(flatten)]
    pub case: Case,
    pub alerts: Vec<AlertAnswer>,
    pub actions: Vec<Action>,
}

/// A case: the alerts of one rule on one host within the grouping window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Case {
    pub id: i64,
    pub title: String,
    /// The highest level among the case's alerts.
    pub severity: Level,
    pub status: CaseStatus,
    /// `rule-id|host` (`-` for no host): alerts with the same key may share the case.
    pub group_key: String,
    pub rule_id: String,
    pub host: Option<String>,
    /// Event time of the case's earliest alert.
    pub first_seen: DateTime<Utc>,
    /// Event time of the case's latest alert.
    pub last_seen: DateTime<Utc>,
    pub alert_count: i64,
    /// Who may read the case: a caller cleared below this TLP does not see it.
    pub tlp: Tlp,
    /// How far its observables may be acted upon (Permissible Actions Protocol).
    pub pap: Tlp,
    pub description: String,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    /// How the case ended, once closed.
    pub resolution: Option<Resolution>,
    pub summary: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CaseRecord> for Case {
    fn from(case: CaseRecord) -> Self {
        Case {
            id: case.id,
            title: case.title,
            severity: case.severity.into(),
            status: case.status.into(),
            group_key: case.group_key,
            rule_id: case.rule_id,
            host: case.host,
            first_seen: case.first_seen,
            last_seen: case.last_seen,
            alert_count: case.alert_count,
            tlp: case.tlp.into(),
            pap: case.pap.into(),
            description: case.description,
            assignee: case.assignee,
            tags: case.tags,
            resolution: case.resolution.map(Into::into),
            summary: case.summary,
            closed_at: case.closed_at,
            created_at: case.created_at,
            updated_at: case.updated_at,
        }
    }
}

/// A case with its alerts (the earliest 1000 by event time; page through the rest with
/// `GET /api/v1/alerts?case=ID`) and all its response actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: Case,
    pub alerts: Vec<Alert>,
    pub actions: Vec<Action>,
}

/// A response action: one playbook step run for one alert of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub id: i64,
    pub case_id: i64,
    /// The alert that triggered the playbook.
    pub alert_id: String,
    /// `namespace/name` of the Playbook resource.
    pub playbook: String,
    pub step: String,
    /// The runner that executes the step (webhook, notify, ...).
    pub step_type: String,
    pub approval_required: bool,
    pub status: ActionStatus,
    /// The step's parameters as rendered for this alert.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Why it was rejected, when it was.
    pub reason: Option<String>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// What the runner reported, once finished.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ActionRecord> for Action {
    fn from(action: ActionRecord) -> Self {
        Action {
            id: action.id,
            case_id: action.case_id,
            alert_id: action.alert_id,
            playbook: action.playbook,
            step: action.step,
            step_type: action.step_type,
            approval_required: action.approval_required,
            status: action.status.into(),
            params: action.params,
            reason: action.reason,
            decided_by: action.decided_by,
            result: action.result,
            created_at: action.created_at,
            updated_at: action.updated_at,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The page size asked for (or the default).
    pub limit: u32,
    /// How many items were skipped.
    pub offset: u32,
}

/// Filters of `GET /api/v1/alerts`; times are RFC 3339 (write `+` as `%2B`, or use `Z`).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only alerts of this level or a more severe one.
    pub level: Option<Level>,
    /// Only alerts in this triage status.
    pub status: Option<AlertStatus>,
    /// Only alerts of this rule id.
    pub rule: Option<String>,
    /// Only alerts of this case.
    pub case: Option<i64>,
    /// Only alerts with an observable (of their events, intel matches, or added) of
    /// exactly this value.
    pub observable: Option<String>,
    /// Only alerts whose event time is at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only alerts whose event time is before this time.
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u32>,
}

/// Filters of `GET /api/v1/cases`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CaseQuery {
    /// Only cases in this status.
    pub status: Option<CaseStatus>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u32>,
}

/// Options of `GET /api/v1/cases/{id}`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CaseDetailQuery {
    /// Whether each alert carries its events (default `true`). With `false` every
    /// alert's `events` is empty, which makes the answer a fraction of the size for a
    /// client that lists the alerts (the web page shows no event on a case); an alert's
    /// events are then read with `GET /api/v1/alerts/{id}`.
    pub events: Option<bool>,
}

/// Filters of `GET /api/v1/actions`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActionQuery {
    /// Only actions in this status (`pending` lists what waits for approval).
    pub status: Option<ActionStatus>,
    /// Only actions of this case.
    pub case: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u32>,
}

/// Body of `POST /api/v1/actions/{id}/approve`; the body itself is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// A note for the log.
    pub comment: Option<String>,
}

/// Body of `POST /api/v1/actions/{id}/reject`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why the action must not run; required and not blank.
    pub reason: String,
}

/// Body of `PATCH /api/v1/cases/{id}`: the fields to change, all optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseUpdateBody {
    /// Not blank, at most 512 characters.
    pub title: Option<String>,
    /// At most 4096 characters.
    pub description: Option<String>,
    pub severity: Option<Level>,
    /// Needs the `manage` permission, and at most the caller's own ceiling.
    pub tlp: Option<Tlp>,
    /// Needs the `manage` permission.
    pub pap: Option<Tlp>,
    /// `open` or `in_progress`; close with `POST /api/v1/cases/{id}/close`.
    pub status: Option<CaseStatus>,
    /// Needs the `manage` permission; an empty string unassigns.
    pub assignee: Option<String>,
    /// Replaces the tags; at most 100, duplicates dropped.
    pub tags: Option<Vec<String>>,
}

/// Body of `POST /api/v1/alerts/{id}/ignore`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreBody {
    /// Why the alert needs no work; required and not blank.
    pub reason: String,
}

/// Body of `POST /api/v1/cases/{id}/close`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    pub resolution: Resolution,
    /// What was found and done; required and not blank, at most 4096 characters.
    pub summary: String,
}

/// One entry of the audit log; see docs/cases-api.md ("Audit log") for how its hash is
/// computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339 UTC, as hashed.
    pub at: String,
    /// `apikey:<name>`, `oidc:<subject>`, `cli:<user>` or `system:kastell`.
    pub actor: String,
    /// `alert.create`, `alert.acknowledge`, `alert.ignore`, `alert.promote`,
    /// `alert.merge`, `case.open`, `case.create`, `case.attach_alert`, `case.update`,
    /// `case.close`, `case.comment`, `observable.create`, `observable.update`,
    /// `task.create`, `task.update`, `action.create`, `action.decide`, `action.finish`,
    /// `apikey.create`.
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    /// The object's state before the change (absent for a creation or once erased).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub before_digest: Option<String>,
    pub after_digest: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<kastell_core::AuditEntry> for AuditEntry {
    fn from(e: kastell_core::AuditEntry) -> Self {
        AuditEntry {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object_kind: e.object_kind,
            object_id: e.object_id,
            before: e.before,
            after: e.after,
            before_digest: e.before_digest,
            after_digest: e.after_digest,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

/// Paging of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries after this sequence number (default 0: from the start).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Answer of the health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the case store answers).
    pub status: String,
}

/// Body of `POST /api/v1/cases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseCreateBody {
    /// Not blank, at most 512 characters.
    pub title: String,
    /// At most 4096 characters.
    #[serde(default)]
    pub description: String,
    /// Default `medium`.
    pub severity: Option<Level>,
    /// Default `amber`, or the caller's ceiling when lower; at most that ceiling.
    pub tlp: Option<Tlp>,
    /// Default `amber`.
    pub pap: Option<Tlp>,
    /// At most 100, duplicates dropped.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Needs the `manage` permission.
    pub assignee: Option<String>,
}

/// Body of `POST /api/v1/alerts/{id}/promote`; the body itself is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// The new case's title; default: the alert's rule title, on its host.
    pub title: Option<String>,
}

/// Body of `POST /api/v1/alerts/{id}/merge`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The case the alert moves into.
    pub case_id: i64,
}

/// An intel match that enriches an observable: the indicator it equals and its feed.
pub type Enrichment = IntelMatch;

/// An observable of a case (or, through the TheHive endpoints, of an alert).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Observable {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// ip, domain, url, md5, sha1, sha256, sha512, email, filename, hostname, other...
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// An indicator of compromise.
    pub ioc: bool,
    /// Seen in the organisation's own systems.
    pub sighted: bool,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The intel matches, carried by the case's alerts, on this type and value.
    pub enrichment: Vec<Enrichment>,
}

impl From<store::ObservableRecord> for Observable {
    fn from(o: store::ObservableRecord) -> Self {
        Observable {
            id: o.id,
            case_id: o.case_id,
            alert_id: o.alert_id,
            kind: o.kind,
            value: o.value,
            ioc: o.ioc,
            sighted: o.sighted,
            tags: o.tags,
            created_by: o.created_by,
            created_at: o.created_at,
            updated_at: o.updated_at,
            enrichment: o.enrichment.into_iter().map(intel_match).collect(),
        }
    }
}

pub(crate) fn intel_match(m: kastell_core::IntelMatch) -> IntelMatch {
    IntelMatch {
        observable: m.observable,
        kind: m.kind.as_str().to_owned(),
        field: m.field,
        feed: m.feed,
        indicator: m.indicator,
        reference: m.reference,
        context: m.context,
        tags: m.tags,
    }
}

/// Body of `POST /api/v1/cases/{id}/observables`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservableBody {
    /// Lower-case letters, digits, `-` and `_`, at most 64 characters.
    #[serde(rename = "type")]
    pub kind: String,
    /// Not blank, at most 4096 characters.
    pub value: String,
    #[serde(default)]
    pub ioc: bool,
    #[serde(default)]
    pub sighted: bool,
    /// Joined with the tags the observable has.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Done,
}

impl From<store::TaskStatus> for TaskStatus {
    fn from(status: store::TaskStatus) -> Self {
        match status {
            store::TaskStatus::Open => TaskStatus::Open,
            store::TaskStatus::InProgress => TaskStatus::InProgress,
            store::TaskStatus::Done => TaskStatus::Done,
        }
    }
}

impl From<TaskStatus> for store::TaskStatus {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Open => store::TaskStatus::Open,
            TaskStatus::InProgress => store::TaskStatus::InProgress,
            TaskStatus::Done => store::TaskStatus::Done,
        }
    }
}

/// A piece of work on a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: i64,
    pub case_id: i64,
    pub title: String,
    pub assignee: Option<String>,
    pub status: TaskStatus,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::TaskRecord> for Task {
    fn from(t: store::TaskRecord) -> Self {
        Task {
            id: t.id,
            case_id: t.case_id,
            title: t.title,
            assignee: t.assignee,
            status: t.status.into(),
            created_by: t.created_by,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Body of `POST /api/v1/cases/{id}/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// Not blank, at most 512 characters.
    pub title: String,
    pub assignee: Option<String>,
}

/// Body of `PATCH /api/v1/cases/{id}/tasks/{task_id}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdateBody {
    pub title: Option<String>,
    /// An empty string unassigns.
    pub assignee: Option<String>,
    pub status: Option<TaskStatus>,
}

/// One line of a case's timeline; `kind` and the keys of `details` are listed in
/// docs/cases-api.md ("Timeline").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who wrote the comment or made the change.
    pub actor: String,
    /// `comment`, `created`, `updated`, `closed`, `alert_attached`, `alert_merged`,
    /// `alert_moved_out`, `observable_added`, `observable_updated`, `task_created`,
    /// `task_updated`, `action_approved`, `action_rejected`, `action_executed`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<store::TimelineEntry> for TimelineEntry {
    fn from(e: store::TimelineEntry) -> Self {
        TimelineEntry {
            id: e.id,
            at: e.at,
            actor: e.actor,
            kind: e.kind,
            details: e.details,
        }
    }
}

/// Paging of `GET /api/v1/cases/{id}/timeline`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Only entries after this entry id (default 0: from the start).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Body of `POST /api/v1/cases/{id}/comments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// Not blank, at most 4096 characters.
    pub text: String,
}

/// Range of `GET /api/v1/figures`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FiguresQuery {
    /// Start of the range (RFC 3339, included).
    pub from: DateTime<Utc>,
    /// End of the range (RFC 3339, excluded).
    pub to: DateTime<Utc>,
}

/// The figures of one severity, times in seconds (absent when nothing was measured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeverityFigures {
    pub severity: Level,
    /// Alerts detected in the range.
    pub alerts: i64,
    /// Mean time from the event to the alert.
    pub mean_time_to_detect: Option<f64>,
    /// Alerts of the range someone has acknowledged, ignored, promoted or merged.
    pub acknowledged: i64,
    /// Mean time from the alert to its first acknowledgement.
    pub mean_time_to_acknowledge: Option<f64>,
    /// Cases closed in the range.
    pub resolved: i64,
    /// Mean time from a case's creation to its closing.
    pub mean_time_to_resolve: Option<f64>,
}

/// Answer of `GET /api/v1/figures`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// One entry per severity that had alerts or closed cases, least severe first.
    pub by_severity: Vec<SeverityFigures>,
}

impl From<store::SeverityFigures> for SeverityFigures {
    fn from(f: store::SeverityFigures) -> Self {
        SeverityFigures {
            severity: f.severity.into(),
            alerts: f.alerts,
            mean_time_to_detect: f.mean_time_to_detect,
            acknowledged: f.acknowledged,
            mean_time_to_acknowledge: f.mean_time_to_acknowledge,
            resolved: f.resolved,
            mean_time_to_resolve: f.mean_time_to_resolve,
        }
    }
}

/// Query of `GET /api/v1/search`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The text to find (2 to 256 characters).
    pub q: String,
    /// Most hits of each kind, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Answer of `GET /api/v1/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    /// Cases whose title or description contains the text.
    pub cases: Vec<Case>,
    /// Case observables whose value contains the text.
    pub observables: Vec<Observable>,
}
