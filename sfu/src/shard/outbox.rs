//! Datagrams waiting to leave the media socket, handed to the kernel in batches.
//!
//! One packet from the teacher becomes a datagram for every pupil, all produced in the same pass
//! of the media loop. Sending each with its own `sendto` pays the system call's entry and exit
//! per datagram; `sendmmsg` pays it once per batch. The shard only fills the [`Outbox`]; the I/O
//! loop (`io_loop`) sends it through a [`Sender`] at the end of every pass and whenever the shard
//! reports a batch full, so a datagram waits here for microseconds at most.
//!
//! Consecutive datagrams to one destination (the packets of a frame for one pupil) also go as one
//! UDP GSO send (`UDP_SEGMENT`) where the kernel allows it: it walks the stack once for the run
//! and cuts it into datagrams at the end, instead of once per datagram.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call: the kernel's own cap (UIO_MAXIOV) is 1024; past a few dozen the
/// system call's fixed cost is already spread thin.
pub(super) const BATCH: usize = 64;

/// What one flush did, for the media counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams the kernel refused (a full socket buffer, an unreachable address): dropped, as
    /// the network would drop them; RTP recovers through NACK and keyframe requests.
    pub failed: u64,
    /// Of `datagrams`, those sent as segments of a GSO send of two or more.
    pub segmented: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Sent) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.failed += other.failed;
        self.segmented += other.segmented;
    }
}

/// Datagrams the shard produced, waiting for the I/O loop (or the virtual-time harness) to take
/// them. The shard never sends: it fills this, says when it is full ([`Outbox::is_full`]), and
/// the loop empties it through a [`Sender`].
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    /// Frames for ICE-TCP connections, by the client's address.
    tcp: Vec<(SocketAddr, Vec<u8>)>,
    /// Datagrams of link connections (`super::link`): the port of the socket they leave from.
    link: Vec<(u16, SocketAddr, Vec<u8>)>,
}

impl Outbox {
    pub fn push(&mut self, destination: SocketAddr, datagram: Vec<u8>) {
        self.queue.push((destination, datagram));
    }

    pub fn push_tcp(&mut self, destination: SocketAddr, frame: Vec<u8>) {
        self.tcp.push((destination, frame));
    }

    pub fn push_link(&mut self, port: u16, destination: SocketAddr, datagram: Vec<u8>) {
        self.link.push((port, destination, datagram));
    }

    /// A batch is waiting: the loop should send it before the shard produces more, so what the
    /// shard holds stays bounded however many subscribers one packet fans out to.
    pub fn is_full(&self) -> bool {
        self.queue.len() + self.tcp.len() + self.link.len() >= BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tcp.is_empty() && self.link.is_empty()
    }

    /// Takes every queued UDP datagram, in order.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn take_udp(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.queue.drain(..)
    }

    /// Takes every queued link datagram, in order.
    pub fn take_link(&mut self) -> std::vec::Drain<'_, (u16, SocketAddr, Vec<u8>)> {
        self.link.drain(..)
    }

    /// Takes every queued ICE-TCP frame, in order.
    pub fn take_tcp(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.tcp.drain(..)
    }
}

/// Hands an outbox's UDP datagrams to the kernel: `sendmmsg` batches, GSO runs where allowed.
#[derive(Debug)]
pub(super) struct Sender {
    #[cfg(target_os = "linux")]
    scratch: Scratch,
    /// Whether runs to one destination go as GSO sends; off for good once the kernel refuses one.
    #[cfg(target_os = "linux")]
    gso: bool,
}

impl Default for Sender {
    fn default() -> Sender {
        Sender {
            #[cfg(target_os = "linux")]
            scratch: Scratch::default(),
            #[cfg(target_os = "linux")]
            gso: true,
        }
    }
}

impl Sender {
    /// Sends every UDP datagram queued in `outbox`, in order, and empties its UDP queue (the
    /// ICE-TCP frames are the caller's, [`Outbox::take_tcp`]).
    pub fn flush(&mut self, outbox: &mut Outbox, socket: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        for chunk in outbox.queue.chunks(BATCH) {
            #[cfg(target_os = "linux")]
            {
                sent += send_batch(socket, chunk, &mut self.scratch, &mut self.gso);
            }
            #[cfg(not(target_os = "linux"))]
            {
                sent += send_batch(socket, chunk);
            }
        }
        outbox.queue.clear();
        sent
    }
}

/// A batch's runs and the kernel's form of their destinations, kept between flushes so that
/// sending allocates nothing once the media loop has warmed up.
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
struct Scratch {
    runs: Vec<Run>,
    addresses: Vec<socket2::SockAddr>,
}

/// Most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS was 64 before Linux 5.5).
#[cfg(target_os = "linux")]
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: a UDP datagram's payload limit, with room to spare.
#[cfg(target_os = "linux")]
const MAX_GSO_BYTES: usize = 60_000;

/// A run of datagrams that leave as one message: `count` of them from `start`, all of
/// `segment` bytes but the last, which may be shorter.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Run {
    start: usize,
    count: usize,
    segment: usize,
}

