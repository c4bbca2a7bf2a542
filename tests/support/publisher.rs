//! The publish connection: the client offers, the server answers (docs/PROTOCOL.md).
//!
//! Each published source is a `TrackLocalStaticRTP` on a `sendonly` transceiver; the test writes
//! whole RTP packets to it ([`Publisher::send_rtp`]), so it controls payload, timestamp, marker
//! and sequence number exactly. Every packet written is logged, so what subscribers receive can
//! be compared with it. Keyframe requests (PLI/FIR) the server sends for a track are counted per
//! source.

use super::media::{SentPacket, Source};
use super::peer::{self, Feedback, FeedbackKind, PeerEvents};
use super::wait::wait_for;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use webrtc::rtp_transceiver::RtpTransceiver;

/// [`Publisher::set_audio_level`] value meaning "write no audio level extension".
pub const NO_AUDIO_LEVEL: u8 = u8::MAX;
/// Audio levels in -dBov: a pupil talking, and silence (RFC 6464's quietest value).
pub const SPEAKING: u8 = 20;
pub const SILENT: u8 = 127;

/// One local track being published.
pub struct PublishedTrack {
    pub source: Source,
    pub mid: String,
    /// The SSRC this client sends with.
    pub ssrc: u32,
    /// The server's id for the track, from `publish_answer`.
    pub track_id: String,
    payload_type: u8,
    mid_extension: Option<u8>,
    /// The negotiated id of the RFC 6464 audio level extension (audio tracks).
    audio_level_extension: Option<u8>,
    /// The level written into every packet, in -dBov (0 loudest, 127 silence), or
    /// [`NO_AUDIO_LEVEL`]: no extension at all (the default).
    audio_level: AtomicU8,
    local: Arc<TrackLocalStaticRTP>,
    /// Held across the write, so packets reach the wire and the log in sequence order.
    next_sequence: tokio::sync::Mutex<u16>,
}

/// A track of an offer not yet answered.
struct OfferedTrack {
    source: Source,
    mid: String,
    ssrc: u32,
    local: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
}

/// A publish offer that has been created but not yet answered.
pub struct PublishOffer {
    pc: Arc<dyn PeerConnection>,
    events: PeerEvents,
    tracks: Vec<OfferedTrack>,
    pub sdp: String,
}

