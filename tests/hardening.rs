//! The server under abuse and watched from outside (issue 11): how many tracks each role may
//! publish, what a bad SDP is told, `/healthz` when the media thread stalls, who may read
//! `/metrics`, and the pages' Content-Security-Policy.

use crate::support;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use classroom::server::Config;
use classroom_signaling::token::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    REPLY_TIMEOUT, RawConnection, Source, TEST_TIMEOUT, TestClient, TestServer, is_type,
};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REPLY_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// Checks a refusal: `permission_denied` naming `permission`, with a message saying why.
fn check_denied(reply: &Value, permission: &str, says: &str) -> Result<()> {
    ensure!(
        is_type(reply, "error")
            && reply["code"] == "permission_denied"
            && reply["permission"] == permission,
        "expected permission_denied for {permission}, got {reply}"
    );
    let message = reply["message"].as_str().unwrap_or_default();
    ensure!(message.contains(says), "{says:?} not in {message:?}");
    Ok(())
}

/// The `track_published` events a client got for `participant`'s tracks so far, by source.
fn published_sources(client: &TestClient, participant: &str) -> Vec<String> {
    client
        .signal
        .history()
        .iter()
        .filter(|e| {
            is_type(e, "track_published")
                && e.pointer("/track/participant_id").and_then(Value::as_str) == Some(participant)
        })
        .filter_map(|e| e.pointer("/track/source").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_publishes_one_track_per_source() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let url = server.ws_url();
        let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher))
            .await
            .context("teacher joins")?;
        let pupil = TestClient::connect(&url, &server.token("s-1", "Sato", Role::Student))
            .await
            .context("pupil joins")?;

        // A lesson's worth: one microphone, one camera.
        let published = pupil
            .publish(&[Source::Microphone, Source::Camera])
            .await
            .context("the pupil publishes a camera and a microphone")?;
        for source in [Source::Microphone, Source::Camera] {
            teacher
                .expect_track_published(&published.track_id(source)?, REPLY_TIMEOUT)
                .await?;
        }

        // A second camera, offered beside the first: refused, and so is the 16th and the 17th.
        let reply = pupil
            .publish_expect_refusal(&[Source::Microphone, Source::Camera, Source::Camera])
            .await
            .context("a second camera")?;
        check_denied(&reply, "publish_video", "one camera")?;
        for cameras in [16, 17] {
            let reply = pupil
                .publish_expect_refusal(&vec![Source::Camera; cameras])
                .await
                .with_context(|| format!("{cameras} cameras"))?;
            check_denied(&reply, "publish_video", &format!("lists {cameras}"))?;
        }
        // A second microphone, and a pupil's screen.
        let reply = pupil
            .publish_expect_refusal(&[Source::Microphone, Source::Microphone, Source::Camera])
            .await
            .context("a second microphone")?;
        check_denied(&reply, "publish_audio", "one microphone")?;
        let reply = pupil
            .publish_expect_refusal(&[Source::Microphone, Source::Camera, Source::Screen])
            .await
            .context("a pupil's screen")?;
        check_denied(&reply, "publish_screen", "")?;

        // Nothing of the refused offers reached the class: the teacher was offered exactly the
        // pupil's two tracks, which are still published.
        pupil
            .ping()
            .await
            .context("the pupil's socket stays open")?;
        let mut seen = published_sources(&teacher, &pupil.participant_id);
        seen.sort();
        assert_eq!(seen, ["camera", "microphone"]);
        let unpublished = teacher
            .signal
            .history()
            .iter()
            .filter(|e| is_type(e, "track_unpublished"))
            .count();
        assert_eq!(unpublished, 0, "a refused offer unpublished a track");

        // A teacher also shares a screen, but only one of each.
        let teacher_tracks = teacher
            .publish(&[Source::Microphone, Source::Camera, Source::Screen])
            .await
            .context("the teacher publishes a microphone, a camera and a screen")?;
        pupil
            .expect_track_published(&teacher_tracks.track_id(Source::Screen)?, REPLY_TIMEOUT)
            .await?;
        let reply = teacher
            .publish_expect_refusal(&[
                Source::Microphone,
                Source::Camera,
                Source::Screen,
                Source::Screen,
            ])
            .await
            .context("a teacher's second screen")?;
        check_denied(&reply, "publish_screen", "one screen")?;
        let reply = teacher
            .publish_expect_refusal(&[Source::Camera, Source::Camera])
            .await
            .context("a teacher's second camera")?;
        check_denied(&reply, "publish_video", "one camera")?;
        assert_eq!(published_sources(&pupil, &teacher.participant_id).len(), 3);

        server.shutdown().await;
        Ok(())
    })
    .await
}

