//! School scope over real HTTP: one server, two schools of the same board of education. Staff
//! of school A (瑞穂小, the sample roster) try every staff and administrator route on school B's
//! (北小) lesson, class, pupils and people; each attempt gets 403, changes nothing, and leaves
//! exactly one audit row (`forbidden`) behind. Sign-in links: only for non-administrators of
//! one's own school, audited with the minter; the command line may mint for anyone and is
//! audited as the command line. Refusals are audited boundedly.
//!
//! SQLite always; PostgreSQL too when `CLASSROOM_TEST_POSTGRES_URL` is set.

use crate::portal_support as portal;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom_domain::{AuditFilter, AuditRecord, Db, Table};
use portal::{Backend, Options, PortalServer, Session, bounded, school_date};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

on_both_databases!(
    cross_school_requests_are_refused_and_change_nothing,
    signin_links_follow_one_policy,
);

const SCHOOL_B: &str = "org-es-kita";
const CLASS_B: &str = "class-kita-4-1";
const LESSON_B: &str = "lesson-kita-today";
const ROOM_B: &str = "lesson-kita-4-1-today";

/// A users.csv row (OneRoster 1.2 columns of the sample).
fn user(id: &str, email: &str, given: &str, family: &str, agents: &str, org: &str) -> String {
    let mut fields = vec![""; 27];
    fields[0] = id;
    fields[3] = "true";
    fields[4] = email;
    fields[6] = given;
    fields[7] = family;
    fields[10] = email;
    fields[13] = agents;
    fields[21] = org;
    let row = fields.join(",");
    if agents.contains(',') {
        row.replace(agents, &format!("\"{agents}\""))
    } else {
        row
    }
}

/// The sample school (with its administrator a-001) plus a second school of the same board:
/// administrator a-101, teacher t-101, pupils s-101 and s-102 (guardian g-101), class
/// class-kita-4-1; a board-level administrator a-900 held at the board, not at a school; and
/// t-901, a teacher account of school A with a-001's e-mail (the principal's other account).
fn two_schools() -> Result<Vec<(String, String)>> {
    let mut files = portal::roster_with_admin()?;
    let add = |files: &mut Vec<(String, String)>, name: &str, line: &str| {
        portal::append_line(files, name, line)
    };
    add(
        &mut files,
        "orgs.csv",
        &format!("{SCHOOL_B},,,高岡市立北小学校,school,B116220000100,org-board-takaoka"),
    )?;
    for (id, email, given, family, agents, org, role) in [
        (
            "a-101",
            "principal@kita-es.example.jp",
            "二郎",
            "木村",
            "",
            SCHOOL_B,
            "administrator",
        ),
        (
            "t-101",
            "t.ueda@kita-es.example.jp",
            "春香",
            "上田",
            "",
            SCHOOL_B,
            "teacher",
        ),
        (
            "s-101",
            "s26101@kita-es.example.jp",
            "蓮",
            "松本",
            "",
            SCHOOL_B,
            "student",
        ),
        (
            "s-102",
            "s26102@kita-es.example.jp",
            "凛",
            "井上",
            "",
            SCHOOL_B,
            "student",
        ),
        (
            "g-101",
            "g.matsumoto@home.example.jp",
            "裕子",
            "松本",
            "s-101",
            SCHOOL_B,
            "guardian",
        ),
        (
            "a-900",
            "kyoiku@board.example.jp",
            "三郎",
            "斎藤",
            "",
            "org-board-takaoka",
            "districtAdministrator",
        ),
        (
            "t-901",
            "principal@mizuho-es.example.jp",
            "一郎",
            "田中",
            "",
            "org-es-mizuho",
            "teacher",
        ),
    ] {
        add(
            &mut files,
            "users.csv",
            &user(id, email, given, family, agents, org),
        )?;
        add(
            &mut files,
            "roles.csv",
            &format!("role-{id},,,{id},primary,{role},,,{org},"),
        )?;
    }
    add(
        &mut files,
        "classes.csv",
        &format!(
            "{CLASS_B},,,4年1組,P4,course-hr-p4,4-1,homeroom,4年1組教室,{SCHOOL_B},as-2026,,,"
        ),
    )?;
    for (person, role) in [
        ("t-101", "teacher"),
        ("s-101", "student"),
        ("s-102", "student"),
    ] {
        add(
            &mut files,
            "enrollments.csv",
            &format!("enr-kita-{person},,,{CLASS_B},{SCHOOL_B},{person},{role},false,,"),
        )?;
    }
    Ok(files)
}

