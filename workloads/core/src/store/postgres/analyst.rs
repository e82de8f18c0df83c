//! The PostgreSQL side of the analyst's work on cases: the SQL of
//! [`store::analyst`](super::super::analyst) in PostgreSQL's dialect. Row decoders and the
//! SQL-free helpers are shared with the SQLite store.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use super::super::analyst::{
    changed_fields, contains_pattern, enrich, figures_from_rows, observable_from_row,
    observable_state, tags_json, task_from_row, timeline_from_row,
};
use super::super::{
    case_change, parse_json, query_err, to_state, ts, AlertRecord, CaseDraft, CaseRecord,
    CaseStatus, NewObservable, NewTask, ObservableOwner, ObservableRecord, SearchHits,
    SeverityFigures, StoreError, TaskRecord, TaskUpdate, TimelineEntry, Tlp, MANUAL_GROUP_KEY,
};
use super::{commit_audited, fetch_alert, fetch_case, PostgresStore, Tx};
use crate::alert::{Alert, IntelMatch};
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
        "INSERT INTO case_timeline (case_id, at, actor, kind, details) VALUES ($1, $2, $3, $4, $5) \
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

/// Copies an alert's observables into a case; one the case has already keeps its tags
/// and gains the alert's flags.
pub(super) async fn copy_alert_observables(
    tx: &mut Tx,
    alert_id: &str,
    case_id: i64,
    by: &str,
) -> Result<(), StoreError> {
    let now = ts(Utc::now());
    sqlx::query(
        "INSERT INTO observables (case_id, type, value, ioc, sighted, tags, created_by, \
         created_at, updated_at) \
         SELECT $1, type, value, ioc, sighted, tags, $2, $3, $4 FROM observables \
         WHERE alert_id = $5 \
         ON CONFLICT (case_id, type, value) DO UPDATE SET \
         ioc = GREATEST(observables.ioc, excluded.ioc), \
         sighted = GREATEST(observables.sighted, excluded.sighted)",
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
    sqlx::query("UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, $1) WHERE id = $2")
        .bind(ts(Utc::now()))
        .bind(alert_id)
        .execute(&mut **tx)
        .await
        .map_err(query_err("mark alert acknowledged"))?;
    Ok(())
}

impl PostgresStore {
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
             assignee, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
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
            "UPDATE alerts SET case_id = $1, status = $2, status_reason = NULL, triaged_by = $3, \
             triaged_at = $4 WHERE id = $5",
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
            "UPDATE cases SET severity = $1, first_seen = $2, last_seen = $3, \
             alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = $4), updated_at = $5 \
             WHERE id = $6",
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
                "UPDATE cases SET alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = $1), \
                 updated_at = $2 WHERE id = $3",
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
            "SELECT * FROM observables WHERE case_id IS NOT DISTINCT FROM $1 \
             AND alert_id IS NOT DISTINCT FROM $2 AND type = $3 \
             AND value = $4",
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
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
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
                    "UPDATE observables SET ioc = $1, sighted = $2, tags = $3, updated_at = $4 \
                     WHERE id = $5",
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
        sqlx::query("SELECT * FROM observables WHERE id = $1")
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
                sqlx::query("SELECT * FROM observables WHERE case_id = $1 ORDER BY id").bind(*id)
            }
            ObservableOwner::Alert(id) => {
                sqlx::query("SELECT * FROM observables WHERE alert_id = $1 ORDER BY id").bind(id)
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
        let rows = sqlx::query("SELECT body FROM alerts WHERE case_id = $1 AND intel_count > 0")
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
        let row = sqlx::query("SELECT body FROM alerts WHERE id = $1")
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
             updated_at) VALUES ($1, $2, $3, 'open', $4, $5, $6) RETURNING id",
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
        let rows = sqlx::query("SELECT * FROM tasks WHERE case_id = $1 ORDER BY id")
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
            "UPDATE tasks SET title = $1, assignee = $2, status = $3, updated_at = $4 WHERE id = $5",
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
            "SELECT * FROM case_timeline WHERE case_id = $1 AND id > $2 ORDER BY id LIMIT $3",
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
        // The stored RFC 3339 texts cast to timestamptz; the epoch of their difference is
        // seconds. `COLLATE "C"` compares the texts by bytes, as SQLite does.
        let alerts = sqlx::query(
            r#"SELECT level, COUNT(*) AS alerts,
               AVG(EXTRACT(EPOCH FROM detected_at::timestamptz - "timestamp"::timestamptz))::float8
                 AS detect,
               COUNT(acknowledged_at) AS acknowledged,
               AVG(EXTRACT(EPOCH FROM acknowledged_at::timestamptz - detected_at::timestamptz))::float8
                 AS ack
               FROM alerts WHERE detected_at COLLATE "C" >= $1 AND detected_at COLLATE "C" < $2
               GROUP BY level"#,
        )
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of alerts"))?;
        let cases = sqlx::query(
            r#"SELECT severity, COUNT(*) AS resolved,
               AVG(EXTRACT(EPOCH FROM closed_at::timestamptz - created_at::timestamptz))::float8
                 AS resolve
               FROM cases WHERE status = 'closed'
               AND closed_at COLLATE "C" >= $1 AND closed_at COLLATE "C" < $2
               GROUP BY severity"#,
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
        // ILIKE: SQLite's LIKE ignores the case of ASCII letters, PostgreSQL's does not.
        let cases = sqlx::query(
            "SELECT * FROM cases WHERE tlp <= $1 AND (title ILIKE $2 ESCAPE '\\' \
             OR description ILIKE $3 ESCAPE '\\') ORDER BY id LIMIT $4",
        )
        .bind(max_tlp.rank())
        .bind(&pattern)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("search cases"))?;
        let observables = sqlx::query(
            "SELECT * FROM observables WHERE case_id IN (SELECT id FROM cases WHERE tlp <= $1) \
             AND value ILIKE $2 ESCAPE '\\' ORDER BY id LIMIT $3",
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
    sqlx::query("SELECT * FROM tasks WHERE id = $1 AND case_id = $2")
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
