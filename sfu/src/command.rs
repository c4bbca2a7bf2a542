//! The only vocabulary between the control plane and the media plane.
//!
//! Control → media: [`ShardCommand`] over a bounded channel of [`COMMAND_QUEUE`] entries; the
//! control plane awaits space, so a command is never lost. Media → control: [`ShardEvent`] over an
//! unbounded channel, because the media thread must never block and these events are as rare as
//! signaling itself (joins, negotiations, departures), never per packet.

use tokio::sync::oneshot;

use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId, TrackId};

/// Room for bursts such as a class of forty joining within a second.
pub const COMMAND_QUEUE: usize = 1024;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track shows; permissions and priorities are decided by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

impl TrackSource {
    /// The media kind this source must be sent as.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone => TrackKind::Audio,
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
        }
    }
}

/// A layer as clients name it, whatever the number of simulcast encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerName {
    Low,
    Medium,
    High,
}

impl LayerName {
    /// The name of spatial layer `spatial` of a track with `count` layers: the top one is always
    /// `High` (a single-encoding track is sent as it comes).
    pub fn of(spatial: u8, count: usize) -> LayerName {
        let from_top = count.saturating_sub(1).saturating_sub(usize::from(spatial));
        match from_top {
            0 => LayerName::High,
            1 => LayerName::Medium,
            _ => LayerName::Low,
        }
    }

    /// The spatial layer a cap of this name allows, for a track with three encodings.
    pub fn max_spatial(self) -> u8 {
        match self {
            LayerName::Low => 0,
            LayerName::Medium => 1,
            LayerName::High => 2,
        }
    }
}

/// Who receives a track. The control plane decides it from the lesson's rules (speaking policy,
/// the floor, camera privacy, last-N); the media plane applies it to every packet, whatever the
/// publisher's client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Every subscriber of the room.
    Everyone,
    /// Only subscribers that joined as teachers (`ShardCommand::Join::teacher`).
    Teachers,
    /// No one: the track is withheld.
    Nobody,
}

/// A client's statement of what one `m=` section of its publish offer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    pub mid: String,
    pub source: TrackSource,
    /// Who receives it from its first packet on; a later `SetAudience` changes it.
    pub audience: Audience,
    /// Whose track it is, when not the publishing participant's own: a partner server's link
    /// publishes the tracks of the people on its side (docs/PARTNER.md, "Lesson links"). The
    /// room then sees the track as `owner`'s (`PublishedTrack::participant`,
    /// `SubscribedTrack::participant`, active speakers), while the link's connection carries it.
    pub owner: Option<TrackOwner>,
}

/// A person on the far side of a lesson link, as the shard attributes a track to them. The
/// person is not a member of the shard (they have no connection of their own here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackOwner {
    pub participant: ParticipantId,
    /// Their track is prioritised as a teacher's (`core::allocator::TrackClass`).
    pub teacher: bool,
}

/// A track as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub track_id: TrackId,
    pub participant: ParticipantId,
    pub source: TrackSource,
    /// The mid in the publisher's own connection.
    pub mid: String,
}

/// A track as one subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// The mid in the subscriber's connection.
    pub mid: String,
    pub track_id: TrackId,
    pub participant: ParticipantId,
    pub source: TrackSource,
}

/// The result of a publish offer.
#[derive(Debug)]
pub struct PublishAnswer {
    pub sdp: String,
    /// Every track this participant now publishes.
    pub tracks: Vec<PublishedTrack>,
    /// Tracks newly published by this offer.
    pub added: Vec<PublishedTrack>,
    /// Tracks this offer stopped.
    pub removed: Vec<TrackId>,
}

