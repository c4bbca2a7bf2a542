//! Invitation codes of lesson links (docs/PARTNER.md "Lesson links"): an HS256 token signed with
//! the host's token secret, naming the link, the host's base URL and the expiry. It has its own
//! issuer and audience, so it never passes as a join token and a join token never passes as it
//! (both are signed with the same secret).
//!
//! The partner's server cannot check the signature (it does not know the host's secret): it only
//! reads the host's URL out of the code ([`peek_host`]) to know whom to ask, and the host checks
//! everything when the code comes back to it ([`LinkCodes::verify`]).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// `iss` of invitation codes; join tokens have `classroom`.
pub const CODE_ISSUER: &str = "classroom-lesson-link";
/// `aud` of invitation codes: the partner's server, which redeems them.
pub const CODE_AUDIENCE: &str = "classroom-partner-server";
/// Longest code looked at; a real one is a few hundred bytes.
pub const MAX_CODE_LEN: usize = 2048;
/// Clock skew tolerated between the two servers.
const LEEWAY_SECS: u64 = 30;

/// What an invitation code says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeClaims {
    pub iss: String,
    pub aud: String,
    /// The link's id.
    pub sub: String,
    /// The host's base URL, where the code is redeemed (`{url}/api/partner-links/redeem`).
    pub url: String,
    pub iat: i64,
    pub exp: i64,
    /// Random: two codes are never equal.
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("the invitation code has expired")]
    Expired,
    #[error("the invitation code is not valid: {0}")]
    Invalid(String),
    #[error("cannot sign the invitation code: {0}")]
    Signing(String),
}

/// Signs and checks invitation codes with the server's token secret.
#[derive(Clone)]
pub struct LinkCodes {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for LinkCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCodes { .. }")
    }
}

impl LinkCodes {
    pub fn new(secret: &[u8]) -> LinkCodes {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[CODE_ISSUER]);
        validation.set_audience(&[CODE_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        LinkCodes {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A code for link `link_id` of the host at `host_url`, valid until `exp`.
    pub fn issue(
        &self,
        link_id: &str,
        host_url: &str,
        now: i64,
        exp: i64,
    ) -> Result<String, CodeError> {
        let jti =
            classroom_auth::token::new_token().map_err(|e| CodeError::Signing(e.to_string()))?;
        let claims = CodeClaims {
            iss: CODE_ISSUER.to_owned(),
            aud: CODE_AUDIENCE.to_owned(),
            sub: link_id.to_owned(),
            url: host_url.to_owned(),
            iat: now,
            exp,
            jti,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| CodeError::Signing(e.to_string()))
    }

    /// The claims of a code this server signed, if it is unaltered and unexpired.
    pub fn verify(&self, code: &str) -> Result<CodeClaims, CodeError> {
        if code.len() > MAX_CODE_LEN {
            return Err(CodeError::Invalid("too long".into()));
        }
        let data =
            jsonwebtoken::decode::<CodeClaims>(code.trim(), &self.decoding, &self.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => CodeError::Expired,
                    _ => CodeError::Invalid(e.to_string()),
                })?;
        if data.claims.sub.is_empty() {
            return Err(CodeError::Invalid("no link".into()));
        }
        Ok(data.claims)
    }
}

/// The host's base URL a code names, read without checking the signature: the partner's server
/// cannot check it, and asks the host. Also refuses what is plainly no invitation code.
pub fn peek_host(code: &str) -> Result<String, CodeError> {
    let code = code.trim();
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Err(CodeError::Invalid("empty or too long".into()));
    }
    let claims: CodeClaims = jsonwebtoken::dangerous::insecure_decode_claims(code)
        .map_err(|e| CodeError::Invalid(e.to_string()))?;
    if claims.iss != CODE_ISSUER || claims.aud != CODE_AUDIENCE {
        return Err(CodeError::Invalid("not an invitation code".into()));
    }
    Ok(claims.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret of enough length!!";

    fn now() -> i64 {
        crate::unix_now()
    }

    #[test]
    fn a_code_round_trips_and_names_its_host() {
        let codes = LinkCodes::new(SECRET);
        let code = codes
            .issue("link-1", "https://a.example", now(), now() + 60)
            .expect("signs");
        let claims = codes.verify(&code).expect("verifies");
        assert_eq!(claims.sub, "link-1");
        assert_eq!(peek_host(&code).expect("peek"), "https://a.example");
    }

    #[test]
    fn forged_and_expired_codes_are_refused() {
        let codes = LinkCodes::new(SECRET);
        let other = LinkCodes::new(b"another secret of enough length!");
        let forged = other
            .issue("link-1", "https://a.example", now(), now() + 60)
            .expect("signs");
        assert!(matches!(codes.verify(&forged), Err(CodeError::Invalid(_))));
        let expired = codes
            .issue("link-1", "https://a.example", now() - 600, now() - 300)
            .expect("signs");
        assert_eq!(codes.verify(&expired), Err(CodeError::Expired));
        assert!(peek_host("not a code").is_err());
    }

    #[test]
    fn join_tokens_and_codes_do_not_pass_for_each_other() {
        use classroom_signaling::token::{Claims, Role, TokenIssuer};
        let codes = LinkCodes::new(SECRET);
        let tokens = TokenIssuer::new(SECRET);
        let join = tokens
            .issue(&Claims::new(
                "room",
                "t-001",
                "先生",
                Role::Teacher,
                std::time::Duration::from_secs(60),
            ))
            .expect("signs");
        assert!(codes.verify(&join).is_err(), "a join token is no code");
        assert!(peek_host(&join).is_err());
        let code = codes
            .issue("link-1", "https://a.example", now(), now() + 60)
            .expect("signs");
        assert!(tokens.verify(&code).is_err(), "a code is no join token");
    }
}
