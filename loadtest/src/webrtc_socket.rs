//! The webrtc-rs pupil's UDP socket, seen through webrtc-rs's own runtime abstraction: a
//! [`Runtime`] that is tokio's in everything but the socket it wraps, so the pupil learns its
//! local port (for the kernel's drop counter) and can apply `--pupil-cap-kbps` the way the str0m
//! pupil does, by dropping RTP datagrams beyond a token bucket before the stack sees them — so
//! the server's congestion control meets the loss in TWCC and NACKs as from a slow link.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

use crate::media::{Bucket, is_rtp};

/// What the pupil's sockets share with the pupil.
#[derive(Debug, Default)]
pub struct SocketShared {
    /// The first UDP socket's local address (the pupil binds exactly one).
    pub local: OnceLock<SocketAddr>,
    /// RTP datagrams dropped by the cap.
    pub dropped_by_cap: AtomicU64,
    cap: Option<Mutex<Bucket>>,
}

impl SocketShared {
    pub fn new(cap_kbps: Option<u32>) -> Arc<SocketShared> {
        Arc::new(SocketShared {
            local: OnceLock::new(),
            dropped_by_cap: AtomicU64::new(0),
            cap: cap_kbps.map(|k| Mutex::new(Bucket::new(k, Instant::now()))),
        })
    }

    /// Cuts the RTP datagrams the bucket refuses out of `data`, a message of one datagram or of
    /// several of `stride` bytes coalesced by GRO (the last may be shorter, and stays last), and
    /// returns the length kept.
    fn filter(&self, bucket: &Mutex<Bucket>, data: &mut [u8], stride: usize) -> usize {
        let now = Instant::now();
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut kept, mut at) = (0, 0);
        while at < data.len() {
            let end = (at + stride).min(data.len());
            if is_rtp(&data[at..end]) && !bucket.allow(now, end - at) {
                self.dropped_by_cap.fetch_add(1, Ordering::Relaxed);
            } else {
                data.copy_within(at..end, kept);
                kept += end - at;
            }
            at = end;
        }
        kept
    }
}

/// Tokio's runtime with [`CappedSocket`]s.
#[derive(Debug)]
pub struct PupilRuntime {
    tokio: TokioRuntime,
    shared: Arc<SocketShared>,
}

impl PupilRuntime {
    pub fn new(shared: Arc<SocketShared>) -> PupilRuntime {
        PupilRuntime {
            tokio: TokioRuntime,
            shared,
        }
    }
}

impl Runtime for PupilRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.tokio.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.tokio.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        let _ = self.shared.local.set(local);
        Ok(Arc::new(CappedSocket {
            inner: self.tokio.wrap_udp_socket(socket)?,
            shared: self.shared.clone(),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.tokio.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.tokio.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.tokio.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.tokio.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.tokio.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.tokio.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (loadtest pupil)"
    }
}

/// Tokio's UDP socket; with a cap, RTP beyond it is dropped on receive.
pub struct CappedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<SocketShared>,
}

impl fmt::Debug for CappedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CappedSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncUdpSocket for CappedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(bucket) = &self.shared.cap else {
            return self.inner.poll_recv(cx, bufs, meta);
        };
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return self.inner.poll_recv(cx, bufs, meta);
        };
        // One message at a time, which is all the webrtc-rs driver asks for. A message whose
        // datagrams were all dropped is not returned: the next read either finds another or
        // registers the waker.
        loop {
            match self
                .inner
                .poll_recv(cx, std::slice::from_mut(buf), std::slice::from_mut(m))
            {
                Poll::Ready(Ok(n)) if n > 0 => {
                    let len = m.len.min(buf.len());
                    let kept = self.shared.filter(bucket, &mut buf[..len], m.stride.max(1));
                    if kept > 0 {
                        m.len = kept;
                        return Poll::Ready(Ok(1));
                    }
                }
                other => return other,
            }
        }
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 96;
        p
    }

    #[test]
    fn the_cap_cuts_rtp_out_of_a_coalesced_message_and_keeps_the_rest() {
        let shared = SocketShared::new(Some(100));
        let Some(bucket) = &shared.cap else {
            panic!("a cap was given");
        };
        // 100 kbit/s: a 4000-byte burst. Three 1500-byte RTP datagrams and a short RTCP one
        // (payload type 200) coalesced: the third RTP datagram does not fit, RTCP always does.
        let mut data = [rtp(1500), rtp(1500), rtp(1500)].concat();
        let mut rtcp = vec![0u8; 100];
        rtcp[0] = 0x80;
        rtcp[1] = 200;
        data.extend_from_slice(&rtcp);
        let kept = shared.filter(bucket, &mut data, 1500);
        assert_eq!(kept, 3100);
        assert_eq!(&data[3000..3100], &rtcp[..]);
        assert_eq!(shared.dropped_by_cap.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_capped_socket_drops_rtp_beyond_the_bucket_before_the_reader() {
        let shared = SocketShared::new(Some(100));
        let runtime = PupilRuntime::new(shared.clone());
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socket = runtime.wrap_udp_socket(std_socket).expect("wrap");
        let local = socket.local_addr().expect("local address");
        assert_eq!(shared.local.get(), Some(&local));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
        // Four 1200-byte RTP datagrams against a 4000-byte burst, then a STUN-like one that
        // must pass whatever the bucket holds.
        for _ in 0..4 {
            sender.send_to(&rtp(1200), local).expect("send");
        }
        sender.send_to(&[0u8; 20], local).expect("send");
        // GRO may coalesce datagrams, so the reads are counted in bytes: three RTP datagrams
        // and the last one. A fourth RTP datagram would show as more bytes before the STUN one.
        let want = 3 * 1200 + 20;
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < want {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("a datagram within 5 s")
                .expect("receive");
            got += n;
        }
        assert_eq!(got, want);
        assert_eq!(shared.dropped_by_cap.load(Ordering::Relaxed), 1);
    }
}
