//! Lesson links between two servers (docs/PARTNER.md "Lesson links", docs/API.md): two real
//! servers in this process, each with its own database, talking real HTTP. The host's teacher
//! invites; the partner's administrator accepts the code, which makes the partner's server
//! redeem it at the host; both sides store the link and audit it. Then the host's door
//! (`PortalLinkGate`, called as signaling calls it) admits the partner's key for the lesson's
//! room only, until revoked; the partner's gate dials the link on its lesson's day and stops
//! after a permanent refusal. Each refusal has its documented code: expired, forged, replayed,
//! revoked codes; callers who may not invite or accept; a link key used as an API credential.
//!
//! SQLite always; PostgreSQL too when `CLASSROOM_TEST_POSTGRES_URL` is set.

use crate::portal_support as portal;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom::portal::link_code::LinkCodes;
use classroom::portal::link_gate::PortalLinkGate;
use classroom_domain::{Action, AuditFilter, Db};
use classroom_signaling::link_gate::{LinkGate, LinkRefusal, LinkRequest};
use portal::{Backend, Options, PortalServer, Session, bounded};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);
/// The sample roster's school, on both servers.
const SCHOOL: &str = "高岡市立瑞穂小学校";

on_both_databases!(
    a_partner_accepts_an_invitation_and_the_host_admits_it_until_revoked,
    bad_codes_and_wrong_callers_are_refused_with_their_codes,
);

async fn invite(who: &Session, lesson: &str, body: Value) -> Result<(StatusCode, Value)> {
    who.post(&format!("/api/lessons/{lesson}/partner-links"), body)
        .await
}

async fn accept(who: &Session, lesson: &str, code: &str) -> Result<(StatusCode, Value)> {
    who.post(
        &format!("/api/lessons/{lesson}/partner-links/accept"),
        json!({ "code": code }),
    )
    .await
}

/// A direct call of the host's redeem endpoint, as a partner's server makes it.
async fn redeem(host: &PortalServer, code: &str) -> Result<(StatusCode, Value)> {
    let resp = portal::client()
        .post(format!("{}/api/partner-links/redeem", host.url()))
        .json(&json!({ "code": code, "partner_school": "どこかの学校" }))
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

async fn audited(db: &Db, action: Action, subject: &str) -> Result<Vec<Value>> {
    let rows = classroom_domain::audit_log(
        db,
        &AuditFilter {
            action: Some(action),
            limit: 1000,
            ..AuditFilter::default()
        },
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.subject.as_deref() == Some(subject))
        .map(|r| r.detail)
        .collect())
}

fn request(link_id: &str, key: &str, room: &str) -> LinkRequest {
    LinkRequest {
        link_id: link_id.to_owned(),
        key: key.to_owned(),
        room: room.to_owned(),
    }
}

async fn refusal_code(gate: &PortalLinkGate, req: &LinkRequest) -> Result<&'static str> {
    match gate.admit(req).await {
        Ok(admitted) => anyhow::bail!("admitted: {admitted:?}"),
        Err(refusal) => {
            ensure!(refusal.permanent, "{refusal:?} is for good");
            Ok(refusal.code)
        }
    }
}

