//! Synthetic VP8 frames that an SFU cannot tell from a camera's (RFC 7741).
//!
//! Every packet carries the extended payload descriptor: 15-bit PictureID (+1 per frame and
//! layer), TL0PICIDX and TID/Y in the L1T3 pattern a browser uses (TID 0,2,1,2 from each
//! keyframe). The first packet of a frame has S=1 and a VP8 frame tag: P=0 for keyframes, which
//! also carry the start code `9d 01 2a` and the layer's dimensions — what the SFU's keyframe
//! detection reads. The rest is filler, and the last [`TAG_LEN`] bytes of each payload are the
//! [`Tag`] (send time, layer, counter). Nothing is encoded: the generator spends its time on
//! packets, not pixels.

use crate::tag::{StreamKind, TAG_LEN, Tag};

/// Bytes of the payload descriptor this generator writes (X, I/L/T, PictureID×2, TL0, TID).
const DESCRIPTOR_LEN: usize = 6;

/// One simulcast encoding's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    /// Target bitrate of the payloads, bits per second.
    pub bitrate: u32,
}

/// The teacher's camera: q/h/f at 1/4, 1/2 and full 720p, bitrates of a browser's simulcast.
pub const TEACHER_LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        width: 320,
        height: 180,
        bitrate: 150_000,
    },
    LayerSpec {
        rid: "h",
        width: 640,
        height: 360,
        bitrate: 500_000,
    },
    LayerSpec {
        rid: "f",
        width: 1280,
        height: 720,
        bitrate: 1_500_000,
    },
];

/// A pupil's camera when pupils publish: one small layer, as a tablet tile needs no more.
pub const PUPIL_LAYER: LayerSpec = LayerSpec {
    rid: "q",
    width: 320,
    height: 240,
    bitrate: 200_000,
};

/// How much bigger than an average frame a keyframe is (about what libvpx produces for a
/// talking-head scene).
const KEYFRAME_FACTOR: f64 = 5.0;

/// The L1T3 pattern from a keyframe: the n-th frame's TID and its Y (layer sync) bit.
fn temporal(n: u64) -> (u8, bool) {
    match n % 4 {
        0 => (0, false),
        1 => (2, true),
        2 => (1, true),
        _ => (2, false),
    }
}

/// Relative frame size by TID (about 1 on average over the pattern): base frames are larger.
fn size_weight(tid: u8) -> f64 {
    match tid {
        0 => 1.6,
        1 => 1.0,
        _ => 0.7,
    }
}

/// Frame generator for one layer.
#[derive(Debug)]
pub struct Vp8Layer {
    pub spec: LayerSpec,
    index: u8,
    fps: u32,
    picture_id: u16,
    tl0picidx: u8,
    /// Frames since the last keyframe.
    since_key: u64,
    /// Packets sent on this layer (the tag's counter).
    counter: u32,
    started: bool,
}

/// One frame, packetised.
#[derive(Debug)]
pub struct Frame {
    pub keyframe: bool,
    pub payloads: Vec<Vec<u8>>,
}

impl Vp8Layer {
    pub fn new(spec: LayerSpec, index: u8, fps: u32) -> Vp8Layer {
        Vp8Layer {
            spec,
            index,
            fps: fps.max(1),
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0picidx: rand::random(),
            since_key: 0,
            counter: 0,
            started: false,
        }
    }

