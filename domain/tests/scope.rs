//! School scope in the domain, on SQLite (always) and PostgreSQL (when
//! CLASSROOM_TEST_POSTGRES_URL is set): which schools a person acts for, the checks on lessons,
//! classes and pupils built on it, the join decision, sign-in link minting and the audit log an
//! administrator may read.
//!
//! Two schools of one board: the sample's 瑞穂小 (org-es-mizuho; administrator a-001, teachers
//! t-001 and t-002, pupils s-001..s-008, guardian g-001) and 北小 (org-es-kita; administrator
//! a-101, teacher t-101, pupil s-101, class class-kita-1 with a lesson). a-000 is an
//! administrator with no org, a-900 one held at the board: neither acts for any school.

mod common;

use classroom_domain as domain;
use classroom_domain::{
    Acting, Action, AuditFilter, Capacity, Db, Denied, Issuer, JoinRefusal, JoinRole, Lesson,
    LinkRequest, MintError, MintRefusal, NewLesson, Scope, TeacherActionError, import_dir,
};
use common::{backends, exec, fixture_dir};

const MIZUHO: &str = "org-es-mizuho";
const KITA: &str = "org-es-kita";

async fn two_schools(db: &Db) -> (Lesson, Lesson) {
    import_dir(db, &fixture_dir()).await.unwrap();
    exec(
        db,
        "INSERT INTO orgs (id, name, org_type, identifier, parent_id) VALUES \
         ('org-es-kita', '高岡市立北小学校', 'school', NULL, 'org-board-takaoka')",
    )
    .await;
    for (id, role, email, org) in [
        (
            "a-001",
            "administrator",
            "principal@mizuho-es.example.jp",
            "'org-es-mizuho'",
        ),
        (
            "a-101",
            "administrator",
            "principal@kita-es.example.jp",
            "'org-es-kita'",
        ),
        ("a-000", "administrator", "nobody@board.example.jp", "NULL"),
        (
            "a-900",
            "administrator",
            "kyoiku@board.example.jp",
            "'org-board-takaoka'",
        ),
        (
            "t-101",
            "teacher",
            "t.ueda@kita-es.example.jp",
            "'org-es-kita'",
        ),
        (
            "s-101",
            "student",
            "s26101@kita-es.example.jp",
            "'org-es-kita'",
        ),
        // The principal of 瑞穂小 also has a teacher account with the same address.
        (
            "t-901",
            "teacher",
            "Principal@mizuho-es.example.jp",
            "'org-es-mizuho'",
        ),
    ] {
        exec(
            db,
            &format!(
                "INSERT INTO people (id, role, username, given_name, family_name, email, \
                 enabled, primary_org_id) VALUES ('{id}', '{role}', '{email}', '名', '姓', \
                 '{email}', TRUE, {org})"
            ),
        )
        .await;
    }
    exec(
        db,
        "INSERT INTO classes (id, title, class_kind, school_id, course_id) VALUES \
         ('class-kita-1', '4年1組', 'homeroom', 'org-es-kita', 'course-hr-p4')",
    )
    .await;
    exec(
        db,
        "INSERT INTO enrollments (id, class_id, person_id, role, is_primary) VALUES \
         ('enr-k-t', 'class-kita-1', 't-101', 'teacher', TRUE), \
         ('enr-k-s', 'class-kita-1', 's-101', 'student', FALSE)",
    )
    .await;
    let new = |id: &str, class: &str, room: &str| NewLesson {
        id: id.to_owned(),
        class_id: class.to_owned(),
        starts_at: 1_781_049_600, // 2026-06-10 09:00 JST
        ends_at: 1_781_052_300,
        media_room: room.to_owned(),
        teachers: None,
    };
    let tz = chrono_tz::Asia::Tokyo;
    let a = domain::create_lesson(db, &new("L-mizuho", "class-p5-1", "room-mizuho"), tz)
        .await
        .unwrap();
    let b = domain::create_lesson(db, &new("L-kita", "class-kita-1", "room-kita"), tz)
        .await
        .unwrap();
    (a, b)
}

async fn scope(db: &Db, id: &str) -> Scope {
    let person = domain::person(db, id).await.unwrap().unwrap();
    domain::scope_of(db, &person).await.unwrap()
}

fn schools(scope: &Scope) -> Vec<&str> {
    scope.schools().collect()
}

