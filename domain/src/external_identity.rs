//! Who an identity provider's account is: the binding of an OpenID Connect account (`iss` +
//! `sub`) to a roster person, made at the account's first sign-in from an e-mail address the
//! provider vouches for, and the only thing consulted after that.
//!
//! The e-mail address is a poor key on its own: at some providers users type it themselves, and
//! at all of them it can change or pass to someone else. So it is used once, to find whose
//! account this is, and never again for that account; and a person who already has an account
//! at the issuer cannot gain a second one through their address.

use crate::access;
use crate::db::{Db, DbError, on_pool};
use crate::model::Person;
use crate::signin::people_by_email;

/// An account as the identity provider's verified ID token names it.
#[derive(Debug, Clone, Copy)]
pub struct ExternalAccount<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The account's address, only when the provider vouches for it (`email_verified`, or an
    /// allow-listed tenant's directory). `None` for an unverified or missing address.
    pub trusted_email: Option<&'a str>,
}

/// Whom an account signed in as.
#[derive(Debug, Clone, PartialEq)]
pub enum ExternalSignIn {
    /// Bound at an earlier sign-in.
    Known(Person),
    /// First sign-in: found by e-mail and bound now.
    NewlyBound(Person),
}

impl ExternalSignIn {
    pub fn person(&self) -> &Person {
        match self {
            ExternalSignIn::Known(p) | ExternalSignIn::NewlyBound(p) => p,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalSignInError {
    /// Not bound yet, and no trusted address to find the person by.
    #[error("the identity provider does not vouch for this account's e-mail address")]
    UntrustedEmail,
    #[error("no enabled person in the roster has this e-mail address")]
    NoAccount,
    #[error("several enabled people in the roster have this e-mail address")]
    Ambiguous,
    /// The person the address names already signs in with another account at this issuer.
    #[error("the person with this e-mail address is bound to another account")]
    BoundToAnother,
    #[error("account disabled")]
    Disabled,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ExternalSignInError {
    fn from(e: sqlx::Error) -> Self {
        ExternalSignInError::Db(e.into())
    }
}

/// The person `account` signs in as at `now`: by its binding if it has one (updating when it was
/// last seen), else by its trusted e-mail address, binding it to the one enabled person with
/// that address who has no account at this issuer yet.
pub async fn sign_in_external(
    db: &Db,
    account: &ExternalAccount<'_>,
    now: i64,
) -> Result<ExternalSignIn, ExternalSignInError> {
    if let Some(person_id) = bound_person(db, account.issuer, account.subject).await? {
        let person = enabled_person(db, &person_id).await?;
        let sql = "UPDATE external_identities SET last_seen = $3 \
                   WHERE issuer = $1 AND subject = $2";
        on_pool!(db, p => sqlx::query(sql).bind(account.issuer).bind(account.subject).bind(now)
            .execute(p).await?.rows_affected());
        return Ok(ExternalSignIn::Known(person));
    }
    let email = account
        .trusted_email
        .filter(|e| !e.trim().is_empty())
        .ok_or(ExternalSignInError::UntrustedEmail)?;
    let matches: Vec<Person> = people_by_email(db, email)
        .await?
        .into_iter()
        .filter(|p| p.enabled)
        .collect();
    let person = match matches.as_slice() {
        [] => return Err(ExternalSignInError::NoAccount),
        [one] => one.clone(),
        _ => return Err(ExternalSignInError::Ambiguous),
    };
    // A conflict on either key means the binding exists already; which one is read back below,
    // so two first sign-ins at once still end with one binding and an honest answer to each.
    let sql = "INSERT INTO external_identities \
               (issuer, subject, person_id, first_seen, last_seen) VALUES ($1, $2, $3, $4, $4) \
               ON CONFLICT DO NOTHING";
    let inserted = on_pool!(db, p => sqlx::query(sql).bind(account.issuer).bind(account.subject)
        .bind(&person.id).bind(now).execute(p).await?.rows_affected());
    if inserted == 1 {
        return Ok(ExternalSignIn::NewlyBound(person));
    }
    match bound_person(db, account.issuer, account.subject).await? {
        Some(id) if id == person.id => Ok(ExternalSignIn::Known(person)),
        _ => Err(ExternalSignInError::BoundToAnother),
    }
}

/// The person an account is bound to, if any.
pub async fn bound_person(db: &Db, issuer: &str, subject: &str) -> Result<Option<String>, DbError> {
    let sql = "SELECT person_id FROM external_identities WHERE issuer = $1 AND subject = $2";
    Ok(
        on_pool!(db, p => sqlx::query_scalar(sql).bind(issuer).bind(subject)
        .fetch_optional(p).await?),
    )
}

/// Removes `person`'s bindings (e.g. when a school moves to another identity provider account),
/// so their next sign-in is matched by e-mail again. Returns how many there were.
pub async fn unbind_person(db: &Db, person: &str) -> Result<u64, DbError> {
    let sql = "DELETE FROM external_identities WHERE person_id = $1";
    Ok(on_pool!(db, p => sqlx::query(sql).bind(person).execute(p).await?.rows_affected()))
}

async fn enabled_person(db: &Db, id: &str) -> Result<Person, ExternalSignInError> {
    match access::person(db, id).await? {
        Some(p) if p.enabled => Ok(p),
        _ => Err(ExternalSignInError::Disabled),
    }
}
