//! The idempotency keys of applied respond-stage outputs, in PostgreSQL: the SQL of
//! [`store::outputs`](super::super::outputs) in PostgreSQL's dialect. One table for every
//! replica of the cases stage, so a redelivery to another replica is recognised too.

use chrono::Utc;

use super::super::{query_err, ts, StoreError};
use super::PostgresStore;

impl PostgresStore {
    pub(super) async fn response_output_applied_impl(&self, key: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM response_outputs WHERE idempotency_key = $1")
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
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
