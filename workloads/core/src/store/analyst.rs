//! The SQLite side of the analyst's work on cases: cases opened by hand or from an
//! alert, alerts merged into cases, observables, tasks, the case timeline, the SOC
//! figures and the text search. The [`CaseStore`](super::CaseStore) methods delegate
//! here; the helpers the older writes share (timeline lines, observable indexing) live
//! here too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use super::{
    case_change, commit_audited, fetch_alert, fetch_case, parse_json, parse_text, parse_ts,
    query_err, to_state, ts, AlertRecord, CaseDraft, CaseRecord, CaseStatus, NewObservable,
    NewTask, ObservableOwner, ObservableRecord, SearchHits, SeverityFigures, SqliteStore,
    StoreError, TaskRecord, TaskUpdate, TimelineEntry, Tlp, Tx, MANUAL_GROUP_KEY,
};
use crate::alert::{Alert, IntelMatch, Level};
use crate::audit::Change;

/// Appends a line to a case's timeline inside the change's transaction.
pub(super) async fn record(
    tx: &mut Tx,
    case_id: i64,
    actor: &str,
    kind: &str,
    details: Value,
) -> Result<TimelineEntry, StoreError> {
    let at = Utc::now();
    let id: i64 = sqlx::query(
        "INSERT INTO case_timeline (case_id, at, actor, kind, details) VALUES (?, ?, ?, ?, ?) \
         RETURNING id",
    )
    .bind(case_id)
    .bind(ts(at))
    .bind(actor)
    .bind(kind)
    .bind(details.to_string())
    .fetch_one(&mut **tx)
    .await
    .map_err(query_err("append to the case timeline"))?
    .get("id");
    Ok(TimelineEntry {
        id,
        case_id,
        at,
        actor: actor.to_owned(),
        kind: kind.to_owned(),
        details,
    })
}

/// `{"field": {"from": …, "to": …}}` for each of `fields` that differs between the two
/// serialised states.
pub(super) fn changed_fields(before: &Value, after: &Value, fields: &[&str]) -> Value {
    let mut changes = serde_json::Map::new();
    for field in fields {
        let (from, to) = (&before[*field], &after[*field]);
        if from != to {
            changes.insert((*field).to_owned(), json!({"from": from, "to": to}));
        }
    }
    Value::Object(changes)
}

/// The case fields a person changes, as the timeline reports them.
pub(super) const CASE_FIELDS: &[&str] = &[
    "title",
    "description",
    "severity",
    "tlp",
    "pap",
    "status",
    "assignee",
    "tags",
];

/// The `(type, value)` observables of an alert's events and intel matches, with whether
/// each is an IOC (an intel match).
pub(super) fn alert_observables(alert: &Alert) -> BTreeMap<(String, String), bool> {
    let mut found: BTreeMap<(String, String), bool> = BTreeMap::new();
    for event in &alert.events {
        for observable in event.observables() {
            found
                .entry((observable.kind.as_str().to_owned(), observable.value))
                .or_insert(false);
        }
    }
    for intel in &alert.intel {
        found.insert(
            (intel.kind.as_str().to_owned(), intel.observable.clone()),
            true,
        );
    }
    found
}

/// Copies an alert's observables into a case; one the case has already keeps its tags
/// and gains the alert's flags.
pub(super) async fn copy_alert_observables(
    tx: &mut Tx,
    alert_id: &str,
    case_id: i64,
    by: &str,
) -> Result<(), StoreError> {
    let now = ts(Utc::now());
    // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT, not to a
    // join of the SELECT (its documented upsert ambiguity).
    sqlx::query(
        "INSERT INTO observables (case_id, type, value, ioc, sighted, tags, created_by, \
         created_at, updated_at) \
         SELECT ?, type, value, ioc, sighted, tags, ?, ?, ? FROM observables \
         WHERE alert_id = ? AND true \
         ON CONFLICT (case_id, type, value) DO UPDATE SET \
         ioc = max(ioc, excluded.ioc), sighted = max(sighted, excluded.sighted)",
    )
    .bind(case_id)
    .bind(by)
    .bind(&now)
    .bind(&now)
    .bind(alert_id)
    .execute(&mut **tx)
    .await
    .map_err(query_err("copy alert observables to the case"))?;
    Ok(())
}

