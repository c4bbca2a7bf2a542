//! Sign-in and sessions: one-time links, OIDC, `/api/me`, sign-out.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use classroom_auth::oidc::{OidcError, PendingLogin, VerifiedIdentity, parse_callback};
use classroom_auth::session;
use classroom_auth::token::{self, MintedToken};
use classroom_domain::{
    Action, AuditEntry, ExternalAccount, ExternalSignInError, Person, SignInLinkError, audit,
};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use crate::client_addr::ClientAddr;
use crate::next::safe_next;
use crate::signin_limits::{check_address, check_key};
use crate::{ApiError, SESSION_TTL, Shared, home_of, person_json, unix_now};

const PENDING_COOKIE: &str = "oidc_pending";
const NEXT_COOKIE: &str = "oidc_next";
const PENDING_TTL: Duration = Duration::from_secs(600);

/// Routes behind the CSRF middleware.
pub fn protected_routes() -> Router<Shared> {
    Router::new()
        .route("/api/me", get(me))
        .route("/auth/signout", post(signout))
}

/// Routes that do their own origin checks (there is no session yet to carry a CSRF token).
pub fn open_routes() -> Router<Shared> {
    Router::new()
        .route("/auth/link/{token}", get(link_page).post(link_consume))
        .route("/auth/oidc/start", get(oidc_start))
        .route("/auth/oidc/callback", get(oidc_callback))
}

async fn me(State(portal): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let now = unix_now();
    let today = portal.policy.local_date(now).format("%Y-%m-%d").to_string();
    let common = json!({
        "oidc": portal.oidc.is_some(),
        "timezone": portal.timezone.name(),
        "today": today,
    });
    let mut body = match portal.session(&headers).await? {
        None => json!({ "person": null }),
        Some(s) => json!({
            "person": person_json(&s.person),
            "csrf_token": session::csrf_token(&portal.csrf.key, &s.sid),
            "home": home_of(s.role()),
        }),
    };
    if let (Some(map), Some(extra)) = (body.as_object_mut(), common.as_object()) {
        map.extend(extra.clone());
    }
    Ok(no_store(Json(body).into_response()))
}

