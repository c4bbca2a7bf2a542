//! WHIP ingest (RFC 9725): an encoder publishes into a room with one HTTP POST of an SDP offer.
//!
//! A WHIP publisher is a participant like any other, so it is run as one: each WHIP session is
//! a signaling [`session`] driven over in-memory channels instead of a WebSocket. It joins with
//! the bearer token (the same verification, the same gate at the door, the same lesson rules),
//! publishes its offer through the same `publish` (so `ShardCommand::Publish`, no second media
//! path), and leaves on `DELETE`. The driver here only translates: HTTP in, the session's
//! replies out, pings to keep the session from idling, and an end when the publisher's media
//! path is gone.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, Stream, sink, stream};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::Inner;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, Source, WireTrackSpec};
use crate::sdp_check;
use crate::session::{self, Frame};
use crate::token::{Claims, Permission, TokenError};
use crate::whip_live::{EndPhase, Reservation};

/// The largest SDP offer taken (a simulcast offer of audio and video is 5–10 KiB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// WHIP sessions the server holds at once, whatever the room.
pub const MAX_SESSIONS: usize = 32;
/// WHIP sessions one room holds at once (a lecture hall's camera, a document camera, ...).
pub const MAX_PER_ROOM: usize = 4;
/// How long the session may take to join and answer the offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving session may take to end before the driver stops waiting for it.
const END_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a WHIP request was refused. [`WhipError::status`] and [`WhipError::code`] are what the
/// HTTP answer carries (docs/PROTOCOL.md, "WHIP").
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WhipError {
    #[error("an `Authorization: Bearer <token>` header is required")]
    MissingToken,
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is for another room")]
    WrongRoom,
    #[error("{0}")]
    NotAdmitted(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("the body must be `Content-Type: application/sdp`")]
    NotSdp,
    #[error("an offer may be at most {MAX_OFFER_BYTES} bytes")]
    TooLarge,
    #[error("the offer cannot be used: {0}")]
    BadSdp(String),
    #[error("{0}")]
    TooMany(String),
    #[error("no such WHIP session")]
    NotFound,
    #[error("the server could not answer: {0}")]
    Unavailable(String),
    #[error("the session was ended by a DELETE while it was being set up")]
    Deleted,
}

impl WhipError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            WhipError::MissingToken | WhipError::InvalidToken(_) | WhipError::TokenExpired => 401,
            WhipError::WrongRoom | WhipError::NotAdmitted(_) | WhipError::PermissionDenied(_) => {
                403
            }
            WhipError::NotSdp => 415,
            WhipError::TooLarge => 413,
            WhipError::BadSdp(_) => 400,
            WhipError::NotFound => 404,
            WhipError::Deleted => 409,
            WhipError::TooMany(_) | WhipError::Unavailable(_) => 503,
        }
    }

    /// The machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            WhipError::MissingToken => "missing_token",
            WhipError::InvalidToken(_) => "invalid_token",
            WhipError::TokenExpired => "token_expired",
            WhipError::WrongRoom => "wrong_room",
            WhipError::NotAdmitted(_) => "not_admitted",
            WhipError::PermissionDenied(_) => "permission_denied",
            WhipError::NotSdp => "unsupported_media_type",
            WhipError::TooLarge => "too_large",
            WhipError::BadSdp(_) => "bad_sdp",
            WhipError::TooMany(_) => "too_many_sessions",
            WhipError::NotFound => "not_found",
            WhipError::Unavailable(_) => "unavailable",
            WhipError::Deleted => "deleted",
        }
    }
}

/// A WHIP session that was set up.
#[derive(Debug)]
pub struct Created {
    /// The resource's id: the last segment of its URL, unguessable (128 random bits).
    pub resource: String,
    pub answer: String,
}

