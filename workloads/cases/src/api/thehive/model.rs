//! TheHive 5's JSON: its field names (`_id`, `dataType`, `sourceRef`…), numeric
//! severities, TLP and PAP, and dates in epoch milliseconds; and the mapping between
//! them and Kastell's records.

use chrono::{DateTime, TimeZone, Utc};
use kastell_core::store::{
    AlertRecord, CaseRecord, CaseStatus, ObservableRecord, Resolution, TaskRecord, TaskStatus,
    TimelineEntry, Tlp,
};
use kastell_core::Level;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::api::error::ApiError;

/// Epoch milliseconds, as TheHive writes every date.
pub fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub fn from_millis(field: &str, ms: i64) -> Result<DateTime<Utc>, ApiError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| ApiError::invalid_body(format!("{field} {ms} is not a valid date")))
}

/// TheHive's severities: 1 low, 2 medium, 3 high, 4 critical.
pub fn severity(level: Level) -> i64 {
    match level {
        Level::Informational | Level::Low => 1,
        Level::Medium => 2,
        Level::High => 3,
        Level::Critical => 4,
    }
}

pub fn severity_label(level: Level) -> &'static str {
    match severity(level) {
        1 => "LOW",
        2 => "MEDIUM",
        3 => "HIGH",
        _ => "CRITICAL",
    }
}

pub fn level(field: &str, severity: i64) -> Result<Level, ApiError> {
    match severity {
        1 => Ok(Level::Low),
        2 => Ok(Level::Medium),
        3 => Ok(Level::High),
        4 => Ok(Level::Critical),
        other => Err(ApiError::invalid_body(format!(
            "{field} must be 1 (low) to 4 (critical), got {other}"
        ))),
    }
}

pub fn tlp(field: &str, rank: i64) -> Result<Tlp, ApiError> {
    Tlp::from_rank(rank).ok_or_else(|| {
        ApiError::invalid_body(format!("{field} must be 0 (clear) to 4 (red), got {rank}"))
    })
}

pub fn tlp_label(tlp: Tlp) -> String {
    tlp.as_str().to_ascii_uppercase()
}

/// TheHive's case status for a Kastell case: `New`, `InProgress`, or the resolution of
/// a closed one.
pub fn case_status(case: &CaseRecord) -> (&'static str, &'static str) {
    match (case.status, case.resolution) {
        (CaseStatus::Open, _) => ("New", "New"),
        (CaseStatus::InProgress, _) => ("InProgress", "InProgress"),
        (CaseStatus::Closed, Some(Resolution::TruePositive)) => ("TruePositive", "Closed"),
        (CaseStatus::Closed, Some(Resolution::FalsePositive)) => ("FalsePositive", "Closed"),
        (CaseStatus::Closed, Some(Resolution::Duplicate)) => ("Duplicated", "Closed"),
        (CaseStatus::Closed, _) => ("Other", "Closed"),
    }
}

/// What a TheHive case status asks of a Kastell case.
pub enum StatusChange {
    Open(CaseStatus),
    Close(Resolution),
}

pub fn status_change(status: &str) -> Result<StatusChange, ApiError> {
    match status {
        "New" => Ok(StatusChange::Open(CaseStatus::Open)),
        "InProgress" => Ok(StatusChange::Open(CaseStatus::InProgress)),
        "TruePositive" => Ok(StatusChange::Close(Resolution::TruePositive)),
        "FalsePositive" => Ok(StatusChange::Close(Resolution::FalsePositive)),
        "Duplicated" => Ok(StatusChange::Close(Resolution::Duplicate)),
        "Indeterminate" | "Other" => Ok(StatusChange::Close(Resolution::Benign)),
        other => Err(ApiError::invalid_body(format!(
            "unknown case status {other:?}: expected New, InProgress, TruePositive, \
             FalsePositive, Indeterminate, Other or Duplicated"
        ))),
    }
}

/// The id TheHive clients see: `~` and the number, as TheHive's own ids look.
pub fn case_ref(id: i64) -> String {
    format!("~{id}")
}

/// A case id as a client sends it: `~42`, `42`.
pub fn parse_case_ref(raw: &str) -> Result<i64, ApiError> {
    raw.strip_prefix('~')
        .unwrap_or(raw)
        .parse()
        .map_err(|_| ApiError::not_found("case", raw))
}

