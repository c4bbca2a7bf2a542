//! A room that spans two media shards, end to end, with an independent WebRTC stack (webrtc-rs).
//!
//! The server runs two shards and keeps rooms whole only up to two participants, so a teacher
//! and four pupils are spread over both: the teacher's simulcast video and audio are published
//! on one shard, and the pupils on the other receive them through the cross-shard queue
//! (`sfu::shard::mesh`). Each pupil must receive each track exactly once, in order, with
//! continuous sequence numbers and a stream a decoder accepts, starting at a keyframe; and a
//! keyframe request from a pupil on the other shard must reach the publisher and bring that pupil
//! a keyframe.
//!
//! A second test forges STUN binding requests for a publisher's connection from many sockets
//! (so some land on every shard) and checks the publisher's media still reaches its pupil.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom_signaling::token::Role;
use std::time::{Duration, Instant};
use support::lesson::bounded;
use support::metrics::{scrape as metrics, series, shard_series};
use support::simulcast::{
    Rid, SeqExtender, SimulcastConfig, SimulcastOffer, analyse_video, layer_bytes, longest_gap,
    only_layer, teacher_publishes_simulcast,
};
use support::{CONNECT_TIMEOUT, RecvPacket, TestClient, TestServer, is_vp8_keyframe_start};
use webrtc::peer_connection::RTCPeerConnectionState;

const PUPILS: usize = 4;

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
            let asked = Instant::now();
            pupils[1].subscriber.request_keyframe(&video_id).await?;
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
                    // ... and the pupil who asked gets the start of a keyframe after asking.
                    let keyframe = pupils[1]
                        .subscriber
                        .received(&video_id)
                        .iter()
                        .any(|p| p.at >= asked && is_vp8_keyframe_start(&p.payload));
                    (across > across_before && requests > requests_before && keyframe)
                        .then_some(())
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
            // The first picture a pupil can show, on either shard, is a keyframe: the packet its
            // stream starts with (lowest sequence number) starts one.
            let ext = extended(&video);
            let first = ext
                .iter()
                .zip(&video)
                .min_by_key(|(seq, _)| **seq)
                .map(|(_, p)| p)
                .with_context(|| format!("{who} received no video"))?;
            ensure!(
                is_vp8_keyframe_start(&first.payload),
                "{who}'s video starts with a packet that does not start a keyframe"
            );
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
                series(
                    &m,
                    &format!(
                        "classroom_media_shard_mesh_dropped_total{{shard=\"{s}\",reason=\"queue_full\"}}"
                    )
                )?,
            );
        }
        Ok(())
    })
    .await
}

/// Forged requests sent, each from its own socket: with [`FORGING_SHARDS`] shards, the kernel's
/// hash gives every shard about 16, and each shard keeps at most four addresses per peer
/// (`core::demux::MAX_ADDRESSES_PER_PEER`).
const FORGED_SOURCES: usize = 128;
const FORGING_SHARDS: usize = 8;

/// A STUN binding request (RFC 8489) addressed to `username` (`<server ufrag>:<client ufrag>`)
/// with a MESSAGE-INTEGRITY no password produced: what someone who learned a ufrag, but not the
/// password, can send.
fn forged_binding_request(username: &str, id: u8) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0x5a; 20]);
    let mut d = vec![0x00, 0x01];
    d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    d.extend_from_slice(&[id; 12]);
    d.extend_from_slice(&attrs);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_binding_requests_do_not_take_a_publishers_address() -> Result<()> {
    bounded(async {
        let mut config = classroom::server::Config::for_tests();
        config.media.shards = FORGING_SHARDS;
        let server = TestServer::start_with(config).await?;
        // The teacher's publish connection, with the server's answer (its ICE ufrag).
        let teacher = TestClient::connect(
            &server.ws_url(),
            &server.token("t-001", "Tanaka", Role::Teacher),
        )
        .await
        .context("teacher joins")?;
        let offer = SimulcastOffer::create().await?;
        let reply = teacher.request(offer.message()).await?;
        ensure!(
            support::is_type(&reply, "publish_answer"),
            "publish refused: {reply}"
        );
        let server_ufrag = reply
            .get("sdp")
            .and_then(|s| s.as_str())
            .and_then(|sdp| {
                sdp.lines()
                    .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
                    .map(str::to_owned)
            })
            .with_context(|| format!("no ice-ufrag in the publish answer: {reply}"))?;
        let publisher = offer.complete(&reply).await?;
        publisher.start(SimulcastConfig::default());
        let video_id = publisher.video_track_id.clone();

        let pupil = TestClient::connect(
            &server.ws_url(),
            &server.token("s-001", "Pupil", Role::Student),
        )
        .await?;
        pupil
            .subscriber
            .wait_count(&video_id, 60, CONNECT_TIMEOUT)
            .await
            .context("the pupil receives the teacher's video")?;

        // The kernel spreads the teacher's datagrams to one shard by their addresses; unless
        // that is the shard owning the connection, they are handed over by that shard's table of
        // addresses, which the forged requests (about 16 per shard, each from a new address,
        // again and again as an attacker would) would overflow if a request that only names the
        // ufrag could bind an address: the teacher's address would be pushed out, and its
        // datagrams dropped as unroutable until its next check.
        let mut forgers = Vec::new();
        for _ in 0..FORGED_SOURCES {
            forgers.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        }
        let unroutable_before = series(
            &metrics(&server).await?,
            "classroom_media_datagrams_unroutable_total",
        )?;
        let forging_since = Instant::now();
        let before = pupil.subscriber.received_count(&video_id);
        let media = server.media_addr();
        let username = format!("{server_ufrag}:forged");
        let forging = async {
            for round in 0u8.. {
                for (i, socket) in forgers.iter().enumerate() {
                    let request = forged_binding_request(&username, round ^ i as u8);
                    socket.send_to(&request, media).await?;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        };
        // Three more seconds of the teacher's video reach the pupil, without a break, while
        // the forgeries go on.
        tokio::select! {
            done = pupil.subscriber.wait_count(&video_id, before + 90, Duration::from_secs(10)) => {
                done.context("the teacher's video stopped under forged binding requests")?;
            }
            failed = forging => failed?,
        }
        let until = Instant::now();
        let gap = longest_gap(&pupil.subscriber.received(&video_id), forging_since, until);
        ensure!(
            gap < Duration::from_millis(700),
            "the teacher's video paused {gap:?} under forged binding requests"
        );
        // Counters are published once a second: the last one covers most of the forging.
        let unroutable = series(
            &metrics(&server).await?,
            "classroom_media_datagrams_unroutable_total",
        )? - unroutable_before;
        ensure!(
            unroutable < 10,
            "{unroutable} datagrams were unroutable under forged binding requests"
        );
        // None of the forged requests was answered: they do not authenticate.
        let mut buf = [0u8; 1500];
        for socket in &forgers {
            ensure!(
                socket.try_recv_from(&mut buf).is_err(),
                "a forged binding request was answered"
            );
        }
        println!("longest pause of the video while forging: {gap:?}, unroutable {unroutable}");
        let m = metrics(&server).await?;
        let received: Vec<u64> = (0..FORGING_SHARDS)
            .map(|s| shard_series(&m, "classroom_media_shard_packets_received_total", s))
            .collect::<Result<_>>()?;
        let handed: Vec<u64> = (0..FORGING_SHARDS)
            .map(|s| shard_series(&m, "classroom_media_shard_hand_offs_total", s))
            .collect::<Result<_>>()?;
        println!("datagrams received per shard {received:?}, handed over {handed:?}");
        Ok(())
    })
    .await
}
