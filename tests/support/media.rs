//! Media the tests send, and the checks on what subscribers receive.
//!
//! Payloads are recognisable: every packet carries a tag (`"CLS"`, source letter, frame number,
//! packet index) and a filler derived from it, so a received payload identifies exactly which
//! packet it was and byte-identity can be asserted. VP8 payloads follow RFC 7741 closely enough
//! for an SFU's keyframe detection: a payload descriptor (`0x10` = S bit, partition 0, on the first
//! packet of a frame; `0x00` on the others) followed on the first packet by a real VP8 frame
//! header — for a keyframe the 3-byte frame tag with P = 0, the start code `9d 01 2a`, 14-bit
//! width and height; for a delta frame a frame tag with P = 1.

use super::publisher::Publisher;
use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a published track carries (the `source` of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Microphone => "microphone",
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }

    /// `audio` or `video`, as the protocol spells the kind.
    pub fn kind(self) -> &'static str {
        match self {
            Source::Microphone => "audio",
            Source::Camera | Source::Screen => "video",
        }
    }

    pub fn codec_kind(self) -> rtc::rtp_transceiver::rtp_sender::RtpCodecKind {
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        match self {
            Source::Microphone => RtpCodecKind::Audio,
            Source::Camera | Source::Screen => RtpCodecKind::Video,
        }
    }

    fn letter(self) -> u8 {
        match self {
            Source::Microphone => b'A',
            Source::Camera => b'C',
            Source::Screen => b'S',
        }
    }

    /// RTP clock ticks per frame at the pump's default rates (20 ms audio, 30 fps video).
    pub fn ticks_per_frame(self) -> u32 {
        match self {
            Source::Microphone => 960,
            Source::Camera | Source::Screen => 3000,
        }
    }
}

/// One RTP packet as the publisher sent it.
#[derive(Debug, Clone)]
pub struct SentPacket {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub at: Instant,
}

const TAG: &[u8; 3] = b"CLS";

/// The tag every test payload carries after its codec header: `CLS`, the source letter, the frame
/// number (u32, big-endian), the packet index in the frame and the frame's packet count.
fn put_tag(buf: &mut BytesMut, source: Source, frame: u32, index: u8, count: u8) {
    buf.put_slice(TAG);
    buf.put_u8(source.letter());
    buf.put_u32(frame);
    buf.put_u8(index);
    buf.put_u8(count);
}

/// Filler bytes that differ per packet, up to `size`.
fn put_filler(buf: &mut BytesMut, frame: u32, index: u8, size: usize) {
    let mut value = frame.wrapping_mul(31).wrapping_add(u32::from(index) * 7) as u8;
    while buf.len() < size {
        buf.put_u8(value);
        value = value.wrapping_add(1);
    }
}

/// An Opus payload for audio frame `frame` (TOC byte: SILK WB 20 ms, stereo, one frame).
pub fn opus_payload(frame: u32, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(16));
    buf.put_u8(0x4c);
    put_tag(&mut buf, Source::Microphone, frame, 0, 1);
    put_filler(&mut buf, frame, 0, size);
    buf.freeze()
}

/// The RTP payloads of one VP8 frame split into `packets` packets of about `size` bytes.
pub fn vp8_frame(
    source: Source,
    frame: u32,
    keyframe: bool,
    packets: u8,
    size: usize,
) -> Vec<Bytes> {
    assert!(packets >= 1);
    (0..packets)
        .map(|index| {
            let mut buf = BytesMut::with_capacity(size.max(32));
            if index == 0 {
                // Payload descriptor: X=0, R=0, N=0, S=1, PID=0.
                buf.put_u8(0x10);
                // Frame tag: bit 0 = P (0 for a keyframe), bits 1-3 version 0, bit 4 show_frame,
                // bits 5-23 first partition size.
                let first_partition: u32 = 120;
                let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
                buf.put_u8(tag as u8);
                buf.put_u8((tag >> 8) as u8);
                buf.put_u8((tag >> 16) as u8);
                if keyframe {
                    buf.put_slice(&[0x9d, 0x01, 0x2a]);
                    buf.put_u16_le(320); // width, scale 0
                    buf.put_u16_le(240); // height, scale 0
                }
            } else {
                // Continuation of partition 0: S=0.
                buf.put_u8(0x00);
            }
            put_tag(&mut buf, source, frame, index, packets);
            put_filler(&mut buf, frame, index, size);
            buf.freeze()
        })
        .collect()
}

/// Whether a VP8 RTP payload starts a keyframe: S=1 and PID=0 in the descriptor, and the frame
/// tag's P bit 0.
pub fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        // Extended control bits.
        let Some(&x) = payload.get(1) else {
            return false;
        };
        offset += 1;
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits.
            let Some(&pid) = payload.get(offset) else {
                return false;
            };
            offset += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            offset += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            offset += 1; // TID/KEYIDX
        }
    }
    payload.get(offset).is_some_and(|tag| tag & 0x01 == 0)
}

