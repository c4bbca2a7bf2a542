//! The audit log: security-relevant events, append-only (MEXT's guideline asks for logging
//! that supports detection and incident response). Nothing here updates a row; rows leave
//! only through [`purge_audit_before`], the configured retention.

use serde::Serialize;

use crate::db::{Db, DbError, Table, Tx, dispatch, on_pool};
use crate::scope::{Scope, placeholders};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SignIn,
    SignInFailed,
    ModeChanged,
    Admitted,
    Refused,
    Exported,
    RosterImported,
    JoinTokenIssued,
    JoinRefused,
    /// A sign-in link was minted, by an administrator (`actor`) or the command line (no actor).
    SignInLinkIssued,
    /// A staff or administrator request for something outside the caller's schools.
    Forbidden,
    /// An administrator changed whether (and how long) the school keeps lesson chat.
    ChatRetentionChanged,
    /// A teacher or administrator created a guest link (a partner lecturer's, or a WHIP
    /// encoder's) for a lesson.
    GuestLinkCreated,
    GuestLinkRevoked,
    /// A guest link's holder came to the room's door: admitted, or why not.
    GuestLinkUsed,
    /// Lesson links (docs/PARTNER.md "Lesson links"). Host: an invitation was created, a
    /// partner's server redeemed it, the link was admitted at the door (at most one per link
    /// every ten minutes) or refused (at most one a minute, with the code), it was revoked.
    LessonLinkCreated,
    LessonLinkRedeemed,
    LessonLinkUsed,
    LessonLinkRefused,
    LessonLinkRevoked,
    /// Partner: an invitation was accepted for a local lesson; the link was ended (by a person,
    /// or by the host's refusal).
    LessonLinkAccepted,
    LessonLinkEnded,
}

impl Action {
    const ALL: [Action; 22] = [
        Action::SignIn,
        Action::SignInFailed,
        Action::ModeChanged,
        Action::Admitted,
        Action::Refused,
        Action::Exported,
        Action::RosterImported,
        Action::JoinTokenIssued,
        Action::JoinRefused,
        Action::SignInLinkIssued,
        Action::Forbidden,
        Action::ChatRetentionChanged,
        Action::GuestLinkCreated,
        Action::GuestLinkRevoked,
        Action::GuestLinkUsed,
        Action::LessonLinkCreated,
        Action::LessonLinkRedeemed,
        Action::LessonLinkUsed,
        Action::LessonLinkRefused,
        Action::LessonLinkRevoked,
        Action::LessonLinkAccepted,
        Action::LessonLinkEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::SignIn => "sign_in",
            Action::SignInFailed => "sign_in_failed",
            Action::ModeChanged => "mode_changed",
            Action::Admitted => "admitted",
            Action::Refused => "refused",
            Action::Exported => "exported",
            Action::RosterImported => "roster_imported",
            Action::JoinTokenIssued => "join_token_issued",
            Action::JoinRefused => "join_refused",
            Action::SignInLinkIssued => "signin_link_issued",
            Action::Forbidden => "forbidden",
            Action::ChatRetentionChanged => "chat_retention_changed",
            Action::GuestLinkCreated => "guest_link_created",
            Action::GuestLinkRevoked => "guest_link_revoked",
            Action::GuestLinkUsed => "guest_link_used",
            Action::LessonLinkCreated => "lesson_link_created",
            Action::LessonLinkRedeemed => "lesson_link_redeemed",
            Action::LessonLinkUsed => "lesson_link_used",
            Action::LessonLinkRefused => "lesson_link_refused",
            Action::LessonLinkRevoked => "lesson_link_revoked",
            Action::LessonLinkAccepted => "lesson_link_accepted",
            Action::LessonLinkEnded => "lesson_link_ended",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Who acts, when and from where: passed to the operations that write an audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acting<'a> {
    /// The person's id.
    pub person: &'a str,
    /// Unix seconds.
    pub at: i64,
    /// The client's address as the HTTP layer saw it, if known.
    pub remote_addr: Option<&'a str>,
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry<'a> {
    /// Unix seconds.
    pub at: i64,
    /// The person acting, if known (a failed sign-in may name nobody).
    pub actor: Option<&'a str>,
    pub action: Action,
    /// What it was done to: a pupil, a lesson, a room...
    pub subject: Option<&'a str>,
    /// Anything else worth keeping, as a JSON object.
    pub detail: serde_json::Value,
    pub remote_addr: Option<&'a str>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Order of writing; increases by one per entry.
    pub seq: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub action: Action,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
    pub remote_addr: Option<String>,
}

/// Which entries [`audit_log`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditFilter<'a> {
    /// Only entries at or after this instant.
    pub since: Option<i64>,
    pub action: Option<Action>,
    pub actor: Option<&'a str>,
    /// At most this many (the newest).
    pub limit: u32,
}

