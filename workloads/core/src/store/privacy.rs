//! Personal data in the case store (GDPR): what is held about one data subject, its
//! erasure on request, and the erasure of personal fields from cases closed longer than
//! the platform's retention period.
//!
//! Personal fields are the people's names and addresses the store keeps: a case's
//! assignee, its free-text description and closing summary; an alert's triager and
//! ignore reason, and inside its events every value under a key naming a user, account,
//! e-mail address or owner, every value shaped like an e-mail address and the raw log
//! text (`full_log`, `message`, `event.original`…); an action's decider, reason,
//! parameters and result; an observable's value when its type names a person (e-mail
//! address, user, account, owner) or it is shaped like an e-mail address, and who added
//! it; a task's title, assignee and creator; a timeline line's actor and the comment
//! text, descriptions, assignees and personal values its details repeat; the states the
//! audit log keeps of those objects. The audit
//! chain hashes digests of the states, not the states (see [`crate::audit`]), so blanking
//! a state keeps the chain verifiable. Each procedure is itself appended to the chain,
//! naming the objects it changed but never the subject, of which it keeps a digest.
//!
//! The procedures read and write through SQL both backends run (`$N` parameters, which
//! sqlx's SQLite driver accepts too), so one body, expanded by [`privacy_store!`] for
//! each store, serves both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    ActionRecord, AlertRecord, ApiKeyRecord, CaseRecord, ObservableRecord, PostgresStore,
    SqliteStore, StoreError, TaskRecord, TimelineEntry,
};
use crate::audit::{AuditEntry, Change};

/// What replaces an erased value.
pub const ERASED: &str = "[erased]";

/// The shortest subject accepted: a shorter one would match inside unrelated text and
/// erase far more than one person's data.
pub const MIN_SUBJECT_CHARS: usize = 3;

/// Everything the store holds that mentions one data subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectData {
    pub subject: String,
    pub cases: Vec<CaseRecord>,
    pub alerts: Vec<AlertRecord>,
    pub actions: Vec<ActionRecord>,
    /// Observables of cases and alerts whose value or creator names the subject.
    pub observables: Vec<ObservableRecord>,
    pub tasks: Vec<TaskRecord>,
    /// Timeline lines (comments and recorded events) by or about the subject.
    pub timeline: Vec<TimelineEntry>,
    /// API keys held by the subject (the argon2 hash is never shown).
    pub api_keys: Vec<ApiKeyRecord>,
    /// Audit entries the subject made or whose states mention them.
    pub audit_entries: Vec<AuditEntry>,
}

/// What an erasure changed: ids of the objects whose personal fields it erased, and the
/// audit entries whose states it blanked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erasure {
    pub cases: Vec<i64>,
    pub alerts: Vec<String>,
    pub actions: Vec<i64>,
    /// Observables whose value or creator was erased; one whose erased value equals
    /// another's of the same owner and type is deleted, being the same observable now.
    pub observables: Vec<i64>,
    pub tasks: Vec<i64>,
    /// Timeline lines whose actor or details were erased.
    pub timeline: Vec<i64>,
    pub api_keys: Vec<String>,
    pub audit_states: Vec<i64>,
}

impl Erasure {
    /// Objects and entries changed, all kinds together.
    pub fn total(&self) -> usize {
        self.cases.len()
            + self.alerts.len()
            + self.actions.len()
            + self.observables.len()
            + self.tasks.len()
            + self.timeline.len()
            + self.api_keys.len()
            + self.audit_states.len()
    }
}

/// The GDPR procedures of a case store. Each appends its own audit entry.
#[async_trait]
pub trait PrivacyStore: super::keys::KeyStore {
    /// Everything mentioning `subject` (a user name, e-mail address or other identifier,
    /// matched without regard to case), for a data-subject access request.
    ///
    /// # Errors
    /// A subject shorter than [`MIN_SUBJECT_CHARS`] is a [`StoreError::Conflict`].
    async fn export_subject(&self, subject: &str, by: &str) -> Result<SubjectData, StoreError>;

    /// Replaces every mention of `subject` with [`ERASED`] and blanks the audit states
    /// that mention it. The audit entries the subject made keep their actor: the chain
    /// hashes it.
    ///
    /// # Errors
    /// As [`PrivacyStore::export_subject`].
    async fn erase_subject(&self, subject: &str, by: &str) -> Result<Erasure, StoreError>;

    /// Erases the personal fields of every case closed before `cutoff`, of its alerts and
    /// actions, and the audit states of those objects. Running it again changes nothing
    /// and appends no entry.
    async fn erase_closed_before(
        &self,
        cutoff: DateTime<Utc>,
        by: &str,
    ) -> Result<Erasure, StoreError>;

