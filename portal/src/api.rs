//! The JSON API of the signed-in pages (`docs/API.md`): attendance modes, lessons and the
//! lobby, join tokens, exports and administration. Every handler authorises its resource.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{NaiveDate, TimeZone};
use classroom_domain::{
    Acting, Action, Admission, AuditEntry, AuditFilter, Capacity, Counts, DayMode, ImportError,
    ImportReport, Lesson, LessonError, LessonReport, MarkStatus, Mode, ModeChange, ModeRequest,
    NewLesson, Person, PersonRole, RefusalReason, SetModeError, TeacherActionError, audit,
    audit_log,
};
use classroom_signaling::token::{Claims, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::upload::UploadError;
use crate::{
    ApiError, JOIN_TOKEN_TTL, ROSTER_BODY_LIMIT, SIGNIN_LINK_TTL, Session, Shared, client_ip,
    page_for, person_json, rfc3339, unix_now,
};

/// Longest range `GET .../modes` answers.
const MAX_MODES_DAYS: i64 = 62;
/// Longest range of the per-class export.
const MAX_EXPORT_DAYS: i64 = 366;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/children", get(children))
        .route(
            "/api/children/{pupil}/modes",
            get(child_modes).put(put_child_modes),
        )
        .route("/api/children/{pupil}/history", get(child_history))
        .route(
            "/api/pupils/{pupil}/modes",
            get(pupil_modes).put(put_pupil_modes),
        )
        .route("/api/pupils/{pupil}/history", get(pupil_history))
        .route("/api/lessons", get(lessons))
        .route("/api/lessons/{lesson}/lobby", get(lobby))
        .route("/api/lessons/{lesson}/admit", post(admit))
        .route("/api/lessons/{lesson}/refuse", post(refuse))
        .route("/api/lessons/{lesson}/marks", post(marks))
        .route("/api/lessons/{lesson}/join", post(join))
        .route("/api/lessons/{lesson}/attendance.csv", get(lesson_csv))
        .route(
            "/api/lessons/{lesson}/attendance.json",
            get(lesson_json_export),
        )
        .route("/api/attendance.csv", get(class_csv))
        .route("/api/attendance.json", get(class_json))
        // Streamed to a file with its own limit (ROSTER_BODY_LIMIT), never buffered whole.
        .route("/api/admin/roster", post(admin_roster))
        .route(
            "/api/admin/lessons",
            get(admin_lessons).post(admin_create_lesson),
        )
        .route("/api/admin/signin-links", post(admin_signin_link))
        .route("/api/admin/audit", get(admin_audit))
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: Value) -> ApiResult {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn parse_date(field: &str, value: Option<&str>) -> Result<NaiveDate, ApiError> {
    let v = value.ok_or_else(|| ApiError::bad_request(format!("{field} is missing")))?;
    NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::bad_request(format!("{field} must be a date YYYY-MM-DD")))
}

fn fmt_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// Looks people up once per request.
struct People<'a> {
    portal: &'a Shared,
    cache: HashMap<String, Option<Person>>,
}

impl<'a> People<'a> {
    fn new(portal: &'a Shared) -> Self {
        People {
            portal,
            cache: HashMap::new(),
        }
    }

