//! The server under test, started in-process on loopback with ephemeral ports. All use of the
//! server's own API is here, so the tests proper speak only the protocol.

use anyhow::{Context, Result};
use classroom::server::{Config, ServerHandle};
use classroom_signaling::token::{Claims, Role, TokenIssuer};
use std::net::SocketAddr;
use std::time::Duration;

pub struct TestServer {
    pub handle: ServerHandle,
    /// The room the tests use.
    pub room: String,
}

impl TestServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(Config::for_tests()).await
    }

    /// A server with `config` (start from [`Config::for_tests`] and change what the test needs).
    pub async fn start_with(config: Config) -> Result<Self> {
        super::init_logging();
        let handle =
            tokio::time::timeout(Duration::from_secs(10), classroom::server::start(config))
                .await
                .context("the server did not start in time")?
                .context("start the server")?;
        Ok(Self {
            handle,
            room: "math-3b".to_owned(),
        })
    }

    pub fn ws_url(&self) -> String {
        self.handle.ws_url()
    }

    /// The UDP port all media goes through.
    pub fn media_addr(&self) -> SocketAddr {
        self.handle.media_addr
    }

    /// A token for the test room with the role's default permissions.
    pub fn token(&self, identity: &str, name: &str, role: Role) -> String {
        self.handle.issue_token(&self.room, identity, name, role)
    }

    /// Claims for the test room, valid for an hour, to adjust before [`TestServer::token_with`].
    pub fn claims(&self, identity: &str, name: &str, role: Role) -> Claims {
        Claims::new(&self.room, identity, name, role, Duration::from_secs(3600))
    }

    /// A token for arbitrary claims, signed with the server's secret.
    pub fn token_with(&self, claims: Claims) -> String {
        self.handle.issue_token_with(claims)
    }

    /// A token for `claims` signed with a secret that is not the server's.
    pub fn forged_token(&self, claims: Claims) -> String {
        TokenIssuer::new(b"not the server's secret, just a guess")
            .issue(&claims)
            .unwrap_or_else(|err| panic!("signing a forged token failed: {err}"))
    }

    /// A valid token whose payload was then altered (a student made teacher) without re-signing.
    pub fn tampered_token(&self) -> String {
        let token = self.token("s-777", "Mallory", Role::Student);
        let parts: Vec<&str> = token.split('.').collect();
        let Some(payload) = parts.get(1).and_then(|p| base64url_decode(p)) else {
            // Not a JWT at all: any change makes it invalid.
            return format!("{token}x");
        };
        let altered = match serde_json::from_slice::<serde_json::Value>(&payload) {
            Ok(mut claims) => {
                claims["role"] = "teacher".into();
                claims["perms"] = serde_json::json!([
                    "publish_audio",
                    "publish_video",
                    "publish_screen",
                    "subscribe",
                    "teacher"
                ]);
                claims.to_string().into_bytes()
            }
            Err(_) => payload.iter().map(|b| b ^ 1).collect(),
        };
        format!(
            "{}.{}.{}",
            parts[0],
            base64url_encode(&altered),
            parts.get(2).unwrap_or(&"")
        )
    }

    pub async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle.shutdown()).await;
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 §5), as JWTs use it.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = BASE64URL.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
