//! Table tests of the down track: every drop reason, every switch kind, wraparound, and the
//! timestamp alignment by sender reports. Packets are real VP8 payloads parsed as the shard
//! parses them; the layer selector is driven through its public `update`, as the allocation
//! round drives it.

use std::time::{Duration, Instant};

use super::*;
use crate::core::layer::{KeyframeSizes, Layer, LayerBitrates, SelectorInput};

const PT: Pt = Pt::new_with_value(96);

/// Cumulative rates of three spatial layers × three temporal layers.
const RATES: LayerBitrates = LayerBitrates([
    [100_000, 150_000, 200_000],
    [300_000, 450_000, 600_000],
    [1_000_000, 1_500_000, 2_000_000],
]);

/// One packet as a publisher sends it.
#[derive(Debug, Clone, Copy)]
struct P {
    ssrc: u32,
    spatial: u8,
    seq: u64,
    ts: u32,
    pid: u16,
    tl0: u8,
    tid: u8,
    /// Y: a temporal switch point although TID > 0.
    sync: bool,
    key: bool,
    /// S = 1, PID = 0: the first packet of a frame.
    start: bool,
    ms: u64,
}

/// A packet of layer `spatial` (SSRC 100 + spatial), frame start, base layer.
fn p(spatial: u8, seq: u64, ts: u32, ms: u64) -> P {
    P {
        ssrc: 100 + u32::from(spatial),
        spatial,
        seq,
        ts,
        pid: seq as u16 & 0x7fff,
        tl0: seq as u8,
        tid: 0,
        sync: false,
        key: false,
        start: true,
        ms,
    }
}

impl P {
    fn key(self) -> P {
        P { key: true, ..self }
    }
    fn tid(self, tid: u8) -> P {
        P { tid, ..self }
    }
    fn sync(self) -> P {
        P { sync: true, ..self }
    }
    fn cont(self) -> P {
        P {
            start: false,
            ..self
        }
    }
    fn pid(self, pid: u16) -> P {
        P { pid, ..self }
    }
    fn ssrc(self, ssrc: u32) -> P {
        P { ssrc, ..self }
    }
}

/// The VP8 payload: descriptor with 15-bit PictureID, TL0PICIDX, TID/Y, then the payload header.
fn payload(p: &P) -> [u8; 8] {
    [
        0x80 | if p.start { 0x10 } else { 0 },
        0xe0,
        0x80 | (p.pid >> 8) as u8,
        p.pid as u8,
        p.tl0,
        (p.tid << 6) | if p.sync { 0x20 } else { 0 },
        if p.key { 0x00 } else { 0x01 },
        0,
    ]
}

fn info(t0: Instant, p: P) -> PacketInfo {
    let vp8 = Vp8Payload::parse(&payload(&p)).ok();
    let (temporal, switch_point) = PacketInfo::temporal_of(vp8.as_ref().map(|v| &v.header));
    PacketInfo {
        ssrc: p.ssrc,
        spatial: p.spatial,
        temporal,
        keyframe_start: vp8.is_some_and(|v| v.header.keyframe),
        switch_point,
        seq: p.seq,
        timestamp: p.ts,
        marker: false,
        arrival: t0 + Duration::from_millis(p.ms),
        codec: Codec::Vp8,
        vp8,
        clock: None,
    }
}

/// What a row expects: sent with (seq, ts), or dropped for a reason; and a keyframe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Sent(u64, u32),
    Dropped(DropReason),
}
use DropReason::*;
use Out::{Dropped, Sent};

fn out(a: &Answer) -> Out {
    match a.verdict {
        Verdict::Send(s) => Sent(s.seq, s.timestamp),
        Verdict::Drop(r) => Dropped(r),
    }
}

enum Step {
    /// The allocation round gives the track this budget at this time (ms).
    Budget(u64, u64),
    /// A packet, what becomes of it, and the keyframe request it causes.
    Pkt(P, Out, Option<u8>),
    Audience(Audience, Change),
    /// The subscriber's path goes down (`false`) or comes back.
    Reachable(bool, Change),
}
use Step::{Budget, Pkt};

