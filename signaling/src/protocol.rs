//! The wire format of `/ws`, as specified in `docs/PROTOCOL.md`.
//!
//! Every message is a JSON object tagged by `type`. The server's messages carry `"v": 1`; clients
//! must send it in `join`.

use serde::{Deserialize, Serialize};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Frames larger than this are refused with `message_too_large` (an SDP with three simulcast
/// video sections is about 10 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What a client may send.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        token: String,
    },
    /// Instead of `join`: back into the room with the credential of the last `joined`.
    Resume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        token: String,
    },
    /// Asks for a new subscriber offer with fresh ICE credentials.
    IceRestart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Publish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        sdp: String,
        tracks: Vec<WireTrackSpec>,
    },
    SubscriberAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        sdp: String,
    },
    SetTrackQuality {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        track_id: String,
        max_layer: LayerWire,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Instead of `join`: a partner server's lesson link enters the host's room (docs/PROTOCOL.md,
    /// "Lesson links").
    LinkJoin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        link_id: String,
        key: String,
        room: String,
        /// The partner school as it calls itself; informative only (the host shows the name
        /// it stored when the invitation was redeemed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        school: Option<String>,
    },
    /// From a lesson link: the whole list of the people on its side whose tracks it publishes.
    LinkPeople {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        people: Vec<LinkPerson>,
    },
    /// From a lesson link: the simulcast layers (rids) its side's subscribers need of the
    /// track the other side sends it on `mid` (dynacast across the link).
    LinkLayers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        mid: String,
        active: Vec<String>,
    },
    /// A lesson action (`raise_hand`, `chat`, …; see `lesson::wire::ACTION_TYPES`), decoded by
    /// [`decode`] rather than by this enum's tag.
    #[serde(skip)]
    Lesson {
        v: Option<u32>,
        id: Option<String>,
        action: crate::lesson::wire::Action,
    },
}

impl ClientMessage {
    pub fn version(&self) -> Option<u32> {
        match self {
            ClientMessage::Join { v, .. }
            | ClientMessage::Resume { v, .. }
            | ClientMessage::IceRestart { v, .. }
            | ClientMessage::Publish { v, .. }
            | ClientMessage::SubscriberAnswer { v, .. }
            | ClientMessage::SetTrackQuality { v, .. }
            | ClientMessage::Ping { v, .. }
            | ClientMessage::Leave { v, .. }
            | ClientMessage::LinkJoin { v, .. }
            | ClientMessage::LinkPeople { v, .. }
            | ClientMessage::LinkLayers { v, .. }
            | ClientMessage::Lesson { v, .. } => *v,
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            ClientMessage::Join { id, .. }
            | ClientMessage::Resume { id, .. }
            | ClientMessage::IceRestart { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::SubscriberAnswer { id, .. }
            | ClientMessage::SetTrackQuality { id, .. }
            | ClientMessage::Ping { id, .. }
            | ClientMessage::Leave { id, .. }
            | ClientMessage::LinkJoin { id, .. }
            | ClientMessage::LinkPeople { id, .. }
            | ClientMessage::LinkLayers { id, .. }
            | ClientMessage::Lesson { id, .. } => id.as_deref(),
        }
    }
}

/// What one `m=` section of a publish offer carries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WireTrackSpec {
    pub mid: String,
    pub source: Source,
    /// Only from a lesson link: the `ref` (in its `link_people`) of the person the track is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// One person on the far side of a lesson link (`link_people`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkPerson {
    /// The link's own reference for the person (its server's participant id); nothing more
    /// of the person crosses.
    #[serde(rename = "ref")]
    pub reference: String,
    pub name: String,
    #[serde(default)]
    pub teacher: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

/// A video layer as clients name it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LayerWire {
    Low,
    Medium,
    High,
}

/// How a participant's link is doing, in one word for a badge.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QualityLabel {
    Good,
    Fair,
    Poor,
}

/// One participant's entry in `connection_quality`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct QualityEntry {
    pub participant_id: String,
    pub rtt_ms: Option<u32>,
    pub loss: Option<f32>,
    pub estimate_kbps: Option<u64>,
    pub quality: QualityLabel,
    /// Video track id → layer received (`null` while paused).
    pub layers: std::collections::BTreeMap<String, Option<LayerWire>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Audio,
    Video,
}

