//! Resume (docs/PROTOCOL.md, `resume`): a participant whose socket drops keeps its place for the
//! grace period and comes back as the same participant, with its media kept; afterwards it comes
//! back as a new participant of the same identity; bad credentials are refused with their codes;
//! a subscribe connection gets fresh ICE credentials on `ice_restart` and media carries on.
//! Clients are webrtc-rs peer connections (tests/support).

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom::server::Config;
use classroom_signaling::token::{Role, TokenIssuer};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use support::signal::Signal;
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, REPLY_TIMEOUT, Source, TEST_TIMEOUT};
use support::{TestClient, TestServer, is_type};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

fn resume_token(joined: &Value) -> Result<String> {
    joined
        .pointer("/resume/token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("joined carries no resume credential: {joined}"))
}

fn participant_id(joined: &Value) -> Option<&str> {
    joined
        .pointer("/participant/participant_id")
        .and_then(Value::as_str)
}

/// Opens a socket and sends `resume` with `token`; returns the socket and the reply.
async fn resume(url: &str, token: &str) -> Result<(Signal, Value)> {
    let (signal, _offers) = Signal::connect(url, REPLY_TIMEOUT).await?;
    let reply = signal
        .request(
            json!({"v": 1, "type": "resume", "token": token}),
            REPLY_TIMEOUT,
        )
        .await?;
    Ok((signal, reply))
}

fn about(event: &Value, ty: &str, participant: &str) -> bool {
    is_type(event, ty)
        && (event.get("participant_id").and_then(Value::as_str) == Some(participant)
            || event
                .pointer("/participant/participant_id")
                .and_then(Value::as_str)
                == Some(participant))
}

fn server_issuer() -> TokenIssuer {
    let config = Config::for_tests();
    let secret = config.token_secret.expect("the test config has a secret");
    TokenIssuer::new(secret.expose().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pupil_who_resumes_within_the_grace_keeps_its_place_and_its_media() -> Result<()> {
    bounded(within_grace()).await
}

async fn within_grace() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher)).await?;
    let pupil = TestClient::connect(&url, &server.token("s-1", "Sato", Role::Student)).await?;
    let pid = pupil.participant_id.clone();
    teacher
        .expect_participant_joined(&pid, REPLY_TIMEOUT)
        .await?;

    // Pupils are heard only with the floor (docs/PROTOCOL.md, "Lesson"); it is kept by identity,
    // so the resumed pupil still holds it.
    teacher.send_json(&json!({"type": "grant_floor", "participant_id": pid, "camera": true}))?;
    pupil
        .signal
        .expect_event(
            |e| is_type(e, "lesson_state") && e["you"]["floor"] == true,
            REPLY_TIMEOUT,
        )
        .await
        .context("the pupil holds the floor")?;
    let from_teacher = teacher
        .publish(&[Source::Microphone, Source::Camera])
        .await?;
    let from_pupil = pupil.publish(&[Source::Microphone, Source::Camera]).await?;
    let teacher_audio = from_teacher.track_id(Source::Microphone)?;
    let pupil_audio = from_pupil.track_id(Source::Microphone)?;
    let pumps = [
        MediaPump::start(from_teacher.clone(), PumpConfig::default()),
        MediaPump::start(from_pupil.clone(), PumpConfig::default()),
    ];
    let got = pupil
        .subscriber
        .wait_count(&teacher_audio, 20, CONNECT_TIMEOUT)
        .await
        .context("the pupil hears the teacher")?;
    teacher
        .subscriber
        .wait_count(&pupil_audio, 20, CONNECT_TIMEOUT)
        .await
        .context("the teacher hears the pupil")?;

    // The pupil's socket drops without `leave`.
    let credential = resume_token(&pupil.joined)?;
    pupil.signal.close();
    teacher
        .expect_event(
            |e| about(e, "participant_reconnecting", &pid),
            REPLY_TIMEOUT,
        )
        .await
        .context("the teacher is told the pupil is reconnecting")?;
    // Media keeps flowing to the pupil with no socket: the place is kept, connections and all.
    let during = pupil.subscriber.received_count(&teacher_audio);
    ensure!(during >= got);
    pupil
        .subscriber
        .wait_count(&teacher_audio, during + 25, CONNECT_TIMEOUT)
        .await
        .context("media reaches the pupil while its socket is gone")?;

    let (socket, joined) = resume(&url, &credential).await?;
    ensure!(is_type(&joined, "joined"), "resume refused: {joined}");
    ensure!(
        joined.get("resumed") == Some(&json!(true)),
        "joined.resumed: {joined}"
    );
    ensure!(
        participant_id(&joined) == Some(pid.as_str()),
        "same participant id {pid}: {joined}"
    );
    let fresh = resume_token(&joined)?;
    ensure!(fresh != credential, "the credential is refreshed");
    ensure!(
        joined["participants"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["participant_id"] == teacher.participant_id.as_str())),
        "the room snapshot lists the teacher: {joined}"
    );
    ensure!(
        joined["tracks"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["participant_id"] != pid.as_str())
                && t.iter().any(|t| t["track_id"] == teacher_audio.as_str())),
        "the snapshot lists the others' tracks, not the pupil's own: {joined}"
    );
    teacher
        .expect_event(|e| about(e, "participant_reconnected", &pid), REPLY_TIMEOUT)
        .await
        .context("the teacher is told the pupil is back")?;
    // The resumed socket is a working one.
    let pong = socket
        .request(json!({"type": "ping"}), REPLY_TIMEOUT)
        .await?;
    ensure!(is_type(&pong, "pong"), "{pong}");

    // Media both ways after the resume.
    let to_pupil = pupil.subscriber.received_count(&teacher_audio);
    let to_teacher = teacher.subscriber.received_count(&pupil_audio);
    pupil
        .subscriber
        .wait_count(&teacher_audio, to_pupil + 25, CONNECT_TIMEOUT)
        .await?;
    teacher
        .subscriber
        .wait_count(&pupil_audio, to_teacher + 25, CONNECT_TIMEOUT)
        .await?;

    // The room never saw a departure or a second arrival.
    let seen: Vec<Value> = teacher
        .signal
        .history()
        .into_iter()
        .filter(|e| {
            about(e, "participant_left", &pid)
                || is_type(e, "participant_joined") && e["participant"]["identity"] == "s-1"
        })
        .collect();
    ensure!(
        seen.len() == 1 && is_type(&seen[0], "participant_joined"),
        "one arrival, no departure: {seen:?}"
    );

    // The spent credential cannot be used again; the fresh one can.
    let (replayed, refusal) = resume(&url, &credential).await?;
    ensure!(
        support::is_error(&refusal, "resume_used"),
        "a replayed credential: {refusal}"
    );
    replayed.wait_closed(REPLY_TIMEOUT).await?;

    // A second socket resuming while the first lives takes over quietly.
    let (second, again) = resume(&url, &fresh).await?;
    ensure!(
        again.get("resumed") == Some(&json!(true)) && participant_id(&again) == Some(pid.as_str()),
        "{again}"
    );
    let goodbye = socket.expect_type("goodbye", REPLY_TIMEOUT).await?;
    ensure!(goodbye["reason"] == "replaced", "{goodbye}");
    socket.wait_closed(REPLY_TIMEOUT).await?;
    let pong = second
        .request(json!({"type": "ping"}), REPLY_TIMEOUT)
        .await?;
    ensure!(is_type(&pong, "pong"), "{pong}");
    let after = pupil.subscriber.received_count(&teacher_audio);
    pupil
        .subscriber
        .wait_count(&teacher_audio, after + 25, CONNECT_TIMEOUT)
        .await?;
    ensure!(
        !teacher
            .signal
            .history()
            .iter()
            .any(|e| about(e, "participant_left", &pid)),
        "a takeover is no departure"
    );
    for pump in &pumps {
        pump.stop().await?;
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_grace_a_resume_enters_as_a_new_participant_of_the_same_identity() -> Result<()> {
    bounded(after_grace()).await
}

async fn after_grace() -> Result<()> {
    let mut config = Config::for_tests();
    config.connections.resume_grace = "1s".into();
    let server = TestServer::start_with(config).await?;
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher)).await?;
    let pupil = TestClient::connect(&url, &server.token("s-2", "Ito", Role::Student)).await?;
    let pid = pupil.participant_id.clone();
    teacher
        .expect_participant_joined(&pid, REPLY_TIMEOUT)
        .await?;
    let credential = resume_token(&pupil.joined)?;

    pupil.signal.close();
    pupil.close_media().await;
    teacher
        .expect_event(
            |e| about(e, "participant_reconnecting", &pid),
            REPLY_TIMEOUT,
        )
        .await?;
    teacher
        .expect_participant_left(&pid, REPLY_TIMEOUT)
        .await
        .context("the pupil leaves when the grace is over")?;

    let (_socket, joined) = resume(&url, &credential).await?;
    ensure!(is_type(&joined, "joined"), "resume refused: {joined}");
    ensure!(
        joined.get("resumed") == Some(&json!(false)),
        "a new participant: {joined}"
    );
    let new_pid = participant_id(&joined).context("participant id")?;
    ensure!(new_pid != pid, "a new participant id");
    ensure!(joined["participant"]["identity"] == "s-2", "{joined}");
    let arrival = teacher
        .expect_participant_joined(new_pid, REPLY_TIMEOUT)
        .await?;
    ensure!(arrival["participant"]["identity"] == "s-2", "{arrival}");
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resume_credentials_are_refused_with_their_codes() -> Result<()> {
    bounded(bad_credentials()).await
}

