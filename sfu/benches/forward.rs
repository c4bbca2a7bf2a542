//! The floor of this machine beside the server's own shard forwarding a lesson.
//!
//! `cargo bench -p classroom-sfu --bench forward`
//!
//! - `floor/*`: what the kernel and the cipher alone cost per outgoing packet: SRTP protect
//!   (aws-lc-rs primitives used directly, in the profile str0m negotiates by default) and
//!   `sendmmsg`/`sendto` of the protected packets to a loopback socket nobody waits on.
//! - `forward/lesson/N`: the server's real `Shard` (`sfu/src/shard/`), driven by the
//!   virtual-time harness (`classroom_sfu::sim`, the crate's `sim` feature) exactly as the I/O
//!   loop drives it: commands, datagrams and timeouts into its entry points with the time, its
//!   outbox emptied after each. A teacher publishes VP8 simulcast and Opus, N pupils subscribe.
//!   All are str0m peers on 1 ms links without rate limit or loss, and the pupils answer with
//!   TWCC, receiver reports, NACKs and PLIs, so the estimates, the allocation round and the pacer
//!   run as in a lesson. Only the shard's calls are timed (`sim::meter`), not the peers. The
//!   socket send is not in the loop (the harness carries the datagrams), so the server's cost per
//!   packet is the shard's plus the floor's `sendmmsg` (str0m already encrypts inside the shard).
//!
//! Times are CPU time of the bench thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! machine's cores are shared. One `forward/lesson/N` iteration is one media packet sent to a
//! pupil, so its time is the shard's CPU per forwarded packet, with everything it did for the
//! incoming packets, RTCP, bandwidth probes and timers spread over them. A `floor` iteration is a
//! batch of [`BATCH`] packets. Results: `benches/RESULTS.md`.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use classroom_sfu::LayerName;
use classroom_sfu::sim::meter::clock_read_cost;
use classroom_sfu::sim::{Shaping, ShardCost, SourceConfig, World};

/// Packets per `sendmmsg` batch in the floor.
const BATCH: usize = 64;
/// A video packet on the wire before SRTP: 28 bytes of RTP header and extensions, 1072 payload.
const VIDEO_HEADER: usize = 28;
const VIDEO_PAYLOAD: usize = 1072;
/// An Opus packet: 24 bytes of header and extensions, 76 bytes of payload.
const AUDIO_HEADER: usize = 24;
const AUDIO_PAYLOAD: usize = 76;
/// Same as the shard's media socket (`SOCKET_BUFFER_BYTES`).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// A loopback socket configured like the shard's media socket: 4 MiB buffers, non-blocking.
fn media_socket() -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))
        .expect("create UDP socket");
    socket
        .set_recv_buffer_size(SOCKET_BUFFER_BYTES)
        .expect("receive buffer");
    socket
        .set_send_buffer_size(SOCKET_BUFFER_BYTES)
        .expect("send buffer");
    socket.set_nonblocking(true).expect("non-blocking");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    socket.bind(&addr.into()).expect("bind loopback");
    socket.into()
}

/// Raises a socket's receive buffer past `net.core.rmem_max` (we run as root); best effort.
fn force_recv_buffer(socket: &UdpSocket, bytes: i32) {
    // SAFETY: a plain setsockopt on an fd we own, with a pointer to a live i32 of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// A bound loopback socket with a very large receive buffer, emptied between timed chunks.
///
/// No thread waits on it: a waiting receiver would make every send pay for waking it (an
/// inter-processor interrupt, expensive in a VM), which a NIC never charges. The kernel's
/// loopback receive path (IP/UDP input, queueing on this socket) still runs inside each send.
struct Sink {
    socket: UdpSocket,
    addr: SocketAddr,
    received: u64,
}

impl Sink {
    fn new() -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        force_recv_buffer(&socket, 256 * 1024 * 1024);
        socket.set_nonblocking(true).expect("non-blocking sink");
        let addr = socket.local_addr().expect("sink address");
        Sink {
            socket,
            addr,
            received: 0,
        }
    }

    /// Reads everything queued (untimed).
    fn drain(&mut self) {
        const N: usize = 64;
        let mut bufs = vec![[0u8; 2048]; N];
        loop {
            let mut iovs: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: all-zero is a valid mmsghdr.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: hdrs, iovs and bufs outlive the call; the count matches hdrs.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    N as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return;
            }
            self.received += n as u64;
        }
    }
}

