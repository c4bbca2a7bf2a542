//! Lesson chat kept beyond the lesson: a school's choice, off by default.
//!
//! Signaling holds a lesson's chat in memory only. A school that turns retention on has the
//! messages of its lessons stored as they are written ([`keep_message`]), removed when a teacher
//! deletes them in the lesson ([`delete_kept_message`]), readable by the lesson's teachers and
//! the school's administrators ([`kept_chat`]), and deleted by the purge once older than the
//! school's retention period ([`purge_kept_chat`]). A school that turns retention off stops new
//! messages being kept; those already kept stay until their period ends.

use serde::Serialize;

use crate::audit::{Acting, Action, AuditEntry, append};
use crate::db::{Db, DbError, Table, dispatch, on_pool};
use crate::scope::class_school;

/// Shortest and longest retention a school may choose, in days.
pub const MIN_DAYS: u16 = 1;
pub const MAX_DAYS: u16 = 365;
/// The retention of a school that has not chosen.
pub const DEFAULT_DAYS: u16 = 30;
/// Most messages one [`kept_chat`] call returns.
pub const MAX_PAGE: u32 = 1000;

const DAY: i64 = 86_400;

/// A school's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChatRetention {
    /// Whether lesson chat is kept beyond the lesson.
    pub keep: bool,
    /// How long a kept message stays, [`MIN_DAYS`]..=[`MAX_DAYS`].
    pub days: u16,
}

impl Default for ChatRetention {
    fn default() -> Self {
        ChatRetention {
            keep: false,
            days: DEFAULT_DAYS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatRetentionError {
    #[error("days must be {MIN_DAYS} to {MAX_DAYS}, not {0}")]
    BadDays(i64),
    #[error("no school {0:?}")]
    UnknownSchool(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The school's choice (the default if it never chose).
pub async fn chat_retention(db: &Db, school: &str) -> Result<ChatRetention, DbError> {
    let sql = "SELECT keep, days FROM chat_retention WHERE school_id = $1";
    let row: Option<(bool, i32)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(school).fetch_optional(p).await?);
    Ok(match row {
        Some((keep, days)) => ChatRetention {
            keep,
            days: u16::try_from(days).map_err(|_| DbError::BadStoredValue {
                table: "chat_retention",
                column: "days",
                value: days.to_string(),
            })?,
        },
        None => ChatRetention::default(),
    })
}

/// Sets the school's choice and audits the change (`chat_retention_changed`, with the old and
/// the new setting) in the same transaction. The caller has checked that `acting` may.
pub async fn set_chat_retention(
    db: &Db,
    acting: Acting<'_>,
    school: &str,
    keep: bool,
    days: i64,
) -> Result<ChatRetention, ChatRetentionError> {
    let days = u16::try_from(days)
        .ok()
        .filter(|d| (MIN_DAYS..=MAX_DAYS).contains(d))
        .ok_or(ChatRetentionError::BadDays(days))?;
    let is_school: i64 = on_pool!(db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM orgs WHERE id = $1 AND org_type = 'school'")
        .bind(school).fetch_one(p).await.map_err(DbError::from)?);
    if is_school == 0 {
        return Err(ChatRetentionError::UnknownSchool(school.to_owned()));
    }
    let old = chat_retention(db, school).await?;
    let new = ChatRetention { keep, days };
    let mut tx = db.begin_write().await?;
    let sql = "INSERT INTO chat_retention (school_id, keep, days, changed_at, changed_by) \
               VALUES ($1, $2, $3, $4, $5) \
               ON CONFLICT (school_id) DO UPDATE SET keep = excluded.keep, days = excluded.days, \
               changed_at = excluded.changed_at, changed_by = excluded.changed_by";
    dispatch!(&mut tx, c => {
        sqlx::query(sql)
            .bind(school).bind(keep).bind(i32::from(days)).bind(acting.at).bind(acting.person)
            .execute(c).await.map_err(DbError::from)?;
    });
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::ChatRetentionChanged,
        subject: Some(school),
        detail: serde_json::json!({ "school": school, "old": old, "new": new }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(new)
}

/// The lesson and school of a room whose chat is kept now; `None` for a room that is no
/// lesson, or whose school does not keep chat.
pub async fn keeping_room(db: &Db, media_room: &str) -> Result<Option<KeptLesson>, DbError> {
    let Some(lesson) = crate::lesson_by_media_room(db, media_room).await? else {
        return Ok(None);
    };
    let Some(school) = class_school(db, &lesson.class_id).await? else {
        return Ok(None);
    };
    Ok(chat_retention(db, &school)
        .await?
        .keep
        .then_some(KeptLesson {
            lesson_id: lesson.id,
            school_id: school,
        }))
}

/// Where a room's kept messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLesson {
    pub lesson_id: String,
    pub school_id: String,
}

/// A message to keep, as the live lesson saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeptMessage<'a> {
    pub message_id: &'a str,
    /// The writer's roster id (the join token's subject).
    pub sender_id: &'a str,
    pub sender_name: &'a str,
    /// `student`, `teacher`, ...
    pub sender_role: &'a str,
    /// `all` or `teacher`.
    pub addressee: &'a str,
    pub text: &'a str,
    /// Unix seconds.
    pub sent_at: i64,
}

/// A kept message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptMessage {
    /// Order of keeping within the whole table; increases.
    pub seq: i64,
    pub message_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub sender_role: String,
    pub addressee: String,
    pub text: String,
    pub sent_at: i64,
}

/// Stores a message of a lesson whose chat is kept; returns its `seq`.
pub async fn keep_message(
    db: &Db,
    lesson: &KeptLesson,
    m: &NewKeptMessage<'_>,
) -> Result<i64, DbError> {
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::KeptChat).await?;
    let sql = "INSERT INTO kept_chat (seq, school_id, lesson_id, message_id, sender_id, \
               sender_name, sender_role, addressee, body, sent_at) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9 \
               FROM kept_chat RETURNING seq";
    let seq: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(&lesson.school_id).bind(&lesson.lesson_id).bind(m.message_id).bind(m.sender_id)
        .bind(m.sender_name).bind(m.sender_role).bind(m.addressee).bind(m.text).bind(m.sent_at)
        .fetch_one(c).await?);
    tx.commit().await?;
    Ok(seq)
}