    async fn json(&mut self, id: &str) -> Result<Value, ApiError> {
        if !self.cache.contains_key(id) {
            let p = classroom_domain::person(&self.portal.db, id).await?;
            self.cache.insert(id.to_owned(), p);
        }
        Ok(match self.cache.get(id).and_then(Option::as_ref) {
            Some(p) => person_json(p),
            None => json!({ "id": id }),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Attendance modes

/// Which route family a request came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Children,
    Pupils,
}

async fn authorise_pupil(
    portal: &Shared,
    s: &Session,
    pupil: &str,
    via: Via,
) -> Result<Capacity, ApiError> {
    match classroom_domain::may_set_mode(&portal.db, &s.person.id, pupil).await? {
        Ok(Capacity::Guardian) if via == Via::Children => Ok(Capacity::Guardian),
        Ok(Capacity::Staff) if via == Via::Pupils => Ok(Capacity::Staff),
        Ok(_) | Err(_) => Err(ApiError::forbidden()),
    }
}

async fn children(State(portal): State<Shared>, headers: HeaderMap) -> ApiResult {
    let s = portal.require(&headers).await?;
    if s.role() != Some(PersonRole::Guardian) {
        return Err(ApiError::forbidden());
    }
    let today = portal.policy.local_date(unix_now());
    let mut out = Vec::new();
    for pupil in classroom_domain::pupils_of_guardian(&portal.db, &s.person.id).await? {
        let mode = classroom_domain::mode_on(&portal.db, &pupil.id, today).await?;
        let mut j = person_json(&pupil);
        j["mode_today"] = json!(mode.as_str());
        out.push(j);
    }
    ok(json!({ "children": out }))
}

#[derive(Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

async fn modes(portal: Shared, headers: HeaderMap, pupil: String, q: Range, via: Via) -> ApiResult {
    let s = portal.require(&headers).await?;
    let capacity = authorise_pupil(&portal, &s, &pupil, via).await?;
    let now = unix_now();
    let today = portal.policy.local_date(now);
    let from = match q.from {
        Some(f) => parse_date("from", Some(&f))?,
        None => today,
    };
    let to = match q.to {
        Some(t) => parse_date("to", Some(&t))?,
        None => from,
    };
    if to < from {
        return Err(ApiError::bad_request("to is before from"));
    }
    if (to - from).num_days() + 1 > MAX_MODES_DAYS {
        return Err(ApiError::bad_request(format!(
            "from..to is longer than {MAX_MODES_DAYS} days"
        )));
    }
    let days: Vec<DayMode> = classroom_domain::modes_between(&portal.db, &pupil, from, to).await?;
    let mut people = People::new(&portal);
    let mut out = Vec::new();
    for d in days {
        let set_by = match &d.set_by {
            Some(id) => people.json(id).await?,
            None => Value::Null,
        };
        out.push(json!({
            "date": fmt_date(d.date),
            "mode": d.mode.as_str(),
            "reason": d.reason,
            "set_by": set_by,
            "on_behalf": d.capacity == Some(Capacity::Staff),
            "editable": classroom_domain::may_change(&portal.policy, capacity, d.date, now),
        }));
    }
    let pupil_json = people.json(&pupil).await?;
    ok(json!({
        "pupil": pupil_json,
        "cutoff": {
            "time": portal.policy.close_at_local_time.format("%H:%M").to_string(),
            "timezone": portal.timezone.name(),
        },
        "days": out,
    }))
}

async fn change_json(people: &mut People<'_>, c: &ModeChange) -> Result<Value, ApiError> {
    Ok(json!({
        "date": fmt_date(c.date),
        "old_mode": c.old_mode.as_str(),
        "new_mode": c.new_mode.as_str(),
        "reason": c.reason,
        "actor": people.json(&c.actor_id).await?,
        "on_behalf": c.capacity == Capacity::Staff,
        "after_cutoff": c.after_cutoff,
        "at": rfc3339(c.changed_at),
    }))
}

#[derive(Deserialize)]
struct ModeBody {
    from: String,
    to: String,
    mode: String,
    reason: Option<String>,
}

async fn put_modes(
    portal: Shared,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    pupil: String,
    body: Bytes,
    via: Via,
) -> ApiResult {
    let s = portal.require(&headers).await?;
    authorise_pupil(&portal, &s, &pupil, via).await?;
    let body: ModeBody = parse_body(&body)?;
    let from = parse_date("from", Some(&body.from))?;
    let to = parse_date("to", Some(&body.to))?;
    let mode = Mode::parse(&body.mode)
        .ok_or_else(|| ApiError::bad_request("mode must be in_person or online"))?;
    let remote = client_ip(peer).to_string();
    let acting = Acting {
        person: &s.person.id,
        at: unix_now(),
        remote_addr: Some(&remote),
    };
    let req = ModeRequest {
        pupil: &pupil,
        from,
        to,
        mode,
        reason: body.reason.as_deref(),
    };
    let changes = match classroom_domain::set_mode(&portal.db, &portal.policy, acting, &req).await {
        Ok(c) => c,
        Err(SetModeError::Denied(_)) => return Err(ApiError::forbidden()),
        Err(e @ (SetModeError::BadRange | SetModeError::RangeTooLong)) => {
            return Err(ApiError::bad_request(format!("from/to: {e}")));
        }
        Err(e @ SetModeError::ReasonTooLong) => {
            return Err(ApiError::bad_request(format!("reason: {e}")));
        }
        Err(e @ (SetModeError::CutoffPassed(_) | SetModeError::PastDate(_))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cutoff_passed",
                e.to_string(),
            ));
        }
        Err(SetModeError::Db(e)) => return Err(e.into()),
    };
    let mut people = People::new(&portal);
    let mut out = Vec::new();
    for c in &changes {
        out.push(change_json(&mut people, c).await?);
    }
    ok(json!({ "changes": out }))
}

async fn history(portal: Shared, headers: HeaderMap, pupil: String, via: Via) -> ApiResult {
    let s = portal.require(&headers).await?;
    authorise_pupil(&portal, &s, &pupil, via).await?;
    let changes = classroom_domain::history(&portal.db, &pupil).await?;
    let mut people = People::new(&portal);
    let mut out = Vec::new();
    for c in changes.iter().rev() {
        out.push(change_json(&mut people, c).await?);
    }
    ok(json!({ "history": out }))
}

async fn child_modes(
    State(p): State<Shared>,
    h: HeaderMap,
    Path(pupil): Path<String>,
    Query(q): Query<Range>,
) -> ApiResult {
    modes(p, h, pupil, q, Via::Children).await
}

async fn pupil_modes(
    State(p): State<Shared>,
    h: HeaderMap,
    Path(pupil): Path<String>,
    Query(q): Query<Range>,
) -> ApiResult {
    modes(p, h, pupil, q, Via::Pupils).await
}

async fn put_child_modes(
    State(p): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(pupil): Path<String>,
    body: Bytes,
) -> ApiResult {
    put_modes(p, Some(peer), h, pupil, body, Via::Children).await
}

async fn put_pupil_modes(
    State(p): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(pupil): Path<String>,
    body: Bytes,
) -> ApiResult {
    put_modes(p, Some(peer), h, pupil, body, Via::Pupils).await
}

async fn child_history(
    State(p): State<Shared>,
    h: HeaderMap,
    Path(pupil): Path<String>,
) -> ApiResult {
    history(p, h, pupil, Via::Children).await
}

async fn pupil_history(
    State(p): State<Shared>,
    h: HeaderMap,
    Path(pupil): Path<String>,
) -> ApiResult {
    history(p, h, pupil, Via::Pupils).await
}

// ---------------------------------------------------------------------------------------------
// Lessons and the lobby

/// `[start, end)` of a school date in Unix seconds.
fn day_bounds(portal: &Shared, from: NaiveDate, to: NaiveDate) -> (i64, i64) {
    let start = |d: NaiveDate| {
        let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        portal
            .timezone
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.timestamp())
            .unwrap_or_else(|| midnight.and_utc().timestamp())
    };
    (start(from), start(to.succ_opt().unwrap_or(to)))
}

