//! The control plane's front door: the `/ws` signaling protocol, join tokens and sessions.
//!
//! A [`Signaling`] owns the registry of rooms and participants and talks to the media plane only
//! through `classroom_sfu::ShardCommand`/`ShardEvent` values.

pub mod gate;
pub mod lesson;
pub mod link_gate;
pub mod link_host;
pub mod protocol;
pub mod resume;
pub mod sdp_check;
pub mod session;
pub mod token;
pub mod track_limits;
pub mod turn;
pub mod whip;

mod lessons;
mod link_dial;
mod link_door;
mod outbox;
mod parked;
mod registry;
mod unjoined;
mod whip_http;
mod whip_live;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, warn};

use classroom_sfu::{PauseReason, ShardCommand, ShardEvent};

use gate::{OpenGate, RoomGate};
use protocol::{ErrorCode, GoodbyeReason, QualityEntry, QualityLabel, ServerMessage};
use registry::{Outbound, Registry};
use token::TokenIssuer;
use unjoined::UnjoinedSockets;

/// Limits of the signaling plane.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// Text frames above this get `message_too_large`.
    pub max_message_bytes: usize,
    /// A socket silent this long is closed (clients ping every 10 s).
    pub idle_timeout: Duration,
    /// A socket that has not joined this long after opening is closed, pings or not.
    pub join_timeout: Duration,
    /// Sockets one client address (an IPv6 /64) may hold open without having joined.
    pub max_unjoined_per_address: usize,
    /// Messages from the room (fan-out, media events) queued for one participant; a participant
    /// whose queue overflows is dropped.
    pub outbox_capacity: usize,
    /// A participant whose socket does not take a message within this long is dropped.
    pub send_timeout: Duration,
    /// A participant whose socket drops without `leave` keeps its place this long, so a
    /// `resume` brings it back as the same participant (zero: leave at once).
    pub resume_grace: Duration,
    /// Reverse proxies whose forwarded header names the client (the unjoined-socket cap counts
    /// clients, not the proxy in front of them all).
    pub trusted_proxies: classroom_auth::TrustedProxies,
    /// With class-visible cameras, pupils receive the cameras of this many most recent pupil
    /// speakers (plus the spotlight and the floor); 1..=16, a teacher may change it per lesson.
    pub lesson_last_n: u8,
    /// TURN credentials handed out in `joined` (`ice_servers`); `None`: an empty list.
    pub turn: Option<turn::TurnRest>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            max_message_bytes: protocol::MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            max_unjoined_per_address: 32,
            outbox_capacity: 256,
            send_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(30),
            trusted_proxies: classroom_auth::TrustedProxies::default(),
            lesson_last_n: 4,
            turn: None,
        }
    }
}

/// Why a participant was dropped for not keeping up, as counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowDrop {
    /// More messages from the room waited than its queue holds.
    QueueFull,
    /// Its socket did not take a message within the send timeout.
    SendTimeout,
}

impl SlowDrop {
    const ALL: [SlowDrop; 2] = [SlowDrop::QueueFull, SlowDrop::SendTimeout];

    fn label(self) -> &'static str {
        match self {
            SlowDrop::QueueFull => "queue_full",
            SlowDrop::SendTimeout => "send_timeout",
        }
    }
}

/// Shared state of all sessions.
pub(crate) struct Inner {
    config: SignalingConfig,
    tokens: TokenIssuer,
    gate: Arc<dyn RoomGate>,
    sfu: mpsc::Sender<ShardCommand>,
    registry: Registry,
    lessons: lessons::Lessons,
    next_participant: AtomicU64,
    shutdown: watch::Sender<bool>,
    sessions: AtomicUsize,
    session_ended: Notify,
    joins: AtomicU64,
    errors: [AtomicU64; ERROR_CODES.len()],
    unjoined: Arc<UnjoinedSockets>,
    slow_drops: [AtomicU64; SlowDrop::ALL.len()],
    /// Participants whose socket dropped, kept for the resume grace.
    parked: parked::Parked,
    /// Resume credentials already spent.
    resumes: resume::Ledger,
    /// Numbers sessions, so a registry entry knows which socket owns it.
    next_session: AtomicU64,
    resumed: AtomicU64,
    whip: whip_live::WhipSessions,
    /// The door of lesson links (`Signaling::attach_links`); none until attached.
    links: std::sync::OnceLock<Arc<dyn link_gate::LinkGate>>,
    /// `link_join` attempts by address.
    link_door: link_door::LinkDoor,
    link_stats: link_host::LinkStats,
}

