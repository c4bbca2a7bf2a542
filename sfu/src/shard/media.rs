//! The packet path: an RTP packet from a publisher, decided per subscriber, written to each.
//!
//! Per packet this does map lookups, asks each subscriber's down track (`core::downtrack`) what
//! to do, and applies the answer: one `write_rtp` per packet sent, a counter per packet dropped
//! (by reason), keyframe requests and events. The payload is shared (`Arc<[u8]>`) between all
//! subscribers and str0m's retransmission caches, never copied.

use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaKind, Mid, SenderFeedback};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::stats::{MediaEgressStats, PeerStats};

use super::Shard;
use super::peer::{PeerKey, PeerRole};
use crate::command::{Audience, PauseReason, ShardEvent, TrackKind};
use crate::core::audience::Change;
use crate::core::bitrate::MeteredPacket;
use crate::core::downtrack::{
    DownTrack, DropReason, Negotiated, PacketInfo, Verdict, forwarded_extensions,
};
use crate::core::forward::SenderClock;
use crate::core::lanes::Lanes;
use crate::core::layer::{Layer, LayerSelector};
use crate::ids::TrackId;

/// One track flowing to one subscriber connection: where it goes, what the client was told,
/// and the down track that decides each packet (`core::downtrack`).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub peer: PeerKey,
    /// The mid of the track in the subscriber's connection.
    pub mid: Mid,
    /// The per-packet decision: forwarder, layer selector, VP8 munger, payload type, audience.
    pub down: DownTrack,
    /// The SSRC of the outgoing stream, found once: a hash lookup instead of a scan by mid.
    tx: Option<Ssrc>,
    /// NACKs counted so far from this subscriber's stats (they arrive as running totals).
    nacks_seen: u64,
    /// Packets str0m had sent on this stream at its last stats: a report on a stream that sent
    /// nothing since (a paused track) carries the round-trip time and loss of its last sender
    /// report, however old.
    packets_seen: u64,
    /// The highest layer the client asked for (`set_track_quality`).
    pub cap: Layer,
    /// What the client was last told about this track: (layer, paused).
    pub reported: Option<(Option<crate::command::LayerName>, bool)>,
    /// A link's subscription of a simulcast track: every layer it carries is a stream of its
    /// own (`core::lanes`); `down` then only says whether the audience admits the link.
    pub lanes: Option<Box<Lanes>>,
    /// The outgoing stream of each lane, found once.
    lane_tx: [Option<Ssrc>; 3],
}

impl Subscription {
    /// The outgoing stream's SSRC, once the first packet has been written to it.
    pub fn stream(&self) -> Option<Ssrc> {
        self.tx
    }

    /// Video only: which layer this subscriber gets, decided from its bandwidth estimate.
    pub fn selector(&self) -> Option<&LayerSelector> {
        self.down.selector()
    }

    pub fn selector_mut(&mut self) -> Option<&mut LayerSelector> {
        self.down.selector_mut()
    }

    /// The track's audience admits this subscriber (`core::audience`).
    pub fn allowed(&self) -> bool {
        self.down.allowed()
    }

    /// The codec this subscriber cannot take (its answer lacks it), once it has been told.
    pub fn unplayable(&self) -> Option<Codec> {
        self.down.unplayable()
    }

    /// The subscriber answered a new offer: what it accepts may have changed.
    pub fn renegotiated(&mut self) {
        self.down.renegotiated();
        if let Some(lanes) = &mut self.lanes {
            lanes.renegotiated();
        }
    }

    /// Makes this a link's subscription of a track with `layers` simulcast layers.
    pub fn with_lanes(mut self, layers: usize) -> Self {
        let seed = || (rand::random(), rand::random());
        self.lanes = Some(Box::new(Lanes::new(layers, [seed(), seed(), seed()])));
        self
    }

    /// The layer the subscriber receives now, as its selector or its lanes say.
    pub fn decision(&self) -> Option<crate::core::layer::Decision> {
        match &self.lanes {
            Some(lanes) => Some(lanes.decision()),
            None => self.selector().map(|s| s.decision()),
        }
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
            down: DownTrack::new(
                kind == TrackKind::Video,
                teacher,
                audience,
                rand::random(),
                rand::random(),
            ),
            tx: None,
            nacks_seen: 0,
            packets_seen: 0,
            cap: Layer::MAX,
            reported: None,
            lanes: None,
            lane_tx: [None; 3],
        }
    }

    /// The track's audience changed: what this subscription must do (`core::audience`).
    pub fn set_audience(&mut self, audience: Audience) -> Change {
        self.down.set_audience(audience)
    }
}

