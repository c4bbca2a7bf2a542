//! A seated lesson link's people and limits, as plain state (no sockets): who is on the far
//! side (`link_people`), which of them owns each track a link publishes (`person`), and the
//! links' counters for `/metrics`. The session (`session/link.rs`) carries the outcomes out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use classroom_sfu::ParticipantId;
use classroom_sfu::command::TrackOwner;

use crate::protocol::{LinkPerson, ParticipantInfo, WireTrackSpec};
use crate::token::Role;

/// People one link may bring into a room.
pub const MAX_LINK_PEOPLE: usize = 64;
/// Characters of a remote person's name, and of their reference.
pub const MAX_NAME_CHARS: usize = 64;
/// Tracks one link may publish at once (all its people's together).
pub const MAX_LINK_TRACKS: usize = 32;
/// Tracks one remote person may have at once (microphone, camera, screen).
pub const MAX_TRACKS_PER_PERSON: usize = 3;
/// `link_people` lists one link may send per [`PEOPLE_WINDOW`]. A partner sends a new list only
/// when who publishes on its side changes (a few times as a lesson starts); one that floods
/// would make this server check lists and tell its room of people coming and going for nothing.
pub const PEOPLE_LISTS: usize = 20;
pub const PEOPLE_WINDOW: Duration = Duration::from_secs(10);

/// Which end of the link this server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The partner server dialled in (`link_join`).
    Host,
    /// This server dialled the host; the link is seated here by the dialer.
    Partner,
}

/// One person on the far side, as this room sees them.
#[derive(Debug, Clone)]
struct Remote {
    reference: String,
    info: ParticipantInfo,
    teacher: bool,
}

/// The far side's people of one link.
#[derive(Debug, Default)]
pub(crate) struct People {
    list: Vec<Remote>,
    /// When the lists of the last [`PEOPLE_WINDOW`] came.
    lists: std::collections::VecDeque<Instant>,
}

/// What a new `link_people` list changed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PeopleChange {
    pub joined: Vec<ParticipantInfo>,
    /// Participant ids of those who went.
    pub left: Vec<String>,
}

