//! `POST /embed` in two shapes, and text-embeddings-inference's `GET /info` and `GET /health`.
//!
//! - The engine's own: `{"texts": [...], "kind": "query"|"passage"}` answers
//!   `{"embeddings", "dim", "encoder", "kind"}`.
//! - TEI's: `{"inputs": "..." | [...], "prompt_name", "normalize", "truncate",
//!   "truncation_direction"}` answers a bare `[[f32]]`. `prompt_name` picks the Llama2Vec
//!   template: `query` (the default, as in the engine's shape) or `passage` (`document` is an
//!   alias). Vectors are always L2-normalised, so `normalize: false` is refused. Without
//!   `truncate: true` a text over its kind's token limit is refused (422), as TEI refuses it; with it
//!   the text is cut at the end (`truncation_direction` `right`; `left` is refused).
//!
//! Both, and `/v1/embeddings` (see `openai`), share [`embed_texts`]: the same limits
//! (`server.max_embed_texts`, `server.max_request_tokens`), the same batching queue.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, prepare_query, AppStateRef};
use crate::encoder::{Embed, TextKind};
use crate::server::auth::EmbedAccess;
use crate::server::error::{ApiError, ApiJson};
use crate::server::state::{AppState, Loaded};

/// What happens to a text longer than its kind's token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLong {
    /// The engine's `/embed`: a query is refused (`server.max_query_tokens`), a passage is cut
    /// to `encoder.max_passage_tokens` as at indexing time.
    QueriesRefused,
    /// Refused with 422 (TEI without `truncate`, OpenAI).
    Refused,
    /// Cut at the end to the limit (TEI `truncate: true`).
    Truncated,
}

/// Vectors for a request's texts, and the tokens the encoder ran for them (prompt template
/// included: what `server.max_request_tokens` counts).
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// Validates, tokenizes and embeds `texts` through the batching queue. `field` names the
/// request's text field in error messages.
pub async fn embed_texts(
    state: &AppState,
    loaded: &Arc<Loaded>,
    texts: Vec<String>,
    kind: TextKind,
    too_long: TooLong,
    field: &'static str,
) -> Result<Embedded, ApiError> {
    let max = state.config.server.max_embed_texts;
    if texts.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if texts.len() > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_texts",
            format!("{} texts, at most {max} per request (server.max_embed_texts)", texts.len()),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(format!("{field}[{i}] is empty")));
    }
    let encoder = loaded.dense("embedding")?.encoder().clone();
    let max_query_tokens = state.config.server.max_query_tokens;
    let items = blocking(move || {
        let limit = match kind {
            TextKind::Query => encoder.options().max_query_tokens.min(max_query_tokens),
            TextKind::Passage => encoder.options().max_passage_tokens,
        };
        let refuse = |i: usize, n: String| {
            let setting = match kind {
                TextKind::Query => "server.max_query_tokens / encoder.max_query_tokens",
                TextKind::Passage => "encoder.max_passage_tokens",
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "text_too_long",
                format!(
                    "{field}[{i}] has {n} tokens, the limit for a {} is {limit} ({setting})",
                    kind_name(kind)
                ),
            )
        };
        let mut items = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let p = match (too_long, kind) {
                (TooLong::QueriesRefused | TooLong::Refused, TextKind::Query) => {
                    prepare_query(&encoder, t, max_query_tokens)?
                }
                (TooLong::Refused, TextKind::Passage)
                    if encoder.tokenizer().surely_longer_than(t, limit) =>
                {
                    return Err(refuse(i, "far more than".into()));
                }
                (TooLong::Truncated, TextKind::Query) => {
                    // Cut to the server's query limit, which may be below the encoder's.
                    let (_, spans) =
                        encoder.tokenizer().encode_with_offsets(t).map_err(ApiError::from)?;
                    let cut = match spans.get(limit.saturating_sub(1)) {
                        Some(&(_, end)) if spans.len() > limit && limit > 0 => {
                            // Byte-level tokens may end inside a character: cut before it.
                            let end = (0..=end.min(t.len()))
                                .rev()
                                .find(|&e| t.is_char_boundary(e))
                                .unwrap_or(0);
                            &t[..end]
                        }
                        _ => t.as_str(),
                    };
                    encoder.prepare(cut, kind).map_err(ApiError::from)?
                }
                _ => encoder.prepare(t, kind).map_err(ApiError::from)?,
            };
            if p.truncated && too_long == TooLong::Refused {
                let n = encoder.tokenizer().encode(t).map_err(ApiError::from)?.len();
                return Err(refuse(i, n.to_string()));
            }
            items.push(p);
        }
        Ok(items)
    })
    .await?;
    let tokens: usize = items.iter().map(|p| p.ids.len()).sum();
    let max_tokens = state.config.server.max_request_tokens;
    if tokens > max_tokens {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_tokens",
            format!(
                "the texts come to {tokens} tokens, at most {max_tokens} per request \
                 (server.max_request_tokens)"
            ),
        ));
    }
    let vectors = loaded.dense("embedding")?.batcher.embed_prepared(items, kind).await?;
    Ok(Embedded { vectors, tokens })
}