/// Sets the first-touch time of an alert, once.
pub(super) async fn mark_acknowledged(tx: &mut Tx, alert_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, ?) WHERE id = ?")
        .bind(ts(Utc::now()))
        .bind(alert_id)
        .execute(&mut **tx)
        .await
        .map_err(query_err("mark alert acknowledged"))?;
    Ok(())
}

pub(super) fn observable_from_row<R>(row: &R) -> Result<ObservableRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ObservableRecord {
        id: row.get("id"),
        case_id: row.get("case_id"),
        alert_id: row.get("alert_id"),
        kind: row.get("type"),
        value: row.get("value"),
        ioc: row.get::<i64, _>("ioc") != 0,
        sighted: row.get::<i64, _>("sighted") != 0,
        tags: parse_json("observable tags", row.get("tags"))?,
        created_by: row.get("created_by"),
        created_at: parse_ts("observable created_at", row.get("created_at"))?,
        updated_at: parse_ts("observable updated_at", row.get("updated_at"))?,
        enrichment: Vec::new(),
    })
}

pub(super) fn task_from_row<R>(row: &R) -> Result<TaskRecord, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TaskRecord {
        id: row.get("id"),
        case_id: row.get("case_id"),
        title: row.get("title"),
        assignee: row.get("assignee"),
        status: parse_text("task status", row.get("status"))?,
        created_by: row.get("created_by"),
        created_at: parse_ts("task created_at", row.get("created_at"))?,
        updated_at: parse_ts("task updated_at", row.get("updated_at"))?,
    })
}

pub(super) fn timeline_from_row<R>(row: &R) -> Result<TimelineEntry, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TimelineEntry {
        id: row.get("id"),
        case_id: row.get("case_id"),
        at: parse_ts("timeline at", row.get("at"))?,
        actor: row.get("actor"),
        kind: row.get("kind"),
        details: parse_json("timeline details", row.get("details"))?,
    })
}

pub(super) fn observable_state(observable: &ObservableRecord) -> Value {
    json!({
        "case_id": observable.case_id,
        "alert_id": observable.alert_id,
        "type": observable.kind,
        "value": observable.value,
        "ioc": observable.ioc,
        "sighted": observable.sighted,
        "tags": observable.tags,
    })
}

pub(super) fn tags_json(tags: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(tags).map_err(|e| StoreError::Corrupt {
        what: "tags",
        reason: e.to_string(),
    })
}

/// `text` as a LIKE pattern matching it anywhere, its wildcards escaped with `\`.
pub(super) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The figures per severity from the rows of the two figures queries (columns `level`,
/// `alerts`, `detect`, `acknowledged`, `ack`; `severity`, `resolved`, `resolve`).
pub(super) fn figures_from_rows<R>(
    alerts: &[R],
    cases: &[R],
) -> Result<Vec<SeverityFigures>, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut by_level: BTreeMap<Level, SeverityFigures> = BTreeMap::new();
    let empty = |severity| SeverityFigures {
        severity,
        alerts: 0,
        mean_time_to_detect: None,
        acknowledged: 0,
        mean_time_to_acknowledge: None,
        resolved: 0,
        mean_time_to_resolve: None,
    };
    for row in alerts {
        let level: Level = parse_text("alert level", row.get("level"))?;
        let figures = by_level.entry(level).or_insert_with(|| empty(level));
        figures.alerts = row.get("alerts");
        figures.mean_time_to_detect = row.get("detect");
        figures.acknowledged = row.get("acknowledged");
        figures.mean_time_to_acknowledge = row.get("ack");
    }
    for row in cases {
        let level: Level = parse_text("case severity", row.get("severity"))?;
        let figures = by_level.entry(level).or_insert_with(|| empty(level));
        figures.resolved = row.get("resolved");
        figures.mean_time_to_resolve = row.get("resolve");
    }
    Ok(by_level.into_values().collect())
}