const ERROR_CODES: [ErrorCode; 29] = [
    ErrorCode::BadJson,
    ErrorCode::UnknownType,
    ErrorCode::BadRequest,
    ErrorCode::MessageTooLarge,
    ErrorCode::UnsupportedVersion,
    ErrorCode::NotJoined,
    ErrorCode::AlreadyJoined,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::PermissionDenied,
    ErrorCode::NotAdmitted,
    ErrorCode::BadSdp,
    ErrorCode::Replaced,
    ErrorCode::Timeout,
    ErrorCode::TooManyConnections,
    ErrorCode::ResumeInvalid,
    ErrorCode::ResumeExpired,
    ErrorCode::ResumeUsed,
    ErrorCode::ChatTooLong,
    ErrorCode::ChatClosed,
    ErrorCode::RateLimited,
    ErrorCode::NotFound,
    ErrorCode::Internal,
    ErrorCode::LinkUnknown,
    ErrorCode::LinkBadKey,
    ErrorCode::LinkRevoked,
    ErrorCode::LinkExpired,
    ErrorCode::LinkWrongRoom,
    ErrorCode::LinkNotRunning,
];

impl Inner {
    fn count_error(&self, code: ErrorCode) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `joined.ice_servers` for `identity`.
    fn ice_servers(&self, identity: &str) -> Vec<protocol::IceServer> {
        let Some(turn) = &self.config.turn else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        vec![turn.ice_server(now, identity)]
    }

    /// The lesson links' gate: the attached one, or [`link_gate::NoLinks`].
    fn links(&self) -> Arc<dyn link_gate::LinkGate> {
        match self.links.get() {
            Some(gate) => gate.clone(),
            None => Arc::new(link_gate::NoLinks),
        }
    }

