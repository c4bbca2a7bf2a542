//! The whole server in one process: the media plane (UDP), the signaling plane, the web server
//! (pages, `/ws`, `/healthz`) and the metrics listener (`/metrics`, see `observe`), started
//! together and stopped in order.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use classroom_sfu::{MediaHold, Sfu};
use classroom_signaling::token::{Claims, Role, TokenError, TokenIssuer};
use classroom_signaling::{Signaling, SignalingConfig};

use classroom_portal::purge::{self, PurgeMetrics};
use classroom_portal::{Portal, gate::LessonGate};

pub use crate::config::Config;
use crate::config::{ConnectionLimits, TlsConfig, url_for};
use crate::http_timeouts::{IdleAcceptor, limit_request_heads};
use crate::observe::Observed;
use crate::secret::{self, SecretSource};

/// How long open HTTP requests get to finish once shutdown starts.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// How long the media thread gets to close its connections.
const MEDIA_STOP: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last arrivals and departures to be stored.
const PRESENCE_FLUSH: Duration = Duration::from_secs(5);

/// A running server. Dropping it without [`ServerHandle::shutdown`] stops the web server
/// abruptly but leaves the media thread to the end of the process.
pub struct ServerHandle {
    /// Where the web server listens (the real port when the configuration said 0).
    pub http_addr: SocketAddr,
    /// The bound media socket.
    pub media_addr: SocketAddr,
    /// The media addresses given to browsers.
    pub media_announced: Vec<SocketAddr>,
    /// The bound ICE-TCP listener, if enabled.
    pub media_tcp_addr: Option<SocketAddr>,
    /// The ICE-TCP addresses given to browsers.
    pub media_announced_tcp: Vec<SocketAddr>,
    /// Where `/metrics` is served (plain HTTP; the real port when the configuration said 0).
    pub metrics_addr: SocketAddr,
    public_url: String,
    tls: bool,
    issuer: TokenIssuer,
    signaling: Signaling,
    db: classroom_domain::Db,
    http: axum_server::Handle,
    http_task: Option<JoinHandle<io::Result<()>>>,
    metrics_http: axum_server::Handle,
    metrics_task: Option<JoinHandle<io::Result<()>>>,
    sfu: Option<Sfu>,
    purge_task: Option<JoinHandle<()>>,
    alive_task: Option<JoinHandle<()>>,
    gate: Arc<LessonGate>,
}

