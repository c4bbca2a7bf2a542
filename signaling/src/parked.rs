//! Participants whose socket dropped without `leave`, kept in their room for the resume grace.
//!
//! A parked participant keeps its participant id, its registry entry (messages to it are
//! dropped, its socket being gone), and everything the media plane holds for it: peer
//! connections, subscriptions, layer caps. A `resume` within the grace takes it out of here and
//! re-attaches a socket; otherwise the grace timer departs it as if it had left.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use classroom_sfu::{ParticipantId, RoomId, ShardCommand};
use tracing::info;

use crate::Inner;
use crate::gate::Entrant;
use crate::protocol::ServerMessage;

/// What departing a participant needs.
#[derive(Debug, Clone)]
pub(crate) struct Departure {
    pub id: ParticipantId,
    pub room: RoomId,
    pub entrant: Entrant,
}

/// Parked participants by room and identity (one identity has at most one participant per room).
#[derive(Debug, Default)]
pub(crate) struct Parked {
    entries: Mutex<HashMap<(RoomId, String), (u64, Departure)>>,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Parked {
    /// Parks `who`; returns the generation the grace timer must present to depart it.
    pub fn park(&self, who: Departure) -> u64 {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (who.room.clone(), who.entrant.identity.clone());
        self.lock().insert(key, (generation, who));
        generation
    }

    /// Takes the parked participant of `identity` in `room`, if any (a resume, or a fresh join
    /// that replaces it).
    pub fn take(&self, room: &RoomId, identity: &str) -> Option<Departure> {
        self.lock()
            .remove(&(room.clone(), identity.to_owned()))
            .map(|(_, d)| d)
    }

    /// Takes it only if it is still the parking of `generation` (not resumed and parked again).
    fn take_if(&self, room: &RoomId, identity: &str, generation: u64) -> Option<Departure> {
        let mut entries = self.lock();
        let key = (room.clone(), identity.to_owned());
        match entries.get(&key) {
            Some((g, _)) if *g == generation => entries.remove(&key).map(|(_, d)| d),
            _ => None,
        }
    }

    /// Everyone parked, for shutdown.
    pub fn take_all(&self) -> Vec<Departure> {
        self.lock().drain().map(|(_, (_, d))| d).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RoomId, String), (u64, Departure)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parks `who` and starts its grace timer.
pub(crate) fn park(inner: &Arc<Inner>, who: Departure) {
    let grace = inner.config.resume_grace;
    inner.registry.broadcast(
        &who.room,
        who.id,
        &ServerMessage::ParticipantReconnecting {
            participant_id: who.id.to_string(),
        },
    );
    inner.gate.away(&who.entrant);
    info!(participant = %who.id, room = %who.room, grace_ms = grace.as_millis() as u64, "reconnecting");
    let (room, identity) = (who.room.clone(), who.entrant.identity.clone());
    let generation = inner.parked.park(who);
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if let Some(who) = inner.parked.take_if(&room, &identity, generation) {
            info!(participant = %who.id, room = %who.room, "did not come back within the grace period");
            depart(&inner, who).await;
        }
    });
}

/// The participant leaves the room for good: the media plane drops its connections, the room
/// hears `participant_left`, the gate records the departure.
pub(crate) async fn depart(inner: &Inner, who: Departure) {
    let _ = inner
        .sfu
        .send(ShardCommand::Leave {
            participant: who.id,
        })
        .await;
    if let Some(room) = inner.registry.remove(who.id) {
        inner.registry.broadcast(
            &room,
            who.id,
            &ServerMessage::ParticipantLeft {
                participant_id: who.id.to_string(),
            },
        );
    }
    crate::lessons::leave(inner, &who.room, who.id).await;
    inner.gate.left(&who.entrant);
    info!(participant = %who.id, room = %who.room, "left");
}
