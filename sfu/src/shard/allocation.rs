//! Glue for per-subscriber bandwidth allocation, layer selection, dynacast and link reports.
//!
//! Twice a second every subscribe connection's estimate (str0m's send-side GoogCC over TWCC,
//! REMB as a fallback) is shared across its tracks. The decisions are made in `core`
//! (`allocation_round`, `dynacast`); this module gathers their inputs from the peers and
//! subscriptions, and applies their answers: layer selectors stored back, `TrackQuality`
//! events, keyframe requests, str0m's probe targets and pacing, `SetEncodings` to publishers,
//! and the periodic link report.

use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use tracing::{debug, trace};

use super::Shard;
use super::peer::{PeerKey, PeerRole};
use crate::command::{LayerName, PauseReason, ShardEvent};
pub(crate) use crate::core::allocation_round::INITIAL_ESTIMATE;
use crate::core::allocation_round::{self, Link, RoundTrack};
use crate::core::allocator::{AUDIO_BPS, TrackClass};
use crate::core::capacity::Observation;
pub(crate) use crate::core::dynacast::Dynacast;
use crate::core::dynacast::Viewer;
use crate::core::lanes::{self, LaneTrack};
use crate::core::layer::{Layer, MAX_SPATIAL};
use crate::ids::{ParticipantId, TrackId};

