//! The packet path: an RTP packet from a publisher, decided per subscriber, written to each.
//!
//! Per packet this does map lookups and one `write_rtp` per subscriber; the payload is shared
//! (`Arc<[u8]>`) between all subscribers and str0m's retransmission caches, never copied.

use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::stats::MediaEgressStats;

use super::Shard;
use super::peer::{PeerKey, PeerRole};
use crate::command::{Audience, PauseReason, ShardEvent, TrackKind};
use crate::core::audience::{self, Change};
use crate::core::bitrate::MeteredPacket;
use crate::core::forward::{Forward, Forwarder, IncomingPacket};
use crate::core::keyframe::{VideoCodec, is_keyframe_start};
use crate::core::layer::{Layer, LayerSelector, SelectorConfig};
use crate::core::vp8::{Vp8Header, Vp8Munger};
use crate::ids::TrackId;

/// One track flowing to one subscriber connection.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub peer: PeerKey,
    /// The mid of the track in the subscriber's connection.
    pub mid: Mid,
    pub forwarder: Forwarder,
    /// The payload type the subscriber negotiated for the codec currently forwarded.
    pt: Option<(Codec, Pt)>,
    /// The SSRC of the outgoing stream, found once: a hash lookup instead of a scan by mid.
    tx: Option<Ssrc>,
    /// NACKs counted so far from this subscriber's stats (they arrive as running totals).
    nacks_seen: u64,
    /// Video only: which layer this subscriber gets, decided from its bandwidth estimate.
    pub selector: Option<LayerSelector>,
    /// VP8 PictureID/TL0PICIDX continuity across layer switches and dropped temporal layers.
    munger: Vp8Munger,
    /// The highest layer the client asked for (`set_track_quality`).
    pub cap: Layer,
    /// The temporal layer actually forwarded; it follows the selector's at switch points.
    temporal: u8,
    /// What the client was last told about this track: (layer, paused).
    pub reported: Option<(Option<crate::command::LayerName>, bool)>,
    /// The codec this subscriber cannot take (its answer lacks it), once it has been told.
    pub unplayable: Option<Codec>,
    /// A new answer arrived: check `unplayable` again at the next packet.
    recheck: bool,
    /// The subscriber joined as a teacher (`Audience::Teachers` admits it).
    pub teacher: bool,
    /// The track's audience admits this subscriber (`core::audience`): kept up to date by
    /// `set_audience`, so the packet path reads a flag instead of looking up the member.
    pub allowed: bool,
}

impl Subscription {
    /// The outgoing stream's SSRC, once the first packet has been written to it.
    pub fn stream(&self) -> Option<Ssrc> {
        self.tx
    }

    /// The subscriber answered a new offer: what it accepts may have changed.
    pub fn renegotiated(&mut self) {
        self.pt = None;
        self.recheck = true;
    }

    pub fn new(
        peer: PeerKey,
        mid: Mid,
        kind: TrackKind,
        teacher: bool,
        audience: Audience,
    ) -> Self {
        Subscription {
            peer,
            mid,
            forwarder: Forwarder::new(
                kind == TrackKind::Video,
                clock_rate(kind),
                rand::random(),
                rand::random(),
            ),
            pt: None,
            tx: None,
            nacks_seen: 0,
            selector: (kind == TrackKind::Video)
                .then(|| LayerSelector::new(SelectorConfig::default())),
            munger: Vp8Munger::new(),
            cap: Layer::MAX,
            reported: None,
            temporal: 0,
            unplayable: None,
            recheck: false,
            teacher,
            allowed: audience::admits(audience, teacher),
        }
    }

    /// The track's audience changed: what this subscription must do (`core::audience`).
    pub fn set_audience(&mut self, audience: Audience) -> Change {
        let allowed = audience::admits(audience, self.teacher);
        let change = audience::change(self.allowed, allowed, self.selector.is_some());
        self.allowed = allowed;
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
}

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

/// The payload type the remote side accepted for `codec` on `mid`.
fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == codec)
        .find(|p| remote.is_empty() || remote.contains(&p.pt()))
        .map(|p| p.pt())
}

