//! The attendance rules on the sample roster, on SQLite (always) and PostgreSQL (when
//! CLASSROOM_TEST_POSTGRES_URL is set): modes and their cut-off, who may set them, lessons,
//! admission and the lobby, attendance reports and exports, sign-in links, sessions and the
//! audit log. Every instant is explicit; nothing reads the clock.
//!
//! Sample roster: t-001 teaches class-p5-1 (homeroom) and, with t-002, class-p5-eng; pupils
//! s-001..s-008 are in both; g-001 is the guardian of s-001 and s-002, g-002 of s-003, g-003 of
//! s-004.

mod common;

use chrono::{DateTime, NaiveDate};
use classroom_domain as domain;
use classroom_domain::{
    Acting, Action, Admission, AuditEntry, AuditFilter, Capacity, CutoffPolicy, Db, Denied,
    LessonError, MarkStatus, Mode, ModeRequest, NewLesson, RefusalReason, SetModeError,
    SignInLinkError, TeacherActionError, import_dir,
};
use common::{backends, exec, fixture_dir};

/// Unix seconds of a Japan Standard Time wall-clock time `YYYY-MM-DDTHH:MM:SS`.
fn jst(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(&format!("{s}+09:00"))
        .unwrap()
        .timestamp()
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn acting(person: &str, at: i64) -> Acting<'_> {
    Acting {
        person,
        at,
        remote_addr: Some("192.0.2.10"),
    }
}

fn request<'a>(pupil: &'a str, from: &str, to: &str, mode: Mode) -> ModeRequest<'a> {
    ModeRequest {
        pupil,
        from: date(from),
        to: date(to),
        mode,
        reason: None,
    }
}

async fn sample(db: &Db) {
    import_dir(db, &fixture_dir()).await.unwrap();
    // The sample has no administrator; the school's principal.
    exec(
        db,
        "INSERT INTO people (id, role, username, given_name, family_name, enabled, \
         primary_org_id) VALUES ('a-001', 'administrator', 'principal@mizuho-es.example.jp', \
         '一郎', '田中', TRUE, 'org-es-mizuho')",
    )
    .await;
}