/// The sample server plus the second school and its lesson today.
async fn start(backend: &Backend) -> Result<PortalServer> {
    let server = PortalServer::start(Options::on(backend)).await?;
    let db = server.handle.db();
    let dir = tempfile::tempdir()?;
    portal::write_roster(&two_schools()?, dir.path())?;
    classroom_domain::import_dir(db, dir.path()).await?;
    let start = portal::now();
    classroom_domain::create_lesson(
        db,
        &classroom_domain::NewLesson {
            id: LESSON_B.to_owned(),
            class_id: CLASS_B.to_owned(),
            starts_at: start,
            ends_at: start + 3600,
            media_room: ROOM_B.to_owned(),
            teachers: None,
        },
        chrono_tz::Asia::Tokyo,
    )
    .await?;
    Ok(server)
}

/// Everything a staff or administrator route could change, by table.
async fn state(db: &Db) -> Result<Vec<(Table, i64)>> {
    let mut out = Vec::new();
    for table in [
        Table::Orgs,
        Table::People,
        Table::GuardianLinks,
        Table::Classes,
        Table::Enrollments,
        Table::Lessons,
        Table::LessonTeachers,
        Table::ModeChanges,
        Table::LobbyEvents,
        Table::AttendanceMarks,
        Table::SigninLinks,
        Table::WebSessions,
    ] {
        out.push((table, db.count(table).await?));
    }
    Ok(out)
}

async fn audit_rows(db: &Db) -> Result<Vec<AuditRecord>> {
    Ok(classroom_domain::audit_log(
        db,
        &AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        },
    )
    .await?)
}

/// What one refused attempt may leave behind: the 403, nothing changed, and one `forbidden`
/// audit row naming the caller.
struct Watch<'a> {
    db: &'a Db,
}

impl Watch<'_> {
    async fn refused(
        &self,
        who: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<()> {
        let before = state(self.db).await?;
        let last = audit_rows(self.db).await?.first().map_or(0, |r| r.seq);
        let (status, answer) = who.send(method.clone(), path, body, true).await?;
        let attempt = format!("{} {method} {path}", who.person_id());
        ensure!(
            status == StatusCode::FORBIDDEN,
            "{attempt}: expected 403, got {status} {answer}"
        );
        ensure!(answer["error"] == "forbidden", "{attempt}: {answer}");
        let after = state(self.db).await?;
        ensure!(
            before == after,
            "{attempt} changed the database: {before:?} → {after:?}"
        );
        let new: Vec<AuditRecord> = audit_rows(self.db)
            .await?
            .into_iter()
            .filter(|r| r.seq > last)
            .collect();
        ensure!(
            new.len() == 1
                && new[0].action == classroom_domain::Action::Forbidden
                && new[0].actor.as_deref() == Some(who.person_id()),
            "{attempt}: the audit log should gain one `forbidden` row, got {new:?}"
        );
        Ok(())
    }
}