#[tokio::test]
async fn schools_of_each_role() {
    for t in backends("scope_roles").await {
        let db = &t.db;
        two_schools(db).await;
        assert_eq!(schools(&scope(db, "a-001").await), [MIZUHO], "{}", t.name);
        assert_eq!(schools(&scope(db, "a-101").await), [KITA]);
        assert_eq!(schools(&scope(db, "t-001").await), [MIZUHO]);
        // No school, or a board instead of a school: no implied power.
        assert!(schools(&scope(db, "a-000").await).is_empty());
        assert!(schools(&scope(db, "a-900").await).is_empty());
        // Guardians and pupils act for no school.
        assert!(schools(&scope(db, "g-001").await).is_empty());
        // A teacher of 瑞穂小 who also teaches a class of 北小 acts for both.
        exec(
            db,
            "INSERT INTO enrollments (id, class_id, person_id, role, is_primary) VALUES \
             ('enr-k-t2', 'class-kita-1', 't-002', 'teacher', FALSE)",
        )
        .await;
        assert_eq!(schools(&scope(db, "t-002").await), [KITA, MIZUHO]);
        // A disabled account acts for none.
        exec(db, "UPDATE people SET enabled = FALSE WHERE id = 'a-001'").await;
        assert!(schools(&scope(db, "a-001").await).is_empty());
        t.finish().await;
    }
}

#[tokio::test]
async fn lessons_classes_and_pupils_stay_in_their_school() {
    for t in backends("scope_resources").await {
        let db = &t.db;
        let (lesson_a, lesson_b) = two_schools(db).await;
        for (who, lesson, allowed) in [
            ("a-001", &lesson_a, true),
            ("a-001", &lesson_b, false),
            ("a-101", &lesson_b, true),
            ("a-101", &lesson_a, false),
            ("t-101", &lesson_b, true),
            ("t-001", &lesson_b, false),
            ("a-000", &lesson_a, false),
            ("a-900", &lesson_a, false),
        ] {
            let s = scope(db, who).await;
            assert_eq!(
                domain::may_act_on_lesson(db, &s, lesson).await.unwrap(),
                allowed,
                "{who} on {} ({})",
                lesson.id,
                t.name
            );
        }
        let s = scope(db, "a-001").await;
        assert!(
            domain::may_act_on_class(db, &s, "class-p5-1")
                .await
                .unwrap()
        );
        assert!(
            !domain::may_act_on_class(db, &s, "class-kita-1")
                .await
                .unwrap()
        );
        assert!(
            !domain::may_act_on_class(db, &s, "no-such-class")
                .await
                .unwrap()
        );
        let listed = domain::lessons_in_scope(db, &s, 0, i64::MAX).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, lesson_a.id);
        // Scheduling: only for one's own classes, with one's own school's teachers.
        assert!(
            domain::may_schedule(db, &s, "class-p5-1", None)
                .await
                .unwrap()
        );
        assert!(
            !domain::may_schedule(db, &s, "class-kita-1", None)
                .await
                .unwrap()
        );
        let other_teacher = ["t-101".to_owned()];
        assert!(
            !domain::may_schedule(db, &s, "class-p5-1", Some(&other_teacher))
                .await
                .unwrap()
        );

        // Attendance modes: an administrator only for the pupils of their school; one without a
        // school (once "city-wide") for nobody.
        let may = |actor: &'static str, pupil: &'static str| {
            let db = db.clone();
            async move { domain::may_set_mode(&db, actor, pupil).await.unwrap() }
        };
        assert_eq!(may("a-001", "s-001").await, Ok(Capacity::Staff));
        assert_eq!(may("a-001", "s-101").await, Err(Denied::NotPermitted));
        assert_eq!(may("a-101", "s-001").await, Err(Denied::NotPermitted));
        assert_eq!(may("a-000", "s-001").await, Err(Denied::NotPermitted));
        assert_eq!(may("a-900", "s-101").await, Err(Denied::NotPermitted));

        // The lobby's decisions check the same rule.
        let acting = Acting {
            person: "a-001",
            at: lesson_b.starts_at,
            remote_addr: None,
        };
        let err = domain::admit(db, acting, &lesson_b, "s-101")
            .await
            .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotTeacher), "{err:?}");
        let err = domain::mark(
            db,
            &lesson_b,
            "s-101",
            domain::MarkStatus::Present,
            "a-000",
            lesson_b.starts_at,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, TeacherActionError::NotTeacher), "{err:?}");
        assert_eq!(db.count(domain::Table::LobbyEvents).await.unwrap(), 0);
        assert_eq!(db.count(domain::Table::AttendanceMarks).await.unwrap(), 0);
        t.finish().await;
    }
}

