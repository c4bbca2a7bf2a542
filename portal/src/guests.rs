//! Guest links (docs/API.md, docs/PARTNER.md): a lesson's teacher or an administrator of its
//! school invites one partner lecturer (a browser link) or one encoder (a WHIP bearer token)
//! into a lesson, lists the lesson's links and revokes them. The credential is a join token
//! signed like every other; it is shown once, at creation, and never stored.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use classroom_domain::{
    Acting, GuestKind, GuestLink, GuestLinkError, Lesson, NewGuestLink, PersonRole,
};
use classroom_signaling::token::{Claims, Permission, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::client_addr::ClientAddr;
use crate::extract::Staff;
use crate::{ApiError, Shared, page_for, rfc3339, unix_now};

/// How long a link lives unless the creator says otherwise.
const DEFAULT_HOURS: i64 = 24;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/lessons/{lesson}/guest-links", get(list).post(create))
        .route("/api/lessons/{lesson}/guest-links/{link}", delete(revoke))
}

impl From<GuestLinkError> for ApiError {
    fn from(e: GuestLinkError) -> Self {
        match e {
            GuestLinkError::Db(e) => e.into(),
            GuestLinkError::NotFound => ApiError::not_found("guest link"),
            GuestLinkError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_guest_links", e.to_string())
            }
            // The API takes `hours`; the domain checks the instant they make.
            GuestLinkError::BadExpiry => ApiError::bad_request("hours must be 1 to 336"),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// The lesson, if the caller may invite into it: a teacher of the lesson or an administrator
/// of its school. A partner lecturer (signed in, or a guest) invites no one.
pub(crate) async fn inviting_lesson(
    portal: &Shared,
    staff: &Staff,
    id: &str,
) -> Result<Lesson, ApiError> {
    let lesson = crate::api::staff_lesson(portal, staff, id).await?;
    match staff.session.role() {
        Some(PersonRole::Teacher | PersonRole::Administrator) => Ok(lesson),
        _ => Err(portal.deny(&staff.caller, "lesson", id).await),
    }
}

fn link_json(l: &GuestLink, now: i64) -> Value {
    json!({
        "id": l.id,
        "kind": l.kind,
        "display_name": l.display_name,
        "organisation": l.organisation,
        "created_by": l.created_by,
        "created_at": rfc3339(l.created_at),
        "expires_at": rfc3339(l.expires_at),
        "revoked_at": l.revoked_at.map(rfc3339),
        "active": l.active(now),
    })
}

async fn list(State(portal): State<Shared>, staff: Staff, Path(id): Path<String>) -> Response {
    let run = async {
        let lesson = inviting_lesson(&portal, &staff, &id).await?;
        let now = unix_now();
        let links = classroom_domain::guest_links_of_lesson(&portal.db, &lesson.id).await?;
        let links: Vec<Value> = links.iter().map(|l| link_json(l, now)).collect();
        Ok::<_, ApiError>(axum::Json(json!({ "links": links })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct CreateBody {
    kind: Option<String>,
    display_name: String,
    organisation: String,
    /// How long the link lives, 1 to 336 hours (two weeks); 24 by default.
    hours: Option<i64>,
}

async fn create(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let lesson = inviting_lesson(&portal, &staff, &id).await?;
        let body: CreateBody = crate::api::parse_body(&body)?;
        let kind = match body.kind.as_deref() {
            None | Some("guest") => GuestKind::Guest,
            Some("whip") => GuestKind::Whip,
            Some(_) => return Err(ApiError::bad_request("kind must be guest or whip")),
        };
        let hours = body.hours.unwrap_or(DEFAULT_HOURS);
        let now = unix_now();
        let link_id = classroom_auth::token::new_token().map_err(|e| {
            warn!("no randomness for a guest link id: {e}");
            ApiError::internal()
        })?;
        let remote = ip.to_string();
        let acting = Acting {
            person: &staff.session.person.id,
            at: now,
            remote_addr: Some(&remote),
        };
        let new = NewGuestLink {
            id: &link_id,
            kind,
            display_name: &body.display_name,
            organisation: &body.organisation,
            expires_at: now.saturating_add(hours.saturating_mul(3600)),
        };
        let link = classroom_domain::create_guest_link(&portal.db, acting, &lesson, &new).await?;
        let ttl = u64::try_from(link.expires_at - now).unwrap_or(0);
        let mut claims = Claims::new(
            &lesson.media_room,
            &kind.identity(&link.id),
            &link.display_name,
            Role::PartnerLecturer,
            std::time::Duration::from_secs(ttl),
        );
        claims.org = Some(link.organisation.clone());
        if kind == GuestKind::Whip {
            // An encoder sends; it has nothing to receive.
            claims.perms = vec![
                Permission::PublishAudio,
                Permission::PublishVideo,
                Permission::PublishScreen,
            ];
        }
        let token = portal.tokens.issue(&claims).map_err(|e| {
            warn!("cannot sign a guest token: {e}");
            ApiError::internal()
        })?;
        info!(lesson = %lesson.id, link = %link.id, kind = kind.as_str(), "guest link created");
        let mut out = json!({ "link": link_json(&link, now) });
        match kind {
            GuestKind::Guest => {
                out["url"] = json!(format!(
                    "{}/{}?token={token}",
                    portal.public_url,
                    page_for(Role::PartnerLecturer)
                ));
            }
            GuestKind::Whip => {
                out["whip_url"] =
                    json!(format!("{}/whip/{}", portal.public_url, lesson.media_room));
                out["bearer_token"] = json!(token);
            }
        }
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
        let lesson = inviting_lesson(&portal, &staff, &id).await?;
        let now = unix_now();
        let remote = ip.to_string();
        let acting = Acting {
            person: &staff.session.person.id,
            at: now,
            remote_addr: Some(&remote),
        };
        let link =
            classroom_domain::revoke_guest_link(&portal.db, acting, &lesson, &link_id).await?;
        // The door refuses the link from now on; whoever is in the room with it goes too.
        let removed = match portal.signaling.get() {
            Some(s) => {
                s.remove_identity(&lesson.media_room, &link.kind.identity(&link.id))
                    .await
            }
            None => false,
        };
        info!(lesson = %lesson.id, link = %link.id, removed, "guest link revoked");
        let body = json!({ "link": link_json(&link, now), "removed_from_room": removed });
        Ok::<_, ApiError>(axum::Json(body).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