/// Removes the newest kept message of `lesson` with this live id (ids restart with each run of
/// a room, and a teacher deletes from the run that is live). Returns whether one was removed.
pub async fn delete_kept_message(
    db: &Db,
    lesson_id: &str,
    message_id: &str,
) -> Result<bool, DbError> {
    let sql = "DELETE FROM kept_chat WHERE seq = (SELECT MAX(seq) FROM kept_chat \
               WHERE lesson_id = $1 AND message_id = $2)";
    let n = on_pool!(db, p => sqlx::query(sql).bind(lesson_id).bind(message_id)
        .execute(p).await?.rows_affected());
    Ok(n > 0)
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    message_id: String,
    sender_id: String,
    sender_name: String,
    sender_role: String,
    addressee: String,
    body: String,
    sent_at: i64,
}

/// The kept messages of a lesson after `after` (a `seq`; 0 for the start), oldest first, at
/// most `limit` (clamped to 1..=[`MAX_PAGE`]). The caller has checked the reader's scope.
pub async fn kept_chat(
    db: &Db,
    lesson_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<KeptMessage>, DbError> {
    let sql = "SELECT seq, message_id, sender_id, sender_name, sender_role, addressee, body, \
               sent_at FROM kept_chat WHERE lesson_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
    let limit = i64::from(limit.clamp(1, MAX_PAGE));
    let rows: Vec<Row> = on_pool!(db, p => sqlx::query_as(sql)
        .bind(lesson_id).bind(after).bind(limit).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(|r| KeptMessage {
            seq: r.seq,
            message_id: r.message_id,
            sender_id: r.sender_id,
            sender_name: r.sender_name,
            sender_role: r.sender_role,
            addressee: r.addressee,
            text: r.body,
            sent_at: r.sent_at,
        })
        .collect())
}

/// Deletes up to `batch` kept messages older than their school's retention period at `now`
/// (the period as set now: shortening it applies to what is already kept). Returns how many;
/// the purge calls again while a full batch came back, up to its own bound.
pub async fn purge_kept_chat(db: &Db, now: i64, batch: u32) -> Result<u64, DbError> {
    // The period's arithmetic in BIGINT on both databases; only instants and counts are bound.
    let sql = format!(
        "DELETE FROM kept_chat WHERE seq IN (SELECT k.seq FROM kept_chat k \
         LEFT JOIN chat_retention r ON r.school_id = k.school_id \
         WHERE k.sent_at < $1 - CAST(COALESCE(r.days, {DEFAULT_DAYS}) AS BIGINT) * {DAY} \
         ORDER BY k.seq LIMIT $2)"
    );
    let n = on_pool!(db, p => sqlx::query(&sql)
        .bind(now).bind(i64::from(batch.max(1)))
        .execute(p).await?.rows_affected());
    Ok(n)
}