    fn count_slow_drop(&self, why: SlowDrop) {
        if let Some(i) = SlowDrop::ALL.iter().position(|w| *w == why) {
            self.slow_drops[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The signaling service. Cheap to clone.
#[derive(Clone)]
pub struct Signaling {
    inner: Arc<Inner>,
}

/// A handle to the signaling service that does not keep it alive: for its own gate, which the
/// service holds (a strong handle there would be a cycle, and the service would never drop).
#[derive(Clone)]
pub struct WeakSignaling(std::sync::Weak<Inner>);

impl WeakSignaling {
    pub fn upgrade(&self) -> Option<Signaling> {
        self.0.upgrade().map(|inner| Signaling { inner })
    }
}

impl Signaling {
    pub fn downgrade(&self) -> WeakSignaling {
        WeakSignaling(Arc::downgrade(&self.inner))
    }

    /// Must be called inside a tokio runtime: it spawns the task that relays media events.
    /// Every valid token enters its room ([`OpenGate`]); see [`Signaling::with_gate`].
    pub fn new(
        config: SignalingConfig,
        tokens: TokenIssuer,
        sfu: mpsc::Sender<ShardCommand>,
        events: mpsc::UnboundedReceiver<ShardEvent>,
    ) -> Signaling {
        Signaling::with_gate(config, tokens, Arc::new(OpenGate), sfu, events)
    }

    /// Like [`Signaling::new`], with `gate` deciding who enters a room and hearing who came and
    /// went.
    pub fn with_gate(
        config: SignalingConfig,
        tokens: TokenIssuer,
        gate: Arc<dyn RoomGate>,
        sfu: mpsc::Sender<ShardCommand>,
        events: mpsc::UnboundedReceiver<ShardEvent>,
    ) -> Signaling {
        let inner = Arc::new(Inner {
            unjoined: UnjoinedSockets::new(config.max_unjoined_per_address),
            slow_drops: Default::default(),
            lessons: lessons::Lessons::new(config.lesson_last_n),
            config,
            tokens,
            gate,
            sfu,
            registry: Registry::default(),
            next_participant: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
            sessions: AtomicUsize::new(0),
            session_ended: Notify::new(),
            joins: AtomicU64::new(0),
            errors: Default::default(),
            parked: Default::default(),
            resumes: Default::default(),
            next_session: AtomicU64::new(1),
            resumed: AtomicU64::new(0),
            whip: whip_live::WhipSessions::default(),
            links: std::sync::OnceLock::new(),
            link_door: link_door::LinkDoor::default(),
            link_stats: link_host::LinkStats::default(),
        });
        tokio::spawn(relay_media_events(inner.clone(), events));
        Signaling { inner }
    }

    /// Plugs in the gate of lesson links (docs/PARTNER.md, "Lesson links"): the host's door
    /// for partner servers, and the list of links this server dials. Once; a second call is
    /// ignored (returns `false`).
    ///
    /// Must be called inside a tokio runtime: it spawns the dialer of the links this server
    /// dials (`link_dial.rs`).
    pub fn attach_links(&self, gate: Arc<dyn link_gate::LinkGate>) -> bool {
        if self.inner.links.set(gate).is_err() {
            return false;
        }
        tokio::spawn(link_dial::supervise(Arc::downgrade(&self.inner)));
        true
    }

    /// `GET /ws`, and the WHIP endpoint (`/whip/...`).
    pub fn router(&self) -> axum::Router {
        ws::router(self.inner.clone()).merge(whip_http::router(self.inner.clone()))
    }

    /// Removes whoever holds `identity` in `room` (a guest whose link was revoked): a connected
    /// participant is told `goodbye` `revoked` and leaves, a parked one departs. Returns whether
    /// anyone was there.
    pub async fn remove_identity(&self, room: &str, identity: &str) -> bool {
        let room = classroom_sfu::RoomId::from(room);
        let mut found = false;
        if let Some(parked) = self.inner.parked.take(&room, identity) {
            parked::depart(&self.inner, parked).await;
            found = true;
        }
        if let Some(pid) = self.inner.registry.find_live(&room, identity) {
            self.inner
                .registry
                .send(pid, Outbound::Close(GoodbyeReason::Revoked));
            found = true;
        }
        found
    }

    /// Runs one session over any stream and sink of frames (tests drive it with channels).
    pub async fn run_session<S, K>(&self, stream: S, sink: K)
    where
        S: futures_util::Stream<Item = session::Frame> + Unpin,
        K: futures_util::Sink<session::Frame> + Unpin,
    {
        session::run(self.inner.clone(), stream, sink, None).await;
    }

    /// Tells every participant the server is going away and waits (bounded) for their sessions
    /// to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        // Their sockets are gone already; record them as gone too.
        for who in self.inner.parked.take_all() {
            parked::depart(&self.inner, who).await;
        }
        let deadline = tokio::time::Instant::now() + session::SHUTDOWN_GRACE;
        while self.inner.sessions.load(Ordering::Relaxed) > 0 {
            let ended = self.inner.session_ended.notified();
            if self.inner.sessions.load(Ordering::Relaxed) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                warn!(
                    "sessions still open at shutdown: {}",
                    self.inner.sessions.load(Ordering::Relaxed)
                );
                break;
            }
        }
    }

    /// Rooms, participants and tracks now.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.inner.registry.counts()
    }

    /// Prometheus text for the signaling plane.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let (rooms, participants, tracks) = self.counts();
        let gauges = [
            (
                "classroom_rooms",
                "Rooms with participants or tracks",
                rooms as u64,
            ),
            (
                "classroom_participants",
                "Joined participants",
                participants as u64,
            ),
            ("classroom_tracks", "Published tracks", tracks as u64),
            (
                "classroom_websockets",
                "Open signaling sockets",
                self.inner.sessions.load(Ordering::Relaxed) as u64,
            ),
            (
                "classroom_whip_sessions",
                "Open WHIP ingest sessions",
                self.inner.whip.len() as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let joins = self.inner.joins.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP classroom_joins_total Successful joins\n# TYPE classroom_joins_total counter\nclassroom_joins_total {joins}"
        );
        let _ = writeln!(
            out,
            "# HELP classroom_resumes_total Participants that resumed within the grace period\n# TYPE classroom_resumes_total counter\nclassroom_resumes_total {}\n# HELP classroom_participants_reconnecting Participants within their resume grace period\n# TYPE classroom_participants_reconnecting gauge\nclassroom_participants_reconnecting {}",
            self.inner.resumed.load(Ordering::Relaxed),
            self.inner.parked.len()
        );
        let _ = writeln!(
            out,
            "# HELP classroom_signaling_errors_total Errors sent to clients, by code\n# TYPE classroom_signaling_errors_total counter"
        );
        for (code, n) in ERROR_CODES.iter().zip(&self.inner.errors) {
            let label = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "classroom_signaling_errors_total{{code=\"{label}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP classroom_signaling_slow_drops_total Participants dropped for not reading their socket fast enough, by reason\n# TYPE classroom_signaling_slow_drops_total counter"
        );
        for (why, n) in SlowDrop::ALL.iter().zip(&self.inner.slow_drops) {
            let _ = writeln!(
                out,
                "classroom_signaling_slow_drops_total{{reason=\"{}\"}} {}",
                why.label(),
                n.load(Ordering::Relaxed)
            );
        }
        self.inner.lessons.render_metrics(out);
        self.inner.link_stats.render(out);
    }
}

fn layer_wire(l: classroom_sfu::LayerName) -> protocol::LayerWire {
    match l {
        classroom_sfu::LayerName::Low => protocol::LayerWire::Low,
        classroom_sfu::LayerName::Medium => protocol::LayerWire::Medium,
        classroom_sfu::LayerName::High => protocol::LayerWire::High,
    }
}

/// One word for a badge. Thresholds follow what a lesson tolerates: under 2 % loss and 150 ms
/// the picture and voice are fine; past 5 % or 400 ms, or with video paused, they are not.
pub fn quality_label(rtt_ms: Option<u32>, loss: Option<f32>, any_paused: bool) -> QualityLabel {
    let rtt = rtt_ms.unwrap_or(0);
    let loss = loss.unwrap_or(0.0);
    if any_paused || loss > 0.05 || rtt > 400 {
        QualityLabel::Poor
    } else if loss > 0.02 || rtt > 150 {
        QualityLabel::Fair
    } else {
        QualityLabel::Good
    }
}

/// Turns the media plane's events into messages for the participants concerned.
async fn relay_media_events(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<ShardEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            ShardEvent::SubscriberOffer {
                participant,
                sdp,
                tracks,
            } => {
                let tracks = tracks.iter().map(session::subscribed_info).collect();
                inner.registry.send(
                    participant,
                    Outbound::Send(ServerMessage::SubscriberOffer { sdp, tracks }),
                );
            }
            ShardEvent::TracksUnpublished {
                participant,
                tracks,
            } => {
                for t in tracks {
                    let track_id = t.to_string();
                    if let Some(room) = inner.registry.remove_track(&track_id) {
                        lessons::tracks_changed(&inner, &room, participant, &[], &[t]).await;
                        inner.registry.broadcast(
                            &room,
                            participant,
                            &ServerMessage::TrackUnpublished { track_id },
                        );
                    }
                }
            }
            ShardEvent::ConnectionLost { participant } => {
                debug!(%participant, "a peer connection was lost; closing the session");
                inner
                    .registry
                    .send(participant, Outbound::Close(GoodbyeReason::ConnectionLost));
            }
            ShardEvent::PublishIceRestartWanted { participant } => {
                inner.registry.send(
                    participant,
                    Outbound::Send(ServerMessage::IceRestartWanted {
                        connection: "publish".to_owned(),
                    }),
                );
            }
            ShardEvent::TrackQuality {
                participant,
                track,
                layer,
                paused,
            } => {
                let msg = ServerMessage::TrackQuality {
                    track_id: track.to_string(),
                    layer: layer.map(layer_wire),
                    paused: paused.is_some(),
                    reason: paused.map(|reason| {
                        match reason {
                            PauseReason::WeakNetwork => "weak_network",
                            PauseReason::CodecUnsupported => "codec_unsupported",
                        }
                        .to_owned()
                    }),
                };
                inner.registry.send(participant, Outbound::Send(msg));
            }
            ShardEvent::SetEncodings {
                participant,
                track,
                mid,
                active,
            } => {
                let msg = ServerMessage::SetEncodings {
                    track_id: track.to_string(),
                    mid,
                    active,
                };
                inner.registry.send(participant, Outbound::Send(msg));
            }
            ShardEvent::ActiveSpeakers { room, speakers } => {
                lessons::speakers(&inner, &room, &speakers).await;
            }
            ShardEvent::ConnectionQuality {
                participant,
                rtt_ms,
                loss,
                estimate_bps,
                layers,
                any_paused,
            } => {
                let entry = QualityEntry {
                    participant_id: participant.to_string(),
                    rtt_ms,
                    loss,
                    estimate_kbps: estimate_bps.map(|b| b / 1000),
                    quality: quality_label(rtt_ms, loss, any_paused),
                    layers: layers
                        .into_iter()
                        .map(|(t, l)| (t.to_string(), l.map(layer_wire)))
                        .collect(),
                };
                let msg = ServerMessage::ConnectionQuality {
                    participants: vec![entry],
                };
                // Each participant sees its own link; teachers see everyone's.
                for to in inner.registry.quality_audience(participant) {
                    inner.registry.send(to, Outbound::Send(msg.clone()));
                }
            }
        }
    }
}
