//! Where a case store is, as one string every command accepts: a path (or `sqlite://`
//! path) for the embedded SQLite store, a `postgres://` or `postgresql://` URL for
//! PostgreSQL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::privacy::PrivacyStore;
use super::{PostgresStore, SqliteStore, StoreError, SQLITE_FILE};

/// A case store's location.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A data directory holding [`SQLITE_FILE`].
    SqliteDir(PathBuf),
    /// The SQLite database file itself (a path ending in `.sqlite` or `.db`).
    SqliteFile(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl StoreUrl {
    /// The SQLite database file, when the store is SQLite.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match self {
            StoreUrl::SqliteDir(dir) => Some(dir.join(SQLITE_FILE)),
            StoreUrl::SqliteFile(file) => Some(file.clone()),
            StoreUrl::Postgres(_) => None,
        }
    }

    /// Whether a store exists there already. A PostgreSQL database is taken to exist:
    /// only connecting tells, and [`open`] reports that.
    pub fn exists(&self) -> bool {
        self.sqlite_file().is_none_or(|file| file.is_file())
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(raw: &str) -> Result<Self, StoreError> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(raw.to_owned()));
        }
        let path = raw.strip_prefix("sqlite://").unwrap_or(raw);
        if path.is_empty() || raw.contains("://") && !raw.starts_with("sqlite://") {
            return Err(StoreError::Url {
                url: super::postgres::redact(raw),
                reason: "expected a directory or .sqlite file path, sqlite://PATH, \
                         postgres://… or postgresql://…"
                    .to_owned(),
            });
        }
        let path = Path::new(path);
        let is_file = path
            .extension()
            .is_some_and(|ext| ext == "sqlite" || ext == "db");
        Ok(if is_file {
            StoreUrl::SqliteFile(path.to_owned())
        } else {
            StoreUrl::SqliteDir(path.to_owned())
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::SqliteDir(dir) => write!(f, "{}", dir.display()),
            StoreUrl::SqliteFile(file) => write!(f, "{}", file.display()),
            StoreUrl::Postgres(url) => f.write_str(&super::postgres::redact(url)),
        }
    }
}

// Never print the password: `{:?}` of a location goes to logs.
impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// Opens (creating and migrating if needed) the store at `url`.
///
/// # Errors
/// As [`SqliteStore::open_dir`], [`SqliteStore::open_file`] and
/// [`PostgresStore::connect`].
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn PrivacyStore>, StoreError> {
    Ok(match url {
        StoreUrl::SqliteDir(dir) => Arc::new(SqliteStore::open_dir(dir).await?),
        StoreUrl::SqliteFile(file) => Arc::new(SqliteStore::open_file(file).await?),
        StoreUrl::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_follows_the_url() {
        let parse = |raw: &str| raw.parse::<StoreUrl>().unwrap();
        assert_eq!(
            parse("kastell-data"),
            StoreUrl::SqliteDir("kastell-data".into())
        );
        assert_eq!(
            parse("sqlite:///var/lib/kastell/cases.sqlite"),
            StoreUrl::SqliteFile("/var/lib/kastell/cases.sqlite".into())
        );
        assert_eq!(
            parse("postgresql://k:pw@127.0.0.1/k"),
            StoreUrl::Postgres("postgresql://k:pw@127.0.0.1/k".into())
        );
        assert_eq!(
            parse("postgres://k:pw@127.0.0.1/k").to_string(),
            "postgres://k:***@127.0.0.1/k"
        );
        assert!("mysql://x@y/z".parse::<StoreUrl>().is_err());
        assert!("".parse::<StoreUrl>().is_err());
    }
}
