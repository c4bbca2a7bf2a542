//! Lesson links between two schools' servers (docs/API.md "Lesson links", docs/PARTNER.md):
//! the host's invitations (create, list, revoke), the host's redeem endpoint that a partner's
//! server calls with a code, and the partner's side (accept a code for a local lesson, list,
//! end). The door of the host's rooms is [`crate::link_gate::PortalLinkGate`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use classroom_auth::rate_limit::{Quota, RateLimiter};
use classroom_domain::lesson_link::{
    self, EndedBy, LessonLink, LessonLinkError, NewLessonLink, NewPartnerLink, PartnerLink,
    PartnerLinkError,
};
use classroom_domain::{Acting, Action, AuditEntry, Lesson, PersonRole};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::client_addr::{ClientAddr, rate_key};
use crate::extract::Staff;
use crate::link_code::{CodeError, LinkCodes, peek_host};
use crate::{ApiError, Shared, rfc3339, unix_now};

/// How long an invitation lives unless the creator says otherwise.
const DEFAULT_HOURS: i64 = 24;
/// Largest redeem request, and largest answer to one read from a host.
pub const MAX_REDEEM_BYTES: usize = 16 * 1024;
/// The whole call to the host's redeem endpoint, connection included.
pub const REDEEM_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Redeem requests per client address: a few at once, then one every 6 s. A code is a signed
/// token, so guessing is hopeless anyway; this keeps a stranger from making the host check
/// signatures and query the database in a loop.
const REDEEM_QUOTA: Quota = Quota {
    burst: 10,
    refill_every: Duration::from_secs(6),
};
/// One audited redeem refusal per link a minute.
const REDEEM_REFUSAL_AUDIT: Quota = Quota {
    burst: 1,
    refill_every: Duration::from_secs(60),
};
const LIMITER_KEYS: usize = 10_000;

/// Lesson links' settings and state, shared by the handlers.
pub struct Links {
    /// The host's base URL written into invitations (`[links] public_url`), no trailing slash.
    pub public_url: String,
    /// Whether `http://` hosts (and `ws://` signaling) are accepted: tests on loopback only.
    pub allow_http: bool,
    codes: LinkCodes,
    http: reqwest::Client,
    redeems: RateLimiter<IpAddr>,
    refusal_audits: RateLimiter<String>,
}

impl Links {
    /// `secret` is the server's token secret; codes are signed with it.
    pub fn new(public_url: &str, allow_http: bool, secret: &[u8]) -> Result<Links, String> {
        let public_url = public_url.trim().trim_end_matches('/');
        if !url_allowed(public_url, &["https"], Some("http")) {
            return Err(format!(
                "links.public_url {public_url:?} must be an absolute http(s) URL without \
                 credentials, query or fragment"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REDEEM_CALL_TIMEOUT)
            .connect_timeout(REDEEM_CALL_TIMEOUT)
            // A host that redirects is not followed: the code goes only where it says.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client for lesson links: {e}"))?;
        Ok(Links {
            public_url: public_url.to_owned(),
            allow_http,
            codes: LinkCodes::new(secret),
            http,
            redeems: RateLimiter::new(REDEEM_QUOTA, LIMITER_KEYS),
            refusal_audits: RateLimiter::new(REDEEM_REFUSAL_AUDIT, LIMITER_KEYS),
        })
    }

    /// The signaling WebSocket of this server, as partners dial it.
    pub fn ws_url(&self) -> String {
        let base = &self.public_url;
        if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}/ws")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}/ws")
        } else {
            format!("{base}/ws")
        }
    }

    /// Whether a host URL (`https://…`, or `http://…` when allowed) may be called.
    pub fn host_url_allowed(&self, url: &str) -> bool {
        url_allowed(url, &["https"], self.allow_http.then_some("http"))
    }

    /// Whether a host's signaling URL (`wss://…`, or `ws://…` when allowed) may be dialled.
    pub fn ws_url_allowed(&self, url: &str) -> bool {
        url_allowed(url, &["wss"], self.allow_http.then_some("ws"))
    }
}