/// Checks a `link_people` list: its length, names and references.
pub(crate) fn check_people(people: &[LinkPerson]) -> Result<(), String> {
    if people.len() > MAX_LINK_PEOPLE {
        return Err(format!(
            "a link may bring at most {MAX_LINK_PEOPLE} people; this list has {}",
            people.len()
        ));
    }
    for (i, p) in people.iter().enumerate() {
        for (what, text) in [("ref", &p.reference), ("name", &p.name)] {
            let chars = text.chars().count();
            if text.trim().is_empty() || chars > MAX_NAME_CHARS {
                return Err(format!(
                    "people[{i}].{what} must be 1 to {MAX_NAME_CHARS} characters"
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(format!("people[{i}].{what} contains control characters"));
            }
        }
        if people[..i].iter().any(|o| o.reference == p.reference) {
            return Err(format!("people[{i}].ref `{}` is listed twice", p.reference));
        }
    }
    Ok(())
}

/// The longest mid or rid a `link_layers` may name (ours are a few characters).
pub const MAX_LAYER_NAME: usize = 16;

/// Checks a `link_layers` message: a mid and at most three rids, each short and printable.
pub(crate) fn check_layers(mid: &str, active: &[String]) -> Result<(), String> {
    let fine = |s: &str| {
        !s.is_empty() && s.len() <= MAX_LAYER_NAME && s.chars().all(|c| c.is_ascii_graphic())
    };
    if !fine(mid) {
        return Err(format!(
            "mid must be 1 to {MAX_LAYER_NAME} printable ASCII characters"
        ));
    }
    if active.len() > 3 {
        return Err(format!(
            "a track has at most 3 layers; active lists {}",
            active.len()
        ));
    }
    if let Some(bad) = active.iter().position(|r| !fine(r)) {
        return Err(format!(
            "active[{bad}] must be 1 to {MAX_LAYER_NAME} printable ASCII characters"
        ));
    }
    Ok(())
}

impl People {
    /// Counts a new list at `now`, or refuses it: `Err` is how long until one is taken.
    pub fn pace(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .lists
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= PEOPLE_WINDOW)
        {
            self.lists.pop_front();
        }
        match self.lists.front() {
            Some(oldest) if self.lists.len() >= PEOPLE_LISTS => {
                Err((*oldest + PEOPLE_WINDOW).saturating_duration_since(now))
            }
            _ => {
                self.lists.push_back(now);
                Ok(())
            }
        }
    }

    /// Replaces the list with `people` (checked by [`check_people`]). A reference already
    /// known keeps its participant id (and its name: a person is not renamed while seated);
    /// a new one takes `next_id()`.
    pub fn replace(
        &mut self,
        people: Vec<LinkPerson>,
        link_identity: &str,
        school: &str,
        mut next_id: impl FnMut() -> ParticipantId,
    ) -> PeopleChange {
        let mut change = PeopleChange::default();
        let mut old = std::mem::take(&mut self.list);
        for p in people {
            if let Some(i) = old.iter().position(|r| r.reference == p.reference) {
                self.list.push(old.swap_remove(i));
                continue;
            }
            let info = ParticipantInfo {
                participant_id: next_id().to_string(),
                identity: format!("{link_identity}:{}", p.reference),
                name: p.name,
                role: if p.teacher {
                    Role::Teacher
                } else {
                    Role::Student
                },
                school: Some(school.to_owned()),
                remote: true,
            };
            change.joined.push(info.clone());
            self.list.push(Remote {
                reference: p.reference,
                info,
                teacher: p.teacher,
            });
        }
        change.left = old.into_iter().map(|r| r.info.participant_id).collect();
        change
    }

    pub fn infos(&self) -> Vec<ParticipantInfo> {
        self.list.iter().map(|r| r.info.clone()).collect()
    }

    /// Everyone leaves (the link did): their participant ids.
    pub fn drain(&mut self) -> Vec<String> {
        self.list.drain(..).map(|r| r.info.participant_id).collect()
    }

    fn owner(&self, reference: &str) -> Option<TrackOwner> {
        let r = self.list.iter().find(|r| r.reference == reference)?;
        let participant = ParticipantId::parse(&r.info.participant_id)?;
        Some(TrackOwner {
            participant,
            teacher: r.teacher,
        })
    }
}

/// The owner of each track of a publish: `None` for every track of an ordinary participant
/// (which may not name a `person`), the named remote person for each track of a link (which
/// must name one). `Err` is the `bad_request` message.
pub(crate) fn owners(
    link: Option<&People>,
    tracks: &[WireTrackSpec],
) -> Result<Vec<Option<TrackOwner>>, String> {
    let Some(people) = link else {
        if tracks.iter().any(|t| t.person.is_some()) {
            return Err("only a lesson link names a `person` for its tracks".into());
        }
        return Ok(vec![None; tracks.len()]);
    };
    if tracks.len() > MAX_LINK_TRACKS {
        return Err(format!(
            "a link may publish at most {MAX_LINK_TRACKS} tracks; this offer lists {}",
            tracks.len()
        ));
    }
    let mut owners = Vec::with_capacity(tracks.len());
    for t in tracks {
        let Some(reference) = &t.person else {
            return Err(format!(
                "track mid {} names no `person`; a link's tracks each belong to one",
                t.mid
            ));
        };
        let Some(owner) = people.owner(reference) else {
            return Err(format!(
                "track mid {} names `{reference}`, who is not in the link's `link_people`",
                t.mid
            ));
        };
        let theirs = tracks
            .iter()
            .filter(|o| o.person.as_deref() == Some(reference))
            .count();
        if theirs > MAX_TRACKS_PER_PERSON {
            return Err(format!(
                "a person may have at most {MAX_TRACKS_PER_PERSON} tracks; `{reference}` has {theirs}"
            ));
        }
        owners.push(Some(owner));
    }
    Ok(owners)
}

/// Dial outcomes counted in `classroom_link_dials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    /// The host seated the link.
    Connected,
    /// The host refused it (`error` with a `link_*` code).
    Refused,
    /// No answer: the socket could not be opened, or closed before `joined`.
    Failed,
}

impl Dial {
    const ALL: [Dial; 3] = [Dial::Connected, Dial::Refused, Dial::Failed];

    fn label(self) -> &'static str {
        match self {
            Dial::Connected => "connected",
            Dial::Refused => "refused",
            Dial::Failed => "failed",
        }
    }
}

/// The links' counters.
#[derive(Default)]
pub(crate) struct LinkStats {
    host: AtomicUsize,
    partner: AtomicUsize,
    dials: [AtomicU64; Dial::ALL.len()],
}

impl LinkStats {
    fn seated(&self, side: Side) -> &AtomicUsize {
        match side {
            Side::Host => &self.host,
            Side::Partner => &self.partner,
        }
    }

    pub fn entered(&self, side: Side) {
        self.seated(side).fetch_add(1, Ordering::Relaxed);
    }

    pub fn left(&self, side: Side) {
        self.seated(side).fetch_sub(1, Ordering::Relaxed);
    }

