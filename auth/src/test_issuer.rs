//! A real OpenID Connect issuer on `127.0.0.1:0` for tests (feature `test-issuer`): discovery,
//! a JWKS with a fresh RSA-2048 key (rotated on demand), `/authorize` that approves the configured
//! user at once (with or without a verified e-mail, a `tid` or an `hd`),
//! and `/token` that checks the client and the PKCE verifier and returns an RS256 ID token.
//! Real HTTP, real JWKS, real signatures; tamper switches produce the bad tokens that the
//! negative tests need.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use classroom_auth::test_issuer::{TestIssuer, TestIssuerConfig};
//! let idp = TestIssuer::start(TestIssuerConfig::default()).await?;
//! let client = classroom_auth::OidcClient::discover(
//!     idp.client_config("http://127.0.0.1:8080/auth/oidc/callback"),
//! ).await?;
//! let (authorize_url, pending) = client.begin()?;
//! // GET authorize_url without following redirects: the Location header holds code and state.
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::oidc::s256_challenge;
use crate::oidc::sign::RsaSigner;
use crate::token::new_token;
use crate::{ClientAuth, OidcConfig};

/// The user `/authorize` signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// Sent as Google Workspace's `hd` claim when set.
    pub hosted_domain: Option<String>,
    /// Sent as Entra's `tid` claim when set.
    pub tenant_id: Option<String>,
}

