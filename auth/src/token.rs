//! Random bearer tokens (session ids, one-time sign-in links) and the hashes that are stored.
//!
//! The storage crate keeps only `hash_token(token)`: a database leak then yields no usable
//! session or link. The tokens carry 256 bits from the OS CSPRNG, so a plain (unsalted,
//! unstretched) SHA-256 is enough: there is nothing to brute-force.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes of randomness in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Length of a token as text: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `n` bytes from the OS CSPRNG (aws-lc's, seeded from getrandom).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

/// URL-safe text of `N` random bytes (base64url without padding).
pub(crate) fn random_text<const N: usize>() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<N>()?))
}

/// A new random token: 32 bytes, base64url without padding (43 characters, `[A-Za-z0-9_-]`),
/// safe in URLs paths and cookie values without escaping.
pub fn new_token() -> Result<String, RandomError> {
    random_text::<TOKEN_BYTES>()
}

/// A token and the hash to store for it, minted together so callers cannot forget the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// Goes to the user (cookie value or link); never stored.
    pub token: String,
    /// `hash_token(&token)`: goes to the database.
    pub hash: String,
}

impl MintedToken {
    pub fn new() -> Result<Self, RandomError> {
        let token = new_token()?;
        let hash = hash_token(&token);
        Ok(Self { token, hash })
    }
}

/// SHA-256 of the token's text, lowercase hex: the form the storage crate keeps and looks up.
pub fn hash_token(token: &str) -> String {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    hex(d.as_ref())
}

/// Whether `s` has the shape of a token from `new_token`. Checked before any lookup so that
/// garbage from a cookie or a URL never reaches the database, and so cookie values we write can
/// never carry `;` or control characters.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A one-time sign-in link for schools without an identity provider (minted by the CLI or an
/// administrator). The caller stores `hash` with the person and `expires_at`, and hands out `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInLink {
    pub url: String,
    pub token: String,
    pub hash: String,
}

/// Mint a sign-in link under `public_url` (e.g. `https://lessons.example.org`): the link is
/// `{public_url}/auth/link/{token}`.
pub fn new_sign_in_link(public_url: &str) -> Result<SignInLink, RandomError> {
    let MintedToken { token, hash } = MintedToken::new()?;
    let url = format!("{}/auth/link/{token}", public_url.trim_end_matches('/'));
    Ok(SignInLink { url, token, hash })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_chars_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(is_well_formed(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_sha256_hex() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let m = MintedToken::new().unwrap();
        assert_eq!(m.hash, hash_token(&m.token));
        assert_eq!(m.hash.len(), 64);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(42)));
        assert!(!is_well_formed(&format!("{};x", "a".repeat(41))));
        assert!(!is_well_formed(&"a".repeat(44)));
        assert!(is_well_formed(
            &"a_-".repeat(14).chars().chain(['Z']).collect::<String>()
        ));
    }

    #[test]
    fn sign_in_link_url() {
        let l = new_sign_in_link("https://lessons.example.org/").unwrap();
        assert_eq!(
            l.url,
            format!("https://lessons.example.org/auth/link/{}", l.token)
        );
        assert_eq!(l.hash, hash_token(&l.token));
    }
}
