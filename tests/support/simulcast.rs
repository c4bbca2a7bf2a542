//! A simulcast publisher, as a browser with a camera would be one: VP8 in three rid encodings
//! `q`, `h`, `f` (1/4, 1/2 and full resolution, offered lowest first: `a=simulcast:send q;h;f`),
//! each with three temporal layers (L1T3), plus Opus.
//!
//! How webrtc-rs 0.21 sends simulcast (from its sources, `rtc` 0.21): a `MediaStreamTrack` with
//! several codings that all have a rid (and an SSRC) makes `add_transceiver_from_track` derive one
//! send encoding per coding; the offer then has `a=rid:<rid> send` for each and
//! `a=simulcast:send q;h;f` in coding order, and no `a=ssrc` lines (unless the setting engine's
//! `write_ssrc_attributes_for_simulcast` is set). `TrackLocalStaticRTP::write_rtp` takes packets of
//! any of the codings' SSRCs. It adds no header extensions by itself: the packets carry the
//! `sdes:mid` and `sdes:rtp-stream-id` extensions because [`SimulcastPublisher`] puts them in,
//! with the ids negotiated for the sender — that is how the server tells the rids apart.
//!
//! Frames are synthetic but well formed for an SFU (RFC 7741): every packet has the extended
//! payload descriptor with a 15-bit PictureID (per layer, +1 per frame), TL0PICIDX and TID/Y
//! (pattern 0,2,1,2 from each keyframe); the first packet of a frame has S=1 and a VP8 frame tag
//! (keyframes with start code and the layer's dimensions). After the codec headers every payload
//! carries a [`SimTag`]: rid, frame number, packet index and count, and the send time — so a
//! subscriber can tell exactly what it got, whatever the server rewrote. Keyframes are sent at the
//! start and when a PLI/FIR names the rid's SSRC (and, if configured, periodically).
//!
//! The same publisher can send H264 instead ([`SimulcastOffer::create_with`] with
//! [`VideoCodec::H264`]: constrained baseline, packetization-mode 1), packetised per RFC 6184:
//! a keyframe is a STAP-A packet with SPS, PPS and an SEI (user data unregistered) carrying the
//! packet's [`SimTag`], then the IDR slice; a delta frame is one non-IDR slice. A slice that does
//! not fit in `max_packet` is split into FU-A fragments. The tag follows the NAL (or FU-A)
//! header of every slice packet. H264 has no temporal layers in its payload: the L1T3 pattern
//! only shapes frame sizes.
//!
//! The second half of the module reads what a subscriber received: [`Vp8Descriptor`],
//! [`H264Payload`], [`SimTag`], and [`analyse_video`] / [`analyse_video_codec`], which check the
//! stream a decoder would get.

use super::media::opus_payload;
use super::peer::{self, Feedback, PeerEvents, VideoCodec};
use super::subscriber::RecvPacket;
use anyhow::{Context, Result, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use classroom_sfu::core::vp8::{l1t3 as temporal, l1t3_size_weight as size_weight};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpTransceiver;

/// A simulcast encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rid {
    Q,
    H,
    F,
}

impl Rid {
    /// Lowest first, the order of the offer.
    pub const ALL: [Rid; 3] = [Rid::Q, Rid::H, Rid::F];

    pub fn as_str(self) -> &'static str {
        match self {
            Rid::Q => "q",
            Rid::H => "h",
            Rid::F => "f",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    fn letter(self) -> u8 {
        self.as_str().as_bytes()[0]
    }

    fn from_letter(letter: u8) -> Option<Rid> {
        Rid::ALL.into_iter().find(|rid| rid.letter() == letter)
    }

    /// Frame size: 1/4, 1/2 and full of 1280x720.
    pub fn dimensions(self) -> (u16, u16) {
        match self {
            Rid::Q => (320, 180),
            Rid::H => (640, 360),
            Rid::F => (1280, 720),
        }
    }
}

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the publisher sends.
#[derive(Debug, Clone)]
pub struct SimulcastConfig {
    /// Average bitrate of each encoding (payload bytes), q/h/f.
    pub bitrates: [u64; 3],
    pub fps: u32,
    /// Largest RTP payload.
    pub max_packet: usize,
    /// A keyframe on every layer this often, besides the ones asked for.
    pub keyframe_interval: Option<Duration>,
    /// Opus payload size per 20 ms packet.
    pub audio_bytes: usize,
}

impl Default for SimulcastConfig {
    fn default() -> Self {
        Self {
            bitrates: [150_000, 500_000, 1_500_000],
            fps: 30,
            max_packet: 1100,
            keyframe_interval: None,
            audio_bytes: 80,
        }
    }
}

const TAG: &[u8; 3] = b"SIM";
/// Bytes of a [`SimTag`] on the wire.
const TAG_LEN: usize = 3 + 1 + 4 + 1 + 1 + 8;

/// What every simulcast test payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimTag {
    pub rid: Rid,
    /// Frame number on this layer, from 0.
    pub frame: u32,
    pub index: u8,
    pub count: u8,
    /// Microseconds since the Unix epoch when the publisher sent it.
    pub sent_us: u64,
}

impl SimTag {
    fn put(&self, buf: &mut BytesMut) {
        buf.put_slice(TAG);
        buf.put_u8(self.rid.letter());
        buf.put_u32(self.frame);
        buf.put_u8(self.index);
        buf.put_u8(self.count);
        buf.put_u64(self.sent_us);
    }

