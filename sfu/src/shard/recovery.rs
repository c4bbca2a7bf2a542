//! Keeping a participant's connections through a dropped socket or a changed network: offers
//! re-sent after a resume, ICE restarts (asked for by the client, or started here when a path
//! stays quiet: `core::restart`), new ICE credentials in the demux, and closing only
//! connections that stayed disconnected for long (`core::liveness`).

use std::time::Instant;

use tracing::debug;

use super::Shard;
use super::peer::{PeerKey, PeerRole};
use str0m::media::KeyframeRequestKind;

use crate::command::{ShardEvent, SubscribedTrack, TrackKind};
use crate::core::liveness::Liveness;
use crate::core::restart::RestartSchedule;
use crate::ids::{ParticipantId, TrackId};

/// What one peer connection keeps for recovery.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub liveness: Liveness,
    /// The latest offer sent to a subscriber, re-sent when its socket was replaced while the
    /// offer was pending.
    pub last_offer: Option<(String, Vec<SubscribedTrack>)>,
    /// The next subscriber offer carries fresh ICE credentials.
    pub restart_wanted: bool,
    /// The pending subscriber offer carries fresh ICE credentials: a restart asked for now (by
    /// the client, or by `restart_quiet`) would only cross it.
    pub restart_in_flight: bool,
    /// Restarts started by the server while the path is quiet.
    pub restart: RestartSchedule,
}

impl Recovery {
    /// str0m reports the ICE path quiet at `now`.
    pub fn path_down(&mut self, now: Instant) {
        self.liveness.disconnected(now);
        self.restart.disconnected(now);
    }

    /// The path has a nominated pair again; returns whether it had been down.
    pub fn path_up(&mut self) -> bool {
        let was_down = self.liveness.is_disconnected();
        self.liveness.connected();
        self.restart.connected();
        was_down
    }
}

impl Shard {
    /// `ShardCommand::Reoffer`.
    pub(super) fn reoffer(&mut self, participant: ParticipantId, ice_restart: bool) {
        let Some(key) = self.members.get(&participant).and_then(|m| m.subscriber) else {
            return;
        };
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        if ice_restart && peer.recovery.restart_in_flight {
            // Both sides asked (the page and `restart_quiet`): one restart is enough. A client
            // that lost the pending offer with its socket gets it again on `resume`.
            return;
        }
        if ice_restart {
            peer.recovery.restart_wanted = true;
        }
        let PeerRole::Subscribe {
            pending,
            renegotiate,
            ..
        } = &mut peer.role
        else {
            return;
        };
        if pending.is_none() {
            if ice_restart {
                self.negotiate_subscriber(participant);
            }
            return;
        }
        if ice_restart {
            // After the pending offer's answer: two offers in flight would cross.
            *renegotiate = true;
        } else if let Some((sdp, tracks)) = peer.recovery.last_offer.clone() {
            debug!(%participant, "re-sending the pending subscriber offer");
            let _ = self.events.send(ShardEvent::SubscriberOffer {
                participant,
                sdp,
                tracks,
            });
        }
    }

    /// After a negotiation: a changed local ufrag (an ICE restart) is what the client's checks
    /// now name, so the demux routes it here. Learned addresses stay.
    pub(super) fn refresh_ufrag(&mut self, key: PeerKey) {
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag == peer.ufrag {
            return;
        }
        let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
        debug!(participant = %peer.participant, "ICE restarted");
        self.demux.rename(&old, &ufrag, key);
        self.announce_peer(key, super::cross::PeerChange::Renamed(&old, &ufrag));
    }

    /// A connection's path is back after an outage: the pictures it carries need a keyframe
    /// now, rather than when the decoders behind it notice and ask.
    pub(super) fn path_back(&mut self, key: PeerKey) {
        let Some(peer) = self.peer(key) else {
            return;
        };
        debug!(participant = %peer.participant, "ICE path back; asking for keyframes");
        let wanted: Vec<(TrackId, u8)> = match &peer.role {
            PeerRole::Subscribe { tracks, .. } => tracks
                .values()
                .filter_map(|t| {
                    let track = self.tracks.get(t)?;
                    let spatial = track
                        .subscriptions
                        .iter()
                        .find(|s| s.peer == key)
                        .and_then(|s| s.selector())
                        .and_then(|sel| sel.decision().current)
                        .map(|l| l.spatial)
                        .unwrap_or(0);
                    Some((*t, spatial))
                })
                .collect(),
            PeerRole::Publish { tracks, .. } => tracks
                .values()
                .filter_map(|t| self.tracks.get(t).map(|track| (*t, track.rids.len())))
                .flat_map(|(t, layers)| (0..layers.max(1) as u8).map(move |s| (t, s)))
                .collect(),
        };
        let now = self.now;
        for (track, spatial) in wanted {
            let video = self
                .tracks
                .get(&track)
                .is_some_and(|t| t.info.source.kind() == TrackKind::Video);
            if video {
                self.request_keyframe(track, spatial, KeyframeRequestKind::Pli, now);
            }
        }
    }

    /// Restarts ICE on connections whose path stays quiet (`core::restart`): a subscribe
    /// connection gets an offer with fresh credentials; for a publish connection, whose offers
    /// come from the client, the client is asked for one. If the participant's socket is down,
    /// the offer waits in `last_offer` for the resume, which re-sends it.
    pub(super) fn restart_quiet(&mut self, now: Instant) {
        let mut due = Vec::new();
        for peer in self.peers.iter_mut().flatten() {
            let in_flight = match &peer.role {
                PeerRole::Subscribe { pending, .. } => pending.is_some(),
                PeerRole::Publish { .. } => false,
            };
            if peer.recovery.restart.due(now, in_flight) {
                due.push((peer.participant, peer.is_publisher()));
            }
        }
        for (participant, publisher) in due {
            debug!(%participant, publisher, "ICE path quiet; restarting ICE");
            if publisher {
                let _ = self
                    .events
                    .send(ShardEvent::PublishIceRestartWanted { participant });
            } else {
                self.reoffer(participant, true);
            }
        }
    }

    /// Closes connections that stayed ICE-disconnected past `core::liveness::ICE_FAILURE_LIMIT`.
    pub(super) fn reap_disconnected(&mut self, now: Instant) {
        let mut quiet = Vec::new();
        for (i, peer) in self.peers.iter_mut().enumerate() {
            if let Some(peer) = peer.as_deref_mut()
                && peer.recovery.liveness.given_up(now)
            {
                debug!(participant = %peer.participant, "ICE disconnected for too long");
                peer.rtc.disconnect();
                quiet.push(PeerKey(i as u32));
            }
        }
        for key in quiet {
            // Draining a dead `Rtc` removes it and tells the control plane.
            self.drain(key);
        }
    }
}
