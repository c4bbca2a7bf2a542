//! Signaling, behind a small trait so the same load can target another SFU.
//!
//! The media clients (`client.rs`) never see a signaling message: they take SDP and give SDP.
//! A [`Target`] turns "join as this person", "publish this offer", "here is my answer" into the
//! server's protocol; [`Classroom`] speaks `docs/PROTOCOL.md`.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use classroom_signaling::protocol::{
    ClientMessage, Kind, LayerWire, ServerMessage, Source, WireTrackSpec,
};
use classroom_signaling::token::{Claims, Role, TokenIssuer};
use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a request may wait for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum SignalError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("websocket: {0}")]
    Socket(String),
    #[error("token: {0}")]
    Token(String),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("the server closed the connection: {0}")]
    Closed(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

/// Who joins.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub teacher: bool,
}

/// What a published `m=` section carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishSource {
    Microphone,
    Camera,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// A track in a subscriber offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub mid: String,
    pub track_id: String,
    pub kind: MediaKind,
}

/// The highest video layer a pupil asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxLayer {
    Low,
    Medium,
    High,
}

/// Something the server said on its own account.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    /// An offer for the subscribe connection; answer with [`Session::answer`].
    SubscriberOffer {
        sdp: String,
        tracks: Vec<RemoteTrack>,
    },
    /// Send exactly these rids of the simulcast track on `mid` (dynacast).
    SetEncodings { mid: String, active: Vec<String> },
    /// The server refused a request whose reply nobody waited for; the session goes on.
    Refused { reason: String },
    /// The session is over.
    Closed { reason: String },
}

/// A server the load is aimed at.
pub trait Target: Send + Sync + 'static {
    type Session: Session;
    /// Connects and joins the lesson.
    fn join(
        &self,
        who: &Identity,
    ) -> impl Future<Output = Result<Self::Session, SignalError>> + Send;
}

/// One participant's signaling connection.
pub trait Session: Send + 'static {
    /// Sends a publish offer; returns the answer SDP. Events arriving meanwhile are kept for
    /// [`Session::next_event`].
    fn publish(
        &mut self,
        offer: &str,
        tracks: &[(String, PublishSource)],
    ) -> impl Future<Output = Result<String, SignalError>> + Send;
    /// Answers the latest subscriber offer.
    fn answer(&mut self, sdp: &str) -> impl Future<Output = Result<(), SignalError>> + Send;
    /// Caps the layer received of one video track.
    fn cap_layer(
        &mut self,
        track_id: &str,
        layer: MaxLayer,
    ) -> impl Future<Output = Result<(), SignalError>> + Send;
    /// The next event. Cancel-safe: nothing is lost when the future is dropped.
    fn next_event(&mut self) -> impl Future<Output = SignalEvent> + Send;
    /// Keeps an idle connection open.
    fn keepalive(&mut self) -> impl Future<Output = Result<(), SignalError>> + Send;
    /// Leaves the lesson.
    fn leave(&mut self) -> impl Future<Output = ()> + Send;
    /// When the signaling connection was open (WebSocket upgrade done), if the target knows:
    /// splits the join time into the server's accept and its join handling.
    fn connected_at(&self) -> Option<std::time::Instant> {
        None
    }
}

/// The classroom server: `ws://HOST/ws` and tokens signed with its secret.
#[derive(Debug, Clone)]
pub struct Classroom {
    pub url: String,
    pub room: String,
    pub issuer: TokenIssuer,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A joined classroom participant.
pub struct ClassroomSession {
    ws: Ws,
    next_id: u64,
    queued: VecDeque<SignalEvent>,
    closed: Option<String>,
    connected_at: std::time::Instant,
    /// The teacher gives every publishing pupil the floor with camera, so that pupils' media
    /// reach the class as they did before lessons withheld them (docs/PROTOCOL.md, "Lesson").
    teacher: bool,
    granted: std::collections::HashSet<String>,
    to_grant: VecDeque<String>,
}

impl Target for Classroom {
    type Session = ClassroomSession;