    /// Finds the tag in a payload (after the codec headers).
    pub fn parse(payload: &[u8]) -> Option<SimTag> {
        // Within the codec headers: VP8's descriptor, or H264's STAP-A with SPS, PPS and SEI.
        let at = payload.windows(TAG.len()).take(64).position(|w| w == TAG)?;
        let tag = payload.get(at..at + TAG_LEN)?;
        Some(SimTag {
            rid: Rid::from_letter(tag[3])?,
            frame: u32::from_be_bytes(tag[4..8].try_into().ok()?),
            index: tag[8],
            count: tag[9],
            sent_us: u64::from_be_bytes(tag[10..18].try_into().ok()?),
        })
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The VP8 payload descriptor (RFC 7741 §4.2) and, on a partition start, the frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: start of a VP8 partition.
    pub start: bool,
    pub partition: u8,
    pub picture_id: Option<u16>,
    /// Whether the PictureID is the 15-bit form.
    pub long_picture_id: bool,
    pub tl0picidx: Option<u8>,
    pub tid: Option<u8>,
    pub layer_sync: bool,
    /// S=1, partition 0 and the frame tag's P bit clear.
    pub keyframe_start: bool,
}

impl Vp8Descriptor {
    pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
        let first = *payload.first()?;
        let mut d = Vp8Descriptor {
            start: first & 0x10 != 0,
            partition: first & 0x07,
            picture_id: None,
            long_picture_id: false,
            tl0picidx: None,
            tid: None,
            layer_sync: false,
            keyframe_start: false,
        };
        let mut at = 1;
        if first & 0x80 != 0 {
            let x = *payload.get(at)?;
            at += 1;
            if x & 0x80 != 0 {
                let b = *payload.get(at)?;
                if b & 0x80 != 0 {
                    d.picture_id = Some(u16::from_be_bytes([b & 0x7f, *payload.get(at + 1)?]));
                    d.long_picture_id = true;
                    at += 2;
                } else {
                    d.picture_id = Some(u16::from(b));
                    at += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0picidx = Some(*payload.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let b = *payload.get(at)?;
                if x & 0x20 != 0 {
                    d.tid = Some(b >> 6);
                    d.layer_sync = b & 0x20 != 0;
                }
                at += 1;
            }
        }
        d.keyframe_start = d.start && d.partition == 0 && payload.get(at)? & 0x01 == 0;
        Some(d)
    }
}

/// The RTP payloads of one frame of `rid`.
#[allow(clippy::too_many_arguments)]
pub fn vp8_simulcast_frame(
    rid: Rid,
    frame: u32,
    keyframe: bool,
    picture_id: u16,
    tl0picidx: u8,
    tid: u8,
    layer_sync: bool,
    size: usize,
    max_packet: usize,
) -> Vec<Bytes> {
    let count = size.div_ceil(max_packet).clamp(1, 255);
    let per_packet = size.div_ceil(count);
    let sent_us = now_us();
    (0..count)
        .map(|index| {
            let mut buf = BytesMut::with_capacity(per_packet + 32);
            // X=1, N=0, S on the first packet, PID=0.
            buf.put_u8(0x80 | if index == 0 { 0x10 } else { 0 });
            // I, L, T present; K absent.
            buf.put_u8(0x80 | 0x40 | 0x20);
            buf.put_u16(0x8000 | (picture_id & 0x7fff));
            buf.put_u8(tl0picidx);
            buf.put_u8((tid << 6) | if layer_sync { 0x20 } else { 0 });
            if index == 0 {
                // Frame tag: P (0 = keyframe), version 0, show_frame, first partition size.
                let first_partition: u32 = 120;
                let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
                buf.put_u8(tag as u8);
                buf.put_u8((tag >> 8) as u8);
                buf.put_u8((tag >> 16) as u8);
                if keyframe {
                    let (width, height) = rid.dimensions();
                    buf.put_slice(&[0x9d, 0x01, 0x2a]);
                    buf.put_u16_le(width);
                    buf.put_u16_le(height);
                }
            }
            SimTag {
                rid,
                frame,
                index: index as u8,
                count: count as u8,
                sent_us,
            }
            .put(&mut buf);
            let mut value = frame.wrapping_mul(31).wrapping_add(index as u32 * 7) as u8;
            while buf.len() < per_packet {
                buf.put_u8(value);
                value = value.wrapping_add(1);
            }
            buf.freeze()
        })
        .collect()
}

// ---- H264 (RFC 6184) ----

/// NAL unit types used here.
pub mod nal {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const STAP_A: u8 = 24;
    pub const FU_A: u8 = 28;
}

/// Writes Exp-Golomb coded fields, MSB first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: u32,
}

impl BitWriter {
    fn bit(&mut self, bit: bool) {
        if self.bits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().expect("a byte was pushed") |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    fn bits(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.bit(value >> i & 1 == 1);
        }
    }

    fn ue(&mut self, value: u32) {
        let coded = value + 1;
        let len = 32 - coded.leading_zeros();
        self.bits(0, len - 1);
        self.bits(coded, len);
    }

