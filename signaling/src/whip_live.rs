//! The live WHIP sessions and their phases, as plain state (no sockets, no sessions): the places
//! (bounded per server and per room), who may end a session, and how a `DELETE` meets a session
//! in either phase. A place is taken before the session is set up and released once it has
//! ended; a `DELETE` that arrives while the session is still being set up cancels the set-up
//! (the `POST` then answers `deleted` and tears the session down) instead of being answered
//! "ended" while the session goes on.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::whip::{MAX_PER_ROOM, MAX_SESSIONS, WhipError};

/// `DELETE`s that may wait at once for one session to end; more are answered without waiting
/// (each waiter is a request the server holds).
const MAX_WAITERS: usize = 4;

/// The live WHIP sessions, by resource id.
#[derive(Default)]
pub(crate) struct WhipSessions {
    live: Mutex<HashMap<String, Live>>,
}

struct Live {
    room: String,
    /// Whose session it is: only the same identity's token ends it.
    identity: String,
    phase: Phase,
    /// Told when the place is released, i.e. the session has ended (`DELETE`s waiting).
    waiters: Vec<oneshot::Sender<()>>,
}

enum Phase {
    /// Joining and answering the offer. Firing `cancel` (taken by the first `DELETE`) stops the
    /// set-up; `None` means it was cancelled.
    SettingUp { cancel: Option<oneshot::Sender<()>> },
    /// Answered and driven. Firing `end` (taken by the first `DELETE`) makes the driver end it.
    Running { end: Option<oneshot::Sender<()>> },
}

/// The phase a `DELETE` found its session in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPhase {
    /// Still being set up: the set-up was cancelled.
    SettingUp,
    Running,
}

/// What a `DELETE` did: the phase it found, and what to wait on for the session to be gone
/// (`None` when too many `DELETE`s are waiting already).
pub(crate) struct EndRequest {
    pub phase: EndPhase,
    pub gone: Option<oneshot::Receiver<()>>,
}

/// A place taken for a session being set up.
pub(crate) struct Reservation {
    pub resource: String,
    /// Fires when a `DELETE` cancels the set-up.
    pub cancelled: oneshot::Receiver<()>,
}

/// The set-up was cancelled by a `DELETE` (or the place is gone).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cancelled;

