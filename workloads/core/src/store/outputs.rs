//! The idempotency keys of the respond stage's outputs the cases stage has applied, in
//! the SQLite store: a redelivered case operation or step result is recognised and left
//! alone. Kept in the shared store rather than in a process, so every replica of the
//! cases stage sees what the others applied.

use chrono::Utc;

use super::{query_err, ts, SqliteStore, StoreError};

impl SqliteStore {
    pub(super) async fn response_output_applied_impl(&self, key: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM response_outputs WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("look up a response output"))?;
        Ok(found.is_some())
    }

    pub(super) async fn record_response_output_impl(
        &self,
        key: &str,
        case_id: i64,
        kind: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO response_outputs (idempotency_key, case_id, kind, applied_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(case_id)
        .bind(kind)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(query_err("record a response output"))?;
        Ok(done.rows_affected() == 1)
    }
}
