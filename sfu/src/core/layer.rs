//! Which simulcast layer one subscriber receives of one video track.
//!
//! The publisher sends up to three spatial layers (rids q/h/f), each with up to three temporal
//! layers (L1T3). A [`LayerSelector`] turns the bitrate budget for the track (from
//! `core::allocator`) into a decision, and takes care of the two things a budget alone does not:
//!
//! - **Hysteresis.** Bandwidth estimates wobble. Going up is only worth it when the budget exceeds
//!   the higher layer's bitrate by a margin for a hold time (1.2× for 2 s by default); going down
//!   happens at once, since an overshoot means loss and freezes for the subscriber.
//! - **Keyframes.** Spatial layers are separate encodings: a switch has to start on a keyframe of
//!   the target layer. Until it comes, the current layer keeps flowing, and the shard asks the
//!   publisher for a keyframe (through `core::throttle`). Temporal layers of one encoding can be
//!   dropped at any frame, so a temporal step down applies at once, even while a spatial switch
//!   waits, which sheds bitrate quickly. (A temporal step up should take effect at a switch point,
//!   see `Vp8Header::is_temporal_switch_point`; that is the packet filter's job.)
//!
//! When not even the lowest layer fits, video pauses (audio is allocated first and continues) and
//! resumes by itself once the lowest layer fits with the margin for the hold time.
//!
//! The selector reads no clock: `now` comes in with every call.

use std::time::{Duration, Instant};

pub const MAX_SPATIAL: usize = 3;
pub const MAX_TEMPORAL: usize = 3;

/// A spatial layer above the lowest one is chosen only with at least this many temporal layers
/// above its base (1: at least half the frame rate). Below that, the next smaller picture at the
/// full frame rate would be the better lesson: a teacher's gestures and lips at 5 fps are hard to
/// follow, while a smaller picture on a tablet is still clear.
///
/// With it, `f` needs about 1.2 Mbit/s of estimate rather than 0.8: the probing in
/// `core::probe` and the shard's allocation round ramp the estimate fast enough for that.
pub const MIN_TEMPORAL_ABOVE_BASE: u8 = 1;

/// Going up needs a budget of the higher layer's rate × this / 100 (the default of
/// [`SelectorConfig::upgrade_margin_percent`]).
pub const UPGRADE_MARGIN_PERCENT: u64 = 120;

/// A switch up to another spatial layer is chosen only when that layer's keyframe, which starts
/// the switch, crosses the link within this time at the track's budget. Until the keyframe has
/// arrived the picture stands still, and the rate a meter measures hides how large keyframes
/// are: Chromium's keyframes of the test camera are 4-5 kB at 320x180, 36-42 kB at 640x360 and
/// 150-240 kB at 1280x720, so on a 0.3 Mbit/s link the middle layer's average fits at half its
/// frame rate while its keyframe takes more than a second. A second is long enough for the full
/// layer on a link of about 2 Mbit/s, which its average needs anyway.
pub const KEYFRAME_TRANSIT: Duration = Duration::from_secs(1);

/// A (spatial, temporal) layer; orders by spatial first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layer {
    pub spatial: u8,
    pub temporal: u8,
}

impl Layer {
    pub const fn new(spatial: u8, temporal: u8) -> Self {
        Layer { spatial, temporal }
    }

    /// The highest layer there can be: no cap.
    pub const MAX: Layer = Layer::new(MAX_SPATIAL as u8 - 1, MAX_TEMPORAL as u8 - 1);

    /// Within `cap` in both dimensions.
    pub fn within(self, cap: Layer) -> bool {
        self.spatial <= cap.spatial && self.temporal <= cap.temporal
    }
}

/// The measured bitrate of each layer, in bits per second, cumulative over the temporal layers
/// of one spatial layer: `(s, t)` is what forwarding temporal layers `0..=t` of `s` costs. Zero
/// means the layer is not being received (not sent, or not yet measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerBitrates(pub [[u64; MAX_TEMPORAL]; MAX_SPATIAL]);

impl LayerBitrates {
    /// The cost of `layer`, or `None` when it is not available.
    pub fn get(&self, layer: Layer) -> Option<u64> {
        let rate = *self
            .0
            .get(usize::from(layer.spatial))?
            .get(usize::from(layer.temporal))?;
        (rate > 0).then_some(rate)
    }

