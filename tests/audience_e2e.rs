//! Track audiences in the media plane (issue 12), end to end with webrtc-rs clients: a pupil's
//! microphone and camera go only where the lesson's rules send them, whatever its client sends.
//!
//! The rules themselves live in signaling; here the test sets each audience on the media plane
//! directly (`ServerHandle::set_track_audience`, which returns once the media thread applied
//! it), so every packet sent afterwards is judged by it.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom_sfu::Audience;
use classroom_signaling::token::Role;
use std::time::{Duration, Instant};
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, RecvPacket, Source, TEST_TIMEOUT};
use support::{TestClient, TestServer, is_vp8_keyframe_start};

/// After an audience excludes a subscriber, packets already on their way may still land; none
/// may arrive later than this (the bound for a revoked floor).
const SETTLE: Duration = Duration::from_millis(200);
/// Video packets the teacher receives per second (30 frames of 2–3 packets).
const VIDEO_PACKETS_PER_SEC: usize = 60;

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// Waits until `client` has received `more` further packets of `track` (time passes at the
/// pace of the publisher's media, without sleeping).
async fn wait_more(client: &TestClient, track: &str, more: usize) -> Result<()> {
    let now = client.subscriber.received_count(track);
    client
        .subscriber
        .wait_count(track, now + more, CONNECT_TIMEOUT)
        .await?;
    Ok(())
}

/// Packets of `track` that arrived after `t`.
fn after(client: &TestClient, track: &str, t: Instant) -> Vec<RecvPacket> {
    client
        .subscriber
        .received(track)
        .into_iter()
        .filter(|p| p.at > t)
        .collect()
}

/// The packets are one gapless run of sequence numbers.
fn ensure_contiguous(packets: &[RecvPacket], what: &str) -> Result<()> {
    for pair in packets.windows(2) {
        ensure!(
            pair[1].sequence_number == pair[0].sequence_number.wrapping_add(1),
            "{what}: sequence {} follows {}",
            pair[1].sequence_number,
            pair[0].sequence_number
        );
    }
    Ok(())
}