async fn a_partner_accepts_an_invitation_and_the_host_admits_it_until_revoked(
    backend: Backend,
) -> Result<()> {
    bounded(LIMIT, async {
        let host = PortalServer::start(Options::on(&backend)).await?;
        let partner = PortalServer::start(Options::on(&backend)).await?;
        let (host_db, partner_db) = (host.handle.db(), partner.handle.db());
        let lesson = host.lesson_id.clone();
        let teacher = host.sign_in("t-001").await?;
        let partner_admin = partner.sign_in("a-001").await?;

        let (status, body) = invite(
            &teacher,
            &lesson,
            json!({"partner_name": "北小学校", "ttl_hours": 2}),
        )
        .await?;
        ensure!(status == StatusCode::CREATED, "invite: {status} {body}");
        let link_id = body["link_id"].as_str().context("link_id")?.to_owned();
        let code = body["code"].as_str().context("code")?.to_owned();
        ensure!(body["expires_at"].is_string(), "{body}");

        // The partner accepts for its own lesson: its server redeems the code at the host.
        let (status, body) = accept(&partner_admin, &partner.lesson_id, &code).await?;
        ensure!(status == StatusCode::CREATED, "accept: {status} {body}");
        let accepted = &body["link"];
        ensure!(
            accepted["host_link_id"] == link_id.as_str()
                && accepted["host_room"] == portal::LESSON_ROOM
                && accepted["host_school"] == SCHOOL
                && accepted["active"] == true
                && accepted.get("key").is_none(),
            "the partner's row, without its key: {body}"
        );
        let partner_link_id = accepted["id"].as_str().context("id")?.to_owned();
        let (status, body) = teacher
            .get(&format!("/api/lessons/{lesson}/partner-links"))
            .await?;
        ensure!(
            status == StatusCode::OK
                && body["links"][0]["state"] == "accepted"
                && body["links"][0]["partner_school"] == SCHOOL,
            "the host's row: {status} {body}"
        );
        let (status, body) = partner_admin.get("/api/partner-links/accepted").await?;
        ensure!(
            status == StatusCode::OK
                && body["links"].as_array().map(Vec::len) == Some(1)
                && body["links"][0]["id"] == partner_link_id.as_str(),
            "the partner's list: {status} {body}"
        );
        ensure!(
            !audited(host_db, Action::LessonLinkCreated, &link_id)
                .await?
                .is_empty()
                && audited(host_db, Action::LessonLinkRedeemed, &link_id).await?[0]["lesson"]
                    == lesson.as_str()
                && audited(partner_db, Action::LessonLinkAccepted, &partner_link_id).await?[0]
                    ["lesson"]
                    == partner.lesson_id.as_str(),
            "created, redeemed (host) and accepted (partner) are audited"
        );

        // A code works once: a second acceptance, or a second call of the host, is a replay.
        let (status, body) = accept(&partner_admin, &partner.lesson_id, &code).await?;
        ensure!(
            status == StatusCode::CONFLICT && body["error"] == "link_replayed",
            "second accept: {status} {body}"
        );
        let (status, body) = redeem(&host, &code).await?;
        ensure!(
            status == StatusCode::CONFLICT && body["error"] == "link_replayed",
            "second redeem: {status} {body}"
        );

        // The key the partner holds (only in its database) opens the host lesson's room only.
        let key = classroom_domain::lesson_link::partner_links_of_lesson(partner_db, &partner.lesson_id)
            .await?
            .first()
            .context("the partner's row")?
            .link_key
            .clone();
        let host_gate = PortalLinkGate::new(host_db.clone(), chrono_tz::Asia::Tokyo);
        let admitted = host_gate
            .admit(&request(&link_id, &key, portal::LESSON_ROOM))
            .await
            .map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
        ensure!(
            admitted.room == portal::LESSON_ROOM && admitted.partner_school == SCHOOL,
            "{admitted:?}"
        );
        for (req, code, what) in [
            (request(&link_id, "not-the-key", portal::LESSON_ROOM), "link_bad_key", "a wrong key"),
            (request(&link_id, &key, "another-room"), "link_wrong_room", "another room"),
            (request("no-such-link", &key, portal::LESSON_ROOM), "link_unknown", "an unknown link"),
        ] {
            let got = refusal_code(&host_gate, &req).await?;
            ensure!(got == code, "{what}: {got}, not {code}");
        }
        ensure!(
            !audited(host_db, Action::LessonLinkUsed, &link_id).await?.is_empty()
                && audited(host_db, Action::LessonLinkRefused, &link_id)
                    .await?
                    .iter()
                    .any(|d| d["code"] == "link_bad_key"),
            "use and refusal are audited"
        );
        // Anyone can present a fresh made-up id on every socket: those refusals share one
        // audit limit (one a minute in all), so they cannot grow the log.
        for i in 0..20 {
            let got = refusal_code(
                &host_gate,
                &request(&format!("made-up-{i}"), &key, portal::LESSON_ROOM),
            )
            .await?;
            ensure!(got == "link_unknown", "made-up id {i}: {got}");
        }
        let unknown = classroom_domain::audit_log(
            host_db,
            &AuditFilter {
                action: Some(Action::LessonLinkRefused),
                limit: 1000,
                ..AuditFilter::default()
            },
        )
        .await?
        .into_iter()
        .filter(|r| r.detail["code"] == "link_unknown")
        .count();
        ensure!(
            unknown == 1,
            "21 unknown ids within a minute wrote {unknown} audit rows, not 1"
        );

        // The key is no API credential: a bearer of it is a stranger to the session routes.
        for path in [
            format!("/api/lessons/{lesson}/lobby"),
            format!("/api/lessons/{lesson}/partner-links"),
            "/api/partner-links/accepted".to_owned(),
            "/api/admin/audit".to_owned(),
        ] {
            let resp = portal::client()
                .get(format!("{}{path}", host.url()))
                .bearer_auth(&key)
                .send()
                .await?;
            ensure!(
                resp.status() == StatusCode::UNAUTHORIZED,
                "{path} with the key as a bearer: {}",
                resp.status()
            );
        }

        // The partner's server dials the link today, from its own lesson's room.
        let partner_gate = PortalLinkGate::new(partner_db.clone(), chrono_tz::Asia::Tokyo);
        let dialled = partner_gate.outgoing().await;
        ensure!(
            dialled.len() == 1
                && dialled[0].link_id == link_id
                && dialled[0].key == key
                && dialled[0].host_ws_url == host.handle.ws_url()
                && dialled[0].local_room == portal::LESSON_ROOM,
            "dialled: {dialled:?}"
        );

        // The host revokes: the door refuses the key, the code stays spent.
        let (status, body) = teacher
            .send(
                Method::DELETE,
                &format!("/api/lessons/{lesson}/partner-links/{link_id}"),
                None,
                true,
            )
            .await?;
        ensure!(
            status == StatusCode::OK && body["link"]["state"] == "revoked",
            "revoke: {status} {body}"
        );
        let got = refusal_code(&host_gate, &request(&link_id, &key, portal::LESSON_ROOM)).await?;
        ensure!(got == "link_revoked", "after revocation: {got}");
        let (status, body) = redeem(&host, &code).await?;
        ensure!(
            status == StatusCode::GONE && body["error"] == "link_revoked",
            "redeem after revocation: {status} {body}"
        );
        ensure!(
            !audited(host_db, Action::LessonLinkRevoked, &link_id)
                .await?
                .is_empty(),
            "revocation is audited"
        );

        // The partner hears the permanent refusal (as its dialer would): the link ends there.
        partner_gate.refused(
            &dialled[0],
            &LinkRefusal {
                code: "link_revoked",
                message: "revoked".into(),
                permanent: true,
            },
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !partner_gate.outgoing().await.is_empty() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the refused link is still dialled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ended = audited(partner_db, Action::LessonLinkEnded, &partner_link_id).await?;
        ensure!(
            ended.len() == 1 && ended[0]["by"] == "link_revoked",
            "the end is audited with the host's code: {ended:?}"
        );
        partner.shutdown().await;
        host.shutdown().await;
        Ok(())
    })
    .await
}

/// Runs `sql` on a server's database (rows no API writes).
async fn execute(db: &Db, sql: &str) -> Result<()> {
    match db {
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .with_context(|| sql.to_owned())
}

/// A second school on `server` with its teacher t-101 and administrator a-101.
async fn add_other_school(server: &PortalServer) -> Result<()> {
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
    let dir = tempfile::tempdir()?;
    portal::write_roster(&files, dir.path())?;
    classroom_domain::import_dir(server.handle.db(), dir.path()).await?;
    Ok(())
}

async fn bad_codes_and_wrong_callers_are_refused_with_their_codes(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let host = PortalServer::start(Options::on(&backend)).await?;
        let partner = PortalServer::start(Options::on(&backend)).await?;
        add_other_school(&host).await?;
        add_other_school(&partner).await?;
        let lesson = host.lesson_id.clone();
        let teacher = host.sign_in("t-001").await?;
        let partner_admin = partner.sign_in("a-001").await?;
        let invitation = json!({"partner_name": "北小学校"});

        // Who may not invite on the host, nor accept on the partner (a lesson of another
        // school, for the other school's people).
        for (person, who) in [
            ("s-001", "a pupil of the lesson"),
            ("g-002", "a guardian of the school"),
            (
                "t-002",
                "a teacher of the school who does not teach this lesson",
            ),
            ("t-101", "a teacher of another school"),
            ("a-101", "an administrator of another school"),
        ] {
            let on_host = host.sign_in(person).await?;
            let (status, body) = invite(&on_host, &lesson, invitation.clone()).await?;
            ensure!(
                status == StatusCode::FORBIDDEN,
                "{who} invites: {status} {body}"
            );
            let (status, body) = on_host
                .get(&format!("/api/lessons/{lesson}/partner-links"))
                .await?;
            ensure!(
                status == StatusCode::FORBIDDEN,
                "{who} lists: {status} {body}"
            );
        }
        let (status, body) = invite(&teacher, &lesson, invitation.clone()).await?;
        ensure!(status == StatusCode::CREATED, "invite: {status} {body}");
        let link_id = body["link_id"].as_str().context("link_id")?.to_owned();
        let code = body["code"].as_str().context("code")?.to_owned();
        for person in ["s-001", "g-002", "t-002", "t-101", "a-101"] {
            let on_partner = partner.sign_in(person).await?;
            let (status, body) = accept(&on_partner, &partner.lesson_id, &code).await?;
            ensure!(
                status == StatusCode::FORBIDDEN,
                "{person} accepts onto the partner's lesson: {status} {body}"
            );
        }

        // Codes that are not the host's, or no longer valid.
        let host_url = host.url();
        let now = portal::now();
        let forged = LinkCodes::new(b"not the host's secret, but long enough").issue(
            &link_id,
            &host_url,
            now,
            now + 600,
        )?;
        let expired = LinkCodes::new(portal::SECRET.as_bytes()).issue(
            &link_id,
            &host_url,
            now - 900,
            now - 300,
        )?;
        let join_token = host.handle.issue_token(
            portal::LESSON_ROOM,
            "t-001",
            "先生",
            classroom_signaling::token::Role::Teacher,
        );
        for (bad, status_wanted, error, what) in [
            (
                forged.as_str(),
                StatusCode::FORBIDDEN,
                "link_code_invalid",
                "forged",
            ),
            (
                expired.as_str(),
                StatusCode::GONE,
                "link_expired",
                "expired",
            ),
            (
                join_token.as_str(),
                StatusCode::BAD_REQUEST,
                "link_code_invalid",
                "a join token",
            ),
            (
                "garbage",
                StatusCode::BAD_REQUEST,
                "link_code_invalid",
                "garbage",
            ),
        ] {
            let (status, body) = accept(&partner_admin, &partner.lesson_id, bad).await?;
            ensure!(
                status == status_wanted && body["error"] == error,
                "{what} code: {status} {body}"
            );
        }

        // The refusals spent nothing: the right person accepts the real code, once.
        let (status, body) = accept(&partner_admin, &partner.lesson_id, &code).await?;
        ensure!(status == StatusCode::CREATED, "accept: {status} {body}");
        let partner_link = body["link"]["id"].as_str().context("id")?.to_owned();

        // Ending the partner's side: not by another school, but by its administrator.
        let other = partner.sign_in("a-101").await?;
        let path = format!("/api/partner-links/accepted/{partner_link}");
        let (status, body) = other.send(Method::DELETE, &path, None, true).await?;
        ensure!(
            status == StatusCode::FORBIDDEN,
            "another school ends it: {status} {body}"
        );
        let gate = PortalLinkGate::new(partner.handle.db().clone(), chrono_tz::Asia::Tokyo);
        ensure!(gate.outgoing().await.len() == 1, "dialled before the end");
        let (status, body) = partner_admin
            .send(Method::DELETE, &path, None, true)
            .await?;
        ensure!(
            status == StatusCode::OK && body["link"]["active"] == false,
            "end: {status} {body}"
        );
        ensure!(
            gate.outgoing().await.is_empty(),
            "not dialled after the end"
        );

        // A lesson of another day is not dialled.
        let (status, body) = invite(&teacher, &lesson, invitation.clone()).await?;
        ensure!(status == StatusCode::CREATED, "invite: {status} {body}");
        let second = body["code"].as_str().context("code")?.to_owned();
        let (status, body) = accept(&partner_admin, &partner.lesson_id, &second).await?;
        ensure!(status == StatusCode::CREATED, "accept: {status} {body}");
        execute(
            partner.handle.db(),
            &format!(
                "UPDATE lessons SET lesson_date = '2000-01-01' WHERE id = '{}'",
                partner.lesson_id
            ),
        )
        .await?;
        ensure!(
            gate.outgoing().await.is_empty(),
            "another day's link is not dialled"
        );

        // At most ten active invitations per lesson (two are used above: one accepted, one
        // accepted and still active).
        for i in 0..8 {
            let (status, body) = invite(&teacher, &lesson, invitation.clone()).await?;
            ensure!(
                status == StatusCode::CREATED,
                "invitation {i}: {status} {body}"
            );
        }
        let (status, body) = invite(&teacher, &lesson, invitation.clone()).await?;
        ensure!(
            status == StatusCode::CONFLICT && body["error"] == "too_many_links",
            "the eleventh: {status} {body}"
        );
        partner.shutdown().await;
        host.shutdown().await;
        Ok(())
    })
    .await
}