    /// Available layers within `cap`, lowest first.
    pub fn layers(&self, cap: Layer) -> impl Iterator<Item = (Layer, u64)> + '_ {
        (0..MAX_SPATIAL as u8)
            .flat_map(|s| (0..MAX_TEMPORAL as u8).map(move |t| Layer::new(s, t)))
            .filter(move |l| l.within(cap))
            .filter_map(|l| Some((l, self.get(l)?)))
    }

    /// The available layers within `cap` worth choosing as a target, lowest first: every
    /// temporal layer of the lowest spatial layer, and above it only frame rates from
    /// [`MIN_TEMPORAL_ABOVE_BASE`] up (or the only one a layer has).
    pub fn targets(&self, cap: Layer) -> impl Iterator<Item = (Layer, u64)> + '_ {
        let base = self.layers(cap).next().map(|(l, _)| l.spatial);
        self.layers(cap).filter(move |&(l, _)| {
            let top = self
                .layers(cap)
                .filter(|(other, _)| other.spatial == l.spatial)
                .map(|(other, _)| other.temporal)
                .max()
                .unwrap_or(0);
            Some(l.spatial) == base || l.temporal >= top.min(MIN_TEMPORAL_ABOVE_BASE)
        })
    }

    /// The cheapest available layer within `cap`.
    pub fn lowest(&self, cap: Layer) -> Option<(Layer, u64)> {
        self.layers(cap).min_by_key(|&(l, rate)| (rate, l))
    }

    /// The highest target layer (see [`Self::targets`]) within `cap` whose cost, scaled by
    /// `percent`, fits `budget`.
    pub fn best_fit(&self, cap: Layer, budget: u64, percent: u64) -> Option<(Layer, u64)> {
        self.best_fit_where(cap, budget, percent, |_| true)
    }

    /// [`Self::best_fit`] among the layers `allowed` accepts.
    pub fn best_fit_where(
        &self,
        cap: Layer,
        budget: u64,
        percent: u64,
        allowed: impl Fn(Layer) -> bool,
    ) -> Option<(Layer, u64)> {
        self.targets(cap)
            .filter(|&(l, rate)| rate.saturating_mul(percent) / 100 <= budget && allowed(l))
            .max_by_key(|&(l, _)| l)
    }
}

/// The size in bytes of each spatial layer's latest keyframe; 0 where none was seen yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyframeSizes(pub [u64; MAX_SPATIAL]);

impl KeyframeSizes {
    /// Whether a keyframe of `spatial` crosses a link of `budget` bit/s within `within`
    /// (an unknown size is assumed to).
    pub fn crosses(&self, spatial: u8, budget: u64, within: Duration) -> bool {
        let bits = self
            .0
            .get(usize::from(spatial))
            .copied()
            .unwrap_or(0)
            .saturating_mul(8);
        let carried = budget.saturating_mul(within.as_millis() as u64) / 1000;
        bits <= carried
    }
}

/// Tuning of the hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// Going up needs budget ≥ bitrate × this / 100.
    pub upgrade_margin_percent: u64,
    /// … continuously for this long.
    pub upgrade_hold: Duration,
    /// A higher frame rate of the picture size already targeted needs no keyframe and is undone
    /// without one: it needs only this share of its peak rate …
    pub temporal_upgrade_margin_percent: u64,
    /// … for this long.
    pub temporal_upgrade_hold: Duration,
    /// Video pauses only when not even the lowest layer has fitted for this long: an estimate
    /// dips for a moment (a CPU stall, a burst of cross traffic) far more often than a link
    /// really collapses, and a paused picture takes seconds to come back.
    pub pause_hold: Duration,
}

/// A larger picture given up this soon after it was tried counts as a failed try …
pub const FAILED_WITHIN: Duration = Duration::from_secs(10);
/// … and is not tried again for this long, doubling with each failure up to the maximum.
pub const RETRY_AFTER: Duration = Duration::from_secs(20);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(160);

/// How long a larger picture must have fitted before it is tried. The budget it must fit is
/// already a rate the link has carried for two seconds (`core::capacity`), so the hold only
/// rides out a round's noise; judged on the bare estimate it was 2 s.
pub const UPGRADE_HOLD: Duration = Duration::from_millis(500);

impl SelectorConfig {
    /// The hold of the rules before the capacity proof, for tests of the hold's mechanics.
    #[cfg(test)]
    pub fn two_second_hold() -> SelectorConfig {
        SelectorConfig {
            upgrade_hold: Duration::from_secs(2),
            ..SelectorConfig::default()
        }
    }
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            upgrade_margin_percent: UPGRADE_MARGIN_PERCENT,
            upgrade_hold: UPGRADE_HOLD,
            temporal_upgrade_margin_percent: 100,
            temporal_upgrade_hold: Duration::from_secs(1),
            pause_hold: Duration::from_secs(4),
        }
    }
}

