//! Session cookies and CSRF protection, as pure functions over header values.
//!
//! * The session cookie is `HttpOnly` (scripts cannot read it), `SameSite=Lax` (not sent on
//!   cross-site subrequests or POSTs, but sent on the top-level GET that brings the user back
//!   from the identity provider), `Path=/`, and `Secure` on HTTPS. With `Secure` it is named
//!   `__Host-classroom_session`: browsers then refuse it unless it is Secure, host-only and
//!   `Path=/`, so a sibling subdomain cannot plant ("toss") a session cookie on us.
//! * CSRF: a synchronizer token derived from the session id with HMAC-SHA256 under a server key
//!   (no per-session storage), sent by the page in `X-CSRF-Token` on state-changing requests, plus
//!   an `Origin` / `Sec-Fetch-Site` check that refuses requests a browser marks cross-site.

use std::time::Duration;

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::token::{self, RandomError};

/// Cookie name over plain HTTP (local trials).
pub const SESSION_COOKIE: &str = "classroom_session";
/// Cookie name over HTTPS; the `__Host-` prefix makes browsers enforce Secure, no Domain, Path=/.
pub const SESSION_COOKIE_SECURE: &str = "__Host-classroom_session";
/// Header in which pages present the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Refused so a value can never inject attributes (`;`) or break the header.
    #[error("cookie value has characters outside [A-Za-z0-9_-]")]
    BadValue,
}

/// How session-like cookies are written: one value per server, built from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiePolicy {
    /// The server is reached over HTTPS (`public_url` starts with `https://`).
    pub secure: bool,
    /// `Max-Age`: how long the browser keeps the cookie. The server must also expire the session
    /// itself; this only keeps stale cookies from piling up.
    pub max_age: Duration,
}

impl CookiePolicy {
    pub fn new(secure: bool, max_age: Duration) -> Self {
        Self { secure, max_age }
    }

    /// `secure` from the server's public URL: HTTPS means Secure cookies.
    pub fn for_public_url(public_url: &str, max_age: Duration) -> Self {
        let secure = public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        Self::new(secure, max_age)
    }

    /// The session cookie's name under this policy.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.secure {
            SESSION_COOKIE_SECURE
        } else {
            SESSION_COOKIE
        }
    }

    /// `Set-Cookie` value that installs `session_id`.
    pub fn set_session(&self, session_id: &str) -> Result<String, CookieError> {
        self.set(self.session_cookie_name(), session_id, self.max_age)
    }

    /// `Set-Cookie` value that removes the session cookie (sign-out).
    pub fn clear_session(&self) -> String {
        self.build(self.session_cookie_name(), "", Duration::ZERO)
    }

    /// `Set-Cookie` value for any other short-lived cookie under the same rules (e.g. the
    /// pending OIDC login's state between `/auth/oidc/start` and the callback). `name` gets the
    /// `__Host-` prefix when secure. The value must be base64url text.
    pub fn set(&self, name: &str, value: &str, max_age: Duration) -> Result<String, CookieError> {
        if !is_cookie_safe(value) || !is_cookie_safe(name) {
            return Err(CookieError::BadValue);
        }
        Ok(self.build(name, value, max_age))
    }

    /// The full cookie name for `name` under this policy (with `__Host-` when secure).
    pub fn cookie_name(&self, name: &str) -> String {
        if self.secure && !name.starts_with("__Host-") {
            format!("__Host-{name}")
        } else {
            name.to_owned()
        }
    }

    fn build(&self, name: &str, value: &str, max_age: Duration) -> String {
        let name = self.cookie_name(name);
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{name}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            max_age.as_secs()
        )
    }

    /// The session id from a request's `Cookie` header(s), if one is present and well formed.
    pub fn session_from_cookies<'a>(&self, cookie_headers: &[&'a str]) -> Option<&'a str> {
        let name = self.session_cookie_name();
        cookie_headers
            .iter()
            .find_map(|h| cookie_value(h, name))
            .filter(|v| token::is_well_formed(v))
    }
}

/// The value of cookie `name` in one `Cookie` request header (`a=1; b=2`). Returns the first
/// match: with the `__Host-` prefix no other site can have set a second one.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn is_cookie_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Server key for CSRF tokens. Derive it from the server's secret (so tokens survive restarts)
/// or generate one per process (tokens then change on restart and pages must reload).
#[derive(Clone)]
pub struct CsrfKey(hmac::Key);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

