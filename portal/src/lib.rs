//! The signed-in side of the server (`docs/API.md`): sign-in (one-time links, OIDC), web
//! sessions, the JSON API of the guardian, lobby, lessons and admin pages, and the
//! [`gate::LessonGate`] that holds lesson rooms shut to pupils who should be in school.
//!
//! Every `/api` route authenticates the session cookie and authorises the resource itself;
//! state-changing requests pass the CSRF check (`X-CSRF-Token` plus same-origin) first.

pub mod api;
pub mod chat_api;
pub mod chat_keeper;
pub mod client_addr;
mod errors;
pub mod extract;
pub mod gate;
pub mod guests;
pub mod lesson_links;
pub mod link_code;
pub mod link_gate;
pub mod links;
pub mod next;
pub mod purge;
pub mod signin;
pub mod signin_limits;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use classroom_auth::oidc::OidcClient;
use classroom_auth::session::{CookiePolicy, CsrfError, CsrfKey};
use classroom_auth::web::CsrfGuard;
use classroom_domain::{CutoffPolicy, Db, Person, PersonRole};
use classroom_signaling::token::{Role, TokenIssuer};
use serde_json::{Value, json};

/// How long a web session lasts (a school day).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a sign-in link stays valid unless the minter says otherwise.
pub const SIGNIN_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a join token lives: enough to open the WebSocket.
pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Largest roster ZIP the admin page may upload.
pub const ROSTER_BODY_LIMIT: usize = 20 * 1024 * 1024;

/// Seconds since the epoch, the domain's notion of "now".
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What every portal handler shares.
pub struct Portal {
    pub db: Db,
    pub policy: CutoffPolicy,
    pub timezone: Tz,
    pub csrf: Arc<CsrfGuard>,
    /// Base of links (`public_url`), without a trailing slash.
    pub public_url: String,
    pub tokens: TokenIssuer,
    pub oidc: Option<OidcClient>,
    /// Sign-in attempts per client address and per link or account.
    pub signin_limits: signin_limits::SigninLimits,
    /// Whose forwarded header names the client (none by default); see [`client_addr`].
    pub trusted_proxies: client_addr::TrustedProxies,
    /// How refusals of out-of-scope requests are audited (see [`extract`]).
    pub denials: extract::DenialLog,
    /// The server's private (0700) directory; roster uploads are stored here while imported.
    pub data_dir: PathBuf,
    /// The rooms, to remove a guest whose link is revoked (set once the server has them).
    pub signaling: std::sync::OnceLock<classroom_signaling::Signaling>,
    /// Lesson links between servers ([`lesson_links`]); none until [`Portal::with_links`].
    pub links: Option<lesson_links::Links>,
}

pub type Shared = Arc<Portal>;

impl Portal {
    pub fn new(
        db: Db,
        policy: CutoffPolicy,
        csrf_key: CsrfKey,
        public_url: &str,
        tokens: TokenIssuer,
        oidc: Option<OidcClient>,
        data_dir: PathBuf,
    ) -> Portal {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let cookies = CookiePolicy::for_public_url(&public_url, SESSION_TTL);
        Portal {
            db,
            timezone: policy.timezone,
            policy,
            csrf: Arc::new(CsrfGuard {
                key: csrf_key,
                cookies,
                public_origin: origin_of(&public_url),
            }),
            public_url,
            tokens,
            oidc,
            signin_limits: signin_limits::SigninLimits::default(),
            trusted_proxies: client_addr::TrustedProxies::default(),
            denials: extract::DenialLog::default(),
            data_dir,
            signaling: std::sync::OnceLock::new(),
            links: None,
        }
    }

    /// Turns lesson links on (`[links]` of the configuration).
    pub fn with_links(mut self, links: lesson_links::Links) -> Portal {
        self.links = Some(links);
        self
    }

    /// Believe the forwarded header of requests from these reverse proxies.
    pub fn with_trusted_proxies(mut self, proxies: client_addr::TrustedProxies) -> Portal {
        self.trusted_proxies = proxies;
        self
    }

    pub fn cookies(&self) -> &CookiePolicy {
        &self.csrf.cookies
    }

    /// The signed-in person of a request, if any.
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
        let Some(sid) = self.csrf.session_id(headers) else {
            return Ok(None);
        };
        let hash = classroom_auth::token::hash_token(&sid);
        let Some(id) = classroom_domain::session_person(&self.db, &hash, unix_now()).await? else {
            return Ok(None);
        };
        let Some(person) = classroom_domain::person(&self.db, &id).await? else {
            return Ok(None);
        };
        if !person.enabled {
            return Ok(None);
        }
        Ok(Some(Session { sid, person }))
    }

    /// The signed-in person, or 401.
    pub async fn require(&self, headers: &HeaderMap) -> Result<Session, ApiError> {
        self.session(headers).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Sign in first.",
            )
        })
    }
}

/// `scheme://host[:port]` of a base URL.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// A signed-in request.
pub struct Session {
    /// The session token (cookie value).
    pub sid: String,
    pub person: Person,
}

impl Session {
    pub fn role(&self) -> Option<PersonRole> {
        self.person.role()
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Some(PersonRole::Administrator)
    }

    pub fn is_staff(&self) -> bool {
        matches!(
            self.role(),
            Some(PersonRole::Administrator | PersonRole::Teacher | PersonRole::PartnerLecturer)
        )
    }
}

/// An API error: `{"error": CODE, "message": TEXT}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Option<Value>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This is not yours to see or change.",
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No such {what}."),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on the server.",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many attempts; try again later.",
            )
        }
    }

    pub fn with(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Middleware for `/api` and `/auth/signout`: state-changing requests must be same-origin and,
/// with a session, carry its CSRF token. `403 {"error":"csrf"}` otherwise.
pub async fn require_csrf(State(portal): State<Shared>, req: Request, next: Next) -> Response {
    match portal.csrf.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), "refused: {e}");
            let message = match e {
                CsrfError::MissingToken | CsrfError::BadToken => {
                    "Missing or wrong X-CSRF-Token; reload the page."
                }
                _ => "Cross-site request refused.",
            };
            ApiError::new(StatusCode::FORBIDDEN, "csrf", message).into_response()
        }
    }
}

/// A person as the API shows them.
pub fn person_json(p: &Person) -> Value {
    json!({
        "id": p.id,
        "role": p.role,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "given_name_kana": p.given_name_kana,
        "family_name_kana": p.family_name_kana,
    })
}

/// The home page of a role.
pub fn home_of(role: Option<PersonRole>) -> &'static str {
    match role {
        Some(PersonRole::Guardian) => "/guardian.html",
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => "/lobby.html",
        Some(PersonRole::Administrator) => "/admin.html",
        Some(PersonRole::Student) => "/lessons.html",
        None => "/",
    }
}

/// The live page a join token of this role opens (invite links and `/api/lessons/{id}/join`).
pub fn page_for(role: Role) -> &'static str {
    match role {
        Role::Teacher => "teacher.html",
        // A guest publishes from the pupil page, without the teacher's controls.
        Role::Student | Role::Observer | Role::PartnerLecturer | Role::PartnerLink => "pupil.html",
    }
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Every portal route, with its state applied.
pub fn router(portal: Shared) -> Router {
    let api = api::routes()
        .merge(chat_api::routes())
        .merge(guests::routes())
        .merge(lesson_links::routes())
        .merge(signin::protected_routes())
        .layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            require_csrf,
        ));
    Router::new()
        .merge(api)
        .merge(signin::open_routes())
        .merge(lesson_links::open_routes())
        .with_state(portal)
}