impl Default for AuditFilter<'_> {
    fn default() -> Self {
        AuditFilter {
            since: None,
            action: None,
            actor: None,
            limit: 100,
        }
    }
}

/// Appends an entry in its own transaction; returns its `seq`.
pub async fn audit(db: &Db, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    let mut tx = db.begin_write().await?;
    let seq = append(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Appends an entry inside a caller's write transaction, so that the action and its record
/// commit together or not at all.
pub(crate) async fn append(tx: &mut Tx, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    tx.lock_for_append(Table::AuditLog).await?;
    let detail = entry.detail.to_string();
    let sql = "INSERT INTO audit_log (seq, at, actor_id, action, subject, detail, remote_addr) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6 FROM audit_log \
               RETURNING seq";
    let seq: i64 = dispatch!(tx, c => sqlx::query_scalar(sql)
        .bind(entry.at).bind(entry.actor).bind(entry.action.as_str()).bind(entry.subject)
        .bind(&detail).bind(entry.remote_addr).fetch_one(c).await?);
    Ok(seq)
}

/// Deletes entries written before `before` (Unix seconds); returns how many. The newest entry
/// always stays, even when it is older: `seq` continues from it, so numbering never restarts
/// and a gap in it still shows that rows were removed.
pub async fn purge_audit_before(db: &Db, before: i64) -> Result<u64, DbError> {
    let sql = "DELETE FROM audit_log WHERE at < $1 \
               AND seq < (SELECT MAX(seq) FROM audit_log)";
    let removed =
        on_pool!(db, p => sqlx::query(sql).bind(before).execute(p).await?.rows_affected());
    Ok(removed)
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at: i64,
    actor_id: Option<String>,
    action: String,
    subject: Option<String>,
    detail: String,
    remote_addr: Option<String>,
}

/// Entries matching `filter`, newest first.
pub async fn audit_log(db: &Db, filter: &AuditFilter<'_>) -> Result<Vec<AuditRecord>, DbError> {
    read_log(db, filter, None).await
}

/// Entries matching `filter` that concern the scope's schools, newest first: their actor or
/// subject is a person whose primary org is one of those schools. What names nobody of them
/// (another school's events, a failed sign-in that matched no one) stays with the operator,
/// who reads the whole log in the database.
pub async fn audit_log_within(
    db: &Db,
    filter: &AuditFilter<'_>,
    scope: &Scope,
) -> Result<Vec<AuditRecord>, DbError> {
    let schools: Vec<&str> = scope.schools().collect();
    if schools.is_empty() {
        return Ok(Vec::new());
    }
    read_log(db, filter, Some(&schools)).await
}

async fn read_log(
    db: &Db,
    filter: &AuditFilter<'_>,
    schools: Option<&[&str]>,
) -> Result<Vec<AuditRecord>, DbError> {
    // Unset filters bind NULL and match everything, so one statement serves every combination.
    let within = match schools {
        Some(list) => format!(
            "AND EXISTS (SELECT 1 FROM people p WHERE (p.id = a.actor_id OR p.id = a.subject) \
             AND p.primary_org_id IN ({}))",
            placeholders(5, list.len())
        ),
        None => String::new(),
    };
    let sql = format!(
        "SELECT a.seq, a.at, a.actor_id, a.action, a.subject, a.detail, a.remote_addr \
         FROM audit_log a \
         WHERE ($1 IS NULL OR a.at >= $1) AND ($2 IS NULL OR a.action = $2) \
         AND ($3 IS NULL OR a.actor_id = $3) {within} \
         ORDER BY a.seq DESC LIMIT $4"
    );
    let action = filter.action.map(Action::as_str);
    let limit = i64::from(filter.limit);
    let rows: Vec<Row> = on_pool!(db, p => {
        let mut q = sqlx::query_as(&sql)
            .bind(filter.since).bind(action).bind(filter.actor).bind(limit);
        for school in schools.unwrap_or_default() {
            q = q.bind(*school);
        }
        q.fetch_all(p).await?
    });
    rows.into_iter()
        .map(|r| {
            let action = Action::parse(&r.action).ok_or_else(|| DbError::BadStoredValue {
                table: "audit_log",
                column: "action",
                value: r.action.clone(),
            })?;
            // The column is always written from a serde_json::Value; keep the raw text if not.
            let detail = serde_json::from_str(&r.detail)
                .unwrap_or_else(|_| serde_json::Value::String(r.detail.clone()));
            Ok(AuditRecord {
                seq: r.seq,
                at: r.at,
                actor: r.actor_id,
                action,
                subject: r.subject,
                detail,
                remote_addr: r.remote_addr,
            })
        })
        .collect()
}