    pub fn dialled(&self, result: Dial) {
        if let Some(i) = Dial::ALL.iter().position(|d| *d == result) {
            self.dials[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP classroom_links Lesson links seated now, by this server's side\n# TYPE classroom_links gauge\nclassroom_links{{side=\"host\"}} {}\nclassroom_links{{side=\"partner\"}} {}",
            self.host.load(Ordering::Relaxed),
            self.partner.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP classroom_link_dials_total Lesson link dials to host servers, by result\n# TYPE classroom_link_dials_total counter"
        );
        for (d, n) in Dial::ALL.iter().zip(&self.dials) {
            let _ = writeln!(
                out,
                "classroom_link_dials_total{{result=\"{}\"}} {}",
                d.label(),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Source;

    fn person(r: &str, name: &str, teacher: bool) -> LinkPerson {
        LinkPerson {
            reference: r.into(),
            name: name.into(),
            teacher,
        }
    }

    fn track(mid: &str, person: Option<&str>) -> WireTrackSpec {
        WireTrackSpec {
            mid: mid.into(),
            source: Source::Camera,
            person: person.map(str::to_owned),
        }
    }

    #[test]
    fn layer_wants_are_bounded_and_checked() {
        let rids = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_layers("3", &rids(&["q", "h", "f"])), Ok(()));
        assert_eq!(check_layers("3", &[]), Ok(()));
        assert!(check_layers("", &[]).is_err());
        assert!(check_layers(&"9".repeat(MAX_LAYER_NAME + 1), &[]).is_err());
        assert!(
            check_layers("3", &rids(&["q", "h", "f", "x"]))
                .unwrap_err()
                .contains("at most 3")
        );
        assert!(
            check_layers("3", &rids(&["q", "h f"]))
                .unwrap_err()
                .contains("active[1]")
        );
        assert!(check_layers("3\n", &[]).is_err());
    }

    #[test]
    fn people_lists_are_bounded_and_checked() {
        let many: Vec<LinkPerson> = (0..=MAX_LINK_PEOPLE)
            .map(|i| person(&i.to_string(), "x", false))
            .collect();
        assert!(check_people(&many).unwrap_err().contains("at most 64"));
        assert_eq!(check_people(&many[..MAX_LINK_PEOPLE]), Ok(()));
        let long = "あ".repeat(MAX_NAME_CHARS + 1);
        assert!(check_people(&[person("1", &long, false)]).is_err());
        assert!(check_people(&[person("1", &"あ".repeat(64), false)]).is_ok());
        assert!(check_people(&[person("1", " ", false)]).is_err());
        assert!(check_people(&[person("1", "a\u{7}", false)]).is_err());
        let twice = [person("1", "a", false), person("1", "b", false)];
        assert!(check_people(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn a_new_list_keeps_known_people_and_says_who_came_and_went() {
        let mut people = People::default();
        let mut n = 100;
        let mut next = || {
            n += 1;
            ParticipantId(n)
        };
        let c = people.replace(
            vec![person("7", "山田 花子", false), person("8", "先生", true)],
            "link:L",
            "北小学校",
            &mut next,
        );
        assert_eq!(c.joined.len(), 2);
        assert!(c.left.is_empty());
        assert!(c.joined.iter().all(|p| p.remote));
        assert_eq!(c.joined[0].school.as_deref(), Some("北小学校"));
        assert_eq!(c.joined[1].role, Role::Teacher);
        let kept = c.joined[1].participant_id.clone();
        let gone = c.joined[0].participant_id.clone();
        let c = people.replace(
            vec![person("8", "先生", true), person("9", "鈴木", false)],
            "link:L",
            "北小学校",
            &mut next,
        );
        assert_eq!(c.left, vec![gone]);
        assert_eq!(c.joined.len(), 1);
        assert_eq!(c.joined[0].name, "鈴木");
        assert!(people.infos().iter().any(|p| p.participant_id == kept));
        assert_eq!(people.drain().len(), 2);
        assert!(people.infos().is_empty());
    }

    #[test]
    fn people_lists_are_paced() {
        let t0 = Instant::now();
        let mut people = People::default();
        for i in 0..PEOPLE_LISTS as u64 {
            assert_eq!(people.pace(t0 + Duration::from_millis(i)), Ok(()));
        }
        let wait = people.pace(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, PEOPLE_WINDOW - Duration::from_secs(1));
        // Refused lists do not count: the window frees as the first ones age.
        assert_eq!(people.pace(t0 + PEOPLE_WINDOW), Ok(()));
        assert!(people.pace(t0 + PEOPLE_WINDOW).is_err());
    }

    #[test]
    fn only_a_link_names_owners_and_within_its_limits() {
        assert_eq!(owners(None, &[track("0", None)]), Ok(vec![None]));
        assert!(owners(None, &[track("0", Some("7"))]).is_err());

        let mut people = People::default();
        let mut n = 0;
        people.replace(
            vec![person("7", "a", false), person("8", "t", true)],
            "link:L",
            "S",
            || {
                n += 1;
                ParticipantId(n)
            },
        );
        let o = owners(
            Some(&people),
            &[track("0", Some("7")), track("1", Some("8"))],
        )
        .unwrap();
        assert_eq!(
            o,
            vec![
                Some(TrackOwner {
                    participant: ParticipantId(1),
                    teacher: false
                }),
                Some(TrackOwner {
                    participant: ParticipantId(2),
                    teacher: true
                })
            ]
        );
        assert!(owners(Some(&people), &[track("0", None)]).is_err());
        assert!(owners(Some(&people), &[track("0", Some("nobody"))]).is_err());
        let four: Vec<WireTrackSpec> = (0..4).map(|m| track(&m.to_string(), Some("7"))).collect();
        assert!(
            owners(Some(&people), &four)
                .unwrap_err()
                .contains("at most 3")
        );
        let many: Vec<WireTrackSpec> = (0..=MAX_LINK_TRACKS)
            .map(|m| track(&m.to_string(), Some("7")))
            .collect();
        assert!(
            owners(Some(&people), &many)
                .unwrap_err()
                .contains("at most 32")
        );
    }
}
