//! Server settings: one typed [`Config`], assembled from three sources. Each later source
//! overrides single keys of the earlier ones:
//!
//! 1. the TOML file (`config/classroom.toml`, or `--config PATH`); every key is optional;
//! 2. `CLASSROOM_*` environment variables ([`Overrides::from_env`]);
//! 3. command-line flags (the binary builds an [`Overrides`] from them).
//!
//! [`Config::validate`] then rejects combinations that would start a server nobody can use.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Read when no `--config` is given; its absence is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "config/classroom.toml";

/// Shorter HMAC keys make forged invite links a matter of brute force.
pub const MIN_SECRET_LEN: usize = 16;

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP address of the web server: pages, `/ws`, `/healthz`. Port 0 picks a free port.
    pub http: SocketAddr,
    /// The UDP media plane.
    pub media: MediaSettings,
    /// Where the server keeps state that must survive restarts (the generated token secret).
    /// Relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// Key that signs invite tokens. When unset, it is read from `<data_dir>/token_secret`,
    /// which is generated on first start.
    pub token_secret: Option<Secret>,
    /// Base URL of invite links, e.g. `https://lessons.example.org` (a path prefix is allowed,
    /// for a reverse proxy). Default: derived from `http` and `tls`.
    pub public_url: Option<String>,
    /// Serve HTTPS (and WSS) directly. Browsers only grant camera and microphone to secure
    /// pages, so anything but `localhost` needs TLS here or in a reverse proxy.
    pub tls: Option<TlsConfig>,
    /// Diagnostics.
    pub log: LogConfig,
    /// Where rosters, lessons and attendance live: `postgres://...`, a `sqlite:` URL or a plain
    /// file path. Default: the SQLite file `<data_dir>/classroom.db`.
    pub database_url: Option<String>,
    /// The school's calendar: time zone and the guardians' daily cut-off.
    pub school: SchoolConfig,
    /// Sign-in at the school's identity provider (OpenID Connect). Off when unset.
    pub oidc: Option<OidcSettings>,
    /// How often expired web sessions and spent sign-in links are deleted (a duration such as
    /// `1h` or `15m`; see [`Config::purge_every`]).
    pub purge_interval: String,
    /// Reverse proxies whose forwarded header names the client.
    pub proxy: ProxySettings,
    /// The audit log.
    pub audit: AuditSettings,
    /// Where `/metrics` is served, and the token that guards it.
    pub metrics: MetricsSettings,
    /// How long and how many connections may be held before they prove useful.
    pub connections: ConnectionSettings,
    /// An external TURN server (coturn) that browsers may relay media through, with short-lived
    /// credentials (TURN REST API). Off when unset.
    pub turn: Option<TurnSettings>,
    /// Defaults of a lesson's rules (`[lesson]`).
    pub lesson: LessonSettings,
    /// Lesson links between two schools' servers (`[links]`, docs/PARTNER.md).
    pub links: LinksSettings,
}

/// Lesson links (`[links]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksSettings {
    /// This server's base URL written into invitation codes: where partners redeem them and
    /// whose `/ws` they dial. Default: the server's own public URL ([`Config::public_base_url`]).
    pub public_url: Option<String>,
    /// Accept `http://` hosts and `ws://` signaling URLs from codes and hosts' answers. Only for
    /// tests on loopback or a closed lab network: the link key would cross in the clear.
    pub allow_http: bool,
}

/// Defaults of every lesson's rules; the teacher changes them live (`set_lesson`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LessonSettings {
    /// With class-visible cameras, each pupil receives the cameras of this many most recent
    /// pupil speakers (plus the spotlight and the floor). 1 to 16.
    pub last_n: u8,
}

impl Default for LessonSettings {
    fn default() -> Self {
        LessonSettings { last_n: 4 }
    }
}

/// `/metrics` tells whoever reads it how many lessons run and how busy the server is: it has its
/// own address, loopback unless configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// TCP address of the metrics listener (plain HTTP: `/metrics`, `/healthz`). Port 0 picks a
    /// free port.
    pub listen: SocketAddr,
    /// A bearer token. When set, `/metrics` is also served on the public port, and every request
    /// for it, on either address, must carry `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// Default of [`MetricsSettings::listen`]: loopback, where a Prometheus or node exporter on the
/// same machine reaches it and nobody else does; 9464 is the port commonly used for
/// Prometheus exporters of applications.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: DEFAULT_METRICS_LISTEN,
            token: None,
        }
    }
}

/// Default of [`Config::purge_interval`]: sessions last 12 hours and links minutes, so an hourly
/// sweep keeps the tables at about a day's sign-ins for the cost of two indexed deletes.
pub const DEFAULT_PURGE_INTERVAL: &str = "1h";

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            media: MediaSettings::default(),
            data_dir: PathBuf::from("./data"),
            token_secret: None,
            public_url: None,
            tls: None,
            log: LogConfig::default(),
            database_url: None,
            school: SchoolConfig::default(),
            oidc: None,
            purge_interval: DEFAULT_PURGE_INTERVAL.to_owned(),
            proxy: ProxySettings::default(),
            audit: AuditSettings::default(),
            metrics: MetricsSettings::default(),
            connections: ConnectionSettings::default(),
            turn: None,
            lesson: LessonSettings::default(),
            links: LinksSettings::default(),
        }
    }
}

/// Reverse proxies in front of the web server (`[proxy]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySettings {
    /// Networks (CIDR, e.g. `10.0.0.0/8`; a bare address is one host) of the proxies whose
    /// forwarded header is believed. Empty: none, the TCP peer is the client.
    pub trusted: Vec<String>,
    /// The header those proxies write the client's address into.
    pub header: classroom_auth::ForwardedHeader,
}

impl ProxySettings {
    /// The parsed networks; the error names the entry that is not a network.
    pub fn trusted_proxies(&self) -> Result<classroom_auth::TrustedProxies, String> {
        classroom_auth::TrustedProxies::parse(&self.trusted, self.header).map_err(|e| e.to_string())
    }
}

/// The audit log (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// How long entries are kept before the purge deletes them (e.g. `400d`).
    pub retention: String,
}

/// Default of [`AuditSettings::retention`]: a whole school year (April to March) plus a month,
/// so the year's events can still be looked into at the year-end review and after the spring
/// holidays, and the log stays bounded.
pub const DEFAULT_AUDIT_RETENTION: &str = "400d";

/// Shortest retention accepted: a shorter one would delete events before anyone looked.
pub const MIN_AUDIT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention: DEFAULT_AUDIT_RETENTION.to_owned(),
        }
    }
}

