//! Per-subscriber sequence number and timestamp rewriting.
//!
//! Every subscriber receives each track in its own SSRC, sequence and timestamp space, starting at
//! values of its own. Later the source behind a subscriber's track can change (a simulcast layer
//! switch, a publisher that reconnects with new SSRCs and a new random sequence start); the
//! rewriter then continues the output exactly one sequence number after the last one it sent, and
//! the timestamp by the real time that passed, so the decoder sees one continuous stream.
//!
//! Input sequence numbers are str0m's extended (64-bit, never wrapping) numbers of the current
//! source; output sequence numbers are extended too, so that the SRTP rollover counter follows the
//! 16-bit wrap. Timestamps are 32-bit RTP timestamps and wrap freely.

/// Maps one source at a time into one subscriber's sequence/timestamp space.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// The first output sequence number, used until anything is sent.
    initial_seq: u64,
    /// The first output timestamp, used until anything is sent.
    initial_ts: u32,
    /// The current source: the first input sequence number it may forward, and the offsets.
    source: Option<Source>,
    /// The highest output sequence number sent so far.
    highest_out_seq: Option<u64>,
    /// The output timestamp of the newest packet sent so far.
    last_out_ts: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// Packets below this are not forwarded: from before the switch, or from before a skip
    /// (their numbers were given to later packets).
    first_in_seq: u64,
    /// The highest input sequence number forwarded from this source.
    highest_in_seq: Option<u64>,
    /// `out = in + seq_offset` in wrapping 64-bit arithmetic.
    seq_offset: u64,
    /// `out = in + ts_offset` in wrapping 32-bit arithmetic.
    ts_offset: u32,
}

impl Rewriter {
    /// A rewriter whose first packet will carry `first_seq` and `first_ts`.
    pub fn new(first_seq: u16, first_ts: u32) -> Self {
        Rewriter {
            initial_seq: u64::from(first_seq),
            initial_ts: first_ts,
            source: None,
            highest_out_seq: None,
            last_out_ts: first_ts,
        }
    }

    /// Makes the packet (`in_seq`, `in_ts`) the first of a (new) source. Its output sequence
    /// number follows the last one sent; its output timestamp is the last one sent plus
    /// `elapsed_ticks`, the media time that passed since then, at the track's clock rate.
    pub fn switch_source(&mut self, in_seq: u64, in_ts: u32, elapsed_ticks: u32) {
        let (out_seq, out_ts) = match self.highest_out_seq {
            Some(highest) => (
                highest + 1,
                self.last_out_ts.wrapping_add(elapsed_ticks.max(1)),
            ),
            None => (self.initial_seq, self.initial_ts),
        };
        self.source = Some(Source {
            first_in_seq: in_seq,
            highest_in_seq: None,
            seq_offset: out_seq.wrapping_sub(in_seq),
            ts_offset: out_ts.wrapping_sub(in_ts),
        });
    }

