//! One track towards one subscriber: the whole per-packet decision, as a value.
//!
//! A [`DownTrack`] owns everything that decides whether and how a publisher's packet reaches one
//! subscriber: the forwarder (source switches, sequence and timestamp space), the layer selector
//! (video), the VP8 munger, the temporal layer forwarded now, the payload type the subscriber
//! negotiated (and whether it can take the codec at all), and whether the track's audience admits
//! it. [`DownTrack::on_packet`] answers each packet with an [`Answer`]: send it with these
//! header values, or drop it for a [`DropReason`], plus what the shard must do besides (ask for a
//! keyframe, tell the subscriber its codec is unplayable). The shard applies answers and counts
//! the reasons; it decides nothing itself, so every branch here is table-tested without sockets.
//!
//! Per packet this allocates nothing and takes no lock; the packet description is `Copy` and
//! computed once for all subscribers.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Patch};

use super::audience::{self, Change};
use super::forward::{self, Forward, Forwarder, IncomingPacket, SenderClock};
use super::keyframe::{VideoCodec, is_keyframe_start};
use super::layer::{LayerSelector, SelectorConfig};
use super::vp8::{Vp8Header, Vp8Munger, Vp8Payload};
use crate::command::Audience;

/// What the shard knows about one incoming packet, computed once for all subscribers.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo {
    /// The SSRC it came on.
    pub ssrc: u32,
    /// The simulcast layer (index of its rid; 0 without simulcast).
    pub spatial: u8,
    /// The temporal layer (VP8 TID; 0 when unknown).
    pub temporal: u8,
    /// The packet starts a keyframe (always false for audio).
    pub keyframe_start: bool,
    /// A subscriber may raise its temporal layer here: the packet starts a frame that references
    /// nothing above the base layer (always true without a VP8 descriptor).
    pub switch_point: bool,
    /// str0m's extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub arrival: Instant,
    pub codec: Codec,
    /// The parsed VP8 payload descriptor, for VP8 packets that have a valid one.
    pub vp8: Option<Vp8Payload>,
    /// The latest sender report of this packet's source, if any (timestamp alignment).
    pub clock: Option<SenderClock>,
}

impl PacketInfo {
    /// Describes a packet from a publisher, once for all subscribers: `spatial` and `codec` come
    /// from the shard's tables, `clock` from the source's latest sender report. The VP8
    /// descriptor is parsed here, once; other codecs' keyframes are recognised by
    /// `core::keyframe`.
    pub fn describe(
        packet: &RtpPacket,
        spatial: u8,
        codec: Codec,
        video: bool,
        clock: Option<SenderClock>,
    ) -> PacketInfo {
        let vp8 = if codec == Codec::Vp8 {
            Vp8Payload::parse(&packet.payload).ok()
        } else {
            None
        };
        let header = vp8.as_ref().map(|v| &v.header);
        let (temporal, switch_point) = PacketInfo::temporal_of(header);
        let keyframe_start = match header {
            Some(h) => h.keyframe,
            None => {
                video && video_codec(codec).is_some_and(|c| is_keyframe_start(c, &packet.payload))
            }
        };
        PacketInfo {
            ssrc: *packet.header.ssrc,
            spatial,
            temporal,
            keyframe_start,
            switch_point,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            arrival: packet.timestamp,
            codec,
            vp8,
            clock,
        }
    }

    /// The temporal layer and whether the packet is a temporal switch point, from its VP8
    /// descriptor; without one a packet is base layer and always a switch point.
    pub fn temporal_of(vp8: Option<&Vp8Header>) -> (u8, bool) {
        match vp8 {
            Some(h) => (
                h.tid.unwrap_or(0),
                h.starts_frame() && h.is_temporal_switch_point(),
            ),
            None => (0, true),
        }
    }

    fn incoming(&self) -> IncomingPacket {
        IncomingPacket {
            ssrc: self.ssrc,
            seq: self.seq,
            timestamp: self.timestamp,
            marker: self.marker,
            keyframe_start: self.keyframe_start,
            arrival: self.arrival,
            clock: self.clock,
        }
    }
}

/// What the subscriber's connection says about a codec, looked up by the shard in str0m when
/// the down track asks ([`DownTrack::on_packet`]'s `negotiated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// The subscriber accepted the codec with this payload type.
    Pt(Pt),
    /// The offer with this track is not answered yet: nothing to judge.
    NotAnswered,
    /// The answer lacks the codec: the subscriber cannot decode it.
    Refused,
}

