//! The provider's discovery document (OpenID Connect Discovery 1.0) and its checks, pure.

use serde::Deserialize;
use url::Url;

use super::OidcError;

/// The parts of `/.well-known/openid-configuration` this crate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
}

/// `{issuer}/.well-known/openid-configuration` (Discovery §4: the issuer may have a path, as
/// Entra's `https://login.microsoftonline.com/{tenant}/v2.0` does).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// `https`, or `http` on a loopback host (the test issuer, a local development IdP). Anything
/// else would send codes and secrets in the clear.
pub fn is_acceptable_endpoint(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

pub(crate) fn parse_endpoint(what: &str, s: &str) -> Result<Url, OidcError> {
    let url = Url::parse(s).map_err(|e| OidcError::Config(format!("{what} {s:?}: {e}")))?;
    if !is_acceptable_endpoint(&url) {
        return Err(OidcError::Config(format!(
            "{what} {s:?} must be https (http only on a loopback address)"
        )));
    }
    Ok(url)
}

/// Checks the document against the configured issuer. The issuer must match *exactly*
/// (Discovery §4.3): a document naming another issuer could hand us another provider's keys.
///
/// Microsoft Entra ID: the multi-tenant endpoints (`/common/v2.0`, `/organizations/v2.0`)
/// publish the issuer `https://login.microsoftonline.com/{tenantid}/v2.0` with a literal
/// `{tenantid}` placeholder, so they fail this check on purpose. Configure the school's
/// tenant-specific issuer, `https://login.microsoftonline.com/<tenant-id>/v2.0`, whose document
/// and tokens carry the real tenant id.
pub fn check(configured_issuer: &str, meta: &ProviderMetadata) -> Result<(), OidcError> {
    if meta.issuer != configured_issuer {
        return Err(OidcError::IssuerMismatch {
            expected: configured_issuer.to_owned(),
            found: meta.issuer.clone(),
        });
    }
    parse_endpoint("authorization_endpoint", &meta.authorization_endpoint)?;
    parse_endpoint("token_endpoint", &meta.token_endpoint)?;
    parse_endpoint("jwks_uri", &meta.jwks_uri)?;
    // Entra does not list PKCE methods at all (but supports S256); only an explicit list
    // without S256 tells us the provider cannot do it.
    if let Some(methods) = &meta.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(OidcError::Config(format!(
            "issuer {configured_issuer} does not support PKCE S256 (supports {methods:?})"
        )));
    }
    Ok(())
}

/// Values of `iss` accepted in ID tokens. Google documents that its ID tokens may carry
/// `accounts.google.com` without the scheme as well as the discovery issuer.
pub fn accepted_token_issuers(issuer: &str) -> Vec<String> {
    let mut v = vec![issuer.to_owned()];
    if issuer == "https://accounts.google.com" {
        v.push("accounts.google.com".to_owned());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(issuer: &str) -> ProviderMetadata {
        ProviderMetadata {
            issuer: issuer.to_owned(),
            authorization_endpoint: format!("{issuer}/authorize"),
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: format!("{issuer}/keys"),
            code_challenge_methods_supported: None,
            id_token_signing_alg_values_supported: None,
        }
    }

    #[test]
    fn discovery_url_keeps_issuer_path() {
        assert_eq!(
            discovery_url("https://login.microsoftonline.com/abc/v2.0"),
            "https://login.microsoftonline.com/abc/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://accounts.google.com/"),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let iss = "https://login.microsoftonline.com/abc/v2.0";
        assert!(check(iss, &meta(iss)).is_ok());
        // The multi-tenant document: refused.
        let common = meta("https://login.microsoftonline.com/{tenantid}/v2.0");
        assert!(matches!(
            check("https://login.microsoftonline.com/common/v2.0", &common),
            Err(OidcError::IssuerMismatch { .. })
        ));
    }

    #[test]
    fn endpoints_must_be_https_except_loopback() {
        let mut m = meta("https://idp.example");
        m.token_endpoint = "http://idp.example/token".into();
        assert!(matches!(
            check("https://idp.example", &m),
            Err(OidcError::Config(_))
        ));
        assert!(check("http://127.0.0.1:9999", &meta("http://127.0.0.1:9999")).is_ok());
        assert!(check("http://localhost:9999", &meta("http://localhost:9999")).is_ok());
        assert!(check("http://[::1]:9999", &meta("http://[::1]:9999")).is_ok());
        assert!(check("http://10.0.0.1", &meta("http://10.0.0.1")).is_err());
    }

    #[test]
    fn pkce_s256_required_when_methods_are_listed() {
        let mut m = meta("https://idp.example");
        m.code_challenge_methods_supported = Some(vec!["plain".into()]);
        assert!(check("https://idp.example", &m).is_err());
        m.code_challenge_methods_supported = Some(vec!["plain".into(), "S256".into()]);
        assert!(check("https://idp.example", &m).is_ok());
    }

    #[test]
    fn google_bare_issuer_is_accepted_in_tokens() {
        assert_eq!(
            accepted_token_issuers("https://accounts.google.com"),
            vec!["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(accepted_token_issuers("https://idp.example").len(), 1);
    }
}
