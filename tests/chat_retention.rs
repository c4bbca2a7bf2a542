//! Chat retention, a school's choice (docs/API.md "Chat retention", docs/LESSON.md): real
//! lessons over WebSocket, the signed-in HTTP API, the database. Off by default: chat stays in
//! the lesson. Turned on by the school's administrator (audited): the messages of lessons that
//! start after that are kept, a teacher's deletion removes the kept copy, only the lesson's
//! teachers and the school's administrators read them (another school gets 403), and the purge
//! deletes them once older than the school's period.
//!
//! SQLite always; PostgreSQL too when `CLASSROOM_TEST_POSTGRES_URL` is set.

use crate::portal_support as portal;
use crate::support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom_domain::Table;
use portal::{Backend, Options, PortalServer, Session, bounded, school_date};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::signal::is_type;
use support::{REPLY_TIMEOUT, RawConnection};

const LIMIT: Duration = Duration::from_secs(120);
const SCHOOL: &str = "org-es-mizuho";
const SCHOOL_B: &str = "org-es-kita";
const LESSON_2: &str = "lesson-kept";
const ROOM_2: &str = "lesson-p5-1-kept";

on_both_databases!(chat_is_kept_only_when_the_school_keeps_it);

/// A users.csv row (OneRoster 1.2 columns of the sample).
fn user(id: &str, email: &str, given: &str, family: &str, org: &str) -> String {
    let mut fields = vec![""; 27];
    fields[0] = id;
    fields[3] = "true";
    fields[4] = email;
    fields[6] = given;
    fields[7] = family;
    fields[10] = email;
    fields[21] = org;
    fields.join(",")
}

/// A second school of the board: administrator a-101, teacher t-101 of class-kita-4-1.
async fn add_school_b(server: &PortalServer) -> Result<()> {
    let mut files = portal::roster_with_admin()?;
    portal::append_line(
        &mut files,
        "orgs.csv",
        &format!("{SCHOOL_B},,,高岡市立北小学校,school,B116220000100,org-board-takaoka"),
    )?;
    for (id, email, role) in [
        ("a-101", "principal@kita-es.example.jp", "administrator"),
        ("t-101", "t.ueda@kita-es.example.jp", "teacher"),
    ] {
        portal::append_line(
            &mut files,
            "users.csv",
            &user(id, email, "春香", "上田", SCHOOL_B),
        )?;
        portal::append_line(
            &mut files,
            "roles.csv",
            &format!("role-{id},,,{id},primary,{role},,,{SCHOOL_B},"),
        )?;
    }
    portal::append_line(
        &mut files,
        "classes.csv",
        &format!(
            "class-kita-4-1,,,4年1組,P4,course-hr-p4,4-1,homeroom,4年1組教室,{SCHOOL_B},as-2026,,,"
        ),
    )?;
    portal::append_line(
        &mut files,
        "enrollments.csv",
        &format!("enr-kita-t-101,,,class-kita-4-1,{SCHOOL_B},t-101,teacher,false,,"),
    )?;
    let dir = tempfile::tempdir()?;
    portal::write_roster(&files, dir.path())?;
    classroom_domain::import_dir(server.handle.db(), dir.path()).await?;
    Ok(())
}

/// Joins `lesson`'s room as `who` with a token from the API.
async fn join(server: &PortalServer, who: &Session, lesson: &str) -> Result<RawConnection> {
    let (status, body) = who
        .post(&format!("/api/lessons/{lesson}/join"), json!({}))
        .await?;
    ensure!(status == StatusCode::OK, "join {lesson}: {status} {body}");
    let token = body["token"].as_str().context("token")?;
    let ws = RawConnection::connect(&server.handle.ws_url()).await?;
    let joined = ws.join(token).await?;
    ensure!(is_type(&joined, "joined"), "{joined}");
    Ok(ws)
}

/// Sends a chat message and waits for it to come back to the sender (accepted, delivered).
async fn chat(ws: &RawConnection, to: &str, text: &str) -> Result<Value> {
    ws.signal
        .send_json(&json!({"v": 1, "type": "chat", "to": to, "text": text}))?;
    let echo = ws
        .signal
        .expect_event(
            |e| is_type(e, "chat") && e["message"]["text"] == text,
            REPLY_TIMEOUT,
        )
        .await
        .with_context(|| format!("chat {text:?}"))?;
    Ok(echo["message"].clone())
}

