//! A synthetic teacher camera and microphone: what a browser's VP8 simulcast encoder and Opus
//! encoder hand to the network, without encoding anything.
//!
//! Video: three encodings (`q`, `h`, `f`), each L1T3 (TID 0 at a quarter of the frame rate, TID
//! 1 at half, TID 2 the rest, with the layer-sync bit where a frame depends on TL0 only),
//! packetised as RFC 7741 describes: a payload descriptor with the 15-bit PictureID, TL0PICIDX,
//! TID and Y on every packet, S on the first of a frame, and on the first packet the VP8 frame
//! tag (P clear on a keyframe, with the keyframe start code and size). Keyframes come first, on
//! request (PLI/FIR) and periodically, with sizes drawn from the ranges browsers produce.
//! Every frame carries a tag (`SIM`, rid, frame number) right after the VP8 headers, so a
//! receiver knows which encoding it is decoding.
//!
//! Audio: one Opus-sized packet every 20 ms with an RFC 6464 level.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::core::vp8::{l1t3 as temporal, l1t3_size_weight as size_weight};
use rand::Rng;
use rand::rngs::StdRng;

pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// What the synthetic encoder produces.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Average bitrate of each encoding's delta frames (payload bytes), q/h/f.
    pub bitrates: [u64; 3],
    pub fps: u32,
    /// Largest RTP payload.
    pub max_packet: usize,
    /// Keyframe sizes per encoding, bytes.
    pub keyframe_bytes: [RangeInclusive<usize>; 3],
    /// A keyframe on every encoding this often, besides the ones asked for.
    pub keyframe_interval: Option<Duration>,
    /// Opus payload per 20 ms.
    pub audio_bytes: usize,
    /// How long before it is sent each encoding's frame was captured (an encoder's latency,
    /// which differs between the sizes of one camera's simulcast). Sender reports carry it;
    /// arrival times do not.
    pub capture_lag: [Duration; 3],
}

impl Default for SourceConfig {
    /// The rates of `docs/ADAPTATION.md`'s test stream; keyframes as Chromium's of a camera
    /// (4–5 kB at 320x180, 36–42 kB at 640x360, 150–240 kB at 1280x720).
    fn default() -> Self {
        SourceConfig {
            bitrates: [150_000, 500_000, 1_500_000],
            fps: 30,
            max_packet: 1100,
            keyframe_bytes: [4_000..=5_000, 36_000..=42_000, 150_000..=240_000],
            keyframe_interval: Some(Duration::from_secs(10)),
            audio_bytes: 80,
            capture_lag: [Duration::ZERO; 3],
        }
    }
}

impl SourceConfig {
    /// The stream of the real-time table (`tests/support/simulcast.rs`): the same rates, but
    /// keyframes only 3.2 times an average frame (2, 6.7 and 20 kB) and only when asked for.
    pub fn realtime_test() -> SourceConfig {
        let keyframe = |bps: u64| {
            let bytes = (bps as f64 / 8.0 / 30.0 * 3.2) as usize;
            bytes..=bytes
        };
        SourceConfig {
            keyframe_bytes: [keyframe(150_000), keyframe(500_000), keyframe(1_500_000)],
            keyframe_interval: None,
            ..SourceConfig::default()
        }
    }
}

pub const TAG: &[u8; 3] = b"SIM";

/// Which encoding and frame a payload (or a depacketised frame) belongs to.
pub fn parse_tag(data: &[u8]) -> Option<(u8, u32)> {
    let at = data.windows(3).take(48).position(|w| w == TAG)?;
    let rid = *data.get(at + 3)?;
    let frame = u32::from_be_bytes(data.get(at + 4..at + 8)?.try_into().ok()?);
    Some((rid, frame))
}

/// One encoding's encoder state.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub spatial: u8,
    pub picture_id: u16,
    pub tl0picidx: u8,
    since_keyframe: u64,
    pub frames: u32,
    pub active: bool,
    pub keyframe_wanted: bool,
    pub last_keyframe: Option<Duration>,
}

/// One frame's RTP payloads and what they are.
#[derive(Debug)]
pub struct Frame {
    pub keyframe: bool,
    pub payloads: Vec<Vec<u8>>,
}

impl Encoding {
    pub fn new(spatial: u8, rng: &mut StdRng) -> Encoding {
        Encoding {
            spatial,
            picture_id: rng.random::<u16>() & 0x7fff,
            tl0picidx: rng.random(),
            since_keyframe: 0,
            frames: 0,
            active: true,
            keyframe_wanted: true,
            last_keyframe: None,
        }
    }

