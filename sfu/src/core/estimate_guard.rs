//! Keeps one bad probe measurement from taking a subscriber's estimate down and holding it there.
//!
//! str0m's GoogCC takes the rate a probe cluster measured as the new estimate, lower or higher
//! (as libwebrtc does). A cluster is a handful of packets, and its rate is measured from the
//! times the receiver stamped on them: when the receiving device stalls while they arrive (a
//! tablet busy decoding, a browser drawing a screenshot), the stamps spread out and the
//! "measured" rate is a small fraction of what the path carries. In the two-school browser
//! lesson, pupils' paths that had carried ~0.6 Mbit/s with 1–8 ms round trips and no loss got
//! probe results of 17–90 kbit/s, all at once on both servers; their estimates fell to
//! str0m's floor (40 kbit/s) and stayed there for the rest of the lesson: video paused, and the
//! padding that could prove more is held under the estimate (`allocation_round`).
//!
//! libwebrtc keeps a probe from pulling its estimate below 85 % of the throughput just
//! acknowledged (its `LimitProbesLowerThanThroughputEstimate`); str0m 0.25 has no such limit and
//! tells us only the new estimate, not what caused it. A path that really narrows shows it: the
//! round trip grows over its floor, or packets go missing, and GoogCC's own decrease on a delay
//! signal goes to 85 % of what was acknowledged, not below. So an estimate that falls to under a
//! half of the one before in a single step, on a path that shows neither, is taken for a
//! measurement fault: the estimator starts again from 85 % of what the path delivered in the
//! last seconds (never more than the estimate before the fall), and its probing from there tells
//! the truth; a real fall shows a queue or loss and wins. At most once per [`COOLDOWN`], so a
//! device that keeps stalling ends up with what it measures.
//!
//! A fall in several smaller steps leaves the same state behind: in the same lesson a pupil's
//! estimate went 78 → 66 → 63 → 45 kbit/s after a restart and then did not move at all for a
//! minute, with round trips of 1–14 ms and loss under 2 %, while its video waited. So an
//! estimate that has not moved for [`STUCK_AFTER`] while video is paused for want of it, on a
//! clear path, is restarted from where it stands, and probes from there. str0m reports its
//! estimate as a 3 s mean and only when that moves by 5 %, so a healthy estimate on a steady
//! narrow link can stand still too: only a starved subscriber counts (a picture, however small,
//! flowing means the estimate works), and each restart that does not end the starvation doubles
//! the wait, up to [`STUCK_AFTER_MAX`], so a link too weak for any video is not probed every
//! few seconds.
//!
//! Around an outage nothing is judged: while the path is down its last round trip and loss are
//! old news, and for [`SETTLE`] after it comes back the feedback is about the outage
//! (`Shard::path_back` starts a sunk estimate over itself).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A fall to less than the previous estimate divided by this, in one step, is suspect.
const SUSPECT_FALL: u64 = 2;
/// The least time between two restores for one subscriber.
pub const COOLDOWN: Duration = Duration::from_secs(5);
/// An estimate unchanged this long, while video is paused for want of it, is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(6);
/// The longest wait after restarts that did not end the starvation.
pub const STUCK_AFTER_MAX: Duration = Duration::from_secs(48);
/// After the path comes back from an outage nothing is judged for this long.
pub const SETTLE: Duration = Duration::from_secs(5);
/// The share of the delivered rate the estimator restarts from (per cent), libwebrtc's limit.
const DELIVERED_PERCENT: u64 = 85;
/// What the path delivered is measured over about this long.
const WINDOW: Duration = Duration::from_secs(3);
/// Samples of the bytes sent kept (one per allocation round, twice a second).
const SAMPLES: usize = 8;
/// Receiver-reported loss at or above this is a sign of congestion here (stricter than the
/// rate proof's, which decides something else: whether a larger picture may be tried).
pub const CLEAN_LOSS: f32 = 0.02;

/// What to do with a new estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take it.
    Accept,
    /// Start the estimator again from this rate (bits per second).
    Restore(u64),
}

