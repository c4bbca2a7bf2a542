//! Guest links: a lesson's invitation for someone outside the school's roster — a partner
//! lecturer who joins from a browser (kind `guest`), or a lecture hall's encoder that publishes
//! over WHIP (kind `whip`). The credential is a signed join token (signaling's HS256 tokens,
//! minted by the portal) whose subject names the link (`guest:<id>`, `whip:<id>`); the row here
//! is what makes it revocable and bounded, and what the room's door checks on every join and
//! resume ([`check_at_door`]). Creating, revoking and using a link are audited.

use serde::Serialize;

use crate::audit::{Acting, Action, AuditEntry, append};
use crate::db::{Db, DbError, Table, dispatch, on_pool};
use crate::lesson::Lesson;

/// Links of a lesson that may be active (neither revoked nor expired) at once.
pub const MAX_ACTIVE_PER_LESSON: i64 = 10;
/// The longest a link may live.
pub const MAX_TTL_SECS: i64 = 14 * 86_400;
/// Longest display name and organisation, in characters.
pub const MAX_NAME_CHARS: usize = 80;

/// What a link lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// A person in a browser, as a partner lecturer.
    Guest,
    /// An encoder publishing over WHIP.
    Whip,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Guest => "guest",
            GuestKind::Whip => "whip",
        }
    }

    pub fn parse(s: &str) -> Option<GuestKind> {
        match s {
            "guest" => Some(GuestKind::Guest),
            "whip" => Some(GuestKind::Whip),
            _ => None,
        }
    }

    /// The join token's subject for link `id`.
    pub fn identity(self, id: &str) -> String {
        format!("{}:{id}", self.as_str())
    }
}

/// The link a token subject names, if it names one: `guest:<id>` or `whip:<id>`.
pub fn parse_identity(identity: &str) -> Option<(GuestKind, &str)> {
    let (kind, id) = identity.split_once(':')?;
    Some((GuestKind::parse(kind)?, id)).filter(|(_, id)| !id.is_empty())
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestLink {
    pub id: String,
    pub lesson_id: String,
    pub kind: GuestKind,
    pub display_name: String,
    pub organisation: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl GuestLink {
    pub fn active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// What [`create_guest_link`] needs; the id is chosen by the caller (random, unguessable).
#[derive(Debug, Clone)]
pub struct NewGuestLink<'a> {
    pub id: &'a str,
    pub kind: GuestKind,
    pub display_name: &'a str,
    pub organisation: &'a str,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestLinkError {
    #[error("display_name must be 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("organisation must be 1 to {MAX_NAME_CHARS} characters")]
    BadOrganisation,
    #[error("expires_at must be in the future and at most {MAX_TTL_SECS} seconds away")]
    BadExpiry,
    #[error("the lesson already has {MAX_ACTIVE_PER_LESSON} active guest links; revoke one first")]
    TooMany,
    #[error("no such guest link")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why the door turns a link's holder away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorRefusal {
    Unknown,
    Revoked,
    Expired,
    /// The link is for another lesson than the room's.
    OtherLesson,
    /// The room has no lesson (any more): no link admits to it.
    NoLesson,
}

impl DoorRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            DoorRefusal::Unknown => "unknown",
            DoorRefusal::Revoked => "revoked",
            DoorRefusal::Expired => "expired",
            DoorRefusal::OtherLesson => "other_lesson",
            DoorRefusal::NoLesson => "no_lesson",
        }
    }
}

fn check_text(s: &str) -> bool {
    let n = s.trim().chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && !s.chars().any(char::is_control)
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

const COLUMNS: &str = "id, lesson_id, kind, display_name, organisation, created_by, created_at, \
                       expires_at, revoked_at";

fn from_row(r: Row) -> Result<GuestLink, DbError> {
    let kind = GuestKind::parse(&r.2).ok_or_else(|| DbError::BadStoredValue {
        table: "guest_links",
        column: "kind",
        value: r.2.clone(),
    })?;
    Ok(GuestLink {
        id: r.0,
        lesson_id: r.1,
        kind,
        display_name: r.3,
        organisation: r.4,
        created_by: r.5,
        created_at: r.6,
        expires_at: r.7,
        revoked_at: r.8,
    })
}

/// Creates a link for `lesson` and audits it (`guest_link_created`), in one transaction. The
/// caller has checked that `acting` may act on the lesson.
pub async fn create_guest_link(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    new: &NewGuestLink<'_>,
) -> Result<GuestLink, GuestLinkError> {
    if !check_text(new.display_name) {
        return Err(GuestLinkError::BadName);
    }
    if !check_text(new.organisation) {
        return Err(GuestLinkError::BadOrganisation);
    }
    if new.expires_at <= acting.at || new.expires_at - acting.at > MAX_TTL_SECS {
        return Err(GuestLinkError::BadExpiry);
    }
    let mut tx = db.begin_write().await?;
    // Serialises creators (SQLite's write transaction does so by itself), so two at once cannot
    // both pass the count.
    tx.lock_for_append(Table::AuditLog).await?;
    let count_sql = "SELECT COUNT(*) FROM guest_links WHERE lesson_id = $1 \
                     AND revoked_at IS NULL AND expires_at > $2";
    let active: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(count_sql)
        .bind(&lesson.id).bind(acting.at).fetch_one(c).await.map_err(DbError::from)?);
    if active >= MAX_ACTIVE_PER_LESSON {
        tx.rollback().await?;
        return Err(GuestLinkError::TooMany);
    }
    let link = GuestLink {
        id: new.id.to_owned(),
        lesson_id: lesson.id.clone(),
        kind: new.kind,
        display_name: new.display_name.trim().to_owned(),
        organisation: new.organisation.trim().to_owned(),
        created_by: acting.person.to_owned(),
        created_at: acting.at,
        expires_at: new.expires_at,
        revoked_at: None,
    };
    let insert = "INSERT INTO guest_links (id, lesson_id, kind, display_name, organisation, \
                  created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    dispatch!(&mut tx, c => {
        sqlx::query(insert)
            .bind(&link.id).bind(&link.lesson_id).bind(link.kind.as_str())
            .bind(&link.display_name).bind(&link.organisation).bind(&link.created_by)
            .bind(link.created_at).bind(link.expires_at)
            .execute(c).await.map_err(DbError::from)?;
    });
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::GuestLinkCreated,
        subject: Some(&link.id),
        detail: serde_json::json!({
            "lesson": lesson.id, "kind": link.kind, "display_name": link.display_name,
            "organisation": link.organisation, "expires_at": link.expires_at,
        }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(link)
}