    /// Appends the audit entry of a procedure run on data kept outside the store (the
    /// dead-letter log, [`super::dead_letters`]): `action` on `object_kind`
    /// `object_id`, with what it did as the entry's after-state.
    async fn record_procedure(
        &self,
        by: &str,
        action: &'static str,
        object_kind: &'static str,
        object_id: String,
        after: Value,
    ) -> Result<(), StoreError>;
}

/// A subject to look for, lower-cased once: where the store and the dead-letter log
/// ([`super::dead_letters`]) find a data subject and how they erase it.
pub struct Subject {
    lower: String,
}

impl Subject {
    pub fn new(subject: &str) -> Result<Self, StoreError> {
        let subject = subject.trim();
        if subject.chars().count() < MIN_SUBJECT_CHARS {
            return Err(StoreError::Conflict {
                reason: format!(
                    "a data subject must be at least {MIN_SUBJECT_CHARS} characters, not \
                     {subject:?}: a shorter one matches inside unrelated text"
                ),
            });
        }
        Ok(Subject {
            lower: subject.to_lowercase(),
        })
    }

    pub fn in_text(&self, text: &str) -> bool {
        text.to_lowercase().contains(&self.lower)
    }

    /// The digest the audit log names the subject by: proof of which request was served
    /// to whoever knows the subject, without keeping the subject itself.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.lower.as_bytes()))
    }

    /// `text` with each mention replaced; `None` when there is none.
    pub fn erased(&self, text: &str) -> Option<String> {
        let lower = text.to_lowercase();
        // Lower-casing can change byte lengths outside ASCII; positions found in the
        // lower-cased copy only map back when it kept them.
        if lower.len() != text.len() {
            return self.in_text(text).then(|| ERASED.to_owned());
        }
        let mut out = String::new();
        let mut rest = 0;
        for (at, _) in lower.match_indices(&self.lower) {
            if at < rest {
                continue;
            }
            out.push_str(&text[rest..at]);
            out.push_str(ERASED);
            rest = at + self.lower.len();
        }
        if rest == 0 {
            return None;
        }
        out.push_str(&text[rest..]);
        Some(out)
    }

    /// Erases mentions in every string of `value`; whether anything changed.
    pub fn erase_in(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => match self.erased(text) {
                Some(erased) => {
                    *text = erased;
                    true
                }
                None => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.erase_in(item) | changed),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |changed, item| self.erase_in(item) | changed),
            _ => false,
        }
    }

    pub fn in_value(&self, value: &Value) -> bool {
        match value {
            Value::String(text) => self.in_text(text),
            Value::Array(items) => items.iter().any(|item| self.in_value(item)),
            Value::Object(map) => map.values().any(|item| self.in_value(item)),
            _ => false,
        }
    }

    fn erase_opt(&self, text: &mut Option<String>) -> bool {
        match text.as_deref().and_then(|t| self.erased(t)) {
            Some(erased) => {
                *text = Some(erased);
                true
            }
            None => false,
        }
    }

    fn erase_string(&self, text: &mut String) -> bool {
        match self.erased(text) {
            Some(erased) => {
                *text = erased;
                true
            }
            None => false,
        }
    }
}

/// Whether values under this key name a person: a user, account, login, e-mail address
/// or owner, in the spellings of ECS (`user.name`, `email.from.address`), Wazuh
/// (`srcuser`, `dstuser`), Windows (`TargetUserName`, `SubjectAccountName`) and Zeek
/// (`mailfrom`, `rcptto`).
fn personal_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "user",
        "account",
        "login",
        "mail",
        "owner",
        "rcptto",
        "sender",
        "recipient",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Whether this key holds raw log text, which carries whatever the log line said,
/// names included.
fn free_text_key(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "full_log"
            | "previous_output"
            | "message"
            | "original"
            | "log"
            | "raw"
            | "payload"
            | "payload_printable"
            | "comment"
            | "comments"
    )
}

/// A string shaped like an e-mail address: something, `@`, a dotted domain, no blanks.
fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Replaces every string in `value` with [`ERASED`]; whether anything changed.
fn erase_all(value: &mut Value) -> bool {
    match value {
        Value::String(text) if text != ERASED => {
            *text = ERASED.to_owned();
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| erase_all(item) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, item| erase_all(item) | changed),
        _ => false,
    }
}

/// Erases the personal values of an event (or any JSON document) in place: those under
/// personal or free-text keys at any depth, and e-mail-shaped strings anywhere. Numbers
/// and booleans stay (`rule.mail: false` is a flag, not an address). Whether anything
/// changed.
pub fn erase_personal(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => map.iter_mut().fold(false, |changed, (key, item)| {
            let erased = if personal_key(key) || free_text_key(key) {
                erase_all(item)
            } else {
                erase_personal(item)
            };
            erased | changed
        }),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| erase_personal(item) | changed),
        Value::String(text) if looks_like_email(text) => {
            *text = ERASED.to_owned();
            true
        }
        _ => false,
    }
}

