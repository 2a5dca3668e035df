//! `POST /search` and `GET /search`: encode the query through the batching queue, then search
//! the database on a blocking thread. Hits are documents (a document's best passage decides its
//! score), so every hit id is one `/documents/{id}` accepts and `offset` pages over documents.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{blocking, prepare_query, AppStateRef};
use crate::server::error::{ApiError, ApiJson, ApiQuery};
use crate::server::state::{AppState, Loaded};

/// Retrieval modes. BM25 and hybrid need the lexical index (see [`Loaded::modes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dense,
    Bm25,
    Hybrid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Bm25 => "bm25",
            Mode::Hybrid => "hybrid",
        }
    }

    fn parse(s: Option<&str>) -> Result<Mode, ApiError> {
        match s.map(str::trim) {
            None | Some("") | Some("dense") => Ok(Mode::Dense),
            Some("bm25") => Ok(Mode::Bm25),
            Some("hybrid") => Ok(Mode::Hybrid),
            Some(other) => Err(ApiError::bad_request(format!(
                "mode must be dense, bm25 or hybrid, got {other:?}"
            ))),
        }
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
}

/// Query-string form: `?q=...&k=...&mode=...&offset=...&with_text=...`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    pub q: Option<String>,
    pub k: Option<usize>,
    pub mode: Option<String>,
    pub offset: Option<usize>,
    pub with_text: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub title: String,
    pub snippet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub took_ms: f64,
    pub encoder: String,
    pub mode: Mode,
    pub offset: usize,
}

pub async fn post_search(
    State(state): AppStateRef,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    search(state, req).await.map(Json)
}

pub async fn get_search(
    State(state): AppStateRef,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    let req = SearchRequest {
        query: p.q.ok_or_else(|| ApiError::bad_request("missing query parameter q"))?,
        k: p.k,
        with_text: p.with_text.unwrap_or(false),
        mode: p.mode,
        offset: p.offset.unwrap_or(0),
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
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {} (server.max_k), got {k}",
            cfg.max_k
        )));
    }
    if req.offset > cfg.max_offset {
        return Err(ApiError::bad_request(format!(
            "offset must be at most {} (server.max_offset), got {}",
            cfg.max_offset, req.offset
        )));
    }
    let mode = Mode::parse(req.mode.as_deref())?;
    if !loaded.modes().contains(&mode) {
        return Err(ApiError::bad_request(format!(
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
    let vector = match mode {
        Mode::Bm25 => None,
        Mode::Dense | Mode::Hybrid => Some(
            loaded
                .batcher
                .embed_prepared(vec![prepared])
                .await?
                .pop()
                .ok_or_else(|| ApiError::internal("encoder returned no vector"))?,
        ),
    };
    let page =
        Page { offset: req.offset, k, with_text: req.with_text, snippet_chars: cfg.snippet_chars };
    let l = loaded.clone();
    let hits = blocking(move || match vector {
        Some(v) if mode == Mode::Dense => dense_hits(&l, &v, &page),
        Some(v) => hybrid_hits(&l, &v, &query, &page),
        None => bm25_hits(&l, &query, &page),
    })
    .await?;
    let offset = page.offset;
    Ok(SearchResponse {
        hits,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        encoder: loaded.encoder_name.clone(),
        mode,
        offset,
    })
}

/// Which slice of the ranking to return, and how.
#[derive(Debug, Clone, Copy)]
struct Page {
    offset: usize,
    k: usize,
    with_text: bool,
    snippet_chars: usize,
}

fn dense_hits(loaded: &Loaded, vector: &[f32], page: &Page) -> Result<Vec<Hit>, ApiError> {
    let found = loaded.db.search_dense(vector, page.offset + page.k)?;
    let mut hits = Vec::with_capacity(page.k);
    for h in found.into_iter().skip(page.offset) {
        let text =
            if page.with_text { loaded.db.get_document(&h.id)?.map(|d| d.text) } else { None };
        hits.push(Hit {
            snippet: snippet(&h.passage, page.snippet_chars),
            id: h.id,
            score: h.score,
            title: h.title,
            text,
        });
    }
    Ok(hits)
}

/// Hits for a ranked list of document ids; `passages` supplies the best dense passage as the
/// snippet where known, else the document's opening is used.
fn hits_for(
    loaded: &Loaded,
    ranked: Vec<(String, f32)>,
    passages: &std::collections::HashMap<String, String>,
    page: &Page,
) -> Result<Vec<Hit>, ApiError> {
    let mut hits = Vec::with_capacity(page.k);
    for (id, score) in ranked.into_iter().skip(page.offset) {
        // A document deleted between the two lookups is simply skipped.
        let Some(doc) = loaded.db.get_document(&id)? else { continue };
        let source = passages.get(&id).map(String::as_str).unwrap_or(&doc.text);
        hits.push(Hit {
            snippet: snippet(source, page.snippet_chars),
            title: doc.title,
            text: page.with_text.then_some(doc.text),
            id,
            score,
        });
    }
    Ok(hits)
}

fn bm25_hits(loaded: &Loaded, query: &str, page: &Page) -> Result<Vec<Hit>, ApiError> {
    let ranked = loaded.lexical.search(query, page.offset + page.k)?;
    hits_for(loaded, ranked, &Default::default(), page)
}

/// Depth of each list fused in hybrid mode: fusion needs more than the page it returns, since a
/// document ranked low in one list may still come first overall.
const HYBRID_DEPTH: usize = 100;

fn hybrid_hits(
    loaded: &Loaded,
    vector: &[f32],
    query: &str,
    page: &Page,
) -> Result<Vec<Hit>, ApiError> {
    let want = page.offset + page.k;
    let depth = want.max(HYBRID_DEPTH);
    let dense = loaded.db.search_dense(vector, depth)?;
    let bm25 = loaded.lexical.search(query, depth)?;
    let dense_list: Vec<(String, f32)> = dense.iter().map(|h| (h.id.clone(), h.score)).collect();
    let passages = dense.into_iter().map(|h| (h.id, h.passage)).collect();
    let fused = loaded.fusion.fuse(&dense_list, &bm25, want);
    hits_for(loaded, fused, &passages, page)
}
