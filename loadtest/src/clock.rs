//! One monotonic epoch for the whole process.
//!
//! The teacher and the pupils live in the same process, so a send time written into a payload as
//! nanoseconds since this epoch can be compared with the receive time directly: forwarding
//! latency needs no clock synchronisation.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide epoch, fixed at its first use.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from the epoch to `at` (0 for instants before it).
pub fn nanos(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}