async fn bad_credentials() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();
    let pupil = TestClient::connect(&url, &server.token("s-3", "Kato", Role::Student)).await?;
    let credential = resume_token(&pupil.joined)?;
    let claims = server.claims("s-3", "Kato", Role::Student);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    let forged = TokenIssuer::new(b"not the server's secret, just a guess")
        .issue_resume(&claims, now + 3600)?
        .token;
    let expired = server_issuer().issue_resume(&claims, now - 5)?.token;
    // Another identity's claims pasted into a genuine credential.
    let foreign = {
        let parts: Vec<&str> = credential.split('.').collect();
        let payload = support::server::base64url_decode(parts[1]).context("payload")?;
        let mut c: Value = serde_json::from_slice(&payload)?;
        c["sub"] = "t-1".into();
        c["room"] = "another-room".into();
        format!(
            "{}.{}.{}",
            parts[0],
            support::server::base64url_encode(c.to_string().as_bytes()),
            parts[2]
        )
    };
    let join_token = server.token("s-3", "Kato", Role::Student);
    let cases = [
        ("garbled", "not-a-credential".to_owned(), "resume_invalid"),
        ("forged", forged, "resume_invalid"),
        ("foreign", foreign, "resume_invalid"),
        ("a join token", join_token, "resume_invalid"),
        ("expired", expired, "resume_expired"),
    ];
    for (what, token, code) in cases {
        let (socket, reply) = resume(&url, &token).await?;
        ensure!(support::is_error(&reply, code), "{what}: {reply}");
        socket
            .wait_closed(REPLY_TIMEOUT)
            .await
            .with_context(|| format!("{what}: the socket closes"))?;
    }

    // A resume credential is no join token.
    let (socket, _offers) = Signal::connect(&url, REPLY_TIMEOUT).await?;
    let reply = socket
        .request(
            json!({"v": 1, "type": "join", "token": credential}),
            REPLY_TIMEOUT,
        )
        .await?;
    ensure!(support::is_error(&reply, "invalid_token"), "{reply}");

    // `v` is required as in `join`.
    let (socket, _offers) = Signal::connect(&url, REPLY_TIMEOUT).await?;
    let reply = socket
        .request(
            json!({"type": "resume", "token": credential}),
            REPLY_TIMEOUT,
        )
        .await?;
    ensure!(support::is_error(&reply, "unsupported_version"), "{reply}");

    // None of this touched the pupil, whose credential is still good (and then spent).
    let (_socket, joined) = resume(&url, &credential).await?;
    ensure!(
        joined.get("resumed") == Some(&json!(true))
            && participant_id(&joined) == Some(pupil.participant_id.as_str()),
        "{joined}"
    );
    let (_socket, reply) = resume(&url, &credential).await?;
    ensure!(support::is_error(&reply, "resume_used"), "{reply}");
    server.shutdown().await;
    Ok(())
}

fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ice_restart_gives_the_subscribe_connection_fresh_credentials_and_media_continues()
-> Result<()> {
    bounded(ice_restart()).await
}

async fn ice_restart() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher)).await?;
    let pupil = TestClient::connect(&url, &server.token("s-4", "Mori", Role::Student)).await?;
    let publisher = teacher
        .publish(&[Source::Microphone, Source::Camera])
        .await?;
    let audio = publisher.track_id(Source::Microphone)?;
    let video = publisher.track_id(Source::Camera)?;
    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
    pupil
        .subscriber
        .wait_count(&video, 20, CONNECT_TIMEOUT)
        .await?;
    let before = pupil.subscriber.offers_answered();
    let (offer, _) = pupil
        .subscriber
        .last_sdp()
        .context("an offer was applied")?;
    let old_ufrag = ice_ufrag(&offer).context("ufrag in the offer")?;

    pupil.send_json(&json!({"type": "ice_restart"}))?;
    support::wait::poll_for(
        REPLY_TIMEOUT,
        || "a new subscriber offer answered".to_owned(),
        async || (pupil.subscriber.offers_answered() > before).then_some(()),
    )
    .await?;
    let (offer, _) = pupil.subscriber.last_sdp().context("the new offer")?;
    let new_ufrag = ice_ufrag(&offer).context("ufrag in the new offer")?;
    ensure!(
        new_ufrag != old_ufrag,
        "fresh ICE credentials: {old_ufrag} → {new_ufrag}"
    );
    ensure!(
        pupil.subscriber.errors().is_empty(),
        "{:?}",
        pupil.subscriber.errors()
    );

    // Media continues over the restarted connection.
    for track in [&audio, &video] {
        let n = pupil.subscriber.received_count(track);
        pupil
            .subscriber
            .wait_count(track, n + 20, CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("{track} after the ICE restart"))?;
    }
    // Not joined: refused like any request before `join`.
    let (socket, _offers) = Signal::connect(&url, REPLY_TIMEOUT).await?;
    let reply = socket
        .request(json!({"type": "ice_restart"}), REPLY_TIMEOUT)
        .await?;
    ensure!(support::is_error(&reply, "not_joined"), "{reply}");
    pump.stop().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_media_path_cut_while_the_socket_lives_gets_an_ice_restart_from_the_server() -> Result<()>
{
    bounded(server_ice_restart()).await
}

