//! Chat retention over HTTP (docs/API.md, "Chat retention"): a school's administrator reads and
//! sets whether the school keeps lesson chat and for how long; a lesson's teachers and the
//! school's administrators read what was kept. Every route is held to the caller's schools.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use classroom_domain::chat_retention::{MAX_DAYS, MAX_PAGE, MIN_DAYS};
use classroom_domain::{Acting, Action, AuditEntry, ChatRetention, ChatRetentionError, audit};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Admin, Staff};
use crate::{ApiError, Shared, rfc3339, unix_now};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/admin/chat-retention", get(schools))
        .route(
            "/api/admin/schools/{school}/chat-retention",
            get(read).put(set),
        )
        .route("/api/lessons/{lesson}/chat", get(lesson_chat))
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: Value) -> ApiResult {
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn setting_json(school: &str, r: ChatRetention) -> Value {
    json!({
        "school": school, "keep": r.keep, "days": r.days,
        "min_days": MIN_DAYS, "max_days": MAX_DAYS,
    })
}

/// `GET /api/admin/chat-retention`: the setting of each of the administrator's schools.
async fn schools(State(portal): State<Shared>, admin: Admin) -> ApiResult {
    let mut out = Vec::new();
    for school in admin.scope.schools() {
        let r = classroom_domain::chat_retention(&portal.db, school).await?;
        out.push(setting_json(school, r));
    }
    ok(json!({ "schools": out }))
}

async fn own_school(portal: &Shared, admin: &Admin, school: &str) -> Result<(), ApiError> {
    if admin.scope.covers(school) {
        Ok(())
    } else {
        Err(portal.deny(&admin.caller, "school", school).await)
    }
}

async fn read(State(portal): State<Shared>, admin: Admin, Path(school): Path<String>) -> ApiResult {
    own_school(&portal, &admin, &school).await?;
    let r = classroom_domain::chat_retention(&portal.db, &school).await?;
    ok(setting_json(&school, r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    keep: bool,
    /// Unchanged when absent.
    days: Option<i64>,
}

async fn set(
    State(portal): State<Shared>,
    admin: Admin,
    Path(school): Path<String>,
    body: Bytes,
) -> ApiResult {
    own_school(&portal, &admin, &school).await?;
    let body: SetBody = crate::api::parse_body(&body)?;
    let days = match body.days {
        Some(d) => d,
        None => i64::from(
            classroom_domain::chat_retention(&portal.db, &school)
                .await?
                .days,
        ),
    };
    let acting = Acting {
        person: &admin.session.person.id,
        at: unix_now(),
        remote_addr: Some(&admin.caller.remote),
    };
    let r = classroom_domain::set_chat_retention(&portal.db, acting, &school, body.keep, days)
        .await
        .map_err(|e| match e {
            e @ ChatRetentionError::BadDays(_) => ApiError::bad_request(format!("days: {e}")),
            ChatRetentionError::UnknownSchool(_) => ApiError::not_found("school"),
            ChatRetentionError::Db(e) => e.into(),
        })?;
    ok(setting_json(&school, r))
}

#[derive(Deserialize)]
struct ChatQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/lessons/{lesson}/chat`: what was kept of the lesson's chat, oldest first, paged by
/// `seq`. Reading it is audited (`exported`), as pupils' words leave the lesson here.
async fn lesson_chat(
    State(portal): State<Shared>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<ChatQuery>,
) -> ApiResult {
    let lesson = classroom_domain::lesson(&portal.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("lesson"))?;
    if !classroom_domain::may_act_on_lesson(&portal.db, &staff.scope, &lesson).await? {
        return Err(portal.deny(&staff.caller, "lesson", &id).await);
    }
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let after = q.after.unwrap_or(0).max(0);
    let kept = classroom_domain::kept_chat(&portal.db, &lesson.id, after, limit).await?;
    let school = classroom_domain::class_school(&portal.db, &lesson.class_id).await?;
    let retention = match &school {
        Some(s) => classroom_domain::chat_retention(&portal.db, s).await?,
        None => ChatRetention::default(),
    };
    let next_after = if kept.len() == limit as usize {
        kept.last().map(|m| m.seq)
    } else {
        None
    };
    let entry = AuditEntry {
        at: unix_now(),
        actor: Some(&staff.session.person.id),
        action: Action::Exported,
        subject: None,
        detail: json!({ "what": { "lesson_chat": lesson.id }, "format": "json", "messages": kept.len() }),
        remote_addr: Some(&staff.caller.remote),
    };
    audit(&portal.db, &entry).await?;
    let messages: Vec<Value> = kept
        .iter()
        .map(|m| {
            json!({
                "seq": m.seq,
                "message_id": m.message_id,
                "from": { "id": m.sender_id, "name": m.sender_name, "role": m.sender_role },
                "to": m.addressee,
                "text": m.text,
                "at": rfc3339(m.sent_at),
            })
        })
        .collect();
    ok(json!({
        "lesson": lesson.id,
        "retention": { "keep": retention.keep, "days": retention.days },
        "messages": messages,
        "next_after": next_after,
    }))
}