/// What the selector wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The layer forwarded now (packets of `current.spatial` with TID ≤ `current.temporal`);
    /// `None` forwards nothing.
    pub current: Option<Layer>,
    /// The layer wanted; differs from `current` in its spatial layer while a keyframe is awaited.
    pub target: Option<Layer>,
    /// A keyframe of `target.spatial` is needed: ask the publisher (throttled).
    pub keyframe_needed: bool,
    /// Layers are available but not even the lowest fits the budget: video is paused.
    pub paused: bool,
}

/// The inputs of one [`LayerSelector::update`].
#[derive(Debug, Clone, Copy)]
pub struct SelectorInput {
    pub now: Instant,
    /// Bits per second this track may use (from the allocator).
    pub budget: u64,
    /// What it may use for a larger picture: its share of the rate the link has shown it
    /// carries (`core::capacity`), never above `budget`.
    pub upgrade_budget: u64,
    pub available: LayerBitrates,
    /// The busiest each layer was lately ([`crate::core::bitrate::LayerMeter::peak_rates`]):
    /// going up must fit even that, with the margin, or the next busy moment undoes it.
    pub peaks: LayerBitrates,
    /// The latest keyframe of each spatial layer: a switch up must be able to carry it.
    pub keyframes: KeyframeSizes,
    /// The highest layer the subscriber wants (its rendered size, its own setting).
    pub cap: Layer,
}

/// Layer selection for one video track towards one subscriber.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    config: SelectorConfig,
    current: Option<Layer>,
    target: Option<Layer>,
    paused: bool,
    /// Per layer, since when the budget has allowed it with the margin (without a break): a layer
    /// that has fitted for the whole hold may be gone up to. Each layer keeps its own clock, so
    /// going up to one does not restart the wait for the next.
    fits_since: [[Option<Instant>; MAX_TEMPORAL]; MAX_SPATIAL],
    /// Since when not even the lowest layer has fitted.
    starved_since: Option<Instant>,
    /// Whether anything was ever targeted: the first start needs no hold.
    started: bool,
    /// The latest larger picture targeted, and when.
    raised: Option<(u8, Instant)>,
    /// A picture size (and those above it) not to be tried again before the instant.
    barred: Option<(u8, Instant)>,
    /// How long the next failure bars its picture size.
    retry_after: Duration,
}

impl LayerSelector {
    pub fn new(config: SelectorConfig) -> Self {
        LayerSelector {
            config,
            current: None,
            target: None,
            paused: false,
            fits_since: [[None; MAX_TEMPORAL]; MAX_SPATIAL],
            starved_since: None,
            started: false,
            raised: None,
            barred: None,
            retry_after: RETRY_AFTER,
        }
    }

    pub fn decision(&self) -> Decision {
        Decision {
            current: self.current,
            target: self.target,
            keyframe_needed: self
                .target
                .is_some_and(|t| self.current.is_none_or(|c| c.spatial != t.spatial)),
            paused: self.paused,
        }
    }

