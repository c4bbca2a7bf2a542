//! One subscriber's allocation round, decided as a value.
//!
//! Twice a second each subscribe connection's bandwidth estimate is shared among the tracks it
//! receives ([`super::allocator`]), each video track's [`LayerSelector`] turns its share into a
//! layer, and the round works out everything that follows from that: which layer changes the
//! client must hear of, which keyframes to ask the publisher for, how far the estimator should
//! probe ([`super::probe`]), whether video goes through the pacer ([`super::pacing`]) and what
//! the periodic link report says. The shard gathers the inputs from its subscriptions and
//! peers, calls [`run`], and applies the [`Round`]: it decides nothing itself.
//!
//! The state that carries over from round to round stays with its owner: each track's selector
//! travels in its [`RoundTrack`] (the shard copies it in and stores it back), the probe pacer is
//! borrowed from the peer. A selector is a few hundred bytes and a round runs twice a second, so
//! the copy costs nothing, and it keeps the shard from having to borrow several subscriptions of
//! its track table mutably at once.

use std::time::Instant;

use super::allocator::{AUDIO_BPS, Allocation, Snapshot, TrackClass, TrackDemand, allocate};
use super::capacity::{HIDDEN_BITS, HOLD};
use super::layer::{
    Decision, KeyframeSizes, Layer, LayerBitrates, LayerSelector, SelectorInput,
    UPGRADE_MARGIN_PERCENT,
};
use super::pacing::{LinkState, pace_video};
use super::probe::{Nudge, ProbePacer};
use crate::command::LayerName;

/// The estimate assumed before the first feedback (libwebrtc's start rate): the lowest layer
/// at its full frame rate beside the audio. A guess above a weak link sends it a larger layer and
/// its keyframe: seconds of queue overflow, and GoogCC's loss-based estimate then falls for
/// seconds more, below what the link carries (seen at 0.3 Mbit/s with 1 Mbit/s here, 20–27 %
/// loss). str0m's first probes (3× and 6× this) find a fast link within a second or two.
pub const INITIAL_ESTIMATE: u64 = 300_000;

/// What a subscriber is assumed to carry when bandwidth estimation is off: every layer.
pub const UNESTIMATED: u64 = 1_000_000_000;

/// How far above what the next step needs padding aims: str0m brings what is sent to the
/// round's minimum only roughly, and the proof (`core::capacity`) takes the mean of what was
/// sent, so aiming at the need itself proved a little less than it, round after round.
pub const PADDING_HEADROOM_PERCENT: u64 = 10;

/// What a client was last told about a track: the layer it gets and whether it is paused.
pub type Shown = (Option<LayerName>, bool);

/// One track a subscriber receives, with what its subscription knows.
#[derive(Debug, Clone)]
pub struct RoundTrack<Id> {
    pub id: Id,
    pub class: TrackClass,
    /// How many spatial layers the publisher sends (1 for a single encoding).
    pub layer_count: usize,
    /// Measured layer rates, their recent peaks and the latest keyframe sizes.
    pub rates: LayerBitrates,
    pub peaks: LayerBitrates,
    pub keyframes: KeyframeSizes,
    /// The highest layer the client asked for.
    pub cap: Layer,
    /// The track's audience admits this subscriber.
    pub allowed: bool,
    /// The subscriber cannot decode the track's codec.
    pub unplayable: bool,
    /// What the client was last told about this track.
    pub reported: Option<Shown>,
    /// Video only. Updated in place by [`run`]; the caller keeps it for the next round.
    pub selector: Option<LayerSelector>,
}

/// What one round knows about the subscriber's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub now: Instant,
    /// The estimator's latest estimate, if it has given one.
    pub estimate: Option<u64>,
    /// Whether bandwidth is estimated at all (`MediaConfig::bandwidth_estimation`).
    pub estimating: bool,
    /// The loss fraction receiver reports give, if any yet.
    pub loss: Option<f32>,
    /// The rate the link has shown it carries (`core::capacity`); `None`: take the estimate
    /// at its word (bandwidth is not estimated).
    pub proven: Option<u64>,
    /// The link showed a queue lately (`core::capacity`).
    pub queued: bool,
}

impl Link {
    /// The estimate the round shares out: the estimator's, or an assumption before it has one.
    pub fn usable_estimate(&self) -> u64 {
        self.estimate.unwrap_or(if self.estimating {
            INITIAL_ESTIMATE
        } else {
            UNESTIMATED
        })
    }