/// Starts everything; returns once every socket is bound and the server is accepting.
pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
    config.validate()?;
    // Always, even with PostgreSQL and a configured secret: roster uploads are stored here.
    private_data_dir(&config)?;
    classroom_portal::upload::remove_leftovers(&config.data_dir).with_context(|| {
        format!(
            "cannot remove old roster uploads in {}",
            config.data_dir.display()
        )
    })?;
    let (secret, secret_source) = secret::resolve(&config)?;
    match &secret_source {
        SecretSource::Config => info!("token secret from the configuration"),
        SecretSource::File(path) | SecretSource::Generated(path) => {
            info!(path = %path.display(), "token secret from the data directory")
        }
    }
    let issuer = TokenIssuer::new(secret.expose().as_bytes());
    // reqwest (OIDC) and the TLS listener both need a rustls provider chosen explicitly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let policy = config
        .school
        .policy()
        .map_err(|e| anyhow!("school.timezone / school.cutoff: {e}"))?;
    let db = open_db(&config).await?;
    // Before anyone can join: what is open now was left open by a killed predecessor.
    let closed = classroom_domain::close_presence_left_open(&db, unix_now())
        .await
        .context("cannot close the attendance a previous run left open")?;
    if closed > 0 {
        warn!(
            closed,
            "the previous run stopped without recording departures; closed those visits at its last sign of life"
        );
    }
    let purge_every = config
        .purge_every()
        .map_err(|e| anyhow!("purge_interval: {e}"))?;
    let audit_retention = config
        .audit
        .retention()
        .map_err(|e| anyhow!("audit.retention: {e}"))?;
    let trusted_proxies = config
        .proxy
        .trusted_proxies()
        .map_err(|e| anyhow!("proxy.trusted: {e}"))?;
    let limits = config.connections.limits().map_err(|e| anyhow!(e))?;
    let turn = match &config.turn {
        Some(t) => Some(t.load().map_err(|e| anyhow!("turn: {e}"))?),
        None => None,
    };

    // Everything that commonly fails (port taken, unreadable certificate) comes before the
    // media thread starts, so an error leaves nothing running.
    let listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("cannot listen on {} (http)", config.http))?;
    listener.set_nonblocking(true)?;
    let http_addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(tls) => Some(load_tls(tls).await?),
        None => None,
    };
    let metrics_listener =
        std::net::TcpListener::bind(config.metrics.listen).with_context(|| {
            format!(
                "cannot listen on {} (metrics.listen)",
                config.metrics.listen
            )
        })?;
    metrics_listener.set_nonblocking(true)?;
    let metrics_addr = metrics_listener.local_addr()?;

    let mut sfu = classroom_sfu::start(config.media.to_media_config())
        .context("cannot start the media plane")?;
    let events = sfu
        .events
        .take()
        .ok_or_else(|| anyhow!("the media plane's events were already taken"))?;
    let gate = LessonGate::new(db.clone());
    let signaling = Signaling::with_gate(
        SignalingConfig {
            lesson_last_n: config.lesson.last_n,
            turn,
            ..signaling_config(&limits, trusted_proxies.clone())
        },
        issuer.clone(),
        gate.clone(),
        sfu.commands.clone(),
        events,
    );
    gate.attach(&signaling);
    signaling.attach_links(Arc::new(classroom_portal::link_gate::PortalLinkGate::new(
        db.clone(),
        policy.timezone,
    )));

    let public_url = config.public_base_url(http_addr);
    let oidc = match &config.oidc {
        Some(settings) => {
            let mut oidc_config = classroom_auth::oidc::OidcConfig::new(
                settings.issuer.trim(),
                settings.client_id.trim(),
                settings
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned()),
                format!("{public_url}/auth/oidc/callback"),
            );
            oidc_config.allowed_tenants = settings
                .allowed_tenants
                .iter()
                .map(|t| t.trim().to_owned())
                .collect();
            oidc_config.jwks_refresh = settings
                .jwks_refresh_every()
                .map_err(|e| anyhow!("oidc.jwks_refresh: {e}"))?;
            match classroom_auth::oidc::OidcClient::discover(oidc_config).await {
                Ok(client) => Some(client),
                Err(e) => {
                    // The links keep working; an identity provider that is down at startup must
                    // not keep lessons from running.
                    tracing::error!(issuer = %settings.issuer, "OIDC discovery failed, OIDC sign-in is off: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let portal = Arc::new(
        Portal::new(
            db.clone(),
            policy,
            csrf_key(secret.expose()),
            &public_url,
            issuer.clone(),
            oidc,
            config.data_dir.clone(),
        )
        .with_trusted_proxies(trusted_proxies)
        .with_links(
            classroom_portal::lesson_links::Links::new(
                config.links.public_url.as_deref().unwrap_or(&public_url),
                config.links.allow_http,
                secret.expose().as_bytes(),
            )
            .map_err(|e| anyhow!(e))?,
        ),
    );
    // A revoked guest link removes its holder from the room.
    let _ = portal.signaling.set(signaling.clone());

    let purge_metrics =
        Arc::new(PurgeMetrics::default().with_chat_keeper(gate.chat.metrics.clone()));
    let purge_task = purge::spawn(
        db.clone(),
        purge_metrics.clone(),
        purge_every,
        audit_retention,
    );
    let alive_task = spawn_alive_records(db.clone());
    let observed = Observed::new(
        sfu.metrics.clone(),
        signaling.clone(),
        purge_metrics,
        config.metrics.token.as_ref().map(|t| t.expose()),
    );
    let app = router(&signaling, &observed, portal);
    let metrics_http = axum_server::Handle::new();
    let metrics_task = tokio::spawn(
        axum_server::from_tcp(metrics_listener)
            .handle(metrics_http.clone())
            .serve(observed.metrics_routes::<()>().into_make_service()),
    );
    if !metrics_addr.ip().is_loopback() && config.metrics.token.is_none() {
        warn!(
            %metrics_addr,
            "/metrics is served without a token on an address other machines can reach; set \
             metrics.token or listen on loopback"
        );
    }
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let http = axum_server::Handle::new();
    let idle = IdleAcceptor::new(limits.http_idle_timeout);
    let http_task = match tls {
        Some(tls) => {
            // Idle time counts from the TCP accept, so a stalled TLS handshake is bounded too.
            let acceptor = RustlsAcceptor::new(tls).acceptor(idle);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
            limit_request_heads(server.http_builder(), limits.http_header_timeout);
            tokio::spawn(server.handle(http.clone()).serve(make_service))
        }
        None => {
            let mut server = axum_server::from_tcp(listener).acceptor(idle);
            limit_request_heads(server.http_builder(), limits.http_header_timeout);
            tokio::spawn(server.handle(http.clone()).serve(make_service))
        }
    };

    if !is_secure_context(&public_url) {
        warn!(
            %public_url,
            "browsers allow camera and microphone only on https pages (or http://localhost): \
             pupils on other machines will not be able to send audio or video; configure tls, \
             or a TLS reverse proxy and public_url"
        );
    }
    info!(
        http = %http_addr,
        tls = config.tls.is_some(),
        media = %sfu.local_addr,
        announced = ?sfu.announced,
        media_tcp = ?sfu.tcp_addr,
        metrics = %metrics_addr,
        %public_url,
        "classroom is running"
    );
    Ok(ServerHandle {
        http_addr,
        media_addr: sfu.local_addr,
        media_announced: sfu.announced.clone(),
        media_tcp_addr: sfu.tcp_addr,
        media_announced_tcp: sfu.announced_tcp.clone(),
        metrics_addr,
        public_url,
        tls: config.tls.is_some(),
        issuer,
        signaling,
        db,
        http,
        http_task: Some(http_task),
        metrics_http,
        metrics_task: Some(metrics_task),
        sfu: Some(sfu),
        purge_task: Some(purge_task),
        alive_task: Some(alive_task),
        gate,
    })
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    classroom_portal::unix_now()
}

/// Records every [`classroom_domain::ALIVE_EVERY_SECS`] that the server is alive, so that a
/// start after a crash knows when the previous run's connections ended.
fn spawn_alive_records(db: classroom_domain::Db) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(classroom_domain::ALIVE_EVERY_SECS);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = classroom_domain::record_alive(&db, unix_now()).await {
                warn!("cannot record that the server is alive: {e}");
            }
        }
    })
}

