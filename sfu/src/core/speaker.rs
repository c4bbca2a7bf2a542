//! Who is speaking: each microphone's RFC 6464 audio level, smoothed with hysteresis, and per
//! room the list of speakers, loudest first, reported only when it changes.
//!
//! The level is smoothed the way a level meter's needle moves: it jumps up to a louder packet at
//! once and falls at a fixed rate ([`FALL_DB_PER_SEC`]). An average would not do here, for two
//! reasons seen in the data:
//! - Chromium's fake microphone (what browser tests speak with) sends a 20 ms beep every 500 ms
//!   and silence between; averaged over 300 ms in dB that never looks like speech, and averaged
//!   in linear power it takes seconds to fall below a threshold once the sound stops.
//! - Speech is syllables (−15 to −35 dBov with the browser's gain control) with gaps of 50–300 ms
//!   between words; a needle that falls 50 dB/s bridges those gaps without help.
//!
//! Hysteresis in level and time then decides: speaking once the needle has stayed at or above
//! [`START_DBOV`] for [`ATTACK`], silent once it has stayed below [`STOP_DBOV`] for [`RELEASE`].
//! Silence needs no packets: with DTX a silent microphone sends one packet every 400 ms (level
//! 127, i.e. −127 dBov), or none when withheld or gone, and the needle keeps falling by the
//! clock. The voice-activity flag is not used: Chromium no longer runs a voice detector for it,
//! and the level alone decides consistently for every client.
//!
//! What this costs per packet: a subtraction, a multiplication and a few comparisons on a
//! struct held in the track; no allocation.

use std::time::{Duration, Instant};

use crate::command::Audience;
use crate::ids::ParticipantId;

/// Louder than this (dBov) counts as sound: speech through a browser's gain control is −15 to
/// −35 dBov, a quiet room after its noise suppression below −60.
pub const START_DBOV: f32 = -50.0;
/// Quieter than this (dBov) counts as silence; the gap to [`START_DBOV`] keeps a voice near the
/// threshold from flapping.
pub const STOP_DBOV: f32 = -60.0;
/// How long the level must stay up before a participant is speaking: long enough to pass over a
/// single click, short enough that a pupil given the floor shows as speaking well within 1 s
/// (this, plus the room's evaluation interval, plus the needle's rise, which is instant).
pub const ATTACK: Duration = Duration::from_millis(150);
/// How long the level must stay down before a participant stops speaking: longer than the pause
/// between two sentences, so a speaker does not flap.
pub const RELEASE: Duration = Duration::from_millis(800);
/// How fast the needle falls. A −10 dBov beep every 500 ms stays above [`START_DBOV`]
/// (−35 dBov after 500 ms); speech ending at −25 dBov is below [`STOP_DBOV`] after 0.7 s, and
/// the speaker is silent [`RELEASE`] later, about 1.5 s after the last word.
pub const FALL_DB_PER_SEC: f32 = 50.0;
/// The quietest level RFC 6464 can carry (127 −dBov): digital silence.
pub const SILENCE_DBOV: f32 = -127.0;
/// A change of order alone (same speakers, another loudest) is reported at most this often: the
/// loudest of two people talking over each other changes by the syllable.
pub const REORDER_INTERVAL: Duration = Duration::from_secs(1);

/// One microphone's detector.
#[derive(Debug, Clone)]
pub struct SpeakerDetector {
    /// The needle (dBov) as of `at`.
    level: f32,
    at: Option<Instant>,
    /// Since when the needle has been at or above [`START_DBOV`], or below [`STOP_DBOV`].
    above_since: Option<Instant>,
    below_since: Option<Instant>,
    speaking: bool,
}

impl Default for SpeakerDetector {
    fn default() -> Self {
        SpeakerDetector {
            level: SILENCE_DBOV,
            at: None,
            above_since: None,
            below_since: None,
            speaking: false,
        }
    }
}

