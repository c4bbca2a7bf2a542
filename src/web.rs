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

/// The pages run only their own files: scripts and styles from this server and never inline
/// (an injected `<script>` or `onclick=` does not run), requests and the WebSocket only to this
/// server (`'self'` covers `ws:`/`wss:` of the same host), no plugins, no `<base>` rewriting, and
/// no framing by another site (clickjacking the teacher's controls). `data:` images: the pages'
/// empty favicon. The sign-in link page (`classroom-portal`) sends the same policy's core.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

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
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
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
    fn pages_need_no_inline_code_or_styles() {
        // The policy forbids inline scripts, styles and handlers: a page that used one would
        // break in the browser without a sound from any server test.
        for path in Assets::iter().filter(|p| p.ends_with(".html")) {
            let file = Assets::get(&path).expect("listed file");
            let html = String::from_utf8_lossy(&file.data).to_ascii_lowercase();
            for tag in html.split("<script").skip(1) {
                let open = tag.split('>').next().unwrap_or_default();
                assert!(open.contains("src="), "{path}: an inline <script>");
            }
            assert!(!html.contains("<style"), "{path}: a <style> element");
            assert!(!html.contains(" style="), "{path}: a style attribute");
            assert!(!html.contains("javascript:"), "{path}: a javascript: URL");
            // `onclick="…"` and the like: an attribute name of letters after "on", then `=`.
            let handler = html.split_whitespace().find(|word| {
                word.split_once('=').is_some_and(|(name, _)| {
                    name.len() > 2
                        && name.starts_with("on")
                        && name.chars().all(|c| c.is_ascii_lowercase())
                })
            });
            assert_eq!(handler, None, "{path}: an inline event handler");
        }
        for path in Assets::iter().filter(|p| p.ends_with(".js")) {
            let file = Assets::get(&path).expect("listed file");
            let js = String::from_utf8_lossy(&file.data);
            for banned in ["eval(", "new Function(", "setAttribute('style'"] {
                assert!(!js.contains(banned), "{path}: {banned}");
            }
        }
        let page = serve("teacher.html", &HeaderMap::new());
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
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
