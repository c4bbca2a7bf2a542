//! Rate limit for keyframe requests towards a publisher.
//!
//! Every subscriber that loses a packet may ask for a keyframe; a classroom of forty asking at once
//! must not make the teacher's encoder send forty keyframes. One request per interval reaches the
//! publisher; the keyframe it produces serves everyone who asked.

use std::time::{Duration, Instant};

/// How often a publisher's track is asked for a keyframe of one layer at most.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// The same for the lowest of several simulcast layers. Every pupil starts on it, so a joining
/// pupil's first picture waits for its next keyframe; and its keyframes are small (Chromium's are
/// 4–5 kB at 320x180, against 36–42 kB for the middle layer and 150–240 kB for the full one), so
/// asking more often costs the teacher's uplink little.
pub const LOWEST_LAYER_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

/// The interval for spatial layer `spatial` of a track sent in `layers` simulcast layers. A
/// track sent in one layer (a pupil's camera, a screen share) may have large keyframes.
pub fn keyframe_request_interval(spatial: usize, layers: usize) -> Duration {
    if spatial == 0 && layers > 1 {
        LOWEST_LAYER_KEYFRAME_REQUEST_INTERVAL
    } else {
        KEYFRAME_REQUEST_INTERVAL
    }
}

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
    fn the_lowest_simulcast_layer_may_be_asked_more_often() {
        assert_eq!(keyframe_request_interval(0, 3), Duration::from_millis(200));
        assert_eq!(keyframe_request_interval(1, 3), KEYFRAME_REQUEST_INTERVAL);
        assert_eq!(keyframe_request_interval(2, 3), KEYFRAME_REQUEST_INTERVAL);
        // One layer only: it may be a full-size picture or a screen.
        assert_eq!(keyframe_request_interval(0, 1), KEYFRAME_REQUEST_INTERVAL);
    }

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
