//! The `--data DIR` / `--store URL` pair by which every command that reads or writes the
//! case store names it: a data directory (the SQLite store `kastell run` keeps), or a
//! store URL (`sqlite://PATH`, `postgres://…`), also read from `KASTELL_STORE` so that a
//! password need not appear in the process list.

use std::path::PathBuf;

use anyhow::Context;
use kastell_core::StoreUrl;

use crate::apikey::DEFAULT_DATA;

/// Where the case store is.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The data directory holding the SQLite case store, as given to `kastell run --data`.
    /// Naming both it and `--store` is refused rather than one silently winning.
    #[arg(long, default_value = DEFAULT_DATA, conflicts_with = "store")]
    pub data: PathBuf,
    /// The case store as a URL instead: a directory or `.sqlite` file path, `sqlite://PATH`,
    /// or `postgres://USER:PASSWORD@HOST:PORT/DB` (TLS through `?sslmode=require`).
    #[arg(long, env = "KASTELL_STORE", hide_env_values = true)]
    pub store: Option<String>,
}

impl StoreArgs {
    /// The store named, `--store` over `--data`.
    ///
    /// # Errors
    /// When `--store` is not a store URL.
    pub fn url(&self) -> anyhow::Result<StoreUrl> {
        match &self.store {
            Some(raw) => raw.parse().context("reading --store"),
            None => Ok(StoreUrl::SqliteDir(self.data.clone())),
        }
    }

    /// The store named, which must exist already: a command that only reads it (or
    /// audits it) must not create an empty one by a mistyped path.
    ///
    /// # Errors
    /// As [`StoreArgs::url`], and when there is no SQLite store at the path.
    pub fn existing(&self) -> anyhow::Result<StoreUrl> {
        let url = self.url()?;
        anyhow::ensure!(
            url.exists(),
            "no case store in {url} (pass --data DIR as given to `kastell run`, or --store URL)"
        );
        Ok(url)
    }
}
