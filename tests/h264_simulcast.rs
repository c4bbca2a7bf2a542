//! H264 simulcast, end to end, with an independent WebRTC stack (webrtc-rs).
//!
//! A teacher publishes H264 (constrained baseline, packetization-mode 1) in three rid encodings
//! `q`/`h`/`f`, plus Opus ([`support::simulcast`] with [`VideoCodec::H264`]): keyframes are a
//! STAP-A (SPS, PPS, SEI) followed by the IDR slice, large slices go as FU-A. A pupil whose
//! subscribe connection accepts only H264 receives it on loopback. H264 carries no temporal
//! layers, so the server forwards whole spatial layers and may switch between them only at a
//! keyframe. With `set_track_quality` the pupil caps the track to `low` (only `q` must arrive)
//! and raises it to `high` (it must climb to `f`); every switch it sees must start with a
//! keyframe, its sequence numbers must stay gapless, and its audio must keep flowing.

use crate::support;

use anyhow::{Context, Result, bail, ensure};
use classroom_signaling::token::Role;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::peer::VideoCodec;
use support::simulcast::{
    H264Payload, Rid, SimTag, SimulcastConfig, SimulcastOffer, SimulcastPublisher,
    analyse_video_codec, h264_simulcast_frame, layer_bytes, longest_gap, nal, only_layer,
};
use support::{RecvPacket, TEST_TIMEOUT, TestClient, TestServer};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// The media section of `sdp` that carries `a=mid:<mid>`, `m=` line included.
fn media_section<'a>(sdp: &'a str, mid: &str) -> Option<&'a str> {
    let mut rest = sdp;
    let mut sections = Vec::new();
    while let Some(start) = rest.find("m=") {
        let after = &rest[start + 2..];
        let end = after
            .find("\r\nm=")
            .map_or(rest.len(), |e| start + 2 + e + 2);
        sections.push(&rest[start..end]);
        rest = &rest[end..];
    }
    sections
        .into_iter()
        .find(|s| s.lines().any(|l| l.trim_end() == format!("a=mid:{mid}")))
}

/// The payload types `section` maps to `H264/90000`, and the fmtp line of each.
fn h264_payload_types(section: &str) -> Vec<(u8, String)> {
    section
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end().strip_prefix("a=rtpmap:")?;
            let (pt, codec) = rest.split_once(' ')?;
            codec
                .eq_ignore_ascii_case("H264/90000")
                .then(|| pt.parse().ok())
                .flatten()
        })
        .map(|pt: u8| {
            let fmtp = section
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(&format!("a=fmtp:{pt} ")))
                .unwrap_or("")
                .to_owned();
            (pt, fmtp)
        })
        .collect()
}

// ---- The packetiser and the analysis, without a server ----

