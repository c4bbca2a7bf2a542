//! When to ask the bandwidth estimator to probe for more.
//!
//! GoogCC raises its estimate only a little above what is actually sent. An SFU that forwards
//! what the estimate allows can therefore get stuck: a link that recovered from 800 kbit/s to
//! 100 Mbit/s keeps an estimate near the middle layer's rate, the upper layer never fits, and
//! nothing is sent that would show otherwise. str0m probes (bursts of padding whose delivery
//! measures the link) when the application raises its desired bitrate above the estimate, in
//! the application-limited region every 5 s, and after 15 s of a stagnant estimate; that is
//! too slow and too rare for a pupil waiting for the teacher's full picture.
//!
//! A [`ProbePacer`] per subscriber asks for an allocation probe while a higher layer is wanted
//! and the estimate does not cover it: it lowers the desired bitrate for one allocation round
//! and restores it the next, which str0m takes as an increase. Probes that do not raise the
//! estimate (the link really is that narrow) double the interval, up to
//! [`MAX_INTERVAL`], so a weak home link is not prodded with padding every few seconds.

use std::time::{Duration, Instant};

/// The first wait, and the interval after a probe that found more bandwidth.
pub const BASE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between probes on a link that keeps not growing.
pub const MAX_INTERVAL: Duration = Duration::from_secs(16);
/// A probe "helped" when the estimate grew by at least this many percent since it was asked.
const GROWTH_PERCENT: u64 = 10;

/// What desired bitrate to hand the estimator this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nudge {
    /// The real desired bitrate.
    Steady,
    /// Slightly below it, so that the next round's [`Nudge::Steady`] is an increase.
    Lower,
}

#[derive(Debug, Clone)]
pub struct ProbePacer {
    interval: Duration,
    next_at: Option<Instant>,
    /// The estimate when the last probe was asked for; judged at the next one.
    estimate_at_probe: Option<u64>,
}

impl Default for ProbePacer {
    fn default() -> Self {
        ProbePacer {
            interval: BASE_INTERVAL,
            next_at: None,
            estimate_at_probe: None,
        }
    }
}

impl ProbePacer {
    /// One allocation round. `wants_more`: some track would go up if the estimate allowed it.
    pub fn round(&mut self, now: Instant, wants_more: bool, estimate: u64) -> Nudge {
        if !wants_more {
            *self = ProbePacer::default();
            return Nudge::Steady;
        }
        let Some(next_at) = self.next_at else {
            // Give str0m's own ramp a chance first.
            self.next_at = Some(now + self.interval);
            return Nudge::Steady;
        };
        if now < next_at {
            return Nudge::Steady;
        }
        if let Some(before) = self.estimate_at_probe {
            let grew = estimate.saturating_mul(100) >= before.saturating_mul(100 + GROWTH_PERCENT);
            self.interval = if grew {
                BASE_INTERVAL
            } else {
                (self.interval * 2).min(MAX_INTERVAL)
            };
        }
        self.estimate_at_probe = Some(estimate);
        self.next_at = Some(now + self.interval);
        Nudge::Lower
    }

    /// The wait before the next probe, as it stands.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn probes_after_the_first_wait_then_backs_off_while_nothing_grows() {
        let t0 = Instant::now();
        let mut p = ProbePacer::default();
        assert_eq!(p.round(t0, true, 700_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 500), true, 700_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 1_000), true, 700_000), Nudge::Lower);
        // The next round restores the desired rate: that is the probe.
        assert_eq!(p.round(at(t0, 1_500), true, 700_000), Nudge::Steady);
        // No growth: 2 s, then 4, 8, 16 s, and no more than that.
        assert_eq!(p.round(at(t0, 2_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), Duration::from_secs(2));
        assert_eq!(p.round(at(t0, 3_900), true, 700_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 4_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), Duration::from_secs(4));
        assert_eq!(p.round(at(t0, 8_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), Duration::from_secs(8));
        assert_eq!(p.round(at(t0, 16_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.round(at(t0, 32_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), MAX_INTERVAL);
        assert_eq!(p.round(at(t0, 48_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), MAX_INTERVAL);
    }

    #[test]
    fn growth_brings_the_interval_back_and_contentment_resets() {
        let t0 = Instant::now();
        let mut p = ProbePacer::default();
        p.round(t0, true, 500_000);
        assert_eq!(p.round(at(t0, 1_000), true, 500_000), Nudge::Lower);
        assert_eq!(p.round(at(t0, 2_000), true, 500_000), Nudge::Lower);
        assert_eq!(p.interval(), Duration::from_secs(2));
        // The probe worked: +40 %.
        assert_eq!(p.round(at(t0, 4_000), true, 700_000), Nudge::Lower);
        assert_eq!(p.interval(), BASE_INTERVAL);
        // Everything fits now: nothing to probe for, and the next want starts afresh.
        assert_eq!(p.round(at(t0, 5_000), false, 2_000_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 20_000), true, 2_000_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 20_999), true, 2_000_000), Nudge::Steady);
        assert_eq!(p.round(at(t0, 21_000), true, 2_000_000), Nudge::Lower);
    }
}