/// Keeps CSRF tokens distinct from any other HMAC the same secret may be used for.
const CSRF_CONTEXT: &[u8] = b"classroom-csrf-v1\0";

impl CsrfKey {
    /// Key from secret bytes (at least 32 bytes of entropy are expected).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random key for this process.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self::from_secret(&token::random_bytes::<32>()?))
    }

    fn tag(&self, session_id: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(CSRF_CONTEXT);
        ctx.update(session_id.as_bytes());
        ctx.sign()
    }
}

/// The CSRF token for a session: what the page embeds and returns in `X-CSRF-Token`.
pub fn csrf_token(key: &CsrfKey, session_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.tag(session_id).as_ref())
}

/// Whether `presented` is the CSRF token of `session_id`, compared in constant time.
pub fn verify_csrf(key: &CsrfKey, session_id: &str, presented: &str) -> bool {
    let Ok(presented) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
        return false;
    };
    constant_time::verify_slices_are_equal(key.tag(session_id).as_ref(), &presented).is_ok()
}

/// Methods that may change state and therefore need CSRF protection. Everything but the safe
/// methods of RFC 9110 §9.2.1, so an unknown method is protected too.
pub fn is_state_changing(method: &str) -> bool {
    !matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "TRACE"
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("cross-site request refused (Sec-Fetch-Site: {0})")]
    CrossSiteFetch(String),
    #[error("request from another origin refused (Origin: {0})")]
    ForeignOrigin(String),
    #[error("missing CSRF token")]
    MissingToken,
    #[error("wrong CSRF token")]
    BadToken,
}

/// Same-origin check from the browser's own headers. `expected_origin` is the server's public
/// origin, `scheme://host[:port]` without a trailing slash (e.g. `https://lessons.example.org`).
///
/// * `Sec-Fetch-Site` (all current browsers): must be `same-origin`. `same-site` is refused too:
///   a sibling subdomain (another school's site on the same registrable domain) is not us.
/// * `Origin`: must equal `expected_origin` (`null` is refused).
/// * Neither header (old browsers, non-browser clients): allowed here; the CSRF token decides.
///
/// Safe methods always pass.
pub fn check_origin(
    method: &str,
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    expected_origin: &str,
) -> Result<(), CsrfError> {
    if !is_state_changing(method) {
        return Ok(());
    }
    if let Some(site) = sec_fetch_site
        && !site.trim().eq_ignore_ascii_case("same-origin")
    {
        return Err(CsrfError::CrossSiteFetch(site.to_owned()));
    }
    if let Some(origin) = origin {
        let expected = expected_origin.trim_end_matches('/');
        if !origin.trim().eq_ignore_ascii_case(expected) {
            return Err(CsrfError::ForeignOrigin(origin.to_owned()));
        }
    }
    Ok(())
}