async fn lesson_json(portal: &Shared, l: &Lesson) -> Result<Value, ApiError> {
    let mut people = People::new(portal);
    let mut teachers = Vec::new();
    for t in classroom_domain::lesson_teachers(&portal.db, &l.id).await? {
        teachers.push(people.json(&t).await?);
    }
    Ok(json!({
        "id": l.id,
        "class_id": l.class_id,
        "class_title": l.class_id,
        "date": fmt_date(l.lesson_date),
        "starts_at": rfc3339(l.starts_at),
        "ends_at": rfc3339(l.ends_at),
        "media_room": l.media_room,
        "teachers": teachers,
    }))
}

#[derive(Deserialize)]
struct DateQuery {
    date: Option<String>,
}

async fn lessons(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<DateQuery>,
) -> ApiResult {
    let s = portal.require(&headers).await?;
    let date = match q.date {
        Some(d) => parse_date("date", Some(&d))?,
        None => portal.policy.local_date(unix_now()),
    };
    let (from, to) = day_bounds(&portal, date, date);
    let list = match s.role() {
        Some(PersonRole::Administrator) => {
            classroom_domain::lessons_between(&portal.db, from, to).await?
        }
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => {
            classroom_domain::lessons_of_teacher(&portal.db, &s.person.id, from, to).await?
        }
        Some(PersonRole::Student) => {
            let mut mine = Vec::new();
            for l in classroom_domain::lessons_between(&portal.db, from, to).await? {
                if classroom_domain::enrolled_in_lesson(&portal.db, &s.person.id, &l.id).await? {
                    mine.push(l);
                }
            }
            mine
        }
        _ => return Err(ApiError::forbidden()),
    };
    let mut out = Vec::new();
    for l in &list {
        out.push(lesson_json(&portal, l).await?);
    }
    ok(json!({ "lessons": out }))
}

