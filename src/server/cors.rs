//! CORS for browser clients on other origins: `server.cors_origins` (or `engine serve
//! --cors-origin ORIGIN`, repeatable) lists the origins allowed; empty (the default) sends no
//! CORS headers, so browsers keep other sites' pages from reading the API. `"*"` allows any
//! origin. Preflights are answered before routing and keys (a browser sends no credentials on
//! them); responses expose `Retry-After`.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{Error, Result};

/// The CORS layer for `origins`, `None` when the list is empty; an origin that is not
/// `scheme://host[:port]` (http or https, no path) is a configuration error.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        let values = origins.iter().map(|o| parse_origin(o)).collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("api-key"),
                HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600)),
    ))
}

/// An origin as browsers send it: `https://app.example` or `http://localhost:3000` (one
/// trailing `/` is dropped).
fn parse_origin(raw: &str) -> Result<HeaderValue> {
    let o = raw.trim();
    let o = o.strip_suffix('/').unwrap_or(o);
    let bad = |why: &str| {
        Error::Config(format!(
            "CORS origin {raw:?} {why}: give scheme://host[:port], e.g. https://app.example \
             (server.cors_origins, --cors-origin)"
        ))
    };
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .ok_or_else(|| bad("is not http or https"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(bad("has no host, or a path, query or user part"));
    }
    HeaderValue::from_str(o).map_err(|_| bad("is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer(&[]).unwrap().is_none());
        for ok in ["https://app.example", "http://localhost:3000/", "*"] {
            assert!(layer(&[ok.to_string()]).unwrap().is_some(), "{ok}");
        }
        for bad in ["app.example", "ftp://x", "https://", "https://a.example/path", "http://a b"] {
            let err = layer(&[bad.to_string()]).unwrap_err().to_string();
            assert!(err.contains("CORS origin"), "{bad}: {err}");
        }
    }
}
