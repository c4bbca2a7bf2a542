//! The lesson's rules: its settings, what it remembers of each person, and who receives each of a
//! pupil's tracks.

use std::collections::{HashMap, HashSet};

use classroom_sfu::{Audience, ParticipantId, TrackSource};

use super::chat::RateWindow;
use super::wire::{Cameras, ChatPolicy, Speaking};
use crate::token::Role;

/// The most `last_n` a teacher may set.
pub const MAX_LAST_N: u8 = 16;
/// Identities whose state a room remembers; beyond it, people not present are forgotten.
pub const MAX_PEOPLE: usize = 512;
/// Recent speakers remembered (the wire shows at most [`RECENT_ON_WIRE`]).
pub const MAX_RECENT: usize = MAX_LAST_N as usize;
pub const RECENT_ON_WIRE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub speaking: Speaking,
    pub cameras: Cameras,
    pub chat: ChatPolicy,
    pub last_n: u8,
}

impl Settings {
    pub fn new(last_n: u8) -> Settings {
        Settings {
            speaking: Speaking::default(),
            cameras: Cameras::default(),
            chat: ChatPolicy::default(),
            last_n: last_n.clamp(1, MAX_LAST_N),
        }
    }
}

/// A connected participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pid: ParticipantId,
    pub identity: String,
    pub name: String,
    pub role: Role,
    /// The token carries `Permission::Teacher`.
    pub teacher: bool,
}

impl Member {
    /// Whether the lesson's rules decide who receives this participant's tracks: pupils.
    /// Teachers' and observers' tracks always reach everyone.
    pub fn moderated(&self) -> bool {
        !self.teacher && self.role == Role::Student
    }
}

/// What the lesson remembers of one identity, present or not.
#[derive(Debug, Clone, Default)]
pub struct Person {
    /// (order of raising, when).
    pub hand: Option<(u64, u64)>,
    /// (order of granting, camera shown to the class).
    pub floor: Option<(u64, bool)>,
    pub muted: bool,
    /// Chat messages (five per ten seconds).
    pub chat_rate: RateWindow,
    /// A pupil's own actions (hands, giving the floor back, answers), so that toggling a hand
    /// cannot flood the room with `lesson_state`.
    pub action_rate: RateWindow,
}

impl Person {
    fn is_blank(&self) -> bool {
        self.hand.is_none() && self.floor.is_none() && !self.muted
    }
}

/// Everyone the room remembers, by identity.
#[derive(Debug, Default)]
pub struct People {
    by_identity: HashMap<String, Person>,
}

impl People {
    pub fn get(&self, identity: &str) -> Option<&Person> {
        self.by_identity.get(identity)
    }