/// A resume credential as `joined` carries it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ResumeWire {
    pub token: String,
    pub expires_at_ms: u64,
}

/// A participant as others see it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub participant_id: String,
    pub identity: String,
    pub name: String,
    pub role: crate::token::Role,
    /// A partner lecturer's school or organisation (from their guest link), or the school on
    /// the far side of a lesson link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school: Option<String>,
    /// A person on the far side of a lesson link: no connection here, their tracks arrive
    /// through the link.
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A track as the room sees it; `mid` only where it means something to the receiver.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct TrackInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    pub track_id: String,
    pub participant_id: String,
    pub kind: Kind,
    pub source: Source,
}

/// Stable error codes; see the table in `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadRequest,
    MessageTooLarge,
    UnsupportedVersion,
    NotJoined,
    AlreadyJoined,
    InvalidToken,
    TokenExpired,
    PermissionDenied,
    NotAdmitted,
    BadSdp,
    Replaced,
    Timeout,
    /// The client's address already holds as many unjoined sockets as it may.
    TooManyConnections,
    /// A resume credential that is forged, garbled, or not a resume credential.
    ResumeInvalid,
    /// A resume credential past its expiry.
    ResumeExpired,
    /// A resume credential that was already used once.
    ResumeUsed,
    /// A chat message over the length limit.
    ChatTooLong,
    /// A pupil wrote to the class while the teacher has closed the chat to the class.
    ChatClosed,
    /// Too many chat messages or actions in a short time.
    RateLimited,
    /// No such participant, chat message or quick check in the lesson.
    NotFound,
    Internal,
    /// Lesson links (`link_join`): the host knows no such link.
    LinkUnknown,
    /// The link's key is wrong.
    LinkBadKey,
    /// The host revoked the link.
    LinkRevoked,
    /// The link's invitation or acceptance has expired.
    LinkExpired,
    /// The link belongs to another room.
    LinkWrongRoom,
    /// The host lesson is not on now (try again later).
    LinkNotRunning,
}

impl ErrorCode {
    /// The error code of a lesson link's refusal (`LinkRefusal::code`); a code this server
    /// does not know is `not_admitted`.
    pub fn of_link_refusal(code: &str) -> ErrorCode {
        match code {
            "link_unknown" => ErrorCode::LinkUnknown,
            "link_bad_key" => ErrorCode::LinkBadKey,
            "link_revoked" => ErrorCode::LinkRevoked,
            "link_expired" => ErrorCode::LinkExpired,
            "link_wrong_room" => ErrorCode::LinkWrongRoom,
            "link_not_running" => ErrorCode::LinkNotRunning,
            _ => ErrorCode::NotAdmitted,
        }
    }
}

impl ErrorCode {
    /// Whether the server closes the socket after this error.
    pub fn closes(self) -> bool {
        matches!(
            self,
            ErrorCode::MessageTooLarge
                | ErrorCode::InvalidToken
                | ErrorCode::TokenExpired
                | ErrorCode::NotAdmitted
                | ErrorCode::Replaced
                | ErrorCode::Timeout
                | ErrorCode::TooManyConnections
                | ErrorCode::ResumeInvalid
                | ErrorCode::ResumeExpired
                | ErrorCode::ResumeUsed
                | ErrorCode::LinkUnknown
                | ErrorCode::LinkBadKey
                | ErrorCode::LinkRevoked
                | ErrorCode::LinkExpired
                | ErrorCode::LinkWrongRoom
                | ErrorCode::LinkNotRunning
        )
    }
}

