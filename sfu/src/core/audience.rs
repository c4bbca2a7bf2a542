//! Who may receive a track, per subscriber, and what changing that requires.
//!
//! The lesson's rules (signaling) give each track an [`Audience`]; the shard keeps one `allowed`
//! flag per subscription, recomputed from [`admits`] whenever the audience or the subscription
//! changes, so the packet path reads a bool instead of looking anything up. When the flag flips,
//! [`change`] says what the subscription's forwarder must do so the subscriber's stream stays
//! decodable.

use crate::command::Audience;

/// Whether a subscriber receives a track with this audience.
pub fn admits(audience: Audience, subscriber_is_teacher: bool) -> bool {
    match audience {
        Audience::Everyone => true,
        Audience::Teachers => subscriber_is_teacher,
        Audience::Nobody => false,
    }
}

/// What a change of the `allowed` flag asks of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    Same,
    /// Nothing more is sent from the next packet on. Packets already sent stay in the
    /// retransmission cache: answering a NACK for them leaks nothing new.
    Withhold,
    /// Audio resumes at the next packet, continuing the subscriber's stream one sequence number
    /// after the last it got and with its timestamp advanced by the time that passed: the
    /// receiver sees a pause (as with DTX), not loss, and does not NACK the withheld packets.
    ResumeAudio,
    /// Video resumes at the next keyframe, which the publisher is asked for: a decoder that
    /// starts on a delta frame shows garbage, or nothing until the next periodic keyframe.
    ResumeVideoAtKeyframe,
}

/// The change from `was` to `now` for a subscription of a video (`true`) or audio track.
pub fn change(was: bool, now: bool, video: bool) -> Change {
    match (was, now) {
        (true, false) => Change::Withhold,
        (false, true) if video => Change::ResumeVideoAtKeyframe,
        (false, true) => Change::ResumeAudio,
        _ => Change::Same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_admitted() {
        let rows = [
            (Audience::Everyone, false, true),
            (Audience::Everyone, true, true),
            (Audience::Teachers, false, false),
            (Audience::Teachers, true, true),
            (Audience::Nobody, false, false),
            (Audience::Nobody, true, false),
        ];
        for (audience, teacher, want) in rows {
            assert_eq!(
                admits(audience, teacher),
                want,
                "{audience:?} teacher={teacher}"
            );
        }
    }

    #[test]
    fn what_a_change_requires() {
        assert_eq!(change(true, true, true), Change::Same);
        assert_eq!(change(false, false, false), Change::Same);
        assert_eq!(change(true, false, false), Change::Withhold);
        assert_eq!(change(true, false, true), Change::Withhold);
        assert_eq!(change(false, true, false), Change::ResumeAudio);
        assert_eq!(change(false, true, true), Change::ResumeVideoAtKeyframe);
    }
}