fn set_none(field: &mut Option<String>) -> bool {
    field.take().is_some()
}

/// Retention: the case without its assignee, description and summary.
fn retain_case(case: &mut CaseRecord) -> bool {
    let description = !case.description.is_empty();
    case.description.clear();
    description | set_none(&mut case.assignee) | set_none(&mut case.summary)
}

/// Retention: the alert without its triager, reason and the personal values of its
/// events. The rule, times, host and technical fields stay: they are what the closed
/// case is evidence of.
fn retain_alert(record: &mut AlertRecord) -> Result<bool, StoreError> {
    let mut changed = set_none(&mut record.triaged_by) | set_none(&mut record.status_reason);
    for event in &mut record.alert.events {
        let mut value = super::to_state("alert event", event)?;
        if erase_personal(&mut value) {
            *event = serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
                what: "alert event",
                reason: e.to_string(),
            })?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Retention: the action without its decider, reason and the personal values of its
/// parameters and result.
fn retain_action(action: &mut ActionRecord) -> bool {
    let mut changed = set_none(&mut action.decided_by) | set_none(&mut action.reason);
    changed |= erase_personal(&mut action.params);
    if let Some(result) = &mut action.result {
        changed |= erase_personal(result);
    }
    changed
}

fn subject_in_case(subject: &Subject, case: &mut CaseRecord) -> bool {
    let mut changed = subject.erase_string(&mut case.title);
    changed |= subject.erase_string(&mut case.description);
    changed |= subject.erase_string(&mut case.group_key);
    changed |= subject.erase_opt(&mut case.host);
    changed |= subject.erase_opt(&mut case.assignee);
    changed |= subject.erase_opt(&mut case.summary);
    changed
}

/// The subject erased from the alert's events, host and group-by values, triager and
/// reason. The rule (and its author, whom the Sigma licence requires be kept) stays.
fn subject_in_alert(subject: &Subject, record: &mut AlertRecord) -> Result<bool, StoreError> {
    let mut changed = subject.erase_opt(&mut record.triaged_by);
    changed |= subject.erase_opt(&mut record.status_reason);
    changed |= subject.erase_opt(&mut record.alert.host);
    for value in record.alert.group.values_mut() {
        changed |= subject.erase_string(value);
    }
    for event in &mut record.alert.events {
        let mut value = super::to_state("alert event", event)?;
        if subject.erase_in(&mut value) {
            *event = serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
                what: "alert event",
                reason: e.to_string(),
            })?;
            changed = true;
        }
    }
    Ok(changed)
}

fn subject_in_action(subject: &Subject, action: &mut ActionRecord) -> bool {
    let mut changed = subject.erase_opt(&mut action.decided_by);
    changed |= subject.erase_opt(&mut action.reason);
    changed |= subject.erase_in(&mut action.params);
    if let Some(result) = &mut action.result {
        changed |= subject.erase_in(result);
    }
    changed
}

/// Whether an actor names a person (`apikey:…`, `oidc:…`, `cli:…`) rather than Kastell
/// itself (`system:…`) or a playbook (`playbook:…`). Unknown forms count as people, so
/// that retention errs on the side of erasing.
fn personal_actor(actor: &str) -> bool {
    !(actor.starts_with("system:") || actor.starts_with("playbook:") || actor == ERASED)
}

fn erase_actor(actor: &mut String) -> bool {
    if personal_actor(actor) {
        *actor = ERASED.to_owned();
        true
    } else {
        false
    }
}

/// Whether an observable of this type names a person: TheHive's `mail`, Kastell's
/// `email`, and any user, account, login or owner type. A user agent names software.
fn personal_observable_type(kind: &str) -> bool {
    let kind = kind.to_ascii_lowercase();
    personal_key(&kind) && !kind.contains("agent")
}

/// Retention: the observable without its creator and, when it names a person, its value.
/// Hashes, addresses, domains and the like stay as evidence.
fn retain_observable(observable: &mut ObservableRecord) -> bool {
    let mut changed = erase_actor(&mut observable.created_by);
    let personal =
        personal_observable_type(&observable.kind) || looks_like_email(&observable.value);
    if personal && observable.value != ERASED {
        observable.value = ERASED.to_owned();
        changed = true;
    }
    changed
}

/// Retention: the task without its title (free text), assignee and creator.
fn retain_task(task: &mut TaskRecord) -> bool {
    let title = task.title != ERASED;
    task.title = ERASED.to_owned();
    title | set_none(&mut task.assignee) | erase_actor(&mut task.created_by)
}

