//! The lesson's rules as a sans-IO state machine, one per room: who may speak, who is seen,
//! hands, the floor, chat and the quick check (docs/PROTOCOL.md, "Lesson").
//!
//! Inputs are values — a participant's arrival or departure, an action with the actor, tracks
//! published, the media plane's active speakers, the time in milliseconds — and the output is an
//! [`Outcome`]: messages for participants, audience changes for the media plane, and events for
//! metrics and chat retention. `crate::lessons` does the I/O. State is kept by identity, so a
//! pupil who reconnects finds its hand, floor and mute as they were.

pub mod chat;
pub mod quick_check;
pub mod state;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};

use classroom_sfu::{Audience, ParticipantId, TrackId, TrackSource};

use crate::protocol::{ErrorCode, ServerMessage};
use crate::token::Permission;
use chat::{ChatLog, TextError};
use quick_check::QuickCheck;
use state::{Member, People, Settings};
use wire::{
    Action, ChatMessage, ChatPolicy, ChatTo, FloorEntry, HandEntry, LessonState, Speaking, You,
};

/// A pupil's own actions allowed per [`ACTION_WINDOW_MS`].
pub const ACTION_COUNT: usize = 20;
pub const ACTION_WINDOW_MS: u64 = 10_000;

/// What a change produced, to be carried out by the caller in this order: audiences first (so
/// that a revoke is enforced before the room hears of it), then messages.
#[derive(Debug, Default)]
pub struct Outcome {
    pub audiences: Vec<(TrackId, Audience)>,
    pub messages: Vec<(ParticipantId, ServerMessage)>,
    pub events: Vec<Event>,
}

/// What happened, for metrics and chat retention.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    HandRaised,
    FloorGranted,
    /// This many pupils were muted.
    Muted(u32),
    /// A message, and its writer's identity (the token's subject) for a kept record.
    Chat(ChatMessage, String),
    ChatDeleted(String),
    SpeakersChanged,
    QuickCheckOpened,
}

/// Why an action was refused: the `error` the actor receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub permission: Option<Permission>,
    pub message: String,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        permission: None,
        message: message.into(),
    }
}

fn teachers_only(what: &str) -> Refused {
    Refused {
        code: ErrorCode::PermissionDenied,
        permission: Some(Permission::Teacher),
        message: format!("only a teacher may {what}"),
    }
}

#[derive(Debug, Clone, Copy)]
struct TrackEntry {
    owner: ParticipantId,
    source: TrackSource,
    audience: Audience,
}

/// One room's lesson.
#[derive(Debug)]
pub struct Lesson {
    settings: Settings,
    /// Connected participants in order of joining; an identity may appear twice for the moment
    /// a rejoin replaces its old session.
    members: Vec<Member>,
    people: People,
    spotlight: Option<String>,
    /// Identities speaking now, loudest first.
    speakers: Vec<String>,
    /// Identities that spoke, most recent first, at most [`state::MAX_RECENT`].
    recent: VecDeque<String>,
    check: Option<QuickCheck>,
    checks_opened: u64,
    chat: ChatLog,
    tracks: HashMap<TrackId, TrackEntry>,
    /// Orders hands and floor grants.
    seq: u64,
}