async fn find_lesson(portal: &Shared, id: &str) -> Result<Lesson, ApiError> {
    classroom_domain::lesson(&portal.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("lesson"))
}

/// A teacher of the lesson or an administrator; the lesson.
async fn staff_lesson(portal: &Shared, s: &Session, id: &str) -> Result<Lesson, ApiError> {
    let lesson = find_lesson(portal, id).await?;
    if s.is_admin() || classroom_domain::teaches_lesson(&portal.db, &s.person.id, id).await? {
        Ok(lesson)
    } else {
        Err(ApiError::forbidden())
    }
}

async fn lobby(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let s = portal.require(&headers).await?;
    let lesson = staff_lesson(&portal, &s, &id).await?;
    let rows = classroom_domain::attendance_report(&portal.db, &lesson, unix_now()).await?;
    let pupils: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "pupil": {
                    "id": r.pupil_id, "role": "student",
                    "given_name": r.given_name, "family_name": r.family_name,
                    "given_name_kana": r.given_name_kana, "family_name_kana": r.family_name_kana,
                },
                "mode": r.mode.as_str(),
                "online_now": r.online.as_ref().is_some_and(|o| o.connected),
                "waiting": r.waiting,
                "admitted": r.admitted_by_teacher,
                "mark": r.mark.as_ref().map(|m| m.status.as_str()),
            })
        })
        .collect();
    ok(json!({ "lesson": lesson_json(&portal, &lesson).await?, "pupils": pupils }))
}

#[derive(Deserialize)]
struct PupilBody {
    pupil: String,
    status: Option<String>,
}

fn teacher_error(e: TeacherActionError) -> ApiError {
    match e {
        TeacherActionError::NotTeacher => ApiError::forbidden(),
        TeacherActionError::NotEnrolled => {
            ApiError::bad_request("pupil: not enrolled in this lesson")
        }
        TeacherActionError::Db(e) => e.into(),
    }
}

#[derive(Clone, Copy)]
enum LobbyAction {
    Admit,
    Refuse,
    Mark,
}

