//! Who may do what: the relations the HTTP layer checks before acting, as plain queries.
//!
//! Every function reads the current roster, so a guardian link or an enrolment removed by an
//! import takes effect at once.

use serde::Serialize;

use crate::db::{Db, DbError, on_pool};
use crate::model::{Entity, Person, PersonRole};

/// In what capacity someone may set a pupil's attendance mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    /// A guardian of the pupil, choosing for their own child. Bound by the cut-off.
    Guardian,
    /// A teacher of one of the pupil's classes, or an administrator of the pupil's school,
    /// acting on behalf of the guardian (who phoned the school, say). Recorded as such.
    Staff,
}

impl Capacity {
    pub fn as_str(self) -> &'static str {
        match self {
            Capacity::Guardian => "guardian",
            Capacity::Staff => "staff",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Capacity> {
        match s {
            "guardian" => Some(Capacity::Guardian),
            "staff" => Some(Capacity::Staff),
            _ => None,
        }
    }
}

/// Why [`may_set_mode`] said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("unknown person")]
    UnknownActor,
    #[error("account disabled")]
    ActorDisabled,
    #[error("not a pupil")]
    NotAPupil,
    #[error("neither a guardian nor a teacher of this pupil")]
    NotPermitted,
}

/// One person by id.
pub async fn person(db: &Db, id: &str) -> Result<Option<Person>, DbError> {
    let sql = format!(
        "SELECT {} FROM people WHERE id = $1",
        Person::COLUMNS.join(", ")
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Person>(&sql).bind(id).fetch_optional(p).await?))
}

/// Whether `guardian` is linked to `pupil` in the roster.
pub async fn is_guardian_of(db: &Db, guardian: &str, pupil: &str) -> Result<bool, DbError> {
    let sql = "SELECT COUNT(*) FROM guardian_links WHERE guardian_id = $1 AND pupil_id = $2";
    let n: i64 =
        on_pool!(db, p => sqlx::query_scalar(sql).bind(guardian).bind(pupil).fetch_one(p).await?);
    Ok(n > 0)
}

/// The pupils a guardian is linked to, ordered by kana reading then id.
pub async fn pupils_of_guardian(db: &Db, guardian: &str) -> Result<Vec<Person>, DbError> {
    let columns: Vec<String> = Person::COLUMNS.iter().map(|c| format!("p.{c}")).collect();
    let sql = format!(
        "SELECT {} FROM people p JOIN guardian_links g ON g.pupil_id = p.id \
         WHERE g.guardian_id = $1 \
         ORDER BY p.family_name_kana, p.given_name_kana, p.id",
        columns.join(", ")
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Person>(&sql).bind(guardian).fetch_all(p).await?))
}

/// Whether `teacher` has a `teacher` enrolment in `class`. Partner lecturers and proctors do
/// not count: they teach into a lesson but do not answer for the class's pupils.
pub async fn teaches_class(db: &Db, teacher: &str, class: &str) -> Result<bool, DbError> {
    let sql = "SELECT COUNT(*) FROM enrollments \
               WHERE person_id = $1 AND class_id = $2 AND role = 'teacher'";
    let n: i64 =
        on_pool!(db, p => sqlx::query_scalar(sql).bind(teacher).bind(class).fetch_one(p).await?);
    Ok(n > 0)
}

/// Whether `teacher` is one of the lesson's teachers.
pub async fn teaches_lesson(db: &Db, teacher: &str, lesson: &str) -> Result<bool, DbError> {
    let sql = "SELECT COUNT(*) FROM lesson_teachers WHERE teacher_id = $1 AND lesson_id = $2";
    let n: i64 =
        on_pool!(db, p => sqlx::query_scalar(sql).bind(teacher).bind(lesson).fetch_one(p).await?);
    Ok(n > 0)
}

/// Whether `pupil` has a `student` enrolment in the lesson's class that covers the lesson's
/// date (open-ended when the enrolment has no begin or end date).
pub async fn enrolled_in_lesson(db: &Db, pupil: &str, lesson: &str) -> Result<bool, DbError> {
    let sql = format!("SELECT COUNT(*) FROM lessons l JOIN enrollments e ON {ENROLLED_ON}");
    let sql = format!("{sql} WHERE l.id = $1 AND e.person_id = $2");
    let n: i64 =
        on_pool!(db, p => sqlx::query_scalar(&sql).bind(lesson).bind(pupil).fetch_one(p).await?);
    Ok(n > 0)
}

/// Join condition between `lessons l` and `enrollments e`: e is a pupil's enrolment in l's class
/// on l's date. Dates are TEXT `YYYY-MM-DD`, which compare correctly as strings.
pub(crate) const ENROLLED_ON: &str = "e.class_id = l.class_id AND e.role = 'student' \
     AND (e.begin_date IS NULL OR e.begin_date <= l.lesson_date) \
     AND (e.end_date IS NULL OR e.end_date >= l.lesson_date)";

/// Whether `actor` may set `pupil`'s attendance mode, and in which capacity:
/// a guardian linked to the pupil; a teacher with a `teacher` enrolment in a class the pupil is
/// a student of; an administrator of the pupil's school (see [`crate::scope::scope_of`]).
/// Disabled accounts may do nothing. The outer `Result` is only for database failures.
pub async fn may_set_mode(
    db: &Db,
    actor: &str,
    pupil: &str,
) -> Result<Result<Capacity, Denied>, DbError> {
    let Some(actor_row) = person(db, actor).await? else {
        return Ok(Err(Denied::UnknownActor));
    };
    if !actor_row.enabled {
        return Ok(Err(Denied::ActorDisabled));
    }
    let Some(pupil_row) = person(db, pupil).await? else {
        return Ok(Err(Denied::NotAPupil));
    };
    if pupil_row.role() != Some(PersonRole::Student) {
        return Ok(Err(Denied::NotAPupil));
    }
    let allowed = match actor_row.role() {
        Some(PersonRole::Guardian) => {
            return Ok(if is_guardian_of(db, actor, pupil).await? {
                Ok(Capacity::Guardian)
            } else {
                Err(Denied::NotPermitted)
            });
        }
        Some(PersonRole::Teacher) => teaches_pupil(db, actor, pupil).await?,
        // Only an administrator of the pupil's own school; one without a school may do
        // nothing (no implied city-wide power: see `scope`).
        Some(PersonRole::Administrator) => crate::scope::scope_of(db, &actor_row)
            .await?
            .covers_person(&pupil_row),
        _ => false,
    };
    Ok(if allowed {
        Ok(Capacity::Staff)
    } else {
        Err(Denied::NotPermitted)
    })
}

/// Whether `teacher` teaches a class `pupil` is a student of.
async fn teaches_pupil(db: &Db, teacher: &str, pupil: &str) -> Result<bool, DbError> {
    let sql = "SELECT COUNT(*) FROM enrollments t JOIN enrollments s ON s.class_id = t.class_id \
               WHERE t.person_id = $1 AND t.role = 'teacher' \
               AND s.person_id = $2 AND s.role = 'student'";
    let n: i64 =
        on_pool!(db, p => sqlx::query_scalar(sql).bind(teacher).bind(pupil).fetch_one(p).await?);
    Ok(n > 0)
}
