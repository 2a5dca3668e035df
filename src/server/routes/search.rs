//! `POST /search` and `GET /search`: encode the query through the batching queue, then search
//! the database on a blocking thread. Hits are documents (a document's best passage decides its
//! score), so every hit id is one `/documents/{id}` accepts and `offset` pages over documents.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{blocking, prepare_query, AppStateRef};
use crate::encoder::{Embed, TextKind};
use crate::filter::Filter;
use crate::fusion::{Fusion, FusionRequest};
use crate::search::{Ranked, SearchMode, SearchOptions};
use crate::server::auth::ReadAccess;
use crate::server::collections::Collection;
use crate::server::error::{ApiError, ApiJson, ApiQuery};
use crate::server::state::{AppState, Backing, Loaded};
use crate::snippet::{self, QueryTerms};
use crate::store::DocHit;

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
    /// The query text; may be empty (or absent) in dense mode when `vector` is given.
    #[serde(default)]
    pub query: String,
    /// A query embedding to search with instead of embedding `query` (dense and hybrid modes):
    /// as many finite numbers as the database's dimension, normalised here as cosine needs.
    /// Hybrid mode still needs `query` for its BM25 list.
    pub vector: Option<Vec<f32>>,
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
    /// Alias of `k` (both given must agree).
    pub limit: Option<usize>,
    /// Dense weight of convex fusion, in [0, 1] (hybrid mode).
    pub alpha: Option<f64>,
    /// Alias of `alpha` (Meilisearch's name).
    pub semantic_ratio: Option<f64>,
    /// `rrf` or `convex` (hybrid mode).
    pub fusion: Option<String>,
    /// RRF's constant, 1..=1000 (hybrid mode).
    pub rrf_k: Option<usize>,
    /// Hits scoring below it are dropped, in the mode's own score scale.
    pub score_threshold: Option<f32>,
    /// HNSW search effort for this request (ignored by the flat and FAISS backends).
    pub ef: Option<usize>,
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
    /// Alias of `k` (both given must agree).
    pub limit: Option<usize>,
    /// Dense weight of convex fusion, in [0, 1] (hybrid mode).
    pub alpha: Option<f64>,
    /// Alias of `alpha` (Meilisearch's name).
    pub semantic_ratio: Option<f64>,
    /// `rrf` or `convex` (hybrid mode).
    pub fusion: Option<String>,
    /// RRF's constant, 1..=1000 (hybrid mode).
    pub rrf_k: Option<usize>,
    /// Hits scoring below it are dropped, in the mode's own score scale.
    pub score_threshold: Option<f32>,
    /// HNSW search effort for this request (ignored by the flat and FAISS backends).
    pub ef: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    /// On the scale the response's `score_kind` names.
    pub score: f32,
    pub title: String,
    /// The part of the passage where the query's words are densest (`crate::snippet`).
    pub snippet: String,
    /// Words of the title and snippet matching the query (stemmed, stop words ignored), as
    /// written: what to highlight.
    pub highlights: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Hit {
    /// A hit with its query-biased snippet (`snippet_chars` characters of its passage).
    pub fn new(h: DocHit, terms: &QueryTerms, snippet_chars: usize) -> Self {
        let s = snippet::snippet(&h.title, &h.passage, terms, snippet_chars);
        Hit {
            id: h.id,
            score: h.score,
            title: h.title,
            snippet: s.text,
            highlights: s.highlights,
            text: None,
            metadata: None,
        }
    }
}

/// The warning a dense or hybrid search carries when its best cosine similarity is below
/// `threshold` (`server.weak_dense_score`).
pub fn weak_dense_warning(best_dense: Option<f32>, threshold: f32) -> Option<String> {
    let best = best_dense?;
    (best < threshold).then(|| {
        format!(
            "weak dense match: the closest passage has cosine {best:.3}, below {threshold} \
             (server.weak_dense_score); bm25 may find the query's words"
        )
    })
}

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub took_ms: f64,
    pub encoder: String,
    pub mode: SearchMode,
    /// The scale of every hit's score: `cosine` (dense), `bm25` or `fused` (hybrid).
    pub score_kind: &'static str,
    pub offset: usize,
    /// Whether hits ranked below these exist (ask with `offset + k`).
    pub more: bool,
    /// Set when the dense match is weak (see `server.weak_dense_score`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

pub async fn post_search(
    State(state): AppStateRef,
    _auth: ReadAccess,
    c: Collection,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    search(state, c.loaded, req).await.map(Json)
}

pub async fn get_search(
    State(state): AppStateRef,
    _auth: ReadAccess,
    c: Collection,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    let req = SearchRequest {
        query: p.q.ok_or_else(|| ApiError::invalid("missing query parameter q"))?,
        vector: None,
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
        limit: p.limit,
        alpha: p.alpha,
        semantic_ratio: p.semantic_ratio,
        fusion: p.fusion,
        rrf_k: p.rrf_k,
        score_threshold: p.score_threshold,
        ef: p.ef,
    };
    search(state, c.loaded, req).await.map(Json)
}