/// This thread's CPU time (user and system, including the loopback receive work the kernel
/// does inside a send). The machine's two cores are shared with other builds, so wall time
/// would measure the neighbours; CPU time is what the issue asks for anyway.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes one timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The kernel's UDP error counters (`RcvbufErrors`, `SndbufErrors` in /proc/net/snmp): a
/// datagram dropped for a full receive queue would make a send look cheaper than it is.
fn udp_buffer_errors() -> (u64, u64) {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let find = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (find("RcvbufErrors"), find("SndbufErrors"))
}

/// `sockaddr_in` for an IPv4 socket address.
fn sockaddr_in(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("the bench uses IPv4 loopback only");
    };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    sa
}

/// Failed sends, counted rather than hidden.
#[derive(Default, Debug)]
struct SendStats {
    sent: u64,
    failed: u64,
}

/// `sendmmsg` of `packets` to `dest`, retrying on a short count; a failure drops the rest of
/// the batch and is counted.
fn send_batch(
    fd: i32,
    packets: &[Vec<u8>],
    dest: &libc::sockaddr_in,
    stats: &mut SendStats,
) -> usize {
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: all-zero is a valid mmsghdr.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let n = packets.len().min(BATCH);
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: packets[i].as_ptr() as *mut libc::c_void,
            iov_len: packets[i].len(),
        };
        hdrs[i].msg_hdr.msg_name = (dest as *const libc::sockaddr_in).cast_mut().cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < n {
        // SAFETY: hdrs[done..n] point at live iovecs, buffers and `dest`.
        let r =
            unsafe { libc::sendmmsg(fd, hdrs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0) };
        if r <= 0 {
            stats.failed += (n - done) as u64;
            break;
        }
        done += r as usize;
    }
    stats.sent += done as u64;
    done
}

/// Segments per UDP GSO send: 32 video packets stay under the 64 KiB datagram limit.
const GSO_SEGMENTS: usize = 32;

/// UDP GSO (`UDP_SEGMENT`): one `sendmsg` carries `buf`, equal-sized packets back to back, to
/// one destination; the kernel cuts it into `segment`-byte datagrams.
fn send_gso(fd: i32, buf: &[u8], segment: u16, dest: &libc::sockaddr_in, stats: &mut SendStats) {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut control = [0u64; 8];
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the sendmsg call,
    // and the control buffer is large and aligned enough for one cmsghdr with a u16.
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (dest as *const libc::sockaddr_in).cast_mut().cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        libc::sendmsg(fd, &msg, 0)
    };
    if r < 0 {
        stats.failed += (buf.len() / usize::from(segment)) as u64;
    } else {
        stats.sent += (buf.len() / usize::from(segment)) as u64;
    }
}

/// One `sendto` per packet, as the shard did before its outbox batched with `sendmmsg`.
fn send_each(socket: &UdpSocket, packets: &[Vec<u8>], dest: SocketAddr, stats: &mut SendStats) {
    for p in packets {
        match socket.send_to(p, dest) {
            Ok(_) => stats.sent += 1,
            Err(_) => stats.failed += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SRTP with aws-lc-rs primitives
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// What str0m (dimpl, DTLS 1.2 server) picks first when the client offers it.
    AeadAes256Gcm,
    AeadAes128Gcm,
    Aes128CmSha1_80,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::AeadAes256Gcm => "aead_aes_256_gcm",
            Profile::AeadAes128Gcm => "aead_aes_128_gcm",
            Profile::Aes128CmSha1_80 => "aes_cm_128_hmac_sha1_80",
        }
    }
}

/// The sending half of an SRTP context: per-packet IV, encrypt, authenticate.
// One context per benchmark, built once and never moved: no reason to box a variant.
#[allow(clippy::large_enum_variant)]
enum SrtpTx {
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
    CmSha1 {
        key: EncryptingKey,
        auth: hmac::Key,
        salt: [u8; 14],
    },
}