    /// Re-decides from a new budget, new layer bitrates or a new cap.
    pub fn update(&mut self, input: &SelectorInput) -> Decision {
        let SelectorInput {
            now,
            budget,
            upgrade_budget,
            available,
            peaks,
            keyframes,
            cap,
        } = *input;
        // Another spatial layer above the one forwarded (and above the lowest, which has to do
        // whatever its keyframes cost) only when its keyframe crosses the link soon enough.
        let lowest = available.lowest(cap).map(|(l, _)| l.spatial);
        let forwarded = self.current.map(|c| c.spatial);
        let keyframe_fits = |l: Layer| {
            Some(l.spatial) <= forwarded.max(lowest)
                || keyframes.crosses(l.spatial, budget, KEYFRAME_TRANSIT)
        };
        let fit = available
            .best_fit_where(cap, budget, 100, keyframe_fits)
            .map(|(l, _)| l);
        // Which layers the budget allows going up to now: at their peak rate, with the margin
        // (another picture size) or without (a higher frame rate of the targeted size).
        let target_spatial = self.target.map(|t| t.spatial);
        let mut fits_now = [[false; MAX_TEMPORAL]; MAX_SPATIAL];
        // A larger picture must fit what the link has shown it carries; a higher frame rate of
        // the same picture, which needs no keyframe and is undone as cheaply, only the estimate.
        let upgrade_budget = upgrade_budget.min(budget);
        let barred = |l: Layer| {
            self.barred
                .is_some_and(|(s, until)| now < until && l.spatial >= s)
        };
        for (l, rate) in peaks.targets(cap).filter(|&(l, _)| !barred(l)) {
            let (margin, room) = if Some(l.spatial) == target_spatial {
                (self.config.temporal_upgrade_margin_percent, budget)
            } else if target_spatial.is_none() && Some(l.spatial) == lowest {
                // Resuming the smallest picture after a pause is judged on the estimate, as
                // the first start is: a paused link carries too little to prove anything soon.
                (self.config.upgrade_margin_percent, budget)
            } else {
                (self.config.upgrade_margin_percent, upgrade_budget)
            };
            let crosses = Some(l.spatial) <= forwarded.max(lowest)
                || keyframes.crosses(l.spatial, room, KEYFRAME_TRANSIT);
            fits_now[usize::from(l.spatial)][usize::from(l.temporal)] =
                rate.saturating_mul(margin) / 100 <= room && crosses;
        }
        let fits_above = |target: Layer| {
            (0..MAX_SPATIAL)
                .flat_map(|s| (0..MAX_TEMPORAL).map(move |t| (s, t)))
                .any(|(s, t)| fits_now[s][t] && Layer::new(s as u8, t as u8) > target)
        };
        let any_available = lowest.is_some();

        let still_fits =
            |l: Layer| l.within(cap) && available.get(l).is_some_and(|rate| rate <= budget);
        let before = self.target.map(|t| t.spatial);
        match self.target {
            // Start at once at what fits: a new subscriber should see video without delay.
            None if !self.started => self.set_target(fit),
            // Resume from a pause (or from no layers at all) only after the hold.
            None => self.consider_upgrade(now, &fits_now),
            // Down at once.
            Some(t) if !still_fits(t) => {
                self.fits_since = Default::default();
                if fit.is_some() {
                    self.starved_since = None;
                    self.set_target(fit);
                } else {
                    // Hold on to the lowest layer for a while before pausing.
                    let since = *self.starved_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= self.config.pause_hold {
                        self.starved_since = None;
                        self.set_target(None);
                    } else {
                        self.set_target(available.lowest(cap).map(|(l, _)| l));
                    }
                }
            }
            Some(t) if fits_above(t) => self.consider_upgrade(now, &fits_now),
            Some(_) => {
                self.fits_since = Default::default();
                self.starved_since = None;
            }
        }
        self.paused = self.target.is_none() && any_available;
        self.remember_failures(now, before);

        // Temporal steps apply at once; a spatial switch waits for its keyframe, meanwhile the
        // current spatial layer drops temporal layers that do not fit any more.
        self.current = match (self.current, self.target) {
            (_, None) | (None, _) => None,
            (Some(c), Some(t)) if c.spatial == t.spatial => Some(t),
            (Some(c), Some(_)) => {
                // Never stop the picture while waiting: the base layer at least stays.
                let temporal = available
                    .layers(cap)
                    .filter(|&(l, rate)| l.spatial == c.spatial && rate <= budget)
                    .map(|(l, _)| l.temporal)
                    .max()
                    .unwrap_or(0);
                Some(Layer::new(c.spatial, temporal))
            }
        };
        self.decision()
    }

    /// The first packet of a keyframe of `spatial` arrived. If the target waits for it, the switch
    /// happens now: the shard switches the forwarder's and the munger's source to this packet.
    pub fn keyframe(&mut self, spatial: u8) -> Decision {
        if let Some(t) = self.target
            && t.spatial == spatial
            && self.current.is_none_or(|c| c.spatial != spatial)
        {
            self.current = Some(t);
        }
        self.decision()
    }

    /// Goes up to the highest layer that has fitted (`fits_now`, round after round) for its
    /// whole hold.
    fn consider_upgrade(&mut self, now: Instant, fits_now: &[[bool; MAX_TEMPORAL]; MAX_SPATIAL]) {
        let target_spatial = self.target.map(|t| usize::from(t.spatial));
        let mut proven = None;
        for (s, row) in self.fits_since.iter_mut().enumerate() {
            for (t, since) in row.iter_mut().enumerate() {
                if !fits_now[s][t] {
                    *since = None;
                    continue;
                }
                let since = *since.get_or_insert(now);
                let hold = if Some(s) == target_spatial {
                    self.config.temporal_upgrade_hold
                } else {
                    self.config.upgrade_hold
                };
                if now.saturating_duration_since(since) >= hold {
                    proven = Some(Layer::new(s as u8, t as u8)); // Lowest first.
                }
            }
        }
        if proven.is_some() && proven > self.target {
            self.set_target(proven);
        }
    }