/// The pupil's subscribe connection goes through a relay that is then cut in both directions,
/// the WebSocket staying up. The client never asks for anything: the server sees the path
/// quiet, sends an offer with fresh ICE credentials (answered by the client over the live
/// socket), and once the relay passes packets again, media flows over the restarted path.
async fn server_ice_restart() -> Result<()> {
    use support::relay::{Relay, Shaping};
    use tokio::time::Instant;
    let server = TestServer::start().await?;
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher)).await?;
    let relay = Relay::start(server.media_addr(), Shaping::NONE, Shaping::NONE).await?;
    let pupil = TestClient::connect_with(
        &url,
        &server.token("s-5", "Ueda", Role::Student),
        Some(relay.sdp_rewriter()),
    )
    .await?;
    let publisher = teacher
        .publish(&[Source::Microphone, Source::Camera])
        .await?;
    let video = publisher.track_id(Source::Camera)?;
    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
    pupil
        .subscriber
        .wait_count(&video, 20, CONNECT_TIMEOUT)
        .await?;
    ensure!(
        relay.stats().down.forwarded > 0,
        "the subscribe connection goes through the relay"
    );
    let before = pupil.subscriber.offers_answered();
    let (offer, _) = pupil.subscriber.last_sdp().context("an offer")?;
    let old_ufrag = ice_ufrag(&offer).context("ufrag in the offer")?;

    let cut = Shaping::NONE.loss(1.0);
    relay.set_down(cut);
    relay.set_up(cut);
    let cut_at = Instant::now();
    // The client goes silent: `core::silence` counts the path down after `MIN_SILENCE` (its
    // RTCP and keep-alives came far more often), checked once a second, and the first restart
    // follows `core::restart::FIRST_AFTER` later, also checked once a second. (str0m alone would
    // call the path quiet only after about 15 s.)
    let bound = classroom_sfu::core::silence::MIN_SILENCE
        + classroom_sfu::core::restart::FIRST_AFTER
        + std::time::Duration::from_secs(3);
    support::wait::poll_for(
        std::time::Duration::from_secs(30),
        || "an offer with fresh ICE credentials from the server".to_owned(),
        async || {
            let answered = pupil.subscriber.offers_answered() > before;
            let (offer, _) = pupil.subscriber.last_sdp()?;
            (answered && ice_ufrag(&offer)? != old_ufrag).then_some(())
        },
    )
    .await?;
    let restarted = cut_at.elapsed();
    println!(
        "server restarted ICE {} ms after the cut",
        restarted.as_millis()
    );
    ensure!(
        restarted <= bound,
        "the server restarted ICE only {} ms after the cut (at most {} ms)",
        restarted.as_millis(),
        bound.as_millis()
    );

    relay.set_down(Shaping::NONE);
    relay.set_up(Shaping::NONE);
    let back_at = Instant::now();
    let n = pupil.subscriber.received_count(&video);
    pupil
        .subscriber
        .wait_count(&video, n + 20, CONNECT_TIMEOUT)
        .await
        .context("video after the path came back")?;
    println!(
        "video flowing again {} ms after the path came back",
        back_at.elapsed().as_millis()
    );
    ensure!(
        pupil.subscriber.errors().is_empty(),
        "{:?}",
        pupil.subscriber.errors()
    );
    pump.stop().await?;
    server.shutdown().await;
    Ok(())
}
