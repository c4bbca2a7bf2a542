//! WHIP ingest (RFC 9725, docs/PROTOCOL.md "WHIP"): an encoder publishes into a lesson with one
//! HTTP POST of an SDP offer and a bearer token. The encoder here is the webrtc-rs test client
//! (an independent stack); a pupil in the room must receive its audio and video, see it as a
//! partner lecturer with its name and organisation, and see it leave on `DELETE`. Bad requests
//! get the documented status and body, and the server keeps serving.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::{Claims, Permission, Role};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::whip::{self, WhipOffer};
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, REPLY_TIMEOUT, Source, TEST_TIMEOUT};
use support::{TestClient, TestServer};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// The claims of a WHIP publishing credential as the portal mints them: the partner-lecturer
/// role, an identity of its own, publishing only.
fn whip_claims(server: &TestServer, room: &str) -> Claims {
    let mut c = server.claims("whip:hall-a", "Lecture hall A", Role::PartnerLecturer);
    c.room = room.to_owned();
    c.perms = vec![Permission::PublishAudio, Permission::PublishVideo];
    c.org = Some("Tokai University".to_owned());
    c
}

fn endpoint(server: &TestServer) -> String {
    format!("{}/whip/{}", server.handle.http_url(), server.room)
}

/// Makes the test room a lesson's (the sample roster's class 5-1, now) with WHIP links
/// `hall-a` and `hall-b`, and pupil s-001 attending online: a WHIP credential opens only a
/// lesson's room, through a live link.
async fn make_lesson(server: &TestServer) -> Result<()> {
    use classroom_domain::{Acting, GuestKind, Mode, ModeRequest, NewGuestLink};
    let db = server.handle.db();
    let roster = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("domain/tests/fixtures/oneroster-sample");
    classroom_domain::import_dir(db, &roster).await?;
    let now = unix_now() as i64;
    let lesson = classroom_domain::create_lesson(
        db,
        &classroom_domain::NewLesson {
            id: "lesson-whip".to_owned(),
            class_id: "class-p5-1".to_owned(),
            starts_at: now,
            ends_at: now + 3600,
            media_room: server.room.clone(),
            teachers: None,
        },
        chrono_tz::Asia::Tokyo,
    )
    .await?;
    let acting = Acting {
        person: "t-001",
        at: now,
        remote_addr: None,
    };
    for id in ["hall-a", "hall-b"] {
        let link = NewGuestLink {
            id,
            kind: GuestKind::Whip,
            display_name: "Lecture hall A",
            organisation: "Tokai University",
            expires_at: now + 3600,
        };
        classroom_domain::create_guest_link(db, acting, &lesson, &link).await?;
    }
    let policy = classroom_domain::CutoffPolicy::default();
    let today = policy.local_date(now);
    let online = ModeRequest {
        pupil: "s-001",
        from: today,
        to: today,
        mode: Mode::Online,
        reason: None,
    };
    classroom_domain::set_mode(db, &policy, acting, &online).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_encoder_reaches_a_pupil_and_delete_ends_it() -> Result<()> {
    bounded(a_whip_encoder_reaches_a_pupil_inner()).await
}

async fn a_whip_encoder_reaches_a_pupil_inner() -> Result<()> {
    let server = TestServer::start().await?;
    make_lesson(&server).await?;
    let pupil = TestClient::connect(
        &server.ws_url(),
        &server.token("s-001", "Sato", Role::Student),
    )
    .await
    .context("pupil joins")?;

    let pre = whip::request(Method::OPTIONS, &endpoint(&server)).await?;
    ensure!(
        pre.status == StatusCode::NO_CONTENT,
        "OPTIONS: {}",
        pre.status
    );
    ensure!(
        pre.header("accept-post").as_deref() == Some("application/sdp"),
        "OPTIONS names what POST takes: {:?}",
        pre.headers
    );

    let token = server.token_with(whip_claims(&server, &server.room));
    let offer = WhipOffer::post(
        &endpoint(&server),
        &token,
        &[Source::Microphone, Source::Camera],
    )
    .await?;
    ensure!(
        offer.reply.status == StatusCode::CREATED,
        "POST: {} {}",
        offer.reply.status,
        offer.reply.body
    );
    ensure!(
        offer.reply.header("content-type").as_deref() == Some("application/sdp"),
        "the answer is SDP"
    );
    ensure!(offer.reply.body.starts_with("v=0"), "an SDP answer");
    let location = offer.reply.header("location").context("Location")?;
    ensure!(
        location.starts_with(&format!("/whip/{}/", server.room)) && location.len() > 40,
        "an unguessable resource URL: {location}"
    );

    // The room sees a partner lecturer with its name and organisation, and its two tracks.
    let joined = pupil
        .expect_event(|e| support::is_type(e, "participant_joined"), REPLY_TIMEOUT)
        .await?;
    let who = &joined["participant"];
    ensure!(who["role"] == "partner_lecturer", "role: {joined}");
    ensure!(who["name"] == "Lecture hall A", "name: {joined}");
    ensure!(who["school"] == "Tokai University", "school: {joined}");
    let encoder = who["participant_id"].as_str().context("id")?.to_owned();
    let mut ids = HashMap::new();
    for _ in 0..2 {
        let e = pupil
            .expect_event(
                |e| {
                    support::is_type(e, "track_published")
                        && e["track"]["participant_id"] == encoder.as_str()
                },
                REPLY_TIMEOUT,
            )
            .await?;
        let source = match e["track"]["source"].as_str() {
            Some("microphone") => Source::Microphone,
            Some("camera") => Source::Camera,
            other => anyhow::bail!("unexpected source {other:?}"),
        };
        ids.insert(
            source,
            e["track"]["track_id"].as_str().context("id")?.to_owned(),
        );
    }
    let publisher = offer.complete(&ids).await.context("WHIP connection")?;
    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
    pupil
        .subscriber
        .wait_count(&ids[&Source::Microphone], 25, CONNECT_TIMEOUT)
        .await
        .context("the pupil hears the encoder")?;
    pupil
        .subscriber
        .wait_count(&ids[&Source::Camera], 20, CONNECT_TIMEOUT)
        .await
        .context("the pupil sees the encoder")?;

    let resource = format!("{}{location}", server.handle.http_url());
    let patch = whip::request(Method::PATCH, &resource).await?;
    ensure!(
        patch.status == StatusCode::METHOD_NOT_ALLOWED,
        "PATCH (trickle ICE) is not supported: {}",
        patch.status
    );

    // The resource URL alone ends nothing: it takes the session's credential.
    let bare = whip::request(Method::DELETE, &resource).await?;
    ensure!(
        bare.status == StatusCode::UNAUTHORIZED && bare.error() == "missing_token",
        "DELETE without a token: {} {}",
        bare.status,
        bare.body
    );
    let mut other = whip_claims(&server, &server.room);
    other.sub = "whip:hall-b".to_owned();
    let stranger = whip::request_as(Method::DELETE, &resource, &server.token_with(other)).await?;
    ensure!(
        stranger.status == StatusCode::NOT_FOUND,
        "DELETE with another encoder's token: {} {}",
        stranger.status,
        stranger.body
    );
    let deleted = whip::request_as(Method::DELETE, &resource, &token).await?;
    ensure!(
        deleted.status == StatusCode::OK
            && deleted.json()["ended"] == true
            && deleted.json()["phase"] == "running",
        "DELETE: {} {}",
        deleted.status,
        deleted.body
    );
    pupil
        .expect_participant_left(&encoder, REPLY_TIMEOUT)
        .await
        .context("the encoder leaves the room on DELETE")?;
    let again = whip::request_as(Method::DELETE, &resource, &token).await?;
    ensure!(
        again.status == StatusCode::NOT_FOUND && again.error() == "not_found",
        "a second DELETE: {} {}",
        again.status,
        again.body
    );
    pump.stop().await?;
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A bad request: what it is, its token and content type, its body, and the refusal expected.
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    String,
    StatusCode,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_whip_requests_get_documented_refusals() -> Result<()> {
    bounded(bad_whip_requests_inner()).await
}

async fn bad_whip_requests_inner() -> Result<()> {
    let server = TestServer::start().await?;
    make_lesson(&server).await?;
    let url = endpoint(&server);
    let offer =
        support::publisher::PublishOffer::create(&[Source::Microphone, Source::Camera]).await?;
    let sdp = offer.sdp.clone();
    offer.abandon().await;
    let good = server.token_with(whip_claims(&server, &server.room));
    let mut expired = whip_claims(&server, &server.room);
    expired.iat = unix_now() - 7200;
    expired.exp = unix_now() - 3600;
    let expired = server.token_with(expired);
    let forged = server.forged_token(whip_claims(&server, &server.room));
    let other_room = server.token_with(whip_claims(&server, "another-lesson"));
    let observer = server.token("o-1", "Watcher", Role::Observer);
    let browser = server.token("t-1", "Tanaka", Role::Teacher);
    let sdp_type = Some("application/sdp");

    let cases: Vec<Case> = vec![
        (
            "no token",
            None,
            sdp_type,
            sdp.clone(),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            "forged",
            Some(&forged),
            sdp_type,
            sdp.clone(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "expired",
            Some(&expired),
            sdp_type,
            sdp.clone(),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            "garbage",
            Some("not-a-jwt"),
            sdp_type,
            sdp.clone(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "other room",
            Some(&other_room),
            sdp_type,
            sdp.clone(),
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
        (
            "observer",
            Some(&observer),
            sdp_type,
            sdp.clone(),
            StatusCode::FORBIDDEN,
            "permission_denied",
        ),
        (
            "a browser's token",
            Some(&browser),
            sdp_type,
            sdp.clone(),
            StatusCode::FORBIDDEN,
            "permission_denied",
        ),
        (
            "json body",
            Some(&good),
            Some("application/json"),
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no type",
            Some(&good),
            None,
            sdp.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "oversized",
            Some(&good),
            sdp_type,
            format!("v=0\r\n{}", "a=x\r\n".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "not SDP",
            Some(&good),
            sdp_type,
            "hello".into(),
            StatusCode::BAD_REQUEST,
            "bad_sdp",
        ),
        (
            "receive only",
            Some(&good),
            sdp_type,
            sdp.replace("a=sendonly", "a=recvonly"),
            StatusCode::BAD_REQUEST,
            "bad_sdp",
        ),
    ];
    for (what, token, ct, body, status, code) in cases {
        let reply = whip::post(&url, token, ct, body).await?;
        ensure!(
            reply.status == status && reply.error() == code,
            "{what}: expected {status} {code}, got {} {}",
            reply.status,
            reply.body
        );
        ensure!(
            reply.json()["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message says why: {}",
            reply.body
        );
        if status == StatusCode::UNAUTHORIZED {
            ensure!(
                reply.header("www-authenticate").is_some(),
                "{what}: 401 names the scheme"
            );
        }
    }

    // Nothing was left behind, and the server still takes a good offer.
    let metrics = reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("classroom_whip_sessions 0"),
        "no WHIP session after refusals"
    );
    let ok = WhipOffer::post(&url, &good, &[Source::Microphone, Source::Camera]).await?;
    ensure!(
        ok.reply.status == StatusCode::CREATED,
        "a good offer after the bad ones: {} {}",
        ok.reply.status,
        ok.reply.body
    );
    // The same credential again replaces the first session (one publisher per credential):
    // the server holds one WHIP session, not two.
    let second = WhipOffer::post(&url, &good, &[Source::Microphone, Source::Camera]).await?;
    ensure!(
        second.reply.status == StatusCode::CREATED,
        "second: {}",
        second.reply.status
    );
    let metrics_url = format!("http://{}/metrics", server.handle.metrics_addr);
    support::wait::poll_for(
        Duration::from_secs(5),
        || "the replaced WHIP session to end".to_owned(),
        async || {
            let m = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            m.contains("classroom_whip_sessions 1\n").then_some(())
        },
    )
    .await?;
    let first_resource = format!(
        "{}{}",
        server.handle.http_url(),
        ok.reply.header("location").context("Location")?
    );
    let gone = whip::request_as(Method::DELETE, &first_resource, &good).await?;
    ensure!(
        gone.status == StatusCode::NOT_FOUND,
        "the replaced session is gone: {}",
        gone.status
    );
    Ok(())
}

/// An encoder that gets its answer but never connects (or whose media stops) holds no place for
/// long: the session ends once the media plane gives up waiting for its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_session_without_media_is_removed() -> Result<()> {
    bounded(a_whip_session_without_media_inner()).await
}

async fn a_whip_session_without_media_inner() -> Result<()> {
    let server = TestServer::start().await?;
    make_lesson(&server).await?;
    let pupil = TestClient::connect(
        &server.ws_url(),
        &server.token("s-001", "Sato", Role::Student),
    )
    .await
    .context("pupil joins")?;
    let token = server.token_with(whip_claims(&server, &server.room));
    let offer = WhipOffer::post(
        &endpoint(&server),
        &token,
        &[Source::Microphone, Source::Camera],
    )
    .await?;
    ensure!(
        offer.reply.status == StatusCode::CREATED,
        "POST: {}",
        offer.reply.status
    );
    let joined = pupil
        .expect_event(|e| support::is_type(e, "participant_joined"), REPLY_TIMEOUT)
        .await?;
    let encoder = joined["participant"]["participant_id"]
        .as_str()
        .context("id")?
        .to_owned();
    // The answer is never applied: no ICE check ever reaches the server.
    drop(offer);
    let started = std::time::Instant::now();
    pupil
        .expect_participant_left(&encoder, Duration::from_secs(40))
        .await
        .context("the silent encoder is removed")?;
    eprintln!("silent WHIP session removed after {:?}", started.elapsed());
    Ok(())
}

/// Sends the head of a WHIP `POST` announcing an offer of `length` bytes, and never the offer;
/// returns the status line the server answers with (an error if none comes).
async fn post_head_only(server: &TestServer, token: &str, length: usize) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = server.handle.http_url();
    let addr = url.strip_prefix("http://").context("an http URL")?;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /whip/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {length}\r\n\r\n",
        server.room
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                anyhow::bail!("the server closed the connection without an answer");
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REPLY_TIMEOUT, read)
        .await
        .context("no answer while the body was withheld: the server waits to read it")??;
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// A request whose credential is no good is answered before its body is read: the server holds
/// no up-to-64-KiB read for a stranger. The body is announced and never sent, so an answer at
/// all proves the body was not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_whip_token_is_refused_before_the_offer_is_read() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        make_lesson(&server).await?;
        let forged = server.forged_token(whip_claims(&server, &server.room));
        let other_room = server.token_with(whip_claims(&server, "another-lesson"));
        let browser = server.token("t-001", "Yamada", Role::Teacher);
        for (what, token, status) in [
            ("forged", forged, "401"),
            ("garbage", "not-a-jwt".to_owned(), "401"),
            ("other room", other_room, "403"),
            ("a browser's token", browser, "403"),
        ] {
            let line = post_head_only(&server, &token, 60_000)
                .await
                .with_context(|| what.to_owned())?;
            ensure!(
                line.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {line}"
            );
        }
        // A good token's request does wait for its offer (the server is not simply refusing).
        let good = server.token_with(whip_claims(&server, &server.room));
        ensure!(
            post_head_only(&server, &good, 60_000).await.is_err(),
            "a good token's request waits for its body"
        );
        Ok(())
    })
    .await
}

/// A WHIP credential opens only a lesson's room: for a room without a lesson (a lesson deleted,
/// or moved), a token that is still valid is refused at the door.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_token_for_a_room_without_a_lesson_is_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        make_lesson(&server).await?;
        let room = "room-without-lesson";
        let token = server.token_with(whip_claims(&server, room));
        let url = format!("{}/whip/{room}", server.handle.http_url());
        let offer = WhipOffer::post(&url, &token, &[Source::Microphone, Source::Camera]).await?;
        ensure!(
            offer.reply.status == StatusCode::FORBIDDEN && offer.reply.error() == "not_admitted",
            "a WHIP token for a room without a lesson: {} {}",
            offer.reply.status,
            offer.reply.body
        );
        ensure!(
            offer.reply.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("no longer exists")),
            "the refusal says why: {}",
            offer.reply.body
        );
        Ok(())
    })
    .await
}