/// One subscriber's guard.
#[derive(Debug)]
pub struct EstimateGuard {
    /// (when, every byte sent towards the subscriber so far), oldest first.
    sent: VecDeque<(Instant, u64)>,
    last_restore: Option<Instant>,
    /// The estimate last taken, and since when it has stood.
    standing: Option<(u64, Instant)>,
    /// How long a starved estimate may stand still now (doubled by each restart).
    stuck_after: Duration,
    /// The path is down.
    down: bool,
    /// Nothing is judged before this (the path came back [`SETTLE`] before it).
    settled_at: Option<Instant>,
    /// Never judges (a lesson link's connection: see [`EstimateGuard::exempt`]).
    exempt: bool,
}

impl Default for EstimateGuard {
    fn default() -> Self {
        EstimateGuard {
            sent: VecDeque::with_capacity(SAMPLES),
            last_restore: None,
            standing: None,
            stuck_after: STUCK_AFTER,
            down: false,
            settled_at: None,
            exempt: false,
        }
    }
}

impl EstimateGuard {
    /// The path went down.
    pub fn path_down(&mut self) {
        self.down = true;
    }

    /// The path is back: judging waits [`SETTLE`], and an estimate standing still counts from
    /// then.
    pub fn path_back(&mut self, now: Instant) {
        self.down = false;
        self.settled_at = Some(now + SETTLE);
        if let Some((value, _)) = self.standing {
            self.standing = Some((value, now));
        }
    }

    /// From now on every estimate is taken as it comes: for a lesson link's connection, whose
    /// far end is a server (it does not stall like a tablet) and whose outages and redials have
    /// their own recovery (`tests/link_outage.rs` resumed later with the guard on it).
    pub fn exempt(&mut self) {
        self.exempt = true;
    }

    fn settling(&self, now: Instant) -> bool {
        self.exempt || self.down || self.settled_at.is_some_and(|t| now < t)
    }

    /// Every allocation round: the bytes sent so far, from which the delivered rate comes.
    pub fn observe_sent(&mut self, now: Instant, bytes_sent: u64) {
        if self.sent.len() == SAMPLES {
            self.sent.pop_front();
        }
        self.sent.push_back((now, bytes_sent));
    }

    /// A new estimate, `estimate`, after `previous`. `path_clear`: the path shows no queue and
    /// no loss of [`CLEAN_LOSS`] or more (the caller's latest feedback).
    pub fn judge(
        &mut self,
        now: Instant,
        previous: Option<u64>,
        estimate: u64,
        path_clear: bool,
        bytes_sent: u64,
    ) -> Verdict {
        let verdict = self.judge_fall(now, previous, estimate, path_clear, bytes_sent);
        let taken = match verdict {
            Verdict::Accept => estimate,
            Verdict::Restore(rate) => rate,
        };
        if self.standing.is_none_or(|(value, _)| value != taken) {
            self.standing = Some((taken, now));
        }
        verdict
    }

    /// Every allocation round: whether the estimate has stood still for [`STUCK_AFTER`] (more
    /// after restarts that did not help) while `starved` (video paused for want of bandwidth),
    /// on a clear path.
    pub fn stuck(&mut self, now: Instant, starved: bool, path_clear: bool) -> Verdict {
        if !starved {
            self.stuck_after = STUCK_AFTER;
            return Verdict::Accept;
        }
        let Some((estimate, since)) = self.standing else {
            return Verdict::Accept;
        };
        if self.settling(now)
            || !path_clear
            || now.saturating_duration_since(since) < self.stuck_after
        {
            return Verdict::Accept;
        }
        if self
            .last_restore
            .is_some_and(|t| now.saturating_duration_since(t) < COOLDOWN)
        {
            return Verdict::Accept;
        }
        self.last_restore = Some(now);
        self.standing = Some((estimate, now));
        self.stuck_after = (self.stuck_after * 2).min(STUCK_AFTER_MAX);
        Verdict::Restore(estimate)
    }

