//! What a subscriber's link has shown it carries, beside what the estimate says it could.
//!
//! GoogCC (str0m's estimator) raises its estimate as soon as a probe cluster crosses the link
//! fast. Many home links pass a burst at full speed before their rate applies: a router or
//! modem shaping with a token bucket (`tc tbf … burst 16kb`), an LTE scheduler, a mobile plan
//! throttled after its cap. A probe of a few packets, and padding for a second or two, cross
//! such a link at any rate. In the virtual-time harness the estimate reached 1–3.7 Mbit/s on a
//! 0.3 Mbit/s line with a 64 kB bucket, the pupil was moved to `h` and sent its 40 kB keyframe,
//! and the queue behind the emptied bucket lost the picture for up to five seconds.
//!
//! Nothing tells a burst from capacity until the bucket is empty. So a larger picture is tried
//! only at a rate the link has *carried*: while a higher layer is wanted, str0m pads up to the
//! round's minimum (the layer the estimate claims, at its peak rate with the upgrade margin),
//! which keeps the link loaded at that rate; a rate counts as proven once it has been sent
//! without a break for at least [`HOLD`] and nothing showed a queue — a round-trip time grown
//! by [`QUEUE_DELAY_MS`] over the link's floor, receiver-reported loss of [`CONGESTION_LOSS`]
//! or more, an estimate below it — from the start of that stretch until [`LAG`] after its end,
//! the time the feedback about its last packets takes to come back.
//!
//! And the stretch must have sent [`HIDDEN_BITS`] (100 kB) more than the rate proven before it:
//! a big step is proven in `HOLD`, a small one takes longer (100 kbit/s: eight seconds), one
//! that would take more than [`MAX_STRETCH`] is not proven. What a bucket can hide is the
//! excess over the *line*, which is unknown: a step only a little above the line can still be
//! proven before the bucket runs dry (seen at 0.5 Mbit/s with a 32 kB bucket in real time); the
//! selector's memory of pictures given up soon (`core::layer`) keeps that from repeating.
//!
//! The proof gates only changes of picture size; a higher frame rate of the same size needs no
//! keyframe and is undone as cheaply, so it follows the estimate as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a rate must be sent without a break to count as carried.
pub const HOLD: Duration = Duration::from_secs(2);
/// How long after a stretch its feedback can still say the link queued it: receiver reports
/// come about once a second, and the estimator needs a few feedback rounds to see a queue grow.
pub const LAG: Duration = Duration::from_secs(1);
/// The lag while nothing is proven yet. Then the rule of [`HIDDEN_BITS`] is measured against
/// zero and cannot rule out a bucket (2 s at 0.6 Mbit/s is 1.2 Mbit "above" nothing, while a
/// 64 kB bucket hides 0.5 Mbit of it on a 0.3 Mbit/s line), so only the feedback can, and the
/// round-trip time shows a queue one sender report and one receiver report later: up to two
/// seconds, each a second apart. With the 1 s lag a real-time pupil behind a 64 kB bucket had
/// 0.6 Mbit/s proven half a second before its round-trip time went from 66 to 464 ms.
pub const FIRST_LAG: Duration = Duration::from_secs(2);
/// A round-trip time this much above the link's floor means a queue is building.
pub const QUEUE_DELAY_MS: u32 = 40;
/// Receiver-reported loss from which the link counts as congested whatever the delay says.
pub const CONGESTION_LOSS: f32 = 0.10;
/// What a stretch must have sent above the rate proven before it.
pub const HIDDEN_BITS: u64 = 800_000;
/// The longest stretch looked at.
pub const MAX_STRETCH: Duration = Duration::from_secs(10);
/// The round-trip floor is the lowest of the current and the previous period of this length:
/// a route that changed raises it within two periods, a queue that lasts a few seconds does not.
const FLOOR_PERIOD: Duration = Duration::from_secs(10);
/// A stretch is rounds back to back: a gap longer than this between two observations breaks it.
const MAX_ROUND_GAP: Duration = Duration::from_millis(1500);

/// One allocation round's view of the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub now: Instant,
    /// Every byte sent towards the subscriber so far (media, resends, padding, RTCP).
    pub bytes_sent: u64,
    /// The latest round-trip time from receiver reports.
    pub rtt_ms: Option<u32>,
    /// The latest loss fraction from receiver reports.
    pub loss: Option<f32>,
    /// The estimator's current estimate.
    pub estimate: u64,
}