fn lesson_ids(body: &Value) -> Vec<String> {
    body["lessons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn cross_school_requests_are_refused_and_change_nothing(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = start(&backend).await?;
        let db = server.handle.db();
        let lesson_a = server.lesson_id.clone();
        let admin_a = server.sign_in("a-001").await?;
        let teacher_a = server.sign_in("t-001").await?;
        let admin_b = server.sign_in("a-101").await?;
        let board = server.sign_in("a-900").await?;
        let pupil_b = server.sign_in("s-101").await?;
        let today = school_date(0);
        let later = school_date(1);

        // Within their own school the administrators and teachers can work (the refusals
        // below are about the school, not a broken route).
        let (status, _) = admin_b
            .get(&format!("/api/lessons/{LESSON_B}/lobby"))
            .await?;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = admin_a
            .get(&format!("/api/lessons/{lesson_a}/lobby"))
            .await?;
        assert_eq!(status, StatusCode::OK);
        // Pupil s-101 waits in school B's lobby (in person today), so admitting them would
        // change something.
        let (status, body) = pupil_b
            .post(&format!("/api/lessons/{LESSON_B}/join"), json!({}))
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "in_person_today");

        let watch = Watch { db };
        let lesson = |rest: &str| format!("/api/lessons/{LESSON_B}/{rest}");
        let class_range = format!("class={CLASS_B}&from={today}&to={today}");
        for attacker in [&admin_a, &teacher_a] {
            let attempts: Vec<(Method, String, Option<Value>)> = vec![
                (Method::GET, lesson("lobby"), None),
                (
                    Method::POST,
                    lesson("admit"),
                    Some(json!({ "pupil": "s-101" })),
                ),
                (
                    Method::POST,
                    lesson("refuse"),
                    Some(json!({ "pupil": "s-101" })),
                ),
                (
                    Method::POST,
                    lesson("marks"),
                    Some(json!({ "pupil": "s-101", "status": "present" })),
                ),
                (Method::POST, lesson("join"), Some(json!({}))),
                (Method::GET, lesson("attendance.csv"), None),
                (Method::GET, lesson("attendance.json"), None),
                (
                    Method::GET,
                    format!("/api/attendance.csv?{class_range}"),
                    None,
                ),
                (
                    Method::GET,
                    format!("/api/attendance.json?{class_range}"),
                    None,
                ),
                (Method::GET, "/api/pupils/s-101/modes".to_owned(), None),
                (
                    Method::PUT,
                    "/api/pupils/s-101/modes".to_owned(),
                    Some(json!({ "from": later, "to": later, "mode": "online" })),
                ),
                (Method::GET, "/api/pupils/s-101/history".to_owned(), None),
            ];
            for (method, path, body) in attempts {
                watch.refused(attacker, method, &path, body).await?;
            }
        }

        // Administrator routes: creating a lesson for school B's class, uploading a roster
        // that moves school B's pupil into school A, sign-in links for school B's people.
        watch
            .refused(
                &admin_a,
                Method::POST,
                "/api/admin/lessons",
                Some(json!({
                    "class_id": CLASS_B,
                    "starts_at": "2026-12-24T09:00:00+09:00",
                    "ends_at": "2026-12-24T09:45:00+09:00",
                })),
            )
            .await?;
        let mut takeover = two_schools()?;
        for (name, text) in &mut takeover {
            if name == "users.csv" || name == "roles.csv" {
                *text = text
                    .lines()
                    .map(|l| {
                        if l.starts_with("s-101,") || l.starts_with("role-s-101,") {
                            l.replace(SCHOOL_B, "org-es-mizuho")
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
        let before = state(db).await?;
        let last = audit_rows(db).await?.first().map_or(0, |r| r.seq);
        let (status, body) = admin_a
            .post_bytes(
                "/api/admin/roster",
                "application/zip",
                portal::stored_zip(&takeover)?,
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.to_string().contains("s-101"), "{body}");
        assert_eq!(
            state(db).await?,
            before,
            "the roster upload changed something"
        );
        let person = classroom_domain::person(db, "s-101")
            .await?
            .context("s-101")?;
        assert_eq!(person.primary_org_id.as_deref(), Some(SCHOOL_B));
        let new: Vec<_> = audit_rows(db)
            .await?
            .into_iter()
            .filter(|r| r.seq > last)
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].action, classroom_domain::Action::Forbidden);
        for person in ["s-101", "g-101", "t-101", "a-101"] {
            watch
                .refused(
                    &admin_a,
                    Method::POST,
                    "/api/admin/signin-links",
                    Some(json!({ "person": person })),
                )
                .await?;
        }

        // Lists show only one's own school.
        for path in [
            format!("/api/lessons?date={today}"),
            format!("/api/admin/lessons?from={today}&to={today}"),
        ] {
            let (status, body) = admin_a.get(&path).await?;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            let ids = lesson_ids(&body);
            assert!(ids.contains(&lesson_a), "{path}: {body}");
            assert!(!ids.iter().any(|l| l == LESSON_B), "{path}: {body}");
        }
        let (_, body) = admin_b
            .get(&format!("/api/admin/lessons?from={today}&to={today}"))
            .await?;
        assert_eq!(lesson_ids(&body), [LESSON_B], "{body}");
        // The audit log: school A's administrator sees school A's events (their own refusals
        // among them), none of school B's.
        let (status, body) = admin_a.get("/api/admin/audit?limit=1000").await?;
        assert_eq!(status, StatusCode::OK);
        let events = body["events"].as_array().context("events")?;
        let own_refusals = events
            .iter()
            .filter(|e| e["action"] == "forbidden" && e["actor"] == "a-001")
            .count();
        assert_eq!(own_refusals, 18, "{body}");
        let school_b = ["a-101", "t-101", "s-101", "s-102", "g-101"];
        for e in events {
            let actor = e["actor"].as_str().unwrap_or_default();
            let subject = e["subject"].as_str().unwrap_or_default();
            // School A's own attempts on school B's people are A's events; nothing else may
            // name school B.
            let ours = ["a-001", "t-001"].contains(&actor);
            assert!(
                !school_b.contains(&actor) && (ours || !school_b.contains(&subject)),
                "school B's event shown to A: {e}"
            );
        }
        let (_, body) = admin_b.get("/api/admin/audit?limit=1000").await?;
        assert!(
            body["events"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["actor"] == "s-101")),
            "school B's administrator sees school B's events: {body}"
        );

        // A board-level administrator (held at the board, not a school) has no implied power.
        let (_, body) = board.get("/api/admin/lessons").await?;
        assert_eq!(lesson_ids(&body), Vec::<String>::new(), "{body}");
        let (_, body) = board.get("/api/admin/audit").await?;
        assert_eq!(body["events"], json!([]), "{body}");
        watch
            .refused(
                &board,
                Method::GET,
                &format!("/api/lessons/{lesson_a}/lobby"),
                None,
            )
            .await?;
        watch
            .refused(
                &board,
                Method::PUT,
                "/api/pupils/s-001/modes",
                Some(json!({ "from": later, "to": later, "mode": "online" })),
            )
            .await?;
        watch
            .refused(
                &board,
                Method::POST,
                "/api/admin/signin-links",
                Some(json!({ "person": "g-001" })),
            )
            .await?;

        // Probing: however many refusals, the audit log gains a bounded number of rows.
        for i in 0..60 {
            let (status, _) = teacher_a
                .get(&format!(
                    "/api/attendance.csv?class=probe-{i}&from={today}&to={today}"
                ))
                .await?;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
        let forbidden_rows = audit_rows(db)
            .await?
            .iter()
            .filter(|r| {
                r.action == classroom_domain::Action::Forbidden
                    && r.actor.as_deref() == Some("t-001")
            })
            .count();
        assert!(
            forbidden_rows <= 22,
            "{forbidden_rows} forbidden rows for one prober"
        );

        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn signin_links_follow_one_policy(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = start(&backend).await?;
        let db = server.handle.db();
        let admin_a = server.sign_in("a-001").await?;
        let teacher_a = server.sign_in("t-001").await?;
        let watch = Watch { db };
        let links = "/api/admin/signin-links";

        // Not for another administrator (of the same school or not), not for oneself, not for
        // oneself under another account (t-901 has a-001's e-mail), not for another school.
        let (status, _) = admin_a.post(links, json!({ "person": "a-101" })).await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        for person in ["a-001", "t-901", "a-900", "s-102"] {
            watch
                .refused(
                    &admin_a,
                    Method::POST,
                    links,
                    Some(json!({ "person": person })),
                )
                .await?;
        }
        // Not from a teacher at all.
        watch
            .refused(
                &teacher_a,
                Method::POST,
                links,
                Some(json!({ "person": "g-001" })),
            )
            .await?;

        // For a guardian of one's own school: a link that works, audited with its minter.
        let (status, body) = admin_a.post(links, json!({ "person": "g-001" })).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let url = body["url"].as_str().context("url")?;
        let issued = classroom_domain::audit_log(
            db,
            &AuditFilter {
                action: Some(classroom_domain::Action::SignInLinkIssued),
                limit: 1,
                ..AuditFilter::default()
            },
        )
        .await?;
        let row = issued.first().context("no signin_link_issued row")?;
        assert_eq!(row.actor.as_deref(), Some("a-001"));
        assert_eq!(row.subject.as_deref(), Some("g-001"));
        assert_eq!(row.detail["issuer"], "administrator");
        let guardian = Session::with_link(&server.url(), url).await?;
        assert_eq!(guardian.person_id(), "g-001");

        // The command line (the operator on the machine) may mint for anyone, administrators
        // and other schools included, and is recorded as the command line.
        let dir = tempfile::tempdir()?;
        let url = server.url();
        let database = server.database_url();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_classroom"))
            .args(["signin-link", "--person", "a-101", "--base-url", &url])
            .env("CLASSROOM_DATA_DIR", dir.path())
            .env("CLASSROOM_DATABASE_URL", &database)
            .env("CLASSROOM_HTTP", "127.0.0.1:0")
            .env("CLASSROOM_MEDIA_BIND", "127.0.0.1:0")
            .env("CLASSROOM_LOG_LEVEL", "warn")
            .kill_on_drop(true)
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "classroom signin-link: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli_link = String::from_utf8(out.stdout)?.trim().to_owned();
        let admin_b = Session::with_link(&url, &cli_link).await?;
        assert_eq!(admin_b.person_id(), "a-101");
        let issued = classroom_domain::audit_log(
            db,
            &AuditFilter {
                action: Some(classroom_domain::Action::SignInLinkIssued),
                limit: 1,
                ..AuditFilter::default()
            },
        )
        .await?;
        let row = issued.first().context("no signin_link_issued row")?;
        assert_eq!(row.actor, None, "{row:?}");
        assert_eq!(row.subject.as_deref(), Some("a-101"));
        assert_eq!(row.detail["issuer"], "cli");

        server.shutdown().await;
        Ok(())
    })
    .await
}
