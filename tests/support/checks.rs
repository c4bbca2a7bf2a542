//! Checks shared by the end-to-end tests.

use super::client::TestClient;
use super::media::{Source, StreamCheck, verify_stream};
use super::publisher::Publisher;
use anyhow::{Context, Result, ensure};
use std::collections::HashMap;
use std::time::Duration;

/// One subscriber's verified copy of a publisher's audio and video.
#[derive(Debug, Clone)]
pub struct Verified {
    pub name: String,
    pub audio: StreamCheck,
    pub video: StreamCheck,
}

/// After the publisher stopped sending: waits until every subscriber has the last audio and
/// video packet sent, then checks each copy with [`verify_stream`] (byte-identical, in order,
/// through the end, consecutive sequence numbers, publisher's timestamp deltas, video starting
/// at a keyframe), and that every SSRC involved is distinct.
pub async fn drain_and_verify(
    publisher: &Publisher,
    video_source: Source,
    subscribers: &[(&str, &TestClient)],
    drain_timeout: Duration,
) -> Result<Vec<Verified>> {
    let audio_id = publisher.track_id(Source::Microphone)?;
    let video_id = publisher.track_id(video_source)?;
    let sent_audio = publisher.sent(Source::Microphone);
    let sent_video = publisher.sent(video_source);
    let last_audio = sent_audio
        .last()
        .context("no audio was sent")?
        .payload
        .clone();
    let last_video = sent_video
        .last()
        .context("no video was sent")?
        .payload
        .clone();

    for (name, client) in subscribers {
        client
            .subscriber
            .wait_payload(&audio_id, &last_audio, drain_timeout)
            .await
            .with_context(|| format!("{name} did not receive the last audio packet"))?;
        client
            .subscriber
            .wait_payload(&video_id, &last_video, drain_timeout)
            .await
            .with_context(|| format!("{name} did not receive the last video packet"))?;
    }

    let mut verified = Vec::new();
    for (name, client) in subscribers {
        let audio = verify_stream(
            &format!("{name} audio"),
            &sent_audio,
            &client.subscriber.received(&audio_id),
            false,
            true,
        )?;
        let video = verify_stream(
            &format!("{name} video"),
            &sent_video,
            &client.subscriber.received(&video_id),
            true,
            true,
        )?;
        // Repeats are left out of what the subscriber records (a jitter buffer drops them), but
        // are still bounded: audio is never resent, and video resends (str0m pads with them when
        // it probes) stay under str0m's 15 % cap; a server sending packets twice would not.
        let audio_repeats = client.subscriber.duplicates(&audio_id);
        ensure!(
            audio_repeats == 0,
            "{name}: {audio_repeats} audio packets arrived more than once"
        );
        let video_repeats = client.subscriber.duplicates(&video_id);
        ensure!(
            video_repeats * 4 <= video.count,
            "{name}: {video_repeats} video packets arrived again, for {} received",
            video.count
        );
        verified.push(Verified {
            name: (*name).to_owned(),
            audio,
            video,
        });
    }

    // Each subscriber has its own SSRC per track, and none is the publisher's.
    let mut owners: HashMap<u32, String> = HashMap::new();
    for track in publisher.tracks() {
        owners.insert(track.ssrc, format!("publisher {}", track.source.as_str()));
    }
    for v in &verified {
        for (what, ssrc) in [("audio", v.audio.ssrc), ("video", v.video.ssrc)] {
            let me = format!("{} {what}", v.name);
            if let Some(other) = owners.insert(ssrc, me.clone()) {
                ensure!(false, "SSRC {ssrc} is used by both {other} and {me}");
            }
        }
    }
    Ok(verified)
}