/// Header extensions a subscriber should see as the publisher sent them. Transport-level ones
/// (send time, transport-wide sequence numbers) are the subscriber connection's own.
fn forwarded_extensions(e: &ExtensionValues) -> ExtensionValues {
    ExtensionValues {
        audio_level: e.audio_level,
        voice_activity: e.voice_activity,
        video_orientation: e.video_orientation,
        video_content_type: e.video_content_type,
        ..Default::default()
    }
}

impl Shard {
    /// Which track and spatial layer an incoming packet belongs to, and its codec, learning them
    /// on first sight of each SSRC.
    fn classify(&mut self, key: PeerKey, packet: &RtpPacket) -> Option<(TrackId, u8, Codec)> {
        let peer = self.peers.get_mut(key.0 as usize)?.as_deref_mut()?;
        let PeerRole::Publish { tracks, by_ssrc } = &mut peer.role else {
            return None;
        };
        let ssrc = packet.header.ssrc;
        let (track_id, spatial) = match by_ssrc.get(&ssrc) {
            Some(t) => *t,
            None => {
                let mut api = peer.rtc.direct_api();
                let rx = api.stream_rx(&ssrc)?;
                let (mid, rid) = (rx.mid(), rx.rid());
                let track_id = *tracks.get(&mid)?;
                let track = self.tracks.get(&track_id)?;
                let spatial = match rid {
                    Some(rid) => track.rids.iter().position(|r| *r == rid)? as u8,
                    None => 0,
                };
                by_ssrc.insert(ssrc, (track_id, spatial));
                (track_id, spatial)
            }
        };
        let track = self.tracks.get_mut(&track_id)?;
        let pt = packet.header.payload_type;
        let codec = match track.codec {
            Some((known_pt, codec)) if known_pt == pt => codec,
            _ => {
                let codec = peer
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == pt)?
                    .spec()
                    .codec;
                track.codec = Some((pt, codec));
                codec
            }
        };
        Some((track_id, spatial, codec))
    }

    pub(super) fn on_rtp(&mut self, key: PeerKey, packet: RtpPacket) {
        let Some((track_id, spatial, codec)) = self.classify(key, &packet) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let video = track.info.source.kind() == TrackKind::Video;
        // Parse the VP8 descriptor once for everyone: temporal layer, keyframe, and str0m's
        // descriptor to patch PictureID/TL0PICIDX per subscriber without copying the payload.
        let (vp8, vp8_descriptor) = if codec == Codec::Vp8 {
            (
                Vp8Header::parse(&packet.payload).ok(),
                str0m::rtp::Vp8Descriptor::parse(&packet.payload).ok(),
            )
        } else {
            (None, None)
        };
        let temporal = vp8.and_then(|h| h.tid).unwrap_or(0);
        let keyframe_start = match vp8 {
            Some(h) => h.keyframe,
            None => {
                video && video_codec(codec).is_some_and(|c| is_keyframe_start(c, &packet.payload))
            }
        };
        if video {
            let metered = MeteredPacket {
                spatial,
                temporal,
                bytes: packet.payload.len(),
                rtp_timestamp: packet.header.timestamp,
                keyframe_start,
            };
            track.meter.record(metered, packet.timestamp);
        }
        // The publisher has just started: once a first short window is measured, its
        // subscribers get their layers now, not at the next allocation round.
        let first_rates = track.meter.first_window_due(packet.timestamp);
        if first_rates {
            track.meter.tick(packet.timestamp);
        }
        let incoming = IncomingPacket {
            ssrc: *packet.header.ssrc,
            arrival: packet.timestamp,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            keyframe_start,
        };
        if let Some(level) = packet.header.ext_vals.audio_level.filter(|_| !video) {
            track.speaker.observe(level, packet.timestamp);
        }
        let extensions = forwarded_extensions(&packet.header.ext_vals);
        // Spatial layers some subscriber waits for a keyframe of.
        let mut wants_keyframe = [false; 3];

        for sub in &mut track.subscriptions {
            let Some(peer) = self
                .peers
                .get_mut(sub.peer.0 as usize)
                .and_then(Option::as_deref_mut)
            else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            if !sub.allowed {
                self.counters.rtp_withheld += 1;
                continue;
            }
            if let Some(selector) = &mut sub.selector {
                let mut decision = selector.decision();
                let on_current = decision.current.is_some_and(|c| c.spatial == spatial);
                if !on_current {
                    let target = decision.target.map(|t| t.spatial);
                    if target == Some(spatial) && keyframe_start {
                        // The keyframe the switch waited for: the subscriber moves here now.
                        decision = selector.keyframe(spatial);
                        sub.munger.switch_source();
                    } else {
                        if let Some(t) = target.filter(|_| decision.keyframe_needed) {
                            wants_keyframe[usize::from(t).min(2)] = true;
                        }
                        continue;
                    }
                }
                let Some(current) = decision.current else {
                    continue;
                };
                // Down a temporal layer at once; up only at a frame that references nothing above
                // the base layer, or the decoder would get frames whose references it never saw.
                let at_switch_point =
                    vp8.is_none_or(|h| h.starts_frame() && h.is_temporal_switch_point());
                if current.temporal < sub.temporal || keyframe_start || at_switch_point {
                    sub.temporal = current.temporal;
                }
                if temporal > sub.temporal {
                    sub.forwarder.skip(&incoming);
                    if let Some(h) = &vp8 {
                        sub.munger.drop(h);
                    }
                    continue;
                }
            }
            let pt = match sub.pt {
                Some((c, pt)) if c == codec => pt,
                // Already found unplayable, and no answer since that could change it.
                _ if sub.unplayable == Some(codec) && !sub.recheck => continue,
                _ => match negotiated_pt(&peer.rtc, sub.mid, codec) {
                    Some(pt) => {
                        sub.pt = Some((codec, pt));
                        sub.unplayable = None;
                        sub.recheck = false;
                        pt
                    }
                    // The offer with this track is not answered yet: nothing to judge.
                    None if peer.rtc.media(sub.mid).is_none() => continue,
                    // The subscriber cannot decode this codec: nothing to send it, and it is
                    // told (once, not again after each answer that changes nothing), so the page
                    // can say why there is no picture.
                    None => {
                        sub.recheck = false;
                        if sub.unplayable != Some(codec) {
                            sub.unplayable = Some(codec);
                            sub.reported = Some((None, true));
                            let _ = self.events.send(ShardEvent::TrackQuality {
                                participant: peer.participant,
                                track: track_id,
                                layer: None,
                                paused: Some(PauseReason::CodecUnsupported),
                            });
                        }
                        continue;
                    }
                },
            };
            match sub.forwarder.forward(&incoming) {
                Forward::Send {
                    seq,
                    timestamp,
                    marker,
                } => {
                    let patch = match (&vp8, &vp8_descriptor) {
                        (Some(h), Some(d)) => match sub.munger.forward(h) {
                            Some(rewrite) => rewrite.patch(d).ok(),
                            // A packet of a picture dropped earlier: sending it would break
                            // the picture sequence the decoder saw.
                            None => continue,
                        },
                        _ => None,
                    };
                    let mut api = peer.rtc.direct_api();
                    let tx = match sub.tx {
                        Some(ssrc) => api.stream_tx(&ssrc),
                        None => api.stream_tx_by_mid(sub.mid, None),
                    };
                    let Some(tx) = tx else {
                        continue;
                    };
                    if sub.tx.is_none() && video {
                        super::peer::configure_video_resends(tx);
                    }
                    sub.tx = Some(tx.ssrc());
                    let mut write = RtpWrite::new(
                        pt,
                        seq.into(),
                        timestamp,
                        packet.timestamp,
                        packet.payload.clone(),
                    )
                    .marker(marker)
                    .ext_vals(extensions.clone())
                    .nackable(video);
                    if let Some(patch) = patch {
                        write = write.vp8_patch(patch);
                    }
                    tx.write_rtp(write);
                    self.counters.rtp_forwarded += 1;
                    if !peer.dirty {
                        peer.dirty = true;
                        self.dirty.push(sub.peer);
                    }
                }
                Forward::Drop(_) => {
                    if sub.forwarder.wants_keyframe() {
                        wants_keyframe[usize::from(spatial).min(2)] = true;
                    }
                }
            }
        }

        for (layer, wanted) in wants_keyframe.into_iter().enumerate() {
            if wanted {
                self.request_keyframe(
                    track_id,
                    layer as u8,
                    KeyframeRequestKind::Pli,
                    packet.timestamp,
                );
            }
        }
        if first_rates {
            let subscribers: Vec<PeerKey> = self
                .tracks
                .get(&track_id)
                .map(|t| t.subscriptions.iter().map(|s| s.peer).collect())
                .unwrap_or_default();
            for key in subscribers {
                if self.peer(key).is_some_and(|p| p.connected) {
                    self.allocate_connected(key, packet.timestamp);
                }
            }
        }
    }

    /// Asks the publisher of `track_id` for a keyframe of one spatial layer, at most once per
    /// throttle interval and layer.
    pub(super) fn request_keyframe(
        &mut self,
        track_id: TrackId,
        spatial: u8,
        kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(throttle) = track.keyframe_throttle.get_mut(usize::from(spatial)) else {
            return;
        };
        if !throttle.allow(now) {
            return;
        }
        let (publisher, mid) = (track.publisher, track.mid);
        let rid = track.rids.get(usize::from(spatial)).copied();
        let Some(peer) = self.peer_mut(publisher) else {
            return;
        };
        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(kind);
            self.counters.keyframe_requests_sent += 1;
            self.mark_dirty(publisher);
        }
    }

    pub(super) fn on_keyframe_request(&mut self, key: PeerKey, req: KeyframeRequest) {
        let Some(peer) = self.peer(key) else { return };
        let PeerRole::Subscribe { tracks, .. } = &peer.role else {
            return;
        };
        let Some(&track_id) = tracks.get(&req.mid) else {
            return;
        };
        self.counters.keyframe_requests_received += 1;
        let sub = self
            .tracks
            .get(&track_id)
            .and_then(|t| t.subscriptions.iter().find(|s| s.peer == key));
        if sub.is_some_and(|s| !s.allowed) {
            return; // It receives nothing of this track: no reason to disturb the publisher.
        }
        // The subscriber lost its picture: it needs a keyframe of the layer it receives now.
        let spatial = sub
            .and_then(|s| s.selector.as_ref())
            .and_then(|sel| sel.decision().current)
            .map(|l| l.spatial)
            .unwrap_or(0);
        self.request_keyframe(track_id, spatial, req.kind, self.now);
    }

    pub(super) fn on_egress_stats(&mut self, key: PeerKey, stats: &MediaEgressStats) {
        let Some(peer) = self.peer(key) else { return };
        let PeerRole::Subscribe { tracks, .. } = &peer.role else {
            return;
        };
        let Some(&track_id) = tracks.get(&stats.mid) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if let Some(sub) = track.subscriptions.iter_mut().find(|s| s.peer == key) {
            self.counters.nacks_received += stats.nacks.saturating_sub(sub.nacks_seen);
            sub.nacks_seen = stats.nacks;
        }
        if let Some(peer) = self.peer_mut(key) {
            if let Some(rtt) = stats.rtt {
                peer.rtt_ms = Some(rtt.as_millis().min(u128::from(u32::MAX)) as u32);
            }
            if stats.loss.is_some() {
                peer.loss = stats.loss;
            }
        }
    }
}

/// RTP clock rate: 90 kHz for every video codec, 48 kHz for Opus.
fn clock_rate(kind: TrackKind) -> u32 {
    match kind {
        TrackKind::Audio => 48_000,
        TrackKind::Video => 90_000,
    }
}

/// str0m's media kind for a track.
pub(super) fn media_kind(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}
