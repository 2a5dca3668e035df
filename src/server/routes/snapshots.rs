//! `POST /snapshots` (admin): writes a snapshot archive of the served database
//! (`crate::snapshot`) into `server.snapshot_dir` while searches and writes go on (writes wait
//! only while the files are copied), and says where.

use std::path::PathBuf;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde_json::json;

use super::{blocking, AppStateRef};
use crate::server::auth::ApiKeyAccess;
use crate::server::collections::Collection;
use crate::server::error::ApiError;
use crate::server::state::Backing;
use crate::snapshot::{self, Source};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub async fn create_snapshot(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    Collection { loaded, .. }: Collection,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let configured = state.config.server.snapshot_dir.clone();
    let (path, info, bytes) = blocking(move || {
        // One snapshot at a time: a second waits (and gets its own name).
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        // Before any folder is made: a PostgreSQL store's "path" is its URL.
        if let Backing::Dense(d) = &loaded.backing {
            if d.index.embedded().is_none() {
                return Err(ApiError::unprocessable(
                    "postgres_store",
                    "snapshots are of the embedded store; back a PostgreSQL store up with \
                     pg_dump or pg_basebackup",
                ));
            }
        }
        let db = loaded.path();
        let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("db".into());
        let dir = if configured.as_os_str().is_empty() {
            db.with_file_name(format!("{name}.snapshots"))
        } else {
            configured
        };
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        let path = unused_name(&dir, &name);
        let source = match &loaded.backing {
            Backing::Dense(d) => Source::Dense(&d.index),
            Backing::LexicalOnly { index, .. } => Source::LexicalOnly(index),
        };
        let info = snapshot::write(source, &path)?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok((path, info, bytes))
    })
    .await?;
    Ok(Json(json!({
        "path": path,
        "bytes": bytes,
        "kind": info.kind,
        "documents": info.documents,
        "passages": info.passages,
        "created_at": info.created_at,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

/// `DIR/NAME-UNIXSECONDS.tar`, with `-N` added while that exists.
fn unused_name(dir: &std::path::Path, name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut path = dir.join(format!("{name}-{secs}.tar"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{name}-{secs}-{n}.tar"));
        n += 1;
    }
    path
}