/// The complete check for a request made with a session: origin headers, then the token from
/// `X-CSRF-Token`. Safe methods pass without a token.
pub fn check_request(
    key: &CsrfKey,
    session_id: &str,
    method: &str,
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    csrf_header: Option<&str>,
    expected_origin: &str,
) -> Result<(), CsrfError> {
    if !is_state_changing(method) {
        return Ok(());
    }
    check_origin(method, origin, sec_fetch_site, expected_origin)?;
    let presented = csrf_header.ok_or(CsrfError::MissingToken)?;
    if verify_csrf(key, session_id, presented) {
        Ok(())
    } else {
        Err(CsrfError::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn secure_cookie_has_host_prefix_and_all_attributes() {
        let p = CookiePolicy::for_public_url("https://lessons.example.org", DAY);
        let id = token::new_token().unwrap();
        assert_eq!(
            p.set_session(&id).unwrap(),
            format!(
                "__Host-classroom_session={id}; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax; Secure"
            )
        );
        assert_eq!(
            p.clear_session(),
            "__Host-classroom_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn plain_http_cookie_is_not_secure() {
        let p = CookiePolicy::for_public_url("http://127.0.0.1:8080", DAY);
        assert!(!p.secure);
        let c = p.set_session("abc").unwrap();
        assert_eq!(
            c,
            "classroom_session=abc; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn cookie_values_cannot_inject_attributes() {
        let p = CookiePolicy::new(true, DAY);
        assert_eq!(
            p.set_session("x; Domain=evil.example"),
            Err(CookieError::BadValue)
        );
        assert_eq!(p.set("a b", "x", DAY), Err(CookieError::BadValue));
        assert!(
            p.set("oidc_state", "abc", DAY)
                .unwrap()
                .starts_with("__Host-oidc_state=abc;")
        );
    }

    #[test]
    fn session_is_read_from_cookie_header() {
        let p = CookiePolicy::new(true, DAY);
        let id = token::new_token().unwrap();
        let header = format!("theme=dark; __Host-classroom_session={id}; lang=ja");
        assert_eq!(
            p.session_from_cookies(&["other=1", &header]),
            Some(id.as_str())
        );
        // The unprefixed name is not accepted on HTTPS: it could have been planted.
        let planted = format!("classroom_session={id}");
        assert_eq!(p.session_from_cookies(&[&planted]), None);
        // Garbage is not a session.
        assert_eq!(
            p.session_from_cookies(&["__Host-classroom_session=short"]),
            None
        );
        assert_eq!(p.session_from_cookies(&[]), None);
        assert_eq!(cookie_value("a=1;b=\"2\"", "b"), Some("2"));
        assert_eq!(cookie_value("ab=1", "a"), None);
    }

    #[test]
    fn csrf_token_round_trip_and_binding() {
        let key = CsrfKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let t = csrf_token(&key, "session-a");
        assert!(verify_csrf(&key, "session-a", &t));
        assert!(!verify_csrf(&key, "session-b", &t));
        let other = CsrfKey::from_secret(b"another key, another server......");
        assert!(!verify_csrf(&other, "session-a", &t));
        assert!(!verify_csrf(&key, "session-a", ""));
        assert!(!verify_csrf(&key, "session-a", "not base64 !!"));
        assert!(!verify_csrf(&key, "session-a", &t[..t.len() - 2]));
        let generated = CsrfKey::generate().unwrap();
        assert_ne!(csrf_token(&generated, "session-a"), t);
    }

    #[test]
    fn origin_checks() {
        let me = "https://lessons.example.org";
        assert_eq!(
            check_origin("GET", Some("https://evil.example"), Some("cross-site"), me),
            Ok(())
        );
        assert_eq!(
            check_origin("POST", Some(me), Some("same-origin"), me),
            Ok(())
        );
        assert_eq!(
            check_origin("post", Some("HTTPS://Lessons.example.org"), None, me),
            Ok(())
        );
        assert_eq!(check_origin("DELETE", None, None, me), Ok(()));
        assert!(matches!(
            check_origin("POST", Some(me), Some("cross-site"), me),
            Err(CsrfError::CrossSiteFetch(_))
        ));
        assert!(matches!(
            check_origin("PUT", None, Some("same-site"), me),
            Err(CsrfError::CrossSiteFetch(_))
        ));
        assert!(matches!(
            check_origin("POST", Some("https://evil.example"), None, me),
            Err(CsrfError::ForeignOrigin(_))
        ));
        assert!(matches!(
            check_origin("POST", Some("null"), None, me),
            Err(CsrfError::ForeignOrigin(_))
        ));
        assert!(is_state_changing("PATCH"));
        assert!(is_state_changing("BREW"));
        assert!(!is_state_changing("head"));
    }

    #[test]
    fn full_request_check() {
        let key = CsrfKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let me = "https://lessons.example.org";
        let t = csrf_token(&key, "s");
        let ok = check_request(
            &key,
            "s",
            "POST",
            Some(me),
            Some("same-origin"),
            Some(&t),
            me,
        );
        assert_eq!(ok, Ok(()));
        assert_eq!(
            check_request(&key, "s", "POST", Some(me), None, None, me),
            Err(CsrfError::MissingToken)
        );
        assert_eq!(
            check_request(&key, "s", "POST", Some(me), None, Some("AAAA"), me),
            Err(CsrfError::BadToken)
        );
        assert_eq!(
            check_request(&key, "s", "GET", None, None, None, me),
            Ok(())
        );
    }
}
