//! API-key access: writes and `/embed` (whose cost the caller chooses) need the key given to
//! `engine serve --api-key`, when one is set.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::state::AppState;

/// Proof that the request may write or spend encoder time on arbitrary texts: the configured
/// API key was sent as `Authorization: Bearer KEY` or `x-api-key: KEY` (or none is configured).
pub struct ApiKeyAccess;

impl FromRequestParts<Arc<AppState>> for ApiKeyAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(expected) = state.api_key.as_deref() else { return Ok(ApiKeyAccess) };
        let header_str = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header_str(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let given = bearer.or_else(|| header_str("x-api-key").map(str::trim));
        match given {
            Some(k) if constant_time_eq(k.as_bytes(), expected.as_bytes()) => Ok(ApiKeyAccess),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