    fn judge_fall(
        &mut self,
        now: Instant,
        previous: Option<u64>,
        estimate: u64,
        path_clear: bool,
        bytes_sent: u64,
    ) -> Verdict {
        let Some(previous) = previous else {
            return Verdict::Accept;
        };
        if self.settling(now) {
            return Verdict::Accept;
        }
        if estimate.saturating_mul(SUSPECT_FALL) >= previous || !path_clear {
            return Verdict::Accept;
        }
        if self
            .last_restore
            .is_some_and(|t| now.saturating_duration_since(t) < COOLDOWN)
        {
            return Verdict::Accept;
        }
        let Some(delivered) = self.delivered(now, bytes_sent) else {
            return Verdict::Accept;
        };
        // Even where what was delivered gives nothing back, the restart is worth it: the bad
        // measurement also stays behind as the link capacity that bounds the loss-based
        // estimate and as the state that keeps str0m from probing (a pupil's estimate stood at
        // 52 kbit/s, unchanged, for a minute on a clear path).
        let target = (delivered * DELIVERED_PERCENT / 100)
            .min(previous)
            .max(estimate);
        self.last_restore = Some(now);
        Verdict::Restore(target)
    }

    /// The mean rate sent over the last [`WINDOW`] or so (bits per second); None without a
    /// sample at least a second old.
    fn delivered(&self, now: Instant, bytes_sent: u64) -> Option<u64> {
        let (since, bytes) = self
            .sent
            .iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)?;
        let elapsed = now.saturating_duration_since(*since);
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let bits = bytes_sent.saturating_sub(*bytes).saturating_mul(8);
        Some((u128::from(bits) * 1000 / elapsed.as_millis()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard that has seen `rate` bits per second sent for three seconds, up to `now`.
    fn sending(rate: u64, now: Instant) -> (EstimateGuard, u64) {
        let mut guard = EstimateGuard::default();
        let start = now - Duration::from_millis(3000);
        for i in 0..=6u64 {
            guard.observe_sent(
                start + Duration::from_millis(500 * i),
                rate / 8 * 500 * i / 1000,
            );
        }
        (guard, rate / 8 * 3)
    }

    #[test]
    fn a_collapse_on_a_clear_path_restarts_from_what_the_path_delivered() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(450_000, now);
        assert_eq!(
            guard.judge(now, Some(584_206), 41_000, true, bytes),
            Verdict::Restore(382_500)
        );
    }

    #[test]
    fn never_more_than_the_estimate_before_the_fall() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(900_000, now);
        assert_eq!(
            guard.judge(now, Some(600_000), 60_000, true, bytes),
            Verdict::Restore(600_000)
        );
        let (mut guard, bytes) = sending(600_000, now);
        assert_eq!(
            guard.judge(now, Some(600_000), 60_000, true, bytes),
            Verdict::Restore(510_000)
        );
    }