async fn lobby_action(
    portal: Shared,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    what: LobbyAction,
) -> ApiResult {
    let s = portal.require(&headers).await?;
    let lesson = staff_lesson(&portal, &s, &id).await?;
    let body: PupilBody = parse_body(&body)?;
    let remote = client_ip(peer).to_string();
    let now = unix_now();
    let acting = Acting {
        person: &s.person.id,
        at: now,
        remote_addr: Some(&remote),
    };
    let result = match what {
        LobbyAction::Admit => {
            classroom_domain::admit(&portal.db, acting, &lesson, &body.pupil).await
        }
        LobbyAction::Refuse => {
            classroom_domain::refuse(&portal.db, acting, &lesson, &body.pupil).await
        }
        LobbyAction::Mark => {
            let status = body
                .status
                .as_deref()
                .and_then(MarkStatus::parse)
                .ok_or_else(|| ApiError::bad_request("status must be present, late or absent"))?;
            classroom_domain::mark(&portal.db, &lesson, &body.pupil, status, &s.person.id, now)
                .await
        }
    };
    result.map_err(teacher_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admit(
    State(p): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    lobby_action(p, Some(peer), h, id, body, LobbyAction::Admit).await
}

async fn refuse(
    State(p): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    lobby_action(p, Some(peer), h, id, body, LobbyAction::Refuse).await
}

async fn marks(
    State(p): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    lobby_action(p, Some(peer), h, id, body, LobbyAction::Mark).await
}

// ---------------------------------------------------------------------------------------------
// Join tokens

async fn join(
    State(portal): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let s = portal.require(&headers).await?;
    let lesson = find_lesson(&portal, &id).await?;
    let now = unix_now();
    let remote = client_ip(Some(peer)).to_string();
    let audit_join = |action: Action, detail: Value| {
        let portal = portal.clone();
        let person = s.person.id.clone();
        let remote = remote.clone();
        async move {
            let entry = AuditEntry {
                at: now,
                actor: Some(&person),
                action,
                subject: Some(&person),
                detail,
                remote_addr: Some(&remote),
            };
            if let Err(e) = audit(&portal.db, &entry).await {
                warn!("cannot audit a join: {e}");
            }
        }
    };
    let role = match s.role() {
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => {
            if !classroom_domain::teaches_lesson(&portal.db, &s.person.id, &lesson.id).await? {
                return Err(ApiError::forbidden());
            }
            Role::Teacher
        }
        Some(PersonRole::Administrator) => Role::Observer,
        Some(PersonRole::Student) => {
            let refusal =
                match classroom_domain::admission(&portal.db, &lesson, &s.person.id, now).await? {
                    Admission::Admitted | Admission::AdmittedByTeacher => None,
                    Admission::Refused {
                        reason: RefusalReason::InPersonToday,
                    } => {
                        if let Err(e) =
                            classroom_domain::request_entry(&portal.db, &lesson, &s.person.id, now)
                                .await
                        {
                            return Err(teacher_error(e));
                        }
                        Some(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "in_person_today",
                            "Your guardian chose in-person attendance for today.",
                        ))
                    }
                    Admission::Refused {
                        reason: RefusalReason::RefusedByTeacher,
                    } => Some(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "refused",
                        "The teacher did not admit you to this lesson.",
                    )),
                    Admission::NotEnrolled => Some(ApiError::forbidden()),
                };
            if let Some(err) = refusal {
                audit_join(
                    Action::JoinRefused,
                    json!({ "lesson": lesson.id, "media_room": lesson.media_room, "reason": err.code, "via": "api" }),
                )
                .await;
                return Err(err);
            }
            Role::Student
        }
        _ => return Err(ApiError::forbidden()),
    };
    let name = format!("{} {}", s.person.family_name, s.person.given_name);
    let claims = Claims::new(
        &lesson.media_room,
        &s.person.id,
        name.trim(),
        role,
        JOIN_TOKEN_TTL,
    );
    let token = portal.tokens.issue(&claims).map_err(|e| {
        warn!("cannot sign a join token: {e}");
        ApiError::internal()
    })?;
    audit_join(
        Action::JoinTokenIssued,
        json!({ "lesson": lesson.id, "media_room": lesson.media_room, "role": format!("{role:?}").to_lowercase() }),
    )
    .await;
    let page = format!("/{}?token={token}", page_for(role));
    ok(json!({ "token": token, "page": page, "expires_in": JOIN_TOKEN_TTL.as_secs() }))
}