    /// The next frame; a keyframe when `keyframe` or when none was sent yet. Payloads are at
    /// most `max_payload` bytes; the last one ends the frame (RTP marker).
    pub fn next_frame(&mut self, keyframe: bool, max_payload: usize, sent_nanos: u64) -> Frame {
        let keyframe = keyframe || !self.started;
        if keyframe {
            self.since_key = 0;
        }
        let (tid, layer_sync) = temporal(self.since_key);
        if self.started {
            self.picture_id = (self.picture_id + 1) & 0x7fff;
            if tid == 0 {
                self.tl0picidx = self.tl0picidx.wrapping_add(1);
            }
        }
        self.started = true;
        self.since_key += 1;

        let average = f64::from(self.spec.bitrate) / 8.0 / f64::from(self.fps);
        let size = if keyframe {
            average * KEYFRAME_FACTOR
        } else {
            average * size_weight(tid)
        } as usize;
        let capacity = max_payload.saturating_sub(DESCRIPTOR_LEN + TAG_LEN).max(64);
        let count = size.max(1).div_ceil(capacity);
        let per_packet = size.div_ceil(count).max(16);

        let mut payloads = Vec::with_capacity(count);
        for i in 0..count {
            let mut p = Vec::with_capacity(DESCRIPTOR_LEN + per_packet + TAG_LEN);
            // X=1, S on the first packet, partition 0.
            p.push(0x80 | if i == 0 { 0x10 } else { 0 });
            // I, L, T present.
            p.push(0x80 | 0x40 | 0x20);
            p.extend_from_slice(&(0x8000 | self.picture_id).to_be_bytes());
            p.push(self.tl0picidx);
            p.push((tid << 6) | if layer_sync { 0x20 } else { 0 });
            if i == 0 {
                // Frame tag (RFC 6386 §9.1): P (0 = keyframe), version 0, show_frame, and a
                // plausible first partition size.
                let first_partition: u32 = (per_packet as u32 / 4).max(10);
                let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
                p.extend_from_slice(&tag.to_le_bytes()[..3]);
                if keyframe {
                    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&self.spec.width.to_le_bytes());
                    p.extend_from_slice(&self.spec.height.to_le_bytes());
                }
            }
            let filler = (DESCRIPTOR_LEN + per_packet).saturating_sub(p.len());
            p.resize(p.len() + filler, 0x5a);
            let mut t = [0u8; TAG_LEN];
            Tag {
                stream: StreamKind::Video(self.index),
                keyframe,
                counter: self.counter,
                sent_nanos,
            }
            .write(&mut t);
            p.extend_from_slice(&t);
            self.counter = self.counter.wrapping_add(1);
            payloads.push(p);
        }
        Frame { keyframe, payloads }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_then_l1t3_with_valid_descriptors() {
        let mut layer = Vp8Layer::new(TEACHER_LAYERS[2], 2, 30);
        let key = layer.next_frame(false, 1200, 5);
        assert!(key.keyframe);
        assert!(key.payloads.len() > 1);
        let first = &key.payloads[0];
        assert_eq!(first[0] & 0x10, 0x10, "S bit on the first packet");
        assert_eq!(first[DESCRIPTOR_LEN] & 1, 0, "P=0: keyframe");
        assert_eq!(
            &first[DESCRIPTOR_LEN + 3..DESCRIPTOR_LEN + 6],
            &[0x9d, 0x01, 0x2a]
        );
        assert!(key.payloads.iter().all(|p| p.len() <= 1200));
        assert!(key.payloads[1..].iter().all(|p| p[0] & 0x10 == 0));
        let tag = Tag::read(first).expect("tag");
        assert_eq!(tag.stream, StreamKind::Video(2));
        assert!(tag.keyframe);

        let pid = |p: &[u8]| u16::from_be_bytes([p[2] & 0x7f, p[3]]);
        let tids: Vec<u8> = (0..4)
            .map(|_| layer.next_frame(false, 1200, 6).payloads[0][5] >> 6)
            .collect();
        assert_eq!(tids, vec![2, 1, 2, 0]);
        let a = layer.next_frame(false, 1200, 7);
        let b = layer.next_frame(false, 1200, 8);
        assert_eq!(pid(&b.payloads[0]), (pid(&a.payloads[0]) + 1) & 0x7fff);
        assert_eq!(a.payloads[0][DESCRIPTOR_LEN] & 1, 1, "P=1: delta frame");
    }

    #[test]
    fn bitrate_is_roughly_the_target() {
        let mut layer = Vp8Layer::new(TEACHER_LAYERS[1], 1, 30);
        let _ = layer.next_frame(false, 1200, 0);
        let bytes: usize = (0..300)
            .map(|_| {
                layer
                    .next_frame(false, 1200, 0)
                    .payloads
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum();
        let bps = bytes as f64 * 8.0 / 10.0;
        assert!((400_000.0..650_000.0).contains(&bps), "{bps}");
    }
}