/// English lesson, 2026-06-10 08:45–09:30 JST, taught by t-001 and t-002.
async fn english_lesson(db: &Db) -> domain::Lesson {
    domain::create_lesson(
        db,
        &NewLesson {
            id: "lesson-eng-0610".into(),
            class_id: "class-p5-eng".into(),
            starts_at: jst("2026-06-10T08:45:00"),
            ends_at: jst("2026-06-10T09:30:00"),
            media_room: "room-eng-0610".into(),
            teachers: None,
        },
        chrono_tz::Asia::Tokyo,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn mode_changes_follow_the_cutoff_and_keep_history() {
    let policy = CutoffPolicy::default();
    for t in backends("modes").await {
        let db = &t.db;
        sample(db).await;
        let fever = Some("発熱のため");

        // The evening before: the guardian chooses online for the 10th.
        let evening = jst("2026-06-09T20:00:00");
        let mut req = request("s-001", "2026-06-10", "2026-06-10", Mode::Online);
        req.reason = fever;
        let changes = domain::set_mode(db, &policy, acting("g-001", evening), &req)
            .await
            .unwrap();
        assert_eq!(changes.len(), 1, "{}", t.name);
        let c = &changes[0];
        assert_eq!((c.old_mode, c.new_mode), (Mode::InPerson, Mode::Online));
        assert_eq!((c.capacity, c.after_cutoff), (Capacity::Guardian, false));
        assert_eq!(c.reason.as_deref(), fever);
        assert_eq!(
            domain::mode_on(db, "s-001", date("2026-06-10"))
                .await
                .unwrap(),
            Mode::Online
        );
        // Nothing chosen: the school's normal.
        assert_eq!(
            domain::mode_on(db, "s-001", date("2026-06-11"))
                .await
                .unwrap(),
            Mode::InPerson
        );
        assert_eq!(
            domain::mode_on(db, "s-002", date("2026-06-10"))
                .await
                .unwrap(),
            Mode::InPerson
        );

        // At 08:00 sharp the day is closed to guardians.
        let cutoff = jst("2026-06-10T08:00:00");
        let back = request("s-001", "2026-06-10", "2026-06-10", Mode::InPerson);
        let err = domain::set_mode(db, &policy, acting("g-001", cutoff), &back)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SetModeError::CutoffPassed(d) if d == date("2026-06-10")),
            "{err:?}"
        );

        // One second earlier, a range: the 10th is unchanged (same mode and reason), the 11th
        // and 12th change.
        let mut range = request("s-001", "2026-06-10", "2026-06-12", Mode::Online);
        range.reason = fever;
        let changes = domain::set_mode(db, &policy, acting("g-001", cutoff - 1), &range)
            .await
            .unwrap();
        let dates: Vec<NaiveDate> = changes.iter().map(|c| c.date).collect();
        assert_eq!(
            dates,
            [date("2026-06-11"), date("2026-06-12")],
            "{}",
            t.name
        );

        // After the cut-off the class teacher may still change it, on the guardian's behalf,
        // and it is recorded as such.
        let nine = jst("2026-06-10T09:00:00");
        let mut staff = back.clone();
        staff.reason = Some("保護者から電話: 登校します");
        let changes = domain::set_mode(db, &policy, acting("t-001", nine), &staff)
            .await
            .unwrap();
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!((c.old_mode, c.new_mode), (Mode::Online, Mode::InPerson));
        assert_eq!((c.capacity, c.after_cutoff), (Capacity::Staff, true));
        assert_eq!(c.actor_id, "t-001");
        assert_eq!(
            domain::mode_on(db, "s-001", date("2026-06-10"))
                .await
                .unwrap(),
            Mode::InPerson
        );
        // As it stood at 08:30 it was online.
        assert_eq!(
            domain::mode_on_as_of(db, "s-001", date("2026-06-10"), jst("2026-06-10T08:30:00"))
                .await
                .unwrap(),
            Mode::Online
        );

        // Past dates are closed to everyone.
        let past = request("s-001", "2026-06-09", "2026-06-09", Mode::Online);
        for who in ["g-001", "t-001"] {
            let err = domain::set_mode(db, &policy, acting(who, nine), &past)
                .await
                .unwrap_err();
            assert!(matches!(err, SetModeError::PastDate(_)), "{who}: {err:?}");
        }
        // Bad ranges.
        let err = domain::set_mode(
            db,
            &policy,
            acting("g-001", evening),
            &request("s-001", "2026-06-12", "2026-06-11", Mode::Online),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SetModeError::BadRange));
        let err = domain::set_mode(
            db,
            &policy,
            acting("g-001", evening),
            &request("s-001", "2026-06-10", "2027-06-12", Mode::Online),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SetModeError::RangeTooLong));

        // The history has every change, old → new, in order; nothing was overwritten.
        let history = domain::history(db, "s-001").await.unwrap();
        let summary: Vec<(String, &str, Mode, Mode, Capacity, bool)> = history
            .iter()
            .map(|c| {
                (
                    c.date.to_string(),
                    c.actor_id.as_str(),
                    c.old_mode,
                    c.new_mode,
                    c.capacity,
                    c.after_cutoff,
                )
            })
            .collect();
        use Mode::{InPerson, Online};
        assert_eq!(
            summary,
            [
                (
                    "2026-06-10".to_owned(),
                    "g-001",
                    InPerson,
                    Online,
                    Capacity::Guardian,
                    false
                ),
                (
                    "2026-06-11".to_owned(),
                    "g-001",
                    InPerson,
                    Online,
                    Capacity::Guardian,
                    false
                ),
                (
                    "2026-06-12".to_owned(),
                    "g-001",
                    InPerson,
                    Online,
                    Capacity::Guardian,
                    false
                ),
                (
                    "2026-06-10".to_owned(),
                    "t-001",
                    Online,
                    InPerson,
                    Capacity::Staff,
                    true
                ),
            ],
            "{}",
            t.name
        );
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(history[0].changed_at, evening);
        assert_eq!(
            history[3].reason.as_deref(),
            Some("保護者から電話: 登校します")
        );
        assert_eq!(db.count(domain::Table::ModeChanges).await.unwrap(), 4);

        let modes: Vec<Mode> =
            domain::modes_between(db, "s-001", date("2026-06-09"), date("2026-06-13"))
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.mode)
                .collect();
        assert_eq!(modes, [InPerson, InPerson, Online, Online, InPerson]);
        let days = domain::modes_between(db, "s-001", date("2026-06-09"), date("2026-06-10"))
            .await
            .unwrap();
        assert_eq!((days[0].set_by.as_deref(), days[0].capacity), (None, None));
        assert_eq!(
            (days[1].set_by.as_deref(), days[1].capacity),
            (Some("t-001"), Some(Capacity::Staff))
        );
        assert_eq!(
            days[1].reason.as_deref(),
            Some("保護者から電話: 登校します")
        );
        // Which days a page may offer for editing, by whom.
        let d10 = date("2026-06-10");
        assert!(domain::may_change(
            &policy,
            Capacity::Guardian,
            d10,
            cutoff - 1
        ));
        assert!(!domain::may_change(
            &policy,
            Capacity::Guardian,
            d10,
            cutoff
        ));
        assert!(domain::may_change(&policy, Capacity::Staff, d10, cutoff));
        assert!(!domain::may_change(
            &policy,
            Capacity::Staff,
            date("2026-06-09"),
            cutoff
        ));

        // Three accepted requests, three audit entries; refused ones write none.
        let filter = AuditFilter {
            action: Some(Action::ModeChanged),
            ..AuditFilter::default()
        };
        let log = domain::audit_log(db, &filter).await.unwrap();
        assert_eq!(log.len(), 3, "{}", t.name);
        // Newest first.
        assert_eq!(log[0].actor.as_deref(), Some("t-001"));
        assert_eq!(log[0].subject.as_deref(), Some("s-001"));
        assert_eq!(log[0].remote_addr.as_deref(), Some("192.0.2.10"));
        assert_eq!(log[0].detail["after_cutoff"], true);
        assert_eq!(log[0].detail["capacity"], "staff");
        assert_eq!(log[2].detail["dates"], serde_json::json!(["2026-06-10"]));
        t.finish().await;
    }
}