/// An error message that says what was wrong and nothing about the server's memory.
fn check_sdp_error(reply: &Value, what: &str) -> Result<String> {
    ensure!(
        is_type(reply, "error") && reply["code"] == "bad_sdp",
        "{what}: expected bad_sdp, got {reply}"
    );
    let message = reply["message"].as_str().unwrap_or_default().to_owned();
    ensure!(
        !message.contains("0x") && !message.contains("PointerOffset"),
        "{what}: the message shows a memory address: {message:?}"
    );
    ensure!(message.contains("line "), "{what}: no line in {message:?}");
    Ok(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_sdp_is_explained_without_memory_addresses() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let url = server.ws_url();
        let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher))
            .await
            .context("teacher joins")?;

        // A publish offer that looks like SDP to the permission check but that the media plane
        // cannot parse: its port is a word.
        let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio nine UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n";
        let reply = teacher
            .request(json!({"type": "publish", "sdp": offer,
                            "tracks": [{"mid": "0", "source": "microphone"}]}))
            .await?;
        let message = check_sdp_error(&reply, "publish offer")?;
        ensure!(message.contains("line 5"), "{message}");
        ensure!(message.contains("m=audio nine"), "{message}");

        // A subscriber's answer the media plane cannot parse.
        teacher
            .publish(&[Source::Microphone, Source::Camera])
            .await?;
        let pupil = RawConnection::connect(&url).await?;
        let joined = pupil
            .join(&server.token("s-1", "Sato", Role::Student))
            .await?;
        ensure!(is_type(&joined, "joined"), "{joined}");
        pupil
            .signal
            .expect_type("subscriber_offer", REPLY_TIMEOUT)
            .await?;
        let answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=x 0\r\n";
        let reply = pupil
            .signal
            .request(
                json!({"type": "subscriber_answer", "sdp": answer}),
                REPLY_TIMEOUT,
            )
            .await?;
        let message = check_sdp_error(&reply, "subscriber answer")?;
        ensure!(message.contains("line 4"), "{message}");
        // Refused, not fatal: the connection stays for a better answer.
        let pong = pupil
            .signal
            .request(json!({"type": "ping"}), REPLY_TIMEOUT)
            .await?;
        ensure!(is_type(&pong, "pong"), "{pong}");

        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Polls `url` until it answers `status`; returns the body.
async fn wait_status(url: &str, status: StatusCode, within: Duration) -> Result<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = http().get(url).send().await?;
        let got = reply.status();
        let body = reply.text().await?;
        if got == status {
            return Ok(body);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} still answers {got} ({body:?}) after {within:?}, expected {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_the_media_thread_is_held() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let public = format!("{}/healthz", server.handle.http_url());
        let private = format!("http://{}/healthz", server.handle.metrics_addr);
        let ok = wait_status(&public, StatusCode::OK, REPLY_TIMEOUT).await?;
        assert_eq!(ok, "ok");

        let hold = server.handle.hold_media_thread().await?;
        // The heartbeat goes stale after five seconds.
        let body = wait_status(
            &public,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(15),
        )
        .await
        .context("/healthz while the media thread is held")?;
        ensure!(body.contains("media thread"), "{body}");
        wait_status(&private, StatusCode::SERVICE_UNAVAILABLE, REPLY_TIMEOUT).await?;

        drop(hold);
        wait_status(&public, StatusCode::OK, Duration::from_secs(10))
            .await
            .context("/healthz once the media thread runs again")?;

        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metrics_are_not_served_to_the_public() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let public = format!("{}/metrics", server.handle.http_url());
        let private = format!("http://{}/metrics", server.handle.metrics_addr);
        ensure!(
            server.handle.metrics_addr.ip().is_loopback(),
            "{}",
            server.handle.metrics_addr
        );

        let reply = http().get(&public).send().await?;
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
        let body = reply.text().await?;
        ensure!(!body.contains("classroom_"), "{body}");

        let reply = http().get(&private).send().await?;
        assert_eq!(reply.status(), StatusCode::OK);
        let body = reply.text().await?;
        ensure!(
            body.contains("classroom_media_packets_received_total")
                && body.contains("classroom_media_heartbeat_age_seconds"),
            "{body}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn with_a_token_metrics_need_it_everywhere() -> Result<()> {
    bounded(async {
        const TOKEN: &str = "metrics-token-0123456789";
        let mut config = Config::for_tests();
        config.metrics.token = Some(TOKEN.into());
        let server = TestServer::start_with(config).await?;
        for url in [
            format!("{}/metrics", server.handle.http_url()),
            format!("http://{}/metrics", server.handle.metrics_addr),
        ] {
            for header in [
                None,
                Some("Bearer wrong-token-0123456789".to_owned()),
                Some(format!("Basic {TOKEN}")),
                Some(format!("Bearer {TOKEN}x")),
            ] {
                let mut request = http().get(&url);
                if let Some(h) = &header {
                    request = request.header("authorization", h);
                }
                let reply = request.send().await?;
                assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{url} {header:?}");
                assert!(
                    reply.headers().contains_key("www-authenticate"),
                    "{url} {header:?}"
                );
                let body = reply.text().await?;
                ensure!(!body.contains("classroom_"), "{body}");
            }
            let reply = http()
                .get(&url)
                .header("authorization", format!("Bearer {TOKEN}"))
                .send()
                .await?;
            assert_eq!(reply.status(), StatusCode::OK, "{url}");
            let body = reply.text().await?;
            ensure!(body.contains("classroom_participants"), "{url}: {body}");
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pages_carry_a_content_security_policy() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let base = server.handle.http_url();
        for path in [
            "/",
            "/teacher.html",
            "/pupil.html",
            "/signin.html",
            "/lobby.html",
            "/admin.html",
            "/guardian.html",
            "/lessons.html",
            "/js/session.js",
        ] {
            let reply = http().get(format!("{base}{path}")).send().await?;
            assert_eq!(reply.status(), StatusCode::OK, "{path}");
            let csp = reply
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .with_context(|| format!("{path}: no Content-Security-Policy"))?
                .to_owned();
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "object-src 'none'",
            ] {
                ensure!(
                    csp.contains(directive),
                    "{path}: {directive:?} not in {csp:?}"
                );
            }
            ensure!(!csp.contains("unsafe"), "{path}: {csp}");
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
