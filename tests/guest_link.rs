//! Guest links for partner lecturers (docs/PARTNER.md, docs/API.md "Guest links"): the signed-in
//! HTTP API, the lesson's room over WebSocket, the database. The lesson's teacher creates a link
//! (a pupil may not); its holder joins as a partner lecturer whom the room sees with name and
//! university; revoking removes them and the link stops working; expired, forged and
//! other-lesson credentials are refused at the door; creation, use and revocation are audited.
//!
//! SQLite always; PostgreSQL too when `CLASSROOM_TEST_POSTGRES_URL` is set.

use crate::portal_support as portal;
use crate::support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom_domain::{Acting, Action, AuditFilter, GuestKind, NewGuestLink};
use classroom_signaling::token::{Claims, Role, TokenIssuer};
use portal::{Backend, Options, PortalServer, Session, bounded, school_date};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::signal::is_type;
use support::{REPLY_TIMEOUT, RawConnection};

const LIMIT: Duration = Duration::from_secs(120);
const OTHER_LESSON: &str = "lesson-later";
const OTHER_ROOM: &str = "lesson-p5-1-later";

on_both_databases!(
    a_guest_link_admits_a_partner_lecturer_until_revoked,
    a_guest_link_opens_only_its_lessons_room_and_is_audited_sparingly,
    only_the_lessons_teachers_and_its_schools_administrators_invite,
);

/// Joins the lesson's room with `token`; returns the connection and the reply.
async fn join_with(server: &PortalServer, token: &str) -> Result<(RawConnection, Value)> {
    let ws = RawConnection::connect(&server.handle.ws_url()).await?;
    let reply = ws.join(token).await?;
    Ok((ws, reply))
}

/// The token of a guest link URL (`.../pupil.html?token=...`).
fn token_of(url: &str) -> Result<String> {
    Ok(url
        .split_once("?token=")
        .context("the link carries a token")?
        .1
        .to_owned())
}

async fn create(who: &Session, lesson: &str, body: Value) -> Result<(StatusCode, Value)> {
    who.post(&format!("/api/lessons/{lesson}/guest-links"), body)
        .await
}

