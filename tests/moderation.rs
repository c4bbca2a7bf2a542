//! The lesson's rules end to end (docs/PROTOCOL.md, "Lesson"): real sockets, the server in
//! process, webrtc-rs clients counting the RTP packets each classmate receives.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::Role;
use serde_json::json;
use std::time::{Duration, Instant};
use support::lesson::{act, bounded, class, lists, received_after, refused, state};
use support::signal::is_type;
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, REPLY_TIMEOUT, Source};
use support::{TestClient, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pupils_teacher_actions_and_chat_limits_are_refused_with_documented_errors() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let url = server.ws_url();
        let (teacher, pupils) = class(&server, &["Sato", "Ito"]).await?;
        let [pupil, classmate] =
            <[TestClient; 2]>::try_from(pupils).map_err(|_| anyhow::anyhow!("two pupils"))?;
        let other = classmate.participant_id.clone();

        // Right after joined: the lesson's defaults and the chat so far.
        let first = state(&pupil, |_| true).await?;
        ensure!(
            first["speaking"] == "by_permission" && first["cameras"] == "teacher_only",
            "{first}"
        );
        ensure!(first["you"]["may_speak"] == false, "{first}");
        pupil
            .signal
            .expect_type("chat_history", REPLY_TIMEOUT)
            .await?;

        for action in [
            json!({"type":"lower_hand","participant_id":other}),
            json!({"type":"grant_floor","participant_id":other,"camera":true}),
            json!({"type":"revoke_floor","participant_id":other}),
            json!({"type":"mute","participant_id":other}),
            json!({"type":"mute_all"}),
            json!({"type":"unmute","participant_id":other}),
            json!({"type":"set_lesson","speaking":"open"}),
            json!({"type":"spotlight","participant_id":other}),
            json!({"type":"delete_chat","message_id":"m1"}),
            json!({"type":"quick_check","question":"q","options":["a","b"]}),
            json!({"type":"close_check"}),
        ] {
            let reply = refused(&pupil, action.clone()).await?;
            ensure!(
                reply["code"] == "permission_denied" && reply["permission"] == "teacher",
                "{action}: {reply}"
            );
        }
        // Under by_permission a pupil cannot unmute itself.
        let reply = refused(&pupil, json!({"type":"unmute"})).await?;
        ensure!(
            reply["code"] == "permission_denied" && reply["permission"] == "teacher",
            "{reply}"
        );
        // Still nobody holds the floor, nobody is muted, the rules are the defaults.
        act(&teacher, json!({"type":"raise_hand"})).await?;
        let s = state(&classmate, |s| {
            s["hands"].as_array().is_some_and(|h| h.len() == 1)
        })
        .await?;
        ensure!(
            s["floor"] == json!([]) && s["muted"] == json!([]) && s["speaking"] == "by_permission",
            "{s}"
        );

        // Chat: too long, empty, closed to the class, rate.
        let reply = refused(
            &pupil,
            json!({"type":"chat","to":"all","text":"あ".repeat(501)}),
        )
        .await?;
        ensure!(reply["code"] == "chat_too_long", "{reply}");
        let reply = refused(&pupil, json!({"type":"chat","to":"all","text":"  "})).await?;
        ensure!(reply["code"] == "bad_request", "{reply}");
        act(
            &pupil,
            json!({"type":"chat","to":"all","text":"<b>こんにちは</b>"}),
        )
        .await?;
        let got = classmate.signal.expect_type("chat", REPLY_TIMEOUT).await?;
        ensure!(
            got["message"]["text"] == "<b>こんにちは</b>"
                && got["message"]["from"] == json!(pupil.participant_id),
            "{got}"
        );
        act(&teacher, json!({"type":"set_lesson","chat":"teacher_only"})).await?;
        let reply = refused(&pupil, json!({"type":"chat","to":"all","text":"hi"})).await?;
        ensure!(reply["code"] == "chat_closed", "{reply}");
        act(&pupil, json!({"type":"chat","to":"teacher","text":"質問"})).await?;
        let question = teacher
            .signal
            .expect_event(
                |e| is_type(e, "chat") && e["message"]["to"] == "teacher",
                REPLY_TIMEOUT,
            )
            .await?;
        act(&teacher, json!({"type":"set_lesson","chat":"open"})).await?;
        for i in 0..3 {
            act(
                &pupil,
                json!({"type":"chat","to":"all","text":format!("{i}")}),
            )
            .await?;
        }
        let reply = refused(
            &pupil,
            json!({"type":"chat","to":"all","text":"one too many"}),
        )
        .await?;
        ensure!(reply["code"] == "rate_limited", "{reply}");
        ensure!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("try again in")),
            "{reply}"
        );

        // The private question never reached the classmate; its deletion reaches the pupil.
        ensure!(
            !classmate
                .signal
                .history()
                .iter()
                .any(|e| is_type(e, "chat") && e["message"]["to"] == "teacher"),
            "a question to the teacher reached a classmate"
        );
        let message_id = question["message"]["message_id"].clone();
        act(
            &teacher,
            json!({"type":"delete_chat","message_id":message_id}),
        )
        .await?;
        let deleted = pupil
            .signal
            .expect_type("chat_deleted", REPLY_TIMEOUT)
            .await?;
        ensure!(deleted["message_id"] == message_id, "{deleted}");
        let reply = refused(
            &teacher,
            json!({"type":"delete_chat","message_id":message_id}),
        )
        .await?;
        ensure!(reply["code"] == "not_found", "{reply}");

        // Quick check: the tally goes to the teacher only.
        act(
            &teacher,
            json!({"type":"quick_check","question":"わかった？","options":["わかった","もう一度"]}),
        )
        .await?;
        let s = state(&pupil, |s| !s["quick_check"].is_null()).await?;
        let check_id = s["quick_check"]["check_id"].clone();
        act(
            &pupil,
            json!({"type":"answer_check","check_id":check_id,"option":1}),
        )
        .await?;
        let t = state(&teacher, |s| s["quick_check"]["answered"] == 1).await?;
        ensure!(t["quick_check"]["tally"] == json!([0, 1]), "{t}");
        ensure!(
            !pupil
                .signal
                .history()
                .iter()
                .chain(classmate.signal.history().iter())
                .any(|e| e["quick_check"].get("tally").is_some()),
            "a pupil received the tally"
        );

        // State is kept by identity: a raised hand survives a reconnect under a new id.
        act(&classmate, json!({"type":"raise_hand"})).await?;
        state(&teacher, |s| lists(s, "hands", &other)).await?;
        classmate.leave().await?;
        state(&teacher, |s| !lists(s, "hands", &other)).await?;
        let back = TestClient::connect(&url, &server.token("s-2", "Ito", Role::Student)).await?;
        let s = state(&back, |_| true).await?;
        ensure!(
            s["you"]["hand"] == true && lists(&s, "hands", &back.participant_id),
            "{s}"
        );

        // The server counted it all.
        let metrics = reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
            .await?
            .text()
            .await?;
        for needle in [
            "classroom_lesson_hands_raised_total 2",
            "classroom_lesson_chat_messages_total{to=\"teacher\"} 1",
            "classroom_lesson_quick_checks_total 1",
            "classroom_signaling_errors_total{code=\"chat_closed\"} 1",
        ] {
            ensure!(metrics.contains(needle), "{needle} not in\n{metrics}");
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Under `by_permission` a pupil's microphone reaches no classmate until the floor is granted,
/// reaches all of them while it is held, and none within 200 ms of a revoke or of `mute_all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_floor_decides_whose_audio_reaches_the_class() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let (teacher, mut classmates) = class(&server, &["Sato", "C", "C"]).await?;
        let pupil = classmates.remove(0);
        // The teacher's voice proves each classmate's subscribe path works while the pupil's is
        // withheld.
        let teacher_pub = teacher.publish(&[Source::Microphone]).await?;
        let teacher_audio = teacher_pub.track_id(Source::Microphone)?;
        let _teacher_pump = MediaPump::start(
            teacher_pub.clone(),
            PumpConfig {
                video: None,
                ..PumpConfig::default()
            },
        );
        let publisher = pupil.publish(&[Source::Microphone]).await?;
        let audio = publisher.track_id(Source::Microphone)?;
        let pump = MediaPump::start(
            publisher.clone(),
            PumpConfig {
                video: None,
                ..PumpConfig::default()
            },
        );
        for c in &classmates {
            c.expect_track_published(&audio, REPLY_TIMEOUT).await?;
            c.subscriber
                .wait_count(&teacher_audio, 50, CONNECT_TIMEOUT)
                .await?;
        }
        let sent_before = publisher.sent(Source::Microphone).len();
        for c in &classmates {
            let now = c.subscriber.received_count(&teacher_audio);
            c.subscriber
                .wait_count(&teacher_audio, now + 25, CONNECT_TIMEOUT)
                .await?;
        }
        ensure!(
            publisher.sent(Source::Microphone).len() >= sent_before + 20,
            "the pupil keeps sending"
        );
        for (i, c) in classmates.iter().enumerate() {
            let n = c.subscriber.received_count(&audio);
            ensure!(
                n == 0,
                "classmate {i} received {n} packets of a pupil without the floor"
            );
        }
        ensure!(
            teacher.subscriber.received_count(&audio) == 0,
            "by_permission withholds from teachers too"
        );

        // Grant: every classmate hears the pupil.
        act(
            &teacher,
            json!({"type":"grant_floor","participant_id":pupil.participant_id}),
        )
        .await?;
        let s = state(&pupil, |s| s["you"]["may_speak"] == true).await?;
        ensure!(lists(&s, "floor", &pupil.participant_id), "{s}");
        for c in classmates.iter().chain([&teacher]) {
            c.subscriber
                .wait_count(&audio, 25, CONNECT_TIMEOUT)
                .await
                .context("the pupil is heard with the floor")?;
        }

        // Revoke: nothing arrives later than 200 ms after the revoke is acknowledged.
        act(
            &teacher,
            json!({"type":"revoke_floor","participant_id":pupil.participant_id}),
        )
        .await?;
        state(&teacher, |s| s["floor"] == json!([])).await?;
        let acknowledged = Instant::now();
        let sent_at_revoke = publisher.sent(Source::Microphone).len();
        for c in &classmates {
            let now = c.subscriber.received_count(&teacher_audio);
            c.subscriber
                .wait_count(&teacher_audio, now + 50, CONNECT_TIMEOUT)
                .await?;
        }
        ensure!(
            publisher.sent(Source::Microphone).len() >= sent_at_revoke + 40,
            "the pupil keeps sending after the revoke"
        );
        let cutoff = acknowledged + Duration::from_millis(200);
        for (i, c) in classmates.iter().enumerate() {
            let late = received_after(c, &audio, cutoff);
            ensure!(
                late == 0,
                "classmate {i} received {late} packets more than 200 ms after the revoke"
            );
        }

        // Open speaking, then mute_all: withheld again, and the pupil cannot unmute itself
        // once the lesson is back to by_permission.
        act(&teacher, json!({"type":"set_lesson","speaking":"open"})).await?;
        for c in &classmates {
            let now = c.subscriber.received_count(&audio);
            c.subscriber
                .wait_count(&audio, now + 25, CONNECT_TIMEOUT)
                .await
                .context("open speaking")?;
        }
        act(&teacher, json!({"type":"mute_all"})).await?;
        let s = state(&pupil, |s| s["you"]["muted"] == true).await?;
        ensure!(s["you"]["may_speak"] == false, "{s}");
        let acknowledged = Instant::now();
        for c in &classmates {
            let now = c.subscriber.received_count(&teacher_audio);
            c.subscriber
                .wait_count(&teacher_audio, now + 50, CONNECT_TIMEOUT)
                .await?;
        }
        let cutoff = acknowledged + Duration::from_millis(200);
        for (i, c) in classmates.iter().enumerate() {
            let late = received_after(c, &audio, cutoff);
            ensure!(
                late == 0,
                "classmate {i} received {late} packets after mute_all"
            );
        }
        act(
            &teacher,
            json!({"type":"set_lesson","speaking":"by_permission"}),
        )
        .await?;
        let reply = refused(&pupil, json!({"type":"unmute"})).await?;
        ensure!(reply["code"] == "permission_denied", "{reply}");
        pump.stop().await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Pupils' cameras reach the teacher only by default; a floor with camera or the spotlight shows
/// one to the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pupils_cameras_reach_the_class_only_when_the_teacher_shows_them() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let (teacher, pupils) = class(&server, &["Sato", "Ito"]).await?;
        let [pupil, classmate] =
            <[TestClient; 2]>::try_from(pupils).map_err(|_| anyhow::anyhow!("two pupils"))?;
        let publisher = pupil.publish(&[Source::Camera]).await?;
        let video = publisher.track_id(Source::Camera)?;
        let pump = MediaPump::start(
            publisher.clone(),
            PumpConfig {
                audio: false,
                ..PumpConfig::default()
            },
        );
        teacher
            .subscriber
            .wait_count(&video, 30, CONNECT_TIMEOUT)
            .await
            .context("the teacher sees every camera")?;
        let seen = teacher.subscriber.received_count(&video);
        teacher
            .subscriber
            .wait_count(&video, seen + 30, CONNECT_TIMEOUT)
            .await?;
        ensure!(
            classmate.subscriber.received_count(&video) == 0,
            "a pupil's camera reached a classmate by default"
        );
        act(
            &teacher,
            json!({"type":"spotlight","participant_id":pupil.participant_id}),
        )
        .await?;
        classmate
            .subscriber
            .wait_count(&video, 20, CONNECT_TIMEOUT)
            .await
            .context("the spotlight shows the camera")?;
        act(&teacher, json!({"type":"spotlight","participant_id":null})).await?;
        state(&teacher, |s| s["spotlight"].is_null()).await?;
        let off = Instant::now();
        let seen = teacher.subscriber.received_count(&video);
        teacher
            .subscriber
            .wait_count(&video, seen + 30, CONNECT_TIMEOUT)
            .await?;
        let late = received_after(&classmate, &video, off + Duration::from_millis(200));
        ensure!(late == 0, "{late} video packets after the spotlight ended");
        pump.stop().await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}
