//! Merging two cases of one grouping key: the SQL of [`store::merge`](super::super::merge)
//! in PostgreSQL's dialect, with the same union of fields and the same audit entry.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use super::super::merge::{check_mergeable, merge_change, merged_summary, Merged};
use super::super::{analyst::tags_json, case_from_row, query_err, ts, CaseRecord, Resolution};
use super::{analyst, commit_audited, fetch_case, PostgresStore, StoreError};

impl PostgresStore {
    pub(super) async fn open_cases_near_impl(
        &self,
        group_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CaseRecord>, StoreError> {
        // `COLLATE "C"`: the times are fixed-width text, ordered byte by byte.
        let rows = sqlx::query(
            r#"SELECT * FROM cases WHERE group_key = $1 AND status != 'closed'
               AND last_seen COLLATE "C" >= $2 AND first_seen COLLATE "C" <= $3
               ORDER BY first_seen COLLATE "C", id"#,
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

        let alert_ids: Vec<String> = sqlx::query(
            r#"SELECT id FROM alerts WHERE case_id = $1 ORDER BY timestamp COLLATE "C", id"#,
        )
        .bind(from)
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("list the merged case's alerts"))?
        .iter()
        .map(|row| row.get("id"))
        .collect();
        sqlx::query("UPDATE alerts SET case_id = $1 WHERE case_id = $2")
            .bind(into)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(query_err("move the merged case's alerts"))?;
        sqlx::query("UPDATE tasks SET case_id = $1, updated_at = $2 WHERE case_id = $3")
            .bind(into)
            .bind(&now)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(query_err("move the merged case's tasks"))?;
        sqlx::query(
            "INSERT INTO observables (case_id, type, value, ioc, sighted, tags, created_by, \
             created_at, updated_at) \
             SELECT $1, type, value, ioc, sighted, tags, $2, $3, $3 FROM observables \
             WHERE case_id = $4 \
             ON CONFLICT (case_id, type, value) DO UPDATE SET \
             ioc = GREATEST(observables.ioc, excluded.ioc), \
             sighted = GREATEST(observables.sighted, excluded.sighted)",
        )
        .bind(into)
        .bind(by)
        .bind(&now)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(query_err("add the merged case's observables"))?;

        let merged = Merged::of(&into_before, &from_before);
        sqlx::query(
            "UPDATE cases SET severity = $1, first_seen = $2, last_seen = $3, tlp = $4, \
             pap = $5, tags = $6, alert_count = (SELECT COUNT(*) FROM alerts WHERE case_id = $7), \
             updated_at = $8 WHERE id = $7",
        )
        .bind(merged.severity.as_str())
        .bind(ts(merged.first_seen))
        .bind(ts(merged.last_seen))
        .bind(merged.tlp.rank())
        .bind(merged.pap.rank())
        .bind(tags_json(&merged.tags)?)
        .bind(into)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(query_err("widen the surviving case"))?;
        sqlx::query(
            "UPDATE cases SET status = 'closed', resolution = $1, summary = $2, closed_at = $3, \
             alert_count = 0, updated_at = $3 WHERE id = $4",
        )
        .bind(Resolution::Duplicate.as_str())
        .bind(merged_summary(into))
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
