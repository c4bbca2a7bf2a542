//! The floor of this machine beside the server's per-packet forwarding path.
//!
//! `cargo bench -p classroom-sfu --bench forward`
//!
//! - `floor/*`: what the kernel and the cipher alone cost per outgoing packet: SRTP protect
//!   (aws-lc-rs primitives used directly, in the profile str0m negotiates by default) and
//!   `sendmmsg`/`sendto` of the protected packets to a loopback socket a drain thread empties.
//! - `forward/*`: the server's real per-packet path with str0m `Rtc`s configured as
//!   `sfu/src/shard/peer.rs` configures them (ICE-lite, RTP mode, BWE and pacer on), connected
//!   in-process: one datagram from a publisher is received from the media socket, demultiplexed
//!   (`core::demux`), handed to the publisher's `Rtc`, its `RtpPacket` event described once
//!   (`PacketInfo::describe`, the shard's own) and decided per subscriber by the server's down
//!   track (`core::downtrack::DownTrack`: layer selector, forwarder, VP8 munger, payload type),
//!   its answer written into each of N subscriber `Rtc`s with `StreamTx::write_rtp`
//!   (`Outgoing::rtp_write`, the shard's own), and every subscriber drained (`poll_output`
//!   until `Timeout`) with one `send_to` per `Transmit`, as `sfu/src/shard/mod.rs` did when
//!   these numbers were taken (it now batches with `sendmmsg` and answers due timeouts inside
//!   the drain; `BENCHMARKS.md` measures that on the whole server).
//!
//! Times are CPU time of the bench thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! machine's cores are shared. One `forward/video/N` iteration is one incoming packet and N
//! outgoing ones (criterion's "elements"), so its time ÷ N is the server's CPU per outgoing
//! packet; a `floor` iteration is a batch of [`BATCH`] packets. Results: `benches/RESULTS.md`.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use classroom_sfu::command::Audience;
use classroom_sfu::core::demux::Demuxer;
use classroom_sfu::core::downtrack::{
    DownTrack, Negotiated, PacketInfo, Verdict, forwarded_extensions,
};
use classroom_sfu::core::layer::{KeyframeSizes, Layer, LayerBitrates, SelectorInput};

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
/// Virtual time between two publisher packets: about 0.9 Mbit/s of 1.1 kB packets, under the
/// 1 Mbit/s initial estimate the bench's `Rtc`s get (the shard's when these numbers were taken;
/// it now starts at 300 kbit/s) so str0m's pacer does not hold packets back.
const PACKET_INTERVAL: Duration = Duration::from_millis(10);
/// Publisher datagrams generated (untimed) per chunk of the `forward` measurement.
const CHUNK: u64 = 64;

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

/// One `sendto` per packet, as the shard does today (`try_send_to`).
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
// The forwarding path
// ---------------------------------------------------------------------------------------------

/// The SFU side of a connection, configured as `sfu/src/shard/peer.rs` does.
fn sfu_rtc(now: Instant, local: SocketAddr) -> Rtc {
    use str0m::format::FormatParams;
    use str0m::media::Frequency;
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .enable_h264(true)
        .enable_vp9(true)
        .enable_bwe(Some(str0m::bwe::Bitrate::bps(1_000_000)))
        .set_stats_interval(Some(Duration::from_secs(1)));
    config.codec_config().add_config(
        Pt::new_with_value(111),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            ..Default::default()
        },
    );
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
    rtc
}

/// A client: plain str0m defaults, in RTP mode so the bench can write packets directly.
fn client_rtc(now: Instant, local: SocketAddr) -> Rtc {
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
    rtc
}

