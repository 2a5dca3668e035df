//! Where a command's data lives: `--db DIR` (the embedded store, the default), `--store URL`
//! or the config's `[store] url` (PostgreSQL).

use std::path::PathBuf;

use anyhow::{bail, Result};
use engine::config::Config;
use engine::store::postgres::is_postgres_url;

/// The store a command works on.
pub enum Location {
    /// A database folder (sled + ANN files + tantivy).
    Folder(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// `--store` first, then `--db`, then `[store] url`; neither is an error naming the flags.
pub fn resolve(config: &Config, db: Option<&PathBuf>, store: Option<&String>) -> Result<Location> {
    let url = match (store, db) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => return Ok(Location::Folder(dir.clone())),
        (None, None) if !config.store.url.is_empty() => config.store.url.clone(),
        (None, None) => {
            bail!(
                "give --db DIR (a database folder) or --store postgres://... (or set [store] url)"
            )
        }
    };
    if !is_postgres_url(&url) {
        bail!("--store takes a PostgreSQL URL (postgres://user@host:port/dbname), got {url:?}");
    }
    Ok(Location::Postgres(url))
}