    /// What a larger picture may be judged against: the proven rate, within the estimate.
    pub fn upgrade_estimate(&self) -> u64 {
        let estimate = self.usable_estimate();
        self.proven.map_or(estimate, |p| p.min(estimate))
    }
}

/// A change the client must hear of (`ShardEvent::TrackQuality`); the caller also stores it as
/// the track's new `reported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualityChange {
    pub layer: Option<LayerName>,
    pub paused: bool,
    /// The picture size changed from one the client had been told of (a counted switch).
    pub switched: bool,
}

impl QualityChange {
    pub fn shown(&self) -> Shown {
        (self.layer, self.paused)
    }
}

/// The round's answer for one video track it gave a share to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackOutcome<Id> {
    pub id: Id,
    /// Where the track is in the `tracks` slice given to [`run`].
    pub index: usize,
    /// What the allocator left for this track.
    pub budget: u64,
    /// The selector's decision; `None` for a track without a selector.
    pub decision: Option<Decision>,
    /// Tell the client, when something it sees changed.
    pub quality: Option<QualityChange>,
    /// Ask the publisher for a keyframe of this spatial layer (the caller throttles).
    pub keyframe: Option<u8>,
}

/// What to hand the estimator: str0m probes with padding up to `minimum` and towards `desired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateTargets {
    pub minimum: u64,
    pub desired: u64,
}

/// The periodic link report's per-subscriber part (`ShardEvent::ConnectionQuality`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport<Id> {
    /// Video tracks and the layer each gets (`None`: paused or not started), priority order.
    pub layers: Vec<(Id, Option<LayerName>)>,
    pub any_paused: bool,
}

/// Everything one round decided for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round<Id> {
    /// The estimate that was shared out.
    pub estimate: u64,
    /// Video tracks in priority order (audio, withheld and unplayable tracks are not here).
    pub tracks: Vec<TrackOutcome<Id>>,
    pub targets: BitrateTargets,
    /// Whether video goes through the pacer; `None` when bandwidth is not estimated (nothing
    /// is paced then).
    pub paced: Option<bool>,
    pub link: LinkReport<Id>,
    /// How many of the tracks are paused for want of bandwidth.
    pub paused: u64,
}

/// What a track should send while it waits to go up, so that padding loads the link with it and
/// the link can prove it carries it (`core::capacity`): the largest picture its budget from the
/// estimate allows, or else the next larger one, at the lowest frame rate that picture is chosen
/// at and at its peak rate with the upgrade margin (what the selector will ask of the proven
/// rate); without a larger picture, the next frame rate of this one. `None` at the top (or the
/// cap). Aiming at what the estimate claims rather than one step at a time lets a fast link
/// prove `f` while `h` is still being tried, and drains a token bucket that fooled the estimate
/// sooner.
fn step_up(
    current: Option<Layer>,
    budget: u64,
    available: &LayerBitrates,
    peaks: &LayerBitrates,
    cap: Layer,
) -> Option<u64> {
    let with_margin =
        |l: Layer, rate: u64| peaks.get(l).unwrap_or(rate).max(rate) * UPGRADE_MARGIN_PERCENT / 100;
    let Some(cur) = current else {
        return available.lowest(cap).map(|(l, rate)| with_margin(l, rate));
    };
    let higher = || available.targets(cap).filter(move |(l, _)| *l > cur);
    // The lowest frame rate of each larger picture, smallest first.
    let mut larger: Vec<(Layer, u64)> = Vec::new();
    for (l, rate) in higher().filter(|(l, _)| l.spatial > cur.spatial) {
        if larger.iter().all(|(other, _)| other.spatial != l.spatial) {
            larger.push((l, with_margin(l, rate)));
        }
    }
    let claimed = larger.iter().rev().find(|(_, need)| *need <= budget);
    if let Some((_, need)) = claimed.or(larger.first()) {
        return Some(*need);
    }
    higher().next().map(|(_, rate)| rate)
}

/// How far above the proven rate a stretch must send to prove more within `HOLD`, with the
/// padding's headroom.
fn provable_step() -> u64 {
    let bps = u128::from(HIDDEN_BITS) * 1_000_000 / HOLD.as_micros().max(1);
    (bps as u64).saturating_mul(100 + PADDING_HEADROOM_PERCENT) / 100
}