impl SrtpTx {
    fn new(profile: Profile) -> SrtpTx {
        match profile {
            Profile::AeadAes256Gcm | Profile::AeadAes128Gcm => {
                let (alg, len) = if profile == Profile::AeadAes256Gcm {
                    (&AES_256_GCM, 32)
                } else {
                    (&AES_128_GCM, 16)
                };
                let key_bytes = [0x5au8; 32];
                let key = UnboundKey::new(alg, &key_bytes[..len]).expect("GCM key");
                SrtpTx::Gcm {
                    key: LessSafeKey::new(key),
                    salt: [0x3c; 12],
                }
            }
            Profile::Aes128CmSha1_80 => {
                let key = UnboundCipherKey::new(&AES_128, &[0x5a; 16]).expect("AES key");
                SrtpTx::CmSha1 {
                    key: EncryptingKey::ctr(key).expect("CTR key"),
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[0x77; 20]),
                    salt: [0x3c; 14],
                }
            }
        }
    }

    /// Protects one RTP packet (`header` then `payload`) into `out`, as an SFU must: the
    /// plaintext is shared, so it is copied into the send buffer and encrypted there.
    fn protect(&self, header: &[u8], payload: &[u8], roc: u32, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(header);
        out.extend_from_slice(payload);
        let ssrc = [header[8], header[9], header[10], header[11]];
        let seq = [header[2], header[3]];
        let roc = roc.to_be_bytes();
        let hlen = header.len();
        match self {
            SrtpTx::Gcm { key, salt } => {
                // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[6..10].copy_from_slice(&roc);
                iv[10..12].copy_from_slice(&seq);
                for (b, s) in iv.iter_mut().zip(salt) {
                    *b ^= s;
                }
                let (aad, body) = out.split_at_mut(hlen);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&*aad),
                        body,
                    )
                    .expect("GCM seal");
                out.extend_from_slice(tag.as_ref());
            }
            SrtpTx::CmSha1 { key, auth, salt } => {
                // RFC 3711 §4.1.1: salt·2^16 XOR SSRC·2^64 XOR index·2^16.
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(salt);
                for i in 0..4 {
                    iv[4 + i] ^= ssrc[i];
                    iv[8 + i] ^= roc[i];
                }
                iv[12] ^= seq[0];
                iv[13] ^= seq[1];
                key.less_safe_encrypt(
                    &mut out[hlen..],
                    EncryptionContext::Iv128(FixedLength::from(iv)),
                )
                .expect("AES-CTR");
                let mut ctx = hmac::Context::with_key(auth);
                ctx.update(out);
                ctx.update(&roc);
                let tag = ctx.sign();
                out.extend_from_slice(&tag.as_ref()[..10]);
            }
        }
    }
}

/// Plaintext RTP packets of one kind: headers (with a one-byte extension block) and payloads.
struct Plain {
    headers: Vec<Vec<u8>>,
    payload: Vec<u8>,
}

impl Plain {
    fn new(header_len: usize, payload_len: usize, pt: u8) -> Plain {
        let headers = (0..BATCH)
            .map(|i| {
                let mut h = vec![0u8; header_len];
                h[0] = 0x90; // V=2, X=1
                h[1] = pt;
                h[2..4].copy_from_slice(&(1000 + i as u16).to_be_bytes());
                h[4..8].copy_from_slice(&(90_000 * i as u32).to_be_bytes());
                h[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                h[12..14].copy_from_slice(&[0xbe, 0xde]);
                h[14..16].copy_from_slice(&(((header_len - 16) / 4) as u16).to_be_bytes());
                h
            })
            .collect();
        let payload = (0..payload_len).map(|i| i as u8).collect();
        Plain { headers, payload }
    }

    fn video() -> Plain {
        Plain::new(VIDEO_HEADER, VIDEO_PAYLOAD, 96)
    }

    fn audio() -> Plain {
        Plain::new(AUDIO_HEADER, AUDIO_PAYLOAD, 111)
    }

    fn protect_all(&self, srtp: &SrtpTx, roc: u32, out: &mut [Vec<u8>]) {
        for (h, o) in self.headers.iter().zip(out.iter_mut()) {
            srtp.protect(h, &self.payload, roc, o);
        }
    }
}

/// Batches sent between two drains of the sink: 2048 packets stay well inside its buffer.
const FLOOR_CHUNK: u64 = 32;

/// Runs `f` (one batch) `iters` times and returns the CPU time it took; the sink is drained
/// between chunks, untimed.
fn cpu_iters(iters: u64, sink: &mut Sink, mut f: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(FLOOR_CHUNK);
        let start = thread_cpu();
        for _ in 0..chunk {
            f();
        }
        total += thread_cpu() - start;
        sink.drain();
        left -= chunk;
    }
    total
}

fn report_sends(what: &str, stats: &SendStats, before: (u64, u64)) {
    let after = udp_buffer_errors();
    eprintln!(
        "  [{what}] sent {} packets, {} failed sends; kernel UDP RcvbufErrors +{}, SndbufErrors +{}",
        stats.sent,
        stats.failed,
        after.0 - before.0,
        after.1 - before.1,
    );
}