    async fn join(&self, who: &Identity) -> Result<ClassroomSession, SignalError> {
        let role = if who.teacher {
            Role::Teacher
        } else {
            Role::Student
        };
        let claims = Claims::new(
            &self.room,
            &who.id,
            &who.name,
            role,
            Duration::from_secs(6 * 3600),
        );
        let token = self
            .issuer
            .issue(&claims)
            .map_err(|e| SignalError::Token(e.to_string()))?;
        let (ws, _) = tokio::time::timeout(
            REPLY_TIMEOUT,
            tokio_tungstenite::connect_async(self.url.as_str()),
        )
        .await
        .map_err(|_| SignalError::Timeout(REPLY_TIMEOUT))?
        .map_err(|e| SignalError::Connect(e.to_string()))?;
        let mut session = ClassroomSession {
            ws,
            next_id: 1,
            queued: VecDeque::new(),
            closed: None,
            connected_at: std::time::Instant::now(),
            teacher: who.teacher,
            granted: Default::default(),
            to_grant: VecDeque::new(),
        };
        let id = session
            .send(|id| ClientMessage::Join {
                v: Some(1),
                id: Some(id),
                token,
            })
            .await?;
        match session.reply(&id).await? {
            ServerMessage::Joined { .. } => Ok(session),
            other => Err(SignalError::Protocol(format!("{other:?}"))),
        }
    }
}

fn remote_track(t: classroom_signaling::protocol::TrackInfo) -> Option<RemoteTrack> {
    Some(RemoteTrack {
        mid: t.mid?,
        track_id: t.track_id,
        kind: match t.kind {
            Kind::Audio => MediaKind::Audio,
            Kind::Video => MediaKind::Video,
        },
    })
}

impl ClassroomSession {
    /// Sends a request built around a fresh id; returns the id.
    async fn send(
        &mut self,
        build: impl FnOnce(String) -> ClientMessage,
    ) -> Result<String, SignalError> {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let msg = build(id.clone());
        let text = serde_json::to_string(&msg).map_err(|e| SignalError::Protocol(e.to_string()))?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| SignalError::Socket(e.to_string()))?;
        Ok(id)
    }

    /// Reads one server message.
    async fn read(&mut self) -> Result<ServerMessage, SignalError> {
        loop {
            let Some(frame) = self.ws.next().await else {
                return Err(SignalError::Closed("socket ended".into()));
            };
            let frame = frame.map_err(|e| SignalError::Socket(e.to_string()))?;
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| {
                        SignalError::Protocol(format!("undecodable server message ({e}): {text}"))
                    });
                }
                Message::Close(_) => return Err(SignalError::Closed("close frame".into())),
                _ => continue,
            }
        }
    }

    /// Turns a server message into an event if it is one; returns the message otherwise.
    fn classify(&mut self, msg: ServerMessage) -> Option<ServerMessage> {
        let event = match msg {
            ServerMessage::SubscriberOffer { sdp, tracks } => SignalEvent::SubscriberOffer {
                sdp,
                tracks: tracks.into_iter().filter_map(remote_track).collect(),
            },
            ServerMessage::SetEncodings { mid, active, .. } => {
                SignalEvent::SetEncodings { mid, active }
            }
            ServerMessage::Goodbye { reason } => SignalEvent::Closed {
                reason: format!("goodbye: {reason:?}"),
            },
            ServerMessage::Error {
                id: None,
                code,
                message,
                ..
            } if code.closes() => SignalEvent::Closed {
                reason: format!("error {code:?}: {message}"),
            },
            ServerMessage::TrackPublished { track } => {
                if self.teacher && self.granted.insert(track.participant_id.clone()) {
                    self.to_grant.push_back(track.participant_id.clone());
                }
                return Some(ServerMessage::TrackPublished { track });
            }
            other => return Some(other),
        };
        self.queued.push_back(event);
        None
    }

    /// Waits for the reply to request `id`, queueing events that come first.
    async fn reply(&mut self, id: &str) -> Result<ServerMessage, SignalError> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.read())
                .await
                .map_err(|_| SignalError::Timeout(REPLY_TIMEOUT))??;
            let Some(msg) = self.classify(msg) else {
                continue;
            };
            match msg {
                ServerMessage::Error {
                    id: Some(ref rid),
                    code,
                    message,
                    ..
                } if rid == id => {
                    return Err(SignalError::Server {
                        code: format!("{code:?}"),
                        message,
                    });
                }
                ServerMessage::Joined {
                    id: Some(ref r), ..
                }
                | ServerMessage::PublishAnswer {
                    id: Some(ref r), ..
                }
                | ServerMessage::Pong { id: Some(ref r) }
                    if r == id =>
                {
                    return Ok(msg);
                }
                _ => continue,
            }
        }
    }
}