/// Why a packet did not reach a subscriber. Each is counted in
/// `classroom_media_rtp_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's connection is not (yet, or no longer) established.
    NotConnected,
    /// The track's audience does not admit this subscriber (`core::audience`).
    Withheld,
    /// The subscriber's path is down (ICE, or no datagram from it for seconds): what is sent
    /// now is lost, and a flood of losses at its return would sink its bandwidth estimate.
    PathDown,
    /// Video the subscriber cannot start or continue without a keyframe of this source.
    WaitingForKeyframe,
    /// A simulcast layer this subscriber does not receive.
    OtherSpatialLayer,
    /// A temporal layer above the one this subscriber receives.
    TemporalAboveTarget,
    /// The selector forwards nothing: not even the lowest layer fits the subscriber's link.
    Paused,
    /// The selector has not chosen a layer yet (no bitrates measured or no allocation so far).
    NoLayer,
    /// The subscriber's answer lacks this codec.
    CodecUnsupported,
    /// The subscriber has not answered the offer with this track yet.
    NotNegotiatedYet,
    /// A late packet from before the point the subscriber started at on this source.
    BeforeStart,
    /// A packet of a VP8 picture dropped earlier: sending it would break the picture sequence.
    DroppedPicture,
    /// The shard found no outgoing stream for the subscriber's mid (the shard's own reason).
    NoOutgoingStream,
}

impl From<forward::DropReason> for DropReason {
    fn from(reason: forward::DropReason) -> DropReason {
        match reason {
            forward::DropReason::WaitingForKeyframe => DropReason::WaitingForKeyframe,
            forward::DropReason::BeforeStart => DropReason::BeforeStart,
        }
    }
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 13] = [
        DropReason::NotConnected,
        DropReason::Withheld,
        DropReason::PathDown,
        DropReason::WaitingForKeyframe,
        DropReason::OtherSpatialLayer,
        DropReason::TemporalAboveTarget,
        DropReason::Paused,
        DropReason::NoLayer,
        DropReason::CodecUnsupported,
        DropReason::NotNegotiatedYet,
        DropReason::BeforeStart,
        DropReason::DroppedPicture,
        DropReason::NoOutgoingStream,
    ];

    /// A dense index for per-reason counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label in `/metrics`.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::NotConnected => "not_connected",
            DropReason::Withheld => "withheld",
            DropReason::PathDown => "path_down",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::OtherSpatialLayer => "other_spatial_layer",
            DropReason::TemporalAboveTarget => "temporal_above_target",
            DropReason::Paused => "paused",
            DropReason::NoLayer => "no_layer",
            DropReason::CodecUnsupported => "codec_unsupported",
            DropReason::NotNegotiatedYet => "not_negotiated_yet",
            DropReason::BeforeStart => "before_start",
            DropReason::DroppedPicture => "dropped_picture",
            DropReason::NoOutgoingStream => "no_outgoing_stream",
        }
    }
}

/// The header values of a packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Extended output sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub pt: Pt,
    /// PictureID/TL0PICIDX replacements str0m writes while serialising (VP8 only).
    pub vp8_patch: Option<Vp8Patch>,
}

impl Outgoing {
    /// The write str0m gets for this packet: the publisher's payload, shared (`Arc`), never
    /// copied; the VP8 patch is applied while str0m serialises it.
    pub fn rtp_write(
        &self,
        packet: &RtpPacket,
        extensions: &ExtensionValues,
        video: bool,
    ) -> RtpWrite {
        let write = RtpWrite::new(
            self.pt,
            self.seq.into(),
            self.timestamp,
            packet.timestamp,
            packet.payload.clone(),
        )
        .marker(self.marker)
        .ext_vals(extensions.clone())
        .nackable(video);
        match self.vp8_patch {
            Some(patch) => write.vp8_patch(patch),
            None => write,
        }
    }
}

/// Header extensions a subscriber should see as the publisher sent them. Transport-level ones
/// (send time, transport-wide sequence numbers) are the subscriber connection's own.
pub fn forwarded_extensions(e: &ExtensionValues) -> ExtensionValues {
    ExtensionValues {
        audio_level: e.audio_level,
        voice_activity: e.voice_activity,
        video_orientation: e.video_orientation,
        video_content_type: e.video_content_type,
        ..Default::default()
    }
}

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

/// Send or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send(Outgoing),
    Drop(DropReason),
}

/// The answer to one packet: the verdict and the side effects the shard carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub verdict: Verdict,
    /// Ask the publisher for a keyframe of this spatial layer (the shard throttles).
    pub wants_keyframe: Option<u8>,
    /// Tell the subscriber, once, that it cannot decode this codec (`PauseReason::CodecUnsupported`).
    pub report_unplayable: Option<Codec>,
}

