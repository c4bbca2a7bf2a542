//! The server watched from outside: `/healthz` for load balancers and supervisors, `/metrics`
//! (Prometheus text) for monitoring.
//!
//! `/metrics` tells anyone who can read it how many lessons run and how busy the server is, so
//! it is served on its own address ([`crate::config::MetricsSettings::listen`], loopback by
//! default), and on the public port only when a bearer token is configured (and then only with
//! it). `/healthz` answers on both: it reflects whether the media thread is running, which is
//! what a lesson needs, and says nothing more.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use classroom_portal::purge::PurgeMetrics;
use classroom_sfu::MediaMetrics;
use classroom_signaling::Signaling;

/// What the two endpoints read.
#[derive(Clone)]
pub(crate) struct Observed {
    media: Arc<MediaMetrics>,
    signaling: Signaling,
    purge: Arc<PurgeMetrics>,
    started: Instant,
    started_at: SystemTime,
    /// Hash of the configured bearer token; `None`: no token, `/metrics` only on its own address.
    token_hash: Option<Arc<str>>,
}

impl Observed {
    pub(crate) fn new(
        media: Arc<MediaMetrics>,
        signaling: Signaling,
        purge: Arc<PurgeMetrics>,
        token: Option<&str>,
    ) -> Self {
        Observed {
            media,
            signaling,
            purge,
            started: Instant::now(),
            started_at: SystemTime::now(),
            token_hash: token.map(|t| Arc::from(classroom_auth::token::hash_token(t))),
        }
    }

    /// Routes on the public port: `/healthz`, and `/metrics` only behind the bearer token.
    pub(crate) fn public_routes<S>(&self) -> Router<S> {
        let router = Router::new().route("/healthz", get(healthz));
        let router = if self.token_hash.is_some() {
            router.route("/metrics", get(metrics))
        } else {
            router
        };
        router.with_state(self.clone())
    }

    /// The metrics address: `/metrics` and `/healthz`.
    pub(crate) fn metrics_routes<S>(&self) -> Router<S> {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// Whether `headers` carry the configured token (always, when none is configured).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token_hash else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Compared as hashes: the time a comparison takes says nothing about the token.
        presented.is_some_and(|p| classroom_auth::token::hash_token(p) == **expected)
    }
}

/// 200 `ok` while the media thread shows it is running, 503 once it has not for
/// [`classroom_sfu::heartbeat::STALL_AFTER`]: the process may still answer HTTP, but no lesson
/// gets media.
async fn healthz(State(state): State<Observed>) -> Response {
    let heartbeat = state.media.heartbeat();
    if heartbeat.is_alive() {
        return "ok".into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "media thread stalled: no sign of life for {} s\n",
            heartbeat.age().as_secs()
        ),
    )
        .into_response()
}

async fn metrics(State(state): State<Observed>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metrics\""),
            )],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let mut out = String::with_capacity(8 * 1024);
    state.media.render(&mut out);
    state.signaling.render_metrics(&mut out);
    state.purge.render(&mut out);
    render_process(&mut out, state.started, state.started_at);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn render_process(out: &mut String, started: Instant, started_at: SystemTime) {
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        out,
        "# HELP classroom_build_info Version of the running server\n\
         # TYPE classroom_build_info gauge\n\
         classroom_build_info{{version=\"{version}\"}} 1"
    );
    let _ = writeln!(
        out,
        "# HELP classroom_uptime_seconds Seconds since the server started\n\
         # TYPE classroom_uptime_seconds gauge\n\
         classroom_uptime_seconds {:.3}",
        started.elapsed().as_secs_f64()
    );
    let start_time = started_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since the epoch\n\
         # TYPE process_start_time_seconds gauge\n\
         process_start_time_seconds {start_time:.3}"
    );
    if let Some(rss) = resident_memory_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {rss}"
        );
    }
}

/// Linux only; elsewhere the metric is left out rather than reported as 0.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
