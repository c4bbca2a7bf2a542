//! Whether a pupil may enter a lesson's media room, and the lobby where the others wait.
//!
//! A pupil whose guardian chose "online" for the lesson's date is admitted. A pupil expected in
//! the classroom is refused by default — the media room is for those at home — but may ask from
//! the lobby, and a teacher of the lesson may admit (or refuse) them; the teacher's decision is
//! recorded, with who and when, and audited.

use std::collections::HashMap;

use serde::Serialize;

use crate::access::enrolled_in_lesson;
use crate::attendance_mode::{Mode, mode_on_as_of};
use crate::audit::{self, Acting, Action, AuditEntry};
use crate::db::{Db, DbError, Table, dispatch, on_pool};
use crate::lesson::Lesson;

/// The join decision for one pupil at one lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Admission {
    /// The pupil attends online that day.
    Admitted,
    /// The pupil is expected in person, but a teacher admitted them from the lobby.
    AdmittedByTeacher,
    /// Not admitted; they may wait in the lobby ([`request_entry`]) unless a teacher refused.
    Refused { reason: RefusalReason },
    /// Not a pupil of the lesson's class on its date.
    NotEnrolled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The guardian's choice for the day is in person (or nothing was chosen).
    InPersonToday,
    /// A teacher refused the pupil's lobby request.
    RefusedByTeacher,
}

/// Why a teacher's action on a pupil of a lesson (admit, refuse, mark) was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum TeacherActionError {
    #[error("only a teacher of the lesson or an administrator may do this")]
    NotTeacher,
    #[error("the pupil is not enrolled in the lesson's class")]
    NotEnrolled,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for TeacherActionError {
    fn from(e: sqlx::Error) -> Self {
        TeacherActionError::Db(e.into())
    }
}

/// Someone waiting in a lesson's lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LobbyEntry {
    pub pupil_id: String,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: Option<String>,
    pub given_name_kana: Option<String>,
    /// When they asked (the latest request).
    pub requested_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requested,
    Admitted,
    Refused,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Requested => "requested",
            Kind::Admitted => "admitted",
            Kind::Refused => "refused",
        }
    }
}

/// The decision for `pupil` at `lesson`, as things stood at instant `at` (changes and teacher
/// decisions made later are not taken into account, so a decision can be replayed exactly).
/// The mode is the one for the lesson's date.
pub async fn admission(
    db: &Db,
    lesson: &Lesson,
    pupil: &str,
    at: i64,
) -> Result<Admission, DbError> {
    if !enrolled_in_lesson(db, pupil, &lesson.id).await? {
        return Ok(Admission::NotEnrolled);
    }
    if mode_on_as_of(db, pupil, lesson.lesson_date, at).await? == Mode::Online {
        return Ok(Admission::Admitted);
    }
    let sql = "SELECT kind FROM lobby_events WHERE lesson_id = $1 AND pupil_id = $2 \
               AND kind <> 'requested' AND at <= $3 ORDER BY seq DESC LIMIT 1";
    let decision: Option<String> = on_pool!(db, p => sqlx::query_scalar(sql)
        .bind(&lesson.id).bind(pupil).bind(at).fetch_optional(p).await?);
    Ok(match decision.as_deref() {
        Some("admitted") => Admission::AdmittedByTeacher,
        Some("refused") => Admission::Refused {
            reason: RefusalReason::RefusedByTeacher,
        },
        _ => Admission::Refused {
            reason: RefusalReason::InPersonToday,
        },
    })
}

/// Records that `pupil` is waiting in the lesson's lobby since `at`.
pub async fn request_entry(
    db: &Db,
    lesson: &Lesson,
    pupil: &str,
    at: i64,
) -> Result<(), TeacherActionError> {
    if !enrolled_in_lesson(db, pupil, &lesson.id).await? {
        return Err(TeacherActionError::NotEnrolled);
    }
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::LobbyEvents).await?;
    insert_event(&mut tx, lesson, pupil, at, Kind::Requested, pupil).await?;
    tx.commit().await?;
    Ok(())
}

