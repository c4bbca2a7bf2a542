//! The 16 bytes at the end of every payload the load generator sends.
//!
//! They tell a pupil which stream a packet belongs to (video layer or audio), its number on that
//! stream, and when it was sent, whatever the SFU rewrote in the RTP header. Putting them at the
//! *end* makes reading them O(1): no codec header has to be parsed. For VP8 the tail is filler
//! anyway; for Opus it sits in the packet's padding (code-3 framing, see `audio.rs`), which
//! decoders must ignore, so the audio stays valid Opus.

/// Bytes of a tag on the wire.
pub const TAG_LEN: usize = 16;
const MAGIC: [u8; 2] = *b"LT";

/// Which stream a packet was sent on: a simulcast layer (0 = q, 1 = h, 2 = f), a single-layer
/// camera ([`SINGLE_LAYER`]), or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Video(u8),
    Audio,
}

const AUDIO: u8 = 0xff;
/// The layer index of a camera sent without simulcast.
pub const SINGLE_LAYER: u8 = 3;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub stream: StreamKind,
    pub keyframe: bool,
    /// Packet number on this stream, from 0.
    pub counter: u32,
    /// Send time, nanoseconds since [`crate::clock::epoch`].
    pub sent_nanos: u64,
}

impl Tag {
    pub fn write(&self, out: &mut [u8; TAG_LEN]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = match self.stream {
            StreamKind::Video(layer) => layer,
            StreamKind::Audio => AUDIO,
        };
        out[3] = u8::from(self.keyframe);
        out[4..8].copy_from_slice(&self.counter.to_be_bytes());
        out[8..16].copy_from_slice(&self.sent_nanos.to_be_bytes());
    }

    /// Reads the tag at the end of `payload`; `None` for payloads not made by this generator.
    pub fn read(payload: &[u8]) -> Option<Tag> {
        let at = payload.len().checked_sub(TAG_LEN)?;
        let t = payload.get(at..)?;
        if t[0..2] != MAGIC {
            return None;
        }
        let stream = match t[2] {
            AUDIO => StreamKind::Audio,
            layer @ 0..=SINGLE_LAYER => StreamKind::Video(layer),
            _ => return None,
        };
        Some(Tag {
            stream,
            keyframe: t[3] & 1 != 0,
            counter: u32::from_be_bytes(t[4..8].try_into().ok()?),
            sent_nanos: u64::from_be_bytes(t[8..16].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_end() {
        let tag = Tag {
            stream: StreamKind::Video(2),
            keyframe: true,
            counter: 77,
            sent_nanos: 123_456_789,
        };
        let mut payload = vec![9u8; 40];
        let mut t = [0u8; TAG_LEN];
        tag.write(&mut t);
        payload.extend_from_slice(&t);
        assert_eq!(Tag::read(&payload), Some(tag));
        assert_eq!(Tag::read(&payload[..20]), None);
        assert_eq!(Tag::read(&[1, 2, 3]), None);
    }
}