#[tokio::test]
async fn who_may_set_a_mode() {
    for t in backends("access").await {
        let db = &t.db;
        sample(db).await;
        let may = |actor: &'static str, pupil: &'static str| {
            let db = db.clone();
            async move { domain::may_set_mode(&db, actor, pupil).await.unwrap() }
        };
        assert_eq!(may("g-001", "s-001").await, Ok(Capacity::Guardian));
        assert_eq!(may("g-001", "s-002").await, Ok(Capacity::Guardian));
        // Another family's guardian.
        assert_eq!(may("g-002", "s-001").await, Err(Denied::NotPermitted));
        // Teachers of the pupil's classes, and the school's administrator, on behalf.
        assert_eq!(may("t-001", "s-001").await, Ok(Capacity::Staff));
        assert_eq!(may("t-002", "s-001").await, Ok(Capacity::Staff));
        assert_eq!(may("a-001", "s-008").await, Ok(Capacity::Staff));
        // A pupil cannot choose for a classmate, nobody chooses for a teacher.
        assert_eq!(may("s-002", "s-001").await, Err(Denied::NotPermitted));
        assert_eq!(may("g-001", "t-001").await, Err(Denied::NotAPupil));
        assert_eq!(may("nobody", "s-001").await, Err(Denied::UnknownActor));
        // A disabled guardian account may not.
        exec(db, "UPDATE people SET enabled = FALSE WHERE id = 'g-002'").await;
        assert_eq!(may("g-002", "s-003").await, Err(Denied::ActorDisabled));

        // set_mode applies the same rule.
        let err = domain::set_mode(
            db,
            &CutoffPolicy::default(),
            acting("g-003", jst("2026-06-09T20:00:00")),
            &request("s-001", "2026-06-10", "2026-06-10", Mode::Online),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SetModeError::Denied(Denied::NotPermitted)),
            "{err:?}"
        );
        assert_eq!(db.count(domain::Table::ModeChanges).await.unwrap(), 0);

        assert!(domain::is_guardian_of(db, "g-001", "s-002").await.unwrap());
        assert!(!domain::is_guardian_of(db, "g-001", "s-003").await.unwrap());
        let pupils: Vec<String> = domain::pupils_of_guardian(db, "g-001")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(pupils, ["s-001", "s-002"]);
        assert!(
            domain::teaches_class(db, "t-001", "class-p5-1")
                .await
                .unwrap()
        );
        assert!(
            !domain::teaches_class(db, "t-002", "class-p5-1")
                .await
                .unwrap()
        );
        assert!(
            !domain::teaches_class(db, "s-001", "class-p5-1")
                .await
                .unwrap()
        );
        t.finish().await;
    }
}

