//! The VP8 payload descriptor (RFC 7741 §4.2) and its per-subscriber rewriting.
//!
//! Simulcast switches one subscriber between independent encodings (rids q/h/f), and temporal
//! layer selection drops whole frames. The decoder must still see one continuous stream, so besides
//! sequence numbers and timestamps (`core::rewrite`) two descriptor fields are rewritten:
//!
//! - **PictureID** counts frames. libwebrtc's receiver uses it (with TL0PICIDX and TID) to find
//!   each frame's references and to detect missing frames. A jump at a layer switch looks like
//!   lost frames, so each source gets an offset that continues right after the last id sent.
//! - **TL0PICIDX** counts base-layer (TID 0) frames; frames of higher temporal layers carry the
//!   index of the base frame they depend on. It continues the same way at a switch (the switch
//!   happens on a keyframe, which is a base-layer frame: it gets the next index).
//!
//! Frames this SFU drops on purpose (temporal layers above the subscriber's target) would leave
//! holes in PictureID. Like LiveKit and mediasoup, we close those holes by increasing the offset
//! for each dropped picture, so the decoder never waits for a frame that will not come, while
//! holes from real network loss stay visible (the decoder must learn about those). TL0PICIDX needs
//! no such care: only frames with TID > 0 are dropped on purpose, and they do not advance it.
//!
//! KEYIDX is passed through: libwebrtc does not use it.
//!
//! The rewrite never allocates: [`Vp8Munger::forward`] returns the new values, and
//! [`Vp8Rewrite::patch`] turns them into str0m's fixed-size [`Vp8Patch`], which str0m applies
//! while serialising (`RtpWrite::vp8_patch`), so the shared payload is never copied.

use str0m::error::Vp8DescriptorError;
use str0m::rtp::{Vp8Descriptor, Vp8Patch, Vp8PatchError};

/// Why a payload is not a VP8 payload we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Error {
    /// The descriptor is cut short, or nothing follows it.
    Truncated,
    /// L (TL0PICIDX) without T (TID): RFC 7741 forbids it, and str0m refuses to patch it.
    Malformed,
}

/// A PictureID as sent: 7 bits (M = 0) or 15 bits (M = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    pub wide: bool,
}

impl PictureId {
    /// The number of distinct values: 128 or 32768.
    fn modulus(self) -> u64 {
        if self.wide { 1 << 15 } else { 1 << 7 }
    }
}

/// The fields of one VP8 RTP payload descriptor, plus the keyframe bit of the VP8 payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Header {
    /// N: a non-reference frame; it can be dropped without harming other frames.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_index: u8,
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    /// TID: the temporal layer (present when T is set).
    pub tid: Option<u8>,
    /// Y: this frame depends only on base-layer frames, so a receiver may switch up to `tid` here.
    pub layer_sync: bool,
    pub key_idx: Option<u8>,
    /// The length of the descriptor: the VP8 payload starts at this offset.
    pub len: usize,
    /// The packet starts a keyframe (S = 1, PID = 0, and P = 0 in the payload header).
    pub keyframe: bool,
}

/// A VP8 payload parsed once for every subscriber: our fields, and str0m's descriptor, which
/// knows where each field sits and is the only way to build the [`Vp8Patch`] str0m applies.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Payload {
    pub header: Vp8Header,
    pub descriptor: Vp8Descriptor,
}

