//! Which shard serves each participant, and which shards host each room.
//!
//! A new participant goes to the least-loaded shard (by participants), except into a small room:
//! up to [`WHOLE_ROOM`] participants share the shard of the room's first one, so a small class
//! costs no packet crossing between threads at all. Beyond that a room spans shards; each packet
//! then crosses once to each other shard hosting the room, and the answer here says when that set
//! changes, for the router to tell the shards.

use std::collections::HashMap;

use crate::ids::{ParticipantId, RoomId};

/// A room of up to this many participants stays on one shard: a typical small-group lesson (a
/// teacher and a handful of pupils) fits, while a whole class of 30–40 is spread out, where the
/// crossing costs less than one core's limit.
pub const WHOLE_ROOM: usize = 8;
/// Most shards: indices travel as `u8`, and beyond a few dozen cores the crossing dominates.
pub const MAX_SHARDS: usize = 64;

/// The first track id shard `shard` of `shards` hands out, and the step between its ids: ids
/// are unique per process without a shared counter, and each names the shard it was published
/// on ([`track_owner`]).
pub fn track_ids(shard: u8, shards: usize) -> (u64, u64) {
    (u64::from(shard) + 1, shards.clamp(1, MAX_SHARDS) as u64)
}

/// The shard a track was published on (its owner), from its id ([`track_ids`]): commands about
/// a track go there only, and the owner passes them on to the shards mirroring it.
pub fn track_owner(track: u64, shards: usize) -> u8 {
    (track.saturating_sub(1) % shards.clamp(1, MAX_SHARDS) as u64) as u8
}

#[derive(Debug)]
struct RoomPlace {
    /// The shard of the room's first participant.
    home: u8,
    /// Participants per shard.
    per_shard: Vec<usize>,
}

impl RoomPlace {
    fn total(&self) -> usize {
        self.per_shard.iter().sum()
    }

    fn hosts(&self) -> Vec<u8> {
        (0..self.per_shard.len())
            .filter(|i| self.per_shard[*i] > 0)
            .map(|i| i as u8)
            .collect()
    }
}

/// A change of the shards hosting a room: every shard in `tell` learns `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsChange {
    pub room: RoomId,
    pub hosts: Vec<u8>,
    /// The hosts before and after (a shard that stopped hosting must hear it too).
    pub tell: Vec<u8>,
}

/// The placement of every participant.
#[derive(Debug)]
pub struct Placement {
    whole_room: usize,
    load: Vec<usize>,
    rooms: HashMap<RoomId, RoomPlace>,
    participants: HashMap<ParticipantId, (u8, RoomId)>,
}

impl Placement {
    pub fn new(shards: usize, whole_room: usize) -> Placement {
        Placement {
            whole_room,
            load: vec![0; shards.clamp(1, MAX_SHARDS)],
            rooms: HashMap::new(),
            participants: HashMap::new(),
        }
    }

    /// The shard serving `participant`, if it joined.
    pub fn shard_of(&self, participant: ParticipantId) -> Option<u8> {
        self.participants.get(&participant).map(|(s, _)| *s)
    }

    /// Participants per shard.
    pub fn load(&self) -> &[usize] {
        &self.load
    }

    /// Places a participant (again: where it is) and says whether the room's hosts changed.
    pub fn join(&mut self, participant: ParticipantId, room: &RoomId) -> (u8, Option<HostsChange>) {
        if let Some(shard) = self.shard_of(participant) {
            return (shard, None);
        }
        let least = self.least_loaded();
        let shards = self.load.len();
        let place = self.rooms.entry(room.clone()).or_insert_with(|| RoomPlace {
            home: least,
            per_shard: vec![0; shards],
        });
        let shard = if place.total() < self.whole_room {
            place.home
        } else {
            least
        };
        let before = place.hosts();
        place.per_shard[usize::from(shard)] += 1;
        self.load[usize::from(shard)] += 1;
        self.participants.insert(participant, (shard, room.clone()));
        let change = (before.len() != place.hosts().len()).then(|| {
            // The newcomer hears first: the other hosts answer their news by sending it their
            // tracks, which it must not take for a room it does not host yet.
            let mut tell = vec![shard];
            tell.extend(place.hosts().into_iter().filter(|h| *h != shard));
            HostsChange {
                room: room.clone(),
                hosts: place.hosts(),
                tell,
            }
        });
        (shard, change)
    }