impl WhipSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `room` could take one more session now, without taking a place: checked before a
    /// request's body is read, so that a full server reads no offers.
    pub(crate) fn check_room(&self, room: &str) -> Result<(), WhipError> {
        full(&self.lock(), room)
    }

    /// Takes a place for a new session in `room`, or says why there is none.
    pub(crate) fn reserve(&self, room: &str, identity: &str) -> Result<Reservation, WhipError> {
        let mut live = self.lock();
        full(&live, room)?;
        let resource = random_id();
        let (cancel, cancelled) = oneshot::channel();
        live.insert(
            resource.clone(),
            Live {
                room: room.to_owned(),
                identity: identity.to_owned(),
                phase: Phase::SettingUp {
                    cancel: Some(cancel),
                },
                waiters: Vec::new(),
            },
        );
        Ok(Reservation {
            resource,
            cancelled,
        })
    }

    /// The set-up of `resource` is done: from now on a `DELETE` fires `end`. Refused when a
    /// `DELETE` came first; the caller then tears the session down and releases the place.
    pub(crate) fn running(
        &self,
        resource: &str,
        end: oneshot::Sender<()>,
    ) -> Result<(), Cancelled> {
        let mut live = self.lock();
        match live.get_mut(resource) {
            Some(l) if matches!(l.phase, Phase::SettingUp { cancel: Some(_) }) => {
                l.phase = Phase::Running { end: Some(end) };
                Ok(())
            }
            _ => Err(Cancelled),
        }
    }

    /// A `DELETE` of `resource` in `room` by `identity`: cancels the set-up or tells the driver
    /// to end the session. Another identity's session, or another room's, is reported as absent.
    pub(crate) fn request_end(
        &self,
        room: &str,
        resource: &str,
        identity: &str,
    ) -> Result<EndRequest, WhipError> {
        let mut live = self.lock();
        let Some(l) = live
            .get_mut(resource)
            .filter(|l| l.room == room && l.identity == identity)
        else {
            return Err(WhipError::NotFound);
        };
        let gone = (l.waiters.len() < MAX_WAITERS).then(|| {
            let (tx, rx) = oneshot::channel();
            l.waiters.push(tx);
            rx
        });
        let phase = match &mut l.phase {
            Phase::SettingUp { cancel } => {
                if let Some(cancel) = cancel.take() {
                    let _ = cancel.send(());
                }
                EndPhase::SettingUp
            }
            Phase::Running { end } => {
                if let Some(end) = end.take() {
                    let _ = end.send(());
                }
                EndPhase::Running
            }
        };
        Ok(EndRequest { phase, gone })
    }

    /// The session of `resource` has ended: its place is free, and waiting `DELETE`s hear so.
    pub(crate) fn release(&self, resource: &str) {
        let removed = self.lock().remove(resource);
        for waiter in removed.into_iter().flat_map(|l| l.waiters) {
            let _ = waiter.send(());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn full(live: &HashMap<String, Live>, room: &str) -> Result<(), WhipError> {
    if live.len() >= MAX_SESSIONS {
        return Err(WhipError::TooMany(format!(
            "the server already holds {MAX_SESSIONS} WHIP sessions"
        )));
    }
    if live.values().filter(|l| l.room == room).count() >= MAX_PER_ROOM {
        return Err(WhipError::TooMany(format!(
            "this room already has {MAX_PER_ROOM} WHIP sessions"
        )));
    }
    Ok(())
}

fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_room_and_in_all() {
        let s = WhipSessions::default();
        let ids: Vec<String> = (0..MAX_PER_ROOM)
            .map(|_| s.reserve("a", "whip:x").expect("place").resource)
            .collect();
        assert!(matches!(s.check_room("a"), Err(WhipError::TooMany(_))));
        assert!(matches!(
            s.reserve("a", "whip:x"),
            Err(WhipError::TooMany(_))
        ));
        s.release(&ids[0]);
        assert!(s.check_room("a").is_ok());
        assert!(s.reserve("a", "whip:x").is_ok());
        for i in 0..MAX_SESSIONS - MAX_PER_ROOM {
            s.reserve(&format!("r{i}"), "whip:x").expect("place");
        }
        assert!(matches!(s.check_room("z"), Err(WhipError::TooMany(_))));
        assert!(matches!(
            s.reserve("z", "whip:x"),
            Err(WhipError::TooMany(_))
        ));
    }

    /// A `DELETE` that meets a session still being set up cancels the set-up: the set-up hears
    /// it, cannot go on to running, and the `DELETE` learns when the place is released.
    #[test]
    fn a_delete_during_setup_cancels_it() {
        let s = WhipSessions::default();
        let mut r = s.reserve("a", "whip:x").expect("place");
        assert!(r.cancelled.try_recv().is_err(), "not cancelled yet");
        let mut req = s.request_end("a", &r.resource, "whip:x").expect("found");
        assert_eq!(req.phase, EndPhase::SettingUp);
        assert_eq!(r.cancelled.try_recv(), Ok(()), "the set-up is told");
        let (end, _ended) = oneshot::channel();
        assert_eq!(s.running(&r.resource, end), Err(Cancelled));
        let gone = req.gone.as_mut().expect("waits");
        assert!(gone.try_recv().is_err(), "still there until released");
        // A second DELETE meanwhile finds the same phase and waits too.
        let again = s.request_end("a", &r.resource, "whip:x").expect("found");
        assert_eq!(again.phase, EndPhase::SettingUp);
        s.release(&r.resource);
        assert_eq!(gone.try_recv(), Ok(()));
        assert_eq!(again.gone.expect("waits").try_recv(), Ok(()));
        assert_eq!(s.len(), 0);
        assert!(matches!(
            s.request_end("a", &r.resource, "whip:x"),
            Err(WhipError::NotFound)
        ));
    }

    #[test]
    fn a_delete_of_a_running_session_tells_its_driver() {
        let s = WhipSessions::default();
        let r = s.reserve("a", "whip:x").expect("place");
        let (end, mut ended) = oneshot::channel();
        assert_eq!(s.running(&r.resource, end), Ok(()));
        // Another identity, or another room, learns nothing of it.
        assert!(matches!(
            s.request_end("a", &r.resource, "whip:y"),
            Err(WhipError::NotFound)
        ));
        assert!(matches!(
            s.request_end("b", &r.resource, "whip:x"),
            Err(WhipError::NotFound)
        ));
        assert!(ended.try_recv().is_err());
        let mut req = s.request_end("a", &r.resource, "whip:x").expect("found");
        assert_eq!(req.phase, EndPhase::Running);
        assert_eq!(ended.try_recv(), Ok(()), "the driver is told");
        s.release(&r.resource);
        assert_eq!(req.gone.as_mut().expect("waits").try_recv(), Ok(()));
    }

    #[test]
    fn waiting_deletes_are_bounded() {
        let s = WhipSessions::default();
        let r = s.reserve("a", "whip:x").expect("place");
        let waiting = (0..MAX_WAITERS + 2)
            .filter(|_| {
                s.request_end("a", &r.resource, "whip:x")
                    .expect("found")
                    .gone
                    .is_some()
            })
            .count();
        assert_eq!(waiting, MAX_WAITERS);
    }
}