/// Sets each observable's enrichment: the intel matches on its type and value.
pub(super) fn enrich(observables: &mut [ObservableRecord], intel: &[IntelMatch]) {
    for observable in observables {
        observable.enrichment = intel
            .iter()
            .filter(|m| m.kind.as_str() == observable.kind && m.observable == observable.value)
            .cloned()
            .collect();
    }
}

impl SqliteStore {
    /// Inserts a case that no stage grouping will find, and its `created` line.
    async fn insert_manual_case(
        tx: &mut Tx,
        draft: &CaseDraft,
        first_seen: DateTime<Utc>,
        rule_id: &str,
        host: Option<&str>,
    ) -> Result<i64, StoreError> {
        let now = ts(Utc::now());
        let id: i64 = sqlx::query(
            "INSERT INTO cases (title, severity, group_key, rule_id, host, first_seen, \
             last_seen, alert_count, created_at, updated_at, tlp, pap, description, \
             assignee, tags) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&draft.title)
        .bind(draft.severity.as_str())
        .bind(MANUAL_GROUP_KEY)
        .bind(rule_id)
        .bind(host)
        .bind(ts(first_seen))
        .bind(ts(first_seen))
        .bind(&now)
        .bind(&now)
        .bind(draft.tlp.rank())
        .bind(draft.pap.rank())
        .bind(&draft.description)
        .bind(&draft.assignee)
        .bind(tags_json(&draft.tags)?)
        .fetch_one(&mut **tx)
        .await
        .map_err(query_err("create case"))?
        .get("id");
        Ok(id)
    }

    pub(super) async fn create_case_impl(
        &self,
        draft: &CaseDraft,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let id = Self::insert_manual_case(&mut tx, draft, Utc::now(), "", None).await?;
        record(&mut tx, id, by, "created", json!({"title": draft.title})).await?;
        let case = fetch_case(&mut tx, id).await?;
        commit_audited(tx, case_change(by, "case.create", None, &case)?).await?;
        Ok(case)
    }

    /// Links an alert to a case inside `tx`: leaves its old case (recounted, with a
    /// timeline line), widens and recounts the new one, copies its observables.
    async fn link_alert(
        tx: &mut Tx,
        alert: &AlertRecord,
        case_id: i64,
        status: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        sqlx::query(
            "UPDATE alerts SET case_id = ?, status = ?, status_reason = NULL, triaged_by = ?, \
             triaged_at = ? WHERE id = ?",
        )
        .bind(case_id)
        .bind(status)
        .bind(by)
        .bind(&now)
        .bind(&alert.id)
        .execute(&mut **tx)
        .await
        .map_err(query_err("link alert to case"))?;
        mark_acknowledged(tx, &alert.id).await?;
        let case = fetch_case(tx, case_id).await?;
        let (first_seen, last_seen) = if case.alert_count == 0 {
            (alert.alert.timestamp, alert.alert.timestamp)
        } else {
            (
                case.first_seen.min(alert.alert.timestamp),
                case.last_seen.max(alert.alert.timestamp),
            )
        };
        let severity = case.severity.max(alert.alert.rule.level);
        sqlx::query(
            "UPDATE cases SET severity = ?, first_seen = ?, last_seen = ?, \
             alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = ?), updated_at = ? \
             WHERE id = ?",
        )
        .bind(severity.as_str())
        .bind(ts(first_seen))
        .bind(ts(last_seen))
        .bind(case_id)
        .bind(&now)
        .bind(case_id)
        .execute(&mut **tx)
        .await
        .map_err(query_err("widen case"))?;
        if let Some(old) = alert.case_id.filter(|old| *old != case_id) {
            // The old case keeps its span: it still describes when its story happened.
            sqlx::query(
                "UPDATE cases SET alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = ?), \
                 updated_at = ? WHERE id = ?",
            )
            .bind(old)
            .bind(&now)
            .bind(old)
            .execute(&mut **tx)
            .await
            .map_err(query_err("recount the alert's former case"))?;
            record(
                tx,
                old,
                by,
                "alert_moved_out",
                json!({"alert_id": alert.id, "to_case": case_id}),
            )
            .await?;
        }
        copy_alert_observables(tx, &alert.id, case_id, by).await
    }

    pub(super) async fn promote_alert_impl(
        &self,
        alert_id: &str,
        draft: &CaseDraft,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let alert = fetch_alert(&mut tx, alert_id).await?;
        let id = Self::insert_manual_case(
            &mut tx,
            draft,
            alert.alert.timestamp,
            &alert.alert.rule.id,
            alert.alert.host.as_deref(),
        )
        .await?;
        record(
            &mut tx,
            id,
            by,
            "created",
            json!({"title": draft.title, "alert_id": alert_id}),
        )
        .await?;
        Self::link_alert(&mut tx, &alert, id, "promoted", by).await?;
        let details = match alert.case_id {
            Some(old) => json!({"alert_id": alert_id, "from_case": old}),
            None => json!({"alert_id": alert_id}),
        };
        record(&mut tx, id, by, "alert_merged", details).await?;
        let case = fetch_case(&mut tx, id).await?;
        let change = Change {
            actor: by.to_owned(),
            action: "alert.promote",
            object_kind: "alert",
            object_id: alert_id.to_owned(),
            before: Some(json!({"case_id": alert.case_id, "status": alert.status})),
            after: Some(json!({"case": to_state("case", &case)?, "status": "promoted"})),
        };
        commit_audited(tx, change).await?;
        Ok(case)
    }

    pub(super) async fn merge_alert_impl(
        &self,
        alert_id: &str,
        case_id: i64,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let alert = fetch_alert(&mut tx, alert_id).await?;
        let before = fetch_case(&mut tx, case_id).await?;
        if alert.case_id == Some(case_id) {
            return Ok(before);
        }
        if before.status == CaseStatus::Closed {
            return Err(StoreError::Conflict {
                reason: format!("case {case_id} is closed: reopen it before merging alerts"),
            });
        }
        Self::link_alert(&mut tx, &alert, case_id, "merged", by).await?;
        let details = match alert.case_id {
            Some(old) => json!({"alert_id": alert_id, "from_case": old}),
            None => json!({"alert_id": alert_id}),
        };
        record(&mut tx, case_id, by, "alert_merged", details).await?;
        let case = fetch_case(&mut tx, case_id).await?;
        let change = Change {
            actor: by.to_owned(),
            action: "alert.merge",
            object_kind: "alert",
            object_id: alert_id.to_owned(),
            before: Some(json!({"case_id": alert.case_id, "status": alert.status})),
            after: Some(json!({"case_id": case_id, "status": "merged"})),
        };
        commit_audited(tx, change).await?;
        Ok(case)
    }

    pub(super) async fn add_observable_impl(
        &self,
        owner: &ObservableOwner,
        new: &NewObservable,
        by: &str,
    ) -> Result<(ObservableRecord, bool), StoreError> {
        let mut tx = self.write_tx().await?;
        let (case_id, alert_id) = match owner {
            ObservableOwner::Case(id) => {
                fetch_case(&mut tx, *id).await?;
                (Some(*id), None)
            }
            ObservableOwner::Alert(id) => {
                fetch_alert(&mut tx, id).await?;
                (None, Some(id.as_str()))
            }
        };
        let existing = sqlx::query(
            "SELECT * FROM observables WHERE case_id IS ? AND alert_id IS ? AND type = ? \
             AND value = ?",
        )
        .bind(case_id)
        .bind(alert_id)
        .bind(&new.kind)
        .bind(&new.value)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("find observable"))?
        .as_ref()
        .map(observable_from_row)
        .transpose()?;
        let now = ts(Utc::now());
        let (after, created, action, kind) = match existing {
            None => {
                let id: i64 = sqlx::query(
                    "INSERT INTO observables (case_id, alert_id, type, value, ioc, sighted, \
                     tags, created_by, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(case_id)
                .bind(alert_id)
                .bind(&new.kind)
                .bind(&new.value)
                .bind(i64::from(new.ioc))
                .bind(i64::from(new.sighted))
                .bind(tags_json(&new.tags)?)
                .bind(by)
                .bind(&now)
                .bind(&now)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("add observable"))?
                .get("id");
                let after = self.fetch_observable(&mut tx, id).await?;
                (after, true, "observable.create", "observable_added")
            }
            Some(before) => {
                let mut tags = before.tags.clone();
                for tag in &new.tags {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
                let ioc = before.ioc || new.ioc;
                let sighted = before.sighted || new.sighted;
                if tags == before.tags && ioc == before.ioc && sighted == before.sighted {
                    tx.commit().await.map_err(query_err("commit"))?;
                    return Ok((before, false));
                }
                sqlx::query(
                    "UPDATE observables SET ioc = ?, sighted = ?, tags = ?, updated_at = ? \
                     WHERE id = ?",
                )
                .bind(i64::from(ioc))
                .bind(i64::from(sighted))
                .bind(tags_json(&tags)?)
                .bind(&now)
                .bind(before.id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("merge observable"))?;
                let after = self.fetch_observable(&mut tx, before.id).await?;
                (after, false, "observable.update", "observable_updated")
            }
        };
        if let Some(case_id) = case_id {
            let details =
                json!({"observable_id": after.id, "type": after.kind, "value": after.value});
            record(&mut tx, case_id, by, kind, details).await?;
        }
        let change = Change {
            actor: by.to_owned(),
            action,
            object_kind: "observable",
            object_id: after.id.to_string(),
            before: None,
            after: Some(observable_state(&after)),
        };
        commit_audited(tx, change).await?;
        Ok((after, created))
    }

    async fn fetch_observable(&self, tx: &mut Tx, id: i64) -> Result<ObservableRecord, StoreError> {
        sqlx::query("SELECT * FROM observables WHERE id = ?")
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(query_err("get observable"))
            .and_then(|row| observable_from_row(&row))
    }

    pub(super) async fn list_observables_impl(
        &self,
        owner: &ObservableOwner,
    ) -> Result<Vec<ObservableRecord>, StoreError> {
        let rows = match owner {
            ObservableOwner::Case(id) => {
                sqlx::query("SELECT * FROM observables WHERE case_id = ? ORDER BY id").bind(*id)
            }
            ObservableOwner::Alert(id) => {
                sqlx::query("SELECT * FROM observables WHERE alert_id = ? ORDER BY id").bind(id)
            }
        }
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list observables"))?;
        let mut observables = rows
            .iter()
            .map(observable_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let intel = match owner {
            ObservableOwner::Case(id) => self.case_intel(*id).await?,
            ObservableOwner::Alert(id) => self.alert_intel(id).await?.unwrap_or_default(),
        };
        enrich(&mut observables, &intel);
        Ok(observables)
    }

    /// The intel matches of a case's alerts (only alerts that carry some are read).
    async fn case_intel(&self, case_id: i64) -> Result<Vec<IntelMatch>, StoreError> {
        let rows = sqlx::query("SELECT body FROM alerts WHERE case_id = ? AND intel_count > 0")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read the case's intel matches"))?;
        let mut intel = Vec::new();
        for row in rows {
            let alert: Alert = parse_json("alert", row.get("body"))?;
            for found in alert.intel {
                if !intel.contains(&found) {
                    intel.push(found);
                }
            }
        }
        Ok(intel)
    }

    async fn alert_intel(&self, alert_id: &str) -> Result<Option<Vec<IntelMatch>>, StoreError> {
        let row = sqlx::query("SELECT body FROM alerts WHERE id = ?")
            .bind(alert_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("read the alert's intel matches"))?;
        row.map(|row| parse_json::<Alert>("alert", row.get("body")).map(|a| a.intel))
            .transpose()
    }

    pub(super) async fn create_task_impl(
        &self,
        case_id: i64,
        new: &NewTask,
        by: &str,
    ) -> Result<TaskRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        fetch_case(&mut tx, case_id).await?;
        let now = ts(Utc::now());
        let id: i64 = sqlx::query(
            "INSERT INTO tasks (case_id, title, assignee, status, created_by, created_at, \
             updated_at) VALUES (?, ?, ?, 'open', ?, ?, ?) RETURNING id",
        )
        .bind(case_id)
        .bind(&new.title)
        .bind(&new.assignee)
        .bind(by)
        .bind(&now)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("create task"))?
        .get("id");
        let task = fetch_task(&mut tx, case_id, id).await?;
        record(
            &mut tx,
            case_id,
            by,
            "task_created",
            json!({"task_id": id, "title": task.title, "assignee": task.assignee}),
        )
        .await?;
        let change = Change {
            actor: by.to_owned(),
            action: "task.create",
            object_kind: "task",
            object_id: id.to_string(),
            before: None,
            after: Some(to_state("task", &task)?),
        };
        commit_audited(tx, change).await?;
        Ok(task)
    }