    /// rbsp_trailing_bits, then emulation prevention (00 00 0x with x <= 3 gets a 03).
    fn finish(mut self) -> Vec<u8> {
        self.bit(true);
        let mut out = Vec::with_capacity(self.bytes.len() + 2);
        let mut zeros = 0;
        for byte in self.bytes {
            if zeros >= 2 && byte <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if byte == 0 { zeros + 1 } else { 0 };
            out.push(byte);
        }
        out
    }
}

/// A sequence parameter set for constrained baseline level 3.1 (profile-level-id 42e01f) at the
/// rid's dimensions (cropped from whole macroblocks), POC type 2, one reference frame.
pub fn h264_sps(rid: Rid) -> Vec<u8> {
    let (width, height) = rid.dimensions();
    let (mbs_w, mbs_h) = (
        u32::from(width).div_ceil(16),
        u32::from(height).div_ceil(16),
    );
    let mut w = BitWriter::default();
    w.bits(66, 8); // profile_idc: baseline
    w.bits(0xe0, 8); // constraint_set0..2 (constrained baseline)
    w.bits(31, 8); // level_idc 3.1
    w.ue(0); // seq_parameter_set_id
    w.ue(0); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(mbs_w - 1); // pic_width_in_mbs_minus1
    w.ue(mbs_h - 1); // pic_height_in_map_units_minus1
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    let crop_right = (mbs_w * 16 - u32::from(width)) / 2;
    let crop_bottom = (mbs_h * 16 - u32::from(height)) / 2;
    w.bit(crop_right > 0 || crop_bottom > 0); // frame_cropping_flag
    if crop_right > 0 || crop_bottom > 0 {
        w.ue(0);
        w.ue(crop_right);
        w.ue(0);
        w.ue(crop_bottom);
    }
    w.bit(false); // vui_parameters_present_flag
    let mut sps = vec![0x60 | nal::SPS];
    sps.extend(w.finish());
    sps
}

/// The picture parameter set that goes with [`h264_sps`] (id 0, CAVLC, one slice group).
const H264_PPS: [u8; 4] = [0x60 | nal::PPS, 0xce, 0x3c, 0x80];

/// UUID of the SEI user data that carries the [`SimTag`] in a keyframe's STAP-A.
const SEI_UUID: [u8; 16] = *b"classroom-simtag";

/// The RTP payloads of one H264 frame of `rid` whose slice is about `size` bytes: for a
/// keyframe, a STAP-A with SPS, PPS and a tag SEI, then the IDR slice; otherwise a non-IDR slice.
/// A slice larger than `max_packet` goes as FU-A fragments. Every payload carries a [`SimTag`].
pub fn h264_simulcast_frame(
    rid: Rid,
    frame: u32,
    keyframe: bool,
    size: usize,
    max_packet: usize,
) -> Vec<Bytes> {
    let sent_us = now_us();
    let slice_packets = size.div_ceil(max_packet).clamp(1, 254);
    let per_packet = size.div_ceil(slice_packets);
    let count = slice_packets + usize::from(keyframe);
    let tag = |index: usize| SimTag {
        rid,
        frame,
        index: index as u8,
        count: count as u8,
        sent_us,
    };
    let mut payloads = Vec::with_capacity(count);
    if keyframe {
        let mut sei = BytesMut::with_capacity(4 + SEI_UUID.len() + TAG_LEN);
        sei.put_u8(nal::SEI); // NRI 0
        sei.put_u8(5); // payloadType: user_data_unregistered
        sei.put_u8((SEI_UUID.len() + TAG_LEN) as u8);
        sei.put_slice(&SEI_UUID);
        tag(0).put(&mut sei);
        sei.put_u8(0x80);
        let mut stap = BytesMut::with_capacity(64);
        stap.put_u8(0x60 | nal::STAP_A); // F=0, NRI = the highest of the units (3)
        for unit in [h264_sps(rid).as_slice(), &H264_PPS, &sei] {
            stap.put_u16(unit.len() as u16);
            stap.put_slice(unit);
        }
        payloads.push(stap.freeze());
    }
    // NRI 3 for IDR slices, 2 for the others (as encoders mark reference pictures).
    let header = if keyframe {
        0x60 | nal::IDR
    } else {
        0x40 | nal::SLICE
    };
    for fragment in 0..slice_packets {
        let index = payloads.len();
        let mut buf = BytesMut::with_capacity(per_packet + 32);
        if slice_packets == 1 {
            buf.put_u8(header);
        } else {
            buf.put_u8((header & 0x60) | nal::FU_A);
            let start = if fragment == 0 { 0x80 } else { 0 };
            let end = if fragment + 1 == slice_packets {
                0x40
            } else {
                0
            };
            buf.put_u8(start | end | (header & 0x1f));
        }
        tag(index).put(&mut buf);
        let mut value = frame.wrapping_mul(31).wrapping_add(index as u32 * 7) as u8;
        while buf.len() < per_packet {
            buf.put_u8(value);
            value = value.wrapping_add(1);
        }
        payloads.push(buf.freeze());
    }
    payloads
}

/// One video packet as the publisher sent it.
#[derive(Debug, Clone)]
pub struct SimSent {
    pub rid: Rid,
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub frame: u32,
    pub index: u8,
    pub keyframe: bool,
    /// VP8 only (H264 carries no PictureID or TID; the pattern only sizes the frames).
    pub picture_id: u16,
    pub tid: u8,
    pub bytes: usize,
    pub at: Instant,
}

/// A keyframe the publisher sent, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimKeyframe {
    pub rid: Rid,
    pub frame: u32,
    pub at: Instant,
    pub requested: bool,
}

struct OfferedVideo {
    codec: VideoCodec,
    mid: String,
    ssrcs: [u32; 3],
    local: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
}

struct OfferedAudio {
    mid: String,
    ssrc: u32,
    local: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
}

/// A simulcast publish offer not yet answered.
pub struct SimulcastOffer {
    pc: Arc<dyn PeerConnection>,
    events: PeerEvents,
    audio: OfferedAudio,
    video: OfferedVideo,
    pub sdp: String,
}

impl SimulcastOffer {
    /// Creates the publish connection: an Opus track and a VP8 track with the three rid
    /// encodings, both sendonly, and a complete local offer.
    pub async fn create() -> Result<Self> {
        Self::create_with(VideoCodec::Vp8).await
    }

