//! The I/O side of `lesson`: one lesson per room, changed under a per-room lock, its outcomes
//! carried out (audiences to the media plane, messages to outboxes, chat to the gate, metrics).
//!
//! The lock is held while the audience changes are queued to the media plane, so two changes
//! in one room reach it in the order they were decided. Nothing else is awaited under it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::Mutex;

use classroom_sfu::{Audience, ParticipantId, RoomId, ShardCommand, TrackId, TrackSource};

use crate::Inner;
use crate::gate::Entrant;
use crate::lesson::state::Member;
use crate::lesson::wire::{Action, ChatTo};
use crate::lesson::{Event, Lesson, Outcome, Refused};
use crate::registry::Outbound;

struct Slot {
    lesson: Lesson,
    /// Whether the school keeps this lesson's chat (asked of the gate once per room).
    keep_chat: Option<bool>,
    /// Emptied and removed from the map: a joiner that still holds it takes a fresh one.
    closed: bool,
}

/// Lessons by room, and their counters.
pub(crate) struct Lessons {
    rooms: DashMap<RoomId, Arc<Mutex<Slot>>>,
    last_n: u8,
    hands: AtomicU64,
    floor_grants: AtomicU64,
    mutes: AtomicU64,
    chat_all: AtomicU64,
    chat_teacher: AtomicU64,
    speaker_changes: AtomicU64,
    quick_checks: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Lessons {
    pub fn new(last_n: u8) -> Lessons {
        Lessons {
            rooms: DashMap::new(),
            last_n,
            hands: AtomicU64::new(0),
            floor_grants: AtomicU64::new(0),
            mutes: AtomicU64::new(0),
            chat_all: AtomicU64::new(0),
            chat_teacher: AtomicU64::new(0),
            speaker_changes: AtomicU64::new(0),
            quick_checks: AtomicU64::new(0),
        }
    }

    fn slot(&self, room: &RoomId) -> Option<Arc<Mutex<Slot>>> {
        self.rooms.get(room).map(|s| s.clone())
    }

    fn slot_or_new(&self, room: &RoomId) -> Arc<Mutex<Slot>> {
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Slot {
                    lesson: Lesson::new(self.last_n),
                    keep_chat: None,
                    closed: false,
                }))
            })
            .clone()
    }

    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let counters = [
            (
                "classroom_lesson_hands_raised_total",
                "Hands raised",
                &self.hands,
            ),
            (
                "classroom_lesson_floor_grants_total",
                "Floor grants by teachers",
                &self.floor_grants,
            ),
            (
                "classroom_lesson_mutes_total",
                "Pupils muted by teachers (mute_all counts each pupil)",
                &self.mutes,
            ),
            (
                "classroom_lesson_active_speaker_changes_total",
                "Changes of a room's active speakers",
                &self.speaker_changes,
            ),
            (
                "classroom_lesson_quick_checks_total",
                "Quick checks asked",
                &self.quick_checks,
            ),
        ];
        for (name, help, n) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP classroom_lesson_chat_messages_total Chat messages accepted, by addressee\n# TYPE classroom_lesson_chat_messages_total counter\nclassroom_lesson_chat_messages_total{{to=\"all\"}} {}\nclassroom_lesson_chat_messages_total{{to=\"teacher\"}} {}",
            self.chat_all.load(Ordering::Relaxed),
            self.chat_teacher.load(Ordering::Relaxed)
        );
    }
}

