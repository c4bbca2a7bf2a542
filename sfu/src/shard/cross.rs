//! A room across shards, as one shard takes part in it (`mesh` carries the messages).
//!
//! A track lives on the shard of its publisher (its *owner*). Every other shard hosting the room
//! keeps a *mirror* of it: a `Track` with no publisher peer, offered to its subscribers like a
//! local one. The owner sends each packet once to every such shard; the mirror forwards it
//! through its own down tracks (`media::forward`). What only the publisher can act on goes back
//! to the owner: keyframe requests, and the layers the mirror's subscribers want (dynacast).
//! Datagrams the kernel gave to the wrong shard are handed to the owner of their peer, found in a
//! second demultiplexer (`foreign`) kept up to date by the owners' messages.

use std::sync::Arc;

use str0m::format::Codec;
use str0m::media::KeyframeRequestKind;
use str0m::rtp::RtpPacket;
use tracing::debug;

use super::mesh::{Control, Forwarded, HandOff, HandOffRefused};
use super::peer::PeerKey;
use super::{Arrival, Shard, Track};
use crate::core::demux::Route;
use crate::core::dynacast::Viewer;
use crate::core::forward::SenderClock;
use crate::ids::{RoomId, TrackId};

/// The publisher key of a mirror track: no peer has it.
pub(super) const NO_PEER: PeerKey = PeerKey(u32::MAX);

impl Shard {
    /// This shard's index (0 without a mesh).
    pub(super) fn index(&self) -> u8 {
        self.mesh.as_ref().map_or(0, |m| m.index)
    }

