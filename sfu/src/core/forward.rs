//! The forwarding decision for one track towards one subscriber.
//!
//! The shard calls [`Forwarder::forward`] for every packet of the track and applies what comes
//! back; the forwarder itself touches no `Rtc` and reads no clock (arrival times come in).
//!
//! When the source changes (a simulcast layer switch, a publisher that reconnects, a track given
//! back after it was withheld) the output timestamp must advance by the time between the two
//! pictures' capture, or the receiver plays the new picture too early or too late (a stutter, a
//! lip-sync error). Arrival time is only a guess of that: a keyframe is large and arrives later
//! than its capture suggests. Like LiveKit and mediasoup, the forwarder uses the publisher's
//! RTCP sender reports where both sources have one: each maps the source's RTP clock to the
//! publisher's NTP wall clock, the same clock for all its encodings, so the capture-time
//! difference of any two packets follows from their RTP timestamps.

use std::time::Instant;

use super::rewrite::Rewriter;

/// What the shard knows about an incoming packet, computed once for all subscribers.
#[derive(Debug, Clone, Copy)]
pub struct IncomingPacket {
    /// The SSRC it came on: a change means a new source (a reconnect, another layer).
    pub ssrc: u32,
    /// str0m's extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The packet starts a keyframe (always false for audio).
    pub keyframe_start: bool,
    pub arrival: Instant,
    /// The latest sender report of this packet's source (its SSRC), if one arrived.
    pub clock: Option<SenderClock>,
}

/// One RTCP sender report: the publisher's wall clock at one RTP timestamp of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// The RTP timestamp of the report.
    pub rtp: u32,
    /// The NTP time of the report, in microseconds (any fixed epoch: only differences count).
    pub ntp_micros: u64,
}

impl SenderClock {
    /// The capture time of a packet with RTP timestamp `ts`, in microseconds on the NTP clock.
    /// Packets within half the 32-bit range of the report (over 6 hours at 90 kHz) are placed
    /// before or after it correctly.
    fn capture_micros(self, ts: u32, clock_rate: u32) -> i128 {
        let ticks = i128::from(ts.wrapping_sub(self.rtp) as i32);
        i128::from(self.ntp_micros) + ticks * 1_000_000 / i128::from(clock_rate.max(1))
    }
}

/// A switch aligned by sender reports is trusted only while it agrees with arrival time to
/// within this: two reports from unrelated clocks (a publisher that reconnected from another
/// machine) would otherwise move the timeline by anything.
pub const SENDER_CLOCK_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the forwarder remembers of the last packet it sent, to continue the timeline from it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    arrival: Instant,
    timestamp: u32,
    clock: Option<SenderClock>,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Video of a source this subscriber has not started on yet: it needs a keyframe first.
    WaitingForKeyframe,
    /// A late packet from before the point the subscriber started at.
    BeforeStart,
}

/// The decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    Send {
        seq: u64,
        timestamp: u32,
        marker: bool,
    },
    Drop(DropReason),
}

/// One subscriber's view of one track.
#[derive(Debug, Clone)]
pub struct Forwarder {
    video: bool,
    clock_rate: u32,
    rewriter: Rewriter,
    /// The SSRC currently forwarded.
    source: Option<u32>,
    /// A packet of another source was seen; video waits for its keyframe.
    waiting_for_keyframe: bool,
    last_sent: Option<Sent>,
}

impl Forwarder {
    /// `first_seq`/`first_ts` are this subscriber's own starting values (random in production).
    pub fn new(video: bool, clock_rate: u32, first_seq: u16, first_ts: u32) -> Self {
        Forwarder {
            video,
            clock_rate,
            rewriter: Rewriter::new(first_seq, first_ts),
            source: None,
            waiting_for_keyframe: video,
            last_sent: None,
        }
    }