/// Cuts a batch into runs a GSO send can carry: consecutive datagrams to one destination, equal
/// in size but for a shorter last one. Without GSO every datagram is its own run.
#[cfg(target_os = "linux")]
fn runs(datagrams: &[(SocketAddr, Vec<u8>)], gso: bool, out: &mut Vec<Run>) {
    out.clear();
    let mut start = 0;
    while let Some((to, first)) = datagrams.get(start) {
        let segment = first.len();
        let mut end = start + 1;
        let mut bytes = segment;
        while gso && end - start < MAX_SEGMENTS {
            let Some((next_to, next)) = datagrams.get(end) else {
                break;
            };
            if next_to != to || next.len() > segment || bytes + next.len() > MAX_GSO_BYTES {
                break;
            }
            bytes += next.len();
            end += 1;
            if next.len() < segment {
                break;
            }
        }
        out.push(Run {
            start,
            count: end - start,
            segment,
        });
        start = end;
    }
}

#[cfg(target_os = "linux")]
fn send_batch(
    socket: &UdpSocket,
    datagrams: &[(SocketAddr, Vec<u8>)],
    scratch: &mut Scratch,
    gso: &mut bool,
) -> Sent {
    use std::os::fd::AsRawFd;

    debug_assert!(datagrams.len() <= BATCH);
    let Scratch {
        runs: batch_runs,
        addresses,
    } = scratch;
    runs(datagrams, *gso, batch_runs);
    addresses.clear();
    addresses.extend(
        batch_runs
            .iter()
            .map(|r| socket2::SockAddr::from(datagrams[r.start].0)),
    );
    let mut iovecs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    for ((_, datagram), iov) in datagrams.iter().zip(iovecs.iter_mut()) {
        *iov = libc::iovec {
            iov_base: datagram.as_ptr() as *mut libc::c_void,
            iov_len: datagram.len(),
        };
    }
    // Every header points into this one array: one base pointer, not a new borrow per run.
    let first_iovec = iovecs.as_mut_ptr();
    // One cmsghdr carrying a u16 per message, 8-byte aligned: CMSG_SPACE(2) is 24 bytes here.
    let mut controls = [[0u64; 4]; BATCH];
    // SAFETY: an all-zero mmsghdr is valid (no name, no data, no control data, no flags).
    let mut all_headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let headers = &mut all_headers[..batch_runs.len()];
    for (((run, address), header), control) in batch_runs
        .iter()
        .zip(addresses.iter())
        .zip(headers.iter_mut())
        .zip(controls.iter_mut())
    {
        // The pointers stay valid until `sendmmsg` returns: `datagrams`, `addresses`, `iovecs`
        // and `controls` all outlive the calls below and are not touched in between.
        header.msg_hdr.msg_name = address.as_ptr() as *mut libc::c_void;
        header.msg_hdr.msg_namelen = address.len();
        // SAFETY: `run.start + run.count <= datagrams.len() <= BATCH`, inside `iovecs`.
        header.msg_hdr.msg_iov = unsafe { first_iovec.add(run.start) };
        header.msg_hdr.msg_iovlen = run.count;
        if run.count > 1 {
            set_segment_size(&mut header.msg_hdr, control, run.segment as u16);
        }
    }

    let fd = socket.as_raw_fd();
    let mut sent = Sent::default();
    let mut refused_runs = Vec::new();
    let mut done = 0;
    while done < headers.len() {
        let rest = &mut headers[done..];
        // SAFETY: `rest` points at `rest.len()` initialised headers whose buffers are alive.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n > 0 {
            let n = n as usize;
            for (run, header) in batch_runs[done..done + n].iter().zip(&rest[..n]) {
                sent.datagrams += run.count as u64;
                sent.bytes += u64::from(header.msg_len);
                if run.count > 1 {
                    sent.segmented += run.count as u64;
                }
            }
            done += n;
            continue;
        }
        // The message at `done` failed; the kernel reports why for it alone.
        let run = batch_runs[done];
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => {}
            // The socket buffer is full: the rest of the batch would fail the same way.
            std::io::ErrorKind::WouldBlock => {
                sent.failed += batch_runs[done..]
                    .iter()
                    .map(|r| r.count as u64)
                    .sum::<u64>();
                break;
            }
            // A kernel or device without UDP segmentation says so here (EIO, EINVAL): send
            // that run again datagram by datagram, and no more GSO from this socket.
            _ if run.count > 1
                && matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
            {
                if *gso {
                    tracing::warn!("UDP GSO refused ({error}): sending datagram by datagram");
                }
                *gso = false;
                refused_runs.push(run);
                done += 1;
            }
            _ => {
                sent.failed += run.count as u64;
                done += 1;
            }
        }
    }
    for run in refused_runs {
        let mut plain = false;
        sent += send_batch(
            socket,
            &datagrams[run.start..run.start + run.count],
            &mut Scratch::default(),
            &mut plain,
        );
    }
    sent
}

