//! Merging two cases of one grouping key (SQLite): what the cases stage does when a late
//! alert links two cases it opened separately, so that the cases it ends with do not
//! depend on the order the alerts arrived in. The PostgreSQL side is
//! `postgres/merge.rs`; the union of the two cases' fields is computed here for both.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use super::{
    analyst, case_from_row, commit_audited, fetch_case, query_err, to_state, ts, CaseRecord,
    CaseStatus, Resolution, SqliteStore, StoreError, Tlp,
};
use crate::audit::Change;

/// The fields of `into` after `from` merged into it. Each is a union that does not
/// depend on which of the two came first, so cases merged in any order end alike.
pub(super) struct Merged {
    pub severity: crate::alert::Level,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub tlp: Tlp,
    pub pap: Tlp,
    pub tags: Vec<String>,
}

impl Merged {
    pub(super) fn of(into: &CaseRecord, from: &CaseRecord) -> Self {
        let mut tags = into.tags.clone();
        for tag in &from.tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        // The stricter marking wins: the merged case holds the other's data too.
        let stricter = |a: Tlp, b: Tlp| if b.rank() > a.rank() { b } else { a };
        Merged {
            severity: into.severity.max(from.severity),
            first_seen: into.first_seen.min(from.first_seen),
            last_seen: into.last_seen.max(from.last_seen),
            tlp: stricter(into.tlp, from.tlp),
            pap: stricter(into.pap, from.pap),
            tags,
        }
    }
}

/// Refuses what the stage never asks for: a case merged into itself, a closed case, and
/// two cases of different grouping keys (an analyst moves single alerts instead).
pub(super) fn check_mergeable(into: &CaseRecord, from: &CaseRecord) -> Result<(), StoreError> {
    let reason = if into.id == from.id {
        format!("case {} cannot be merged into itself", into.id)
    } else if let Some(closed) = [into, from].iter().find(|c| c.status == CaseStatus::Closed) {
        format!("case {} is closed", closed.id)
    } else if into.group_key != from.group_key {
        format!(
            "cases {} and {} group different alerts ({} and {})",
            into.id, from.id, into.group_key, from.group_key
        )
    } else {
        return Ok(());
    };
    Err(StoreError::Conflict { reason })
}

/// The audit entry of a merge: both cases before and after, and the alerts that moved.
pub(super) fn merge_change(
    by: &str,
    before: (&CaseRecord, &CaseRecord),
    after: (&CaseRecord, &CaseRecord),
    alert_ids: &[String],
) -> Result<Change, StoreError> {
    let (into_before, from_before) = before;
    let (into_after, from_after) = after;
    Ok(Change {
        actor: by.to_owned(),
        action: "case.merge",
        object_kind: "case",
        object_id: from_after.id.to_string(),
        before: Some(json!({
            "case": to_state("case", from_before)?,
            "into": to_state("case", into_before)?,
        })),
        after: Some(json!({
            "case": to_state("case", from_after)?,
            "into": to_state("case", into_after)?,
            "alert_ids": alert_ids,
        })),
    })
}

/// The summary a merged case is closed with.
pub(super) fn merged_summary(into: i64) -> String {
    format!("merged into case {into}: a later alert linked the two")
}

impl SqliteStore {
    pub(super) async fn open_cases_near_impl(
        &self,
        group_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CaseRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM cases WHERE group_key = ? AND status != 'closed' \
             AND last_seen >= ? AND first_seen <= ? ORDER BY first_seen, id",
        )
        .bind(group_key)
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("find open cases near an alert"))?;
        rows.iter().map(case_from_row).collect()
    }

    pub(super) async fn merge_cases_impl(
        &self,
        into: i64,
        from: i64,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let into_before = fetch_case(&mut tx, into).await?;
        let from_before = fetch_case(&mut tx, from).await?;
        check_mergeable(&into_before, &from_before)?;
        let now = ts(Utc::now());

        let alert_ids: Vec<String> =
            sqlx::query("SELECT id FROM alerts WHERE case_id = ? ORDER BY timestamp, id")
                .bind(from)
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("list the merged case's alerts"))?
                .iter()
                .map(|row| row.get("id"))
                .collect();
        sqlx::query("UPDATE alerts SET case_id = ? WHERE case_id = ?")
            .bind(into)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(query_err("move the merged case's alerts"))?;
        sqlx::query("UPDATE tasks SET case_id = ?, updated_at = ? WHERE case_id = ?")
            .bind(into)
            .bind(&now)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(query_err("move the merged case's tasks"))?;
        // Copied, not moved: the closed case keeps the record of what it held. `WHERE
        // true` as in `copy_alert_observables` (SQLite's upsert ambiguity).
        sqlx::query(
            "INSERT INTO observables (case_id, type, value, ioc, sighted, tags, created_by, \
             created_at, updated_at) \
             SELECT ?, type, value, ioc, sighted, tags, ?, ?, ? FROM observables \
             WHERE case_id = ? AND true \
             ON CONFLICT (case_id, type, value) DO UPDATE SET \
             ioc = max(ioc, excluded.ioc), sighted = max(sighted, excluded.sighted)",
        )
        .bind(into)
        .bind(by)
        .bind(&now)
        .bind(&now)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(query_err("add the merged case's observables"))?;

        let merged = Merged::of(&into_before, &from_before);
        sqlx::query(
            "UPDATE cases SET severity = ?, first_seen = ?, last_seen = ?, tlp = ?, pap = ?, \
             tags = ?, alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = ?), \
             updated_at = ? WHERE id = ?",
        )
        .bind(merged.severity.as_str())
        .bind(ts(merged.first_seen))
        .bind(ts(merged.last_seen))
        .bind(merged.tlp.rank())
        .bind(merged.pap.rank())
        .bind(analyst::tags_json(&merged.tags)?)
        .bind(into)
        .bind(&now)
        .bind(into)
        .execute(&mut *tx)
        .await
        .map_err(query_err("widen the surviving case"))?;
        sqlx::query(
            "UPDATE cases SET status = 'closed', resolution = ?, summary = ?, closed_at = ?, \
             alert_count = 0, updated_at = ? WHERE id = ?",
        )
        .bind(Resolution::Duplicate.as_str())
        .bind(merged_summary(into))
        .bind(&now)
        .bind(&now)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(query_err("close the merged case"))?;

        let ids = Value::from(alert_ids.clone());
        let details = json!({"from_case": from, "alert_ids": ids});
        analyst::record(&mut tx, into, by, "case_merged", details).await?;
        let details = json!({"to_case": into, "alert_ids": ids});
        analyst::record(&mut tx, from, by, "merged_into", details).await?;
        let into_after = fetch_case(&mut tx, into).await?;
        let from_after = fetch_case(&mut tx, from).await?;
        let change = merge_change(
            by,
            (&into_before, &from_before),
            (&into_after, &from_after),
            &alert_ids,
        )?;
        commit_audited(tx, change).await?;
        Ok(into_after)
    }
}
