//! Recognising the first packet of a keyframe from the RTP payload alone.
//!
//! A subscriber may only start (or switch layers) at a keyframe; everything before it would be
//! undecodable. These parsers read just enough of each codec's payload format to tell.

/// Video codecs whose keyframes we can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

/// Whether `payload` is the first packet of a keyframe.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe_start(payload),
        VideoCodec::Vp9 => vp9_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe_start(payload),
    }
}

/// RFC 7741: the descriptor parser of `core::vp8` knows where the payload header starts.
fn vp8_keyframe_start(p: &[u8]) -> bool {
    super::vp8::Vp8Header::parse(p).is_ok_and(|h| h.keyframe)
}

/// draft-ietf-payload-vp9: P (inter-picture predicted) clear and B (start of frame) set.
fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let begins_frame = b0 & 0x08 != 0;
    !inter_predicted && begins_frame
}

/// RFC 6184: an IDR slice or a sequence parameter set, alone, in a STAP-A, or at the start of a
/// FU-A.
fn h264_keyframe_start(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut i = 1;
            while let (Some(&hi), Some(&lo)) = (p.get(i), p.get(i + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                match p.get(i + 2) {
                    Some(&nal) if matches!(nal & 0x1f, IDR | SPS) => return true,
                    Some(_) => i += 2 + size,
                    None => return false,
                }
            }
            false
        }
        FU_A => matches!(p.get(1), Some(&fu) if fu & 0x80 != 0 && matches!(fu & 0x1f, IDR | SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8() {
        let rows: &[(&[u8], bool)] = &[
            (&[], false),
            // S=1, PID=0, key frame header (P=0), start code.
            (&[0x10, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a], true),
            // Delta frame (P=1).
            (&[0x10, 0x51, 0x2a, 0x00], false),
            // Continuation packet of a frame.
            (&[0x00, 0x50, 0x2a], false),
            // Partition 1.
            (&[0x11, 0x50], false),
            // Extended: I with 15-bit picture id, L, T → header at index 6.
            (
                &[0x90, 0xe0, 0x80 | 0x12, 0x34, 0x07, 0x20, 0x50, 0x9d],
                true,
            ),
            (&[0x90, 0xe0, 0x80 | 0x12, 0x34, 0x07, 0x20, 0x51], false),
            // Extended with a 7-bit picture id only.
            (&[0x90, 0x80, 0x05, 0x10], true),
            // Truncated extension.
            (&[0x90, 0x80], false),
        ];
        for (p, want) in rows {
            assert_eq!(is_keyframe_start(VideoCodec::Vp8, p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn h264() {
        let rows: &[(&[u8], bool)] = &[
            (&[], false),
            (&[0x65, 0x88], true),                                      // IDR
            (&[0x67, 0x42], true),                                      // SPS
            (&[0x41, 0x9a], false),                                     // non-IDR slice
            (&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68], true),  // STAP-A SPS, PPS
            (&[0x78, 0x00, 0x01, 0x68, 0x00, 0x02, 0x41, 0x9a], false), // STAP-A PPS, slice
            (&[0x78, 0x00, 0x09], false),                               // truncated STAP-A
            (&[0x7c, 0x85, 0x88], true),                                // FU-A start of IDR
            (&[0x7c, 0x05, 0x88], false),                               // FU-A middle of IDR
            (&[0x7c, 0x81, 0x88], false),                               // FU-A start of non-IDR
        ];
        for (p, want) in rows {
            assert_eq!(is_keyframe_start(VideoCodec::H264, p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn vp9() {
        assert!(is_keyframe_start(VideoCodec::Vp9, &[0x08]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x48]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x00]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[]));
    }
}