/// A datagram in flight between two in-memory `Rtc`s.
struct Datagram {
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// One connection: the SFU's `Rtc` and the client's, exchanging datagrams in memory during
/// setup and maintenance.
struct Pair {
    server: Rtc,
    client: Rtc,
    connected: bool,
    /// The server `Rtc`'s next deadline, as the shard's timer set would hold it.
    server_timeout: Instant,
}

impl Pair {
    /// Runs both sides at `now` until neither has anything more to say.
    fn pump(&mut self, now: Instant) {
        self.server
            .handle_input(Input::Timeout(now))
            .expect("server timeout");
        self.client
            .handle_input(Input::Timeout(now))
            .expect("client timeout");
        for _ in 0..50 {
            let to_client = poll_all(
                &mut self.server,
                &mut self.connected,
                &mut self.server_timeout,
            );
            let mut ignored = false;
            let mut ignored_t = now;
            let to_server = poll_all(&mut self.client, &mut ignored, &mut ignored_t);
            if to_client.is_empty() && to_server.is_empty() {
                return;
            }
            deliver(&mut self.client, now, to_client);
            deliver(&mut self.server, now, to_server);
        }
    }
}

fn poll_all(rtc: &mut Rtc, connected: &mut bool, timeout: &mut Instant) -> Vec<Datagram> {
    let mut out = Vec::new();
    loop {
        match rtc.poll_output().expect("poll_output") {
            Output::Timeout(t) => {
                *timeout = t;
                return out;
            }
            Output::Transmit(t) => out.push(Datagram {
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Output::Event(Event::Connected) => *connected = true,
            Output::Event(_) => {}
        }
    }
}

fn deliver(rtc: &mut Rtc, now: Instant, datagrams: Vec<Datagram>) {
    for d in datagrams {
        let Ok(contents) = DatagramRecv::try_from(&d.contents[..]) else {
            continue;
        };
        let _ = rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: d.source,
                destination: d.destination,
                contents,
            },
        ));
    }
}

/// The subscriber's part of the shard's per-track state (`shard/media.rs::Subscription`): the
/// server's own down track, and the outgoing stream.
struct Subscription {
    down: DownTrack,
    mid: Mid,
    tx: Ssrc,
}

/// Counts of what the timed path did, to check the bench measures what it claims.
#[derive(Default, Debug)]
struct PathStats {
    incoming: u64,
    rtp_events: u64,
    writes: u64,
    /// Packets the down track did not send to a subscriber (none expected: one layer, TID 0).
    drops: u64,
    transmits: u64,
    transmit_bytes: u64,
    send_errors: u64,
    timer_wakeups: u64,
}

/// A publisher, N subscribers, and the shard's tables for one video track.
struct Room {
    now: Instant,
    socket: UdpSocket,
    server_addr: SocketAddr,
    /// The publisher client's socket: it sends into `socket`, and receives what the server
    /// sends the publisher (receiver reports, TWCC feedback), passed on to the client untimed.
    publisher_socket: UdpSocket,
    publisher: Pair,
    publisher_tx: (Ssrc, Pt),
    subscribers: Vec<Pair>,
    subs: Vec<Subscription>,
    demux: Demuxer<usize>,
    by_ssrc: HashMap<Ssrc, (u32, u8)>,
    codec_of_track: HashMap<u32, (Pt, Codec)>,
    /// Virtual time of each datagram queued on `socket`, in order.
    queued: std::collections::VecDeque<Instant>,
    recv_buf: Vec<u8>,
    dirty: Vec<usize>,
    stats: PathStats,
    frame: u64,
    packet_in_frame: u64,
    seq: u64,
}

/// Packets per VP8 frame: 1 Mbit/s at 25 frames/s is about four 1.1 kB packets.
const PACKETS_PER_FRAME: u64 = 4;

impl Room {
    fn new(n: usize, sink_addr: SocketAddr) -> Room {
        let mut now = Instant::now();
        let socket = media_socket();
        let server_addr = socket.local_addr().expect("server address");
        let publisher_socket = media_socket();
        let publisher_addr = publisher_socket.local_addr().expect("publisher address");

        // Publish connection: the client offers a send-only VP8 section, the SFU answers.
        let mut pub_client = client_rtc(now, publisher_addr);
        let mut pub_server = sfu_rtc(now, server_addr);
        let mut change = pub_client.sdp_api();
        let pub_mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("publish offer");
        let answer = pub_server
            .sdp_api()
            .accept_offer(offer)
            .expect("SFU accepts the publish offer");
        pub_client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("client accepts the answer");
        let vp8_pt = pub_client
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .expect("VP8 negotiated");
        let pub_ssrc = pub_client
            .direct_api()
            .stream_tx_by_mid(pub_mid, None)
            .expect("publisher stream")
            .ssrc();
        let mut publisher = Pair {
            server: pub_server,
            client: pub_client,
            connected: false,
            server_timeout: now,
        };

        // Subscribe connections: the SFU offers one send-only video section each.
        let mut subscribers = Vec::with_capacity(n);
        let mut mids = Vec::with_capacity(n);
        for i in 0..n {
            let mut server = sfu_rtc(now, server_addr);
            let mut client = client_rtc(now, sink_addr);
            let mut change = server.sdp_api();
            let mid = change.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("publisher".into()),
                Some(format!("track-{i}")),
                None,
            );
            let (offer, pending) = change.apply().expect("subscriber offer");
            let answer: SdpAnswer = client
                .sdp_api()
                .accept_offer(offer)
                .expect("client accepts the offer");
            server
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("SFU accepts the answer");
            mids.push(mid);
            subscribers.push(Pair {
                server,
                client,
                connected: false,
                server_timeout: now,
            });
        }