/// Carries out an outcome; called with the room's lock held.
async fn apply(inner: &Inner, room: &RoomId, keep_chat: bool, out: Outcome) {
    let lessons = &inner.lessons;
    for (track, audience) in out.audiences {
        // A stopped media plane has nothing left to enforce.
        let _ = inner
            .sfu
            .send(ShardCommand::SetAudience { track, audience })
            .await;
    }
    for (to, msg) in out.messages {
        inner.registry.send(to, Outbound::Send(msg));
    }
    for event in out.events {
        let counter = match &event {
            Event::HandRaised => &lessons.hands,
            Event::FloorGranted => &lessons.floor_grants,
            Event::Muted(n) => {
                lessons.mutes.fetch_add(u64::from(*n), Ordering::Relaxed);
                continue;
            }
            Event::Chat(m, identity) => {
                if keep_chat {
                    inner.gate.record_chat(&room.0, m, identity);
                }
                match m.to {
                    ChatTo::All => &lessons.chat_all,
                    ChatTo::Teacher => &lessons.chat_teacher,
                }
            }
            Event::ChatDeleted(id) => {
                if keep_chat {
                    inner.gate.delete_chat(&room.0, id);
                }
                continue;
            }
            Event::SpeakersChanged => &lessons.speaker_changes,
            Event::QuickCheckOpened => &lessons.quick_checks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A participant joined (after `joined` was sent): it gets `lesson_state` and `chat_history`.
pub(crate) async fn join(inner: &Inner, room: &RoomId, member: Member, entrant: &Entrant) {
    loop {
        let slot = inner.lessons.slot_or_new(room);
        let mut s = slot.lock().await;
        if s.closed {
            // Emptied meanwhile by the last leaver; it is gone from the map, take a fresh one.
            drop(s);
            inner
                .lessons
                .rooms
                .remove_if(room, |_, v| Arc::ptr_eq(v, &slot));
            continue;
        }
        let keep_chat = match s.keep_chat {
            Some(k) => k,
            None => {
                let k = inner.gate.keep_chat(entrant).await;
                s.keep_chat = Some(k);
                k
            }
        };
        let out = s.lesson.join(member);
        apply(inner, room, keep_chat, out).await;
        return;
    }
}

/// `pid` resumed on a new socket: that socket gets the lesson as it is now.
pub(crate) async fn resumed(inner: &Inner, room: &RoomId, pid: ParticipantId) {
    let Some(slot) = inner.lessons.slot(room) else {
        return;
    };
    let s = slot.lock().await;
    let out = s.lesson.resumed(pid);
    let keep_chat = s.keep_chat.unwrap_or(false);
    apply(inner, room, keep_chat, out).await;
}

/// A participant's session ended; the lesson goes with the room's last participant.
pub(crate) async fn leave(inner: &Inner, room: &RoomId, pid: ParticipantId) {
    let Some(slot) = inner.lessons.slot(room) else {
        return;
    };
    let mut s = slot.lock().await;
    let out = s.lesson.leave(pid);
    let keep_chat = s.keep_chat.unwrap_or(false);
    apply(inner, room, keep_chat, out).await;
    if s.lesson.is_empty() {
        s.closed = true;
        inner
            .lessons
            .rooms
            .remove_if(room, |_, v| Arc::ptr_eq(v, &slot));
    }
}

/// Who receives a track `pid` is about to publish.
pub(crate) async fn audience(
    inner: &Inner,
    room: &RoomId,
    pid: ParticipantId,
    source: TrackSource,
) -> Audience {
    match inner.lessons.slot(room) {
        Some(slot) => slot.lock().await.lesson.audience(pid, source),
        None => Audience::Nobody,
    }
}

/// Tracks published with the given audiences, and tracks that went.
pub(crate) async fn tracks_changed(
    inner: &Inner,
    room: &RoomId,
    pid: ParticipantId,
    added: &[(TrackId, TrackSource, Audience)],
    removed: &[TrackId],
) {
    let Some(slot) = inner.lessons.slot(room) else {
        return;
    };
    let mut s = slot.lock().await;
    s.lesson.tracks_removed(removed);
    let out = s.lesson.tracks_added(pid, added);
    let keep_chat = s.keep_chat.unwrap_or(false);
    apply(inner, room, keep_chat, out).await;
}

/// An action of a participant; `Err` is the error for the actor.
pub(crate) async fn act(
    inner: &Inner,
    room: &RoomId,
    pid: ParticipantId,
    action: Action,
) -> Result<(), Refused> {
    let Some(slot) = inner.lessons.slot(room) else {
        return Err(Refused {
            code: crate::protocol::ErrorCode::NotJoined,
            permission: None,
            message: "join first".into(),
        });
    };
    let mut s = slot.lock().await;
    let out = s.lesson.act(pid, action, now_ms())?;
    let keep_chat = s.keep_chat.unwrap_or(false);
    apply(inner, room, keep_chat, out).await;
    Ok(())
}

/// The media plane's active speakers of a room changed.
pub(crate) async fn speakers(inner: &Inner, room: &RoomId, speakers: &[ParticipantId]) {
    let Some(slot) = inner.lessons.slot(room) else {
        return;
    };
    let mut s = slot.lock().await;
    let out = s.lesson.speakers(speakers);
    let keep_chat = s.keep_chat.unwrap_or(false);
    apply(inner, room, keep_chat, out).await;
}
