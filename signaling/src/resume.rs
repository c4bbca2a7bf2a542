//! Resume credentials: how a participant whose socket dropped gets back into its room without a
//! fresh join token.
//!
//! At `joined` the server hands out a resume credential: an HS256 JWT signed with the same secret
//! as join tokens (so it survives a restart with the same data directory) but with its own issuer,
//! so a join token is never taken as a resume credential nor the other way round. It carries the
//! join token's identity, room, name, role and permissions, a random id (`jti`), and an expiry that
//! is fixed at the first join ([`LESSON_BOUND`]) and carried unchanged through every refresh, so
//! chained resumes cannot keep a person in a room for ever.
//!
//! Each credential is single use: [`Ledger`] remembers the ids already spent until they expire.
//! The ledger lives in memory, so after a server restart a credential spent before it could be
//! presented once more; it still names only its own identity and room.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::token::{Claims, ISSUER, Permission, Role, TokenIssuer};

/// The `iss` of resume credentials: distinct from join tokens' [`ISSUER`].
pub const RESUME_ISSUER: &str = "classroom-resume";

/// How long after the first join a person may keep resuming: a school day of lessons. A lesson
/// room is re-entered with a fresh join token the next day.
pub const LESSON_BOUND: Duration = Duration::from_secs(12 * 3600);

/// Spent ids remembered at most; beyond this the ones closest to expiry are forgotten first. One
/// entry per successful resume within [`LESSON_BOUND`]: far above what a school produces.
const LEDGER_CAPACITY: usize = 200_000;

/// What a resume credential says.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ResumeClaims {
    pub iss: String,
    /// A random id; each credential is accepted once.
    pub jti: String,
    pub sub: String,
    pub name: String,
    pub room: String,
    pub role: Role,
    pub perms: Vec<Permission>,
    pub iat: u64,
    /// Fixed at the first join, carried through refreshes.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

impl ResumeClaims {
    /// The join-token view of these claims, for code that admits participants.
    pub fn as_join_claims(&self) -> Claims {
        Claims {
            iss: ISSUER.to_owned(),
            sub: self.sub.clone(),
            name: self.name.clone(),
            room: self.room.clone(),
            role: self.role,
            perms: self.perms.clone(),
            iat: self.iat,
            exp: self.exp,
            org: self.org.clone(),
        }
    }
}

/// Why a resume credential is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("the resume credential is not valid: {0}")]
    Invalid(String),
    #[error("the resume credential has expired")]
    Expired,
    #[error("the resume credential was already used")]
    Used,
    #[error("the resume credential could not be signed: {0}")]
    Signing(String),
}

/// A fresh credential as handed to the client.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: String,
    pub expires_at_ms: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenIssuer {
    /// A credential for the person of `claims`, valid until `until` (seconds since the epoch).
    pub fn issue_resume(&self, claims: &Claims, until: u64) -> Result<Grant, ResumeError> {
        let resume = ResumeClaims {
            iss: RESUME_ISSUER.to_owned(),
            jti: random_id(),
            sub: claims.sub.clone(),
            name: claims.name.clone(),
            room: claims.room.clone(),
            role: claims.role,
            perms: claims.perms.clone(),
            iat: unix_now(),
            exp: until,
            org: claims.org.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &resume, &self.encoding)
            .map_err(|e| ResumeError::Signing(e.to_string()))?;
        Ok(Grant {
            token,
            expires_at_ms: until.saturating_mul(1000),
        })
    }

    /// Checks signature, issuer and expiry; does not spend it (see [`Ledger::spend`]).
    pub fn verify_resume(&self, token: &str) -> Result<ResumeClaims, ResumeError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[RESUME_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "jti"]);
        // The credential's own clock is the server's: no skew to forgive.
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<ResumeClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ResumeError::Expired,
                _ => ResumeError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if claims.room.is_empty() || claims.sub.is_empty() || claims.jti.is_empty() {
            return Err(ResumeError::Invalid("names no room or no identity".into()));
        }
        Ok(claims)
    }
}

/// Ids of spent credentials until they expire.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    spent: Mutex<HashMap<String, u64>>,
}

impl Ledger {
    /// Marks `claims` spent; `Used` if it already was.
    pub fn spend(&self, claims: &ResumeClaims) -> Result<(), ResumeError> {
        self.spend_at(claims, unix_now())
    }

