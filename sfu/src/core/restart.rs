//! When the server restarts ICE itself on a connection whose path went quiet.
//!
//! A pupil's page restarts ICE when its browser sees the path down, but not every client does
//! (an old page, a native client, a browser that still thinks the path is fine because only the
//! server's direction broke). While the participant's signaling lives, the server therefore
//! restarts a quiet connection on its own: a subscribe connection with a new offer carrying
//! fresh ICE credentials, a publish connection by asking the client for one. Bounded: one
//! restart in flight per connection, and further ones only after a growing wait while the path
//! stays down.

use std::time::{Duration, Instant};

/// The first restart after the path went quiet: long enough for a path that only blinked (the
/// client moving to a new address, which ICE follows by itself) to come back first.
pub const FIRST_AFTER: Duration = Duration::from_millis(1500);

/// A restart that is checking (the client's or ours) gets this long before the server starts
/// another: a second set of credentials would only void the checks under way. A browser whose
/// address just changed learns the new one up to about 2 s later.
pub const CHECKS_GRACE: Duration = Duration::from_secs(3);

/// The wait between restarts doubles up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// One connection's restart schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartSchedule {
    /// When the next restart is due; `None` while the path is up.
    next: Option<Instant>,
    /// The wait after the next restart.
    backoff: Duration,
}

impl RestartSchedule {
    /// The path went quiet at `now` (repeated reports keep the first time).
    pub fn disconnected(&mut self, now: Instant) {
        if self.next.is_none() {
            self.next = Some(now + FIRST_AFTER);
            self.backoff = FIRST_AFTER * 2;
        }
    }

    /// ICE checks again after a restart, whoever asked for it.
    pub fn checking(&mut self, now: Instant) {
        if let Some(next) = self.next {
            self.next = Some(next.max(now + CHECKS_GRACE));
        }
    }

    /// The path is back: nothing is due.
    pub fn connected(&mut self) {
        *self = RestartSchedule::default();
    }

    /// Whether to restart now. `in_flight`: a restart (or any offer) of this connection still
    /// waits for its answer; another would only cross it, so none is started and the schedule
    /// waits. A restart started here moves the next one a backoff later.
    pub fn due(&mut self, now: Instant, in_flight: bool) -> bool {
        match self.next {
            Some(at) if now >= at && !in_flight => {
                self.next = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_the_path_stays_down() {
        let t0 = Instant::now();
        let mut s = RestartSchedule::default();
        assert!(
            !s.due(t0 + MAX_BACKOFF * 4, false),
            "nothing while the path is up"
        );
        s.disconnected(t0);
        s.disconnected(t0 + Duration::from_secs(1));
        assert!(!s.due(t0 + Duration::from_millis(1000), false));
        let mut at = t0 + FIRST_AFTER;
        assert!(s.due(at, false));
        assert!(!s.due(at, false), "one at a time");
        let mut waits = Vec::new();
        for _ in 0..6 {
            let mut next = at;
            while !s.due(next, false) {
                next += Duration::from_millis(100);
            }
            waits.push((next - at).as_millis());
            at = next;
        }
        assert_eq!(waits, [3000, 6000, 12000, 16000, 16000, 16000]);
    }

    #[test]
    fn a_restart_that_is_checking_is_not_crossed_by_another() {
        let t0 = Instant::now();
        let mut s = RestartSchedule::default();
        s.disconnected(t0);
        // The client restarts just before the server would have: its checks get their time.
        let checking = t0 + FIRST_AFTER - Duration::from_millis(100);
        s.checking(checking);
        assert!(!s.due(t0 + FIRST_AFTER, false));
        assert!(!s.due(checking + CHECKS_GRACE - Duration::from_millis(1), false));
        assert!(
            s.due(checking + CHECKS_GRACE, false),
            "checks that fail are followed up"
        );
        let mut up = RestartSchedule::default();
        up.checking(t0);
        assert!(
            !up.due(t0 + MAX_BACKOFF * 4, false),
            "checks on a path that is up start no schedule"
        );
    }

    #[test]
    fn an_offer_in_flight_holds_the_next_restart_and_a_path_back_ends_them() {
        let t0 = Instant::now();
        let mut s = RestartSchedule::default();
        s.disconnected(t0);
        assert!(
            !s.due(t0 + FIRST_AFTER, true),
            "an offer waits for its answer"
        );
        assert!(s.due(t0 + FIRST_AFTER * 2, false), "and then it is due");
        s.connected();
        assert!(!s.due(t0 + MAX_BACKOFF * 4, false));
        s.disconnected(t0 + MAX_BACKOFF * 4);
        assert!(
            s.due(t0 + MAX_BACKOFF * 4 + FIRST_AFTER, false),
            "a new outage starts over"
        );
    }
}