        // ICE and DTLS, all connections at once on one virtual clock.
        for _ in 0..5000 {
            if publisher.connected && subscribers.iter().all(|s| s.connected) {
                break;
            }
            now += Duration::from_millis(5);
            publisher.pump(now);
            for s in &mut subscribers {
                s.pump(now);
            }
        }
        assert!(
            publisher.connected && subscribers.iter().all(|s| s.connected),
            "connections did not come up"
        );

        let mut demux = Demuxer::default();
        demux.insert(
            &publisher.server.direct_api().local_ice_credentials().ufrag,
            0usize,
        );
        // The shard learns the publisher's address from its STUN; the bench knows it.
        demux.confirm(0, publisher_addr, &stun_binding_response());

        let subs = subscribers
            .iter_mut()
            .zip(&mids)
            .map(|(pair, mid)| {
                assert!(
                    matches!(
                        negotiated(&pair.server, *mid, Codec::Vp8),
                        Negotiated::Pt(_)
                    ),
                    "subscriber VP8"
                );
                let tx = pair
                    .server
                    .direct_api()
                    .stream_tx_by_mid(*mid, None)
                    .expect("subscriber stream")
                    .ssrc();
                let mut down = DownTrack::new(
                    true,
                    false,
                    Audience::Everyone,
                    rand::random(),
                    rand::random(),
                );
                // One encoding at 1 Mbit/s and a budget far above it: the selector targets it
                // from the start, as the allocation round would.
                let rates = LayerBitrates([[1_000_000; 3], [0; 3], [0; 3]]);
                if let Some(selector) = down.selector_mut() {
                    selector.update(&SelectorInput {
                        now,
                        budget: 100_000_000,
                        upgrade_budget: 100_000_000,
                        available: rates,
                        peaks: rates,
                        keyframes: KeyframeSizes::default(),
                        cap: Layer::MAX,
                    });
                }
                Subscription {
                    down,
                    mid: *mid,
                    tx,
                }
            })
            .collect();

        let mut by_ssrc = HashMap::new();
        by_ssrc.insert(pub_ssrc, (1u32, 0u8));
        let mut codec_of_track = HashMap::new();
        codec_of_track.insert(1u32, (vp8_pt, Codec::Vp8));