impl Answer {
    fn drop(reason: DropReason) -> Answer {
        Answer {
            verdict: Verdict::Drop(reason),
            wants_keyframe: None,
            report_unplayable: None,
        }
    }
}

/// One track towards one subscriber.
#[derive(Debug, Clone)]
pub struct DownTrack {
    forwarder: Forwarder,
    /// Video only: which layer this subscriber gets, decided from its bandwidth estimate.
    selector: Option<LayerSelector>,
    /// VP8 PictureID/TL0PICIDX continuity across layer switches and dropped temporal layers.
    munger: Vp8Munger,
    /// The temporal layer actually forwarded; it follows the selector's at switch points.
    temporal: u8,
    /// The payload type the subscriber negotiated for the codec currently forwarded.
    pt: Option<(Codec, Pt)>,
    /// The codec this subscriber cannot take (its answer lacks it), once it has been told.
    unplayable: Option<Codec>,
    /// A new answer arrived: check `unplayable` again at the next packet.
    recheck: bool,
    /// The subscriber joined as a teacher (`Audience::Teachers` admits it).
    teacher: bool,
    /// The track's audience admits this subscriber.
    allowed: bool,
    /// The subscriber's path is up; nothing is sent while it is down.
    reachable: bool,
}

impl DownTrack {
    /// `first_seq`/`first_ts` are this subscriber's own starting values (random in production).
    pub fn new(
        video: bool,
        teacher: bool,
        audience: Audience,
        first_seq: u16,
        first_ts: u32,
    ) -> Self {
        DownTrack {
            forwarder: Forwarder::new(video, clock_rate(video), first_seq, first_ts),
            selector: video.then(|| LayerSelector::new(SelectorConfig::default())),
            munger: Vp8Munger::new(),
            temporal: 0,
            pt: None,
            unplayable: None,
            recheck: false,
            teacher,
            allowed: audience::admits(audience, teacher),
            reachable: true,
        }
    }

    pub fn selector(&self) -> Option<&LayerSelector> {
        self.selector.as_ref()
    }

    pub fn selector_mut(&mut self) -> Option<&mut LayerSelector> {
        self.selector.as_mut()
    }

    /// Whether the track's audience admits this subscriber.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The codec this subscriber was told it cannot decode.
    pub fn unplayable(&self) -> Option<Codec> {
        self.unplayable
    }

    /// The spatial layer forwarded now (0 for audio, or before any).
    pub fn current_spatial(&self) -> u8 {
        self.selector
            .as_ref()
            .and_then(|s| s.decision().current)
            .map_or(0, |l| l.spatial)
    }

    /// The subscriber answered a new offer: what it accepts may have changed.
    pub fn renegotiated(&mut self) {
        self.pt = None;
        self.recheck = true;
    }

    /// The track's audience changed: what this down track must do (`core::audience`).
    pub fn set_audience(&mut self, audience: Audience) -> Change {
        let was = self.sending();
        self.allowed = audience::admits(audience, self.teacher);
        self.resume_if_due(was)
    }

    /// The subscriber's path went down or came back. Coming back is resumed like an audience
    /// that admits the subscriber again: audio without a sequence gap, video at a keyframe.
    pub fn set_reachable(&mut self, reachable: bool) -> Change {
        let was = self.sending();
        self.reachable = reachable;
        self.resume_if_due(was)
    }

    /// Whether packets may go to this subscriber at all.
    fn sending(&self) -> bool {
        self.allowed && self.reachable
    }

    fn resume_if_due(&mut self, was: bool) -> Change {
        let change = audience::change(was, self.sending(), self.selector.is_some());
        match change {
            Change::ResumeAudio => self.forwarder.resume(),
            Change::ResumeVideoAtKeyframe => {
                self.forwarder.resume();
                // The keyframe it resumes at continues the PictureID sequence it saw.
                self.munger.switch_source();
            }
            Change::Withhold | Change::Same => {}
        }
        change
    }