/// Whether the signaling URL a host answered is on the host the code named: the partner
/// server dials it for the link's whole life, so a host may not point it elsewhere.
fn same_host(host_url: &str, ws_url: &str) -> bool {
    match (url::Url::parse(host_url), url::Url::parse(ws_url)) {
        (Ok(a), Ok(b)) => a.host_str().is_some() && a.host_str() == b.host_str(),
        _ => false,
    }
}

/// Whether every address `url`'s host resolves to is a public one (not loopback, private,
/// link-local, shared, documentation or unspecified). A name that does not resolve is not.
async fn resolves_to_public_addresses(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::net::lookup_host((host, port));
    let Ok(Ok(addresses)) = tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await
    else {
        return false;
    };
    let addresses: Vec<std::net::SocketAddr> = addresses.collect();
    !addresses.is_empty() && addresses.iter().all(|a| is_public(a.ip()))
}

fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local
                    || (first & 0xffc0) == 0xfe80) // link-local
            }
        },
    }
}

fn url_allowed(url: &str, schemes: &[&str], plain: Option<&str>) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let scheme_ok = schemes.contains(&parsed.scheme()) || plain == Some(parsed.scheme());
    scheme_ok
        && parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none()
        && parsed.fragment().is_none()
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/api/lessons/{lesson}/partner-links",
            get(list).post(create),
        )
        .route("/api/lessons/{lesson}/partner-links/{link}", delete(revoke))
        .route("/api/lessons/{lesson}/partner-links/accept", post(accept))
        .route("/api/partner-links/accepted", get(accepted))
        .route("/api/partner-links/accepted/{link}", delete(end))
}

/// Routes without a session: the code is the credential (and no browser calls them, so they
/// are outside the CSRF check, like the sign-in links' POST).
pub fn open_routes() -> Router<Shared> {
    Router::new().route("/api/partner-links/redeem", post(redeem))
}

fn links(portal: &Shared) -> Result<&Links, ApiError> {
    portal.links.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "links_off",
            "This server has no lesson links.",
        )
    })
}

impl From<LessonLinkError> for ApiError {
    fn from(e: LessonLinkError) -> Self {
        match e {
            LessonLinkError::Db(e) => e.into(),
            LessonLinkError::NotFound => ApiError::not_found("partner link"),
            LessonLinkError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_links", e.to_string())
            }
            LessonLinkError::BadExpiry => ApiError::bad_request("ttl_hours must be 1 to 336"),
            LessonLinkError::BadName => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<PartnerLinkError> for ApiError {
    fn from(e: PartnerLinkError) -> Self {
        match e {
            PartnerLinkError::Db(e) => e.into(),
            PartnerLinkError::NotFound => ApiError::not_found("accepted partner link"),
            PartnerLinkError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_links", e.to_string())
            }
            PartnerLinkError::Duplicate => {
                ApiError::new(StatusCode::CONFLICT, "link_replayed", e.to_string())
            }
            PartnerLinkError::BadField(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "link_host_error", e.to_string())
            }
        }
    }
}

fn link_json(l: &LessonLink, now: i64) -> Value {
    json!({
        "id": l.id,
        "lesson_id": l.lesson_id,
        "partner_name": l.partner_name,
        "partner_school": l.partner_school,
        "state": l.state.as_str(),
        "created_by": l.created_by,
        "created_at": rfc3339(l.created_at),
        "expires_at": rfc3339(l.expires_at),
        "redeemed_at": l.redeemed_at.map(rfc3339),
        "revoked_at": l.revoked_at.map(rfc3339),
        "active": l.active(now),
    })
}

fn partner_json(l: &PartnerLink, now: i64) -> Value {
    json!({
        "id": l.id,
        "lesson_id": l.lesson_id,
        "host_link_id": l.host_link_id,
        "host": l.host_base_url,
        "host_school": l.host_school,
        "host_room": l.host_room,
        "lesson_title": l.lesson_title,
        "accepted_by": l.accepted_by,
        "accepted_at": rfc3339(l.accepted_at),
        "expires_at": rfc3339(l.expires_at),
        "ended_at": l.ended_at.map(rfc3339),
        "ended_by": l.ended_by,
        "active": l.active(now),
    })
}