/// The lowest round-trip time lately: what the link takes without a queue.
#[derive(Debug, Clone, Default)]
struct RttFloor {
    started: Option<Instant>,
    current: Option<u32>,
    previous: Option<u32>,
}

impl RttFloor {
    fn observe(&mut self, now: Instant, rtt: u32) {
        let started = *self.started.get_or_insert(now);
        if now.saturating_duration_since(started) >= FLOOR_PERIOD {
            self.previous = self.current.take();
            self.started = Some(now);
        }
        self.current = Some(self.current.map_or(rtt, |c| c.min(rtt)));
    }

    fn floor(&self) -> Option<u32> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One round's sending: from `start` to `end` at `bps`.
#[derive(Debug, Clone, Copy)]
struct Sent {
    start: Instant,
    end: Instant,
    bps: u64,
}

/// Per subscriber: the highest rate its link has carried without a sign of a queue.
#[derive(Debug, Clone, Default)]
pub struct CapacityProof {
    last: Option<(Instant, u64)>,
    /// Recent rounds, oldest first; no older than `MAX_STRETCH + FIRST_LAG` plus a round.
    rounds: VecDeque<Sent>,
    floor: RttFloor,
    /// The latest round that showed a queue.
    congested_at: Option<Instant>,
    /// The rate proven so far.
    proven: u64,
}

impl CapacityProof {
    /// Takes one round's observation; returns the rate proven so far (never above the
    /// estimate).
    pub fn observe(&mut self, o: Observation) -> u64 {
        if let Some(rtt) = o.rtt_ms {
            self.floor.observe(o.now, rtt);
        }
        if let Some((at, bytes)) = self.last
            && o.now > at
        {
            let gap = o.now - at;
            if gap > MAX_ROUND_GAP {
                self.rounds.clear();
            } else {
                let bits = o.bytes_sent.saturating_sub(bytes).saturating_mul(8);
                let bps = (u128::from(bits) * 1_000_000 / gap.as_micros().max(1)) as u64;
                self.rounds.push_back(Sent {
                    start: at,
                    end: o.now,
                    bps,
                });
            }
        }
        self.last = Some((o.now, o.bytes_sent));
        let keep = MAX_STRETCH + FIRST_LAG + MAX_ROUND_GAP;
        while self
            .rounds
            .front()
            .is_some_and(|r| o.now.saturating_duration_since(r.end) > keep)
        {
            self.rounds.pop_front();
        }

        if self.queue_seen(&o) {
            self.congested_at = Some(o.now);
            // What the link carries is below what was sent lately; the estimator's view of it is
            // the best there is until a stretch proves more.
            self.proven = self.proven.min(o.estimate);
        } else if let Some(rate) = self.stretch(o.now) {
            self.proven = self.proven.max(rate);
        }
        self.proven = self.proven.min(o.estimate);
        self.proven
    }

    /// The rate proven so far.
    pub fn proven(&self) -> u64 {
        self.proven
    }

    /// Whether the latest observation, or one within `LAG` before it, showed a queue.
    pub fn queued(&self) -> bool {
        match (self.congested_at, self.last) {
            (Some(c), Some((now, _))) => now.saturating_duration_since(c) <= LAG,
            _ => false,
        }
    }

    fn queue_seen(&self, o: &Observation) -> bool {
        let delayed = match (o.rtt_ms, self.floor.floor()) {
            (Some(rtt), Some(floor)) => rtt > floor + QUEUE_DELAY_MS.max(floor / 2),
            _ => false,
        };
        let lossy = o.loss.is_some_and(|l| l >= CONGESTION_LOSS);
        delayed || lossy
    }

