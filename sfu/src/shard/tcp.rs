//! ICE-TCP (RFC 6544): passive TCP candidates for clients whose networks drop UDP.
//!
//! The media thread owns a listening socket beside the UDP one and every accepted connection.
//! Each connection carries RFC 4571 frames (`core::framing`); a frame in is one datagram for the
//! shard's usual path, a str0m `Transmit` for TCP is one frame out. Everything a client can make
//! the server hold is bounded: connections in all and per IP address, the time a connection may
//! stay open without being bound to a peer by an answered STUN check, the frame size, and the
//! bytes queued per connection (a connection that cannot keep up loses packets; the loop never
//! waits for one).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::core::framing::{Deframer, FrameError, SendQueue};

/// Largest frame accepted: WebRTC packets fit a 1500-byte MTU; twice that leaves room for any
/// client's idea of a datagram.
pub(crate) const MAX_FRAME: usize = 4096;
/// Connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 2048;
/// Connections from one IP address: a school's pupils share one NAT address, and each browser
/// may open one connection per candidate pair of each of its two peer connections.
pub(crate) const MAX_PER_IP: u32 = 256;
/// A connection not bound to a peer by then (no answered STUN check, or its peer is gone) is
/// closed.
pub(crate) const BIND_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes queued per connection: a keyframe burst of the top layer.
pub(crate) const SEND_QUEUE_BYTES: usize = 256 * 1024;
/// Backlog of the listening socket.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds the listening socket (before the media thread starts, so a busy port is reported at
/// once).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must get its port back while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// What woke the loop on the TCP side.
pub(crate) enum Ready {
    Accepted(TcpStream, SocketAddr),
    Readable(usize),
    Writable(usize),
}

/// What a read brought.
pub(crate) enum ReadOutcome {
    /// Bytes arrived; take the frames.
    Data,
    /// Nothing now.
    Nothing,
    /// The connection ended or failed; it is closed.
    Closed,
}

/// Counters of the TCP side, published with the media counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpCounters {
    pub accepted: u64,
    pub refused: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub dropped_out: u64,
    pub bad_frames: u64,
    pub unbound_closed: u64,
}

struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    opened: Instant,
    deframer: Deframer,
    queue: SendQueue,
    /// Listed in `TcpMedia::want_write`.
    waiting_to_write: bool,
}

/// The listener and its connections.
pub(crate) struct TcpMedia {
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_remote: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, u32>,
    /// Connections with queued bytes the socket did not take yet.
    want_write: Vec<usize>,
    /// Where the next readiness scan starts, so one busy connection cannot starve the others.
    scan_from: usize,
    pub counters: TcpCounters,
}

impl TcpMedia {
    pub fn new(listener: TcpListener) -> TcpMedia {
        TcpMedia {
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            by_remote: HashMap::new(),
            per_ip: HashMap::new(),
            want_write: Vec::new(),
            scan_from: 0,
            counters: TcpCounters::default(),
        }
    }

    pub fn open(&self) -> usize {
        self.by_remote.len()
    }

