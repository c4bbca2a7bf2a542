//! Noticing a client that went silent, sooner than ICE does.
//!
//! str0m, as an ICE-lite agent, calls a path `Disconnected` only after about 15 s without a check
//! from the client. But a client whose path works sends far more often than that: media, RTCP
//! feedback several times a second, and consent checks every 2 to 6 s even when it sends nothing
//! else. A connection that got datagrams steadily and then nothing for several times its longest
//! recent gap (and at least [`MIN_SILENCE`]) has lost its path: the client moved, or its link is
//! down. Reporting that as a quiet path lets `core::restart` begin restarting ICE after seconds,
//! not a quarter of a minute. A client that only sends consent checks has long gaps, so it is
//! given correspondingly long before it counts as silent; a wrong guess costs one ICE restart
//! (only if the silence also outlasts `core::restart::FIRST_AFTER`), never the connection.

use std::time::{Duration, Instant};

/// Never silent sooner than this: longer than Chromium's consent checks of a connection that
/// sends nothing else (2.5 s) with room for a late one, and within Firefox's 4 to 6 s.
pub const MIN_SILENCE: Duration = Duration::from_secs(5);

/// Silent after this many times the longest gap between datagrams seen lately.
const GAP_FACTOR: u32 = 3;

/// A gap of at least this (and of [`GAP_FACTOR`] times the client's pace) ends with the path
/// back even if it was too short to be reported: a link that dropped for a few seconds lost
/// what was sent meanwhile, and the pictures it carries want keyframes now, not when the
/// decoders behind it give up waiting (Chromium asks after 3 s without a decodable frame).
pub const MIN_RETURN_GAP: Duration = Duration::from_secs(1);

/// Gaps are remembered for one to two of these (two windows, the older one dropped as a new
/// one begins): a connection that was sending only consent checks and then starts sending
/// media is judged by its new pace soon.
const WINDOW: Duration = Duration::from_secs(10);

/// Datagrams a connection must have sent before its silence means anything (during setup,
/// checks and the DTLS handshake come in bursts).
const STEADY_AFTER: u32 = 20;

/// One connection's inbound datagrams, as far as silence is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silence {
    last: Option<Instant>,
    heard: u32,
    window_start: Option<Instant>,
    longest_now: Duration,
    longest_before: Duration,
    reported: bool,
}