    pub(super) async fn list_tasks_impl(
        &self,
        case_id: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE case_id = ? ORDER BY id")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    pub(super) async fn update_task_impl(
        &self,
        case_id: i64,
        task_id: i64,
        update: &TaskUpdate,
        by: &str,
    ) -> Result<TaskRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let before = fetch_task(&mut tx, case_id, task_id).await?;
        let mut next = before.clone();
        if let Some(title) = &update.title {
            next.title = title.clone();
        }
        if let Some(assignee) = &update.assignee {
            next.assignee = assignee.clone();
        }
        if let Some(status) = update.status {
            next.status = status;
        }
        if next == before {
            return Ok(before);
        }
        sqlx::query(
            "UPDATE tasks SET title = ?, assignee = ?, status = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&next.title)
        .bind(&next.assignee)
        .bind(next.status.as_str())
        .bind(ts(Utc::now()))
        .bind(task_id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("update task"))?;
        let after = fetch_task(&mut tx, case_id, task_id).await?;
        let (before_state, after_state) = (to_state("task", &before)?, to_state("task", &after)?);
        let fields = changed_fields(
            &before_state,
            &after_state,
            &["title", "assignee", "status"],
        );
        record(
            &mut tx,
            case_id,
            by,
            "task_updated",
            json!({"task_id": task_id, "fields": fields}),
        )
        .await?;
        let change = Change {
            actor: by.to_owned(),
            action: "task.update",
            object_kind: "task",
            object_id: task_id.to_string(),
            before: Some(before_state),
            after: Some(after_state),
        };
        commit_audited(tx, change).await?;
        Ok(after)
    }

