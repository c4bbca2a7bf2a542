//! Active speaker and last-N end to end: webrtc-rs pupils publish camera and microphone, and
//! "speak" by the RFC 6464 audio level their packets carry. With cameras shown to the class and
//! open speaking, every client hears who speaks (`active_speakers`) within a second, and each
//! pupil receives the cameras of the `last_n` most recent pupil speakers only: when a new pupil
//! speaks, the one who spoke longest ago stops reaching classmates.

use crate::support;

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::lesson::{act, bounded, class, received_after};
use support::publisher::{SILENT, SPEAKING};
use support::signal::is_type;
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, Source, TestClient, TestServer};

const LAST_N: u8 = 2;
/// How soon after a pupil starts speaking every client must be told.
const SPEAKER_NOTICE: Duration = Duration::from_secs(1);
/// How long after the change is known a dropped camera may still have packets in flight.
const STOP_GRACE: Duration = Duration::from_millis(300);
/// A pause longer than this in one track's packets ends a run of reception (video is ~30 fps).
const RUN_GAP: Duration = Duration::from_millis(250);

/// ~30 packets a second of 200 bytes (~50 kbit/s) per camera: what is tested is who receives
/// which camera, so every allowed camera fits the first bandwidth estimate of a subscriber.
fn small_video() -> PumpConfig {
    PumpConfig {
        video_packet_size: 200,
        keyframe_packets: 2,
        delta_packets: 1,
        ..PumpConfig::default()
    }
}