/// The tracks an encoder's offer publishes: its audio is the microphone, its first video the
/// camera and a second video the screen (an encoder sending slides beside the speaker).
fn tracks_of(offer: &str) -> Result<Vec<WireTrackSpec>, WhipError> {
    let sections = sdp_check::sections(offer).map_err(WhipError::BadSdp)?;
    let mut tracks = Vec::new();
    let mut videos = 0;
    for s in sections.iter().filter(|s| s.sending) {
        let Some(kind) = s.kind else { continue };
        let Some(mid) = s.mid.clone() else {
            return Err(WhipError::BadSdp("every m= section needs an a=mid".into()));
        };
        let source = match kind {
            crate::protocol::Kind::Audio => Source::Microphone,
            crate::protocol::Kind::Video => {
                videos += 1;
                if videos == 1 {
                    Source::Camera
                } else {
                    Source::Screen
                }
            }
        };
        tracks.push(WireTrackSpec {
            mid,
            source,
            person: None,
        });
    }
    if tracks.is_empty() {
        return Err(WhipError::BadSdp(
            "the offer sends no audio or video (WHIP sections are sendonly)".into(),
        ));
    }
    Ok(tracks)
}

type FrameStream = Pin<Box<dyn Stream<Item = Frame> + Send>>;
type FrameSink = Pin<Box<dyn Sink<Frame, Error = ()> + Send>>;

/// The two ends of an in-memory socket: what the session reads and writes, and what the driver
/// keeps.
fn socket() -> (
    FrameStream,
    FrameSink,
    mpsc::Sender<Frame>,
    mpsc::Receiver<Frame>,
) {
    let (to_session, from_driver) = mpsc::channel::<Frame>(16);
    let (to_driver, from_session) = mpsc::channel::<Frame>(64);
    let stream = stream::unfold(from_driver, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    });
    let sink = sink::unfold(to_driver, |tx, frame: Frame| async move {
        tx.send(frame).await.map(|()| tx).map_err(|_| ())
    });
    (Box::pin(stream), Box::pin(sink), to_session, from_session)
}

fn text(msg: &ClientMessage) -> Frame {
    Frame::Text(serde_json::to_string(msg).unwrap_or_default())
}

/// Reads the session's messages until the reply to request `id`, skipping the rest (room
/// news).
async fn reply(
    from_session: &mut mpsc::Receiver<Frame>,
    id: &str,
    deadline: Instant,
) -> Result<ServerMessage, WhipError> {
    loop {
        let frame = tokio::time::timeout_at(deadline, from_session.recv())
            .await
            .map_err(|_| WhipError::Unavailable("no answer in time".into()))?;
        let Some(Frame::Text(t)) = frame else {
            return Err(WhipError::Unavailable("the session ended".into()));
        };
        let Ok(msg) = serde_json::from_str::<ServerMessage>(&t) else {
            continue;
        };
        match &msg {
            ServerMessage::Joined { id: Some(i), .. }
            | ServerMessage::PublishAnswer { id: Some(i), .. }
            | ServerMessage::Error { id: Some(i), .. }
                if i == id =>
            {
                return Ok(msg);
            }
            ServerMessage::Goodbye { .. } => {
                return Err(WhipError::Unavailable("the session ended".into()));
            }
            _ => {}
        }
    }
}

/// What a session's refusal is as a WHIP refusal.
fn refusal(code: ErrorCode, message: String) -> WhipError {
    match code {
        ErrorCode::InvalidToken => WhipError::InvalidToken(message),
        ErrorCode::TokenExpired => WhipError::TokenExpired,
        ErrorCode::NotAdmitted => WhipError::NotAdmitted(message),
        ErrorCode::PermissionDenied => WhipError::PermissionDenied(message),
        ErrorCode::BadSdp | ErrorCode::BadRequest | ErrorCode::MessageTooLarge => {
            WhipError::BadSdp(message)
        }
        _ => WhipError::Unavailable(message),
    }
}

/// The claims of `token` if it may open a WHIP session in `room` now: a valid token for the
/// room that publishes and does not receive, and a place free in the room and the server.
/// Checked before the request's body is read, so that a request without a valid credential, or
/// one the server has no room for, costs no read of its offer.
pub(crate) fn authorize(inner: &Inner, room: &str, token: &str) -> Result<Claims, WhipError> {
    let claims = verify(inner, room, token)?;
    if !claims.allows(Permission::PublishAudio) && !claims.allows(Permission::PublishVideo) {
        return Err(WhipError::PermissionDenied(
            "the token does not allow publishing".into(),
        ));
    }
    // A browser's token also receives: the media plane would offer it every track of the room
    // on a connection a WHIP client never answers.
    if claims.allows(Permission::Subscribe) {
        return Err(WhipError::PermissionDenied(
            "this token is for a browser; publish over WHIP with a WHIP link's token".into(),
        ));
    }
    inner.whip.check_room(room)?;
    Ok(claims)
}