impl AuditSettings {
    /// [`AuditSettings::retention`] as a duration, at least [`MIN_AUDIT_RETENTION`].
    pub fn retention(&self) -> Result<std::time::Duration, String> {
        let text = self.retention.trim();
        let retention = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
        if retention < MIN_AUDIT_RETENTION {
            return Err(format!("{text:?} is shorter than the minimum of 7 days"));
        }
        Ok(retention)
    }
}

/// Bounds on what a client can make the server hold: sockets that never join, participants who
/// stop reading, HTTP requests that never finish. Durations are humantime strings (`10s`,
/// `500ms`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// A `/ws` socket must join within this long of opening.
    pub join_timeout: String,
    /// `/ws` sockets one client address (an IPv6 /64) may hold open without having joined.
    pub max_unjoined_per_address: usize,
    /// Messages from the room queued for one participant; one more drops the participant.
    pub outbox_messages: usize,
    /// A participant whose socket takes no message for this long is dropped.
    pub send_timeout: String,
    /// An HTTP request's head (request line and headers) must arrive within this long, counted
    /// from the connection's start or its previous response.
    pub http_header_timeout: String,
    /// An HTTP connection on which no byte moves either way for this long is closed.
    pub http_idle_timeout: String,
    /// A participant whose socket drops without `leave` keeps its place this long for a
    /// `resume` (`0s`: leaves at once).
    pub resume_grace: String,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            join_timeout: "10s".to_owned(),
            max_unjoined_per_address: 32,
            outbox_messages: 256,
            send_timeout: "10s".to_owned(),
            http_header_timeout: "10s".to_owned(),
            http_idle_timeout: "60s".to_owned(),
            resume_grace: "30s".to_owned(),
        }
    }
}

/// [`ConnectionSettings`] checked and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub join_timeout: std::time::Duration,
    pub max_unjoined_per_address: usize,
    pub outbox_messages: usize,
    pub send_timeout: std::time::Duration,
    pub http_header_timeout: std::time::Duration,
    pub http_idle_timeout: std::time::Duration,
    pub resume_grace: std::time::Duration,
}

impl ConnectionSettings {
    /// The settings as values, or a message naming the key that is wrong.
    pub fn limits(&self) -> Result<ConnectionLimits, String> {
        use std::time::Duration;
        // Shorter than this and a slow but honest network is cut off; longer and the bound
        // means little.
        let duration = |key: &str, text: &str| -> Result<Duration, String> {
            let text = text.trim();
            let d = humantime::parse_duration(text)
                .map_err(|e| format!("connections.{key} {text:?}: {e}"))?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(format!(
                    "connections.{key} {text:?} must be between 100ms and 1h"
                ));
            }
            Ok(d)
        };
        let count = |key: &str, n: usize, min: usize| -> Result<usize, String> {
            if n < min {
                return Err(format!("connections.{key} must be at least {min}"));
            }
            Ok(n)
        };
        Ok(ConnectionLimits {
            join_timeout: duration("join_timeout", &self.join_timeout)?,
            max_unjoined_per_address: count(
                "max_unjoined_per_address",
                self.max_unjoined_per_address,
                1,
            )?,
            // A join alone queues a few messages (offer, quality reports) before the first read.
            outbox_messages: count("outbox_messages", self.outbox_messages, 16)?,
            send_timeout: duration("send_timeout", &self.send_timeout)?,
            http_header_timeout: duration("http_header_timeout", &self.http_header_timeout)?,
            http_idle_timeout: duration("http_idle_timeout", &self.http_idle_timeout)?,
            resume_grace: {
                let text = self.resume_grace.trim();
                let d = humantime::parse_duration(text)
                    .map_err(|e| format!("connections.resume_grace {text:?}: {e}"))?;
                // The media plane closes a connection after 90 s without ICE
                // (`core::liveness`); a longer grace would keep a place with no media behind it.
                if d > Duration::from_secs(60) {
                    return Err(format!(
                        "connections.resume_grace {text:?} must be at most 60s"
                    ));
                }
                d
            },
        })
    }
}

/// The school's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchoolConfig {
    /// IANA time zone of the school's dates (e.g. `Asia/Tokyo`).
    pub timezone: String,
    /// Local time (`HH:MM`) after which guardians can no longer change today's attendance mode.
    pub cutoff: String,
}

impl Default for SchoolConfig {
    fn default() -> Self {
        SchoolConfig {
            timezone: "Asia/Tokyo".to_owned(),
            cutoff: "08:00".to_owned(),
        }
    }
}

impl SchoolConfig {
    /// The domain's cut-off policy for these settings.
    pub fn policy(&self) -> Result<classroom_domain::CutoffPolicy, String> {
        classroom_domain::CutoffPolicy::parse(&self.timezone, &self.cutoff)
            .map_err(|e| e.to_string())
    }
}

/// An OpenID Connect relying party registration, and which of the issuer's accounts it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL, e.g. `https://login.microsoftonline.com/<tenant>/v2.0`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Entra tenant ids (`tid`) or Google Workspace domains (`hd`) whose accounts may sign in;
    /// empty: any account of the issuer. A listed tenant's directory also vouches for its
    /// accounts' e-mail addresses, which Entra sends without `email_verified`.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// How often the issuer's signing keys (JWKS) are fetched again (e.g. `1h`; see
    /// [`OidcSettings::jwks_refresh_every`]).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: String,
}

/// Default of [`OidcSettings::jwks_refresh`]: providers publish a new key days before signing
/// with it, so hourly is early enough, at one small request an hour.
pub const DEFAULT_JWKS_REFRESH: &str = "1h";

fn default_jwks_refresh() -> String {
    DEFAULT_JWKS_REFRESH.to_owned()
}

impl Default for OidcSettings {
    /// Not usable as is (no issuer): a base for the fields a caller does not set.
    fn default() -> Self {
        OidcSettings {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            allowed_tenants: Vec::new(),
            jwks_refresh: default_jwks_refresh(),
        }
    }
}

impl OidcSettings {
    /// [`OidcSettings::jwks_refresh`] as a duration: at least a second (the issuer is not ours
    /// to hammer), at most a day (a revoked key must stop verifying within one).
    pub fn jwks_refresh_every(&self) -> Result<std::time::Duration, String> {
        let text = self.jwks_refresh.trim();
        let every = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
        if every < std::time::Duration::from_secs(1)
            || every > std::time::Duration::from_secs(86_400)
        {
            return Err(format!("{text:?} must be between 1s and 24h"));
        }
        Ok(every)
    }
}