        Room {
            now,
            socket,
            server_addr,
            publisher_socket,
            publisher,
            publisher_tx: (pub_ssrc, vp8_pt),
            subscribers,
            subs,
            demux,
            by_ssrc,
            codec_of_track,
            queued: Default::default(),
            recv_buf: vec![0; 2048],
            dirty: Vec::with_capacity(n),
            stats: PathStats::default(),
            frame: 0,
            packet_in_frame: 0,
            seq: 0,
        }
    }

    /// Untimed: the publisher client writes `count` VP8 packets at their virtual times and its
    /// datagrams go into the media socket's receive queue; then every connection gets its
    /// periodic STUN/RTCP exchange in memory, so ICE consent and RTCP keep going.
    fn prepare(&mut self, count: u64) {
        let now = self.now;
        // What the server sent the publisher (receiver reports, TWCC feedback, STUN answers)
        // reaches the publisher client, so its side of ICE and RTCP stays healthy.
        let mut buf = [0u8; 2048];
        let publisher_addr = self
            .publisher_socket
            .local_addr()
            .expect("publisher address");
        let mut to_client = Vec::new();
        while let Ok((n, source)) = self.publisher_socket.recv_from(&mut buf) {
            to_client.push(Datagram {
                source,
                destination: publisher_addr,
                contents: buf[..n].to_vec(),
            });
        }
        deliver(&mut self.publisher.client, now, to_client);
        // Keepalive for the subscribe connections: the clients' STUN and RTCP and the server's
        // answers, exchanged in memory and not part of the measurement.
        for s in &mut self.subscribers {
            s.pump(now);
        }

        let (ssrc, pt) = self.publisher_tx;
        for _ in 0..count {
            self.now += PACKET_INTERVAL;
            let payload = vp8_payload(self.frame, self.packet_in_frame);
            let marker = self.packet_in_frame + 1 == PACKETS_PER_FRAME;
            let ts = (self.frame * 3600) as u32;
            let client = &mut self.publisher.client;
            client
                .handle_input(Input::Timeout(self.now))
                .expect("publisher client timeout");
            let mut api = client.direct_api();
            let tx = api.stream_tx(&ssrc).expect("publisher stream");
            tx.write_rtp(RtpWrite::new(pt, self.seq.into(), ts, self.now, payload).marker(marker));
            self.seq += 1;
            self.packet_in_frame += 1;
            if self.packet_in_frame == PACKETS_PER_FRAME {
                self.packet_in_frame = 0;
                self.frame += 1;
            }
            // str0m releases a written packet on the next timeout handling at or after now.
            let mut rounds = 0;
            loop {
                match client.poll_output().expect("publisher client poll") {
                    Output::Timeout(t) if t <= self.now && rounds < 8 => {
                        rounds += 1;
                        client
                            .handle_input(Input::Timeout(self.now))
                            .expect("publisher client timeout");
                    }
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        self.publisher_socket
                            .send_to(&t.contents, self.server_addr)
                            .expect("publisher send");
                        self.queued.push_back(self.now);
                    }
                    Output::Event(_) => {}
                }
            }
        }
    }

    /// Timed: what the shard does for every datagram waiting on its socket.
    fn process_queued(&mut self) {
        while let Some(at) = self.queued.pop_front() {
            self.fire_timers(at);
            let (n, source) = match self.socket.recv_from(&mut self.recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    panic!("a publisher datagram was lost on loopback")
                }
                Err(e) => panic!("media socket receive: {e}"),
            };
            self.stats.incoming += 1;
            self.handle_datagram(at, source, n);
            self.drain_dirty();
            // The shard's next wakeup: deadlines the drains just set to "now" (str0m's pacer
            // releases written packets on a timeout) fire at once.
            for _ in 0..8 {
                if !self.fire_timers(at) {
                    break;
                }
            }
        }
    }

    /// `Shard::handle_timeouts`: every server `Rtc` whose deadline has passed.
    /// Returns whether any deadline had passed.
    fn fire_timers(&mut self, now: Instant) -> bool {
        let mut fired = false;
        if self.publisher.server_timeout <= now {
            fired = true;
            self.stats.timer_wakeups += 1;
            let _ = self.publisher.server.handle_input(Input::Timeout(now));
            self.drain_publisher();
            self.drain_dirty();
        }
        for i in 0..self.subscribers.len() {
            if self.subscribers[i].server_timeout <= now {
                fired = true;
                self.stats.timer_wakeups += 1;
                let _ = self.subscribers[i].server.handle_input(Input::Timeout(now));
                self.drain_subscriber(i);
            }
        }
        fired
    }

    /// `Shard::handle_datagram`.
    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, n: usize) {
        let datagram = &self.recv_buf[..n];
        let Ok(key) = self.demux.route(source, datagram) else {
            return;
        };
        debug_assert_eq!(key, 0);
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.server_addr,
                contents,
            },
        );
        let _ = self.publisher.server.handle_input(input);
        self.drain_publisher();
    }

    /// `Shard::drain` for the publisher's `Rtc`.
    fn drain_publisher(&mut self) {
        loop {
            match self.publisher.server.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.publisher.server_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.demux.confirm(0, t.destination, &t.contents);
                    match self.socket.send_to(&t.contents, t.destination) {
                        Ok(_) => {}
                        Err(_) => self.stats.send_errors += 1,
                    }
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    self.stats.rtp_events += 1;
                    self.on_rtp(&packet);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("publisher Rtc failed: {e}"),
            }
        }
    }

    /// `Shard::on_rtp` for a VP8 track without simulcast: the same description of the packet,
    /// the same down track deciding per subscriber, the same write handed to str0m.
    fn on_rtp(&mut self, packet: &RtpPacket) {
        let Some(&(track, spatial)) = self.by_ssrc.get(&packet.header.ssrc) else {
            return;
        };
        let Some(&(known_pt, codec)) = self.codec_of_track.get(&track) else {
            return;
        };
        if known_pt != packet.header.payload_type {
            return;
        }
        let info = PacketInfo::describe(packet, spatial, codec, true, None);
        let extensions = forwarded_extensions(&packet.header.ext_vals);
        for (i, sub) in self.subs.iter_mut().enumerate() {
            let pair = &mut self.subscribers[i];
            let mid = sub.mid;
            let answer = sub.down.on_packet(&info, pair.connected, |codec| {
                negotiated(&pair.server, mid, codec)
            });
            let Verdict::Send(send) = answer.verdict else {
                self.stats.drops += 1;
                continue;
            };
            let mut api = pair.server.direct_api();
            let Some(tx) = api.stream_tx(&sub.tx) else {
                continue;
            };
            tx.write_rtp(send.rtp_write(packet, &extensions, true));
            self.stats.writes += 1;
            self.dirty.push(i);
        }
    }

    /// `Shard::drain_dirty`.
    fn drain_dirty(&mut self) {
        while let Some(i) = self.dirty.pop() {
            self.drain_subscriber(i);
        }
    }

    /// `Shard::drain` for a subscriber's `Rtc`: one `send_to` per `Transmit`.
    fn drain_subscriber(&mut self, i: usize) {
        let pair = &mut self.subscribers[i];
        loop {
            match pair.server.poll_output() {
                Ok(Output::Timeout(t)) => {
                    pair.server_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.demux.confirm(i + 1, t.destination, &t.contents);
                    match self.socket.send_to(&t.contents, t.destination) {
                        Ok(n) => {
                            self.stats.transmits += 1;
                            self.stats.transmit_bytes += n as u64;
                        }
                        Err(_) => self.stats.send_errors += 1,
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("subscriber Rtc failed: {e}"),
            }
        }
    }
}

/// What a subscriber accepted for `codec` on `mid` (`shard/media.rs::negotiated`).
fn negotiated(rtc: &Rtc, mid: Mid, codec: Codec) -> Negotiated {
    let Some(media) = rtc.media(mid) else {
        return Negotiated::NotAnswered;
    };
    let remote = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == codec)
        .find(|p| remote.is_empty() || remote.contains(&p.pt()))
        .map_or(Negotiated::Refused, |p| Negotiated::Pt(p.pt()))
}

