//! `POST /search` and `GET /search`: encode the query through the batching queue, then search
//! the database on a blocking thread. Hits are documents (a document's best passage decides its
//! score), so every hit id is one `/documents/{id}` accepts and `offset` pages over documents.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{blocking, prepare_query, AppStateRef};
use crate::encoder::TextKind;
use crate::filter::Filter;
use crate::search::SearchMode;
use crate::server::auth::ReadAccess;
use crate::server::error::{ApiError, ApiJson, ApiQuery};
use crate::server::state::AppState;

/// Parses the request's `mode`; absent or empty means `default`.
fn parse_mode(s: Option<&str>, default: SearchMode) -> Result<SearchMode, ApiError> {
    match s.map(str::trim) {
        None | Some("") => Ok(default),
        Some(m) => Ok(m.parse()?),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    pub k: Option<usize>,
    #[serde(default)]
    pub with_text: bool,
    pub mode: Option<String>,
    #[serde(default)]
    pub offset: usize,
    /// Only documents whose metadata passes this Qdrant-style filter (`crate::filter`).
    pub filter: Option<serde_json::Value>,
    /// Return each hit's metadata.
    #[serde(default)]
    pub with_metadata: bool,
}

/// Query-string form: `?q=...&k=...&mode=...&offset=...&with_text=...`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    pub q: Option<String>,
    pub k: Option<usize>,
    pub mode: Option<String>,
    pub offset: Option<usize>,
    pub with_text: Option<bool>,
    /// The filter as JSON text.
    pub filter: Option<String>,
    pub with_metadata: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub title: String,
    pub snippet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub took_ms: f64,
    pub encoder: String,
    pub mode: SearchMode,
    pub offset: usize,
}

pub async fn post_search(
    State(state): AppStateRef,
    _auth: ReadAccess,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    search(state, req).await.map(Json)
}

pub async fn get_search(
    State(state): AppStateRef,
    _auth: ReadAccess,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    let req = SearchRequest {
        query: p.q.ok_or_else(|| ApiError::invalid("missing query parameter q"))?,
        k: p.k,
        with_text: p.with_text.unwrap_or(false),
        mode: p.mode,
        offset: p.offset.unwrap_or(0),
        filter: p
            .filter
            .map(|f| serde_json::from_str(&f))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("filter is not valid JSON: {e}")))?,
        with_metadata: p.with_metadata.unwrap_or(false),
    };
    search(state, req).await.map(Json)
}

/// Cuts `text` to at most `max` characters (on a char boundary), marking the cut.
pub fn snippet(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_string(),
    }
}

async fn search(state: Arc<AppState>, req: SearchRequest) -> Result<SearchResponse, ApiError> {
    let started = Instant::now();
    let loaded = state.ready()?;
    let cfg = &state.config.server;
    let k = req.k.unwrap_or(cfg.default_k);
    if k == 0 || k > cfg.max_k {
        return Err(ApiError::invalid(format!(
            "k must be between 1 and {} (server.max_k), got {k}",
            cfg.max_k
        )));
    }
    if req.offset > cfg.max_offset {
        return Err(ApiError::invalid(format!(
            "offset must be at most {} (server.max_offset), got {}",
            cfg.max_offset, req.offset
        )));
    }
    let filter = req.filter.as_ref().map(Filter::parse).transpose()?;
    let mode = parse_mode(req.mode.as_deref(), loaded.default_mode())?;
    if !loaded.modes().contains(&mode) {
        return Err(ApiError::invalid(format!(
            "mode {} is not available on this server (available: {})",
            mode.as_str(),
            loaded.modes().iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let encoder = loaded.encoder().clone();
    let max_tokens = cfg.max_query_tokens;
    let query = req.query;
    let q = query.clone();
    // The token limit applies in every mode, so a query's validity does not depend on it.
    let prepared = blocking(move || prepare_query(&encoder, &q, max_tokens)).await?;
    let vector = if mode.needs_vector() {
        Some(
            loaded
                .batcher
                .embed_prepared(vec![prepared], TextKind::Query)
                .await?
                .pop()
                .ok_or_else(|| ApiError::internal("encoder returned no vector"))?,
        )
    } else {
        None
    };
    let (offset, with_text, snippet_chars) = (req.offset, req.with_text, cfg.snippet_chars);
    let with_metadata = req.with_metadata;
    let l = loaded.clone();
    let hits = blocking(move || {
        let found = l.index.search_filtered(
            mode,
            &query,
            vector.as_deref(),
            offset + k,
            &l.fusion,
            filter.as_ref(),
        )?;
        let mut hits = Vec::with_capacity(k);
        for h in found.into_iter().skip(offset) {
            let doc = if with_text || with_metadata { l.db().get_document(&h.id)? } else { None };
            let text = doc.as_ref().filter(|_| with_text).map(|d| d.text.clone());
            let metadata = doc
                .filter(|_| with_metadata)
                .map(|d| serde_json::from_str(&d.metadata).unwrap_or(serde_json::Value::Null));
            hits.push(Hit {
                snippet: snippet(&h.passage, snippet_chars),
                id: h.id,
                score: h.score,
                title: h.title,
                text,
                metadata,
            });
        }
        Ok(hits)
    })
    .await?;
    Ok(SearchResponse {
        hits,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        encoder: loaded.encoder_name.clone(),
        mode,
        offset,
    })
}
