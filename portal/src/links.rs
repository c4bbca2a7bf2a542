//! Minting one-time sign-in links: the token is made here (the domain never sees it), the
//! policy and the audit row are the domain's ([`classroom_domain::mint_signin_link`]), so the
//! administrator's API and `classroom signin-link` share one rule.

use std::time::Duration;

use classroom_domain::{Db, Issuer, LinkRequest, MintError};

/// A minted link: give `url` to the person; it works once, until `expires_at` (Unix seconds).
#[derive(Debug, Clone)]
pub struct MintedLink {
    pub url: String,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot make a random token: {0}")]
    Token(String),
    #[error(transparent)]
    Mint(#[from] MintError),
}

/// Mints a sign-in link for `person` on behalf of `issuer`, valid for `ttl` from `now`.
pub async fn mint_signin_link(
    db: &Db,
    public_url: &str,
    issuer: &Issuer<'_>,
    person: &str,
    ttl: Duration,
    now: i64,
    remote_addr: Option<&str>,
) -> Result<MintedLink, LinkError> {
    let link = classroom_auth::token::new_sign_in_link(public_url)
        .map_err(|e| LinkError::Token(e.to_string()))?;
    let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let request = LinkRequest {
        person,
        token_hash: &link.hash,
        at: now,
        expires_at,
        remote_addr,
    };
    classroom_domain::mint_signin_link(db, issuer, &request).await?;
    Ok(MintedLink {
        url: link.url,
        expires_at,
    })
}