async fn search(
    state: Arc<AppState>,
    loaded: Arc<Loaded>,
    req: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let started = Instant::now();
    let cfg = &state.config.server;
    let k = one_of("k", req.k, "limit", req.limit)?.unwrap_or(cfg.default_k);
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
    let fusion = request_fusion(&state, &req, mode)?;
    // Checked before the query is encoded; the filter and depth are set below.
    let settings =
        SearchOptions { k, fusion, filter: None, score_threshold: req.score_threshold, ef: req.ef };
    settings.check()?;
    let query = req.query;
    let vector = match &loaded.backing {
        Backing::Dense(d) if req.vector.is_some() => {
            let given = req.vector.unwrap_or_default();
            if !mode.needs_vector() {
                return Err(ApiError::invalid(format!(
                    "vector applies to dense and hybrid modes; this search's mode is {}",
                    mode.as_str()
                )));
            }
            if mode == SearchMode::Hybrid && query.trim().is_empty() {
                return Err(ApiError::invalid(
                    "hybrid mode needs the query text for its BM25 list besides the vector",
                ));
            }
            Some(query_vector(given, d.encoder().dim())?)
        }
        Backing::Dense(d) => {
            let encoder = d.encoder().clone();
            let max_tokens = cfg.max_query_tokens;
            let q = query.clone();
            // The token limit applies in every mode, so a query's validity does not depend on it.
            let prepared = blocking(move || prepare_query(&encoder, &q, max_tokens)).await?;
            if mode.needs_vector() {
                let mut v = d.batcher.embed_prepared(vec![prepared], TextKind::Query).await?;
                Some(v.pop().ok_or_else(|| ApiError::internal("encoder returned no vector"))?)
            } else {
                None
            }
        }
        Backing::LexicalOnly { .. } => {
            if req.vector.is_some() {
                return Err(ApiError::invalid(
                    "a --lexical-only database has no vectors to search with vector",
                ));
            }
            if query.trim().is_empty() {
                return Err(ApiError::invalid("query must not be empty"));
            }
            if filter.is_some() {
                return Err(ApiError::invalid(
                    "a --lexical-only database stores no metadata, so it cannot filter",
                ));
            }
            None
        }
    };
    let (offset, with_text, snippet_chars) = (req.offset, req.with_text, cfg.snippet_chars);
    let with_metadata = req.with_metadata;
    let weak = cfg.weak_dense_score;
    let l = loaded.clone();
    let (hits, more, best_dense) = blocking(move || {
        // One hit beyond the page says whether more exist.
        let want = offset + k + 1;
        let ranked = match &l.backing {
            Backing::Dense(d) => {
                let opts = SearchOptions { k: want, filter: filter.as_ref(), ..settings };
                d.index.search_with(mode, &query, vector.as_deref(), &opts)?
            }
            Backing::LexicalOnly { index, .. } => {
                // The server holds no writer on it, so `engine index --lexical-only` may add
                // to it meanwhile: pick up its commits.
                index.reload()?;
                let mut hits = crate::search::search_lexical_only(index, &query, want)?;
                if let Some(t) = settings.score_threshold {
                    // Hits are best first: the cut keeps a prefix.
                    hits.retain(|h| h.score >= t);
                }
                Ranked { hits, best_dense: None }
            }
        };
        let more = ranked.hits.len() == want;
        let terms = QueryTerms::new(&query);
        let mut hits = Vec::with_capacity(k);
        for h in ranked.hits.into_iter().skip(offset).take(k) {
            let doc = if with_text || with_metadata { l.get_document(&h.id)? } else { None };
            let mut hit = Hit::new(h, &terms, snippet_chars);
            hit.text = doc.as_ref().filter(|_| with_text).map(|d| d.text.clone());
            hit.metadata = doc
                .filter(|_| with_metadata)
                .map(|d| serde_json::from_str(&d.metadata).unwrap_or(serde_json::Value::Null));
            hits.push(hit);
        }
        Ok((hits, more, ranked.best_dense))
    })
    .await?;
    Ok(SearchResponse {
        hits,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        encoder: loaded.encoder_name.clone(),
        mode,
        score_kind: mode.score_kind(),
        offset,
        more,
        warning: weak_dense_warning(best_dense, weak),
    })
}

/// A request's `vector` checked (`dim` finite numbers, not all zero) and scaled to unit length.
fn query_vector(mut v: Vec<f32>, dim: usize) -> Result<Vec<f32>, ApiError> {
    crate::index::check_vector(&v, dim)?;
    crate::index::normalize(&mut v)?;
    Ok(v)
}

/// `a` or its alias `b` (422 naming both when they are given and differ).
fn one_of<T: PartialEq + std::fmt::Display>(
    name: &str,
    a: Option<T>,
    alias: &str,
    b: Option<T>,
) -> Result<Option<T>, ApiError> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(ApiError::invalid(format!(
            "{name} ({a}) and its alias {alias} ({b}) differ: send one of them"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// The fusion of this request: the server's (`[eval]`) overlaid by the request's `fusion`,
/// `alpha` (or `semantic_ratio`) and `rrf_k`, which only hybrid mode uses.
fn request_fusion(
    state: &AppState,
    req: &SearchRequest,
    mode: SearchMode,
) -> Result<Fusion, ApiError> {
    let r = FusionRequest {
        fusion: req.fusion.as_deref().map(|f| f.trim().parse()).transpose()?,
        alpha: one_of("alpha", req.alpha, "semantic_ratio", req.semantic_ratio)?,
        rrf_k: req.rrf_k,
    };
    if let (Some(field), false) = (r.first_given(), mode == SearchMode::Hybrid) {
        return Err(ApiError::invalid(format!(
            "{field} applies to hybrid mode only; this search's mode is {} (send mode: hybrid)",
            mode.as_str()
        )));
    }
    Ok(Fusion::for_request(&state.config.eval, &r)?)
}
