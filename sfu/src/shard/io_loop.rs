//! The media thread's I/O loop: the only part of the media plane that owns sockets or reads the
//! clock.
//!
//! It waits for one of six things — a command, a datagram, an ICE-TCP connection ready, a
//! message or packets from another shard (`mesh`), the shard's next deadline — hands it to the
//! [`Shard`] with the time it read, and sends what the shard put in its outbox: at the end of
//! every pass, and in between whenever the shard reports the outbox full (the shard stops draining there, so a keyframe fanned out to a whole class is
//! sent a batch at a time instead of queued whole).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::link::LinkSockets;
use super::mesh::{Control, Inbox};
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
/// Packets taken from each queue of the inbox in one pass, so other shards' traffic cannot starve
/// this shard's own socket (what is left waits for the next pass).
const MESH_BATCH: usize = 64;

pub(super) struct IoLoop {
    shard: Shard,
    socket: UdpSocket,
    /// The ICE-TCP listener and its connections, when enabled.
    tcp: Option<TcpMedia>,
    sender: Sender,
    metrics: Arc<MediaMetrics>,
    index: usize,
    /// This shard's inbox (`mesh`), when there are several shards (its control channel is the
    /// shard's).
    inbox: Option<Arc<Inbox>>,
    /// Shards without the ICE-TCP listener send their peers' TCP packets through shard 0.
    tcp_relay: Option<super::mesh::Link>,
    /// The sockets of link connections (`super::link`); the shard opens and closes them.
    links: LinkSockets,
}