/// Requests from the control plane to the media plane.
#[derive(Debug)]
pub enum ShardCommand {
    /// A participant was admitted to a room. It will be offered every track of the room (and
    /// every later one) when `subscribe` is set.
    Join {
        participant: ParticipantId,
        room: RoomId,
        subscribe: bool,
        /// A teacher's camera and screen come before pupils' videos when bandwidth is short.
        teacher: bool,
        /// The participant is this server's end of a lesson link that this server dialled
        /// (docs/PARTNER.md): its two connections are to the host server's media port, so they
        /// run full ICE (the host is ICE-lite) from sockets of their own, not the shared media
        /// port. `false` for every browser, WHIP encoder and for a link the host receives.
        link: bool,
        /// The participant is a lesson link's seat, on either server (the host's `link_join`
        /// or the partner's own seat): it is never offered a track that another link brought
        /// in. Such a track would reach a third school under the wrong school's name, and
        /// links forming a cycle would pass a track round it.
        relay: bool,
    },
    /// The highest layer a subscriber wants of one video track (`None`: no cap).
    SetTrackCap {
        participant: ParticipantId,
        track: TrackId,
        max_spatial: Option<u8>,
    },
    /// From the far side of a lesson link (`link_layers`): the simulcast layers (rids) its
    /// subscribers need of the track the link participant's subscribe connection carries on
    /// `mid`; the others stop crossing. Unknown mids and rids are ignored.
    LinkLayers {
        participant: ParticipantId,
        mid: String,
        active: Vec<String>,
    },
    /// A publish offer, already checked against the participant's permissions.
    Publish {
        participant: ParticipantId,
        offer: String,
        tracks: Vec<TrackSpec>,
        reply: oneshot::Sender<Result<PublishAnswer, SfuError>>,
    },
    /// The answer to the latest [`ShardEvent::SubscriberOffer`].
    SubscriberAnswer {
        participant: ParticipantId,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// The participant's socket was replaced (a resume): it may have missed the pending
    /// subscriber offer, so send it again; with `ice_restart`, (then) offer fresh ICE
    /// credentials, because the client's subscribe connection lost its path.
    Reoffer {
        participant: ParticipantId,
        ice_restart: bool,
    },
    /// Who receives a published track from now on. Takes effect from the next packet.
    SetAudience { track: TrackId, audience: Audience },
    /// The participant left or its socket closed; everything it had goes.
    Leave { participant: ParticipantId },
    /// Close every peer connection and stop the media thread.
    Shutdown,
    /// A test hook: the media thread says so on `held`, then blocks until `release` is dropped
    /// (at most [`crate::hold::MAX_HOLD`]), as a thread stuck in a slow call would. Only the
    /// library API sends it ([`crate::Sfu::hold`]); no client message leads to it.
    Hold {
        held: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// Why a subscriber receives no video of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// Not even the lowest layer fits the subscriber's link; it resumes by itself.
    WeakNetwork,
    /// The subscriber's answer accepted none of the codecs the track is sent in.
    CodecUnsupported,
}

/// Things the media plane tells the control plane.
#[derive(Debug)]
pub enum ShardEvent {
    /// Send this offer to the participant's subscribe connection.
    SubscriberOffer {
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<SubscribedTrack>,
    },
    /// Tracks went away without a publish offer saying so (the publisher's connection died).
    TracksUnpublished {
        participant: ParticipantId,
        tracks: Vec<TrackId>,
    },
    /// One of the participant's connections failed or timed out.
    ConnectionLost { participant: ParticipantId },
    /// The participant's publish connection has had no ICE path for a while: the client should
    /// restart ICE on it (its offers come from the client). Repeated with backoff while the path
    /// stays down (`core::restart`).
    PublishIceRestartWanted { participant: ParticipantId },
    /// The layer a subscriber receives of a video track changed, or the track paused.
    TrackQuality {
        participant: ParticipantId,
        track: TrackId,
        /// The layer now forwarded; `None` while paused.
        layer: Option<LayerName>,
        /// Why nothing is forwarded, if so.
        paused: Option<PauseReason>,
    },
    /// Dynacast: the publisher should encode exactly these rids of the track.
    SetEncodings {
        participant: ParticipantId,
        track: TrackId,
        mid: String,
        active: Vec<String>,
    },
    /// Who is speaking in a room changed: participants whose audible microphone (audience not
    /// `Nobody`) carries speech by its RFC 6464 audio level, smoothed with hysteresis, loudest
    /// first. Sent only on a change.
    ActiveSpeakers {
        room: RoomId,
        speakers: Vec<ParticipantId>,
    },
    /// Periodic link report of one participant's subscribe connection.
    ConnectionQuality {
        participant: ParticipantId,
        rtt_ms: Option<u32>,
        loss: Option<f32>,
        estimate_bps: Option<u64>,
        /// Video tracks received and the layer each gets (`None`: paused or not started).
        layers: Vec<(TrackId, Option<LayerName>)>,
        /// Some video is paused for lack of bandwidth.
        any_paused: bool,
    },
}