fn acting<'a>(staff: &'a Staff, remote: &'a str, now: i64) -> Acting<'a> {
    Acting {
        person: &staff.session.person.id,
        at: now,
        remote_addr: Some(remote),
    }
}

async fn list(State(portal): State<Shared>, staff: Staff, Path(id): Path<String>) -> Response {
    let run = async {
        let lesson = crate::guests::inviting_lesson(&portal, &staff, &id).await?;
        let now = unix_now();
        let links = lesson_link::lesson_links_of_lesson(&portal.db, &lesson.id).await?;
        let links: Vec<Value> = links.iter().map(|l| link_json(l, now)).collect();
        Ok::<_, ApiError>(axum::Json(json!({ "links": links })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct CreateBody {
    partner_name: String,
    /// 1 to 336 hours (two weeks); 24 by default.
    ttl_hours: Option<i64>,
}

async fn create(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let links = links(&portal)?;
        let lesson = crate::guests::inviting_lesson(&portal, &staff, &id).await?;
        let body: CreateBody = crate::api::parse_body(&body)?;
        let hours = body.ttl_hours.unwrap_or(DEFAULT_HOURS);
        let now = unix_now();
        let link_id = classroom_auth::token::new_token().map_err(|e| {
            warn!("no randomness for a lesson link id: {e}");
            ApiError::internal()
        })?;
        let remote = ip.to_string();
        let new = NewLessonLink {
            id: &link_id,
            partner_name: &body.partner_name,
            expires_at: now.saturating_add(hours.saturating_mul(3600)),
        };
        let link = lesson_link::create_lesson_link(
            &portal.db,
            acting(&staff, &remote, now),
            &lesson,
            &new,
        )
        .await?;
        let code = links
            .codes
            .issue(&link.id, &links.public_url, now, link.expires_at)
            .map_err(|e| {
                warn!("cannot sign an invitation code: {e}");
                ApiError::internal()
            })?;
        info!(lesson = %lesson.id, link = %link.id, "lesson link invitation created");
        let out = json!({
            "link_id": link.id,
            "code": code,
            "expires_at": rfc3339(link.expires_at),
            "link": link_json(&link, now),
        });
        let mut resp = axum::Json(out).into_response();
        *resp.status_mut() = StatusCode::CREATED;
        Ok::<_, ApiError>(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn revoke(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path((id, link_id)): Path<(String, String)>,
) -> Response {
    let run = async {
        let lesson = crate::guests::inviting_lesson(&portal, &staff, &id).await?;
        let now = unix_now();
        let remote = ip.to_string();
        let link = lesson_link::revoke_lesson_link(
            &portal.db,
            acting(&staff, &remote, now),
            &lesson,
            &link_id,
        )
        .await?;
        // The door refuses the link from now on; the partner's link participant goes at once
        // (`goodbye` `revoked`), and its dialer stops for good.
        let removed = match portal.signaling.get() {
            Some(s) => {
                s.remove_identity(&lesson.media_room, &link_identity(&link.id))
                    .await
            }
            None => false,
        };
        info!(lesson = %lesson.id, link = %link.id, removed, "lesson link revoked");
        let body = json!({ "link": link_json(&link, now), "removed_from_room": removed });
        Ok::<_, ApiError>(axum::Json(body).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The identity a link is seated under in the host's room (signaling's `link_join`).
pub fn link_identity(link_id: &str) -> String {
    format!("link:{link_id}")
}

#[derive(Deserialize)]
struct RedeemBody {
    code: String,
    partner_school: String,
}

fn redeem_refused(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

/// `POST /api/partner-links/redeem`, called by a partner's server with an invitation code.
async fn redeem(State(portal): State<Shared>, ClientAddr(ip): ClientAddr, body: Body) -> Response {
    let run = async {
        let links = links(&portal)?;
        if let Err(limited) = links.redeems.check(&rate_key(ip), Instant::now()) {
            return Err(ApiError::rate_limited(limited.retry_after));
        }
        let bytes = axum::body::to_bytes(body, MAX_REDEEM_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "The request is larger than 16 KiB.",
                )
            })?;
        let body: RedeemBody = crate::api::parse_body(&bytes)?;
        let claims = links.codes.verify(&body.code).map_err(|e| match e {
            CodeError::Expired => redeem_refused(
                StatusCode::GONE,
                "link_expired",
                "The invitation code has expired.",
            ),
            _ => redeem_refused(
                StatusCode::FORBIDDEN,
                "link_code_invalid",
                "This is not an invitation code of this server.",
            ),
        })?;
        let key = classroom_auth::token::new_token().map_err(|e| {
            warn!("no randomness for a link key: {e}");
            ApiError::internal()
        })?;
        let key_hash = classroom_auth::token::hash_token(&key);
        let now = unix_now();
        let remote = ip.to_string();
        let decision = lesson_link::redeem_lesson_link(
            &portal.db,
            &claims.sub,
            &key_hash,
            &body.partner_school,
            now,
            Some(&remote),
        )
        .await?;
        let redeemed = match decision {
            Ok(r) => r,
            Err(why) => {
                let code = why.code();
                info!(link = %claims.sub, code, "lesson link redemption refused");
                if links
                    .refusal_audits
                    .check(&claims.sub, Instant::now())
                    .is_ok()
                {
                    let entry = AuditEntry {
                        at: now,
                        actor: None,
                        action: Action::LessonLinkRefused,
                        subject: Some(&claims.sub),
                        detail: json!({ "code": code, "at": "redeem" }),
                        remote_addr: Some(&remote),
                    };
                    if let Err(e) = classroom_domain::audit(&portal.db, &entry).await {
                        warn!("cannot audit a redemption refusal: {e}");
                    }
                }
                let (status, message) = match why {
                    lesson_link::RedeemRefusal::Replayed => (
                        StatusCode::CONFLICT,
                        "This invitation was accepted already; ask the host for a new one.",
                    ),
                    lesson_link::RedeemRefusal::Revoked => {
                        (StatusCode::GONE, "The host revoked this invitation.")
                    }
                    lesson_link::RedeemRefusal::Expired => {
                        (StatusCode::GONE, "The invitation has expired.")
                    }
                    lesson_link::RedeemRefusal::Unknown => {
                        (StatusCode::NOT_FOUND, "No such invitation on this server.")
                    }
                    lesson_link::RedeemRefusal::BadSchool => (
                        StatusCode::BAD_REQUEST,
                        "partner_school must be 1 to 80 characters.",
                    ),
                };
                return Err(redeem_refused(status, code, message));
            }
        };
        info!(link = %redeemed.link.id, lesson = %redeemed.lesson.id, "lesson link redeemed");
        let out = json!({
            "link_id": redeemed.link.id,
            "key": key,
            "host_room": redeemed.lesson.media_room,
            "host_school": redeemed.host_school,
            "lesson_title": redeemed.lesson_title,
            "ws_url": links.ws_url(),
            "expires_at": redeemed.link.expires_at,
        });
        Ok::<_, ApiError>(axum::Json(out).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct AcceptBody {
    code: String,
}

/// What a host answers to a redemption.
#[derive(Deserialize)]
struct HostAnswer {
    link_id: String,
    key: String,
    host_room: String,
    host_school: String,
    lesson_title: String,
    ws_url: String,
    expires_at: i64,
}

fn host_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "link_host_error", message)
}

/// Reads at most [`MAX_REDEEM_BYTES`] of a host's answer.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_REDEEM_BYTES {
                    return Err(host_error("The host's answer is larger than 16 KiB."));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(unreachable_host(&e)),
        }
    }
}

fn unreachable_host(e: &reqwest::Error) -> ApiError {
    info!("lesson link host unreachable: {e}");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "link_host_unreachable",
        "The host's server could not be reached (or did not answer within 10 s).",
    )
}

/// The host's refusal codes passed on to the partner's administrator as they are.
const HOST_CODES: [&str; 6] = [
    "link_unknown",
    "link_revoked",
    "link_expired",
    "link_replayed",
    "link_code_invalid",
    "rate_limited",
];

/// `POST /api/lessons/{lesson}/partner-links/accept`: redeems a host's code for a local lesson.
async fn accept(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let links = links(&portal)?;
        let lesson = crate::guests::inviting_lesson(&portal, &staff, &id).await?;
        let body: AcceptBody = crate::api::parse_body(&body)?;
        let code = body.code.trim();
        let host = peek_host(code).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "link_code_invalid",
                "This is not an invitation code.",
            )
        })?;
        let host = host.trim_end_matches('/').to_owned();
        if !links.host_url_allowed(&host) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "link_host_not_allowed",
                "The code names a host that is not https:// (plain http is allowed only when \
                 links.allow_http is set).",
            ));
        }
        if !links.allow_http && !resolves_to_public_addresses(&host).await {
            // A code is written by whoever made it: without this, any teacher could make the
            // server call into its own network (an internal admin page, a cloud metadata
            // address).
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "link_host_not_allowed",
                "The code names a host that is not on the public internet.",
            ));
        }
        let now = unix_now();
        // The host spends the code when it answers: refuse here first what would make storing
        // its answer fail.
        let active = lesson_link::partner_links_of_lesson(&portal.db, &lesson.id)
            .await?
            .iter()
            .filter(|l| l.active(now))
            .count();
        if active >= lesson_link::MAX_ACTIVE_PER_LESSON as usize {
            return Err(PartnerLinkError::TooMany.into());
        }
        let (school, _) = lesson_link::lesson_school_and_title(&portal.db, &lesson)
            .await?
            .ok_or_else(ApiError::internal)?;
        let resp = links
            .http
            .post(format!("{host}/api/partner-links/redeem"))
            .json(&json!({ "code": code, "partner_school": school }))
            .send()
            .await
            .map_err(|e| unreachable_host(&e))?;
        let status = resp.status();
        let bytes = read_bounded(resp).await?;
        if !status.is_success() {
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = answer["error"].as_str().unwrap_or_default();
            let message = answer["message"].as_str().unwrap_or_default();
            info!(lesson = %lesson.id, %host, %status, code, "the host refused a redemption");
            return Err(match HOST_CODES.iter().find(|c| **c == code) {
                Some(code) => ApiError::new(
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                    code,
                    format!("The host refused: {}", clip(message)),
                ),
                None => host_error(format!("The host answered {status}.")),
            });
        }
        let answer: HostAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| host_error(format!("The host's answer is not understood: {e}")))?;
        if !links.ws_url_allowed(&answer.ws_url) || !same_host(&host, &answer.ws_url) {
            return Err(host_error(
                "The host's signaling URL is not wss:// on the host's own name (plain ws is \
                 allowed only when links.allow_http is set).",
            ));
        }
        let local_id = classroom_auth::token::new_token().map_err(|e| {
            warn!("no randomness for a partner link id: {e}");
            ApiError::internal()
        })?;
        let remote = ip.to_string();
        let stored = lesson_link::store_partner_link(
            &portal.db,
            acting(&staff, &remote, now),
            &lesson,
            &NewPartnerLink {
                id: &local_id,
                host_link_id: &answer.link_id,
                host_base_url: &host,
                host_ws_url: &answer.ws_url,
                host_room: &answer.host_room,
                host_school: &answer.host_school,
                lesson_title: &answer.lesson_title,
                link_key: &answer.key,
                expires_at: answer.expires_at,
            },
        )
        .await?;
        info!(lesson = %lesson.id, link = %stored.id, %host, "lesson link accepted");
        let mut resp = axum::Json(json!({ "link": partner_json(&stored, now) })).into_response();
        *resp.status_mut() = StatusCode::CREATED;
        Ok::<_, ApiError>(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether `staff` may see or end partner-side links of `lesson`.
async fn may_run(portal: &Shared, staff: &Staff, lesson: &Lesson) -> Result<bool, ApiError> {
    Ok(matches!(
        staff.session.role(),
        Some(PersonRole::Teacher | PersonRole::Administrator)
    ) && classroom_domain::may_act_on_lesson(&portal.db, &staff.scope, lesson).await?)
}

/// `GET /api/partner-links/accepted`: the accepted links of lessons the caller runs.
async fn accepted(State(portal): State<Shared>, staff: Staff) -> Response {
    let run = async {
        let schools: Vec<&str> = staff.scope.schools().collect();
        let rows = lesson_link::partner_links_of_schools(&portal.db, &schools).await?;
        let now = unix_now();
        let mut out = Vec::new();
        for link in rows {
            let Some(lesson) = classroom_domain::lesson(&portal.db, &link.lesson_id).await? else {
                continue;
            };
            if may_run(&portal, &staff, &lesson).await? {
                out.push(partner_json(&link, now));
            }
        }
        Ok::<_, ApiError>(axum::Json(json!({ "links": out })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/partner-links/accepted/{link}`: ends this side of a link; the dialer stops.
async fn end(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path(link_id): Path<String>,
) -> Response {
    let run = async {
        let link = lesson_link::partner_link(&portal.db, &link_id)
            .await?
            .ok_or_else(|| ApiError::not_found("accepted partner link"))?;
        let lesson = classroom_domain::lesson(&portal.db, &link.lesson_id)
            .await?
            .ok_or_else(|| ApiError::not_found("accepted partner link"))?;
        if !may_run(&portal, &staff, &lesson).await? {
            return Err(portal.deny(&staff.caller, "partner_link", &link_id).await);
        }
        let now = unix_now();
        let remote = ip.to_string();
        let ended = lesson_link::end_partner_link(
            &portal.db,
            &link.id,
            EndedBy::Person(acting(&staff, &remote, now)),
        )
        .await?;
        info!(lesson = %lesson.id, link = %ended.id, "lesson link ended by the partner");
        Ok::<_, ApiError>(axum::Json(json!({ "link": partner_json(&ended, now) })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_cannot_send_the_server_into_its_own_network() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = inside.parse().expect("address");
            assert!(!is_public(ip), "{inside}");
        }
        for outside in ["203.0.114.1", "8.8.8.8", "2001:4860::8888"] {
            let ip: std::net::IpAddr = outside.parse().expect("address");
            assert!(is_public(ip), "{outside}");
        }
        assert!(same_host("https://a.example", "wss://a.example/ws"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for inside in [
            "https://127.0.0.1:8443",
            "https://[::1]",
            "https://10.0.0.1",
        ] {
            assert!(
                !rt.block_on(resolves_to_public_addresses(inside)),
                "{inside}"
            );
        }
        assert!(!rt.block_on(resolves_to_public_addresses("not a url")));
        assert!(!same_host("https://a.example", "wss://internal.example/ws"));
        assert!(!same_host("https://a.example", "not a url"));
    }

    #[test]
    fn only_secure_hosts_unless_allowed() {
        let strict = Links::new("https://a.example/", false, b"0123456789abcdef").expect("links");
        assert_eq!(strict.public_url, "https://a.example");
        assert_eq!(strict.ws_url(), "wss://a.example/ws");
        assert!(strict.host_url_allowed("https://b.example"));
        assert!(!strict.host_url_allowed("http://b.example"));
        assert!(!strict.host_url_allowed("https://user:pw@b.example"));
        assert!(!strict.host_url_allowed("file:///etc/passwd"));
        assert!(strict.ws_url_allowed("wss://b.example/ws"));
        assert!(!strict.ws_url_allowed("ws://b.example/ws"));
        let loose = Links::new("http://127.0.0.1:8080", true, b"0123456789abcdef").expect("links");
        assert_eq!(loose.ws_url(), "ws://127.0.0.1:8080/ws");
        assert!(loose.host_url_allowed("http://127.0.0.1:9"));
        assert!(loose.ws_url_allowed("ws://127.0.0.1:9/ws"));
        assert!(Links::new("lessons.example.org", false, b"0123456789abcdef").is_err());
    }
}
