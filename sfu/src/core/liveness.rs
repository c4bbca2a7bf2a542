//! When a peer connection whose ICE path went quiet is given up.
//!
//! A pupil's Wi-Fi drops for a few seconds, a tablet moves to LTE, a laptop lid closes: the
//! client's consent checks stop and str0m reports ICE `Disconnected`. The client restarts ICE
//! (or its checks come back from a new address) and the same connection carries on, so a quiet
//! path is not a reason to drop it. Only a path quiet for longer than a participant's place is
//! kept after its socket drops (the signaling's resume grace, 30 s by default) is given up.

use std::time::{Duration, Instant};

/// How long a connection may stay ICE-disconnected before it is closed. Longer than the resume
/// grace (at most 60 s, `[connections] resume_grace`), so a connection is never dropped under a
/// participant who is still allowed back.
pub const ICE_FAILURE_LIMIT: Duration = Duration::from_secs(90);

/// The ICE state of one connection, as far as giving up is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Liveness {
    disconnected_since: Option<Instant>,
}

impl Liveness {
    /// ICE went `Disconnected` at `now` (the first report counts).
    pub fn disconnected(&mut self, now: Instant) {
        self.disconnected_since.get_or_insert(now);
    }

    /// ICE has a nominated pair again.
    pub fn connected(&mut self) {
        self.disconnected_since = None;
    }

    /// Whether the connection has been quiet for too long and should be closed.
    pub fn given_up(&self, now: Instant) -> bool {
        self.disconnected_since
            .is_some_and(|since| now.saturating_duration_since(since) >= ICE_FAILURE_LIMIT)
    }

    pub fn is_disconnected(&self) -> bool {
        self.disconnected_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_outage_is_survived_and_a_long_one_is_not() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        assert!(!l.given_up(t0 + ICE_FAILURE_LIMIT * 2));
        l.disconnected(t0);
        // A second report does not restart the clock.
        l.disconnected(t0 + Duration::from_secs(20));
        assert!(!l.given_up(t0 + Duration::from_secs(40)));
        assert!(l.given_up(t0 + ICE_FAILURE_LIMIT));
        l.connected();
        assert!(!l.is_disconnected());
        assert!(!l.given_up(t0 + ICE_FAILURE_LIMIT * 2));
    }
}
