//! The media thread's I/O loop: the only part of the media plane that owns sockets or reads the
//! clock.
//!
//! It waits for one of four things — a command, a datagram, an ICE-TCP connection ready, the
//! shard's next deadline — hands it to the [`Shard`] with the time it read, and sends what the
//! shard put in its outbox: at the end of every pass, and in between whenever the shard reports
//! the outbox full (the shard stops draining there, so a keyframe fanned out to a whole class is
//! sent a batch at a time instead of queued whole).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::outbox::Sender;
use super::tcp::{self, TcpMedia};
use super::{Arrival, Setup, Shard};
use crate::command::{ShardCommand, ShardEvent};
use crate::core::demux::Transport;
use crate::metrics::MediaMetrics;

/// Largest datagram we accept; anything longer is not WebRTC.
const RECV_BUFFER: usize = 2048;
/// Datagrams taken from the socket in one pass of the loop before subscribers are drained.
const RECV_BATCH: usize = 32;
/// How often the loop beats the heartbeat and closes ICE-TCP connections never bound to a peer.
const TICK: Duration = Duration::from_secs(1);

pub(super) struct IoLoop {
    shard: Shard,
    socket: UdpSocket,
    /// The ICE-TCP listener and its connections, when enabled.
    tcp: Option<TcpMedia>,
    sender: Sender,
    metrics: Arc<MediaMetrics>,
}

impl IoLoop {
    pub fn new(
        setup: Setup,
        events: mpsc::UnboundedSender<ShardEvent>,
        metrics: Arc<MediaMetrics>,
        socket: UdpSocket,
        tcp: Option<TcpMedia>,
    ) -> IoLoop {
        IoLoop {
            shard: Shard::new(Instant::now(), setup, events, metrics.clone()),
            socket,
            tcp,
            sender: Sender::default(),
            metrics,
        }
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<ShardCommand>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut frame = vec![0u8; tcp::MAX_FRAME];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let deadline = self.shard.poll_deadline().min(next_tick);
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(ShardCommand::Shutdown) | None => break,
                    Some(cmd) => {
                        self.shard.handle_command(Instant::now(), cmd);
                        self.settle();
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => {
                        self.datagram(source, &buf[..n]);
                        // Whatever else is already waiting is taken in the same pass, before any
                        // subscriber is drained: the packets of a frame then reach each
                        // subscriber's `Rtc` together and leave as one GSO run (`outbox`), and a
                        // busy loop spends less of its time waking up.
                        for _ in 1..RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, source)) => self.datagram(source, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => debug!("media socket receive error: {e}"),
                },
                ready = std::future::poll_fn(|cx| match self.tcp.as_mut() {
                    Some(t) => t.poll_ready(cx),
                    None => std::task::Poll::Pending,
                }) => self.handle_tcp(ready, &mut frame),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Under a steady stream of datagrams the UDP branch always wins the biased select:
            // ICE-TCP connections get a turn after every wakeup all the same. (Polling with a
            // no-op waker is harmless: the next select polls again with the loop's own.)
            if let Some(std::task::Poll::Ready(ready)) = self.tcp.as_mut().map(|t| {
                t.poll_ready(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            }) {
                self.handle_tcp(ready, &mut frame);
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                if let Some(t) = self.tcp.as_mut() {
                    let shard = &self.shard;
                    t.sweep(now, |remote| shard.is_bound((Transport::Tcp, remote)));
                }
                self.metrics.heartbeat.beat();
            }
            if let Some(t) = &self.tcp {
                self.shard.note_tcp(t.counters, t.open());
            }
            // Deadlines (pacing, RTCP, ICE consent) must still be met, so the shard is asked
            // after every wakeup; this also drains what the pass touched.
            self.shard.handle_timeout(now);
            self.settle();
            // Everything this pass produced leaves before the loop waits again.
            self.flush();
        }
        self.shard.shutdown(Instant::now());
        self.flush();
        info!("media plane stopped");
    }

    fn datagram(&mut self, source: SocketAddr, datagram: &[u8]) {
        self.shard
            .handle_datagram(Instant::now(), Arrival::udp(source), datagram);
        self.settle();
    }

    /// Sends full batches until the shard has drained everything the last entry point touched
    /// (or stops filling batches).
    fn settle(&mut self) {
        while self.shard.outbox().is_full() {
            self.flush();
            self.shard.drain_dirty();
        }
    }

    fn flush(&mut self) {
        let outbox = self.shard.outbox();
        match self.tcp.as_mut() {
            Some(t) => {
                for (to, frame) in outbox.take_tcp() {
                    t.send(to, &frame);
                }
                t.flush();
            }
            None => outbox.take_tcp().for_each(drop),
        }
        if outbox.is_empty() {
            return;
        }
        let sent = self.sender.flush(outbox, &self.socket);
        self.shard.note_sent(sent);
    }

    /// Something happened on the ICE-TCP side.
    fn handle_tcp(&mut self, ready: tcp::Ready, frame: &mut [u8]) {
        let Some(t) = self.tcp.as_mut() else {
            return;
        };
        let i = match ready {
            tcp::Ready::Accepted(stream, remote) => {
                t.admit(Instant::now(), stream, remote);
                return;
            }
            tcp::Ready::Writable(i) => {
                t.write(i);
                return;
            }
            tcp::Ready::Readable(i) => i,
        };
        let Some((remote, local)) = t.addresses(i) else {
            return;
        };
        if !matches!(t.read(i), tcp::ReadOutcome::Data) {
            return;
        }
        let arrival = Arrival {
            transport: Transport::Tcp,
            source: remote,
            local: Some(local.ip()),
        };
        while let Some(n) = self.tcp.as_mut().and_then(|t| t.next_frame(i, frame)) {
            self.shard
                .handle_datagram(Instant::now(), arrival, &frame[..n]);
            self.settle();
        }
    }
}
