//! A lesson link's simulcast: each wanted layer of a track crosses the link as a stream of its
//! own (a "lane"), so the far server sees an ordinary simulcast publish and its own subscribers'
//! selectors pick layers for each of its pupils.
//!
//! Two decisions live here, both as values:
//! - [`allocate`]: which lanes of every simulcast track the link carries, from the layers the
//!   far side asked for (dynacast across the link, `link_layers`), the layers the link's client
//!   cap allows, and the link's estimate. Audio is reserved first by the caller; then every
//!   track's lowest wanted layer; then higher layers in the tracks' priority order while they
//!   fit. What does not fit is a track's top layers: they are the first to stay home.
//! - [`Lanes::on_packet`]: whether one packet of the publisher goes out on its layer's lane, and
//!   with which sequence number and timestamp. A lane is one source to one stream: it never
//!   switches layers, so it needs no VP8 munging; a lane switched off and on again starts over
//!   at a keyframe, continuing its own sequence numbers without a gap.
//!
//! Per packet this allocates nothing and takes no lock.

use str0m::format::Codec;

use super::allocator::TrackClass;
use super::downtrack::{Answer, DropReason, Negotiated, Outgoing, PacketInfo, Verdict, clock_rate};
use super::forward::{self, Forward, Forwarder};
use super::layer::{Decision, Layer, LayerBitrates, MAX_SPATIAL};

/// Which spatial layers, lowest first.
pub type LayerSet = [bool; MAX_SPATIAL];

/// What the link allocation needs to know of one simulcast track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneTrack {
    pub class: TrackClass,
    /// How many spatial layers the publisher sends.
    pub layers: usize,
    /// Measured layer rates (bits per second, per spatial and temporal layer).
    pub rates: LayerBitrates,
    /// The layers the far side's subscribers need (all until it says otherwise).
    pub wanted: LayerSet,
    /// The highest spatial layer the link's client cap allows.
    pub cap: u8,
}

impl LaneTrack {
    /// The layers that may cross at all: sent, wanted and within the cap.
    fn eligible(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.layers.min(MAX_SPATIAL)).filter(|s| self.wanted[*s] && *s <= usize::from(self.cap))
    }

    /// A layer's cost: its measured rate with every temporal layer. A layer not measured (not
    /// arriving) costs nothing until it arrives.
    fn cost(&self, spatial: usize) -> u64 {
        self.rates.0[spatial].iter().copied().max().unwrap_or(0)
    }
}

/// The lanes of every track, in the order given, and what they cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneAllocation {
    pub on: Vec<LayerSet>,
    /// The measured rate of the lanes switched on.
    pub used: u64,
    /// The measured rate of every eligible layer: what the link should probe towards.
    pub desired: u64,
}

/// Decides the lanes of one link connection within `budget` bits per second (the estimate less
/// what audio needs). Every track's lowest eligible layer crosses even when the budget is short:
/// the far side's pupils keep a picture, as a subscriber keeps its lowest layer; the link's own
/// congestion control then paces it.
pub fn allocate(tracks: &[LaneTrack], budget: u64) -> LaneAllocation {
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|i| tracks[*i].class);
    let mut on = vec![[false; MAX_SPATIAL]; tracks.len()];
    let mut used = 0u64;
    let mut desired = 0u64;
    for (i, track) in tracks.iter().enumerate() {
        desired += track.eligible().map(|s| track.cost(s)).sum::<u64>();
        if let Some(lowest) = track.eligible().next() {
            on[i][lowest] = true;
            used += track.cost(lowest);
        }
    }
    // Higher layers level by level, so a pupil's middle layer comes before the teacher's top
    // one only when the teacher's fits no more; within a level, the priority order decides.
    let mut blocked = vec![false; tracks.len()];
    for _level in 1..MAX_SPATIAL {
        for &i in &order {
            if blocked[i] {
                continue;
            }
            let track = &tracks[i];
            let Some(next) = track.eligible().find(|s| !on[i][*s]) else {
                continue;
            };
            let cost = track.cost(next);
            if used + cost <= budget {
                on[i][next] = true;
                used += cost;
            } else {
                // A layer left home keeps every layer above it home too.
                blocked[i] = true;
            }
        }
    }
    LaneAllocation { on, used, desired }
}

