//! The SOC figures as one caller may see them: only alerts without a case or in a case
//! at most the caller's TLP ceiling, and only such cases. A count of RED cases is itself
//! information about them (that they exist, how many, how severe, how fast they were
//! closed), so a reader cleared to AMBER gets figures over what it may read.

use chrono::{DateTime, Utc};

use super::analyst::figures_from_rows;
use super::{query_err, ts, PostgresStore, SeverityFigures, SqliteStore, StoreError, Tlp};

impl SqliteStore {
    pub(super) async fn figures_within_impl(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max_tlp: Tlp,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        // julianday() reads the stored RFC 3339 texts (fraction and `Z` included); the
        // difference in days times 86400 is seconds.
        let alerts = sqlx::query(
            "SELECT level, COUNT(*) AS alerts, \
             AVG((julianday(detected_at) - julianday(timestamp)) * 86400.0) AS detect, \
             COUNT(acknowledged_at) AS acknowledged, \
             AVG((julianday(acknowledged_at) - julianday(detected_at)) * 86400.0) AS ack \
             FROM alerts WHERE detected_at >= ? AND detected_at < ? \
             AND (case_id IS NULL OR case_id IN (SELECT id FROM cases WHERE tlp <= ?)) \
             GROUP BY level",
        )
        .bind(ts(from))
        .bind(ts(to))
        .bind(max_tlp.rank())
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of alerts"))?;
        let cases = sqlx::query(
            "SELECT severity, COUNT(*) AS resolved, \
             AVG((julianday(closed_at) - julianday(created_at)) * 86400.0) AS resolve \
             FROM cases WHERE status = 'closed' AND closed_at >= ? AND closed_at < ? \
             AND tlp <= ? GROUP BY severity",
        )
        .bind(ts(from))
        .bind(ts(to))
        .bind(max_tlp.rank())
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of cases"))?;
        figures_from_rows(&alerts, &cases)
    }
}

impl PostgresStore {
    pub(super) async fn figures_within_impl(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max_tlp: Tlp,
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
               AND (case_id IS NULL OR case_id IN (SELECT id FROM cases WHERE tlp <= $3))
               GROUP BY level"#,
        )
        .bind(ts(from))
        .bind(ts(to))
        .bind(max_tlp.rank())
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of alerts"))?;
        let cases = sqlx::query(
            r#"SELECT severity, COUNT(*) AS resolved,
               AVG(EXTRACT(EPOCH FROM closed_at::timestamptz - created_at::timestamptz))::float8
                 AS resolve
               FROM cases WHERE status = 'closed'
               AND closed_at COLLATE "C" >= $1 AND closed_at COLLATE "C" < $2
               AND tlp <= $3
               GROUP BY severity"#,
        )
        .bind(ts(from))
        .bind(ts(to))
        .bind(max_tlp.rank())
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("figures of cases"))?;
        figures_from_rows(&alerts, &cases)
    }
}
