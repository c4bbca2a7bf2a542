//! RFC 4571 framing for ICE-TCP (RFC 6544): every packet on the stream is preceded by its length
//! as a 16-bit big-endian number.
//!
//! [`Deframer`] cuts what a connection delivers (in pieces of any size: a frame split over
//! several reads, several frames in one) back into packets; [`SendQueue`] holds the framed
//! packets a connection has not taken yet. Both have a fixed capacity chosen at creation, so
//! what one client can make the server hold is bounded, and neither allocates per packet.

/// Why a connection's stream cannot be read further: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more bytes than any WebRTC packet has (`max` is the limit).
    TooLarge { len: usize, max: usize },
    /// A zero-length frame: RFC 4571 gives it no meaning, and no WebRTC stack sends one.
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "a frame of {len} bytes is longer than {max}")
            }
            FrameError::Empty => f.write_str("an empty frame"),
        }
    }
}

impl std::error::Error for FrameError {}

const HEADER: usize = 2;

/// Reassembles frames from a byte stream into a buffer of `2 + max_frame` bytes (plus as much
/// again, so a read is never tiny).
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8]>,
    /// Bytes `start..end` are received and not yet handed out.
    start: usize,
    end: usize,
    max_frame: usize,
}

impl Deframer {
    pub fn new(max_frame: usize) -> Deframer {
        Deframer {
            buf: vec![0; 2 * (HEADER + max_frame)].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// Where the next read goes. Never empty: a whole frame always fits once the bytes before it
    /// are handed out (which [`Deframer::next_frame`] does until it returns `None`).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < HEADER + self.max_frame {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame's payload, `None` when more bytes are needed. After an error the
    /// stream is out of step for good.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let available = &self.buf[self.start..self.end];
        if available.len() < HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([available[0], available[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if available.len() < HEADER + len {
            return Ok(None);
        }
        let from = self.start + HEADER;
        self.start = from + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // The slice below still points at the bytes just consumed; they stay in place until
            // the next read.
        }
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Bytes received and not yet handed out (part of a frame).
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

/// Framed packets waiting for a connection's socket, at most `capacity` bytes. A packet that does
/// not fit is refused whole (the caller counts it as dropped): a connection that cannot keep up
/// loses packets, as a congested UDP path would, and never a part of one.
#[derive(Debug)]
pub struct SendQueue {
    buf: Vec<u8>,
    /// Bytes before this were written to the socket.
    sent: usize,
    capacity: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> SendQueue {
        SendQueue {
            buf: Vec::new(),
            sent: 0,
            capacity,
        }
    }

    /// Frames `packet` and queues it; `false` (and nothing queued) when it does not fit or
    /// cannot be framed (longer than 65535 bytes, or empty).
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        if len == 0 || self.len() + HEADER + packet.len() > self.capacity {
            return false;
        }
        if self.sent > 0 && self.buf.len() + HEADER + packet.len() > self.capacity {
            // Reuse the space already written rather than grow past the capacity.
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(packet);
        true
    }

    /// What the socket should take next.
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// The socket took `n` bytes of [`SendQueue::unsent`].
    pub fn consumed(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        }
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Feeds `stream` in pieces of `step` bytes, collecting every frame.
    fn feed(d: &mut Deframer, stream: &[u8], step: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let spare = d.spare();
            assert!(!spare.is_empty());
            let n = step.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            d.filled(n);
            rest = &rest[n..];
            while let Some(f) = d.next_frame()? {
                out.push(f.to_vec());
            }
        }
        Ok(out)
    }

    #[test]
    fn frames_come_out_whatever_the_read_sizes() {
        let payloads: Vec<Vec<u8>> = (1..40u8)
            .map(|i| vec![i; usize::from(i) * 37 % 1500 + 1])
            .collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        // One byte at a time (every frame split, headers too), odd sizes, and everything at once
        // (many frames merged in one read).
        for step in [1, 2, 3, 7, 100, 1499, 1502, 4000, stream.len()] {
            let mut d = Deframer::new(1500);
            assert_eq!(
                feed(&mut d, &stream, step).unwrap(),
                payloads,
                "step {step}"
            );
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_frame_of_the_largest_size_fits() {
        let mut d = Deframer::new(2048);
        let big = vec![9u8; 2048];
        let stream: Vec<u8> = [frame(&[1]), frame(&big), frame(&big), frame(&[2])].concat();
        let got = feed(&mut d, &stream, 3000).unwrap();
        assert_eq!(got, vec![vec![1], big.clone(), big, vec![2]]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // An HTTP request on the media port: "GE" is a length of 18245.
        let mut d = Deframer::new(2048);
        assert_eq!(
            feed(&mut d, b"GET / HTTP/1.1\r\n\r\n", 64),
            Err(FrameError::TooLarge {
                len: 0x4745,
                max: 2048
            })
        );
        let mut d = Deframer::new(2048);
        assert_eq!(feed(&mut d, &[0, 0, 1, 2], 4), Err(FrameError::Empty));
        // A truncated frame is simply incomplete.
        let mut d = Deframer::new(2048);
        assert_eq!(
            feed(&mut d, &[0, 10, 1, 2, 3], 5).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(d.pending(), 5);
    }

    #[test]
    fn send_queue_frames_and_is_bounded() {
        let mut q = SendQueue::new(10);
        assert!(q.push(&[1, 2, 3]));
        assert!(q.push(&[4]));
        assert_eq!(q.unsent(), &[0, 3, 1, 2, 3, 0, 1, 4]);
        // 8 queued; a 1-byte packet needs 3 more.
        assert!(!q.push(&[5]), "over capacity: refused whole");
        assert!(!q.push(&[]), "empty packets are not framed");
        q.consumed(5);
        assert_eq!(q.unsent(), &[0, 1, 4]);
        assert!(q.push(&[5, 6, 7, 8]), "written bytes make room");
        assert_eq!(q.unsent(), &[0, 1, 4, 0, 4, 5, 6, 7, 8]);
        assert!(q.buf.len() <= 10);
        q.consumed(9);
        assert!(q.is_empty());
        assert!(!SendQueue::new(1 << 20).push(&vec![0; 70_000]));
    }

    #[test]
    fn what_the_queue_writes_the_deframer_reads() {
        let mut q = SendQueue::new(1 << 16);
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        for p in &payloads {
            assert!(q.push(p));
        }
        let mut d = Deframer::new(100);
        assert_eq!(feed(&mut d, q.unsent(), 33).unwrap(), payloads);
    }
}
