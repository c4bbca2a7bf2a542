//! Building webrtc-rs peer connections the way the test client needs them.
//!
//! * Codecs: Opus 48 kHz/2 (PT 111) and one video codec — VP8 90 kHz (PT 96) by default, or
//!   H264 90 kHz (PT 102, constrained baseline, packetization-mode 1) with [`build_with`] — with
//!   `nack`, `nack pli` and `ccm fir` feedback on video: what a browser offers for the server's
//!   purposes.
//! * Interceptors: webrtc-rs's defaults (NACK, RTCP reports, TWCC receiver, mid/rid extensions),
//!   plus [`KeyframeRequestTap`] at the application end of the chain, which reports inbound
//!   PLI/FIR on a channel (webrtc-rs hands inbound RTCP to the application only when an
//!   interceptor marks it, and a channel keyed by media SSRC is simpler than that routing).
//! * One UDP socket on 127.0.0.1: the server under test listens on loopback.

use anyhow::{Context, Result, bail};
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::{
    Registry, Slot, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::runtime::TokioRuntime;

pub const OPUS_PAYLOAD_TYPE: u8 = 111;
pub const VP8_PAYLOAD_TYPE: u8 = 96;
pub const H264_PAYLOAD_TYPE: u8 = 102;

/// The one video codec a test peer registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VideoCodec {
    #[default]
    Vp8,
    /// H264 constrained baseline (42e01f), packetization-mode 1 (RFC 6184 non-interleaved).
    H264,
}

impl VideoCodec {
    pub fn codec(self) -> RTCRtpCodec {
        match self {
            VideoCodec::Vp8 => vp8_codec(),
            VideoCodec::H264 => h264_codec(),
        }
    }

    /// The payload type this side registers (the answer may use the offerer's numbers).
    pub fn payload_type(self) -> u8 {
        match self {
            VideoCodec::Vp8 => VP8_PAYLOAD_TYPE,
            VideoCodec::H264 => H264_PAYLOAD_TYPE,
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => MIME_TYPE_VP8,
            VideoCodec::H264 => MIME_TYPE_H264,
        }
    }
}

pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

pub fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![],
    }
}

fn media_engine(video: VideoCodec) -> Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .context("register Opus")?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: video.codec(),
                payload_type: video.payload_type(),
            },
            RtpCodecKind::Video,
        )
        .with_context(|| format!("register {}", video.mime_type()))?;
    // RTX (RFC 4588), as every browser offers it: the server retransmits on its own SSRC and,
    // above all, pads on it when it probes for more bandwidth, so the estimate towards these
    // clients ramps as it does towards a browser.
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={}", video.payload_type()),
                    rtcp_feedback: vec![],
                },
                payload_type: video.payload_type() + 1,
            },
            RtpCodecKind::Video,
        )
        .context("register RTX")?;
    engine.register_feedback(
        RTCPFeedback {
            typ: "ccm".to_owned(),
            parameter: "fir".to_owned(),
        },
        RtpCodecKind::Video,
    );
    // The defaults register the mid extension for video only; browsers use it on audio too.
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::SDES_MID_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .context("register the mid extension for audio")?;
    // RFC 6464 audio level, as browsers send it: a test publisher "speaks" or is silent by the
    // level it writes (Publisher::set_audio_level), which the server's active-speaker detection
    // reads.
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .context("register the audio level extension")?;
    Ok(engine)
}

/// State changes and remote tracks of one peer connection.
pub struct PeerEvents {
    pub connection: watch::Receiver<RTCPeerConnectionState>,
    pub gathering: watch::Receiver<RTCIceGatheringState>,
    /// Inbound PLI, FIR and NACK, with the media SSRC they name.
    pub feedback: mpsc::UnboundedReceiver<Feedback>,
}

struct Handler {
    connection: watch::Sender<RTCPeerConnectionState>,
    gathering: watch::Sender<RTCIceGatheringState>,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(target: "test_client", "peer connection state: {state}");
        self.connection.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tracks) = &self.tracks {
            let _ = tracks.send(track);
        }
    }
}

/// When set, every peer connection built afterwards has only a TCP socket (ICE-TCP, active
/// candidates) and no UDP one. Process-wide, so set it only through [`TcpOnly`], which clears it
/// when the test ends: every test file shares this binary (tests run one at a time).
pub static TCP_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Every client built while this lives goes over ICE-TCP only ([`TCP_ONLY`]).
#[must_use = "clients are TCP-only only while the guard lives"]
pub struct TcpOnly(());

impl TcpOnly {
    pub fn on() -> TcpOnly {
        TCP_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
        TcpOnly(())
    }
}