/// The (source letter, frame, packet index) tag of a test payload, for messages.
pub fn describe(payload: &[u8]) -> String {
    match payload.windows(TAG.len()).position(|w| w == TAG) {
        Some(at) if payload.len() >= at + 10 => {
            let letter = payload[at + 3] as char;
            let frame = u32::from_be_bytes([
                payload[at + 4],
                payload[at + 5],
                payload[at + 6],
                payload[at + 7],
            ]);
            format!("{letter}{frame}.{}/{}", payload[at + 8], payload[at + 9])
        }
        _ => format!("<untagged {} bytes>", payload.len()),
    }
}

/// The result of comparing one subscriber's copy of a track with what was sent.
#[derive(Debug, Clone)]
pub struct StreamCheck {
    /// The SSRC the subscriber received the track with.
    pub ssrc: u32,
    /// Index into the sent packets of the first packet received.
    pub first_sent_index: usize,
    /// How many packets were received.
    pub count: usize,
}

/// Checks that `received` is exactly the run of `sent` that starts at its first packet: every
/// payload byte-identical and in order, marker bits equal, one SSRC, sequence numbers consecutive
/// (no gaps, no duplicates), and timestamps advancing by the same deltas as the publisher's. With
/// `through_end`, the run must reach the last packet sent. For `video`, the first packet must
/// start a keyframe.
pub fn verify_stream(
    label: &str,
    sent: &[SentPacket],
    received: &[super::RecvPacket],
    video: bool,
    through_end: bool,
) -> Result<StreamCheck> {
    let first = received
        .first()
        .ok_or_else(|| anyhow!("{label}: nothing received ({} packets sent)", sent.len()))?;
    let start = sent
        .iter()
        .position(|p| p.payload == first.payload)
        .ok_or_else(|| {
            anyhow!(
                "{label}: the first packet received ({}) is not one that was sent",
                describe(&first.payload)
            )
        })?;
    if video {
        ensure!(
            is_vp8_keyframe_start(&first.payload),
            "{label}: the first video packet received ({}, sent index {start}) does not start a keyframe",
            describe(&first.payload)
        );
    }
    let ssrc = first.ssrc;
    for (i, got) in received.iter().enumerate() {
        let Some(want) = sent.get(start + i) else {
            bail!(
                "{label}: received {} packets from sent index {start}, but only {} were sent after it \
                 (extra packet {i}: {})",
                received.len(),
                sent.len() - start,
                describe(&got.payload)
            );
        };
        if got.payload != want.payload {
            let previous = i
                .checked_sub(1)
                .map(|j| format!("sequence number {}", received[j].sequence_number))
                .unwrap_or_else(|| "nothing".to_owned());
            let sent_again = sent
                .iter()
                .position(|p| p.payload == got.payload)
                .map(|j| format!("sent index {j}"))
                .unwrap_or_else(|| "never sent".to_owned());
            bail!(
                "{label}: packet {i} differs: received {} ({} bytes, sequence number {}, after \
                 {previous}; {sent_again}), expected {} ({} bytes, sent index {}, {:?} after the \
                 stream's first packet was sent) — lost, duplicated, reordered or altered",
                describe(&got.payload),
                got.payload.len(),
                got.sequence_number,
                describe(&want.payload),
                want.payload.len(),
                start + i,
                want.at.duration_since(sent[0].at),
            );
        }
        ensure!(
            got.marker == want.marker,
            "{label}: packet {i} ({}) has marker {} but was sent with {}",
            describe(&got.payload),
            got.marker,
            want.marker
        );
        ensure!(
            got.ssrc == ssrc,
            "{label}: packet {i} ({}) has SSRC {} but the stream started with {ssrc}",
            describe(&got.payload),
            got.ssrc
        );
        if i > 0 {
            let previous = &received[i - 1];
            ensure!(
                got.sequence_number == previous.sequence_number.wrapping_add(1),
                "{label}: sequence number {} follows {} at packet {i} ({})",
                got.sequence_number,
                previous.sequence_number,
                describe(&got.payload)
            );
        }
        let got_delta = got.timestamp.wrapping_sub(first.timestamp);
        let want_delta = want.timestamp.wrapping_sub(sent[start].timestamp);
        ensure!(
            got_delta == want_delta,
            "{label}: packet {i} ({}) is {got_delta} ticks after the first, the publisher's was \
             {want_delta}",
            describe(&got.payload)
        );
    }
    if through_end {
        ensure!(
            start + received.len() == sent.len(),
            "{label}: received {} packets from sent index {start}, {} were sent from there \
             (last received {})",
            received.len(),
            sent.len() - start,
            received
                .last()
                .map(|p| describe(&p.payload))
                .unwrap_or_default()
        );
    }
    Ok(StreamCheck {
        ssrc,
        first_sent_index: start,
        count: received.len(),
    })
}