fn budget(dt: &mut DownTrack, t0: Instant, ms: u64, budget: u64) {
    let input = SelectorInput {
        now: t0 + Duration::from_millis(ms),
        budget,
        upgrade_budget: budget,
        available: RATES,
        peaks: RATES,
        keyframes: KeyframeSizes::default(),
        cap: Layer::MAX,
    };
    if let Some(s) = dt.selector_mut() {
        s.update(&input);
    }
}

fn run(dt: &mut DownTrack, steps: &[Step]) {
    let t0 = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Budget(ms, bps) => budget(dt, t0, *ms, *bps),
            Pkt(p, want, keyframe) => {
                let a = dt.on_packet(&info(t0, *p), true, |_| Negotiated::Pt(PT));
                assert_eq!(
                    (out(&a), a.wants_keyframe),
                    (*want, *keyframe),
                    "row {i}: {p:?}"
                );
                assert_eq!(a.report_unplayable, None, "row {i}");
            }
            Step::Audience(audience, change) => {
                assert_eq!(dt.set_audience(*audience), *change, "row {i}");
            }
            Step::Reachable(reachable, change) => {
                assert_eq!(dt.set_reachable(*reachable), *change, "row {i}");
            }
        }
    }
}

fn video() -> DownTrack {
    DownTrack::new(true, false, Audience::Everyone, 1000, 50_000)
}

#[test]
fn starts_on_the_target_layer_at_its_keyframe() {
    run(
        &mut video(),
        &[
            // No layer chosen yet: nothing to forward, nothing to ask for.
            Pkt(p(1, 10, 9000, 0).key(), Dropped(NoLayer), None),
            // 650 kb/s fits h at full frame rate (600k): the target, awaiting its keyframe.
            Budget(0, 650_000),
            Pkt(p(0, 20, 3000, 1), Dropped(OtherSpatialLayer), Some(1)),
            Pkt(p(2, 30, 7000, 1).key(), Dropped(OtherSpatialLayer), Some(1)),
            Pkt(p(1, 11, 12_000, 2), Dropped(WaitingForKeyframe), Some(1)),
            Pkt(p(1, 12, 15_000, 35).key(), Sent(1000, 50_000), None),
            Pkt(p(1, 13, 15_000, 36).cont(), Sent(1001, 50_000), None),
            // A late packet from before the start.
            Pkt(p(1, 11, 12_000, 37), Dropped(BeforeStart), None),
            Pkt(p(1, 14, 18_000, 68).tid(2), Sent(1002, 53_000), None),
            // The other layers stay out, and nobody asks for their keyframes.
            Pkt(p(0, 21, 6000, 69).key(), Dropped(OtherSpatialLayer), None),
        ],
    );
}

#[test]
fn temporal_layers_go_up_at_a_switch_point_and_down_at_once() {
    run(
        &mut video(),
        &[
            // 500 kb/s: h at two of three frame rates (450k).
            Budget(0, 500_000),
            Pkt(p(1, 10, 0, 0).key(), Sent(1000, 50_000), None),
            Pkt(
                p(1, 11, 3000, 33).tid(2),
                Dropped(TemporalAboveTarget),
                None,
            ),
            // The skipped packet leaves no sequence gap.
            Pkt(p(1, 12, 6000, 66).tid(1), Sent(1001, 56_000), None),
            Pkt(
                p(1, 13, 9000, 99).tid(2),
                Dropped(TemporalAboveTarget),
                None,
            ),
            // 700 kb/s for the temporal hold (1 s): the full frame rate is the target.
            Budget(100, 700_000),
            Budget(1100, 700_000),
            // Not at a switch point: TID 2 without Y, the frame it refers to was not sent.
            Pkt(
                p(1, 14, 12_000, 1101).tid(2),
                Dropped(TemporalAboveTarget),
                None,
            ),
            // Nor the continuation of a frame.
            Pkt(
                p(1, 15, 12_000, 1102).tid(2).sync().cont(),
                Dropped(TemporalAboveTarget),
                None,
            ),
            // A TID 2 frame with Y set is a switch point: up here.
            Pkt(
                p(1, 16, 15_000, 1133).tid(2).sync(),
                Sent(1002, 65_000),
                None,
            ),
            Pkt(p(1, 17, 18_000, 1166).tid(1), Sent(1003, 68_000), None),
            Pkt(p(1, 18, 21_000, 1199).tid(2), Sent(1004, 71_000), None),
            // 460 kb/s: down to two frame rates at once, mid-frame.
            Budget(1200, 460_000),
            Pkt(
                p(1, 19, 21_000, 1200).tid(2).cont(),
                Dropped(TemporalAboveTarget),
                None,
            ),
            Pkt(p(1, 20, 24_000, 1233), Sent(1005, 74_000), None),
        ],
    );
}

