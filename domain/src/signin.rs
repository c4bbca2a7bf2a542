//! Storage for one-time sign-in links and web sessions, and looking people up to send links to.
//!
//! Tokens never reach this crate: the caller generates a token, sends or sets it, and passes
//! only its hash (e.g. SHA-256 hex). A leaked database therefore holds nothing that signs anyone
//! in, and this crate needs no cryptography of its own.

use crate::audit::{Action, AuditEntry, append};
use crate::db::{Db, DbError, dispatch, on_pool};
use crate::model::{Entity, Person, PersonRole};
use crate::scope::Scope;

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

/// Who asks for a sign-in link.
#[derive(Debug, Clone, Copy)]
pub enum Issuer<'a> {
    /// An administrator through the portal: only for non-administrators of their own
    /// school(s), never for themselves under another account.
    Admin(&'a Scope),
    /// The operator on the server's machine (`classroom signin-link`): may mint for anyone,
    /// and is recorded as the command line.
    Cli,
}

impl Issuer<'_> {
    fn name(&self) -> &'static str {
        match self {
            Issuer::Admin(_) => "administrator",
            Issuer::Cli => "cli",
        }
    }
}

/// A sign-in link to mint; the caller made the token and passes only its hash.
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    pub person: &'a str,
    pub token_hash: &'a str,
    /// Unix seconds.
    pub at: i64,
    /// Unix seconds, exclusive.
    pub expires_at: i64,
    pub remote_addr: Option<&'a str>,
}

/// Why an administrator may not have a link for this person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MintRefusal {
    #[error("only administrators mint sign-in links")]
    NotAnAdministrator,
    #[error("a link for oneself, or for another account with one's own e-mail, is not given out")]
    Themselves,
    #[error("links for administrators come from the operator (classroom signin-link)")]
    Administrator,
    #[error("the person is not of your school")]
    OtherSchool,
}

impl MintRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            MintRefusal::NotAnAdministrator => "not_an_administrator",
            MintRefusal::Themselves => "themselves",
            MintRefusal::Administrator => "administrator",
            MintRefusal::OtherSchool => "other_school",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no person {0:?} in the roster")]
    UnknownPerson(String),
    #[error("the account is disabled")]
    Disabled,
    #[error(transparent)]
    Refused(#[from] MintRefusal),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for MintError {
    fn from(e: sqlx::Error) -> Self {
        MintError::Db(e.into())
    }
}

/// Whether `issuer` may have a sign-in link for `target`. The command line may for anyone.
pub async fn may_mint_for(
    db: &Db,
    issuer: &Issuer<'_>,
    target: &Person,
) -> Result<Result<(), MintRefusal>, DbError> {
    let Issuer::Admin(scope) = issuer else {
        return Ok(Ok(()));
    };
    if !scope.is_admin() {
        return Ok(Err(MintRefusal::NotAnAdministrator));
    }
    let Some(me) = crate::access::person(db, &scope.person).await? else {
        return Ok(Err(MintRefusal::NotAnAdministrator));
    };
    let same_email = match (&me.email, &target.email) {
        (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
        _ => false,
    };
    // A link handed to oneself would make one person's actions appear as another's.
    if target.id == me.id || same_email {
        return Ok(Err(MintRefusal::Themselves));
    }
    if target.role() == Some(PersonRole::Administrator) {
        return Ok(Err(MintRefusal::Administrator));
    }
    if !scope.covers_person(target) {
        return Ok(Err(MintRefusal::OtherSchool));
    }
    Ok(Ok(()))
}

/// Stores a sign-in link if [`may_mint_for`] allows it, and audits it with who minted it
/// (`signin_link_issued`), in one transaction. Unknown person: `UnknownPerson`; a disabled
/// account is only reported to an issuer who may see the person at all.
pub async fn mint_signin_link(
    db: &Db,
    issuer: &Issuer<'_>,
    req: &LinkRequest<'_>,
) -> Result<(), MintError> {
    let Some(target) = crate::access::person(db, req.person).await? else {
        return Err(MintError::UnknownPerson(req.person.to_owned()));
    };
    may_mint_for(db, issuer, &target).await??;
    if !target.enabled {
        return Err(MintError::Disabled);
    }
    let actor = match issuer {
        Issuer::Admin(scope) => Some(scope.person.as_str()),
        Issuer::Cli => None,
    };
    let mut tx = db.begin_write().await?;
    let sql = "INSERT INTO signin_links (token_hash, person_id, expires_at) VALUES ($1, $2, $3)";
    dispatch!(&mut tx, c => sqlx::query(sql).bind(req.token_hash).bind(req.person)
        .bind(req.expires_at).execute(c).await?.rows_affected());
    let entry = AuditEntry {
        at: req.at,
        actor,
        action: Action::SignInLinkIssued,
        subject: Some(req.person),
        detail: serde_json::json!({ "issuer": issuer.name(), "expires_at": req.expires_at }),
        remote_addr: req.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
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
