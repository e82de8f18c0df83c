//! The life of an API key after it is made: whether it is revoked, when it was last
//! used, the list an administrator reads (`kastell apikey list`) and revocation
//! (`kastell apikey revoke`).
//!
//! Like [`super::privacy`], the SQL is written once with `$N` parameters, which both
//! backends run, and expanded for each store by [`key_store!`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{ApiKeyRecord, CaseStore, PostgresStore, SqliteStore, StoreError};
use crate::audit::Change;

/// How often a key's `last_used_at` is written at most: once a minute keeps the figure
/// useful to an administrator without turning every authenticated read into a write.
pub const LAST_USED_RESOLUTION: chrono::Duration = chrono::Duration::seconds(60);

/// An API key with its revocation and last use (never its hash: the record skips it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyStatus {
    #[serde(flatten)]
    pub key: ApiKeyRecord,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When a request last authenticated with the key, to [`LAST_USED_RESOLUTION`].
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKeyStatus {
    /// Whether a use at `now` should be written (the last one is older than the
    /// resolution, or there is none).
    pub fn use_is_news(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|last| now - last >= LAST_USED_RESOLUTION)
    }
}

/// Listing and revoking API keys, for the `kastell apikey` commands.
#[async_trait]
pub trait KeyStore: CaseStore {
    /// Every key, oldest first, revoked ones included.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyStatus>, StoreError>;

    /// Revokes the key named `name` as `by`; audited as `apikey.revoke`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown name, [`StoreError::Conflict`] for a key
    /// revoked already.
    async fn revoke_api_key(&self, name: &str, by: &str) -> Result<ApiKeyStatus, StoreError>;
}

fn status_from_row<R>(row: &R) -> Result<ApiKeyStatus, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let time = |what: &'static str, column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.get::<Option<String>, _>(column)
            .map(|text| super::parse_ts(what, &text))
            .transpose()
    };
    Ok(ApiKeyStatus {
        key: super::api_key_from_row(row)?,
        revoked_at: time("api key revoked_at", "revoked_at")?,
        last_used_at: time("api key last_used_at", "last_used_at")?,
    })
}

impl PostgresStore {
    /// The key with id `id` and its status, for each authentication. (SQLite reads it
    /// through its synchronous readers, `super::readers`.)
    pub(super) async fn api_key_status_impl(
        &self,
        id: &str,
    ) -> Result<Option<ApiKeyStatus>, StoreError> {
        sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(super::query_err("get api key"))?
            .as_ref()
            .map(status_from_row)
            .transpose()
    }
}

macro_rules! key_store {
    ($store:ty, $append:path) => {
        impl $store {
            /// Records a use of the key; a use within [`LAST_USED_RESOLUTION`] of the
            /// recorded one changes nothing. Usage is not a change to audit.
            pub(super) async fn mark_api_key_used_impl(
                &self,
                id: &str,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $3)",
                )
                .bind(super::ts(at))
                .bind(id)
                .bind(super::ts(at - LAST_USED_RESOLUTION))
                .execute(&mut *tx)
                .await
                .map_err(super::query_err("record api key use"))?;
                tx.commit().await.map_err(super::query_err("commit"))?;
                Ok(())
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn list_api_keys(&self) -> Result<Vec<ApiKeyStatus>, StoreError> {
                let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(super::query_err("list api keys"))?;
                rows.iter().map(status_from_row).collect()
            }

            async fn revoke_api_key(
                &self,
                name: &str,
                by: &str,
            ) -> Result<ApiKeyStatus, StoreError> {
                let mut tx = self.write_tx().await?;
                let before = sqlx::query("SELECT * FROM api_keys WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(super::query_err("find api key"))?
                    .as_ref()
                    .map(status_from_row)
                    .transpose()?
                    .ok_or_else(|| StoreError::NotFound {
                        kind: "api key named",
                        id: format!("{name:?}"),
                    })?;
                if let Some(at) = before.revoked_at {
                    return Err(StoreError::Conflict {
                        reason: format!(
                            "the API key named {name:?} was revoked already, at {}",
                            super::ts(at)
                        ),
                    });
                }
                let mut after = before.clone();
                after.revoked_at = Some(Utc::now());
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                    .bind(after.revoked_at.map(super::ts))
                    .bind(&after.key.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(super::query_err("revoke api key"))?;
                let change = Change {
                    actor: by.to_owned(),
                    action: "apikey.revoke",
                    object_kind: "apikey",
                    object_id: after.key.id.clone(),
                    before: Some(super::to_state("api key", &before)?),
                    after: Some(super::to_state("api key", &after)?),
                };
                $append(&mut tx, change).await?;
                tx.commit().await.map_err(super::query_err("commit"))?;
                tracing::info!(name, id = %after.key.id, by, "api key revoked");
                Ok(after)
            }
        }
    };
}

key_store!(SqliteStore, super::append_audit);
key_store!(PostgresStore, super::postgres::append_audit);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tlp;

    #[test]
    fn a_use_is_written_once_a_minute_at_most() {
        let now = Utc::now();
        let mut status = ApiKeyStatus {
            key: ApiKeyRecord {
                id: "k".into(),
                name: "n".into(),
                role: "analyst".into(),
                tlp: Tlp::Amber,
                hash: "h".into(),
                created_at: now,
            },
            revoked_at: None,
            last_used_at: None,
        };
        assert!(status.use_is_news(now));
        status.last_used_at = Some(now - chrono::Duration::seconds(59));
        assert!(!status.use_is_news(now));
        status.last_used_at = Some(now - chrono::Duration::seconds(60));
        assert!(status.use_is_news(now));
    }
}