    /// A packet of the current source dropped on purpose (a temporal layer this subscriber does
    /// not get): later packets move down by one so the subscriber sees no gap, which it would
    /// take for loss and NACK. Only a packet newer than all forwarded ones can be closed up;
    /// late packets from before it are then dropped, their numbers being taken.
    pub fn skip(&mut self, in_seq: u64) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if in_seq < source.first_in_seq || source.highest_in_seq.is_some_and(|h| in_seq <= h) {
            return;
        }
        source.seq_offset = source.seq_offset.wrapping_sub(1);
        source.first_in_seq = in_seq + 1;
        source.highest_in_seq = Some(in_seq);
    }

    /// Whether a source has been set.
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// Rewrites one packet of the current source. `None` when there is no source yet or the
    /// packet is from before the switch point: forwarding it would mix two sources in one frame.
    pub fn rewrite(&mut self, in_seq: u64, in_ts: u32) -> Option<(u64, u32)> {
        let source = self.source.as_mut()?;
        if in_seq < source.first_in_seq {
            return None;
        }
        if source.highest_in_seq.is_none_or(|h| in_seq > h) {
            source.highest_in_seq = Some(in_seq);
        }
        let source = *source;
        let out_seq = in_seq.wrapping_add(source.seq_offset);
        let out_ts = in_ts.wrapping_add(source.ts_offset);
        if self.highest_out_seq.is_none_or(|h| out_seq > h) {
            self.highest_out_seq = Some(out_seq);
            self.last_out_ts = out_ts;
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input seq, input ts) → expected (output seq, output ts); None means dropped.
    type Row = ((u64, u32), Option<(u64, u32)>);

    fn run(rw: &mut Rewriter, rows: &[Row]) {
        for (i, (input, expected)) in rows.iter().enumerate() {
            assert_eq!(
                rw.rewrite(input.0, input.1),
                *expected,
                "row {i}: input {input:?}"
            );
        }
    }

    #[test]
    fn starts_at_its_own_numbers() {
        let mut rw = Rewriter::new(1000, 5000);
        assert_eq!(rw.rewrite(7, 100), None, "no source yet");
        rw.switch_source(40_000, 123_456, 0);
        run(
            &mut rw,
            &[
                ((40_000, 123_456), Some((1000, 5000))),
                ((40_001, 123_456), Some((1001, 5000))),
                ((40_002, 126_456), Some((1002, 8000))),
                // Reordered and late packets keep their place.
                ((40_004, 129_456), Some((1004, 11_000))),
                ((40_003, 126_456), Some((1003, 8000))),
                // Older than the start: dropped.
                ((39_999, 120_456), None),
            ],
        );
    }

    #[test]
    fn output_crosses_the_16_bit_wrap_and_keeps_counting() {
        let mut rw = Rewriter::new(65_534, 0);
        rw.switch_source(10, 0, 0);
        run(
            &mut rw,
            &[
                ((10, 0), Some((65_534, 0))),
                ((11, 0), Some((65_535, 0))),
                // The low 16 bits wrap to 0; the extended number carries the rollover to SRTP.
                ((12, 0), Some((65_536, 0))),
                ((13, 0), Some((65_537, 0))),
            ],
        );
        assert_eq!((65_536u64 & 0xffff) as u16, 0);
    }

    #[test]
    fn input_crossing_its_16_bit_wrap_stays_gapless() {
        // str0m hands in extended numbers: 65_535 is followed by 65_536.
        let mut rw = Rewriter::new(100, 0);
        rw.switch_source(65_533, 0, 0);
        run(
            &mut rw,
            &[
                ((65_533, 0), Some((100, 0))),
                ((65_534, 0), Some((101, 0))),
                ((65_535, 0), Some((102, 0))),
                ((65_536, 0), Some((103, 0))),
                ((65_537, 0), Some((104, 0))),
            ],
        );
    }

    #[test]
    fn timestamps_wrap_at_32_bits() {
        let mut rw = Rewriter::new(0, u32::MAX - 1000);
        rw.switch_source(0, 500, 0);
        run(
            &mut rw,
            &[
                ((0, 500), Some((0, u32::MAX - 1000))),
                ((1, 1_000), Some((1, u32::MAX - 500))),
                ((2, 1_501), Some((2, 0))),
                ((3, 3_001), Some((3, 1_500))),
            ],
        );
        // And an input that wraps maps linearly too.
        let mut rw = Rewriter::new(0, 10);
        rw.switch_source(0, u32::MAX - 10, 0);
        run(
            &mut rw,
            &[((0, u32::MAX - 10), Some((0, 10))), ((1, 5), Some((1, 26)))],
        );
    }

    #[test]
    fn a_new_source_continues_the_output_without_a_gap() {
        let mut rw = Rewriter::new(500, 90_000);
        rw.switch_source(1_000, 10_000, 0);
        run(
            &mut rw,
            &[
                ((1_000, 10_000), Some((500, 90_000))),
                ((1_001, 13_000), Some((501, 93_000))),
            ],
        );
        // The publisher reconnects: new random sequence start and timestamp base, 100 ms later.
        rw.switch_source(60_000, 4_000_000_000, 9_000);
        run(
            &mut rw,
            &[
                ((60_000, 4_000_000_000), Some((502, 102_000))),
                ((60_001, 4_000_003_000), Some((503, 105_000))),
                // A straggler of the new source from before its switch point.
                ((59_999, 3_999_997_000), None),
            ],
        );
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let mut rw = Rewriter::new(65_534, 0);
        rw.switch_source(100, 0, 0);
        assert_eq!(rw.rewrite(100, 0), Some((65_534, 0)));
        rw.skip(101);
        rw.skip(102);
        assert_eq!(rw.rewrite(103, 3000), Some((65_535, 3000)));
        rw.skip(104);
        assert_eq!(
            rw.rewrite(105, 6000),
            Some((65_536, 6000)),
            "continues across the wrap"
        );
        // A late packet from before a skip point would reuse a number: dropped.
        assert_eq!(rw.rewrite(104, 3000), None);
        // Skipping an old packet changes nothing.
        rw.skip(90);
        assert_eq!(rw.rewrite(106, 6000), Some((65_537, 6000)));
    }

    #[test]
    fn a_switch_never_repeats_a_sequence_number_after_reordering() {
        let mut rw = Rewriter::new(0, 0);
        rw.switch_source(10, 0, 0);
        run(&mut rw, &[((12, 0), Some((2, 0))), ((11, 0), Some((1, 0)))]);
        rw.switch_source(500, 0, 3000);
        assert_eq!(rw.rewrite(500, 0), Some((3, 3000)));
    }
}
