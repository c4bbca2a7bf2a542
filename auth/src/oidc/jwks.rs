//! The issuer's signing keys (JWKS, RFC 7517), parsed into verification keys, pure.

use std::str::FromStr;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// One usable signing key.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWKS pins one (Entra and Google do: RS256).
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// Parse a JWKS document. Keys this crate cannot use (encryption keys, symmetric keys, unknown
/// types or algorithms) are skipped one by one rather than failing the whole set: providers add
/// key types over time and one odd key must not lock every user out.
pub fn parse_key_set(body: &serde_json::Value) -> Result<Vec<SigningKey>, String> {
    let raw = RawSet::deserialize(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        if field("use").is_some_and(|u| u != "sig") {
            continue;
        }
        // Symmetric keys in a public JWKS would let anyone who reads it sign tokens.
        if field("kty").as_deref() == Some("oct") {
            continue;
        }
        let alg = match field("alg") {
            Some(a) => match Algorithm::from_str(&a) {
                Ok(alg) if super::verify::is_allowed(alg) => Some(alg),
                _ => continue,
            },
            None => None,
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(SigningKey {
            kid: field("kid"),
            alg,
            key,
        });
    }
    Ok(keys)
}

/// The key for a token signed with `alg` under `kid`. Without a `kid` only a set of exactly one
/// key answers: guessing among several would turn a missing header into a key-confusion bug.
pub fn find<'a>(
    keys: &'a [SigningKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<&'a SigningKey> {
    let fits = |k: &&SigningKey| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family();
    match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .find(fits),
        None if keys.len() == 1 => keys.iter().find(fits),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A real 2048-bit RSA modulus is not needed to parse; from_jwk only decodes base64url.
    fn rsa(kid: &str, alg: Option<&str>, use_: Option<&str>) -> serde_json::Value {
        let mut v = json!({"kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB"});
        if let Some(a) = alg {
            v["alg"] = json!(a);
        }
        if let Some(u) = use_ {
            v["use"] = json!(u);
        }
        v
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let set = json!({"keys": [
            rsa("a", Some("RS256"), Some("sig")),
            rsa("enc", Some("RSA-OAEP"), Some("enc")),
            rsa("hs", Some("HS256"), None),
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w"},
            rsa("b", None, None),
        ]});
        let keys = parse_key_set(&set).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["a", "b"]);
        assert!(parse_key_set(&json!({"nope": []})).is_err());
    }

    #[test]
    fn lookup_by_kid_and_alg() {
        let keys =
            parse_key_set(&json!({"keys": [rsa("a", Some("RS256"), None), rsa("b", None, None)]}))
                .unwrap();
        assert_eq!(
            find(&keys, Some("a"), Algorithm::RS256).and_then(|k| k.kid.as_deref()),
            Some("a")
        );
        // `a` is pinned to RS256.
        assert!(find(&keys, Some("a"), Algorithm::PS256).is_none());
        assert!(find(&keys, Some("b"), Algorithm::PS256).is_some());
        // An RSA key never verifies an EC algorithm.
        assert!(find(&keys, Some("b"), Algorithm::ES256).is_none());
        assert!(find(&keys, Some("zzz"), Algorithm::RS256).is_none());
        assert!(find(&keys, None, Algorithm::RS256).is_none());
        assert!(find(&keys[..1], None, Algorithm::RS256).is_some());
    }
}