/// Keys of timeline details holding free text or a person: comment text, descriptions,
/// summaries, reasons, assignees and triagers (in `fields` of an update, too).
fn timeline_personal_key(key: &str) -> bool {
    matches!(
        key,
        "text" | "description" | "summary" | "reason" | "assignee" | "triaged_by" | "decided_by"
    ) || personal_key(key)
        || free_text_key(key)
}

/// Erases the personal values of a timeline line's details: those under
/// [`timeline_personal_key`]s, a task's title (`task` lines), an observable's value when
/// its type names a person (`personal_value`), and e-mail-shaped strings anywhere.
fn retain_details(details: &mut Value, task: bool, personal_value: bool) -> bool {
    match details {
        Value::Object(map) => map.iter_mut().fold(false, |changed, (key, item)| {
            let personal = timeline_personal_key(key)
                || (task && key == "title")
                || (personal_value && key == "value");
            let erased = if personal {
                erase_all(item)
            } else {
                retain_details(item, task, personal_value)
            };
            erased | changed
        }),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            retain_details(item, task, personal_value) | changed
        }),
        Value::String(text) if looks_like_email(text) => {
            *text = ERASED.to_owned();
            true
        }
        _ => false,
    }
}

/// Retention: the timeline line without its actor and the personal values of its
/// details. The kind, time, ids, severities and resolution stay.
fn retain_timeline(entry: &mut TimelineEntry) -> bool {
    let task = entry.kind.starts_with("task_");
    let personal_value = entry.kind.starts_with("observable_")
        && entry.details["type"]
            .as_str()
            .is_some_and(personal_observable_type);
    erase_actor(&mut entry.actor) | retain_details(&mut entry.details, task, personal_value)
}

fn subject_in_observable(subject: &Subject, observable: &mut ObservableRecord) -> bool {
    let mut changed = subject.erase_string(&mut observable.value);
    changed |= subject.erase_string(&mut observable.created_by);
    for tag in &mut observable.tags {
        changed |= subject.erase_string(tag);
    }
    changed
}

fn subject_in_task(subject: &Subject, task: &mut TaskRecord) -> bool {
    let mut changed = subject.erase_string(&mut task.title);
    changed |= subject.erase_opt(&mut task.assignee);
    changed |= subject.erase_string(&mut task.created_by);
    changed
}

fn subject_in_timeline(subject: &Subject, entry: &mut TimelineEntry) -> bool {
    subject.erase_string(&mut entry.actor) | subject.erase_in(&mut entry.details)
}

fn mentions<T: Serialize>(subject: &Subject, record: &T) -> Result<bool, StoreError> {
    Ok(subject.in_value(&super::to_state("record", record)?))
}

fn entry_mentions(subject: &Subject, entry: &AuditEntry) -> bool {
    subject.in_text(&entry.actor)
        || entry.before.as_ref().is_some_and(|s| subject.in_value(s))
        || entry.after.as_ref().is_some_and(|s| subject.in_value(s))
}

fn has_state(entry: &AuditEntry) -> bool {
    entry.before.is_some() || entry.after.is_some()
}

/// The audit entry of a procedure: the objects it touched, never the subject.
fn procedure_change(
    by: &str,
    action: &'static str,
    object_kind: &'static str,
    object_id: String,
    after: Value,
) -> Change {
    Change {
        actor: by.to_owned(),
        action,
        object_kind,
        object_id,
        before: None,
        after: Some(after),
    }
}

fn erasure_state(erasure: &Erasure) -> Result<Value, StoreError> {
    super::to_state("erasure", erasure)
}