    /// Like [`SimulcastOffer::create`], with `codec` as the (only) video codec.
    pub async fn create_with(codec: VideoCodec) -> Result<Self> {
        let (pc, mut events) = peer::build_with(codec, None).await?;

        let audio_ssrc = rand::random::<u32>() | 1;
        let audio_local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "test-simulcast-stream".to_owned(),
            "test-simulcast-microphone".to_owned(),
            "microphone".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(audio_ssrc),
                    ..Default::default()
                },
                codec: peer::opus_codec(),
                ..Default::default()
            }],
        )));
        let video_ssrcs: [u32; 3] = std::array::from_fn(|_| rand::random::<u32>() | 1);
        let video_local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "test-simulcast-stream".to_owned(),
            "test-simulcast-camera".to_owned(),
            "camera".to_owned(),
            RtpCodecKind::Video,
            Rid::ALL
                .iter()
                .zip(video_ssrcs)
                .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.as_str().to_owned(),
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec.codec(),
                    ..Default::default()
                })
                .collect(),
        )));

        let mut transceivers = Vec::new();
        for (what, local) in [("audio", &audio_local), ("video", &video_local)] {
            transceivers.push(
                pc.add_transceiver_from_track(
                    Arc::clone(local) as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        // Empty: derived from the track's codings (with their rids).
                        send_encodings: vec![],
                    }),
                )
                .await
                .with_context(|| format!("add the {what} transceiver"))?,
            );
        }

        let offer = pc
            .create_offer(None)
            .await
            .context("create the simulcast offer")?;
        pc.set_local_description(offer)
            .await
            .context("set the simulcast offer as local description")?;
        peer::wait_gathered(&mut events.gathering, super::REPLY_TIMEOUT).await?;
        let sdp = pc
            .local_description()
            .await
            .context("no local description after set_local_description")?
            .sdp;

        let mut mids = Vec::new();
        for transceiver in &transceivers {
            mids.push(
                transceiver
                    .mid()
                    .await
                    .context("transceiver mid")?
                    .ok_or_else(|| anyhow!("a transceiver has no mid after the offer"))?,
            );
        }
        let video_transceiver = transceivers.pop().expect("two transceivers");
        let audio_transceiver = transceivers.pop().expect("two transceivers");
        Ok(Self {
            pc,
            events,
            audio: OfferedAudio {
                mid: mids[0].clone(),
                ssrc: audio_ssrc,
                local: audio_local,
                transceiver: audio_transceiver,
            },
            video: OfferedVideo {
                codec,
                mid: mids[1].clone(),
                ssrcs: video_ssrcs,
                local: video_local,
                transceiver: video_transceiver,
            },
            sdp,
        })
    }

    pub fn audio_mid(&self) -> &str {
        &self.audio.mid
    }

    pub fn video_mid(&self) -> &str {
        &self.video.mid
    }

    /// The `publish` message for this offer.
    pub fn message(&self) -> Value {
        json!({
            "type": "publish",
            "sdp": self.sdp,
            "tracks": [
                {"mid": self.audio.mid, "source": "microphone"},
                {"mid": self.video.mid, "source": "camera"},
            ],
        })
    }

    pub async fn abandon(self) {
        let _ = self.pc.close().await;
    }

    /// Applies the `publish_answer` (or an answer in the same shape) and waits until connected.
    pub async fn complete(mut self, reply: &Value) -> Result<Arc<SimulcastPublisher>> {
        super::publisher::apply_publish_answer(&self.pc, reply).await?;
        let track_id = |mid: &str| -> Result<String> {
            reply
                .get("tracks")
                .and_then(Value::as_array)
                .and_then(|tracks| {
                    tracks.iter().find_map(|t| {
                        (t.get("mid")?.as_str()? == mid)
                            .then(|| t.get("track_id")?.as_str().map(str::to_owned))?
                    })
                })
                .ok_or_else(|| anyhow!("publish_answer names no track for mid {mid}: {reply}"))
        };
        let audio_track_id = track_id(&self.audio.mid)?;
        let video_track_id = track_id(&self.video.mid)?;

        peer::wait_connected(&mut self.events.connection, super::CONNECT_TIMEOUT)
            .await
            .context("simulcast publish connection")?;

        let audio_params = sender_params(&self.audio.transceiver, "audio").await?;
        let video_params = sender_params(&self.video.transceiver, "video").await?;
        let audio_pt = payload_type(&audio_params, &peer::opus_codec().mime_type)?;
        let video_pt = payload_type(&video_params, self.video.codec.mime_type())?;
        let audio_mid_ext = extension_id(&audio_params, rtc::sdp::extmap::SDES_MID_URI);
        let video_mid_ext = extension_id(&video_params, rtc::sdp::extmap::SDES_MID_URI);
        let rid_ext = extension_id(&video_params, rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI)
            .ok_or_else(|| {
                anyhow!(
                    "the rtp-stream-id extension was not negotiated for video: {:?}",
                    video_params.rtp_parameters.header_extensions
                )
            })?;

        let shared = Arc::new(SimShared {
            keyframe_wanted: std::array::from_fn(|_| AtomicBool::new(true)),
            ..Default::default()
        });
        let publisher = Arc::new(SimulcastPublisher {
            pc: self.pc,
            codec: self.video.codec,
            audio: Outgoing {
                mid: self.audio.mid,
                ssrc: self.audio.ssrc,
                payload_type: audio_pt,
                mid_ext: audio_mid_ext,
                rid_ext: None,
                rid: None,
                local: Arc::clone(&self.audio.local),
                next_sequence: tokio::sync::Mutex::new(rand::random()),
            },
            video: Rid::ALL.map(|rid| Outgoing {
                mid: self.video.mid.clone(),
                ssrc: self.video.ssrcs[rid.index()],
                payload_type: video_pt,
                mid_ext: video_mid_ext,
                rid_ext: Some(rid_ext),
                rid: Some(rid),
                local: Arc::clone(&self.video.local),
                next_sequence: tokio::sync::Mutex::new(rand::random()),
            }),
            audio_track_id,
            video_track_id,
            answer: reply.clone(),
            shared: Arc::clone(&shared),
            tasks: Mutex::new(Vec::new()),
        });

        let by_ssrc: HashMap<u32, Rid> = Rid::ALL
            .iter()
            .map(|&rid| (publisher.video[rid.index()].ssrc, rid))
            .collect();
        let mut feedback = self.events.feedback;
        let task = tokio::spawn(async move {
            while let Some(item) = feedback.recv().await {
                let rid = by_ssrc.get(&item.media_ssrc).copied();
                if let Some(rid) = rid
                    && item.kind.is_keyframe_request()
                {
                    shared.keyframe_wanted[rid.index()].store(true, Ordering::SeqCst);
                }
                shared.feedback.lock().unwrap().push((rid, item));
            }
        });
        publisher.tasks.lock().unwrap().push(task);
        Ok(publisher)
    }
}

async fn sender_params(
    transceiver: &Arc<dyn RtpTransceiver>,
    what: &str,
) -> Result<rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters> {
    let sender = transceiver
        .sender()
        .await
        .context("transceiver sender")?
        .ok_or_else(|| anyhow!("no sender on the {what} transceiver"))?;
    sender
        .get_parameters()
        .await
        .with_context(|| format!("{what} sender parameters"))
}