    /// The first of: a new connection, a connection with bytes to read, a connection whose
    /// socket takes queued bytes again.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Ready> {
        match self.listener.poll_accept(cx) {
            Poll::Ready(Ok((stream, remote))) => {
                return Poll::Ready(Ready::Accepted(stream, remote));
            }
            Poll::Ready(Err(e)) => debug!("ICE-TCP accept failed: {e}"),
            Poll::Pending => {}
        }
        let n = self.conns.len();
        for step in 0..n {
            let i = (self.scan_from + step) % n;
            let Some(conn) = &self.conns[i] else {
                continue;
            };
            if conn.stream.poll_read_ready(cx).is_ready() {
                self.scan_from = i + 1;
                return Poll::Ready(Ready::Readable(i));
            }
            if conn.waiting_to_write && conn.stream.poll_write_ready(cx).is_ready() {
                self.scan_from = i + 1;
                return Poll::Ready(Ready::Writable(i));
            }
        }
        Poll::Pending
    }

    /// Takes a new connection, unless it would exceed a limit.
    pub fn admit(&mut self, now: Instant, stream: TcpStream, remote: SocketAddr) {
        let per_ip = self.per_ip.get(&remote.ip()).copied().unwrap_or(0);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        if self.by_remote.len() >= MAX_CONNECTIONS || per_ip >= MAX_PER_IP {
            self.counters.refused += 1;
            debug!(%remote, "ICE-TCP connection refused: too many");
            return;
        }
        // Media is small packets that must not wait for more to fill a segment.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            remote,
            local,
            opened: now,
            deframer: Deframer::new(MAX_FRAME),
            queue: SendQueue::new(SEND_QUEUE_BYTES),
            waiting_to_write: false,
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.conns[i] = Some(conn);
        self.by_remote.insert(remote, i);
        *self.per_ip.entry(remote.ip()).or_default() += 1;
        self.counters.accepted += 1;
    }

    /// The client's and our address of connection `i`.
    pub fn addresses(&self, i: usize) -> Option<(SocketAddr, SocketAddr)> {
        self.conns.get(i)?.as_ref().map(|c| (c.remote, c.local))
    }

    /// Reads once from connection `i` (readiness stays set while more waits, so a later pass
    /// reads the rest).
    pub fn read(&mut self, i: usize) -> ReadOutcome {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return ReadOutcome::Nothing;
        };
        match conn.stream.try_read(conn.deframer.spare()) {
            Ok(0) => {
                self.close(i);
                ReadOutcome::Closed
            }
            Ok(n) => {
                conn.deframer.filled(n);
                ReadOutcome::Data
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ReadOutcome::Nothing,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => ReadOutcome::Nothing,
            Err(e) => {
                debug!("ICE-TCP read failed: {e}");
                self.close(i);
                ReadOutcome::Closed
            }
        }
    }

    /// Copies the next complete frame of connection `i` into `out` and returns its length;
    /// `None` when no complete frame waits. A stream out of step closes the connection.
    pub fn next_frame(&mut self, i: usize, out: &mut [u8]) -> Option<usize> {
        let conn = self.conns.get_mut(i)?.as_mut()?;
        match conn.deframer.next_frame() {
            Ok(Some(frame)) if frame.len() <= out.len() => {
                out[..frame.len()].copy_from_slice(frame);
                self.counters.frames_in += 1;
                Some(frame.len())
            }
            Ok(Some(_)) | Err(FrameError::TooLarge { .. }) | Err(FrameError::Empty) => {
                debug!(remote = %conn.remote, "ICE-TCP stream out of step; closing");
                self.counters.bad_frames += 1;
                self.close(i);
                None
            }
            Ok(None) => None,
        }
    }

    /// Queues `packet` for the connection from `remote`; written at the next [`TcpMedia::flush`].
    /// Dropped (and counted) when that connection is gone or its queue is full.
    pub fn send(&mut self, remote: SocketAddr, packet: &[u8]) {
        let Some(&i) = self.by_remote.get(&remote) else {
            self.counters.dropped_out += 1;
            return;
        };
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        if !conn.queue.push(packet) {
            self.counters.dropped_out += 1;
            return;
        }
        self.counters.frames_out += 1;
        if !conn.waiting_to_write {
            conn.waiting_to_write = true;
            self.want_write.push(i);
        }
    }

    /// Writes what each connection's socket takes now; the rest waits for writability.
    pub fn flush(&mut self) {
        let mut k = 0;
        while k < self.want_write.len() {
            let i = self.want_write[k];
            if self.write(i) {
                k += 1;
            } else if self.want_write.get(k) == Some(&i) {
                self.want_write.swap_remove(k);
            }
            // Otherwise a failed write closed the connection, and `close` already took it off
            // the list (the entry now at `k` is the next one).
        }
    }

    /// Writes connection `i`'s queue as far as the socket takes it; `true` while bytes remain.
    pub fn write(&mut self, i: usize) -> bool {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return false;
        };
        while !conn.queue.is_empty() {
            match conn.stream.try_write(conn.queue.unsent()) {
                Ok(n) => conn.queue.consumed(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("ICE-TCP write failed: {e}");
                    self.close(i);
                    return false;
                }
            }
        }
        conn.waiting_to_write = false;
        false
    }

    /// Closes connections that are not bound to a peer `BIND_DEADLINE` after they opened.
    pub fn sweep(&mut self, now: Instant, bound: impl Fn(SocketAddr) -> bool) {
        for i in 0..self.conns.len() {
            let Some(conn) = &self.conns[i] else {
                continue;
            };
            if now.duration_since(conn.opened) >= BIND_DEADLINE && !bound(conn.remote) {
                debug!(remote = %conn.remote, "ICE-TCP connection closed: not bound to a peer");
                self.counters.unbound_closed += 1;
                self.close(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        if self.by_remote.get(&conn.remote) == Some(&i) {
            self.by_remote.remove(&conn.remote);
        }
        if let Some(n) = self.per_ip.get_mut(&conn.remote.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&conn.remote.ip());
            }
        }
        if conn.waiting_to_write {
            self.want_write.retain(|k| *k != i);
        }
    }
}