/// The procedures over one backend's write transaction; `$append` appends an audit
/// entry inside it.
macro_rules! privacy_store {
    ($store:ty, $append:path) => {
        impl $store {
            async fn load_cases(tx: &mut TxOf<$store>) -> Result<Vec<CaseRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM cases ORDER BY id")
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(super::query_err("read cases"))?;
                rows.iter().map(super::case_from_row).collect()
            }

            async fn load_closed_cases(
                tx: &mut TxOf<$store>,
            ) -> Result<Vec<CaseRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM cases WHERE status = 'closed' ORDER BY id")
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(super::query_err("read closed cases"))?;
                rows.iter().map(super::case_from_row).collect()
            }

            async fn load_alerts(
                tx: &mut TxOf<$store>,
                case_id: Option<i64>,
            ) -> Result<Vec<AlertRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, case_id, status, status_reason, triaged_by, triaged_at, body \
                     FROM alerts WHERE $1 IS NULL OR case_id = $1 ORDER BY id",
                )
                .bind(case_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read alerts"))?;
                rows.iter().map(super::alert_from_row).collect()
            }

            async fn load_actions(
                tx: &mut TxOf<$store>,
                case_id: Option<i64>,
            ) -> Result<Vec<ActionRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM actions WHERE $1 IS NULL OR case_id = $1 ORDER BY id",
                )
                .bind(case_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read actions"))?;
                rows.iter().map(super::action_from_row).collect()
            }

            async fn load_api_keys(
                tx: &mut TxOf<$store>,
            ) -> Result<Vec<ApiKeyRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM api_keys ORDER BY id")
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(super::query_err("read api keys"))?;
                rows.iter().map(super::api_key_from_row).collect()
            }

            async fn load_audit(
                tx: &mut TxOf<$store>,
                object: Option<(&str, &str)>,
            ) -> Result<Vec<AuditEntry>, StoreError> {
                let (kind, id) = object.unzip();
                let rows = sqlx::query(
                    "SELECT * FROM audit_log WHERE $1 IS NULL \
                     OR (object_kind = $1 AND object_id = $2) ORDER BY seq",
                )
                .bind(kind)
                .bind(id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read the audit log"))?;
                rows.iter().map(super::audit_from_row).collect()
            }

            async fn store_case(tx: &mut TxOf<$store>, case: &CaseRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE cases SET title = $1, description = $2, group_key = $3, host = $4, \
                     assignee = $5, summary = $6 WHERE id = $7",
                )
                .bind(&case.title)
                .bind(&case.description)
                .bind(&case.group_key)
                .bind(&case.host)
                .bind(&case.assignee)
                .bind(&case.summary)
                .bind(case.id)
                .execute(&mut **tx)
                .await
                .map_err(super::query_err("erase case fields"))?;
                Ok(())
            }

            async fn store_alert(
                tx: &mut TxOf<$store>,
                record: &AlertRecord,
            ) -> Result<(), StoreError> {
                let body = serde_json::to_string(&record.alert).map_err(|e| {
                    StoreError::Corrupt {
                        what: "alert",
                        reason: e.to_string(),
                    }
                })?;
                sqlx::query(
                    "UPDATE alerts SET body = $1, host = $2, triaged_by = $3, \
                     status_reason = $4 WHERE id = $5",
                )
                .bind(body)
                .bind(&record.alert.host)
                .bind(&record.triaged_by)
                .bind(&record.status_reason)
                .bind(&record.id)
                .execute(&mut **tx)
                .await
                .map_err(super::query_err("erase alert fields"))?;
                Ok(())
            }

            async fn store_action(
                tx: &mut TxOf<$store>,
                action: &ActionRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE actions SET params = $1, reason = $2, decided_by = $3, result = $4 \
                     WHERE id = $5",
                )
                .bind(action.params.to_string())
                .bind(&action.reason)
                .bind(&action.decided_by)
                .bind(action.result.as_ref().map(Value::to_string))
                .bind(action.id)
                .execute(&mut **tx)
                .await
                .map_err(super::query_err("erase action fields"))?;
                Ok(())
            }

            /// Observables of every owner, or of one case and of that case's alerts.
            async fn load_observables(
                tx: &mut TxOf<$store>,
                case_id: Option<i64>,
            ) -> Result<Vec<ObservableRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM observables WHERE $1 IS NULL OR case_id = $1 \
                     OR alert_id IN (SELECT id FROM alerts WHERE case_id = $1) ORDER BY id",
                )
                .bind(case_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read observables"))?;
                rows.iter().map(super::analyst::observable_from_row).collect()
            }

            async fn load_tasks(
                tx: &mut TxOf<$store>,
                case_id: Option<i64>,
            ) -> Result<Vec<TaskRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM tasks WHERE $1 IS NULL OR case_id = $1 ORDER BY id",
                )
                .bind(case_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read tasks"))?;
                rows.iter().map(super::analyst::task_from_row).collect()
            }

            async fn load_timeline(
                tx: &mut TxOf<$store>,
                case_id: Option<i64>,
            ) -> Result<Vec<TimelineEntry>, StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM case_timeline WHERE $1 IS NULL OR case_id = $1 ORDER BY id",
                )
                .bind(case_id)
                .fetch_all(&mut **tx)
                .await
                .map_err(super::query_err("read the case timeline"))?;
                rows.iter().map(super::analyst::timeline_from_row).collect()
            }

            /// Writes an erased observable back. When its owner already has an
            /// observable of the same type with the erased value, the two are one
            /// observable now and this row goes (the UNIQUE constraint forbids both).
            async fn store_observable(
                tx: &mut TxOf<$store>,
                observable: &ObservableRecord,
            ) -> Result<(), StoreError> {
                let twin = sqlx::query(
                    "SELECT id FROM observables WHERE type = $1 AND value = $2 AND id <> $3 \
                     AND (case_id = $4 OR alert_id = $5)",
                )
                .bind(&observable.kind)
                .bind(&observable.value)
                .bind(observable.id)
                .bind(observable.case_id)
                .bind(&observable.alert_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(super::query_err("find an erased observable's twin"))?;
                let query = if twin.is_some() {
                    sqlx::query("DELETE FROM observables WHERE id = $1").bind(observable.id)
                } else {
                    let tags = serde_json::to_string(&observable.tags).map_err(|e| {
                        StoreError::Corrupt {
                            what: "observable tags",
                            reason: e.to_string(),
                        }
                    })?;
                    sqlx::query(
                        "UPDATE observables SET value = $2, created_by = $3, tags = $4 \
                         WHERE id = $1",
                    )
                    .bind(observable.id)
                    .bind(&observable.value)
                    .bind(&observable.created_by)
                    .bind(tags)
                };
                query
                    .execute(&mut **tx)
                    .await
                    .map_err(super::query_err("erase observable fields"))?;
                Ok(())
            }

            async fn store_task(tx: &mut TxOf<$store>, task: &TaskRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE tasks SET title = $1, assignee = $2, created_by = $3 WHERE id = $4",
                )
                .bind(&task.title)
                .bind(&task.assignee)
                .bind(&task.created_by)
                .bind(task.id)
                .execute(&mut **tx)
                .await
                .map_err(super::query_err("erase task fields"))?;
                Ok(())
            }

            async fn store_timeline(
                tx: &mut TxOf<$store>,
                entry: &TimelineEntry,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE case_timeline SET actor = $1, details = $2 WHERE id = $3")
                    .bind(&entry.actor)
                    .bind(entry.details.to_string())
                    .bind(entry.id)
                    .execute(&mut **tx)
                    .await
                    .map_err(super::query_err("erase timeline fields"))?;
                Ok(())
            }

            async fn blank_states(tx: &mut TxOf<$store>, seq: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE audit_log SET before = NULL, after = NULL WHERE seq = $1")
                    .bind(seq)
                    .execute(&mut **tx)
                    .await
                    .map_err(super::query_err("erase audit states"))?;
                Ok(())
            }
        }

        #[async_trait]
        impl PrivacyStore for $store {
            async fn export_subject(
                &self,
                subject: &str,
                by: &str,
            ) -> Result<SubjectData, StoreError> {
                let matcher = Subject::new(subject)?;
                let mut tx = self.write_tx().await?;
                let mut data = SubjectData {
                    subject: subject.trim().to_owned(),
                    cases: Vec::new(),
                    alerts: Vec::new(),
                    actions: Vec::new(),
                    observables: Vec::new(),
                    tasks: Vec::new(),
                    timeline: Vec::new(),
                    api_keys: Vec::new(),
                    audit_entries: Vec::new(),
                };
                for case in Self::load_cases(&mut tx).await? {
                    if mentions(&matcher, &case)? {
                        data.cases.push(case);
                    }
                }
                for alert in Self::load_alerts(&mut tx, None).await? {
                    if mentions(&matcher, &alert)? {
                        data.alerts.push(alert);
                    }
                }
                for action in Self::load_actions(&mut tx, None).await? {
                    if mentions(&matcher, &action)? {
                        data.actions.push(action);
                    }
                }
                for observable in Self::load_observables(&mut tx, None).await? {
                    if mentions(&matcher, &observable)? {
                        data.observables.push(observable);
                    }
                }
                for task in Self::load_tasks(&mut tx, None).await? {
                    if mentions(&matcher, &task)? {
                        data.tasks.push(task);
                    }
                }
                for entry in Self::load_timeline(&mut tx, None).await? {
                    if mentions(&matcher, &entry)? {
                        data.timeline.push(entry);
                    }
                }
                for key in Self::load_api_keys(&mut tx).await? {
                    if matcher.in_text(&key.name) {
                        data.api_keys.push(key);
                    }
                }
                for entry in Self::load_audit(&mut tx, None).await? {
                    if entry_mentions(&matcher, &entry) {
                        data.audit_entries.push(entry);
                    }
                }
                let found = serde_json::json!({
                    "cases": data.cases.len(),
                    "alerts": data.alerts.len(),
                    "actions": data.actions.len(),
                    "observables": data.observables.len(),
                    "tasks": data.tasks.len(),
                    "timeline": data.timeline.len(),
                    "api_keys": data.api_keys.len(),
                    "audit_entries": data.audit_entries.len(),
                });
                let change =
                    procedure_change(by, "gdpr.export", "subject", matcher.digest(), found);
                $append(&mut tx, change).await?;
                tx.commit().await.map_err(super::query_err("commit"))?;
                tracing::info!(subject_digest = %matcher.digest(), by, "subject data exported");
                Ok(data)
            }

            async fn erase_subject(&self, subject: &str, by: &str) -> Result<Erasure, StoreError> {
                let matcher = Subject::new(subject)?;
                let mut tx = self.write_tx().await?;
                let mut erasure = Erasure::default();
                for mut case in Self::load_cases(&mut tx).await? {
                    if subject_in_case(&matcher, &mut case) {
                        Self::store_case(&mut tx, &case).await?;
                        erasure.cases.push(case.id);
                    }
                }
                for mut alert in Self::load_alerts(&mut tx, None).await? {
                    if subject_in_alert(&matcher, &mut alert)? {
                        Self::store_alert(&mut tx, &alert).await?;
                        erasure.alerts.push(alert.id);
                    }
                }
                for mut action in Self::load_actions(&mut tx, None).await? {
                    if subject_in_action(&matcher, &mut action) {
                        Self::store_action(&mut tx, &action).await?;
                        erasure.actions.push(action.id);
                    }
                }
                for mut observable in Self::load_observables(&mut tx, None).await? {
                    if subject_in_observable(&matcher, &mut observable) {
                        Self::store_observable(&mut tx, &observable).await?;
                        erasure.observables.push(observable.id);
                    }
                }
                for mut task in Self::load_tasks(&mut tx, None).await? {
                    if subject_in_task(&matcher, &mut task) {
                        Self::store_task(&mut tx, &task).await?;
                        erasure.tasks.push(task.id);
                    }
                }
                for mut entry in Self::load_timeline(&mut tx, None).await? {
                    if subject_in_timeline(&matcher, &mut entry) {
                        Self::store_timeline(&mut tx, &entry).await?;
                        erasure.timeline.push(entry.id);
                    }
                }
                for key in Self::load_api_keys(&mut tx).await? {
                    if matcher.in_text(&key.name) {
                        // The name is unique, so each erased holder gets its own.
                        sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2")
                            .bind(format!("{ERASED} {}", key.id))
                            .bind(&key.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(super::query_err("erase api key name"))?;
                        erasure.api_keys.push(key.id);
                    }
                }
                for entry in Self::load_audit(&mut tx, None).await? {
                    let states_mention = entry.before.as_ref().is_some_and(|s| matcher.in_value(s))
                        || entry.after.as_ref().is_some_and(|s| matcher.in_value(s));
                    if states_mention {
                        Self::blank_states(&mut tx, entry.seq).await?;
                        erasure.audit_states.push(entry.seq);
                    }
                }
                let change = procedure_change(
                    by,
                    "gdpr.erase",
                    "subject",
                    matcher.digest(),
                    erasure_state(&erasure)?,
                );
                $append(&mut tx, change).await?;
                tx.commit().await.map_err(super::query_err("commit"))?;
                tracing::info!(
                    subject_digest = %matcher.digest(),
                    by,
                    changed = erasure.total(),
                    "subject erased"
                );
                Ok(erasure)
            }

            async fn erase_closed_before(
                &self,
                cutoff: DateTime<Utc>,
                by: &str,
            ) -> Result<Erasure, StoreError> {
                let mut tx = self.write_tx().await?;
                let mut erasure = Erasure::default();
                let expired = Self::load_closed_cases(&mut tx)
                    .await?
                    .into_iter()
                    .filter(|case| case.closed_at.is_some_and(|closed| closed < cutoff));
                for mut case in expired {
                    let case_id = case.id.to_string();
                    if retain_case(&mut case) {
                        Self::store_case(&mut tx, &case).await?;
                        erasure.cases.push(case.id);
                    }
                    let mut objects = vec![("case", case_id)];
                    for mut alert in Self::load_alerts(&mut tx, Some(case.id)).await? {
                        objects.push(("alert", alert.id.clone()));
                        if retain_alert(&mut alert)? {
                            Self::store_alert(&mut tx, &alert).await?;
                            erasure.alerts.push(alert.id);
                        }
                    }
                    for mut action in Self::load_actions(&mut tx, Some(case.id)).await? {
                        objects.push(("action", action.id.to_string()));
                        if retain_action(&mut action) {
                            Self::store_action(&mut tx, &action).await?;
                            erasure.actions.push(action.id);
                        }
                    }
                    for mut observable in Self::load_observables(&mut tx, Some(case.id)).await? {
                        objects.push(("observable", observable.id.to_string()));
                        if retain_observable(&mut observable) {
                            Self::store_observable(&mut tx, &observable).await?;
                            erasure.observables.push(observable.id);
                        }
                    }
                    for mut task in Self::load_tasks(&mut tx, Some(case.id)).await? {
                        objects.push(("task", task.id.to_string()));
                        if retain_task(&mut task) {
                            Self::store_task(&mut tx, &task).await?;
                            erasure.tasks.push(task.id);
                        }
                    }
                    for mut entry in Self::load_timeline(&mut tx, Some(case.id)).await? {
                        if retain_timeline(&mut entry) {
                            Self::store_timeline(&mut tx, &entry).await?;
                            erasure.timeline.push(entry.id);
                        }
                    }
                    for (kind, id) in &objects {
                        for entry in Self::load_audit(&mut tx, Some((kind, id))).await? {
                            if has_state(&entry) {
                                Self::blank_states(&mut tx, entry.seq).await?;
                                erasure.audit_states.push(entry.seq);
                            }
                        }
                    }
                }
                if erasure.total() == 0 {
                    tx.commit().await.map_err(super::query_err("commit"))?;
                    return Ok(erasure);
                }
                erasure.audit_states.sort_unstable();
                let mut state = erasure_state(&erasure)?;
                state["closed_before"] = Value::String(super::ts(cutoff));
                let change =
                    procedure_change(by, "gdpr.retention", "store", "retention".to_owned(), state);
                $append(&mut tx, change).await?;
                tx.commit().await.map_err(super::query_err("commit"))?;
                tracing::info!(
                    closed_before = %cutoff,
                    by,
                    cases = erasure.cases.len(),
                    alerts = erasure.alerts.len(),
                    observables = erasure.observables.len(),
                    tasks = erasure.tasks.len(),
                    timeline = erasure.timeline.len(),
                    audit_states = erasure.audit_states.len(),
                    "personal data past retention erased"
                );
                Ok(erasure)
            }

            async fn record_procedure(
                &self,
                by: &str,
                action: &'static str,
                object_kind: &'static str,
                object_id: String,
                after: Value,
            ) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                let change = procedure_change(by, action, object_kind, object_id, after);
                $append(&mut tx, change).await?;
                tx.commit().await.map_err(super::query_err("commit"))
            }
        }
    };
}