async fn signout(State(portal): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(sid) = portal.csrf.session_id(&headers) {
        classroom_domain::delete_session(&portal.db, &token::hash_token(&sid)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &portal.cookies().clear_session());
    Ok(response)
}

/// Creates a session for `person` and returns the `Set-Cookie` value.
async fn start_session(
    portal: &Shared,
    person: &Person,
    ip: IpAddr,
    method: &str,
) -> Result<String, ApiError> {
    let minted = MintedToken::new().map_err(|_| ApiError::internal())?;
    let now = unix_now();
    classroom_domain::create_session(
        &portal.db,
        &minted.hash,
        &person.id,
        now,
        now + SESSION_TTL.as_secs() as i64,
    )
    .await?;
    let remote = ip.to_string();
    audit(
        &portal.db,
        &AuditEntry {
            at: now,
            actor: Some(&person.id),
            action: Action::SignIn,
            subject: Some(&person.id),
            detail: json!({ "method": method }),
            remote_addr: Some(&remote),
        },
    )
    .await?;
    info!(person = %person.id, method, "signed in");
    portal
        .cookies()
        .set_session(&minted.token)
        .map_err(|_| ApiError::internal())
}

async fn audit_failure(
    portal: &Shared,
    ip: IpAddr,
    subject: Option<&str>,
    detail: serde_json::Value,
) {
    let remote = ip.to_string();
    let entry = AuditEntry {
        at: unix_now(),
        actor: None,
        action: Action::SignInFailed,
        subject,
        detail,
        remote_addr: Some(&remote),
    };
    if let Err(e) = audit(&portal.db, &entry).await {
        warn!("cannot audit a failed sign-in: {e}");
    }
}

fn signin_error(code: &str) -> Response {
    no_store(Redirect::to(&format!("/signin.html?error={code}")).into_response())
}

fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `GET /auth/link/{token}`: a page whose button POSTs back. Mail scanners fetch links with
/// GET; only a person pressing the button spends the link.
///
/// The page's referrer policy is `same-origin`, not `no-referrer`: under `no-referrer` browsers
/// send its form POST with `Origin: null`, which the same-origin check must refuse (Chromium
/// does, so no link could be spent). `same-origin` still keeps the token in the URL from
/// reaching any other site. No inline styles: the page's CSP forbids them.
async fn link_page(Path(_token): Path<String>) -> Response {
    let page = r#"<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin"><title>サインイン / Sign in</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/css/style.css"><link rel="stylesheet" href="/css/portal.css"></head>
<body class="portal signin"><main class="portal-main narrow"><section class="card signin-card">
<h1>サインイン / Sign in</h1>
<p>ボタンを押してサインインしてください。<br>Press the button to sign in.</p>
<form method="post"><button type="submit" class="button primary big" id="btn-signin">サインイン / Sign in</button></form>
</section></main></body></html>"#;
    let mut response = no_store(Html(page).into_response());
    let headers = response.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

/// `POST /auth/link/{token}`: spends the link, starts a session, goes to the role's home.
///
/// The address limit comes before anything is written, malformed links included: refused
/// attempts add no audit rows beyond one per address per window ([`crate::signin_limits`]).
async fn link_consume(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Path(link): Path<String>,
) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Err(e) = session::check_origin(
        "POST",
        h("origin"),
        h("sec-fetch-site"),
        &portal.csrf.public_origin,
    ) {
        info!("sign-in link POST refused: {e}");
        return ApiError::new(StatusCode::FORBIDDEN, "csrf", "Cross-site request refused.")
            .into_response();
    }
    if let Err(e) = check_address(&portal, ip, "link").await {
        return e.into_response();
    }
    if !token::is_well_formed(&link) {
        audit_failure(
            &portal,
            ip,
            None,
            json!({ "method": "link", "reason": "malformed" }),
        )
        .await;
        return signin_error("link_invalid");
    }
    let hash = token::hash_token(&link);
    if let Err(e) = check_key(&portal, ip, &format!("link:{hash}"), "link").await {
        return e.into_response();
    }
    let person = match classroom_domain::consume_signin_link(&portal.db, &hash, unix_now()).await {
        Ok(id) => id,
        Err(e) => {
            let reason = match &e {
                SignInLinkError::Unknown => "unknown",
                SignInLinkError::AlreadyUsed => "already_used",
                SignInLinkError::Expired => "expired",
                SignInLinkError::Disabled => "disabled",
                SignInLinkError::Db(db) => {
                    warn!("sign-in link: {db}");
                    return ApiError::internal().into_response();
                }
            };
            audit_failure(
                &portal,
                ip,
                None,
                json!({ "method": "link", "reason": reason }),
            )
            .await;
            return signin_error("link_invalid");
        }
    };
    finish(&portal, &person, ip, "link", None).await
}

async fn finish(
    portal: &Shared,
    person_id: &str,
    ip: IpAddr,
    method: &str,
    next: Option<String>,
) -> Response {
    let person = match classroom_domain::person(&portal.db, person_id).await {
        Ok(Some(p)) if p.enabled => p,
        Ok(_) => return signin_error("account_disabled"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let cookie = match start_session(portal, &person, ip, method).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let target = next.unwrap_or_else(|| home_of(person.role()).to_owned());
    let mut response = no_store(Redirect::to(&target).into_response());
    set_cookie(&mut response, &cookie);
    response
}

#[derive(Deserialize)]
struct StartQuery {
    next: Option<String>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `GET /auth/oidc/start?next=/path`.
async fn oidc_start(State(portal): State<Shared>, Query(q): Query<StartQuery>) -> Response {
    let Some(oidc) = portal.oidc.as_ref() else {
        return ApiError::not_found("identity provider").into_response();
    };
    let (url, pending) = match oidc.begin() {
        Ok(x) => x,
        Err(e) => {
            warn!("OIDC start: {e}");
            return signin_error("oidc_failed");
        }
    };
    let cookies = portal.cookies();
    let mut response = no_store(Redirect::to(url.as_str()).into_response());
    match cookies.set(PENDING_COOKIE, &pending.to_cookie_value(), PENDING_TTL) {
        Ok(c) => set_cookie(&mut response, &c),
        Err(_) => return ApiError::internal().into_response(),
    }
    let next = safe_next(q.next.as_deref())
        .map(|n| hex(&n))
        .unwrap_or_default();
    if let Ok(c) = cookies.set(NEXT_COOKIE, &next, PENDING_TTL) {
        set_cookie(&mut response, &c);
    }
    response
}

/// `GET /auth/oidc/callback?code&state`.
async fn oidc_callback(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(oidc) = portal.oidc.as_ref() else {
        return ApiError::not_found("identity provider").into_response();
    };
    if let Err(e) = check_address(&portal, ip, "oidc").await {
        return e.into_response();
    }
    let cookie_headers: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookies = portal.cookies();
    let find = |name: &str| {
        let name = cookies.cookie_name(name);
        cookie_headers
            .iter()
            .find_map(|h| session::cookie_value(h, &name))
            .map(str::to_owned)
    };
    let pending = find(PENDING_COOKIE).and_then(|v| PendingLogin::from_cookie_value(&v));
    let next = find(NEXT_COOKIE)
        .and_then(|v| unhex(&v))
        .and_then(|n| safe_next(Some(&n)));
    let clear = |mut r: Response| {
        for name in [PENDING_COOKIE, NEXT_COOKIE] {
            if let Ok(c) = cookies.set(name, "", Duration::ZERO) {
                set_cookie(&mut r, &c);
            }
        }
        r
    };
    let Some(pending) = pending else {
        return clear(signin_error("oidc_expired"));
    };
    let callback = match parse_callback(query.as_deref().unwrap_or("")) {
        Ok(cb) => cb,
        Err(e) => {
            info!("OIDC callback refused: {e}");
            audit_failure(
                &portal,
                ip,
                None,
                json!({ "method": "oidc", "reason": e.to_string() }),
            )
            .await;
            return clear(signin_error("oidc_failed"));
        }
    };
    let identity = match oidc
        .complete(&pending, &callback.code, &callback.state)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            info!("OIDC sign-in refused: {e}");
            let (reason, code) = match &e {
                OidcError::TenantNotAllowed { .. } => {
                    ("tenant_not_allowed".to_owned(), "tenant_not_allowed")
                }
                _ => (e.to_string(), "oidc_failed"),
            };
            audit_failure(
                &portal,
                ip,
                None,
                json!({ "method": "oidc", "reason": reason }),
            )
            .await;
            return clear(signin_error(code));
        }
    };
    let account = format!("account:{} {}", identity.issuer, identity.subject);
    if let Err(e) = check_key(&portal, ip, &account, "oidc").await {
        return clear(e.into_response());
    }
    let account = ExternalAccount {
        issuer: &identity.issuer,
        subject: &identity.subject,
        trusted_email: identity.trusted_email(),
    };
    let signed_in = match classroom_domain::sign_in_external(&portal.db, &account, unix_now()).await
    {
        Ok(s) => s,
        Err(ExternalSignInError::Db(e)) => return clear(ApiError::from(e).into_response()),
        Err(e) => {
            let (reason, code) = refusal(&e, &identity);
            info!(sub = %identity.subject, "OIDC sign-in refused: {e}");
            audit_failure(&portal, ip, None, refusal_detail(reason, &identity)).await;
            return clear(signin_error(code));
        }
    };
    clear(finish(&portal, &signed_in.person().id, ip, "oidc", next).await)
}

/// The audit reason and the sign-in page's error code for an account that found nobody.
fn refusal(e: &ExternalSignInError, identity: &VerifiedIdentity) -> (&'static str, &'static str) {
    match e {
        ExternalSignInError::UntrustedEmail if identity.email.is_some() => {
            ("email_unverified", "email_unverified")
        }
        ExternalSignInError::UntrustedEmail => ("no_email", "no_account"),
        ExternalSignInError::NoAccount => ("no_account", "no_account"),
        ExternalSignInError::Ambiguous => ("ambiguous_account", "ambiguous_account"),
        ExternalSignInError::BoundToAnother => ("bound_to_another_account", "account_bound"),
        ExternalSignInError::Disabled | ExternalSignInError::Db(_) => {
            ("account_disabled", "account_disabled")
        }
    }
}

/// Longest claimed address kept in the audit log (RFC 5321's limit): the token is the issuer's,
/// but at some issuers the user typed the address.
const MAX_AUDITED_EMAIL: usize = 320;

fn refusal_detail(reason: &str, identity: &VerifiedIdentity) -> serde_json::Value {
    let email: Option<String> = identity
        .email
        .as_deref()
        .map(|e| e.chars().take(MAX_AUDITED_EMAIL).collect());
    json!({
        "method": "oidc",
        "reason": reason,
        "issuer": identity.issuer,
        "sub": identity.subject,
        "email": email,
        "email_verified": identity.email_verified,
    })
}