/// Attaches `UDP_SEGMENT` to a message: the kernel cuts its data into `segment`-byte datagrams.
#[cfg(target_os = "linux")]
fn set_segment_size(header: &mut libc::msghdr, control: &mut [u64; 4], segment: u16) {
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes; `control` is 32 bytes, 8-byte aligned,
    // more than CMSG_SPACE(2), so CMSG_FIRSTHDR finds room for the header and its u16, and
    // `control` outlives the send that reads it (see the caller).
    unsafe {
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
}

#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, datagrams: &[(SocketAddr, Vec<u8>)]) -> Sent {
    let mut sent = Sent::default();
    for (to, datagram) in datagrams {
        match socket.try_send_to(datagram, *to) {
            Ok(n) => {
                sent.datagrams += 1;
                sent.bytes += n as u64;
            }
            Err(_) => sent.failed += 1,
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, std::net::UdpSocket) {
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind sender");
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        (sender, receiver)
    }

    #[tokio::test]
    async fn every_datagram_arrives_whole_and_in_order_across_batches() {
        let (sender, receiver) = pair().await;
        let to = receiver.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        let count = BATCH * 2 + 7;
        for i in 0..count {
            // Different sizes, so a datagram cut short or merged would show.
            outbox.push(to, vec![i as u8; 20 + i]);
        }
        let sent = Sender::default().flush(&mut outbox, &sender);
        assert_eq!(sent.datagrams, count as u64);
        assert_eq!(sent.failed, 0);
        assert_eq!(sent.bytes, (0..count).map(|i| 20 + i as u64).sum::<u64>());
        assert!(outbox.is_empty());
        let mut buf = [0u8; 2048];
        for i in 0..count {
            let n = receiver.recv(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], vec![i as u8; 20 + i].as_slice(), "datagram {i}");
        }
    }

    #[tokio::test]
    async fn a_refused_datagram_is_counted_and_the_rest_still_go() {
        let (sender, receiver) = pair().await;
        let to = receiver.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        outbox.push(to, vec![1; 10]);
        // An IPv6 destination on an IPv4 socket: the kernel refuses this one datagram.
        outbox.push("[::1]:9".parse().expect("addr"), vec![2; 10]);
        outbox.push(to, vec![3; 10]);
        let sent = Sender::default().flush(&mut outbox, &sender);
        assert_eq!((sent.datagrams, sent.failed), (2, 1));
        let mut buf = [0u8; 64];
        for expected in [1u8, 3] {
            let n = receiver.recv(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], &[expected; 10]);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn runs_are_one_destination_equal_sizes_and_a_shorter_last() {
        let a: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2000".parse().expect("addr");
        let batch: Vec<(SocketAddr, Vec<u8>)> = [
            (a, 100),
            (a, 100),
            (a, 60),
            (a, 100),
            (b, 100),
            (a, 100),
            (a, 120),
        ]
        .into_iter()
        .map(|(to, len)| (to, vec![0; len]))
        .collect();
        let mut out = Vec::new();
        runs(&batch, true, &mut out);
        let got: Vec<(usize, usize)> = out.iter().map(|r| (r.start, r.count)).collect();
        // A shorter datagram ends a run; a longer one, or another destination, starts a new one.
        assert_eq!(got, vec![(0, 3), (3, 1), (4, 1), (5, 1), (6, 1)]);
        assert_eq!(out[0].segment, 100);

        runs(&batch, false, &mut out);
        assert!(out.iter().all(|r| r.count == 1));
        assert_eq!(out.len(), batch.len());

        let long: Vec<(SocketAddr, Vec<u8>)> = (0..BATCH).map(|_| (a, vec![0; 1200])).collect();
        runs(&long, true, &mut out);
        assert!(
            out.iter()
                .all(|r| r.count * 1200 <= MAX_GSO_BYTES && r.count <= MAX_SEGMENTS)
        );
        assert_eq!(out.iter().map(|r| r.count).sum::<usize>(), BATCH);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_frame_for_one_pupil_leaves_as_one_gso_send_and_arrives_as_datagrams() {
        let (sender, first) = pair().await;
        let second = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
        second
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let (to_first, to_second) = (
            first.local_addr().expect("addr"),
            second.local_addr().expect("addr"),
        );
        let mut outbox = Outbox::default();
        // A frame of six packets for one pupil (the last shorter), then three for another.
        let for_first: Vec<Vec<u8>> = (0..6u8)
            .map(|i| vec![i; if i == 5 { 300 } else { 1000 }])
            .collect();
        let for_second: Vec<Vec<u8>> = (10..13u8).map(|i| vec![i; 1000]).collect();
        for d in &for_first {
            outbox.push(to_first, d.clone());
        }
        for d in &for_second {
            outbox.push(to_second, d.clone());
        }
        let sent = Sender::default().flush(&mut outbox, &sender);
        assert_eq!((sent.datagrams, sent.failed), (9, 0));
        assert_eq!(sent.bytes, 5 * 1000 + 300 + 3 * 1000);
        // Loopback takes UDP GSO since Linux 4.18.
        assert_eq!(sent.segmented, 9);
        let mut buf = [0u8; 2048];
        for (receiver, expected) in [(&first, &for_first), (&second, &for_second)] {
            for d in expected {
                let n = receiver.recv(&mut buf).expect("datagram");
                assert_eq!(&buf[..n], d.as_slice());
            }
        }
    }
}