#[test]
fn spatial_layers_switch_at_the_new_layers_keyframe() {
    run(
        &mut video(),
        &[
            Budget(0, 650_000),
            Pkt(p(1, 10, 0, 0).key(), Sent(1000, 50_000), None),
            // 2.5 Mb/s for the upgrade hold (2 s): f is the target; h goes on until f's keyframe.
            Budget(100, 2_500_000),
            Budget(2100, 2_500_000),
            Pkt(
                p(2, 500, 777_000, 2101),
                Dropped(WaitingForKeyframe),
                Some(2),
            ),
            Pkt(p(1, 11, 3000, 2102), Sent(1001, 53_000), None),
            Pkt(p(0, 40, 123, 2103), Dropped(OtherSpatialLayer), Some(2)),
            // f's keyframe, 1 s after the last packet sent: by arrival, 90 000 ticks later.
            Pkt(p(2, 501, 780_000, 3102).key(), Sent(1002, 143_000), None),
            Pkt(p(2, 502, 783_000, 3135), Sent(1003, 146_000), None),
            // h is no longer forwarded, and no keyframe is wanted any more.
            Pkt(p(1, 12, 6000, 3136).key(), Dropped(OtherSpatialLayer), None),
            // 250 kb/s: down to q at once, waiting for q's keyframe; f goes on meanwhile at its
            // base layer only (it has to keep the picture alive).
            Budget(3200, 250_000),
            Pkt(
                p(2, 503, 786_000, 3201).tid(1),
                Dropped(TemporalAboveTarget),
                None,
            ),
            Pkt(p(2, 504, 789_000, 3202), Sent(1004, 152_000), None),
            Pkt(p(0, 41, 3123, 3203), Dropped(WaitingForKeyframe), Some(0)),
            Pkt(p(0, 42, 6123, 3235).key(), Sent(1005, 152_000 + 2970), None),
            Pkt(p(2, 505, 792_000, 3236), Dropped(OtherSpatialLayer), None),
        ],
    );
}

#[test]
fn pauses_when_nothing_fits_and_resumes_at_a_keyframe() {
    run(
        &mut video(),
        &[
            Budget(0, 250_000),
            Pkt(p(0, 10, 0, 0).key(), Sent(1000, 50_000), None),
            // 50 kb/s: not even q fits. The selector holds on to q for 4 s before pausing.
            Budget(100, 50_000),
            Pkt(p(0, 11, 3000, 101), Sent(1001, 53_000), None),
            Budget(4100, 50_000),
            Pkt(p(0, 12, 6000, 4101), Dropped(Paused), None),
            Pkt(p(0, 13, 9000, 4102).key(), Dropped(Paused), None),
            // Back to 250 kb/s for the hold: q again, from its next keyframe.
            Budget(4200, 250_000),
            Budget(6200, 250_000),
            Pkt(p(0, 14, 12_000, 6201), Dropped(WaitingForKeyframe), Some(0)),
            // The timeline continues by the time that passed (6.1 s at 90 kHz).
            Pkt(
                p(0, 15, 15_000, 6202).key(),
                Sent(1002, 53_000 + 549_090),
                None,
            ),
        ],
    );
}

