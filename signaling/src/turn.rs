//! Short-lived TURN credentials for browsers (the TURN REST API, draft-uberti-behave-turn-rest;
//! coturn's `use-auth-secret`): the server and coturn share a secret; each `joined` carries a
//! username `<unix expiry>:<identity>` and the credential base64(HMAC-SHA1(secret, username)),
//! which coturn checks without asking anyone, and refuses after the expiry.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

use crate::protocol::IceServer;

/// A TURN configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TurnError {
    #[error("no TURN urls")]
    NoUrls,
    #[error("{0:?} is not a turn: or turns: URL")]
    BadUrl(String),
    #[error("the shared secret is empty")]
    EmptySecret,
    #[error("the credential lifetime must be between 1 minute and 7 days")]
    BadTtl,
}

/// Shortest and longest credential lifetime accepted: a lesson must fit, and a leaked
/// credential must not serve for long.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Issues credentials for one TURN service.
#[derive(Clone)]
pub struct TurnRest {
    urls: Vec<String>,
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TurnRest {
    pub fn new(urls: Vec<String>, secret: &[u8], ttl: Duration) -> Result<TurnRest, TurnError> {
        check(&urls, secret, ttl)?;
        Ok(TurnRest {
            urls,
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            ttl,
        })
    }

    /// The `ice_servers` entry for `identity`, valid for the configured lifetime from `now_unix`
    /// (seconds since the Unix epoch).
    pub fn ice_server(&self, now_unix: u64, identity: &str) -> IceServer {
        let username = format!("{}:{identity}", now_unix.saturating_add(self.ttl.as_secs()));
        let credential = STANDARD.encode(hmac::sign(&self.key, username.as_bytes()).as_ref());
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

/// What [`TurnRest::new`] checks, for validating a configuration before the server starts.
pub fn check(urls: &[String], secret: &[u8], ttl: Duration) -> Result<(), TurnError> {
    if urls.is_empty() {
        return Err(TurnError::NoUrls);
    }
    for url in urls {
        let rest = url
            .strip_prefix("turns:")
            .or_else(|| url.strip_prefix("turn:"))
            .unwrap_or_default();
        if rest.is_empty() || url.chars().any(char::is_whitespace) {
            return Err(TurnError::BadUrl(url.clone()));
        }
    }
    if secret.is_empty() {
        return Err(TurnError::EmptySecret);
    }
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(TurnError::BadTtl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<String> {
        vec![
            "turn:turn.example.org:3478?transport=udp".to_owned(),
            "turns:turn.example.org:443?transport=tcp".to_owned(),
        ]
    }

    #[test]
    fn credentials_match_coturn_s_computation() {
        // Expected values from `printf %s USERNAME | openssl dgst -sha1 -hmac SECRET -binary |
        // base64`, which is what coturn computes from the username it is given.
        let turn = TurnRest::new(
            urls(),
            b"north-school-turn-secret",
            Duration::from_secs(12 * 3600),
        )
        .unwrap();
        let s = turn.ice_server(1_733_529_600 - 12 * 3600, "pupil-42");
        assert_eq!(s.username, "1733529600:pupil-42");
        assert_eq!(s.credential, "nWVT/d2ghFIdNth+lTo2vIuzz5Q=");
        assert_eq!(s.urls, urls());
        let turn = TurnRest::new(urls(), b"secret", Duration::from_secs(60)).unwrap();
        let s = turn.ice_server(1_433_895_858, "username");
        assert_eq!(s.username, "1433895918:username");
        assert_eq!(s.credential, "/SB/k9lFDiqk9pq7hrl1rCtecHY=");
    }

    #[test]
    fn bad_configurations_are_named() {
        let day = Duration::from_secs(86_400);
        assert_eq!(check(&[], b"s", day), Err(TurnError::NoUrls));
        for bad in ["stun:x:3478", "turn:", "https://x", "turn:a b"] {
            assert_eq!(
                check(&[bad.to_owned()], b"s", day),
                Err(TurnError::BadUrl(bad.to_owned()))
            );
        }
        assert_eq!(check(&urls(), b"", day), Err(TurnError::EmptySecret));
        assert_eq!(
            check(&urls(), b"s", Duration::from_secs(5)),
            Err(TurnError::BadTtl)
        );
        assert_eq!(check(&urls(), b"s", day * 8), Err(TurnError::BadTtl));
        let debug = format!(
            "{:?}",
            TurnRest::new(urls(), b"hidden-secret", day).unwrap()
        );
        assert!(!debug.contains("hidden"), "{debug}");
    }
}