impl SpeakerDetector {
    /// An audio packet arrived at `at` with this RFC 6464 level, as str0m reads it: dBov, 0
    /// (loudest) down to −127 (silence). Packets without the extension tell nothing.
    pub fn observe(&mut self, dbov: i8, at: Instant) {
        let now_level = self.level_at(at);
        let packet = f32::from(dbov.clamp(-127, 0));
        self.level = now_level.max(packet);
        if self.at.is_none_or(|t| at > t) {
            self.at = Some(at);
        }
        self.step(at);
    }

    /// Whether the microphone carries speech at `now`, and how loud the needle is if so.
    pub fn evaluate(&mut self, now: Instant) -> Option<f32> {
        let level = self.level_at(now);
        self.level = level;
        if self.at.is_none_or(|t| now > t) {
            self.at = Some(now);
        }
        self.step(now);
        self.speaking.then_some(level)
    }

    /// The needle at `now`: where it was, fallen by the time since.
    fn level_at(&self, now: Instant) -> f32 {
        let Some(at) = self.at else {
            return SILENCE_DBOV;
        };
        let fallen = FALL_DB_PER_SEC * now.saturating_duration_since(at).as_secs_f32();
        (self.level - fallen).max(SILENCE_DBOV)
    }

    fn step(&mut self, now: Instant) {
        let level = self.level;
        if level >= START_DBOV {
            self.above_since.get_or_insert(now);
        } else {
            self.above_since = None;
        }
        if level < STOP_DBOV {
            self.below_since.get_or_insert(now);
        } else {
            self.below_since = None;
        }
        let held = |since: Option<Instant>, need: Duration| {
            since.is_some_and(|t| now.saturating_duration_since(t) >= need)
        };
        if !self.speaking && held(self.above_since, ATTACK) {
            self.speaking = true;
        } else if self.speaking && held(self.below_since, RELEASE) {
            self.speaking = false;
        }
    }
}

/// Whether a microphone with this audience may count as a speaker: a pupil nobody hears is not
/// speaking to the class, whatever it sends.
pub fn counts(audience: Audience) -> bool {
    audience != Audience::Nobody
}

/// One room's speakers as last reported.
#[derive(Debug, Default)]
pub struct RoomSpeakers {
    sent: Vec<ParticipantId>,
    sent_at: Option<Instant>,
    /// Reused every round, so a round allocates only when it reports.
    scratch: Vec<(ParticipantId, f32)>,
}

impl RoomSpeakers {
    /// One evaluation round: `microphones` are (participant, audience, `evaluate`'s result) of
    /// every microphone of the room. Returns the speakers, loudest first, when they differ from
    /// those last reported: at once when someone starts or stops, for a change of order alone
    /// at most once per [`REORDER_INTERVAL`].
    pub fn update(
        &mut self,
        microphones: impl IntoIterator<Item = (ParticipantId, Audience, Option<f32>)>,
        now: Instant,
    ) -> Option<Vec<ParticipantId>> {
        self.scratch.clear();
        for (participant, audience, level) in microphones {
            if let Some(level) = level.filter(|_| counts(audience)) {
                self.scratch.push((participant, level));
            }
        }
        // Loudest first; equal levels in a fixed order, so a tie does not count as a change.
        self.scratch
            .sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // Someone publishing two microphones is one speaker, at the louder one's place.
        let mut n = 0;
        for i in 0..self.scratch.len() {
            let p = self.scratch[i].0;
            if !self.scratch[..n].iter().any(|(q, _)| *q == p) {
                self.scratch[n] = self.scratch[i];
                n += 1;
            }
        }
        self.scratch.truncate(n);

        let same_order = self.sent.len() == n
            && self
                .sent
                .iter()
                .zip(&self.scratch)
                .all(|(a, (b, _))| a == b);
        if same_order {
            return None;
        }
        let same_set =
            self.sent.len() == n && self.scratch.iter().all(|(p, _)| self.sent.contains(p));
        let reorder_due = self
            .sent_at
            .is_none_or(|t| now.saturating_duration_since(t) >= REORDER_INTERVAL);
        if same_set && !reorder_due {
            return None;
        }
        self.sent.clear();
        self.sent.extend(self.scratch.iter().map(|(p, _)| *p));
        self.sent_at = Some(now);
        Some(self.sent.clone())
    }