/// The UDP socket all WebRTC traffic goes through, and the ICE-TCP listener beside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Address the media socket binds. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Offer ICE-TCP (passive TCP candidates) for networks that drop UDP.
    pub tcp: bool,
    /// Address of the ICE-TCP listener. Default: the address and port number of `bind`.
    pub tcp_bind: Option<SocketAddr>,
    /// Addresses given to browsers as ICE candidates, each with the bound port. Behind a 1:1 NAT
    /// (cloud VMs: the public address). Empty: the bound address itself, or for a wildcard
    /// `bind` the addresses of this machine's interfaces.
    pub announce: Vec<IpAddr>,
    /// Estimate each subscriber's bandwidth and choose simulcast layers from it (default). Off
    /// only where every subscriber is on the school's wired network.
    pub bandwidth_estimation: bool,
    /// Media threads, each with its own socket on the media port; 0 (default): one per core.
    pub shards: usize,
    /// A room of up to this many participants stays on one shard (default 8).
    pub whole_room: usize,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            bind: DEFAULT_MEDIA_BIND,
            tcp: true,
            tcp_bind: None,
            announce: Vec::new(),
            bandwidth_estimation: true,
            shards: 0,
            whole_room: classroom_sfu::core::placement::WHOLE_ROOM,
        }
    }
}

/// Default of [`MediaSettings::bind`]: every interface, so that a browser on this machine or the
/// LAN reaches the server without configuration (the server announces each interface's address;
/// Firefox does not pair with a server that offers loopback only). The port answers nothing but
/// ICE checks carrying a peer's credentials from signaling.
pub const DEFAULT_MEDIA_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50000);

impl MediaSettings {
    pub fn to_media_config(&self) -> classroom_sfu::MediaConfig {
        classroom_sfu::MediaConfig {
            bind: self.bind,
            tcp_bind: self.tcp.then(|| self.tcp_bind.unwrap_or(self.bind)),
            announce: self.announce.clone(),
            bandwidth_estimation: self.bandwidth_estimation,
            shards: self.shards,
            whole_room: self.whole_room.max(1),
        }
    }
}

/// An external TURN server (`[turn]`) sharing a secret with this server: coturn with
/// `use-auth-secret` and `static-auth-secret` (docs/NETWORK.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSettings {
    /// `turn:` / `turns:` URLs as browsers take them, e.g.
    /// `"turns:turn.example.org:443?transport=tcp"`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`. Exactly one of `secret` and `secret_file`.
    pub secret: Option<Secret>,
    /// A file holding the secret (surrounding whitespace ignored).
    pub secret_file: Option<PathBuf>,
    /// How long a credential handed out at `joined` is valid (e.g. `"12h"`): a whole lesson day.
    #[serde(default = "default_turn_ttl")]
    pub ttl: String,
}

fn default_turn_ttl() -> String {
    "12h".to_owned()
}

impl TurnSettings {
    /// [`TurnSettings::ttl`] as a duration.
    pub fn ttl(&self) -> Result<std::time::Duration, String> {
        let text = self.ttl.trim();
        humantime::parse_duration(text).map_err(|e| format!("ttl {text:?}: {e}"))
    }

    /// Checks everything but the secret file's contents (read at start, [`TurnSettings::load`]).
    fn check(&self) -> Result<(), String> {
        let secret: &[u8] = match (&self.secret, &self.secret_file) {
            (Some(s), None) => s.expose().as_bytes(),
            (None, Some(p)) if !p.as_os_str().is_empty() => b"file",
            _ => return Err("set exactly one of secret and secret_file".to_owned()),
        };
        classroom_signaling::turn::check(&self.urls, secret, self.ttl()?).map_err(|e| e.to_string())
    }