impl Vp8Payload {
    /// One walk over the descriptor (str0m's, which validates it and records the offsets); the
    /// few bits str0m does not expose are read at positions that walk has proven present.
    /// Never panics; any input is fine.
    pub fn parse(p: &[u8]) -> Result<Vp8Payload, Vp8Error> {
        let descriptor = Vp8Descriptor::parse(p).map_err(|e| match e {
            Vp8DescriptorError::MalformedDescriptor => Vp8Error::Malformed,
            _ => Vp8Error::Truncated,
        })?;
        // str0m accepted it, so every byte read below exists; `get` keeps that a non-panic.
        let byte = |i: usize| p.get(i).copied().ok_or(Vp8Error::Truncated);
        let b0 = byte(0)?;
        let mut header = Vp8Header {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_index: b0 & 0x07,
            tl0_pic_idx: descriptor.tl0_pic_idx(),
            key_idx: descriptor.key_idx(),
            len: 1,
            ..Vp8Header::default()
        };
        if b0 & 0x80 != 0 {
            let x = byte(1)?;
            let mut i = 2;
            if let Some(value) = descriptor.picture_id() {
                let wide = byte(i)? & 0x80 != 0;
                i += if wide { 2 } else { 1 };
                header.picture_id = Some(PictureId { value, wide });
            }
            i += usize::from(header.tl0_pic_idx.is_some());
            if x & 0x30 != 0 {
                if x & 0x20 != 0 {
                    let t = byte(i)?;
                    header.tid = Some(t >> 6);
                    header.layer_sync = t & 0x20 != 0;
                }
                i += 1;
            }
            header.len = i;
        }
        header.keyframe = descriptor.starts_keyframe(p);
        Ok(Vp8Payload { header, descriptor })
    }

    /// str0m's patch writing `rewrite` into this payload. The PictureID keeps the width it was
    /// sent with, which is why [`Vp8Munger`] masks 7-bit ids to 7 bits.
    pub fn patch(&self, rewrite: &Vp8Rewrite) -> Result<Vp8Patch, Vp8PatchError> {
        rewrite.patch(&self.descriptor)
    }
}

impl Vp8Header {
    /// Parses the descriptor at the start of an RTP payload ([`Vp8Payload::parse`]'s fields).
    pub fn parse(p: &[u8]) -> Result<Vp8Header, Vp8Error> {
        Vp8Payload::parse(p).map(|v| v.header)
    }

    /// Whether this packet starts a frame (S = 1 and PID = 0).
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }

    /// Whether a subscriber may raise its temporal layer to this frame's: base-layer frames and
    /// frames with Y set reference nothing above the base layer. Judge it on the frame's first
    /// packet.
    pub fn is_temporal_switch_point(&self) -> bool {
        self.tid.is_none_or(|t| t == 0) || self.layer_sync
    }
}

/// New descriptor values for one packet towards one subscriber. `None` fields stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Rewrite {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

impl Vp8Rewrite {
    /// str0m's patch for `descriptor`, parsed by str0m from the same payload. The PictureID keeps
    /// the width it was sent with, which is why [`Vp8Munger`] masks 7-bit ids to 7 bits.
    pub fn patch(&self, descriptor: &Vp8Descriptor) -> Result<Vp8Patch, Vp8PatchError> {
        let mut builder = descriptor.patch();
        if let Some(id) = self.picture_id {
            builder = builder.picture_id(id);
        }
        if let Some(idx) = self.tl0_pic_idx {
            builder = builder.tl0_pic_idx(idx);
        }
        builder.build()
    }
}

/// How many offset changes (dropped pictures) are remembered for late, reordered packets.
const HISTORY: usize = 16;

/// From input picture `from` (extended) on, `out = in + offset` (wrapping).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    from: u64,
    offset: u64,
    /// The picture just before `from` was dropped on purpose.
    after_drop: bool,
}

impl Default for Vp8Munger {
    fn default() -> Self {
        Vp8Munger::new()
    }
}

/// One subscriber's PictureID/TL0PICIDX space for one video track.
///
/// Call [`Vp8Munger::switch_source`] when the forwarder switches to another source (on the new
/// source's keyframe), [`Vp8Munger::forward`] for each packet sent, and [`Vp8Munger::drop`] for
/// each packet of a picture deliberately not sent.
#[derive(Debug, Clone)]
pub struct Vp8Munger {
    /// The next packet with a PictureID starts a new source.
    switching: bool,
    /// Offsets of the current source, oldest first; `spans[..len]` are valid.
    spans: [Span; HISTORY],
    len: usize,
    /// The highest input picture (extended) seen from the current source.
    highest_in: Option<u64>,
    /// The highest output picture (extended) sent, over all sources.
    highest_out: Option<u64>,
    /// The TL0PICIDX sent with the highest output picture.
    last_tl0_out: Option<u8>,
    tl0_offset: u8,
}

