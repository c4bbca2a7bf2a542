//! Who is in which room, and how to reach their sockets.
//!
//! Entries are only ever locked one at a time and never across an `.await`: a broadcast first
//! copies the member list out of the room, then sends to each member's outbox.

use dashmap::DashMap;

use classroom_sfu::{ParticipantId, RoomId};

use crate::outbox::Outbox;
use crate::protocol::{GoodbyeReason, ParticipantInfo, ServerMessage, TrackInfo};

/// What a session's writer receives from elsewhere.
// The size is `ServerMessage::Joined`'s, which a session writes itself and never queues here;
// boxing every queued message to save the space would cost an allocation per fan-out instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outbound {
    Send(ServerMessage),
    /// Say goodbye for this reason and close.
    Close(GoodbyeReason),
    /// Another socket resumed this participant: close without departing.
    Detach,
}

struct Entry {
    room: RoomId,
    info: ParticipantInfo,
    outbox: Outbox,
    /// The session that owns this participant; [`DETACHED`] while it is parked.
    session: u64,
}

/// No session owns the participant (its socket dropped; it is parked).
const DETACHED: u64 = 0;

#[derive(Default)]
struct RoomState {
    members: Vec<ParticipantId>,
    tracks: Vec<TrackInfo>,
    /// People on the far side of lesson links, by the link participant that brings them.
    remote: Vec<(ParticipantId, ParticipantInfo)>,
}

impl RoomState {
    fn remote_infos(&self) -> impl Iterator<Item = ParticipantInfo> + '_ {
        self.remote.iter().map(|(_, info)| info.clone())
    }
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
        session: u64,
    ) -> Admission {
        let (members, tracks, remote) = {
            let mut state = self.rooms.entry(room.clone()).or_default();
            let remote: Vec<ParticipantInfo> = state.remote_infos().collect();
            let snapshot = (state.members.clone(), state.tracks.clone(), remote);
            state.members.push(id);
            snapshot
        };
        let mut others = Vec::with_capacity(members.len() + remote.len());
        let mut replaced = None;
        for m in members {
            if let Some(e) = self.participants.get(&m) {
                if e.info.identity == info.identity {
                    replaced = Some(m);
                }
                others.push(e.info.clone());
            }
        }
        others.extend(remote);
        self.participants.insert(
            id,
            Entry {
                room: room.clone(),
                info,
                outbox,
                session,
            },
        );
        Admission {
            others,
            tracks,
            replaced,
        }
    }

    /// The participant of `identity` in `room` whose socket is live (not parked).
    pub fn find_live(&self, room: &RoomId, identity: &str) -> Option<ParticipantId> {
        let members = self.rooms.get(room)?.members.clone();
        members.into_iter().find(|m| {
            self.participants
                .get(m)
                .is_some_and(|e| e.session != DETACHED && e.info.identity == identity)
        })
    }

    /// Parks a participant if `session` still owns it; false when another socket took it over.
    pub fn detach(&self, id: ParticipantId, session: u64) -> bool {
        match self.participants.get_mut(&id) {
            Some(mut e) if e.session == session => {
                e.session = DETACHED;
                true
            }
            _ => false,
        }
    }

    /// Gives the participant a new socket; returns the previous outbox and a snapshot of the
    /// room without the participant's own entry and tracks.
    pub fn reattach(
        &self,
        id: ParticipantId,
        outbox: Outbox,
        session: u64,
    ) -> Option<(Outbox, Admission)> {
        let (room, old) = {
            let mut e = self.participants.get_mut(&id)?;
            e.session = session;
            let old = std::mem::replace(&mut e.outbox, outbox);
            (e.room.clone(), old)
        };
        let (members, tracks, remote) = {
            let state = self.rooms.get(&room)?;
            let remote: Vec<ParticipantInfo> = state.remote_infos().collect();
            (state.members.clone(), state.tracks.clone(), remote)
        };
        let mine = id.to_string();
        let others = members
            .into_iter()
            .filter(|m| *m != id)
            .filter_map(|m| self.participants.get(&m).map(|e| e.info.clone()))
            .chain(remote)
            .collect();
        let tracks = tracks
            .into_iter()
            .filter(|t| t.participant_id != mine)
            .collect();
        Some((
            old,
            Admission {
                others,
                tracks,
                replaced: None,
            },
        ))
    }

    /// The participant's own entry as others see it.
    pub fn info(&self, id: ParticipantId) -> Option<ParticipantInfo> {
        self.participants.get(&id).map(|e| e.info.clone())
    }

    /// Removes a participant; returns its room.
    pub fn remove(&self, id: ParticipantId) -> Option<RoomId> {
        let (_, entry) = self.participants.remove(&id)?;
        let empty = {
            let Some(mut state) = self.rooms.get_mut(&entry.room) else {
                return Some(entry.room);
            };
            state.members.retain(|m| *m != id);
            state.remote.retain(|(link, _)| *link != id);
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

    /// Sets the people lesson link `link` brings into `room` (its whole list).
    pub fn set_remote(&self, room: &RoomId, link: ParticipantId, people: Vec<ParticipantInfo>) {
        let Some(mut state) = self.rooms.get_mut(room) else {
            return;
        };
        state.remote.retain(|(l, _)| *l != link);
        state.remote.extend(people.into_iter().map(|p| (link, p)));
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
