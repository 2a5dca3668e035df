//! API keys: an admin key (`engine serve --api-key`, `ENGINE_API_KEY`) and a read key
//! (`--read-api-key`, `ENGINE_READ_API_KEY`).
//!
//! | keys set       | reads (search, documents GET) | embedding (`/embed`, `/v1/embeddings`) | writes      |
//! |----------------|-------------------------------|----------------------------------------|-------------|
//! | none           | open                          | open                                   | open        |
//! | admin          | open                          | admin                                  | admin       |
//! | admin and read | admin or read                 | admin or read                          | admin       |
//!
//! Embedding routes spend encoder time on texts the caller chooses, so they are keyed whenever
//! any key is set. A key travels as `Authorization: Bearer KEY`, `api-key: KEY` (Azure OpenAI's
//! header) or `x-api-key: KEY`; a missing or unknown key is 401, the read key on a write 403.
//! Operational routes (`/healthz`, `/readyz`, `/health`, `/info`, `/status`, `/metrics`,
//! `/openapi.json`) and the UI's files stay open.
//!
//! Keys are kept as SHA-256 digests and a sent key is hashed and compared with every configured
//! digest in full, so neither the time taken nor its variation tells how much of a guess matched
//! or how long the key is.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;
use crate::error::{Error, Result};

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    admin: Option<[u8; 32]>,
    read: Option<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("admin", &self.admin.is_some())
            .field("read", &self.read.is_some())
            .finish()
    }
}

/// Which key a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Read,
}

impl ApiKeys {
    /// Keys from the command line; empty strings count as unset. A read key needs an admin key
    /// (else writes would be open while reads are keyed) and must differ from it.
    pub fn new(admin: Option<&str>, read: Option<&str>) -> Result<Self> {
        let admin = admin.filter(|k| !k.is_empty());
        let read = read.filter(|k| !k.is_empty());
        if read.is_some() && admin.is_none() {
            return Err(Error::Config(
                "--read-api-key needs --api-key too: without an admin key writes would be open"
                    .into(),
            ));
        }
        if read.is_some() && read == admin {
            return Err(Error::Config("the read API key must differ from the admin key".into()));
        }
        Ok(ApiKeys { admin: admin.map(digest), read: read.map(digest) })
    }

    pub fn any(&self) -> bool {
        self.admin.is_some()
    }

    pub fn has_read_key(&self) -> bool {
        self.read.is_some()
    }

    /// The role of a presented key, comparing it with every configured key.
    fn role_of(&self, given: &str) -> Option<Role> {
        let d = digest(given);
        let admin = self.admin.as_ref().is_some_and(|a| constant_time_eq(a, &d));
        let read = self.read.as_ref().is_some_and(|r| constant_time_eq(r, &d));
        if admin {
            Some(Role::Admin)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The key a request carries, from the first of `Authorization: Bearer`, `api-key`, `x-api-key`
/// present.
fn presented(parts: &Parts) -> Option<&str> {
    let header_str = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(auth) = header_str(header::AUTHORIZATION.as_str()) {
        let (scheme, rest) = auth.trim().split_once(' ').unwrap_or((auth, ""));
        // Another scheme, or none, is not a key: answered like a wrong key.
        return Some(if scheme.eq_ignore_ascii_case("bearer") { rest.trim() } else { "" });
    }
    header_str("api-key").or_else(|| header_str("x-api-key")).map(str::trim)
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Search and document reads: either key, once a read key is set.
    Read,
    /// Embedding arbitrary texts: either key, once any key is set.
    Embed,
    /// Writes: the admin key, once set.
    Admin,
}

fn check(parts: &Parts, keys: &ApiKeys, need: Need) -> std::result::Result<(), ApiError> {
    let keyed = match need {
        Need::Read => keys.has_read_key(),
        Need::Embed | Need::Admin => keys.any(),
    };
    if !keyed {
        return Ok(());
    }
    let Some(given) = presented(parts) else { return Err(ApiError::unauthorized()) };
    match (keys.role_of(given), need) {
        (None, _) => Err(ApiError::unauthorized()),
        (Some(Role::Read), Need::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the read API key cannot write; this endpoint needs the admin key (--api-key)",
        )),
        (Some(_), _) => Ok(()),
    }
}

macro_rules! access {
    ($(#[$doc:meta])* $name:ident, $need:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl FromRequestParts<Arc<AppState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<AppState>,
            ) -> std::result::Result<Self, ApiError> {
                check(parts, &state.keys, $need).map(|()| $name)
            }
        }
    };
}

access!(
    /// Proof that the request may write: the admin key was sent (or none is configured).
    ApiKeyAccess,
    Need::Admin
);
access!(
    /// Proof that the request may embed texts of its choosing: a configured key was sent (or
    /// none is configured).
    EmbedAccess,
    Need::Embed
);
access!(
    /// Proof that the request may read: a key was sent, or no read key is configured.
    ReadAccess,
    Need::Read
);

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn roles_headers_and_refusals() {
        let keys = ApiKeys::new(Some("admin-k"), Some("read-k")).unwrap();
        let status = |h: &[(&str, &str)], need| {
            check(&parts(h), &keys, need).err().map(|e| e.status.as_u16()).unwrap_or(200)
        };
        for need in [Need::Read, Need::Embed, Need::Admin] {
            assert_eq!(status(&[], need), 401);
            assert_eq!(status(&[("authorization", "Bearer nope")], need), 401);
            assert_eq!(status(&[("authorization", "admin-k")], need), 401, "no scheme");
            assert_eq!(status(&[("authorization", "bearer admin-k")], need), 200);
            assert_eq!(status(&[("api-key", "admin-k")], need), 200);
            assert_eq!(status(&[("x-api-key", "admin-k")], need), 200);
            let read = if need == Need::Admin { 403 } else { 200 };
            assert_eq!(status(&[("authorization", "Bearer read-k")], need), read);
            assert_eq!(status(&[("api-key", "read-k")], need), read);
        }
        // Prefixes and extensions of a key are wrong keys.
        assert_eq!(status(&[("api-key", "admin-")], Need::Admin), 401);
        assert_eq!(status(&[("api-key", "admin-kk")], Need::Admin), 401);
    }

    #[test]
    fn a_read_key_needs_a_distinct_admin_key() {
        assert!(ApiKeys::new(None, Some("r")).is_err());
        assert!(ApiKeys::new(Some("same"), Some("same")).is_err());
        let only_admin = ApiKeys::new(Some("a"), Some("")).unwrap();
        assert!(only_admin.any() && !only_admin.has_read_key());
        assert!(!ApiKeys::new(Some(""), None).unwrap().any());
        let keys = ApiKeys::new(Some("s3cret-admin"), Some("s3cret-read")).unwrap();
        assert!(!format!("{keys:?}").contains("s3cret"), "Debug must not print keys");
    }
}