#[test]
fn h264_frames_are_packetised_per_rfc_6184() -> Result<()> {
    // A small keyframe: STAP-A (SPS, PPS, SEI with the tag), then the IDR slice in one NAL.
    let key = h264_simulcast_frame(Rid::Q, 7, true, 600, 1100);
    ensure!(key.len() == 2, "{} packets", key.len());
    let stap = H264Payload::parse(&key[0]).context("the STAP-A does not parse")?;
    ensure!(stap.packet_type == nal::STAP_A, "{stap:?}");
    ensure!(stap.nal_types == [nal::SPS, nal::PPS, nal::SEI], "{stap:?}");
    ensure!(stap.keyframe_start());
    let idr = H264Payload::parse(&key[1]).context("the IDR does not parse")?;
    ensure!(
        idr.packet_type == nal::IDR && idr.keyframe_start(),
        "{idr:?}"
    );
    ensure!(key[1][0] == 0x65, "IDR NAL header {:#04x}", key[1][0]);
    for (index, payload) in key.iter().enumerate() {
        let tag = SimTag::parse(payload).context("untagged")?;
        ensure!(tag.rid == Rid::Q && tag.frame == 7 && usize::from(tag.index) == index);
        ensure!(tag.count == 2);
    }
    // The SPS names the layer's size: 320x180 = 20x12 macroblocks, cropped by 6 lines.
    let sps = support::simulcast::h264_sps(Rid::Q);
    ensure!(sps[..4] == [0x67, 0x42, 0xe0, 0x1f], "SPS {sps:02x?}");

    // A large keyframe: STAP-A, then FU-A fragments of the IDR (S on the first, E on the last).
    let key = h264_simulcast_frame(Rid::F, 1, true, 5000, 1100);
    ensure!(key.len() == 1 + 5, "{} packets", key.len());
    for (i, payload) in key.iter().enumerate().skip(1) {
        let fu = H264Payload::parse(payload).context("a FU-A does not parse")?;
        ensure!(
            payload[0] == 0x60 | nal::FU_A,
            "FU indicator {:#04x}",
            payload[0]
        );
        ensure!(fu.packet_type == nal::FU_A && fu.nal_types == [nal::IDR]);
        ensure!(fu.starts_nal == (i == 1) && fu.ends_nal == (i == key.len() - 1));
        ensure!(fu.keyframe_start() == (i == 1));
        ensure!(payload.len() <= 1100);
    }
    // A large delta frame: FU-A fragments of a non-IDR slice, NRI 2; never a keyframe start.
    let delta = h264_simulcast_frame(Rid::F, 2, false, 3000, 1100);
    ensure!(delta.len() == 3);
    for (i, payload) in delta.iter().enumerate() {
        let fu = H264Payload::parse(payload).context("a FU-A does not parse")?;
        ensure!(payload[0] == 0x40 | nal::FU_A && fu.nal_types == [nal::SLICE]);
        ensure!(fu.starts_nal == (i == 0) && fu.ends_nal == (i == 2));
        ensure!(!fu.keyframe_start());
    }
    let small = h264_simulcast_frame(Rid::H, 3, false, 400, 1100);
    ensure!(small.len() == 1 && small[0][0] == 0x41);

    // The analysis accepts a stream that switches at a keyframe, and flags one that does not.
    let start = Instant::now();
    let mut seq = 1000u16;
    let mut packets = Vec::new();
    let push = |packets: &mut Vec<RecvPacket>,
                seq: &mut u16,
                payloads: Vec<bytes::Bytes>,
                timestamp: u32| {
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            packets.push(RecvPacket {
                ssrc: 1,
                sequence_number: *seq,
                timestamp,
                marker: i + 1 == count,
                payload_type: 102,
                payload,
                at: start,
            });
            *seq = seq.wrapping_add(1);
        }
    };
    push(
        &mut packets,
        &mut seq,
        h264_simulcast_frame(Rid::H, 0, true, 3000, 1100),
        0,
    );
    push(
        &mut packets,
        &mut seq,
        h264_simulcast_frame(Rid::H, 1, false, 3000, 1100),
        3000,
    );
    push(
        &mut packets,
        &mut seq,
        h264_simulcast_frame(Rid::Q, 2, true, 900, 1100),
        6000,
    );
    push(
        &mut packets,
        &mut seq,
        h264_simulcast_frame(Rid::Q, 3, false, 900, 1100),
        9000,
    );
    let good = analyse_video_codec(VideoCodec::H264, &packets);
    ensure!(good.ok() && good.missing == 0, "{good:#?}");
    ensure!(good.switches.len() == 2, "{:?}", good.switches);
    push(
        &mut packets,
        &mut seq,
        h264_simulcast_frame(Rid::F, 4, false, 900, 1100),
        12000,
    );
    let bad = analyse_video_codec(VideoCodec::H264, &packets);
    ensure!(
        bad.problems.iter().any(|p| p.contains("switch q -> f")),
        "a switch at a delta frame went unnoticed: {bad:#?}"
    );
    Ok(())
}

// ---- Through the server ----

/// A packet's rid, from its tag.
fn rid_of(packet: &RecvPacket) -> Option<Rid> {
    SimTag::parse(&packet.payload).map(|t| t.rid)
}

fn describe(video: &[RecvPacket], audio: &[RecvPacket], window: Duration) -> String {
    let since = Instant::now() - window;
    format!(
        "last {window:?}: {:?} bytes by rid; {} video / {} audio packets in all",
        layer_bytes(video, since),
        video.len(),
        audio.len()
    )
}

