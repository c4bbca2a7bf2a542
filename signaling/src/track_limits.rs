//! How many tracks of each source a participant may publish at once, by role.
//!
//! Every track a participant publishes is offered to everyone else in the room, so one pupil
//! publishing sixteen cameras would cost each classmate sixteen streams. A lesson needs one
//! camera and one microphone per person, and a screen for the teacher.
//!
//! Renegotiation replaces the published set with the tracks listed in the newest offer (a track no
//! longer listed is unpublished), so the listed tracks are every track the participant will have
//! once the offer is applied: the ones already published and the ones it adds.

use crate::protocol::{Source, WireTrackSpec};
use crate::token::Role;

/// The most tracks of `source` a participant of `role` may publish at once.
pub fn max_tracks(role: Role, source: Source) -> usize {
    match (role, source) {
        (Role::PartnerLink, _) => crate::link_host::MAX_LINK_TRACKS,
        (_, Source::Microphone | Source::Camera) => 1,
        (Role::Teacher | Role::PartnerLecturer, Source::Screen) => 1,
        (Role::Student | Role::Observer, Source::Screen) => 0,
    }
}

/// An offer that would publish more of one source than the role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub source: Source,
    pub listed: usize,
    pub max: usize,
}

impl OverLimit {
    /// What the participant is told.
    pub fn message(&self, role: Role) -> String {
        let what = match self.source {
            Source::Microphone => "microphone",
            Source::Camera => "camera",
            Source::Screen => "screen",
        };
        let who = match role {
            Role::Teacher => "a teacher",
            Role::Student => "a student",
            Role::Observer => "an observer",
            Role::PartnerLecturer => "a partner lecturer",
            Role::PartnerLink => "a lesson link",
        };
        match self.max {
            0 => format!("{who} may not publish a {what} track"),
            1 => format!(
                "{who} may publish one {what} track at a time; this offer lists {}",
                self.listed
            ),
            max => format!(
                "{who} may publish at most {max} {what} tracks at a time; this offer lists {}",
                self.listed
            ),
        }
    }
}

/// The first source of which `tracks` (every track the participant will publish, one entry per
/// mid) lists more than `role` may publish.
pub fn check(role: Role, tracks: &[WireTrackSpec]) -> Result<(), OverLimit> {
    for source in [Source::Microphone, Source::Camera, Source::Screen] {
        let listed = tracks.iter().filter(|t| t.source == source).count();
        let max = max_tracks(role, source);
        if listed > max {
            return Err(OverLimit {
                source,
                listed,
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracks(sources: &[Source]) -> Vec<WireTrackSpec> {
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| WireTrackSpec {
                mid: i.to_string(),
                source: *s,
                person: None,
            })
            .collect()
    }

    #[test]
    fn a_pupil_has_one_camera_and_one_microphone_a_teacher_also_a_screen() {
        use Source::*;
        let lesson = tracks(&[Microphone, Camera]);
        for role in [Role::Student, Role::Teacher, Role::Observer] {
            assert_eq!(check(role, &lesson), Ok(()), "{role}");
            assert_eq!(check(role, &[]), Ok(()), "{role}");
        }
        assert_eq!(
            check(Role::Teacher, &tracks(&[Microphone, Camera, Screen])),
            Ok(())
        );

        let second_camera = check(Role::Student, &tracks(&[Microphone, Camera, Camera]));
        let refusal = second_camera.expect_err("a second camera");
        assert_eq!(
            refusal,
            OverLimit {
                source: Camera,
                listed: 2,
                max: 1
            }
        );
        assert!(refusal.message(Role::Student).contains("one camera"));

        let sixteen = check(Role::Student, &tracks(&[Camera; 17])).expect_err("17 cameras");
        assert_eq!(sixteen.listed, 17);

        let mics = check(Role::Teacher, &tracks(&[Microphone, Microphone]));
        assert_eq!(mics.map_err(|e| e.source), Err(Microphone));
        let screens = check(Role::Teacher, &tracks(&[Screen, Screen]));
        assert_eq!(screens.map_err(|e| e.source), Err(Screen));

        let pupil_screen = check(Role::Student, &tracks(&[Screen])).expect_err("a pupil's screen");
        assert_eq!(pupil_screen.max, 0);
        assert_eq!(
            pupil_screen.message(Role::Student),
            "a student may not publish a screen track"
        );
    }
}
