//! The PostgreSQL side of NIS2 (art. 23) significant incidents: whether a case is one, a
//! column of the case (migration 0007) that the API sets and the compliance report reads.
//! Flagging is audited (`case.significant_incident`) and noted on the case's timeline.

use serde_json::json;
use sqlx::Row;

use super::super::nis2::flag_change;
use super::{analyst, commit_audited, fetch_case, PostgresStore};
use crate::store::{query_err, ts, StoreError};

pub(super) async fn set(
    store: &PostgresStore,
    case_id: i64,
    significant: bool,
    by: &str,
) -> Result<bool, StoreError> {
    let mut tx = store.write_tx().await?;
    fetch_case(&mut tx, case_id).await?;
    let before: bool = sqlx::query("SELECT significant_incident FROM cases WHERE id = $1")
        .bind(case_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("read a case's significant-incident flag"))?
        .get("significant_incident");
    if before == significant {
        return Ok(significant);
    }
    sqlx::query("UPDATE cases SET significant_incident = $1, updated_at = $2 WHERE id = $3")
        .bind(significant)
        .bind(ts(chrono::Utc::now()))
        .bind(case_id)
        .execute(&mut *tx)
        .await
        .map_err(query_err("set a case's significant-incident flag"))?;
    let details = json!({ "significant_incident": significant });
    analyst::record(&mut tx, case_id, by, "significant_incident", details).await?;
    commit_audited(tx, flag_change(by, case_id, before, significant)).await?;
    Ok(significant)
}

pub(super) async fn get(store: &PostgresStore, case_id: i64) -> Result<bool, StoreError> {
    sqlx::query("SELECT significant_incident FROM cases WHERE id = $1")
        .bind(case_id)
        .fetch_optional(&store.pool)
        .await
        .map_err(query_err("read a case's significant-incident flag"))?
        .map(|row| row.get("significant_incident"))
        .ok_or(StoreError::NotFound {
            kind: "case",
            id: case_id.to_string(),
        })
}

pub(super) async fn all(store: &PostgresStore) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query("SELECT id FROM cases WHERE significant_incident ORDER BY id")
        .fetch_all(&store.pool)
        .await
        .map_err(query_err("list significant incidents"))?;
    Ok(rows.iter().map(|row| row.get("id")).collect())
}