    /// A larger picture given up within `FAILED_WITHIN` of being tried was more than the link
    /// carries, whatever the estimate and the proof said (a bucket larger than the proof can
    /// find out): it is not tried again for `retry_after`, which doubles with each such
    /// failure up to `RETRY_AFTER_MAX` and starts over once a larger picture has held.
    fn remember_failures(&mut self, now: Instant, before: Option<u8>) {
        // Only a larger picture than one flowing counts, and only a smaller one as giving it up:
        // the first start and a resume are not tries, a pause has its own rules.
        let after = self.target.map(|t| t.spatial);
        if before.is_some()
            && after > before
            && let Some(s) = after
        {
            self.raised = Some((s, now));
        } else if after.is_some()
            && after < before
            && let Some((s, at)) = self.raised
            && Some(s) == before
        {
            self.raised = None;
            if now.saturating_duration_since(at) < FAILED_WITHIN {
                self.barred = Some((s, now + self.retry_after));
                self.retry_after = (self.retry_after * 2).min(RETRY_AFTER_MAX);
            }
        }
        if self
            .raised
            .is_some_and(|(_, at)| now.saturating_duration_since(at) >= FAILED_WITHIN)
        {
            self.raised = None;
            self.retry_after = RETRY_AFTER;
        }
    }

