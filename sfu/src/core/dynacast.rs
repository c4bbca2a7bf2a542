//! Dynacast: which simulcast layers a publisher should encode.
//!
//! Encoding a layer nobody receives costs the publisher's CPU and uplink, a school laptop's
//! scarcest resources. After each allocation round the shard asks [`Dynacast::update`] which
//! spatial layers of a track its subscribers need and sends the publisher the active set when it
//! changed. A layer is needed up to the highest one any subscriber targets or receives, plus one
//! above it for a subscriber whose cap allows climbing (so the allocator can see and try it);
//! lower layers always stay on, for quick downswitches and for new subscribers, who start low.
//! A layer that is no longer needed stays on for [`GRACE`], so a subscriber that dips briefly
//! does not make the publisher restart an encoder.

use std::time::{Duration, Instant};

use super::layer::{Decision, Layer, LayerBitrates, MAX_SPATIAL};

/// How long a layer nobody needs keeps being encoded.
pub const GRACE: Duration = Duration::from_secs(5);

/// One subscriber of the track, as dynacast sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Its layer selector's latest decision.
    pub decision: Decision,
    /// The highest layer it asked for.
    pub cap: Layer,
    /// The track's audience admits it.
    pub allowed: bool,
    /// It cannot decode the track's codec.
    pub unplayable: bool,
}

/// What the publisher of one simulcast track was last asked to encode.
#[derive(Debug, Clone, Default)]
pub struct Dynacast {
    /// Active spatial layers as last sent; `None` before the first decision (all active).
    sent: Option<[bool; MAX_SPATIAL]>,
    /// Since when each layer has been unneeded.
    unneeded_since: [Option<Instant>; MAX_SPATIAL],
    /// The best measured rates seen per layer, to judge layers switched off by dynacast.
    remembered: LayerBitrates,
}

impl Dynacast {
    /// Keeps the rates of every spatial layer that is being received, so a paused subscriber
    /// can still be judged after dynacast switched its layers off.
    pub fn remember(&mut self, rates: &LayerBitrates) {
        for (s, row) in rates.0.iter().enumerate() {
            if row[0] > 0 {
                self.remembered.0[s] = *row;
            }
        }
    }

    /// The spatial layers (of `layers` sent) to ask the publisher for, when that changed.
    /// The first decision is silent when it keeps everything on: that is what publishers do.
    pub fn update(
        &mut self,
        now: Instant,
        layers: usize,
        viewers: impl IntoIterator<Item = Viewer>,
    ) -> Option<[bool; MAX_SPATIAL]> {
        if layers < 2 {
            return None;
        }
        let layers = layers.min(MAX_SPATIAL);
        let mut needed_up_to = 0usize;
        for viewer in viewers {
            if viewer.unplayable || !viewer.allowed {
                continue; // It can take none of these layers, or may not.
            }
            let d = viewer.decision;
            let wanted = match (d.target, d.current) {
                (Some(t), _) => t.spatial,
                (None, Some(c)) => c.spatial,
                // Paused or not started: judge with the rates remembered from when the layers
                // were on, so a layer switched off can be asked for again.
                (None, None) => self
                    .remembered
                    .lowest(viewer.cap)
                    .map(|(l, _)| l.spatial)
                    .unwrap_or(0),
            };
            needed_up_to = needed_up_to.max(usize::from(wanted));
            // A subscriber capped higher than it gets now may climb: keep the next layer.
            let headroom = usize::from(viewer.cap.spatial).min(usize::from(wanted) + 1);
            needed_up_to = needed_up_to.max(headroom.min(layers - 1));
        }
        let mut active = self.sent.unwrap_or([true; MAX_SPATIAL]);
        for (s, on) in active.iter_mut().enumerate().take(layers) {
            if s <= needed_up_to {
                self.unneeded_since[s] = None;
                *on = true;
            } else {
                let since = *self.unneeded_since[s].get_or_insert(now);
                if now.saturating_duration_since(since) >= GRACE {
                    *on = false;
                }
            }
        }
        if self.sent == Some(active) {
            return None;
        }
        let first = self.sent.is_none();
        self.sent = Some(active);
        if first && active.iter().all(|a| *a) {
            return None;
        }
        Some(active)
    }
}