/// The link `id`, whatever its state.
pub async fn guest_link(db: &Db, id: &str) -> Result<Option<GuestLink>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM guest_links WHERE id = $1");
    let row: Option<Row> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await?);
    row.map(from_row).transpose()
}

/// A lesson's links, newest first (at most a few hundred: ten active, the rest history).
pub async fn guest_links_of_lesson(db: &Db, lesson_id: &str) -> Result<Vec<GuestLink>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM guest_links WHERE lesson_id = $1 \
         ORDER BY created_at DESC, id LIMIT 500"
    );
    let rows: Vec<Row> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(lesson_id).fetch_all(p).await?);
    rows.into_iter().map(from_row).collect()
}

/// Revokes link `id` of `lesson` and audits it (`guest_link_revoked`). Revoking a revoked link
/// changes nothing and writes nothing. The caller has checked that `acting` may act on the
/// lesson.
pub async fn revoke_guest_link(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    id: &str,
) -> Result<GuestLink, GuestLinkError> {
    let link = guest_link(db, id)
        .await?
        .filter(|l| l.lesson_id == lesson.id)
        .ok_or(GuestLinkError::NotFound)?;
    if link.revoked_at.is_some() {
        return Ok(link);
    }
    let mut tx = db.begin_write().await?;
    let sql = "UPDATE guest_links SET revoked_at = $1, revoked_by = $2 \
               WHERE id = $3 AND revoked_at IS NULL";
    let changed = dispatch!(&mut tx, c => {
        sqlx::query(sql).bind(acting.at).bind(acting.person).bind(id)
            .execute(c).await.map_err(DbError::from)?.rows_affected()
    });
    if changed == 0 {
        // Revoked by someone else since it was read: one revocation, one audit entry.
        drop(tx);
        return guest_link(db, id).await?.ok_or(GuestLinkError::NotFound);
    }
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::GuestLinkRevoked,
        subject: Some(id),
        detail: serde_json::json!({ "lesson": lesson.id, "kind": link.kind }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(GuestLink {
        revoked_at: Some(acting.at),
        ..link
    })
}

/// The door's check of a link holder entering `lesson`'s room at `now`: the link must exist,
/// be of the kind the identity says, be for this lesson, not revoked, not expired.
pub async fn check_at_door(
    db: &Db,
    lesson: &Lesson,
    identity: &str,
    now: i64,
) -> Result<Result<GuestLink, DoorRefusal>, DbError> {
    Ok(match parse_identity(identity) {
        None => Err(DoorRefusal::Unknown),
        Some((kind, id)) => match guest_link(db, id).await? {
            None => Err(DoorRefusal::Unknown),
            Some(l) if l.kind != kind => Err(DoorRefusal::Unknown),
            Some(l) if l.lesson_id != lesson.id => Err(DoorRefusal::OtherLesson),
            Some(l) if l.revoked_at.is_some() => Err(DoorRefusal::Revoked),
            Some(l) if now >= l.expires_at => Err(DoorRefusal::Expired),
            Some(l) => Ok(l),
        },
    })
}

/// Audits a door decision (`guest_link_used`: whether admitted, and why not).
pub async fn audit_door(
    db: &Db,
    lesson: &Lesson,
    identity: &str,
    decision: Result<(), DoorRefusal>,
    now: i64,
) -> Result<(), DbError> {
    let entry = AuditEntry {
        at: now,
        actor: Some(identity),
        action: Action::GuestLinkUsed,
        subject: parse_identity(identity).map(|(_, id)| id),
        detail: serde_json::json!({
            "lesson": lesson.id,
            "admitted": decision.is_ok(),
            "reason": decision.err().map(DoorRefusal::as_str),
        }),
        remote_addr: None,
    };
    crate::audit::audit(db, &entry).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_name_links() {
        assert_eq!(parse_identity("guest:abc"), Some((GuestKind::Guest, "abc")));
        assert_eq!(parse_identity("whip:x1"), Some((GuestKind::Whip, "x1")));
        assert_eq!(parse_identity("guest:"), None);
        assert_eq!(parse_identity("p-001"), None);
        assert_eq!(parse_identity("teacher:abc"), None);
        assert_eq!(GuestKind::Whip.identity("q"), "whip:q");
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(check_text("Prof. Yamada"));
        assert!(check_text("東海大学"));
        assert!(!check_text("  "));
        assert!(!check_text(&"x".repeat(MAX_NAME_CHARS + 1)));
        assert!(!check_text("a\nb"));
    }
}
