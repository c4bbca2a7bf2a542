//! One WebSocket connection, from `join` to goodbye.
//!
//! The session is generic over a stream and a sink of [`Frame`]s, so tests can drive it with
//! channels; `ws.rs` adapts axum's WebSocket to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use classroom_sfu::{
    Audience, LayerName, ParticipantId, PublishedTrack, RoomId, SfuError, ShardCommand,
    SubscribedTrack, TrackId, TrackKind, TrackSource, TrackSpec,
};

use crate::gate::Entrant;
use crate::lesson::state::Member;
use crate::lessons;
use crate::outbox::{self, Outbox};
use crate::parked::Departure;
use crate::protocol::{
    self, ClientMessage, ErrorCode, GoodbyeReason, Kind, LayerWire, ParticipantInfo, ResumeWire,
    ServerMessage, Source, TrackInfo, WireTrackSpec,
};
use crate::registry::Outbound;
use crate::resume::ResumeError;
use crate::sdp_check;
use crate::token::{Claims, Permission, TokenError};
use crate::track_limits;
use crate::unjoined::UnjoinedSlot;
use crate::{Inner, SlowDrop};

mod link;
pub(crate) use link::Seat;

/// A WebSocket frame as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// A binary frame: not part of the protocol.
    Binary(usize),
    /// Close with a WebSocket close code and reason.
    Close(u16, String),
}

/// WebSocket close codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
/// "Try Again Later" (IANA WebSocket close code registry).
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

struct Joined {
    id: ParticipantId,
    room: RoomId,
    claims: Claims,
    /// As the gate saw them at the door, to tell it of the departure.
    entrant: Entrant,
    /// A lesson link's seat and the people it brings (`session/link.rs`).
    link: Option<link::Link>,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
    /// End at once, without a goodbye the client would not read anyway.
    Drop(SlowDrop),
}

/// Why nothing more can be written to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The client did not take a frame within the send timeout.
    SendTimeout,
    /// The socket is gone.
    Closed,
}

struct Session<K> {
    inner: Arc<Inner>,
    sink: K,
    outbox: Outbox,
    joined: Option<Joined>,
    /// Counts this socket against its address's unjoined sockets until it joins.
    unjoined: Option<UnjoinedSlot>,
    /// Set by the first failed write; later writes are skipped and the session ends.
    broken: Option<Broken>,
    /// Which registry entry this session owns (see `Registry::detach`).
    serial: u64,
    /// The socket went away without `leave`: keep the participant for the resume grace.
    park: bool,
}

/// Runs a session until the client leaves, the socket closes, the client falls behind, or the
/// server shuts down. `unjoined` is the socket's place under its address's cap, given back on
/// join.
pub(crate) async fn run<S, K>(inner: Arc<Inner>, stream: S, sink: K, unjoined: Option<UnjoinedSlot>)
where
    S: Stream<Item = Frame> + Unpin,
    K: Sink<Frame> + Unpin,
{
    run_with(inner, stream, sink, unjoined, None).await;
}

/// Runs a session whose lesson link the dialer seats at once (`link_dial.rs`), over an
/// in-memory socket.
pub(crate) async fn run_seated<S, K>(inner: Arc<Inner>, stream: S, sink: K, seat: Seat)
where
    S: Stream<Item = Frame> + Unpin,
    K: Sink<Frame> + Unpin,
{
    run_with(inner, stream, sink, None, Some(seat)).await;
}

