//! Who is in which room, and how to reach their sockets.
//!
//! Entries are only ever locked one at a time and never across an `.await`: a broadcast first
//! copies the member list out of the room, then sends to each member's outbox.

use dashmap::DashMap;

use classroom_sfu::{ParticipantId, RoomId};

use crate::outbox::Outbox;
use crate::protocol::{GoodbyeReason, ParticipantInfo, ServerMessage, TrackInfo};

/// What a session's writer receives from elsewhere.
#[derive(Debug)]
// Messages move once into a bounded queue and out again; boxing each would add an allocation per
// message to save a couple of hundred bytes per queued slot.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outbound {
    Send(ServerMessage),
    /// Say goodbye for this reason and close.
    Close(GoodbyeReason),
}

struct Entry {
    room: RoomId,
    info: ParticipantInfo,
    outbox: Outbox,
}

#[derive(Default)]
struct RoomState {
    members: Vec<ParticipantId>,
    tracks: Vec<TrackInfo>,
}

/// Rooms and participants of the control plane.
#[derive(Default)]
pub(crate) struct Registry {
    participants: DashMap<ParticipantId, Entry>,
    rooms: DashMap<RoomId, RoomState>,
    /// track id → room, so a track can be removed after its publisher has left.
    track_rooms: DashMap<String, RoomId>,
}

/// A snapshot of the room for a newcomer.
pub(crate) struct Admission {
    pub others: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
    /// A session of the same identity that this one replaces.
    pub replaced: Option<ParticipantId>,
}

impl Registry {
    pub fn admit(
        &self,
        id: ParticipantId,
        room: &RoomId,
        info: ParticipantInfo,
        outbox: Outbox,
    ) -> Admission {
        let (members, tracks) = {
            let mut state = self.rooms.entry(room.clone()).or_default();
            let snapshot = (state.members.clone(), state.tracks.clone());
            state.members.push(id);
            snapshot
        };
        let mut others = Vec::with_capacity(members.len());
        let mut replaced = None;
        for m in members {
            if let Some(e) = self.participants.get(&m) {
                if e.info.identity == info.identity {
                    replaced = Some(m);
                }
                others.push(e.info.clone());
            }
        }
        self.participants.insert(
            id,
            Entry {
                room: room.clone(),
                info,
                outbox,
            },
        );
        Admission {
            others,
            tracks,
            replaced,
        }
    }

    /// Removes a participant; returns its room.
    pub fn remove(&self, id: ParticipantId) -> Option<RoomId> {
        let (_, entry) = self.participants.remove(&id)?;
        let empty = {
            let Some(mut state) = self.rooms.get_mut(&entry.room) else {
                return Some(entry.room);
            };
            state.members.retain(|m| *m != id);
            state.members.is_empty() && state.tracks.is_empty()
        };
        if empty {
            self.rooms.remove_if(&entry.room, |_, s| {
                s.members.is_empty() && s.tracks.is_empty()
            });
        }
        Some(entry.room)
    }

    /// Never waits: a participant whose queue is full is dropped by its session instead.
    pub fn send(&self, id: ParticipantId, out: Outbound) {
        if let Some(e) = self.participants.get(&id) {
            e.outbox.push(out);
        }
    }

    /// Sends to every member of `room` but `except`.
    pub fn broadcast(&self, room: &RoomId, except: ParticipantId, msg: &ServerMessage) {
        let members = match self.rooms.get(room) {
            Some(s) => s.members.clone(),
            None => return,
        };
        for m in members.into_iter().filter(|m| *m != except) {
            self.send(m, Outbound::Send(msg.clone()));
        }
    }

    /// Who receives a participant's link report: the participant and the room's teachers.
    pub fn quality_audience(&self, id: ParticipantId) -> Vec<ParticipantId> {
        let Some(room) = self.participants.get(&id).map(|e| e.room.clone()) else {
            return Vec::new();
        };
        let members = match self.rooms.get(&room) {
            Some(s) => s.members.clone(),
            None => return vec![id],
        };
        members
            .into_iter()
            .filter(|m| {
                *m == id
                    || self
                        .participants
                        .get(m)
                        .is_some_and(|e| e.info.role == crate::token::Role::Teacher)
            })
            .collect()
    }

    pub fn add_tracks(&self, room: &RoomId, tracks: &[TrackInfo]) {
        let mut state = self.rooms.entry(room.clone()).or_default();
        for t in tracks {
            self.track_rooms.insert(t.track_id.clone(), room.clone());
            state.tracks.push(t.clone());
        }
    }

    /// Removes tracks; returns the room they were in.
    pub fn remove_track(&self, track_id: &str) -> Option<RoomId> {
        let (_, room) = self.track_rooms.remove(track_id)?;
        let empty = {
            let mut state = self.rooms.get_mut(&room)?;
            state.tracks.retain(|t| t.track_id != track_id);
            state.members.is_empty() && state.tracks.is_empty()
        };
        if empty {
            self.rooms
                .remove_if(&room, |_, s| s.members.is_empty() && s.tracks.is_empty());
        }
        Some(room)
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.rooms.len(),
            self.participants.len(),
            self.track_rooms.len(),
        )
    }
}