#[test]
fn withheld_video_resumes_at_a_keyframe_without_a_gap() {
    run(
        &mut video(),
        &[
            Budget(0, 250_000),
            Pkt(p(0, 10, 0, 0).key(), Sent(1000, 50_000), None),
            Step::Audience(Audience::Teachers, Change::Withhold),
            Pkt(p(0, 11, 3000, 33).key(), Dropped(Withheld), None),
            Step::Audience(Audience::Nobody, Change::Same),
            Step::Audience(Audience::Everyone, Change::ResumeVideoAtKeyframe),
            // The forwarder restarts: it wants a keyframe of the layer it is on.
            Pkt(p(0, 12, 6000, 66), Dropped(WaitingForKeyframe), Some(0)),
            Pkt(
                p(0, 13, 9000, 1000).key(),
                Sent(1001, 50_000 + 90_000),
                None,
            ),
        ],
    );
}

#[test]
fn nothing_goes_to_a_path_that_is_down_and_video_comes_back_at_a_keyframe() {
    run(
        &mut video(),
        &[
            Budget(0, 250_000),
            Pkt(p(0, 10, 0, 0).key(), Sent(1000, 50_000), None),
            Step::Reachable(false, Change::Withhold),
            Pkt(p(0, 11, 3000, 33), Dropped(PathDown), None),
            Pkt(p(0, 12, 6000, 66).key(), Dropped(PathDown), None),
            Step::Reachable(true, Change::ResumeVideoAtKeyframe),
            Pkt(p(0, 13, 9000, 100), Dropped(WaitingForKeyframe), Some(0)),
            // No sequence number was spent while the path was down.
            Pkt(
                p(0, 14, 12_000, 2000).key(),
                Sent(1001, 50_000 + 180_000),
                None,
            ),
            // A track withheld while the path was down stays withheld when it comes back.
            Step::Reachable(false, Change::Withhold),
            Step::Audience(Audience::Nobody, Change::Same),
            Step::Reachable(true, Change::Same),
            Pkt(p(0, 15, 15_000, 2100).key(), Dropped(Withheld), None),
        ],
    );
}

#[test]
fn withheld_audio_resumes_at_once() {
    let t0 = Instant::now();
    let mut dt = DownTrack::new(false, true, Audience::Teachers, 7, 0);
    let audio = |seq: u64, ms: u64| PacketInfo {
        codec: Codec::Opus,
        vp8: None,
        temporal: 0,
        switch_point: true,
        keyframe_start: false,
        ..info(t0, p(0, seq, (seq * 960) as u32, ms))
    };
    let pt = |_: Codec| Negotiated::Pt(Pt::new_with_value(111));
    let rows: &[(u64, u64, Option<Audience>, Out)] = &[
        (1, 0, None, Sent(7, 0)),
        (2, 20, Some(Audience::Nobody), Dropped(Withheld)),
        (3, 40, None, Dropped(Withheld)),
        // Given back 1 s after the last packet sent: 48 000 ticks on.
        (4, 1000, Some(Audience::Everyone), Sent(8, 48_000)),
        (5, 1020, None, Sent(9, 48_960)),
    ];
    for (i, (seq, ms, audience, want)) in rows.iter().enumerate() {
        if let Some(a) = audience {
            dt.set_audience(*a);
        }
        let a = dt.on_packet(&audio(*seq, *ms), true, pt);
        assert_eq!((out(&a), a.wants_keyframe), (*want, None), "row {i}");
    }
    assert!(
        DownTrack::new(false, false, Audience::Teachers, 0, 0)
            .on_packet(&audio(1, 0), true, pt)
            .verdict
            == Verdict::Drop(Withheld)
    );
    assert_eq!(
        out(&dt.on_packet(&audio(6, 1040), false, pt)),
        Dropped(NotConnected)
    );
}

