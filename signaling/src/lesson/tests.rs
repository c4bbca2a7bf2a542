use super::*;
use crate::token::Role;
use wire::Cameras;

const T: ParticipantId = ParticipantId(1);
const P1: ParticipantId = ParticipantId(11);
const P2: ParticipantId = ParticipantId(12);
const P3: ParticipantId = ParticipantId(13);
const MIC1: TrackId = TrackId(101);
const CAM1: TrackId = TrackId(102);
const MIC2: TrackId = TrackId(201);
const CAM2: TrackId = TrackId(202);
const CAM3: TrackId = TrackId(302);
const NOW: u64 = 1_733_500_000_000;

fn member(pid: ParticipantId, identity: &str, role: Role) -> Member {
    Member {
        pid,
        identity: identity.into(),
        name: identity.to_uppercase(),
        role,
        teacher: role == Role::Teacher,
    }
}

/// A teacher and three pupils; pupils 1–3 publish microphone and camera (3: camera only).
fn class() -> Lesson {
    let mut l = Lesson::new(2);
    l.join(member(T, "t", Role::Teacher));
    for (pid, id) in [(P1, "s1"), (P2, "s2"), (P3, "s3")] {
        l.join(member(pid, id, Role::Student));
    }
    for (pid, tracks) in [
        (
            P1,
            vec![(MIC1, TrackSource::Microphone), (CAM1, TrackSource::Camera)],
        ),
        (
            P2,
            vec![(MIC2, TrackSource::Microphone), (CAM2, TrackSource::Camera)],
        ),
        (P3, vec![(CAM3, TrackSource::Camera)]),
    ] {
        let with: Vec<_> = tracks
            .into_iter()
            .map(|(t, s)| (t, s, l.audience(pid, s)))
            .collect();
        let out = l.tracks_added(pid, &with);
        assert!(
            out.audiences.is_empty(),
            "published with the current audience"
        );
    }
    l
}

fn act(l: &mut Lesson, who: ParticipantId, json: &str) -> Result<Outcome, Refused> {
    let action: Action = serde_json::from_str(json).expect(json);
    l.act(who, action, NOW)
}

fn state_for(out: &Outcome, to: ParticipantId) -> Option<&LessonState> {
    out.messages.iter().rev().find_map(|(p, m)| match m {
        ServerMessage::LessonState(s) if *p == to => Some(s),
        _ => None,
    })
}

fn audience(l: &Lesson, track: TrackId) -> Audience {
    l.tracks[&track].audience
}

#[test]
fn newcomer_gets_state_and_history_and_defaults_withhold_pupils() {
    let mut l = Lesson::new(4);
    l.join(member(T, "t", Role::Teacher));
    let out = l.join(member(P1, "s1", Role::Student));
    let s = state_for(&out, P1).expect("lesson_state to the newcomer");
    assert_eq!(
        (s.speaking, s.cameras, s.chat, s.last_n),
        (
            Speaking::ByPermission,
            Cameras::TeacherOnly,
            ChatPolicy::Open,
            4
        )
    );
    assert!(!s.you.may_speak);
    assert!(
        out.messages
            .iter()
            .any(|(p, m)| *p == P1 && matches!(m, ServerMessage::ChatHistory { .. }))
    );
    // A blank newcomer changes nothing others see.
    assert!(state_for(&out, T).is_none());
    assert_eq!(l.audience(P1, TrackSource::Microphone), Audience::Nobody);
    assert_eq!(l.audience(P1, TrackSource::Camera), Audience::Teachers);
    assert_eq!(l.audience(T, TrackSource::Microphone), Audience::Everyone);
    assert_eq!(
        l.audience(ParticipantId(99), TrackSource::Camera),
        Audience::Nobody
    );
}