impl PublishOffer {
    /// Creates the publish peer connection with one sendonly track per source and a complete
    /// local offer (candidates included).
    pub async fn create(sources: &[Source]) -> Result<Self> {
        let (pc, mut events) = peer::build(None).await?;
        let mut tracks = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let ssrc = rand::random::<u32>() | 1;
            let codec = match source.kind() {
                "audio" => peer::opus_codec(),
                _ => peer::vp8_codec(),
            };
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "test-client-stream".to_owned(),
                format!("test-client-{}-{index}", source.as_str()),
                source.as_str().to_owned(),
                source.codec_kind(),
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            )));
            let transceiver = pc
                .add_transceiver_from_track(
                    Arc::clone(&track) as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .await
                .with_context(|| format!("add a {} transceiver", source.as_str()))?;
            tracks.push(OfferedTrack {
                source: *source,
                mid: String::new(),
                ssrc,
                local: track,
                transceiver,
            });
        }

        let offer = pc
            .create_offer(None)
            .await
            .context("create the publish offer")?;
        pc.set_local_description(offer)
            .await
            .context("set the publish offer as local description")?;
        peer::wait_gathered(&mut events.gathering, super::REPLY_TIMEOUT).await?;
        let sdp = pc
            .local_description()
            .await
            .context("no local description after set_local_description")?
            .sdp;

        for entry in &mut tracks {
            entry.mid = entry
                .transceiver
                .mid()
                .await
                .context("transceiver mid")?
                .ok_or_else(|| anyhow!("transceiver for {} has no mid", entry.source.as_str()))?;
        }
        Ok(Self {
            pc,
            events,
            tracks,
            sdp,
        })
    }

    /// The `tracks` list of a `publish` message: every sending section with its source.
    pub fn tracks_json(&self) -> Value {
        Value::Array(
            self.tracks
                .iter()
                .map(|track| json!({"mid": track.mid, "source": track.source.as_str()}))
                .collect(),
        )
    }

    /// The `publish` message for this offer (no `id`; `Signal::request` adds one).
    pub fn message(&self) -> Value {
        json!({"type": "publish", "sdp": self.sdp, "tracks": self.tracks_json()})
    }

    /// The mids of the offer's sections, in the order the sources were given.
    pub fn mids(&self) -> Vec<String> {
        self.tracks.iter().map(|track| track.mid.clone()).collect()
    }

    /// Closes the connection without completing it (the offer was refused).
    pub async fn abandon(self) {
        let _ = self.pc.close().await;
    }

    /// Applies the server's `publish_answer` and waits until the connection is up.
    pub async fn complete(mut self, reply: &Value) -> Result<Arc<Publisher>> {
        apply_publish_answer(&self.pc, reply).await?;

        let answered: HashMap<String, String> = reply
            .get("tracks")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("publish_answer without tracks: {reply}"))?
            .iter()
            .filter_map(|track| {
                Some((
                    track.get("mid")?.as_str()?.to_owned(),
                    track.get("track_id")?.as_str()?.to_owned(),
                ))
            })
            .collect();

        peer::wait_connected(&mut self.events.connection, super::CONNECT_TIMEOUT)
            .await
            .context("publish connection")?;

        let mut published = Vec::new();
        for OfferedTrack {
            source,
            mid,
            ssrc,
            local,
            transceiver,
        } in self.tracks
        {
            let track_id = answered.get(&mid).cloned().ok_or_else(|| {
                anyhow!(
                    "publish_answer names no track for mid {mid} ({}): {reply}",
                    source.as_str()
                )
            })?;
            let sender = transceiver
                .sender()
                .await
                .context("transceiver sender")?
                .ok_or_else(|| anyhow!("no sender on the {} transceiver", source.as_str()))?;
            let parameters = sender.get_parameters().await.context("sender parameters")?;
            let wanted = match source.kind() {
                "audio" => super::peer::opus_codec().mime_type,
                _ => super::peer::vp8_codec().mime_type,
            };
            let payload_type = parameters
                .rtp_parameters
                .codecs
                .iter()
                .find(|codec| codec.rtp_codec.mime_type.eq_ignore_ascii_case(&wanted))
                .map(|codec| codec.payload_type)
                .ok_or_else(|| {
                    anyhow!(
                        "{wanted} was not negotiated for {} (codecs: {:?})",
                        source.as_str(),
                        parameters.rtp_parameters.codecs
                    )
                })?;
            let mid_extension = parameters
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|ext| ext.uri == rtc::sdp::extmap::SDES_MID_URI)
                .map(|ext| ext.id as u8);
            let audio_level_extension = parameters
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|ext| ext.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)
                .map(|ext| ext.id as u8);
            published.push(PublishedTrack {
                source,
                mid,
                ssrc,
                track_id,
                payload_type,
                mid_extension,
                audio_level_extension,
                audio_level: AtomicU8::new(NO_AUDIO_LEVEL),
                local,
                // Start close to the wrap so every stream crosses it within seconds.
                next_sequence: tokio::sync::Mutex::new(u16::MAX - 150),
            });
        }

        let publisher = Arc::new(Publisher {
            pc: self.pc,
            tracks: published,
            shared: Arc::new(PublisherShared::default()),
            answer: reply.clone(),
            rtcp_task: Mutex::new(None),
        });

        let shared = Arc::clone(&publisher.shared);
        let by_ssrc: HashMap<u32, Source> = publisher
            .tracks
            .iter()
            .map(|track| (track.ssrc, track.source))
            .collect();
        let mut feedback = self.events.feedback;
        let task = tokio::spawn(async move {
            while let Some(item) = feedback.recv().await {
                let source = by_ssrc.get(&item.media_ssrc).copied();
                shared.feedback.lock().unwrap().push((source, item));
                shared.notify.notify_waiters();
            }
        });
        *publisher.rtcp_task.lock().unwrap() = Some(task);
        // Keep the connection state receiver alive for `state()`.
        *publisher.shared.connection.lock().unwrap() = Some(self.events.connection);
        Ok(publisher)
    }
}

#[derive(Default)]
struct PublisherShared {
    /// Inbound PLI/FIR/NACK, with the source whose SSRC they name (None: an unknown SSRC).
    feedback: Mutex<Vec<(Option<Source>, Feedback)>>,
    sent: Mutex<HashMap<Source, Vec<SentPacket>>>,
    notify: Notify,
    connection: Mutex<Option<tokio::sync::watch::Receiver<RTCPeerConnectionState>>>,
}

/// A connected publish connection.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    tracks: Vec<PublishedTrack>,
    shared: Arc<PublisherShared>,
    /// The `publish_answer` the server sent.
    pub answer: Value,
    rtcp_task: Mutex<Option<JoinHandle<()>>>,
}

impl Publisher {
    pub fn track(&self, source: Source) -> Result<&PublishedTrack> {
        self.tracks
            .iter()
            .find(|track| track.source == source)
            .ok_or_else(|| anyhow!("{} is not published", source.as_str()))
    }

    pub fn tracks(&self) -> &[PublishedTrack] {
        &self.tracks
    }

    /// The server's track id for `source`.
    pub fn track_id(&self, source: Source) -> Result<String> {
        Ok(self.track(source)?.track_id.clone())
    }