// ---------------------------------------------------------------------------------------------
// Exports

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn export(
    portal: &Shared,
    s: &Session,
    reports: Vec<LessonReport>,
    name: &str,
    csv: bool,
    subject: Value,
) -> ApiResult {
    let (body, content_type, ext) = if csv {
        (
            classroom_domain::to_csv(&reports, portal.timezone),
            "text/csv; charset=utf-8",
            "csv",
        )
    } else {
        (
            classroom_domain::to_json(&reports),
            "application/json",
            "json",
        )
    };
    let body = body.map_err(|e| {
        warn!("export failed: {e}");
        ApiError::internal()
    })?;
    let entry = AuditEntry {
        at: unix_now(),
        actor: Some(&s.person.id),
        action: Action::Exported,
        subject: None,
        detail: json!({ "what": subject, "format": ext, "lessons": reports.len() }),
        remote_addr: None,
    };
    audit(&portal.db, &entry).await?;
    let disposition = format!(
        "attachment; filename=\"attendance-{}.{ext}\"",
        safe_name(name)
    );
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn lesson_export(portal: Shared, headers: HeaderMap, id: String, csv: bool) -> ApiResult {
    let s = portal.require(&headers).await?;
    let lesson = staff_lesson(&portal, &s, &id).await?;
    let report = classroom_domain::report_for_lesson(&portal.db, &lesson, unix_now()).await?;
    export(
        &portal,
        &s,
        vec![report],
        &lesson.id,
        csv,
        json!({ "lesson": lesson.id }),
    )
    .await
}

async fn lesson_csv(State(p): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    lesson_export(p, h, id, true).await
}

async fn lesson_json_export(
    State(p): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    lesson_export(p, h, id, false).await
}

#[derive(Deserialize)]
struct ClassQuery {
    class: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn class_export(portal: Shared, headers: HeaderMap, q: ClassQuery, csv: bool) -> ApiResult {
    let s = portal.require(&headers).await?;
    let class = q
        .class
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("class is missing"))?;
    let from = parse_date("from", q.from.as_deref())?;
    let to = parse_date("to", q.to.as_deref())?;
    if to < from || (to - from).num_days() + 1 > MAX_EXPORT_DAYS {
        return Err(ApiError::bad_request(format!(
            "from..to must be a range of at most {MAX_EXPORT_DAYS} days"
        )));
    }
    if !(s.is_admin() || classroom_domain::teaches_class(&portal.db, &s.person.id, &class).await?) {
        return Err(ApiError::forbidden());
    }
    let reports =
        classroom_domain::reports_for_class(&portal.db, &class, from, to, unix_now()).await?;
    let name = format!("{class}-{}-{}", fmt_date(from), fmt_date(to));
    export(
        &portal,
        &s,
        reports,
        &name,
        csv,
        json!({ "class": class, "from": fmt_date(from), "to": fmt_date(to) }),
    )
    .await
}

async fn class_csv(
    State(p): State<Shared>,
    h: HeaderMap,
    Query(q): Query<ClassQuery>,
) -> ApiResult {
    class_export(p, h, q, true).await
}

async fn class_json(
    State(p): State<Shared>,
    h: HeaderMap,
    Query(q): Query<ClassQuery>,
) -> ApiResult {
    class_export(p, h, q, false).await
}

// ---------------------------------------------------------------------------------------------
// Administration

async fn require_admin(portal: &Shared, headers: &HeaderMap) -> Result<Session, ApiError> {
    let s = portal.require(headers).await?;
    if s.is_admin() {
        Ok(s)
    } else {
        Err(ApiError::forbidden())
    }
}

fn counts_json(c: &Counts) -> Value {
    json!({ "created": c.created, "updated": c.updated, "unchanged": c.unchanged, "removed": c.removed })
}

pub fn report_json(r: &ImportReport) -> Value {
    json!({
        "orgs": counts_json(&r.orgs),
        "academic_sessions": counts_json(&r.academic_sessions),
        "people": counts_json(&r.people),
        "guardian_links": counts_json(&r.guardian_links),
        "classes": counts_json(&r.classes),
        "class_terms": counts_json(&r.class_terms),
        "enrollments": counts_json(&r.enrollments),
        "warnings": r.warnings.iter().map(|p| json!({
            "file": p.file, "line": p.line, "reason": p.reason.to_string(),
        })).collect::<Vec<_>>(),
    })
}

async fn admin_roster(
    State(portal): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let s = require_admin(&portal, &headers).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(content_type.starts_with("application/zip")
        || content_type.starts_with("application/x-zip")
        || content_type.starts_with("application/octet-stream"))
    {
        return Err(ApiError::bad_request(
            "body must be a ZIP (Content-Type: application/zip)",
        ));
    }
    let upload = crate::upload::store(&portal.data_dir, body, ROSTER_BODY_LIMIT)
        .await
        .map_err(|e| match e {
            UploadError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "The roster ZIP is larger than {} MiB.",
                    ROSTER_BODY_LIMIT / (1024 * 1024)
                ),
            ),
            UploadError::Body(e) => ApiError::bad_request(format!("cannot read the upload: {e}")),
            UploadError::Io(e) => {
                warn!("cannot store the uploaded roster: {e}");
                ApiError::internal()
            }
        })?;
    let result = classroom_domain::import_zip(&portal.db, upload.path()).await;
    drop(upload);
    let report = match result {
        Ok(r) => r,
        Err(ImportError::Invalid(problems)) => {
            let list: Vec<Value> = problems
                .0
                .iter()
                .map(|p| json!({ "file": p.file, "line": p.line, "reason": p.reason.to_string() }))
                .collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "roster_invalid",
                format!(
                    "{} problem(s) in the roster; nothing was applied",
                    list.len()
                ),
            )
            .with(json!({ "problems": list })));
        }
        // The server's own path of the upload stays out of the answer: the reason is enough.
        Err(ImportError::Zip { source, .. }) => {
            return Err(archive_refused("not a readable ZIP archive", source));
        }
        Err(ImportError::TooBig { what, .. }) => {
            return Err(archive_refused(
                &format!("{what}; nothing was applied"),
                what,
            ));
        }
        Err(e) => {
            warn!("roster import failed: {e}");
            return Err(ApiError::internal());
        }
    };
    let report = report_json(&report);
    let remote = client_ip(Some(peer)).to_string();
    let entry = AuditEntry {
        at: unix_now(),
        actor: Some(&s.person.id),
        action: Action::RosterImported,
        subject: None,
        detail: report.clone(),
        remote_addr: Some(&remote),
    };
    audit(&portal.db, &entry).await?;
    ok(json!({ "report": report }))
}