/// `TheHive case` as TheHive 5 answers it.
pub fn case_json(case: &CaseRecord, created_by: &str) -> Value {
    let (status, stage) = case_status(case);
    let time_to_detect = (case.created_at - case.first_seen)
        .num_milliseconds()
        .max(0);
    let mut out = json!({
        "_id": case_ref(case.id),
        "_type": "Case",
        "_createdBy": created_by,
        "_createdAt": millis(case.created_at),
        "_updatedAt": millis(case.updated_at),
        "number": case.id,
        "title": case.title,
        "description": case.description,
        "severity": severity(case.severity),
        "severityLabel": severity_label(case.severity),
        "startDate": millis(case.first_seen),
        "tags": case.tags,
        "flag": false,
        "tlp": case.tlp.rank(),
        "tlpLabel": tlp_label(case.tlp),
        "pap": case.pap.rank(),
        "papLabel": tlp_label(case.pap),
        "status": status,
        "stage": stage,
        "access": {},
        "customFields": [],
        "userPermissions": [],
        "extraData": {},
        "newDate": millis(case.created_at),
        "timeToDetect": time_to_detect,
    });
    // The fields TheHive leaves out when they have no value.
    let mut fields = serde_json::Map::new();
    if let Some(assignee) = &case.assignee {
        fields.insert("assignee".into(), json!(assignee));
    }
    if let Some(summary) = &case.summary {
        fields.insert("summary".into(), json!(summary));
    }
    if let Some(closed) = case.closed_at {
        fields.insert("endDate".into(), json!(millis(closed)));
        fields.insert("closedDate".into(), json!(millis(closed)));
        let resolve = (closed - case.created_at).num_milliseconds().max(0);
        fields.insert("timeToResolve".into(), json!(resolve));
    }
    if let Value::Object(object) = &mut out {
        object.extend(fields);
    }
    out
}

/// The TheHive fields a TheHive client gave an alert, kept on its event under
/// `thehive`; absent for the pipeline's own alerts.
pub const EVENT_KEY: &str = "thehive";