    /// Decides one packet. `connected` is whether the subscriber's connection is up;
    /// `negotiated` looks up what the subscriber's connection accepts for a codec, and is
    /// called only when that is not known yet (after a renegotiation, or a new codec).
    pub fn on_packet(
        &mut self,
        p: &PacketInfo,
        connected: bool,
        negotiated: impl FnOnce(Codec) -> Negotiated,
    ) -> Answer {
        if !connected {
            return Answer::drop(DropReason::NotConnected);
        }
        if !self.allowed {
            return Answer::drop(DropReason::Withheld);
        }
        if !self.reachable {
            return Answer::drop(DropReason::PathDown);
        }
        if let Err(answer) = self.select_layer(p) {
            return answer;
        }
        let pt = match self.payload_type(p.codec, negotiated) {
            Ok(pt) => pt,
            Err(answer) => return answer,
        };
        let incoming = p.incoming();
        match self.forwarder.forward(&incoming) {
            Forward::Send {
                seq,
                timestamp,
                marker,
            } => {
                let vp8_patch = match &p.vp8 {
                    Some(vp8) => match self.munger.forward(&vp8.header) {
                        // A rewrite that does not fit the descriptor is sent unpatched, as the
                        // publisher wrote it: a picture id jump beats no picture.
                        Some(rewrite) => vp8.patch(&rewrite).ok(),
                        None => return Answer::drop(DropReason::DroppedPicture),
                    },
                    None => None,
                };
                Answer {
                    verdict: Verdict::Send(Outgoing {
                        seq,
                        timestamp,
                        marker,
                        pt,
                        vp8_patch,
                    }),
                    wants_keyframe: None,
                    report_unplayable: None,
                }
            }
            Forward::Drop(reason) => Answer {
                verdict: Verdict::Drop(reason.into()),
                wants_keyframe: self.forwarder.wants_keyframe().then_some(p.spatial),
                report_unplayable: None,
            },
        }
    }

    /// Video: whether the packet's spatial and temporal layer are forwarded now, switching
    /// layers where the packet allows it. `Err` carries the drop.
    fn select_layer(&mut self, p: &PacketInfo) -> Result<(), Answer> {
        let Some(selector) = &mut self.selector else {
            return Ok(());
        };
        let mut decision = selector.decision();
        if decision.current.is_none_or(|c| c.spatial != p.spatial) {
            let target = decision.target.map(|t| t.spatial);
            if target == Some(p.spatial) && p.keyframe_start {
                // The keyframe the switch waited for: the subscriber moves here now. The
                // forwarder starts over on it too, also when it is the same SSRC as before a
                // pause: the packets of the pause never take sequence numbers.
                decision = selector.keyframe(p.spatial);
                self.munger.switch_source();
                self.forwarder.resume();
            } else {
                let reason = if target == Some(p.spatial) {
                    DropReason::WaitingForKeyframe
                } else if decision.current.is_some() || target.is_some() {
                    DropReason::OtherSpatialLayer
                } else if decision.paused {
                    DropReason::Paused
                } else {
                    DropReason::NoLayer
                };
                return Err(Answer {
                    wants_keyframe: target.filter(|_| decision.keyframe_needed),
                    ..Answer::drop(reason)
                });
            }
        }
        let Some(current) = decision.current else {
            return Err(Answer::drop(DropReason::NoLayer));
        };
        // Down a temporal layer at once; up only at a frame that references nothing above the
        // base layer, or the decoder would get frames whose references it never saw.
        if current.temporal < self.temporal || p.keyframe_start || p.switch_point {
            self.temporal = current.temporal;
        }
        if p.temporal > self.temporal {
            self.forwarder.skip(&p.incoming());
            if let Some(vp8) = &p.vp8 {
                self.munger.drop(&vp8.header);
            }
            return Err(Answer::drop(DropReason::TemporalAboveTarget));
        }
        Ok(())
    }

    /// The payload type to send `codec` with. `Err` carries the drop (and the report).
    fn payload_type(
        &mut self,
        codec: Codec,
        negotiated: impl FnOnce(Codec) -> Negotiated,
    ) -> Result<Pt, Answer> {
        match self.pt {
            Some((c, pt)) if c == codec => return Ok(pt),
            // Already found unplayable, and no answer since that could change it.
            _ if self.unplayable == Some(codec) && !self.recheck => {
                return Err(Answer::drop(DropReason::CodecUnsupported));
            }
            _ => {}
        }
        match negotiated(codec) {
            Negotiated::Pt(pt) => {
                self.pt = Some((codec, pt));
                self.unplayable = None;
                self.recheck = false;
                Ok(pt)
            }
            Negotiated::NotAnswered => Err(Answer::drop(DropReason::NotNegotiatedYet)),
            // Told once, not again after each answer that changes nothing, so the page can say
            // why there is no picture.
            Negotiated::Refused => {
                self.recheck = false;
                let first = self.unplayable != Some(codec);
                self.unplayable = Some(codec);
                Err(Answer {
                    report_unplayable: first.then_some(codec),
                    ..Answer::drop(DropReason::CodecUnsupported)
                })
            }
        }
    }
}

/// RTP clock rate: 90 kHz for every video codec, 48 kHz for Opus.
pub fn clock_rate(video: bool) -> u32 {
    if video { 90_000 } else { 48_000 }
}

#[cfg(test)]
mod tests;