/// The server's `track_quality` layers and `connection_quality` estimates to this pupil, in
/// order (for failure messages).
fn server_reports(pupil: &TestClient) -> String {
    pupil
        .signal
        .history()
        .iter()
        .filter_map(|f| {
            if support::is_type(f, "track_quality") {
                Some(format!(
                    "track_quality {}{}",
                    f.get("layer").unwrap_or(&Value::Null),
                    if f.get("paused").and_then(Value::as_bool) == Some(true) {
                        " (paused)"
                    } else {
                        ""
                    }
                ))
            } else if support::is_type(f, "connection_quality") {
                Some(format!(
                    "estimate {} kbit/s",
                    f.pointer("/participants/0/estimate_kbps")
                        .unwrap_or(&Value::Null)
                ))
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until, after `after`, `rid` has arrived and nothing but `rid` has arrived for `hold`
/// since its first packet. Returns when that first packet arrived.
async fn wait_settled_on(
    pupil: &TestClient,
    publisher: &SimulcastPublisher,
    rid: Rid,
    after: Instant,
    hold: Duration,
    timeout: Duration,
) -> Result<Instant> {
    let video_id = &publisher.video_track_id;
    let audio_id = &publisher.audio_track_id;
    support::wait::poll_for(
        timeout,
        || {
            format!(
                "{}; server reports: {}",
                describe(
                    &pupil.subscriber.received(video_id),
                    &pupil.subscriber.received(audio_id),
                    Duration::from_secs(2),
                ),
                server_reports(pupil)
            )
        },
        async || {
            let video = pupil.subscriber.received(video_id);
            let first = video
                .iter()
                .find(|p| p.at >= after && rid_of(p) == Some(rid))?
                .at;
            (first.elapsed() >= hold && only_layer(&video, first) == Some(rid)).then_some(first)
        },
    )
    .await
}

/// Waits for a `track_quality` report of `track_id` at `layer`.
async fn expect_track_quality(pupil: &TestClient, track_id: &str, layer: &str) -> Result<Value> {
    pupil
        .expect_event(
            |e| {
                support::is_type(e, "track_quality")
                    && e.get("track_id").and_then(Value::as_str) == Some(track_id)
                    && e.get("layer").and_then(Value::as_str) == Some(layer)
            },
            Duration::from_secs(5),
        )
        .await
        .with_context(|| format!("no track_quality report of layer {layer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h264_simulcast_is_accepted_and_switches_at_keyframes() -> Result<()> {
    bounded(h264_simulcast_inner()).await
}

async fn h264_simulcast_inner() -> Result<()> {
    support::init_logging();
    let server = TestServer::start().await?;
    let url = server.ws_url();

    // ---- Publish: the answer accepts H264 and simulcast with all three rids ----
    let teacher = TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher))
        .await
        .context("teacher joins")?;
    let offer = SimulcastOffer::create_with(VideoCodec::H264).await?;
    let video_mid = offer.video_mid().to_owned();
    let offer_video = media_section(&offer.sdp, &video_mid)
        .with_context(|| format!("no video section in our offer:\n{}", offer.sdp))?
        .to_owned();
    ensure!(
        offer_video.contains("a=simulcast:send q;h;f") && !offer_video.contains("VP8"),
        "the publisher should offer H264 simulcast only:\n{offer_video}"
    );
    let reply = teacher
        .request(offer.message())
        .await
        .context("publish H264 simulcast")?;
    if !support::is_type(&reply, "publish_answer") {
        offer.abandon().await;
        bail!("the server refused the H264 simulcast offer: {reply}\noffer:\n{offer_video}");
    }
    let answer_sdp = reply
        .get("sdp")
        .and_then(Value::as_str)
        .context("publish_answer without sdp")?
        .to_owned();
    let answer_video = media_section(&answer_sdp, &video_mid)
        .with_context(|| format!("no video section for mid {video_mid} in:\n{answer_sdp}"))?
        .to_owned();
    eprintln!("publish answer, video section:\n{answer_video}");
    ensure!(
        answer_video.starts_with("m=video ") && !answer_video.starts_with("m=video 0 "),
        "the server rejected the video section:\n{answer_video}"
    );
    let simulcast_line = answer_video
        .lines()
        .find(|l| l.starts_with("a=simulcast:"))
        .with_context(|| format!("the answer does not accept simulcast:\n{answer_video}"))?;
    ensure!(
        simulcast_line.trim_end() == "a=simulcast:recv q;h;f",
        "the answer's simulcast line is `{simulcast_line}`, not all three rids"
    );
    for rid in Rid::ALL {
        ensure!(
            answer_video
                .lines()
                .any(|l| l.trim_end() == format!("a=rid:{rid} recv")),
            "the answer does not accept rid {rid}:\n{answer_video}"
        );
    }
    let answered = h264_payload_types(&answer_video);
    ensure!(
        answered
            .iter()
            .any(|(pt, fmtp)| *pt == support::peer::H264_PAYLOAD_TYPE
                && fmtp.contains("packetization-mode=1")),
        "the answer does not accept H264 PT {} in packetization-mode 1: {answered:?}\n{answer_video}",
        support::peer::H264_PAYLOAD_TYPE
    );

    let publisher = offer.complete(&reply).await?;
    ensure!(publisher.video_payload_type() == support::peer::H264_PAYLOAD_TYPE);
    // Small layers: on loopback the server's estimate stays at a few hundred kbit/s (it grows
    // with what is sent), and f must fit it with the upgrade margin. This test is about the
    // codec, not the bandwidth.
    publisher.start(SimulcastConfig {
        bitrates: [50_000, 120_000, 250_000],
        ..Default::default()
    });
    let video_id = publisher.video_track_id.clone();
    let audio_id = publisher.audio_track_id.clone();

    // ---- Subscribe: an H264-only pupil receives H264 video and audio ----
    let pupil = TestClient::connect_with_codec(
        &url,
        &server.token("s-001", "Sato", Role::Student),
        None,
        VideoCodec::H264,
    )
    .await
    .context("pupil joins")?;
    pupil
        .subscriber
        .wait_count(&video_id, 60, Duration::from_secs(10))
        .await
        .context("H264 video at the pupil")?;
    pupil
        .subscriber
        .wait_count(&audio_id, 25, Duration::from_secs(5))
        .await
        .context("audio at the pupil")?;

    // ---- A pupil whose device takes only VP8: told why there is no picture, still hears ----
    let vp8_only = TestClient::connect_with_codec(
        &url,
        &server.token("s-002", "Suzuki", Role::Student),
        None,
        VideoCodec::Vp8,
    )
    .await
    .context("the VP8-only pupil joins")?;
    let told = vp8_only
        .expect_event(
            |e| {
                support::is_type(e, "track_quality")
                    && e.get("track_id").and_then(|t| t.as_str()) == Some(video_id.as_str())
            },
            Duration::from_secs(10),
        )
        .await
        .context("the VP8-only pupil was not told about the H264 video")?;
    ensure!(
        told.get("paused").and_then(|p| p.as_bool()) == Some(true)
            && told.get("reason").and_then(|r| r.as_str()) == Some("codec_unsupported"),
        "the VP8-only pupil's report should say the codec is unsupported: {told}"
    );
    vp8_only
        .subscriber
        .wait_count(&audio_id, 25, Duration::from_secs(5))
        .await
        .context("audio at the VP8-only pupil")?;
    ensure!(
        vp8_only.subscriber.received_count(&video_id) == 0,
        "the VP8-only pupil received H264 video it never accepted"
    );
    vp8_only.close().await;
    let (sub_offer, sub_answer) = pupil
        .subscriber
        .last_sdp()
        .context("the pupil answered no offer")?;
    let sub_video_mid = pupil
        .subscriber
        .offered()
        .values()
        .find(|t| t.track_id == video_id)
        .map(|t| t.mid.clone())
        .context("the subscriber offer does not name the video track")?;
    let offered_video = media_section(&sub_offer, &sub_video_mid).context("no offered video")?;
    let accepted_video = media_section(&sub_answer, &sub_video_mid).context("no answered video")?;
    let accepted = h264_payload_types(accepted_video);
    eprintln!(
        "subscriber offer, video codecs: {:?}\nsubscriber answer, H264: {accepted:?}",
        offered_video
            .lines()
            .filter(|l| l.starts_with("a=rtpmap:"))
            .collect::<Vec<_>>()
    );
    ensure!(
        !accepted.is_empty(),
        "the pupil's answer accepts no H264:\n{accepted_video}"
    );
    let video = pupil.subscriber.received(&video_id);
    let pts: std::collections::BTreeSet<u8> = video.iter().map(|p| p.payload_type).collect();
    ensure!(
        pts.iter().all(|pt| accepted.iter().any(|(a, _)| a == pt)),
        "video arrived with payload types {pts:?}, the pupil accepted H264 as {accepted:?}"
    );
    let first_layer = rid_of(video.first().context("no video")?);
    eprintln!("the pupil started on {first_layer:?}");

    // ---- Capped to low: only q ----
    let capped = Instant::now();
    pupil.send_json(&json!({
        "type": "set_track_quality", "id": "cap-low", "track_id": video_id, "max_layer": "low",
    }))?;
    let on_q = wait_settled_on(
        &pupil,
        &publisher,
        Rid::Q,
        capped,
        Duration::from_millis(1500),
        Duration::from_secs(10),
    )
    .await
    .context("capped to low, the pupil did not settle on q")?;
    eprintln!("on q {:?} after the cap", on_q - capped);
    expect_track_quality(&pupil, &video_id, "low").await?;

    // ---- Raised to high: up to f ----
    let raised = Instant::now();
    pupil.send_json(&json!({
        "type": "set_track_quality", "id": "cap-high", "track_id": video_id, "max_layer": "high",
    }))?;
    let on_f = wait_settled_on(
        &pupil,
        &publisher,
        Rid::F,
        raised,
        Duration::from_secs(1),
        Duration::from_secs(15),
    )
    .await
    .context("with the cap raised to high, the pupil did not climb to f")?;
    eprintln!("on f {:?} after the cap was raised", on_f - raised);
    expect_track_quality(&pupil, &video_id, "high").await?;

    // ---- The stream as the pupil's decoder got it ----
    let end = Instant::now();
    let video = pupil.subscriber.received(&video_id);
    let audio = pupil.subscriber.received(&audio_id);
    let analysis = analyse_video_codec(VideoCodec::H264, &video);
    eprintln!(
        "video: {} packets, {} missing, {} repeats, switches {:?}",
        analysis.packets,
        analysis.missing,
        analysis.duplicates + pupil.subscriber.duplicates(&video_id),
        analysis
            .switches
            .iter()
            .map(|(at, from, to)| format!(
                "{:.2}s {}->{to}",
                at.saturating_duration_since(capped).as_secs_f64(),
                from.map_or("-".to_owned(), |r| r.to_string())
            ))
            .collect::<Vec<_>>()
    );
    ensure!(
        analysis.ok(),
        "the H264 stream is not continuous for a decoder: {:#?}",
        analysis.problems
    );
    ensure!(
        analysis.ssrcs.len() == 1,
        "video on SSRCs {:?}",
        analysis.ssrcs
    );
    ensure!(
        analysis.unverifiable_switches == 0,
        "{} switches could not be checked",
        analysis.unverifiable_switches
    );
    // Down to q after the cap (unless a dip of the estimate had already put the pupil there:
    // the start of a connection on a busy machine can do that); after the raise, up (directly or
    // through h) to f.
    let switches: Vec<(Instant, Option<Rid>, Rid)> = analysis.switches.clone();
    let on_q_at_cap = switches
        .iter()
        .rfind(|(at, _, _)| *at < capped)
        .is_some_and(|(_, _, to)| *to == Rid::Q);
    ensure!(
        on_q_at_cap
            || switches
                .iter()
                .any(|(at, _, to)| *at >= capped && *at < raised && *to == Rid::Q),
        "no switch down to q after the cap: {:?}",
        analysis.switches
    );
    // Capped, it stays on q (a switch already under way at the cap may land in the first second).
    ensure!(
        !switches
            .iter()
            .any(|(at, _, to)| *at >= capped + Duration::from_secs(1)
                && *at < raised
                && *to != Rid::Q),
        "the pupil left q while capped to low: {:?}",
        analysis.switches
    );
    ensure!(
        switches.last().map(|(_, _, to)| *to) == Some(Rid::F)
            && switches
                .iter()
                .filter(|(at, _, _)| *at >= raised)
                .all(|(_, from, to)| from.is_some_and(|from| from < *to)),
        "after the raise the pupil should only climb, to f: {:?}",
        analysis.switches
    );

    // In arrival order (loopback neither loses nor reorders): sequence numbers +1 each packet,
    // timestamps never back, and the first packet of every new rid is the keyframe's STAP-A
    // with SPS and PPS.
    let mut switches_checked = 0;
    for (i, pair) in video.windows(2).enumerate() {
        let (before, packet) = (&pair[0], &pair[1]);
        ensure!(
            packet.sequence_number == before.sequence_number.wrapping_add(1),
            "packet {}: sequence number {} after {} ({:?} -> {:?})",
            i + 1,
            packet.sequence_number,
            before.sequence_number,
            rid_of(before),
            rid_of(packet)
        );
        let step = packet.timestamp.wrapping_sub(before.timestamp);
        ensure!(
            step < 1 << 31,
            "packet {}: timestamp {} after {}: backwards",
            i + 1,
            packet.timestamp,
            before.timestamp
        );
        if rid_of(packet) != rid_of(before) {
            let h264 = H264Payload::parse(&packet.payload);
            ensure!(
                h264.as_ref().is_some_and(|h| h.packet_type == nal::STAP_A
                    && h.nal_types.starts_with(&[nal::SPS, nal::PPS])
                    && h.keyframe_start()),
                "packet {}: the switch {:?} -> {:?} starts with {h264:?}, not the keyframe's STAP-A",
                i + 1,
                rid_of(before),
                rid_of(packet)
            );
            ensure!(
                SimTag::parse(&packet.payload).is_some_and(|t| t.index == 0),
                "packet {}: the switch starts inside a frame",
                i + 1
            );
            switches_checked += 1;
        }
    }
    // All three RFC 6184 shapes went through the server: STAP-A (keyframe start), single NAL
    // (small slices) and FU-A (slices larger than a packet, on f).
    let mut shapes = std::collections::BTreeMap::<&str, usize>::new();
    for packet in &video {
        let shape = match H264Payload::parse(&packet.payload).map(|h| h.packet_type) {
            Some(nal::STAP_A) => "STAP-A",
            Some(nal::FU_A) => "FU-A",
            Some(_) => "single NAL",
            None => "unparsed",
        };
        *shapes.entry(shape).or_default() += 1;
    }
    eprintln!("video packets by shape: {shapes:?}");
    ensure!(
        ["STAP-A", "FU-A", "single NAL"]
            .iter()
            .all(|shape| shapes.contains_key(shape))
            && !shapes.contains_key("unparsed"),
        "expected STAP-A, FU-A and single NAL packets: {shapes:?}"
    );
    let first = H264Payload::parse(&video[0].payload);
    ensure!(
        first.as_ref().is_some_and(H264Payload::keyframe_start),
        "the first video packet is {first:?}, not a keyframe start"
    );
    ensure!(
        switches_checked >= 2,
        "only {switches_checked} switches seen"
    );

    // Audio kept flowing through both switches.
    let audio_first = audio.first().context("no audio")?.at;
    let gap = longest_gap(&audio, audio_first, end);
    let audio_analysis = analyse_audio_sequence(&audio);
    eprintln!(
        "audio: {} packets, longest gap {gap:?}, {audio_analysis} sequence gaps",
        audio.len()
    );
    ensure!(
        gap <= Duration::from_millis(500),
        "audio stopped for {gap:?}"
    );
    ensure!(
        audio.iter().any(|p| p.at > on_f),
        "no audio after the switch to f"
    );

    eprintln!("{}", publisher.keyframe_summary());

    publisher.close().await;
    pupil.close().await;
    teacher.close().await;
    server.shutdown().await;
    Ok(())
}

/// Sequence-number gaps in `audio`, in arrival order.
fn analyse_audio_sequence(audio: &[RecvPacket]) -> usize {
    audio
        .windows(2)
        .filter(|w| w[1].sequence_number != w[0].sequence_number.wrapping_add(1))
        .count()
}