/// A minimal STUN header: all `Demuxer::confirm` looks at.
fn stun_binding_response() -> Vec<u8> {
    let mut m = vec![0u8; 20];
    m[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
    m[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m
}

/// A VP8 RTP payload as Chrome sends it: descriptor with 15-bit PictureID, TL0PICIDX and TID,
/// then the VP8 payload. The first frame is a keyframe.
fn vp8_payload(frame: u64, packet_in_frame: u64) -> Vec<u8> {
    let mut p = vec![0u8; VIDEO_PAYLOAD];
    let start = packet_in_frame == 0;
    p[0] = 0x80 | if start { 0x10 } else { 0 }; // X, S, PID 0
    p[1] = 0x80 | 0x40 | 0x20; // I, L, T
    let pid = (frame & 0x7fff) as u16;
    p[2] = 0x80 | (pid >> 8) as u8;
    p[3] = pid as u8;
    p[4] = frame as u8; // TL0PICIDX
    p[5] = 0x20; // TID 0, Y
    // VP8 payload header: P = 0 on a keyframe.
    p[6] = if frame == 0 { 0x00 } else { 0x01 };
    for (i, b) in p.iter_mut().enumerate().skip(7) {
        *b = i as u8;
    }
    p
}

fn bench_forward(c: &mut Criterion) {
    let mut sink = Sink::new();
    let mut g = c.benchmark_group("forward");
    for n in [1usize, 10, 50] {
        let mut room = Room::new(n, sink.addr);
        let before = udp_buffer_errors();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("video", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(CHUNK);
                    sink.drain();
                    room.prepare(chunk);
                    let start = thread_cpu();
                    room.process_queued();
                    total += thread_cpu() - start;
                    left -= chunk;
                }
                total
            })
        });
        sink.drain();
        let after = udp_buffer_errors();
        let s = &room.stats;
        eprintln!(
            "  [forward N={n}] {} datagrams in, {} RTP events, {} writes, {} drops, {} transmits \
             ({:.2} per write, {:.0} bytes avg), {} send errors, {} timer wakeups; \
             kernel UDP RcvbufErrors +{}, SndbufErrors +{}",
            s.incoming,
            s.rtp_events,
            s.writes,
            s.drops,
            s.transmits,
            s.transmits as f64 / s.writes.max(1) as f64,
            s.transmit_bytes as f64 / s.transmits.max(1) as f64,
            s.send_errors,
            s.timer_wakeups,
            after.0 - before.0,
            after.1 - before.1,
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