    pub(super) async fn add_comment_impl(
        &self,
        case_id: i64,
        text: &str,
        by: &str,
    ) -> Result<TimelineEntry, StoreError> {
        let mut tx = self.write_tx().await?;
        fetch_case(&mut tx, case_id).await?;
        let entry = record(&mut tx, case_id, by, "comment", json!({"text": text})).await?;
        let change = Change {
            actor: by.to_owned(),
            action: "case.comment",
            object_kind: "case",
            object_id: case_id.to_string(),
            before: None,
            after: Some(json!({"timeline_id": entry.id, "text": text})),
        };
        commit_audited(tx, change).await?;
        Ok(entry)
    }

    pub(super) async fn timeline_impl(
        &self,
        case_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM case_timeline WHERE case_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(case_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read the case timeline"))?;
        rows.iter().map(timeline_from_row).collect()
    }

    pub(super) async fn figures_impl(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        // julianday() reads the stored RFC 3339 texts (fraction and `Z` included); the
        // difference in days times 86400 is seconds.
        let alerts = sqlx::query(
            "SELECT level, COUNT(*) AS alerts, \
             AVG((julianday(detected_at) - julianday(timestamp)) * 86400.0) AS detect, \
             COUNT(acknowledged_at) AS acknowledged, \
             AVG((julianday(acknowledged_at) - julianday(detected_at)) * 86400.0) AS ack \
             FROM alerts WHERE detected_at >= ? AND detected_at < ? GROUP BY level",
        )
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of alerts"))?;
        let cases = sqlx::query(
            "SELECT severity, COUNT(*) AS resolved, \
             AVG((julianday(closed_at) - julianday(created_at)) * 86400.0) AS resolve \
             FROM cases WHERE status = 'closed' AND closed_at >= ? AND closed_at < ? \
             GROUP BY severity",
        )
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of cases"))?;
        figures_from_rows(&alerts, &cases)
    }

    pub(super) async fn search_impl(
        &self,
        text: &str,
        max_tlp: Tlp,
        limit: i64,
    ) -> Result<SearchHits, StoreError> {
        let pattern = contains_pattern(text);
        let cases = sqlx::query(
            "SELECT * FROM cases WHERE tlp <= ? AND (title LIKE ? ESCAPE '\\' \
             OR description LIKE ? ESCAPE '\\') ORDER BY id LIMIT ?",
        )
        .bind(max_tlp.rank())
        .bind(&pattern)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("search cases"))?;
        let observables = sqlx::query(
            "SELECT * FROM observables WHERE case_id IN (SELECT id FROM cases WHERE tlp <= ?) \
             AND value LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
        )
        .bind(max_tlp.rank())
        .bind(&pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("search observables"))?;
        Ok(SearchHits {
            cases: cases
                .iter()
                .map(super::case_from_row)
                .collect::<Result<_, _>>()?,
            observables: observables
                .iter()
                .map(observable_from_row)
                .collect::<Result<_, _>>()?,
        })
    }
}