    fn spend_at(&self, claims: &ResumeClaims, now: u64) -> Result<(), ResumeError> {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        if spent.contains_key(&claims.jti) {
            return Err(ResumeError::Used);
        }
        if spent.len() >= LEDGER_CAPACITY {
            spent.retain(|_, exp| *exp >= now);
        }
        if spent.len() >= LEDGER_CAPACITY {
            // Still full of live ids: forget the tenth closest to expiry.
            let mut exps: Vec<u64> = spent.values().copied().collect();
            exps.sort_unstable();
            let cut = exps[LEDGER_CAPACITY / 10];
            spent.retain(|_, exp| *exp > cut);
        }
        spent.insert(claims.jti.clone(), claims.exp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims::new(
            "math",
            "s-1",
            "Sato",
            Role::Student,
            Duration::from_secs(300),
        )
    }

    #[test]
    fn round_trip_keeps_who_and_where() {
        let issuer = TokenIssuer::new(b"secret-one");
        let until = unix_now() + 3600;
        let grant = issuer.issue_resume(&claims(), until).expect("sign");
        assert_eq!(grant.expires_at_ms, until * 1000);
        let back = issuer.verify_resume(&grant.token).expect("verify");
        assert_eq!(
            (back.sub.as_str(), back.room.as_str(), back.role, back.exp),
            ("s-1", "math", Role::Student, until)
        );
        assert_eq!(back.as_join_claims().perms, claims().perms);
    }

    #[test]
    fn join_tokens_and_resume_credentials_are_not_interchangeable() {
        let issuer = TokenIssuer::new(b"secret-one");
        let join = issuer.issue(&claims()).expect("sign");
        assert!(matches!(
            issuer.verify_resume(&join),
            Err(ResumeError::Invalid(_))
        ));
        let resume = issuer
            .issue_resume(&claims(), unix_now() + 3600)
            .expect("sign");
        assert!(issuer.verify(&resume.token).is_err());
    }

    #[test]
    fn forged_garbled_and_expired_are_refused() {
        let issuer = TokenIssuer::new(b"secret-one");
        let forged = TokenIssuer::new(b"secret-two")
            .issue_resume(&claims(), unix_now() + 3600)
            .expect("sign");
        assert!(matches!(
            issuer.verify_resume(&forged.token),
            Err(ResumeError::Invalid(_))
        ));
        assert!(matches!(
            issuer.verify_resume("not.a.token"),
            Err(ResumeError::Invalid(_))
        ));
        let old = issuer
            .issue_resume(&claims(), unix_now() - 10)
            .expect("sign");
        assert_eq!(issuer.verify_resume(&old.token), Err(ResumeError::Expired));
    }

    #[test]
    fn a_credential_is_spent_once() {
        let issuer = TokenIssuer::new(b"secret-one");
        let ledger = Ledger::default();
        let a = issuer
            .verify_resume(
                &issuer
                    .issue_resume(&claims(), unix_now() + 60)
                    .expect("sign")
                    .token,
            )
            .expect("verify");
        let b = issuer
            .verify_resume(
                &issuer
                    .issue_resume(&claims(), unix_now() + 60)
                    .expect("sign")
                    .token,
            )
            .expect("verify");
        assert_ne!(a.jti, b.jti);
        assert_eq!(ledger.spend(&a), Ok(()));
        assert_eq!(ledger.spend(&a), Err(ResumeError::Used));
        assert_eq!(ledger.spend(&b), Ok(()));
    }

    #[test]
    fn a_full_ledger_forgets_expired_ids_first() {
        let ledger = Ledger::default();
        let mut c = ResumeClaims {
            iss: RESUME_ISSUER.into(),
            jti: String::new(),
            sub: "s".into(),
            name: "S".into(),
            room: "r".into(),
            role: Role::Student,
            perms: vec![],
            iat: 0,
            exp: 5,
            org: None,
        };
        for i in 0..LEDGER_CAPACITY {
            c.jti = format!("old-{i}");
            ledger.spend_at(&c, 0).expect("fresh");
        }
        c.exp = 1000;
        c.jti = "live".into();
        ledger.spend_at(&c, 10).expect("fresh");
        assert_eq!(ledger.spent.lock().unwrap().len(), 1);
        assert_eq!(ledger.spend_at(&c, 10), Err(ResumeError::Used));
    }
}
