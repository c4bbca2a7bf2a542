//! Two schools on two in-process servers joined by a lesson link (tests/lesson_link_e2e.rs,
//! tests/link_outage.rs): the invitation and its acceptance over real HTTP, members joining,
//! and waiting for what crosses the link.
//!
//! Included with `#[path = "support/two_schools.rs"] mod two_schools;` beside `mod portal`
//! (support/portal.rs) and `mod support`.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::{Claims, Role, TokenIssuer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::portal_support::{self as portal, PortalServer, Session, school_date};
use crate::support::{Source, TestClient, is_type};

/// The sample roster's school, on both servers.
pub const SCHOOL: &str = "高岡市立瑞穂小学校";
/// How long the partner's dialer may take to seat the link (it asks for its links every 5 s).
pub const SEATED: Duration = Duration::from_secs(20);
pub const MEDIA: Duration = Duration::from_secs(20);

pub fn token(identity: &str, name: &str, role: Role) -> Result<String> {
    let claims = Claims::new(
        portal::LESSON_ROOM,
        identity,
        name,
        role,
        Duration::from_secs(600),
    );
    Ok(TokenIssuer::new(portal::SECRET.as_bytes()).issue(&claims)?)
}

/// Joins `server`'s lesson room; a pupil must attend online today.
pub async fn join(
    server: &PortalServer,
    identity: &str,
    name: &str,
    role: Role,
) -> Result<TestClient> {
    TestClient::connect(&server.handle.ws_url(), &token(identity, name, role)?)
        .await
        .with_context(|| format!("{name} joins"))
}

pub async fn online_today(admin: &Session, pupil: &str) -> Result<()> {
    admin.set_pupil_mode(pupil, &school_date(0), "online").await
}

/// The host's teacher `t-001` invites the partner; the partner's administrator `a-001` accepts
/// for the partner's lesson. Pupil `s-001` attends online today on both servers. Returns the
/// link id and the host teacher's signed-in session (which may revoke the link).
pub async fn link_lessons(
    host: &PortalServer,
    partner: &PortalServer,
) -> Result<(String, Session)> {
    let host_teacher = host.sign_in("t-001").await?;
    let partner_admin = partner.sign_in("a-001").await?;
    online_today(&host.sign_in("a-001").await?, "s-001").await?;
    online_today(&partner_admin, "s-001").await?;
    let (status, body) = host_teacher
        .post(
            &format!("/api/lessons/{}/partner-links", host.lesson_id),
            json!({"partner_name": "北小学校", "ttl_hours": 2}),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "invite: {status} {body}");
    let link_id = body["link_id"].as_str().context("link_id")?.to_owned();
    let code = body["code"].as_str().context("code")?.to_owned();
    let (status, body) = partner_admin
        .post(
            &format!("/api/lessons/{}/partner-links/accept", partner.lesson_id),
            json!({ "code": code }),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "accept: {status} {body}");
    Ok((link_id, host_teacher))
}

/// Waits for a remote participant named `name` of `school` to be announced to `client`; returns
/// their participant id there.
pub async fn remote_participant(client: &TestClient, name: &str, school: &str) -> Result<String> {
    let event = client
        .expect_event(
            |e| {
                is_type(e, "participant_joined")
                    && e.pointer("/participant/remote") == Some(&Value::Bool(true))
                    && e.pointer("/participant/name").and_then(Value::as_str) == Some(name)
            },
            SEATED,
        )
        .await
        .with_context(|| format!("{name} of {school} appears as a remote participant"))?;
    ensure!(
        event.pointer("/participant/school").and_then(Value::as_str) == Some(school),
        "the remote participant carries their school: {event}"
    );
    Ok(event
        .pointer("/participant/participant_id")
        .and_then(Value::as_str)
        .context("participant id")?
        .to_owned())
}

/// Waits for `owner`'s track of `source` to be published to `client`; returns its track id.
pub async fn track_of(client: &TestClient, owner: &str, source: Source) -> Result<String> {
    let event = client
        .expect_event(
            |e| {
                is_type(e, "track_published")
                    && e.pointer("/track/participant_id").and_then(Value::as_str) == Some(owner)
                    && e.pointer("/track/source").and_then(Value::as_str) == Some(source.as_str())
            },
            SEATED,
        )
        .await
        .with_context(|| format!("{owner}'s {} is published", source.as_str()))?;
    Ok(event
        .pointer("/track/track_id")
        .and_then(Value::as_str)
        .context("track id")?
        .to_owned())
}

/// Audio and video of `owner` reach `pupil`; returns the track ids.
pub async fn receives(pupil: &TestClient, owner: &str) -> Result<(String, String)> {
    let audio = track_of(pupil, owner, Source::Microphone).await?;
    let video = track_of(pupil, owner, Source::Camera).await?;
    pupil
        .subscriber
        .wait_count(&audio, 25, MEDIA)
        .await
        .context("audio crosses the link")?;
    pupil
        .subscriber
        .wait_count(&video, 30, MEDIA)
        .await
        .context("video crosses the link")?;
    Ok((audio, video))
}