async fn fetch_task(tx: &mut Tx, case_id: i64, id: i64) -> Result<TaskRecord, StoreError> {
    sqlx::query("SELECT * FROM tasks WHERE id = ? AND case_id = ?")
        .bind(id)
        .bind(case_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err("get task"))?
        .as_ref()
        .map(task_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound {
            kind: "task",
            id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;
    use crate::alert::{Alert, Level, RuleRef};
    use crate::event::Event;
    use crate::store::*;
    use serde_json::json;

    #[test]
    fn like_wildcards_in_the_text_are_escaped() {
        assert_eq!(contains_pattern("10.0.0.1"), "%10.0.0.1%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    /// The IcedID cookie request of the tr0llope capture (tests/fixtures/corpora/suricata),
    /// reduced to the fields the store reads.
    fn icedid_alert(rule: &str, at: &str) -> Alert {
        let event = Event::from_value(json!({
            "@timestamp": at,
            "source": {"ip": "172.16.0.153"},
            "destination": {"ip": "67.205.184.237"},
            "url": {"domain": "vgiragdoffy.com"},
        }))
        .unwrap();
        let rule = RuleRef {
            id: rule.into(),
            title: "ET MALWARE Win32/IcedID Request Cookie".into(),
            level: Level::High,
            ..Default::default()
        };
        Alert::from_event(rule, event, chrono::Utc::now())
    }

    fn draft(title: &str) -> CaseDraft {
        CaseDraft {
            title: title.into(),
            description: String::new(),
            severity: Level::Low,
            tlp: Tlp::Amber,
            pap: Tlp::Amber,
            tags: Vec::new(),
            assignee: None,
        }
    }

    #[tokio::test]
    async fn promote_and_merge_move_alerts_with_their_observables_and_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_dir(dir.path()).await.unwrap();
        let first = icedid_alert("suricata-2032086", "2022-10-31T14:47:28.168061Z");
        let second = icedid_alert("suricata-2030053", "2022-10-31T14:47:29.000000Z");
        for alert in [&first, &second] {
            store.insert_alert(alert).await.unwrap();
        }
        let by_value = AlertFilter {
            observable: Some("67.205.184.237".into()),
            ..Default::default()
        };
        assert_eq!(store.list_alerts(&by_value).await.unwrap().len(), 2);

        let case = store
            .promote_alert(&first.id, &draft("IcedID"), "alice")
            .await
            .unwrap();
        assert_eq!(case.alert_count, 1);
        assert_eq!(case.severity, Level::High, "raised to the alert's level");
        assert_eq!(case.group_key, MANUAL_GROUP_KEY);
        let other = store.create_case(&draft("elsewhere"), "bob").await.unwrap();
        store
            .merge_alert(&second.id, other.id, "bob")
            .await
            .unwrap();
        // Moving the second alert on into the first case recounts both.
        let case = store.merge_alert(&second.id, case.id, "bob").await.unwrap();
        assert_eq!(case.alert_count, 2);
        assert_eq!(
            store.get_case(other.id).await.unwrap().unwrap().alert_count,
            0
        );
        let moved = store.get_alert(&second.id).await.unwrap().unwrap();
        assert_eq!(moved.status, "merged");

        let owner = ObservableOwner::Case(case.id);
        let values: Vec<String> = store
            .list_observables(&owner)
            .await
            .unwrap()
            .into_iter()
            .map(|o| format!("{} {}", o.kind, o.value))
            .collect();
        assert_eq!(
            values,
            [
                "domain vgiragdoffy.com",
                "ip 172.16.0.153",
                "ip 67.205.184.237"
            ]
        );

        let kinds: Vec<String> = store
            .timeline(case.id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["created", "alert_merged", "alert_merged"]);
        let left: Vec<String> = store
            .timeline(other.id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(left, ["created", "alert_merged", "alert_moved_out"]);
        let entries = store.audit_entries(0, i64::MAX).await.unwrap();
        assert!(matches!(
            crate::audit::verify(&entries),
            crate::audit::Verdict::Intact { .. }
        ));
    }

    #[tokio::test]
    async fn a_repeated_observable_merges_and_a_task_of_another_case_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_dir(dir.path()).await.unwrap();
        let case = store.create_case(&draft("c"), "alice").await.unwrap();
        let owner = ObservableOwner::Case(case.id);
        let new = NewObservable {
            kind: "ip".into(),
            value: "67.205.184.237".into(),
            tags: vec!["c2".into()],
            ..Default::default()
        };
        let (first, created) = store.add_observable(&owner, &new, "alice").await.unwrap();
        assert!(created);
        let again = NewObservable {
            ioc: true,
            tags: vec!["icedid".into(), "c2".into()],
            ..new.clone()
        };
        let (merged, created) = store.add_observable(&owner, &again, "bob").await.unwrap();
        assert!(!created);
        assert_eq!(merged.id, first.id);
        assert!(merged.ioc);
        assert_eq!(merged.tags, ["c2", "icedid"]);
        let missing = store
            .add_observable(&ObservableOwner::Case(99), &new, "alice")
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })));

        let task = NewTask {
            title: "t".into(),
            assignee: None,
        };
        let task = store.create_task(case.id, &task, "alice").await.unwrap();
        let other = store.create_case(&draft("d"), "alice").await.unwrap();
        let done = TaskUpdate {
            status: Some(TaskStatus::Done),
            ..Default::default()
        };
        let wrong = store.update_task(other.id, task.id, &done, "alice").await;
        assert!(matches!(wrong, Err(StoreError::NotFound { .. })));
        let updated = store
            .update_task(case.id, task.id, &done, "alice")
            .await
            .unwrap();
        assert_eq!(updated.status, TaskStatus::Done);
    }
}
