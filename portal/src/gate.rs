//! [`LessonGate`]: the signaling plane's door for lesson rooms, backed by the domain.
//!
//! Rooms that are not lessons (the demo room, ad-hoc invites) admit every valid token. In a
//! lesson room, teachers and observers enter by their token's role (only the server signs
//! tokens); a pupil is checked against the lesson's admission rule *at the door*, so a token
//! minted before a guardian's change cannot get past it. Arrivals and departures of pupils, and
//! the gaps of a connection lost and resumed within the grace, are recorded for attendance in
//! the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use classroom_domain::{
    Action, Admission, AuditEntry, Db, Lesson, RefusalReason, audit, lesson_by_media_room,
    record_away, record_back, record_join, record_leave, request_entry,
};
use classroom_signaling::gate::{Entrant, GateFuture, GateRefusal, KeepFuture, RoomGate};
use classroom_signaling::lesson::wire::ChatMessage;
use classroom_signaling::token::Role;
use classroom_signaling::{Signaling, WeakSignaling};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::chat_keeper::ChatKeeper;
use crate::unix_now;

/// Shown to a pupil whose guardian chose in-person attendance (one string: both languages).
pub const IN_PERSON_MESSAGE: &str = "Your guardian chose in-person attendance for today. / 保護者が今日は登校（対面）を選びました。";
const REFUSED_MESSAGE: &str =
    "The teacher has not admitted you to this lesson. / 先生はこの授業への参加を許可していません。";
const NOT_ENROLLED_MESSAGE: &str =
    "You are not enrolled in this lesson. / この授業の名簿に登録されていません。";
const GUEST_UNKNOWN_MESSAGE: &str = "This guest link is not valid. / このゲストリンクは無効です。";
const GUEST_REVOKED_MESSAGE: &str =
    "This guest link was revoked. / このゲストリンクは取り消されました。";
const GUEST_EXPIRED_MESSAGE: &str =
    "This guest link has expired. / このゲストリンクは有効期限が切れています。";
const GUEST_OTHER_LESSON_MESSAGE: &str =
    "This guest link is for another lesson. / このゲストリンクは別の授業のものです。";
const GUEST_NO_LESSON_MESSAGE: &str =
    "This guest link's lesson no longer exists. / このゲストリンクの授業はもうありません。";
const UNAVAILABLE_MESSAGE: &str = "The lesson cannot check your attendance right now; please try again. / 出欠を確認できません。もう一度お試しください。";

/// At most one `join_refused` audit entry per pupil and lesson in this many seconds.
const AUDIT_REFUSAL_EVERY: i64 = 60;
/// At most one `guest_link_used` admission entry per link and lesson in this many seconds.
/// Every admission would let a guest who reconnects in a loop (or a flapping encoder) grow the
/// audit log without bound; the log has to answer "was this link used, and when, roughly", and
/// one entry per ten minutes of (re)joining answers that with at most six rows an hour per link
/// (ten active links per lesson). The first admission after a server start is always written.
const AUDIT_GUEST_USE_EVERY: i64 = 600;

/// What an audit entry at the door records, each rate-limited on its own: an admission must
/// not hide the refusal that follows a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Audited {
    Refusal,
    GuestAdmission,
}

impl Audited {
    fn every(self) -> i64 {
        match self {
            Audited::Refusal => AUDIT_REFUSAL_EVERY,
            Audited::GuestAdmission => AUDIT_GUEST_USE_EVERY,
        }
    }
}

pub struct LessonGate {
    db: Db,
    /// (lesson, identity, what) → when it was last audited.
    audited: Mutex<HashMap<(String, String, Audited), i64>>,
    /// The signaling service this gate is the door of, to remove a guest who entered while
    /// their link was being revoked ([`LessonGate::attach`]).
    signaling: OnceLock<WeakSignaling>,
    /// Arrivals and departures, written by one task in the order they happened: written by a
    /// task each, a quick leave could be stored before its join, and the report would then show
    /// the pupil connected for good (a leave without an open visit is ignored).
    presence: mpsc::UnboundedSender<PresenceEvent>,
    /// Chat of lessons whose school keeps it.
    pub chat: ChatKeeper,
}