impl Silence {
    /// A datagram from the client arrived at `now`. Returns true when it ends a silence that
    /// [`Silence::check`] reported, or a gap far longer than the client's pace (the path is
    /// back).
    pub fn heard(&mut self, now: Instant) -> bool {
        let mut back = std::mem::take(&mut self.reported);
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            let start = *self.window_start.get_or_insert(now);
            if now.saturating_duration_since(start) >= WINDOW {
                self.longest_before = self.longest_now;
                self.longest_now = Duration::ZERO;
                self.window_start = Some(now);
            }
            let outage = back || gap >= MIN_SILENCE;
            back |= self.heard >= STEADY_AFTER && gap >= self.return_gap();
            // A gap that ended an outage is not the client's pace.
            if !(back && outage) {
                self.longest_now = self.longest_now.max(gap);
            }
        }
        self.last = Some(now);
        self.heard = self.heard.saturating_add(1);
        back
    }

    fn pace_limit(&self) -> Duration {
        self.longest_now.max(self.longest_before) * GAP_FACTOR
    }

    fn return_gap(&self) -> Duration {
        self.pace_limit().max(MIN_RETURN_GAP)
    }

    /// How long this connection may be silent before it counts as having lost its path.
    pub fn limit(&self) -> Duration {
        self.pace_limit().max(MIN_SILENCE)
    }

    /// Whether the connection has gone silent by `now`: true once per silence.
    pub fn check(&mut self, now: Instant) -> bool {
        let Some(last) = self.last else {
            return false;
        };
        if self.reported || self.heard < STEADY_AFTER {
            return false;
        }
        if now.saturating_duration_since(last) >= self.limit() {
            self.reported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `n` datagrams every `every`, from `t`; returns the time of the last.
    fn steady(s: &mut Silence, t: Instant, n: u32, every: Duration) -> Instant {
        let mut at = t;
        for i in 0..n {
            at = t + every * i;
            s.heard(at);
        }
        at
    }

    #[test]
    fn a_busy_connection_that_stops_is_silent_after_the_minimum() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        let last = steady(&mut s, t0, 200, ms(50));
        assert!(!s.check(last + MIN_SILENCE - ms(1)));
        assert!(s.check(last + MIN_SILENCE));
        assert!(!s.check(last + MIN_SILENCE * 2), "reported once");
        assert!(s.heard(last + MIN_SILENCE * 3), "the next datagram ends it");
        assert!(!s.heard(last + MIN_SILENCE * 3 + ms(50)));
    }

    #[test]
    fn consent_checks_alone_are_not_silence() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        // Media for a while, then only a consent check every 2.5 s (Chromium) for a minute. The
        // first gap looks like a short outage (keyframes are asked once); the pace then counts.
        let mut at = steady(&mut s, t0, 100, ms(20));
        at += ms(2500);
        assert!(s.heard(at));
        for _ in 0..24 {
            for probe in [ms(500), ms(1000), ms(2000), ms(2499)] {
                assert!(!s.check(at + probe), "silent between consent checks");
            }
            at += ms(2500);
            assert!(!s.heard(at));
        }
        // Firefox: checks every 4 to 6 s, never silent either.
        for gap in [4000, 6000, 4500, 5900, 4100, 6000] {
            assert!(!s.check(at + ms(gap - 1)));
            at += ms(gap);
            s.heard(at);
        }
        assert!(s.limit() >= ms(18000));
        assert!(s.check(at + s.limit()), "yet a real silence still counts");
    }

    #[test]
    fn a_short_drop_ends_with_the_path_back_without_lengthening_the_limit() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        let last = steady(&mut s, t0, 200, ms(50));
        assert!(!s.heard(last + ms(500)), "a gap within the pace");
        let back = last + ms(500) + ms(4900);
        assert!(!s.check(back - ms(1)), "not yet reported");
        assert!(s.heard(back), "yet the path is back");
        assert!(
            !s.heard(back + ms(1100)),
            "1.1 s is within 3 x 4.9 s: remembered as pace"
        );
        let mut s = Silence::default();
        let last = steady(&mut s, t0, 200, ms(50));
        assert!(s.heard(last + ms(5200)), "an outage past the minimum");
        let again = steady(&mut s, last + ms(5200), 10, ms(50));
        assert_eq!(s.limit(), MIN_SILENCE, "the outage is not the pace");
        assert!(s.heard(again + MIN_RETURN_GAP));
    }

    #[test]
    fn nothing_before_the_connection_is_steady() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        assert!(!s.check(t0 + MIN_SILENCE * 10));
        let last = steady(&mut s, t0, STEADY_AFTER - 1, ms(10));
        assert!(!s.check(last + MIN_SILENCE * 10));
    }

    #[test]
    fn an_outage_does_not_lengthen_the_next_limit() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        let last = steady(&mut s, t0, 200, ms(50));
        assert!(s.check(last + ms(6000)));
        let back = last + ms(9000);
        assert!(s.heard(back));
        let again = steady(&mut s, back, 100, ms(50));
        assert_eq!(s.limit(), MIN_SILENCE);
        assert!(s.check(again + MIN_SILENCE));
    }

    #[test]
    fn an_old_slow_pace_is_forgotten() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        // 30 s of consent checks only, then 25 s of media.
        let mut at = steady(&mut s, t0, 21, ms(1500));
        at = steady(&mut s, at + ms(50), 500, ms(50));
        assert_eq!(s.limit(), MIN_SILENCE, "two windows of media later");
        assert!(s.check(at + MIN_SILENCE));
    }
}