/// What the subscriber's connection accepted for `codec` on `mid`: the down track asks only
/// after a renegotiation or for a codec it has not sent yet.
fn negotiated(rtc: &Rtc, mid: Mid, codec: Codec) -> Negotiated {
    let Some(media) = rtc.media(mid) else {
        return Negotiated::NotAnswered;
    };
    let remote = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == codec)
        .find(|p| remote.is_empty() || remote.contains(&p.pt()))
        .map_or(Negotiated::Refused, |p| Negotiated::Pt(p.pt()))
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
        let ssrc = *packet.header.ssrc;
        let clock = track
            .sender_clocks
            .get(usize::from(spatial))
            .copied()
            .flatten()
            .filter(|(of, _)| *of == ssrc)
            .map(|(_, clock)| clock);
        if track.forward_to.is_empty() {
            self.forward(track_id, spatial, codec, clock, &packet);
        } else {
            // The room spans shards: one allocation per packet (not per subscriber or shard)
            // shares it with them; the payload inside was shared already.
            let packet = std::sync::Arc::new(packet);
            self.forward_across(track_id, spatial, codec, clock, &packet);
            self.forward(track_id, spatial, codec, clock, &packet);
        }
    }

    /// A publisher's packet, local or from another shard (`cross`), to this shard's
    /// subscribers of the track.
    pub(super) fn forward(
        &mut self,
        track_id: TrackId,
        spatial: u8,
        codec: Codec,
        clock: Option<SenderClock>,
        packet: &RtpPacket,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let video = track.info.source.kind() == TrackKind::Video;
        let info = PacketInfo::describe(packet, spatial, codec, video, clock);
        if video {
            let metered = MeteredPacket {
                spatial,
                temporal: info.temporal,
                bytes: packet.payload.len(),
                rtp_timestamp: packet.header.timestamp,
                keyframe_start: info.keyframe_start,
            };
            track.meter.record(metered, packet.timestamp);
        }
        // The publisher has just started: once a first short window is measured, its
        // subscribers get their layers now, not at the next allocation round.
        let first_rates = track.meter.first_window_due(packet.timestamp);
        if first_rates {
            track.meter.tick(packet.timestamp);
        }
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
                self.counters.count_drop(DropReason::NotConnected);
                continue;
            };
            let mid = sub.mid;
            if let Some(lanes) = &mut sub.lanes {
                // A link's simulcast: the packet goes out on its own layer's stream.
                if !peer.connected {
                    self.counters.count_drop(DropReason::NotConnected);
                    continue;
                }
                if !sub.down.allowed() {
                    self.counters.count_drop(DropReason::Withheld);
                    continue;
                }
                let answer = lanes.on_packet(&info, |codec| negotiated(&peer.rtc, mid, codec));
                if let Some(layer) = answer.wants_keyframe {
                    wants_keyframe[usize::from(layer).min(2)] = true;
                }
                let send = match answer.verdict {
                    Verdict::Send(send) => send,
                    Verdict::Drop(reason) => {
                        self.counters.count_drop(reason);
                        continue;
                    }
                };
                let lane = usize::from(spatial).min(2);
                let mut api = peer.rtc.direct_api();
                let tx = match sub.lane_tx[lane] {
                    Some(ssrc) => api.stream_tx(&ssrc),
                    None => api.stream_tx_by_mid(mid, track.rids.get(lane).copied()),
                };
                let Some(tx) = tx else {
                    self.counters.count_drop(DropReason::NoOutgoingStream);
                    continue;
                };
                if sub.lane_tx[lane].is_none() {
                    super::peer::configure_video_resends(tx);
                }
                sub.lane_tx[lane] = Some(tx.ssrc());
                tx.write_rtp(send.rtp_write(packet, &extensions, true));
                self.counters.rtp_forwarded += 1;
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(sub.peer);
                }
                continue;
            }
            let answer = sub.down.on_packet(&info, peer.connected, |codec| {
                negotiated(&peer.rtc, mid, codec)
            });
            if let Some(layer) = answer.wants_keyframe {
                wants_keyframe[usize::from(layer).min(2)] = true;
            }
            if answer.report_unplayable.is_some() {
                sub.reported = Some((None, true));
                let _ = self.events.send(ShardEvent::TrackQuality {
                    participant: peer.participant,
                    track: track_id,
                    layer: None,
                    paused: Some(PauseReason::CodecUnsupported),
                });
            }
            let send = match answer.verdict {
                Verdict::Send(send) => send,
                Verdict::Drop(reason) => {
                    self.counters.count_drop(reason);
                    continue;
                }
            };
            let mut api = peer.rtc.direct_api();
            let tx = match sub.tx {
                Some(ssrc) => api.stream_tx(&ssrc),
                None => api.stream_tx_by_mid(sub.mid, None),
            };
            let Some(tx) = tx else {
                self.counters.count_drop(DropReason::NoOutgoingStream);
                continue;
            };
            if sub.tx.is_none() && video {
                super::peer::configure_video_resends(tx);
            }
            sub.tx = Some(tx.ssrc());
            let write = send.rtp_write(packet, &extensions, video);
            tx.write_rtp(write);
            self.counters.rtp_forwarded += 1;
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(sub.peer);
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

    /// A publisher's RTCP sender report: kept per spatial layer, with the SSRC it describes,
    /// for the down tracks to align timestamps at a layer switch (`core::forward`).
    pub(super) fn on_sender_feedback(&mut self, key: PeerKey, feedback: &SenderFeedback) {
        let Some(peer) = self.peer(key) else { return };
        let PeerRole::Publish { tracks, .. } = &peer.role else {
            return;
        };
        let Some(&track_id) = tracks.get(&feedback.mid) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let spatial = match feedback.rid {
            Some(rid) => track.rids.iter().position(|r| *r == rid),
            None => Some(0),
        };
        let info = &feedback.sender_info;
        // An NTP time before 1970 is no clock to align by.
        let Ok(ntp) = info.ntp_time.duration_since(std::time::UNIX_EPOCH) else {
            return;
        };
        let clock = SenderClock {
            rtp: info.rtp_time.numer() as u32,
            ntp_micros: ntp.as_micros().min(u128::from(u64::MAX)) as u64,
        };
        if let Some(slot) = spatial.and_then(|s| track.sender_clocks.get_mut(s)) {
            *slot = Some((*info.ssrc, clock));
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
        if let Some(owner) = track.owner {
            self.keyframe_to_owner(owner, track_id, spatial, kind);
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
        if sub.is_some_and(|s| !s.allowed()) {
            return; // It receives nothing of this track: no reason to disturb the publisher.
        }
        // The subscriber lost its picture: it needs a keyframe of the layer it receives now;
        // a link names the lane (rid) that lost it.
        let lane = sub.filter(|s| s.lanes.is_some()).and_then(|_| {
            let rids = &self.tracks.get(&track_id)?.rids;
            rids.iter().position(|r| Some(*r) == req.rid)
        });
        let spatial = match lane {
            Some(s) => s as u8,
            None => sub.map_or(0, |s| s.down.current_spatial()),
        };
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
        let mut fresh = false;
        if let Some(sub) = track.subscriptions.iter_mut().find(|s| s.peer == key) {
            self.counters.nacks_received += stats.nacks.saturating_sub(sub.nacks_seen);
            sub.nacks_seen = stats.nacks;
            fresh = stats.packets > sub.packets_seen;
            sub.packets_seen = stats.packets;
        }
        // Only a stream that is sending says what the link does now. A video paused through a
        // weak spell kept reporting the 445 ms of the queue its last sender report stood in,
        // every second beside the audio's 40 ms, long after the link had recovered; the rate
        // proof took it for a queue each time and the pupil stayed at 7.5 frames a second.
        if !fresh {
            return;
        }
        if let Some(peer) = self.peer_mut(key) {
            if let Some(rtt) = stats.rtt
                && !peer.rtt_from_twcc
            {
                peer.rtt_ms = Some(millis(rtt));
            }
            if stats.loss.is_some() {
                peer.loss = stats.loss;
            }
        }
    }

    /// The round-trip time of the latest packet transport-wide feedback covered: it comes ten
    /// times a second and shows a queue within about a tenth of a second. A receiver report's
    /// shows it only one sender report later, and goes on repeating that report's delay for as
    /// long as the stream sends no newer one: after a 300 kbit/s link was lifted to fibre the
    /// audio's reports said 142–271 ms for four seconds beside the video's 14 ms, the rate proof
    /// took each for a queue, and the pupil took 15 s instead of 8 to climb back to `f`.
    pub(super) fn on_peer_stats(&mut self, key: PeerKey, stats: &PeerStats) {
        if let (Some(rtt), Some(peer)) = (stats.rtt, self.peer_mut(key)) {
            peer.rtt_ms = Some(millis(rtt));
            peer.rtt_from_twcc = true;
        }
    }
}

fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// str0m's media kind for a track.
pub(super) fn media_kind(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}