impl Default for TestUser {
    fn default() -> Self {
        Self {
            subject: "test-subject-1".into(),
            email: Some("sato.hanako@school.example.jp".into()),
            email_verified: true,
            name: Some("佐藤 花子".into()),
            hosted_domain: None,
            tenant_id: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestIssuerConfig {
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<String>,
    pub user: TestUser,
    /// When set, `/authorize` and `/token` refuse any other redirect URI.
    pub redirect_uri: Option<String>,
    pub id_token_lifetime: Duration,
}

impl Default for TestIssuerConfig {
    fn default() -> Self {
        Self {
            client_id: "classroom-test".into(),
            client_secret: Some("test-secret".into()),
            user: TestUser::default(),
            redirect_uri: None,
            id_token_lifetime: Duration::from_secs(300),
        }
    }
}

/// How to spoil an ID token (from `/token` after `set_tamper`, or from `mint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tamper {
    #[default]
    None,
    /// Signed by another key under the genuine key's `kid`.
    ForgedSignature,
    WrongAudience,
    WrongIssuer,
    /// `exp` and `iat` an hour in the past.
    Expired,
    WrongNonce,
    /// `alg: none` header (the signature is still RS256, it does not matter).
    AlgNone,
    /// `alg: HS256` header.
    AlgHs256,
}

#[derive(Debug, thiserror::Error)]
pub enum TestIssuerError {
    #[error("cannot bind the test issuer: {0}")]
    Bind(#[from] std::io::Error),
    #[error("key generation or signing failed")]
    Crypto,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: TestUser,
}

struct Shared {
    issuer: String,
    config: TestIssuerConfig,
    user: Mutex<TestUser>,
    signer: Mutex<Arc<RsaSigner>>,
    forger: RsaSigner,
    tamper: Mutex<Tamper>,
    codes: Mutex<HashMap<String, Grant>>,
    last_challenge: Mutex<Option<String>>,
    jwks_fetches: AtomicUsize,
    key_serial: AtomicUsize,
}

/// Test code: a poisoned lock only means another test thread panicked; carry on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running issuer; stops when dropped.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestIssuer {
    /// Bind 127.0.0.1:0 and serve on the current tokio runtime.
    pub async fn start(config: TestIssuerConfig) -> Result<Self, TestIssuerError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let signer = RsaSigner::generate("test-key-1").map_err(|_| TestIssuerError::Crypto)?;
        let forger = RsaSigner::generate("forger").map_err(|_| TestIssuerError::Crypto)?;
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            user: Mutex::new(config.user.clone()),
            config,
            signer: Mutex::new(Arc::new(signer)),
            forger,
            tamper: Mutex::new(Tamper::None),
            codes: Mutex::new(HashMap::new()),
            last_challenge: Mutex::new(None),
            jwks_fetches: AtomicUsize::new(0),
            key_serial: AtomicUsize::new(1),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("test issuer stopped: {e}");
            }
        });
        Ok(Self {
            shared,
            addr,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    /// A client configuration for this issuer (secret posted in the form).
    pub fn client_config(&self, redirect_url: &str) -> OidcConfig {
        let c = &self.shared.config;
        let mut config = OidcConfig::new(
            self.issuer(),
            c.client_id.clone(),
            c.client_secret.clone(),
            redirect_url,
        );
        config.client_auth = ClientAuth::ClientSecretPost;
        config
    }

    /// The user signed in by later `/authorize` requests.
    pub fn set_user(&self, user: TestUser) {
        *lock(&self.shared.user) = user;
    }

    /// Spoil the ID tokens `/token` returns from now on (`Tamper::None` to stop).
    pub fn set_tamper(&self, tamper: Tamper) {
        *lock(&self.shared.tamper) = tamper;
    }

    /// Replace the signing key by a new one with a new `kid` (a key rotation).
    pub fn rotate_key(&self) -> Result<(), TestIssuerError> {
        let n = self.shared.key_serial.fetch_add(1, Ordering::Relaxed) + 1;
        let signer =
            RsaSigner::generate(&format!("test-key-{n}")).map_err(|_| TestIssuerError::Crypto)?;
        *lock(&self.shared.signer) = Arc::new(signer);
        Ok(())
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::Relaxed)
    }

    /// The `code_challenge` of the last `/authorize` request.
    pub fn last_code_challenge(&self) -> Option<String> {
        lock(&self.shared.last_challenge).clone()
    }

    /// The claims `/token` would put in an ID token for the current user.
    pub fn claims(&self, nonce: Option<&str>) -> Value {
        let user = lock(&self.shared.user).clone();
        self.shared.claims(&user, nonce)
    }

    /// Sign `claims` with the issuer's current key, spoiled as `tamper` says.
    pub fn mint(&self, claims: &Value, tamper: Tamper) -> Result<String, TestIssuerError> {
        self.shared.mint(claims.clone(), tamper)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    fn claims(&self, user: &TestUser, nonce: Option<&str>) -> Value {
        let now = unix_now();
        let mut c = json!({
            "iss": self.issuer,
            "sub": user.subject,
            "aud": self.config.client_id,
            "iat": now,
            "exp": now + self.config.id_token_lifetime.as_secs(),
            "email_verified": user.email_verified,
        });
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        if let Some(e) = &user.email {
            c["email"] = json!(e);
        }
        if let Some(n) = &user.name {
            c["name"] = json!(n);
        }
        if let Some(hd) = &user.hosted_domain {
            c["hd"] = json!(hd);
        }
        if let Some(tid) = &user.tenant_id {
            c["tid"] = json!(tid);
        }
        c
    }

    fn mint(&self, mut claims: Value, tamper: Tamper) -> Result<String, TestIssuerError> {
        let signer = lock(&self.signer).clone();
        let mut header = signer.header();
        let mut key: &RsaSigner = &signer;
        match tamper {
            Tamper::None => {}
            Tamper::ForgedSignature => key = &self.forger,
            Tamper::WrongAudience => claims["aud"] = json!("some-other-client"),
            Tamper::WrongIssuer => claims["iss"] = json!("http://127.0.0.1:1"),
            Tamper::Expired => {
                let past = unix_now().saturating_sub(3600);
                claims["iat"] = json!(past - 300);
                claims["exp"] = json!(past);
            }
            Tamper::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
            Tamper::AlgNone => header["alg"] = json!("none"),
            Tamper::AlgHs256 => header["alg"] = json!("HS256"),
        }
        key.sign(&header, &claims)
            .map_err(|_| TestIssuerError::Crypto)
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::Relaxed);
    let jwk = lock(&s.signer).jwk();
    Json(json!({ "keys": [jwk] }))
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str);
    if get("client_id") != Some(s.config.client_id.as_str()) {
        return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if s.config
        .redirect_uri
        .as_deref()
        .is_some_and(|r| r != redirect_uri)
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    if get("response_type") != Some("code")
        || get("code_challenge_method") != Some("S256")
        || !get("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid"))
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let Some(challenge) = get("code_challenge") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let Ok(code) = new_token() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    *lock(&s.last_challenge) = Some(challenge.to_owned());
    let user = lock(&s.user).clone();
    lock(&s.codes).insert(
        code.clone(),
        Grant {
            client_id: s.config.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            nonce: get("nonce").map(str::to_owned),
            user,
        },
    );
    let Ok(mut location) = url::Url::parse(redirect_uri) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    location.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = get("state") {
        location.query_pairs_mut().append_pair("state", state);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// Client credentials from HTTP Basic (form-urlencoded parts, RFC 6749 §2.3.1) or the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, Option<String>)> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let b64 = auth.strip_prefix("Basic ")?;
        let raw = String::from_utf8(STANDARD.decode(b64).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((dec(id)?, Some(dec(secret)?)));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret").cloned(),
    ))
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some((client_id, secret)) = client_credentials(&headers, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    if client_id != s.config.client_id || secret != s.config.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // Codes are single-use: removed before anything else can fail.
    let Some(grant) = get("code").and_then(|c| lock(&s.codes).remove(c)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier_ok = get("code_verifier").is_some_and(|v| s256_challenge(v) == grant.challenge);
    if grant.client_id != client_id
        || get("redirect_uri") != Some(grant.redirect_uri.as_str())
        || !verifier_ok
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let claims = s.claims(&grant.user, grant.nonce.as_deref());
    let tamper = *lock(&s.tamper);
    let Ok(id_token) = s.mint(claims, tamper) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let Ok(access_token) = new_token() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
        })),
    )
        .into_response()
}
