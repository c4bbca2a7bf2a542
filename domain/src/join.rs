//! The join decision: in which role a signed-in person may enter a lesson's media room, or why
//! not. The HTTP API asks this before it signs a join token; the WebSocket door checks pupils
//! again with [`crate::admission`].

use serde::Serialize;

use crate::admission::{Admission, RefusalReason, TeacherActionError, admission, request_entry};
use crate::db::{Db, DbError};
use crate::lesson::Lesson;
use crate::model::{Person, PersonRole};
use crate::scope::{Scope, may_act_on_lesson};

/// The role a join token is signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRole {
    /// A teacher or partner lecturer of the lesson.
    Teacher,
    /// An enrolled pupil who attends online (or whom a teacher admitted).
    Student,
    /// An administrator of the lesson's school: watches, does not publish.
    Observer,
}

/// Why nobody signs a join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRefusal {
    /// Not a teacher of the lesson, not a pupil of its class, outside the caller's schools, or a
    /// role that never joins (a guardian).
    NotPermitted,
    /// A pupil expected in the classroom today; they now wait in the lobby.
    InPersonToday,
    /// A pupil a teacher refused from the lobby.
    RefusedByTeacher,
}

impl JoinRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::NotPermitted => "forbidden",
            JoinRefusal::InPersonToday => "in_person_today",
            JoinRefusal::RefusedByTeacher => "refused",
        }
    }
}

/// Decides whether `person` (with `scope`, their schools) may join `lesson` at `now`. A pupil
/// refused for attending in person is recorded as waiting in the lobby, as the teacher's lobby
/// shows.
pub async fn join_decision(
    db: &Db,
    person: &Person,
    scope: &Scope,
    lesson: &Lesson,
    now: i64,
) -> Result<Result<JoinRole, JoinRefusal>, DbError> {
    if !person.enabled {
        return Ok(Err(JoinRefusal::NotPermitted));
    }
    Ok(match person.role() {
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => {
            if may_act_on_lesson(db, scope, lesson).await? {
                Ok(JoinRole::Teacher)
            } else {
                Err(JoinRefusal::NotPermitted)
            }
        }
        Some(PersonRole::Administrator) => {
            if may_act_on_lesson(db, scope, lesson).await? {
                Ok(JoinRole::Observer)
            } else {
                Err(JoinRefusal::NotPermitted)
            }
        }
        Some(PersonRole::Student) => match admission(db, lesson, &person.id, now).await? {
            Admission::Admitted | Admission::AdmittedByTeacher => Ok(JoinRole::Student),
            Admission::Refused {
                reason: RefusalReason::InPersonToday,
            } => {
                match request_entry(db, lesson, &person.id, now).await {
                    Ok(_) => Err(JoinRefusal::InPersonToday),
                    Err(TeacherActionError::Db(e)) => return Err(e),
                    // Unenrolled by a roster import in between.
                    Err(_) => Err(JoinRefusal::NotPermitted),
                }
            }
            Admission::Refused {
                reason: RefusalReason::RefusedByTeacher,
            } => Err(JoinRefusal::RefusedByTeacher),
            Admission::NotEnrolled => Err(JoinRefusal::NotPermitted),
        },
        Some(PersonRole::Guardian) | None => Err(JoinRefusal::NotPermitted),
    })
}
