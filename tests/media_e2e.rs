//! End-to-end media through the server, checked with an independent WebRTC stack (webrtc-rs).
//!
//! A publisher streams recognisable Opus and VP8 packets; subscribers must receive every payload
//! byte-identical and in order, each in its own SSRC/sequence space with the publisher's timing,
//! video starting at a keyframe. Keyframes are only sent when the server asks for one, so a late
//! subscriber can only start if the server requests a keyframe on its behalf.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::Role;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::checks::drain_and_verify;
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, REPLY_TIMEOUT, Source, TEST_TIMEOUT};
use support::{TestClient, TestServer};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// Checks a track description from the protocol (`track_published`, `publish_answer`).
fn check_track(track: &Value, participant_id: &str, source: Source) -> Result<()> {
    ensure!(
        track.get("participant_id").and_then(Value::as_str) == Some(participant_id),
        "track {track} should belong to {participant_id}"
    );
    ensure!(
        track.get("kind").and_then(Value::as_str) == Some(source.kind()),
        "track {track} should be of kind {}",
        source.kind()
    );
    ensure!(
        track.get("source").and_then(Value::as_str) == Some(source.as_str()),
        "track {track} should have source {}",
        source.as_str()
    );
    Ok(())
}

/// Waits until the pump has sent more than `count` keyframes; returns the newest.
async fn wait_new_keyframe(pump: &MediaPump, count: usize) -> Result<support::media::KeyframeSent> {
    support::wait::poll_for(
        Duration::from_secs(2),
        || format!("a keyframe after the first {count}"),
        async || pump.keyframes().get(count).cloned(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn teacher_media_reaches_every_student_intact() -> Result<()> {
    bounded(teacher_media_reaches_every_student_intact_inner()).await
}

async fn teacher_media_reaches_every_student_intact_inner() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();

    let teacher = TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher))
        .await
        .context("teacher joins")?;
    let mut students = Vec::new();
    for i in 1..=3 {
        let student = TestClient::connect(
            &url,
            &server.token(&format!("s-00{i}"), &format!("Student {i}"), Role::Student),
        )
        .await
        .with_context(|| format!("student {i} joins"))?;
        teacher
            .expect_participant_joined(&student.participant_id, REPLY_TIMEOUT)
            .await?;
        students.push(student);
    }

    let publisher = teacher
        .publish(&[Source::Microphone, Source::Camera])
        .await
        .context("teacher publishes")?;
    let audio_id = publisher.track_id(Source::Microphone)?;
    let video_id = publisher.track_id(Source::Camera)?;
    for (source, id) in [(Source::Microphone, &audio_id), (Source::Camera, &video_id)] {
        let answered = publisher
            .answer
            .get("tracks")
            .and_then(Value::as_array)
            .and_then(|tracks| {
                tracks
                    .iter()
                    .find(|t| t.get("track_id").and_then(Value::as_str) == Some(id.as_str()))
            })
            .context("publish_answer lists the track")?;
        check_track(answered, &teacher.participant_id, source)?;
        for student in &students {
            let event = student.expect_track_published(id, REPLY_TIMEOUT).await?;
            check_track(&event["track"], &teacher.participant_id, source)?;
        }
    }

    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());

    for (i, student) in students.iter().enumerate() {
        student
            .subscriber
            .wait_count(&audio_id, 25, CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("student {} receives audio", i + 1))?;
        student
            .subscriber
            .wait_count(&video_id, 20, CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("student {} receives video", i + 1))?;
    }

    // A late subscriber. From here on the publisher sends a keyframe only when asked to.
    let requests_before = publisher.keyframe_requests(Source::Camera);
    let late_join = Instant::now();
    let late = TestClient::connect(&url, &server.token("s-004", "Late", Role::Student))
        .await
        .context("late student joins")?;
    let listed = late.joined_track_ids();
    ensure!(
        listed.contains(&audio_id) && listed.contains(&video_id),
        "joined should list the teacher's tracks {audio_id} and {video_id}, listed {listed:?}"
    );
    late.subscriber
        .wait_count(&video_id, 20, CONNECT_TIMEOUT)
        .await
        .context("the late student receives video")?;
    late.subscriber
        .wait_count(&audio_id, 25, CONNECT_TIMEOUT)
        .await
        .context("the late student receives audio")?;
    let request_times = publisher.keyframe_request_times(Source::Camera);
    ensure!(
        request_times.len() > requests_before && request_times.iter().any(|t| *t >= late_join),
        "no keyframe request reached the publisher after the late join \
         ({requests_before} before, {} now)",
        request_times.len()
    );

    // A subscriber's own keyframe request reaches the publisher (repeated every 500 ms, as a
    // browser would, in case the server rate-limits requests), and the keyframe reaches it.
    let requests_before_pli = publisher.keyframe_requests(Source::Camera);
    let keyframes_before = pump.keyframes().len();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        students[0].subscriber.request_keyframe(&video_id).await?;
        let answered = publisher
            .wait_keyframe_requests(
                Source::Camera,
                requests_before_pli,
                Duration::from_millis(500),
            )
            .await;
        if answered.is_ok() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a subscriber's PLI did not reach the publisher within 5 s"
        );
    }
    let keyframe = wait_new_keyframe(&pump, keyframes_before).await?;
    let first_packet = publisher.sent(Source::Camera)[keyframe.sent_index]
        .payload
        .clone();
    students[0]
        .subscriber
        .wait_payload(&video_id, &first_packet, CONNECT_TIMEOUT)
        .await
        .context("the keyframe asked for reaches the subscriber")?;

    // Some steady state for everyone, then stop and drain.
    for student in students.iter().chain([&late]) {
        let now = student.subscriber.received_count(&audio_id);
        student
            .subscriber
            .wait_count(&audio_id, now + 25, CONNECT_TIMEOUT)
            .await?;
    }
    pump.stop().await?;

    let named: Vec<(String, &TestClient)> = students
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("student {}", i + 1), s))
        .chain([("late student".to_owned(), &late)])
        .collect();
    let named: Vec<(&str, &TestClient)> = named.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let verified = drain_and_verify(&publisher, Source::Camera, &named, DRAIN_TIMEOUT).await?;

    for v in &verified {
        println!(
            "{}: audio {} packets from sent #{} (ssrc {}), video {} packets from sent #{} (ssrc {})",
            v.name,
            v.audio.count,
            v.audio.first_sent_index,
            v.audio.ssrc,
            v.video.count,
            v.video.first_sent_index,
            v.video.ssrc
        );
    }
    println!(
        "keyframe requests at the publisher: {}; keyframes sent: {:?}",
        publisher.keyframe_requests(Source::Camera),
        pump.keyframes()
            .iter()
            .map(|k| (k.frame, k.requests_seen))
            .collect::<Vec<_>>()
    );

    // The late student's video starts with a keyframe that was made in answer to a request that
    // arrived after it joined — the only way a keyframe is sent after the first one.
    let late_video = &verified
        .iter()
        .find(|v| v.name == "late student")
        .context("late student verified")?
        .video;
    let keyframes = pump.keyframes();
    let keyframe = keyframes
        .iter()
        .find(|k| k.sent_index == late_video.first_sent_index)
        .with_context(|| {
            format!(
                "the late student's first video packet (sent index {}) is not the start of a \
                 keyframe the pump sent: {keyframes:?}",
                late_video.first_sent_index
            )
        })?;
    ensure!(
        keyframe.at >= late_join && keyframe.requests_seen > requests_before,
        "the late student's first keyframe (frame {}) was not made in answer to a request \
         after the late join",
        keyframe.frame
    );
    ensure!(
        publisher.stray_feedback().is_empty(),
        "RTCP feedback for SSRCs the publisher does not send: {:?}",
        publisher.stray_feedback()
    );

    // The teacher leaves: everyone learns the tracks and the participant are gone.
    teacher.leave().await.context("teacher leaves")?;
    for (name, student) in &named {
        for id in [&audio_id, &video_id] {
            student
                .expect_track_unpublished(id, REPLY_TIMEOUT)
                .await
                .with_context(|| format!("{name} is told the teacher's track is gone"))?;
        }
        student
            .expect_participant_left(&teacher.participant_id, REPLY_TIMEOUT)
            .await
            .with_context(|| format!("{name} is told the teacher left"))?;
        // The server renegotiates the tracks away: the newest offer no longer carries them.
        student
            .subscriber
            .wait_offered(
                REPLY_TIMEOUT,
                "an offer without the teacher's tracks",
                |offered| {
                    offered
                        .values()
                        .all(|t| t.track_id != audio_id && t.track_id != video_id)
                },
            )
            .await
            .with_context(|| format!("{name}'s subscribe connection drops the teacher's tracks"))?;
        ensure!(
            student.subscriber.errors().is_empty(),
            "{name}'s subscribe connection failed: {:?}",
            student.subscriber.errors()
        );
    }

    for student in students.iter().chain([&late]) {
        student.close().await;
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pupil_allowed_to_publish_reaches_teacher_and_classmate() -> Result<()> {
    bounded(pupil_allowed_to_publish_reaches_teacher_and_classmate_inner()).await
}

async fn pupil_allowed_to_publish_reaches_teacher_and_classmate_inner() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();

    let teacher = TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher))
        .await
        .context("teacher joins")?;
    let pupil = TestClient::connect(&url, &server.token("s-010", "Sato", Role::Student))
        .await
        .context("pupil joins")?;
    let classmate = TestClient::connect(&url, &server.token("s-011", "Ito", Role::Student))
        .await
        .context("classmate joins")?;

    let permissions: Vec<&str> = pupil
        .joined
        .get("permissions")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        permissions.contains(&"publish_audio") && permissions.contains(&"publish_video"),
        "a student may publish audio and video by default; joined says {permissions:?}"
    );

    // Pupils are heard and seen by the class only with the floor (docs/PROTOCOL.md, "Lesson"):
    // the teacher gives it, with the camera.
    teacher.send_json(&serde_json::json!({"type": "grant_floor",
        "participant_id": pupil.participant_id, "camera": true}))?;
    pupil
        .signal
        .expect_event(
            |e| support::is_type(e, "lesson_state") && e["you"]["camera_to_class"] == true,
            REPLY_TIMEOUT,
        )
        .await
        .context("the pupil holds the floor")?;
    let publisher = pupil
        .publish(&[Source::Microphone, Source::Camera])
        .await
        .context("pupil publishes")?;
    let audio_id = publisher.track_id(Source::Microphone)?;
    let video_id = publisher.track_id(Source::Camera)?;
    for receiver in [&teacher, &classmate] {
        for (source, id) in [(Source::Microphone, &audio_id), (Source::Camera, &video_id)] {
            let event = receiver.expect_track_published(id, REPLY_TIMEOUT).await?;
            check_track(&event["track"], &pupil.participant_id, source)?;
        }
    }

    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
    for receiver in [&teacher, &classmate] {
        receiver
            .subscriber
            .wait_count(&audio_id, 50, CONNECT_TIMEOUT)
            .await?;
        receiver
            .subscriber
            .wait_count(&video_id, 40, CONNECT_TIMEOUT)
            .await?;
    }
    pump.stop().await?;
    drain_and_verify(
        &publisher,
        Source::Camera,
        &[("teacher", &teacher), ("classmate", &classmate)],
        DRAIN_TIMEOUT,
    )
    .await?;

    // A publisher is not sent its own tracks.
    ensure!(
        pupil.subscriber.received_summary().is_empty(),
        "the pupil received media although nobody else publishes: {:?}",
        pupil.subscriber.received_summary()
    );

    for client in [&teacher, &pupil, &classmate] {
        ensure!(
            client.subscriber.errors().is_empty(),
            "subscribe connection failed: {:?}",
            client.subscriber.errors()
        );
    }

    // Shutting down says goodbye to everyone, then closes the sockets.
    server.shutdown().await;
    for client in [&teacher, &pupil, &classmate] {
        let goodbye = client.expect_type("goodbye", REPLY_TIMEOUT).await?;
        ensure!(
            goodbye.get("reason").and_then(Value::as_str) == Some("server_shutdown"),
            "goodbye should give the reason server_shutdown: {goodbye}"
        );
        client
            .signal
            .wait_closed(REPLY_TIMEOUT)
            .await
            .context("the socket is closed after goodbye")?;
        client.close_media().await;
    }
    Ok(())
}