async fn withheld_total(server: &TestServer) -> Result<u64> {
    let metrics = reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
        .await?
        .text()
        .await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("classroom_media_rtp_withheld_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("/metrics has no classroom_media_rtp_withheld_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audiences_decide_who_receives_a_pupils_media() -> Result<()> {
    bounded(audiences_inner()).await
}

async fn audiences_inner() -> Result<()> {
    let server = TestServer::start().await?;
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher))
        .await
        .context("teacher joins")?;
    let classmate = TestClient::connect(&url, &server.token("s-002", "Suzuki", Role::Student))
        .await
        .context("classmate joins")?;
    let pupil = TestClient::connect(&url, &server.token("s-001", "Sato", Role::Student))
        .await
        .context("pupil joins")?;
    let publisher = pupil
        .publish(&[Source::Microphone, Source::Camera])
        .await
        .context("pupil publishes")?;
    let audio = publisher.track_id(Source::Microphone)?;
    let video = publisher.track_id(Source::Camera)?;

    // A pupil without the floor, cameras to the teacher only: before the first packet.
    server
        .handle
        .set_track_audience(&audio, Audience::Nobody)
        .await?;
    server
        .handle
        .set_track_audience(&video, Audience::Teachers)
        .await?;
    let pump = MediaPump::start(publisher.clone(), PumpConfig::default());

    // The teacher sees the pupil from a keyframe on; nobody hears it.
    teacher
        .subscriber
        .wait_count(&video, 20, CONNECT_TIMEOUT)
        .await
        .context("the teacher receives the pupil's camera")?;
    let first = &teacher.subscriber.received(&video)[0];
    ensure!(
        is_vp8_keyframe_start(&first.payload),
        "the teacher's first video packet is not a keyframe"
    );
    wait_more(&teacher, &video, VIDEO_PACKETS_PER_SEC).await?;
    ensure!(
        teacher.subscriber.received_count(&audio) == 0,
        "the teacher heard a withheld microphone"
    );
    let got: usize = classmate.subscriber.received_summary().values().sum();
    ensure!(
        got == 0,
        "the classmate received {got} packets of withheld tracks: {:?}",
        classmate.subscriber.received_summary()
    );

    // The floor: everyone hears the pupil, at once.
    let granted = Instant::now();
    server
        .handle
        .set_track_audience(&audio, Audience::Everyone)
        .await?;
    for (name, client) in [("classmate", &classmate), ("teacher", &teacher)] {
        client
            .subscriber
            .wait_count(&audio, 25, CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("the {name} hears the pupil after the grant"))?;
        let first = client.subscriber.received(&audio)[0].at;
        println!(
            "{name}: first audio {:?} after the grant",
            first.saturating_duration_since(granted)
        );
        ensure!(
            first.saturating_duration_since(granted) < Duration::from_millis(500),
            "the {name} heard the pupil only {:?} after the grant",
            first.saturating_duration_since(granted)
        );
    }
    ensure!(
        classmate.subscriber.received_count(&video) == 0,
        "the classmate saw a camera shown to teachers only"
    );

    // The floor taken back: nothing more reaches anyone, although the client keeps sending.
    let before_revoke = classmate.subscriber.received(&audio);
    let revoked = Instant::now();
    server
        .handle
        .set_track_audience(&audio, Audience::Nobody)
        .await?;
    wait_more(&teacher, &video, VIDEO_PACKETS_PER_SEC).await?;
    for (name, client) in [("classmate", &classmate), ("teacher", &teacher)] {
        let late = after(client, &audio, revoked + SETTLE);
        ensure!(
            late.is_empty(),
            "the {name} received {} audio packets more than {SETTLE:?} after the revoke",
            late.len()
        );
    }

    // The floor again: the stream goes on with the next sequence number (the receiver sees a
    // pause, not loss), and the timestamp moved on by the time that passed.
    let last = classmate
        .subscriber
        .received(&audio)
        .last()
        .cloned()
        .context("the classmate had audio")?;
    ensure!(
        before_revoke.len() <= classmate.subscriber.received_count(&audio),
        "audio went missing"
    );
    let regranted = Instant::now();
    server
        .handle
        .set_track_audience(&audio, Audience::Everyone)
        .await?;
    wait_more(&classmate, &audio, 25).await?;
    let resumed = after(&classmate, &audio, regranted);
    let first = resumed.first().context("audio after the second grant")?;
    ensure!(
        first.sequence_number == last.sequence_number.wrapping_add(1),
        "audio resumed at sequence {} after {}: a gap the receiver takes for loss",
        first.sequence_number,
        last.sequence_number
    );
    let ticks = first.timestamp.wrapping_sub(last.timestamp);
    let elapsed = first.at.saturating_duration_since(last.at).as_secs_f64();
    let expected = elapsed * 48_000.0;
    println!(
        "audio resumed: seq {} -> {}, timestamp +{ticks} over {elapsed:.3} s",
        last.sequence_number, first.sequence_number
    );
    ensure!(
        (f64::from(ticks) - expected).abs() < 0.15 * 48_000.0,
        "the timestamp moved {ticks} ticks over {elapsed:.3} s (expected about {expected:.0})"
    );
    ensure_contiguous(&resumed, "resumed audio")?;

    // The camera shown to the class: the classmate's picture starts at a keyframe the
    // publisher was asked for.
    let requests_before = publisher.keyframe_requests(Source::Camera);
    // What the classmate was told while the camera was withheld from it.
    let mut told_while_withheld = classmate.signal.history();
    let shown = Instant::now();
    server
        .handle
        .set_track_audience(&video, Audience::Everyone)
        .await?;
    classmate
        .subscriber
        .wait_count(&video, 20, CONNECT_TIMEOUT)
        .await
        .context("the classmate sees the pupil")?;
    let first = &classmate.subscriber.received(&video)[0];
    ensure!(
        is_vp8_keyframe_start(&first.payload),
        "the classmate's picture starts on a delta frame"
    );
    ensure!(
        publisher.keyframe_requests(Source::Camera) > requests_before
            && publisher
                .keyframe_request_times(Source::Camera)
                .iter()
                .any(|t| *t >= shown),
        "no keyframe was asked of the publisher for the classmate"
    );

    // Back to teachers only, and to the class again: the stream continues gaplessly at a
    // keyframe.
    let told_before_hiding = classmate.signal.history().len();
    let hidden = Instant::now();
    server
        .handle
        .set_track_audience(&video, Audience::Teachers)
        .await?;
    wait_more(&teacher, &video, VIDEO_PACKETS_PER_SEC).await?;
    let late = after(&classmate, &video, hidden + SETTLE);
    ensure!(
        late.is_empty(),
        "the classmate received {} video packets more than {SETTLE:?} after it was hidden",
        late.len()
    );
    let last = classmate
        .subscriber
        .received(&video)
        .last()
        .cloned()
        .context("the classmate had video")?;
    told_while_withheld.extend(
        classmate
            .signal
            .history()
            .into_iter()
            .skip(told_before_hiding),
    );
    let reshown = Instant::now();
    server
        .handle
        .set_track_audience(&video, Audience::Everyone)
        .await?;
    wait_more(&classmate, &video, 20).await?;
    let resumed = after(&classmate, &video, reshown);
    let first = resumed.first().context("video after it was shown again")?;
    ensure!(
        is_vp8_keyframe_start(&first.payload),
        "the picture resumed on a delta frame"
    );
    ensure!(
        first.sequence_number == last.sequence_number.wrapping_add(1),
        "video resumed at sequence {} after {}",
        first.sequence_number,
        last.sequence_number
    );
    ensure_contiguous(&resumed, "resumed video")?;

    // Withholding is not a weak network: while withheld, the classmate was never told its video
    // paused. (Once shown, a link that carried only audio so far may well start paused until
    // the estimate grows: that report is true.)
    let paused: Vec<_> = told_while_withheld
        .into_iter()
        .filter(|e| {
            support::is_type(e, "track_quality")
                && e.get("paused").and_then(|p| p.as_bool()) == Some(true)
        })
        .collect();
    ensure!(paused.is_empty(), "misleading pause reports: {paused:?}");

    let withheld = support::wait::poll_for(
        Duration::from_secs(3),
        || "classroom_media_rtp_withheld_total above 0".to_owned(),
        async || withheld_total(&server).await.ok().filter(|n| *n > 0),
    )
    .await?;
    println!("classroom_media_rtp_withheld_total {withheld}");

    pump.stop().await?;
    server.shutdown().await;
    Ok(())
}