async fn run_with<S, K>(
    inner: Arc<Inner>,
    mut stream: S,
    sink: K,
    unjoined: Option<UnjoinedSlot>,
    seat: Option<Seat>,
) where
    S: Stream<Item = Frame> + Unpin,
    K: Sink<Frame> + Unpin,
{
    let (outbox, mut inbox, overflow) = outbox::outbox(inner.config.outbox_capacity);
    let mut shutdown = inner.shutdown.subscribe();
    let idle = inner.config.idle_timeout;
    let join_timeout = inner.config.join_timeout;
    inner.sessions.fetch_add(1, Ordering::Relaxed);
    let mut s = Session {
        inner: inner.clone(),
        sink,
        outbox,
        joined: None,
        unjoined,
        broken: None,
        serial: inner.next_session.fetch_add(1, Ordering::Relaxed),
        park: false,
    };
    let mut deadline = Instant::now() + idle;
    // Pings keep a socket from being idle, not from having to join.
    let join_deadline = Instant::now() + join_timeout;
    let mut close_sent = false;
    // A seat the media plane could not take ends at once (its error was sent).
    let seated = match seat {
        Some(seat) => matches!(s.seat_link(None, seat).await, Flow::Continue),
        None => true,
    };
    loop {
        if !seated {
            break;
        }
        let flow = tokio::select! {
            frame = stream.next() => match frame {
                None | Some(Frame::Close(..)) => { s.park = true; break }
                Some(frame) => {
                    deadline = Instant::now() + idle;
                    s.on_frame(frame).await
                }
            },
            out = inbox.recv() => match out {
                Some(Outbound::Send(msg)) => { s.send(&msg).await; Flow::Continue }
                Some(Outbound::Close(reason)) => {
                    if reason == GoodbyeReason::Replaced {
                        s.send(&ServerMessage::error(None, ErrorCode::Replaced, "the same identity joined from another connection")).await;
                    }
                    s.send(&ServerMessage::Goodbye { reason }).await;
                    Flow::Close(CLOSE_POLICY, "goodbye")
                }
                Some(Outbound::Detach) => {
                    // The participant lives on in the session that resumed it.
                    s.joined = None;
                    s.send(&ServerMessage::Goodbye { reason: GoodbyeReason::Replaced }).await;
                    Flow::Close(CLOSE_POLICY, "resumed elsewhere")
                }
                None => Flow::Continue,
            },
            () = overflow.overflowed() => Flow::Drop(SlowDrop::QueueFull),
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                s.send(&ServerMessage::Goodbye { reason: GoodbyeReason::ServerShutdown }).await;
                Flow::Close(CLOSE_GOING_AWAY, "server shutdown")
            },
            _ = tokio::time::sleep_until(deadline) => {
                s.send(&ServerMessage::error(None, ErrorCode::Timeout, format!("no message for {} s", idle.as_secs()))).await;
                s.send(&ServerMessage::Goodbye { reason: GoodbyeReason::Timeout }).await;
                // A silent socket is usually a dropped link: keep the place for a resume.
                s.park = true;
                Flow::Close(CLOSE_POLICY, "idle")
            },
            _ = tokio::time::sleep_until(join_deadline), if s.joined.is_none() => {
                s.send(&ServerMessage::error(None, ErrorCode::Timeout, format!("no join within {join_timeout:?}"))).await;
                s.send(&ServerMessage::Goodbye { reason: GoodbyeReason::Timeout }).await;
                Flow::Close(CLOSE_POLICY, "join timeout")
            },
        };
        let flow = match s.broken {
            Some(Broken::SendTimeout) => Flow::Drop(SlowDrop::SendTimeout),
            Some(Broken::Closed) => {
                s.park = true;
                break;
            }
            None => flow,
        };
        match flow {
            Flow::Continue => {}
            Flow::Close(code, reason) => {
                s.write(Frame::Close(code, reason.to_owned())).await;
                close_sent = s.broken.is_none();
                break;
            }
            Flow::Drop(why) => {
                inner.count_slow_drop(why);
                let who = s.joined.as_ref().map(|j| j.id.to_string());
                // Not parked: a device that stopped reading is not coming back by itself.
                info!(participant = ?who, reason = why.label(), "dropped a client that does not keep up with its messages");
                break;
            }
        }
    }
    // A link is not parked: its dialer comes back with a new `link_join`.
    if s.park && !*shutdown.borrow() && s.joined.as_ref().is_none_or(|j| j.link.is_none()) {
        s.park();
    } else {
        s.leave().await;
    }
    // After leaving, so that the room does not wait on a client's reply.
    if close_sent {
        await_close_reply(&mut stream).await;
    }
    inner.sessions.fetch_sub(1, Ordering::Relaxed);
    inner.session_ended.notify_waiters();
}

