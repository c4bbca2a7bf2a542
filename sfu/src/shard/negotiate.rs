//! SDP on both connections: publish offers from clients, our offers to subscribers.

use std::collections::HashMap;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use tracing::debug;

use super::media::{Subscription, media_kind};
use super::peer::{PeerKey, PeerRole};
use super::{Shard, Track};
use crate::command::TrackSource;
use crate::command::{
    PublishAnswer, PublishedTrack, ShardEvent, SubscribedTrack, TrackKind, TrackSpec,
};
use crate::core::allocator::TrackClass;
use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};
use crate::sdp_error;

/// The rids a publisher sends on `mid`, lowest resolution first. Clients list them lowest first
/// (`q`, `h`, `f`); the well-known names are ordered by meaning in case one does not.
fn simulcast_rids(rtc: &str0m::Rtc, mid: Mid) -> Vec<str0m::media::Rid> {
    let Some(str0m::media::Rids::Specific(rids)) = rtc.media(mid).map(|m| m.rids_rx()) else {
        return Vec::new();
    };
    let mut rids = rids.clone();
    let rank = |r: &str0m::media::Rid| match &**r {
        "q" => 0,
        "h" => 1,
        "f" => 2,
        _ => 1,
    };
    if rids.iter().all(|r| matches!(&**r, "q" | "h" | "f")) {
        rids.sort_by_key(rank);
    }
    rids.truncate(crate::core::layer::MAX_SPATIAL);
    rids
}

fn track_class(source: TrackSource, teacher: bool) -> TrackClass {
    match (source, teacher) {
        (TrackSource::Microphone, _) => TrackClass::Audio,
        (TrackSource::Screen, true) => TrackClass::TeacherScreen,
        (TrackSource::Camera, true) => TrackClass::TeacherCamera,
        _ => TrackClass::PupilVideo,
    }
}