/// A teacher of the lesson (or an administrator) admits `pupil`; recorded and audited.
pub async fn admit(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    pupil: &str,
) -> Result<(), TeacherActionError> {
    decide(db, acting, lesson, pupil, Kind::Admitted).await
}

/// A teacher of the lesson (or an administrator) refuses `pupil`'s lobby request; recorded and
/// audited.
pub async fn refuse(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    pupil: &str,
) -> Result<(), TeacherActionError> {
    decide(db, acting, lesson, pupil, Kind::Refused).await
}

async fn decide(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    pupil: &str,
    kind: Kind,
) -> Result<(), TeacherActionError> {
    if !may_decide(db, acting.person, lesson).await? {
        return Err(TeacherActionError::NotTeacher);
    }
    if !enrolled_in_lesson(db, pupil, &lesson.id).await? {
        return Err(TeacherActionError::NotEnrolled);
    }
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::LobbyEvents).await?;
    insert_event(&mut tx, lesson, pupil, acting.at, kind, acting.person).await?;
    let action = match kind {
        Kind::Admitted => Action::Admitted,
        _ => Action::Refused,
    };
    audit::append(
        &mut tx,
        &AuditEntry {
            at: acting.at,
            actor: Some(acting.person),
            action,
            subject: Some(pupil),
            detail: serde_json::json!({ "lesson": lesson.id, "media_room": lesson.media_room }),
            remote_addr: acting.remote_addr,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A teacher of the lesson or an administrator of its school, acting for that school (see
/// [`crate::scope`]).
pub(crate) async fn may_decide(db: &Db, person: &str, lesson: &Lesson) -> Result<bool, DbError> {
    let Some(p) = crate::access::person(db, person).await? else {
        return Ok(false);
    };
    let scope = crate::scope::scope_of(db, &p).await?;
    crate::scope::may_act_on_lesson(db, &scope, lesson).await
}

async fn insert_event(
    tx: &mut crate::db::Tx,
    lesson: &Lesson,
    pupil: &str,
    at: i64,
    kind: Kind,
    actor: &str,
) -> Result<(), DbError> {
    let sql = "INSERT INTO lobby_events (seq, lesson_id, pupil_id, at, kind, actor_id) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5 FROM lobby_events";
    dispatch!(tx, c => sqlx::query(sql).bind(&lesson.id).bind(pupil).bind(at)
        .bind(kind.as_str()).bind(actor).execute(c).await?.rows_affected());
    Ok(())
}

/// Pupils whose latest lobby event for the lesson is a request (not yet answered), in the
/// order they asked.
pub async fn lobby(db: &Db, lesson: &Lesson) -> Result<Vec<LobbyEntry>, DbError> {
    let sql = "SELECT e.pupil_id, e.kind, e.at, p.family_name, p.given_name, \
               p.family_name_kana, p.given_name_kana \
               FROM lobby_events e JOIN people p ON p.id = e.pupil_id \
               WHERE e.lesson_id = $1 ORDER BY e.seq";
    type Row = (
        String,
        String,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.id).fetch_all(p).await?);
    let mut latest: HashMap<String, (usize, Row)> = HashMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        latest.insert(row.0.clone(), (i, row));
    }
    let mut waiting: Vec<(usize, Row)> = latest
        .into_values()
        .filter(|(_, r)| r.1 == Kind::Requested.as_str())
        .collect();
    waiting.sort_by_key(|(i, _)| *i);
    Ok(waiting
        .into_iter()
        .map(|(_, r)| LobbyEntry {
            pupil_id: r.0,
            requested_at: r.2,
            family_name: r.3,
            given_name: r.4,
            family_name_kana: r.5,
            given_name_kana: r.6,
        })
        .collect())
}
