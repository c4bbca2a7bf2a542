//! axum glue (feature `axum`): the session and CSRF checks of [`crate::session`] applied to
//! requests.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use classroom_auth::{CookiePolicy, CsrfKey, web::{CsrfGuard, require_csrf}};
//! # fn demo(key: CsrfKey) {
//! let guard = Arc::new(CsrfGuard {
//!     key,
//!     cookies: CookiePolicy::for_public_url("https://lessons.example.org", std::time::Duration::from_secs(43_200)),
//!     public_origin: "https://lessons.example.org".into(),
//! });
//! let app: axum::Router = axum::Router::new()
//!     // .route(...)
//!     .layer(axum::middleware::from_fn_with_state(guard, require_csrf));
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::session::{self, CookiePolicy, CsrfError, CsrfKey};

/// What the CSRF middleware needs: the key, the cookie policy (to find the session) and the
/// server's public origin.
#[derive(Debug, Clone)]
pub struct CsrfGuard {
    pub key: CsrfKey,
    pub cookies: CookiePolicy,
    /// `scheme://host[:port]`, e.g. `https://lessons.example.org`.
    pub public_origin: String,
}

impl CsrfGuard {
    /// The session id from the request's cookies, if any.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        let cookies: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        self.cookies
            .session_from_cookies(&cookies)
            .map(str::to_owned)
    }

    /// The CSRF token to embed in pages for this request's session.
    pub fn token_for(&self, headers: &HeaderMap) -> Option<String> {
        self.session_id(headers)
            .map(|sid| session::csrf_token(&self.key, &sid))
    }

    /// With a session: origin check and `X-CSRF-Token`. Without one there are no ambient
    /// credentials to abuse, but the origin check still runs so a foreign page cannot sign a
    /// victim in to an account of the attacker's choosing (login CSRF) through a POST.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), CsrfError> {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let method = method.as_str();
        match self.session_id(headers) {
            Some(sid) => session::check_request(
                &self.key,
                &sid,
                method,
                h("origin"),
                h("sec-fetch-site"),
                h(session::CSRF_HEADER),
                &self.public_origin,
            ),
            None => session::check_origin(
                method,
                h("origin"),
                h("sec-fetch-site"),
                &self.public_origin,
            ),
        }
    }
}

/// Middleware: 403 for a state-changing request that fails [`CsrfGuard::check`].
pub async fn require_csrf(
    State(guard): State<Arc<CsrfGuard>>,
    req: Request,
    next: Next,
) -> Response {
    match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), "refused: {e}");
            (StatusCode::FORBIDDEN, e.to_string()).into_response()
        }
    }
}