fn payload_type(
    params: &rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
    mime: &str,
) -> Result<u8> {
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|codec| codec.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|codec| codec.payload_type)
        .ok_or_else(|| {
            anyhow!(
                "{mime} was not negotiated (codecs: {:?})",
                params.rtp_parameters.codecs
            )
        })
}

fn extension_id(
    params: &rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
    uri: &str,
) -> Option<u8> {
    params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|ext| ext.uri == uri)
        .map(|ext| ext.id as u8)
}

/// One outgoing RTP stream (the audio, or one rid of the video).
struct Outgoing {
    mid: String,
    ssrc: u32,
    payload_type: u8,
    mid_ext: Option<u8>,
    rid_ext: Option<u8>,
    rid: Option<Rid>,
    local: Arc<TrackLocalStaticRTP>,
    next_sequence: tokio::sync::Mutex<u16>,
}

impl Outgoing {
    /// Sends one packet with the next sequence number; returns the sequence number.
    async fn send(&self, payload: Bytes, timestamp: u32, marker: bool) -> Result<u16> {
        let mut next = self.next_sequence.lock().await;
        let sequence_number = *next;
        let mut header = rtp::Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        if let Some(id) = self.mid_ext {
            header
                .set_extension(id, Bytes::from(self.mid.clone()))
                .context("set the mid extension")?;
        }
        if let (Some(id), Some(rid)) = (self.rid_ext, self.rid) {
            header
                .set_extension(id, Bytes::from_static(rid.as_str().as_bytes()))
                .context("set the rid extension")?;
        }
        self.local
            .write_rtp(rtp::Packet { header, payload })
            .await
            .with_context(|| format!("write RTP on ssrc {}", self.ssrc))?;
        *next = sequence_number.wrapping_add(1);
        Ok(sequence_number)
    }
}

#[derive(Default)]
struct SimShared {
    /// Set by a PLI/FIR for the rid's SSRC (and at the start); the pump sends a keyframe.
    keyframe_wanted: [AtomicBool; 3],
    feedback: Mutex<Vec<(Option<Rid>, Feedback)>>,
    sent: Mutex<Vec<SimSent>>,
    keyframes: Mutex<Vec<SimKeyframe>>,
    audio_sent: Mutex<Vec<Instant>>,
}