/// A TURN server as `RTCPeerConnection`'s `iceServers` takes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// What the server sends.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        participant: ParticipantInfo,
        room: String,
        permissions: Vec<crate::token::Permission>,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        /// The credential for the next `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeWire>,
        /// This answers a `resume` that found the participant still in the room.
        #[serde(default)]
        resumed: bool,
        /// TURN servers with credentials for this participant (empty without TURN).
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
    },
    /// The participant's socket dropped; its place is kept for the resume grace period.
    ParticipantReconnecting {
        participant_id: String,
    },
    /// The participant resumed within the grace period, with the same participant id.
    ParticipantReconnected {
        participant_id: String,
    },
    /// The server saw the ICE path of this connection (`"publish"`) down while the socket lives:
    /// the client should restart ICE on it (a new offer with `iceRestart`).
    IceRestartWanted {
        connection: String,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track_id: String,
    },
    PublishAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    SubscriberOffer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    SetEncodings {
        track_id: String,
        mid: String,
        active: Vec<String>,
    },
    TrackQuality {
        track_id: String,
        layer: Option<LayerWire>,
        paused: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    ConnectionQuality {
        participants: Vec<QualityEntry>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        permission: Option<crate::token::Permission>,
        message: String,
    },
    Goodbye {
        reason: GoodbyeReason,
    },
    LessonState(crate::lesson::wire::LessonState),
    ActiveSpeakers {
        speakers: Vec<String>,
        recent: Vec<String>,
    },
    Chat {
        message: crate::lesson::wire::ChatMessage,
    },
    ChatHistory {
        messages: Vec<crate::lesson::wire::ChatMessage>,
    },
    ChatDeleted {
        message_id: String,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    ServerShutdown,
    Replaced,
    Timeout,
    /// The guest link (or WHIP credential) this participant joined with was revoked.
    Revoked,
    /// One of the participant's peer connections failed; rejoin to get fresh ones.
    ConnectionLost,
}

/// A server message with its version, as serialised on the wire.
#[derive(Serialize)]
struct Versioned<'a> {
    v: u32,
    #[serde(flatten)]
    msg: &'a ServerMessage,
}

impl ServerMessage {
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            code,
            permission: None,
            message: message.into(),
        }
    }

    /// The JSON text sent on the socket.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Versioned {
            v: PROTOCOL_VERSION,
            msg: self,
        })
        // Serialising these plain structs cannot fail; keep a valid frame if it ever did.
        .unwrap_or_else(|_| {
            r#"{"v":1,"type":"error","code":"internal","message":"encoding"}"#.into()
        })
    }
}

/// Why a text frame could not be read as a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The request id, when it could be read.
    pub id: Option<String>,
}

const CLIENT_TYPES: [&str; 11] = [
    "join",
    "resume",
    "ice_restart",
    "publish",
    "subscriber_answer",
    "set_track_quality",
    "ping",
    "leave",
    "link_join",
    "link_people",
    "link_layers",
];

/// Reads a text frame, telling apart bad JSON, unknown types and bad fields.
pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError {
        code: ErrorCode::BadJson,
        message: format!("not valid JSON: {e}"),
        id: None,
    })?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError {
            code: ErrorCode::BadJson,
            message: "a message must be a JSON object".into(),
            id: None,
        });
    };
    let id = obj.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    let typ = match obj.get("type").and_then(|t| t.as_str()) {
        Some(t) => t.to_owned(),
        None => {
            return Err(DecodeError {
                code: ErrorCode::BadJson,
                message: "missing string field `type`".into(),
                id,
            });
        }
    };
    if crate::lesson::wire::ACTION_TYPES.contains(&typ.as_str()) {
        return decode_lesson(value, &typ, id);
    }
    if !CLIENT_TYPES.contains(&typ.as_str()) {
        return Err(DecodeError {
            code: ErrorCode::UnknownType,
            message: format!("unknown message type `{typ}`"),
            id,
        });
    }
    serde_json::from_value(value).map_err(|e| DecodeError {
        code: ErrorCode::BadRequest,
        message: format!("bad `{typ}` message: {e}"),
        id,
    })
}