/// What happened to a pupil's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Entered,
    Left,
    /// Connection lost, place kept for the resume grace.
    Away,
    /// Resumed within the grace: the same visit goes on.
    Back,
}

enum PresenceEvent {
    Record {
        who: Entrant,
        change: Change,
        at: i64,
    },
    /// Answered once everything sent before it is stored.
    Flush(oneshot::Sender<()>),
}

impl LessonGate {
    /// Must be called inside a tokio runtime: it starts the presence writer, which ends when
    /// the gate is dropped.
    pub fn new(db: Db) -> Arc<LessonGate> {
        let (presence, events) = mpsc::unbounded_channel();
        tokio::spawn(write_presence(db.clone(), events));
        Arc::new(LessonGate {
            db: db.clone(),
            audited: Mutex::new(HashMap::new()),
            signaling: OnceLock::new(),
            presence,
            chat: ChatKeeper::new(db),
        })
    }

    /// Gives the gate the service it guards, so that it can take out a guest whose link turned
    /// out revoked just after the door let them in (see [`LessonGate::recheck_guest`]).
    pub fn attach(&self, signaling: &Signaling) {
        let _ = self.signaling.set(signaling.downgrade());
    }

    /// Waits until every arrival and departure seen so far is stored: at shutdown, the
    /// departures of everyone told goodbye must reach the database before it closes, or their
    /// visits would count as lasting to the end of the lesson.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.presence.send(PresenceEvent::Flush(done)).is_ok() {
            let _ = stored.await;
        }
        self.chat.flush().await;
    }

    /// A guest link's holder (partner lecturer or WHIP encoder): the link must be live and for
    /// this lesson, checked at every join and resume, so a revoked link stops working at once.
    /// Admissions are audited at most once every ten minutes per link, refusals once a minute.
    async fn admit_guest(&self, lesson: &Lesson, who: &Entrant) -> Result<(), GateRefusal> {
        use classroom_domain::guest_link::{DoorRefusal, audit_door, check_at_door};
        let now = unix_now();
        let decision = match check_at_door(&self.db, lesson, &who.identity, now).await {
            Ok(d) => d.map(|_| ()),
            Err(e) => {
                warn!(lesson = %lesson.id, "gate: cannot check a guest link, refusing: {e}");
                return Err(GateRefusal {
                    message: UNAVAILABLE_MESSAGE.to_owned(),
                });
            }
        };
        let what = match decision {
            Ok(()) => Audited::GuestAdmission,
            Err(_) => Audited::Refusal,
        };
        if self.should_audit(&lesson.id, &who.identity, what, now)
            && let Err(e) = audit_door(&self.db, lesson, &who.identity, decision, now).await
        {
            warn!(lesson = %lesson.id, "gate: cannot audit a guest at the door: {e}");
        }
        decision.map_err(|why| {
            info!(lesson = %lesson.id, reason = why.as_str(), "gate: guest refused");
            GateRefusal {
                message: match why {
                    DoorRefusal::Unknown => GUEST_UNKNOWN_MESSAGE,
                    DoorRefusal::Revoked => GUEST_REVOKED_MESSAGE,
                    DoorRefusal::Expired => GUEST_EXPIRED_MESSAGE,
                    DoorRefusal::OtherLesson => GUEST_OTHER_LESSON_MESSAGE,
                    DoorRefusal::NoLesson => GUEST_NO_LESSON_MESSAGE,
                }
                .to_owned(),
            }
        })
    }

    async fn decide(&self, who: &Entrant) -> Result<(), GateRefusal> {
        let refuse = |message: &str| GateRefusal {
            message: message.to_owned(),
        };
        let guest = is_guest(who);
        let lesson = match lesson_by_media_room(&self.db, &who.room).await {
            Ok(Some(lesson)) => lesson,
            // Rooms without a lesson are open, but not to guests: a guest credential is only
            // as good as its link, and a link lives no longer than its lesson (a lesson that
            // was deleted, or moved to another room, leaves tokens valid for up to 14 days).
            Ok(None) if guest => {
                info!(room = %who.room, "gate: guest refused, the room has no lesson");
                return Err(refuse(GUEST_NO_LESSON_MESSAGE));
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                warn!(room = %who.room, "gate: cannot look up the room, refusing: {e}");
                return Err(refuse(UNAVAILABLE_MESSAGE));
            }
        };
        if guest {
            return self.admit_guest(&lesson, who).await;
        }
        if who.role != Role::Student {
            return Ok(());
        }
        let now = unix_now();
        let decision =
            match classroom_domain::admission(&self.db, &lesson, &who.identity, now).await {
                Ok(d) => d,
                Err(e) => {
                    warn!(lesson = %lesson.id, "gate: cannot decide admission, refusing: {e}");
                    return Err(refuse(UNAVAILABLE_MESSAGE));
                }
            };
        let (message, reason) = match decision {
            Admission::Admitted | Admission::AdmittedByTeacher => return Ok(()),
            Admission::Refused {
                reason: RefusalReason::InPersonToday,
            } => {
                if let Err(e) = request_entry(&self.db, &lesson, &who.identity, now).await {
                    warn!(lesson = %lesson.id, "gate: cannot record the lobby request: {e}");
                }
                (IN_PERSON_MESSAGE, "in_person_today")
            }
            Admission::Refused {
                reason: RefusalReason::RefusedByTeacher,
            } => (REFUSED_MESSAGE, "refused_by_teacher"),
            Admission::NotEnrolled => (NOT_ENROLLED_MESSAGE, "not_enrolled"),
        };
        info!(lesson = %lesson.id, reason, "gate: pupil refused");
        if self.should_audit(&lesson.id, &who.identity, Audited::Refusal, now) {
            let entry = AuditEntry {
                at: now,
                actor: Some(&who.identity),
                action: Action::JoinRefused,
                subject: Some(&who.identity),
                detail: serde_json::json!({
                    "lesson": lesson.id, "media_room": lesson.media_room,
                    "reason": reason, "via": "signaling",
                }),
                remote_addr: None,
            };
            if let Err(e) = audit(&self.db, &entry).await {
                warn!("gate: cannot audit a refusal: {e}");
            }
        }
        Err(refuse(message))
    }

    fn should_audit(&self, lesson: &str, who: &str, what: Audited, now: i64) -> bool {
        let mut map = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|(_, _, what), at| now - *at < what.every());
        }
        let key = (lesson.to_owned(), who.to_owned(), what);
        match map.get(&key) {
            Some(at) if now - *at < what.every() => false,
            _ => {
                map.insert(key, now);
                true
            }
        }
    }

    /// Checks a guest's link again once they are in the room. Revoking a link marks it in the
    /// database and then removes its holder from the room; a join whose door check ran just
    /// before the mark but which entered the room just after the removal would stay. The order
    /// closes that gap: this runs after the entrant is in the room (registered, or reattached on
    /// resume), so either the revocation's removal finds them there, or its mark came before
    /// this read and this takes them out (`goodbye` `revoked`). On a database error the guest
    /// stays: the door admitted them a moment ago.
    fn recheck_guest(&self, who: &Entrant) {
        if !is_guest(who) {
            return;
        }
        let Some(signaling) = self.signaling.get().cloned() else {
            return;
        };
        let db = self.db.clone();
        let who = who.clone();
        tokio::spawn(async move {
            use classroom_domain::guest_link::check_at_door;
            let why = match lesson_by_media_room(&db, &who.room).await {
                Ok(Some(lesson)) => {
                    match check_at_door(&db, &lesson, &who.identity, unix_now()).await {
                        Ok(Ok(_)) => return,
                        Ok(Err(why)) => why.as_str(),
                        Err(e) => {
                            warn!(room = %who.room, "gate: cannot check a guest link again: {e}");
                            return;
                        }
                    }
                }
                Ok(None) => "no_lesson",
                Err(e) => {
                    warn!(room = %who.room, "gate: cannot check a guest's room again: {e}");
                    return;
                }
            };
            if let Some(signaling) = signaling.upgrade() {
                let removed = signaling.remove_identity(&who.room, &who.identity).await;
                info!(room = %who.room, reason = why, removed, "gate: guest removed after entering");
            }
        });
    }

    fn record(&self, who: &Entrant, change: Change) {
        if who.role != Role::Student {
            return;
        }
        let event = PresenceEvent::Record {
            who: who.clone(),
            change,
            at: unix_now(),
        };
        if self.presence.send(event).is_err() {
            warn!(room = %who.room, "gate: the presence writer has stopped; not recorded");
        }
    }
}