/// The checks above are only as good as the checker: it must reject what a broken server does.
#[test]
fn the_stream_check_rejects_what_a_broken_server_would_do() -> Result<()> {
    use support::media::{opus_payload, vp8_frame};
    use support::{RecvPacket, SentPacket, is_vp8_keyframe_start, verify_stream};

    let mut sent = Vec::new();
    let mut sequence_number = u16::MAX - 3; // crosses the wrap
    for frame in 0..4u32 {
        let payloads = vp8_frame(Source::Camera, frame, frame % 2 == 0, 3, 200);
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            sent.push(SentPacket {
                ssrc: 1111,
                sequence_number,
                timestamp: (u32::MAX - 3000).wrapping_add(frame * 3000),
                marker: i + 1 == count,
                payload,
                at: Instant::now(),
            });
            sequence_number = sequence_number.wrapping_add(1);
        }
    }
    // What a correct SFU forwards: its own SSRC, sequence and timestamp base.
    let forward = |packets: &[SentPacket]| -> Vec<RecvPacket> {
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| RecvPacket {
                ssrc: 2222,
                sequence_number: 40_000u16.wrapping_add(i as u16),
                timestamp: p
                    .timestamp
                    .wrapping_sub(sent[0].timestamp)
                    .wrapping_add(777),
                marker: p.marker,
                payload_type: 96,
                payload: p.payload.clone(),
                at: Instant::now(),
            })
            .collect()
    };
    let good = forward(&sent);
    verify_stream("good", &sent, &good, true, true)?;
    // Starting at the second keyframe is fine too.
    let from_second_keyframe = forward(&sent[6..]);
    let mut renumbered = from_second_keyframe.clone();
    for (i, p) in renumbered.iter_mut().enumerate() {
        p.sequence_number = 5u16.wrapping_add(i as u16);
    }
    let check = verify_stream("late", &sent, &renumbered, true, true)?;
    ensure!(check.first_sent_index == 6);

    let mut broken: Vec<(&str, Vec<RecvPacket>, bool)> = Vec::new();
    let mut lost = good.clone();
    lost.remove(4);
    broken.push(("a lost packet", lost, true));
    let mut reordered = good.clone();
    reordered.swap(3, 4);
    broken.push(("reordered packets", reordered, true));
    let mut altered = good.clone();
    let mut bytes = altered[5].payload.to_vec();
    bytes[20] ^= 0xff;
    altered[5].payload = bytes.into();
    broken.push(("an altered payload", altered, true));
    let mut gap = good.clone();
    for p in gap.iter_mut().skip(7) {
        p.sequence_number = p.sequence_number.wrapping_add(1);
    }
    broken.push(("a sequence gap", gap, true));
    let mut retimed = good.clone();
    for p in retimed.iter_mut().skip(9) {
        p.timestamp = p.timestamp.wrapping_add(90);
    }
    broken.push(("shifted timestamps", retimed, true));
    let mut marker = good.clone();
    marker[2].marker = false;
    broken.push(("a lost marker bit", marker, true));
    let mut ssrc = good.clone();
    ssrc[8].ssrc = 3333;
    broken.push(("an SSRC change", ssrc, true));
    broken.push(("a start on a delta frame", forward(&sent[3..]), true));
    broken.push(("a start mid-frame", forward(&sent[1..]), true));
    broken.push(("a missing tail", forward(&sent[..10]), true));
    broken.push(("nothing", Vec::new(), true));
    for (what, received, through_end) in broken {
        ensure!(
            verify_stream(what, &sent, &received, true, through_end).is_err(),
            "the stream check accepted {what}"
        );
    }

    ensure!(is_vp8_keyframe_start(&sent[0].payload));
    ensure!(
        !is_vp8_keyframe_start(&sent[1].payload),
        "a continuation packet"
    );
    ensure!(!is_vp8_keyframe_start(&sent[3].payload), "a delta frame");
    // With the extended descriptor (X=1, I=1, 15-bit picture id) in front of a keyframe header.
    ensure!(is_vp8_keyframe_start(&[
        0x90, 0x80, 0x81, 0x23, 0x50, 0x09, 0x00, 0x9d, 0x01, 0x2a
    ]));
    ensure!(!is_vp8_keyframe_start(&opus_payload(0, 50)));
    Ok(())
}