/// A lesson action: `v` and `id` are taken off, the rest must be exactly the action's fields.
fn decode_lesson(
    mut value: serde_json::Value,
    typ: &str,
    id: Option<String>,
) -> Result<ClientMessage, DecodeError> {
    let bad = |message: String, id: Option<String>| DecodeError {
        code: ErrorCode::BadRequest,
        message,
        id,
    };
    let obj = value
        .as_object_mut()
        .ok_or_else(|| bad("a message must be a JSON object".into(), id.clone()))?;
    let v = match obj.remove("v") {
        None => None,
        Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                return Err(bad(
                    format!("bad `{typ}` message: `v` must be a number"),
                    id,
                ));
            }
        },
    };
    if obj.get("id").is_some_and(|i| !i.is_string()) {
        return Err(bad(
            format!("bad `{typ}` message: `id` must be a string"),
            id,
        ));
    }
    obj.remove("id");
    let given: Vec<String> = obj.keys().cloned().collect();
    let action: crate::lesson::wire::Action = match serde_json::from_value(value) {
        Ok(action) => action,
        Err(e) => return Err(bad(format!("bad `{typ}` message: {e}"), id)),
    };
    // serde lets fields through on variants without any (`{"type":"raise_hand","x":1}`); every
    // field of an action serialises, so anything given beyond those is unknown.
    let known = serde_json::to_value(&action).unwrap_or_default();
    if let Some(extra) = given.iter().find(|k| known.get(k.as_str()).is_none()) {
        return Err(bad(
            format!("bad `{typ}` message: unknown field `{extra}`"),
            id,
        ));
    }
    Ok(ClientMessage::Lesson { v, id, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_classifies_errors() {
        let ok = decode(r#"{"v":1,"type":"join","id":"1","token":"abc"}"#);
        assert_eq!(
            ok,
            Ok(ClientMessage::Join {
                v: Some(1),
                id: Some("1".into()),
                token: "abc".into()
            })
        );
        let rows = [
            ("{not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadJson),
            (r#"{"id":"x"}"#, ErrorCode::BadJson),
            (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
            (r#"{"type":"join"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"publish","sdp":"x","tracks":[{"mid":"0","source":"tuba"}]}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"ping","extra":true}"#, ErrorCode::BadRequest),
            (r#"{"type":"raise_hand","extra":1}"#, ErrorCode::BadRequest),
            (r#"{"type":"grant_floor"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"chat","to":"everyone","text":"x"}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"mute_all","v":"1"}"#, ErrorCode::BadRequest),
        ];
        for (text, code) in rows {
            assert_eq!(decode(text).map_err(|e| e.code), Err(code), "{text}");
        }
        assert_eq!(
            decode(r#"{"type":"dance","id":"9"}"#)
                .unwrap_err()
                .id
                .as_deref(),
            Some("9")
        );
    }

    #[test]
    fn decodes_lesson_actions_with_id_and_version() {
        use crate::lesson::wire::{Action, ChatTo};
        assert_eq!(
            decode(
                r#"{"v":1,"type":"grant_floor","id":"4","participant_id":"PA_7","camera":true}"#
            ),
            Ok(ClientMessage::Lesson {
                v: Some(1),
                id: Some("4".into()),
                action: Action::GrantFloor {
                    participant_id: "PA_7".into(),
                    camera: true
                }
            })
        );
        assert_eq!(
            decode(r#"{"type":"chat","to":"teacher","text":"せんせい"}"#),
            Ok(ClientMessage::Lesson {
                v: None,
                id: None,
                action: Action::Chat {
                    to: ChatTo::Teacher,
                    text: "せんせい".into()
                }
            })
        );
        assert_eq!(
            decode(r#"{"type":"spotlight","participant_id":null}"#).map(|m| match m {
                ClientMessage::Lesson { action, .. } => Some(action),
                _ => None,
            }),
            Ok(Some(Action::Spotlight {
                participant_id: None
            }))
        );
        assert_eq!(
            decode(r#"{"type":"mute_all","id":"z","x":1}"#)
                .unwrap_err()
                .id
                .as_deref(),
            Some("z")
        );
    }

    #[test]
    fn server_messages_carry_the_version() {
        let json = ServerMessage::Pong {
            id: Some("7".into()),
        }
        .to_json();
        assert_eq!(json, r#"{"v":1,"type":"pong","id":"7"}"#);
        let err = ServerMessage::error(None, ErrorCode::BadSdp, "nope").to_json();
        assert_eq!(
            err,
            r#"{"v":1,"type":"error","code":"bad_sdp","message":"nope"}"#
        );
    }
}
