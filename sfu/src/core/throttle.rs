//! Rate limit for keyframe requests towards a publisher.
//!
//! Every subscriber that loses a packet may ask for a keyframe; a classroom of forty asking at once
//! must not make the teacher's encoder send forty keyframes. One request per interval reaches the
//! publisher; the keyframe it produces serves everyone who asked.

use std::time::{Duration, Instant};

/// How often a publisher's track is asked for a keyframe at most.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Lets one event through per interval.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
        }
    }

    /// Whether an event at `now` may pass; if so it counts as the latest.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_millis(500));
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(t.allow(ms(0)));
        assert!(!t.allow(ms(1)));
        assert!(!t.allow(ms(499)));
        assert!(t.allow(ms(500)));
        assert!(!t.allow(ms(900)));
        assert!(t.allow(ms(1001)));
    }
}