impl Shard {
    /// Applies a publish offer: answers it, then publishes the tracks it lists and unpublishes
    /// those it no longer does.
    pub(super) fn publish(
        &mut self,
        participant: ParticipantId,
        offer: &str,
        specs: &[TrackSpec],
    ) -> Result<PublishAnswer, SfuError> {
        let member = self
            .members
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant)?;
        let room = member.room.clone();
        let existing_peer = member.publisher;
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| SfuError::BadSdp(sdp_error::parse_failure(offer, &e.to_string())))?;

        let key = match existing_peer {
            Some(k) => k,
            None => {
                let role = PeerRole::Publish {
                    tracks: HashMap::new(),
                    by_ssrc: HashMap::new(),
                };
                if self.is_link(participant) {
                    self.add_link_peer(participant, role)?
                } else {
                    self.add_peer(participant, role)
                }
            }
        };
        let result = self.apply_publish_offer(key, offer, specs);
        match result {
            Ok(sdp) => {
                if let Some(m) = self.members.get_mut(&participant) {
                    m.publisher = Some(key);
                }
                // An offer with new ICE credentials restarted ICE (`recovery`).
                self.refresh_ufrag(key);
                let (added, removed) = self.update_published_tracks(key, participant, &room, specs);
                let tracks = self.published_by(key);
                self.mark_dirty(key);
                Ok(PublishAnswer {
                    sdp,
                    tracks,
                    added,
                    removed,
                })
            }
            Err(e) => {
                if existing_peer.is_none() {
                    self.remove_peer(key);
                }
                Err(e)
            }
        }
    }

    /// Negotiates and checks that every listed mid is a section the client sends on.
    fn apply_publish_offer(
        &mut self,
        key: PeerKey,
        offer: SdpOffer,
        specs: &[TrackSpec],
    ) -> Result<String, SfuError> {
        let peer = self.peer_mut(key).ok_or(SfuError::UnknownParticipant)?;
        let answer =
            peer.rtc.sdp_api().accept_offer(offer).map_err(|e| {
                SfuError::Negotiation(sdp_error::negotiation_failure(&e.to_string()))
            })?;
        for spec in specs {
            let mid = Mid::from(spec.mid.as_str());
            let media = peer.rtc.media(mid).ok_or_else(|| {
                SfuError::BadRequest(format!("mid {} is not in the offer", spec.mid))
            })?;
            let kind_matches = matches!(
                (media.kind(), spec.source.kind()),
                (MediaKind::Audio, TrackKind::Audio) | (MediaKind::Video, TrackKind::Video)
            );
            if !kind_matches {
                return Err(SfuError::BadRequest(format!(
                    "mid {} is {:?}, which cannot carry {:?}",
                    spec.mid,
                    media.kind(),
                    spec.source
                )));
            }
            // Our direction: the client sends, so we receive.
            if !matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv) {
                return Err(SfuError::BadRequest(format!(
                    "mid {} does not send media",
                    spec.mid
                )));
            }
        }
        Ok(answer.to_sdp_string())
    }

    /// Brings the publisher's tracks in line with `specs`; returns (added, removed).
    fn update_published_tracks(
        &mut self,
        key: PeerKey,
        participant: ParticipantId,
        room: &crate::ids::RoomId,
        specs: &[TrackSpec],
    ) -> (Vec<PublishedTrack>, Vec<TrackId>) {
        let current: Vec<(Mid, TrackId)> = match self.peer(key).map(|p| &p.role) {
            Some(PeerRole::Publish { tracks, .. }) => {
                tracks.iter().map(|(m, t)| (*m, *t)).collect()
            }
            _ => return (Vec::new(), Vec::new()),
        };
        let mut removed = Vec::new();
        for (mid, track_id) in &current {
            // A section that now carries someone else's track (a link's) is a new track.
            let still = specs.iter().any(|s| {
                Mid::from(s.mid.as_str()) == *mid
                    && self.tracks.get(track_id).is_some_and(|t| {
                        t.info.source == s.source
                            && t.info.participant == super::link::owner_of(s, participant, false).0
                    })
            });
            if !still {
                self.remove_track(*track_id);
                removed.push(*track_id);
            }
        }
        let mut added = Vec::new();
        for spec in specs {
            let mid = Mid::from(spec.mid.as_str());
            let published = matches!(
                self.peer(key).map(|p| &p.role),
                Some(PeerRole::Publish { tracks, .. }) if tracks.contains_key(&mid)
            );
            if published {
                // A later offer states the audience the lesson's rules give the track now.
                let track_id = match self.peer(key).map(|p| &p.role) {
                    Some(PeerRole::Publish { tracks, .. }) => tracks.get(&mid).copied(),
                    _ => None,
                };
                if let Some(track_id) = track_id {
                    self.set_audience(track_id, spec.audience);
                }
                continue;
            }
            let track_id = TrackId(self.next_track);
            self.next_track += self.track_stride;
            let rids = self
                .peer(key)
                .map(|p| simulcast_rids(&p.rtc, mid))
                .unwrap_or_default();
            let teacher = self.members.get(&participant).is_some_and(|m| m.teacher);
            let (owner, teacher) = super::link::owner_of(spec, participant, teacher);
            let class = track_class(spec.source, teacher);
            let info = PublishedTrack {
                track_id,
                participant: owner,
                source: spec.source,
                mid: spec.mid.clone(),
            };
            self.tracks.insert(
                track_id,
                Track::new(
                    info.clone(),
                    participant,
                    room.clone(),
                    key,
                    rids,
                    class,
                    spec.audience,
                    None,
                ),
            );
            if let Some(PeerRole::Publish { tracks, .. }) = self.peer_mut(key).map(|p| &mut p.role)
            {
                tracks.insert(mid, track_id);
            }
            self.rooms
                .entry(room.clone())
                .or_default()
                .tracks
                .push(track_id);
            self.announce_track(track_id);
            debug!(%participant, track = %track_id, source = ?spec.source, "track published");
            added.push(info);
        }
        if !added.is_empty() {
            let others: Vec<ParticipantId> = self
                .rooms
                .get(room)
                .map(|r| {
                    r.members
                        .iter()
                        .copied()
                        .filter(|p| *p != participant)
                        .collect()
                })
                .unwrap_or_default();
            for p in others {
                self.negotiate_subscriber(p);
            }
        }
        (added, removed)
    }

    fn published_by(&self, key: PeerKey) -> Vec<PublishedTrack> {
        let Some(PeerRole::Publish { tracks, .. }) = self.peer(key).map(|p| &p.role) else {
            return Vec::new();
        };
        let mut list: Vec<PublishedTrack> = tracks
            .values()
            .filter_map(|t| self.tracks.get(t).map(|t| t.info.clone()))
            .collect();
        list.sort_by_key(|t| t.track_id);
        list
    }

    /// Removes a track from its room and from every subscriber (who gets a new offer).
    pub(super) fn remove_track(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        self.retract_track(&track);
        if let Some(PeerRole::Publish { tracks, by_ssrc }) =
            self.peer_mut(track.publisher).map(|p| &mut p.role)
        {
            tracks.retain(|_, t| *t != track_id);
            by_ssrc.retain(|_, (t, _)| *t != track_id);
        }
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.tracks.retain(|t| *t != track_id);
        }
        for sub in &track.subscriptions {
            if let Some(p) = self.peer(sub.peer).map(|p| p.participant) {
                self.negotiate_subscriber(p);
            }
        }
    }

    /// Offers the subscriber exactly the room's tracks of others, unless an offer is pending (then
    /// once its answer arrives).
    pub(super) fn negotiate_subscriber(&mut self, participant: ParticipantId) {
        let Some(member) = self.members.get(&participant) else {
            return;
        };
        if !member.subscribe {
            return;
        }
        let teacher = member.teacher;
        let relay = member.relay;
        let desired: Vec<TrackId> = self
            .rooms
            .get(&member.room)
            .map(|r| {
                r.tracks
                    .iter()
                    .copied()
                    .filter(|t| {
                        self.tracks.get(t).is_some_and(|t| {
                            super::link::offered_to(t.by, t.info.participant, participant, relay)
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = match member.subscriber {
            Some(k) => k,
            None if desired.is_empty() => return,
            None => {
                let role = PeerRole::Subscribe {
                    tracks: HashMap::new(),
                    pending: None,
                    renegotiate: false,
                };
                let key = if member.link {
                    match self.add_link_peer(participant, role) {
                        Ok(key) => key,
                        Err(e) => {
                            tracing::warn!(%participant, "link subscribe connection: {e}");
                            let _ = self.events.send(ShardEvent::ConnectionLost { participant });
                            return;
                        }
                    }
                } else {
                    self.add_peer(participant, role)
                };
                if let Some(m) = self.members.get_mut(&participant) {
                    m.subscriber = Some(key);
                }
                key
            }
        };

        let Some(peer) = self
            .peers
            .get_mut(key.0 as usize)
            .and_then(Option::as_deref_mut)
        else {
            return;
        };
        let PeerRole::Subscribe {
            tracks: sent,
            pending,
            renegotiate,
        } = &mut peer.role
        else {
            return;
        };
        if pending.is_some() {
            *renegotiate = true;
            return;
        }
        let restart = std::mem::take(&mut peer.recovery.restart_wanted);
        let mut api = peer.rtc.sdp_api();
        if restart {
            // Keeps our candidates (one port for everything); only the credentials change.
            api.ice_restart(true);
        }
        let mut new_subscriptions = Vec::new();
        for track_id in &desired {
            if sent.values().any(|t| t == track_id) {
                continue;
            }
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            let kind = track.info.source.kind();
            // A link carries a simulcast track as simulcast: the far server's own selectors
            // pick a layer for each of its pupils (`core::lanes`).
            let lanes = relay && kind == TrackKind::Video && track.rids.len() > 1;
            let simulcast = lanes.then(|| str0m::media::Simulcast {
                send: track
                    .rids
                    .iter()
                    .map(|rid| str0m::media::SimulcastLayer::new(rid))
                    .collect(),
                recv: Vec::new(),
            });
            let mid = api.add_media(
                media_kind(kind),
                Direction::SendOnly,
                Some(track.info.participant.to_string()),
                Some(track_id.to_string()),
                simulcast,
            );
            sent.insert(mid, *track_id);
            let mut sub = Subscription::new(key, mid, kind, teacher, track.audience);
            if lanes {
                sub = sub.with_lanes(track.rids.len());
            }
            new_subscriptions.push((*track_id, sub));
        }
        let gone: Vec<Mid> = sent
            .iter()
            .filter(|(_, t)| !desired.contains(t))
            .map(|(m, _)| *m)
            .collect();
        for mid in gone {
            api.set_direction(mid, Direction::Inactive);
            sent.remove(&mid);
        }
        let Some((offer, pending_offer)) = api.apply() else {
            return;
        };
        *pending = Some(pending_offer);
        peer.recovery.restart_in_flight = restart;
        let mut tracks: Vec<SubscribedTrack> = sent
            .iter()
            .filter_map(|(mid, t)| {
                self.tracks.get(t).map(|t| SubscribedTrack {
                    mid: mid.to_string(),
                    track_id: t.info.track_id,
                    participant: t.info.participant,
                    source: t.info.source,
                })
            })
            .collect();
        tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
        for (track_id, sub) in new_subscriptions {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.subscriptions.push(sub);
            }
        }
        let sdp = offer.to_sdp_string();
        if let Some(peer) = self.peer_mut(key) {
            peer.recovery.last_offer = Some((sdp.clone(), tracks.clone()));
        }
        let _ = self.events.send(ShardEvent::SubscriberOffer {
            participant,
            sdp,
            tracks,
        });
        self.mark_dirty(key);
    }

    /// Applies the subscriber's answer, then sends the next offer if changes queued up.
    pub(super) fn subscriber_answer(
        &mut self,
        participant: ParticipantId,
        answer: &str,
    ) -> Result<(), SfuError> {
        let key = self
            .members
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant)?
            .subscriber
            .ok_or_else(|| SfuError::BadRequest("no subscriber offer is pending".into()))?;
        let peer = self.peer_mut(key).ok_or(SfuError::UnknownParticipant)?;
        let PeerRole::Subscribe {
            pending,
            renegotiate,
            ..
        } = &mut peer.role
        else {
            return Err(SfuError::BadRequest(
                "no subscriber offer is pending".into(),
            ));
        };
        // Parse before taking the pending offer, so a garbled answer can be retried.
        let answer = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| SfuError::BadSdp(sdp_error::parse_failure(answer, &e.to_string())))?;
        let pending_offer = pending
            .take()
            .ok_or_else(|| SfuError::BadRequest("no subscriber offer is pending".into()))?;
        let again = std::mem::take(renegotiate);
        peer.recovery.restart_in_flight = false;
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending_offer, answer) {
            // The client applied an answer we cannot: the two sides no longer agree on the
            // connection. Drop it; the participant is told (connection lost) and rejoins.
            self.close_peer(key);
            return Err(SfuError::Negotiation(sdp_error::negotiation_failure(
                &e.to_string(),
            )));
        }
        for track in self.tracks.values_mut() {
            for sub in track.subscriptions.iter_mut().filter(|s| s.peer == key) {
                sub.renegotiated();
            }
        }
        self.refresh_ufrag(key);
        // Drain the answer's effects before the next change to the same `Rtc`.
        self.drain(key);
        if again {
            self.negotiate_subscriber(participant);
        }
        Ok(())
    }
}