    /// From the next packet on, `source`'s packets carry this RFC 6464 audio level (-dBov:
    /// [`SPEAKING`], [`SILENT`]), or none with [`NO_AUDIO_LEVEL`]. Fails if the server did not
    /// accept the extension for that track.
    pub fn set_audio_level(&self, source: Source, level: u8) -> Result<()> {
        let track = self.track(source)?;
        if track.audio_level_extension.is_none() && level != NO_AUDIO_LEVEL {
            bail!(
                "the audio level extension was not negotiated for {}",
                source.as_str()
            );
        }
        track.audio_level.store(level, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one RTP packet on `source`'s track with the next sequence number; returns what was
    /// sent (it is also logged, see [`Publisher::sent`]).
    pub async fn send_rtp(
        &self,
        source: Source,
        payload: Bytes,
        timestamp: u32,
        marker: bool,
    ) -> Result<SentPacket> {
        let track = self.track(source)?;
        let mut next_sequence = track.next_sequence.lock().await;
        let sequence_number = *next_sequence;
        let mut header = rtp::Header {
            version: 2,
            marker,
            payload_type: track.payload_type,
            sequence_number,
            timestamp,
            ssrc: track.ssrc,
            ..Default::default()
        };
        if let Some(id) = track.mid_extension {
            header
                .set_extension(id, Bytes::from(track.mid.clone()))
                .context("set the mid header extension")?;
        }
        let level = track.audio_level.load(Ordering::Relaxed);
        if let Some(id) = track.audio_level_extension
            && level != NO_AUDIO_LEVEL
        {
            // One byte: the voice-activity flag, then the level (RFC 6464 §3).
            let voice = if level < SILENT { 0x80 } else { 0 };
            header
                .set_extension(id, Bytes::from(vec![voice | (level & 0x7f)]))
                .context("set the audio level header extension")?;
        }
        let sent = SentPacket {
            ssrc: track.ssrc,
            sequence_number,
            timestamp,
            marker,
            payload: payload.clone(),
            at: Instant::now(),
        };
        track
            .local
            .write_rtp(rtp::Packet { header, payload })
            .await
            .with_context(|| format!("write RTP on {}", source.as_str()))?;
        self.shared
            .sent
            .lock()
            .unwrap()
            .entry(source)
            .or_default()
            .push(sent.clone());
        *next_sequence = sequence_number.wrapping_add(1);
        Ok(sent)
    }

    /// Everything sent on `source` so far, in order.
    pub fn sent(&self, source: Source) -> Vec<SentPacket> {
        self.shared
            .sent
            .lock()
            .unwrap()
            .get(&source)
            .cloned()
            .unwrap_or_default()
    }

    /// How many keyframe requests (PLI + FIR) the server has sent for `source`.
    pub fn keyframe_requests(&self, source: Source) -> usize {
        self.keyframe_request_times(source).len()
    }

    /// When each keyframe request for `source` arrived.
    pub fn keyframe_request_times(&self, source: Source) -> Vec<Instant> {
        self.shared
            .feedback
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, f)| *s == Some(source) && f.kind.is_keyframe_request())
            .map(|(_, f)| f.at)
            .collect()
    }

    /// How many lost packets the server has reported (NACK) for `source`.
    pub fn nacked_packets(&self, source: Source) -> usize {
        self.shared
            .feedback
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == Some(source))
            .map(|(_, f)| match f.kind {
                FeedbackKind::Nack(lost) => lost,
                _ => 0,
            })
            .sum()
    }

    /// Feedback naming an SSRC this client does not send (should not happen).
    pub fn stray_feedback(&self) -> Vec<Feedback> {
        self.shared
            .feedback
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s.is_none())
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Waits until more than `count` keyframe requests for `source` have arrived.
    pub async fn wait_keyframe_requests(
        &self,
        source: Source,
        count: usize,
        timeout: Duration,
    ) -> Result<usize> {
        wait_for(
            &self.shared.notify,
            timeout,
            || {
                format!(
                    "more than {count} keyframe requests for {} (have {})",
                    source.as_str(),
                    self.keyframe_requests(source)
                )
            },
            || {
                let now = self.keyframe_requests(source);
                (now > count).then_some(now)
            },
        )
        .await
    }

    /// The state of the publish connection.
    pub fn state(&self) -> RTCPeerConnectionState {
        self.shared
            .connection
            .lock()
            .unwrap()
            .as_ref()
            .map(|rx| *rx.borrow())
            .unwrap_or(RTCPeerConnectionState::Unspecified)
    }

    pub async fn close(&self) {
        if let Some(task) = self.rtcp_task.lock().unwrap().take() {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

/// Checks that `reply` is a `publish_answer` and applies its SDP to the publish connection
/// (shared by the single-encoding and the simulcast publisher).
pub async fn apply_publish_answer(pc: &Arc<dyn PeerConnection>, reply: &Value) -> Result<()> {
    if !super::is_type(reply, "publish_answer") {
        bail!("publish was not answered with publish_answer: {reply}");
    }
    let sdp = reply
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("publish_answer without sdp: {reply}"))?;
    let answer = RTCSessionDescription::answer(sdp.to_owned())
        .context("the publish_answer SDP does not parse as an answer")?;
    pc.set_remote_description(answer)
        .await
        .with_context(|| format!("apply the publish_answer SDP:\n{sdp}"))?;
    super::peer::trickle_tcp_candidates(pc, sdp).await?;
    Ok(())
}
