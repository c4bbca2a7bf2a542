//! Per-subscriber bandwidth allocation, layer selection, dynacast and link reports.
//!
//! Twice a second every subscribe connection's estimate (str0m's send-side GoogCC over TWCC,
//! REMB as a fallback) is shared across its tracks by `core::allocator`; each video track's
//! `LayerSelector` turns its share into a layer. The shard then asks str0m to probe towards what
//! would be wanted next, asks publishers to stop encoding layers nobody needs (dynacast), and
//! reports changes to the control plane.

use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use tracing::{debug, trace};

use super::Shard;
use super::peer::{PeerKey, PeerRole};
use crate::command::{LayerName, PauseReason, ShardEvent};
use crate::core::allocator::{Allocation, Snapshot, TrackClass, TrackDemand, allocate};
use crate::core::layer::{
    Layer, LayerBitrates, MAX_SPATIAL, SelectorInput, UPGRADE_MARGIN_PERCENT,
};
use crate::core::pacing::{LinkState, pace_video};
use crate::core::probe::Nudge;
use crate::ids::{ParticipantId, TrackId};

/// How often allocations are recomputed.
pub(crate) const INTERVAL: Duration = Duration::from_millis(500);
/// The estimate assumed before the first feedback (libwebrtc's start rate): the lowest layer
/// at its full frame rate beside the audio. A guess above a weak link sends it a larger layer and
/// its keyframe: seconds of queue overflow, and GoogCC's loss-based estimate then falls for
/// seconds more, below what the link carries (seen at 0.3 Mbit/s with 1 Mbit/s here, 20–27 %
/// loss). str0m's first probes (3× and 6× this) find a fast link within a second or two.
pub(crate) const INITIAL_ESTIMATE: u64 = 300_000;
/// What a subscriber is assumed to carry when bandwidth estimation is off: every layer.
const UNESTIMATED: u64 = 1_000_000_000;
/// How often each participant's link is reported.
const REPORT_INTERVAL: Duration = Duration::from_secs(3);
/// A layer nobody needs keeps being encoded this long, so a subscriber that dips briefly does
/// not make the publisher restart an encoder.
const DYNACAST_GRACE: Duration = Duration::from_secs(5);

/// What the publisher of a simulcast track was last asked to encode.
#[derive(Debug, Default)]
pub(crate) struct Dynacast {
    /// Active spatial layers as last sent; `None` before the first decision (all active).
    sent: Option<[bool; MAX_SPATIAL]>,
    /// Since when each layer has been unneeded.
    unneeded_since: [Option<Instant>; MAX_SPATIAL],
    /// The best measured rates seen per layer, to judge layers switched off by dynacast.
    remembered: LayerBitrates,
}

impl Shard {
    pub(super) fn on_estimate(&mut self, key: PeerKey, estimate: BweKind) {
        let bps = match estimate {
            BweKind::Twcc { estimate, .. } => estimate.as_u64(),
            // REMB is per media section; the lowest one bounds the connection.
            BweKind::Remb { estimate, .. } => estimate.as_u64(),
            _ => return,
        };
        tracing::trace!(?key, bps, "estimate");
        if let Some(peer) = self.peer_mut(key) {
            peer.estimate = Some(bps);
        }
    }