#[tokio::test]
async fn join_decision_by_role_and_school() {
    for t in backends("scope_join").await {
        let db = &t.db;
        let (lesson_a, lesson_b) = two_schools(db).await;
        let at = lesson_b.starts_at;
        let decide = |who: &'static str, lesson: Lesson| {
            let db = db.clone();
            async move {
                let person = domain::person(&db, who).await.unwrap().unwrap();
                let s = domain::scope_of(&db, &person).await.unwrap();
                domain::join_decision(&db, &person, &s, &lesson, at)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            decide("a-101", lesson_b.clone()).await,
            Ok(JoinRole::Observer)
        );
        assert_eq!(
            decide("t-101", lesson_b.clone()).await,
            Ok(JoinRole::Teacher)
        );
        assert_eq!(
            decide("t-001", lesson_a.clone()).await,
            Ok(JoinRole::Teacher)
        );
        for who in ["a-001", "a-000", "t-001", "g-001", "s-001"] {
            assert_eq!(
                decide(who, lesson_b.clone()).await,
                Err(JoinRefusal::NotPermitted),
                "{who} ({})",
                t.name
            );
        }
        // A pupil of the lesson, in person by default: refused and waiting in the lobby.
        assert_eq!(
            decide("s-101", lesson_b.clone()).await,
            Err(JoinRefusal::InPersonToday)
        );
        assert_eq!(domain::lobby(db, &lesson_b).await.unwrap().len(), 1);
        t.finish().await;
    }
}

async fn mint(db: &Db, issuer: Issuer<'_>, person: &str, hash: &str) -> Result<(), MintError> {
    let req = LinkRequest {
        person,
        token_hash: hash,
        at: 1_781_000_000,
        expires_at: 1_781_000_900,
        remote_addr: Some("192.0.2.7"),
    };
    domain::mint_signin_link(db, &issuer, &req).await
}

#[tokio::test]
async fn signin_links_one_policy_audited() {
    for t in backends("scope_signin").await {
        let db = &t.db;
        two_schools(db).await;
        let admin = scope(db, "a-001").await;
        let teacher = scope(db, "t-001").await;
        for (issuer, person, why) in [
            (Issuer::Admin(&admin), "a-101", MintRefusal::Administrator),
            (Issuer::Admin(&admin), "a-900", MintRefusal::Administrator),
            (Issuer::Admin(&admin), "s-101", MintRefusal::OtherSchool),
            (Issuer::Admin(&admin), "t-101", MintRefusal::OtherSchool),
            (Issuer::Admin(&admin), "a-001", MintRefusal::Themselves),
            (Issuer::Admin(&admin), "t-901", MintRefusal::Themselves),
            (
                Issuer::Admin(&teacher),
                "g-001",
                MintRefusal::NotAnAdministrator,
            ),
        ] {
            let err = mint(db, issuer, person, "h-refused").await.unwrap_err();
            assert!(
                matches!(err, MintError::Refused(r) if r == why),
                "{person}: {err:?} ({})",
                t.name
            );
        }
        assert!(matches!(
            mint(db, Issuer::Admin(&admin), "nobody", "h-x")
                .await
                .unwrap_err(),
            MintError::UnknownPerson(_)
        ));
        assert_eq!(db.count(domain::Table::SigninLinks).await.unwrap(), 0);
        assert_eq!(db.count(domain::Table::AuditLog).await.unwrap(), 0);

        // Allowed: a guardian of one's own school; the operator for anyone.
        mint(db, Issuer::Admin(&admin), "g-001", "h-admin")
            .await
            .unwrap();
        mint(db, Issuer::Cli, "a-101", "h-cli").await.unwrap();
        assert_eq!(db.count(domain::Table::SigninLinks).await.unwrap(), 2);
        let log = domain::audit_log(
            db,
            &AuditFilter {
                action: Some(Action::SignInLinkIssued),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].actor, None);
        assert_eq!(log[0].subject.as_deref(), Some("a-101"));
        assert_eq!(log[0].detail["issuer"], "cli");
        assert_eq!(log[1].actor.as_deref(), Some("a-001"));
        assert_eq!(log[1].subject.as_deref(), Some("g-001"));
        assert_eq!(log[1].detail["issuer"], "administrator");
        assert_eq!(log[1].remote_addr.as_deref(), Some("192.0.2.7"));
        // Both links sign in.
        let who = domain::consume_signin_link(db, "h-cli", 1_781_000_001)
            .await
            .unwrap();
        assert_eq!(who, "a-101");

        // The audit log an administrator reads: events about their school's people only.
        let mizuho = domain::audit_log_within(db, &AuditFilter::default(), &admin)
            .await
            .unwrap();
        assert_eq!(mizuho.len(), 1);
        assert_eq!(mizuho[0].subject.as_deref(), Some("g-001"));
        let kita = domain::audit_log_within(db, &AuditFilter::default(), &scope(db, "a-101").await)
            .await
            .unwrap();
        assert_eq!(kita.len(), 1);
        assert_eq!(kita[0].subject.as_deref(), Some("a-101"));
        let none = domain::audit_log_within(db, &AuditFilter::default(), &scope(db, "a-900").await)
            .await
            .unwrap();
        assert!(none.is_empty());
        t.finish().await;
    }
}