impl Session for ClassroomSession {
    async fn publish(
        &mut self,
        offer: &str,
        tracks: &[(String, PublishSource)],
    ) -> Result<String, SignalError> {
        let specs = tracks
            .iter()
            .map(|(mid, source)| WireTrackSpec {
                mid: mid.clone(),
                source: match source {
                    PublishSource::Microphone => Source::Microphone,
                    PublishSource::Camera => Source::Camera,
                },
                person: None,
            })
            .collect();
        let id = self
            .send(|id| ClientMessage::Publish {
                v: None,
                id: Some(id),
                sdp: offer.to_owned(),
                tracks: specs,
            })
            .await?;
        match self.reply(&id).await? {
            ServerMessage::PublishAnswer { sdp, .. } => Ok(sdp),
            other => Err(SignalError::Protocol(format!("{other:?}"))),
        }
    }

    async fn answer(&mut self, sdp: &str) -> Result<(), SignalError> {
        self.send(|_| ClientMessage::SubscriberAnswer {
            v: None,
            id: None,
            sdp: sdp.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn cap_layer(&mut self, track_id: &str, layer: MaxLayer) -> Result<(), SignalError> {
        let max_layer = match layer {
            MaxLayer::Low => LayerWire::Low,
            MaxLayer::Medium => LayerWire::Medium,
            MaxLayer::High => LayerWire::High,
        };
        self.send(|id| ClientMessage::SetTrackQuality {
            v: None,
            id: Some(id),
            track_id: track_id.to_owned(),
            max_layer,
        })
        .await
        .map(drop)
    }

    async fn next_event(&mut self) -> SignalEvent {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return event;
            }
            if let Some(reason) = &self.closed {
                return SignalEvent::Closed {
                    reason: reason.clone(),
                };
            }
            if let Some(pid) = self.to_grant.pop_front() {
                let grant = serde_json::json!({"type": "grant_floor", "participant_id": pid,
                    "camera": true});
                if let Err(e) = self.ws.send(Message::text(grant.to_string())).await {
                    self.closed = Some(format!("grant_floor: {e}"));
                }
                continue;
            }
            match self.read().await {
                Ok(msg) => {
                    if let Some(ServerMessage::Error { code, message, .. }) = self.classify(msg) {
                        // An error to a request whose reply nobody waits for (an answer, a cap):
                        // the session goes on, but the run should hear of it.
                        self.queued.push_back(SignalEvent::Refused {
                            reason: format!("error {code:?}: {message}"),
                        });
                    }
                }
                Err(e) => self.closed = Some(e.to_string()),
            }
        }
    }

    async fn keepalive(&mut self) -> Result<(), SignalError> {
        self.send(|id| ClientMessage::Ping {
            v: None,
            id: Some(id),
        })
        .await
        .map(drop)
    }

    async fn leave(&mut self) {
        let _ = self
            .send(|_| ClientMessage::Leave { v: None, id: None })
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    fn connected_at(&self) -> Option<std::time::Instant> {
        Some(self.connected_at)
    }
}