/// How the pump streams.
#[derive(Debug, Clone)]
pub struct PumpConfig {
    /// Send audio on the microphone track every `audio_interval`.
    pub audio: bool,
    /// Send video frames on this source every `video_interval`.
    pub video: Option<Source>,
    pub audio_interval: Duration,
    pub video_interval: Duration,
    pub audio_size: usize,
    pub keyframe_packets: u8,
    pub delta_packets: u8,
    pub video_packet_size: usize,
}

impl Default for PumpConfig {
    fn default() -> Self {
        Self {
            audio: true,
            video: Some(Source::Camera),
            audio_interval: Duration::from_millis(20),
            video_interval: Duration::from_millis(33),
            audio_size: 120,
            keyframe_packets: 3,
            delta_packets: 2,
            video_packet_size: 900,
        }
    }
}

/// A keyframe the pump sent.
#[derive(Debug, Clone)]
pub struct KeyframeSent {
    pub frame: u32,
    /// Index into the video source's sent packets of the keyframe's first packet.
    pub sent_index: usize,
    pub at: Instant,
    /// The number of keyframe requests seen when it was made (0 for the first frame).
    pub requests_seen: usize,
}

#[derive(Default)]
struct PumpState {
    keyframes: Vec<KeyframeSent>,
    frames: u32,
    audio_frames: u32,
}

/// Streams test media on a publisher like a camera and microphone would: audio every 20 ms,
/// video at ~30 fps. The first video frame is a keyframe; after that a keyframe is sent only when
/// the server has asked for one (a new PLI/FIR since the last keyframe).
pub struct MediaPump {
    publisher: Arc<Publisher>,
    config: PumpConfig,
    state: Arc<Mutex<PumpState>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl MediaPump {
    pub fn start(publisher: Arc<Publisher>, config: PumpConfig) -> Self {
        let state = Arc::new(Mutex::new(PumpState::default()));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task_publisher = Arc::clone(&publisher);
        let task_state = Arc::clone(&state);
        let task_config = config.clone();
        let task = tokio::spawn(async move {
            let publisher = task_publisher;
            let config = task_config;
            let mut audio_tick = tokio::time::interval(config.audio_interval);
            let mut video_tick = tokio::time::interval(config.video_interval);
            audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Timestamps start close to the wrap, like sequence numbers (see Publisher).
            let mut audio_ts: u32 = u32::MAX - 960 * 40;
            let mut video_ts: u32 = u32::MAX - 3000 * 20;
            let mut requests_seen = 0usize;
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = audio_tick.tick(), if config.audio => {
                        let frame = {
                            let mut state = task_state.lock().unwrap();
                            state.audio_frames += 1;
                            state.audio_frames - 1
                        };
                        let payload = opus_payload(frame, config.audio_size);
                        publisher
                            .send_rtp(Source::Microphone, payload, audio_ts, frame == 0)
                            .await
                            .context("pump: audio")?;
                        audio_ts = audio_ts.wrapping_add(Source::Microphone.ticks_per_frame());
                    }
                    _ = video_tick.tick(), if config.video.is_some() => {
                        let Some(source) = config.video else { continue };
                        let frame = task_state.lock().unwrap().frames;
                        let requests = publisher.keyframe_requests(source);
                        let keyframe = frame == 0 || requests > requests_seen;
                        requests_seen = requests;
                        let packets = if keyframe { config.keyframe_packets } else { config.delta_packets };
                        let payloads = vp8_frame(source, frame, keyframe, packets, config.video_packet_size);
                        let sent_index = publisher.sent(source).len();
                        let count = payloads.len();
                        for (index, payload) in payloads.into_iter().enumerate() {
                            publisher
                                .send_rtp(source, payload, video_ts, index + 1 == count)
                                .await
                                .context("pump: video")?;
                        }
                        let mut state = task_state.lock().unwrap();
                        if keyframe {
                            state.keyframes.push(KeyframeSent {
                                frame,
                                sent_index,
                                at: Instant::now(),
                                requests_seen: requests,
                            });
                        }
                        state.frames += 1;
                        video_ts = video_ts.wrapping_add(source.ticks_per_frame());
                    }
                }
            }
            Ok(())
        });
        Self {
            publisher,
            config,
            state,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// The keyframes sent so far.
    pub fn keyframes(&self) -> Vec<KeyframeSent> {
        self.state.lock().unwrap().keyframes.clone()
    }

    /// Video frames sent so far.
    pub fn video_frames(&self) -> u32 {
        self.state.lock().unwrap().frames
    }

    /// Stops the pump after the packet in flight; fails if the pump failed.
    pub async fn stop(&self) -> Result<()> {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .context("the media pump did not stop")?
                .context("the media pump panicked")??;
        }
        Ok(())
    }

    /// Whether the pump is still running (it stops on its own only on an error).
    pub fn running(&self) -> bool {
        self.task
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    pub fn config(&self) -> &PumpConfig {
        &self.config
    }
}

impl Drop for MediaPump {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