async fn a_guest_link_admits_a_partner_lecturer_until_revoked(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let db = server.handle.db();
        let start = portal::now();
        classroom_domain::create_lesson(
            db,
            &classroom_domain::NewLesson {
                id: OTHER_LESSON.to_owned(),
                class_id: portal::CLASS.to_owned(),
                starts_at: start + 7200,
                ends_at: start + 10_800,
                media_room: OTHER_ROOM.to_owned(),
                teachers: None,
            },
            chrono_tz::Asia::Tokyo,
        )
        .await?;
        let lesson = server.lesson_id.clone();
        let admin = server.sign_in("a-001").await?;
        let teacher = server.sign_in("t-001").await?;
        admin
            .set_pupil_mode("s-001", &school_date(0), "online")
            .await?;
        let pupil = server.sign_in("s-001").await?;
        let lecturer = json!({
            "display_name": "山田 太郎", "organisation": "東海大学", "hours": 2
        });

        // A pupil may not invite anyone; bad bodies are refused with a reason.
        let (status, body) = create(&pupil, &lesson, lecturer.clone()).await?;
        ensure!(status == StatusCode::FORBIDDEN, "pupil: {status} {body}");
        let (status, body) = create(
            &teacher,
            &lesson,
            json!({"display_name": "", "organisation": "x"}),
        )
        .await?;
        ensure!(
            status == StatusCode::BAD_REQUEST,
            "empty name: {status} {body}"
        );
        let (status, body) = create(
            &teacher,
            &lesson,
            json!({"display_name": "a", "organisation": "x", "hours": 10_000}),
        )
        .await?;
        ensure!(
            status == StatusCode::BAD_REQUEST,
            "two years: {status} {body}"
        );

        let (status, body) = create(&teacher, &lesson, lecturer.clone()).await?;
        ensure!(
            status == StatusCode::CREATED,
            "teacher creates: {status} {body}"
        );
        let link_id = body["link"]["id"].as_str().context("link id")?.to_owned();
        let url = body["url"].as_str().context("url")?.to_owned();
        ensure!(url.contains("/pupil.html?token="), "{url}");
        let token = token_of(&url)?;

        // The pupil is in the room; the guest joins and is seen with name and university.
        let (status, body) = pupil
            .post(&format!("/api/lessons/{lesson}/join"), json!({}))
            .await?;
        ensure!(
            status == StatusCode::OK,
            "pupil join token: {status} {body}"
        );
        let (pupil_ws, joined) =
            join_with(&server, body["token"].as_str().context("token")?).await?;
        ensure!(is_type(&joined, "joined"), "pupil joins: {joined}");
        let (guest_ws, joined) = join_with(&server, &token).await?;
        ensure!(is_type(&joined, "joined"), "guest joins: {joined}");
        let me = &joined["participant"];
        ensure!(
            me["role"] == "partner_lecturer" && me["school"] == "東海大学",
            "{joined}"
        );
        let perms = joined["permissions"].as_array().context("permissions")?;
        ensure!(
            perms.contains(&json!("publish_video")) && !perms.contains(&json!("teacher")),
            "a partner lecturer publishes but does not moderate: {joined}"
        );
        let guest_pid = me["participant_id"].as_str().context("pid")?.to_owned();
        let seen = pupil_ws
            .signal
            .expect_event(|e| is_type(e, "participant_joined"), REPLY_TIMEOUT)
            .await?;
        ensure!(
            seen["participant"]["name"] == "山田 太郎"
                && seen["participant"]["school"] == "東海大学"
                && seen["participant"]["role"] == "partner_lecturer",
            "the room sees the guest: {seen}"
        );
        // The floor of the host's pupils is not the guest's.
        let refusal = guest_ws
            .signal
            .request(json!({"type": "mute_all"}), REPLY_TIMEOUT)
            .await?;
        ensure!(
            is_type(&refusal, "error") && refusal["code"] == "permission_denied",
            "mute_all by a guest: {refusal}"
        );

        let (status, body) = teacher
            .get(&format!("/api/lessons/{lesson}/guest-links"))
            .await?;
        ensure!(
            status == StatusCode::OK
                && body["links"][0]["id"] == link_id.as_str()
                && body["links"][0]["active"] == true,
            "list: {status} {body}"
        );

        // Revoked: the guest is told and leaves; the link no longer opens the door.
        let (status, body) = teacher
            .send(
                Method::DELETE,
                &format!("/api/lessons/{lesson}/guest-links/{link_id}"),
                None,
                true,
            )
            .await?;
        ensure!(
            status == StatusCode::OK && body["removed_from_room"] == true,
            "revoke: {status} {body}"
        );
        let bye = guest_ws
            .signal
            .expect_event(|e| is_type(e, "goodbye"), REPLY_TIMEOUT)
            .await?;
        ensure!(bye["reason"] == "revoked", "{bye}");
        pupil_ws
            .signal
            .expect_event(
                |e| is_type(e, "participant_left") && e["participant_id"] == guest_pid.as_str(),
                REPLY_TIMEOUT,
            )
            .await
            .context("the room sees the revoked guest leave")?;
        let (_, again) = join_with(&server, &token).await?;
        ensure!(
            again["code"] == "not_admitted"
                && again["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("revoked")),
            "a revoked link: {again}"
        );

        // Expired, forged and other-lesson credentials. The expired link was made two hours
        // ago for one hour; its token would still be valid, the door goes by the link.
        let lesson_row = classroom_domain::lesson(db, &lesson)
            .await?
            .context("lesson")?;
        classroom_domain::create_guest_link(
            db,
            Acting {
                person: "t-001",
                at: start - 7200,
                remote_addr: None,
            },
            &lesson_row,
            &NewGuestLink {
                id: "expired-link",
                kind: GuestKind::Guest,
                display_name: "山田 太郎",
                organisation: "東海大学",
                expires_at: start - 3600,
            },
        )
        .await?;
        let server_key = TokenIssuer::new(portal::SECRET.as_bytes());
        let mut claims = Claims::new(
            portal::LESSON_ROOM,
            "guest:expired-link",
            "山田 太郎",
            Role::PartnerLecturer,
            Duration::from_secs(600),
        );
        let (_, reply) = join_with(&server, &server_key.issue(&claims)?).await?;
        ensure!(
            reply["code"] == "not_admitted"
                && reply["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("expired")),
            "an expired link: {reply}"
        );
        let (_, body) = create(&teacher, &lesson, lecturer.clone()).await?;
        let second_id = body["link"]["id"].as_str().context("id")?.to_owned();
        claims.sub = format!("guest:{second_id}");
        claims.room = OTHER_ROOM.to_owned();
        let (_, reply) = join_with(&server, &server_key.issue(&claims)?).await?;
        ensure!(
            reply["code"] == "not_admitted"
                && reply["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("another lesson")),
            "a link used for another lesson: {reply}"
        );
        claims.room = portal::LESSON_ROOM.to_owned();
        let forged = TokenIssuer::new(b"not the server's secret at all").issue(&claims)?;
        let (_, reply) = join_with(&server, &forged).await?;
        ensure!(reply["code"] == "invalid_token", "forged: {reply}");

        // A WHIP credential of the lesson: the encoder is let in until the link is revoked,
        // then its session ends and the credential is refused.
        let (status, body) = create(
            &teacher,
            &lesson,
            json!({"kind": "whip", "display_name": "Lecture hall A", "organisation": "東海大学"}),
        )
        .await?;
        ensure!(status == StatusCode::CREATED, "whip link: {status} {body}");
        let whip_id = body["link"]["id"].as_str().context("id")?.to_owned();
        let bearer = body["bearer_token"]
            .as_str()
            .context("bearer_token")?
            .to_owned();
        let whip_url = body["whip_url"].as_str().context("whip_url")?;
        ensure!(
            whip_url.ends_with(&format!("/whip/{}", portal::LESSON_ROOM)),
            "{whip_url}"
        );
        let endpoint = format!("{}/whip/{}", server.url(), portal::LESSON_ROOM);
        let offer = support::publisher::PublishOffer::create(&[
            support::Source::Microphone,
            support::Source::Camera,
        ])
        .await?;
        let sdp = offer.sdp.clone();
        let posted = support::whip::post(
            &endpoint,
            Some(&bearer),
            Some("application/sdp"),
            sdp.clone(),
        )
        .await?;
        ensure!(
            posted.status == StatusCode::CREATED,
            "WHIP POST: {} {}",
            posted.status,
            posted.body
        );
        let encoder = pupil_ws
            .signal
            .expect_event(
                |e| {
                    is_type(e, "participant_joined") && e["participant"]["name"] == "Lecture hall A"
                },
                REPLY_TIMEOUT,
            )
            .await?;
        let encoder_pid = encoder["participant"]["participant_id"]
            .as_str()
            .context("pid")?
            .to_owned();
        let (status, body) = teacher
            .send(
                Method::DELETE,
                &format!("/api/lessons/{lesson}/guest-links/{whip_id}"),
                None,
                true,
            )
            .await?;
        ensure!(
            status == StatusCode::OK && body["removed_from_room"] == true,
            "revoke whip: {status} {body}"
        );
        pupil_ws
            .signal
            .expect_event(
                |e| is_type(e, "participant_left") && e["participant_id"] == encoder_pid.as_str(),
                REPLY_TIMEOUT,
            )
            .await
            .context("the revoked encoder leaves")?;
        let again =
            support::whip::post(&endpoint, Some(&bearer), Some("application/sdp"), sdp).await?;
        ensure!(
            again.status == StatusCode::FORBIDDEN && again.error() == "not_admitted",
            "a revoked WHIP credential: {} {}",
            again.status,
            again.body
        );
        offer.abandon().await;

        // At most ten active links per lesson.
        for i in 0..9 {
            let (status, body) = create(&teacher, &lesson, lecturer.clone()).await?;
            ensure!(status == StatusCode::CREATED, "link {i}: {status} {body}");
        }
        let (status, body) = create(&admin, &lesson, lecturer.clone()).await?;
        ensure!(
            status == StatusCode::CONFLICT && body["error"] == "too_many_guest_links",
            "the eleventh: {status} {body}"
        );

        // Audited: created, revoked, used (admitted, and refused for revocation).
        for (action, what) in [
            (Action::GuestLinkCreated, "created"),
            (Action::GuestLinkRevoked, "revoked"),
        ] {
            let rows = classroom_domain::audit_log(
                db,
                &AuditFilter {
                    action: Some(action),
                    limit: 100,
                    ..AuditFilter::default()
                },
            )
            .await?;
            ensure!(
                rows.iter()
                    .any(|r| r.subject.as_deref() == Some(link_id.as_str())
                        && r.actor.as_deref() == Some("t-001")),
                "{what} is audited: {rows:?}"
            );
        }
        let used = classroom_domain::audit_log(
            db,
            &AuditFilter {
                action: Some(Action::GuestLinkUsed),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await?;
        let of_first: Vec<&Value> = used
            .iter()
            .filter(|r| r.subject.as_deref() == Some(link_id.as_str()))
            .map(|r| &r.detail)
            .collect();
        ensure!(
            of_first.iter().any(|d| d["admitted"] == true)
                && of_first
                    .iter()
                    .any(|d| d["admitted"] == false && d["reason"] == "revoked"),
            "use is audited: {of_first:?}"
        );
        drop((guest_ws, pupil_ws));
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Runs `sql` on the server's database (rows no API writes).
async fn execute(db: &classroom_domain::Db, sql: &str) -> Result<()> {
    match db {
        classroom_domain::Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
        classroom_domain::Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .with_context(|| sql.to_owned())
}

/// The `guest_link_used` entries of link `id`.
async fn uses_of(db: &classroom_domain::Db, id: &str) -> Result<Vec<Value>> {
    let rows = classroom_domain::audit_log(
        db,
        &AuditFilter {
            action: Some(Action::GuestLinkUsed),
            limit: 1000,
            ..AuditFilter::default()
        },
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.subject.as_deref() == Some(id))
        .map(|r| r.detail)
        .collect())
}

async fn a_guest_link_opens_only_its_lessons_room_and_is_audited_sparingly(
    backend: Backend,
) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let db = server.handle.db();
        let lesson = server.lesson_id.clone();
        let teacher = server.sign_in("t-001").await?;
        let (status, body) = create(
            &teacher,
            &lesson,
            json!({"display_name": "山田 太郎", "organisation": "東海大学"}),
        )
        .await?;
        ensure!(status == StatusCode::CREATED, "create: {status} {body}");
        let link_id = body["link"]["id"].as_str().context("link id")?.to_owned();
        let token = token_of(body["url"].as_str().context("url")?)?;

        // A guest who reconnects in a loop is admitted each time, and audited once: the audit
        // log does not grow with the reconnections.
        for i in 0..4 {
            let (ws, joined) = join_with(&server, &token).await?;
            ensure!(is_type(&joined, "joined"), "join {i}: {joined}");
            drop(ws);
        }
        let admitted = uses_of(db, &link_id)
            .await?
            .into_iter()
            .filter(|d| d["admitted"] == true)
            .count();
        ensure!(
            admitted == 1,
            "four admissions within minutes are audited once, not {admitted} times"
        );

        // The lesson moves to another room (or is gone): its room has no lesson now, and rooms
        // without a lesson are open, but not to a guest link's token, still valid for hours.
        execute(
            db,
            &format!("UPDATE lessons SET media_room = 'lesson-p5-1-moved' WHERE id = '{lesson}'"),
        )
        .await?;
        let (_, reply) = join_with(&server, &token).await?;
        ensure!(
            reply["code"] == "not_admitted"
                && reply["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no longer exists")),
            "a guest link into a room without its lesson: {reply}"
        );
        // Neither does a link token signed for some other lessonless room.
        let mut claims = Claims::new(
            "demo",
            &format!("guest:{link_id}"),
            "山田 太郎",
            Role::PartnerLecturer,
            Duration::from_secs(600),
        );
        claims.org = Some("東海大学".to_owned());
        let (_, reply) = join_with(
            &server,
            &TokenIssuer::new(portal::SECRET.as_bytes()).issue(&claims)?,
        )
        .await?;
        ensure!(
            reply["code"] == "not_admitted",
            "a guest token for the demo room: {reply}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// The sample roster and administrator, plus a second school with its teacher t-101 and
/// administrator a-101, and a signed-in partner lecturer pl-001 assigned to today's lesson.
async fn add_outsiders(server: &PortalServer) -> Result<()> {
    let db = server.handle.db();
    let mut files = portal::roster_with_admin()?;
    portal::append_line(
        &mut files,
        "orgs.csv",
        "org-es-kita,,,高岡市立北小学校,school,B116220000100,org-board-takaoka",
    )?;
    for (id, email, role) in [
        ("t-101", "t.ueda@kita-es", "teacher"),
        ("a-101", "principal@kita-es", "administrator"),
    ] {
        let row = portal::copied_user(&files, "t-002", id)?
            .replace("t.sato@mizuho-es", email)
            .replace("org-es-mizuho", "org-es-kita");
        portal::append_line(&mut files, "users.csv", &row)?;
        portal::append_line(
            &mut files,
            "roles.csv",
            &format!("role-{id},,,{id},primary,{role},,,org-es-kita,"),
        )?;
    }
    portal::append_line(
        &mut files,
        "classes.csv",
        "class-kita-4-1,,,4年1組,P4,course-hr-p4,4-1,homeroom,4年1組教室,org-es-kita,as-2026,,,",
    )?;
    portal::append_line(
        &mut files,
        "enrollments.csv",
        "enr-kita-t-101,,,class-kita-4-1,org-es-kita,t-101,teacher,true,,",
    )?;
    let dir = tempfile::tempdir()?;
    portal::write_roster(&files, dir.path())?;
    classroom_domain::import_dir(db, dir.path()).await?;
    // No roster carries partner lecturers; the school's own records do.
    execute(
        db,
        "INSERT INTO people (id, role, username, given_name, family_name, email, enabled) \
         VALUES ('pl-001', 'partner_lecturer', 'pl-001', '太郎', '山田', \
         'yamada@tokai-u.example.jp', TRUE)",
    )
    .await?;
    execute(
        db,
        &format!(
            "INSERT INTO lesson_teachers (lesson_id, teacher_id) VALUES ('{}', 'pl-001')",
            server.lesson_id
        ),
    )
    .await
}

async fn only_the_lessons_teachers_and_its_schools_administrators_invite(
    backend: Backend,
) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        add_outsiders(&server).await?;
        let db = server.handle.db();
        let lesson = server.lesson_id.clone();
        let path = format!("/api/lessons/{lesson}/guest-links");
        let lecturer = json!({"display_name": "山田 太郎", "organisation": "東海大学"});
        let whip = json!({"kind": "whip", "display_name": "Hall", "organisation": "東海大学"});

        // Each signs in and tries to invite a lecturer and an encoder, and to list the links.
        for (person, who) in [
            ("s-001", "a pupil of the lesson"),
            ("g-002", "a guardian of the school"),
            (
                "t-002",
                "a teacher of the school who does not teach this lesson",
            ),
            (
                "pl-001",
                "a partner lecturer signed in and assigned to the lesson",
            ),
            ("t-101", "a teacher of another school"),
            ("a-101", "an administrator of another school"),
        ] {
            let session = server.sign_in(person).await?;
            for body in [&lecturer, &whip] {
                let (status, reply) = create(&session, &lesson, body.clone()).await?;
                ensure!(
                    status == StatusCode::FORBIDDEN,
                    "{who} ({person}) creates a link: {status} {reply}"
                );
            }
            let (status, reply) = session.get(&path).await?;
            ensure!(
                status == StatusCode::FORBIDDEN,
                "{who} ({person}) lists the links: {status} {reply}"
            );
        }

        // A guest, whose credential is a join token and not a session, cannot invite either:
        // not with the token as a bearer, nor with no credential at all.
        let teacher = server.sign_in("t-001").await?;
        let (status, body) = create(&teacher, &lesson, lecturer.clone()).await?;
        ensure!(
            status == StatusCode::CREATED,
            "the teacher: {status} {body}"
        );
        let guest_token = token_of(body["url"].as_str().context("url")?)?;
        let link_id = body["link"]["id"].as_str().context("id")?.to_owned();
        let url = format!("{}{path}", server.url());
        let client = portal::client();
        for (what, req) in [
            (
                "with the guest's token",
                client.post(&url).bearer_auth(&guest_token),
            ),
            ("without credentials", client.post(&url)),
        ] {
            let resp = req.json(&lecturer).send().await?;
            let status = resp.status();
            ensure!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
                "a guest {what} creates a link: {status}"
            );
        }
        // Nor revoke one.
        let resp = client
            .delete(format!("{url}/{link_id}"))
            .bearer_auth(&guest_token)
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN,
            "a guest revokes a link: {}",
            resp.status()
        );

        // Only the teacher's link exists; the refusals created nothing.
        let links = classroom_domain::guest_links_of_lesson(db, &lesson).await?;
        ensure!(
            links.len() == 1 && links[0].id == link_id && links[0].revoked_at.is_none(),
            "only the teacher's link, unrevoked: {links:?}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}