    /// The subscriber waits for a keyframe the publisher should be asked for.
    pub fn wants_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// A packet of the current source deliberately not sent (a temporal layer above this
    /// subscriber's): close the sequence gap.
    pub fn skip(&mut self, p: &IncomingPacket) {
        if self.source == Some(p.ssrc) {
            self.rewriter.skip(p.seq);
        }
    }

    /// The subscriber gets this track again after a time it was withheld (`core::audience`):
    /// the next packet starts it as a new source would, so the output continues one sequence
    /// number after the last sent with the timestamp advanced by the real time that passed, and
    /// video waits for a keyframe. Packets of the withheld time never take sequence numbers.
    pub fn resume(&mut self) {
        self.source = None;
        self.waiting_for_keyframe = self.video;
    }

    /// The SSRC forwarded now.
    pub fn source(&self) -> Option<u32> {
        self.source
    }

    pub fn forward(&mut self, p: &IncomingPacket) -> Forward {
        if self.source != Some(p.ssrc) {
            if self.video && !p.keyframe_start {
                self.waiting_for_keyframe = true;
                return Forward::Drop(DropReason::WaitingForKeyframe);
            }
            let ticks = self.last_sent.map_or(0, |last| self.elapsed_ticks(last, p));
            self.rewriter.switch_source(p.seq, p.timestamp, ticks);
            self.source = Some(p.ssrc);
            self.waiting_for_keyframe = false;
        }
        match self.rewriter.rewrite(p.seq, p.timestamp) {
            Some((seq, timestamp)) => {
                self.last_sent = Some(Sent {
                    arrival: p.arrival,
                    timestamp: p.timestamp,
                    clock: p.clock,
                });
                Forward::Send {
                    seq,
                    timestamp,
                    marker: p.marker,
                }
            }
            None => Forward::Drop(DropReason::BeforeStart),
        }
    }
}

impl Forwarder {
    /// The media time between the last packet sent and `p`, the first of a new source, in
    /// ticks of the track's clock: by capture time when both have a sender report that agrees
    /// with arrival time, else by arrival time.
    fn elapsed_ticks(&self, last: Sent, p: &IncomingPacket) -> u32 {
        let rate = i128::from(self.clock_rate);
        let by_arrival = p
            .arrival
            .saturating_duration_since(last.arrival)
            .as_micros() as i128;
        let by_capture = match (last.clock, p.clock) {
            (Some(a), Some(b)) => Some(
                b.capture_micros(p.timestamp, self.clock_rate)
                    - a.capture_micros(last.timestamp, self.clock_rate),
            ),
            _ => None,
        };
        let tolerance = SENDER_CLOCK_TOLERANCE.as_micros() as i128;
        let micros = by_capture
            .filter(|c| (c - by_arrival).abs() <= tolerance)
            .unwrap_or(by_arrival)
            .max(0);
        (micros * rate / 1_000_000).min(i128::from(u32::MAX / 2)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn pkt(
        ssrc: u32,
        seq: u64,
        timestamp: u32,
        keyframe_start: bool,
        arrival: Instant,
    ) -> IncomingPacket {
        IncomingPacket {
            ssrc,
            seq,
            timestamp,
            marker: false,
            keyframe_start,
            arrival,
            clock: None,
        }
    }

    fn send(seq: u64, timestamp: u32) -> Forward {
        Forward::Send {
            seq,
            timestamp,
            marker: false,
        }
    }

    #[test]
    fn video_starts_at_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000, 10, 1000);
        assert!(f.wants_keyframe());
        let rows = [
            (
                pkt(1, 5, 0, false, t0),
                Forward::Drop(DropReason::WaitingForKeyframe),
            ),
            (
                pkt(1, 6, 0, false, t0),
                Forward::Drop(DropReason::WaitingForKeyframe),
            ),
            (pkt(1, 7, 3000, true, t0), send(10, 1000)),
            (pkt(1, 8, 3000, false, t0), send(11, 1000)),
            (
                pkt(1, 6, 0, false, t0),
                Forward::Drop(DropReason::BeforeStart),
            ),
        ];
        for (i, (p, want)) in rows.iter().enumerate() {
            assert_eq!(f.forward(p), *want, "row {i}");
        }
        assert!(!f.wants_keyframe());
    }