    /// The credential issuer, with the secret read from `secret_file` if that is how it is given.
    pub fn load(&self) -> Result<classroom_signaling::turn::TurnRest, String> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(s), _) => s.expose().trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => return Err("set exactly one of secret and secret_file".to_owned()),
        };
        classroom_signaling::turn::TurnRest::new(self.urls.clone(), secret.as_bytes(), self.ttl()?)
            .map_err(|e| e.to_string())
    }
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (readable lines) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,classroom_sfu=debug`. `RUST_LOG`, when set,
    /// replaces it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected human or json)"
            )),
        }
    }
}

/// A secret string that stays out of `Debug` output, so logging a [`Config`] leaks nothing.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// Why the configuration could not be assembled.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Single keys set by the environment or the command line, on top of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub http: Option<SocketAddr>,
    pub media_bind: Option<SocketAddr>,
    pub media_tcp: Option<bool>,
    pub media_tcp_bind: Option<SocketAddr>,
    pub media_announce: Option<Vec<IpAddr>>,
    pub media_bandwidth_estimation: Option<bool>,
    pub media_shards: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub token_secret: Option<Secret>,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub database_url: Option<String>,
    pub school_timezone: Option<String>,
    pub school_cutoff: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret: Option<Secret>,
    pub purge_interval: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub audit_retention: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token: Option<Secret>,
    pub resume_grace: Option<String>,
}

impl Overrides {
    /// Reads the `CLASSROOM_*` variables of this process.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// Reads the `CLASSROOM_*` variables through `lookup`. An empty value counts as unset, as
    /// deployment tools often define every variable and leave the unused ones empty.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let raw = |var: &'static str| lookup(var).filter(|v| !v.is_empty());
        let text = |var: &'static str| -> Result<Option<String>, ConfigError> {
            raw(var)
                .map(|v| {
                    v.into_string().map_err(|_| ConfigError::Env {
                        var,
                        message: "not valid UTF-8".to_owned(),
                    })
                })
                .transpose()
        };
        fn parsed<T: FromStr>(
            var: &'static str,
            value: Option<String>,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value
                .map(|v| {
                    v.trim().parse().map_err(|e| ConfigError::Env {
                        var,
                        message: format!("{v:?}: {e}"),
                    })
                })
                .transpose()
        }

        let media_announce = text("CLASSROOM_MEDIA_ANNOUNCE")?
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|ip| {
                        ip.parse().map_err(|e| ConfigError::Env {
                            var: "CLASSROOM_MEDIA_ANNOUNCE",
                            message: format!("{ip:?}: {e}"),
                        })
                    })
                    .collect::<Result<Vec<IpAddr>, _>>()
            })
            .transpose()?;

        Ok(Overrides {
            http: parsed("CLASSROOM_HTTP", text("CLASSROOM_HTTP")?)?,
            media_bind: parsed("CLASSROOM_MEDIA_BIND", text("CLASSROOM_MEDIA_BIND")?)?,
            media_tcp: parsed("CLASSROOM_MEDIA_TCP", text("CLASSROOM_MEDIA_TCP")?)?,
            media_tcp_bind: parsed(
                "CLASSROOM_MEDIA_TCP_BIND",
                text("CLASSROOM_MEDIA_TCP_BIND")?,
            )?,
            media_announce,
            media_bandwidth_estimation: parsed(
                "CLASSROOM_MEDIA_BANDWIDTH_ESTIMATION",
                text("CLASSROOM_MEDIA_BANDWIDTH_ESTIMATION")?,
            )?,
            media_shards: parsed("CLASSROOM_MEDIA_SHARDS", text("CLASSROOM_MEDIA_SHARDS")?)?,
            data_dir: raw("CLASSROOM_DATA_DIR").map(PathBuf::from),
            token_secret: text("CLASSROOM_TOKEN_SECRET")?.map(Secret),
            public_url: text("CLASSROOM_PUBLIC_URL")?,
            tls_cert: raw("CLASSROOM_TLS_CERT").map(PathBuf::from),
            tls_key: raw("CLASSROOM_TLS_KEY").map(PathBuf::from),
            log_format: parsed("CLASSROOM_LOG_FORMAT", text("CLASSROOM_LOG_FORMAT")?)?,
            log_level: text("CLASSROOM_LOG_LEVEL")?,
            database_url: text("CLASSROOM_DATABASE_URL")?,
            school_timezone: text("CLASSROOM_SCHOOL_TIMEZONE")?,
            school_cutoff: text("CLASSROOM_SCHOOL_CUTOFF")?,
            oidc_issuer: text("CLASSROOM_OIDC_ISSUER")?,
            oidc_client_id: text("CLASSROOM_OIDC_CLIENT_ID")?,
            oidc_client_secret: text("CLASSROOM_OIDC_CLIENT_SECRET")?.map(Secret),
            purge_interval: text("CLASSROOM_PURGE_INTERVAL")?,
            trusted_proxies: text("CLASSROOM_TRUSTED_PROXIES")?.map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            audit_retention: text("CLASSROOM_AUDIT_RETENTION")?,
            metrics_listen: parsed(
                "CLASSROOM_METRICS_LISTEN",
                text("CLASSROOM_METRICS_LISTEN")?,
            )?,
            metrics_token: text("CLASSROOM_METRICS_TOKEN")?.map(Secret),
            resume_grace: text("CLASSROOM_RESUME_GRACE")?,
        })
    }

    /// `self` with every key it leaves unset taken from `lower`.
    pub fn over(self, lower: Overrides) -> Overrides {
        Overrides {
            http: self.http.or(lower.http),
            media_bind: self.media_bind.or(lower.media_bind),
            media_tcp: self.media_tcp.or(lower.media_tcp),
            media_tcp_bind: self.media_tcp_bind.or(lower.media_tcp_bind),
            media_announce: self.media_announce.or(lower.media_announce),
            media_bandwidth_estimation: self
                .media_bandwidth_estimation
                .or(lower.media_bandwidth_estimation),
            media_shards: self.media_shards.or(lower.media_shards),
            data_dir: self.data_dir.or(lower.data_dir),
            token_secret: self.token_secret.or(lower.token_secret),
            public_url: self.public_url.or(lower.public_url),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            log_format: self.log_format.or(lower.log_format),
            log_level: self.log_level.or(lower.log_level),
            database_url: self.database_url.or(lower.database_url),
            school_timezone: self.school_timezone.or(lower.school_timezone),
            school_cutoff: self.school_cutoff.or(lower.school_cutoff),
            oidc_issuer: self.oidc_issuer.or(lower.oidc_issuer),
            oidc_client_id: self.oidc_client_id.or(lower.oidc_client_id),
            oidc_client_secret: self.oidc_client_secret.or(lower.oidc_client_secret),
            purge_interval: self.purge_interval.or(lower.purge_interval),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            audit_retention: self.audit_retention.or(lower.audit_retention),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            resume_grace: self.resume_grace.or(lower.resume_grace),
        }
    }
}

impl Config {
    /// Loopback on free ports with a fixed secret: an in-process server for tests, touching
    /// nothing on disk.
    pub fn for_tests() -> Config {
        Config {
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            media: MediaSettings {
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                tcp: true,
                tcp_bind: None,
                announce: Vec::new(),
                bandwidth_estimation: true,
                shards: 0,
                whole_room: classroom_sfu::core::placement::WHOLE_ROOM,
            },
            data_dir: std::env::temp_dir().join("classroom-tests"),
            token_secret: Some(Secret::new("classroom-tests-only-secret-0123456789abcdef")),
            public_url: None,
            tls: None,
            log: LogConfig::default(),
            // One shared in-memory database per server (sqlx names each `:memory:` pool apart).
            database_url: Some("sqlite::memory:".to_owned()),
            school: SchoolConfig::default(),
            oidc: None,
            purge_interval: DEFAULT_PURGE_INTERVAL.to_owned(),
            proxy: ProxySettings::default(),
            audit: AuditSettings::default(),
            metrics: MetricsSettings {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                token: None,
            },
            connections: ConnectionSettings::default(),
            turn: None,
            lesson: LessonSettings::default(),
            // Two test servers link over plain loopback HTTP.
            links: LinksSettings {
                public_url: None,
                allow_http: true,
            },
        }
    }

    /// [`Config::purge_interval`] as a duration: at least a second, at most a day (a longer gap
    /// would let a day's worth of dead sessions pile up for nothing).
    pub fn purge_every(&self) -> Result<std::time::Duration, String> {
        let text = self.purge_interval.trim();
        let every = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
        if every < std::time::Duration::from_secs(1)
            || every > std::time::Duration::from_secs(86_400)
        {
            return Err(format!("{text:?} must be between 1s and 24h"));
        }
        Ok(every)
    }

    /// The database URL in force: `database_url`, or `<data_dir>/classroom.db`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.trim().to_owned(),
            None => format!("sqlite:{}", self.data_dir.join("classroom.db").display()),
        }
    }

    /// The whole precedence chain: file < environment < `cli`, then [`Config::validate`].
    ///
    /// `path` is an explicit config file, which must exist; `None` reads
    /// [`DEFAULT_CONFIG_PATH`] if it exists.
    pub fn load(
        path: Option<&Path>,
        env: Overrides,
        cli: Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Config::from_file(path)?,
            None => match Config::from_file(Path::new(DEFAULT_CONFIG_PATH)) {
                Err(ConfigError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Config::default()
                }
                other => other?,
            },
        };
        config.apply(cli.over(env))?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the file format; missing keys keep their defaults.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Replaces the keys `overrides` sets.
    pub fn apply(&mut self, overrides: Overrides) -> Result<(), ConfigError> {
        let Overrides {
            http,
            media_bind,
            media_tcp,
            media_tcp_bind,
            media_announce,
            media_bandwidth_estimation,
            media_shards,
            data_dir,
            token_secret,
            public_url,
            tls_cert,
            tls_key,
            log_format,
            log_level,
            database_url,
            school_timezone,
            school_cutoff,
            oidc_issuer,
            oidc_client_id,
            oidc_client_secret,
            purge_interval,
            trusted_proxies,
            audit_retention,
            metrics_listen,
            metrics_token,
            resume_grace,
        } = overrides;
        if let Some(v) = resume_grace {
            self.connections.resume_grace = v;
        }
        if let Some(v) = metrics_listen {
            self.metrics.listen = v;
        }
        if let Some(v) = metrics_token {
            self.metrics.token = Some(v);
        }
        if let Some(v) = purge_interval {
            self.purge_interval = v;
        }
        if let Some(v) = trusted_proxies {
            self.proxy.trusted = v;
        }
        if let Some(v) = audit_retention {
            self.audit.retention = v;
        }
        if let Some(v) = database_url {
            self.database_url = Some(v);
        }
        if let Some(v) = school_timezone {
            self.school.timezone = v;
        }
        if let Some(v) = school_cutoff {
            self.school.cutoff = v;
        }
        if oidc_issuer.is_some() || oidc_client_id.is_some() || oidc_client_secret.is_some() {
            let old = self.oidc.take();
            let issuer = oidc_issuer.or_else(|| old.as_ref().map(|o| o.issuer.clone()));
            let client_id = oidc_client_id.or_else(|| old.as_ref().map(|o| o.client_id.clone()));
            let client_secret =
                oidc_client_secret.or_else(|| old.as_ref().and_then(|o| o.client_secret.clone()));
            match (issuer, client_id) {
                (Some(issuer), Some(client_id)) => {
                    self.oidc = Some(OidcSettings {
                        issuer,
                        client_id,
                        client_secret,
                        ..old.unwrap_or_default()
                    })
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "OIDC needs both an issuer and a client id (oidc.issuer / \
                         CLASSROOM_OIDC_ISSUER, oidc.client_id / CLASSROOM_OIDC_CLIENT_ID)"
                            .to_owned(),
                    ));
                }
            }
        }
        if let Some(v) = http {
            self.http = v;
        }
        if let Some(v) = media_bind {
            self.media.bind = v;
        }
        if let Some(v) = media_tcp {
            self.media.tcp = v;
        }
        if let Some(v) = media_tcp_bind {
            self.media.tcp_bind = Some(v);
        }
        if let Some(v) = media_announce {
            self.media.announce = v;
        }
        if let Some(v) = media_bandwidth_estimation {
            self.media.bandwidth_estimation = v;
        }
        if let Some(v) = media_shards {
            self.media.shards = v;
        }
        if let Some(v) = data_dir {
            self.data_dir = v;
        }
        if let Some(v) = token_secret {
            self.token_secret = Some(v);
        }
        if let Some(v) = public_url {
            self.public_url = Some(v);
        }
        if let Some(v) = log_format {
            self.log.format = v;
        }
        if let Some(v) = log_level {
            self.log.level = v;
        }
        // Certificate and key may come from different sources (a key file fixed in the config
        // file, the certificate renewed through the environment), so each replaces only its half.
        if tls_cert.is_some() || tls_key.is_some() {
            let (old_cert, old_key) = match self.tls.take() {
                Some(t) => (Some(t.cert), Some(t.key)),
                None => (None, None),
            };
            match (tls_cert.or(old_cert), tls_key.or(old_key)) {
                (Some(cert), Some(key)) => self.tls = Some(TlsConfig { cert, key }),
                (Some(_), None) => {
                    return Err(ConfigError::Invalid(
                        "a TLS certificate is set but no key (tls.key, CLASSROOM_TLS_KEY, --tls-key)"
                            .to_owned(),
                    ));
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "a TLS key is set but no certificate (tls.cert, CLASSROOM_TLS_CERT, --tls-cert)"
                            .to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rejects settings that cannot work, with a message that names the key to change. Files
    /// (TLS) are only checked when the server loads them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let bind = self.media.bind;
        if let Some(tcp) = self.media.tcp_bind
            && tcp.is_ipv4() != bind.is_ipv4()
        {
            return invalid(format!(
                "media.tcp_bind {tcp} and media.bind {bind} must be of one address family (the \
                 same addresses are announced for both)"
            ));
        }
        if let Some(turn) = &self.turn
            && let Err(e) = turn.check()
        {
            return invalid(format!("turn: {e}"));
        }
        for ip in &self.media.announce {
            if ip.is_unspecified() || ip.is_multicast() {
                return invalid(format!(
                    "media.announce contains {ip}, which is not an address of this host"
                ));
            }
            if bind.is_ipv4() && ip.is_ipv6() {
                return invalid(format!(
                    "media.announce contains the IPv6 address {ip}, but media.bind {bind} is \
                     IPv4 and cannot receive on it"
                ));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir is empty".to_owned());
        }
        if let Some(secret) = &self.token_secret {
            check_secret(secret.expose()).map_err(|m| {
                ConfigError::Invalid(format!("token_secret (CLASSROOM_TOKEN_SECRET) {m}"))
            })?;
        }
        if let Some(url) = &self.public_url {
            check_base_url(url).map_err(|m| {
                ConfigError::Invalid(format!(
                    "public_url (CLASSROOM_PUBLIC_URL, --public-url) {url:?}: {m}"
                ))
            })?;
        }
        if let Some(tls) = &self.tls
            && (tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty())
        {
            return invalid("tls.cert and tls.key must both be file paths".to_owned());
        }
        if let Err(e) = self.school.policy() {
            return invalid(format!(
                "school.timezone / school.cutoff ({:?}, {:?}): {e}",
                self.school.timezone, self.school.cutoff
            ));
        }
        if self
            .database_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            return invalid("database_url is empty".to_owned());
        }
        if let Some(oidc) = &self.oidc
            && (oidc.issuer.trim().is_empty() || oidc.client_id.trim().is_empty())
        {
            return invalid("oidc.issuer and oidc.client_id must not be empty".to_owned());
        }
        if let Some(oidc) = &self.oidc {
            if let Err(e) = oidc.jwks_refresh_every() {
                return invalid(format!("oidc.jwks_refresh {e}"));
            }
            if oidc.allowed_tenants.iter().any(|t| t.trim().is_empty()) {
                return invalid("oidc.allowed_tenants must not hold empty names".to_owned());
            }
        }
        if let Some(token) = &self.metrics.token {
            check_secret(token.expose()).map_err(|m| {
                ConfigError::Invalid(format!("metrics.token (CLASSROOM_METRICS_TOKEN) {m}"))
            })?;
        }
        if self.metrics.listen == self.http && self.http.port() != 0 {
            return invalid(format!(
                "metrics.listen and http are both {}; /metrics needs an address of its own",
                self.http
            ));
        }
        if let Err(e) = self.purge_every() {
            return invalid(format!("purge_interval (CLASSROOM_PURGE_INTERVAL) {e}"));
        }
        if let Err(e) = self.proxy.trusted_proxies() {
            return invalid(format!("proxy.trusted (CLASSROOM_TRUSTED_PROXIES): {e}"));
        }
        if let Err(e) = self.audit.retention() {
            return invalid(format!("audit.retention (CLASSROOM_AUDIT_RETENTION) {e}"));
        }
        if let Err(e) = self.connections.limits() {
            return invalid(e);
        }
        if !(1..=16).contains(&self.lesson.last_n) {
            return invalid(format!(
                "lesson.last_n must be 1 to 16, not {}",
                self.lesson.last_n
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(format!(
                "log.level {:?} is not a tracing filter (try \"info\" or \"info,classroom_sfu=debug\"): {e}",
                self.log.level
            ));
        }
        Ok(())
    }

    /// Base of invite links, without a trailing slash. `http_addr` is where the web server
    /// actually listens (its port may have been 0 in the configuration).
    pub fn public_base_url(&self, http_addr: SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim().trim_end_matches('/').to_owned();
        }
        let tls = self.tls.is_some();
        // A wildcard address is nobody's destination; the media address clients are told about
        // is the best guess at the one they reach this machine by.
        let ip = if http_addr.ip().is_unspecified() {
            self.media.announce.first().copied()
        } else {
            Some(http_addr.ip())
        };
        url_for(tls, ip, http_addr.port())
    }
}

/// `http(s)://host[:port]`, leaving out the scheme's default port; `None` means `localhost`.
pub(crate) fn url_for(tls: bool, ip: Option<IpAddr>, port: u16) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match ip {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(v4) => v4.to_string(),
        None => "localhost".to_owned(),
    };
    let default_port = if tls { 443 } else { 80 };
    if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

