//! A room that spans two media shards, end to end, with an independent WebRTC stack (webrtc-rs).
//!
//! The server runs two shards and keeps rooms whole only up to two participants, so a teacher
//! and four pupils are spread over both: the teacher's simulcast video and audio are published
//! on one shard, and the pupils on the other receive them through the cross-shard queue
//! (`sfu::shard::mesh`). Each pupil must receive each track exactly once, in order, with
//! continuous sequence numbers and a stream a decoder accepts; and a keyframe request from a
//! pupil on the other shard must reach the publisher.

mod support;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::Role;
use std::time::{Duration, Instant};
use support::simulcast::{
    Rid, SeqExtender, analyse_video, layer_bytes, only_layer, teacher_publishes_simulcast,
};
use support::{CONNECT_TIMEOUT, RecvPacket, TEST_TIMEOUT, TestClient, TestServer};
use webrtc::peer_connection::RTCPeerConnectionState;

const PUPILS: usize = 4;

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// The server's `/metrics` text.
async fn metrics(server: &TestServer) -> Result<String> {
    Ok(
        reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
            .await?
            .text()
            .await?,
    )
}

/// The value of one series (`name{labels}`) in `/metrics`.
fn series(metrics: &str, series: &str) -> Result<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .with_context(|| format!("/metrics has no {series}"))?
        .trim()
        .parse()
        .with_context(|| format!("{series} is not a count"))
}

fn shard_series(metrics: &str, name: &str, shard: usize) -> Result<u64> {
    series(metrics, &format!("{name}{{shard=\"{shard}\"}}"))
}

/// Extended sequence numbers of `packets` in arrival order.
fn extended(packets: &[RecvPacket]) -> Vec<i64> {
    let mut ext = SeqExtender::default();
    packets
        .iter()
        .map(|p| ext.next(p.sequence_number))
        .collect()
}