/// The id of the alert TheHive's unique `(type, source, sourceRef)` names: the same
/// triple always gives the same id, so a retried create finds the stored alert.
pub fn alert_id(kind: &str, source: &str, source_ref: &str) -> String {
    let mut hasher = Sha256::new();
    for part in ["thehive", kind, source, source_ref] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// TheHive's alert status for a Kastell alert.
pub fn alert_status(status: &str) -> (&'static str, &'static str) {
    match status {
        "acknowledged" => ("InProgress", "InProgress"),
        "ignored" => ("Ignored", "Closed"),
        "promoted" | "merged" => ("Imported", "Imported"),
        _ => ("New", "New"),
    }
}

/// `TheHive alert` as TheHive 5 answers it. A pipeline alert is shown as type
/// `kastell`, its rule's resource (or sensor) as source and its id as sourceRef.
pub fn alert_json(record: &AlertRecord, observable_count: usize) -> Value {
    let alert = &record.alert;
    let given = alert
        .events
        .first()
        .and_then(|event| event.get(EVENT_KEY))
        .and_then(Value::as_object);
    let text = |key: &str| given.and_then(|g| g.get(key)).and_then(Value::as_str);
    let number = |key: &str| given.and_then(|g| g.get(key)).and_then(Value::as_i64);
    let source = text("source").map(str::to_owned).unwrap_or_else(|| {
        alert
            .rule
            .source
            .as_ref()
            .map(|s| s.resource.clone())
            .or_else(|| alert.sensor.clone())
            .unwrap_or_else(|| "kastell".to_owned())
    });
    let tlp_rank = number("tlp").unwrap_or(Tlp::Amber.rank());
    let pap_rank = number("pap").unwrap_or(Tlp::Amber.rank());
    let label = |rank: i64| Tlp::from_rank(rank).map(tlp_label).unwrap_or_default();
    let (status, stage) = alert_status(&record.status);
    let detect = (alert.detected_at - alert.timestamp)
        .num_milliseconds()
        .max(0);
    let mut out = json!({
        "_id": record.id,
        "_type": "Alert",
        "_createdBy": text("createdBy").unwrap_or(kastell_core::audit::SYSTEM_ACTOR),
        "_createdAt": millis(alert.detected_at),
        "type": text("type").unwrap_or("kastell"),
        "source": source,
        "sourceRef": text("sourceRef").unwrap_or(&record.id),
        "title": alert.rule.title,
        "description": text("description").unwrap_or(""),
        "severity": severity(alert.rule.level),
        "severityLabel": severity_label(alert.rule.level),
        "date": millis(alert.timestamp),
        "tags": alert.rule.tags,
        "tlp": tlp_rank,
        "tlpLabel": label(tlp_rank),
        "pap": pap_rank,
        "papLabel": label(pap_rank),
        "follow": true,
        "customFields": [],
        "observableCount": observable_count,
        "status": status,
        "stage": stage,
        "extraData": {},
        "newDate": millis(alert.detected_at),
        "timeToDetect": detect,
    });
    // The fields TheHive leaves out when they have no value.
    let mut fields = serde_json::Map::new();
    if let Some(case_id) = record.case_id {
        fields.insert("caseId".into(), json!(case_ref(case_id)));
    }
    if let Some(link) = text("externalLink") {
        fields.insert("externalLink".into(), json!(link));
    }
    if let Some(at) = record.triaged_at {
        fields.insert("_updatedAt".into(), json!(millis(at)));
        if stage == "Imported" {
            fields.insert("importedDate".into(), json!(millis(at)));
        }
    }
    if let Value::Object(object) = &mut out {
        object.extend(fields);
    }
    out
}

/// TheHive's `dataType` for a Kastell observable type: TheHive has one `hash` and
/// calls e-mail addresses `mail`.
pub fn data_type(kind: &str) -> &str {
    match kind {
        "md5" | "sha1" | "sha256" | "sha512" => "hash",
        "email" => "mail",
        other => other,
    }
}

/// The Kastell type for a TheHive `dataType` and value: a `hash` is named by its length,
/// so that it meets the intel matches of the same hash.
pub fn observable_kind(data_type: &str, value: &str) -> String {
    match (data_type, value.len()) {
        ("hash", 32) => "md5".into(),
        ("hash", 40) => "sha1".into(),
        ("hash", 64) => "sha256".into(),
        ("hash", 128) => "sha512".into(),
        ("mail", _) => "email".into(),
        (other, _) => other.into(),
    }
}

/// `TheHive observable` as TheHive 5 answers it; the intel matches that enrich it are
/// its `reports`, under the analyzer name `kastell-intel`.
pub fn observable_json(observable: &ObservableRecord) -> Value {
    let mut reports = json!({});
    if !observable.enrichment.is_empty() {
        let matches: Vec<Value> = observable
            .enrichment
            .iter()
            .map(|m| json!({"feed": m.feed, "indicator": m.indicator, "reference": m.reference, "context": m.context, "tags": m.tags}))
            .collect();
        reports = json!({"kastell-intel": {"taxonomies": [{"level": "malicious", "namespace": "kastell", "predicate": "intel", "value": matches.len()}], "matches": matches}});
    }
    json!({
        "_id": format!("~{}", observable.id),
        "_type": "Observable",
        "_createdBy": observable.created_by,
        "_createdAt": millis(observable.created_at),
        "_updatedAt": millis(observable.updated_at),
        "dataType": data_type(&observable.kind),
        "data": observable.value,
        "startDate": millis(observable.created_at),
        "tlp": Tlp::Amber.rank(),
        "tlpLabel": tlp_label(Tlp::Amber),
        "pap": Tlp::Amber.rank(),
        "papLabel": tlp_label(Tlp::Amber),
        "ioc": observable.ioc,
        "sighted": observable.sighted,
        "tags": observable.tags,
        "reports": reports,
        "extraData": {},
        "ignoreSimilarity": false,
    })
}

/// TheHive's task status for a Kastell task.
pub fn task_status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Open => "Waiting",
        TaskStatus::InProgress => "InProgress",
        TaskStatus::Done => "Completed",
    }
}

pub fn task_status(name: &str) -> Result<TaskStatus, ApiError> {
    match name {
        "Waiting" => Ok(TaskStatus::Open),
        "InProgress" => Ok(TaskStatus::InProgress),
        "Completed" => Ok(TaskStatus::Done),
        other => Err(ApiError::invalid_body(format!(
            "unsupported task status {other:?}: expected Waiting, InProgress or Completed"
        ))),
    }
}

/// `TheHive task` as TheHive 5 answers it.
pub fn task_json(task: &TaskRecord) -> Value {
    let mut out = json!({
        "_id": format!("~{}", task.id),
        "_type": "Task",
        "_createdBy": task.created_by,
        "_createdAt": millis(task.created_at),
        "_updatedAt": millis(task.updated_at),
        "title": task.title,
        "group": "default",
        "description": "",
        "status": task_status_name(task.status),
        "flag": false,
        "order": 0,
        "mandatory": false,
        "extraData": {},
    });
    if let (Some(assignee), Some(fields)) = (&task.assignee, out.as_object_mut()) {
        fields.insert("assignee".into(), json!(assignee));
    }
    out
}

