//! [`ApiError`]: every failure the HTTP API reports, always as
//! `{"error": {"code": "...", "message": "...", "type": "..."}}` with a matching status, so
//! clients (and the web UI) can rely on one shape whatever went wrong: bad JSON, a missing
//! document, a full queue. It is OpenAI's error shape too (`type` is one of OpenAI's error
//! types), so OpenAI clients of `/v1/embeddings` read these errors as their own.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// An HTTP error with a stable machine-readable `code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds) on 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_secs: None }
    }

    /// Tells the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// 422 `invalid_request`: well-formed, but semantically invalid (a value out of range, an
    /// empty text, an unknown mode, too many texts or tokens). The API's one validation status:
    /// 400 is only for JSON that does not parse and 413 only for a body over
    /// `server.max_body_bytes`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 422: the request is well-formed but asks for something invalid.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the model and index are still loading; retry shortly",
        )
        .retry_after(1)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (send Authorization: Bearer KEY, api-key: KEY or x-api-key: KEY)",
        )
    }

    /// A 500 whose details are logged, never sent: internal messages may name paths or state.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }

    /// The `{"error": {...}}` body of this error.
    pub fn body(&self) -> serde_json::Value {
        error_body(self.status, self.code, &self.message)
    }
}

/// The error body: the engine's `code` and `message`, plus OpenAI's error `type` for `status`.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message, "type": error_type(status) } })
}

/// OpenAI's error type for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidInput(m) => ApiError::invalid(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Overloaded { message, retry_after_secs } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
                    .retry_after(retry_after_secs)
            }
            // The loaded encoder cannot serve this database: a server-side configuration fault
            // the client cannot fix, but worth naming (the message holds no secrets).
            Error::EncoderMismatch(m) => {
                tracing::error!("encoder mismatch: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoder_mismatch", m)
            }
            // A database served from a temporary copy (its folder cannot be written); the
            // message leaves out the server's paths.
            Error::DatabaseReadOnly { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this server's database is read-only (its folder cannot be written): documents \
                 cannot be added or deleted",
            ),
            // A PostgreSQL store on a replica: writes go to the primary's server.
            Error::StoreReadOnly { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this server's store is a read-only PostgreSQL (a replica): documents cannot be \
                 added or deleted here; send writes to a server on the primary",
            ),
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rej: JsonRejection) -> Self {
        let code = match &rej {
            JsonRejection::JsonDataError(_) => "invalid_request",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "payload_too_large"
            }
            _ => "bad_request",
        };
        ApiError::new(rej.status(), code, rej.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    /// A query string whose values do not fit their fields: the JSON body's data error.
    fn from(rej: QueryRejection) -> Self {
        ApiError::invalid(rej.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rej: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rej.body_text())
    }
}

/// `axum::Json`, but rejections come out as [`ApiError`] JSON instead of plain text.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| ApiJson(v)).map_err(ApiError::from)
    }
}

/// [`ApiJson`] of an optional body: an empty body is `T::default()`, any other is read as
/// [`ApiJson`] reads it (so it must be JSON, with its content type).
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // The body-limit layer bounds what this reads; its refusal is the only read failure
        // besides a client that went away.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
        })?;
        if bytes.is_empty() {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| ApiJsonOrEmpty(v))
    }
}

/// `axum::extract::Query` with [`ApiError`] rejections.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(ApiError::from)
    }
}

/// `axum::extract::Path` with [`ApiError`] rejections.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(ApiError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 429 and 503 tell the client when to come back; other errors do not.
    #[test]
    fn busy_and_loading_answers_carry_retry_after() {
        let not_ready = ApiError::not_ready().into_response();
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(not_ready.headers()[axum::http::header::RETRY_AFTER], "1");
        let busy =
            ApiError::from(Error::Overloaded { message: "full".into(), retry_after_secs: 7 });
        let busy = busy.into_response();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()[axum::http::header::RETRY_AFTER], "7");
        let invalid = ApiError::invalid("k out of range").into_response();
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!invalid.headers().contains_key(axum::http::header::RETRY_AFTER));
    }
}