impl ServerHandle {
    /// The web server as reachable from this machine, e.g. `http://127.0.0.1:8080`.
    pub fn http_url(&self) -> String {
        let ip = match self.http_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        url_for(self.tls, Some(ip), self.http_addr.port())
    }

    /// The signaling endpoint as reachable from this machine, e.g. `ws://127.0.0.1:8080/ws`.
    pub fn ws_url(&self) -> String {
        let http = self.http_url();
        match http.strip_prefix("http") {
            Some(rest) => format!("ws{rest}/ws"),
            None => format!("{http}/ws"),
        }
    }

    /// Base of invite links: `public_url`, or derived from the listening address.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// A token for `room` with the role's default permissions, valid for a day.
    pub fn issue_token(&self, room: &str, identity: &str, name: &str, role: Role) -> String {
        let claims = Claims::new(room, identity, name, role, Duration::from_secs(24 * 3600));
        self.issue_token_with(&claims)
    }

    /// A token for arbitrary claims, signed with the server's secret. Takes `Claims` or
    /// `&Claims`.
    pub fn issue_token_with(&self, claims: impl std::borrow::Borrow<Claims>) -> String {
        // HS256 over claims we built ourselves has no failure mode but a bug.
        self.try_issue_token(claims.borrow())
            .expect("signing a token with the server's key")
    }

