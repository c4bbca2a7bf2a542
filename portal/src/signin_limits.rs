//! Sign-in rate limits, checked before anything a refused attempt could make the server store.
//!
//! Two limits: per client address (generous, a school is one NAT and a class signs in within a
//! minute) and per link or account (strict). Attempts the limits refuse are not written to the
//! audit log one by one, or a flood of requests would be a flood of rows: an address gets one
//! `sign_in_failed` row with reason `rate_limited` per [`TRIP_WINDOW`], however long it keeps
//! being refused.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use classroom_auth::rate_limit::{Quota, RateLimited, RateLimiter};
use classroom_domain::{Action, AuditEntry, audit};
use serde_json::json;
use tracing::{info, warn};

use crate::client_addr::rate_key;
use crate::{ApiError, Portal, unix_now};

/// Sign-in attempts one address may make per [`WINDOW`].
pub const PER_ADDRESS: u32 = 300;
/// Sign-in attempts per link or account per [`WINDOW`].
pub const PER_KEY: u32 = 10;
/// The period both limits refill over.
pub const WINDOW: Duration = Duration::from_secs(600);
/// An address that keeps being refused is audited once per this long.
pub const TRIP_WINDOW: Duration = WINDOW;
/// Keys each limiter holds at most (a few MB), whatever a flood of addresses does.
const MAX_KEYS: usize = 100_000;

/// The limiters of sign-in, shared by the link and OIDC routes.
#[derive(Debug)]
pub struct SigninLimits {
    per_address: RateLimiter<IpAddr>,
    per_key: RateLimiter<String>,
    /// Which addresses' refusals were audited lately: one token per [`TRIP_WINDOW`].
    audited_trips: RateLimiter<IpAddr>,
}

impl Default for SigninLimits {
    fn default() -> Self {
        SigninLimits {
            per_address: RateLimiter::new(Quota::per(PER_ADDRESS, WINDOW), MAX_KEYS),
            per_key: RateLimiter::new(Quota::per(PER_KEY, WINDOW), MAX_KEYS),
            audited_trips: RateLimiter::new(Quota::per(1, TRIP_WINDOW), MAX_KEYS),
        }
    }
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Address,
    Key,
}

/// Counts one sign-in attempt of `method` from `ip`; 429 when the address is over its limit.
pub async fn check_address(portal: &Portal, ip: IpAddr, method: &str) -> Result<(), ApiError> {
    let limits = &portal.signin_limits;
    let result = limits.per_address.check(&rate_key(ip), Instant::now());
    outcome(portal, ip, method, Limit::Address, result).await
}

/// Counts one attempt at `key` (a link's hash, an account); 429 when it is over its limit.
pub async fn check_key(
    portal: &Portal,
    ip: IpAddr,
    key: &str,
    method: &str,
) -> Result<(), ApiError> {
    let limits = &portal.signin_limits;
    let result = limits.per_key.check(&key.to_owned(), Instant::now());
    outcome(portal, ip, method, Limit::Key, result).await
}

async fn outcome(
    portal: &Portal,
    ip: IpAddr,
    method: &str,
    limit: Limit,
    result: Result<(), RateLimited>,
) -> Result<(), ApiError> {
    let Err(refused) = result else {
        return Ok(());
    };
    let first_in_window = portal
        .signin_limits
        .audited_trips
        .check(&rate_key(ip), Instant::now())
        .is_ok();
    if first_in_window {
        info!(%ip, method, ?limit, "sign-in rate limit reached");
        let remote = ip.to_string();
        let limit = match limit {
            Limit::Address => "address",
            Limit::Key => "key",
        };
        let entry = AuditEntry {
            at: unix_now(),
            actor: None,
            action: Action::SignInFailed,
            subject: None,
            detail: json!({ "method": method, "reason": "rate_limited", "limit": limit }),
            remote_addr: Some(&remote),
        };
        if let Err(e) = audit(&portal.db, &entry).await {
            warn!("cannot audit a sign-in rate limit: {e}");
        }
    }
    Err(ApiError::rate_limited(refused.retry_after))
}
