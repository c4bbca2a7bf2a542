//! Sign-in for classroom.
//!
//! * [`oidc`]: OpenID Connect, authorization code + PKCE, ID tokens verified against the
//!   issuer's JWKS (Microsoft Entra ID, Google Workspace).
//! * [`token`]: random tokens for sessions and one-time sign-in links, and the SHA-256 hashes
//!   that storage keeps instead of the tokens.
//! * [`session`]: session cookies (HttpOnly, SameSite=Lax, Secure + `__Host-` on HTTPS) and
//!   CSRF protection (HMAC synchronizer token, Origin / Sec-Fetch-Site check).
//! * [`rate_limit`]: keyed token buckets for sign-in attempts.
//! * [`client_addr`]: the client's address behind trusted reverse proxies.
//! * `web` (feature `axum`): a CSRF middleware for axum.
//! * `test_issuer` (feature `test-issuer`): a real OIDC issuer on 127.0.0.1 for tests.
//!
//! Everything but the OIDC HTTP calls is sans-IO: pure functions over header values, with the
//! current time passed in where it matters. Storage is another crate's job.

pub mod client_addr;
pub mod oidc;
pub mod rate_limit;
pub mod session;
pub mod token;

#[cfg(feature = "test-issuer")]
pub mod test_issuer;
#[cfg(feature = "axum")]
pub mod web;

pub use client_addr::{ForwardedHeader, IpNet, TrustedProxies};
pub use oidc::{
    Callback, ClientAuth, OidcClient, OidcConfig, OidcError, PendingLogin, VerifiedIdentity,
    parse_callback,
};
pub use rate_limit::{Quota, RateLimited, RateLimiter};
pub use session::{CookiePolicy, CsrfError, CsrfKey, check_request, csrf_token, verify_csrf};
pub use token::{MintedToken, SignInLink, hash_token, new_sign_in_link, new_token};
