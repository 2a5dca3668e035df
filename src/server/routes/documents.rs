//! `GET`, `POST` and `DELETE /documents`. Writes need the admin key when one is configured, embed
//! their passages through the batching queue (sharing forward passes with queries) and are
//! flushed to sled before the reply, so an acknowledged write survives a crash; the ANN index is
//! derived data, reconciled from sled on open, and saved at intervals and on shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{blocking, AppStateRef};
use crate::encoder::TextKind;
use crate::filter::Filter;
use crate::pipeline::{change, Change, Document, DocumentPlan};
use crate::server::auth::{ApiKeyAccess, ReadAccess};
use crate::server::collections::{Collection, DocId};
use crate::server::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::server::state::{AppState, Loaded};
use crate::server::tasks::WaitParam;

/// How often write requests also snapshot the ANN index (it is rebuilt from sled otherwise).
const SAVE_INDEX_EVERY: Duration = Duration::from_secs(60);

pub async fn get_document(
    auth: ReadAccess,
    c: Collection,
    DocId(id): DocId,
) -> Result<Json<serde_json::Value>, ApiError> {
    get_document_by_id(c.loaded, auth, id).await
}

async fn get_document_by_id(
    loaded: Arc<Loaded>,
    _auth: ReadAccess,
    id: String,
) -> Result<Json<serde_json::Value>, ApiError> {
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

/// `POST /documents[?wait=false]`: the input is checked here; the work runs now, or with
/// `wait=false` as a task (see `tasks`).
pub async fn add_documents(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    Collection { loaded, .. }: Collection,
    ApiQuery(w): ApiQuery<WaitParam>,
    ApiJson(req): ApiJson<AddDocumentsRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
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
    let work = store_documents(state.clone(), loaded, req, started);
    state.tasks.run_or_start(w.wait.unwrap_or(true), "add_documents", work).await
}

/// Embeds and stores checked documents (the work of `POST /documents`).
async fn store_documents(
    state: Arc<AppState>,
    loaded: Arc<Loaded>,
    req: AddDocumentsRequest,
    started: Instant,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (chunk_tokens, chunk_overlap) = {
        let m = loaded.dense("adding documents")?.db().manifest();
        (m.chunk_tokens, m.chunk_overlap)
    };

    // Plan on a blocking thread: content hashes (unchanged documents are skipped), passages,
    // and their tokenized texts.
    let l = loaded.clone();
    let (plan, unchanged, updated, metadata_only) = blocking(move || {
        let l = l.dense("adding documents")?;
        let encoder = l.encoder();
        let mut plan = Vec::new();
        let (mut unchanged, mut updated) = (0usize, 0usize);
        let mut metadata_only = Vec::new();
        for d in req.documents {
            let doc = Document { id: d.id, title: d.title, text: d.text, metadata: d.metadata };
            match change(l.db().get_document(&doc.id)?.as_ref(), &doc) {
                Change::Unchanged => {
                    unchanged += 1;
                    continue;
                }
                Change::Metadata => {
                    updated += 1;
                    metadata_only.push((doc.id, doc.metadata));
                    continue;
                }
                Change::Content => updated += 1,
                Change::New => {}
            }
            let planned = DocumentPlan::new(encoder.as_ref(), doc, chunk_tokens, chunk_overlap)?;
            let prepared = planned
                .passages
                .iter()
                .map(|p| encoder.prepare(&p.text, TextKind::Passage))
                .collect::<crate::Result<Vec<_>>>()?;
            plan.push((planned, prepared));
        }
        Ok((plan, unchanged, updated, metadata_only))
    })
    .await?;

    // Embed in queue-sized pieces so queries keep interleaving with a large write.
    let max_batch = state.config.server.max_batch.max(1);
    let batcher = &loaded.dense("adding documents")?.batcher;
    let mut new_docs = Vec::with_capacity(plan.len());
    let mut passages = 0;
    for (planned, prepared) in plan {
        let mut vectors = Vec::with_capacity(prepared.len());
        let mut rest = prepared;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(max_batch));
            vectors.extend(batcher.embed_prepared(rest, TextKind::Passage).await?);
            rest = tail;
        }
        passages += vectors.len();
        new_docs.push(planned.to_new_document(vectors, None)?);
    }
    let added = new_docs.len() + metadata_only.len() - updated;
    let l = loaded.clone();
    blocking(move || {
        let l = l.dense("adding documents")?;
        // Metadata-only changes touch neither vectors nor BM25 (which indexes title and text).
        l.index.update_metadata(&metadata_only)?;
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
    auth: ApiKeyAccess,
    c: Collection,
    DocId(id): DocId,
) -> Result<Json<serde_json::Value>, ApiError> {
    delete_document_by_id(c.loaded, auth, id).await
}

async fn delete_document_by_id(
    loaded: Arc<Loaded>,
    _auth: ApiKeyAccess,
    id: String,
) -> Result<Json<serde_json::Value>, ApiError> {
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

/// Documents per page of `GET /documents` when `limit` is not given, and the most allowed.
const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

/// `GET /documents?limit=&cursor=&with_text=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollParams {
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub with_text: Option<bool>,
}

/// The cursor after document `id`: its bytes in hex (opaque to clients).
fn cursor_after(id: &str) -> String {
    hex::encode(id.as_bytes())
}

fn id_of_cursor(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::invalid("cursor is not one this server returned"))
}

