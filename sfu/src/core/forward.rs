//! The forwarding decision for one track towards one subscriber.
//!
//! The shard calls [`Forwarder::forward`] for every packet of the track and applies what comes
//! back; the forwarder itself touches no `Rtc`.

use super::rewrite::Rewriter;

/// What the shard knows about an incoming packet, computed once for all subscribers.
#[derive(Debug, Clone, Copy)]
pub struct IncomingPacket {
    /// str0m's extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The packet starts a keyframe (always false for audio).
    pub keyframe_start: bool,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Video that started before the subscriber got its first keyframe.
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
    rewriter: Rewriter,
}

impl Forwarder {
    /// `first_seq`/`first_ts` are this subscriber's own starting values (random in production).
    pub fn new(video: bool, first_seq: u16, first_ts: u32) -> Self {
        Forwarder {
            video,
            rewriter: Rewriter::new(first_seq, first_ts),
        }
    }

    /// Video that has not started yet needs a keyframe from the publisher.
    pub fn wants_keyframe(&self) -> bool {
        self.video && !self.rewriter.has_source()
    }

    pub fn forward(&mut self, p: &IncomingPacket) -> Forward {
        if !self.rewriter.has_source() {
            if self.video && !p.keyframe_start {
                return Forward::Drop(DropReason::WaitingForKeyframe);
            }
            self.rewriter.switch_source(p.seq, p.timestamp, 0);
        }
        match self.rewriter.rewrite(p.seq, p.timestamp) {
            Some((seq, timestamp)) => Forward::Send {
                seq,
                timestamp,
                marker: p.marker,
            },
            None => Forward::Drop(DropReason::BeforeStart),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u64, timestamp: u32, keyframe_start: bool) -> IncomingPacket {
        IncomingPacket {
            seq,
            timestamp,
            marker: false,
            keyframe_start,
        }
    }

    #[test]
    fn video_starts_at_a_keyframe() {
        let mut f = Forwarder::new(true, 10, 1000);
        assert!(f.wants_keyframe());
        let rows = [
            (
                pkt(5, 0, false),
                Forward::Drop(DropReason::WaitingForKeyframe),
            ),
            (
                pkt(6, 0, false),
                Forward::Drop(DropReason::WaitingForKeyframe),
            ),
            (
                pkt(7, 3000, true),
                Forward::Send {
                    seq: 10,
                    timestamp: 1000,
                    marker: false,
                },
            ),
            (
                pkt(8, 3000, false),
                Forward::Send {
                    seq: 11,
                    timestamp: 1000,
                    marker: false,
                },
            ),
            (pkt(6, 0, false), Forward::Drop(DropReason::BeforeStart)),
        ];
        for (i, (p, want)) in rows.iter().enumerate() {
            assert_eq!(f.forward(p), *want, "row {i}");
        }
        assert!(!f.wants_keyframe());
    }

    #[test]
    fn audio_starts_at_once() {
        let mut f = Forwarder::new(false, 0, 0);
        assert!(!f.wants_keyframe());
        assert_eq!(
            f.forward(&pkt(100, 960, false)),
            Forward::Send {
                seq: 0,
                timestamp: 0,
                marker: false
            }
        );
    }
}
