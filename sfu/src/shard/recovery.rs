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
use crate::core::audience::Change;
use crate::core::liveness::Liveness;
use crate::core::restart::RestartSchedule;
use crate::core::silence::Silence;
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
    /// ICE is checking again on a connection that was connected (an ICE restart, usually a
    /// client whose address changed): what was lost meanwhile needs a keyframe once it is back,
    /// even if the path was never quiet long enough for str0m to call it down.
    pub rechecking: bool,
    /// Inbound datagrams: a client that went silent is noticed long before str0m calls its
    /// path down (`core::silence`).
    pub silence: Silence,
}

impl Recovery {
    /// str0m reports the ICE path quiet at `now`.
    pub fn path_down(&mut self, now: Instant) {
        self.liveness.disconnected(now);
        self.restart.disconnected(now);
    }

    /// ICE checks again (a restart); `was_connected`: the connection had been up before.
    pub fn checking(&mut self, was_connected: bool, now: Instant) {
        self.rechecking |= was_connected;
        self.restart.checking(now);
    }

    /// Datagrams again after a silence `core::silence` reported: the path is up. Returns whether
    /// keyframes are due now (not while an ICE restart checks: they follow its `Connected`).
    pub fn heard_again(&mut self) -> bool {
        self.liveness.connected();
        self.restart.connected();
        !self.rechecking
    }

    /// The path has a nominated pair again; returns whether it had been down or restarted.
    pub fn path_up(&mut self) -> bool {
        let was_down = self.liveness.is_disconnected();
        self.liveness.connected();
        self.restart.connected();
        std::mem::take(&mut self.rechecking) || was_down
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
        // A link's connection is reached through its own socket, not by its ufrag.
        if peer.link.is_some() {
            return;
        }
        self.demux.rename(&old, &ufrag, key);
        self.announce_peer(key, super::cross::PeerChange::Renamed(&old, &ufrag));
    }

    /// A subscribe connection's path went down (`false`) or came back: nothing is sent to it
    /// meanwhile (`DownTrack::set_reachable`). Packets sent into a dead path are all reported
    /// lost once it returns, and that burst of loss would drag its bandwidth estimate down just
    /// when the pupil comes back.
    pub(super) fn set_reachable(&mut self, key: PeerKey, reachable: bool) {
        let Some(peer) = self.peer(key) else {
            return;
        };
        let PeerRole::Subscribe { tracks, .. } = &peer.role else {
            return;
        };
        let ids: Vec<TrackId> = tracks.values().copied().collect();
        let mut video = Vec::new();
        let mut resumed = false;
        for id in ids {
            if let Some(track) = self.tracks.get_mut(&id) {
                for sub in track.subscriptions.iter_mut().filter(|s| s.peer == key) {
                    resumed |= sub.down.set_reachable(reachable) != Change::Same;
                    if sub.selector().is_some() {
                        video.extend(sub.stream());
                    }
                }
            }
        }
        // Back: the keyframes the return asks for go out unpaced until the next allocation
        // round decides again. Packets lost to the dead path have just sunk the estimate, and
        // str0m's pacer at 1.1 x that would hold the first pictures back for half a second.
        // And those packets are dropped from the resend cache: they come before the keyframe,
        // and answering the NACKs for all of them at once would pass the resend cap, which
        // drops every queued resend, the one for a packet after the keyframe too: the picture
        // then stood still for a second (`peer::RESEND_RATIO_CAP`).
        // Only after a real outage: a path that merely blinked keeps its cache for the NACKs of
        // what it missed.
        if reachable
            && resumed
            && let Some(peer) = self.peer_mut(key)
        {
            let mut api = peer.rtc.direct_api();
            for ssrc in &video {
                if let Some(tx) = api.stream_tx(ssrc) {
                    tx.set_unpaced(true);
                    super::peer::configure_video_resends(tx);
                }
            }
            peer.video_paced = false;
        }
    }

    /// A connection's path is back after an outage: the pictures it carries need a keyframe
    /// now, rather than when the decoders behind it notice and ask.
    pub(super) fn path_back(&mut self, key: PeerKey) {
        self.set_reachable(key, true);
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        debug!(participant = %peer.participant, "ICE path back; asking for keyframes");
        // What GoogCC learnt during the outage (loss, no feedback) says nothing of the path now,
        // which may be another network altogether: start from the first estimate again, as
        // libwebrtc does on a route change. An estimate that stayed above it is kept.
        if peer
            .estimate
            .is_some_and(|e| e < crate::core::allocation_round::INITIAL_ESTIMATE)
        {
            debug!(participant = %peer.participant, estimate = ?peer.estimate, "estimate starts over");
            peer.rtc.bwe().reset(str0m::bwe::Bitrate::bps(
                crate::core::allocation_round::INITIAL_ESTIMATE,
            ));
            peer.estimate = None;
        }
        let Some(peer) = self.peer(key) else {
            return;
        };
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
        let mut silent = Vec::new();
        for (i, peer) in self.peers.iter_mut().enumerate() {
            let Some(peer) = peer.as_deref_mut() else {
                continue;
            };
            if peer.recovery.silence.check(now) {
                debug!(participant = %peer.participant, limit = ?peer.recovery.silence.limit(), "client silent; path counted down");
                peer.recovery.path_down(now);
                silent.push(PeerKey(i as u32));
            }
            let in_flight = match &peer.role {
                PeerRole::Subscribe { pending, .. } => pending.is_some(),
                PeerRole::Publish { .. } => false,
            };
            if peer.recovery.restart.due(now, in_flight) {
                due.push((peer.participant, peer.is_publisher()));
            }
        }
        for key in silent {
            self.set_reachable(key, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_back_from_a_restart_or_an_outage_counts_once() {
        let mut r = Recovery::default();
        assert!(!r.path_up(), "the first connect is not a return");
        r.checking(false, Instant::now());
        assert!(
            !r.path_up(),
            "checking before the first connect is setting up"
        );
        r.checking(true, Instant::now());
        assert!(r.path_up(), "an ICE restart of a connected connection");
        assert!(!r.path_up(), "reported once");
        r.path_down(Instant::now());
        assert!(r.path_up(), "an outage str0m saw");
        assert!(!r.path_up());
    }

    #[test]
    fn datagrams_after_a_silence_bring_the_path_back() {
        let t0 = Instant::now();
        let mut r = Recovery::default();
        r.path_down(t0);
        assert!(r.heard_again(), "keyframes at once");
        assert!(!r.liveness.is_disconnected());
        assert!(
            !r.restart
                .due(t0 + std::time::Duration::from_secs(60), false),
            "no restart due any more"
        );
        assert!(!r.path_up(), "str0m's later `Connected` asks nothing more");
        r.path_down(t0);
        r.checking(true, t0);
        assert!(!r.heard_again(), "a restart's checks: keyframes wait");
        assert!(r.path_up(), "for its `Connected`");
    }
}
