//! HTTP handlers. They validate, tokenize on blocking threads, queue texts for the encoder
//! thread (see `batching`), and call the database on blocking threads: nothing heavy runs on
//! the async runtime.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::collections::{Collection, DEFAULT_COLLECTION};
use super::error::ApiError;
use super::state::{AppState, Backing, Loaded};
use crate::encoder::{Encoder, Prepared, TextKind};

pub mod collections;
pub mod documents;
pub mod embed;
pub mod fields;
pub mod openai;
pub mod search;
pub mod snapshots;

pub type AppStateRef = State<Arc<AppState>>;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): AppStateRef) -> Result<Json<serde_json::Value>, ApiError> {
    state.ready()?;
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn metrics(State(state): AppStateRef) -> Response {
    // Off the async threads: a PostgreSQL store counts its documents with a blocking query.
    let s = state.clone();
    let gauges = tokio::task::spawn_blocking(move || s.gauges()).await.unwrap_or_default();
    let text = state.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /status` (and `/collections/{name}/status`): what the web UI's status line shows.
pub async fn status(
    State(state): AppStateRef,
    c: Collection,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = describe(c.loaded).await?;
    out["collection"] = json!(c.name.as_deref().unwrap_or(DEFAULT_COLLECTION));
    out["encoders_loaded"] = json!(state.collections.encoders().map_or(0, |e| e.all().len()));
    Ok(Json(out))
}

/// A database's counts, encoder and modes (`/status`, `/collections`).
pub async fn describe(loaded: Arc<Loaded>) -> Result<serde_json::Value, ApiError> {
    let l = loaded.clone();
    let common = json!({
        "encoder": loaded.encoder_name,
        "modes": loaded.modes(),
        "encoder_trained": loaded.encoder_trained(),
        "default_mode": loaded.default_mode().as_str(),
    });
    let mut out = match &loaded.backing {
        Backing::Dense(_) => {
            let s = blocking(move || Ok(l.dense("status")?.db().status()?)).await?;
            json!({
                "documents": s.documents,
                "passages": s.passages,
                "indexed": s.indexed,
                "backend": s.backend,
                "dim": s.dim,
                "lexical_only": false,
            })
        }
        Backing::LexicalOnly { index, .. } => json!({
            "documents": index.count(),
            "backend": "bm25",
            "lexical_only": true,
        }),
    };
    if let (Some(o), Some(c)) = (out.as_object_mut(), common.as_object()) {
        o.extend(c.clone());
    }
    Ok(out)
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::spec())
}

/// Runs blocking work (tokenizing, database calls) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

/// Tokenizes a query, refusing (422) one longer than `max_tokens` rather than silently
/// searching with a truncated query.
pub fn prepare_query(
    encoder: &Encoder,
    text: &str,
    max_tokens: usize,
) -> Result<Prepared, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("query must not be empty"));
    }
    let too_long = |n: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_too_long",
            format!("query has {n} tokens, the limit is {max_tokens} (server.max_query_tokens)"),
        )
    };
    // A megabyte of query is refused from its length, without spending seconds tokenizing it.
    if encoder.tokenizer().surely_longer_than(text, max_tokens) {
        return Err(too_long("far more than".into()));
    }
    let n = encoder.tokenizer().encode(text).map_err(ApiError::from)?.len();
    if n > max_tokens {
        return Err(too_long(n.to_string()));
    }
    encoder.prepare(text, TextKind::Query).map_err(ApiError::from)
}
