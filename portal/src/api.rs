//! The JSON API of the signed-in pages (`docs/API.md`): attendance modes, lessons and the
//! lobby, join tokens, exports and administration. Every handler authorises its resource.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use chrono::{NaiveDate, TimeZone};
use classroom_domain::{
    Acting, Action, AuditEntry, AuditFilter, Capacity, Counts, DayMode, ImportError, ImportReport,
    Issuer, JoinRefusal, JoinRole, Lesson, LessonReport, MarkStatus, MintError, Mode, ModeChange,
    ModeRequest, NewLesson, Person, PersonRole, audit, audit_log_within,
};
use classroom_signaling::token::{Claims, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::client_addr::ClientAddr;
use crate::extract::{Admin, SignedIn, Staff};
use crate::links::LinkError;
use crate::upload::UploadError;
use crate::{
    ApiError, JOIN_TOKEN_TTL, ROSTER_BODY_LIMIT, SIGNIN_LINK_TTL, Session, Shared, page_for,
    person_json, rfc3339, unix_now,
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
        .route(
            "/api/lessons/{lesson}/admit",
            lobby_route(LobbyAction::Admit),
        )
        .route(
            "/api/lessons/{lesson}/refuse",
            lobby_route(LobbyAction::Refuse),
        )
        .route(
            "/api/lessons/{lesson}/marks",
            lobby_route(LobbyAction::Mark),
        )
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

/// A JSON request body, or `400` saying what is wrong with it.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
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
    who: &SignedIn,
    pupil: &str,
    via: Via,
) -> Result<Capacity, ApiError> {
    match classroom_domain::may_set_mode(&portal.db, &who.session.person.id, pupil).await? {
        Ok(Capacity::Guardian) if via == Via::Children => Ok(Capacity::Guardian),
        Ok(Capacity::Staff) if via == Via::Pupils => Ok(Capacity::Staff),
        Ok(_) | Err(_) => Err(portal.deny(&who.caller, "pupil", pupil).await),
    }
}

async fn children(State(portal): State<Shared>, who: SignedIn) -> ApiResult {
    let s = &who.session;
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

async fn modes(portal: Shared, who: SignedIn, pupil: String, q: Range, via: Via) -> ApiResult {
    let capacity = authorise_pupil(&portal, &who, &pupil, via).await?;
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
    ip: IpAddr,
    who: SignedIn,
    pupil: String,
    body: Bytes,
    via: Via,
) -> ApiResult {
    let s = &who.session;
    authorise_pupil(&portal, &who, &pupil, via).await?;
    let body: ModeBody = parse_body(&body)?;
    let from = parse_date("from", Some(&body.from))?;
    let to = parse_date("to", Some(&body.to))?;
    let mode = Mode::parse(&body.mode)
        .ok_or_else(|| ApiError::bad_request("mode must be in_person or online"))?;
    let remote = ip.to_string();
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
    let changes = classroom_domain::set_mode(&portal.db, &portal.policy, acting, &req).await?;
    let mut people = People::new(&portal);
    let mut out = Vec::new();
    for c in &changes {
        out.push(change_json(&mut people, c).await?);
    }
    ok(json!({ "changes": out }))
}

async fn history(portal: Shared, who: SignedIn, pupil: String, via: Via) -> ApiResult {
    authorise_pupil(&portal, &who, &pupil, via).await?;
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
    who: SignedIn,
    Path(pupil): Path<String>,
    Query(q): Query<Range>,
) -> ApiResult {
    modes(p, who, pupil, q, Via::Children).await
}

async fn pupil_modes(
    State(p): State<Shared>,
    staff: Staff,
    Path(pupil): Path<String>,
    Query(q): Query<Range>,
) -> ApiResult {
    modes(p, staff.into(), pupil, q, Via::Pupils).await
}

async fn put_child_modes(
    State(p): State<Shared>,
    ClientAddr(ip): ClientAddr,
    who: SignedIn,
    Path(pupil): Path<String>,
    body: Bytes,
) -> ApiResult {
    put_modes(p, ip, who, pupil, body, Via::Children).await
}

async fn put_pupil_modes(
    State(p): State<Shared>,
    ClientAddr(ip): ClientAddr,
    staff: Staff,
    Path(pupil): Path<String>,
    body: Bytes,
) -> ApiResult {
    put_modes(p, ip, staff.into(), pupil, body, Via::Pupils).await
}

async fn child_history(
    State(p): State<Shared>,
    who: SignedIn,
    Path(pupil): Path<String>,
) -> ApiResult {
    history(p, who, pupil, Via::Children).await
}

async fn pupil_history(
    State(p): State<Shared>,
    staff: Staff,
    Path(pupil): Path<String>,
) -> ApiResult {
    history(p, staff.into(), pupil, Via::Pupils).await
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
    who: SignedIn,
    Query(q): Query<DateQuery>,
) -> ApiResult {
    let s = &who.session;
    let date = match q.date {
        Some(d) => parse_date("date", Some(&d))?,
        None => portal.policy.local_date(unix_now()),
    };
    let (from, to) = day_bounds(&portal, date, date);
    let list = match s.role() {
        Some(PersonRole::Administrator) => {
            let scope = who.scope(&portal).await?;
            classroom_domain::lessons_in_scope(&portal.db, &scope, from, to).await?
        }
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => {
            let scope = who.scope(&portal).await?;
            let mut mine = Vec::new();
            for l in
                classroom_domain::lessons_of_teacher(&portal.db, &s.person.id, from, to).await?
            {
                if classroom_domain::may_act_on_lesson(&portal.db, &scope, &l).await? {
                    mine.push(l);
                }
            }
            mine
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

/// The lesson, if the caller may run it: a teacher of it or an administrator of its school.
pub(crate) async fn staff_lesson(
    portal: &Shared,
    staff: &Staff,
    id: &str,
) -> Result<Lesson, ApiError> {
    let lesson = find_lesson(portal, id).await?;
    if classroom_domain::may_act_on_lesson(&portal.db, &staff.scope, &lesson).await? {
        Ok(lesson)
    } else {
        Err(portal.deny(&staff.caller, "lesson", id).await)
    }
}

async fn lobby(State(portal): State<Shared>, staff: Staff, Path(id): Path<String>) -> ApiResult {
    let lesson = staff_lesson(&portal, &staff, &id).await?;
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

#[derive(Clone, Copy)]
enum LobbyAction {
    Admit,
    Refuse,
    Mark,
}

async fn lobby_action(
    portal: Shared,
    ip: IpAddr,
    staff: Staff,
    id: String,
    body: Bytes,
    what: LobbyAction,
) -> ApiResult {
    let lesson = staff_lesson(&portal, &staff, &id).await?;
    let s = &staff.session;
    let body: PupilBody = parse_body(&body)?;
    let remote = ip.to_string();
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
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/lessons/{lesson}/<what>`: the three lobby actions share their extractors.
fn lobby_route(what: LobbyAction) -> MethodRouter<Shared> {
    post(
        move |State(p): State<Shared>,
              ClientAddr(ip): ClientAddr,
              staff: Staff,
              Path(id): Path<String>,
              body: Bytes| lobby_action(p, ip, staff, id, body, what),
    )
}

// ---------------------------------------------------------------------------------------------
// Join tokens

async fn join(
    State(portal): State<Shared>,
    ClientAddr(ip): ClientAddr,
    who: SignedIn,
    Path(id): Path<String>,
) -> ApiResult {
    let s = &who.session;
    let lesson = find_lesson(&portal, &id).await?;
    let now = unix_now();
    let remote = ip.to_string();
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
    let scope = who.scope(&portal).await?;
    let decision =
        classroom_domain::join_decision(&portal.db, &s.person, &scope, &lesson, now).await?;
    let role = match decision {
        Ok(JoinRole::Teacher) => Role::Teacher,
        Ok(JoinRole::Observer) => Role::Observer,
        Ok(JoinRole::Student) => Role::Student,
        // Staff outside the lesson (another school's, say) are refused like any out-of-scope
        // request; pupils' refusals are the join's own audit entries.
        Err(JoinRefusal::NotPermitted) if s.is_staff() => {
            return Err(portal.deny(&who.caller, "lesson", &lesson.id).await);
        }
        Err(JoinRefusal::NotPermitted) if s.role() != Some(PersonRole::Student) => {
            return Err(ApiError::forbidden());
        }
        Err(refusal) => {
            let err = match refusal {
                JoinRefusal::InPersonToday => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "in_person_today",
                    "Your guardian chose in-person attendance for today.",
                ),
                JoinRefusal::RefusedByTeacher => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "refused",
                    "The teacher did not admit you to this lesson.",
                ),
                JoinRefusal::NotPermitted => ApiError::forbidden(),
            };
            audit_join(
                Action::JoinRefused,
                json!({ "lesson": lesson.id, "media_room": lesson.media_room, "reason": err.code, "via": "api" }),
            )
            .await;
            return Err(err);
        }
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

async fn lesson_export(portal: Shared, staff: Staff, id: String, csv: bool) -> ApiResult {
    let lesson = staff_lesson(&portal, &staff, &id).await?;
    let s = &staff.session;
    let report = classroom_domain::report_for_lesson(&portal.db, &lesson, unix_now()).await?;
    export(
        &portal,
        s,
        vec![report],
        &lesson.id,
        csv,
        json!({ "lesson": lesson.id }),
    )
    .await
}

async fn lesson_csv(State(p): State<Shared>, staff: Staff, Path(id): Path<String>) -> ApiResult {
    lesson_export(p, staff, id, true).await
}

async fn lesson_json_export(
    State(p): State<Shared>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult {
    lesson_export(p, staff, id, false).await
}

#[derive(Deserialize)]
struct ClassQuery {
    class: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn class_export(portal: Shared, staff: Staff, q: ClassQuery, csv: bool) -> ApiResult {
    let s = &staff.session;
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
    if !classroom_domain::may_act_on_class(&portal.db, &staff.scope, &class).await? {
        return Err(portal.deny(&staff.caller, "class", &class).await);
    }
    let reports =
        classroom_domain::reports_for_class(&portal.db, &class, from, to, unix_now()).await?;
    let name = format!("{class}-{}-{}", fmt_date(from), fmt_date(to));
    export(
        &portal,
        s,
        reports,
        &name,
        csv,
        json!({ "class": class, "from": fmt_date(from), "to": fmt_date(to) }),
    )
    .await
}

async fn class_csv(
    State(p): State<Shared>,
    staff: Staff,
    Query(q): Query<ClassQuery>,
) -> ApiResult {
    class_export(p, staff, q, true).await
}

async fn class_json(
    State(p): State<Shared>,
    staff: Staff,
    Query(q): Query<ClassQuery>,
) -> ApiResult {
    class_export(p, staff, q, false).await
}

// ---------------------------------------------------------------------------------------------
// Administration

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
    ClientAddr(ip): ClientAddr,
    admin: Admin,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let s = &admin.session;
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
    let result = classroom_domain::import_zip_within(&portal.db, upload.path(), &admin.scope).await;
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
        Err(ImportError::OutOfScope(problems)) => {
            portal.deny(&admin.caller, "roster", "upload").await;
            return Err(ApiError::forbidden().with(json!({ "problems": problems
                .0
                .iter()
                .map(|p| json!({ "file": p.file, "line": p.line, "reason": p.reason.to_string() }))
                .collect::<Vec<_>>() })));
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
    let remote = ip.to_string();
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
    admin: Admin,
    Query(q): Query<Range>,
) -> ApiResult {
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
    for l in classroom_domain::lessons_in_scope(&portal.db, &admin.scope, a, b).await? {
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

async fn admin_create_lesson(State(portal): State<Shared>, admin: Admin, body: Bytes) -> ApiResult {
    let body: NewLessonBody = parse_body(&body)?;
    if classroom_domain::class_school(&portal.db, &body.class_id)
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "class_id: no class {:?}",
            body.class_id
        )));
    }
    let teachers = body.teachers.as_deref();
    if !classroom_domain::may_schedule(&portal.db, &admin.scope, &body.class_id, teachers).await? {
        return Err(portal.deny(&admin.caller, "class", &body.class_id).await);
    }
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
    let lesson = classroom_domain::create_lesson(&portal.db, &new, portal.timezone).await?;
    let mut r = Json(lesson_json(&portal, &lesson).await?).into_response();
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

#[derive(Deserialize)]
struct LinkBody {
    person: String,
}

async fn admin_signin_link(State(portal): State<Shared>, admin: Admin, body: Bytes) -> ApiResult {
    let body: LinkBody = parse_body(&body)?;
    let minted = crate::links::mint_signin_link(
        &portal.db,
        &portal.public_url,
        &Issuer::Admin(&admin.scope),
        &body.person,
        SIGNIN_LINK_TTL,
        unix_now(),
        Some(&admin.caller.remote),
    )
    .await;
    match minted {
        Ok(link) => ok(json!({ "url": link.url, "expires_at": rfc3339(link.expires_at) })),
        Err(LinkError::Mint(MintError::Refused(why))) => {
            let refused = ApiError::from(MintError::Refused(why));
            portal.deny(&admin.caller, "person", &body.person).await;
            Err(refused)
        }
        Err(LinkError::Mint(e)) => Err(e.into()),
        Err(e @ LinkError::Token(_)) => {
            warn!("{e}");
            Err(ApiError::internal())
        }
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<String>,
    action: Option<String>,
    limit: Option<u32>,
}

async fn admin_audit(
    State(portal): State<Shared>,
    admin: Admin,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
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
    let events: Vec<Value> = audit_log_within(&portal.db, &filter, &admin.scope)
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
