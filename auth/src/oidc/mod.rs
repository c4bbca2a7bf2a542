//! Sign-in with OpenID Connect: authorization code flow with PKCE (S256), ID tokens verified
//! against the issuer's JWKS.
//!
//! Flow, as wired into the HTTP layer:
//! 1. `OidcClient::discover(config)` once at startup.
//! 2. `/auth/oidc/start`: `client.begin()` gives the provider URL to redirect to and a
//!    `PendingLogin` (state, nonce, PKCE verifier) that the caller keeps until the callback —
//!    server-side keyed by `pending.state()`, or in a short-lived HttpOnly cookie.
//! 3. `/auth/oidc/callback?code=..&state=..`: `client.complete(pending, code, state)` checks the
//!    state, redeems the code with the verifier, verifies the ID token and returns the
//!    `VerifiedIdentity` to match against the roster.
//!
//! TLS: the HTTP client is reqwest with rustls on aws-lc-rs and the OS trust store (install
//! `ca-certificates`). The server process installs aws-lc-rs as rustls' default provider at
//! startup (`rustls::crypto::aws_lc_rs::default_provider().install_default()`); reqwest 0.13's
//! `rustls` feature is built on aws-lc-rs as well, so no ring is linked.
//!
//! Provider notes:
//! * Microsoft Entra ID: use the tenant-specific issuer
//!   `https://login.microsoftonline.com/<tenant-id>/v2.0`. The multi-tenant `common` and
//!   `organizations` documents publish a templated issuer (`.../{tenantid}/v2.0`) that cannot be
//!   checked exactly; `discover` refuses them. Entra sends no `email_verified`: its `email` is
//!   whatever the tenant's administrator entered (fine within one school's tenant, not across
//!   tenants), and `preferred_username` is the UPN.
//! * Google Workspace: issuer `https://accounts.google.com`; the `hd` claim
//!   (`VerifiedIdentity::hosted_domain`) names the Workspace domain — check it when matching,
//!   or personal Google accounts are let through to the roster lookup.

mod discovery;
mod http;
mod jwks;
mod pkce;
#[cfg(any(test, feature = "test-issuer"))]
pub(crate) mod sign;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::constant_time;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use url::Url;

pub use discovery::{ProviderMetadata, discovery_url};
pub use http::default_client;
pub use jwks::{SigningKey, parse_key_set};
pub use pkce::s256_challenge;
pub use verify::{Expected, tenant_gate, verify_id_token};

use crate::token::{RandomError, random_text};

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("OIDC configuration: {0}")]
    Config(String),
    #[error("HTTP request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("unexpected response from {url}: {message}")]
    BadResponse { url: String, message: String },
    #[error("the discovery document names issuer {found:?}, configured is {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the token endpoint refused the code: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenEndpoint {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The callback carried `error=` instead of a code (e.g. the user cancelled:
    /// `access_denied`).
    #[error("the identity provider reported an error: {error}")]
    ProviderError {
        error: String,
        description: Option<String>,
    },
    #[error("the callback lacks the {0} parameter")]
    MissingParameter(&'static str),
    #[error("the returned state does not match the pending login")]
    StateMismatch,
    #[error("the login took too long; start again")]
    LoginExpired,
    #[error("malformed ID token: {0}")]
    MalformedToken(String),
    #[error("ID token signed with a disallowed algorithm {0:?}")]
    DisallowedAlgorithm(String),
    #[error("no signing key {0:?} in the issuer's JWKS")]
    UnknownKey(Option<String>),
    #[error("ID token signature does not verify")]
    BadSignature,
    #[error("ID token issued by another issuer")]
    WrongIssuer,
    #[error("ID token issued for another client")]
    WrongAudience,
    #[error("ID token expired")]
    Expired,
    #[error("ID token not valid yet (issuer clock ahead?)")]
    NotYetValid,
    #[error("ID token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("ID token nonce does not match the pending login")]
    NonceMismatch,
    /// An allow-list of tenants is configured and the token's `tid` / `hd` is not on it.
    #[error("ID token from a tenant that is not allowed ({})", tenant.as_deref().unwrap_or("none"))]
    TenantNotAllowed { tenant: Option<String> },
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl OidcError {
    pub(crate) fn http(url: &str, e: &reqwest::Error) -> Self {
        // reqwest's Display hides the cause ("error sending request"); the chain says why.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::Http {
            url: url.to_owned(),
            message,
        }
    }
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body. Google and Entra both accept it.
    #[default]
    ClientSecretPost,
    /// HTTP Basic with the form-urlencoded id and secret.
    ClientSecretBasic,
}