    #[test]
    fn a_fall_with_a_queue_or_loss_stands() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(450_000, now);
        assert_eq!(
            guard.judge(now, Some(584_206), 41_000, false, bytes),
            Verdict::Accept
        );
    }

    #[test]
    fn ordinary_decreases_stand() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(450_000, now);
        // GoogCC's own decrease: 0.85 of what was acknowledged.
        assert_eq!(
            guard.judge(now, Some(584_206), 382_500, true, bytes),
            Verdict::Accept
        );
        assert_eq!(guard.judge(now, None, 41_000, true, bytes), Verdict::Accept);
    }

    #[test]
    fn a_path_that_delivered_little_restarts_from_the_fallen_estimate() {
        // Audio only was sent: the estimator starts again, not lower than where it fell.
        let now = Instant::now();
        let (mut guard, bytes) = sending(40_000, now);
        assert_eq!(
            guard.judge(now, Some(600_000), 45_000, true, bytes),
            Verdict::Restore(45_000)
        );
    }

    #[test]
    fn at_most_once_per_cooldown() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(450_000, now);
        assert!(matches!(
            guard.judge(now, Some(584_206), 41_000, true, bytes),
            Verdict::Restore(_)
        ));
        let soon = now + COOLDOWN - Duration::from_millis(1);
        assert_eq!(
            guard.judge(soon, Some(450_000), 41_000, true, bytes + 400_000),
            Verdict::Accept
        );
        let later = now + COOLDOWN + Duration::from_secs(3);
        for i in 0..=6u64 {
            guard.observe_sent(
                later - Duration::from_millis(3000 - 500 * i),
                bytes + 56_250 * i / 2,
            );
        }
        assert!(matches!(
            guard.judge(later, Some(450_000), 41_000, true, bytes + 56_250 * 3),
            Verdict::Restore(_)
        ));
    }

    #[test]
    fn an_estimate_that_stands_still_while_video_starves_is_restarted_less_and_less_often() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(60_000, now);
        assert_eq!(
            guard.judge(now, Some(50_000), 44_554, true, bytes),
            Verdict::Accept
        );
        let almost = now + STUCK_AFTER - Duration::from_millis(1);
        assert_eq!(guard.stuck(almost, true, true), Verdict::Accept);
        let stood = now + STUCK_AFTER;
        assert_eq!(
            guard.stuck(stood, true, false),
            Verdict::Accept,
            "a queue or loss"
        );
        assert_eq!(guard.stuck(stood, true, true), Verdict::Restore(44_554));
        // Still starved: the next restart waits twice as long from this one.
        let twice = stood + STUCK_AFTER * 2;
        assert_eq!(
            guard.stuck(twice - Duration::from_millis(1), true, true),
            Verdict::Accept
        );
        assert_eq!(guard.stuck(twice, true, true), Verdict::Restore(44_554));
        // Video flowing again ends it; a later starvation starts from the short wait.
        assert_eq!(guard.stuck(twice, false, true), Verdict::Accept);
        let again = twice + STUCK_AFTER;
        assert_eq!(guard.stuck(again, true, true), Verdict::Restore(44_554));
    }

    #[test]
    fn a_flowing_picture_is_never_stuck() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(300_000, now);
        assert_eq!(
            guard.judge(now, Some(290_000), 280_000, true, bytes),
            Verdict::Accept
        );
        assert_eq!(
            guard.stuck(now + STUCK_AFTER_MAX, false, true),
            Verdict::Accept
        );
    }

    #[test]
    fn nothing_is_judged_while_the_path_is_down_or_settling() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(450_000, now);
        guard.path_down();
        assert_eq!(
            guard.judge(now, Some(584_206), 41_000, true, bytes),
            Verdict::Accept
        );
        assert_eq!(
            guard.stuck(now + STUCK_AFTER_MAX, true, true),
            Verdict::Accept
        );
        guard.path_back(now);
        let settling = now + SETTLE - Duration::from_millis(1);
        assert_eq!(
            guard.judge(settling, Some(584_206), 41_000, true, bytes),
            Verdict::Accept
        );
        let later = now + SETTLE + Duration::from_secs(1);
        for i in 0..=6u64 {
            guard.observe_sent(
                later - Duration::from_millis(3000 - 500 * i),
                bytes + 56_250 * i / 2,
            );
        }
        assert!(matches!(
            guard.judge(later, Some(584_206), 41_000, true, bytes + 56_250 * 3),
            Verdict::Restore(_)
        ));
    }

    #[test]
    fn an_estimate_that_moves_is_not_stuck() {
        let now = Instant::now();
        let (mut guard, bytes) = sending(300_000, now);
        let mut t = now;
        for i in 0..40u64 {
            t = now + Duration::from_millis(500 * i);
            assert_eq!(
                guard.judge(t, Some(280_000), 280_000 + (i % 2) * 5_000, true, bytes),
                Verdict::Accept
            );
            assert_eq!(guard.stuck(t, true, true), Verdict::Accept);
        }
        assert!(t > now + STUCK_AFTER);
    }

    #[test]
    fn nothing_is_judged_without_a_second_of_history() {
        let now = Instant::now();
        let mut guard = EstimateGuard::default();
        guard.observe_sent(now - Duration::from_millis(500), 0);
        assert_eq!(
            guard.judge(now, Some(584_206), 41_000, true, 30_000),
            Verdict::Accept
        );
    }
}
