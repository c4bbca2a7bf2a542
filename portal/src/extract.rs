//! The signed-in roles as axum extractors. A handler states whom it serves in its signature
//! (`SignedIn`, `Staff`, `Admin`); the extractor answers 401 without a session and 403 for the
//! wrong role, before the handler runs. `Staff` and `Admin` carry the caller's [`Scope`], which
//! every resource check uses, and [`Portal::deny`] answers 403 for a resource outside it and
//! audits the attempt, boundedly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use classroom_auth::rate_limit::{Quota, RateLimiter};
use classroom_domain::{Action, AuditEntry, PersonRole, Scope, audit, scope_of};
use serde_json::json;
use tracing::{info, warn};

use crate::client_addr::resolve;
use crate::{ApiError, Portal, Session, Shared, unix_now};

/// Forbidden attempts audited per person: a burst, then one a minute. An attacker probing ids
/// must not be able to fill the audit log; the count of refusals is still in the server's log.
const DENIALS_PER_PERSON: Quota = Quota {
    burst: 20,
    refill_every: Duration::from_secs(60),
};
/// The same person, route and resource is audited once a minute.
const DENIAL_REPEAT: Quota = Quota {
    burst: 1,
    refill_every: Duration::from_secs(60),
};
/// Memory bound of each limiter's table.
const DENIAL_KEYS: usize = 10_000;
/// Longest route or resource id kept in an audit row.
const MAX_AUDITED_CHARS: usize = 200;

/// What a 403 records, and how often.
pub struct DenialLog {
    per_person: RateLimiter<String>,
    per_resource: RateLimiter<(String, String, String)>,
}

impl Default for DenialLog {
    fn default() -> Self {
        DenialLog {
            per_person: RateLimiter::new(DENIALS_PER_PERSON, DENIAL_KEYS),
            per_resource: RateLimiter::new(DENIAL_REPEAT, DENIAL_KEYS),
        }
    }
}

impl DenialLog {
    fn should_audit(&self, person: &str, route: &str, resource: &str) -> bool {
        let now = Instant::now();
        let key = (person.to_owned(), route.to_owned(), resource.to_owned());
        self.per_resource.check(&key, now).is_ok()
            && self.per_person.check(&person.to_owned(), now).is_ok()
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_AUDITED_CHARS) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Who asked, and through which route: what a refusal records.
#[derive(Debug, Clone)]
pub struct Caller {
    pub person: String,
    /// The method and matched route pattern, e.g. `GET /api/lessons/{lesson}/lobby`.
    pub route: String,
    pub remote: String,
}

impl Caller {
    fn of(parts: &Parts, portal: &Portal, person: &str) -> Caller {
        let path = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| parts.uri.path(), |m| m.as_str());
        let route = format!("{} {path}", parts.method);
        // Same rule as `ClientAddr`; a request without a peer (never, as the server is wired)
        // is recorded as unspecified rather than refused: this is only a refusal's audit row.
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| resolve(c.0.ip(), &parts.headers, &portal.trusted_proxies).to_string())
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        Caller {
            person: person.to_owned(),
            route: clip(&route).to_owned(),
            remote,
        }
    }
}

impl Portal {
    /// `403 forbidden` for `resource` (e.g. `lesson` and its id), with an audit row
    /// (`forbidden`) unless this person's refusals are already being recorded faster than
    /// [`DENIALS_PER_PERSON`] or this very one was recorded within the minute.
    pub async fn deny(&self, caller: &Caller, kind: &str, id: &str) -> ApiError {
        let id = clip(id);
        info!(person = %caller.person, route = %caller.route, kind, id, "forbidden");
        let resource = format!("{kind}:{id}");
        if self
            .denials
            .should_audit(&caller.person, &caller.route, &resource)
        {
            let entry = AuditEntry {
                at: unix_now(),
                actor: Some(&caller.person),
                action: Action::Forbidden,
                subject: Some(id),
                detail: json!({ "route": caller.route, "kind": kind, "id": id }),
                remote_addr: Some(&caller.remote),
            };
            if let Err(e) = audit(&self.db, &entry).await {
                warn!("cannot audit a refusal: {e}");
            }
        }
        ApiError::forbidden()
    }
}

/// Any signed-in person.
pub struct SignedIn {
    pub session: Session,
    pub caller: Caller,
}

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &Shared) -> Result<Self, ApiError> {
        let session = portal.require(&parts.headers).await?;
        let caller = Caller::of(parts, portal, &session.person.id);
        Ok(SignedIn { session, caller })
    }
}

impl SignedIn {
    /// The caller's schools (none for guardians and pupils).
    pub async fn scope(&self, portal: &Portal) -> Result<Scope, ApiError> {
        Ok(scope_of(&portal.db, &self.session.person).await?)
    }
}

/// A teacher, partner lecturer or administrator, with the schools they act for.
pub struct Staff {
    pub session: Session,
    pub scope: Scope,
    pub caller: Caller,
}

impl FromRequestParts<Shared> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &Shared) -> Result<Self, ApiError> {
        let SignedIn { session, caller } = SignedIn::from_request_parts(parts, portal).await?;
        if !session.is_staff() {
            return Err(portal.deny(&caller, "route", &caller.route).await);
        }
        let scope = scope_of(&portal.db, &session.person).await?;
        Ok(Staff {
            session,
            scope,
            caller,
        })
    }
}

/// An administrator, with the schools they administer (possibly none: then they see nothing).
pub struct Admin {
    pub session: Session,
    pub scope: Scope,
    pub caller: Caller,
}

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &Shared) -> Result<Self, ApiError> {
        let SignedIn { session, caller } = SignedIn::from_request_parts(parts, portal).await?;
        if session.role() != Some(PersonRole::Administrator) {
            return Err(portal.deny(&caller, "route", &caller.route).await);
        }
        let scope = scope_of(&portal.db, &session.person).await?;
        Ok(Admin {
            session,
            scope,
            caller,
        })
    }
}

impl From<Staff> for SignedIn {
    fn from(staff: Staff) -> SignedIn {
        SignedIn {
            session: staff.session,
            caller: staff.caller,
        }
    }
}