fn bench_floor(c: &mut Criterion) {
    let mut sink = Sink::new();
    let socket = media_socket();
    let fd = socket.as_raw_fd();
    let dest = sockaddr_in(sink.addr);
    let sink_addr = sink.addr;
    let video = Plain::video();
    let audio = Plain::audio();
    let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();

    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(BATCH as u64));

    for profile in [
        Profile::AeadAes256Gcm,
        Profile::AeadAes128Gcm,
        Profile::Aes128CmSha1_80,
    ] {
        let srtp = SrtpTx::new(profile);
        for (kind, plain) in [("video", &video), ("audio", &audio)] {
            let mut roc = 0;
            g.bench_function(
                BenchmarkId::new(format!("srtp/{}", profile.name()), kind),
                |b| {
                    b.iter_custom(|iters| {
                        cpu_iters(iters, &mut sink, || {
                            roc += 1;
                            plain.protect_all(&srtp, roc, &mut out);
                            black_box(&out);
                        })
                    })
                },
            );
        }
    }

    let srtp = SrtpTx::new(Profile::AeadAes256Gcm);
    for (kind, plain) in [("video", &video), ("audio", &audio)] {
        plain.protect_all(&srtp, 0, &mut out);
        let mut roc = 0;

        let (mut stats, before) = (SendStats::default(), udp_buffer_errors());
        g.bench_function(BenchmarkId::new("sendmmsg", kind), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, &mut sink, || {
                    send_batch(fd, &out, &dest, &mut stats);
                })
            })
        });
        report_sends("sendmmsg", &stats, before);

        // GSO needs equal sizes to one destination: a burst to one subscriber, not a fan-out.
        let contiguous: Vec<u8> = out.concat();
        let segment = out[0].len();
        let (mut stats, before) = (SendStats::default(), udp_buffer_errors());
        g.bench_function(BenchmarkId::new("gso", kind), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, &mut sink, || {
                    for part in contiguous.chunks(segment * GSO_SEGMENTS) {
                        send_gso(fd, part, segment as u16, &dest, &mut stats);
                    }
                })
            })
        });
        report_sends("gso", &stats, before);

        let (mut stats, before) = (SendStats::default(), udp_buffer_errors());
        g.bench_function(BenchmarkId::new("sendto", kind), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, &mut sink, || {
                    send_each(&socket, &out, sink_addr, &mut stats)
                })
            })
        });
        report_sends("sendto", &stats, before);

        let (mut stats, before) = (SendStats::default(), udp_buffer_errors());
        g.bench_function(BenchmarkId::new("srtp+sendmmsg", kind), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, &mut sink, || {
                    roc += 1;
                    plain.protect_all(&srtp, roc, &mut out);
                    send_batch(fd, &out, &dest, &mut stats);
                })
            })
        });
        report_sends("srtp+sendmmsg", &stats, before);

        let (mut stats, before) = (SendStats::default(), udp_buffer_errors());
        g.bench_function(BenchmarkId::new("srtp+sendto", kind), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, &mut sink, || {
                    roc += 1;
                    plain.protect_all(&srtp, roc, &mut out);
                    send_each(&socket, &out, sink_addr, &mut stats)
                })
            })
        });
        report_sends("srtp+sendto", &stats, before);
    }
    g.finish();
    eprintln!("  [floor] sink received {} datagrams", sink.received);
}

// ---------------------------------------------------------------------------------------------
// The forwarding path: the server's shard in a simulated lesson
// ---------------------------------------------------------------------------------------------

/// Virtual time for the pupils to connect, and then for their estimates to climb (the stderr
/// line says which layer each pupil ended on).
const CONNECT: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(15);
/// Virtual time run at a stretch until an iteration's packets are out.
const SLICE: Duration = Duration::from_millis(20);
/// A lesson that sends nothing for this long has stopped: the bench fails rather than spin.
const STALL: Duration = Duration::from_secs(10);

/// A link without a rate limit, loss or jitter: 1 ms one way, as the teacher's.
fn lan() -> Shaping {
    Shaping::NONE.delay(Duration::from_millis(1), Duration::ZERO)
}

/// A teacher (camera in VP8 simulcast q/h/f at 0.15/0.5/1.5 Mbit/s, 30 fps, a keyframe every
/// 10 s, and Opus every 20 ms) and `n` pupils on 1 ms links, warmed up, metered from here.
fn lesson(n: usize) -> World {
    let mut w = World::new(14, SourceConfig::default());
    let pupils: Vec<usize> = (0..n).map(|_| w.add_pupil(lan(), lan())).collect();
    assert!(
        w.run_until_true(CONNECT, |w| pupils.iter().all(|&p| w.pupil_connected(p))),
        "not every one of {n} pupils connected"
    );
    w.run_for(WARM_UP);
    w.meter();
    w
}