/// How long a socket the server closed may take to answer the close. Dropping the connection at
/// once would let a frame the client sent meanwhile make the kernel reset it, and a reset throws
/// away the close frame (and the error before it) still unread on the client's side.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// Reads, and ignores, what the client still sends until it answers the close or the wait ends
/// (RFC 6455 §7.1.1: the server closes TCP after the closing handshake).
async fn await_close_reply<S>(stream: &mut S)
where
    S: Stream<Item = Frame> + Unpin,
{
    let reply = async {
        while let Some(frame) = stream.next().await {
            if matches!(frame, Frame::Close(..)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, reply).await;
}

/// Tells a socket over its address's cap of unjoined sockets why it is closed; no session is
/// started for it.
pub(crate) async fn refuse_crowded<S, K>(inner: &Inner, mut stream: S, mut sink: K, limit: usize)
where
    S: Stream<Item = Frame> + Unpin,
    K: Sink<Frame> + Unpin,
{
    inner.count_error(ErrorCode::TooManyConnections);
    let refusal = ServerMessage::error(
        None,
        ErrorCode::TooManyConnections,
        format!(
            "this address already has {limit} connections that have not joined; join or close \
             one of them first"
        ),
    );
    let frames = async {
        sink.send(Frame::Text(refusal.to_json())).await?;
        sink.send(Frame::Close(
            CLOSE_TRY_AGAIN_LATER,
            "too many connections".to_owned(),
        ))
        .await
    };
    if let Ok(Ok(())) = tokio::time::timeout(inner.config.send_timeout, frames).await {
        await_close_reply(&mut stream).await;
    }
}

impl<K: Sink<Frame> + Unpin> Session<K> {
    async fn send(&mut self, msg: &ServerMessage) {
        let to_link = self.joined.as_ref().is_some_and(|j| j.link.is_some());
        let text = match to_link.then(|| link::without_identities(msg)).flatten() {
            Some(redacted) => redacted.to_json(),
            None => msg.to_json(),
        };
        self.write(Frame::Text(text)).await;
    }

    /// Writes one frame within the send timeout; a client that does not take it in time is
    /// dropped rather than allowed to hold its session (and its queue) open.
    async fn write(&mut self, frame: Frame) {
        if self.broken.is_some() {
            return;
        }
        let send_timeout = self.inner.config.send_timeout;
        match tokio::time::timeout(send_timeout, self.sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.broken = Some(Broken::Closed),
            Err(_) => self.broken = Some(Broken::SendTimeout),
        }
    }

    /// Enters `me` into the room's registry under this socket; whoever held the same identity
    /// there is told `goodbye` `replaced`.
    fn take_seat(
        &mut self,
        pid: ParticipantId,
        room: &RoomId,
        me: ParticipantInfo,
    ) -> crate::registry::Admission {
        let admission = self
            .inner
            .registry
            .admit(pid, room, me, self.outbox.clone(), self.serial);
        // Joined: the socket no longer counts against its address's unjoined ones.
        self.unjoined = None;
        if let Some(old) = admission.replaced {
            self.inner
                .registry
                .send(old, Outbound::Close(GoodbyeReason::Replaced));
        }
        admission
    }

    async fn fail(
        &mut self,
        id: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Flow {
        self.fail_with(id, code, None, message.into()).await
    }

    async fn fail_with(
        &mut self,
        id: Option<String>,
        code: ErrorCode,
        permission: Option<Permission>,
        message: String,
    ) -> Flow {
        debug!(?code, %message, "request refused");
        self.inner.count_error(code);
        self.send(&ServerMessage::Error {
            id,
            code,
            permission,
            message,
        })
        .await;
        if code.closes() {
            let close = if code == ErrorCode::MessageTooLarge {
                CLOSE_TOO_BIG
            } else {
                CLOSE_POLICY
            };
            Flow::Close(close, "refused")
        } else {
            Flow::Continue
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Flow {
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Binary(_) => {
                return self
                    .fail(
                        None,
                        ErrorCode::BadJson,
                        "binary frames are not part of the protocol",
                    )
                    .await;
            }
            Frame::Close(..) => return Flow::Close(CLOSE_NORMAL, "bye"),
        };
        if text.len() > self.inner.config.max_message_bytes {
            let max = self.inner.config.max_message_bytes;
            return self
                .fail(
                    None,
                    ErrorCode::MessageTooLarge,
                    format!(
                        "a message may be at most {max} bytes, this one has {}",
                        text.len()
                    ),
                )
                .await;
        }
        let msg = match protocol::decode(&text) {
            Ok(m) => m,
            Err(e) => return self.fail(e.id, e.code, e.message).await,
        };
        let id = msg.id().map(str::to_owned);
        if let Some(v) = msg.version()
            && v != protocol::PROTOCOL_VERSION
        {
            return self
                .fail(
                    id,
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {v} is not supported; this server speaks 1"),
                )
                .await;
        }
        // The messages that open a session say which protocol the client speaks.
        let opening = match &msg {
            ClientMessage::Join { .. } => Some("join"),
            ClientMessage::Resume { .. } => Some("resume"),
            ClientMessage::LinkJoin { .. } => Some("link_join"),
            _ => None,
        };
        if let Some(what) = opening.filter(|_| msg.version().is_none()) {
            return self
                .fail(
                    id,
                    ErrorCode::UnsupportedVersion,
                    format!("{what} must carry \"v\": 1"),
                )
                .await;
        }
        match msg {
            ClientMessage::Join { token, .. } => self.join(id, &token).await,
            ClientMessage::Resume { token, .. } => self.resume(id, &token).await,
            ClientMessage::IceRestart { .. } => self.ice_restart(id).await,
            ClientMessage::Ping { .. } => {
                self.send(&ServerMessage::Pong { id }).await;
                Flow::Continue
            }
            ClientMessage::Leave { .. } => Flow::Close(CLOSE_NORMAL, "left"),
            ClientMessage::SetTrackQuality {
                track_id,
                max_layer,
                ..
            } => self.set_track_quality(id, &track_id, max_layer).await,
            ClientMessage::Publish { sdp, tracks, .. } => self.publish(id, sdp, tracks).await,
            ClientMessage::SubscriberAnswer { sdp, .. } => self.subscriber_answer(id, sdp).await,
            ClientMessage::Lesson { action, .. } => self.lesson(id, action).await,
            ClientMessage::LinkJoin {
                link_id, key, room, ..
            } => self.link_join(id, link_id, key, room).await,
            ClientMessage::LinkPeople { people, .. } => self.link_people(id, people).await,
            ClientMessage::LinkLayers { mid, active, .. } => {
                self.link_layers(id, mid, active).await
            }
        }
    }

    async fn join(&mut self, id: Option<String>, token: &str) -> Flow {
        if self.joined.is_some() {
            return self
                .fail(
                    id,
                    ErrorCode::AlreadyJoined,
                    "this connection has already joined",
                )
                .await;
        }
        let claims = match self.inner.tokens.verify(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return self
                    .fail(
                        id,
                        ErrorCode::TokenExpired,
                        "the token has expired; ask for a new link",
                    )
                    .await;
            }
            Err(e) => return self.fail(id, ErrorCode::InvalidToken, e.to_string()).await,
        };
        if claims.role == crate::token::Role::PartnerLink {
            // Links enter through `link_join` and the link gate only.
            return self
                .fail(
                    id,
                    ErrorCode::InvalidToken,
                    "a join token cannot be a lesson link's",
                )
                .await;
        }
        let entrant = Entrant {
            room: claims.room.clone(),
            identity: claims.sub.clone(),
            role: claims.role,
        };
        if let Err(refusal) = self.inner.gate.admit(&entrant).await {
            info!(room = %entrant.room, identity = %entrant.identity, role = %entrant.role, "not admitted");
            return self.fail(id, ErrorCode::NotAdmitted, refusal.message).await;
        }
        // Resume credentials from this join are good for the lesson, not the short link.
        let until = unix_now().saturating_add(crate::resume::LESSON_BOUND.as_secs());
        self.enter(id, claims, entrant, until).await
    }

    /// `resume`: back as the same participant when its place is still kept (parked, or held by
    /// another socket of the same person), else as a new participant of the same identity.
    async fn resume(&mut self, id: Option<String>, token: &str) -> Flow {
        if self.joined.is_some() {
            return self
                .fail(
                    id,
                    ErrorCode::AlreadyJoined,
                    "this connection has already joined",
                )
                .await;
        }
        let verified = self
            .inner
            .tokens
            .verify_resume(token)
            .and_then(|c| self.inner.resumes.spend(&c).map(|()| c));
        let resume = match verified {
            Ok(c) => c,
            Err(e) => {
                let (code, message) = match e {
                    ResumeError::Expired => (
                        ErrorCode::ResumeExpired,
                        "the resume credential has expired; join with a link".to_owned(),
                    ),
                    ResumeError::Used => (
                        ErrorCode::ResumeUsed,
                        "this resume credential was already used; use the newest one or join"
                            .to_owned(),
                    ),
                    e => (ErrorCode::ResumeInvalid, e.to_string()),
                };
                return self.fail(id, code, message).await;
            }
        };
        let claims = resume.as_join_claims();
        let entrant = Entrant {
            room: claims.room.clone(),
            identity: claims.sub.clone(),
            role: claims.role,
        };
        // The door is checked again: attendance may have changed since the join.
        if let Err(refusal) = self.inner.gate.admit(&entrant).await {
            info!(room = %entrant.room, identity = %entrant.identity, role = %entrant.role, "not admitted on resume");
            return self.fail(id, ErrorCode::NotAdmitted, refusal.message).await;
        }
        let room = RoomId::from(claims.room.as_str());
        let parked = self.inner.parked.take(&room, &claims.sub);
        let pid = match &parked {
            Some(p) => Some(p.id),
            None => self.inner.registry.find_live(&room, &claims.sub),
        };
        let reattached = pid.and_then(|pid| {
            self.inner
                .registry
                .reattach(pid, self.outbox.clone(), self.serial)
                .map(|r| (pid, r))
        });
        let Some((pid, (old_outbox, snapshot))) = reattached else {
            // The place is gone (grace over, or a server restart): enter anew, same identity.
            return self.enter(id, claims, entrant, resume.exp).await;
        };
        self.unjoined = None;
        if parked.is_none() {
            // A second socket resuming while the first still lives: the first goes quietly.
            old_outbox.push(Outbound::Detach);
        }
        let Some(me) = self.inner.registry.info(pid) else {
            return self.enter(id, claims, entrant, resume.exp).await;
        };
        let grant = self.grant(&claims, resume.exp);
        self.send(&ServerMessage::Joined {
            id,
            participant: me,
            room: claims.room.clone(),
            permissions: claims.perms.clone(),
            participants: snapshot.others,
            tracks: snapshot.tracks,
            resume: grant,
            resumed: true,
            ice_servers: self.inner.ice_servers(&claims.sub),
        })
        .await;
        info!(participant = %pid, room = %room, identity = %claims.sub, "resumed");
        self.inner.resumed.fetch_add(1, Ordering::Relaxed);
        lessons::resumed(&self.inner, &room, pid).await;
        if parked.is_some() {
            self.inner.registry.broadcast(
                &room,
                pid,
                &ServerMessage::ParticipantReconnected {
                    participant_id: pid.to_string(),
                },
            );
            self.inner.gate.back(&entrant);
        }
        self.joined = Some(Joined {
            id: pid,
            room,
            claims,
            entrant,
            link: None,
        });
        // The old socket may have taken an offer the client never saw.
        let cmd = ShardCommand::Reoffer {
            participant: pid,
            ice_restart: false,
        };
        if self.inner.sfu.send(cmd).await.is_err() {
            return self
                .fail(None, ErrorCode::Internal, "the media plane is not running")
                .await;
        }
        Flow::Continue
    }

    /// A fresh resume credential, or none if it could not be signed (the client then rejoins
    /// with its link when the socket drops).
    fn grant(&self, claims: &Claims, until: u64) -> Option<ResumeWire> {
        match self.inner.tokens.issue_resume(claims, until) {
            Ok(g) => Some(ResumeWire {
                token: g.token,
                expires_at_ms: g.expires_at_ms,
            }),
            Err(e) => {
                warn!("no resume credential: {e}");
                None
            }
        }
    }

    async fn ice_restart(&mut self, id: Option<String>) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        let cmd = ShardCommand::Reoffer {
            participant: joined.id,
            ice_restart: true,
        };
        if self.inner.sfu.send(cmd).await.is_err() {
            return self
                .fail(id, ErrorCode::Internal, "the media plane is not running")
                .await;
        }
        Flow::Continue
    }

    /// Admits `claims` as a new participant of its room.
    async fn enter(
        &mut self,
        id: Option<String>,
        claims: Claims,
        entrant: Entrant,
        until: u64,
    ) -> Flow {
        // A place kept for this person is given up: they are back as someone new.
        if let Some(old) = self
            .inner
            .parked
            .take(&RoomId::from(claims.room.as_str()), &claims.sub)
        {
            crate::parked::depart(&self.inner, old).await;
        }
        let pid = ParticipantId(self.inner.next_participant.fetch_add(1, Ordering::Relaxed));
        let room = RoomId::from(claims.room.as_str());
        let me = ParticipantInfo {
            participant_id: pid.to_string(),
            identity: claims.sub.clone(),
            name: claims.name.clone(),
            role: claims.role,
            school: claims.org.clone(),
            remote: false,
        };
        let admission = self.take_seat(pid, &room, me.clone());
        // `joined` goes out before the media plane hears of us, so it precedes any offer.
        self.send(&ServerMessage::Joined {
            id,
            participant: me.clone(),
            room: claims.room.clone(),
            permissions: claims.perms.clone(),
            participants: admission.others,
            tracks: admission.tracks,
            resume: self.grant(&claims, until),
            resumed: false,
            ice_servers: self.inner.ice_servers(&claims.sub),
        })
        .await;
        let subscribe = claims.allows(Permission::Subscribe);
        let teacher = claims.allows(Permission::Teacher);
        info!(participant = %pid, room = %room, identity = %claims.sub, role = %claims.role, "joined");
        self.inner.gate.entered(&entrant);
        let member = Member {
            pid,
            identity: claims.sub.clone(),
            name: claims.name.clone(),
            role: claims.role,
            teacher: claims.allows(Permission::Teacher),
        };
        lessons::join(&self.inner, &room, member, &entrant).await;
        self.joined = Some(Joined {
            id: pid,
            room: room.clone(),
            claims,
            entrant,
            link: None,
        });
        self.inner.joins.fetch_add(1, Ordering::Relaxed);
        if self
            .inner
            .sfu
            .send(ShardCommand::Join {
                participant: pid,
                room: room.clone(),
                subscribe,
                teacher,
                link: false,
                relay: false,
            })
            .await
            .is_err()
        {
            self.fail(None, ErrorCode::Internal, "the media plane is not running")
                .await;
            // A session the media plane never heard of would be half joined: end it.
            return Flow::Close(CLOSE_GOING_AWAY, "media plane stopped");
        }
        self.inner.registry.broadcast(
            &room,
            pid,
            &ServerMessage::ParticipantJoined { participant: me },
        );
        Flow::Continue
    }

    async fn publish(
        &mut self,
        id: Option<String>,
        sdp: String,
        tracks: Vec<WireTrackSpec>,
    ) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        let (pid, room) = (joined.id, joined.room.clone());
        let is_link = joined.link.is_some();
        let owners =
            match crate::link_host::owners(joined.link.as_ref().map(|l| &l.people), &tracks) {
                Ok(owners) => owners,
                Err(message) => return self.fail(id, ErrorCode::BadRequest, message).await,
            };
        if let Err(refusal) = check_publish(&joined.claims, &sdp, &tracks) {
            return self
                .fail_with(id, refusal.code, refusal.permission, refusal.message)
                .await;
        }
        let mut specs = Vec::with_capacity(tracks.len());
        for (t, owner) in tracks.iter().zip(owners) {
            let source = source_to_sfu(t.source);
            // The far side's teacher moderated these tracks already (docs/PROTOCOL.md).
            let audience = if is_link {
                Audience::Everyone
            } else {
                lessons::audience(&self.inner, &room, pid, source).await
            };
            specs.push(TrackSpec {
                mid: t.mid.clone(),
                source,
                audience,
                owner,
            });
        }
        // The audience each track started with, to correct any the lesson changed meanwhile.
        let started: Vec<(String, Audience)> =
            specs.iter().map(|s| (s.mid.clone(), s.audience)).collect();
        let (reply, answer) = oneshot::channel();
        let cmd = ShardCommand::Publish {
            participant: pid,
            offer: sdp,
            tracks: specs,
            reply,
        };
        let result = match self.inner.sfu.send(cmd).await {
            Ok(()) => answer.await.unwrap_or(Err(SfuError::Stopped)),
            Err(_) => Err(SfuError::Stopped),
        };
        let answer = match result {
            Ok(a) => a,
            Err(e) => return self.fail_sfu(id, e).await,
        };
        for removed in &answer.removed {
            let track_id = removed.to_string();
            self.inner.registry.remove_track(&track_id);
            self.inner.registry.broadcast(
                &room,
                pid,
                &ServerMessage::TrackUnpublished { track_id },
            );
        }
        let with_audience: Vec<(TrackId, TrackSource, Audience)> = answer
            .added
            .iter()
            .map(|t| {
                let audience = started
                    .iter()
                    .find(|(mid, _)| *mid == t.mid)
                    .map_or(Audience::Nobody, |(_, a)| *a);
                (t.track_id, t.source, audience)
            })
            .collect();
        lessons::tracks_changed(&self.inner, &room, pid, &with_audience, &answer.removed).await;
        let added: Vec<TrackInfo> = answer
            .added
            .iter()
            .map(|t| published_info(t, false))
            .collect();
        self.inner.registry.add_tracks(&room, &added);
        self.send(&ServerMessage::PublishAnswer {
            id,
            sdp: answer.sdp,
            tracks: answer
                .tracks
                .iter()
                .map(|t| published_info(t, true))
                .collect(),
        })
        .await;
        for track in added {
            self.inner
                .registry
                .broadcast(&room, pid, &ServerMessage::TrackPublished { track });
        }
        Flow::Continue
    }

    async fn subscriber_answer(&mut self, id: Option<String>, sdp: String) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        let (reply, done) = oneshot::channel();
        let cmd = ShardCommand::SubscriberAnswer {
            participant: joined.id,
            answer: sdp,
            reply,
        };
        let result = match self.inner.sfu.send(cmd).await {
            Ok(()) => done.await.unwrap_or(Err(SfuError::Stopped)),
            Err(_) => Err(SfuError::Stopped),
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(e) => self.fail_sfu(id, e).await,
        }
    }

    async fn set_track_quality(
        &mut self,
        id: Option<String>,
        track_id: &str,
        max: LayerWire,
    ) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        let Some(track) = TrackId::parse(track_id) else {
            return self
                .fail(
                    id,
                    ErrorCode::BadRequest,
                    format!("`{track_id}` is not a track id"),
                )
                .await;
        };
        let layer = match max {
            LayerWire::Low => LayerName::Low,
            LayerWire::Medium => LayerName::Medium,
            LayerWire::High => LayerName::High,
        };
        let cmd = ShardCommand::SetTrackCap {
            participant: joined.id,
            track,
            max_spatial: Some(layer.max_spatial()),
        };
        if self.inner.sfu.send(cmd).await.is_err() {
            return self
                .fail(id, ErrorCode::Internal, "the media plane is not running")
                .await;
        }
        Flow::Continue
    }

    async fn lesson(&mut self, id: Option<String>, action: crate::lesson::wire::Action) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        if joined.link.is_some() {
            return self
                .fail(
                    id,
                    ErrorCode::PermissionDenied,
                    "a lesson link takes no part in the lesson's actions",
                )
                .await;
        }
        let (pid, room) = (joined.id, joined.room.clone());
        match lessons::act(&self.inner, &room, pid, action).await {
            Ok(()) => Flow::Continue,
            Err(r) => self.fail_with(id, r.code, r.permission, r.message).await,
        }
    }

    async fn fail_sfu(&mut self, id: Option<String>, e: SfuError) -> Flow {
        let code = match &e {
            SfuError::BadSdp(_) | SfuError::Negotiation(_) => ErrorCode::BadSdp,
            SfuError::BadRequest(_) => ErrorCode::BadRequest,
            _ => {
                warn!("media plane failed a request: {e}");
                return self
                    .fail(
                        id,
                        ErrorCode::Internal,
                        "the media server failed; try again",
                    )
                    .await;
            }
        };
        self.fail(id, code, e.to_string()).await
    }

    async fn leave(&mut self) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        if !self.inner.registry.detach(joined.id, self.serial) {
            // Another socket resumed this participant; it is theirs now.
            return;
        }
        if let Some(link) = joined.link {
            link::depart(&self.inner, joined.id, &joined.room, link).await;
            return;
        }
        let who = Departure {
            id: joined.id,
            room: joined.room,
            entrant: joined.entrant,
        };
        crate::parked::depart(&self.inner, who).await;
    }

    /// The socket dropped without `leave`: keep the participant for the resume grace.
    fn park(&mut self) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        if !self.inner.registry.detach(joined.id, self.serial) {
            return;
        }
        let who = Departure {
            id: joined.id,
            room: joined.room,
            entrant: joined.entrant,
        };
        if self.inner.config.resume_grace.is_zero() {
            let inner = self.inner.clone();
            tokio::spawn(async move { crate::parked::depart(&inner, who).await });
        } else {
            crate::parked::park(&self.inner, who);
        }
    }
}