impl Drop for TcpOnly {
    fn drop(&mut self) {
        TCP_ONLY.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// webrtc-rs dials a remote passive TCP candidate only when it is trickled
/// (`add_ice_candidate`), not when it comes in a description; with [`TCP_ONLY`], this hands it
/// the server's TCP candidates from `sdp` that way, after the description is applied.
pub async fn trickle_tcp_candidates(pc: &Arc<dyn PeerConnection>, sdp: &str) -> Result<()> {
    if !TCP_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for line in sdp.lines() {
        let Some(candidate) = line.trim().strip_prefix("a=") else {
            continue;
        };
        if !candidate.starts_with("candidate:")
            || !candidate.contains(" tcp ")
            || !candidate.contains("tcptype passive")
            || !seen.insert(candidate.to_owned())
        {
            continue;
        }
        let init = rtc::peer_connection::transport::RTCIceCandidateInit {
            candidate: candidate.to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            ..Default::default()
        };
        pc.add_ice_candidate(init)
            .await
            .with_context(|| format!("add {candidate}"))?;
    }
    Ok(())
}

/// Builds a peer connection on 127.0.0.1 with Opus and VP8. Remote tracks go to `tracks` if
/// given.
pub async fn build(
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
) -> Result<(Arc<dyn PeerConnection>, PeerEvents)> {
    build_with(VideoCodec::Vp8, tracks).await
}

/// Like [`build`], with `video` as the only video codec.
pub async fn build_with(
    video: VideoCodec,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
) -> Result<(Arc<dyn PeerConnection>, PeerEvents)> {
    let mut engine = media_engine(video)?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)
        .context("register the default interceptors")?;
    let (request_tx, request_rx) = mpsc::unbounded_channel();
    let registry = registry.with(Slot::from(14_000), KeyframeRequestTap::new(request_tx));

    let (connection_tx, connection_rx) = watch::channel(RTCPeerConnectionState::New);
    let (gathering_tx, gathering_rx) = watch::channel(RTCIceGatheringState::New);
    let handler = Arc::new(Handler {
        connection: connection_tx,
        gathering: gathering_tx,
        tracks,
    });

    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(if TCP_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
            Vec::new()
        } else {
            vec!["127.0.0.1:0".to_owned()]
        })
        .with_tcp_addrs(if TCP_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
            vec!["127.0.0.1:0".to_owned()]
        } else {
            Vec::new()
        })
        .build()
        .await
        .context("build the peer connection")?;
    Ok((
        Arc::new(pc) as Arc<dyn PeerConnection>,
        PeerEvents {
            connection: connection_rx,
            gathering: gathering_rx,
            feedback: request_rx,
        },
    ))
}

/// Waits until ICE gathering is complete, so the local description carries its candidates
/// (the protocol has no trickle ICE).
pub async fn wait_gathered(
    gathering: &mut watch::Receiver<RTCIceGatheringState>,
    timeout: Duration,
) -> Result<()> {
    tokio::time::timeout(
        timeout,
        gathering.wait_for(|state| *state == RTCIceGatheringState::Complete),
    )
    .await
    .context("ICE gathering did not complete in time")?
    .context("peer connection gone while gathering")?;
    Ok(())
}

/// Waits until the peer connection is `connected` (ICE + DTLS done). Fails early on `failed`
/// or `closed`.
pub async fn wait_connected(
    connection: &mut watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
) -> Result<()> {
    let waited = tokio::time::timeout(
        timeout,
        connection.wait_for(|state| {
            matches!(
                state,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await
    .map(|result| result.map(|state| *state));
    let state = match waited {
        Ok(result) => result.context("peer connection gone")?,
        Err(_) => bail!(
            "peer connection not connected after {timeout:?} (state {})",
            *connection.borrow()
        ),
    };
    if state != RTCPeerConnectionState::Connected {
        bail!("peer connection ended up {state} instead of connected");
    }
    Ok(())
}

/// Inbound feedback about a stream this peer sends.
#[derive(Debug, Clone)]
pub struct Feedback {
    /// The SSRC the feedback is about.
    pub media_ssrc: u32,
    pub kind: FeedbackKind,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackKind {
    /// Picture loss indication: a keyframe request.
    Pli,
    /// Full intra request: a keyframe request.
    Fir,
    /// Generic NACK naming this many lost packets.
    Nack(usize),
}

impl FeedbackKind {
    pub fn is_keyframe_request(self) -> bool {
        matches!(self, FeedbackKind::Pli | FeedbackKind::Fir)
    }
}

/// The last interceptor in the chain: reports every inbound PLI, FIR and NACK on a channel, with
/// the media SSRC it names. Inbound RTCP ends here, as it would at the end of the chain anyway
/// (webrtc-rs delivers RTCP to the application only when an interceptor marks it).
pub struct KeyframeRequestTap {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    requests: mpsc::UnboundedSender<Feedback>,
}

impl KeyframeRequestTap {
    pub fn new(requests: mpsc::UnboundedSender<Feedback>) -> Self {
        Self {
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            requests,
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                let any = packet.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    let _ = self.requests.send(Feedback {
                        media_ssrc: pli.media_ssrc,
                        kind: FeedbackKind::Pli,
                        at: Instant::now(),
                    });
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    for entry in &fir.fir {
                        let _ = self.requests.send(Feedback {
                            media_ssrc: entry.ssrc,
                            kind: FeedbackKind::Fir,
                            at: Instant::now(),
                        });
                    }
                } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    let lost = nack
                        .nacks
                        .iter()
                        .map(|pair| 1 + pair.lost_packets.count_ones() as usize)
                        .sum();
                    let _ = self.requests.send(Feedback {
                        media_ssrc: nack.media_ssrc,
                        kind: FeedbackKind::Nack(lost),
                        at: Instant::now(),
                    });
                }
            }
            // Every interceptor before this one has acted on the RTCP; the application reads
            // keyframe requests from the channel, so nothing needs to travel further.
            return Ok(());
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