/// Runs the lesson until the shard has sent at least `packets` more media packets to pupils and
/// returns what that cost the shard.
fn run_packets(w: &mut World, packets: u64) -> ShardCost {
    let before = w.shard_cost();
    let mut progress = (before.packets, w.now);
    while w.shard_cost().packets < before.packets + packets {
        w.run_for(SLICE);
        let sent = w.shard_cost().packets;
        if sent > progress.0 {
            progress = (sent, w.now);
        }
        assert!(w.now - progress.1 < STALL, "the lesson stopped sending");
    }
    let after = w.shard_cost();
    ShardCost {
        cpu: after.cpu - before.cpu,
        calls: after.calls - before.calls,
        packets: after.packets - before.packets,
        padded: after.padded - before.padded,
        datagrams: after.datagrams - before.datagrams,
    }
}

/// The shard's CPU time for `cost`, less what reading the clock around each call cost.
fn shard_cpu(cost: &ShardCost, clock_read: Duration) -> Duration {
    cost.cpu
        .saturating_sub(clock_read.saturating_mul(cost.calls.min(u64::from(u32::MAX)) as u32))
}

fn bench_forward(c: &mut Criterion) {
    let clock_read = clock_read_cost();
    eprintln!("  [forward] one read of the thread CPU clock costs {clock_read:?}");
    let mut g = c.benchmark_group("forward");
    // Each sample runs several times its measured time in virtual peers (their `Rtc`s, the
    // links): criterion's minimum of 10 samples keeps the run short.
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    for n in [1usize, 10, 50] {
        let mut w = lesson(n);
        let metered_from = w.now;
        let decoded_before: Vec<usize> = (0..n).map(|p| w.pupil(p).decoded.len()).collect();
        let mut total = ShardCost::default();
        let mut shard_time = Duration::ZERO;
        // One iteration is one media packet out to a pupil: criterion's time per iteration is
        // the shard's CPU per forwarded packet (bandwidth probes are sent on top, uncounted). A slice of virtual time sends a whole number of
        // packets, so each measurement is scaled from the packets it actually sent.
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("lesson", n), |b| {
            b.iter_custom(|iters| {
                let cost = run_packets(&mut w, iters);
                let cpu = shard_cpu(&cost, clock_read);
                total.cpu += cost.cpu;
                total.calls += cost.calls;
                total.packets += cost.packets;
                total.padded += cost.padded;
                total.datagrams += cost.datagrams;
                shard_time += cpu;
                cpu.mul_f64(iters as f64 / cost.packets as f64)
            })
        });
        if total.packets == 0 {
            // Filtered out on the command line: nothing was measured.
            continue;
        }
        let simulated = w.now - metered_from;
        let mut layers = [0usize; 4];
        for (p, &before) in decoded_before.iter().enumerate() {
            let log = w.pupil(p);
            let slot = match log.quality.last() {
                Some((_, _, Some(_))) | None => 3,
                Some((_, Some(LayerName::High), None)) => 0,
                Some((_, Some(LayerName::Medium), None)) => 1,
                Some((_, _, None)) => 2,
            };
            layers[slot] += 1;
            assert!(
                log.decoded.len() > before,
                "pupil {p} of {n} decoded no video while measured"
            );
        }
        eprintln!(
            "  [forward N={n}] {:.1} s of lesson measured: {} media packets to pupils ({:.0}/s) \
             and {} padded ones (bandwidth probes), {} datagrams in all, {} shard calls; \
             shard CPU {:?} ({:?} before taking off {:?} per clock read) = {:.2} µs per media \
             packet, {:.2} per RTP packet; pupils on high/medium/low/paused: {:?}",
            simulated.as_secs_f64(),
            total.packets,
            total.packets as f64 / simulated.as_secs_f64(),
            total.padded,
            total.datagrams,
            total.calls,
            shard_time,
            total.cpu,
            clock_read,
            shard_time.as_secs_f64() * 1e6 / total.packets.max(1) as f64,
            shard_time.as_secs_f64() * 1e6 / (total.packets + total.padded).max(1) as f64,
            layers,
        );
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_floor, bench_forward
}
criterion_main!(benches);