#[test]
fn a_codec_the_subscriber_refused_is_reported_once_and_rechecked_after_an_answer() {
    let t0 = Instant::now();
    let mut dt = video();
    budget(&mut dt, t0, 0, 250_000);
    let key = |seq| info(t0, p(0, seq, 0, seq).key());
    let never = |_: Codec| -> Negotiated { panic!("looked up although nothing changed") };
    let rows: &[(&str, Negotiated, Out, Option<Codec>)] = &[
        (
            "offer unanswered",
            Negotiated::NotAnswered,
            Dropped(NotNegotiatedYet),
            None,
        ),
        (
            "refused",
            Negotiated::Refused,
            Dropped(CodecUnsupported),
            Some(Codec::Vp8),
        ),
        (
            "still refused",
            Negotiated::Refused,
            Dropped(CodecUnsupported),
            None,
        ),
    ];
    for (i, (what, answer, want, report)) in rows.iter().enumerate() {
        dt.renegotiated();
        let a = dt.on_packet(&key(i as u64), true, |c| {
            assert_eq!(c, Codec::Vp8);
            *answer
        });
        assert_eq!((out(&a), a.report_unplayable), (*want, *report), "{what}");
    }
    // Without a new answer it is not looked up again, nor reported again.
    let a = dt.on_packet(&key(10), true, never);
    assert_eq!(
        (out(&a), a.report_unplayable),
        (Dropped(CodecUnsupported), None)
    );
    // The subscriber renegotiates and accepts VP8: it starts at the next keyframe.
    dt.renegotiated();
    let a = dt.on_packet(&key(11), true, |_| Negotiated::Pt(PT));
    assert_eq!(out(&a), Sent(1000, 50_000));
    assert!(matches!(a.verdict, Verdict::Send(Outgoing { pt: PT, .. })));
    assert_eq!(dt.unplayable(), None);
    // The payload type is remembered.
    assert_eq!(
        out(&dt.on_packet(&key(12), true, never)),
        Sent(1001, 50_000)
    );
}

#[test]
fn a_reconnected_publisher_is_followed_at_its_keyframe() {
    run(
        &mut video(),
        &[
            Budget(0, 250_000),
            Pkt(p(0, 10, 0, 0).key(), Sent(1000, 50_000), None),
            // Same layer, new SSRC and bases: the forwarder waits for its keyframe.
            Pkt(
                p(0, 9000, 4_000_000, 500).ssrc(7),
                Dropped(WaitingForKeyframe),
                Some(0),
            ),
            Pkt(
                p(0, 9001, 4_003_000, 1000).ssrc(7).key(),
                Sent(1001, 140_000),
                None,
            ),
        ],
    );
}

#[test]
fn a_packet_of_a_picture_dropped_earlier_is_not_sent() {
    run(
        &mut video(),
        &[
            Budget(0, 500_000),
            Pkt(p(1, 10, 0, 0).key().pid(100), Sent(1000, 50_000), None),
            // Picture 101 (TID 2) is dropped at its first packet.
            Pkt(
                p(1, 11, 3000, 33).tid(2).pid(101),
                Dropped(TemporalAboveTarget),
                None,
            ),
            // The full frame rate fits; picture 102, a base frame, raises the temporal layer.
            Budget(100, 700_000),
            Budget(1100, 700_000),
            Pkt(p(1, 13, 6000, 1101).pid(102), Sent(1002, 56_000), None),
            // Picture 101's second packet arrives late (its number is free): its picture was
            // dropped, so it is not sent either.
            Pkt(
                p(1, 12, 3000, 1102).tid(2).pid(101).cont(),
                Dropped(DroppedPicture),
                None,
            ),
        ],
    );
}

/// 16-bit sequence numbers and 32-bit timestamps wrap on the way out, across a layer switch.
#[test]
fn sequence_and_timestamp_wrap_across_a_switch() {
    let mut dt = DownTrack::new(true, false, Audience::Everyone, 65_534, u32::MAX - 2999);
    run(
        &mut dt,
        &[
            Budget(0, 650_000),
            Pkt(p(1, 10, 0, 0).key(), Sent(65_534, u32::MAX - 2999), None),
            Pkt(p(1, 11, 3000, 33), Sent(65_535, 0), None),
            Budget(100, 2_500_000),
            Budget(2100, 2_500_000),
            // Input near its own wrap too; 65 536 goes out as 0 in 16 bits.
            Pkt(
                p(2, 65_535, u32::MAX, 2101).key(),
                Sent(65_536, 2068 * 90),
                None,
            ),
            Pkt(
                p(2, 65_536, 2999, 2134),
                Sent(65_537, 2068 * 90 + 3000),
                None,
            ),
        ],
    );
}