/// Releases a place unless the session was handed to its driver: a `POST` whose client goes
/// away mid set-up has its future dropped, and its place must not stay taken.
struct Place<'a> {
    inner: &'a Inner,
    resource: String,
    kept: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.inner.whip.release(&self.resource);
        }
    }
}

/// Sets up a WHIP session in `room` for the holder of `token` (whose `claims` [`authorize`]
/// gave), publishing `offer`.
pub(crate) async fn publish(
    inner: &Arc<Inner>,
    room: &str,
    token: &str,
    claims: &Claims,
    offer: String,
) -> Result<Created, WhipError> {
    let tracks = tracks_of(&offer)?;
    let reservation = inner.whip.reserve(room, &claims.sub)?;
    let mut place = Place {
        inner,
        resource: reservation.resource.clone(),
        kept: false,
    };
    let answer = start(inner, token, offer, tracks, reservation).await?;
    place.kept = true;
    info!(%room, identity = %claims.sub, resource = %place.resource, "WHIP session started");
    Ok(Created {
        resource: place.resource.clone(),
        answer,
    })
}

async fn start(
    inner: &Arc<Inner>,
    token: &str,
    offer: String,
    tracks: Vec<WireTrackSpec>,
    reservation: Reservation,
) -> Result<String, WhipError> {
    let Reservation {
        resource,
        mut cancelled,
    } = reservation;
    let (stream, sink, to_session, mut from_session) = socket();
    // Not aborted on failure: told to leave, it cleans up after itself (registry, counters).
    tokio::spawn(session::run(inner.clone(), stream, sink, None));
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let join = ClientMessage::Join {
        v: Some(crate::protocol::PROTOCOL_VERSION),
        id: Some("whip-join".into()),
        token: token.to_owned(),
    };
    let setup = async {
        let _ = to_session.send(text(&join)).await;
        match reply(&mut from_session, "whip-join", deadline).await? {
            ServerMessage::Joined { .. } => {}
            ServerMessage::Error { code, message, .. } => return Err(refusal(code, message)),
            _ => return Err(WhipError::Unavailable("unexpected reply".into())),
        }
        let publish = ClientMessage::Publish {
            v: None,
            id: Some("whip-publish".into()),
            sdp: offer,
            tracks,
        };
        let _ = to_session.send(text(&publish)).await;
        match reply(&mut from_session, "whip-publish", deadline).await? {
            ServerMessage::PublishAnswer { sdp, .. } => Ok(sdp),
            ServerMessage::Error { code, message, .. } => Err(refusal(code, message)),
            _ => Err(WhipError::Unavailable("unexpected reply".into())),
        }
    };
    let outcome = tokio::select! {
        o = setup => o,
        Ok(()) = &mut cancelled => Err(WhipError::Deleted),
    };
    // Running from here on, unless a DELETE came first (also between the answer and now).
    let (end, ended) = oneshot::channel();
    let outcome = outcome.and_then(|answer| {
        inner
            .whip
            .running(&resource, end)
            .map(|()| answer)
            .map_err(|_| WhipError::Deleted)
    });
    match outcome {
        Ok(answer) => {
            tokio::spawn(drive(
                inner.clone(),
                resource,
                to_session,
                from_session,
                ended,
            ));
            Ok(answer)
        }
        Err(e) => {
            if e == WhipError::Deleted {
                info!(%resource, "WHIP session deleted while being set up");
            }
            leave(&to_session).await;
            drop(to_session);
            let _ = tokio::time::timeout(END_TIMEOUT, drain(&mut from_session)).await;
            Err(e)
        }
    }
}

async fn leave(to_session: &mpsc::Sender<Frame>) {
    let leave = ClientMessage::Leave { v: None, id: None };
    let _ = to_session.send(text(&leave)).await;
}

/// Reads what the session still writes until it ends (it drops its end of the socket).
async fn drain(from_session: &mut mpsc::Receiver<Frame>) {
    while from_session.recv().await.is_some() {}
}