/// One simulcast track towards one link connection: a forwarder per lane.
#[derive(Debug, Clone)]
pub struct Lanes {
    lanes: [Forwarder; MAX_SPATIAL],
    layers: usize,
    wanted: LayerSet,
    on: LayerSet,
    /// The payload type the link negotiated for the codec forwarded.
    pt: Option<(Codec, str0m::media::Pt)>,
}

impl Lanes {
    /// `layers` spatial layers; `seeds` are each lane's own first sequence number and
    /// timestamp (random in production). Only the lowest lane is on until the first allocation.
    pub fn new(layers: usize, seeds: [(u16, u32); MAX_SPATIAL]) -> Lanes {
        let rate = clock_rate(true);
        let layers = layers.clamp(1, MAX_SPATIAL);
        Lanes {
            lanes: seeds.map(|(seq, ts)| Forwarder::new(true, rate, seq, ts)),
            layers,
            wanted: [true; MAX_SPATIAL],
            on: [true, false, false],
            pt: None,
        }
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The layers the far side asked for (`link_layers`).
    pub fn wanted(&self) -> LayerSet {
        self.wanted
    }

    pub fn set_wanted(&mut self, wanted: LayerSet) {
        self.wanted = wanted;
    }

    /// The lanes that carry packets now.
    pub fn on(&self) -> LayerSet {
        self.on
    }

    /// Switches lanes; one switched on waits for a keyframe of its layer. Whether any changed.
    pub fn set_on(&mut self, on: LayerSet) -> bool {
        let mut changed = false;
        let layers = self.layers;
        for (s, (lane, was)) in self.lanes.iter_mut().zip(self.on.iter_mut()).enumerate() {
            let now = on[s] && s < layers;
            if now != *was {
                changed = true;
                if now {
                    lane.resume();
                }
                *was = now;
            }
        }
        changed
    }

    /// The highest lane on.
    pub fn highest_on(&self) -> Option<u8> {
        (0..MAX_SPATIAL)
            .rev()
            .find(|s| self.on[*s])
            .map(|s| s as u8)
    }

    /// The link as one viewer of the track, for dynacast towards the publisher: it receives
    /// up to its highest lane and wants up to the highest layer the far side wants.
    pub fn decision(&self) -> Decision {
        let top = |set: &LayerSet| {
            (0..self.layers)
                .rev()
                .find(|s| set[*s])
                .map(|s| Layer::new(s as u8, Layer::MAX.temporal))
        };
        Decision {
            current: self
                .highest_on()
                .map(|s| Layer::new(s, Layer::MAX.temporal)),
            target: top(&self.wanted),
            keyframe_needed: false,
            paused: false,
        }
    }

    /// The link answered a new offer: what it accepts may have changed.
    pub fn renegotiated(&mut self) {
        self.pt = None;
    }

    /// Decides one packet of the publisher for its layer's lane.
    pub fn on_packet(
        &mut self,
        p: &PacketInfo,
        negotiated: impl FnOnce(Codec) -> Negotiated,
    ) -> Answer {
        let spatial = usize::from(p.spatial);
        if spatial >= self.layers || !self.on[spatial] {
            return dropped(DropReason::OtherSpatialLayer);
        }
        let pt = match self.pt {
            Some((c, pt)) if c == p.codec => pt,
            _ => match negotiated(p.codec) {
                Negotiated::Pt(pt) => {
                    self.pt = Some((p.codec, pt));
                    pt
                }
                Negotiated::NotAnswered => return dropped(DropReason::NotNegotiatedYet),
                Negotiated::Refused => return dropped(DropReason::CodecUnsupported),
            },
        };
        let lane = &mut self.lanes[spatial];
        let incoming = forward::IncomingPacket {
            ssrc: p.ssrc,
            seq: p.seq,
            timestamp: p.timestamp,
            marker: p.marker,
            keyframe_start: p.keyframe_start,
            arrival: p.arrival,
            clock: p.clock,
        };
        match lane.forward(&incoming) {
            Forward::Send {
                seq,
                timestamp,
                marker,
            } => Answer {
                verdict: Verdict::Send(Outgoing {
                    seq,
                    timestamp,
                    marker,
                    pt,
                    vp8_patch: None,
                }),
                wants_keyframe: None,
                report_unplayable: None,
            },
            Forward::Drop(reason) => Answer {
                verdict: Verdict::Drop(reason.into()),
                wants_keyframe: lane.wants_keyframe().then_some(p.spatial),
                report_unplayable: None,
            },
        }
    }
}

fn dropped(reason: DropReason) -> Answer {
    Answer {
        verdict: Verdict::Drop(reason),
        wants_keyframe: None,
        report_unplayable: None,
    }
}

/// The layers named by `active` among a track's `rids` (lowest first); unknown rids are
/// ignored.
pub fn layers_named<R: std::ops::Deref<Target = str>>(rids: &[R], active: &[String]) -> LayerSet {
    let mut set = [false; MAX_SPATIAL];
    for (s, rid) in rids.iter().take(MAX_SPATIAL).enumerate() {
        set[s] = active.iter().any(|a| **rid == **a);
    }
    set
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::media::Pt;

    use super::*;

    const RATES: LayerBitrates = LayerBitrates([
        [80_000, 120_000, 150_000],
        [250_000, 400_000, 500_000],
        [800_000, 1_200_000, 1_500_000],
    ]);

    fn track(class: TrackClass) -> LaneTrack {
        LaneTrack {
            class,
            layers: 3,
            rates: RATES,
            wanted: [true; 3],
            cap: 2,
        }
    }

    #[test]
    fn every_wanted_layer_crosses_when_the_estimate_carries_them() {
        let a = allocate(&[track(TrackClass::TeacherCamera)], 5_000_000);
        assert_eq!(a.on, vec![[true, true, true]]);
        assert_eq!(a.used, 2_150_000);
        assert_eq!(a.desired, 2_150_000);
    }

    #[test]
    fn top_layers_stay_home_first_and_the_teacher_goes_before_pupils() {
        let teacher = track(TrackClass::TeacherCamera);
        let pupil = track(TrackClass::PupilVideo);
        // Room for both lowest layers and two middle ones, not for a top one.
        let a = allocate(&[pupil, teacher], 1_300_000);
        assert_eq!(a.on, vec![[true, true, false], [true, true, false]]);
        // Room for one middle layer only: the teacher's.
        let a = allocate(&[pupil, teacher], 800_000);
        assert_eq!(a.on, vec![[true, false, false], [true, true, false]]);
        assert_eq!(a.desired, 4_300_000);
        // Less than the lowest layers: they still cross (the floor), nothing above.
        let a = allocate(&[pupil, teacher], 100_000);
        assert_eq!(a.on, vec![[true, false, false], [true, false, false]]);
        assert_eq!(a.used, 300_000);
    }

    #[test]
    fn unwanted_and_capped_layers_never_cross() {
        // The far side wants only the top and the lowest layer (dynacast): the middle stays.
        let mut t = track(TrackClass::TeacherCamera);
        t.wanted = [true, false, true];
        let a = allocate(&[t], 5_000_000);
        assert_eq!(a.on, vec![[true, false, true]]);
        assert_eq!(a.desired, 1_650_000);
        // Nobody there wants more than the lowest.
        t.wanted = [true, false, false];
        assert_eq!(allocate(&[t], 5_000_000).on, vec![[true, false, false]]);
        // The link's own cap.
        let mut t = track(TrackClass::TeacherCamera);
        t.cap = 1;
        assert_eq!(allocate(&[t], 5_000_000).on, vec![[true, true, false]]);
        // Two layers sent: no third lane.
        let mut t = track(TrackClass::TeacherCamera);
        t.layers = 2;
        assert_eq!(allocate(&[t], 5_000_000).on, vec![[true, true, false]]);
        // Nothing wanted: nothing crosses.
        t.wanted = [false; 3];
        assert_eq!(allocate(&[t], 5_000_000).on, vec![[false; 3]]);
    }

    #[test]
    fn a_layer_left_home_keeps_those_above_it_home() {
        let mut t = track(TrackClass::TeacherCamera);
        // The middle layer is dear, the top one cheap (a measurement glitch): no hole.
        t.rates.0[1] = [900_000; 3];
        t.rates.0[2] = [10_000; 3];
        assert_eq!(allocate(&[t], 500_000).on, vec![[true, false, false]]);
    }

    fn packet(spatial: u8, seq: u64, keyframe: bool) -> PacketInfo {
        PacketInfo {
            ssrc: 100 + u32::from(spatial),
            spatial,
            temporal: 0,
            keyframe_start: keyframe,
            switch_point: true,
            seq,
            timestamp: seq as u32 * 3000,
            marker: false,
            arrival: Instant::now(),
            codec: Codec::Vp8,
            vp8: None,
            clock: None,
        }
    }

    fn sent_seq(a: &Answer) -> Option<u64> {
        match a.verdict {
            Verdict::Send(o) => Some(o.seq),
            Verdict::Drop(_) => None,
        }
    }

    #[test]
    fn each_lane_forwards_its_own_layer_from_a_keyframe() {
        let pt = Pt::from(96);
        let mut lanes = Lanes::new(3, [(1000, 0), (2000, 0), (3000, 0)]);
        let ok = |_| Negotiated::Pt(pt);
        // Only the lowest lane before the first allocation.
        let a = lanes.on_packet(&packet(1, 10, true), ok);
        assert_eq!(a.verdict, Verdict::Drop(DropReason::OtherSpatialLayer));
        let a = lanes.on_packet(&packet(0, 10, false), ok);
        assert_eq!(a.verdict, Verdict::Drop(DropReason::WaitingForKeyframe));
        assert_eq!(a.wants_keyframe, Some(0));
        assert_eq!(
            sent_seq(&lanes.on_packet(&packet(0, 11, true), ok)),
            Some(1000)
        );
        assert_eq!(
            sent_seq(&lanes.on_packet(&packet(0, 12, false), ok)),
            Some(1001)
        );

        assert!(lanes.set_on([true, true, false]));
        assert!(!lanes.set_on([true, true, false]));
        let a = lanes.on_packet(&packet(1, 50, false), ok);
        assert_eq!(a.wants_keyframe, Some(1));
        assert_eq!(
            sent_seq(&lanes.on_packet(&packet(1, 51, true), ok)),
            Some(2000)
        );
        assert_eq!(lanes.highest_on(), Some(1));

        // Off and on again: the lane continues its numbers after a keyframe, without a gap.
        lanes.set_on([true, false, false]);
        let a = lanes.on_packet(&packet(1, 52, false), ok);
        assert_eq!(a.verdict, Verdict::Drop(DropReason::OtherSpatialLayer));
        lanes.set_on([true, true, false]);
        assert_eq!(sent_seq(&lanes.on_packet(&packet(1, 90, false), ok)), None);
        assert_eq!(
            sent_seq(&lanes.on_packet(&packet(1, 91, true), ok)),
            Some(2001)
        );
        // The lowest lane never noticed.
        assert_eq!(
            sent_seq(&lanes.on_packet(&packet(0, 13, false), ok)),
            Some(1002)
        );
    }

    #[test]
    fn a_lane_sends_nothing_the_link_did_not_negotiate() {
        let mut lanes = Lanes::new(2, [(0, 0); 3]);
        let a = lanes.on_packet(&packet(0, 1, true), |_| Negotiated::NotAnswered);
        assert_eq!(a.verdict, Verdict::Drop(DropReason::NotNegotiatedYet));
        let a = lanes.on_packet(&packet(0, 1, true), |_| Negotiated::Refused);
        assert_eq!(a.verdict, Verdict::Drop(DropReason::CodecUnsupported));
        // Two layers: a third never gets a lane.
        lanes.set_on([true, true, true]);
        assert_eq!(lanes.on(), [true, true, false]);
    }

    #[test]
    fn the_link_as_a_viewer_wants_what_the_far_side_wants() {
        let mut lanes = Lanes::new(3, [(0, 0); 3]);
        lanes.set_wanted([true, true, false]);
        let d = lanes.decision();
        assert_eq!(d.current, Some(Layer::new(0, Layer::MAX.temporal)));
        assert_eq!(d.target, Some(Layer::new(1, Layer::MAX.temporal)));
    }

    #[test]
    fn rids_name_layers() {
        let rids = ["q", "h", "f"];
        assert_eq!(
            layers_named(&rids, &["f".into(), "q".into(), "x".into()]),
            [true, false, true]
        );
        assert_eq!(layers_named(&rids, &[]), [false; 3]);
    }
}