/// `422 roster_invalid` for an archive refused as a whole, with the reason as its one problem.
fn archive_refused(message: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "roster_invalid", message)
        .with(json!({ "problems": [{ "file": "", "line": 0, "reason": reason.to_string() }] }))
}

async fn admin_lessons(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Range>,
) -> ApiResult {
    require_admin(&portal, &headers).await?;
    let today = portal.policy.local_date(unix_now());
    let from = match q.from {
        Some(f) => parse_date("from", Some(&f))?,
        None => today,
    };
    let to = match q.to {
        Some(t) => parse_date("to", Some(&t))?,
        None => from,
    };
    if to < from || (to - from).num_days() + 1 > MAX_EXPORT_DAYS {
        return Err(ApiError::bad_request(
            "from..to: at most 366 days, from first",
        ));
    }
    let (a, b) = day_bounds(&portal, from, to);
    let mut out = Vec::new();
    for l in classroom_domain::lessons_between(&portal.db, a, b).await? {
        out.push(lesson_json(&portal, &l).await?);
    }
    ok(json!({ "lessons": out }))
}

#[derive(Deserialize)]
struct NewLessonBody {
    class_id: String,
    starts_at: String,
    ends_at: String,
    media_room: Option<String>,
    teachers: Option<Vec<String>>,
}

