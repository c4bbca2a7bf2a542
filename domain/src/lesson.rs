//! Lessons: one meeting of a class, at a time, in a media room, taught by some teachers.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

use crate::calendar::{format_date, parse_stored_date};
use crate::db::{Db, DbError, Tx, dispatch, on_pool};

/// A stored lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lesson {
    pub id: String,
    pub class_id: String,
    /// The school's calendar date of `starts_at`, fixed at creation.
    pub lesson_date: NaiveDate,
    /// Unix seconds, UTC.
    pub starts_at: i64,
    /// Unix seconds, UTC; after `starts_at`.
    pub ends_at: i64,
    /// The media server's room name; unique across lessons.
    pub media_room: String,
}

/// What [`create_lesson`] needs. Ids and room names are chosen by the caller (they are opaque
/// here, and generating them needs randomness this crate does not otherwise use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLesson {
    pub id: String,
    pub class_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub media_room: String,
    /// Who teaches it; `None` means the class's teachers (its `teacher` enrolments).
    pub teachers: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    #[error("no class {0:?}")]
    UnknownClass(String),
    #[error("{0:?} is not a teacher, partner lecturer or administrator")]
    NotATeacher(String),
    #[error("the lesson would have no teacher")]
    NoTeachers,
    #[error("a lesson must end after it starts")]
    BadTimes,
    #[error("a lesson with id {0:?} already exists")]
    DuplicateId(String),
    #[error("media room {0:?} is already used by another lesson")]
    MediaRoomTaken(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for LessonError {
    fn from(e: sqlx::Error) -> Self {
        LessonError::Db(e.into())
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LessonRow {
    id: String,
    class_id: String,
    lesson_date: String,
    starts_at: i64,
    ends_at: i64,
    media_room: String,
}

impl LessonRow {
    pub(crate) fn into_lesson(self) -> Result<Lesson, DbError> {
        Ok(Lesson {
            lesson_date: parse_stored_date("lessons", "lesson_date", &self.lesson_date)?,
            id: self.id,
            class_id: self.class_id,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            media_room: self.media_room,
        })
    }
}

pub(crate) const LESSON_COLUMNS: &str =
    "l.id, l.class_id, l.lesson_date, l.starts_at, l.ends_at, l.media_room";

fn into_lessons(rows: Vec<LessonRow>) -> Result<Vec<Lesson>, DbError> {
    rows.into_iter().map(LessonRow::into_lesson).collect()
}

/// Creates a lesson and its teacher list. `timezone` is the school's, to fix `lesson_date`.
pub async fn create_lesson(db: &Db, new: &NewLesson, timezone: Tz) -> Result<Lesson, LessonError> {
    if new.ends_at <= new.starts_at {
        return Err(LessonError::BadTimes);
    }
    let lesson_date = crate::cutoff::local_date(timezone, new.starts_at);
    let mut tx = db.begin_write().await?;

    let class: Option<String> = dispatch!(&mut tx, c => sqlx::query_scalar("SELECT id FROM classes WHERE id = $1")
        .bind(&new.class_id).fetch_optional(c).await?);
    if class.is_none() {
        return Err(LessonError::UnknownClass(new.class_id.clone()));
    }
    let taken: Option<String> = dispatch!(&mut tx, c => sqlx::query_scalar("SELECT id FROM lessons WHERE id = $1")
        .bind(&new.id).fetch_optional(c).await?);
    if taken.is_some() {
        return Err(LessonError::DuplicateId(new.id.clone()));
    }
    let room: Option<String> = dispatch!(&mut tx, c => sqlx::query_scalar("SELECT id FROM lessons WHERE media_room = $1")
        .bind(&new.media_room).fetch_optional(c).await?);
    if room.is_some() {
        return Err(LessonError::MediaRoomTaken(new.media_room.clone()));
    }

    let teachers = match &new.teachers {
        Some(given) => {
            for t in given {
                if !is_teaching_role(&mut tx, t).await? {
                    return Err(LessonError::NotATeacher(t.clone()));
                }
            }
            let mut given = given.clone();
            given.sort();
            given.dedup();
            given
        }
        None => {
            let sql = "SELECT person_id FROM enrollments \
                       WHERE class_id = $1 AND role = 'teacher' ORDER BY person_id";
            let ids: Vec<String> = dispatch!(&mut tx, c => sqlx::query_scalar(sql)
                .bind(&new.class_id).fetch_all(c).await?);
            let mut ids = ids;
            ids.dedup();
            ids
        }
    };
    if teachers.is_empty() {
        return Err(LessonError::NoTeachers);
    }

    let date = format_date(lesson_date);
    dispatch!(&mut tx, c => sqlx::query(
        "INSERT INTO lessons (id, class_id, lesson_date, starts_at, ends_at, media_room) \
         VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&new.id).bind(&new.class_id).bind(&date).bind(new.starts_at).bind(new.ends_at)
        .bind(&new.media_room).execute(c).await?.rows_affected());
    for t in &teachers {
        dispatch!(&mut tx, c => sqlx::query(
            "INSERT INTO lesson_teachers (lesson_id, teacher_id) VALUES ($1, $2)")
            .bind(&new.id).bind(t).execute(c).await?.rows_affected());
    }
    tx.commit().await?;
    Ok(Lesson {
        id: new.id.clone(),
        class_id: new.class_id.clone(),
        lesson_date,
        starts_at: new.starts_at,
        ends_at: new.ends_at,
        media_room: new.media_room.clone(),
    })
}

async fn is_teaching_role(tx: &mut Tx, person: &str) -> Result<bool, DbError> {
    let role: Option<String> = dispatch!(tx, c => sqlx::query_scalar("SELECT role FROM people WHERE id = $1")
        .bind(person).fetch_optional(c).await?);
    Ok(matches!(
        role.as_deref(),
        Some("teacher" | "partner_lecturer" | "administrator")
    ))
}

/// The lesson with this id.
pub async fn lesson(db: &Db, id: &str) -> Result<Option<Lesson>, DbError> {
    let sql = format!("SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.id = $1");
    let row: Option<LessonRow> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await?);
    row.map(LessonRow::into_lesson).transpose()
}

/// The lesson held in this media room (what a join to the room is checked against).
pub async fn lesson_by_media_room(db: &Db, media_room: &str) -> Result<Option<Lesson>, DbError> {
    let sql = format!("SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.media_room = $1");
    let row: Option<LessonRow> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(media_room).fetch_optional(p).await?);
    row.map(LessonRow::into_lesson).transpose()
}

/// The teachers of a lesson, by id.
pub async fn lesson_teachers(db: &Db, lesson: &str) -> Result<Vec<String>, DbError> {
    let sql = "SELECT teacher_id FROM lesson_teachers WHERE lesson_id = $1 ORDER BY teacher_id";
    Ok(on_pool!(db, p => sqlx::query_scalar(sql).bind(lesson).fetch_all(p).await?))
}

/// Lessons of a class starting in `[from, to)` (Unix seconds), in start order.
pub async fn lessons_of_class(
    db: &Db,
    class: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Lesson>, DbError> {
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l \
         WHERE l.class_id = $1 AND l.starts_at >= $2 AND l.starts_at < $3 \
         ORDER BY l.starts_at, l.id"
    );
    let rows: Vec<LessonRow> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(class).bind(from).bind(to).fetch_all(p).await?);
    into_lessons(rows)
}

/// Lessons a person teaches starting in `[from, to)`, in start order.
pub async fn lessons_of_teacher(
    db: &Db,
    teacher: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Lesson>, DbError> {
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l \
         JOIN lesson_teachers t ON t.lesson_id = l.id \
         WHERE t.teacher_id = $1 AND l.starts_at >= $2 AND l.starts_at < $3 \
         ORDER BY l.starts_at, l.id"
    );
    let rows: Vec<LessonRow> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(teacher).bind(from).bind(to).fetch_all(p).await?);
    into_lessons(rows)
}

/// Every lesson starting in `[from, to)`, for administrators.
pub async fn lessons_between(db: &Db, from: i64, to: i64) -> Result<Vec<Lesson>, DbError> {
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l \
         WHERE l.starts_at >= $1 AND l.starts_at < $2 ORDER BY l.starts_at, l.id"
    );
    let rows: Vec<LessonRow> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(from).bind(to).fetch_all(p).await?);
    into_lessons(rows)
}