#[tokio::test]
async fn lessons_are_created_and_listed() {
    for t in backends("lessons").await {
        let db = &t.db;
        sample(db).await;
        let eng = english_lesson(db).await;
        assert_eq!(eng.lesson_date, date("2026-06-10"));
        // Default teachers: the class's teacher enrolments.
        assert_eq!(
            domain::lesson_teachers(db, &eng.id).await.unwrap(),
            ["t-001", "t-002"]
        );

        // An early-morning homeroom (07:30 JST is the previous day in UTC) with one teacher.
        let hr = domain::create_lesson(
            db,
            &NewLesson {
                id: "lesson-hr-0611".into(),
                class_id: "class-p5-1".into(),
                starts_at: jst("2026-06-11T07:30:00"),
                ends_at: jst("2026-06-11T08:00:00"),
                media_room: "room-hr-0611".into(),
                teachers: Some(vec!["t-001".into()]),
            },
            chrono_tz::Asia::Tokyo,
        )
        .await
        .unwrap();
        assert_eq!(hr.lesson_date, date("2026-06-11"), "{}", t.name);

        let mut dup = NewLesson {
            id: "lesson-x".into(),
            class_id: "class-p5-1".into(),
            starts_at: jst("2026-06-12T08:45:00"),
            ends_at: jst("2026-06-12T09:30:00"),
            media_room: "room-eng-0610".into(),
            teachers: None,
        };
        let tokyo = chrono_tz::Asia::Tokyo;
        let err = domain::create_lesson(db, &dup, tokyo).await.unwrap_err();
        assert!(matches!(err, LessonError::MediaRoomTaken(_)), "{err:?}");
        dup.media_room = "room-x".into();
        dup.teachers = Some(vec!["g-001".into()]);
        let err = domain::create_lesson(db, &dup, tokyo).await.unwrap_err();
        assert!(matches!(err, LessonError::NotATeacher(_)), "{err:?}");
        dup.teachers = None;
        dup.class_id = "class-none".into();
        let err = domain::create_lesson(db, &dup, tokyo).await.unwrap_err();
        assert!(matches!(err, LessonError::UnknownClass(_)), "{err:?}");
        dup.class_id = "class-p5-1".into();
        dup.ends_at = dup.starts_at;
        let err = domain::create_lesson(db, &dup, tokyo).await.unwrap_err();
        assert!(matches!(err, LessonError::BadTimes), "{err:?}");

        assert_eq!(
            domain::lesson(db, &eng.id).await.unwrap().as_ref(),
            Some(&eng)
        );
        assert_eq!(
            domain::lesson_by_media_room(db, "room-hr-0611")
                .await
                .unwrap()
                .as_ref(),
            Some(&hr)
        );
        assert_eq!(domain::lesson(db, "nope").await.unwrap(), None);

        let day = (jst("2026-06-10T00:00:00"), jst("2026-06-11T00:00:00"));
        let ids = |ls: Vec<domain::Lesson>| ls.into_iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(
            ids(domain::lessons_of_class(db, "class-p5-eng", day.0, day.1)
                .await
                .unwrap()),
            ["lesson-eng-0610"]
        );
        assert!(
            domain::lessons_of_class(db, "class-p5-1", day.0, day.1)
                .await
                .unwrap()
                .is_empty()
        );
        let week = (jst("2026-06-08T00:00:00"), jst("2026-06-13T00:00:00"));
        assert_eq!(
            ids(domain::lessons_of_teacher(db, "t-001", week.0, week.1)
                .await
                .unwrap()),
            [eng.id.clone(), hr.id.clone()]
        );
        assert_eq!(
            ids(domain::lessons_of_teacher(db, "t-002", week.0, week.1)
                .await
                .unwrap()),
            ["lesson-eng-0610"]
        );
        assert_eq!(
            domain::lessons_between(db, week.0, week.1)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(domain::teaches_lesson(db, "t-002", &eng.id).await.unwrap());
        assert!(!domain::teaches_lesson(db, "t-002", &hr.id).await.unwrap());
        assert!(
            domain::enrolled_in_lesson(db, "s-001", &hr.id)
                .await
                .unwrap()
        );
        assert!(
            !domain::enrolled_in_lesson(db, "t-001", &hr.id)
                .await
                .unwrap()
        );
        t.finish().await;
    }
}

#[tokio::test]
async fn admission_follows_the_mode_and_the_teacher() {
    let policy = CutoffPolicy::default();
    for t in backends("admission").await {
        let db = &t.db;
        sample(db).await;
        let eng = english_lesson(db).await;
        let evening = jst("2026-06-09T20:00:00");
        domain::set_mode(
            db,
            &policy,
            acting("g-001", evening),
            &request("s-001", "2026-06-10", "2026-06-10", Mode::Online),
        )
        .await
        .unwrap();
        let at = jst("2026-06-10T08:44:00");

        assert_eq!(
            domain::admission(db, &eng, "s-001", at).await.unwrap(),
            Admission::Admitted
        );
        let in_person = Admission::Refused {
            reason: RefusalReason::InPersonToday,
        };
        assert_eq!(
            domain::admission(db, &eng, "s-003", at).await.unwrap(),
            in_person
        );
        assert_eq!(
            domain::admission(db, &eng, "t-001", at).await.unwrap(),
            Admission::NotEnrolled
        );
        assert_eq!(
            domain::admission(db, &eng, "g-001", at).await.unwrap(),
            Admission::NotEnrolled
        );

        // s-003 asks from the lobby, so does s-004; the teacher sees both.
        domain::request_entry(db, &eng, "s-003", at).await.unwrap();
        domain::request_entry(db, &eng, "s-004", at + 5)
            .await
            .unwrap();
        let waiting: Vec<(String, i64)> = domain::lobby(db, &eng)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.pupil_id, e.requested_at))
            .collect();
        assert_eq!(
            waiting,
            [("s-003".to_owned(), at), ("s-004".to_owned(), at + 5)]
        );
        let report = domain::attendance_report(db, &eng, at + 10).await.unwrap();
        let waiting_now: Vec<&str> = report
            .iter()
            .filter(|r| r.waiting)
            .map(|r| r.pupil_id.as_str())
            .collect();
        assert_eq!(waiting_now, ["s-003", "s-004"]);
        let err = domain::request_entry(db, &eng, "g-001", at)
            .await
            .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotEnrolled), "{err:?}");

        // The teacher admits s-003 and refuses s-004; a guardian cannot decide.
        let admit_at = at + 30;
        domain::admit(db, acting("t-002", admit_at), &eng, "s-003")
            .await
            .unwrap();
        domain::refuse(db, acting("t-002", admit_at + 1), &eng, "s-004")
            .await
            .unwrap();
        let err = domain::admit(db, acting("g-003", admit_at), &eng, "s-004")
            .await
            .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotTeacher), "{err:?}");
        let err = domain::admit(db, acting("t-002", admit_at), &eng, "g-001")
            .await
            .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotEnrolled), "{err:?}");
        assert!(
            domain::lobby(db, &eng).await.unwrap().is_empty(),
            "{}",
            t.name
        );

        assert_eq!(
            domain::admission(db, &eng, "s-003", admit_at)
                .await
                .unwrap(),
            Admission::AdmittedByTeacher
        );
        // Replayed at an instant before the teacher's decision, it was still a refusal.
        assert_eq!(
            domain::admission(db, &eng, "s-003", admit_at - 1)
                .await
                .unwrap(),
            in_person
        );
        assert_eq!(
            domain::admission(db, &eng, "s-004", admit_at + 1)
                .await
                .unwrap(),
            Admission::Refused {
                reason: RefusalReason::RefusedByTeacher
            }
        );

        let log = domain::audit_log(db, &AuditFilter::default())
            .await
            .unwrap();
        let actions: Vec<(Action, Option<&str>, Option<&str>)> = log
            .iter()
            .map(|e| (e.action, e.actor.as_deref(), e.subject.as_deref()))
            .collect();
        assert_eq!(
            actions,
            [
                (Action::Refused, Some("t-002"), Some("s-004")),
                (Action::Admitted, Some("t-002"), Some("s-003")),
                (Action::ModeChanged, Some("g-001"), Some("s-001")),
            ],
            "{}",
            t.name
        );
        assert_eq!(log[1].at, admit_at);
        assert_eq!(log[1].detail["lesson"], "lesson-eng-0610");
        t.finish().await;
    }
}

