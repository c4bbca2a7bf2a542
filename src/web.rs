//! The browser client, compiled into the binary from `web-client/`: one file to deploy, and no
//! build step (the pages are plain HTML, CSS and ES modules).

use std::borrow::Cow;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web-client/"]
struct Assets;

/// `GET /` and `GET /<file>` for every embedded file. Routes registered elsewhere (`/ws`,
/// `/healthz`) take precedence over the wildcard.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

/// Whether `path` (relative, e.g. `js/signal.js`) is an embedded file.
pub fn exists(path: &str) -> bool {
    Assets::get(path).is_some()
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    // In debug builds rust-embed reads from disk; never let a request climb out of the folder.
    if path
        .split('/')
        .any(|segment| segment == ".." || segment.is_empty())
    {
        return not_found();
    }
    let Some(file) = Assets::get(path) else {
        return not_found();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    let mut headers = HeaderMap::new();
    // Pages change with every release, and a stale page talking to a newer server is worse than
    // a revalidation: always revalidate, answered cheaply by the ETag.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Invite tokens travel in the page URL; no request from the page may carry it elsewhere.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if if_none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let body = match file.data {
        Cow::Borrowed(bytes) => Body::from(bytes),
        Cow::Owned(bytes) => Body::from(bytes),
    };
    (headers, body).into_response()
}

fn content_type(mime: &str) -> String {
    let textual =
        mime.starts_with("text/") || mime == "application/javascript" || mime.ends_with("json");
    if textual && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_embedded() {
        for page in ["index.html", "teacher.html", "pupil.html"] {
            assert!(exists(page), "{page}");
        }
        assert!(Assets::iter().any(|p| p.starts_with("js/") && p.ends_with(".js")));
        assert!(Assets::iter().any(|p| p.starts_with("css/") && p.ends_with(".css")));
    }

    #[test]
    fn content_types_carry_charset_for_text() {
        assert_eq!(content_type("text/html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("text/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("image/png"), "image/png");
    }

    #[test]
    fn traversal_is_not_found() {
        let none = HeaderMap::new();
        for path in ["../Cargo.toml", "js/../../Cargo.toml", "js//signal.js", ""] {
            assert_eq!(serve(path, &none).status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn etag_revalidation() {
        let first = serve("index.html", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            serve("index.html", &request).status(),
            StatusCode::NOT_MODIFIED
        );
    }
}
