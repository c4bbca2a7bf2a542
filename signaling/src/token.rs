//! Join tokens: HS256 JWTs naming the room, the person, their role and what they may do.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The `iss` of every token this server mints and accepts.
pub const ISSUER: &str = "classroom";

/// A participant's role in a lesson.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Teacher,
    Student,
    Observer,
    /// A guest who teaches into the lesson (a university lecturer, an expert, a lecture hall's
    /// encoder): publishes like a teacher, is not held by the lesson's floor, but has no
    /// `teacher` permission, so cannot moderate the host's pupils.
    PartnerLecturer,
    /// A partner school's lesson link (docs/PROTOCOL.md, "Lesson links"): one participant whose
    /// connections carry the other side's people's tracks. Never from a join token.
    PartnerLink,
}

impl Role {
    /// What the role may do unless the token says otherwise.
    pub fn default_permissions(self) -> Vec<Permission> {
        use Permission::*;
        match self {
            Role::Teacher => vec![
                PublishAudio,
                PublishVideo,
                PublishScreen,
                Subscribe,
                Teacher,
            ],
            Role::Student => vec![PublishAudio, PublishVideo, Subscribe],
            Role::Observer => vec![Subscribe],
            Role::PartnerLecturer | Role::PartnerLink => {
                vec![PublishAudio, PublishVideo, PublishScreen, Subscribe]
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
            Role::Observer => "observer",
            Role::PartnerLecturer => "partner_lecturer",
            Role::PartnerLink => "partner_link",
        })
    }
}

impl FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "teacher" => Ok(Role::Teacher),
            "student" => Ok(Role::Student),
            "observer" => Ok(Role::Observer),
            "partner_lecturer" => Ok(Role::PartnerLecturer),
            other => Err(TokenError::UnknownRole(other.to_owned())),
        }
    }
}

/// One thing a token allows.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    PublishAudio,
    PublishVideo,
    PublishScreen,
    Subscribe,
    Teacher,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::PublishAudio => "publish_audio",
            Permission::PublishVideo => "publish_video",
            Permission::PublishScreen => "publish_screen",
            Permission::Subscribe => "subscribe",
            Permission::Teacher => "teacher",
        })
    }
}

/// The claims of a join token.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The participant's identity, stable across reconnects.
    pub sub: String,
    pub name: String,
    pub room: String,
    pub role: Role,
    pub perms: Vec<Permission>,
    pub iat: u64,
    pub exp: u64,
    /// A guest's school, university or organisation, shown beside their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

impl Claims {
    /// Claims valid from now for `ttl`, with the role's default permissions.
    pub fn new(room: &str, identity: &str, name: &str, role: Role, ttl: Duration) -> Claims {
        let now = unix_now();
        Claims {
            iss: ISSUER.to_owned(),
            sub: identity.to_owned(),
            name: name.to_owned(),
            room: room.to_owned(),
            role,
            perms: role.default_permissions(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            org: None,
        }
    }

    pub fn allows(&self, p: Permission) -> bool {
        self.perms.contains(&p)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a token was refused or could not be made.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token names no room or no identity")]
    Incomplete,
    #[error("unknown role `{0}` (expected teacher, student, observer or partner_lecturer)")]
    UnknownRole(String),
    #[error("the token could not be signed: {0}")]
    Signing(String),
}

/// Signs and verifies join tokens with one shared secret.
#[derive(Clone)]
pub struct TokenIssuer {
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenIssuer { .. }")
    }
}

/// Clock skew tolerated between the machine that minted a token and this one.
const LEEWAY_SECS: u64 = 30;

impl TokenIssuer {
    pub fn new(secret: &[u8]) -> TokenIssuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        TokenIssuer {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if claims.room.is_empty() || claims.sub.is_empty() {
            return Err(TokenError::Incomplete);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let issuer = TokenIssuer::new(b"secret-one");
        let claims = Claims::new(
            "math",
            "t-1",
            "Tanaka",
            Role::Teacher,
            Duration::from_secs(60),
        );
        let token = issuer.issue(&claims).expect("sign");
        assert_eq!(issuer.verify(&token).expect("verify"), claims);

        let forged = TokenIssuer::new(b"secret-two")
            .issue(&claims)
            .expect("sign");
        assert!(matches!(
            issuer.verify(&forged),
            Err(TokenError::Invalid(_))
        ));

        let mut old = claims.clone();
        old.exp = unix_now() - 3600;
        let expired = issuer.issue(&old).expect("sign");
        assert!(matches!(issuer.verify(&expired), Err(TokenError::Expired)));

        let mut other = claims.clone();
        other.iss = "elsewhere".into();
        let foreign = issuer.issue(&other).expect("sign");
        assert!(matches!(
            issuer.verify(&foreign),
            Err(TokenError::Invalid(_))
        ));

        let mut empty = claims;
        empty.room.clear();
        assert!(matches!(
            issuer.verify(&issuer.issue(&empty).expect("sign")),
            Err(TokenError::Incomplete)
        ));

        assert!(matches!(
            issuer.verify("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn default_permissions() {
        assert!(
            !Role::Student
                .default_permissions()
                .contains(&Permission::PublishScreen)
        );
        assert_eq!(
            Role::Observer.default_permissions(),
            vec![Permission::Subscribe]
        );
        assert_eq!("teacher".parse::<Role>().ok(), Some(Role::Teacher));
        assert!("admin".parse::<Role>().is_err());
    }
}
