//! The door of every room: who may come in, and a note of who came and went.
//!
//! Signaling knows rooms and tokens, not lessons, attendance modes or rosters. The server plugs
//! a [`RoomGate`] in that does (the classroom domain): a token proves who someone is and what
//! they may do in media; the gate decides whether they may enter *now* (a pupil whose guardian
//! chose in-person attendance today is turned away unless the teacher admitted them), and
//! records arrivals and departures for attendance. Checking at the door, and not only when a
//! token is issued, means a token minted before a guardian's change cannot get past it.

use std::future::Future;
use std::pin::Pin;

use crate::token::Role;

/// Who is at the door: what their (already verified) token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrant {
    pub room: String,
    /// The token's subject: the person's roster id for tokens the server issues.
    pub identity: String,
    pub role: Role,
}

/// Why someone may not enter. `message` is shown to them as is, so it is polite and plain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRefusal {
    pub message: String,
}

pub type GateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), GateRefusal>> + Send + 'a>>;

/// Whether a room's chat is kept.
pub type KeepFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Decides entry to rooms and hears of arrivals and departures.
pub trait RoomGate: Send + Sync + 'static {
    /// Whether `who` may enter their room now. A gate that cannot decide (its database is down)
    /// should refuse: zero trust means no entry on doubt.
    fn admit<'a>(&'a self, who: &'a Entrant) -> GateFuture<'a>;

    /// `who` entered (after `joined` was sent). Must not block: record in the background.
    fn entered(&self, who: &Entrant);

    /// `who` left, for whatever reason (leave, closed socket, replaced, timeout, shutdown).
    fn left(&self, who: &Entrant);

    /// `who`'s connection dropped; their place is kept for the resume grace period. Either
    /// [`RoomGate::back`] or [`RoomGate::left`] follows. Must not block.
    fn away(&self, _who: &Entrant) {}

    /// `who` resumed within the grace period: one presence with a gap, not a second visit.
    /// Must not block.
    fn back(&self, _who: &Entrant) {}

    /// Whether the chat of `who`'s room is kept beyond the lesson (a school's choice). Asked
    /// once per room, when its lesson starts with its first participant; on doubt, `false`.
    /// Chat is kept in memory only unless this says so.
    fn keep_chat<'a>(&'a self, _who: &'a Entrant) -> KeepFuture<'a> {
        Box::pin(async { false })
    }

    /// A chat message of a room whose chat is kept, and its writer's identity (the token's
    /// subject). Must not block: record in the background.
    fn record_chat(
        &self,
        _room: &str,
        _message: &crate::lesson::wire::ChatMessage,
        _identity: &str,
    ) {
    }

    /// A teacher removed a message of a room whose chat is kept: it must go from the store too.
    fn delete_chat(&self, _room: &str, _message_id: &str) {}
}

/// A gate that lets every valid token in and records nothing: rooms without lessons (the demo
/// room, tests of the media plane).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenGate;

impl RoomGate for OpenGate {
    fn admit<'a>(&'a self, _who: &'a Entrant) -> GateFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn entered(&self, _who: &Entrant) {}

    fn left(&self, _who: &Entrant) {}
}
