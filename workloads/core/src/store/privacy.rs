//! Personal data in the case store (GDPR): what is held about one data subject, its
//! erasure on request, and the erasure of personal fields from cases closed longer than
//! the platform's retention period.
//!
//! Personal fields are the people's names and addresses the store keeps: a case's
//! assignee, its free-text description and closing summary; an alert's triager and
//! ignore reason, and inside its events every value under a key naming a user, account,
//! e-mail address or owner, every value shaped like an e-mail address and the raw log
//! text (`full_log`, `message`, `event.original`…); an action's decider, reason,
//! parameters and result; the states the audit log keeps of those objects. The audit
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
    ActionRecord, AlertRecord, ApiKeyRecord, CaseRecord, CaseStore, PostgresStore, SqliteStore,
    StoreError,
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
    pub api_keys: Vec<String>,
    pub audit_states: Vec<i64>,
}

impl Erasure {
    /// Objects and entries changed, all kinds together.
    pub fn total(&self) -> usize {
        self.cases.len()
            + self.alerts.len()
            + self.actions.len()
            + self.api_keys.len()
            + self.audit_states.len()
    }
}

/// The GDPR procedures of a case store. Each appends its own audit entry.
#[async_trait]
pub trait PrivacyStore: CaseStore {
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
}

/// A subject to look for, lower-cased once.
struct Subject {
    lower: String,
}

impl Subject {
    fn new(subject: &str) -> Result<Self, StoreError> {
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

    fn in_text(&self, text: &str) -> bool {
        text.to_lowercase().contains(&self.lower)
    }

    /// The digest the audit log names the subject by: proof of which request was served
    /// to whoever knows the subject, without keeping the subject itself.
    fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.lower.as_bytes()))
    }

    /// `text` with each mention replaced; `None` when there is none.
    fn erased(&self, text: &str) -> Option<String> {
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
    fn erase_in(&self, value: &mut Value) -> bool {
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

    fn in_value(&self, value: &Value) -> bool {
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
                    audit_states = erasure.audit_states.len(),
                    "personal data past retention erased"
                );
                Ok(erasure)
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