/// Why a publish offer is refused before it reaches the media plane.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub permission: Option<Permission>,
    pub message: String,
}

fn refusal(code: ErrorCode, message: String) -> Refusal {
    Refusal {
        code,
        permission: None,
        message,
    }
}

/// Holds a publish offer and its track list against each other and against the token.
pub(crate) fn check_publish(
    claims: &Claims,
    sdp: &str,
    tracks: &[WireTrackSpec],
) -> Result<(), Refusal> {
    let mut mids = HashSet::with_capacity(tracks.len());
    if let Some(t) = tracks.iter().find(|t| !mids.insert(t.mid.as_str())) {
        return Err(refusal(
            ErrorCode::BadRequest,
            format!("mid {} is listed twice in `tracks`", t.mid),
        ));
    }
    for t in tracks {
        let needed = source_permission(t.source);
        if !claims.allows(needed) {
            return Err(Refusal {
                code: ErrorCode::PermissionDenied,
                permission: Some(needed),
                message: format!("this token does not allow {needed}"),
            });
        }
    }
    // The listed tracks are the whole published set after this offer (see `track_limits`).
    if let Err(over) = track_limits::check(claims.role, tracks) {
        return Err(Refusal {
            code: ErrorCode::PermissionDenied,
            permission: Some(source_permission(over.source)),
            message: over.message(claims.role),
        });
    }
    let sections = sdp_check::sections(sdp).map_err(|e| refusal(ErrorCode::BadSdp, e))?;
    for t in tracks {
        let Some(section) = sections
            .iter()
            .find(|s| s.mid.as_deref() == Some(t.mid.as_str()))
        else {
            return Err(refusal(
                ErrorCode::BadRequest,
                format!("track mid {} is not in the offer", t.mid),
            ));
        };
        if section.kind != Some(source_kind(t.source)) || !section.sending {
            return Err(refusal(
                ErrorCode::BadRequest,
                format!(
                    "mid {} does not send {:?} media",
                    t.mid,
                    source_kind(t.source)
                ),
            ));
        }
    }
    for s in sections.iter().filter(|s| s.sending && s.kind.is_some()) {
        let listed = s
            .mid
            .as_ref()
            .is_some_and(|mid| tracks.iter().any(|t| &t.mid == mid));
        if !listed {
            let what = match s.kind {
                Some(Kind::Audio) => Permission::PublishAudio,
                _ => Permission::PublishVideo,
            };
            // Unlisted media could only be sent if allowed; name the permission when it is not.
            if !claims.allows(what) {
                return Err(Refusal {
                    code: ErrorCode::PermissionDenied,
                    permission: Some(what),
                    message: format!("this token does not allow {what}"),
                });
            }
            return Err(refusal(
                ErrorCode::BadRequest,
                format!(
                    "mid {} sends media but is not listed in `tracks`",
                    s.mid.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    Ok(())
}

fn source_permission(s: Source) -> Permission {
    match s {
        Source::Microphone => Permission::PublishAudio,
        Source::Camera => Permission::PublishVideo,
        Source::Screen => Permission::PublishScreen,
    }
}

fn source_kind(s: Source) -> Kind {
    match s {
        Source::Microphone => Kind::Audio,
        Source::Camera | Source::Screen => Kind::Video,
    }
}

fn source_to_sfu(s: Source) -> TrackSource {
    match s {
        Source::Microphone => TrackSource::Microphone,
        Source::Camera => TrackSource::Camera,
        Source::Screen => TrackSource::Screen,
    }
}

fn source_from_sfu(s: TrackSource) -> Source {
    match s {
        TrackSource::Microphone => Source::Microphone,
        TrackSource::Camera => Source::Camera,
        TrackSource::Screen => Source::Screen,
    }
}

fn kind_from_sfu(k: TrackKind) -> Kind {
    match k {
        TrackKind::Audio => Kind::Audio,
        TrackKind::Video => Kind::Video,
    }
}

fn published_info(t: &PublishedTrack, with_mid: bool) -> TrackInfo {
    TrackInfo {
        mid: with_mid.then(|| t.mid.clone()),
        track_id: t.track_id.to_string(),
        participant_id: t.participant.to_string(),
        kind: kind_from_sfu(t.source.kind()),
        source: source_from_sfu(t.source),
    }
}

pub(crate) fn subscribed_info(t: &SubscribedTrack) -> TrackInfo {
    TrackInfo {
        mid: Some(t.mid.clone()),
        track_id: t.track_id.to_string(),
        participant_id: t.participant.to_string(),
        kind: kind_from_sfu(t.source.kind()),
        source: source_from_sfu(t.source),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bounded wait used by shutdown.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Role, TokenIssuer};
    use crate::{Signaling, SignalingConfig};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    /// A socket whose peer takes nothing: every write waits for ever.
    struct StuckSink;

    impl Sink<Frame> for StuckSink {
        type Error = ();
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
        fn start_send(self: Pin<&mut Self>, _: Frame) -> Result<(), ()> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
    }

    fn signaling(config: SignalingConfig) -> Signaling {
        // The media plane is never reached by these sessions: nothing joins.
        let (sfu, _) = mpsc::channel(1);
        let (_, events) = mpsc::unbounded_channel();
        Signaling::new(
            config,
            TokenIssuer::new(b"unit-tests-secret-0123"),
            sfu,
            events,
        )
    }

    fn metrics(signaling: &Signaling) -> String {
        let mut out = String::new();
        signaling.render_metrics(&mut out);
        out
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_ends_its_session_at_the_send_timeout() {
        let signaling = signaling(SignalingConfig {
            send_timeout: Duration::from_millis(200),
            ..SignalingConfig::default()
        });
        // One ping to answer, then a client that keeps the socket open and reads nothing.
        let frames = futures_util::stream::iter([Frame::Text(r#"{"type":"ping"}"#.into())])
            .chain(futures_util::stream::pending());
        tokio::time::timeout(
            Duration::from_secs(5),
            signaling.run_session(Box::pin(frames), StuckSink),
        )
        .await
        .expect("the session ends although its socket never takes the pong");
        assert!(
            metrics(&signaling)
                .contains("classroom_signaling_slow_drops_total{reason=\"send_timeout\"} 1"),
            "{}",
            metrics(&signaling)
        );
    }

    #[tokio::test]
    async fn a_session_that_never_joins_ends_at_the_join_deadline() {
        let signaling = signaling(SignalingConfig {
            join_timeout: Duration::from_millis(200),
            ..SignalingConfig::default()
        });
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = futures_util::sink::unfold(written.clone(), |written, frame: Frame| async {
            written.lock().unwrap().push(frame);
            Ok::<_, ()>(written)
        });
        // Pings are answered but do not count as joining.
        let pings =
            futures_util::stream::iter((0..3).map(|_| Frame::Text(r#"{"type":"ping"}"#.into())))
                .chain(futures_util::stream::pending());
        tokio::time::timeout(
            Duration::from_secs(5),
            signaling.run_session(Box::pin(pings), Box::pin(sink)),
        )
        .await
        .expect("the session ends at the join deadline, pings or not");
        let written = written.lock().unwrap().clone();
        let texts: Vec<&str> = written
            .iter()
            .filter_map(|f| match f {
                Frame::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts.iter().filter(|t| t.contains("pong")).count(), 3);
        assert!(
            texts
                .iter()
                .any(|t| t.contains(r#""code":"timeout""#) && t.contains("no join within")),
            "{texts:?}"
        );
        assert_eq!(
            written.last(),
            Some(&Frame::Close(CLOSE_POLICY, "join timeout".into()))
        );
    }

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";

    fn spec(mid: &str, source: Source) -> WireTrackSpec {
        WireTrackSpec {
            mid: mid.into(),
            source,
            person: None,
        }
    }

    #[test]
    fn publish_checks_name_the_missing_permission() {
        let student = Claims::new("r", "s", "S", Role::Student, Duration::from_secs(60));
        let observer = Claims::new("r", "o", "O", Role::Observer, Duration::from_secs(60));
        let ok = [spec("0", Source::Microphone), spec("1", Source::Camera)];
        assert_eq!(check_publish(&student, OFFER, &ok), Ok(()));

        let screen = [spec("0", Source::Microphone), spec("1", Source::Screen)];
        let r = check_publish(&student, OFFER, &screen).unwrap_err();
        assert_eq!(
            (r.code, r.permission),
            (ErrorCode::PermissionDenied, Some(Permission::PublishScreen))
        );

        let r = check_publish(&observer, OFFER, &ok).unwrap_err();
        assert_eq!(
            (r.code, r.permission),
            (ErrorCode::PermissionDenied, Some(Permission::PublishAudio))
        );
        // Sending without listing it is refused too, naming the permission the observer lacks.
        let r = check_publish(&observer, OFFER, &[]).unwrap_err();
        assert_eq!(r.permission, Some(Permission::PublishAudio));

        let r = check_publish(&student, OFFER, &[spec("0", Source::Microphone)]).unwrap_err();
        assert_eq!(r.code, ErrorCode::BadRequest);
        let r = check_publish(
            &student,
            OFFER,
            &[spec("1", Source::Microphone), spec("0", Source::Camera)],
        )
        .unwrap_err();
        assert_eq!(r.code, ErrorCode::BadRequest);
        let r = check_publish(&student, "garbage", &ok).unwrap_err();
        assert_eq!(r.code, ErrorCode::BadSdp);
    }

    #[test]
    fn publish_checks_hold_each_role_to_its_tracks() {
        let offer = |kinds: &[&str]| {
            let mut sdp = String::from("v=0\r\n");
            for (mid, kind) in kinds.iter().enumerate() {
                sdp.push_str(&format!(
                    "m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=sendonly\r\n"
                ));
            }
            sdp
        };
        let student = Claims::new("r", "s", "S", Role::Student, Duration::from_secs(60));
        let teacher = Claims::new("r", "t", "T", Role::Teacher, Duration::from_secs(60));

        let two_cameras = [
            spec("0", Source::Microphone),
            spec("1", Source::Camera),
            spec("2", Source::Camera),
        ];
        let sdp = offer(&["audio", "video", "video"]);
        for claims in [&student, &teacher] {
            let r = check_publish(claims, &sdp, &two_cameras).unwrap_err();
            assert_eq!(
                (r.code, r.permission),
                (ErrorCode::PermissionDenied, Some(Permission::PublishVideo)),
                "{}",
                claims.role
            );
            assert!(r.message.contains("one camera"), "{}", r.message);
        }
        let camera_and_screen = [
            spec("0", Source::Microphone),
            spec("1", Source::Camera),
            spec("2", Source::Screen),
        ];
        assert_eq!(check_publish(&teacher, &sdp, &camera_and_screen), Ok(()));

        let two_mics = [spec("0", Source::Microphone), spec("1", Source::Microphone)];
        let r = check_publish(&student, &offer(&["audio", "audio"]), &two_mics).unwrap_err();
        assert_eq!(r.permission, Some(Permission::PublishAudio));

        // A mid listed twice would count one section twice.
        let twice = [spec("0", Source::Microphone), spec("0", Source::Microphone)];
        let r = check_publish(&student, &offer(&["audio"]), &twice).unwrap_err();
        assert_eq!(r.code, ErrorCode::BadRequest);

        // Sixteen cameras (the most sections an offer may have) are refused by the limit, not
        // by the size of the offer.
        let cameras: Vec<WireTrackSpec> = (0..16)
            .map(|mid| spec(&mid.to_string(), Source::Camera))
            .collect();
        let r = check_publish(&student, &offer(&["video"; 16]), &cameras).unwrap_err();
        assert_eq!(r.code, ErrorCode::PermissionDenied);
    }
}