impl Vp8Munger {
    pub fn new() -> Self {
        Vp8Munger {
            switching: true,
            spans: [Span::default(); HISTORY],
            len: 0,
            highest_in: None,
            highest_out: None,
            last_tl0_out: None,
            tl0_offset: 0,
        }
    }

    /// The next packet forwarded starts a new source (a keyframe of another layer or of a
    /// reconnected publisher); its picture continues right after the last one sent.
    pub fn switch_source(&mut self) {
        self.switching = true;
    }

    /// The values to write into a packet that is forwarded; `None` means drop it after all: it
    /// belongs to a picture dropped before, or is older than the current source's start.
    pub fn forward(&mut self, h: &Vp8Header) -> Option<Vp8Rewrite> {
        let Some(pid) = h.picture_id else {
            // Nothing to keep continuous without a PictureID (and str0m could not patch it).
            return Some(Vp8Rewrite::default());
        };
        if self.switching {
            self.start_source(pid, h.tl0_pic_idx);
        }
        let input = extend(self.highest_in, pid);
        let span = self.span_for(input)?;
        if self.is_dropped(input) {
            return None;
        }
        let out = input.wrapping_add(span.offset);
        let tl0 = h.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset));
        if self.highest_in.is_none_or(|hi| input >= hi) {
            self.highest_in = Some(input);
        }
        if self.highest_out.is_none_or(|hi| out >= hi) {
            self.highest_out = Some(out);
            self.last_tl0_out = tl0.or(self.last_tl0_out);
        }
        Some(Vp8Rewrite {
            picture_id: Some((out % pid.modulus()) as u16),
            tl0_pic_idx: tl0,
        })
    }

    /// A packet the SFU does not forward (its temporal layer is above the target). The first
    /// packet of a new picture shifts later pictures down by one, so no hole appears.
    pub fn drop(&mut self, h: &Vp8Header) {
        let Some(pid) = h.picture_id else { return };
        if self.switching {
            return; // Nothing of this source was sent yet; the switch sets the offset.
        }
        let input = extend(self.highest_in, pid);
        if self.highest_in.is_some_and(|hi| input <= hi) {
            return; // Another packet of an already counted picture, or a late one.
        }
        self.highest_in = Some(input);
        let offset = self.spans[self.len - 1].offset.wrapping_sub(1);
        self.push(Span {
            from: input + 1,
            offset,
            after_drop: true,
        });
    }

    fn start_source(&mut self, pid: PictureId, tl0: Option<u8>) {
        self.switching = false;
        let input = extend(None, pid);
        let out = self.highest_out.map_or(u64::from(pid.value), |hi| hi + 1);
        self.len = 0;
        self.push(Span {
            from: input,
            offset: out.wrapping_sub(input),
            after_drop: false,
        });
        self.highest_in = None;
        if let (Some(last), Some(tl0)) = (self.last_tl0_out, tl0) {
            self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
        }
    }

    fn push(&mut self, span: Span) {
        if self.len == HISTORY {
            self.spans.copy_within(1.., 0);
            self.len -= 1;
        }
        self.spans[self.len] = span;
        self.len += 1;
    }

    /// The span holding `input`; `None` when it is older than what is remembered.
    fn span_for(&self, input: u64) -> Option<Span> {
        self.spans[..self.len]
            .iter()
            .rev()
            .find(|s| s.from <= input)
            .copied()
    }

    fn is_dropped(&self, input: u64) -> bool {
        self.spans[..self.len]
            .iter()
            .any(|s| s.after_drop && s.from == input + 1)
    }
}