    fn set_target(&mut self, target: Option<Layer>) {
        self.started |= target.is_some();
        self.target = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// q/h/f at 150k/500k/1.5M for all three temporal layers, the lower ones costing less.
    fn simulcast() -> LayerBitrates {
        LayerBitrates([
            [80_000, 120_000, 150_000],
            [250_000, 400_000, 500_000],
            [800_000, 1_200_000, 1_500_000],
        ])
    }

    #[test]
    fn best_fit_and_lowest() {
        let b = simulcast();
        let rows = [
            (Layer::MAX, 0, 100, None),
            (Layer::MAX, 79_999, 100, None),
            (Layer::MAX, 80_000, 100, Some(Layer::new(0, 0))),
            // h at its base frame rate (250k) fits, but q at the full rate is the better picture.
            (Layer::MAX, 300_000, 100, Some(Layer::new(0, 2))),
            (Layer::MAX, 400_000, 100, Some(Layer::new(1, 1))),
            (Layer::MAX, 500_000, 100, Some(Layer::new(1, 2))),
            (Layer::MAX, 599_999, 120, Some(Layer::new(1, 1))),
            (Layer::MAX, 600_000, 120, Some(Layer::new(1, 2))),
            (Layer::MAX, 3_000_000, 100, Some(Layer::new(2, 2))),
            (Layer::new(1, 2), 3_000_000, 100, Some(Layer::new(1, 2))),
            // The subscriber itself asked for the base frame rate only.
            (Layer::new(2, 0), 3_000_000, 100, Some(Layer::new(2, 0))),
            // Likewise f at a quarter of the frame rate (800k): h at the full rate instead.
            (Layer::MAX, 1_000_000, 100, Some(Layer::new(1, 2))),
        ];
        for (cap, budget, percent, want) in rows {
            assert_eq!(
                b.best_fit(cap, budget, percent).map(|(l, _)| l),
                want,
                "cap {cap:?} budget {budget} at {percent}%"
            );
        }
        assert_eq!(b.lowest(Layer::MAX), Some((Layer::new(0, 0), 80_000)));
        // Only f is sent (the publisher's own uplink decided so).
        let only_f = LayerBitrates([[0; 3], [0; 3], [700_000, 0, 0]]);
        assert_eq!(only_f.lowest(Layer::MAX), Some((Layer::new(2, 0), 700_000)));
        assert_eq!(only_f.get(Layer::new(2, 1)), None);
        assert_eq!(only_f.get(Layer::new(7, 7)), None);
        // A layer sent without temporal layers is a target at its one frame rate.
        let no_temporal = LayerBitrates([[150_000, 0, 0], [500_000, 0, 0], [1_500_000, 0, 0]]);
        assert_eq!(
            no_temporal.best_fit(Layer::MAX, 600_000, 100),
            Some((Layer::new(1, 0), 500_000))
        );
    }

    /// One step: at `ms`, either an update with `budget` or a keyframe of spatial `layer`; then
    /// the expected (current, target, keyframe_needed, paused).
    enum Ev {
        Budget(u64),
        Keyframe(u8),
    }
    use Ev::*;

    type Want = (Option<(u8, u8)>, Option<(u8, u8)>, bool, bool);

    fn run(rows: &[(u64, Ev, Want)]) {
        run_with(simulcast(), Layer::MAX, rows)
    }

    fn run_with(available: LayerBitrates, cap: Layer, rows: &[(u64, Ev, Want)]) {
        run_with_keyframes(available, KeyframeSizes::default(), cap, rows)
    }

    fn run_with_keyframes(
        available: LayerBitrates,
        keyframes: KeyframeSizes,
        cap: Layer,
        rows: &[(u64, Ev, Want)],
    ) {
        let t0 = Instant::now();
        let mut sel = LayerSelector::new(SelectorConfig::two_second_hold());
        let l = |o: Option<(u8, u8)>| o.map(|(s, t)| Layer::new(s, t));
        for (i, (ms, ev, want)) in rows.iter().enumerate() {
            let got = match *ev {
                Budget(budget) => sel.update(&SelectorInput {
                    now: t0 + Duration::from_millis(*ms),
                    budget,
                    upgrade_budget: budget,
                    available,
                    peaks: available,
                    keyframes,
                    cap,
                }),
                Keyframe(s) => sel.keyframe(s),
            };
            let want = Decision {
                current: l(want.0),
                target: l(want.1),
                keyframe_needed: want.2,
                paused: want.3,
            };
            assert_eq!(got, want, "row {i} at {ms} ms");
        }
    }

    #[test]
    fn starts_at_what_fits_after_a_keyframe() {
        run(&[
            (0, Budget(700_000), (None, Some((1, 2)), true, false)),
            (100, Keyframe(0), (None, Some((1, 2)), true, false)),
            (200, Keyframe(1), (Some((1, 2)), Some((1, 2)), false, false)),
        ]);
    }

    #[test]
    fn a_larger_picture_given_up_soon_is_not_tried_again_for_a_while() {
        let t0 = Instant::now();
        let available = simulcast();
        let input = |ms: u64, budget| SelectorInput {
            now: t0 + Duration::from_millis(ms),
            budget,
            upgrade_budget: budget,
            available,
            peaks: available,
            keyframes: KeyframeSizes::default(),
            cap: Layer::MAX,
        };
        let spatial = |d: Decision| d.target.map(|t| t.spatial);
        let mut sel = LayerSelector::new(SelectorConfig::default());
        sel.update(&input(0, 200_000));
        sel.keyframe(0);
        // h2 fits with the margin for the hold: tried, and given up 3 s later.
        sel.update(&input(500, 700_000));
        assert_eq!(spatial(sel.update(&input(1_000, 700_000))), Some(1));
        sel.keyframe(1);
        assert_eq!(spatial(sel.update(&input(4_000, 200_000))), Some(0));
        sel.keyframe(0);
        // Room again, but not for h for 20 s …
        for ms in (4_500..24_000).step_by(500) {
            assert_eq!(spatial(sel.update(&input(ms, 700_000))), Some(0), "{ms}");
        }
        // … then it is tried again; given up as soon, it waits twice as long.
        sel.update(&input(24_000, 700_000));
        assert_eq!(spatial(sel.update(&input(24_500, 700_000))), Some(1));
        sel.keyframe(1);
        assert_eq!(spatial(sel.update(&input(25_000, 200_000))), Some(0));
        sel.keyframe(0);
        for ms in (25_500..65_000).step_by(500) {
            assert_eq!(spatial(sel.update(&input(ms, 700_000))), Some(0), "{ms}");
        }
        sel.update(&input(65_000, 700_000));
        assert_eq!(spatial(sel.update(&input(65_500, 700_000))), Some(1));
        // Held for 10 s: the next failure bars it for 20 s again.
        sel.keyframe(1);
        sel.update(&input(75_500, 700_000));
        assert_eq!(spatial(sel.update(&input(76_000, 200_000))), Some(0));
        sel.keyframe(0);
        sel.update(&input(76_500, 700_000));
        assert_eq!(
            spatial(sel.update(&input(77_000, 700_000))),
            Some(1),
            "not barred"
        );
    }

    #[test]
    fn an_upgrade_goes_no_higher_than_what_fitted_throughout_the_hold() {
        run(&[
            (0, Budget(200_000), (None, Some((0, 2)), true, false)),
            (10, Keyframe(0), (Some((0, 2)), Some((0, 2)), false, false)),
            // h2 fits with the margin: the hold starts …
            (
                1_000,
                Budget(600_000),
                (Some((0, 2)), Some((0, 2)), false, false),
            ),
            // … and a second later even f2 would; but only h2 has fitted for 2 s.
            (
                2_000,
                Budget(2_000_000),
                (Some((0, 2)), Some((0, 2)), false, false),
            ),
            (
                3_000,
                Budget(2_000_000),
                (Some((0, 2)), Some((1, 2)), true, false),
            ),
            (
                3_010,
                Keyframe(1),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            // f2's own hold began at 2 s: going up to h did not restart it.
            (
                3_500,
                Budget(2_000_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            (
                4_000,
                Budget(2_000_000),
                (Some((1, 2)), Some((2, 2)), true, false),
            ),
        ]);
    }

    #[test]
    fn a_higher_frame_rate_of_the_same_picture_needs_no_margin_and_a_shorter_hold() {
        run(&[
            (0, Budget(130_000), (None, Some((0, 1)), true, false)),
            (10, Keyframe(0), (Some((0, 1)), Some((0, 1)), false, false)),
            // q2 (150k) fits 160k without the 1.2 margin (180k): 1 s later it is taken.
            (
                500,
                Budget(160_000),
                (Some((0, 1)), Some((0, 1)), false, false),
            ),
            (
                1_499,
                Budget(160_000),
                (Some((0, 1)), Some((0, 1)), false, false),
            ),
            (
                1_500,
                Budget(160_000),
                (Some((0, 2)), Some((0, 2)), false, false),
            ),
            // Another picture size still needs the margin and the full hold: h1 (400k) at 480k.
            (
                2_000,
                Budget(480_000),
                (Some((0, 2)), Some((0, 2)), false, false),
            ),
            (
                3_000,
                Budget(480_000),
                (Some((0, 2)), Some((0, 2)), false, false),
            ),
            (
                4_000,
                Budget(480_000),
                (Some((0, 2)), Some((1, 1)), true, false),
            ),
        ]);
    }

    #[test]
    fn upgrades_only_when_the_layer_at_its_busiest_fits() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let available = simulcast();
        // h was a quarter busier a moment ago than its smoothed rate says now.
        let mut peaks = available;
        peaks.0[1] = [320_000, 500_000, 625_000];
        let input = |ms, budget| SelectorInput {
            now: at(ms),
            budget,
            upgrade_budget: budget,
            available,
            peaks,
            keyframes: KeyframeSizes::default(),
            cap: Layer::MAX,
        };
        let mut sel = LayerSelector::new(SelectorConfig::two_second_hold());
        sel.update(&input(0, 200_000));
        sel.keyframe(0);
        // 1.2 × h1's smoothed 400k fits 500k, but 1.2 × its peak of 500k does not: stay on q.
        for ms in [500, 1_500, 2_500, 3_500] {
            let d = sel.update(&input(ms, 500_000));
            assert_eq!(d.target, Some(Layer::new(0, 2)), "at {ms} ms");
        }
        // Room for the peak too: up after the hold.
        sel.update(&input(4_000, 700_000));
        let d = sel.update(&input(6_000, 700_000));
        assert_eq!(d.target, Some(Layer::new(1, 1)));
        assert!(d.keyframe_needed);
    }

    #[test]
    fn upgrades_only_after_the_hold_with_margin() {
        run(&[
            (0, Budget(600_000), (None, Some((1, 2)), true, false)),
            (10, Keyframe(1), (Some((1, 2)), Some((1, 2)), false, false)),
            // f0 (800k) fits, but 1.2 × 800k = 960k does not: stay.
            (
                1_000,
                Budget(900_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            (
                5_000,
                Budget(900_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            // With the margin: the hold starts …
            (
                6_000,
                Budget(1_700_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            (
                7_999,
                Budget(1_700_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            // … a dip restarts it …
            (
                9_000,
                Budget(900_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            (
                10_000,
                Budget(1_700_000),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
            // … 2 s later the target moves up to what fits with the margin (f1: 1.44M ≤ 1.7M),
            // while h keeps flowing until f's keyframe.
            (
                12_000,
                Budget(1_700_000),
                (Some((1, 2)), Some((2, 1)), true, false),
            ),
            (
                12_100,
                Keyframe(1),
                (Some((1, 2)), Some((2, 1)), true, false),
            ),
            (
                12_200,
                Keyframe(2),
                (Some((2, 1)), Some((2, 1)), false, false),
            ),
        ]);
    }

    #[test]
    fn downgrades_promptly_temporal_first() {
        run(&[
            (0, Budget(3_000_000), (None, Some((2, 2)), true, false)),
            (10, Keyframe(2), (Some((2, 2)), Some((2, 2)), false, false)),
            // 1.3M: f1 still fits, a temporal step: at once, no keyframe.
            (
                1_000,
                Budget(1_300_000),
                (Some((2, 1)), Some((2, 1)), false, false),
            ),
            // 700k: spatial down to h; until h's keyframe, f drops to its base layer… which
            // (800k) does not fit either, but a picture is better than none while waiting.
            (
                2_000,
                Budget(700_000),
                (Some((2, 0)), Some((1, 2)), true, false),
            ),
            (
                2_100,
                Keyframe(1),
                (Some((1, 2)), Some((1, 2)), false, false),
            ),
        ]);
    }

    #[test]
    fn pauses_and_resumes_by_itself() {
        run(&[
            (0, Budget(200_000), (None, Some((0, 2)), true, false)),
            (10, Keyframe(0), (Some((0, 2)), Some((0, 2)), false, false)),
            // Below q0 (80k): down to q0 at once, held there for the pause hold (a dip).
            (
                1_000,
                Budget(50_000),
                (Some((0, 0)), Some((0, 0)), false, false),
            ),
            (
                4_999,
                Budget(50_000),
                (Some((0, 0)), Some((0, 0)), false, false),
            ),
            // Starved for 4 s: paused, nothing forwarded.
            (5_000, Budget(50_000), (None, None, false, true)),
            // q0 fits but not with the margin (96k): still paused.
            (6_000, Budget(90_000), (None, None, false, true)),
            (6_500, Budget(100_000), (None, None, false, true)),
            (8_499, Budget(100_000), (None, None, false, true)),
            // 2 s with the margin: resume at q0, which needs a keyframe.
            (8_500, Budget(100_000), (None, Some((0, 0)), true, false)),
            (
                8_600,
                Keyframe(0),
                (Some((0, 0)), Some((0, 0)), false, false),
            ),
        ]);
    }

    #[test]
    fn the_cap_and_vanishing_layers_are_respected() {
        // The subscriber renders small: never above h, even with plenty of budget.
        run_with(
            simulcast(),
            Layer::new(1, 2),
            &[
                (0, Budget(10_000_000), (None, Some((1, 2)), true, false)),
                (10, Keyframe(1), (Some((1, 2)), Some((1, 2)), false, false)),
                (
                    5_000,
                    Budget(10_000_000),
                    (Some((1, 2)), Some((1, 2)), false, false),
                ),
            ],
        );
        // No layers at all (the publisher paused its camera): idle, not paused.
        run_with(
            LayerBitrates::default(),
            Layer::MAX,
            &[(0, Budget(10_000_000), (None, None, false, false))],
        );
    }

    #[test]
    fn a_layer_whose_keyframe_would_freeze_the_picture_is_not_switched_up_to() {
        // A 0.3 Mbit/s link: h's average (250k at its base rate) would fit with the margin,
        // but its 40 kB keyframe needs 1.07 s at 300k. q's keyframe costs what it costs.
        let keyframes = KeyframeSizes([24_000, 40_000, 200_000]);
        run_with_keyframes(
            simulcast(),
            keyframes,
            Layer::MAX,
            &[
                (0, Budget(150_000), (None, Some((0, 2)), true, false)),
                (10, Keyframe(0), (Some((0, 2)), Some((0, 2)), false, false)),
                (
                    1_000,
                    Budget(300_000),
                    (Some((0, 2)), Some((0, 2)), false, false),
                ),
                (
                    5_000,
                    Budget(300_000),
                    (Some((0, 2)), Some((0, 2)), false, false),
                ),
                // At 0.5 Mbit/s h's keyframe takes 0.64 s: up after the hold.
                (
                    6_000,
                    Budget(500_000),
                    (Some((0, 2)), Some((0, 2)), false, false),
                ),
                (
                    8_000,
                    Budget(500_000),
                    (Some((0, 2)), Some((1, 1)), true, false),
                ),
                (
                    8_100,
                    Keyframe(1),
                    (Some((1, 1)), Some((1, 1)), false, false),
                ),
            ],
        );
        // Starting out, too: the first picture waits for its keyframe as well.
        run_with_keyframes(
            simulcast(),
            keyframes,
            Layer::MAX,
            &[(0, Budget(320_000), (None, Some((0, 2)), true, false))],
        );
    }
}