/// Default of `OidcConfig::jwks_refresh`. Google and Entra publish a new key days before
/// signing with it; hourly keeps up with that at one small request an hour.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct OidcConfig {
    /// Exactly as the provider's discovery document spells it, e.g. `https://accounts.google.com`
    /// or `https://login.microsoftonline.com/<tenant-id>/v2.0`.
    pub issuer: String,
    pub client_id: String,
    /// `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// The callback, registered at the provider: `https://lessons.example.org/auth/oidc/callback`.
    pub redirect_url: String,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    /// Extra authorization request parameters, e.g. `("hd", "school.example.jp")` for Google
    /// Workspace or `("prompt", "select_account")`.
    pub extra_auth_params: Vec<(String, String)>,
    /// How long a `PendingLogin` stays valid.
    pub login_timeout: Duration,
    /// Allowed clock difference with the issuer.
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches caused by an unknown `kid`.
    pub jwks_refetch_interval: Duration,
    /// How often the JWKS is fetched again on a schedule, so keys the issuer publishes ahead of
    /// a rotation are known before the first token signed with them, and retired (or revoked)
    /// keys stop verifying. Zero turns the schedule off.
    pub jwks_refresh: Duration,
    /// Entra tenant ids (`tid`) or Google Workspace domains (`hd`) whose tokens are accepted.
    /// Empty: any. A listed tenant also vouches for the token's `email` (see
    /// `VerifiedIdentity::email_trusted`).
    pub allowed_tenants: Vec<String>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("client_auth", &self.client_auth)
            .field("allowed_tenants", &self.allowed_tenants)
            .field("jwks_refresh", &self.jwks_refresh)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    /// Defaults: scopes `openid email profile`, `client_secret_post`, 10 min to finish a login,
    /// 60 s leeway, JWKS refetched for an unknown key at most every 10 s and on a schedule every
    /// hour, every tenant accepted.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
        redirect_url: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret,
            redirect_url: redirect_url.into(),
            scopes: ["openid", "email", "profile"].map(String::from).to_vec(),
            client_auth: ClientAuth::default(),
            extra_auth_params: Vec::new(),
            login_timeout: Duration::from_secs(600),
            leeway: Duration::from_secs(60),
            jwks_refetch_interval: Duration::from_secs(10),
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            allowed_tenants: Vec::new(),
        }
    }
}