/// The write transaction type of each store, for the procedures' signatures.
trait WriteTx {
    type Tx;
}

impl WriteTx for SqliteStore {
    type Tx = super::Tx;
}

impl WriteTx for PostgresStore {
    type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
}

type TxOf<S> = <S as WriteTx>::Tx;

privacy_store!(SqliteStore, super::append_audit);
privacy_store!(PostgresStore, super::postgres::append_audit);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_values_of_a_real_wazuh_alert_are_erased() {
        // From wazuh-qa (GPL-2.0), see tests/fixtures/privacy/SOURCE.txt.
        let mut alert = json!({
            "rule": {"level": 10, "mail": false, "id": "5712",
                     "description": "sshd: brute force trying to get access to the system."},
            "agent": {"id": "000", "name": "localhost.localdomain"},
            "full_log": "May 11 12:29:18 localhost sshd[17584]: Invalid user paco from 172.17.1.1",
            "data": {"srcip": "172.17.1.1", "srcuser": "paco"},
            "user": {"name": "paco", "email": "paco@example.org", "id": 1000},
            "notify": ["soc@example.org"],
        });
        assert!(erase_personal(&mut alert));
        assert_eq!(alert["data"]["srcuser"], ERASED);
        assert_eq!(alert["data"]["srcip"], "172.17.1.1");
        assert_eq!(alert["full_log"], ERASED);
        assert_eq!(alert["user"]["name"], ERASED);
        assert_eq!(alert["user"]["email"], ERASED);
        assert_eq!(alert["user"]["id"], 1000, "numbers are not names");
        assert_eq!(alert["notify"][0], ERASED);
        assert_eq!(alert["rule"]["mail"], false);
        assert_eq!(alert["agent"]["name"], "localhost.localdomain");
        assert!(!erase_personal(&mut alert), "a second pass changes nothing");
    }

    #[test]
    fn a_subject_is_erased_wherever_it_is_mentioned_whatever_its_case() {
        let subject = Subject::new("Paco").unwrap();
        assert_eq!(
            subject
                .erased("Invalid user paco from 172.17.1.1; PACO again")
                .as_deref(),
            Some("Invalid user [erased] from 172.17.1.1; [erased] again")
        );
        assert_eq!(subject.erased("nobody here"), None);
        let mut value = json!({"a": ["paco@example.org", 3], "b": {"c": "Paco"}});
        assert!(subject.erase_in(&mut value));
        assert_eq!(
            value,
            json!({"a": ["[erased]@example.org", 3], "b": {"c": "[erased]"}})
        );
        assert!(Subject::new(" a ").is_err());
    }

    #[test]
    fn e_mail_shapes_are_recognised() {
        assert!(looks_like_email("paco@example.org"));
        assert!(!looks_like_email("user@host"));
        assert!(!looks_like_email("a @b.c"));
        assert!(!looks_like_email("@example.org"));
    }
}
