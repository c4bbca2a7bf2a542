//! Datagrams waiting to leave the media socket, handed to the kernel in batches.
//!
//! One packet from the teacher becomes a datagram for every pupil, all produced in the same pass
//! of the media loop. Sending each with its own `sendto` pays the system call's entry and exit
//! per datagram; `sendmmsg` pays it once per batch. The loop flushes the outbox at the end of every
//! pass (and whenever a batch is full), so a datagram waits here for microseconds at most.

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
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Sent) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.failed += other.failed;
    }
}

#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    /// The kernel's form of each destination in a batch, kept between flushes so that sending
    /// allocates nothing once the media loop has warmed up.
    #[cfg(target_os = "linux")]
    addresses: Vec<socket2::SockAddr>,
}

impl Outbox {
    pub fn push(&mut self, destination: SocketAddr, datagram: Vec<u8>) {
        self.queue.push((destination, datagram));
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued, in order, and empties the outbox.
    pub fn flush(&mut self, socket: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        for chunk in self.queue.chunks(BATCH) {
            #[cfg(target_os = "linux")]
            {
                sent += send_batch(socket, chunk, &mut self.addresses);
            }
            #[cfg(not(target_os = "linux"))]
            {
                sent += send_batch(socket, chunk);
            }
        }
        self.queue.clear();
        sent
    }
}

#[cfg(target_os = "linux")]
fn send_batch(
    socket: &UdpSocket,
    datagrams: &[(SocketAddr, Vec<u8>)],
    addresses: &mut Vec<socket2::SockAddr>,
) -> Sent {
    use std::os::fd::AsRawFd;

    debug_assert!(datagrams.len() <= BATCH);
    addresses.clear();
    addresses.extend(datagrams.iter().map(|(to, _)| socket2::SockAddr::from(*to)));
    let mut iovecs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is valid (no name, no data, no control data, no flags).
    let mut all_headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let headers = &mut all_headers[..datagrams.len()];
    for (((_, datagram), address), (header, iov)) in datagrams
        .iter()
        .zip(addresses.iter())
        .zip(headers.iter_mut().zip(iovecs.iter_mut()))
    {
        *iov = libc::iovec {
            iov_base: datagram.as_ptr() as *mut libc::c_void,
            iov_len: datagram.len(),
        };
        // The pointers stay valid until `sendmmsg` returns: `datagrams`, `addresses` and
        // `iovecs` all outlive the calls below and are not touched in between.
        header.msg_hdr.msg_name = address.as_ptr() as *mut libc::c_void;
        header.msg_hdr.msg_namelen = address.len();
        header.msg_hdr.msg_iov = iov as *mut libc::iovec;
        header.msg_hdr.msg_iovlen = 1;
    }

    let fd = socket.as_raw_fd();
    let mut sent = Sent::default();
    let mut done = 0;
    while done < headers.len() {
        let rest = &mut headers[done..];
        // SAFETY: `rest` points at `rest.len()` initialised headers whose buffers are alive.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n > 0 {
            let n = n as usize;
            sent.datagrams += n as u64;
            sent.bytes += rest[..n].iter().map(|h| u64::from(h.msg_len)).sum::<u64>();
            done += n;
            continue;
        }
        // The datagram at `done` failed; the kernel reports why for it alone.
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => {}
            // The socket buffer is full: the rest of the batch would fail the same way.
            std::io::ErrorKind::WouldBlock => {
                sent.failed += (headers.len() - done) as u64;
                break;
            }
            _ => {
                sent.failed += 1;
                done += 1;
            }
        }
    }
    sent
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
        let sent = outbox.flush(&sender);
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
        let sent = outbox.flush(&sender);
        assert_eq!((sent.datagrams, sent.failed), (2, 1));
        let mut buf = [0u8; 64];
        for expected in [1u8, 3] {
            let n = receiver.recv(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], &[expected; 10]);
        }
    }
}