#[test]
fn every_teacher_action_from_a_pupil_is_permission_denied() {
    let mut l = class();
    let p2 = P2.to_string();
    let actions = [
        format!(r#"{{"type":"lower_hand","participant_id":"{p2}"}}"#),
        format!(r#"{{"type":"grant_floor","participant_id":"{p2}"}}"#),
        format!(r#"{{"type":"revoke_floor","participant_id":"{p2}"}}"#),
        format!(r#"{{"type":"mute","participant_id":"{p2}"}}"#),
        r#"{"type":"mute_all"}"#.into(),
        format!(r#"{{"type":"unmute","participant_id":"{p2}"}}"#),
        r#"{"type":"set_lesson","speaking":"open"}"#.into(),
        format!(r#"{{"type":"spotlight","participant_id":"{p2}"}}"#),
        r#"{"type":"spotlight","participant_id":null}"#.into(),
        r#"{"type":"delete_chat","message_id":"m1"}"#.into(),
        r#"{"type":"quick_check","question":"q","options":["a","b"]}"#.into(),
        r#"{"type":"close_check"}"#.into(),
    ];
    for json in &actions {
        let r = act(&mut l, P1, json).expect_err(json);
        assert_eq!(
            (r.code, r.permission),
            (ErrorCode::PermissionDenied, Some(Permission::Teacher)),
            "{json}"
        );
    }
    // Nothing changed.
    assert_eq!(audience(&l, MIC1), Audience::Nobody);
    assert_eq!(audience(&l, MIC2), Audience::Nobody);
    // The same actions from the teacher are accepted (the message ids aside).
    for json in actions.iter().filter(|j| !j.contains("delete_chat")) {
        act(&mut l, T, json).unwrap_or_else(|e| panic!("{json}: {e:?}"));
    }
}

#[test]
fn hands_queue_in_order_of_raising_and_the_floor_opens_the_microphone() {
    let mut l = class();
    act(&mut l, P2, r#"{"type":"raise_hand"}"#).unwrap();
    let out = act(&mut l, P1, r#"{"type":"raise_hand"}"#).unwrap();
    assert_eq!(out.events, vec![Event::HandRaised]);
    let s = state_for(&out, T).unwrap();
    let order: Vec<&str> = s.hands.iter().map(|h| h.participant_id.as_str()).collect();
    assert_eq!(order, [P2.to_string(), P1.to_string()]);
    assert_eq!(s.hands[0].raised_at_ms, NOW);
    // Raising again keeps the place.
    assert!(
        act(&mut l, P2, r#"{"type":"raise_hand"}"#)
            .unwrap()
            .events
            .is_empty()
    );

    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P1}"}}"#),
    )
    .unwrap();
    assert_eq!(
        out.audiences,
        vec![(MIC1, Audience::Everyone)],
        "the camera stays with teachers"
    );
    assert_eq!(out.events, vec![Event::FloorGranted]);
    let s = state_for(&out, P1).unwrap();
    assert!(s.you.floor && s.you.may_speak && !s.you.hand && !s.you.camera_to_class);
    assert_eq!(s.hands.len(), 1, "the granted pupil's hand is lowered");
    assert!(!state_for(&out, P2).unwrap().you.may_speak);

    // The pupil gives the floor back.
    let out = act(&mut l, P1, r#"{"type":"revoke_floor"}"#).unwrap();
    assert_eq!(out.audiences, vec![(MIC1, Audience::Nobody)]);
    // Floor with camera: both tracks to everyone; revoke: both back.
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P2}","camera":true}}"#),
    )
    .unwrap();
    assert_eq!(
        out.audiences,
        vec![(MIC2, Audience::Everyone), (CAM2, Audience::Everyone)]
    );
    assert!(state_for(&out, P2).unwrap().you.camera_to_class);
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"revoke_floor","participant_id":"{P2}"}}"#),
    )
    .unwrap();
    assert_eq!(
        out.audiences,
        vec![(MIC2, Audience::Nobody), (CAM2, Audience::Teachers)]
    );
    // The teacher lowers a hand.
    act(&mut l, P3, r#"{"type":"raise_hand"}"#).unwrap();
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"lower_hand","participant_id":"{P3}"}}"#),
    )
    .unwrap();
    assert!(state_for(&out, T).unwrap().hands.is_empty());
}

#[test]
fn a_muted_pupil_cannot_unmute_by_permission_but_can_when_open() {
    let mut l = class();
    act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P1}"}}"#),
    )
    .unwrap();
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"mute","participant_id":"{P1}"}}"#),
    )
    .unwrap();
    assert_eq!(out.audiences, vec![(MIC1, Audience::Nobody)]);
    assert_eq!(out.events, vec![Event::Muted(1)]);
    let s = state_for(&out, P1).unwrap();
    assert!(s.you.muted && !s.you.floor && !s.you.may_speak);
    assert_eq!(s.muted, [P1.to_string()]);

    let r = act(&mut l, P1, r#"{"type":"unmute"}"#).unwrap_err();
    assert_eq!(
        (r.code, r.permission),
        (ErrorCode::PermissionDenied, Some(Permission::Teacher))
    );
    assert!(r.message.contains("raise your hand"), "{}", r.message);
    assert_eq!(audience(&l, MIC1), Audience::Nobody);

    let out = act(&mut l, T, r#"{"type":"set_lesson","speaking":"open"}"#).unwrap();
    assert_eq!(
        out.audiences,
        vec![(MIC2, Audience::Everyone)],
        "muted pupil 1 stays silent"
    );
    let out = act(&mut l, P1, r#"{"type":"unmute"}"#).unwrap();
    assert_eq!(out.audiences, vec![(MIC1, Audience::Everyone)]);
    // A teacher's mute of a teacher makes no sense.
    let r = act(
        &mut l,
        T,
        &format!(r#"{{"type":"mute","participant_id":"{T}"}}"#),
    )
    .unwrap_err();
    assert_eq!(r.code, ErrorCode::BadRequest);
}

#[test]
fn mute_all_mutes_every_pupil_and_revokes_every_floor() {
    let mut l = class();
    act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P1}","camera":true}}"#),
    )
    .unwrap();
    act(&mut l, T, r#"{"type":"set_lesson","speaking":"open"}"#).unwrap();
    assert_eq!(audience(&l, MIC2), Audience::Everyone);
    let out = act(&mut l, T, r#"{"type":"mute_all"}"#).unwrap();
    assert_eq!(
        out.audiences,
        vec![
            (MIC1, Audience::Nobody),
            (CAM1, Audience::Teachers),
            (MIC2, Audience::Nobody)
        ]
    );
    assert_eq!(out.events, vec![Event::Muted(3)]);
    let s = state_for(&out, T).unwrap();
    assert!(s.floor.is_empty());
    assert_eq!(s.muted.len(), 3);
    // The teacher's own microphone is untouched.
    assert!(state_for(&out, T).unwrap().you.may_speak);
    // A grant lifts the mute.
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P2}"}}"#),
    )
    .unwrap();
    assert_eq!(out.audiences, vec![(MIC2, Audience::Everyone)]);
}

#[test]
fn unknown_participants_messages_and_checks_are_not_found() {
    let mut l = class();
    for json in [
        r#"{"type":"grant_floor","participant_id":"PA_ffff"}"#,
        r#"{"type":"mute","participant_id":"nobody"}"#,
        r#"{"type":"spotlight","participant_id":"PA_ffff"}"#,
        r#"{"type":"delete_chat","message_id":"m42"}"#,
    ] {
        assert_eq!(
            act(&mut l, T, json).unwrap_err().code,
            ErrorCode::NotFound,
            "{json}"
        );
    }
    assert_eq!(
        act(
            &mut l,
            P1,
            r#"{"type":"answer_check","check_id":"q1","option":0}"#
        )
        .unwrap_err()
        .code,
        ErrorCode::NotFound
    );
    let r = act(&mut l, T, r#"{"type":"set_lesson","last_n":17}"#).unwrap_err();
    assert_eq!(r.code, ErrorCode::BadRequest);
    let r = act(&mut l, T, r#"{"type":"set_lesson","last_n":0}"#).unwrap_err();
    assert_eq!(r.code, ErrorCode::BadRequest);
}

fn chat(
    l: &mut Lesson,
    who: ParticipantId,
    to: &str,
    text: &str,
    now: u64,
) -> Result<Outcome, Refused> {
    let action = Action::Chat {
        to: if to == "all" {
            ChatTo::All
        } else {
            ChatTo::Teacher
        },
        text: text.into(),
    };
    l.act(who, action, now)
}

fn chat_recipients(out: &Outcome) -> Vec<ParticipantId> {
    out.messages
        .iter()
        .filter(|(_, m)| {
            matches!(
                m,
                ServerMessage::Chat { .. } | ServerMessage::ChatDeleted { .. }
            )
        })
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn chat_limits_closing_private_questions_and_deletion() {
    let mut l = class();
    let out = chat(&mut l, P1, "all", "  こんにちは  ", NOW).unwrap();
    assert_eq!(chat_recipients(&out), [T, P1, P2, P3]);
    let Some(Event::Chat(m, _)) = out.events.first() else {
        panic!("{:?}", out.events)
    };
    assert_eq!(
        (m.text.as_str(), m.from.clone(), m.to),
        ("こんにちは", P1.to_string(), ChatTo::All)
    );

    assert_eq!(
        chat(&mut l, P1, "all", " \n ", NOW).unwrap_err().code,
        ErrorCode::BadRequest
    );
    let long = "あ".repeat(501);
    let r = chat(&mut l, P1, "all", &long, NOW).unwrap_err();
    assert_eq!(r.code, ErrorCode::ChatTooLong);
    assert!(r.message.contains("500"), "{}", r.message);

    // Private question: the sender and the teacher only.
    let out = chat(&mut l, P2, "teacher", "質問です", NOW).unwrap();
    assert_eq!(chat_recipients(&out), [T, P2]);
    let Some(Event::Chat(private, _)) = out.events.first() else {
        panic!()
    };
    let private_id = private.message_id.clone();

    // Closed to the class: pupils may still ask the teacher; the teacher may still post.
    act(&mut l, T, r#"{"type":"set_lesson","chat":"teacher_only"}"#).unwrap();
    assert_eq!(
        chat(&mut l, P3, "all", "hi", NOW).unwrap_err().code,
        ErrorCode::ChatClosed
    );
    chat(&mut l, P3, "teacher", "hi", NOW).unwrap();
    chat(&mut l, T, "all", "みなさん", NOW).unwrap();

    // Rate: five per ten seconds per identity (two already spent by pupil 1's rejected messages? no:
    // only accepted messages count).
    act(&mut l, T, r#"{"type":"set_lesson","chat":"open"}"#).unwrap();
    for i in 1..5 {
        chat(&mut l, P1, "all", "x", NOW + i).unwrap();
    }
    let r = chat(&mut l, P1, "all", "x", NOW + 5_000).unwrap_err();
    assert_eq!(r.code, ErrorCode::RateLimited);
    assert!(r.message.contains("5.0 s"), "{}", r.message);
    chat(&mut l, P1, "all", "x", NOW + 10_000).unwrap();
    // Another pupil's window is its own.
    chat(&mut l, P3, "all", "y", NOW + 5_000).unwrap();

    // Deletion goes to those who saw it.
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"delete_chat","message_id":"{private_id}"}}"#),
    )
    .unwrap();
    assert_eq!(chat_recipients(&out), [T, P2]);
    assert_eq!(out.events, vec![Event::ChatDeleted(private_id.clone())]);
    let r = act(
        &mut l,
        T,
        &format!(r#"{{"type":"delete_chat","message_id":"{private_id}"}}"#),
    )
    .unwrap_err();
    assert_eq!(r.code, ErrorCode::NotFound);
}

#[test]
fn chat_history_shows_what_the_newcomer_may_see_and_survives_a_rejoin() {
    let mut l = class();
    chat(&mut l, P1, "all", "public", NOW).unwrap();
    chat(&mut l, P1, "teacher", "private", NOW).unwrap();
    let history = |out: &Outcome, to| {
        out.messages
            .iter()
            .find_map(|(p, m)| match m {
                ServerMessage::ChatHistory { messages } if *p == to => {
                    Some(messages.iter().map(|m| m.text.clone()).collect::<Vec<_>>())
                }
                _ => None,
            })
            .unwrap()
    };
    l.leave(P2);
    let out = l.join(member(ParticipantId(22), "s2", Role::Student));
    assert_eq!(history(&out, ParticipantId(22)), ["public"]);
    l.leave(P1);
    let out = l.join(member(ParticipantId(21), "s1", Role::Student));
    assert_eq!(history(&out, ParticipantId(21)), ["public", "private"]);
}

#[test]
fn quick_check_tally_goes_to_teachers_only() {
    let mut l = class();
    let out = act(
        &mut l,
        T,
        r#"{"type":"quick_check","question":"わかった？","options":["わかった","もう一度"]}"#,
    )
    .unwrap();
    assert_eq!(out.events, vec![Event::QuickCheckOpened]);
    let q = state_for(&out, P1).unwrap().quick_check.clone().unwrap();
    assert_eq!(
        (q.check_id.as_str(), q.tally, q.answered, q.your_answer),
        ("q1", None, None, Some(None))
    );
    act(
        &mut l,
        P1,
        r#"{"type":"answer_check","check_id":"q1","option":0}"#,
    )
    .unwrap();
    act(
        &mut l,
        P2,
        r#"{"type":"answer_check","check_id":"q1","option":1}"#,
    )
    .unwrap();
    let out = act(
        &mut l,
        P1,
        r#"{"type":"answer_check","check_id":"q1","option":1}"#,
    )
    .unwrap();
    // Only the teacher and the answering pupil hear of an answer.
    let told: Vec<ParticipantId> = out.messages.iter().map(|(p, _)| *p).collect();
    assert_eq!(told, [T, P1]);
    let t = state_for(&out, T).unwrap().quick_check.clone().unwrap();
    assert_eq!(
        (t.tally, t.answered, t.your_answer),
        (Some(vec![0, 2]), Some(2), None)
    );
    let p = state_for(&out, P1).unwrap().quick_check.clone().unwrap();
    assert_eq!(
        (p.tally, p.answered, p.your_answer),
        (None, None, Some(Some(1)))
    );
    let json = serde_json::to_string(&ServerMessage::LessonState(
        state_for(&out, P1).unwrap().clone(),
    ))
    .unwrap();
    assert!(
        !json.contains("tally") && !json.contains("answered"),
        "{json}"
    );

    let r = act(
        &mut l,
        P1,
        r#"{"type":"answer_check","check_id":"q1","option":2}"#,
    )
    .unwrap_err();
    assert_eq!(r.code, ErrorCode::BadRequest);
    assert_eq!(
        act(
            &mut l,
            T,
            r#"{"type":"answer_check","check_id":"q1","option":0}"#
        )
        .unwrap_err()
        .code,
        ErrorCode::BadRequest
    );
    // A new check replaces the open one.
    act(
        &mut l,
        T,
        r#"{"type":"quick_check","question":"次は？","options":["a","b","c"]}"#,
    )
    .unwrap();
    assert_eq!(
        act(
            &mut l,
            P1,
            r#"{"type":"answer_check","check_id":"q1","option":0}"#
        )
        .unwrap_err()
        .code,
        ErrorCode::NotFound
    );
    let out = act(&mut l, T, r#"{"type":"close_check"}"#).unwrap();
    assert!(state_for(&out, P1).unwrap().quick_check.is_none());
    for bad in [
        r#"{"type":"quick_check","question":"","options":["a","b"]}"#,
        r#"{"type":"quick_check","question":"q","options":["a"]}"#,
        r#"{"type":"quick_check","question":"q","options":["a","b","c","d","e"]}"#,
    ] {
        assert_eq!(
            act(&mut l, T, bad).unwrap_err().code,
            ErrorCode::BadRequest,
            "{bad}"
        );
    }
}

#[test]
fn state_is_kept_by_identity_across_a_rejoin_and_absent_people_leave_the_lists() {
    let mut l = class();
    act(&mut l, P1, r#"{"type":"raise_hand"}"#).unwrap();
    act(
        &mut l,
        T,
        &format!(r#"{{"type":"grant_floor","participant_id":"{P2}"}}"#),
    )
    .unwrap();
    act(
        &mut l,
        T,
        &format!(r#"{{"type":"mute","participant_id":"{P3}"}}"#),
    )
    .unwrap();
    act(
        &mut l,
        T,
        &format!(r#"{{"type":"spotlight","participant_id":"{P3}"}}"#),
    )
    .unwrap();

    // Pupil 2 drops out: it disappears from the lists, its tracks go.
    let out = l.leave(P2);
    let s = state_for(&out, T).unwrap();
    assert!(s.floor.is_empty());
    assert_eq!(s.hands.len(), 1);
    assert!(!l.tracks.contains_key(&MIC2));

    // … and comes back with a new participant id: the floor is still its own.
    let p2b = ParticipantId(42);
    let out = l.join(member(p2b, "s2", Role::Student));
    let s = state_for(&out, p2b).unwrap();
    assert!(s.you.floor && s.you.may_speak);
    assert_eq!(
        state_for(&out, T).unwrap().floor[0].participant_id,
        p2b.to_string()
    );
    assert_eq!(l.audience(p2b, TrackSource::Microphone), Audience::Everyone);

    // A rejoin that replaces a live session: both are members for a moment; the old one's
    // departure does not take the identity's place in the lists.
    let p3b = ParticipantId(43);
    l.join(member(p3b, "s3", Role::Student));
    let out = l.leave(P3);
    assert!(out.messages.is_empty(), "nothing others see changed");
    let s = l.render(l.member(T).unwrap());
    assert_eq!(s.muted, [p3b.to_string()]);
    assert_eq!(s.spotlight, Some(p3b.to_string()));
    assert!(l.render(l.member(p3b).unwrap()).you.muted);

    // Everyone gone: empty.
    for pid in [T, P1, p2b, p3b] {
        l.leave(pid);
    }
    assert!(l.is_empty());
}

#[test]
fn active_speakers_feed_last_n_camera_audiences() {
    let mut l = class();
    act(
        &mut l,
        T,
        r#"{"type":"set_lesson","cameras":"class","speaking":"open"}"#,
    )
    .unwrap();
    assert_eq!(
        audience(&l, CAM1),
        Audience::Teachers,
        "no one has spoken yet"
    );
    let out = l.speakers(&[P1]);
    assert_eq!(out.audiences, vec![(CAM1, Audience::Everyone)]);
    assert_eq!(out.events, vec![Event::SpeakersChanged]);
    let Some((_, ServerMessage::ActiveSpeakers { speakers, recent })) =
        out.messages.iter().find(|(p, _)| *p == P3)
    else {
        panic!("{:?}", out.messages)
    };
    assert_eq!(
        (speakers.clone(), recent.clone()),
        (vec![P1.to_string()], vec![P1.to_string()])
    );
    assert!(state_for(&out, P1).unwrap().you.camera_to_class);
    l.speakers(&[P2, T]);
    l.speakers(&[]);
    // last_n = 2 pupils: 2 and 1; the teacher does not take a pupil's place.
    assert_eq!(audience(&l, CAM1), Audience::Everyone);
    assert_eq!(audience(&l, CAM2), Audience::Everyone);
    let out = l.speakers(&[P3]);
    assert_eq!(
        out.audiences,
        vec![(CAM1, Audience::Teachers), (CAM3, Audience::Everyone)]
    );
    let Some((_, ServerMessage::ActiveSpeakers { recent, .. })) = out.messages.first() else {
        panic!()
    };
    assert_eq!(
        recent,
        &[
            P3.to_string(),
            P2.to_string(),
            T.to_string(),
            P1.to_string()
        ]
    );
    // The spotlight adds one more.
    let out = act(
        &mut l,
        T,
        &format!(r#"{{"type":"spotlight","participant_id":"{P1}"}}"#),
    )
    .unwrap();
    assert_eq!(out.audiences, vec![(CAM1, Audience::Everyone)]);
    // Teacher-only cameras: last-N does not apply, the spotlight does.
    let out = act(
        &mut l,
        T,
        r#"{"type":"set_lesson","cameras":"teacher_only"}"#,
    )
    .unwrap();
    assert_eq!(
        out.audiences,
        vec![(CAM2, Audience::Teachers), (CAM3, Audience::Teachers)]
    );
    // Unknown speakers are ignored; recent is bounded.
    for i in 0..100 {
        l.speakers(&[ParticipantId(1000 + i)]);
        l.speakers(&[[P1, P2, P3, T][i as usize % 4]]);
    }
    assert!(l.recent.len() <= state::MAX_RECENT);
}

#[test]
fn pupils_own_actions_are_rate_limited() {
    let mut l = class();
    let mut refused = None;
    for i in 0..(ACTION_COUNT as u64 + 1) {
        let json = if i % 2 == 0 {
            r#"{"type":"raise_hand"}"#
        } else {
            r#"{"type":"lower_hand"}"#
        };
        if let Err(e) = l.act(P1, serde_json::from_str(json).unwrap(), NOW + i) {
            refused = Some((i, e.code));
        }
    }
    assert_eq!(refused, Some((ACTION_COUNT as u64, ErrorCode::RateLimited)));
    // Teachers are not limited.
    for _ in 0..(ACTION_COUNT * 2) {
        act(&mut l, T, r#"{"type":"raise_hand"}"#).unwrap();
    }
}

#[test]
fn chat_log_is_bounded() {
    let mut l = class();
    for i in 0..(chat::LOG_CAPACITY as u64 * 2) {
        chat(&mut l, T, "all", "x", NOW + i * chat::RATE_WINDOW_MS).unwrap();
    }
    assert_eq!(l.chat.len(), chat::LOG_CAPACITY);
    let out = l.join(member(ParticipantId(77), "s7", Role::Student));
    let n = out
        .messages
        .iter()
        .find_map(|(_, m)| match m {
            ServerMessage::ChatHistory { messages } => Some(messages.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(n, chat::HISTORY);
}
