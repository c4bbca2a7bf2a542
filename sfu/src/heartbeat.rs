//! The media thread's sign of life, for `/healthz`: the thread notes the time on every pass of
//! its loop's once-a-second tick, and anyone may ask how long ago that was. A thread that is
//! stuck (a blocking call, an endless loop) or gone (a panic) stops noting, however healthy the
//! rest of the process looks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longer than this since the last beat, and the media thread counts as stalled. The loop beats
/// every second; a few missed beats are a machine under load, five seconds is lessons frozen.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// Monotonic time of the last beat, so a clock change cannot make a live thread look dead.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    /// A beat now: the thread is starting.
    fn default() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub(crate) fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    fn age_at(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Whether the media thread beat within [`STALL_AFTER`].
    pub fn is_alive(&self) -> bool {
        self.age() <= STALL_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_from_the_last_beat() {
        let heart = Heartbeat::default();
        let start = heart.origin;
        assert_eq!(heart.age_at(start), Duration::ZERO);
        assert_eq!(
            heart.age_at(start + Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        heart.beat_at(start + Duration::from_secs(6));
        assert_eq!(
            heart.age_at(start + Duration::from_secs(7)),
            Duration::from_secs(1)
        );
        // A reader that took its time before the beat landed sees no negative age.
        assert_eq!(heart.age_at(start + Duration::from_secs(5)), Duration::ZERO);
    }
}
