//! Sharing one subscriber's bandwidth estimate among the tracks it receives.
//!
//! str0m estimates how much the path to each subscriber carries; the subscriber's tracks compete
//! for it. In a lesson some matter more than others, so the estimate is handed out in a strict
//! priority order: audio first (a fixed small cost; speech must never stop), then the teacher's
//! screen share (text has to stay legible), then the teacher's camera, then the pupils' videos
//! in the order given. Each video track gets the best layer that fits what is left; when not even
//! its lowest layer fits, it is paused and the rest flows on to the next track (a pupil's small
//! video may still fit where the teacher's camera did not).
//!
//! Strict priority is deliberate: a screen share at its best beats a camera at a lower layer. The
//! allocation is a pure function of one [`Snapshot`], with no hysteresis; each track's remaining
//! budget goes to its `core::layer::LayerSelector`, which adds hysteresis and keyframe waiting.
//! Since a selector never exceeds the budget it is given, the sum stays within the estimate.

use super::layer::{Layer, LayerBitrates};

/// What audio is assumed to cost, in bits per second (Opus stereo with in-band FEC, plus RTP).
pub const AUDIO_BPS: u64 = 64_000;

/// A track's place in the priority order (declared from most to least important).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackClass {
    Audio,
    TeacherScreen,
    TeacherCamera,
    PupilVideo,
}

/// One track the subscriber receives, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackDemand<Id> {
    pub id: Id,
    pub class: TrackClass,
    /// Measured layer bitrates (ignored for audio).
    pub layers: LayerBitrates,
    /// The highest layer the subscriber's client wants.
    pub cap: Layer,
}

/// Everything one allocation depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<Id> {
    /// The usable estimate towards the subscriber, in bits per second.
    pub estimate: u64,
    pub tracks: Vec<TrackDemand<Id>>,
}

/// The outcome for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Audio is always sent.
    Audio,
    /// Video at `layer`; `budget` is what was left for this track (at least the layer's cost),
    /// for its layer selector.
    Video { layer: Layer, budget: u64 },
    /// Layers are available, but not even the lowest fits.
    Paused,
    /// Nothing to send: no layer is received from the publisher.
    Idle,
}

/// The lowest layer of a track is kept while what is left covers this share of it. Estimates
/// hover just above what is being sent (GoogCC learns more only by probing), so a strict fit
/// would pause a picture that nearly fits; a little queueing is the better trade.
pub const BASE_LAYER_TOLERANCE_PERCENT: u64 = 70;