    /// A datagram no local peer claims: hand it to the shard whose peer it is, if any. Returns
    /// whether it was taken (handed over, or dropped and counted for the mesh's reason).
    ///
    /// Nothing here binds an address: a STUN check is routed by its ufrag, but whether it
    /// authenticates only its owner's `Rtc` can tell, and the owner's word (`Control::Bound`)
    /// is what binds. A spoofed check therefore cannot steer, move or evict anyone's address.
    pub(super) fn hand_off(&mut self, route: Route, arrival: Arrival, datagram: &[u8]) -> bool {
        if self.mesh.is_none() {
            return false;
        }
        let owner = match self.foreign.route_via(route, datagram) {
            Ok(owner) => owner,
            // The owner tells of a new peer or a bound address before its answer leaves, so
            // before the client can send anything that depends on it (the DTLS after a check):
            // a word still queued is applied, and the datagram routed again, rather than
            // dropped and left to a retransmission.
            Err(_) if self.apply_queued_control() => {
                match self.foreign.route_via(route, datagram) {
                    Ok(owner) => owner,
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        let Some(mesh) = &self.mesh else {
            return false;
        };
        match mesh.hand_off(owner.0, arrival, datagram) {
            Ok(()) => self.counters.hand_offs_out += 1,
            Err(HandOffRefused::Oversize) => self.counters.mesh_oversize += 1,
            Err(HandOffRefused::QueueFull | HandOffRefused::NoShard) => {
                self.counters.mesh_queue_full += 1
            }
        }
        true
    }

    /// Every message from other shards and the router queued now (`handle_control` each).
    /// Returns whether there were any.
    pub(crate) fn handle_queued_control(&mut self, now: std::time::Instant) -> bool {
        self.enter(now);
        self.apply_queued_control()
    }

    fn apply_queued_control(&mut self) -> bool {
        let mut any = false;
        while let Some(message) = self.control.as_mut().and_then(|c| c.try_recv().ok()) {
            self.apply_control(message);
            any = true;
        }
        any
    }

    /// A datagram another shard received for one of our peers.
    pub(crate) fn handle_hand_off(&mut self, now: std::time::Instant, handoff: &HandOff) {
        self.counters.hand_offs_in += 1;
        self.handle_arrival(now, handoff.arrival, handoff.datagram(), false);
    }

    /// Sends a local track's packet to every other shard hosting its room, once each.
    pub(super) fn forward_across(
        &mut self,
        track_id: TrackId,
        spatial: u8,
        codec: Codec,
        clock: Option<SenderClock>,
        packet: &Arc<RtpPacket>,
    ) {
        let (Some(mesh), Some(track)) = (&self.mesh, self.tracks.get(&track_id)) else {
            return;
        };
        for &to in &track.forward_to {
            let sent = mesh.forward(
                to,
                Forwarded {
                    track: track_id,
                    spatial,
                    codec,
                    clock,
                    packet: packet.clone(),
                },
            );
            if sent {
                self.counters.cross_forwarded_out += 1;
            } else {
                self.counters.mesh_queue_full += 1;
            }
        }
    }

    /// A packet of a track published on another shard.
    pub(crate) fn handle_forwarded(&mut self, now: std::time::Instant, f: Forwarded) {
        self.enter(now);
        if self.tracks.get(&f.track).is_none_or(|t| t.owner.is_none()) {
            return; // Removed meanwhile, or not yet mirrored.
        }
        self.counters.cross_forwarded_in += 1;
        self.forward(f.track, f.spatial, f.codec, f.clock, &f.packet);
    }

    /// A keyframe request for a mirror track goes to its owner.
    pub(super) fn keyframe_to_owner(
        &self,
        owner: u8,
        track: TrackId,
        spatial: u8,
        kind: KeyframeRequestKind,
    ) {
        if let Some(mesh) = &self.mesh {
            mesh.control(
                owner,
                Control::Keyframe {
                    track,
                    spatial,
                    kind,
                },
            );
        }
    }

    /// Tells the other shards a local peer exists (`add_peer`), restarted ICE, or is gone.
    pub(super) fn announce_peer(&self, key: PeerKey, change: PeerChange<'_>) {
        let Some(mesh) = &self.mesh else { return };
        let shard = mesh.index;
        match change {
            PeerChange::Added(ufrag) => mesh.broadcast(|| Control::PeerAdded {
                shard,
                key,
                ufrag: ufrag.to_owned(),
            }),
            PeerChange::Renamed(old, new) => mesh.broadcast(|| Control::PeerRenamed {
                shard,
                key,
                old: old.to_owned(),
                new: new.to_owned(),
            }),
            PeerChange::Gone(ufrag) => mesh.broadcast(|| Control::PeerGone {
                shard,
                key,
                ufrag: ufrag.to_owned(),
            }),
            PeerChange::Bound(route) => mesh.broadcast(|| Control::Bound { shard, key, route }),
        }
    }

    /// A local track was published: the other shards hosting its room mirror it.
    pub(super) fn announce_track(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let own = self.mesh.as_ref().map_or(0, |m| m.index);
        let hosts = self
            .rooms
            .get(&track.room)
            .map(|r| r.hosts.clone())
            .unwrap_or_default();
        track.forward_to = hosts.iter().copied().filter(|s| *s != own).collect();
        let targets = track.forward_to.clone();
        let track = &self.tracks[&track_id];
        for to in targets {
            self.send_track(to, track);
        }
    }

    fn send_track(&self, to: u8, track: &Track) {
        let Some(mesh) = &self.mesh else { return };
        mesh.control(
            to,
            Control::TrackAdded {
                owner: mesh.index,
                room: track.room.clone(),
                info: track.info.clone(),
                by: track.by,
                rids: track.rids.clone(),
                class: track.class,
                audience: track.audience,
            },
        );
    }

    /// A local track went away (`remove_track`): its mirrors go too.
    pub(super) fn retract_track(&self, track: &Track) {
        if let Some(mesh) = &self.mesh
            && track.owner.is_none()
        {
            for &to in &track.forward_to {
                mesh.control(
                    to,
                    Control::TrackRemoved {
                        track: track.info.track_id,
                    },
                );
            }
        }
    }

    /// The owner changed a local track's audience (`set_audience`): its mirrors follow.
    pub(super) fn propagate_audience(&self, track_id: TrackId) {
        let (Some(mesh), Some(track)) = (&self.mesh, self.tracks.get(&track_id)) else {
            return;
        };
        for &to in &track.forward_to {
            mesh.control(
                to,
                Control::Audience {
                    track: track_id,
                    audience: track.audience,
                },
            );
        }
    }

    /// Mirrors tell their owners what their subscribers want of each track (when it changed,
    /// `core::dynacast::DemandReport`), so the owner's dynacast asks the publisher for the union.
    pub(super) fn send_demand(&self, track: &Track, viewers: Vec<Viewer>) {
        let (Some(mesh), Some(owner)) = (&self.mesh, track.owner) else {
            return;
        };
        mesh.control(
            owner,
            Control::Demand {
                from: mesh.index,
                track: track.info.track_id,
                viewers,
            },
        );
    }

    /// A message from another shard or the router.
    pub(crate) fn handle_control(&mut self, now: std::time::Instant, message: Control) {
        self.enter(now);
        self.apply_control(message);
    }

    fn apply_control(&mut self, message: Control) {
        match message {
            Control::Hosts { room, shards } => self.set_hosts(room, shards),
            Control::PeerAdded { shard, key, ufrag } => self.foreign.insert(&ufrag, (shard, key)),
            Control::PeerRenamed {
                shard,
                key,
                old,
                new,
            } => self.foreign.rename(&old, &new, (shard, key)),
            Control::PeerGone { shard, key, ufrag } => self.foreign.remove(&ufrag, (shard, key)),
            Control::Bound { shard, key, route } => self.foreign.bind(route, (shard, key)),
            Control::TrackAdded {
                owner,
                room,
                info,
                rids,
                class,
                audience,
                by,
            } => self.add_mirror(owner, room, info, by, rids, class, audience),
            Control::TrackRemoved { track } => {
                if self.tracks.get(&track).is_some_and(|t| t.owner.is_some()) {
                    self.remove_track(track);
                }
            }
            Control::Audience { track, audience } => {
                if self.tracks.get(&track).is_some_and(|t| t.owner.is_some()) {
                    self.apply_audience(track, audience);
                }
            }
            Control::Keyframe {
                track,
                spatial,
                kind,
            } => {
                if self.tracks.get(&track).is_some_and(|t| t.owner.is_none()) {
                    self.counters.keyframe_requests_across += 1;
                    self.request_keyframe(track, spatial, kind, self.now);
                }
            }
            Control::Demand {
                from,
                track,
                viewers,
            } => {
                if let Some(t) = self.tracks.get_mut(&track).filter(|t| t.owner.is_none()) {
                    match t.remote_viewers.iter_mut().find(|(s, _)| *s == from) {
                        Some(entry) => entry.1 = viewers,
                        None => t.remote_viewers.push((from, viewers)),
                    }
                }
            }
        }
    }

    /// The shards hosting `room` changed (the router's word).
    fn set_hosts(&mut self, room_id: RoomId, shards: Vec<u8>) {
        let own = self.index();
        if !shards.contains(&own) {
            // No longer hosting: the mirrors go (the local participants have left).
            let mirrors: Vec<TrackId> = self
                .tracks
                .iter()
                .filter(|(_, t)| t.room == room_id && t.owner.is_some())
                .map(|(id, _)| *id)
                .collect();
            for t in mirrors {
                self.remove_track(t);
            }
            if let Some(room) = self.rooms.get_mut(&room_id) {
                room.hosts.clear();
                if room.members.is_empty() && room.tracks.is_empty() {
                    self.rooms.remove(&room_id);
                }
            }
            return;
        }
        let room = self.rooms.entry(room_id.clone()).or_default();
        let before = std::mem::replace(&mut room.hosts, shards.clone());
        let locals: Vec<TrackId> = room
            .tracks
            .iter()
            .copied()
            .filter(|t| self.tracks.get(t).is_some_and(|t| t.owner.is_none()))
            .collect();
        let others: Vec<u8> = shards.iter().copied().filter(|s| *s != own).collect();
        let newcomers: Vec<u8> = others
            .iter()
            .copied()
            .filter(|s| !before.contains(s))
            .collect();
        debug!(room = %room_id, ?shards, shard = own, "room hosts");
        for track_id in locals {
            let Some(track) = self.tracks.get_mut(&track_id) else {
                continue;
            };
            track.forward_to = others.clone();
            track.remote_viewers.retain(|(s, _)| others.contains(s));
            let track = &self.tracks[&track_id];
            for &to in &newcomers {
                self.send_track(to, track);
            }
        }
    }

    /// Another shard's track, for the subscribers here.
    #[allow(clippy::too_many_arguments)]
    fn add_mirror(
        &mut self,
        owner: u8,
        room_id: RoomId,
        info: crate::command::PublishedTrack,
        by: crate::ids::ParticipantId,
        rids: Vec<str0m::media::Rid>,
        class: crate::core::allocator::TrackClass,
        audience: crate::command::Audience,
    ) {
        let own = self.index();
        let hosted = self
            .rooms
            .get(&room_id)
            .is_some_and(|r| r.hosts.contains(&own));
        // Sent before this shard stopped hosting the room: stale.
        if !hosted || self.tracks.contains_key(&info.track_id) {
            return;
        }
        let track_id = info.track_id;
        debug!(track = %track_id, owner, shard = own, "track mirrored");
        let track = Track::new(
            info,
            by,
            room_id.clone(),
            NO_PEER,
            rids,
            class,
            audience,
            Some(owner),
        );
        self.tracks.insert(track_id, track);
        let members = match self.rooms.get_mut(&room_id) {
            Some(room) => {
                room.tracks.push(track_id);
                room.members.clone()
            }
            None => Vec::new(),
        };
        for p in members {
            self.negotiate_subscriber(p);
        }
    }
}

/// What [`Shard::announce_peer`] tells.
pub(super) enum PeerChange<'a> {
    Added(&'a str),
    Renamed(&'a str, &'a str),
    Gone(&'a str),
    Bound(Route),
}