impl Lesson {
    /// A lesson with the default rules and `last_n` from the server's configuration.
    pub fn new(last_n: u8) -> Lesson {
        Lesson {
            settings: Settings::new(last_n),
            members: Vec::new(),
            people: People::default(),
            spotlight: None,
            speakers: Vec::new(),
            recent: VecDeque::new(),
            check: None,
            checks_opened: 0,
            chat: ChatLog::default(),
            tracks: HashMap::new(),
            seq: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A participant arrived: it gets `lesson_state` and `chat_history`; the others get
    /// `lesson_state` when its remembered state shows in the lists again.
    pub fn join(&mut self, member: Member) -> Outcome {
        let mut out = Outcome::default();
        let identity = member.identity.clone();
        let pid = member.pid;
        let teacher = member.teacher;
        self.members.push(member);
        self.recompute(&mut out);
        if self.shows_in_lists(&identity) {
            self.broadcast_state(&mut out);
        } else if let Some(m) = self.member(pid) {
            out.messages
                .push((pid, ServerMessage::LessonState(self.render(m))));
        }
        out.messages.push((
            pid,
            ServerMessage::ChatHistory {
                messages: self.chat.history(&identity, teacher),
            },
        ));
        out
    }

    /// `pid` came back on a new socket (a resume within grace): it is still a member, but the
    /// new socket has seen none of the lesson yet.
    pub fn resumed(&self, pid: ParticipantId) -> Outcome {
        let mut out = Outcome::default();
        if let Some(m) = self.member(pid) {
            out.messages
                .push((pid, ServerMessage::LessonState(self.render(m))));
            out.messages.push((
                pid,
                ServerMessage::ChatHistory {
                    messages: self.chat.history(&m.identity, m.teacher),
                },
            ));
        }
        out
    }

    /// A participant's session ended. Its identity's state stays for a rejoin.
    pub fn leave(&mut self, pid: ParticipantId) -> Outcome {
        let mut out = Outcome::default();
        let Some(i) = self.members.iter().position(|m| m.pid == pid) else {
            return out;
        };
        let gone = self.members.remove(i);
        self.tracks.retain(|_, t| t.owner != pid);
        self.recompute(&mut out);
        let still_here = self.members.iter().any(|m| m.identity == gone.identity);
        if !still_here
            && (self.shows_in_lists(&gone.identity) || self.speakers.contains(&gone.identity))
        {
            self.speakers.retain(|s| *s != gone.identity);
            self.broadcast_state(&mut out);
        }
        out
    }

    /// Who receives a track `pid` is about to publish.
    pub fn audience(&self, pid: ParticipantId, source: TrackSource) -> Audience {
        match self.member(pid) {
            Some(m) => self.audience_of(m, source),
            // Not a member (it left meanwhile): nobody, the safe side.
            None => Audience::Nobody,
        }
    }

    /// Tracks were published with the audiences given; any that the lesson changed meanwhile
    /// are corrected.
    pub fn tracks_added(
        &mut self,
        pid: ParticipantId,
        tracks: &[(TrackId, TrackSource, Audience)],
    ) -> Outcome {
        let mut out = Outcome::default();
        if self.member(pid).is_none() {
            return out;
        }
        for (track, source, audience) in tracks {
            self.tracks.insert(
                *track,
                TrackEntry {
                    owner: pid,
                    source: *source,
                    audience: *audience,
                },
            );
        }
        self.recompute(&mut out);
        out
    }

    pub fn tracks_removed(&mut self, tracks: &[TrackId]) {
        for t in tracks {
            self.tracks.remove(t);
        }
    }

    /// The media plane's active speakers changed.
    pub fn speakers(&mut self, speakers: &[ParticipantId]) -> Outcome {
        let mut out = Outcome::default();
        let mut now: Vec<String> = Vec::with_capacity(speakers.len());
        for pid in speakers {
            if let Some(m) = self.member(*pid)
                && !now.contains(&m.identity)
            {
                now.push(m.identity.clone());
            }
        }
        let before = self.last_n_set();
        for identity in now.iter().rev() {
            self.recent.retain(|r| r != identity);
            self.recent.push_front(identity.clone());
        }
        self.recent.truncate(state::MAX_RECENT);
        self.speakers = now;
        out.events.push(Event::SpeakersChanged);
        self.recompute(&mut out);
        let after = self.last_n_set();
        let msg = ServerMessage::ActiveSpeakers {
            speakers: self.pids_of(self.speakers.iter()),
            recent: self
                .pids_of(self.recent.iter())
                .into_iter()
                .take(state::RECENT_ON_WIRE)
                .collect(),
        };
        for m in &self.members {
            out.messages.push((m.pid, msg.clone()));
        }
        // Pupils who came into or left the last-N see it in their own `you.camera_to_class`.
        let moved: HashSet<&String> = before.symmetric_difference(&after).collect();
        for m in self.members.iter().filter(|m| moved.contains(&m.identity)) {
            out.messages
                .push((m.pid, ServerMessage::LessonState(self.render(m))));
        }
        out
    }

    /// An action by `actor` at `now_ms` (milliseconds since the epoch).
    pub fn act(
        &mut self,
        actor: ParticipantId,
        action: Action,
        now_ms: u64,
    ) -> Result<Outcome, Refused> {
        let Some(me) = self.member(actor).cloned() else {
            return Err(refused(ErrorCode::NotJoined, "join first"));
        };
        let mut out = Outcome::default();
        match action {
            Action::RaiseHand => {
                self.pupil_rate(&me, now_ms)?;
                let seq = self.next_seq();
                let p = self.person(&me.identity);
                if p.hand.is_none() {
                    p.hand = Some((seq, now_ms));
                    out.events.push(Event::HandRaised);
                }
            }
            Action::LowerHand { participant_id } => {
                let who = self.own_or_teacher(
                    &me,
                    participant_id.as_deref(),
                    "lower someone else's hand",
                    now_ms,
                )?;
                self.person(&who).hand = None;
            }
            Action::GrantFloor {
                participant_id,
                camera,
            } => {
                require_teacher(&me, "give the floor")?;
                let who = self.target(&participant_id)?;
                let seq = self.next_seq();
                let p = self.person(&who);
                let seq = p.floor.map_or(seq, |(s, _)| s);
                p.floor = Some((seq, camera));
                p.hand = None;
                p.muted = false;
                out.events.push(Event::FloorGranted);
            }
            Action::RevokeFloor { participant_id } => {
                let who = self.own_or_teacher(
                    &me,
                    participant_id.as_deref(),
                    "take the floor from someone",
                    now_ms,
                )?;
                self.person(&who).floor = None;
            }
            Action::Mute { participant_id } => {
                require_teacher(&me, "mute someone")?;
                let pid = self.target_pid(&participant_id)?;
                let Some(target) = self.member(pid).cloned() else {
                    return Err(not_found_participant(&participant_id));
                };
                if !target.moderated() {
                    return Err(refused(ErrorCode::BadRequest, "only pupils can be muted"));
                }
                let p = self.person(&target.identity);
                p.muted = true;
                p.floor = None;
                out.events.push(Event::Muted(1));
            }
            Action::MuteAll => {
                require_teacher(&me, "mute everyone")?;
                let pupils: Vec<String> = self
                    .members
                    .iter()
                    .filter(|m| m.moderated())
                    .map(|m| m.identity.clone())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                for who in &pupils {
                    self.person(who).muted = true;
                }
                for (_, p) in self.people.iter_mut() {
                    p.floor = None;
                }
                out.events.push(Event::Muted(pupils.len() as u32));
            }
            Action::Unmute { participant_id } => {
                let own = match participant_id.as_deref() {
                    None => true,
                    Some(id) => ParticipantId::parse(id)
                        .and_then(|pid| self.member(pid))
                        .is_some_and(|m| m.identity == me.identity),
                };
                if own {
                    if me.moderated() && self.settings.speaking != Speaking::Open {
                        return Err(Refused {
                            code: ErrorCode::PermissionDenied,
                            permission: Some(Permission::Teacher),
                            message: "the teacher decides who speaks in this lesson: raise your \
                                      hand and wait for the floor"
                                .into(),
                        });
                    }
                    self.pupil_rate(&me, now_ms)?;
                    self.person(&me.identity).muted = false;
                } else {
                    require_teacher(&me, "unmute someone")?;
                    let id = participant_id.unwrap_or_default();
                    let who = self.target(&id)?;
                    self.person(&who).muted = false;
                }
            }
            Action::SetLesson {
                speaking,
                cameras,
                chat,
                last_n,
            } => {
                require_teacher(&me, "change the lesson's rules")?;
                let last_n = match last_n {
                    None => None,
                    Some(n) if (1..=u32::from(state::MAX_LAST_N)).contains(&n) => Some(n as u8),
                    Some(n) => {
                        return Err(refused(
                            ErrorCode::BadRequest,
                            format!("last_n must be 1 to {}, not {n}", state::MAX_LAST_N),
                        ));
                    }
                };
                let s = &mut self.settings;
                s.speaking = speaking.unwrap_or(s.speaking);
                s.cameras = cameras.unwrap_or(s.cameras);
                s.chat = chat.unwrap_or(s.chat);
                s.last_n = last_n.unwrap_or(s.last_n);
            }
            Action::Spotlight { participant_id } => {
                require_teacher(&me, "spotlight someone")?;
                self.spotlight = match participant_id {
                    None => None,
                    Some(id) => Some(self.target(&id)?),
                };
            }
            Action::Chat { to, text } => {
                let text = chat::clean_text(&text).map_err(|e| match e {
                    TextError::Empty => {
                        refused(ErrorCode::BadRequest, "a chat message needs some text")
                    }
                    TextError::TooLong(n) => refused(
                        ErrorCode::ChatTooLong,
                        format!(
                            "a chat message may have at most {} characters, this one has {n}",
                            chat::MAX_CHARS
                        ),
                    ),
                })?;
                if to == ChatTo::All && !me.teacher && self.settings.chat == ChatPolicy::TeacherOnly
                {
                    return Err(refused(
                        ErrorCode::ChatClosed,
                        "the teacher has closed the chat to the class; you can still write to the teacher",
                    ));
                }
                if let Err(ms) = self.person(&me.identity).chat_rate.take(now_ms) {
                    return Err(refused(
                        ErrorCode::RateLimited,
                        format!(
                            "at most {} chat messages per {} seconds; try again in {:.1} s",
                            chat::RATE_COUNT,
                            chat::RATE_WINDOW_MS / 1000,
                            ms as f64 / 1000.0
                        ),
                    ));
                }
                let logged = self
                    .chat
                    .push(
                        ChatMessage {
                            message_id: String::new(),
                            from: me.pid.to_string(),
                            name: me.name.clone(),
                            role: me.role,
                            to,
                            text,
                            at_ms: now_ms,
                        },
                        me.identity.clone(),
                    )
                    .clone();
                for m in self
                    .members
                    .iter()
                    .filter(|m| logged.visible_to(&m.identity, m.teacher))
                {
                    out.messages.push((
                        m.pid,
                        ServerMessage::Chat {
                            message: logged.message.clone(),
                        },
                    ));
                }
                out.events
                    .push(Event::Chat(logged.message, logged.identity));
                // Chat changes no rule: no `lesson_state`.
                return Ok(out);
            }
            Action::DeleteChat { message_id } => {
                require_teacher(&me, "remove a chat message")?;
                let Some(logged) = self.chat.remove(&message_id) else {
                    return Err(refused(
                        ErrorCode::NotFound,
                        format!("no chat message {message_id} in this lesson"),
                    ));
                };
                for m in self
                    .members
                    .iter()
                    .filter(|m| logged.visible_to(&m.identity, m.teacher))
                {
                    out.messages.push((
                        m.pid,
                        ServerMessage::ChatDeleted {
                            message_id: message_id.clone(),
                        },
                    ));
                }
                out.events.push(Event::ChatDeleted(message_id));
                return Ok(out);
            }
            Action::QuickCheck { question, options } => {
                require_teacher(&me, "ask a quick check")?;
                let id = format!("q{}", self.checks_opened + 1);
                let check = quick_check::open(id, &question, &options)
                    .map_err(|e| refused(ErrorCode::BadRequest, e))?;
                self.checks_opened += 1;
                self.check = Some(check);
                out.events.push(Event::QuickCheckOpened);
            }
            Action::AnswerCheck { check_id, option } => {
                if me.teacher {
                    return Err(refused(
                        ErrorCode::BadRequest,
                        "teachers ask quick checks; pupils answer them",
                    ));
                }
                self.pupil_rate(&me, now_ms)?;
                let Some(check) = self.check.as_mut().filter(|c| c.check_id == check_id) else {
                    return Err(refused(
                        ErrorCode::NotFound,
                        format!("quick check {check_id} is not open"),
                    ));
                };
                check
                    .answer(&me.identity, option)
                    .map_err(|e| refused(ErrorCode::BadRequest, e))?;
                // Only the teachers' tally and the pupil's own answer changed.
                for m in self
                    .members
                    .iter()
                    .filter(|m| m.teacher || m.identity == me.identity)
                {
                    out.messages
                        .push((m.pid, ServerMessage::LessonState(self.render(m))));
                }
                return Ok(out);
            }
            Action::CloseCheck => {
                require_teacher(&me, "close a quick check")?;
                self.check = None;
            }
        }
        self.recompute(&mut out);
        self.broadcast_state(&mut out);
        Ok(out)
    }

    fn member(&self, pid: ParticipantId) -> Option<&Member> {
        self.members.iter().find(|m| m.pid == pid)
    }

    /// The newest session of an identity.
    fn current(&self, identity: &str) -> Option<&Member> {
        self.members.iter().rev().find(|m| m.identity == identity)
    }

    fn pids_of<'a>(&self, identities: impl Iterator<Item = &'a String>) -> Vec<String> {
        identities
            .filter_map(|i| self.current(i))
            .map(|m| m.pid.to_string())
            .collect()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn person(&mut self, identity: &str) -> &mut state::Person {
        let present: HashSet<&str> = self.members.iter().map(|m| m.identity.as_str()).collect();
        self.people.entry(identity, &present)
    }

    fn pupil_rate(&mut self, me: &Member, now_ms: u64) -> Result<(), Refused> {
        if me.teacher {
            return Ok(());
        }
        self.person(&me.identity)
            .action_rate
            .take_of(now_ms, ACTION_COUNT, ACTION_WINDOW_MS)
            .map_err(|ms| {
                refused(
                    ErrorCode::RateLimited,
                    format!("too many actions; try again in {:.1} s", ms as f64 / 1000.0),
                )
            })
    }

    fn target_pid(&self, participant_id: &str) -> Result<ParticipantId, Refused> {
        ParticipantId::parse(participant_id)
            .filter(|pid| self.member(*pid).is_some())
            .ok_or_else(|| not_found_participant(participant_id))
    }

    /// The identity of a participant in the room now.
    fn target(&self, participant_id: &str) -> Result<String, Refused> {
        let pid = self.target_pid(participant_id)?;
        self.member(pid)
            .map(|m| m.identity.clone())
            .ok_or_else(|| not_found_participant(participant_id))
    }

    /// The actor's own identity when `participant_id` is absent or its own; else a teacher's
    /// target.
    /// Whose hand or floor an action names: the sender's own (counted against its action rate),
    /// or, for a teacher, anyone's.
    fn own_or_teacher(
        &mut self,
        me: &Member,
        participant_id: Option<&str>,
        what: &str,
        now_ms: u64,
    ) -> Result<String, Refused> {
        let own = participant_id.is_none_or(|id| {
            ParticipantId::parse(id)
                .and_then(|pid| self.member(pid))
                .is_some_and(|m| m.identity == me.identity)
        });
        if own {
            self.pupil_rate(me, now_ms)?;
            return Ok(me.identity.clone());
        }
        require_teacher(me, what)?;
        self.target(participant_id.unwrap_or_default())
    }

    /// Present pupils among the last-N recent speakers.
    fn last_n_set(&self) -> HashSet<String> {
        self.recent
            .iter()
            .filter(|i| self.current(i).is_some_and(|m| m.moderated()))
            .take(usize::from(self.settings.last_n))
            .cloned()
            .collect()
    }

    fn audience_of(&self, m: &Member, source: TrackSource) -> Audience {
        state::track(
            &self.settings,
            m,
            source,
            self.people.get(&m.identity),
            self.spotlight.as_deref(),
            &self.last_n_set(),
        )
    }

    /// Sets every track's audience from the rules; changed ones go to the media plane.
    fn recompute(&mut self, out: &mut Outcome) {
        let last_n = self.last_n_set();
        let mut changed = Vec::new();
        for (id, t) in &self.tracks {
            let Some(m) = self.member(t.owner) else {
                continue;
            };
            let want = state::track(
                &self.settings,
                m,
                t.source,
                self.people.get(&m.identity),
                self.spotlight.as_deref(),
                &last_n,
            );
            if want != t.audience {
                changed.push((*id, want));
            }
        }
        changed.sort_by_key(|(id, _)| *id);
        for (id, audience) in changed {
            if let Some(t) = self.tracks.get_mut(&id) {
                t.audience = audience;
            }
            out.audiences.push((id, audience));
        }
    }

    /// Whether an identity appears in what `lesson_state` lists.
    fn shows_in_lists(&self, identity: &str) -> bool {
        self.spotlight.as_deref() == Some(identity)
            || self
                .people
                .get(identity)
                .is_some_and(|p| p.hand.is_some() || p.floor.is_some() || p.muted)
            || self.last_n_set().contains(identity)
    }

    fn broadcast_state(&self, out: &mut Outcome) {
        for m in &self.members {
            out.messages
                .push((m.pid, ServerMessage::LessonState(self.render(m))));
        }
    }

    /// `lesson_state` as `m` sees it.
    pub fn render(&self, m: &Member) -> LessonState {
        let mut hands = Vec::new();
        let mut floor = Vec::new();
        let mut muted = Vec::new();
        // Each present identity once, by its newest session.
        let mut seen = HashSet::new();
        for member in self.members.iter().rev() {
            if !seen.insert(member.identity.as_str()) {
                continue;
            }
            let Some(p) = self.people.get(&member.identity) else {
                continue;
            };
            let id = member.pid.to_string();
            if let Some((seq, at)) = p.hand {
                hands.push((
                    seq,
                    HandEntry {
                        participant_id: id.clone(),
                        raised_at_ms: at,
                    },
                ));
            }
            if let Some((seq, camera)) = p.floor {
                floor.push((
                    seq,
                    FloorEntry {
                        participant_id: id.clone(),
                        camera,
                    },
                ));
            }
            if p.muted {
                muted.push((member.pid, id));
            }
        }
        hands.sort_by_key(|(seq, _)| *seq);
        floor.sort_by_key(|(seq, _)| *seq);
        muted.sort();
        let me = self.people.get(&m.identity);
        let last_n = self.last_n_set();
        let you = You {
            hand: me.is_some_and(|p| p.hand.is_some()),
            floor: me.is_some_and(|p| p.floor.is_some()),
            camera_to_class: m.moderated()
                && state::camera(
                    &self.settings,
                    &m.identity,
                    me,
                    self.spotlight.as_deref(),
                    &last_n,
                ) == Audience::Everyone,
            muted: me.is_some_and(|p| p.muted),
            may_speak: !m.moderated()
                || state::microphone(&self.settings, me) == Audience::Everyone,
        };
        LessonState {
            speaking: self.settings.speaking,
            cameras: self.settings.cameras,
            chat: self.settings.chat,
            last_n: self.settings.last_n,
            spotlight: self
                .spotlight
                .as_deref()
                .and_then(|i| self.current(i))
                .map(|s| s.pid.to_string()),
            hands: hands.into_iter().map(|(_, h)| h).collect(),
            floor: floor.into_iter().map(|(_, f)| f).collect(),
            muted: muted.into_iter().map(|(_, id)| id).collect(),
            you,
            quick_check: self.check.as_ref().map(|c| c.view(&m.identity, m.teacher)),
        }
    }
}

fn require_teacher(me: &Member, what: &str) -> Result<(), Refused> {
    if me.teacher {
        Ok(())
    } else {
        Err(teachers_only(what))
    }
}

fn not_found_participant(id: &str) -> Refused {
    refused(
        ErrorCode::NotFound,
        format!("no participant {id} in this lesson now"),
    )
}

#[cfg(test)]
mod tests;