/// What ended the loop's wait.
enum Woke {
    Command(Option<ShardCommand>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    LinkDatagram(u16, std::io::Result<(usize, SocketAddr)>),
    Tcp(tcp::Ready),
    Control(Control),
    Inbox,
    Deadline,
}

async fn next_control(control: Option<&mut mpsc::UnboundedReceiver<Control>>) -> Control {
    match control {
        Some(c) => match c.recv().await {
            Some(message) => message,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn inbox_woken(inbox: Option<&Arc<Inbox>>) {
    match inbox {
        Some(i) => i.notified().await,
        None => std::future::pending().await,
    }
}

impl IoLoop {
    pub fn new(
        setup: Setup,
        events: mpsc::UnboundedSender<ShardEvent>,
        metrics: Arc<MediaMetrics>,
        socket: UdpSocket,
        tcp: Option<TcpMedia>,
        inbox: Option<Arc<Inbox>>,
    ) -> IoLoop {
        let index = setup.mesh.as_ref().map_or(0, |m| usize::from(m.index));
        let tcp_relay = setup.mesh.clone().filter(|m| m.index != 0);
        let bind = socket
            .local_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let links = LinkSockets::new(bind);
        let mut shard = Shard::new(Instant::now(), setup, events, metrics.clone());
        shard.set_link_ports(Box::new(links.clone()));
        IoLoop {
            shard,
            links,
            socket,
            tcp,
            sender: Sender::default(),
            metrics,
            index,
            inbox,
            tcp_relay,
        }
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<ShardCommand>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut frame = vec![0u8; tcp::MAX_FRAME];
        let mut link_buf = vec![0u8; RECV_BUFFER];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let deadline = self.shard.poll_deadline().min(next_tick);
            let woke = tokio::select! {
                biased;
                cmd = commands.recv() => Woke::Command(cmd),
                // Before the shared socket, which is never empty under load: a link carries a
                // whole school's media, and would otherwise wait behind every pupil's RTCP.
                (port, received) = std::future::poll_fn(|cx| self.links.poll_recv(cx, &mut link_buf)) => {
                    Woke::LinkDatagram(port, received)
                }
                received = self.socket.recv_from(&mut buf) => Woke::Datagram(received),
                ready = std::future::poll_fn(|cx| match self.tcp.as_mut() {
                    Some(t) => t.poll_ready(cx),
                    None => std::task::Poll::Pending,
                }) => Woke::Tcp(ready),
                message = next_control(self.shard.control.as_mut()) => Woke::Control(message),
                _ = inbox_woken(self.inbox.as_ref()) => Woke::Inbox,
                _ = tokio::time::sleep_until(deadline.into()) => Woke::Deadline,
            };
            // The clock is read once per pass, here, and that time given to everything the pass
            // handles: a batch of datagrams or of other shards' packets shares one reading.
            let now = Instant::now();
            match woke {
                Woke::Command(Some(ShardCommand::Shutdown) | None) => break,
                Woke::Command(Some(cmd)) => {
                    self.shard.handle_command(now, cmd);
                    self.settle();
                }
                Woke::Datagram(Ok((n, source))) => {
                    self.datagram(now, source, &buf[..n]);
                    // Whatever else is already waiting is taken in the same pass, before any
                    // subscriber is drained: the packets of a frame then reach each
                    // subscriber's `Rtc` together and leave as one GSO run (`outbox`), and a
                    // busy loop spends less of its time waking up.
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => self.datagram(now, source, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                Woke::Datagram(Err(e)) => debug!("media socket receive error: {e}"),
                Woke::LinkDatagram(port, Ok((n, source))) => {
                    self.shard
                        .handle_link_datagram(now, port, source, &link_buf[..n]);
                    self.settle();
                }
                Woke::LinkDatagram(port, Err(e)) => debug!(port, "link socket receive error: {e}"),
                Woke::Tcp(ready) => self.handle_tcp(now, ready, &mut frame),
                Woke::Control(message) => {
                    self.shard.handle_control(now, message);
                    self.settle();
                }
                Woke::Inbox | Woke::Deadline => {}
            }
            self.drain_mesh(now);
            // Under a steady stream of datagrams the UDP branch always wins the biased select:
            // ICE-TCP connections get a turn after every wakeup all the same. (Polling with a
            // no-op waker is harmless: the next select polls again with the loop's own.)
            if let Some(std::task::Poll::Ready(ready)) = self.tcp.as_mut().map(|t| {
                t.poll_ready(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            }) {
                self.handle_tcp(now, ready, &mut frame);
            }
            if now >= next_tick {
                next_tick = now + TICK;
                if let Some(t) = self.tcp.as_mut() {
                    let shard = &self.shard;
                    t.sweep(now, |remote| shard.is_bound((Transport::Tcp, remote)));
                }
                self.metrics.shard(self.index).heartbeat.beat();
            }
            if let Some(t) = &self.tcp {
                self.shard.note_tcp(t.counters, t.open());
            }
            // Deadlines (pacing, RTCP, ICE consent) must still be met, so the shard is asked
            // after every wakeup; this also drains what the pass touched. A deadline that fell
            // due while the pass ran is met on the next one, which does not wait for it.
            self.shard.handle_timeout(now);
            self.settle();
            // Everything this pass produced leaves before the loop waits again.
            self.flush();
        }
        self.shard.shutdown(Instant::now());
        self.flush();
        info!("media plane stopped");
    }

    /// What other shards sent: their control messages first (a track must be mirrored before
    /// its packets mean anything), then a bounded batch of hand-offs and forwarded packets.
    fn drain_mesh(&mut self, now: Instant) {
        let Some(inbox) = self.inbox.clone() else {
            return;
        };
        inbox.clear();
        if self.shard.handle_queued_control(now) {
            self.settle();
        }
        let mut left = false;
        if let Some(t) = self.tcp.as_mut() {
            for i in 0..=MESH_BATCH {
                let Some((remote, packet)) = inbox.pop_tcp() else {
                    break;
                };
                t.send(remote, &packet);
                left = i == MESH_BATCH;
            }
            t.flush();
        }
        for i in 0..=MESH_BATCH {
            let Some(handoff) = inbox.pop_handoff() else {
                break;
            };
            self.shard.handle_hand_off(now, &handoff);
            // The buffer goes back to the free list before the next one is taken.
            drop(handoff);
            self.settle();
            left |= i == MESH_BATCH;
        }
        for i in 0..=MESH_BATCH {
            let Some(forwarded) = inbox.pop_forwarded() else {
                break;
            };
            self.shard.handle_forwarded(now, forwarded);
            self.settle();
            left |= i == MESH_BATCH;
        }
        if left {
            inbox.rewake();
        }
    }

    fn datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        self.shard
            .handle_datagram(now, Arrival::udp(source), datagram);
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
        let mut relay_dropped = 0;
        match (self.tcp.as_mut(), &self.tcp_relay) {
            (Some(t), _) => {
                for (to, frame) in outbox.take_tcp() {
                    t.send(to, &frame);
                }
                t.flush();
            }
            (None, Some(relay)) => {
                for (to, frame) in outbox.take_tcp() {
                    if !relay.tcp(0, to, frame) {
                        relay_dropped += 1;
                    }
                }
            }
            (None, None) => outbox.take_tcp().for_each(drop),
        }
        let (mut link_bytes, mut link_failed) = (0, 0);
        for (port, to, datagram) in outbox.take_link() {
            if self.links.send(port, to, &datagram) {
                link_bytes += datagram.len() as u64;
            } else {
                link_failed += 1;
            }
        }
        if link_bytes + link_failed > 0 {
            self.shard.note_link_sent(link_bytes, link_failed);
        }
        let outbox = self.shard.outbox();
        if !outbox.is_empty() {
            let sent = self.sender.flush(outbox, &self.socket);
            self.shard.note_sent(sent);
        }
        if relay_dropped > 0 {
            self.shard.note_mesh_drops(relay_dropped);
        }
    }

    /// Something happened on the ICE-TCP side.
    fn handle_tcp(&mut self, now: Instant, ready: tcp::Ready, frame: &mut [u8]) {
        let Some(t) = self.tcp.as_mut() else {
            return;
        };
        let i = match ready {
            tcp::Ready::Accepted(stream, remote) => {
                t.admit(now, stream, remote);
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
            self.shard.handle_datagram(now, arrival, &frame[..n]);
            self.settle();
        }
    }
}
