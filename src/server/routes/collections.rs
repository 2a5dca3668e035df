//! `GET /collections`, and `GET`, `PUT` and `DELETE /collections/{name}`: list, describe, create
//! and delete the collections of this server (see `server::collections`). Creating and deleting
//! need the admin key and a writable server; the default collection cannot be deleted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{blocking, describe, AppStateRef};
use crate::server::auth::{ApiKeyAccess, ReadAccess};
use crate::server::collections::{
    check_name, create_collection, delete_files, read_only, Collection, CreateRequest,
    DEFAULT_COLLECTION,
};
use crate::server::error::{ApiError, ApiJsonOrEmpty, ApiPath};
use crate::server::state::AppState;

/// `GET /collections`: every collection, the default one first, with its counts and encoder.
pub async fn list(
    State(state): AppStateRef,
    _auth: ReadAccess,
) -> Result<Json<serde_json::Value>, ApiError> {
    let default = state.ready()?;
    let mut all = vec![(DEFAULT_COLLECTION.to_string(), default)];
    all.extend(state.collections.list());
    let mut out = Vec::with_capacity(all.len());
    for (name, loaded) in all {
        let mut c = describe(loaded).await?;
        c["name"] = json!(name);
        c["default"] = json!(name == DEFAULT_COLLECTION);
        out.push(c);
    }
    let encoders = state.collections.encoders().map_or(0, |e| e.all().len());
    Ok(Json(json!({ "collections": out, "encoders_loaded": encoders })))
}

/// `GET /collections/{name}`: one collection's counts and encoder.
pub async fn info(_auth: ReadAccess, c: Collection) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = describe(c.loaded).await?;
    let name = c.name.unwrap_or(DEFAULT_COLLECTION.into());
    out["default"] = json!(name == DEFAULT_COLLECTION);
    out["name"] = json!(name);
    Ok(Json(out))
}

/// 403 `read_only` for a create or delete on a server whose database cannot be written.
fn refuse_if_read_only(state: &AppState) -> Result<(), ApiError> {
    if read_only(&*state.ready()?) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this server's database is read-only (its folder cannot be written): collections \
             cannot be created or deleted",
        ));
    }
    Ok(())
}

fn exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "collection_exists",
        format!("a collection named {name:?} exists already"),
    )
}

/// `PUT /collections/{name}`: creates an empty collection with the encoder the body names
/// (default: the server's, shared with the default collection); 201 with its description.
pub async fn create(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    ApiPath(name): ApiPath<String>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CreateRequest>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    refuse_if_read_only(&state)?;
    let config = req.config(&state.config)?;
    let _one = state.collections.lock_changes().await;
    if name == DEFAULT_COLLECTION || state.collections.get(&name).is_some() {
        return Err(exists(&name));
    }
    let (Some(root), Some(encoders)) =
        (state.collections.root(), state.collections.encoders().cloned())
    else {
        return Err(ApiError::not_ready());
    };
    if root.as_os_str().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "this server's database is a PostgreSQL store, which has no folder to keep \
             collections beside: set server.collections_dir to create them",
        ));
    }
    let dir = root.join(&name);
    if dir.exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "collection_exists",
            format!(
                "the collections folder holds a {name:?} that is not a database this server \
                 serves; remove it first"
            ),
        ));
    }
    let model = config.model.path.clone();
    let loaded = blocking(move || {
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir)).map_err(ApiError::internal)?;
        create_collection(&dir, &config, &encoders).map_err(|e| match e {
            crate::Error::InvalidInput(m) => ApiError::invalid(m),
            other => {
                tracing::error!("loading {} for a new collection: {other}", model.display());
                ApiError::unprocessable(
                    "invalid_model",
                    "the model could not be loaded with these settings (the server log says why)",
                )
            }
        })
    })
    .await?;
    let loaded = std::sync::Arc::new(loaded);
    state.collections.insert(name.clone(), loaded.clone());
    let mut out = describe(loaded).await?;
    out["name"] = json!(name);
    out["default"] = json!(false);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `DELETE /collections/{name}`: stops serving the collection and removes its folder (its
/// snapshots stay); the default collection cannot be deleted (409).
pub async fn delete(
    State(state): AppStateRef,
    _auth: ApiKeyAccess,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(&name)?;
    if name == DEFAULT_COLLECTION {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "default_collection",
            "the default collection is the server's --db and cannot be deleted",
        ));
    }
    refuse_if_read_only(&state)?;
    let _one = state.collections.lock_changes().await;
    let Some(loaded) = state.collections.get(&name) else {
        return Err(ApiError::not_found(format!("no collection named {name:?}")));
    };
    if read_only(&loaded) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this collection's folder cannot be written, so it cannot be deleted",
        ));
    }
    state.collections.remove(&name);
    blocking(move || delete_files(loaded).map_err(ApiError::internal)).await?;
    Ok(Json(json!({ "deleted": name })))
}