    /// The person, remembered from now on. When the room remembers too many, people who are not
    /// present are forgotten first (blank ones before the rest).
    pub fn entry(&mut self, identity: &str, present: &HashSet<&str>) -> &mut Person {
        if !self.by_identity.contains_key(identity) && self.by_identity.len() >= MAX_PEOPLE {
            self.by_identity
                .retain(|id, p| present.contains(id.as_str()) || !p.is_blank());
            if self.by_identity.len() >= MAX_PEOPLE {
                self.by_identity
                    .retain(|id, _| present.contains(id.as_str()));
            }
        }
        self.by_identity.entry(identity.to_owned()).or_default()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Person)> {
        self.by_identity.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

/// Who receives a pupil's microphone: everyone iff not muted and (speaking is open or the pupil
/// holds the floor).
pub fn microphone(settings: &Settings, person: Option<&Person>) -> Audience {
    let muted = person.is_some_and(|p| p.muted);
    let floor = person.is_some_and(|p| p.floor.is_some());
    if !muted && (settings.speaking == Speaking::Open || floor) {
        Audience::Everyone
    } else {
        Audience::Nobody
    }
}

/// Who receives a pupil's camera: the class when it holds the floor with camera, is in the
/// spotlight, or (cameras are class-visible and) is among the last-N speakers or holds the floor;
/// otherwise the teachers.
pub fn camera(
    settings: &Settings,
    identity: &str,
    person: Option<&Person>,
    spotlight: Option<&str>,
    last_n: &HashSet<String>,
) -> Audience {
    let floor = person.and_then(|p| p.floor);
    let shown = floor.is_some_and(|(_, camera)| camera)
        || spotlight == Some(identity)
        || (settings.cameras == Cameras::Class && (floor.is_some() || last_n.contains(identity)));
    if shown {
        Audience::Everyone
    } else {
        Audience::Teachers
    }
}

/// The audience of a track of `member`.
pub fn track(
    settings: &Settings,
    member: &Member,
    source: TrackSource,
    person: Option<&Person>,
    spotlight: Option<&str>,
    last_n: &HashSet<String>,
) -> Audience {
    if !member.moderated() {
        return Audience::Everyone;
    }
    match source {
        TrackSource::Microphone => microphone(settings, person),
        TrackSource::Camera => camera(settings, &member.identity, person, spotlight, last_n),
        // The token forbids pupils' screens; if one got through it reaches teachers only.
        TrackSource::Screen => Audience::Teachers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pupil() -> Member {
        Member {
            pid: ParticipantId(1),
            identity: "s1".into(),
            name: "S".into(),
            role: Role::Student,
            teacher: false,
        }
    }

    #[test]
    fn audience_table() {
        use Audience::*;
        let by_permission = Settings::new(4);
        let open = Settings {
            speaking: Speaking::Open,
            ..by_permission
        };
        let class = Settings {
            cameras: Cameras::Class,
            ..by_permission
        };
        let nobody = HashSet::new();
        let s1: HashSet<String> = ["s1".to_string()].into();
        let plain = Person::default();
        let floor = Person {
            floor: Some((1, false)),
            ..Person::default()
        };
        let floor_cam = Person {
            floor: Some((1, true)),
            ..Person::default()
        };
        let muted = Person {
            muted: true,
            ..Person::default()
        };
        let muted_floor = Person {
            muted: true,
            floor: Some((1, false)),
            ..Person::default()
        };
        let m = TrackSource::Microphone;
        let c = TrackSource::Camera;
        // (settings, person, spotlight, last-N, source, audience)
        type Row<'a> = (
            &'a Settings,
            &'a Person,
            Option<&'a str>,
            &'a HashSet<String>,
            TrackSource,
            Audience,
        );
        let rows: [Row; 16] = [
            (&by_permission, &plain, None, &nobody, m, Nobody),
            (&by_permission, &floor, None, &nobody, m, Everyone),
            (&by_permission, &muted_floor, None, &nobody, m, Nobody),
            (&open, &plain, None, &nobody, m, Everyone),
            (&open, &muted, None, &nobody, m, Nobody),
            (&by_permission, &plain, None, &nobody, c, Teachers),
            (&by_permission, &floor, None, &nobody, c, Teachers),
            (&by_permission, &floor_cam, None, &nobody, c, Everyone),
            (&by_permission, &plain, Some("s1"), &nobody, c, Everyone),
            (&by_permission, &plain, Some("s2"), &nobody, c, Teachers),
            (&by_permission, &plain, None, &s1, c, Teachers),
            (&class, &plain, None, &s1, c, Everyone),
            (&class, &plain, None, &nobody, c, Teachers),
            (&class, &floor, None, &nobody, c, Everyone),
            (&open, &plain, None, &s1, c, Teachers),
            (
                &by_permission,
                &plain,
                None,
                &nobody,
                TrackSource::Screen,
                Teachers,
            ),
        ];
        for (i, (settings, person, spot, last_n, source, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                track(settings, &pupil(), source, Some(person), spot, last_n),
                want,
                "row {i}"
            );
        }
        let teacher = Member {
            teacher: true,
            role: Role::Teacher,
            ..pupil()
        };
        let observer = Member {
            role: Role::Observer,
            ..pupil()
        };
        for who in [&teacher, &observer] {
            for source in [m, c, TrackSource::Screen] {
                assert_eq!(
                    track(&by_permission, who, source, Some(&muted), None, &nobody),
                    Everyone
                );
            }
        }
    }

    #[test]
    fn people_are_bounded_and_present_ones_kept() {
        let mut people = People::default();
        let present: HashSet<&str> = ["keep"].into();
        people.entry("keep", &present).muted = true;
        for i in 0..MAX_PEOPLE * 2 {
            people.entry(&format!("p{i}"), &present).hand = Some((i as u64, 0));
        }
        assert!(people.len() <= MAX_PEOPLE);
        assert!(people.get("keep").is_some_and(|p| p.muted));
    }
}