/// A connected simulcast publisher.
pub struct SimulcastPublisher {
    pc: Arc<dyn PeerConnection>,
    codec: VideoCodec,
    audio: Outgoing,
    video: [Outgoing; 3],
    pub audio_track_id: String,
    pub video_track_id: String,
    pub answer: Value,
    shared: Arc<SimShared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl SimulcastPublisher {
    /// The video codec it sends.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// The payload type the video is sent with (negotiated).
    pub fn video_payload_type(&self) -> u8 {
        self.video[0].payload_type
    }

    /// The SSRC `rid` is sent with.
    pub fn ssrc(&self, rid: Rid) -> u32 {
        self.video[rid.index()].ssrc
    }

    /// Every video packet sent so far.
    pub fn sent(&self) -> Vec<SimSent> {
        self.shared.sent.lock().unwrap().clone()
    }

    pub fn keyframes(&self) -> Vec<SimKeyframe> {
        self.shared.keyframes.lock().unwrap().clone()
    }

    /// Keyframe requests and keyframes sent per rid, a line each (for a test's log).
    pub fn keyframe_summary(&self) -> String {
        let keyframes = self.keyframes();
        Rid::ALL
            .iter()
            .map(|&rid| {
                format!(
                    "publisher: {} keyframe requests for {rid}, {} keyframes",
                    self.keyframe_requests(rid).len(),
                    keyframes.iter().filter(|k| k.rid == rid).count()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keyframe requests (PLI/FIR) received for `rid`, with their times.
    pub fn keyframe_requests(&self, rid: Rid) -> Vec<Instant> {
        self.shared
            .feedback
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, f)| *r == Some(rid) && f.kind.is_keyframe_request())
            .map(|(_, f)| f.at)
            .collect()
    }

    /// Feedback naming none of the video SSRCs (audio NACKs, or something unexpected).
    pub fn other_feedback(&self) -> Vec<Feedback> {
        self.shared
            .feedback
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r.is_none())
            .map(|(_, f)| f.clone())
            .collect()
    }

    pub fn audio_sent(&self) -> usize {
        self.shared.audio_sent.lock().unwrap().len()
    }

    /// The longest time between two audio packets the publisher sent (a stall on the sending
    /// side, as opposed to one in the server or on the path).
    pub fn longest_audio_send_gap(&self) -> Duration {
        self.shared
            .audio_sent
            .lock()
            .unwrap()
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Starts streaming: video at `config.fps` on all three rids, audio every 20 ms. Runs until
    /// [`SimulcastPublisher::close`].
    pub fn start(self: &Arc<Self>, config: SimulcastConfig) {
        let video = Arc::clone(self);
        let video_config = config.clone();
        let video_task = tokio::spawn(async move {
            if let Err(err) = video.video_loop(video_config).await {
                tracing::error!(target: "test_client", "simulcast video pump stopped: {err:#}");
            }
        });
        let audio = Arc::clone(self);
        let audio_task = tokio::spawn(async move {
            if let Err(err) = audio.audio_loop(config.audio_bytes).await {
                tracing::error!(target: "test_client", "simulcast audio pump stopped: {err:#}");
            }
        });
        self.tasks.lock().unwrap().extend([video_task, audio_task]);
    }

    async fn audio_loop(&self, bytes: usize) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let base: u32 = rand::random();
        for frame in 0u32.. {
            tick.tick().await;
            self.audio
                .send(
                    opus_payload(frame, bytes),
                    base.wrapping_add(frame.wrapping_mul(960)),
                    false,
                )
                .await?;
            self.shared.audio_sent.lock().unwrap().push(Instant::now());
        }
        Ok(())
    }

    async fn video_loop(&self, config: SimulcastConfig) -> Result<()> {
        struct LayerState {
            timestamp_base: u32,
            picture_id: u16,
            tl0picidx: u8,
            since_keyframe: u64,
            last_keyframe: Option<Instant>,
        }
        let mut layers: [LayerState; 3] = std::array::from_fn(|_| LayerState {
            timestamp_base: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0picidx: rand::random(),
            since_keyframe: 0,
            last_keyframe: None,
        });
        let period = Duration::from_secs_f64(1.0 / f64::from(config.fps));
        let ticks_per_frame = 90_000 / config.fps;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for frame in 0u32.. {
            tick.tick().await;
            for rid in Rid::ALL {
                let state = &mut layers[rid.index()];
                let requested =
                    self.shared.keyframe_wanted[rid.index()].swap(false, Ordering::SeqCst);
                let periodic = config
                    .keyframe_interval
                    .zip(state.last_keyframe)
                    .is_some_and(|(every, last)| last.elapsed() >= every);
                let keyframe = requested || periodic || state.last_keyframe.is_none();
                if keyframe {
                    state.since_keyframe = 0;
                    state.last_keyframe = Some(Instant::now());
                }
                let (tid, layer_sync) = temporal(state.since_keyframe);
                state.since_keyframe += 1;
                if tid == 0 {
                    state.tl0picidx = state.tl0picidx.wrapping_add(1);
                }
                state.picture_id = (state.picture_id + 1) & 0x7fff;
                let base = config.bitrates[rid.index()] as f64 / 8.0 / f64::from(config.fps);
                let weight = if keyframe {
                    2.0 * size_weight(0)
                } else {
                    size_weight(tid)
                };
                let size = (base * weight) as usize;
                let payloads = match self.codec {
                    VideoCodec::Vp8 => vp8_simulcast_frame(
                        rid,
                        frame,
                        keyframe,
                        state.picture_id,
                        state.tl0picidx,
                        tid,
                        layer_sync,
                        size,
                        config.max_packet,
                    ),
                    VideoCodec::H264 => {
                        h264_simulcast_frame(rid, frame, keyframe, size, config.max_packet)
                    }
                };
                let timestamp = state
                    .timestamp_base
                    .wrapping_add(frame.wrapping_mul(ticks_per_frame));
                let count = payloads.len();
                if keyframe {
                    self.shared.keyframes.lock().unwrap().push(SimKeyframe {
                        rid,
                        frame,
                        at: Instant::now(),
                        requested,
                    });
                }
                for (index, payload) in payloads.into_iter().enumerate() {
                    let bytes = payload.len();
                    let outgoing = &self.video[rid.index()];
                    let sequence_number = outgoing
                        .send(payload, timestamp, index + 1 == count)
                        .await?;
                    self.shared.sent.lock().unwrap().push(SimSent {
                        rid,
                        ssrc: outgoing.ssrc,
                        sequence_number,
                        timestamp,
                        frame,
                        index: index as u8,
                        keyframe,
                        picture_id: state.picture_id,
                        tid,
                        bytes,
                        at: Instant::now(),
                    });
                }
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

// ---- What a subscriber received ----

/// The structure of an H264 RTP payload (RFC 6184, packetization-mode 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Payload {
    /// 1-23: a single NAL unit of that type; 24: STAP-A; 28: FU-A.
    pub packet_type: u8,
    /// The type of each NAL unit inside (one for a single NAL or a FU-A fragment).
    pub nal_types: Vec<u8>,
    /// Whether the payload begins a NAL unit (always, except a FU-A fragment without S).
    pub starts_nal: bool,
    /// Whether it ends one (always, except a FU-A fragment without E).
    pub ends_nal: bool,
}

impl H264Payload {
    /// `None` for a packet type other than single NAL, STAP-A and FU-A, a forbidden bit set, or
    /// a STAP-A whose unit sizes do not add up.
    pub fn parse(payload: &[u8]) -> Option<H264Payload> {
        let first = *payload.first()?;
        if first & 0x80 != 0 {
            return None;
        }
        let packet_type = first & 0x1f;
        match packet_type {
            1..=23 => Some(H264Payload {
                packet_type,
                nal_types: vec![packet_type],
                starts_nal: true,
                ends_nal: true,
            }),
            nal::STAP_A => {
                let mut nal_types = Vec::new();
                let mut at = 1;
                while at < payload.len() {
                    let size = usize::from(u16::from_be_bytes([
                        *payload.get(at)?,
                        *payload.get(at + 1)?,
                    ]));
                    let unit = payload.get(at + 2..at + 2 + size)?;
                    nal_types.push(unit.first()? & 0x1f);
                    at += 2 + size;
                }
                (!nal_types.is_empty()).then_some(H264Payload {
                    packet_type,
                    nal_types,
                    starts_nal: true,
                    ends_nal: true,
                })
            }
            nal::FU_A => {
                let fu = *payload.get(1)?;
                Some(H264Payload {
                    packet_type,
                    nal_types: vec![fu & 0x1f],
                    starts_nal: fu & 0x80 != 0,
                    ends_nal: fu & 0x40 != 0,
                })
            }
            _ => None,
        }
    }

    pub fn is_fu_a(&self) -> bool {
        self.packet_type == nal::FU_A
    }

    /// Whether a decoder can start here: an IDR slice or an SPS begins in this payload.
    pub fn keyframe_start(&self) -> bool {
        self.starts_nal
            && self
                .nal_types
                .iter()
                .any(|&t| t == nal::IDR || t == nal::SPS)
    }
}

/// A received video packet, decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub packet: RecvPacket,
    /// VP8 streams only.
    pub descriptor: Option<Vp8Descriptor>,
    /// H264 streams only.
    pub h264: Option<H264Payload>,
    pub tag: Option<SimTag>,
}

impl Decoded {
    pub fn new(codec: VideoCodec, packet: RecvPacket) -> Decoded {
        let (descriptor, h264) = match codec {
            VideoCodec::Vp8 => (Vp8Descriptor::parse(&packet.payload), None),
            VideoCodec::H264 => (None, H264Payload::parse(&packet.payload)),
        };
        let tag = SimTag::parse(&packet.payload);
        Decoded {
            packet,
            descriptor,
            h264,
            tag,
        }
    }

    /// Whether the packet starts a keyframe; `None` if its codec payload does not parse.
    pub fn keyframe_start(&self) -> Option<bool> {
        match (&self.descriptor, &self.h264) {
            (Some(d), _) => Some(d.keyframe_start),
            (_, Some(h)) => Some(h.keyframe_start()),
            _ => None,
        }
    }
}

/// How many bytes of each rid arrived among `packets` with `at >= since`.
pub fn layer_bytes(packets: &[RecvPacket], since: Instant) -> BTreeMap<Rid, usize> {
    let mut bytes = BTreeMap::new();
    for packet in packets.iter().filter(|p| p.at >= since) {
        if let Some(tag) = SimTag::parse(&packet.payload) {
            *bytes.entry(tag.rid).or_default() += packet.payload.len();
        }
    }
    bytes
}

/// How many frames of each temporal layer (TID 0, 1, 2) began among `packets` with
/// `at >= since`.
pub fn frames_by_tid(packets: &[RecvPacket], since: Instant) -> [usize; 3] {
    let mut frames = [0; 3];
    for packet in packets.iter().filter(|p| p.at >= since) {
        if let Some(d) = Vp8Descriptor::parse(&packet.payload)
            && d.start
            && let Some(tid) = d.tid
        {
            frames[usize::from(tid.min(2))] += 1;
        }
    }
    frames
}

/// The only rid received since `since`, if exactly one was (and anything was).
pub fn only_layer(packets: &[RecvPacket], since: Instant) -> Option<Rid> {
    let bytes = layer_bytes(packets, since);
    match bytes.len() {
        1 => bytes.keys().next().copied(),
        _ => None,
    }
}

/// The longest time between consecutive arrivals among `packets` (from `since` to `until`, the
/// ends counting as arrivals).
pub fn longest_gap(packets: &[RecvPacket], since: Instant, until: Instant) -> Duration {
    let mut last = since;
    let mut longest = Duration::ZERO;
    for packet in packets.iter().filter(|p| p.at >= since && p.at <= until) {
        longest = longest.max(packet.at - last);
        last = packet.at;
    }
    longest.max(until.saturating_duration_since(last))
}

/// What [`analyse_video`] found.
#[derive(Debug, Clone, Default)]
pub struct VideoAnalysis {
    pub packets: usize,
    /// Distinct sequence numbers received.
    pub unique: usize,
    pub duplicates: usize,
    /// Sequence numbers never received between the first and the last.
    pub missing: u64,
    pub ssrcs: Vec<u32>,
    /// (arrival, from, to) of every change of rid, in sequence order.
    pub switches: Vec<(Instant, Option<Rid>, Rid)>,
    /// Layer changes (the start included) whose first packet could not be checked (lost before
    /// it).
    pub unverifiable_switches: usize,
    /// Everything that a decoder would not accept.
    pub problems: Vec<String>,
}

impl VideoAnalysis {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the VP8 video stream one subscriber received: [`analyse_video_codec`].
pub fn analyse_video(packets: &[RecvPacket]) -> VideoAnalysis {
    analyse_video_codec(VideoCodec::Vp8, packets)
}

/// Checks the video stream one subscriber received, as its decoder would get it (in sequence
/// order, duplicates removed): one SSRC; sequence numbers gapless apart from loss (`missing`);
/// a change of rid only at a packet that starts a keyframe; the marker bit on the last packet
/// of each frame. VP8: PictureIDs continuous (the same within a frame, +1 per frame, any jump no
/// larger than the sequence gap allows); TL0PICIDX +1 exactly on TID 0 frames. H264: every
/// payload a single NAL, STAP-A or FU-A; FU-A fragments of one NAL unit in order, from S to E.
pub fn analyse_video_codec(codec: VideoCodec, packets: &[RecvPacket]) -> VideoAnalysis {
    analyse_video_sent_from(codec, packets, None)
}

/// [`analyse_video_codec`] for a stream whose first sent sequence number is known (from a relay
/// on the path): a first received packet after it had its stream's start lost on the way, so
/// that start cannot be checked.
pub fn analyse_video_sent_from(
    codec: VideoCodec,
    packets: &[RecvPacket],
    first_sent: Option<u16>,
) -> VideoAnalysis {
    let mut a = VideoAnalysis {
        packets: packets.len(),
        ..Default::default()
    };
    let mut ssrcs: Vec<u32> = packets.iter().map(|p| p.ssrc).collect();
    ssrcs.dedup();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    if ssrcs.len() > 1 {
        a.problems
            .push(format!("video arrived on several SSRCs: {ssrcs:?}"));
    }
    a.ssrcs = ssrcs;

    // Extend the sequence numbers (arrival order, so a retransmission lands near its place).
    let mut by_seq: BTreeMap<i64, &RecvPacket> = BTreeMap::new();
    let mut extend = SeqExtender::default();
    for packet in packets {
        let ext = extend.next(packet.sequence_number);
        if by_seq.insert(ext, packet).is_some() {
            a.duplicates += 1;
        }
    }
    a.unique = by_seq.len();

    let mut prev: Option<(i64, Decoded)> = None;
    for (&seq, &packet) in &by_seq {
        let current = Decoded::new(codec, packet.clone());
        let (Some(keyframe_start), Some(tag)) = (current.keyframe_start(), current.tag) else {
            a.problems.push(format!(
                "seq {seq}: not a tagged {codec:?} payload ({} bytes)",
                packet.payload.len()
            ));
            continue;
        };
        let Some((prev_seq, before)) = &prev else {
            if !keyframe_start {
                let start_lost = first_sent.is_some_and(|first| first != packet.sequence_number);
                if tag.index > 0 || start_lost {
                    // The start of this frame (or every packet before it) never arrived: lost
                    // before the receiver knew the stream, so not even a NACK could bring it
                    // back. Like a switch after loss, it cannot be checked (callers check that
                    // the path dropped anything at all).
                    a.unverifiable_switches += 1;
                } else {
                    a.problems.push(format!(
                        "seq {seq}: the first packet does not start a keyframe"
                    ));
                }
            }
            a.switches.push((packet.at, None, tag.rid));
            prev = Some((seq, current));
            continue;
        };
        let gap = (seq - prev_seq - 1) as u64;
        a.missing += gap;
        let Some(ptag) = before.tag else {
            prev = Some((seq, current));
            continue;
        };
        let same_frame = ptag.rid == tag.rid && ptag.frame == tag.frame;
        if ptag.rid != tag.rid {
            a.switches.push((packet.at, Some(ptag.rid), tag.rid));
            if !keyframe_start {
                if gap > 0 {
                    a.unverifiable_switches += 1;
                } else {
                    a.problems.push(format!(
                        "seq {seq}: switch {} -> {} at a packet that does not start a keyframe \
                         (frame {} packet {}/{})",
                        ptag.rid, tag.rid, tag.frame, tag.index, tag.count
                    ));
                }
            }
        }
        if let (Some(pdesc), Some(desc)) = (before.descriptor, current.descriptor) {
            check_vp8(&mut a, seq, gap, same_frame, (&pdesc, ptag), (&desc, tag));
        }
        if let (Some(ph), Some(h)) = (&before.h264, &current.h264)
            && gap == 0
        {
            let continues = ph.is_fu_a()
                && !ph.ends_nal
                && h.is_fu_a()
                && !h.starts_nal
                && same_frame
                && ph.nal_types == h.nal_types;
            if h.is_fu_a() && !h.starts_nal && !continues {
                a.problems.push(format!(
                    "seq {seq}: a FU-A continuation (NAL type {:?}) that does not continue the \
                     previous packet ({} {} packet {}/{})",
                    h.nal_types, tag.rid, tag.frame, tag.index, tag.count
                ));
            }
            // (At a layer switch the old layer's fragment may end early, as its frame may.)
            if ph.is_fu_a() && !ph.ends_nal && !continues && ptag.rid == tag.rid {
                a.problems.push(format!(
                    "seq {seq}: the FU-A before ends without its E fragment ({} {} packet {}/{})",
                    ptag.rid, ptag.frame, ptag.index, ptag.count
                ));
            }
        }
        // (At a layer switch the old layer's frame may end early: the keyframe that follows
        // makes that harmless for a decoder.)
        if !same_frame && gap == 0 && !before.packet.marker && ptag.rid == tag.rid {
            a.problems.push(format!(
                "seq {seq}: a new frame begins after a packet without the marker bit"
            ));
        }
        prev = Some((seq, current));
    }
    a
}

/// The VP8 descriptor checks of [`analyse_video_codec`] between consecutive packets.
fn check_vp8(
    a: &mut VideoAnalysis,
    seq: i64,
    gap: u64,
    same_frame: bool,
    (pdesc, ptag): (&Vp8Descriptor, SimTag),
    (desc, tag): (&Vp8Descriptor, SimTag),
) {
    match (pdesc.picture_id, desc.picture_id) {
        (Some(p), Some(c)) => {
            let delta = u64::from(c.wrapping_sub(p) & 0x7fff);
            if same_frame {
                if delta != 0 {
                    a.problems.push(format!(
                        "seq {seq}: PictureID {c} within the frame of PictureID {p}"
                    ));
                }
            } else if gap == 0 && delta != 1 {
                a.problems.push(format!(
                    "seq {seq}: PictureID {p} -> {c} from one frame to the next ({} {} -> {} {})",
                    ptag.rid, ptag.frame, tag.rid, tag.frame
                ));
            } else if gap > 0 && delta > gap + 1 {
                a.problems.push(format!(
                    "seq {seq}: PictureID {p} -> {c} across {gap} lost packets"
                ));
            }
        }
        _ => a
            .problems
            .push(format!("seq {seq}: no PictureID in the descriptor")),
    }
    if !same_frame
        && gap == 0
        && let (Some(p), Some(c), Some(tid)) = (pdesc.tl0picidx, desc.tl0picidx, desc.tid)
    {
        let want = if tid == 0 { p.wrapping_add(1) } else { p };
        if c != want {
            a.problems.push(format!(
                "seq {seq}: TL0PICIDX {p} -> {c} on a TID {tid} frame"
            ));
        }
    }
}

/// RTP sequence numbers extended past their 16-bit wrap, in arrival order: each lands nearest the
/// highest seen so far, so a late retransmission keeps its place.
#[derive(Debug, Default)]
pub struct SeqExtender {
    highest: Option<i64>,
}

impl SeqExtender {
    pub fn next(&mut self, seq: u16) -> i64 {
        let seq = i64::from(seq);
        let ext = match self.highest {
            None => seq,
            Some(prev) => {
                let base = prev - prev.rem_euclid(65_536);
                [base - 65_536 + seq, base + seq, base + 65_536 + seq]
                    .into_iter()
                    .min_by_key(|c| (c - prev).abs())
                    .unwrap_or(seq)
            }
        };
        self.highest = Some(self.highest.map_or(ext, |prev| prev.max(ext)));
        ext
    }
}

/// A teacher joins `server` and publishes the simulcast test stream with the default settings.
pub async fn teacher_publishes_simulcast(
    server: &super::TestServer,
) -> Result<(super::TestClient, Arc<SimulcastPublisher>)> {
    let teacher = super::TestClient::connect(
        &server.ws_url(),
        &server.token("t-001", "Tanaka", classroom_signaling::token::Role::Teacher),
    )
    .await
    .context("teacher joins")?;
    let offer = SimulcastOffer::create().await?;
    let reply = teacher
        .request(offer.message())
        .await
        .context("publish simulcast")?;
    if !super::is_type(&reply, "publish_answer") {
        offer.abandon().await;
        bail!("the server refused the simulcast offer: {reply}");
    }
    let publisher = offer.complete(&reply).await?;
    publisher.start(SimulcastConfig::default());
    Ok((teacher, publisher))
}
