//! `GET`, `POST` and `DELETE /documents`. Writes need the admin key when one is configured, embed
//! their passages through the batching queue (sharing forward passes with queries) and are
//! flushed to sled before the reply, so an acknowledged write survives a crash; the ANN index is
//! derived data, reconciled from sled on open, and saved at intervals and on shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{blocking, AppStateRef};
use crate::encoder::TextKind;
use crate::pipeline::{content_hash, passage_text, split_passages, Document};
use crate::server::auth::{ApiKeyAccess, ReadAccess};
use crate::server::error::{ApiError, ApiJson, ApiPath};
use crate::store::{NewDocument, NewPassage};

/// How often write requests also snapshot the ANN index (it is rebuilt from sled otherwise).
const SAVE_INDEX_EVERY: Duration = Duration::from_secs(60);

pub async fn get_document(
    State(state): AppStateRef,
    _auth: ReadAccess,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let loaded = state.ready()?;
    let doc = blocking(move || {
        let d = loaded.get_document(&id)?;
        Ok(d.map(|d| (id, d)))
    })
    .await?;
    let Some((id, d)) = doc else {
        return Err(ApiError::not_found("no document with this id"));
    };
    let metadata: serde_json::Value =
        serde_json::from_str(&d.metadata).unwrap_or(serde_json::Value::String(d.metadata));
    Ok(Json(json!({
        "id": id,
        "title": d.title,
        "text": d.text,
        "metadata": metadata,
        "passages": d.passages.len(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDoc {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDocumentsRequest {
    pub documents: Vec<NewDoc>,
}

pub async fn add_documents(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    ApiJson(req): ApiJson<AddDocumentsRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let loaded = state.ready()?;
    // Before any encoder work: a read-only database refuses the write in the end.
    loaded.dense("adding documents")?.db().check_writable()?;
    let max = state.config.server.max_documents_per_request;
    let n = req.documents.len();
    if n == 0 {
        return Err(ApiError::invalid("documents must not be empty"));
    }
    if n > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_documents",
            format!("{n} documents, at most {max} per request (server.max_documents_per_request)"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, d) in req.documents.iter().enumerate() {
        if let Err(why) = crate::pipeline::corpus::check_id(&d.id) {
            return Err(ApiError::invalid(format!("documents[{i}].id {why}")));
        }
        if d.text.trim().is_empty() {
            return Err(ApiError::invalid(format!("documents[{i}] ({:?}) has no text", d.id)));
        }
        if !seen.insert(d.id.as_str()) {
            return Err(ApiError::invalid(format!("document id {:?} appears twice", d.id)));
        }
    }
    let (chunk_tokens, chunk_overlap) = {
        let m = loaded.dense("adding documents")?.db().manifest();
        (m.chunk_tokens, m.chunk_overlap)
    };

    // Plan on a blocking thread: content hashes (unchanged documents are skipped), passages,
    // and their tokenized texts.
    let l = loaded.clone();
    let (plan, unchanged, updated) = blocking(move || {
        let l = l.dense("adding documents")?;
        let encoder = l.encoder();
        let mut plan = Vec::new();
        let (mut unchanged, mut updated) = (0usize, 0usize);
        for d in req.documents {
            let doc = Document { id: d.id, title: d.title, text: d.text, metadata: d.metadata };
            let hash = content_hash(&doc);
            match l.db().document_hash(&doc.id)? {
                Some(h) if h == hash => {
                    unchanged += 1;
                    continue;
                }
                Some(_) => updated += 1,
                None => {}
            }
            let chunks = split_passages(
                encoder.as_ref(),
                &doc.title,
                &doc.text,
                chunk_tokens,
                chunk_overlap,
            )?;
            let prepared = chunks
                .iter()
                .map(|c| {
                    encoder.prepare(
                        &passage_text(&doc.title, &doc.text[c.start..c.end]),
                        TextKind::Passage,
                    )
                })
                .collect::<crate::Result<Vec<_>>>()?;
            plan.push((doc, hash, chunks, prepared));
        }
        Ok((plan, unchanged, updated))
    })
    .await?;

    // Embed in queue-sized pieces so queries keep interleaving with a large write.
    let max_batch = state.config.server.max_batch.max(1);
    let batcher = &loaded.dense("adding documents")?.batcher;
    let mut new_docs = Vec::with_capacity(plan.len());
    let mut passages = 0;
    for (doc, hash, chunks, prepared) in plan {
        let mut vectors = Vec::with_capacity(prepared.len());
        let mut rest = prepared;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(max_batch));
            vectors.extend(batcher.embed_prepared(rest, TextKind::Passage).await?);
            rest = tail;
        }
        passages += vectors.len();
        let passages = chunks
            .iter()
            .zip(vectors)
            .map(|(c, vector)| NewPassage { start: c.start, end: c.end, vector, cache_key: None })
            .collect();
        new_docs.push(NewDocument {
            id: doc.id,
            title: doc.title,
            text: doc.text,
            metadata: doc.metadata,
            hash,
            passages,
        });
    }
    let added = new_docs.len() - updated;
    let l = loaded.clone();
    blocking(move || {
        let l = l.dense("adding documents")?;
        l.index.put_documents(new_docs)?;
        l.db().save_index_if_older(SAVE_INDEX_EVERY)?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({
        "added": added,
        "updated": updated,
        "unchanged": unchanged,
        "passages": passages,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

pub async fn delete_document(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let loaded = state.ready()?;
    let deleted = blocking(move || {
        let d = loaded.dense("deleting documents")?;
        let missing = d.index.delete_documents(std::slice::from_ref(&id))?;
        d.db().save_index_if_older(SAVE_INDEX_EVERY)?;
        Ok(missing.is_empty().then_some(id))
    })
    .await?;
    match deleted {
        Some(id) => Ok(Json(json!({ "deleted": id }))),
        None => Err(ApiError::not_found("no document with this id")),
    }
}