    pub fn try_issue_token(&self, claims: &Claims) -> Result<String, TokenError> {
        self.issuer.issue(claims)
    }

    /// An invite link for `claims`, under [`ServerHandle::public_url`].
    pub fn invite_link(&self, claims: &Claims) -> Result<String, TokenError> {
        let token = self.issuer.issue(claims)?;
        Ok(crate::invite::link(&self.public_url, claims.role, &token))
    }

    /// A test hook: blocks the media thread until the returned guard is dropped, as a thread stuck
    /// in a slow call would (`/healthz` then fails). Not reachable from the network.
    pub async fn hold_media_thread(&self) -> anyhow::Result<MediaHold> {
        let sfu = self
            .sfu
            .as_ref()
            .ok_or_else(|| anyhow!("the media plane has stopped"))?;
        Ok(sfu.hold().await?)
    }

    /// A test hook: sets who receives a published track (`TR_…`) directly on the media plane,
    /// as the lesson's rules do, and returns once it applies. Not reachable from the network.
    pub async fn set_track_audience(
        &self,
        track_id: &str,
        audience: classroom_sfu::Audience,
    ) -> anyhow::Result<()> {
        let track = classroom_sfu::TrackId::parse(track_id)
            .ok_or_else(|| anyhow!("not a track id: {track_id}"))?;
        let sfu = self
            .sfu
            .as_ref()
            .ok_or_else(|| anyhow!("the media plane has stopped"))?;
        Ok(sfu.set_audience(track, audience).await?)
    }