fn speakers_of(event: &Value) -> Vec<String> {
    event["speakers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for an `active_speakers` on `client` for which `pred` holds of its `speakers`.
async fn speakers(
    client: &TestClient,
    pred: impl Fn(&[String]) -> bool,
    timeout: Duration,
) -> Result<Value> {
    client
        .signal
        .expect_event(
            |e| is_type(e, "active_speakers") && pred(&speakers_of(e)),
            timeout,
        )
        .await
}

/// The most pupils' cameras `client` received at the same time: each camera's packets are cut
/// into runs at pauses longer than [`RUN_GAP`], and the runs are swept in time order.
fn most_at_once(client: &TestClient, cameras: &[String]) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for track in cameras {
        let packets = client.subscriber.received(track);
        let mut times = packets.iter().map(|p| p.at);
        let Some(first) = times.next() else { continue };
        let (mut start, mut last) = (first, first);
        for t in times {
            if t.duration_since(last) > RUN_GAP {
                edges.push((start, 1));
                edges.push((last, -1));
                start = t;
            }
            last = t;
        }
        edges.push((start, 1));
        edges.push((last, -1));
    }
    // At equal instants an end comes before a start: a run that ends as another begins does
    // not overlap it.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pupils_see_the_cameras_of_the_last_n_speakers() -> Result<()> {
    bounded(async {
        let mut config = classroom::server::Config::for_tests();
        config.lesson.last_n = LAST_N;
        let server = TestServer::start_with(config).await?;
        let (teacher, pupils) = class(&server, &["Sato", "Ito", "Kato", "Mori"]).await?;
        act(
            &teacher,
            json!({"type":"set_lesson","speaking":"open","cameras":"class"}),
        )
        .await?;

        let mut publishers = Vec::new();
        let mut pumps = Vec::new();
        for p in &pupils {
            let publisher = p.publish(&[Source::Camera, Source::Microphone]).await?;
            publisher.set_audio_level(Source::Microphone, SILENT)?;
            pumps.push(MediaPump::start(publisher.clone(), small_video()));
            publishers.push(publisher);
        }
        let cameras: Vec<String> = publishers
            .iter()
            .map(|p| p.track_id(Source::Camera))
            .collect::<Result<_>>()?;
        let pids: Vec<String> = pupils.iter().map(|p| p.participant_id.clone()).collect();
        let name: HashMap<&str, usize> = pids
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();

        // Nobody has spoken: the teacher sees every camera, no pupil sees a classmate's.
        for camera in &cameras {
            teacher
                .subscriber
                .wait_count(camera, 60, CONNECT_TIMEOUT)
                .await
                .context("the teacher sees every camera")?;
        }
        for (i, p) in pupils.iter().enumerate() {
            for (j, camera) in cameras.iter().enumerate() {
                let n = p.subscriber.received_count(camera);
                ensure!(
                    n == 0,
                    "pupil {i} received {n} packets of pupil {j}'s camera before anyone spoke"
                );
            }
        }

        // The pupils speak one after another, each falling silent as the next begins.
        for k in 0..pupils.len() {
            if k > 0 {
                publishers[k - 1].set_audio_level(Source::Microphone, SILENT)?;
            }
            publishers[k].set_audio_level(Source::Microphone, SPEAKING)?;
            let started = Instant::now();
            let mut told = Vec::new();
            for c in pupils.iter().chain([&teacher]) {
                let event = speakers(
                    c,
                    |s| s.first() == Some(&pids[k]),
                    SPEAKER_NOTICE + Duration::from_secs(2),
                )
                .await
                .with_context(|| format!("pupil {k} speaks"))?;
                let took = started.elapsed();
                ensure!(
                    took <= SPEAKER_NOTICE,
                    "{} heard of pupil {k} speaking only after {took:?}",
                    c.participant_id
                );
                told.push(event);
            }
            // The teacher's, the last one told.
            let first_told = told.pop().context("the teacher was told")?;
            let known = Instant::now();
            // The one before falls silent: then pupil k alone speaks.
            let alone = if speakers_of(&first_told) == [pids[k].clone()] {
                first_told
            } else {
                speakers(&teacher, |s| s == [pids[k].clone()], Duration::from_secs(5))
                    .await
                    .with_context(|| format!("pupil {k} alone speaks"))?
            };
            let recent: Vec<&str> = alone["recent"]
                .as_array()
                .ok_or_else(|| anyhow!("active_speakers without recent: {alone}"))?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let order: Vec<usize> = recent.iter().filter_map(|r| name.get(r).copied()).collect();
            let want: Vec<usize> = (0..=k).rev().collect();
            ensure!(order == want, "recent speakers {order:?}, want {want:?}");

            // Last-N: the cameras of pupils k and k-1 reach every other pupil...
            let shown: Vec<usize> = (k.saturating_sub(usize::from(LAST_N) - 1)..=k).collect();
            for (i, p) in pupils.iter().enumerate() {
                for &j in shown.iter().filter(|&&j| j != i) {
                    let now = p.subscriber.received_count(&cameras[j]);
                    p.subscriber
                        .wait_count(&cameras[j], now + 15, CONNECT_TIMEOUT)
                        .await
                        .with_context(|| {
                            format!("pupil {i} sees pupil {j} after pupil {k} spoke")
                        })?;
                }
            }
            // ...and the one who spoke longest ago no longer reaches anyone but the teacher.
            if let Some(dropped) = k.checked_sub(usize::from(LAST_N)) {
                let cutoff = known + STOP_GRACE;
                ensure!(Instant::now() > cutoff, "waited past the grace");
                for (i, p) in pupils.iter().enumerate().filter(|(i, _)| *i != dropped) {
                    let late = received_after(p, &cameras[dropped], cutoff);
                    ensure!(
                        late == 0,
                        "pupil {i} received {late} packets of pupil {dropped}'s camera more than \
                         {STOP_GRACE:?} after pupil {k} spoke"
                    );
                }
                let now = teacher.subscriber.received_count(&cameras[dropped]);
                teacher
                    .subscriber
                    .wait_count(&cameras[dropped], now + 15, CONNECT_TIMEOUT)
                    .await
                    .context("the teacher still sees every camera")?;
            }
        }

        // Never more than N classmates' cameras at once, for any pupil; the last pupils to
        // speak were seen at N at once.
        let mut seen = Vec::new();
        for (i, p) in pupils.iter().enumerate() {
            let others: Vec<String> = cameras
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, c)| c.clone())
                .collect();
            let most = most_at_once(p, &others);
            ensure!(
                most <= usize::from(LAST_N),
                "pupil {i} received {most} classmates' cameras at once (last_n {LAST_N})"
            );
            seen.push(most);
        }
        ensure!(
            seen.contains(&usize::from(LAST_N)),
            "no pupil ever received {LAST_N} cameras at once: {seen:?}"
        );

        for pump in &pumps {
            pump.stop().await?;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