    #[test]
    fn audio_starts_at_once() {
        let mut f = Forwarder::new(false, 48_000, 0, 0);
        assert!(!f.wants_keyframe());
        assert_eq!(
            f.forward(&pkt(9, 100, 960, false, Instant::now())),
            send(0, 0)
        );
    }

    #[test]
    fn a_new_ssrc_waits_for_its_keyframe_and_continues_the_stream() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000, 100, 0);
        assert_eq!(f.forward(&pkt(1, 50, 9000, true, at(t0, 0))), send(100, 0));
        assert_eq!(
            f.forward(&pkt(1, 51, 12_000, false, at(t0, 33))),
            send(101, 3000)
        );
        // The publisher reconnects: new SSRC, new sequence and timestamp bases.
        assert_eq!(
            f.forward(&pkt(2, 7000, 555, false, at(t0, 500))),
            Forward::Drop(DropReason::WaitingForKeyframe)
        );
        assert!(f.wants_keyframe());
        // Its keyframe arrives 1 s after the last packet sent: 90 000 ticks later.
        assert_eq!(
            f.forward(&pkt(2, 7001, 600, true, at(t0, 1033))),
            send(102, 93_000)
        );
        assert_eq!(
            f.forward(&pkt(2, 7002, 3600, false, at(t0, 1066))),
            send(103, 96_000)
        );
        assert!(!f.wants_keyframe());
        // A straggler of the old source is a source change without a keyframe: dropped.
        assert_eq!(
            f.forward(&pkt(1, 52, 15_000, false, at(t0, 1070))),
            Forward::Drop(DropReason::WaitingForKeyframe)
        );
    }

    #[test]
    fn audio_resumes_after_a_withheld_time_without_a_gap() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(false, 48_000, 500, 10_000);
        assert_eq!(
            f.forward(&pkt(1, 10, 0, false, at(t0, 0))),
            send(500, 10_000)
        );
        assert_eq!(
            f.forward(&pkt(1, 11, 960, false, at(t0, 20))),
            send(501, 10_960)
        );
        // Withheld for 2 s: packets 12..=111 are never given to the forwarder.
        f.resume();
        assert_eq!(
            f.forward(&pkt(1, 112, 97_920, false, at(t0, 2020))),
            send(502, 10_960 + 96_000)
        );
        assert_eq!(
            f.forward(&pkt(1, 113, 98_880, false, at(t0, 2040))),
            send(503, 10_960 + 96_960)
        );
        // A late packet from the withheld time is not slipped in.
        assert_eq!(
            f.forward(&pkt(1, 111, 96_960, false, at(t0, 2041))),
            Forward::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn video_resumes_at_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000, 0, 0);
        assert_eq!(f.forward(&pkt(1, 1, 0, true, at(t0, 0))), send(0, 0));
        assert_eq!(
            f.forward(&pkt(1, 2, 3000, false, at(t0, 33))),
            send(1, 3000)
        );
        f.resume();
        assert!(f.wants_keyframe());
        assert_eq!(
            f.forward(&pkt(1, 30, 90_000, false, at(t0, 1000))),
            Forward::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(
            f.forward(&pkt(1, 31, 93_000, true, at(t0, 1033))),
            send(2, 3000 + 90_000)
        );
        assert!(!f.wants_keyframe());
    }

    #[test]
    fn audio_switches_source_at_once() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(false, 48_000, 0, 0);
        assert_eq!(f.forward(&pkt(1, 10, 0, false, at(t0, 0))), send(0, 0));
        assert_eq!(f.forward(&pkt(2, 900, 77, false, at(t0, 20))), send(1, 960));
    }
}