    /// The database the server uses (rosters, lessons, attendance, sessions).
    pub fn db(&self) -> &classroom_domain::Db {
        &self.db
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn wait(self) -> anyhow::Result<()> {
        let stop = shutdown_signal().context("cannot install signal handlers")?;
        self.run_until(stop).await
    }

    /// Runs until `stop` completes, then shuts down gracefully. Returns early with an error if
    /// the web server fails on its own (after still shutting the rest down).
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Some(mut http_task) = self.http_task.take() else {
            return self.shutdown_inner().await;
        };
        tokio::select! {
            () = stop => {
                self.http_task = Some(http_task);
                self.shutdown_inner().await
            }
            result = &mut http_task => {
                let failure = match result {
                    Ok(Ok(())) => anyhow!("the web server stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("the web server failed"),
                    Err(e) => anyhow::Error::new(e).context("the web server task failed"),
                };
                if let Err(e) = self.shutdown_inner().await {
                    warn!("shutdown after the web server failed: {e:#}");
                }
                Err(failure)
            }
        }
    }

    /// Stops in dependency order: no new connections; every participant told `goodbye
    /// server_shutdown`; open HTTP requests drained; then the media plane, whose peers are gone.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.shutdown_inner().await {
            warn!("unclean shutdown: {e:#}");
        }
    }

    async fn shutdown_inner(&mut self) -> anyhow::Result<()> {
        info!("shutting down");
        let started = Instant::now();
        // Stop accepting first, so nobody joins between the goodbyes and the end. Upgraded
        // WebSockets are not HTTP connections any more and stay open for the goodbye.
        self.http.graceful_shutdown(Some(HTTP_DRAIN));
        self.metrics_http.graceful_shutdown(Some(HTTP_DRAIN));
        self.signaling.shutdown().await;
        let mut result = Ok(());
        if let Some(task) = self.http_task.take() {
            match tokio::time::timeout(HTTP_DRAIN + Duration::from_secs(1), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = Err(anyhow::Error::new(e).context("web server")),
                Ok(Err(e)) => result = Err(anyhow::Error::new(e).context("web server task")),
                Err(_) => {
                    self.http.shutdown();
                    result = Err(anyhow!("the web server did not stop within {HTTP_DRAIN:?}"));
                }
            }
        }
        if let Some(task) = self.metrics_task.take()
            && tokio::time::timeout(HTTP_DRAIN + Duration::from_secs(1), task)
                .await
                .is_err()
        {
            self.metrics_http.shutdown();
            warn!("the metrics listener did not stop within {HTTP_DRAIN:?}");
        }
        if let Some(sfu) = self.sfu.take() {
            let joined = tokio::task::spawn_blocking(move || sfu.shutdown());
            match tokio::time::timeout(MEDIA_STOP, joined).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(anyhow::Error::new(e).context("media thread")),
                Err(_) => {
                    result = Err(anyhow!(
                        "the media thread did not stop within {MEDIA_STOP:?}"
                    ))
                }
            }
        }
        if let Some(task) = self.purge_task.take() {
            task.abort();
        }
        if let Some(task) = self.alive_task.take() {
            task.abort();
        }
        if tokio::time::timeout(PRESENCE_FLUSH, self.gate.flush())
            .await
            .is_err()
        {
            warn!("presence records still unwritten after {PRESENCE_FLUSH:?}; closing anyway");
        }
        self.db.close().await;
        info!(elapsed = ?started.elapsed(), "stopped");
        result
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.http_task.is_some() {
            self.http.shutdown();
        }
        if self.metrics_task.is_some() {
            self.metrics_http.shutdown();
        }
        if let Some(task) = self.purge_task.take() {
            task.abort();
        }
        if let Some(task) = self.alive_task.take() {
            task.abort();
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed by this call, not on
/// first poll, so a signal that arrives during startup is not lost (or fatal).
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => info!("SIGINT received"),
                _ = terminate.recv() => info!("SIGTERM received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Whether browsers treat pages under `url` as a secure context, the condition for
/// `getUserMedia`.
fn is_secure_context(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn load_tls(tls: &TlsConfig) -> anyhow::Result<RustlsConfig> {
    // Several rustls backends may be compiled in (through dependencies); rustls then refuses
    // to pick one by itself. An already installed provider is fine too.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| {
            format!(
                "cannot load the TLS certificate {} and key {}",
                tls.cert.display(),
                tls.key.display()
            )
        })
}

fn signaling_config(
    limits: &ConnectionLimits,
    trusted_proxies: classroom_auth::TrustedProxies,
) -> SignalingConfig {
    SignalingConfig {
        trusted_proxies,
        join_timeout: limits.join_timeout,
        max_unjoined_per_address: limits.max_unjoined_per_address,
        outbox_capacity: limits.outbox_messages,
        send_timeout: limits.send_timeout,
        resume_grace: limits.resume_grace,
        ..SignalingConfig::default()
    }
}

/// Opens (creating the SQLite file under `data_dir` by default) and migrates the database.
/// Creates the data directory first, 0700, whichever command gets here first.
pub async fn open_db(config: &Config) -> anyhow::Result<classroom_domain::Db> {
    private_data_dir(config)?;
    let url = config.database_url();
    let db = classroom_domain::Db::connect(&url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    Ok(db)
}

/// Creates the data directory, 0700 (see [`crate::data_dir`]).
pub fn private_data_dir(config: &Config) -> anyhow::Result<()> {
    crate::data_dir::create_private(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The CSRF key: one-way derived from the token secret, so tokens survive restarts and the CSRF
/// key reveals nothing of the secret that signs join tokens.
fn csrf_key(secret: &str) -> classroom_auth::session::CsrfKey {
    let derived = classroom_auth::token::hash_token(&format!("classroom-csrf-key-v1\0{secret}"));
    classroom_auth::session::CsrfKey::from_secret(derived.as_bytes())
}

fn router(signaling: &Signaling, observed: &Observed, portal: Arc<Portal>) -> Router {
    crate::web::router()
        .merge(observed.public_routes())
        .merge(classroom_portal::router(portal))
        .merge(signaling.router())
}

#[cfg(test)]
mod tests {
    use super::is_secure_context;

    #[test]
    fn secure_contexts() {
        for url in [
            "https://school.example",
            "http://localhost:8080",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://app.localhost",
        ] {
            assert!(is_secure_context(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8080",
            "http://school.example",
            "http://[2001:db8::1]",
        ] {
            assert!(!is_secure_context(url), "{url}");
        }
    }
}