    pub(super) fn set_track_cap(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
        max_spatial: Option<u8>,
    ) {
        let Some(subscriber) = self.members.get(&participant).and_then(|m| m.subscriber) else {
            return;
        };
        let cap = match max_spatial {
            Some(s) => Layer::new(s.min(MAX_SPATIAL as u8 - 1), Layer::MAX.temporal),
            None => Layer::MAX,
        };
        if let Some(sub) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.subscriptions.iter_mut().find(|s| s.peer == subscriber))
        {
            sub.cap = cap;
        }
    }

    /// Re-measures layers and re-decides every subscriber's layers.
    pub(super) fn allocate_all(&mut self, now: Instant) {
        for track in self.tracks.values_mut() {
            track.meter.tick(now);
            let rates = track.meter.rates(now);
            for (s, row) in rates.0.iter().enumerate() {
                if row[0] > 0 {
                    track.dynacast.remembered.0[s] = *row;
                }
            }
        }
        let report = now >= self.next_report;
        if report {
            self.next_report = now + REPORT_INTERVAL;
        }
        let mut paused = 0;
        for index in 0..self.peers.len() {
            let key = PeerKey(index as u32);
            let Some(subscribed) = self.subscribed_tracks(key) else {
                continue;
            };
            paused += self.allocate_subscriber(key, &subscribed, now, report);
        }
        self.counters.paused_tracks = paused;
        self.update_dynacast(now);
    }

    /// A subscriber that has just connected gets its layers now rather than at the next round:
    /// the keyframe its first picture waits for is asked for at once, up to a round sooner.
    pub(super) fn allocate_connected(&mut self, key: PeerKey, now: Instant) {
        if let Some(subscribed) = self.subscribed_tracks(key) {
            self.allocate_subscriber(key, &subscribed, now, false);
        }
    }

    fn subscribed_tracks(&self, key: PeerKey) -> Option<Vec<TrackId>> {
        match self.peer(key).map(|p| &p.role) {
            Some(PeerRole::Subscribe { tracks, .. }) => Some(tracks.values().copied().collect()),
            _ => None,
        }
    }

    /// Decides one subscriber's layers; returns how many of its tracks are paused.
    fn allocate_subscriber(
        &mut self,
        key: PeerKey,
        subscribed: &[TrackId],
        now: Instant,
        report: bool,
    ) -> u64 {
        let Some(peer) = self.peer(key) else { return 0 };
        let participant = peer.participant;
        let estimate = peer.estimate.unwrap_or(if self.bandwidth_estimation {
            INITIAL_ESTIMATE
        } else {
            UNESTIMATED
        });
        let (rtt_ms, loss, estimate_bps) = (peer.rtt_ms, peer.loss, peer.estimate);
        if let Some(e) = estimate_bps {
            self.counters.observe_estimate(e);
        }
        tracing::trace!(%participant, estimate, ?rtt_ms, ?loss, "allocation round");

        let mut demands = Vec::with_capacity(subscribed.len());
        for track_id in subscribed {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            let Some(sub) = track.subscriptions.iter().find(|s| s.peer == key) else {
                continue;
            };
            if sub.unplayable().is_some() {
                continue; // Nothing of it can be sent; it takes no bandwidth.
            }
            if !sub.allowed() {
                // Withheld (the lesson's audience): it takes no bandwidth, and its layer is not
                // judged, so it is never reported as paused for a weak network.
                continue;
            }
            demands.push(TrackDemand {
                id: *track_id,
                class: track.class,
                layers: track.meter.rates(now),
                cap: sub.cap,
            });
        }
        // What this subscriber would take with unlimited bandwidth: str0m probes towards it.
        let mut desired = 0u64;
        for d in &demands {
            desired += match d.class {
                TrackClass::Audio => crate::core::allocator::AUDIO_BPS,
                _ => d
                    .layers
                    .layers(d.cap)
                    .map(|(_, rate)| rate)
                    .max()
                    .unwrap_or(0),
            };
        }
        let allocations = allocate(&Snapshot {
            estimate,
            tracks: demands.clone(),
        });

        let mut events = Vec::new();
        let mut layers_report = Vec::new();
        let mut any_paused = false;
        let mut paused_now = 0u64;
        let mut next_step: Option<u64> = None;
        let mut allocated = 0u64;
        let mut video_streams = Vec::new();
        for (track_id, allocation) in allocations {
            let budget = match allocation {
                Allocation::Audio => {
                    allocated += crate::core::allocator::AUDIO_BPS;
                    continue;
                }
                Allocation::Video { budget, .. } => budget,
                Allocation::Paused | Allocation::Idle => 0,
            };
            let Some(track) = self.tracks.get_mut(&track_id) else {
                continue;
            };
            let layer_count = track.rids.len().max(1);
            let available = track.meter.rates(now);
            let keyframes = track.meter.keyframes();
            let Some(sub) = track.subscriptions.iter_mut().find(|s| s.peer == key) else {
                continue;
            };
            let cap = sub.cap;
            video_streams.extend(sub.stream());
            let Some(selector) = sub.selector_mut() else {
                continue;
            };
            let decision = selector.update(&SelectorInput {
                now,
                budget,
                available,
                peaks: track.meter.peak_rates(now),
                keyframes,
                cap,
            });
            trace!(
                %participant, track = %track_id, budget, current = ?decision.current,
                target = ?decision.target, "layer decision"
            );
            let current_rate = decision.current.and_then(|l| available.get(l)).unwrap_or(0);
            allocated += current_rate;
            if next_step.is_none() {
                // The first track, in priority order, that could go up decides how far str0m
                // should probe (with padding) before the allocator can try it.
                let higher = match decision.current {
                    Some(cur) => available
                        .targets(cap)
                        .filter(|(l, _)| *l > cur)
                        .min_by_key(|(l, _)| *l),
                    None => available.lowest(cap),
                };
                next_step = higher.map(|(_, rate)| rate.saturating_sub(current_rate));
            }
            // Clients hear of spatial changes and pauses; temporal steps are too frequent to tell.
            let name = decision
                .current
                .map(|l| LayerName::of(l.spatial, layer_count));
            let shown = (name, decision.paused);
            if sub.reported != Some(shown) && (decision.current.is_some() || decision.paused) {
                debug!(
                    %participant, track = %track_id, estimate, budget, ?available,
                    keyframes = ?keyframes.0, current = ?decision.current,
                    paused = decision.paused, "layer change"
                );
                if sub.reported.is_some_and(|(layer, _)| layer != name) {
                    self.counters.layer_switches += 1;
                }
                sub.reported = Some(shown);
                events.push(ShardEvent::TrackQuality {
                    participant,
                    track: track_id,
                    layer: name,
                    paused: decision.paused.then_some(PauseReason::WeakNetwork),
                });
            }
            any_paused |= decision.paused;
            paused_now += u64::from(decision.paused);
            layers_report.push((
                track_id,
                decision
                    .current
                    .map(|l| LayerName::of(l.spatial, layer_count)),
            ));
            if decision.keyframe_needed
                && let Some(target) = decision.target
            {
                self.request_keyframe(
                    track_id,
                    target.spatial,
                    str0m::media::KeyframeRequestKind::Pli,
                    now,
                );
            }
        }
        let estimating = self.bandwidth_estimation;
        if let Some(peer) = self.peer_mut(key) {
            // Keep probing towards what the subscriber would take; padding fills up to what it
            // takes now, so the estimate can grow before an upgrade is tried.
            let desired = desired.max(allocated);
            let minimum = (allocated + next_step.unwrap_or(0)).min(desired);
            // An upgrade needs the selector's margin on top of the step.
            let wants_more = next_step.is_some_and(|step| {
                estimate < (allocated + step).saturating_mul(UPGRADE_MARGIN_PERCENT) / 100
            });
            let desired = match peer.probe.round(now, wants_more, estimate) {
                Nudge::Steady => desired,
                Nudge::Lower => desired.saturating_sub(1),
            };
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum.min(desired)), Bitrate::bps(desired));
            if estimating {
                let paced = pace_video(LinkState {
                    limited: next_step.is_some(),
                    paused: any_paused,
                    loss,
                });
                let mut api = peer.rtc.direct_api();
                for ssrc in &video_streams {
                    if let Some(tx) = api.stream_tx(ssrc) {
                        tx.set_unpaced(!paced);
                    }
                }
                if paced != peer.video_paced {
                    peer.video_paced = paced;
                    debug!(%participant, paced, estimate, ?loss, "video pacing");
                }
            }
        }
        self.mark_dirty(key);
        for e in events {
            let _ = self.events.send(e);
        }
        if report {
            let _ = self.events.send(ShardEvent::ConnectionQuality {
                participant,
                rtt_ms,
                loss,
                estimate_bps,
                layers: layers_report,
                any_paused,
            });
        }
        paused_now
    }

    /// Asks publishers to stop encoding simulcast layers no subscriber needs, and to resume them.
    fn update_dynacast(&mut self, now: Instant) {
        let mut events = Vec::new();
        for (track_id, track) in &mut self.tracks {
            if track.rids.len() < 2 {
                continue;
            }
            // The highest layer any subscriber targets or receives; lower layers stay on for
            // quick downswitches and new subscribers.
            let mut needed_up_to = 0usize;
            for sub in &track.subscriptions {
                let Some(selector) = sub.selector() else {
                    continue;
                };
                if sub.unplayable().is_some() || !sub.allowed() {
                    continue; // It can take none of these layers, or may not.
                }
                let d = selector.decision();
                let wanted = match (d.target, d.current) {
                    (Some(t), _) => t.spatial,
                    (None, Some(c)) => c.spatial,
                    // Paused or not started: judge with the rates remembered from when the
                    // layers were on, so a layer switched off can be asked for again.
                    (None, None) => track
                        .dynacast
                        .remembered
                        .lowest(sub.cap)
                        .map(|(l, _)| l.spatial)
                        .unwrap_or(0),
                };
                needed_up_to = needed_up_to.max(usize::from(wanted));
                // A subscriber capped higher than it gets now may climb: keep the next layer.
                let headroom = usize::from(sub.cap.spatial).min(usize::from(wanted) + 1);
                needed_up_to = needed_up_to.max(headroom.min(track.rids.len() - 1));
            }
            let mut active = track.dynacast.sent.unwrap_or([true; MAX_SPATIAL]);
            for (s, on) in active.iter_mut().enumerate().take(track.rids.len()) {
                if s <= needed_up_to {
                    track.dynacast.unneeded_since[s] = None;
                    *on = true;
                } else {
                    let since = *track.dynacast.unneeded_since[s].get_or_insert(now);
                    if now.saturating_duration_since(since) >= DYNACAST_GRACE {
                        *on = false;
                    }
                }
            }
            if track.dynacast.sent != Some(active) {
                let first = track.dynacast.sent.is_none();
                track.dynacast.sent = Some(active);
                if first && active.iter().all(|a| *a) {
                    continue; // Everything is on already; nothing to say.
                }
                events.push(ShardEvent::SetEncodings {
                    participant: track.info.participant,
                    track: *track_id,
                    mid: track.info.mid.clone(),
                    active: track
                        .rids
                        .iter()
                        .zip(active)
                        .filter(|(_, on)| *on)
                        .map(|(rid, _)| rid.to_string())
                        .collect(),
                });
            }
        }
        for e in events {
            let _ = self.events.send(e);
        }
    }
}