pub(crate) fn check_secret(secret: &str) -> Result<(), String> {
    let len = secret.trim().len();
    if len < MIN_SECRET_LEN {
        return Err(format!(
            "is too short ({len} bytes); use at least {MIN_SECRET_LEN} random characters, or \
             leave it unset to have one generated into <data_dir>/token_secret"
        ));
    }
    Ok(())
}

/// Invite links are `{base}/teacher.html?token=...`, so the base must be an absolute http(s)
/// URL that a query can follow.
pub(crate) fn check_base_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return Err("must not contain a query, fragment or spaces".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Overrides, ConfigError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Overrides::from_vars(|k| map.get(k).cloned())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.http, addr("127.0.0.1:8080"));
        assert_eq!(c.media.bind, addr("0.0.0.0:50000"));
        assert!(c.media.announce.is_empty());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.log.format, LogFormat::Human);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.purge_every(), Ok(std::time::Duration::from_secs(3600)));
        assert_eq!(c.metrics.listen, addr("127.0.0.1:9464"));
        assert!(c.metrics.token.is_none());
        let limits = c.connections.limits().unwrap();
        assert_eq!(limits.join_timeout, std::time::Duration::from_secs(10));
        assert_eq!(limits.max_unjoined_per_address, 32);
        assert_eq!(limits.outbox_messages, 256);
        assert_eq!(limits.send_timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            limits.http_header_timeout,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(limits.http_idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(limits.resume_grace, std::time::Duration::from_secs(30));
        c.validate().unwrap();
        Config::for_tests().validate().unwrap();
        let o = env(&[("CLASSROOM_PURGE_INTERVAL", "15m")]).unwrap();
        let mut c = Config::default();
        c.apply(o).unwrap();
        assert_eq!(c.purge_every(), Ok(std::time::Duration::from_secs(900)));
        let o = env(&[("CLASSROOM_RESUME_GRACE", "5s")]).unwrap();
        c.apply(o).unwrap();
        assert_eq!(
            c.connections.limits().unwrap().resume_grace,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn shipped_config_file_parses_to_the_defaults() {
        let text = include_str!("../config/classroom.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_file_documents_every_key() {
        // Uncommenting the examples must give a valid file using every key.
        let text = include_str!("../config/classroom.toml");
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| looks_like_toml(r))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&uncommented).unwrap();
        assert!(c.token_secret.is_some());
        assert!(c.public_url.is_some());
        assert!(c.tls.is_some());
        assert!(c.metrics.token.is_some());
    }

    #[test]
    fn metrics_settings_from_file_env_and_checks() {
        let mut c =
            Config::from_toml("[metrics]\nlisten = \"0.0.0.0:9100\"\ntoken = \"0123456789abcdef\"")
                .unwrap();
        assert_eq!(c.metrics.listen, addr("0.0.0.0:9100"));
        c.validate().unwrap();
        c.apply(
            env(&[
                ("CLASSROOM_METRICS_LISTEN", "127.0.0.1:9200"),
                ("CLASSROOM_METRICS_TOKEN", "fedcba9876543210fedcba"),
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.metrics.listen, addr("127.0.0.1:9200"));
        assert_eq!(
            c.metrics.token.as_ref().map(Secret::expose),
            Some("fedcba9876543210fedcba")
        );
        let e = env(&[("CLASSROOM_METRICS_LISTEN", "9464")]).unwrap_err();
        assert!(e.to_string().contains("CLASSROOM_METRICS_LISTEN"), "{e}");
    }

    #[test]
    fn oidc_trust_settings() {
        let c = Config::from_toml(
            "[oidc]\nissuer = \"https://accounts.google.com\"\nclient_id = \"c\"\n",
        )
        .unwrap();
        let oidc = c.oidc.as_ref().unwrap();
        assert!(oidc.allowed_tenants.is_empty());
        assert_eq!(
            oidc.jwks_refresh_every(),
            Ok(std::time::Duration::from_secs(3600))
        );
        let c = Config::from_toml(
            "[oidc]\nissuer = \"https://accounts.google.com\"\nclient_id = \"c\"\n\
             allowed_tenants = [\"school.example.jp\"]\njwks_refresh = \"10m\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let oidc = c.oidc.as_ref().unwrap();
        assert_eq!(oidc.allowed_tenants, ["school.example.jp"]);
        assert_eq!(
            oidc.jwks_refresh_every(),
            Ok(std::time::Duration::from_secs(600))
        );
        for bad in ["0s", "2d", "soon"] {
            let mut c = c.clone();
            if let Some(o) = c.oidc.as_mut() {
                o.jwks_refresh = bad.to_owned();
            }
            assert!(c.validate().is_err(), "{bad}");
        }
        let mut c = c.clone();
        if let Some(o) = c.oidc.as_mut() {
            o.allowed_tenants.push(" ".to_owned());
        }
        assert!(c.validate().is_err());
        // The environment's issuer keeps the file's trust settings.
        let mut c2 = Config::from_toml(
            "[oidc]\nissuer = \"https://a.example\"\nclient_id = \"c\"\nallowed_tenants = [\"t\"]\n",
        )
        .unwrap();
        c2.apply(env(&[("CLASSROOM_OIDC_ISSUER", "https://b.example")]).unwrap())
            .unwrap();
        let oidc = c2.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://b.example");
        assert_eq!(oidc.allowed_tenants, ["t"]);
    }

    fn looks_like_toml(line: &str) -> bool {
        line.starts_with('[')
            || line
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    }

    #[test]
    fn file_keys_are_optional_and_nested() {
        let c = Config::from_toml(
            r#"
            http = "0.0.0.0:443"
            [media]
            announce = ["203.0.113.7"]
            [tls]
            cert = "/etc/cert.pem"
            key = "/etc/key.pem"
            [log]
            format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(c.http, addr("0.0.0.0:443"));
        assert_eq!(c.media.bind, addr("0.0.0.0:50000"));
        assert_eq!(
            c.media.announce,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/etc/key.pem"));
    }

    #[test]
    fn file_errors_name_the_problem() {
        let e = Config::from_toml("htp = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.contains("htp"), "{e}");
        let e = Config::from_toml("http = \"nowhere\"").unwrap_err();
        assert!(e.contains("http"), "{e}");
        let e = Config::from_toml("[tls]\ncert = \"c.pem\"").unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = Config::from_toml("[log]\nformat = \"xml\"").unwrap_err();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let missing = std::env::temp_dir().join("classroom-no-such-config.toml");
        let e = Config::load(Some(&missing), Overrides::default(), Overrides::default());
        assert!(matches!(e, Err(ConfigError::Read { .. })), "{e:?}");
    }

    #[test]
    fn env_overrides_file_and_cli_overrides_env() {
        let mut c = Config::from_toml(
            r#"
            http = "127.0.0.1:1000"
            data_dir = "/from/file"
            [media]
            bind = "127.0.0.1:2000"
            [log]
            level = "warn"
            "#,
        )
        .unwrap();
        let env = env(&[
            ("CLASSROOM_HTTP", "127.0.0.1:1001"),
            ("CLASSROOM_MEDIA_BIND", "127.0.0.1:2001"),
            ("CLASSROOM_MEDIA_ANNOUNCE", "10.0.0.1, 10.0.0.2"),
            ("CLASSROOM_LOG_FORMAT", "JSON"),
            ("CLASSROOM_TOKEN_SECRET", "0123456789abcdef0123"),
            ("CLASSROOM_PUBLIC_URL", "https://env.example"),
            ("CLASSROOM_MEDIA_BANDWIDTH_ESTIMATION", "false"),
        ])
        .unwrap();
        let cli = Overrides {
            http: Some(addr("127.0.0.1:1002")),
            media_announce: Some(vec!["10.0.0.3".parse().unwrap()]),
            data_dir: Some("/from/cli".into()),
            ..Overrides::default()
        };
        c.apply(cli.over(env)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.http, addr("127.0.0.1:1002"), "cli beats env");
        assert_eq!(c.media.bind, addr("127.0.0.1:2001"), "env beats file");
        assert_eq!(
            c.media.announce,
            vec!["10.0.0.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.data_dir, PathBuf::from("/from/cli"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.log.level, "warn",
            "file value kept when nothing overrides it"
        );
        assert_eq!(
            c.token_secret.as_ref().unwrap().expose(),
            "0123456789abcdef0123"
        );
        assert_eq!(c.public_url.as_deref(), Some("https://env.example"));
        assert!(!c.media.bandwidth_estimation);
        assert!(!c.media.to_media_config().bandwidth_estimation);
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let o = env(&[("CLASSROOM_HTTP", ""), ("CLASSROOM_TOKEN_SECRET", "")]).unwrap();
        assert_eq!(o, Overrides::default());
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        for (var, value) in [
            ("CLASSROOM_HTTP", "localhost"),
            ("CLASSROOM_MEDIA_BIND", "1.2.3.4"),
            ("CLASSROOM_MEDIA_ANNOUNCE", "1.2.3.4,example.org"),
            ("CLASSROOM_LOG_FORMAT", "xml"),
            ("CLASSROOM_MEDIA_BANDWIDTH_ESTIMATION", "maybe"),
        ] {
            let e = env(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var), "{e}");
        }
    }

    #[test]
    fn tls_halves_combine_across_sources() {
        let mut c = Config::from_toml("[tls]\ncert = \"/file/cert\"\nkey = \"/file/key\"").unwrap();
        c.apply(Overrides {
            tls_cert: Some("/env/cert".into()),
            ..Overrides::default()
        })
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/env/cert"));
        assert_eq!(tls.key, PathBuf::from("/file/key"));

        let mut c = Config::default();
        let e = c
            .apply(Overrides {
                tls_cert: Some("/env/cert".into()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("no key"), "{e}");
    }

    #[test]
    fn media_tcp_and_turn_from_the_file() {
        let c = Config::default();
        let m = c.media.to_media_config();
        assert_eq!(m.tcp_bind, Some(addr("0.0.0.0:50000")), "TCP beside UDP");
        let c = Config::from_toml(
            "[media]\nbind = \"10.0.0.2:5000\"\ntcp_bind = \"10.0.0.2:443\"\n\
             [turn]\nurls = [\"turn:t.example.org:3478?transport=udp\"]\nsecret_file = \"/run/turn\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.media.to_media_config().tcp_bind,
            Some(addr("10.0.0.2:443"))
        );
        let turn = c.turn.as_ref().unwrap();
        assert_eq!(
            turn.ttl().unwrap(),
            std::time::Duration::from_secs(12 * 3600)
        );
        let e = turn.load().unwrap_err();
        assert!(e.contains("/run/turn"), "{e}");
        let mut c = Config::from_toml("[media]\ntcp = false").unwrap();
        assert_eq!(c.media.to_media_config().tcp_bind, None);
        c.apply(Overrides {
            media_tcp: Some(true),
            media_tcp_bind: Some(addr("0.0.0.0:3478")),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(
            c.media.to_media_config().tcp_bind,
            Some(addr("0.0.0.0:3478"))
        );
        let o = env(&[("CLASSROOM_MEDIA_TCP", "false")]).unwrap();
        assert_eq!(o.media_tcp, Some(false));
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        let check = |edit: &dyn Fn(&mut Config), needle: &str| {
            let mut c = Config::default();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        };
        check(
            &|c| c.media.tcp_bind = Some(addr("[::]:50000")),
            "media.tcp_bind",
        );
        let turn = |urls: &[&str], secret: Option<&str>, file: Option<&str>, ttl: &str| {
            Some(TurnSettings {
                urls: urls.iter().map(|u| u.to_string()).collect(),
                secret: secret.map(Secret::new),
                secret_file: file.map(PathBuf::from),
                ttl: ttl.to_owned(),
            })
        };
        let u = &["turns:turn.example.org:443?transport=tcp"][..];
        check(
            &|c| c.turn = turn(&[], Some("s"), None, "12h"),
            "no TURN urls",
        );
        check(
            &|c| c.turn = turn(&["stun:x:3478"], Some("s"), None, "12h"),
            "not a turn",
        );
        check(&|c| c.turn = turn(u, None, None, "12h"), "exactly one");
        check(
            &|c| c.turn = turn(u, Some("s"), Some("/f"), "12h"),
            "exactly one",
        );
        check(&|c| c.turn = turn(u, Some("s"), None, "forever"), "ttl");
        check(&|c| c.turn = turn(u, Some("s"), None, "10s"), "lifetime");
        check(
            &|c| c.media.announce = vec!["0.0.0.0".parse().unwrap()],
            "not an address",
        );
        check(
            &|c| c.media.announce = vec!["2001:db8::1".parse().unwrap()],
            "IPv6",
        );
        check(&|c| c.token_secret = Some("short".into()), "too short");
        check(&|c| c.metrics.token = Some("short".into()), "metrics.token");
        check(&|c| c.metrics.listen = c.http, "metrics.listen");
        check(&|c| c.public_url = Some("example.org".into()), "http://");
        check(&|c| c.public_url = Some("https://".into()), "no host");
        check(
            &|c| c.public_url = Some("https://x.org/?a=1".into()),
            "query",
        );
        check(&|c| c.log.level = "info,=[".into(), "log.level");
        check(&|c| c.data_dir = PathBuf::new(), "data_dir");
        check(&|c| c.purge_interval = "soon".into(), "purge_interval");
        check(&|c| c.purge_interval = "0s".into(), "purge_interval");
        check(&|c| c.purge_interval = "2days".into(), "purge_interval");
        check(
            &|c| c.connections.join_timeout = "never".into(),
            "connections.join_timeout",
        );
        check(
            &|c| c.connections.send_timeout = "0s".into(),
            "connections.send_timeout",
        );
        check(
            &|c| c.connections.max_unjoined_per_address = 0,
            "connections.max_unjoined_per_address",
        );
        check(
            &|c| c.connections.outbox_messages = 2,
            "connections.outbox_messages",
        );
        check(
            &|c| c.connections.resume_grace = "5m".into(),
            "connections.resume_grace",
        );
        check(&|c| c.lesson.last_n = 0, "lesson.last_n");
        check(&|c| c.lesson.last_n = 17, "lesson.last_n");

        let mut ok = Config::default();
        ok.validate().unwrap();
        ok.media.bind = addr("0.0.0.0:50000");
        ok.media.announce = vec!["203.0.113.7".parse().unwrap()];
        ok.validate().unwrap();
    }

    #[test]
    fn trusted_proxies_and_audit_retention() {
        let c = Config::default();
        assert!(
            c.proxy.trusted_proxies().unwrap().is_empty(),
            "trust nobody"
        );
        assert_eq!(
            c.audit.retention(),
            Ok(std::time::Duration::from_secs(400 * 86_400))
        );
        let c = Config::from_toml(
            "[proxy]\ntrusted = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"::1\"]\nheader = \"forwarded\"\n\
             [audit]\nretention = \"30d\"",
        )
        .unwrap();
        c.validate().unwrap();
        let proxies = c.proxy.trusted_proxies().unwrap();
        assert!(proxies.trusts("10.9.8.7".parse().unwrap()));
        assert!(proxies.trusts("::1".parse().unwrap()));
        assert!(!proxies.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(proxies.header(), classroom_auth::ForwardedHeader::Forwarded);
        assert_eq!(
            c.audit.retention(),
            Ok(std::time::Duration::from_secs(30 * 86_400))
        );
        assert!(Config::from_toml("[proxy]\nheader = \"x-real-ip\"").is_err());

        let o = env(&[
            ("CLASSROOM_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
            ("CLASSROOM_AUDIT_RETENTION", "2y"),
        ])
        .unwrap();
        let mut c = Config::default();
        c.apply(o).unwrap();
        c.validate().unwrap();
        assert_eq!(c.proxy.trusted, ["127.0.0.1/32", "10.0.0.0/8"]);
        assert!(c.audit.retention().unwrap() > std::time::Duration::from_secs(700 * 86_400));

        let check = |edit: &dyn Fn(&mut Config), needle: &str| {
            let mut c = Config::default();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        };
        check(
            &|c| c.proxy.trusted = vec!["10.0.0.1/8".into()],
            "proxy.trusted (CLASSROOM_TRUSTED_PROXIES): \"10.0.0.1/8\" has bits set",
        );
        check(
            &|c| c.proxy.trusted = vec!["proxy.internal".into()],
            "\"proxy.internal\" is not an IP address",
        );
        check(&|c| c.audit.retention = "forever".into(), "audit.retention");
        check(&|c| c.audit.retention = "1d".into(), "minimum of 7 days");
    }

    #[test]
    fn public_url_defaults_from_the_listening_address() {
        let mut c = Config::default();
        assert_eq!(
            c.public_base_url(addr("127.0.0.1:8080")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(c.public_base_url(addr("[::1]:80")), "http://[::1]");
        assert_eq!(
            c.public_base_url(addr("0.0.0.0:8080")),
            "http://localhost:8080"
        );
        c.media.announce = vec!["203.0.113.7".parse().unwrap()];
        c.tls = Some(TlsConfig {
            cert: "c".into(),
            key: "k".into(),
        });
        assert_eq!(
            c.public_base_url(addr("0.0.0.0:443")),
            "https://203.0.113.7"
        );
        c.public_url = Some("https://school.example/classroom/".into());
        assert_eq!(
            c.public_base_url(addr("0.0.0.0:443")),
            "https://school.example/classroom"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Config {
            token_secret: Some("super-secret-value-123".into()),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