/// A layer switch moves the timestamp by the capture-time difference the publisher's sender
/// reports give, not by when the keyframe happened to arrive.
#[test]
fn a_switch_is_aligned_by_sender_reports() {
    let t0 = Instant::now();
    // Both layers' reports at NTP 1 000 s; their RTP clocks have unrelated bases.
    let clock = |spatial: u8| SenderClock {
        rtp: if spatial == 1 {
            1_000_000
        } else {
            4_000_000_000
        },
        ntp_micros: 1_000_000_000,
    };
    // (h's last frame captured at, f's keyframe captured at (ms after the reports), f's keyframe
    // arrives (ms after h's), reports present for f?) → the output timestamp jump.
    let rows: &[(&str, u32, u32, u64, bool, u32)] = &[
        ("one frame later, keyframe late", 0, 33, 90, true, 33 * 90),
        ("same capture as the last frame", 500, 500, 120, true, 1),
        ("two frames later", 10, 77, 40, true, 67 * 90),
        ("captured before the last frame sent", 40, 7, 90, true, 1),
        (
            "no report for the new layer: arrival",
            0,
            33,
            90,
            false,
            90 * 90,
        ),
        // Reports from clocks 5 s apart disagree with arrival by more than the tolerance.
        ("reports off by 5 s: arrival", 0, 5033, 90, true, 90 * 90),
    ];
    for (what, h_ms, f_ms, arrives, f_report, jump) in rows.iter().copied() {
        let mut dt = video();
        budget(&mut dt, t0, 0, 650_000);
        let h_ts = clock(1).rtp.wrapping_add(h_ms * 90);
        let mut h = info(t0, p(1, 10, h_ts, 1000).key());
        h.clock = Some(clock(1));
        let Verdict::Send(first) = dt.on_packet(&h, true, |_| Negotiated::Pt(PT)).verdict else {
            panic!("{what}: h's keyframe not sent");
        };
        budget(&mut dt, t0, 100, 2_500_000);
        budget(&mut dt, t0, 2100, 2_500_000);
        let f_ts = clock(2).rtp.wrapping_add(f_ms * 90);
        let mut f = info(t0, p(2, 50, f_ts, 1000 + arrives).key());
        f.clock = f_report.then_some(clock(2));
        let a = dt.on_packet(&f, true, |_| Negotiated::Pt(PT));
        assert_eq!(
            out(&a),
            Sent(first.seq + 1, first.timestamp.wrapping_add(jump)),
            "{what}"
        );
    }
}

/// The PictureID continues across a switch: the patch carries the next id after the last sent.
#[test]
fn a_switch_patches_the_picture_id() {
    let t0 = Instant::now();
    let mut dt = video();
    budget(&mut dt, t0, 0, 650_000);
    let send = |dt: &mut DownTrack, p: P| match dt
        .on_packet(&info(t0, p), true, |_| Negotiated::Pt(PT))
        .verdict
    {
        Verdict::Send(s) => s,
        Verdict::Drop(r) => panic!("{p:?} dropped: {r:?}"),
    };
    let first = send(&mut dt, p(1, 10, 0, 0).key().pid(300));
    let expected = |p: P, pid: u16, tl0: u8| {
        let d = Vp8Payload::parse(&payload(&p)).unwrap();
        d.descriptor
            .patch()
            .picture_id(pid)
            .tl0_pic_idx(tl0)
            .build()
            .ok()
    };
    assert_eq!(
        first.vp8_patch,
        expected(p(1, 10, 0, 0).key().pid(300), 300, 10)
    );
    budget(&mut dt, t0, 100, 2_500_000);
    budget(&mut dt, t0, 2100, 2_500_000);
    let f = p(2, 77, 9000, 2200).key().pid(5000);
    let switched = send(&mut dt, f);
    // PictureID 301 and TL0PICIDX 11 follow 300 and 10, whatever f's own counters were.
    assert_eq!(switched.vp8_patch, expected(f, 301, 11));
}

#[test]
fn every_reason_has_its_own_label_and_index() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(
            DropReason::ALL[..i].iter().all(|o| o.label() != r.label()),
            "{r:?}"
        );
    }
}