#[tokio::test]
async fn attendance_report_and_exports() {
    let policy = CutoffPolicy::default();
    for t in backends("report").await {
        let db = &t.db;
        sample(db).await;
        // A name with a comma, quotes and Japanese text, to check CSV quoting round-trips.
        exec(
            db,
            "UPDATE people SET given_name = '湊, \"みなと\"' WHERE id = 's-005'",
        )
        .await;
        let eng = english_lesson(db).await;
        let evening = jst("2026-06-09T20:00:00");
        for (guardian, pupil) in [("g-001", "s-001"), ("g-001", "s-002")] {
            domain::set_mode(
                db,
                &policy,
                acting(guardian, evening),
                &request(pupil, "2026-06-10", "2026-06-10", Mode::Online),
            )
            .await
            .unwrap();
        }

        // s-001: three connections, the last still open when the lesson ends at 09:30.
        for (at, join) in [
            ("08:44:00", true),
            ("08:50:00", false),
            ("08:52:00", true),
            ("09:10:00", false),
            ("09:12:00", true),
        ] {
            let at = jst(&format!("2026-06-10T{at}"));
            if join {
                domain::record_join(db, &eng, "s-001", at).await.unwrap();
            } else {
                domain::record_leave(db, &eng, "s-001", at).await.unwrap();
            }
        }
        // s-002: one connection of 44.5 minutes.
        domain::record_join(db, &eng, "s-002", jst("2026-06-10T08:45:30"))
            .await
            .unwrap();
        domain::record_leave(db, &eng, "s-002", jst("2026-06-10T09:30:00"))
            .await
            .unwrap();
        // In the classroom: s-003 first marked present, then corrected to late; s-004 absent.
        let roll = jst("2026-06-10T08:46:00");
        domain::mark(db, &eng, "s-003", MarkStatus::Present, "t-002", roll)
            .await
            .unwrap();
        domain::mark(db, &eng, "s-003", MarkStatus::Late, "t-002", roll + 60)
            .await
            .unwrap();
        domain::mark(db, &eng, "s-004", MarkStatus::Absent, "t-001", roll)
            .await
            .unwrap();
        let err = domain::mark(db, &eng, "s-004", MarkStatus::Present, "g-003", roll)
            .await
            .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotTeacher), "{err:?}");
        assert_eq!(db.count(domain::Table::AttendanceMarks).await.unwrap(), 3);
        // s-008 asked from the lobby and was admitted, but never connected.
        domain::admit(db, acting("t-002", roll), &eng, "s-008")
            .await
            .unwrap();

        let now = jst("2026-06-10T10:00:00");
        let report = domain::attendance_report(db, &eng, now).await.unwrap();
        let order: Vec<&str> = report.iter().map(|r| r.pupil_id.as_str()).collect();
        // Kana order: いしだ, かわぐち, きたむら, たかはし, なかがわ はると, なかがわ ゆい, はやし, もりた.
        assert_eq!(
            order,
            [
                "s-005", "s-007", "s-006", "s-008", "s-001", "s-002", "s-003", "s-004"
            ],
            "{}",
            t.name
        );
        let s001 = report[4].online.clone().unwrap();
        assert_eq!(s001.seconds_connected, (6 + 18 + 18) * 60);
        assert_eq!(
            (s001.minutes_connected, s001.joins, s001.reconnects),
            (42, 3, 2)
        );
        assert_eq!(s001.first_join, jst("2026-06-10T08:44:00"));
        assert_eq!(s001.last_leave, Some(jst("2026-06-10T09:10:00")));
        assert!(s001.connected);
        // While the lesson runs, the open interval counts up to "now".
        let during = domain::attendance_report(db, &eng, jst("2026-06-10T09:20:00"))
            .await
            .unwrap();
        assert_eq!(
            during[4].online.clone().unwrap().minutes_connected,
            6 + 18 + 8
        );
        let s002 = report[5].online.clone().unwrap();
        assert_eq!(
            (s002.minutes_connected, s002.reconnects, s002.connected),
            (44, 0, false)
        );
        assert_eq!(report[5].mode, Mode::Online);
        assert_eq!(report[6].mode, Mode::InPerson);
        assert_eq!(
            report[6].mark.as_ref().map(|m| m.status),
            Some(MarkStatus::Late)
        );
        assert_eq!(
            report[7]
                .mark
                .as_ref()
                .map(|m| (m.status, m.teacher_id.as_str())),
            Some((MarkStatus::Absent, "t-001"))
        );
        assert!(report[3].admitted_by_teacher && report[3].online.is_none());
        assert!(!report[4].admitted_by_teacher);

        // CSV: BOM, CRLF, header, exact rows.
        let reports = vec![domain::report_for_lesson(db, &eng, now).await.unwrap()];
        let csv = domain::to_csv(&reports, chrono_tz::Asia::Tokyo).unwrap();
        assert!(csv.starts_with('\u{FEFF}'));
        let l = "lesson-eng-0610,class-p5-eng,2026-06-10,2026-06-10 08:45:00,2026-06-10 09:30:00";
        let expected = [
            "lesson_id,class_id,lesson_date,starts_at,ends_at,pupil_id,family_name,given_name,\
             family_name_kana,given_name_kana,mode,first_join,last_leave,minutes_connected,\
             reconnects,mark,admitted_by_teacher,gaps,minutes_away"
                .to_owned(),
            format!("{l},s-005,石田,\"湊, \"\"みなと\"\"\",いしだ,みなと,in_person,,,,,,false,,"),
            format!("{l},s-007,川口,大和,かわぐち,やまと,in_person,,,,,,false,,"),
            format!("{l},s-006,北村,陽菜,きたむら,ひな,in_person,,,,,,false,,"),
            format!("{l},s-008,高橋,芽依,たかはし,めい,in_person,,,,,,true,,"),
            format!(
                "{l},s-001,中川,陽翔,なかがわ,はると,online,2026-06-10 08:44:00,\
                 2026-06-10 09:10:00,42,2,,false,0,0"
            ),
            format!(
                "{l},s-002,中川,結衣,なかがわ,ゆい,online,2026-06-10 08:45:30,\
                 2026-06-10 09:30:00,44,0,,false,0,0"
            ),
            format!("{l},s-003,林,蒼,はやし,あおい,in_person,,,,,late,false,,"),
            format!("{l},s-004,森田,さくら,もりた,さくら,in_person,,,,,absent,false,,"),
        ];
        let expected = format!("\u{FEFF}{}\r\n", expected.join("\r\n"));
        assert_eq!(csv, expected, "{}", t.name);

        // Reading it back gives the names exactly.
        let mut reader = csv::Reader::from_reader(csv.trim_start_matches('\u{FEFF}').as_bytes());
        let given: Vec<String> = reader.records().map(|r| r.unwrap()[7].to_owned()).collect();
        assert_eq!(given[0], "湊, \"みなと\"");
        assert_eq!(given[4], "陽翔");

        // JSON carries the same, structured.
        let json: serde_json::Value =
            serde_json::from_str(&domain::to_json(&reports).unwrap()).unwrap();
        assert_eq!(json[0]["lesson"]["media_room"], "room-eng-0610");
        assert_eq!(json[0]["rows"][0]["given_name"], "湊, \"みなと\"");
        assert_eq!(json[0]["rows"][4]["online"]["minutes_connected"], 42);
        assert_eq!(json[0]["rows"][4]["mode"], "online");

        // By class and by teacher over dates.
        let (d0, d1) = (date("2026-06-08"), date("2026-06-12"));
        let by_class = domain::reports_for_class(db, "class-p5-eng", d0, d1, now)
            .await
            .unwrap();
        assert_eq!(by_class, reports);
        assert!(
            domain::reports_for_class(db, "class-p5-1", d0, d1, now)
                .await
                .unwrap()
                .is_empty()
        );
        let by_teacher = domain::reports_for_teacher(db, "t-002", d0, d1, now)
            .await
            .unwrap();
        assert_eq!(by_teacher, reports);
        let none = domain::reports_for_teacher(db, "t-002", date("2026-06-11"), d1, now)
            .await
            .unwrap();
        assert_eq!(
            domain::to_csv(&none, chrono_tz::Asia::Tokyo)
                .unwrap()
                .lines()
                .count(),
            1
        );
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signin_links_and_sessions() {
    for t in backends("signin").await {
        let db = &t.db;
        sample(db).await;
        let found: Vec<String> = domain::people_by_email(db, " G.Nakagawa@HOME.example.jp")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(found, ["g-001"]);
        assert!(
            domain::people_by_email(db, "nobody@example.jp")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            domain::person(db, "t-002")
                .await
                .unwrap()
                .unwrap()
                .family_name,
            "佐藤"
        );

        // Single use.
        domain::create_signin_link(db, "hash-1", "g-001", 1_000)
            .await
            .unwrap();
        assert_eq!(
            domain::consume_signin_link(db, "hash-1", 500)
                .await
                .unwrap(),
            "g-001"
        );
        let err = domain::consume_signin_link(db, "hash-1", 501)
            .await
            .unwrap_err();
        assert!(matches!(err, SignInLinkError::AlreadyUsed), "{err:?}");
        // Expired: valid strictly before expires_at.
        domain::create_signin_link(db, "hash-2", "g-001", 1_000)
            .await
            .unwrap();
        let err = domain::consume_signin_link(db, "hash-2", 1_000)
            .await
            .unwrap_err();
        assert!(matches!(err, SignInLinkError::Expired), "{err:?}");
        let err = domain::consume_signin_link(db, "hash-x", 1)
            .await
            .unwrap_err();
        assert!(matches!(err, SignInLinkError::Unknown), "{err:?}");

        // Under concurrency exactly one consumer wins.
        domain::create_signin_link(db, "hash-3", "t-001", 1_000)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(
                    async move { domain::consume_signin_link(&db, "hash-3", 100 + i).await },
                )
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(person) => {
                    assert_eq!(person, "t-001");
                    won += 1;
                }
                Err(SignInLinkError::AlreadyUsed) => {}
                Err(e) => panic!("{}: {e:?}", t.name),
            }
        }
        assert_eq!(won, 1, "{}", t.name);

        // A disabled account's link does not sign in, nor do its sessions last.
        domain::create_signin_link(db, "hash-4", "g-002", 1_000)
            .await
            .unwrap();
        domain::create_session(db, "sess-g2", "g-002", 0, 10_000)
            .await
            .unwrap();
        assert_eq!(
            domain::session_person(db, "sess-g2", 5)
                .await
                .unwrap()
                .as_deref(),
            Some("g-002")
        );
        exec(db, "UPDATE people SET enabled = FALSE WHERE id = 'g-002'").await;
        let err = domain::consume_signin_link(db, "hash-4", 5)
            .await
            .unwrap_err();
        assert!(matches!(err, SignInLinkError::Disabled), "{err:?}");
        assert_eq!(
            domain::session_person(db, "sess-g2", 5).await.unwrap(),
            None
        );

        // Sessions: valid until expiry, gone after sign-out.
        domain::create_session(db, "sess-1", "g-001", 100, 200)
            .await
            .unwrap();
        assert_eq!(
            domain::session_person(db, "sess-1", 199)
                .await
                .unwrap()
                .as_deref(),
            Some("g-001")
        );
        assert_eq!(
            domain::session_person(db, "sess-1", 200).await.unwrap(),
            None
        );
        assert!(domain::delete_session(db, "sess-1").await.unwrap());
        assert!(!domain::delete_session(db, "sess-1").await.unwrap());
        assert_eq!(
            domain::session_person(db, "sess-1", 150).await.unwrap(),
            None
        );
        // Purging at 300: the expired sess-2 and the used links hash-1, -3, -4 go; the unused
        // hash-2 (expiry 1000) and sess-g2 stay.
        domain::create_session(db, "sess-2", "g-001", 100, 200)
            .await
            .unwrap();
        assert_eq!(
            domain::purge_expired(db, 300).await.unwrap(),
            domain::Purged {
                sessions: 1,
                signin_links: 3
            }
        );
        assert_eq!(db.count(domain::Table::SigninLinks).await.unwrap(), 1);

        // The caller audits sign-ins; entries come back filtered, newest first.
        for (at, action, actor) in [
            (10, Action::SignInFailed, None),
            (20, Action::SignIn, Some("g-001")),
            (30, Action::SignIn, Some("t-001")),
            (40, Action::Exported, Some("t-001")),
        ] {
            domain::audit(
                db,
                &AuditEntry {
                    at,
                    actor,
                    action,
                    subject: None,
                    detail: serde_json::json!({ "email": "g.nakagawa@home.example.jp" }),
                    remote_addr: Some("2001:db8::1"),
                },
            )
            .await
            .unwrap();
        }
        let all = domain::audit_log(db, &AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].actor, None);
        assert_eq!(all[3].detail["email"], "g.nakagawa@home.example.jp");
        let sign_ins = domain::audit_log(
            db,
            &AuditFilter {
                action: Some(Action::SignIn),
                since: Some(25),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(sign_ins.len(), 1);
        assert_eq!(sign_ins[0].actor.as_deref(), Some("t-001"));
        let latest = domain::audit_log(
            db,
            &AuditFilter {
                limit: 2,
                actor: Some("t-001"),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
        let at: Vec<i64> = latest.iter().map(|e| e.at).collect();
        assert_eq!(at, [40, 30]);

        // Retention: entries before the cut-off go, except the newest, which keeps `seq` going.
        assert_eq!(domain::purge_audit_before(db, 25).await.unwrap(), 2);
        assert_eq!(domain::purge_audit_before(db, 1_000).await.unwrap(), 1);
        let kept = domain::audit_log(db, &AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(kept.iter().map(|e| e.at).collect::<Vec<_>>(), [40]);
        let next = domain::audit(
            db,
            &AuditEntry {
                at: 50,
                actor: None,
                action: Action::SignInFailed,
                subject: None,
                detail: serde_json::json!({}),
                remote_addr: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(next, kept[0].seq + 1);
        t.finish().await;
    }
}

/// An acknowledged change is committed: a second, independent connection pool (as after a
/// restart) sees it. (Process-kill survival itself follows from WAL commit semantics; see
/// domain/src/db.rs.)
#[tokio::test]
async fn purge_removes_only_what_can_no_longer_sign_in() {
    for t in backends("purge").await {
        let db = &t.db;
        sample(db).await;
        // Links: used, expired unused, expiring exactly now, still valid.
        for (hash, expires) in [
            ("used", 1_000),
            ("expired", 100),
            ("edge", 300),
            ("fresh", 1_000),
        ] {
            domain::create_signin_link(db, hash, "g-001", expires)
                .await
                .unwrap();
        }
        domain::consume_signin_link(db, "used", 50).await.unwrap();
        // Sessions: expired, expiring exactly now, still valid.
        for (hash, expires) in [("s-old", 200), ("s-edge", 300), ("s-live", 10_000)] {
            domain::create_session(db, hash, "g-001", 0, expires)
                .await
                .unwrap();
        }

        let purged = domain::purge_expired(db, 300).await.unwrap();
        assert_eq!(
            purged,
            domain::Purged {
                sessions: 2,
                signin_links: 3
            },
            "{}",
            t.name
        );
        assert_eq!(purged.total(), 5);
        // What is left still works: the live session, the fresh link (once).
        assert_eq!(
            domain::session_person(db, "s-live", 301)
                .await
                .unwrap()
                .as_deref(),
            Some("g-001"),
            "{}",
            t.name
        );
        assert_eq!(
            domain::consume_signin_link(db, "fresh", 301).await.unwrap(),
            "g-001"
        );
        // Gone links are unknown now, which refuses them all the same.
        let err = domain::consume_signin_link(db, "edge", 250)
            .await
            .unwrap_err();
        assert!(matches!(err, SignInLinkError::Unknown), "{err:?}");

        // A second purge finds the link just used, and nothing else.
        assert_eq!(
            domain::purge_expired(db, 301).await.unwrap(),
            domain::Purged {
                sessions: 0,
                signin_links: 1
            }
        );
        assert_eq!(db.count(domain::Table::SigninLinks).await.unwrap(), 0);
        assert_eq!(db.count(domain::Table::WebSessions).await.unwrap(), 1);
        t.finish().await;
    }
}

#[tokio::test]
async fn committed_changes_are_visible_to_a_fresh_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classroom.db");
    let db = Db::open_sqlite(&path).await.unwrap();
    sample(&db).await;
    domain::set_mode(
        &db,
        &CutoffPolicy::default(),
        acting("g-001", jst("2026-06-09T20:00:00")),
        &request("s-002", "2026-06-10", "2026-06-10", Mode::Online),
    )
    .await
    .unwrap();
    let other = Db::open_sqlite(&path).await.unwrap();
    assert_eq!(
        domain::mode_on(&other, "s-002", date("2026-06-10"))
            .await
            .unwrap(),
        Mode::Online
    );
    other.close().await;
    db.close().await;
}

/// Many writers at once (guardians at 07:55, the media server, sign-ins): every append gets its
/// own `seq`, nothing fails with a duplicate key, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_do_not_collide() {
    for t in backends("concurrent").await {
        let db = &t.db;
        sample(db).await;
        let eng = english_lesson(db).await;
        let at = jst("2026-06-10T07:55:00");
        let mut tasks = Vec::new();
        for (i, pupil) in [
            "s-001", "s-002", "s-003", "s-004", "s-005", "s-006", "s-007", "s-008",
        ]
        .into_iter()
        .enumerate()
        {
            let (db, eng) = (db.clone(), eng.clone());
            tasks.push(tokio::spawn(async move {
                let req = request(pupil, "2026-06-10", "2026-06-10", Mode::Online);
                domain::set_mode(&db, &CutoffPolicy::default(), acting("t-001", at), &req)
                    .await
                    .map(|changes| changes.len())
                    .map_err(|e| e.to_string())?;
                domain::record_join(&db, &eng, pupil, at + i as i64)
                    .await
                    .map_err(|e| e.to_string())?;
                domain::audit(
                    &db,
                    &AuditEntry {
                        at,
                        actor: Some(pupil),
                        action: Action::JoinTokenIssued,
                        subject: Some("lesson-eng-0610"),
                        detail: serde_json::json!({}),
                        remote_addr: None,
                    },
                )
                .await
                .map_err(|e| e.to_string())
            }));
        }
        for task in tasks {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        }
        assert_eq!(db.count(domain::Table::ModeChanges).await.unwrap(), 8);
        assert_eq!(db.count(domain::Table::PresenceEvents).await.unwrap(), 8);
        let log = domain::audit_log(db, &AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(log.len(), 16, "{}", t.name);
        let mut seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
        seqs.sort();
        assert_eq!(seqs, (1..=16).collect::<Vec<i64>>());
        t.finish().await;
    }
}

/// A resume within the grace is a gap in one visit, stored with its start and end; a drop that
/// never came back ends the visit at the drop; gaps per visit are bounded.
#[tokio::test]
async fn gaps_in_a_visit_are_stored_and_not_counted_as_present() {
    for t in backends("gaps").await {
        let db = &t.db;
        sample(db).await;
        let eng = english_lesson(db).await;
        let at = |hms: &str| jst(&format!("2026-06-10T{hms}"));
        // s-001: one visit 08:45–09:15 with a 2-minute gap, then a drop at 09:15 never resumed
        // (the grace ran out at 09:15:30 and the leave was written then).
        domain::record_join(db, &eng, "s-001", at("08:45:00"))
            .await
            .unwrap();
        assert!(
            domain::record_away(db, &eng, "s-001", at("09:00:00"))
                .await
                .unwrap()
        );
        domain::record_back(db, &eng, "s-001", at("09:02:00"))
            .await
            .unwrap();
        // A second `back` (a resume whose drop was not recorded) changes nothing.
        domain::record_back(db, &eng, "s-001", at("09:03:00"))
            .await
            .unwrap();
        assert!(
            domain::record_away(db, &eng, "s-001", at("09:15:00"))
                .await
                .unwrap()
        );
        domain::record_leave(db, &eng, "s-001", at("09:15:30"))
            .await
            .unwrap();
        let report = domain::attendance_report(db, &eng, at("10:00:00"))
            .await
            .unwrap();
        let row = report.iter().find(|r| r.pupil_id == "s-001").unwrap();
        let online = row.online.clone().unwrap();
        assert_eq!(
            // Away: the 2-minute gap, and the 30 s of grace of the gap never closed.
            (online.seconds_connected, online.seconds_away),
            (28 * 60, 2 * 60 + 30),
            "{}",
            t.name
        );
        assert_eq!((online.joins, online.reconnects), (1, 0), "{}", t.name);
        assert_eq!(online.last_leave, Some(at("09:15:00")), "{}", t.name);
        assert_eq!(
            online.gaps,
            [
                domain::Gap {
                    start: at("09:00:00"),
                    end: Some(at("09:02:00"))
                },
                domain::Gap {
                    start: at("09:15:00"),
                    end: None
                }
            ],
            "{}",
            t.name
        );
        let reports = vec![
            domain::report_for_lesson(db, &eng, at("10:00:00"))
                .await
                .unwrap(),
        ];
        let csv = domain::to_csv(&reports, chrono_tz::Asia::Tokyo).unwrap();
        let line = csv.lines().find(|l| l.contains(",s-001,")).unwrap();
        assert!(line.ends_with(",28,0,,false,2,2"), "{line}");

        // The bound: a visit keeps at most MAX_GAPS_PER_VISIT gaps; a new visit starts afresh.
        domain::record_join(db, &eng, "s-002", at("08:45:00"))
            .await
            .unwrap();
        let max = domain::MAX_GAPS_PER_VISIT;
        for i in 0..max {
            let away = at("08:46:00") + 2 * i;
            assert!(domain::record_away(db, &eng, "s-002", away).await.unwrap());
            domain::record_back(db, &eng, "s-002", away + 1)
                .await
                .unwrap();
        }
        let over = at("08:46:00") + 2 * max;
        assert!(!domain::record_away(db, &eng, "s-002", over).await.unwrap());
        assert_eq!(
            db.count(domain::Table::PresenceGaps).await.unwrap(),
            2 + max
        );
        domain::record_leave(db, &eng, "s-002", over + 10)
            .await
            .unwrap();
        domain::record_join(db, &eng, "s-002", over + 20)
            .await
            .unwrap();
        assert!(
            domain::record_away(db, &eng, "s-002", over + 30)
                .await
                .unwrap()
        );
        t.finish().await;
    }
}