fn texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn kept(who: &Session, lesson: &str) -> Result<(StatusCode, Value)> {
    who.get(&format!("/api/lessons/{lesson}/chat")).await
}

async fn chat_is_kept_only_when_the_school_keeps_it(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        add_school_b(&server).await?;
        let db = server.handle.db().clone();
        let lesson_1 = server.lesson_id.clone();
        let admin = server.sign_in("a-001").await?;
        let teacher = server.sign_in("t-001").await?;
        let admin_b = server.sign_in("a-101").await?;
        let teacher_b = server.sign_in("t-101").await?;
        teacher
            .set_pupil_mode("s-001", &school_date(0), "online")
            .await?;
        let pupil = server.sign_in("s-001").await?;

        // Off by default.
        let (status, body) = admin.get("/api/admin/chat-retention").await?;
        ensure!(status == StatusCode::OK, "{status} {body}");
        ensure!(
            body["schools"]
                == json!([{"school": SCHOOL, "keep": false, "days": 30,
                           "min_days": 1, "max_days": 365}]),
            "{body}"
        );

        // A lesson while the school keeps nothing.
        let t1 = join(&server, &teacher, &lesson_1).await?;
        let p1 = join(&server, &pupil, &lesson_1).await?;
        chat(&p1, "all", "off: pupil").await?;
        chat(&p1, "teacher", "off: question").await?;
        chat(&t1, "all", "off: teacher").await?;

        // The administrator turns retention on, for 7 days; bad periods are refused.
        let path = format!("/api/admin/schools/{SCHOOL}/chat-retention");
        for days in [0, 366, -1] {
            let (status, body) = admin
                .put(&path, json!({"keep": true, "days": days}))
                .await?;
            ensure!(
                status == StatusCode::BAD_REQUEST && body["error"] == "bad_request",
                "days {days}: {status} {body}"
            );
        }
        let (status, body) = admin.put(&path, json!({"keep": true, "days": 7})).await?;
        ensure!(
            status == StatusCode::OK && body["keep"] == true && body["days"] == 7,
            "{status} {body}"
        );
        let (status, body) = admin.get(&path).await?;
        ensure!(
            status == StatusCode::OK && body["keep"] == true && body["days"] == 7,
            "{status} {body}"
        );
        let (_, audit) = admin
            .get("/api/admin/audit?action=chat_retention_changed")
            .await?;
        let events = audit["events"].as_array().context("events")?;
        ensure!(events.len() == 1, "{audit}");
        ensure!(
            events[0]["actor"] == "a-001"
                && events[0]["subject"] == SCHOOL
                && events[0]["detail"]["old"] == json!({"keep": false, "days": 30})
                && events[0]["detail"]["new"] == json!({"keep": true, "days": 7}),
            "{audit}"
        );

        // The running lesson keeps what it decided when it started: still nothing kept.
        chat(&p1, "all", "off: after the change").await?;

        // A lesson that starts now keeps its chat; a deleted message goes from the store too.
        let start = portal::now();
        classroom_domain::create_lesson(
            &db,
            &classroom_domain::NewLesson {
                id: LESSON_2.to_owned(),
                class_id: portal::CLASS.to_owned(),
                starts_at: start,
                ends_at: start + 3600,
                media_room: ROOM_2.to_owned(),
                teachers: None,
            },
            chrono_tz::Asia::Tokyo,
        )
        .await?;
        let t2 = join(&server, &teacher, LESSON_2).await?;
        let p2 = join(&server, &pupil, LESSON_2).await?;
        let gone = chat(&p2, "all", "<b>消す</b>").await?;
        chat(&p2, "teacher", "しつもん").await?;
        chat(&t2, "all", "はい、どうぞ").await?;
        t2.signal
            .send_json(&json!({"v": 1, "type": "delete_chat", "message_id": gone["message_id"]}))?;
        p2.signal
            .expect_event(|e| is_type(e, "chat_deleted"), REPLY_TIMEOUT)
            .await?;
        let want = ["しつもん", "はい、どうぞ"];
        let body = support::wait::poll_for(
            Duration::from_secs(10),
            || "the kept chat of the second lesson".to_owned(),
            async || {
                let (status, body) = kept(&teacher, LESSON_2).await.ok()?;
                (status == StatusCode::OK && texts(&body) == want).then_some(body)
            },
        )
        .await?;
        let m = &body["messages"][0];
        ensure!(
            m["from"] == json!({"id": "s-001", "name": m["from"]["name"], "role": "student"})
                && m["to"] == "teacher"
                && m["at"].as_str().is_some_and(|a| a.ends_with('Z')),
            "{body}"
        );
        ensure!(
            body["messages"][1]["from"]["id"] == "t-001"
                && body["retention"] == json!({"keep": true, "days": 7})
                && body["next_after"].is_null(),
            "{body}"
        );
        // Written in order by one writer: the first lesson's messages would be there by now.
        let (status, body) = kept(&teacher, &lesson_1).await?;
        ensure!(
            status == StatusCode::OK && body["messages"] == json!([]),
            "{status} {body}"
        );
        ensure!(
            db.count(Table::KeptChat).await? == 2,
            "only the kept lesson"
        );
        // The school's administrator reads it too; paging by seq.
        let (status, body) = admin
            .get(&format!("/api/lessons/{LESSON_2}/chat?limit=1"))
            .await?;
        ensure!(
            status == StatusCode::OK && texts(&body) == ["しつもん"],
            "{status} {body}"
        );
        let after = body["next_after"].as_i64().context("next_after")?;
        let (_, body) = admin
            .get(&format!("/api/lessons/{LESSON_2}/chat?after={after}"))
            .await?;
        ensure!(texts(&body) == ["はい、どうぞ"], "{body}");

        // School scope: another school's staff, a teacher setting retention, unknown lessons.
        for (who, method, path) in [
            (&teacher_b, "GET", format!("/api/lessons/{LESSON_2}/chat")),
            (&admin_b, "GET", format!("/api/lessons/{LESSON_2}/chat")),
            (&admin_b, "GET", path.clone()),
            (&admin_b, "PUT", path.clone()),
            (
                &admin,
                "PUT",
                format!("/api/admin/schools/{SCHOOL_B}/chat-retention"),
            ),
            (&teacher, "PUT", path.clone()),
            (&teacher, "GET", "/api/admin/chat-retention".to_owned()),
            (&pupil, "GET", format!("/api/lessons/{LESSON_2}/chat")),
        ] {
            let (status, body) = match method {
                "GET" => who.get(&path).await?,
                _ => who.put(&path, json!({"keep": false})).await?,
            };
            ensure!(
                status == StatusCode::FORBIDDEN && body["error"] == "forbidden",
                "{} {method} {path}: {status} {body}",
                who.person_id()
            );
        }
        let (status, _) = kept(&teacher, "no-such-lesson").await?;
        ensure!(status == StatusCode::NOT_FOUND, "{status}");
        let (_, body) = admin_b.get("/api/admin/chat-retention").await?;
        ensure!(
            body["schools"][0]["school"] == SCHOOL_B && body["schools"][0]["keep"] == false,
            "{body}"
        );
        let (_, body) = admin.get(&path).await?;
        ensure!(
            body["keep"] == true,
            "another school changed nothing: {body}"
        );

        // The purge: nothing before the 7 days are up, everything after.
        let metrics = classroom::portal::purge::PurgeMetrics::default();
        let week = 7 * 86_400;
        let purged = classroom::portal::purge::purge_chat(&db, &metrics, start + week - 60).await;
        ensure!(purged == Some(0), "{purged:?}");
        let purged = classroom::portal::purge::purge_chat(&db, &metrics, start + week + 60).await;
        ensure!(purged == Some(2), "{purged:?}");
        ensure!(metrics.chat_messages_removed() == 2, "counted");
        let (_, body) = kept(&teacher, LESSON_2).await?;
        ensure!(body["messages"] == json!([]), "{body}");
        ensure!(db.count(Table::KeptChat).await? == 0, "all purged");

        for ws in [&t1, &p1, &t2, &p2] {
            ws.signal.close();
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