/// A guest link's holder: the partner-lecturer role is only ever given to guest links' tokens (a
/// signed-in partner lecturer joins with the teacher's), and their subjects name the link.
fn is_guest(who: &Entrant) -> bool {
    who.role == Role::PartnerLecturer
        || classroom_domain::guest_link::parse_identity(&who.identity).is_some()
}

/// Stores presence events one after another, in the order the gate saw them (a gap's end must
/// find its start stored). Unbounded: an event is a few hundred bytes, one per pupil's arrival,
/// departure, drop or resume, and each needs a socket the pupil opened.
async fn write_presence(db: Db, mut events: mpsc::UnboundedReceiver<PresenceEvent>) {
    while let Some(event) = events.recv().await {
        let (who, change, at) = match event {
            PresenceEvent::Record { who, change, at } => (who, change, at),
            PresenceEvent::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let lesson = match lesson_by_media_room(&db, &who.room).await {
            Ok(Some(lesson)) => lesson,
            Ok(None) => continue,
            Err(e) => {
                warn!(room = %who.room, "gate: cannot record presence: {e}");
                continue;
            }
        };
        let pupil = &who.identity;
        let result = match change {
            Change::Entered => record_join(&db, &lesson, pupil, at).await,
            Change::Left => record_leave(&db, &lesson, pupil, at).await,
            Change::Away => match record_away(&db, &lesson, pupil, at).await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    warn!(lesson = %lesson.id, "gate: too many gaps in one visit; this one counts as present");
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Change::Back => record_back(&db, &lesson, pupil, at).await,
        };
        if let Err(e) = result {
            warn!(lesson = %lesson.id, ?change, "gate: cannot record presence: {e}");
        }
    }
}

impl RoomGate for LessonGate {
    fn admit<'a>(&'a self, who: &'a Entrant) -> GateFuture<'a> {
        Box::pin(self.decide(who))
    }

    fn entered(&self, who: &Entrant) {
        self.record(who, Change::Entered);
        self.recheck_guest(who);
    }

    fn left(&self, who: &Entrant) {
        self.record(who, Change::Left);
    }

    fn away(&self, who: &Entrant) {
        self.record(who, Change::Away);
    }

    fn back(&self, who: &Entrant) {
        self.record(who, Change::Back);
        self.recheck_guest(who);
    }

    fn keep_chat<'a>(&'a self, who: &'a Entrant) -> KeepFuture<'a> {
        Box::pin(self.chat.keeps(&who.room))
    }

    fn record_chat(&self, room: &str, message: &ChatMessage, identity: &str) {
        self.chat.keep(room, message, identity);
    }

    fn delete_chat(&self, room: &str, message_id: &str) {
        self.chat.delete(room, message_id);
    }
}