/// Runs one subscriber's allocation round.
pub fn run<Id: Copy>(
    link: &Link,
    probe: &mut ProbePacer,
    tracks: &mut [RoundTrack<Id>],
) -> Round<Id> {
    let now = link.now;
    let estimate = link.usable_estimate();
    // Withheld tracks (the lesson's audience) and tracks the subscriber cannot decode take no
    // bandwidth, and their layer is not judged, so they are never reported as paused for a weak
    // network.
    let demands: Vec<TrackDemand<usize>> = tracks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.allowed && !t.unplayable)
        .map(|(index, t)| TrackDemand {
            id: index,
            class: t.class,
            layers: t.rates,
            cap: t.cap,
        })
        .collect();
    // What this subscriber would take with unlimited bandwidth: str0m probes towards it.
    let desired: u64 = demands
        .iter()
        .map(|d| match d.class {
            TrackClass::Audio => AUDIO_BPS,
            _ => d
                .layers
                .layers(d.cap)
                .map(|(_, rate)| rate)
                .max()
                .unwrap_or(0),
        })
        .sum();
    let upgrade_estimate = link.upgrade_estimate();
    let upgrade_budgets: Vec<(usize, u64)> = allocate(&Snapshot {
        estimate: upgrade_estimate,
        tracks: demands.clone(),
    })
    .into_iter()
    .filter_map(|(index, a)| match a {
        Allocation::Video { budget, .. } => Some((index, budget)),
        _ => None,
    })
    .collect();
    let upgrade_budget_of = |index: usize| {
        upgrade_budgets
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, b)| *b)
    };
    let allocations = allocate(&Snapshot {
        estimate,
        tracks: demands,
    });

    let mut outcomes = Vec::new();
    let mut report = Vec::new();
    let mut paused = 0u64;
    let mut allocated = 0u64;
    // The first track, in priority order, that could go up decides how far str0m should probe
    // (with padding) before the allocator can try it: the step to its next layer.
    let mut next_step: Option<u64> = None;
    // Some track waits for the keyframe of a larger picture.
    let mut switching_up = false;
    for (index, allocation) in allocations {
        let budget = match allocation {
            Allocation::Audio => {
                allocated += AUDIO_BPS;
                continue;
            }
            Allocation::Video { budget, .. } => budget,
            Allocation::Paused | Allocation::Idle => 0,
        };
        let Some(track) = tracks.get_mut(index) else {
            continue;
        };
        let mut outcome = TrackOutcome {
            id: track.id,
            index,
            budget,
            decision: None,
            quality: None,
            keyframe: None,
        };
        let Some(selector) = track.selector.as_mut() else {
            outcomes.push(outcome);
            continue;
        };
        let available = track.rates;
        let cap = track.cap;
        let decision = selector.update(&SelectorInput {
            now,
            budget,
            upgrade_budget: upgrade_budget_of(index),
            available,
            peaks: track.peaks,
            keyframes: track.keyframes,
            cap,
        });
        let current_rate = decision.current.and_then(|l| available.get(l)).unwrap_or(0);
        allocated += current_rate;
        if next_step.is_none() {
            next_step = step_up(decision.current, budget, &available, &track.peaks, cap)
                .map(|rate| rate.saturating_sub(current_rate));
        }
        // Clients hear of spatial changes and pauses; temporal steps are too frequent to tell.
        let name = decision
            .current
            .map(|l| LayerName::of(l.spatial, track.layer_count));
        let shown = (name, decision.paused);
        if track.reported != Some(shown) && (decision.current.is_some() || decision.paused) {
            outcome.quality = Some(QualityChange {
                layer: name,
                paused: decision.paused,
                switched: track.reported.is_some_and(|(layer, _)| layer != name),
            });
        }
        paused += u64::from(decision.paused);
        report.push((track.id, name));
        if decision.keyframe_needed {
            outcome.keyframe = decision.target.map(|t| t.spatial);
            switching_up |= decision
                .target
                .zip(decision.current)
                .is_some_and(|(t, c)| t.spatial > c.spatial);
        }
        outcome.decision = Some(decision);
        outcomes.push(outcome);
    }
    let any_paused = paused > 0;

    // Keep probing towards what the subscriber would take; padding fills up to what the next
    // step would take, so the estimate can grow and the link prove it carries that rate
    // (`core::capacity`) before the step is tried.
    // The step is judged with the margin on the layer's peak, which can be more than the
    // subscriber would take at its best: padding must reach it all the same.
    let stepped = match next_step {
        Some(step) => (allocated + step).saturating_mul(100 + PADDING_HEADROOM_PERCENT) / 100,
        None => allocated,
    };
    // A stretch proves a rate only once it has sent `HIDDEN_BITS` above the rate proven before
    // (`core::capacity`). Padding aimed at a step a little above the proven rate would need
    // longer than the longest stretch to do that, and the step would never be proven: a pupil
    // sat on `h` for 14 s with 1.24 Mbit/s proven, 2.5 Mbit/s estimated and `f` wanting a
    // little more. So padding aims far enough above the proven rate to prove within `HOLD`.
    let stepped = match link.proven {
        Some(proven) if next_step.is_some() && stepped > proven => {
            stepped.max(proven + provable_step())
        }
        _ => stepped,
    };
    let desired = desired.max(allocated).max(stepped);
    // Never more than the estimate: padding beyond it only builds a queue (str0m's own cap on
    // padding let 1.5 Mbit/s through towards a 0.38 Mbit/s estimate at start, when the peak
    // rates of the layers still held their first keyframes).
    // While a larger picture's keyframe is on its way, no padding: the keyframe needs the room
    // the padding took (at 0.5 Mbit/s a browser's 40 kB keyframe of `h` behind padding that
    // filled the line overflowed the queue, and the switch was undone within a second).
    // And none while the link shows a queue: padding cannot prove anything then, and keeps the
    // queue standing, behind which every resend of a lost packet waits (at 0.3 Mbit/s with
    // 5 % loss the picture stalled for over a second at a time).
    let minimum = if switching_up || link.queued {
        allocated
    } else {
        stepped.min(estimate.max(allocated))
    };
    let wants_more = next_step.is_some_and(|step| estimate < allocated + step);
    let desired = match probe.round(now, wants_more, estimate) {
        Nudge::Steady => desired,
        Nudge::Lower => desired.saturating_sub(1),
    };
    let paced = link.estimating.then(|| {
        pace_video(LinkState {
            limited: next_step.is_some(),
            paused: any_paused,
            loss: link.loss,
        })
    });
    Round {
        estimate,
        tracks: outcomes,
        targets: BitrateTargets {
            minimum: minimum.min(desired),
            desired,
        },
        paced,
        link: LinkReport {
            layers: report,
            any_paused,
        },
        paused,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::layer::SelectorConfig;
    use crate::core::pacing::LOSSY_LINK;
    use LayerName::{High, Low, Medium};
    use TrackClass::*;

    /// Simulcast q/h/f, ~150k/500k/1.5M at full frame rate.
    const SIMULCAST: LayerBitrates = LayerBitrates([
        [80_000, 120_000, 150_000],
        [250_000, 400_000, 500_000],
        [800_000, 1_200_000, 1_500_000],
    ]);
    /// A pupil's single-layer camera at 200k.
    const PUPIL: LayerBitrates = LayerBitrates([[200_000, 0, 0], [0; 3], [0; 3]]);
    /// A screen share in one encoding at 600k.
    const SCREEN: LayerBitrates = LayerBitrates([[600_000, 0, 0], [0; 3], [0; 3]]);

    fn track(
        id: &'static str,
        class: TrackClass,
        rates: LayerBitrates,
    ) -> RoundTrack<&'static str> {
        let layer_count = if rates.0[1][0] > 0 { 3 } else { 1 };
        RoundTrack {
            id,
            class,
            layer_count,
            rates,
            peaks: rates,
            keyframes: KeyframeSizes::default(),
            cap: Layer::MAX,
            allowed: true,
            unplayable: false,
            reported: None,
            selector: (class != Audio)
                .then(|| LayerSelector::new(SelectorConfig::two_second_hold())),
        }
    }

    /// One subscriber's tracks and probe pacer, driven round by round as the shard does.
    struct Subscriber {
        t0: Instant,
        estimating: bool,
        /// The link showed a queue (`core::capacity`).
        queued: bool,
        probe: ProbePacer,
        tracks: Vec<RoundTrack<&'static str>>,
    }

    impl Subscriber {
        fn new(tracks: Vec<RoundTrack<&'static str>>) -> Self {
            Subscriber {
                t0: Instant::now(),
                estimating: true,
                queued: false,
                probe: ProbePacer::default(),
                tracks,
            }
        }

        /// A round at `ms`; stores what the client was told, as the shard does.
        fn round(
            &mut self,
            ms: u64,
            estimate: Option<u64>,
            loss: Option<f32>,
        ) -> Round<&'static str> {
            let link = Link {
                now: self.t0 + Duration::from_millis(ms),
                estimate,
                estimating: self.estimating,
                loss,
                proven: None,
                queued: self.queued,
            };
            let round = run(&link, &mut self.probe, &mut self.tracks);
            for t in &round.tracks {
                if let Some(q) = t.quality {
                    self.tracks[t.index].reported = Some(q.shown());
                }
            }
            round
        }

        /// The first packet of a keyframe of `spatial` reached the subscription.
        fn keyframe(&mut self, id: &str, spatial: u8) {
            let track = self.tracks.iter_mut().find(|t| t.id == id).unwrap();
            track.selector.as_mut().unwrap().keyframe(spatial);
        }
    }

    type L = Option<(u8, u8)>;
    /// One track's outcome: (id, budget, current, target, told (layer, paused), keyframe).
    type Row = (
        &'static str,
        u64,
        L,
        L,
        Option<(Option<LayerName>, bool)>,
        Option<u8>,
    );

    fn rows(round: &Round<&'static str>) -> Vec<Row> {
        let l = |l: Option<Layer>| l.map(|l| (l.spatial, l.temporal));
        round
            .tracks
            .iter()
            .map(|t| {
                let d = t.decision.unwrap();
                (
                    t.id,
                    t.budget,
                    l(d.current),
                    l(d.target),
                    t.quality.map(|q| q.shown()),
                    t.keyframe,
                )
            })
            .collect()
    }

    fn targets(minimum: u64, desired: u64) -> BitrateTargets {
        BitrateTargets { minimum, desired }
    }

    #[test]
    fn tracks_take_their_share_in_priority_order_and_speak_on_change_only() {
        let mut sub = Subscriber::new(vec![
            track("pupil", PupilVideo, PUPIL),
            track("cam", TeacherCamera, SIMULCAST),
            track("mic", Audio, LayerBitrates::default()),
            track("screen", TeacherScreen, SCREEN),
        ]);
        // Audio comes off the top, then the screen, the camera, the pupil. Each target waits for
        // its keyframe, which is asked for; nothing is said before a picture flows.
        let round = sub.round(0, Some(3_000_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("screen", 2_936_000, None, Some((0, 0)), None, Some(0)),
                ("cam", 2_336_000, None, Some((2, 2)), None, Some(2)),
                ("pupil", 836_000, None, Some((0, 0)), None, Some(0)),
            ]
        );
        // Only audio flows; the screen's first layer is the step to probe for.
        let screen_step = 600_000 * UPGRADE_MARGIN_PERCENT / 100;
        assert_eq!(
            round.targets,
            targets(
                (64_000 + screen_step) * (100 + PADDING_HEADROOM_PERCENT) / 100,
                2_364_000
            )
        );
        assert_eq!(round.paused, 0);

        sub.keyframe("screen", 0);
        sub.keyframe("cam", 2);
        sub.keyframe("pupil", 0);
        let round = sub.round(500, Some(3_000_000), None);
        assert_eq!(
            rows(&round),
            vec![
                (
                    "screen",
                    2_936_000,
                    Some((0, 0)),
                    Some((0, 0)),
                    Some((Some(High), false)),
                    None
                ),
                (
                    "cam",
                    2_336_000,
                    Some((2, 2)),
                    Some((2, 2)),
                    Some((Some(High), false)),
                    None
                ),
                (
                    "pupil",
                    836_000,
                    Some((0, 0)),
                    Some((0, 0)),
                    Some((Some(High), false)),
                    None
                ),
            ]
        );
        assert!(round.tracks.iter().all(|t| !t.quality.unwrap().switched));
        // Everything at its best: nothing to probe for beyond what flows.
        assert_eq!(round.targets, targets(2_364_000, 2_364_000));
        assert_eq!(
            round.link,
            LinkReport {
                layers: vec![
                    ("screen", Some(High)),
                    ("cam", Some(High)),
                    ("pupil", Some(High))
                ],
                any_paused: false,
            }
        );
        // The same again: nothing new to tell.
        let round = sub.round(1_000, Some(3_000_000), None);
        assert!(round.tracks.iter().all(|t| t.quality.is_none()));

        // The estimate falls: the camera targets q at once and keeps f's base frame rate until
        // q's keyframe; the pupil keeps its picture on the base layer's tolerance.
        let round = sub.round(1_500, Some(1_000_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("screen", 936_000, Some((0, 0)), Some((0, 0)), None, None),
                ("cam", 336_000, Some((2, 0)), Some((0, 2)), None, Some(0)),
                ("pupil", 200_000, Some((0, 0)), Some((0, 0)), None, None),
            ]
        );
        // Until the switch the camera's f0 still flows (the next step up from there is f1), but
        // what flows is already above the estimate: no padding on top.
        assert_eq!(
            round.targets,
            targets(64_000 + 600_000 + 800_000 + 200_000, 2_364_000)
        );
        sub.keyframe("cam", 0);
        let round = sub.round(2_000, Some(1_000_000), None);
        assert_eq!(
            rows(&round)[1],
            (
                "cam",
                336_000,
                Some((0, 2)),
                Some((0, 2)),
                Some((Some(Low), false)),
                None
            )
        );
        assert!(round.tracks[1].quality.unwrap().switched);
    }

    #[test]
    fn a_paused_track_leaves_room_for_the_next_and_resumes_after_the_hold() {
        let mut sub = Subscriber::new(vec![
            track("mic", Audio, LayerBitrates::default()),
            track("cam", TeacherCamera, SIMULCAST),
            track("pupil", PupilVideo, PUPIL),
        ]);
        // The pupil's 200k do not fit beside the camera's q: it is paused and told so at once.
        let round = sub.round(0, Some(300_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("cam", 236_000, None, Some((0, 2)), None, Some(0)),
                ("pupil", 0, None, None, Some((None, true)), None),
            ]
        );
        assert_eq!(round.paused, 1);
        assert!(round.link.any_paused);
        sub.keyframe("cam", 0);
        let round = sub.round(500, Some(300_000), None);
        assert_eq!(
            round.tracks[0].quality.map(|q| q.shown()),
            Some((Some(Low), false))
        );
        assert_eq!(round.tracks[1].quality, None);

        // The link collapses: the camera holds on to q0 for the pause hold, then pauses.
        let round = sub.round(1_000, Some(100_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("cam", 0, Some((0, 0)), Some((0, 0)), None, None),
                ("pupil", 0, None, None, None, None),
            ]
        );
        let round = sub.round(5_000, Some(100_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("cam", 0, None, None, Some((None, true)), None),
                ("pupil", 0, None, None, None, None),
            ]
        );
        assert!(round.tracks[0].quality.unwrap().switched);
        assert_eq!(round.paused, 2);
        assert_eq!(
            round.link,
            LinkReport {
                layers: vec![("cam", None), ("pupil", None)],
                any_paused: true,
            }
        );

        // It recovers. The pupil never started, so it starts at once on the camera's leftovers;
        // the camera resumes only once a layer has fitted for the upgrade hold.
        let round = sub.round(5_500, Some(1_000_000), None);
        assert_eq!(
            rows(&round),
            vec![
                ("cam", 936_000, None, None, None, None),
                ("pupil", 436_000, None, Some((0, 0)), None, Some(0)),
            ]
        );
        let round = sub.round(7_000, Some(1_000_000), None);
        assert_eq!(rows(&round)[0], ("cam", 936_000, None, None, None, None));
        let round = sub.round(7_500, Some(1_000_000), None);
        assert_eq!(
            rows(&round)[0],
            ("cam", 936_000, None, Some((1, 2)), None, Some(1))
        );
        sub.keyframe("cam", 1);
        let round = sub.round(8_000, Some(1_000_000), None);
        let cam = round.tracks[0];
        assert_eq!(cam.quality.map(|q| q.shown()), Some((Some(Medium), false)));
        assert!(cam.quality.unwrap().switched);
        assert_eq!(round.paused, 0);
    }

    #[test]
    fn withheld_and_unplayable_tracks_take_no_bandwidth() {
        let mut screen = track("screen", TeacherScreen, SCREEN);
        screen.allowed = false;
        let mut cam = track("cam", TeacherCamera, SIMULCAST);
        cam.unplayable = true;
        let mut sub = Subscriber::new(vec![
            track("mic", Audio, LayerBitrates::default()),
            screen,
            cam,
            track("pupil", PupilVideo, PUPIL),
        ]);
        let round = sub.round(0, Some(300_000), None);
        // The pupil gets everything after audio, and only it is judged or reported.
        assert_eq!(
            rows(&round),
            vec![("pupil", 236_000, None, Some((0, 0)), None, Some(0))]
        );
        // Padding aims at the pupil's layer with the margins, within the estimate.
        let step = (64_000 + 200_000 * UPGRADE_MARGIN_PERCENT / 100)
            * (100 + PADDING_HEADROOM_PERCENT)
            / 100;
        assert_eq!(round.targets, targets(300_000, step));
        assert_eq!(round.link.layers, vec![("pupil", None)]);
        assert!(!round.link.any_paused);
        // Their selectors were not touched.
        for t in &sub.tracks[1..3] {
            assert_eq!(t.selector.as_ref().unwrap().decision().target, None);
        }
    }

    #[test]
    fn a_cap_bounds_the_layer_and_what_is_probed_for() {
        let mut cam = track("cam", TeacherCamera, SIMULCAST);
        cam.cap = Layer::new(1, 2);
        let mut sub = Subscriber::new(vec![track("mic", Audio, LayerBitrates::default()), cam]);
        let round = sub.round(0, Some(3_000_000), None);
        assert_eq!(
            rows(&round),
            vec![("cam", 2_936_000, None, Some((1, 2)), None, Some(1))]
        );
        let lowest = 80_000 * UPGRADE_MARGIN_PERCENT / 100;
        assert_eq!(
            round.targets,
            targets(
                (64_000 + lowest) * (100 + PADDING_HEADROOM_PERCENT) / 100,
                64_000 + 500_000
            )
        );
        sub.keyframe("cam", 1);
        let round = sub.round(500, Some(3_000_000), None);
        assert_eq!(
            rows(&round),
            vec![(
                "cam",
                2_936_000,
                Some((1, 2)),
                Some((1, 2)),
                Some((Some(Medium), false)),
                None
            )]
        );
        assert_eq!(round.targets, targets(564_000, 564_000));
    }

    #[test]
    fn padding_aims_at_the_largest_picture_the_estimate_claims() {
        let need = |rate: u64| rate * UPGRADE_MARGIN_PERCENT / 100;
        let q2 = Some(Layer::new(0, 2));
        // Room for f1 by the estimate: padding aims at f1, not at h1 first.
        assert_eq!(
            step_up(q2, 3_000_000, &SIMULCAST, &SIMULCAST, Layer::MAX),
            Some(need(1_200_000))
        );
        // Room for neither: the next larger picture.
        assert_eq!(
            step_up(q2, 300_000, &SIMULCAST, &SIMULCAST, Layer::MAX),
            Some(need(400_000))
        );
        // Judged on the peak rate when it is higher.
        let mut peaks = SIMULCAST;
        peaks.0[1][1] = 450_000;
        assert_eq!(
            step_up(q2, 300_000, &SIMULCAST, &peaks, Layer::MAX),
            Some(need(450_000))
        );
        // On the largest picture: the next frame rate, at its rate; at the top: nothing.
        let f1 = Some(Layer::new(2, 1));
        assert_eq!(
            step_up(f1, 3_000_000, &SIMULCAST, &SIMULCAST, Layer::MAX),
            Some(1_500_000)
        );
        assert_eq!(
            step_up(
                Some(Layer::MAX),
                3_000_000,
                &SIMULCAST,
                &SIMULCAST,
                Layer::MAX
            ),
            None
        );
        // Nothing flowing yet: the lowest layer.
        assert_eq!(
            step_up(None, 3_000_000, &SIMULCAST, &SIMULCAST, Layer::MAX),
            Some(need(80_000))
        );
    }

    #[test]
    fn no_padding_while_a_larger_picture_is_awaited_or_the_link_queues() {
        let mut sub = Subscriber::new(vec![
            track("mic", Audio, LayerBitrates::default()),
            track("cam", TeacherCamera, SIMULCAST),
        ]);
        sub.round(0, Some(300_000), None);
        sub.keyframe("cam", 0);
        // On q2 with room for h1: padding loads the link with h1's rate …
        let padded = sub.round(500, Some(700_000), None).targets.minimum;
        assert!(padded > 64_000 + 150_000, "{padded}");
        // … but not while the link shows a queue …
        sub.queued = true;
        assert_eq!(
            sub.round(1_000, Some(700_000), None).targets.minimum,
            64_000 + 150_000
        );
        sub.queued = false;
        // … nor while h's keyframe is awaited (the upgrade comes after the hold).
        let awaiting = (3..12)
            .map(|i| sub.round(i * 500, Some(700_000), None))
            .find(|r| r.tracks[0].keyframe == Some(1));
        let round = awaiting.expect("h is tried within the hold");
        assert_eq!(round.targets.minimum, 64_000 + 150_000);
    }

    #[test]
    fn probing_starts_where_an_upgrade_needs_the_margin() {
        // On q2 (150k) the next step is h1 (400k): an upgrade needs 64k + 400k × 1.2.
        let threshold = 64_000 + 400_000 * UPGRADE_MARGIN_PERCENT / 100;
        let desired = 64_000 + 1_500_000;
        for (estimate, probes) in [(threshold, false), (threshold - 1, true)] {
            let mut sub = Subscriber::new(vec![
                track("mic", Audio, LayerBitrates::default()),
                track("cam", TeacherCamera, SIMULCAST),
            ]);
            // Starts on q2 …
            sub.round(0, Some(300_000), None);
            sub.keyframe("cam", 0);
            // Audio and q2 flow; padding may fill up to the next step with its margins, within
            // the estimate.
            let step = (64_000 + 400_000 * UPGRADE_MARGIN_PERCENT / 100)
                * (100 + PADDING_HEADROOM_PERCENT)
                / 100;
            let want = targets(step.min(estimate), desired);
            assert_eq!(sub.round(500, Some(estimate), None).targets, want);
            assert_eq!(sub.round(1_000, Some(estimate), None).targets, want);
            // A second after the first want, the desired rate dips for one round, which
            // str0m takes as an increase when it comes back.
            let nudged = if probes {
                targets(want.minimum, desired - 1)
            } else {
                want
            };
            assert_eq!(
                sub.round(1_500, Some(estimate), None).targets,
                nudged,
                "estimate {estimate}"
            );
            assert_eq!(sub.round(2_000, Some(estimate), None).targets, want);
        }
    }

    #[test]
    fn video_is_paced_while_the_link_limits_it_or_loses() {
        let mut sub = Subscriber::new(vec![
            track("mic", Audio, LayerBitrates::default()),
            track("cam", TeacherCamera, SIMULCAST),
        ]);
        // Waiting for the first keyframe: the link could carry more than flows.
        assert_eq!(sub.round(0, Some(10_000_000), None).paced, Some(true));
        sub.keyframe("cam", 2);
        // Every layer it asked for: no pacer, unless the link loses.
        assert_eq!(sub.round(500, Some(10_000_000), None).paced, Some(false));
        assert_eq!(
            sub.round(1_000, Some(10_000_000), Some(0.0)).paced,
            Some(false)
        );
        assert_eq!(
            sub.round(1_500, Some(10_000_000), Some(LOSSY_LINK)).paced,
            Some(true)
        );
        // The link collapses: what flows is held back by it.
        assert_eq!(sub.round(2_000, Some(10_000), None).paced, Some(true));
    }

    #[test]
    fn before_any_estimate_the_start_rate_or_everything() {
        let tracks = || {
            vec![
                track("mic", Audio, LayerBitrates::default()),
                track("cam", TeacherCamera, SIMULCAST),
            ]
        };
        let mut sub = Subscriber::new(tracks());
        let round = sub.round(0, None, None);
        assert_eq!(round.estimate, INITIAL_ESTIMATE);
        assert_eq!(rows(&round)[0].3, Some((0, 2)));
        // Without estimation every layer is taken and nothing is paced.
        let mut sub = Subscriber::new(tracks());
        sub.estimating = false;
        let round = sub.round(0, None, Some(0.5));
        assert_eq!(round.estimate, UNESTIMATED);
        assert_eq!(rows(&round)[0].3, Some((2, 2)));
        assert_eq!(round.paced, None);
    }
}