/// Unwraps a 7- or 15-bit picture id to the value nearest to `last` (extended). A source starts
/// one 15-bit cycle above zero, so that a late picture from before a wrap never goes below zero.
fn extend(last: Option<u64>, pid: PictureId) -> u64 {
    let m = pid.modulus();
    let value = u64::from(pid.value);
    let Some(last) = last else {
        return value + (1 << 15);
    };
    let base = last - last % m;
    let candidates = [base.wrapping_sub(m), base, base + m];
    candidates
        .into_iter()
        .filter(|c| *c <= u64::MAX - m) // skip an underflowed base - m
        .map(|c| c + value)
        .min_by_key(|c| c.abs_diff(last))
        .unwrap_or(value)
}

/// The L1T3 temporal pattern, as libvpx sends it: the TID of the n-th frame after a keyframe,
/// and its Y (layer sync) bit — the TID 2 frame right after a TID 0 frame and the TID 1 frame
/// depend only on TL0. Synthetic sources (the virtual-time harness, the test publishers) follow it.
pub fn l1t3(n: u64) -> (u8, bool) {
    match n % 4 {
        0 => (0, false),
        1 => (2, true),
        2 => (1, true),
        _ => (2, false),
    }
}

/// Relative size of an L1T3 delta frame by TID (averages to 1 over the pattern): base-layer
/// frames are larger. For synthetic sources.
pub fn l1t3_size_weight(tid: u8) -> f64 {
    match tid {
        0 => 1.6,
        1 => 1.0,
        _ => 0.7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(b: &[u8]) -> Vp8Header {
        Vp8Header::parse(b).unwrap()
    }

    #[test]
    fn parses_descriptors() {
        let pid = |value, wide| Some(PictureId { value, wide });
        let rows: &[(&[u8], Result<Vp8Header, Vp8Error>)] = &[
            (&[], Err(Vp8Error::Truncated)),
            // Descriptor only, no payload.
            (&[0x10], Err(Vp8Error::Truncated)),
            // Minimal keyframe start.
            (
                &[0x10, 0x00],
                Ok(Vp8Header {
                    start_of_partition: true,
                    len: 1,
                    keyframe: true,
                    ..Default::default()
                }),
            ),
            // N set, partition 1, inter frame.
            (
                &[0x21, 0x01],
                Ok(Vp8Header {
                    non_reference: true,
                    partition_index: 1,
                    len: 1,
                    ..Default::default()
                }),
            ),
            // Everything: 15-bit PictureID 0x1234, TL0PICIDX 7, TID 2, Y, KEYIDX 5, delta frame.
            (
                &[0x90, 0xf0, 0x92, 0x34, 0x07, 0xa5, 0x01],
                Ok(Vp8Header {
                    start_of_partition: true,
                    picture_id: pid(0x1234, true),
                    tl0_pic_idx: Some(7),
                    tid: Some(2),
                    layer_sync: true,
                    key_idx: Some(5),
                    len: 6,
                    ..Default::default()
                }),
            ),
            // 7-bit PictureID, keyframe.
            (
                &[0x90, 0x80, 0x05, 0x9c],
                Ok(Vp8Header {
                    start_of_partition: true,
                    picture_id: pid(5, false),
                    len: 3,
                    keyframe: true,
                    ..Default::default()
                }),
            ),
            // KEYIDX without TID: the shared byte is still there, TID is not.
            (
                &[0x80, 0x10, 0x1f, 0x01],
                Ok(Vp8Header {
                    key_idx: Some(31),
                    len: 3,
                    ..Default::default()
                }),
            ),
            // Truncations at every field.
            (&[0x90], Err(Vp8Error::Truncated)),
            (&[0x90, 0x80], Err(Vp8Error::Truncated)),
            (&[0x90, 0x80, 0x92], Err(Vp8Error::Truncated)),
            (&[0x90, 0xe0, 0x92, 0x34], Err(Vp8Error::Truncated)),
            (&[0x90, 0xe0, 0x92, 0x34, 0x07], Err(Vp8Error::Truncated)),
            (
                &[0x90, 0xe0, 0x92, 0x34, 0x07, 0x40],
                Err(Vp8Error::Truncated),
            ),
            // L without T.
            (&[0x90, 0x40, 0x07, 0x00], Err(Vp8Error::Malformed)),
        ];
        for (bytes, want) in rows {
            assert_eq!(Vp8Header::parse(bytes), *want, "{bytes:02x?}");
        }
    }

    /// The parser this module had before it derived its fields from str0m's walk: an
    /// independent reading of RFC 7741 to check that derivation against.
    fn walk(p: &[u8]) -> Result<Vp8Header, Vp8Error> {
        let byte = |i: usize| p.get(i).copied().ok_or(Vp8Error::Truncated);
        let b0 = byte(0)?;
        let mut h = Vp8Header {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_index: b0 & 0x07,
            ..Vp8Header::default()
        };
        let mut i = 1;
        if b0 & 0x80 != 0 {
            let x = byte(i)?;
            i += 1;
            let (has_pid, has_tl0, has_tid, has_key_idx) =
                (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
            if has_tl0 && !has_tid {
                return Err(Vp8Error::Malformed);
            }
            if has_pid {
                let hi = byte(i)?;
                i += 1;
                let wide = hi & 0x80 != 0;
                let value = if wide {
                    let lo = byte(i)?;
                    i += 1;
                    (u16::from(hi & 0x7f) << 8) | u16::from(lo)
                } else {
                    u16::from(hi & 0x7f)
                };
                h.picture_id = Some(PictureId { value, wide });
            }
            if has_tl0 {
                h.tl0_pic_idx = Some(byte(i)?);
                i += 1;
            }
            if has_tid || has_key_idx {
                let t = byte(i)?;
                i += 1;
                if has_tid {
                    h.tid = Some(t >> 6);
                    h.layer_sync = t & 0x20 != 0;
                }
                if has_key_idx {
                    h.key_idx = Some(t & 0x1f);
                }
            }
        }
        // The VP8 payload must follow; its first byte carries P (0 on keyframes).
        let payload_header = byte(i)?;
        h.len = i;
        h.keyframe = h.start_of_partition && h.partition_index == 0 && payload_header & 0x01 == 0;
        Ok(h)
    }

    /// Random bytes never panic, and whatever parses agrees with an independent walk, with
    /// str0m's parser and with the keyframe detection the shard uses today.
    #[test]
    fn random_bytes_agree_with_str0m() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            // xorshift64: deterministic, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 12];
        for _ in 0..200_000 {
            let r = next();
            let len = (r % 13) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (r.rotate_left(i as u32 * 5) ^ next()) as u8;
            }
            // Bias towards the interesting bits: X and I/L/T/K set often.
            if r & 0x100 != 0 {
                buf[0] |= 0x90;
                buf[1] |= 0xf0;
            }
            let p = &buf[..len];
            let ours = Vp8Header::parse(p);
            assert_eq!(ours, walk(p), "{p:02x?}");
            let theirs = Vp8Descriptor::parse(p);
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{p:02x?}");
            if let (Ok(h), Ok(d)) = (ours, theirs) {
                assert_eq!(h.picture_id.map(|p| p.value), d.picture_id(), "{p:02x?}");
                assert_eq!(h.tl0_pic_idx, d.tl0_pic_idx(), "{p:02x?}");
                assert_eq!(h.key_idx, d.key_idx(), "{p:02x?}");
                assert_eq!(h.keyframe, d.starts_keyframe(p), "{p:02x?}");
                assert_eq!(
                    h.keyframe,
                    super::super::keyframe::is_keyframe_start(
                        super::super::keyframe::VideoCodec::Vp8,
                        p
                    ),
                    "{p:02x?}"
                );
            }
        }
    }

    #[test]
    fn temporal_switch_points() {
        let rows: &[(&[u8], bool)] = &[
            (&[0x10, 0x00], true),                    // no TID: nothing layered
            (&[0x80, 0x20, 0x00, 0x01], true),        // TID 0
            (&[0x80, 0x20, 0x80, 0x01], false),       // TID 2
            (&[0x80, 0x20, 0xa0, 0x01], true),        // TID 2 with Y
            (&[0x80, 0x60, 0x03, 0x40, 0x01], false), // TID 1 with TL0PICIDX
            (&[0x80, 0x60, 0x03, 0x60, 0x01], true),  // TID 1, Y
        ];
        for (bytes, want) in rows {
            assert_eq!(hdr(bytes).is_temporal_switch_point(), *want, "{bytes:02x?}");
        }
    }

    /// A packet: 15-bit picture id, TL0PICIDX, TID; first packet of a frame; keyframe or not.
    fn pkt(pid: u16, tl0: u8, tid: u8, key: bool) -> Vp8Header {
        Vp8Header {
            start_of_partition: true,
            picture_id: Some(PictureId {
                value: pid,
                wide: true,
            }),
            tl0_pic_idx: Some(tl0),
            tid: Some(tid),
            keyframe: key,
            len: 6,
            ..Default::default()
        }
    }

    enum Step {
        Forward(Vp8Header, Option<(u16, u8)>),
        Drop(Vp8Header),
        Switch,
    }
    use Step::*;

    fn run(steps: &[Step]) {
        let mut m = Vp8Munger::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Forward(h, want) => {
                    let got = m
                        .forward(h)
                        .map(|r| (r.picture_id.unwrap(), r.tl0_pic_idx.unwrap()));
                    assert_eq!(got, *want, "step {i}");
                }
                Drop(h) => m.drop(h),
                Switch => m.switch_source(),
            }
        }
    }

    #[test]
    fn first_source_passes_through() {
        run(&[
            Forward(pkt(100, 7, 0, true), Some((100, 7))),
            Forward(pkt(100, 7, 0, true), Some((100, 7))), // second packet of the frame
            Forward(pkt(101, 7, 2, false), Some((101, 7))),
            Forward(pkt(102, 7, 1, false), Some((102, 7))),
            Forward(pkt(103, 7, 2, false), Some((103, 7))),
            Forward(pkt(104, 8, 0, false), Some((104, 8))),
        ]);
    }

    #[test]
    fn dropped_temporal_frames_leave_no_hole() {
        // L1T3 pattern TID 0 2 1 2 0 …; the subscriber gets TID ≤ 1.
        run(&[
            Forward(pkt(10, 200, 0, true), Some((10, 200))),
            Drop(pkt(11, 200, 2, false)),
            Drop(pkt(11, 200, 2, false)), // second packet of the dropped picture
            Forward(pkt(12, 200, 1, false), Some((11, 200))),
            Drop(pkt(13, 200, 2, false)),
            Forward(pkt(14, 201, 0, false), Some((12, 201))),
            // A late packet of a sent picture keeps its own number …
            Forward(pkt(12, 200, 1, false), Some((11, 200))),
            // … and one of a dropped picture stays dropped.
            Forward(pkt(13, 200, 2, false), None),
            Forward(pkt(15, 201, 2, false), Some((13, 201))),
        ]);
    }

    #[test]
    fn network_loss_stays_visible() {
        run(&[
            Forward(pkt(10, 1, 0, true), Some((10, 1))),
            // Picture 11 never arrives: the decoder must see the hole.
            Forward(pkt(12, 2, 0, false), Some((12, 2))),
        ]);
    }

    #[test]
    fn a_switch_continues_both_counters() {
        run(&[
            Forward(pkt(500, 9, 0, true), Some((500, 9))),
            Forward(pkt(501, 9, 1, false), Some((501, 9))),
            Switch,
            // The other layer's keyframe: picture 502, TL0PICIDX 10.
            Forward(pkt(7000, 77, 0, true), Some((502, 10))),
            Forward(pkt(7001, 77, 2, false), Some((503, 10))),
            // A straggler of the new source from before its keyframe.
            Forward(pkt(6999, 76, 0, false), None),
            Forward(pkt(7002, 78, 0, false), Some((504, 11))),
        ]);
    }

    #[test]
    fn counters_wrap() {
        run(&[
            Forward(pkt(0x7ffe, 254, 0, true), Some((0x7ffe, 254))),
            Forward(pkt(0x7fff, 255, 0, false), Some((0x7fff, 255))),
            Forward(pkt(0, 0, 0, false), Some((0, 0))),
            Drop(pkt(1, 0, 2, false)),
            Forward(pkt(2, 1, 0, false), Some((1, 1))),
            Switch,
            // Continue across the wrap from a source that is itself near its wrap.
            Forward(pkt(0x7fff, 255, 0, true), Some((2, 2))),
            Forward(pkt(0, 0, 0, false), Some((3, 3))),
        ]);
        // Continuity across a switch at the output wrap.
        run(&[
            Forward(pkt(0x7fff, 255, 0, true), Some((0x7fff, 255))),
            Switch,
            Forward(pkt(40, 3, 0, true), Some((0, 0))),
        ]);
    }

    #[test]
    fn forgets_old_drops_safely() {
        let mut m = Vp8Munger::new();
        assert!(m.forward(&pkt(0, 0, 0, true)).is_some());
        for pid in 1..=40 {
            if pid % 2 == 1 {
                m.drop(&pkt(pid, 0, 2, false));
            } else {
                assert_eq!(
                    m.forward(&pkt(pid, 0, 0, false)).unwrap().picture_id,
                    Some(pid / 2)
                );
            }
        }
        // Picture 2 went out as 1, but its offset has been forgotten: drop rather than guess.
        assert_eq!(m.forward(&pkt(2, 0, 0, false)), None);
        assert_eq!(
            m.forward(&pkt(40, 0, 0, false)).unwrap().picture_id,
            Some(20)
        );
    }

    /// Random sequences of forwards, drops, switches and wild jumps never panic.
    #[test]
    fn random_munging_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut m = Vp8Munger::new();
        let mut pid = 0u16;
        for _ in 0..100_000 {
            let r = next();
            pid = (pid + (r % 3) as u16) & 0x7fff;
            let h = pkt(pid, (r >> 8) as u8, (r >> 16) as u8 % 3, r & 0x40 != 0);
            match (r >> 24) % 8 {
                0 => m.switch_source(),
                1 | 2 => m.drop(&h),
                _ => {
                    let _ = m.forward(&h);
                }
            }
            if r % 1000 == 0 {
                pid = (r >> 27) as u16 & 0x7fff; // a wild jump
            }
        }
    }

    #[test]
    fn seven_bit_ids_wrap_at_128() {
        let short = |value| Vp8Header {
            picture_id: Some(PictureId { value, wide: false }),
            ..Default::default()
        };
        let mut m = Vp8Munger::new();
        let ids: Vec<_> = [126, 127, 0, 1]
            .into_iter()
            .map(|v| m.forward(&short(v)).unwrap().picture_id)
            .collect();
        assert_eq!(ids, [Some(126), Some(127), Some(0), Some(1)]);
        m.drop(&short(2));
        assert_eq!(m.forward(&short(3)).unwrap().picture_id, Some(2));
    }

    #[test]
    fn patches_through_str0m() {
        let payload = [0x90, 0xe0, 0x92, 0x34, 0x07, 0x40, 0x9d];
        let d = Vp8Descriptor::parse(&payload).unwrap();
        let rewrite = Vp8Rewrite {
            picture_id: Some(0x7fff),
            tl0_pic_idx: Some(255),
        };
        assert!(rewrite.patch(&d).is_ok());
        assert!(Vp8Rewrite::default().patch(&d).is_ok());
        // A 7-bit id cannot take a 15-bit value: the munger masks, str0m refuses.
        let short = Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x9d]).unwrap();
        let wide = Vp8Rewrite {
            picture_id: Some(200),
            tl0_pic_idx: None,
        };
        assert_eq!(wide.patch(&short), Err(Vp8PatchError::PictureIdTooLarge));
    }
}