fn kind_name(kind: TextKind) -> &'static str {
    match kind {
        TextKind::Query => "query",
        TextKind::Passage => "passage",
    }
}

/// Text input as OpenAI and TEI take it: one string or a list of strings. Token-id input (a
/// list of integers, or of lists of them) is refused: the server tokenizes.
pub fn text_inputs(value: Value, field: &str) -> Result<Vec<String>, ApiError> {
    let token_ids = || {
        ApiError::invalid(format!(
            "{field} holds token ids; this server takes text only (a string or a list of strings)"
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                Value::Number(_) | Value::Array(_) => Err(token_ids()),
                other => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!("{field}[{i}] must be a string, got {}", json_type(&other)),
                )),
            })
            .collect(),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field} must be a string or a list of strings, got {}", json_type(&other)),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON object deserialized into `T`, wrong shapes answered 422 like [`ApiJson`] does.
pub fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub texts: Vec<String>,
    #[serde(default = "default_kind")]
    pub kind: TextKind,
}

fn default_kind() -> TextKind {
    TextKind::Query
}

/// TEI's `/embed` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeiEmbedRequest {
    pub inputs: Value,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub normalize: Option<bool>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub truncation_direction: Option<String>,
}

/// `prompt_name` to the template it selects.
fn prompt_kind(name: Option<&str>) -> Result<TextKind, ApiError> {
    match name.map(str::trim) {
        None | Some("") => Ok(TextKind::Query),
        Some(n) if n.eq_ignore_ascii_case("query") => Ok(TextKind::Query),
        Some(n) if n.eq_ignore_ascii_case("passage") || n.eq_ignore_ascii_case("document") => {
            Ok(TextKind::Passage)
        }
        Some(n) => Err(ApiError::invalid(format!(
            "unknown prompt_name {n:?}: this server has the prompts query and passage (alias document)"
        ))),
    }
}

/// `POST /embed` (a configured key required, see `auth`): the engine's shape or TEI's, told
/// apart by the `inputs` field.
pub async fn embed(
    State(state): AppStateRef,
    _auth: EmbedAccess,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let is_tei = body.as_object().is_some_and(|o| o.contains_key("inputs"));
    let loaded = state.ready()?;
    if !is_tei {
        let req: EmbedRequest = from_value(body)?;
        let kind = req.kind;
        let out =
            embed_texts(&state, &loaded, req.texts, kind, TooLong::QueriesRefused, "texts").await?;
        return Ok(Json(json!({
            "embeddings": out.vectors,
            "dim": loaded.dense("embedding")?.encoder().dim(),
            "encoder": loaded.encoder_name,
            "kind": kind,
        }))
        .into_response());
    }
    let req: TeiEmbedRequest = from_value(body)?;
    if req.normalize == Some(false) {
        return Err(ApiError::invalid(
            "normalize: false is not supported: this encoder's vectors are always L2-normalised",
        ));
    }
    match req.truncation_direction.as_deref().map(str::trim) {
        None | Some("") => {}
        Some(d) if d.eq_ignore_ascii_case("right") => {}
        Some(d) => {
            return Err(ApiError::invalid(format!(
                "truncation_direction {d:?} is not supported: texts are cut at the end (right)"
            )))
        }
    }
    let kind = prompt_kind(req.prompt_name.as_deref())?;
    let texts = text_inputs(req.inputs, "inputs")?;
    let too_long = if req.truncate == Some(true) { TooLong::Truncated } else { TooLong::Refused };
    let out = embed_texts(&state, &loaded, texts, kind, too_long, "inputs").await?;
    Ok(Json(out.vectors).into_response())
}

/// `GET /info`: TEI's model description.
pub async fn info(State(state): AppStateRef) -> Result<Json<Value>, ApiError> {
    let loaded = state.ready()?;
    let c = &state.config;
    let encoder = loaded.dense("/info")?.encoder();
    let opts = encoder.options();
    Ok(Json(json!({
        "model_id": loaded.encoder_name,
        "model_sha": null,
        "model_dtype": c.model.dtype,
        "model_type": { "embedding": { "pooling": opts.pooling } },
        "max_concurrent_requests": c.server.queue_capacity,
        "max_input_length": opts.max_passage_tokens,
        "max_batch_tokens": c.server.max_batch_tokens,
        "max_batch_requests": c.server.max_batch,
        "max_client_batch_size": c.server.max_embed_texts,
        "auto_truncate": false,
        "tokenization_workers": null,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "dim": encoder.dim(),
        "prompts": ["query", "passage"],
        "template": opts.template,
    })))
}

/// `GET /health`: TEI's health check, 200 once the model is loaded, 503 before.
pub async fn health(State(state): AppStateRef) -> Result<Json<Value>, ApiError> {
    state.ready()?;
    Ok(Json(json!({ "status": "ok" })))
}