/// How often allocations are recomputed.
pub(crate) const INTERVAL: Duration = Duration::from_millis(500);
/// How often each participant's link is reported.
const REPORT_INTERVAL: Duration = Duration::from_secs(3);

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
            track.dynacast.remember(&track.meter.rates(now));
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

    /// Runs one subscriber's allocation round (`core::allocation_round`) and applies it;
    /// returns how many of its tracks are paused.
    fn allocate_subscriber(
        &mut self,
        key: PeerKey,
        subscribed: &[TrackId],
        now: Instant,
        report: bool,
    ) -> u64 {
        let estimating = self.bandwidth_estimation;
        let Some(peer) = self.peer_mut(key) else {
            return 0;
        };
        let participant = peer.participant;
        let (rtt_ms, loss, estimate_bps) = (peer.rtt_ms, peer.loss, peer.estimate);
        let mut link = Link {
            now,
            estimate: estimate_bps,
            estimating,
            loss,
            proven: None,
            queued: false,
        };
        if estimating {
            link.proven = Some(peer.capacity.observe(Observation {
                now,
                bytes_sent: peer.bytes_sent,
                rtt_ms,
                loss,
                estimate: link.usable_estimate(),
            }));
            link.queued = peer.capacity.queued();
        }
        if let Some(e) = estimate_bps {
            self.counters.observe_estimate(e);
        }
        tracing::trace!(
            %participant, estimate = link.usable_estimate(), proven = ?link.proven, ?rtt_ms, ?loss,
            "allocation round"
        );
        // A link's simulcast lanes take their share first, after its audio; the round shares
        // out what is left among its other tracks.
        let audio = subscribed
            .iter()
            .filter(|t| {
                self.tracks
                    .get(t)
                    .is_some_and(|t| t.class == TrackClass::Audio)
            })
            .count() as u64;
        let lane_budget = link.usable_estimate().saturating_sub(audio * AUDIO_BPS);
        let (lanes_used, lanes_desired) =
            self.allocate_lanes(key, participant, subscribed, now, lane_budget);
        if lanes_used > 0 {
            link.estimate = Some(link.usable_estimate().saturating_sub(lanes_used));
            link.proven = link.proven.map(|p| p.saturating_sub(lanes_used));
        }
        let mut inputs = self.round_tracks(key, subscribed, now);
        let Some(peer) = self.peer_mut(key) else {
            return 0;
        };
        let round = allocation_round::run(&link, &mut peer.probe, &mut inputs);

        let mut events = Vec::new();
        let mut video_streams = Vec::with_capacity(round.tracks.len());
        for outcome in &round.tracks {
            let Some(input) = inputs.get_mut(outcome.index) else {
                continue;
            };
            let Some(track) = self.tracks.get_mut(&outcome.id) else {
                continue;
            };
            let Some(sub) = track.subscriptions.iter_mut().find(|s| s.peer == key) else {
                continue;
            };
            video_streams.extend(sub.stream());
            let Some(decision) = outcome.decision else {
                continue;
            };
            if let (Some(kept), Some(updated)) = (sub.selector_mut(), input.selector.take()) {
                *kept = updated;
            }
            trace!(
                %participant, track = %outcome.id, budget = outcome.budget,
                current = ?decision.current, target = ?decision.target, "layer decision"
            );
            if let Some(change) = outcome.quality {
                debug!(
                    %participant, track = %outcome.id, estimate = round.estimate,
                    budget = outcome.budget, available = ?input.rates,
                    keyframes = ?input.keyframes.0, current = ?decision.current,
                    paused = decision.paused, "layer change"
                );
                if change.switched {
                    self.counters.layer_switches += 1;
                }
                sub.reported = Some(change.shown());
                events.push(ShardEvent::TrackQuality {
                    participant,
                    track: outcome.id,
                    layer: change.layer,
                    paused: change.paused.then_some(PauseReason::WeakNetwork),
                });
            }
            if let Some(spatial) = outcome.keyframe {
                self.request_keyframe(
                    outcome.id,
                    spatial,
                    str0m::media::KeyframeRequestKind::Pli,
                    now,
                );
            }
        }
        if let Some(peer) = self.peer_mut(key) {
            let targets = round.targets;
            // A link probes towards every lane the far side wants.
            let desired = targets.desired + lanes_desired;
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(targets.minimum), Bitrate::bps(desired));
            if let Some(paced) = round.paced {
                let mut api = peer.rtc.direct_api();
                for ssrc in &video_streams {
                    if let Some(tx) = api.stream_tx(ssrc) {
                        tx.set_unpaced(!paced);
                    }
                }
                if paced != peer.video_paced {
                    peer.video_paced = paced;
                    debug!(%participant, paced, estimate = round.estimate, ?loss, "video pacing");
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
                layers: round.link.layers,
                any_paused: round.link.any_paused,
            });
        }
        round.paused
    }

    /// Decides the lanes of every simulcast track a link connection carries (`core::lanes`)
    /// within `budget`, and tells the link's side which layer is the highest it carries now;
    /// returns the measured rate of the lanes on and of every lane the far side wants.
    fn allocate_lanes(
        &mut self,
        key: PeerKey,
        participant: ParticipantId,
        subscribed: &[TrackId],
        now: Instant,
        budget: u64,
    ) -> (u64, u64) {
        let mut ids = Vec::new();
        let mut inputs = Vec::new();
        for track_id in subscribed {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            let Some((sub, lanes)) = track
                .subscriptions
                .iter()
                .find(|s| s.peer == key)
                .and_then(|s| Some((s, s.lanes.as_deref()?)))
            else {
                continue;
            };
            if !sub.allowed() {
                continue;
            }
            ids.push(*track_id);
            inputs.push(LaneTrack {
                class: track.class,
                layers: lanes.layers(),
                rates: track.meter.rates(now),
                wanted: lanes.wanted(),
                cap: sub.cap.spatial,
            });
        }
        if ids.is_empty() {
            return (0, 0);
        }
        let allocation = lanes::allocate(&inputs, budget);
        let mut events = Vec::new();
        for (track_id, on) in ids.iter().zip(&allocation.on) {
            let Some(sub) = self
                .tracks
                .get_mut(track_id)
                .and_then(|t| t.subscriptions.iter_mut().find(|s| s.peer == key))
            else {
                continue;
            };
            let Some(lanes) = sub.lanes.as_deref_mut() else {
                continue;
            };
            if lanes.set_on(*on) {
                debug!(%participant, track = %track_id, lanes = ?on, budget, "link lanes");
            }
            let shown = (
                lanes.highest_on().map(|s| LayerName::of(s, lanes.layers())),
                false,
            );
            if sub.reported != Some(shown) {
                sub.reported = Some(shown);
                events.push(ShardEvent::TrackQuality {
                    participant,
                    track: *track_id,
                    layer: shown.0,
                    paused: None,
                });
            }
        }
        for e in events {
            let _ = self.events.send(e);
        }
        (allocation.used, allocation.desired)
    }

    /// The far side of a link asked for the layers its subscribers need of the track the
    /// link's subscribe connection carries on `mid` (`link_layers`). A mid that carries no
    /// simulcast track of this participant is ignored: the track may have just gone.
    pub(super) fn set_link_layers(
        &mut self,
        participant: ParticipantId,
        mid: &str,
        active: &[String],
    ) {
        let Some(key) = self.members.get(&participant).and_then(|m| m.subscriber) else {
            return;
        };
        let track_id = match self.peer(key).map(|p| &p.role) {
            Some(PeerRole::Subscribe { tracks, .. }) => {
                tracks.get(&str0m::media::Mid::from(mid)).copied()
            }
            _ => None,
        };
        let Some(track) = track_id.and_then(|t| self.tracks.get_mut(&t)) else {
            debug!(%participant, mid, "link layers for no track");
            return;
        };
        let wanted = lanes::layers_named(&track.rids, active);
        if let Some(lanes) = track
            .subscriptions
            .iter_mut()
            .find(|s| s.peer == key)
            .and_then(|s| s.lanes.as_deref_mut())
        {
            debug!(%participant, mid, ?wanted, "link layers wanted");
            lanes.set_wanted(wanted);
        }
    }

    /// What the round needs to know of each track `key` receives, in the order given. Each
    /// selector is copied in; `allocate_subscriber` stores the updated one back.
    fn round_tracks(
        &self,
        key: PeerKey,
        subscribed: &[TrackId],
        now: Instant,
    ) -> Vec<RoundTrack<TrackId>> {
        let mut inputs = Vec::with_capacity(subscribed.len());
        for track_id in subscribed {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            let Some(sub) = track
                .subscriptions
                .iter()
                .find(|s| s.peer == key && s.lanes.is_none())
            else {
                continue;
            };
            inputs.push(RoundTrack {
                id: *track_id,
                class: track.class,
                layer_count: track.rids.len().max(1),
                rates: track.meter.rates(now),
                peaks: track.meter.peak_rates(now),
                keyframes: track.meter.keyframes(),
                cap: sub.cap,
                allowed: sub.allowed(),
                unplayable: sub.unplayable().is_some(),
                reported: sub.reported,
                selector: sub.selector().cloned(),
            });
        }
        inputs
    }

    /// Asks publishers to stop encoding simulcast layers no subscriber needs, and to resume them
    /// (`core::dynacast`).
    fn update_dynacast(&mut self, now: Instant) {
        let mut events = Vec::new();
        let mut demands = Vec::new();
        for (track_id, track) in &mut self.tracks {
            let viewers = track.subscriptions.iter().filter_map(|sub| {
                Some(Viewer {
                    decision: sub.decision()?,
                    cap: sub.cap,
                    allowed: sub.allowed(),
                    unplayable: sub.unplayable().is_some(),
                })
            });
            if track.owner.is_some() {
                // A mirror: its owner asks the publisher, for the union of every shard's wants.
                if !track.rids.is_empty()
                    && let Some(changed) = track.demand.changed(viewers.collect())
                {
                    demands.push((*track_id, changed));
                }
                continue;
            }
            let remote = track
                .remote_viewers
                .iter()
                .flat_map(|(_, v)| v.iter().copied());
            let viewers = viewers.chain(remote);
            let Some(active) = track.dynacast.update(now, track.rids.len(), viewers) else {
                continue;
            };
            events.push(ShardEvent::SetEncodings {
                // The connection's participant encodes it, even for a track it carries for
                // someone else (a link's).
                participant: track.by,
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
        for e in events {
            let _ = self.events.send(e);
        }
        for (track_id, viewers) in demands {
            if let Some(track) = self.tracks.get(&track_id) {
                self.send_demand(track, viewers);
            }
        }
    }
}