/// `TheHive comment` as TheHive 5 answers it (a Kastell timeline comment).
pub fn comment_json(entry: &TimelineEntry) -> Value {
    json!({
        "_id": format!("~{}", entry.id),
        "_type": "Comment",
        "createdBy": entry.actor,
        "createdAt": millis(entry.at),
        "message": entry.details["text"],
        "isEdited": false,
        "external": false,
        "extraData": {},
    })
}

/// Body of `POST /api/v1/case/{id}/comment`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputComment {
    pub message: String,
}

/// Body of `POST /api/v1/case/{id}/task`; fields not listed are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputTask {
    pub title: String,
    pub assignee: Option<String>,
    /// `Waiting` (default), `InProgress` or `Completed`.
    pub status: Option<String>,
}

/// TheHive's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TheHiveError {
    /// `BadRequest`, `AuthenticationError`, `AuthorizationError`, `NotFoundError`,
    /// `CreateError`, `InternalError`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// Body of `POST /api/v1/alert`; fields not listed are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputAlert {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub source_ref: String,
    pub title: String,
    pub description: String,
    /// 1 low … 4 critical (default 2).
    pub severity: Option<i64>,
    /// When it happened, epoch milliseconds (default now).
    pub date: Option<i64>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 0 clear … 4 red (default 2, amber).
    pub tlp: Option<i64>,
    pub pap: Option<i64>,
    pub external_link: Option<String>,
    #[serde(default)]
    pub observables: Vec<InputObservable>,
}

/// Body of `POST /api/v1/case/{id}/observable` and `/api/v1/alert/{id}/observable`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputObservable {
    pub data_type: String,
    /// One value, or several (one observable each).
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ioc: bool,
    #[serde(default)]
    pub sighted: bool,
}

impl InputObservable {
    pub fn values(&self) -> Result<Vec<String>, ApiError> {
        match &self.data {
            Value::String(value) => Ok(vec![value.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::invalid_body("data must be a string or a list of strings")
                    })
                })
                .collect(),
            _ => Err(ApiError::invalid_body(
                "data must be a string or a list of strings (attachments are not supported)",
            )),
        }
    }
}

/// Body of `POST /api/v1/case`, and of promoting an alert (where every field is
/// optional); fields not listed are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputCase {
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<i64>,
    pub tags: Option<Vec<String>>,
    pub tlp: Option<i64>,
    pub pap: Option<i64>,
    pub assignee: Option<String>,
}

/// Body of `PATCH /api/v1/case/{id}`; fields not listed are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputUpdateCase {
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<i64>,
    pub tags: Option<Vec<String>>,
    pub add_tags: Option<Vec<String>>,
    pub remove_tags: Option<Vec<String>>,
    pub tlp: Option<i64>,
    pub pap: Option<i64>,
    pub assignee: Option<String>,
    /// `New`, `InProgress`, or a closing status with `summary`.
    pub status: Option<String>,
    pub summary: Option<String>,
}

/// Body of `POST /api/v1/query`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryBody {
    /// The operations: `listCase` or `listAlert`, then any of `filter`, `sort`, `page`,
    /// and optionally `count` last.
    #[schema(value_type = Vec<Object>)]
    pub query: Vec<Value>,
    #[serde(default)]
    pub exclude_fields: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_triple_names_one_alert() {
        let a = alert_id("misp", "circl", "event-1");
        assert_eq!(a, alert_id("misp", "circl", "event-1"));
        assert_ne!(a, alert_id("misp", "circl", "event-2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(alert_id("ab", "c", "x"), alert_id("a", "bc", "x"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn hashes_are_typed_by_length_and_mail_is_email() {
        assert_eq!(observable_kind("hash", &"a".repeat(64)), "sha256");
        assert_eq!(observable_kind("hash", "abc"), "hash");
        assert_eq!(observable_kind("mail", "x@example.org"), "email");
        assert_eq!(data_type("sha1"), "hash");
        assert_eq!(data_type("email"), "mail");
        assert_eq!(data_type("ip"), "ip");
    }

    #[test]
    fn case_refs_take_the_tilde_or_not() {
        assert_eq!(parse_case_ref("~42").unwrap(), 42);
        assert_eq!(parse_case_ref("42").unwrap(), 42);
        assert!(parse_case_ref("~x").is_err());
        assert_eq!(case_ref(7), "~7");
    }
}
