//! Storage for one-time sign-in links and web sessions, and looking people up to send links to.
//!
//! Tokens never reach this crate: the caller generates a token, sends or sets it, and passes
//! only its hash (e.g. SHA-256 hex). A leaked database therefore holds nothing that signs anyone
//! in, and this crate needs no cryptography of its own.

use crate::db::{Db, DbError, on_pool};
use crate::model::{Entity, Person};

#[derive(Debug, thiserror::Error)]
pub enum SignInLinkError {
    #[error("unknown sign-in link")]
    Unknown,
    #[error("sign-in link already used")]
    AlreadyUsed,
    #[error("sign-in link expired")]
    Expired,
    #[error("account disabled")]
    Disabled,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SignInLinkError {
    fn from(e: sqlx::Error) -> Self {
        SignInLinkError::Db(e.into())
    }
}

/// People whose email matches, ignoring ASCII case; usually one, but a teacher who is also a
/// guardian at the school may have two rows with the same address, and choosing between them
/// is the caller's business.
pub async fn people_by_email(db: &Db, email: &str) -> Result<Vec<Person>, DbError> {
    let sql = format!(
        "SELECT {} FROM people WHERE LOWER(email) = LOWER($1) ORDER BY id",
        Person::COLUMNS.join(", ")
    );
    let email = email.trim();
    Ok(on_pool!(db, p => sqlx::query_as::<_, Person>(&sql).bind(email).fetch_all(p).await?))
}

/// Stores a sign-in link for `person`, valid until `expires_at` (exclusive).
pub async fn create_signin_link(
    db: &Db,
    token_hash: &str,
    person: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    let sql = "INSERT INTO signin_links (token_hash, person_id, expires_at) VALUES ($1, $2, $3)";
    on_pool!(db, p => sqlx::query(sql).bind(token_hash).bind(person).bind(expires_at)
        .execute(p).await?.rows_affected());
    Ok(())
}

/// Uses the link at `now` and returns whose it is. Single use even under concurrency: one
/// conditional UPDATE claims it, and only the caller whose statement changed the row succeeds.
pub async fn consume_signin_link(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> Result<String, SignInLinkError> {
    let sql = "UPDATE signin_links SET used_at = $2 \
               WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
               RETURNING person_id";
    let claimed: Option<String> = on_pool!(db, p => sqlx::query_scalar(sql)
        .bind(token_hash).bind(now).fetch_optional(p).await?);
    let Some(person) = claimed else {
        // Only to say why; the link stays unusable whatever this finds.
        let sql = "SELECT used_at FROM signin_links WHERE token_hash = $1";
        let row: Option<Option<i64>> = on_pool!(db, p => sqlx::query_scalar(sql)
            .bind(token_hash).fetch_optional(p).await?);
        return Err(match row {
            None => SignInLinkError::Unknown,
            Some(Some(_)) => SignInLinkError::AlreadyUsed,
            Some(None) => SignInLinkError::Expired,
        });
    };
    match crate::access::person(db, &person).await? {
        Some(p) if p.enabled => Ok(person),
        _ => Err(SignInLinkError::Disabled),
    }
}

/// Stores a web session for `person`, valid until `expires_at` (exclusive).
pub async fn create_session(
    db: &Db,
    token_hash: &str,
    person: &str,
    created_at: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    let sql = "INSERT INTO web_sessions (token_hash, person_id, created_at, expires_at) \
               VALUES ($1, $2, $3, $4)";
    on_pool!(db, p => sqlx::query(sql).bind(token_hash).bind(person).bind(created_at)
        .bind(expires_at).execute(p).await?.rows_affected());
    Ok(())
}

/// The person a session belongs to, if it exists, has not expired at `now`, and the person's
/// account is enabled (disabling an account in the roster ends its sessions).
pub async fn session_person(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, DbError> {
    let sql = "SELECT s.person_id FROM web_sessions s JOIN people p ON p.id = s.person_id \
               WHERE s.token_hash = $1 AND s.expires_at > $2 AND p.enabled";
    Ok(
        on_pool!(db, p => sqlx::query_scalar(sql).bind(token_hash).bind(now)
        .fetch_optional(p).await?),
    )
}

/// Ends a session (sign-out). Returns whether it existed.
pub async fn delete_session(db: &Db, token_hash: &str) -> Result<bool, DbError> {
    let sql = "DELETE FROM web_sessions WHERE token_hash = $1";
    let n = on_pool!(db, p => sqlx::query(sql).bind(token_hash).execute(p).await?.rows_affected());
    Ok(n > 0)
}

/// What one [`purge_expired`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Web sessions past their expiry.
    pub sessions: u64,
    /// Sign-in links that were used, or expired unused.
    pub signin_links: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.sessions + self.signin_links
    }
}

/// Removes web sessions that expired at or before `now`, and sign-in links that can never sign
/// anyone in again: used ones and expired ones. Nothing removed here could still authenticate,
/// so a purge never signs anyone out early; who signed in when stays in the audit log. A used
/// link that is gone is refused as unknown rather than as already used: same outcome.
pub async fn purge_expired(db: &Db, now: i64) -> Result<Purged, DbError> {
    let sessions = "DELETE FROM web_sessions WHERE expires_at <= $1";
    let links = "DELETE FROM signin_links WHERE expires_at <= $1 OR used_at IS NOT NULL";
    let sessions =
        on_pool!(db, p => sqlx::query(sessions).bind(now).execute(p).await?.rows_affected());
    let signin_links =
        on_pool!(db, p => sqlx::query(links).bind(now).execute(p).await?.rows_affected());
    Ok(Purged {
        sessions,
        signin_links,
    })
}