    /// The speakers last reported.
    pub fn current(&self) -> &[ParticipantId] {
        &self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);
    const PACKET: Duration = Duration::from_millis(20);

    /// Drives one detector through a script: `level(t)` gives the packet sent at `t` (every
    /// 20 ms), `None` for no packet; the room evaluates every 100 ms. Returns (t, speaking) at
    /// every evaluation.
    fn run(until: Duration, level: impl Fn(Duration) -> Option<i8>) -> Vec<(Duration, bool)> {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        let mut next_tick = TICK;
        while t <= until {
            if let Some(l) = level(t) {
                d.observe(l, t0 + t);
            }
            t += PACKET;
            while next_tick <= t {
                out.push((next_tick, d.evaluate(t0 + next_tick).is_some()));
                next_tick += TICK;
            }
        }
        out
    }

    fn first_change(rows: &[(Duration, bool)], from: Duration, to: bool) -> Option<Duration> {
        rows.iter()
            .find(|(t, s)| *t >= from && *s == to)
            .map(|(t, _)| *t)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn speech_is_speaking_within_the_attack_time() {
        let rows = run(ms(2000), |t| Some(if t >= ms(500) { -28 } else { -127 }));
        let start = first_change(&rows, ms(0), true).expect("speaking at some point");
        assert!(
            start >= ms(500) + ATTACK,
            "not before the attack time: {start:?}"
        );
        assert!(
            start <= ms(500) + ATTACK + TICK,
            "within the attack time and one evaluation: {start:?}"
        );
        assert!(rows.iter().filter(|(t, _)| *t >= start).all(|(_, s)| *s));
    }

    #[test]
    fn quiet_background_is_not_speech() {
        let rows = run(ms(5000), |t| {
            // Room noise after noise suppression, with a little variation.
            Some(if (t.as_millis() / 20) % 3 == 0 {
                -62
            } else {
                -70
            })
        });
        assert!(rows.iter().all(|(_, s)| !s), "{rows:?}");
    }

    #[test]
    fn a_short_pause_does_not_flap() {
        // Words with 300 ms gaps (DTX: nothing sent in them), then a 600 ms pause between
        // sentences.
        let rows = run(ms(4000), |t| {
            let in_gap = (ms(900)..ms(1200)).contains(&t)
                || (ms(1700)..ms(2000)).contains(&t)
                || (ms(2500)..ms(3100)).contains(&t);
            (!in_gap).then_some(-30)
        });
        let start = first_change(&rows, ms(0), true).expect("speaking");
        let after: Vec<_> = rows.iter().filter(|(t, _)| *t >= start).collect();
        assert!(after.iter().all(|(_, s)| *s), "flapped: {rows:?}");
    }

    #[test]
    fn dtx_silence_ends_it() {
        // Speech until 1 s, then DTX: one packet of silence every 400 ms.
        let rows = run(ms(4000), |t| {
            if t < ms(1000) {
                Some(-25)
            } else if t.as_millis().is_multiple_of(400) {
                Some(-127)
            } else {
                None
            }
        });
        assert!(rows.iter().any(|(t, s)| *t < ms(1000) && *s));
        let stop = first_change(&rows, ms(1000), false).expect("silent again");
        // Falls from −25 to −60 in 0.7 s, then RELEASE, then one evaluation.
        assert!(
            stop >= ms(1000) + RELEASE,
            "not before the release time: {stop:?}"
        );
        assert!(stop <= ms(1000) + ms(700) + RELEASE + TICK, "{stop:?}");
        assert!(rows.iter().filter(|(t, _)| *t >= stop).all(|(_, s)| !s));
    }

    #[test]
    fn no_packets_at_all_ends_it() {
        // Withheld or gone: the packets stop altogether.
        let rows = run(ms(4000), |t| (t < ms(1000)).then_some(-20));
        let stop = first_change(&rows, ms(1000), false).expect("silent again");
        assert!(stop <= ms(1000) + ms(800) + RELEASE + TICK, "{stop:?}");
    }

    #[test]
    fn the_fake_microphone_beep_is_speech() {
        // Chromium's fake microphone: a 20 ms beep every 500 ms, silence between, from 200 ms.
        let rows = run(ms(4000), |t| {
            let beeping = t >= ms(200) && (t - ms(200)).as_millis().is_multiple_of(500);
            Some(if beeping { -12 } else { -127 })
        });
        let start = first_change(&rows, ms(0), true).expect("speaking");
        assert!(start <= ms(200) + ATTACK + TICK, "{start:?}");
        assert!(
            rows.iter().filter(|(t, _)| *t >= start).all(|(_, s)| *s),
            "the gaps between beeps do not end it: {rows:?}"
        );
    }

    fn p(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    #[test]
    fn loudest_first_and_only_on_change() {
        let t0 = Instant::now();
        let mut room = RoomSpeakers::default();
        let e = Audience::Everyone;
        assert_eq!(room.update([(p(1), e, None), (p(2), e, None)], t0), None);
        assert_eq!(
            room.update([(p(1), e, Some(-30.0)), (p(2), e, Some(-20.0))], t0),
            Some(vec![p(2), p(1)])
        );
        // Nothing changed: nothing to say.
        assert_eq!(
            room.update([(p(1), e, Some(-31.0)), (p(2), e, Some(-21.0))], t0 + TICK),
            None
        );
        // The order alone changed, too soon after the last report.
        assert_eq!(
            room.update(
                [(p(1), e, Some(-10.0)), (p(2), e, Some(-21.0))],
                t0 + 2 * TICK
            ),
            None
        );
        // A set change is reported at once, in the current order.
        assert_eq!(
            room.update(
                [
                    (p(1), e, Some(-10.0)),
                    (p(2), e, Some(-21.0)),
                    (p(3), e, Some(-40.0))
                ],
                t0 + 3 * TICK
            ),
            Some(vec![p(1), p(2), p(3)])
        );
        // A reorder once the interval has passed.
        let later = t0 + 3 * TICK + REORDER_INTERVAL;
        assert_eq!(
            room.update(
                [
                    (p(1), e, Some(-30.0)),
                    (p(2), e, Some(-21.0)),
                    (p(3), e, Some(-40.0))
                ],
                later
            ),
            Some(vec![p(2), p(1), p(3)])
        );
        // Everyone stops.
        assert_eq!(
            room.update([(p(1), e, None), (p(2), e, None)], later + TICK),
            Some(vec![])
        );
        assert_eq!(room.current(), &[] as &[ParticipantId]);
    }

    #[test]
    fn a_withheld_microphone_does_not_count() {
        let t0 = Instant::now();
        let mut room = RoomSpeakers::default();
        assert_eq!(
            room.update(
                [
                    (p(1), Audience::Nobody, Some(-5.0)),
                    (p(2), Audience::Teachers, Some(-30.0)),
                    (p(3), Audience::Everyone, Some(-40.0)),
                ],
                t0
            ),
            Some(vec![p(2), p(3)])
        );
        // Muted while speaking: gone from the list at the next round.
        assert_eq!(
            room.update(
                [
                    (p(1), Audience::Nobody, Some(-5.0)),
                    (p(2), Audience::Nobody, Some(-30.0)),
                    (p(3), Audience::Everyone, Some(-40.0)),
                ],
                t0 + TICK
            ),
            Some(vec![p(3)])
        );
    }

    #[test]
    fn two_microphones_of_one_participant_are_one_speaker() {
        let mut room = RoomSpeakers::default();
        let e = Audience::Everyone;
        assert_eq!(
            room.update(
                [
                    (p(1), e, Some(-40.0)),
                    (p(2), e, Some(-30.0)),
                    (p(1), e, Some(-20.0))
                ],
                Instant::now()
            ),
            Some(vec![p(1), p(2)])
        );
    }
}