/// Allocates the estimate to the tracks; the result is in priority order (stable within a class).
pub fn allocate<Id: Copy>(snapshot: &Snapshot<Id>) -> Vec<(Id, Allocation)> {
    let mut order: Vec<&TrackDemand<Id>> = snapshot.tracks.iter().collect();
    order.sort_by_key(|t| t.class);
    let mut left = snapshot.estimate;
    order
        .into_iter()
        .map(|t| {
            let allocation = if t.class == TrackClass::Audio {
                left = left.saturating_sub(AUDIO_BPS);
                Allocation::Audio
            } else if t.layers.lowest(t.cap).is_none() {
                Allocation::Idle
            } else if let Some((layer, cost)) = t.layers.best_fit(t.cap, left, 100) {
                let budget = left;
                left -= cost;
                Allocation::Video { layer, budget }
            } else if let Some((layer, cost)) = t
                .layers
                .lowest(t.cap)
                .filter(|&(_, cost)| cost * BASE_LAYER_TOLERANCE_PERCENT / 100 <= left)
            {
                let budget = cost;
                left = left.saturating_sub(cost);
                Allocation::Video { layer, budget }
            } else {
                Allocation::Paused
            };
            (t.id, allocation)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulcast q/h/f, ~150k/500k/1.5M at full frame rate.
    const SIMULCAST: LayerBitrates = LayerBitrates([
        [80_000, 120_000, 150_000],
        [250_000, 400_000, 500_000],
        [800_000, 1_200_000, 1_500_000],
    ]);
    /// A pupil's single-layer camera at 200k.
    const PUPIL: LayerBitrates = LayerBitrates([[200_000, 0, 0], [0; 3], [0; 3]]);

    fn track(
        id: &'static str,
        class: TrackClass,
        layers: LayerBitrates,
    ) -> TrackDemand<&'static str> {
        TrackDemand {
            id,
            class,
            layers,
            cap: Layer::MAX,
        }
    }

    fn video(s: u8, t: u8, budget: u64) -> Allocation {
        Allocation::Video {
            layer: Layer::new(s, t),
            budget,
        }
    }

    fn check(tracks: &[TrackDemand<&'static str>], rows: &[(u64, Vec<(&str, Allocation)>)]) {
        for (estimate, want) in rows {
            let got = allocate(&Snapshot {
                estimate: *estimate,
                tracks: tracks.to_vec(),
            });
            assert_eq!(&got, want, "estimate {estimate}");
        }
    }

    #[test]
    fn a_base_layer_that_nearly_fits_is_kept() {
        let snapshot = Snapshot {
            estimate: AUDIO_BPS + 180_000,
            tracks: vec![
                track("a", TrackClass::Audio, LayerBitrates::default()),
                track("p", TrackClass::PupilVideo, PUPIL),
            ],
        };
        assert_eq!(
            allocate(&snapshot),
            vec![
                ("a", Allocation::Audio),
                (
                    "p",
                    Allocation::Video {
                        layer: Layer::new(0, 0),
                        budget: 200_000
                    }
                ),
            ]
        );
        let snapshot = Snapshot {
            estimate: AUDIO_BPS + 130_000,
            ..snapshot
        };
        assert_eq!(allocate(&snapshot)[1], ("p", Allocation::Paused));
    }

    #[test]
    fn one_camera_follows_the_estimate() {
        use TrackClass::*;
        // Audio's 64k come off the top; the camera gets the rest.
        check(
            &[
                track("cam", TeacherCamera, SIMULCAST),
                track("mic", Audio, SIMULCAST),
            ],
            &[
                (
                    300_000,
                    vec![("mic", Allocation::Audio), ("cam", video(0, 2, 236_000))],
                ),
                (
                    800_000,
                    vec![("mic", Allocation::Audio), ("cam", video(1, 2, 736_000))],
                ),
                (
                    3_000_000,
                    vec![("mic", Allocation::Audio), ("cam", video(2, 2, 2_936_000))],
                ),
                (
                    1_300_000,
                    vec![("mic", Allocation::Audio), ("cam", video(2, 1, 1_236_000))],
                ),
                // Below q0: video pauses, audio continues.
                (
                    100_000,
                    vec![("mic", Allocation::Audio), ("cam", Allocation::Paused)],
                ),
                (
                    0,
                    vec![("mic", Allocation::Audio), ("cam", Allocation::Paused)],
                ),
            ],
        );
    }

    #[test]
    fn screen_share_before_camera_before_pupils() {
        use TrackClass::*;
        let tracks = [
            track("pupil-a", PupilVideo, PUPIL),
            track("cam", TeacherCamera, SIMULCAST),
            track("mic", Audio, SIMULCAST),
            track("screen", TeacherScreen, SIMULCAST),
            track("pupil-b", PupilVideo, PUPIL),
        ];
        check(
            &tracks,
            &[
                (
                    3_000_000,
                    vec![
                        ("mic", Allocation::Audio),
                        ("screen", video(2, 2, 2_936_000)),
                        ("cam", video(2, 1, 1_436_000)),
                        ("pupil-a", video(0, 0, 236_000)),
                        ("pupil-b", Allocation::Paused),
                    ],
                ),
                (
                    // The screen keeps its best; the camera takes what is left.
                    1_800_000,
                    vec![
                        ("mic", Allocation::Audio),
                        ("screen", video(2, 2, 1_736_000)),
                        ("cam", video(0, 2, 236_000)),
                        ("pupil-a", Allocation::Paused),
                        ("pupil-b", Allocation::Paused),
                    ],
                ),
                (
                    1_600_000,
                    vec![
                        ("mic", Allocation::Audio),
                        ("screen", video(2, 2, 1_536_000)),
                        ("cam", Allocation::Paused),
                        ("pupil-a", Allocation::Paused),
                        ("pupil-b", Allocation::Paused),
                    ],
                ),
                (
                    50_000,
                    vec![
                        ("mic", Allocation::Audio),
                        ("screen", Allocation::Paused),
                        ("cam", Allocation::Paused),
                        ("pupil-a", Allocation::Paused),
                        ("pupil-b", Allocation::Paused),
                    ],
                ),
            ],
        );
    }

    #[test]
    fn a_paused_track_leaves_room_for_the_next() {
        use TrackClass::*;
        // The teacher's camera only sends f (its uplink is fine, the subscriber's is not).
        let only_f = LayerBitrates([[0; 3], [0; 3], [800_000, 0, 0]]);
        check(
            &[
                track("mic", Audio, SIMULCAST),
                track("cam", TeacherCamera, only_f),
                track("pupil", PupilVideo, PUPIL),
            ],
            &[(
                500_000,
                vec![
                    ("mic", Allocation::Audio),
                    ("cam", Allocation::Paused),
                    ("pupil", video(0, 0, 436_000)),
                ],
            )],
        );
    }

    #[test]
    fn caps_and_idle_tracks() {
        use TrackClass::*;
        let mut cam = track("cam", TeacherCamera, SIMULCAST);
        cam.cap = Layer::new(1, 2); // a small tile: h is enough
        check(
            &[
                cam,
                track("screen", TeacherScreen, LayerBitrates::default()),
                track("pupil", PupilVideo, PUPIL),
            ],
            &[(
                3_000_000,
                vec![
                    ("screen", Allocation::Idle),
                    ("cam", video(1, 2, 3_000_000)),
                    ("pupil", video(0, 0, 2_500_000)),
                ],
            )],
        );
    }
}