/// One stream as a pupil received it: one SSRC, no duplicate, every sequence number from the
/// first to the last, in order.
fn check_stream(who: &str, what: &str, packets: &[RecvPacket]) -> Result<()> {
    ensure!(!packets.is_empty(), "{who} received no {what}");
    let ssrcs: std::collections::BTreeSet<u32> = packets.iter().map(|p| p.ssrc).collect();
    ensure!(ssrcs.len() == 1, "{who}'s {what} came on SSRCs {ssrcs:?}");
    let seqs = extended(packets);
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(
        sorted.len() == seqs.len(),
        "{who} received {} duplicate {what} packets",
        seqs.len() - sorted.len()
    );
    let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
    let missing = (last - first + 1) as usize - sorted.len();
    ensure!(
        missing == 0,
        "{who}'s {what} misses {missing} of {} sequence numbers",
        last - first + 1
    );
    let out_of_order = seqs.windows(2).filter(|w| w[1] < w[0]).count();
    ensure!(
        out_of_order == 0,
        "{who}'s {what}: {out_of_order} packets out of order"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_across_two_shards_delivers_every_track_once_in_order() -> Result<()> {
    bounded(async {
        let mut config = classroom::server::Config::for_tests();
        config.media.shards = 2;
        // Placement (core::placement): the teacher and the first pupil on shard 0, then the
        // least-loaded shard: pupils 2 and 3 on shard 1, pupil 4 on shard 0.
        config.media.whole_room = 2;
        let server = TestServer::start_with(config).await?;
        let (_teacher, publisher) = teacher_publishes_simulcast(&server).await?;
        let video_id = publisher.video_track_id.clone();
        let audio_id = publisher.audio_track_id.clone();

        let mut pupils = Vec::new();
        for i in 1..=PUPILS {
            let pupil = TestClient::connect(
                &server.ws_url(),
                &server.token(&format!("s-00{i}"), &format!("Pupil {i}"), Role::Student),
            )
            .await
            .with_context(|| format!("pupil {i} joins"))?;
            pupils.push(pupil);
        }
        for (i, pupil) in pupils.iter().enumerate() {
            support::wait::poll_for(
                CONNECT_TIMEOUT,
                || format!("pupil {}'s subscribe connection to connect", i + 1),
                async || {
                    (pupil.subscriber.state() == Some(RTCPeerConnectionState::Connected))
                        .then_some(())
                },
            )
            .await?;
        }

        // Both shards serve pupils of the room, and the publisher's shard forwards to the other.
        // Shard 0: the teacher's publish connection and two pupils'; shard 1: two pupils'. (The
        // gauges are published once a second.)
        support::wait::poll_for(
            CONNECT_TIMEOUT,
            || "peer connections per shard to be [3, 2]".to_owned(),
            async || {
                let m = metrics(&server).await.ok()?;
                let peers: Vec<u64> = (0..2)
                    .map(|s| shard_series(&m, "classroom_media_shard_peer_connections", s))
                    .collect::<Result<_>>()
                    .ok()?;
                (peers == [3, 2]).then_some(())
            },
        )
        .await?;

        // Two seconds of media for everyone.
        for (i, pupil) in pupils.iter().enumerate() {
            for (track, n) in [(&video_id, 60), (&audio_id, 100)] {
                pupil
                    .subscriber
                    .wait_count(track, n, CONNECT_TIMEOUT)
                    .await
                    .with_context(|| format!("pupil {} receives {track}", i + 1))?;
            }
        }
        // Counters are published once a second.
        let (m, crossed) = support::wait::poll_for(
            CONNECT_TIMEOUT,
            || "packets to cross from shard 0 to shard 1".to_owned(),
            async || {
                let m = metrics(&server).await.ok()?;
                let crossed =
                    shard_series(&m, "classroom_media_shard_cross_forwarded_total", 0).ok()?;
                let arrived =
                    shard_series(&m, "classroom_media_shard_cross_forwarded_received_total", 1)
                        .ok()?;
                (crossed > 0 && arrived > 0).then_some((m, crossed))
            },
        )
        .await?;
        // Once per shard, not per subscriber: shard 1 has two pupils, yet no more packets crossed
        // than the publisher sent.
        let received_by_server = publisher.sent().len() + publisher.audio_sent();
        ensure!(
            crossed as usize <= received_by_server,
            "{crossed} packets crossed for {received_by_server} sent by the publisher"
        );

        // A keyframe request from a pupil on shard 1 (pupil 2) reaches the publisher on shard 0.
        let across_before =
            shard_series(&m, "classroom_media_shard_keyframe_requests_across_total", 0)?;
        let requests_before: usize = [Rid::Q, Rid::H, Rid::F]
            .iter()
            .map(|r| publisher.keyframe_requests(*r).len())
            .sum();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            pupils[1].subscriber.request_keyframe(&video_id).await?;
            let asked = Instant::now();
            // Within half a second, or ask again (a throttled request is dropped, as a browser
            // expects, and repeated).
            let reached = support::wait::poll_for(
                Duration::from_millis(500),
                || "the keyframe request to cross".to_owned(),
                async || {
                    let m = metrics(&server).await.ok()?;
                    let across = shard_series(
                        &m,
                        "classroom_media_shard_keyframe_requests_across_total",
                        0,
                    )
                    .ok()?;
                    let requests: usize = [Rid::Q, Rid::H, Rid::F]
                        .iter()
                        .map(|r| publisher.keyframe_requests(*r).len())
                        .sum();
                    (across > across_before && requests > requests_before).then_some(())
                },
            )
            .await;
            if reached.is_ok() {
                break;
            }
            ensure!(
                asked < deadline,
                "a PLI from a pupil on the other shard did not reach the publisher within 5 s"
            );
        }

        // Every pupil, on either shard, got each track once and whole.
        let cutoff = Instant::now();
        for (i, pupil) in pupils.iter().enumerate() {
            let who = format!("pupil {}", i + 1);
            let offered: std::collections::BTreeSet<String> = pupil
                .subscriber
                .offered()
                .values()
                .map(|t| t.track_id.clone())
                .collect();
            let expected: std::collections::BTreeSet<String> =
                [video_id.clone(), audio_id.clone()].into();
            ensure!(
                offered == expected,
                "{who} was offered {offered:?}, not {expected:?}"
            );
            let received: Vec<String> = pupil
                .subscriber
                .received_summary()
                .into_keys()
                .filter(|k| !expected.contains(k))
                .collect();
            ensure!(received.is_empty(), "{who} received unexpected {received:?}");
            let take = |track: &str| -> Vec<RecvPacket> {
                pupil
                    .subscriber
                    .received(track)
                    .into_iter()
                    .filter(|p| p.at <= cutoff)
                    .collect()
            };
            let audio = take(&audio_id);
            let video = take(&video_id);
            check_stream(&who, "audio", &audio)?;
            check_stream(&who, "video", &video)?;
            let analysis = analyse_video(&video);
            ensure!(
                analysis.ok() && analysis.missing == 0,
                "{who}'s video would not decode: {:?} (missing {})",
                analysis.problems,
                analysis.missing
            );
            println!(
                "{who}: audio {} packets, video {} packets, layer switches {}",
                audio.len(),
                video.len(),
                analysis.switches.len()
            );
        }
        // Layer choice and keyframes across shards: on loopback every pupil climbs to the top
        // layer, which takes a keyframe of it asked for by each shard's down tracks.
        for (i, pupil) in pupils.iter().enumerate() {
            support::wait::poll_for(
                Duration::from_secs(25),
                || {
                    let video = pupil.subscriber.received(&video_id);
                    let since = Instant::now() - Duration::from_secs(1);
                    format!(
                        "pupil {} to receive only f: {:?} bytes by rid in the last second",
                        i + 1,
                        layer_bytes(&video, since)
                    )
                },
                async || {
                    let video = pupil.subscriber.received(&video_id);
                    let since = Instant::now() - Duration::from_secs(1);
                    (only_layer(&video, since) == Some(Rid::F)).then_some(())
                },
            )
            .await?;
        }
        let m = metrics(&server).await?;
        for s in 0..2 {
            println!(
                "shard {s}: datagrams {}, hand-offs out {}, in {}, crossed out {}, in {}, queue full {}",
                shard_series(&m, "classroom_media_shard_packets_received_total", s)?,
                shard_series(&m, "classroom_media_shard_hand_offs_total", s)?,
                shard_series(&m, "classroom_media_shard_hand_offs_received_total", s)?,
                shard_series(&m, "classroom_media_shard_cross_forwarded_total", s)?,
                shard_series(&m, "classroom_media_shard_cross_forwarded_received_total", s)?,
                shard_series(&m, "classroom_media_shard_queue_full_total", s)?,
            );
        }
        Ok(())
    })
    .await
}
