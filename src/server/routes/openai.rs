//! OpenAI's embeddings API: `POST /v1/embeddings` and `GET /v1/models`, so the official
//! clients (`openai` for Python and the like, pointed at `base_url = http://HOST/v1`) work
//! unchanged.
//!
//! - `input`: a string or a list of strings (token-id arrays are refused, 400).
//! - `model`: optional; when sent it must be the served encoder's name (`/v1/models`, `/info`'s
//!   `model_id`, `/status`'s `encoder`: the model file or folder name), else 404
//!   `model_not_found`.
//! - `encoding_format`: `float` (default) or `base64`: the vector's little-endian f32 bytes,
//!   base64-encoded, as OpenAI sends them (the Python client asks for base64 by default).
//! - `dimensions`: refused (400) unless it is the model's dimension; the encoder's vectors are
//!   not Matryoshka-trained, so a cut vector would be a worse one.
//! - `input_type`: an extension (NVIDIA NIM's name, sent with `extra_body`): `passage` (the
//!   default, as in `engine embed`) or `query` picks the Llama2Vec template.
//! - `user`: accepted and ignored.
//!
//! Texts over their kind's token limit are refused (422), as OpenAI refuses over-long input.
//! Errors are the engine's error shape, which is OpenAI's (`error.message`, `error.type`,
//! `error.code`). `usage` counts the tokens the encoder ran, prompt template included.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::embed::{embed_texts, from_value, text_inputs, TooLong};
use super::AppStateRef;
use crate::encoder::{Embed, TextKind};
use crate::server::auth::EmbedAccess;
use crate::server::error::{ApiError, ApiJson};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub input: Value,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub input_type: Option<String>,
}

/// `POST /v1/embeddings` (a configured key required, see `auth`).
pub async fn embeddings(
    State(state): AppStateRef,
    _auth: EmbedAccess,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingsRequest = from_value(body)?;
    let loaded = state.ready()?;
    let name = &loaded.encoder_name;
    if let Some(m) = req.model.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        if m != name {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("the model {m:?} is not served here; this server serves {name:?}"),
            ));
        }
    }
    let base64 = match req.encoding_format.as_deref().map(str::trim) {
        None | Some("") | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "encoding_format must be float or base64, got {other:?}"
            )))
        }
    };
    let dim = loaded.dense("/v1/embeddings")?.encoder().dim();
    if let Some(d) = req.dimensions {
        if d != dim as u64 {
            return Err(ApiError::invalid(format!(
                "dimensions {d} is not supported: this model's vectors have {dim} dimensions \
                 (send {dim} or leave dimensions out)"
            )));
        }
    }
    let kind = match req.input_type.as_deref().map(str::trim) {
        None | Some("") | Some("passage") | Some("document") => TextKind::Passage,
        Some("query") => TextKind::Query,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "input_type must be passage (alias document) or query, got {other:?}"
            )))
        }
    };
    let _ = req.user;
    let texts = text_inputs(req.input, "input")?;
    let out = embed_texts(&state, &loaded, texts, kind, TooLong::Refused, "input").await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(f32_base64(v)) } else { json!(v) };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": { "prompt_tokens": out.tokens, "total_tokens": out.tokens },
    })))
}

/// `GET /v1/models`: the one model this server serves.
pub async fn models(State(state): AppStateRef) -> Result<Json<Value>, ApiError> {
    let loaded = state.ready()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{ "id": loaded.encoder_name, "object": "model", "created": 0, "owned_by": "engine" }],
    })))
}

/// A vector as OpenAI's base64 encoding: little-endian f32 bytes, standard alphabet, padded.
pub fn f32_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64_encode(&bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        // RFC 4648 test vectors.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
        // 1.0f32 is 00 00 80 3f little-endian; -2.0 is 00 00 00 c0.
        assert_eq!(f32_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}