fn parse_instant(field: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v.trim())
        .map(|t| t.timestamp())
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 instant")))
}

async fn admin_create_lesson(
    State(portal): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    require_admin(&portal, &headers).await?;
    let body: NewLessonBody = parse_body(&body)?;
    let suffix = classroom_auth::token::new_token().map_err(|_| ApiError::internal())?;
    let suffix: String = suffix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let room = body
        .media_room
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("lesson-{suffix}"));
    if room.len() > 128 {
        return Err(ApiError::bad_request("media_room is too long"));
    }
    let new = NewLesson {
        id: format!("L-{suffix}"),
        class_id: body.class_id,
        starts_at: parse_instant("starts_at", &body.starts_at)?,
        ends_at: parse_instant("ends_at", &body.ends_at)?,
        media_room: room,
        teachers: body.teachers,
    };
    let lesson = match classroom_domain::create_lesson(&portal.db, &new, portal.timezone).await {
        Ok(l) => l,
        Err(LessonError::Db(e)) => return Err(e.into()),
        Err(e @ (LessonError::MediaRoomTaken(_) | LessonError::DuplicateId(_))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                e.to_string(),
            ));
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let mut r = Json(lesson_json(&portal, &lesson).await?).into_response();
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

#[derive(Deserialize)]
struct LinkBody {
    person: String,
}

/// Mints a one-time sign-in link for `person` (shared with the CLI).
pub async fn mint_signin_link(
    db: &classroom_domain::Db,
    public_url: &str,
    person: &str,
    ttl: std::time::Duration,
) -> Result<(String, i64), ApiError> {
    let link =
        classroom_auth::token::new_sign_in_link(public_url).map_err(|_| ApiError::internal())?;
    let expires_at = unix_now() + ttl.as_secs() as i64;
    classroom_domain::create_signin_link(db, &link.hash, person, expires_at).await?;
    Ok((link.url, expires_at))
}

async fn admin_signin_link(
    State(portal): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    require_admin(&portal, &headers).await?;
    let body: LinkBody = parse_body(&body)?;
    match classroom_domain::person(&portal.db, &body.person).await? {
        Some(p) if p.enabled => {}
        Some(_) => return Err(ApiError::bad_request("person: the account is disabled")),
        None => return Err(ApiError::not_found("person")),
    }
    let (url, expires_at) = mint_signin_link(
        &portal.db,
        &portal.public_url,
        &body.person,
        SIGNIN_LINK_TTL,
    )
    .await?;
    ok(json!({ "url": url, "expires_at": rfc3339(expires_at) }))
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<String>,
    action: Option<String>,
    limit: Option<u32>,
}

async fn admin_audit(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    require_admin(&portal, &headers).await?;
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => parse_instant("since", s)?,
        }),
        None => None,
    };
    let action = match q.action.as_deref().filter(|s| !s.is_empty()) {
        Some(a) => Some(Action::parse(a).ok_or_else(|| ApiError::bad_request("action: unknown"))?),
        None => None,
    };
    let filter = AuditFilter {
        since,
        action,
        actor: None,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let events: Vec<Value> = audit_log(&portal.db, &filter)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "at": rfc3339(e.at),
                "actor": e.actor,
                "action": e.action.as_str(),
                "subject": e.subject,
                "detail": e.detail,
                "remote": e.remote_addr,
            })
        })
        .collect();
    ok(json!({ "events": events }))
}
