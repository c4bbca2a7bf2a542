//! ID token verification (OpenID Connect Core §3.1.3.7), pure: the keys, the expected values
//! and the current time are arguments.

use std::collections::HashSet;
use std::str::FromStr;

use aws_lc_rs::constant_time;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Deserializer};

use super::jwks::{self, SigningKey};
use super::{OidcError, VerifiedIdentity};

/// Asymmetric algorithms only. `none` is not even representable in jsonwebtoken, and HS* would
/// mean "signed with the client secret": with a public JWKS, accepting HS256 is the classic
/// key-confusion attack (the RSA public key used as an HMAC secret).
pub fn is_allowed(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// What the token must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// Accepted `iss` values (see `discovery::accepted_token_issuers`).
    pub issuers: &'a [String],
    pub client_id: &'a str,
    /// The nonce sent in the authorization request.
    pub nonce: &'a str,
    /// Current time, seconds since the Unix epoch.
    pub now: u64,
    /// Allowed clock difference with the issuer, seconds.
    pub leeway: u64,
    /// Oldest acceptable `iat`, seconds before `now`: tokens come fresh from the token
    /// endpoint, so an old one is a replay.
    pub max_age: u64,
    /// Entra tenant ids (`tid`) or Google Workspace domains (`hd`) whose tokens are accepted;
    /// empty accepts every tenant the issuer signs for. See [`tenant_gate`].
    pub allowed_tenants: &'a [String],
}

/// OpenID Connect Core §2: `sub` is at most 255 ASCII characters. It is stored as the key of a
/// person's binding, so anything longer is refused rather than kept.
const MAX_SUBJECT_LEN: usize = 255;

/// Whether the token's tenant is allowed, and whether that listing vouches for its `email`.
///
/// With an allow-list, a token from any other tenant (or from none: a consumer Google account
/// has no `hd`) is refused outright. A listed tenant's directory is run by the school, so its
/// addresses are trusted even without `email_verified`, which Entra never sends.
pub fn tenant_gate(
    allowed: &[String],
    tid: Option<&str>,
    hd: Option<&str>,
) -> Result<bool, OidcError> {
    if allowed.is_empty() {
        return Ok(false);
    }
    let listed = |claim: Option<&str>| {
        claim.is_some_and(|c| allowed.iter().any(|a| a.trim().eq_ignore_ascii_case(c)))
    };
    if listed(tid) || listed(hd) {
        Ok(true)
    } else {
        Err(OidcError::TenantNotAllowed {
            tenant: tid.or(hd).map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The header fields that choose the key, read without trusting anything yet.
pub(crate) struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

pub(crate) fn read_header(token: &str) -> Result<TokenHeader, OidcError> {
    let first = token
        .split('.')
        .next()
        .ok_or_else(|| OidcError::MalformedToken("empty token".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|e| OidcError::MalformedToken(format!("header: {e}")))?;
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|e| OidcError::MalformedToken(format!("header: {e}")))?;
    let alg = Algorithm::from_str(&raw.alg)
        .ok()
        .filter(|a| is_allowed(*a))
        .ok_or(OidcError::DisallowedAlgorithm(raw.alg))?;
    Ok(TokenHeader { alg, kid: raw.kid })
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    nonce: Option<String>,
    azp: Option<String>,
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    email_verified: Option<bool>,
    name: Option<String>,
    preferred_username: Option<String>,
    hd: Option<String>,
    tid: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Some providers send `"email_verified": "true"` as a string.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => Some(b),
        Some(B::Str(s)) => Some(s.eq_ignore_ascii_case("true")),
        None => None,
    })
}

/// Verify `token` against `keys`. Returns `UnknownKey` when no key fits the header, so the
/// caller can refetch the JWKS once (key rotation) and try again.
pub fn verify_id_token(
    token: &str,
    keys: &[SigningKey],
    expected: &Expected<'_>,
) -> Result<VerifiedIdentity, OidcError> {
    let header = read_header(token)?;
    let key = jwks::find(keys, header.kid.as_deref(), header.alg)
        .ok_or_else(|| OidcError::UnknownKey(header.kid.clone()))?;

    // Signature, `iss` and `aud` by jsonwebtoken; the time claims below with our explicit clock.
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = ["iss", "aud", "sub"]
        .iter()
        .map(|s| s.to_string())
        .collect::<HashSet<_>>();
    validation.set_issuer(expected.issuers);
    validation.set_audience(&[expected.client_id]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(map_jwt_error)?
        .claims;

    let now = expected.now;
    let exp = claims.exp.ok_or(OidcError::MissingClaim("exp"))?;
    if now > exp.saturating_add(expected.leeway) {
        return Err(OidcError::Expired);
    }
    let iat = claims.iat.ok_or(OidcError::MissingClaim("iat"))?;
    if iat > now.saturating_add(expected.leeway) {
        return Err(OidcError::NotYetValid);
    }
    if iat.saturating_add(expected.max_age) < now {
        return Err(OidcError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(expected.leeway))
    {
        return Err(OidcError::NotYetValid);
    }
    // Core §3.1.3.7 items 4–5: with several audiences, the token must name us as the party it
    // was issued to; and an `azp` present at all must be us.
    if claims.aud.len() > 1 && claims.azp.is_none() {
        return Err(OidcError::WrongAudience);
    }
    if claims
        .azp
        .as_deref()
        .is_some_and(|azp| azp != expected.client_id)
    {
        return Err(OidcError::WrongAudience);
    }
    let nonce = claims.nonce.ok_or(OidcError::MissingClaim("nonce"))?;
    if constant_time::verify_slices_are_equal(nonce.as_bytes(), expected.nonce.as_bytes()).is_err()
    {
        return Err(OidcError::NonceMismatch);
    }

    if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_LEN {
        return Err(OidcError::MalformedToken(format!(
            "sub must be 1 to {MAX_SUBJECT_LEN} characters"
        )));
    }
    let tenant_vouches = tenant_gate(
        expected.allowed_tenants,
        claims.tid.as_deref(),
        claims.hd.as_deref(),
    )?;
    let email_verified = claims.email_verified.unwrap_or(false);
    let email_trusted = claims
        .email
        .as_deref()
        .is_some_and(|e| !e.trim().is_empty())
        && (email_verified || tenant_vouches);

    Ok(VerifiedIdentity {
        issuer: claims.iss,
        subject: claims.sub,
        email: claims.email,
        email_verified,
        email_trusted,
        name: claims.name,
        preferred_username: claims.preferred_username,
        hosted_domain: claims.hd,
        tenant_id: claims.tid,
    })
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> OidcError {
    match e.into_kind() {
        ErrorKind::InvalidSignature => OidcError::BadSignature,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidAlgorithm => {
            OidcError::DisallowedAlgorithm("key/algorithm mismatch".into())
        }
        ErrorKind::MissingRequiredClaim(c) => OidcError::MissingClaim(match c.as_str() {
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            _ => "required claim",
        }),
        other => OidcError::MalformedToken(format!("{other:?}")),
    }
}