/// What a mirror of a track (on another shard than its publisher's) last told the track's owner
/// of its subscribers' wants. The owner keeps the last word and uses it every round, so a word
/// is sent only when it differs from the previous one: a quiet class sends nothing between shards.
#[derive(Debug, Clone, Default)]
pub struct DemandReport {
    sent: Option<Vec<Viewer>>,
}

impl DemandReport {
    /// `viewers`, when the owner must hear them (the first time, or changed since).
    pub fn changed(&mut self, viewers: Vec<Viewer>) -> Option<Vec<Viewer>> {
        if self.sent.as_ref() == Some(&viewers) {
            return None;
        }
        self.sent = Some(viewers.clone());
        Some(viewers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: LayerBitrates = LayerBitrates([
        [80_000, 120_000, 150_000],
        [250_000, 400_000, 500_000],
        [800_000, 1_200_000, 1_500_000],
    ]);

    fn l(layer: Option<(u8, u8)>) -> Option<Layer> {
        layer.map(|(s, t)| Layer::new(s, t))
    }

    /// A subscriber receiving `current`, wanting `target`, capped at spatial `cap`.
    fn viewer(current: Option<(u8, u8)>, target: Option<(u8, u8)>, cap: u8) -> Viewer {
        Viewer {
            decision: Decision {
                current: l(current),
                target: l(target),
                keyframe_needed: false,
                paused: target.is_none(),
            },
            cap: Layer::new(cap, 2),
            allowed: true,
            unplayable: false,
        }
    }

    #[test]
    fn a_mirror_tells_its_owner_only_what_changed() {
        let mut report = DemandReport::default();
        // The first word goes even when nobody watches: the owner may hold an older one.
        assert_eq!(report.changed(Vec::new()), Some(Vec::new()));
        assert_eq!(report.changed(Vec::new()), None);
        let watching = vec![viewer(Some((0, 2)), Some((1, 2)), 2)];
        assert_eq!(report.changed(watching.clone()), Some(watching.clone()));
        for _ in 0..10 {
            assert_eq!(
                report.changed(watching.clone()),
                None,
                "unchanged: not resent"
            );
        }
        let climbed = vec![viewer(Some((1, 2)), Some((1, 2)), 2)];
        assert_eq!(report.changed(climbed.clone()), Some(climbed));
        assert_eq!(report.changed(Vec::new()), Some(Vec::new()), "all left");
    }

    const ON: Option<[bool; 3]> = None;
    const Q: [bool; 3] = [true, false, false];
    const QH: [bool; 3] = [true, true, false];
    const QHF: [bool; 3] = [true, true, true];

    /// At `ms`, these viewers: what is sent to the publisher.
    type Row = (u64, Vec<Viewer>, Option<[bool; 3]>);

    /// Rows over one track of `layers`.
    fn check(dynacast: &mut Dynacast, layers: usize, rows: &[Row]) {
        let t0 = Instant::now();
        for (i, (ms, viewers, want)) in rows.iter().enumerate() {
            let got = dynacast.update(
                t0 + Duration::from_millis(*ms),
                layers,
                viewers.iter().copied(),
            );
            assert_eq!(got, *want, "row {i} at {ms} ms");
        }
    }

    #[test]
    fn the_highest_needed_layer_and_one_above_stay_on() {
        check(
            &mut Dynacast::default(),
            3,
            &[
                // Everything is on at first, and needed: nothing to say.
                (0, vec![viewer(Some((2, 2)), Some((2, 2)), 2)], ON),
                // One on q, one on h: f is the headroom of the one on h.
                (
                    500,
                    vec![
                        viewer(Some((0, 2)), Some((0, 2)), 2),
                        viewer(Some((1, 2)), Some((1, 2)), 2),
                    ],
                    ON,
                ),
                // Both on q: h is the headroom, f is unneeded from now on …
                (
                    1_000,
                    vec![
                        viewer(Some((0, 2)), Some((0, 2)), 2),
                        viewer(Some((0, 1)), Some((0, 1)), 2),
                    ],
                    ON,
                ),
                (5_999, vec![viewer(Some((0, 2)), Some((0, 2)), 2)], ON),
                // … and off after the grace.
                (6_000, vec![viewer(Some((0, 2)), Some((0, 2)), 2)], Some(QH)),
                (6_500, vec![viewer(Some((0, 2)), Some((0, 2)), 2)], ON),
                // A target counts before its keyframe: f comes back at once.
                (
                    7_000,
                    vec![viewer(Some((0, 2)), Some((2, 2)), 2)],
                    Some(QHF),
                ),
            ],
        );
    }

    #[test]
    fn a_cap_limits_the_headroom() {
        check(
            &mut Dynacast::default(),
            3,
            &[
                // A thumbnail: q is all it will take, so h and f go after the grace.
                (0, vec![viewer(Some((0, 2)), Some((0, 2)), 0)], ON),
                (4_999, vec![viewer(Some((0, 2)), Some((0, 2)), 0)], ON),
                (5_000, vec![viewer(Some((0, 2)), Some((0, 2)), 0)], Some(Q)),
                // A larger tile: h as headroom, at once.
                (5_500, vec![viewer(Some((0, 2)), Some((0, 2)), 1)], Some(QH)),
            ],
        );
    }

    #[test]
    fn a_layer_needed_again_within_the_grace_restarts_it() {
        let on_q = || vec![viewer(Some((0, 2)), Some((0, 2)), 2)];
        let on_f = || vec![viewer(Some((2, 2)), Some((2, 2)), 2)];
        check(
            &mut Dynacast::default(),
            3,
            &[
                (0, on_q(), ON),
                (3_000, on_f(), ON),
                (4_000, on_q(), ON),
                (8_999, on_q(), ON),
                (9_000, on_q(), Some(QH)),
            ],
        );
    }

    #[test]
    fn withheld_and_unplayable_subscribers_need_nothing() {
        let mut withheld = viewer(Some((2, 2)), Some((2, 2)), 2);
        withheld.allowed = false;
        let mut unplayable = viewer(None, Some((2, 2)), 2);
        unplayable.unplayable = true;
        check(
            &mut Dynacast::default(),
            3,
            &[
                (0, vec![withheld, unplayable], ON),
                // q stays on for whoever comes next; h goes too, nobody could climb to it.
                (5_000, vec![withheld, unplayable], Some(Q)),
            ],
        );
    }

    #[test]
    fn a_paused_subscriber_is_judged_by_remembered_rates() {
        let paused = || vec![viewer(None, None, 2)];
        // Nothing measured yet: the lowest layer is what it would start on.
        check(
            &mut Dynacast::default(),
            3,
            &[(0, paused(), ON), (5_000, paused(), Some(QH))],
        );
        // The publisher's uplink carries only f: that is what a paused subscriber resumes on,
        // and it stays wanted when its rate is no longer measured.
        let mut dynacast = Dynacast::default();
        dynacast.remember(&LayerBitrates([[0; 3], [0; 3], [800_000, 0, 0]]));
        dynacast.remember(&LayerBitrates::default());
        check(
            &mut dynacast,
            3,
            &[(0, paused(), ON), (5_000, paused(), ON)],
        );
        // Rates seen once keep counting after dynacast switched their layers off.
        let mut dynacast = Dynacast::default();
        dynacast.remember(&SIMULCAST);
        dynacast.remember(&LayerBitrates([[80_000, 0, 0], [0; 3], [0; 3]]));
        assert_eq!(dynacast.remembered.0[2], SIMULCAST.0[2]);
        assert_eq!(dynacast.remembered.0[0], [80_000, 0, 0]);
    }

    #[test]
    fn the_first_decision_speaks_only_when_something_is_off() {
        // Nobody on the track yet: q stays for whoever comes; h and f are off after the
        // grace, and that first change is said.
        check(
            &mut Dynacast::default(),
            3,
            &[
                (0, vec![], ON),
                (5_000, vec![], Some(Q)),
                (9_000, vec![], ON),
            ],
        );
        // Two layers, both needed: silence.
        check(
            &mut Dynacast::default(),
            2,
            &[(0, vec![viewer(Some((1, 2)), Some((1, 2)), 2)], ON)],
        );
    }

    #[test]
    fn a_single_encoding_is_left_alone() {
        check(
            &mut Dynacast::default(),
            1,
            &[(0, vec![], ON), (10_000, vec![], ON), (20_000, vec![], ON)],
        );
    }
}
