//! The HTTP side of WHIP (RFC 9725): `POST /whip/{room}` creates a session, `DELETE
//! /whip/{room}/{resource}` ends it, `PATCH` is refused (no trickle ICE, no ICE restart), and
//! `OPTIONS` answers CORS preflights so a browser-based encoder can publish too.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, post};
use serde_json::json;

use crate::Inner;
use crate::whip::{self, MAX_OFFER_BYTES, WhipError};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/whip/{room}", post(create).options(preflight))
        .route(
            "/whip/{room}/{resource}",
            options(preflight)
                .delete(delete)
                .patch(patch)
                .post(resource_post),
        )
        .with_state(inner)
}

/// CORS for every answer: the bearer token is the credential, not a cookie, so any origin may
/// call (RFC 9725 §4.3.2 suggests supporting browser-based clients).
fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Accept-Post, Allow"),
    );
}

fn refuse(e: &WhipError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": e.code(), "message": e.to_string() });
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"whip\""),
        );
    }
    cors(resp.headers_mut());
    resp
}

fn bearer(headers: &HeaderMap) -> Result<&str, WhipError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(WhipError::MissingToken)
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"))
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match create_inner(&inner, &room, &headers, body).await {
        Ok(created) => {
            let location = format!("/whip/{}/{}", escape(&room), created.resource);
            let mut resp = (StatusCode::CREATED, created.answer).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            cors(h);
            resp
        }
        Err(e) => refuse(&e),
    }
}

async fn create_inner(
    inner: &Arc<Inner>,
    room: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<whip::Created, WhipError> {
    // The credential and the places first: the body is read only for a request that may
    // open a session now.
    let token = bearer(headers)?;
    let claims = whip::authorize(inner, room, token)?;
    if !is_sdp(headers) {
        return Err(WhipError::NotSdp);
    }
    let bytes = to_bytes(body, MAX_OFFER_BYTES)
        .await
        .map_err(|_| WhipError::TooLarge)?;
    let offer = String::from_utf8(bytes.to_vec())
        .map_err(|_| WhipError::BadSdp("the offer is not UTF-8".into()))?;
    whip::publish(inner, room, token, &claims, offer).await
}

/// A room name as a path segment: every byte but unreserved ones percent-encoded.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn delete(
    State(inner): State<Arc<Inner>>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let ended = match bearer(&headers) {
        Ok(token) => whip::end(&inner, &room, &resource, token).await,
        Err(e) => Err(e),
    };
    match ended {
        Ok(ended) => {
            // 200 once the session is gone (RFC 9725 §4.2), 202 while it is still leaving; the
            // body says whether it had been running or was cancelled while being set up.
            let status = if ended.done {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let body = json!({
                "ended": ended.done,
                "phase": if ended.during_setup { "setting_up" } else { "running" },
            });
            let mut resp = (status, axum::Json(body)).into_response();
            cors(resp.headers_mut());
            resp
        }
        Err(e) => refuse(&e),
    }
}

/// RFC 9725 §4.3.1: a resource that supports neither trickle ICE nor ICE restarts answers
/// `PATCH` with 405.
async fn patch() -> Response {
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    cors(resp.headers_mut());
    resp
}

async fn resource_post() -> Response {
    patch().await
}

async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    cors(h);
    resp
}