/// What the caller keeps between `begin` and `complete`. Serializable so it can live in a
/// cookie; the verifier in it is a secret, so such a cookie must be HttpOnly (and is
/// useless to anyone but the browser that started the login).
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    state: String,
    nonce: String,
    code_verifier: String,
    /// Seconds since the Unix epoch.
    created_at: u64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// The `state` sent to the provider: the key to store this login under.
    pub fn state(&self) -> &str {
        &self.state
    }

    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Cookie-safe text (base64url of JSON, ~270 characters) to keep the login in a short-lived
    /// HttpOnly cookie between start and callback: no server-side state, and the cookie only
    /// helps the browser that started the login.
    pub fn to_cookie_value(&self) -> String {
        // Serializing plain strings and an integer cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// The inverse of `to_cookie_value`; `None` for anything malformed.
    pub fn from_cookie_value(value: &str) -> Option<Self> {
        if value.len() > 1024 {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A user the issuer vouched for. Identify them by `issuer` + `subject`; `email` may find the
/// roster person only when `email_trusted` (see [`VerifiedIdentity::trusted_email`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedIdentity {
    pub issuer: String,
    /// `sub`: stable per user (and per client at Entra).
    pub subject: String,
    pub email: Option<String>,
    /// `false` when the claim is absent (Entra never sends it).
    pub email_verified: bool,
    /// Whether `email` may be used to find the person: `email_verified`, or the token came from
    /// an allow-listed tenant (`OidcConfig::allowed_tenants`), whose addresses the school's
    /// directory assigns. Anything else is an address the user may have typed in themselves.
    pub email_trusted: bool,
    pub name: Option<String>,
    /// Entra's UPN, e.g. `taro@school.example.jp`.
    pub preferred_username: Option<String>,
    /// Google Workspace domain (`hd`); `None` for consumer Google accounts.
    pub hosted_domain: Option<String>,
    /// Entra tenant id (`tid`).
    pub tenant_id: Option<String>,
}

impl VerifiedIdentity {
    /// The e-mail address, only when it may be used to find the person.
    pub fn trusted_email(&self) -> Option<&str> {
        self.email.as_deref().filter(|_| self.email_trusted)
    }
}

/// The callback's `code` and `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub code: String,
    pub state: String,
}

/// Read the callback's raw query string (`code=..&state=..`, or `error=..` when the provider
/// refused or the user cancelled).
pub fn parse_callback(query: &str) -> Result<Callback, OidcError> {
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "code" => code = Some(v.into_owned()),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if let Some(error) = error {
        return Err(OidcError::ProviderError { error, description });
    }
    Ok(Callback {
        code: code.ok_or(OidcError::MissingParameter("code"))?,
        state: state.ok_or(OidcError::MissingParameter("state"))?,
    })
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<SigningKey>,
    fetched_at: Option<Instant>,
}

struct Inner {
    config: OidcConfig,
    metadata: ProviderMetadata,
    authorization_endpoint: Url,
    token_issuers: Vec<String>,
    http: reqwest::Client,
    keys: Mutex<KeyCache>,
}

/// A discovered provider. Cheap to clone (shared state); keep one per server. Discovery spawns
/// the scheduled JWKS refresh, so it must run inside a tokio runtime.
#[derive(Clone)]
pub struct OidcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.inner.config.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl OidcClient {
    /// Fetch and check the provider's discovery document with the default HTTP client.
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        Self::discover_with(config, http::default_client()?).await
    }

    /// As `discover`, with the caller's HTTP client (proxy settings, extra roots).
    pub async fn discover_with(
        config: OidcConfig,
        http: reqwest::Client,
    ) -> Result<Self, OidcError> {
        discovery::parse_endpoint("issuer", &config.issuer)?;
        // The redirect URL is the operator's own server; plain http is their choice (providers
        // refuse it except on localhost anyway), but it must parse.
        Url::parse(&config.redirect_url).map_err(|e| {
            OidcError::Config(format!("redirect_url {:?}: {e}", config.redirect_url))
        })?;
        if config.client_id.is_empty() {
            return Err(OidcError::Config("client_id is empty".into()));
        }
        if !config.scopes.iter().any(|s| s == "openid") {
            return Err(OidcError::Config("scopes must include openid".into()));
        }
        let url = discovery_url(&config.issuer);
        let metadata: ProviderMetadata = http::get_json(&http, &url).await?;
        discovery::check(&config.issuer, &metadata)?;
        let authorization_endpoint =
            discovery::parse_endpoint("authorization_endpoint", &metadata.authorization_endpoint)?;
        let token_issuers = discovery::accepted_token_issuers(&config.issuer);
        let inner = Arc::new(Inner {
            config,
            metadata,
            authorization_endpoint,
            token_issuers,
            http,
            keys: Mutex::new(KeyCache::default()),
        });
        spawn_scheduled_refresh(&inner);
        Ok(Self { inner })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    pub fn metadata(&self) -> &ProviderMetadata {
        &self.inner.metadata
    }

    /// Start a login: the provider URL to redirect the browser to, and what to keep until the
    /// callback.
    pub fn begin(&self) -> Result<(Url, PendingLogin), OidcError> {
        let pending = PendingLogin {
            state: random_text::<32>()?,
            nonce: random_text::<32>()?,
            code_verifier: pkce::new_verifier()?,
            created_at: unix_now(),
        };
        let c = &self.inner.config;
        let mut url = self.inner.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &c.client_id)
                .append_pair("redirect_uri", &c.redirect_url)
                .append_pair("scope", &c.scopes.join(" "))
                .append_pair("state", &pending.state)
                .append_pair("nonce", &pending.nonce)
                .append_pair(
                    "code_challenge",
                    &pkce::s256_challenge(&pending.code_verifier),
                )
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &c.extra_auth_params {
                q.append_pair(k, v);
            }
        }
        Ok((url, pending))
    }

    /// Finish a login from the callback's `code` and `state` query parameters.
    pub async fn complete(
        &self,
        pending: &PendingLogin,
        code: &str,
        returned_state: &str,
    ) -> Result<VerifiedIdentity, OidcError> {
        if constant_time::verify_slices_are_equal(
            pending.state.as_bytes(),
            returned_state.as_bytes(),
        )
        .is_err()
        {
            return Err(OidcError::StateMismatch);
        }
        let now = unix_now();
        if now
            > pending
                .created_at
                .saturating_add(self.inner.config.login_timeout.as_secs())
        {
            return Err(OidcError::LoginExpired);
        }
        let id_token = self.redeem_code(pending, code).await?;
        self.verify(&id_token, &pending.nonce, now).await
    }

    async fn redeem_code(&self, pending: &PendingLogin, code: &str) -> Result<String, OidcError> {
        let c = &self.inner.config;
        let url = self.inner.metadata.token_endpoint.as_str();
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &c.redirect_url),
            ("code_verifier", &pending.code_verifier),
        ];
        let mut req = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match (&c.client_secret, c.client_auth) {
            (Some(secret), ClientAuth::ClientSecretBasic) => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&c.client_id), Some(enc(secret)));
            }
            (Some(secret), ClientAuth::ClientSecretPost) => {
                form.push(("client_id", &c.client_id));
                form.push(("client_secret", secret));
            }
            (None, _) => form.push(("client_id", &c.client_id)),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::http(url, &e))?;
        let status = resp.status();
        let body = http::read_limited(url, resp).await?;
        if !status.is_success() {
            // RFC 6749 §5.2 error body, when there is one.
            let (error, description) = match serde_json::from_slice::<TokenErrorResponse>(&body) {
                Ok(e) => (e.error, e.error_description),
                Err(_) => (format!("HTTP {}", status.as_u16()), None),
            };
            return Err(OidcError::TokenEndpoint {
                status: status.as_u16(),
                error,
                description,
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| OidcError::BadResponse {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        parsed.id_token.ok_or_else(|| OidcError::BadResponse {
            url: url.to_owned(),
            message: "no id_token in the token response (is `openid` among the scopes?)".into(),
        })
    }

    /// Verify an ID token against this issuer's keys (fetched on first use, refetched once when a
    /// token names a key we do not have). `now` is seconds since the Unix epoch.
    pub async fn verify(
        &self,
        id_token: &str,
        nonce: &str,
        now: u64,
    ) -> Result<VerifiedIdentity, OidcError> {
        // Refuse a bad header before any JWKS traffic.
        verify::read_header(id_token)?;
        let c = &self.inner.config;
        let expected = Expected {
            issuers: &self.inner.token_issuers,
            client_id: &c.client_id,
            nonce,
            now,
            leeway: c.leeway.as_secs(),
            max_age: c.login_timeout.as_secs().max(300),
            allowed_tenants: &c.allowed_tenants,
        };
        // Held across the fetch on purpose: concurrent sign-ins during a rotation wait for one
        // fetch instead of each starting their own.
        let mut cache = self.inner.keys.lock().await;
        if cache.fetched_at.is_none() {
            self.refresh_keys(&mut cache).await?;
        }
        match verify_id_token(id_token, &cache.keys, &expected) {
            Err(OidcError::UnknownKey(kid)) => {
                let recent = cache
                    .fetched_at
                    .is_some_and(|t| t.elapsed() < c.jwks_refetch_interval);
                if recent {
                    return Err(OidcError::UnknownKey(kid));
                }
                tracing::info!(issuer = %c.issuer, ?kid, "unknown signing key; refetching the JWKS");
                self.refresh_keys(&mut cache).await?;
                verify_id_token(id_token, &cache.keys, &expected)
            }
            other => other,
        }
    }

    async fn refresh_keys(&self, cache: &mut KeyCache) -> Result<(), OidcError> {
        cache.store(fetch_keys(&self.inner).await?);
        Ok(())
    }
}

impl KeyCache {
    fn store(&mut self, keys: Vec<SigningKey>) {
        self.keys = keys;
        self.fetched_at = Some(Instant::now());
    }
}

async fn fetch_keys(inner: &Inner) -> Result<Vec<SigningKey>, OidcError> {
    let url = &inner.metadata.jwks_uri;
    let body: serde_json::Value = http::get_json(&inner.http, url).await?;
    parse_key_set(&body).map_err(|message| OidcError::BadResponse {
        url: url.clone(),
        message,
    })
}

/// Fetches the JWKS every `jwks_refresh` for as long as the client exists. The task holds only a
/// weak reference, so dropping the last `OidcClient` ends it at its next tick. The fetch runs
/// without the cache lock, so sign-ins meanwhile verify with the keys they have. A failed fetch
/// keeps the old keys: an issuer that is briefly unreachable must not sign everyone out of
/// reach; the next tick tries again.
fn spawn_scheduled_refresh(inner: &Arc<Inner>) {
    let every = inner.config.jwks_refresh;
    if every.is_zero() {
        return;
    }
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            match fetch_keys(&inner).await {
                Ok(keys) => {
                    tracing::debug!(issuer = %inner.config.issuer, keys = keys.len(), "JWKS refreshed");
                    inner.keys.lock().await.store(keys);
                }
                Err(e) => {
                    tracing::warn!(issuer = %inner.config.issuer, "scheduled JWKS refresh failed, keeping the old keys: {e}");
                }
            }
        }
    });
}
