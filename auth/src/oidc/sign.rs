//! Minting RS256 JWTs with an aws-lc-rs RSA key: for the test issuer and the unit tests only.
//! Written against aws-lc-rs directly rather than jsonwebtoken so the tests' signer and the
//! verifier under test do not share code.

use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An RSA-2048 signing key with its `kid`.
pub struct RsaSigner {
    pub kid: String,
    key: KeyPair,
}

#[derive(Debug, thiserror::Error)]
#[error("RSA operation failed")]
pub struct SignError;

impl RsaSigner {
    pub fn generate(kid: &str) -> Result<Self, SignError> {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| SignError)?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The public key as a JWK (RFC 7518 §6.3.1).
    pub fn jwk(&self) -> serde_json::Value {
        let c = PublicKeyComponents::<Vec<u8>>::from(self.key.public_key());
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&c.n),
            "e": URL_SAFE_NO_PAD.encode(&c.e),
        })
    }

    /// A compact JWS of `claims` with `header` (its `alg`/`kid` are taken as given, so tests can
    /// lie in them).
    pub fn sign(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<String, SignError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
            .map_err(|_| SignError)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The usual RS256 header with this key's `kid`.
    pub fn header(&self) -> serde_json::Value {
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid})
    }
}
