//! The web UI (web/), compiled into the binary with rust-embed so `engine serve` is one file to
//! deploy. Only the known UI files are routed; everything else is a JSON 404.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::error::ApiError;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Web;

/// The UI files served, by URL path.
pub const FILES: &[(&str, &str)] = &[
    ("/", "index.html"),
    ("/app.js", "app.js"),
    ("/highlight.js", "highlight.js"),
    ("/style.css", "style.css"),
    ("/favicon.svg", "favicon.svg"),
];

/// MIME type by extension. JavaScript is pinned to `text/javascript` (the type the HTML spec
/// names): browsers refuse ES modules served under a non-JavaScript type.
pub fn mime_for(name: &str) -> String {
    match name.rsplit('.').next() {
        Some("js" | "mjs") => "text/javascript; charset=utf-8".into(),
        Some("html") => "text/html; charset=utf-8".into(),
        Some("css") => "text/css; charset=utf-8".into(),
        Some("svg") => "image/svg+xml".into(),
        _ => mime_guess::from_path(name).first_or_octet_stream().to_string(),
    }
}

/// Serves one embedded file.
pub fn serve(name: &str) -> Response {
    match Web::get(name) {
        Some(file) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, mime_for(name)),
                // Small files, and the UI must pick up a new build at once.
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            file.data.into_owned(),
        )
            .into_response(),
        None => ApiError::not_found(format!("{name} is not in this build")).into_response(),
    }
}