/// `GET /documents`: a page of documents in id order and the cursor of the next page (`null`
/// after the last). Every document present from the first page to the last is listed exactly
/// once, whatever is added or deleted meanwhile.
pub async fn list_documents(
    _auth: ReadAccess,
    Collection { loaded, .. }: Collection,
    ApiQuery(p): ApiQuery<ScrollParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = p.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {PAGE_MAX}, got {limit}"
        )));
    }
    let after = p.cursor.as_deref().filter(|c| !c.is_empty()).map(id_of_cursor).transpose()?;
    let with_text = p.with_text.unwrap_or(false);
    let (page, more) = blocking(move || {
        Ok(loaded.dense("listing documents")?.db().scroll_documents(after.as_deref(), limit)?)
    })
    .await?;
    let next_cursor = page.last().filter(|_| more).map(|(id, _)| cursor_after(id));
    let documents: Vec<serde_json::Value> = page
        .into_iter()
        .map(|(id, d)| {
            let mut v = json!({
                "id": id,
                "title": d.title,
                "metadata": serde_json::from_str::<serde_json::Value>(&d.metadata)
                    .unwrap_or(serde_json::Value::String(d.metadata)),
                "passages": d.passages.len(),
            });
            if with_text {
                v["text"] = json!(d.text);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "documents": documents, "next_cursor": next_cursor })))
}

/// `POST /documents/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteManyRequest {
    pub ids: Option<Vec<String>>,
    /// Qdrant-style filter (`crate::filter`); with `ids`, only those of them that match.
    pub filter: Option<serde_json::Value>,
}

/// `POST /documents/delete`: deletes the listed ids, the documents matching a filter, or the
/// listed ids that match it; answers how many were deleted.
pub async fn delete_many(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    Collection { loaded, .. }: Collection,
    ApiQuery(w): ApiQuery<WaitParam>,
    ApiJson(req): ApiJson<DeleteManyRequest>,
) -> Result<Response, ApiError> {
    // Refused before any work (and before a task is started): a lexical-only or read-only
    // database.
    loaded.dense("deleting documents")?.db().check_writable()?;
    let filter = req.filter.as_ref().map(Filter::parse).transpose()?;
    let filter = filter.filter(|f| !f.is_empty());
    match (&req.ids, &filter) {
        (None, None) if req.filter.is_some() => {
            return Err(ApiError::invalid(
                "filter has no condition, so it would delete every document; name the ids or \
                 give a condition",
            ))
        }
        (None, None) => return Err(ApiError::invalid("give ids, a filter, or both")),
        (Some(ids), _) if ids.len() > state.config.server.max_documents_per_request => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_documents",
                format!(
                    "{} ids, at most {} per request (server.max_documents_per_request)",
                    ids.len(),
                    state.config.server.max_documents_per_request
                ),
            ))
        }
        _ => {}
    }
    let work = blocking(move || {
        let d = loaded.dense("deleting documents")?;
        let n = match (&req.ids, &filter) {
            (ids, Some(f)) => d.index.delete_matching(f, ids.as_deref())?.len(),
            (Some(ids), None) => {
                let unique: HashSet<&String> = ids.iter().collect();
                unique.len() - d.index.delete_documents(ids)?.len()
            }
            (None, None) => 0,
        };
        d.db().save_index_if_older(SAVE_INDEX_EVERY)?;
        Ok(Json(json!({ "deleted": n })))
    });
    state.tasks.run_or_start(w.wait.unwrap_or(true), "delete_documents", work).await
}

/// `GET /tasks/{id}`: a background write's status (see `tasks`).
pub async fn get_task(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid(format!("task id must be a number, got {id:?}")))?;
    state.tasks.get(id).map(Json).ok_or_else(|| {
        ApiError::not_found("no task with this id (tasks are kept in memory until a restart)")
    })
}

/// `PATCH /documents/{id}`: what may change without re-embedding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDocumentRequest {
    /// Replaces the stored metadata (any JSON); title and text change through POST /documents.
    pub metadata: serde_json::Value,
}

/// `PATCH /documents/{id}`: replaces a document's metadata, durable and visible to filters on
/// return; its passages are not re-embedded.
pub async fn patch_document(
    auth: ApiKeyAccess,
    c: Collection,
    DocId(id): DocId,
    ApiJson(req): ApiJson<PatchDocumentRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    patch_document_by_id(c.loaded, auth, id, req).await
}

async fn patch_document_by_id(
    loaded: Arc<Loaded>,
    _auth: ApiKeyAccess,
    id: String,
    req: PatchDocumentRequest,
) -> Result<Json<serde_json::Value>, ApiError> {
    let missing = blocking(move || {
        let d = loaded.dense("updating metadata")?;
        let missing = d.index.update_metadata(&[(id.clone(), req.metadata)])?;
        Ok(missing.is_empty().then_some(id))
    })
    .await?;
    match missing {
        Some(id) => Ok(Json(json!({ "updated": id }))),
        None => Err(ApiError::not_found("no document with this id")),
    }
}

/// The routes of the document whose id is `delete`, which `POST /documents/delete` shadows
/// in the router: its GET, DELETE and PATCH still reach it.
pub mod named_delete {
    use super::*;

    const ID: &str = "delete";

    pub async fn get(auth: ReadAccess, c: Collection) -> Result<Json<serde_json::Value>, ApiError> {
        get_document_by_id(c.loaded, auth, ID.into()).await
    }

    pub async fn delete(
        auth: ApiKeyAccess,
        c: Collection,
    ) -> Result<Json<serde_json::Value>, ApiError> {
        delete_document_by_id(c.loaded, auth, ID.into()).await
    }

    pub async fn patch(
        auth: ApiKeyAccess,
        c: Collection,
        ApiJson(req): ApiJson<PatchDocumentRequest>,
    ) -> Result<Json<serde_json::Value>, ApiError> {
        patch_document_by_id(c.loaded, auth, ID.into(), req).await
    }
}