    /// The highest mean rate sent through a stretch of at least `HOLD` that ended `LAG` ago
    /// (`FIRST_LAG` while nothing is proven), with nothing showing a queue since it began,
    /// which sent `HIDDEN_BITS` more than the rate proven before.
    fn stretch(&self, now: Instant) -> Option<u64> {
        let lag = if self.proven == 0 { FIRST_LAG } else { LAG };
        let end = now.checked_sub(lag)?;
        let mut best = None;
        let (mut bits, mut lowest) = (0u128, u64::MAX);
        let mut last_start = end;
        for r in self.rounds.iter().rev().filter(|r| r.end <= end) {
            if r.end + Duration::from_millis(50) < last_start
                || self.congested_at.is_some_and(|c| c >= r.start)
            {
                break; // A gap, or a queue seen since this round began.
            }
            let length = end.saturating_duration_since(r.start);
            if length > MAX_STRETCH + Duration::from_millis(50) {
                break;
            }
            last_start = r.start;
            bits += u128::from(r.bps) * r.end.saturating_duration_since(r.start).as_micros();
            lowest = lowest.min(r.bps);
            if length + Duration::from_millis(50) < HOLD {
                continue;
            }
            let mean = (bits / length.as_micros().max(1)) as u64;
            // A round far below the mean is a break (nothing was sent to prove anything).
            let unbroken = lowest >= mean / 2;
            let above =
                u128::from(mean.saturating_sub(self.proven)) * length.as_micros() / 1_000_000;
            if unbroken && above >= u128::from(HIDDEN_BITS) {
                best = best.max(Some(mean));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND: Duration = Duration::from_millis(500);

    /// Feeds rounds of `bps` with `rtt` and `loss` for `rounds` rounds, estimate `estimate`;
    /// returns the proven rate after each.
    struct Run {
        proof: CapacityProof,
        now: Instant,
        bytes: u64,
    }

    impl Run {
        fn new() -> Run {
            Run {
                proof: CapacityProof::default(),
                now: Instant::now(),
                bytes: 0,
            }
        }

        fn rounds(&mut self, n: u32, bps: u64, rtt: u32, loss: f32, estimate: u64) -> Vec<u64> {
            (0..n)
                .map(|_| {
                    self.now += ROUND;
                    self.bytes += bps / 8 / 2;
                    self.proof.observe(Observation {
                        now: self.now,
                        bytes_sent: self.bytes,
                        rtt_ms: Some(rtt),
                        loss: Some(loss),
                        estimate,
                    })
                })
                .collect()
        }
    }

    #[test]
    fn a_rate_sent_for_the_hold_counts_once_its_feedback_is_in() {
        let mut r = Run::new();
        let proven = r.rounds(10, 600_000, 60, 0.0, 2_000_000);
        // The first observation only starts the count; 4 rounds (2 s) of sending, then 2 s:
        // the first proof waits for `FIRST_LAG`.
        assert_eq!(proven[..8], [0; 8]);
        assert!(proven[8..].iter().all(|&p| p == 600_000), "{proven:?}");
        // A later one for `LAG`: 1.5 s more at 1.2 Mbit/s (the stretch's first round was at
        // 0.6), then 1 s.
        let proven = r.rounds(8, 1_200_000, 60, 0.0, 2_000_000);
        assert_eq!(proven[..4], [600_000; 4]);
        // (The last 0.15 Mbit/s would need 5.3 s more, `HIDDEN_BITS`.)
        assert!(proven[4..].iter().all(|&p| p == 1_050_000), "{proven:?}");
    }

    #[test]
    fn a_bucket_that_empties_after_the_first_stretch_is_found_out() {
        // Real time behind a 64 kB bucket at 0.3 Mbit/s: 2 s at 0.6 Mbit/s crossed at once,
        // and the round-trip time showed the queue 1.5 s after the stretch ended.
        let mut r = Run::new();
        r.rounds(5, 600_000, 66, 0.0, 1_500_000);
        r.rounds(3, 600_000, 66, 0.0, 1_500_000);
        let proven = r.rounds(4, 600_000, 464, 0.1, 1_000_000);
        assert_eq!(r.proof.proven(), 0, "{proven:?}");
    }

    #[test]
    fn the_mean_of_the_stretch_counts_and_a_break_proves_nothing() {
        let mut r = Run::new();
        r.rounds(3, 600_000, 60, 0.0, 2_000_000);
        r.rounds(1, 400_000, 60, 0.0, 2_000_000);
        let proven = r.rounds(5, 600_000, 60, 0.0, 2_000_000);
        // The stretch that ended two seconds ago holds the slower round.
        assert_eq!(proven.last(), Some(&550_000), "{proven:?}");
        // 50 kbit/s more would take 16 s to prove: longer than a stretch is looked at.
        let later = r.rounds(30, 600_000, 60, 0.0, 2_000_000);
        assert_eq!(*later.last().unwrap(), 550_000, "{later:?}");
        // A round with next to nothing sent breaks a stretch at a higher rate.
        let mut r = Run::new();
        r.rounds(3, 900_000, 60, 0.0, 2_000_000);
        r.rounds(1, 100_000, 60, 0.0, 2_000_000);
        let proven = r.rounds(3, 900_000, 60, 0.0, 2_000_000);
        assert!(proven.iter().all(|&p| p == 0), "{proven:?}");
    }

    #[test]
    fn a_queue_after_a_fast_start_proves_nothing() {
        // A token bucket: 2 s at 700 kbit/s crossed at once, then the queue shows in the RTT
        // before the stretch's feedback is complete.
        let mut r = Run::new();
        r.rounds(2, 300_000, 60, 0.0, 1_000_000);
        r.rounds(4, 700_000, 60, 0.0, 1_000_000);
        let proven = r.rounds(6, 700_000, 250, 0.0, 1_000_000);
        assert!(proven.iter().all(|&p| p <= 300_000), "{proven:?}");
        // Loss alone does the same.
        let mut r = Run::new();
        r.rounds(2, 300_000, 60, 0.0, 1_000_000);
        r.rounds(4, 700_000, 60, 0.0, 1_000_000);
        let proven = r.rounds(6, 700_000, 60, 0.2, 1_000_000);
        assert!(proven.iter().all(|&p| p <= 300_000), "{proven:?}");
    }

    #[test]
    fn proof_resumes_after_the_queue_drains() {
        let mut r = Run::new();
        r.rounds(4, 400_000, 60, 0.0, 1_000_000);
        r.rounds(2, 400_000, 300, 0.0, 1_000_000);
        // Clean again: a whole new stretch and its lag are needed.
        let proven = r.rounds(10, 400_000, 60, 0.0, 1_000_000);
        let first = proven.iter().position(|&p| p == 400_000);
        assert!(first.is_some_and(|i| i >= 7), "{proven:?}");
    }

    #[test]
    fn never_above_the_estimate() {
        let mut r = Run::new();
        r.rounds(10, 900_000, 60, 0.0, 2_000_000);
        assert_eq!(r.proof.proven(), 900_000);
        let proven = r.rounds(1, 900_000, 60, 0.0, 500_000);
        assert_eq!(proven, [500_000]);
    }

    #[test]
    fn the_floor_follows_a_longer_route() {
        // A route change (an ICE restart over LTE) raises the RTT for good: after two floor
        // periods it is the new floor, and rates are proven again.
        let mut r = Run::new();
        r.rounds(4, 400_000, 30, 0.0, 1_000_000);
        let proven = r.rounds(60, 400_000, 150, 0.0, 1_000_000);
        assert!(proven[..35].iter().all(|&p| p == 0), "{proven:?}");
        assert_eq!(*proven.last().unwrap(), 400_000, "{proven:?}");
    }

    #[test]
    fn a_small_step_takes_longer_to_prove() {
        let mut r = Run::new();
        r.rounds(10, 400_000, 60, 0.0, 2_000_000);
        assert_eq!(r.proof.proven(), 400_000);
        // 100 kbit/s above: 8 s of it, and the second of feedback.
        let proven = r.rounds(20, 500_000, 60, 0.0, 2_000_000);
        let first = proven.iter().position(|&p| p > 400_000);
        assert_eq!(first, Some(17), "{proven:?}");
        assert_eq!(proven[17], 500_000);
        // A bucket that hid it for four seconds is found out in time.
        let mut r = Run::new();
        r.rounds(10, 400_000, 60, 0.0, 2_000_000);
        r.rounds(8, 500_000, 60, 0.0, 2_000_000);
        let proven = r.rounds(6, 500_000, 250, 0.0, 2_000_000);
        assert!(proven.iter().all(|&p| p == 400_000), "{proven:?}");
    }

    #[test]
    fn a_break_in_the_rounds_restarts_the_stretch() {
        let mut r = Run::new();
        r.rounds(3, 500_000, 60, 0.0, 1_000_000);
        r.now += Duration::from_secs(3);
        let proven = r.rounds(5, 500_000, 60, 0.0, 1_000_000);
        assert!(proven.iter().all(|&p| p == 0), "{proven:?}");
    }
}