/// Keeps a WHIP session alive until `DELETE`, or until the session ends by itself: the same
/// token joined again (`replaced`), its connection failed (`connection_lost`), a guest link
/// revoked, or the server shuts down. The publisher cannot restart ICE (this endpoint does not
/// take `PATCH`), so when the media plane asks for an ICE restart, its path has been quiet for
/// the grace (`core::restart`: 15 s without a check, then 1.5 s) and the session ends.
async fn drive(
    inner: Arc<Inner>,
    resource: String,
    to_session: mpsc::Sender<Frame>,
    mut from_session: mpsc::Receiver<Frame>,
    mut ended: oneshot::Receiver<()>,
) {
    let every = (inner.config.idle_timeout / 3).max(Duration::from_millis(100));
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    let why = loop {
        tokio::select! {
            _ = &mut ended => break "deleted",
            frame = from_session.recv() => match frame {
                None | Some(Frame::Close(..)) => break "session ended",
                Some(Frame::Text(t)) => match serde_json::from_str::<ServerMessage>(&t) {
                    Ok(ServerMessage::Goodbye { .. }) => break "goodbye",
                    Ok(ServerMessage::IceRestartWanted { .. }) => break "media path quiet",
                    _ => {}
                },
                Some(Frame::Binary(_)) => {}
            },
            _ = ping.tick() => {
                let ping = ClientMessage::Ping { v: None, id: None };
                let _ = to_session.send(text(&ping)).await;
            }
        }
    };
    debug!(%resource, why, "WHIP session ending");
    leave(&to_session).await;
    drop(to_session);
    let _ = tokio::time::timeout(END_TIMEOUT, drain(&mut from_session)).await;
    // Waiting DELETEs hear of the end here, once the session has left the room.
    inner.whip.release(&resource);
    info!(%resource, why, "WHIP session ended");
}

/// The claims of a valid token for `room`.
fn verify(inner: &Inner, room: &str, token: &str) -> Result<Claims, WhipError> {
    let claims = match inner.tokens.verify(token) {
        Ok(c) => c,
        Err(TokenError::Expired) => return Err(WhipError::TokenExpired),
        Err(e) => return Err(WhipError::InvalidToken(e.to_string())),
    };
    if claims.room != room {
        return Err(WhipError::WrongRoom);
    }
    Ok(claims)
}

/// What a `DELETE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The session was still being set up (its `POST` unanswered); the set-up was cancelled.
    pub during_setup: bool,
    /// Whether the session had left the room when this returned (else it is still leaving).
    pub done: bool,
}

/// `DELETE` of a resource by the holder of `token` (the one it was created with, or another
/// for the same identity): the session leaves, or its set-up is cancelled, and this returns
/// once it is gone (or after twice [`END_TIMEOUT`], saying so). The resource URL alone is not
/// enough: it appears in logs and proxies.
pub(crate) async fn end(
    inner: &Arc<Inner>,
    room: &str,
    resource: &str,
    token: &str,
) -> Result<Ended, WhipError> {
    let claims = verify(inner, room, token)?;
    let request = inner.whip.request_end(room, resource, &claims.sub)?;
    let done = match request.gone {
        // A dropped sender is a released place too.
        Some(gone) => tokio::time::timeout(END_TIMEOUT * 2, gone).await.is_ok(),
        None => false,
    };
    Ok(Ended {
        during_setup: request.phase == EndPhase::SettingUp,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoders_sections_become_tracks() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";
        let tracks = tracks_of(offer).expect("tracks");
        assert_eq!(tracks.len(), 2);
        assert_eq!(
            (tracks[0].mid.as_str(), tracks[0].source),
            ("0", Source::Microphone)
        );
        assert_eq!(
            (tracks[1].mid.as_str(), tracks[1].source),
            ("1", Source::Camera)
        );
        assert!(matches!(tracks_of("hello"), Err(WhipError::BadSdp(_))));
        let no_mid = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert!(matches!(tracks_of(no_mid), Err(WhipError::BadSdp(_))));
        let receiving = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n";
        assert!(matches!(tracks_of(receiving), Err(WhipError::BadSdp(_))));
    }
}
