//! Real Opus audio: a 440 Hz tone encoded with libopus in 20 ms frames.
//!
//! The [`Tag`] goes into the packet's padding: each single-frame packet from the encoder
//! (code 0) is rewritten as code 3 (one CBR frame, padding flag set, [`TAG_LEN`] padding bytes),
//! RFC 6716 §3.2.5. Decoders must accept any padding content, so what pupils receive is still
//! valid Opus, and the send time rides along without a side channel.

use thiserror::Error;

use crate::tag::{StreamKind, TAG_LEN, Tag};

pub const SAMPLE_RATE: u32 = 48_000;
/// 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// RTP timestamp step per packet.
pub const FRAME_TICKS: u32 = FRAME_SAMPLES as u32;

#[derive(Debug, Error)]
pub enum AudioError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Encodes the tone, one packet per call.
pub struct ToneSource {
    encoder: opus::Encoder,
    phase: f32,
    counter: u32,
    pcm: Vec<i16>,
    out: Vec<u8>,
}

impl std::fmt::Debug for ToneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToneSource { .. }")
    }
}

impl ToneSource {
    pub fn new(bitrate: i32) -> Result<ToneSource, AudioError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        Ok(ToneSource {
            encoder,
            phase: 0.0,
            counter: 0,
            pcm: vec![0; FRAME_SAMPLES],
            out: vec![0; 1500],
        })
    }

    /// The next 20 ms packet, tagged with `sent_nanos`.
    pub fn next_packet(&mut self, sent_nanos: u64) -> Result<Vec<u8>, AudioError> {
        let step = 2.0 * std::f32::consts::PI * 440.0 / SAMPLE_RATE as f32;
        for s in &mut self.pcm {
            *s = (self.phase.sin() * 8000.0) as i16;
            self.phase = (self.phase + step) % (2.0 * std::f32::consts::PI);
        }
        let len = self.encoder.encode(&self.pcm, &mut self.out)?;
        let encoded = self.out.get(..len).unwrap_or_default();
        let tag = Tag {
            stream: StreamKind::Audio,
            keyframe: false,
            counter: self.counter,
            sent_nanos,
        };
        self.counter = self.counter.wrapping_add(1);
        Ok(with_tag_in_padding(encoded, &tag))
    }
}

/// Rewrites a code-0 Opus packet as code 3 with the tag as padding. Other packets (never
/// produced for 20 ms mono frames) are returned untagged.
pub fn with_tag_in_padding(packet: &[u8], tag: &Tag) -> Vec<u8> {
    let Some((&toc, frame)) = packet.split_first() else {
        return packet.to_vec();
    };
    if toc & 0x03 != 0 {
        return packet.to_vec();
    }
    let mut out = Vec::with_capacity(packet.len() + 3 + TAG_LEN);
    out.push(toc | 0x03);
    // v=0 (CBR), p=1 (padding follows), M=1 frame.
    out.push(0x40 | 1);
    out.push(TAG_LEN as u8);
    out.extend_from_slice(frame);
    let mut t = [0u8; TAG_LEN];
    tag.write(&mut t);
    out.extend_from_slice(&t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_packets_are_valid_opus() {
        let mut source = ToneSource::new(32_000).expect("encoder");
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        for i in 0..10 {
            let packet = source.next_packet(1000 + i).expect("encode");
            let tag = Tag::read(&packet).expect("tag");
            assert_eq!(tag.stream, StreamKind::Audio);
            assert_eq!(tag.sent_nanos, 1000 + i);
            let n = decoder.decode(&packet, &mut pcm, false).expect("decode");
            assert_eq!(n, FRAME_SAMPLES);
        }
    }
}