    /// The next frame at `elapsed` since the start.
    pub fn next_frame(
        &mut self,
        config: &SourceConfig,
        elapsed: Duration,
        rng: &mut StdRng,
    ) -> Frame {
        let periodic = config
            .keyframe_interval
            .zip(self.last_keyframe)
            .is_some_and(|(every, last)| elapsed.saturating_sub(last) >= every);
        let keyframe = self.keyframe_wanted || periodic;
        if keyframe {
            self.keyframe_wanted = false;
            self.since_keyframe = 0;
            self.last_keyframe = Some(elapsed);
        }
        let (tid, sync) = temporal(self.since_keyframe);
        self.since_keyframe += 1;
        if tid == 0 {
            self.tl0picidx = self.tl0picidx.wrapping_add(1);
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let s = usize::from(self.spatial);
        let size = if keyframe {
            rng.random_range(config.keyframe_bytes[s].clone())
        } else {
            let base = config.bitrates[s] as f64 / 8.0 / f64::from(config.fps);
            (base * size_weight(tid)) as usize
        };
        let payloads = packetise(
            self.spatial,
            self.frames,
            keyframe,
            self.picture_id,
            self.tl0picidx,
            tid,
            sync,
            size,
            config.max_packet,
        );
        self.frames += 1;
        Frame { keyframe, payloads }
    }
}

/// RFC 7741 payloads of one frame of `size` bytes.
#[allow(clippy::too_many_arguments)]
pub fn packetise(
    spatial: u8,
    frame: u32,
    keyframe: bool,
    picture_id: u16,
    tl0picidx: u8,
    tid: u8,
    sync: bool,
    size: usize,
    max_packet: usize,
) -> Vec<Vec<u8>> {
    let count = size.div_ceil(max_packet).max(1);
    let per_packet = size.div_ceil(count);
    (0..count)
        .map(|index| {
            let mut p = Vec::with_capacity(per_packet + 16);
            // X, S on the first packet, partition 0.
            p.push(0x80 | if index == 0 { 0x10 } else { 0 });
            // I, L, T present.
            p.push(0x80 | 0x40 | 0x20);
            p.extend_from_slice(&(0x8000 | (picture_id & 0x7fff)).to_be_bytes());
            p.push(tl0picidx);
            p.push((tid << 6) | if sync { 0x20 } else { 0 });
            if index == 0 {
                // Frame tag: P (0 = keyframe), version 0, show_frame, first partition size.
                let tag = u32::from(!keyframe) | (1 << 4) | (120 << 5);
                p.extend_from_slice(&tag.to_le_bytes()[..3]);
                if keyframe {
                    let (w, h) = [(320u16, 180u16), (640, 360), (1280, 720)][usize::from(spatial)];
                    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&w.to_le_bytes());
                    p.extend_from_slice(&h.to_le_bytes());
                }
            }
            p.extend_from_slice(TAG);
            p.push(RIDS[usize::from(spatial)].as_bytes()[0]);
            p.extend_from_slice(&frame.to_be_bytes());
            let mut value = frame.wrapping_mul(31).wrapping_add(index as u32 * 7) as u8;
            while p.len() < per_packet {
                p.push(value);
                value = value.wrapping_add(1);
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vp8::Vp8Header;

    #[test]
    fn the_descriptors_say_what_the_core_reads() {
        let payloads = packetise(2, 7, true, 0x1234, 9, 0, false, 5000, 1100);
        assert_eq!(payloads.len(), 5);
        let first = Vp8Header::parse(&payloads[0]).unwrap();
        assert!(first.keyframe && first.starts_frame());
        assert_eq!(
            (
                first.picture_id.map(|p| (p.value, p.wide)),
                first.tl0_pic_idx,
                first.tid
            ),
            (Some((0x1234, true)), Some(9), Some(0))
        );
        let rest = Vp8Header::parse(&payloads[1]).unwrap();
        assert!(!rest.keyframe && !rest.starts_frame());
        assert_eq!(parse_tag(&payloads[3]), Some((b'f', 7)));
        let delta = packetise(0, 8, false, 1, 9, 2, true, 300, 1100);
        let d = Vp8Header::parse(&delta[0]).unwrap();
        assert!(!d.keyframe && d.is_temporal_switch_point());
        assert_eq!(d.tid, Some(2));
    }
}