    /// Forgets a participant: its shard, and whether the room's hosts changed.
    pub fn leave(&mut self, participant: ParticipantId) -> Option<(u8, Option<HostsChange>)> {
        let (shard, room) = self.participants.remove(&participant)?;
        let i = usize::from(shard);
        self.load[i] = self.load[i].saturating_sub(1);
        let place = self.rooms.get_mut(&room)?;
        let before = place.hosts();
        place.per_shard[i] = place.per_shard[i].saturating_sub(1);
        let hosts = place.hosts();
        if hosts.is_empty() {
            self.rooms.remove(&room);
        }
        let change = (hosts.len() != before.len()).then_some(HostsChange {
            room,
            hosts,
            tell: before,
        });
        Some((shard, change))
    }

    /// Ties go to the lowest index.
    fn least_loaded(&self) -> u8 {
        let mut best = 0;
        for (i, l) in self.load.iter().enumerate() {
            if *l < self.load[best] {
                best = i;
            }
        }
        best as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId(name.into())
    }

    #[test]
    fn a_track_id_names_the_shard_it_was_published_on() {
        for shards in 1..=5 {
            for shard in 0..shards as u8 {
                let (first, step) = track_ids(shard, shards);
                for k in 0..10 {
                    assert_eq!(
                        track_owner(first + k * step, shards),
                        shard,
                        "{shards} shards"
                    );
                }
            }
        }
        // Nothing out of range, whatever the id.
        assert_eq!(track_owner(0, 3), 0);
        assert!(track_owner(u64::MAX, 7) < 7);
    }

    #[test]
    fn a_small_room_stays_whole_and_a_large_one_spreads() {
        let mut p = Placement::new(2, 3);
        let r = room("a");
        let (s, change) = p.join(ParticipantId(1), &r);
        assert_eq!(s, 0);
        assert_eq!(change.unwrap().hosts, vec![0]);
        // Up to three stay on the home shard although shard 1 is idle.
        assert_eq!(p.join(ParticipantId(2), &r), (0, None));
        assert_eq!(p.join(ParticipantId(3), &r), (0, None));
        // The fourth goes to the least loaded, and the room now spans both.
        let (s, change) = p.join(ParticipantId(4), &r);
        assert_eq!(s, 1);
        assert_eq!(change.unwrap().hosts, vec![0, 1]);
        assert_eq!(p.join(ParticipantId(5), &r).0, 1);
        assert_eq!(p.join(ParticipantId(6), &r).0, 1);
        assert_eq!(p.load(), &[3, 3]);
        // Joining twice changes nothing.
        assert_eq!(p.join(ParticipantId(6), &r), (1, None));
        assert_eq!(p.load(), &[3, 3]);
    }

    #[test]
    fn a_new_room_starts_on_the_least_loaded_shard() {
        let mut p = Placement::new(3, WHOLE_ROOM);
        p.join(ParticipantId(1), &room("a"));
        p.join(ParticipantId(2), &room("a"));
        assert_eq!(p.join(ParticipantId(3), &room("b")).0, 1);
        assert_eq!(p.join(ParticipantId(4), &room("c")).0, 2);
        assert_eq!(p.join(ParticipantId(5), &room("d")).0, 1);
    }

    #[test]
    fn a_shard_that_starts_hosting_a_room_hears_of_it_first() {
        let mut p = Placement::new(2, 1);
        let r = room("a");
        let (_, first) = p.join(ParticipantId(1), &r);
        assert_eq!(first.unwrap().tell, vec![0]);
        let (shard, change) = p.join(ParticipantId(2), &r);
        assert_eq!(shard, 1);
        let change = change.unwrap();
        assert_eq!(change.hosts, vec![0, 1]);
        assert_eq!(
            change.tell,
            vec![1, 0],
            "the newcomer before the owner it will hear from"
        );
    }

    #[test]
    fn the_last_to_leave_a_shard_changes_the_hosts_and_tells_the_old_ones() {
        let mut p = Placement::new(2, 1);
        let r = room("a");
        p.join(ParticipantId(1), &r);
        p.join(ParticipantId(2), &r);
        assert_eq!(p.shard_of(ParticipantId(2)), Some(1));
        let (shard, change) = p.leave(ParticipantId(2)).unwrap();
        assert_eq!(shard, 1);
        let change = change.unwrap();
        assert_eq!(change.hosts, vec![0]);
        assert_eq!(change.tell, vec![0, 1]);
        assert_eq!(p.leave(ParticipantId(2)), None);
        let (_, change) = p.leave(ParticipantId(1)).unwrap();
        assert_eq!(change.unwrap().hosts, Vec::<u8>::new());
        assert_eq!(p.load(), &[0, 0]);
    }
}
