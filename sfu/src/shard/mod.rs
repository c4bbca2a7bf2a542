//! The media thread: the shard, a state machine around its `Rtc`s, and the I/O loop that drives
//! it (`io_loop`).
//!
//! The [`Shard`] owns no socket and reads no clock: every entry point — a datagram
//! ([`Shard::handle_datagram`]), a command ([`Shard::handle_command`]), a deadline
//! ([`Shard::handle_timeout`]) — is given the time by its caller, feeds the one `Rtc` concerned,
//! and drains every `Rtc` that was touched (`dirty`) until it reports its next timeout, as
//! str0m's run loop requires; what they send collects in an [`outbox::Outbox`] the caller empties.
//! `Rtc`s with nothing to do are never polled. The I/O loop owns the sockets and the clock; the
//! virtual-time harness (`crate::sim`, tests only) drives the same shard with a simulated
//! network and clock.

mod allocation;
mod cross;
mod io_loop;
mod link;
mod media;
pub(crate) mod mesh;
mod moderation;
mod negotiate;
pub(crate) mod outbox;
mod peer;
mod recovery;
mod tcp;

pub(crate) use tcp::TcpCounters;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use str0m::net::{DatagramRecv, Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::command::{COMMAND_QUEUE, ShardCommand, ShardEvent};
use crate::config::MediaConfig;
use crate::core::demux::{Demuxer, Route, Transport};
use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::metrics::{MediaCounters, MediaMetrics};
use outbox::Outbox;
use peer::{Peer, PeerKey, PeerRole};

/// How often counters are copied out for `/metrics`.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// How many times in a row one drain answers a peer's due timeout itself (see [`Shard::drain`])
/// before leaving the rest to the timer set, so one busy peer cannot hold up the others.
const INLINE_TIMEOUTS: u32 = 64;
/// str0m's pacer asks to be woken this long after the time it was last given, to release its
/// next packet ("immediate" timeouts): a drain answers those at once (see [`Shard::drain`]).
const IMMEDIATE: Duration = Duration::from_micros(1);

/// A running media plane.
pub struct Sfu {
    /// Send commands here (bounded: [`COMMAND_QUEUE`]).
    pub commands: mpsc::Sender<ShardCommand>,
    /// Events for the control plane; take it once.
    pub events: Option<mpsc::UnboundedReceiver<ShardEvent>>,
    /// The bound media socket.
    pub local_addr: SocketAddr,
    /// The bound ICE-TCP listener, if any.
    pub tcp_addr: Option<SocketAddr>,
    /// The addresses announced to peers (UDP).
    pub announced: Vec<SocketAddr>,
    /// The ICE-TCP addresses announced to peers.
    pub announced_tcp: Vec<SocketAddr>,
    pub metrics: Arc<MediaMetrics>,
    /// The shards, then (with several) the router.
    threads: Vec<JoinHandle<()>>,
}

impl Sfu {
    /// Asks the media threads to close every connection, and waits until they have.
    pub fn shutdown(mut self) {
        // Called off the async runtime (spawn_blocking): waiting for queue space is fine here.
        let _ = self.commands.blocking_send(ShardCommand::Shutdown);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds the media sockets and starts the media threads: one shard, or several behind a router
/// (`crate::router`) and joined by a mesh (`mesh`).
pub fn start(config: MediaConfig) -> Result<Sfu, SfuError> {
    let count = config.shard_count();
    let several = count > 1;
    let first = bind_media_socket(config.bind, several).map_err(|source| SfuError::Bind {
        addr: config.bind,
        source,
    })?;
    let local_addr = first.local_addr().map_err(|source| SfuError::Bind {
        addr: config.bind,
        source,
    })?;
    let mut sockets = vec![first];
    // The others on the port the first one got: the kernel spreads datagrams over them.
    for _ in 1..count {
        let socket = bind_media_socket(local_addr, true).map_err(|source| SfuError::Bind {
            addr: local_addr,
            source,
        })?;
        sockets.push(socket);
    }
    let tcp_listener = match config.tcp_bind {
        Some(addr) => Some(tcp::bind(addr).map_err(|source| SfuError::BindTcp { addr, source })?),
        None => None,
    };
    let tcp_addr = match &tcp_listener {
        Some(l) => Some(l.local_addr().map_err(|source| SfuError::BindTcp {
            addr: config.tcp_bind.unwrap_or(local_addr),
            source,
        })?),
        None => None,
    };
    let ips = announced_ips(&config, local_addr)?;
    let announced: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, local_addr.port()))
        .collect();
    let announced_tcp: Vec<SocketAddr> = match tcp_addr {
        // A listener on one address of its own is reached there (unless told otherwise).
        Some(t) if !t.ip().is_unspecified() && config.announce.is_empty() => vec![t],
        Some(t) => ips
            .iter()
            .filter(|ip| ip.is_ipv4() == t.is_ipv4() || t.ip().is_unspecified())
            .map(|ip| SocketAddr::new(*ip, t.port()))
            .collect(),
        None => Vec::new(),
    };
    // UDP first; TCP candidates carry a lower type preference (str0m: 90 against 126), so a
    // browser that can use UDP does.
    let candidates: Vec<Candidate> = announced
        .iter()
        .filter_map(|a| Candidate::host(*a, "udp").ok())
        .chain(announced_tcp.iter().filter_map(|a| {
            Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(TcpType::Passive)
                .build()
                .ok()
        }))
        .collect();

    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(MediaMetrics::new(count));
    let mut inboxes = Vec::new();
    let mut controls = Vec::new();
    if several {
        for _ in 0..count {
            let (inbox, control) = mesh::Inbox::new();
            inboxes.push(inbox);
            controls.push(Some(control));
        }
    }
    let inboxes: Arc<[Arc<mesh::Inbox>]> = inboxes.into();
    let mut threads = Vec::new();
    let mut doors = Vec::new();
    let mut single = None;
    // ICE-TCP connections are accepted by shard 0; those of other shards' peers are served
    // through it (`io_loop`).
    let mut tcp_listener = tcp_listener;
    for (index, socket) in sockets.into_iter().enumerate() {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let link = several.then(|| mesh::Link::new(index as u8, inboxes.clone()));
        let inbox = link.as_ref().map(|l| l.own().clone());
        let setup = Setup {
            announced: announced.clone(),
            announced_tcp: announced_tcp.clone(),
            candidates: candidates.clone(),
            bandwidth_estimation: config.bandwidth_estimation,
            mesh: link,
            control: controls.get_mut(index).and_then(Option::take),
        };
        let thread = spawn_shard(
            index,
            setup,
            socket,
            tcp_listener.take(),
            inbox,
            event_tx.clone(),
            metrics.clone(),
            cmd_rx,
        )?;
        threads.push(thread);
        match inboxes.get(index) {
            Some(inbox) => doors.push(crate::router::ShardDoor {
                commands: cmd_tx,
                inbox: inbox.clone(),
            }),
            // One shard: the control plane speaks to it directly.
            None => single = Some(cmd_tx),
        }
    }
    let commands = if let Some(direct) = single {
        direct
    } else {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let router = crate::router::Router::new(doors, config.whole_room);
        let thread = std::thread::Builder::new()
            .name("media-router".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(router.run(cmd_rx)),
                    Err(e) => warn!("media router runtime failed to start: {e}"),
                }
            })
            .map_err(SfuError::Thread)?;
        threads.push(thread);
        cmd_tx
    };
    info!(%local_addr, ?tcp_addr, ?announced, ?announced_tcp, shards = count, "media plane listening");
    Ok(Sfu {
        commands,
        events: Some(event_rx),
        local_addr,
        tcp_addr,
        announced,
        announced_tcp,
        metrics,
        threads,
    })
}

/// Starts one media thread with its own runtime, socket and (shard 0) ICE-TCP listener.
#[allow(clippy::too_many_arguments)]
fn spawn_shard(
    index: usize,
    setup: Setup,
    socket: std::net::UdpSocket,
    tcp_listener: Option<std::net::TcpListener>,
    inbox: Option<Arc<mesh::Inbox>>,
    events: mpsc::UnboundedSender<ShardEvent>,
    metrics: Arc<MediaMetrics>,
    commands: mpsc::Receiver<ShardCommand>,
) -> Result<JoinHandle<()>, SfuError> {
    std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("media runtime failed to start: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("media socket unusable: {e}");
                        return;
                    }
                };
                let tcp = match tcp_listener.map(TcpListener::from_std).transpose() {
                    Ok(t) => t.map(tcp::TcpMedia::new),
                    Err(e) => {
                        warn!("ICE-TCP listener unusable: {e}");
                        return;
                    }
                };
                io_loop::IoLoop::new(setup, events, metrics, socket, tcp, inbox)
                    .run(commands)
                    .await;
            });
        })
        .map_err(SfuError::Thread)
}

/// Socket buffers sized for bursts: a keyframe for forty subscribers is thousands of datagrams
/// written at once, and the kernel default (about 200 KiB) drops them silently.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// `shared`: several shards bind the same port (`SO_REUSEPORT`); the kernel then picks a socket
/// per datagram by a hash of its addresses, and only sockets of this process's user can join.
fn bind_media_socket(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        set_reuse_port(&socket)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!("cannot enlarge the media receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!("cannot enlarge the media send buffer: {e}");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// socket2 offers this only with its `all` feature, which would rebuild tokio and everything on
/// it with other features; the option is one `setsockopt`.
fn set_reuse_port(socket: &socket2::Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor, and a pointer to a c_int with its size, as SO_REUSEPORT takes.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The configured addresses; without any, the bound address, or for a wildcard bind every
/// address of this machine (IPv6 ones only for an IPv6 socket).
fn announced_ips(
    config: &MediaConfig,
    local: SocketAddr,
) -> Result<Vec<std::net::IpAddr>, SfuError> {
    if !config.announce.is_empty() {
        return Ok(config.announce.clone());
    }
    if !local.ip().is_unspecified() {
        return Ok(vec![local.ip()]);
    }
    match crate::interfaces::local_addresses(local.is_ipv6()) {
        Ok(ips) if !ips.is_empty() => Ok(ips),
        Ok(_) => Err(SfuError::NothingToAnnounce(local)),
        Err(e) => {
            warn!("cannot list this machine's addresses: {e}");
            Err(SfuError::NothingToAnnounce(local))
        }
    }
}

/// A participant as the media plane sees it.
#[derive(Debug)]
struct Member {
    room: RoomId,
    subscribe: bool,
    teacher: bool,
    /// This server's end of a lesson link it dialled (`link`).
    link: bool,
    /// A lesson link's seat, on either server (`ShardCommand::Join::relay`).
    relay: bool,
    publisher: Option<PeerKey>,
    subscriber: Option<PeerKey>,
}

/// A track and everyone receiving it.
struct Track {
    info: crate::command::PublishedTrack,
    /// The participant whose connection publishes it: `info.participant` unless the track is
    /// a link's import owned by someone on the far side (`TrackSpec::owner`).
    by: ParticipantId,
    room: RoomId,
    publisher: PeerKey,
    mid: str0m::media::Mid,
    /// The payload type last seen and its codec, learned from the packets.
    codec: Option<(str0m::media::Pt, str0m::format::Codec)>,
    /// Simulcast rids, lowest resolution first (spatial layer = index); empty for one encoding.
    rids: Vec<str0m::media::Rid>,
    /// Its place in each subscriber's bandwidth priority.
    class: crate::core::allocator::TrackClass,
    meter: crate::core::bitrate::LayerMeter,
    subscriptions: Vec<media::Subscription>,
    /// One throttle per spatial layer: each layer's encoder makes its own keyframes.
    keyframe_throttle: [crate::core::throttle::Throttle; 3],
    /// The rids last asked of the publisher (dynacast), and since when each is unneeded.
    dynacast: allocation::Dynacast,
    /// Who receives it (applied through each subscription's `allowed`).
    audience: crate::command::Audience,
    /// Microphones: whether it carries speech, from its audio level.
    speaker: crate::core::speaker::SpeakerDetector,
    /// Per spatial layer, the publisher's latest sender report and the SSRC it describes.
    sender_clocks: [Option<(u32, crate::core::forward::SenderClock)>; 3],
    /// `None`: published here. `Some(shard)`: a mirror of a track published on that shard
    /// (`cross`); `publisher` is then [`cross::NO_PEER`].
    owner: Option<u8>,
    /// A local track: the other shards hosting its room, which get each of its packets once.
    forward_to: Vec<u8>,
    /// A local track: what the subscribers of each other shard want of it (dynacast).
    remote_viewers: Vec<(u8, Vec<crate::core::dynacast::Viewer>)>,
    /// A mirror: what its subscribers' wants last told the owner.
    demand: crate::core::dynacast::DemandReport,
}

impl Track {
    /// A track with no subscriber yet: published here (`owner` `None`, by `publisher`) or a
    /// mirror of one published on shard `owner` (`publisher` is then [`cross::NO_PEER`]).
    #[allow(clippy::too_many_arguments)]
    fn new(
        info: crate::command::PublishedTrack,
        by: ParticipantId,
        room: RoomId,
        publisher: PeerKey,
        rids: Vec<str0m::media::Rid>,
        class: crate::core::allocator::TrackClass,
        audience: crate::command::Audience,
        owner: Option<u8>,
    ) -> Track {
        let layers = rids.len();
        let keyframe_throttle = std::array::from_fn(|s| {
            crate::core::throttle::Throttle::new(crate::core::throttle::keyframe_request_interval(
                s, layers,
            ))
        });
        Track {
            mid: str0m::media::Mid::from(info.mid.as_str()),
            info,
            by,
            room,
            publisher,
            codec: None,
            rids,
            class,
            meter: Default::default(),
            subscriptions: Vec::new(),
            keyframe_throttle,
            dynacast: Default::default(),
            audience,
            speaker: Default::default(),
            sender_clocks: Default::default(),
            owner,
            forward_to: Vec::new(),
            remote_viewers: Vec::new(),
            demand: Default::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<ParticipantId>,
    tracks: Vec<TrackId>,
    speakers: crate::core::speaker::RoomSpeakers,
    /// The shards hosting the room, sorted, this one included (empty with one shard).
    hosts: Vec<u8>,
}

/// What a shard answers on, fixed when it starts.
pub(crate) struct Setup {
    /// The addresses announced to peers (UDP), and those of ICE-TCP.
    pub announced: Vec<SocketAddr>,
    pub announced_tcp: Vec<SocketAddr>,
    /// The local candidates every peer answers on.
    pub candidates: Vec<Candidate>,
    /// `MediaConfig::bandwidth_estimation`.
    pub bandwidth_estimation: bool,
    /// The other shards, when there are several.
    pub mesh: Option<mesh::Link>,
    /// This shard's end of its control channel (`mesh::Control`), with the mesh.
    pub control: Option<mpsc::UnboundedReceiver<mesh::Control>>,
}

/// Where a datagram came from: UDP, or a frame of an ICE-TCP connection (with the local address
/// that connection reached, which a UDP socket bound to a wildcard cannot tell).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub transport: Transport,
    pub source: SocketAddr,
    pub local: Option<std::net::IpAddr>,
}

impl Arrival {
    pub fn udp(source: SocketAddr) -> Arrival {
        Arrival {
            transport: Transport::Udp,
            source,
            local: None,
        }
    }
}

/// A subscribe link as the shard sees it: estimate, loss fraction, RTT (ms), bytes sent.
#[cfg(any(test, feature = "sim"))]
pub(crate) type SubscriberLink = (Option<u64>, Option<f32>, Option<u32>, u64);

/// Everything one media thread owns but its sockets and its clock.
pub(crate) struct Shard {
    /// What the `Rtc`s sent, for the caller to take (`outbox()`).
    outbox: Outbox,
    /// The time given by the caller of the entry point running now (never goes back).
    now: Instant,
    next_metrics: Instant,
    next_allocation: Instant,
    next_speakers: Instant,
    announced: Vec<SocketAddr>,
    announced_tcp: Vec<SocketAddr>,
    candidates: Vec<Candidate>,
    /// Whether subscribers' bandwidth is estimated (`MediaConfig::bandwidth_estimation`).
    bandwidth_estimation: bool,
    events: mpsc::UnboundedSender<ShardEvent>,
    metrics: Arc<MediaMetrics>,
    counters: MediaCounters,
    /// The counters as last published (`MediaMetrics` takes what changed since).
    published: MediaCounters,

    /// Boxed: a `Peer` with its `Rtc` is kilobytes, and the table's spare capacity (up to half
    /// of it after growing) would otherwise hold that much per empty slot.
    peers: Vec<Option<Box<Peer>>>,
    free: Vec<PeerKey>,
    demux: Demuxer<PeerKey>,
    timers: BTreeSet<(Instant, PeerKey)>,
    dirty: Vec<PeerKey>,

    members: HashMap<ParticipantId, Member>,
    rooms: HashMap<RoomId, Room>,
    tracks: HashMap<TrackId, Track>,
    /// Track ids are unique per process and name their shard (`core::placement::track_ids`).
    next_track: u64,
    track_stride: u64,
    /// The other shards, and which of them owns the peer of a datagram that reached this one.
    mesh: Option<mesh::Link>,
    foreign: Demuxer<(u8, PeerKey)>,
    /// Messages from the other shards and the router. The loop waits on it; the shard also
    /// reads it itself before giving up on a datagram (`cross`).
    control: Option<mpsc::UnboundedReceiver<mesh::Control>>,
    /// When link reports are next due.
    next_report: Instant,
    /// Sockets for the connections of links this server dialled (`link`), and which peer each
    /// one's datagrams go to.
    link_ports: Box<dyn link::LinkPorts>,
    link_peers: link::LinkPeers,
}

impl Shard {
    pub(crate) fn new(
        now: Instant,
        setup: Setup,
        events: mpsc::UnboundedSender<ShardEvent>,
        metrics: Arc<MediaMetrics>,
    ) -> Shard {
        let Setup {
            announced,
            announced_tcp,
            candidates,
            bandwidth_estimation,
            mesh,
            control,
        } = setup;
        let (first_track, track_stride) = mesh.as_ref().map_or((1, 1), |m| {
            crate::core::placement::track_ids(m.index, m.count())
        });
        Shard {
            outbox: Outbox::default(),
            now,
            next_metrics: now + METRICS_INTERVAL,
            next_allocation: now + allocation::INTERVAL,
            next_speakers: now + moderation::SPEAKER_INTERVAL,
            announced,
            announced_tcp,
            candidates,
            bandwidth_estimation,
            events,
            metrics,
            counters: MediaCounters::default(),
            published: MediaCounters::default(),
            peers: Vec::new(),
            free: Vec::new(),
            demux: Demuxer::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            members: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            next_track: first_track,
            track_stride,
            mesh,
            foreign: Demuxer::default(),
            control,
            next_report: now,
            link_ports: Box::new(link::NoLinkPorts),
            link_peers: Default::default(),
        }
    }

    /// Takes the caller's time for the entry point that runs now.
    fn enter(&mut self, now: Instant) {
        // A caller's clock that steps back (it must not) cannot make the `Rtc`s' go back.
        self.now = self.now.max(now);
    }

    /// The earliest time [`Shard::handle_timeout`] has something to do.
    pub(crate) fn poll_deadline(&self) -> Instant {
        let rounds = self
            .next_metrics
            .min(self.next_allocation)
            .min(self.next_speakers);
        self.timers
            .first()
            .map_or(rounds, |(t, _)| (*t).min(rounds))
    }

    /// What the `Rtc`s sent. After any entry point, while it [is full](Outbox::is_full), the
    /// caller empties it and calls [`Shard::drain_dirty`]: drains stop at a full outbox, so that
    /// one packet fanned out to a whole class never queues more than a batch here.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The caller sent a batch from the outbox.
    fn note_sent(&mut self, sent: outbox::Sent) {
        self.counters.packets_out += sent.datagrams;
        self.counters.bytes_out += sent.bytes;
        self.counters.send_errors += sent.failed;
        self.counters.datagrams_segmented += sent.segmented;
    }

    /// The ICE-TCP side's counters, published with the shard's.
    pub(crate) fn note_tcp(&mut self, counters: TcpCounters, open: usize) {
        self.counters.tcp = counters;
        self.counters.tcp_connections = open as u64;
    }

    /// Whether datagrams on `route` reach a peer (an ICE-TCP connection not bound to one is
    /// closed by the loop after a while).
    pub(crate) fn is_bound(&self, route: Route) -> bool {
        self.demux.is_bound(route) || self.foreign.is_bound(route)
    }

    /// Packets another shard's queue had no room for (ICE-TCP relayed through shard 0).
    pub(crate) fn note_mesh_drops(&mut self, dropped: u64) {
        self.counters.mesh_queue_full += dropped;
    }

    /// Everything due by `now`: `Rtc` deadlines, then the allocation, speaker and metrics rounds.
    /// Also drains whatever earlier entry points left dirty; call it after every wakeup.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.enter(now);
        let now = self.now;
        if self.timers.first().is_some_and(|(t, _)| *t <= now) {
            self.handle_timeouts(now);
        }
        self.drain_dirty();
        if now >= self.next_allocation {
            self.next_allocation = now + allocation::INTERVAL;
            self.allocate_all(now);
            self.drain_dirty();
        }
        if now >= self.next_speakers {
            self.next_speakers = now + moderation::SPEAKER_INTERVAL;
            self.report_speakers(now);
        }
        if now >= self.next_metrics {
            self.next_metrics = now + METRICS_INTERVAL;
            self.counters.peers = (self.demux.len() + self.link_peers.len()) as u64;
            self.counters.link_peers = self.link_peers.len() as u64;
            self.publish_metrics();
            self.reap_disconnected(now);
            self.restart_quiet(now);
        }
    }

    fn publish_metrics(&mut self) {
        let index = usize::from(self.index());
        self.metrics.publish(index, &self.counters, &self.published);
        self.published = self.counters.clone();
    }

    /// Closes every connection politely (`ShardCommand::Shutdown`); the caller then sends the
    /// outbox one last time.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        self.enter(now);
        self.close_all();
        self.publish_metrics();
    }

    /// A command from the control plane (`Shutdown` is the caller's: [`Shard::shutdown`]).
    pub(crate) fn handle_command(&mut self, now: Instant, cmd: ShardCommand) {
        self.enter(now);
        match cmd {
            ShardCommand::Join {
                participant,
                room,
                subscribe,
                teacher,
                link,
                relay,
            } => self.join(participant, room, subscribe, teacher, link, relay),
            ShardCommand::SetTrackCap {
                participant,
                track,
                max_spatial,
            } => self.set_track_cap(participant, track, max_spatial),
            ShardCommand::LinkLayers {
                participant,
                mid,
                active,
            } => self.set_link_layers(participant, &mid, &active),
            ShardCommand::Publish {
                participant,
                offer,
                tracks,
                reply,
            } => {
                let result = self.publish(participant, &offer, &tracks);
                let _ = reply.send(result);
            }
            ShardCommand::SubscriberAnswer {
                participant,
                answer,
                reply,
            } => {
                let result = self.subscriber_answer(participant, &answer);
                let _ = reply.send(result);
            }
            ShardCommand::SetAudience { track, audience } => self.set_audience(track, audience),
            ShardCommand::Reoffer {
                participant,
                ice_restart,
            } => self.reoffer(participant, ice_restart),
            ShardCommand::Leave { participant } => self.leave(participant),
            ShardCommand::Shutdown => {}
            ShardCommand::Hold { held, release } => {
                warn!("the media thread is held (test hook)");
                let _ = held.send(());
                // Blocking on purpose: this stands for a media thread stuck in a slow call.
                let _ = release.recv_timeout(crate::hold::MAX_HOLD);
                info!("the media thread is released");
            }
        }
    }

    /// A datagram (or an ICE-TCP frame) for the peer it belongs to.
    pub(crate) fn handle_datagram(&mut self, now: Instant, arrival: Arrival, datagram: &[u8]) {
        self.handle_arrival(now, arrival, datagram, true);
    }

    /// A datagram, received here or (`may_hand_off` false) handed over by another shard.
    fn handle_arrival(
        &mut self,
        now: Instant,
        arrival: Arrival,
        datagram: &[u8],
        may_hand_off: bool,
    ) {
        self.enter(now);
        let destination = match arrival.transport {
            // A datagram handed over was counted by the shard whose socket read it.
            Transport::Udp => {
                if may_hand_off {
                    self.counters.packets_in += 1;
                    self.counters.bytes_in += datagram.len() as u64;
                }
                local_candidate_for(&self.announced, arrival.local, arrival.source)
            }
            Transport::Tcp => {
                local_candidate_for(&self.announced_tcp, arrival.local, arrival.source)
            }
        };
        self.handle_packet(self.now, arrival, destination, datagram, may_hand_off);
    }

    /// A datagram from UDP or a frame from an ICE-TCP connection, for the peer it belongs to.
    /// `destination` is the announced address it reached (what str0m knows as its candidate).
    fn handle_packet(
        &mut self,
        now: Instant,
        arrival: Arrival,
        destination: SocketAddr,
        datagram: &[u8],
        may_hand_off: bool,
    ) {
        let route = (arrival.transport, arrival.source);
        let (transport, source) = route;
        let key = match self.demux.route_via(route, datagram) {
            Ok(key) => key,
            // Another shard's peer: the kernel's hash chose this socket, not the owner.
            Err(_) if may_hand_off && self.hand_off(route, arrival, datagram) => return,
            Err(_) => {
                self.counters.datagrams_unroutable += 1;
                return;
            }
        };
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            self.counters.datagrams_rejected += 1;
            return;
        };
        let proto = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let receive = Receive {
            proto,
            source,
            destination,
            contents,
        };
        self.receive(now, key, receive);
    }

    /// Hands one received datagram to `key`'s `Rtc` and drains what it produced. A datagram
    /// after a silence counts the path back up (`recovery`).
    fn receive(&mut self, now: Instant, key: PeerKey, receive: Receive<'_>) {
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let back = peer.recovery.silence.heard(now) && peer.recovery.heard_again();
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            debug!(participant = %peer.participant, "datagram refused: {e}");
            self.counters.datagrams_rejected += 1;
        }
        // str0m holds one received packet at a time in RTP mode: drain before the next input.
        self.drain(key);
        if back {
            self.path_back(key);
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(peer) = self.peer_mut(key) {
                peer.timer = None;
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    debug!("timeout handling failed: {e}");
                }
                self.drain(key);
            }
        }
    }

    fn mark_dirty(&mut self, key: PeerKey) {
        if let Some(peer) = self.peer_mut(key)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Polls every touched `Rtc` until it only has a timeout to report. Handling one peer's
    /// events can touch others (forwarding writes to subscribers), so this runs until quiet, or
    /// until the outbox is full (the caller empties it and calls this again).
    pub(crate) fn drain_dirty(&mut self) {
        while !self.outbox.is_full() {
            let Some(key) = self.dirty.pop() else {
                return;
            };
            if let Some(peer) = self.peer_mut(key) {
                peer.dirty = false;
            }
            self.drain(key);
        }
    }

    /// Polls one `Rtc` until it only has a timeout to report, or until the outbox is full: then
    /// it stays dirty, and the next [`Shard::drain_dirty`] goes on where this stopped.
    fn drain(&mut self, key: PeerKey) {
        self.drain_until(key, true);
    }

    fn drain_until(&mut self, key: PeerKey, stop_when_full: bool) {
        let mut inline_timeouts = 0;
        // The time last given to this `Rtc`: the caller's, or a little past it (below).
        let mut fed = self.now;
        loop {
            if stop_when_full && self.outbox.is_full() {
                self.mark_dirty(key);
                return;
            }
            let Some(peer) = self.peer_mut(key) else {
                return;
            };
            if !peer.rtc.is_alive() {
                self.remove_peer(key);
                return;
            }
            let output = match peer.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    debug!(participant = %peer.participant, "peer failed: {e}");
                    self.remove_peer(key);
                    return;
                }
            };
            match output {
                Output::Timeout(t) => {
                    // str0m's pacer asks for a timeout a microsecond after every packet it
                    // releases, and sends the next one only after it. Answering that here, while
                    // this peer is hot in the cache, saves a trip through the timer set and the
                    // event loop per paced packet (a frame for a pupil is several packets). The
                    // caller's time stands still during an entry point, so the microsecond is
                    // granted: the `Rtc` runs at most `INLINE_TIMEOUTS` µs ahead of it (str0m
                    // keeps its own time from going back when the next input is earlier).
                    if inline_timeouts < INLINE_TIMEOUTS && t <= fed + IMMEDIATE {
                        inline_timeouts += 1;
                        fed = fed.max(t);
                        if let Err(e) = peer.rtc.handle_input(Input::Timeout(fed)) {
                            debug!("timeout handling failed: {e}");
                        }
                        continue;
                    }
                    if peer.timer != Some(t) {
                        if let Some(old) = peer.timer.replace(t) {
                            self.timers.remove(&(old, key));
                        }
                        self.timers.insert((t, key));
                    }
                    return;
                }
                Output::Transmit(t) if t.proto == Protocol::Udp => {
                    peer.bytes_sent += t.contents.len() as u64;
                    // A link's connection leaves from its own socket, never the media port.
                    if let Some(port) = peer.link.as_ref().map(|end| end.port) {
                        self.outbox
                            .push_link(port, t.destination, t.contents.into());
                        continue;
                    }
                    let bound = self.demux.confirm(key, t.destination, &t.contents);
                    if bound {
                        let route = (Transport::Udp, t.destination);
                        self.announce_peer(key, cross::PeerChange::Bound(route));
                    }
                    self.outbox.push(t.destination, t.contents.into());
                }
                Output::Transmit(t) => {
                    peer.bytes_sent += t.contents.len() as u64;
                    // Only TCP host candidates are ours besides UDP.
                    let route = (Transport::Tcp, t.destination);
                    if self.demux.confirm_via(key, route, &t.contents) {
                        self.announce_peer(key, cross::PeerChange::Bound(route));
                    }
                    self.outbox.push_tcp(t.destination, t.contents.into());
                }
                Output::Event(e) => self.handle_event(key, e),
            }
        }
    }

    fn handle_event(&mut self, key: PeerKey, event: Event) {
        match event {
            Event::Connected => {
                let Some(peer) = self.peer_mut(key) else {
                    return;
                };
                peer.connected = true;
                let publisher = peer.is_publisher();
                debug!(participant = %peer.participant, publisher, "peer connected");
                if !publisher {
                    self.allocate_connected(key, self.now);
                }
            }
            Event::IceConnectionStateChange(state) => {
                // Not dropped at once: the client restarts ICE or comes back from a new
                // address (`recovery`); only a long outage closes the connection.
                let mut back = false;
                let mut down = false;
                let now = self.now;
                if let Some(peer) = self.peer_mut(key) {
                    debug!(participant = %peer.participant, ?state, "ICE state");
                    match state {
                        IceConnectionState::Disconnected => {
                            peer.recovery.path_down(now);
                            down = true;
                        }
                        IceConnectionState::Checking => {
                            peer.recovery.checking(peer.connected, now);
                            // A restart of a path that was up: the client's old path is in
                            // doubt (usually a moved address), so nothing goes into it until
                            // the checks find the new one.
                            down = peer.connected;
                        }
                        IceConnectionState::Connected | IceConnectionState::Completed => {
                            back = peer.recovery.path_up();
                        }
                        _ => {}
                    }
                }
                if down {
                    self.set_reachable(key, false);
                }
                if back {
                    self.path_back(key);
                }
            }
            Event::RtpPacket(packet) => self.on_rtp(key, packet),
            Event::KeyframeRequest(req) => self.on_keyframe_request(key, req),
            Event::SenderFeedback(feedback) => self.on_sender_feedback(key, &feedback),
            Event::MediaEgressStats(stats) => self.on_egress_stats(key, &stats),
            Event::PeerStats(stats) => self.on_peer_stats(key, &stats),
            Event::EgressBitrateEstimate(estimate) => self.on_estimate(key, estimate),
            _ => {}
        }
    }

    fn peer_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.peers
            .get_mut(key.0 as usize)
            .and_then(Option::as_deref_mut)
    }

    /// What the shard believes of a participant's subscribe link (the harness's timelines).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn subscriber_link(&self, participant: ParticipantId) -> Option<SubscriberLink> {
        let key = self.members.get(&participant)?.subscriber?;
        self.peer(key)
            .map(|p| (p.estimate, p.loss, p.rtt_ms, p.bytes_sent))
    }

    fn peer(&self, key: PeerKey) -> Option<&Peer> {
        self.peers.get(key.0 as usize).and_then(Option::as_deref)
    }

    /// A new peer connection of `participant`, answering on this shard's candidates.
    fn add_peer(&mut self, participant: ParticipantId, role: PeerRole) -> PeerKey {
        let peer = Peer::new(
            self.now,
            participant,
            role,
            &self.candidates,
            self.bandwidth_estimation,
            true,
        );
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.peers.push(None);
                PeerKey((self.peers.len() - 1) as u32)
            }
        };
        self.demux.insert(&peer.ufrag, key);
        self.announce_peer(key, cross::PeerChange::Added(&peer.ufrag));
        self.peers[key.0 as usize] = Some(Box::new(peer));
        self.mark_dirty(key);
        key
    }

    /// Drops a peer connection and everything that hangs off it.
    fn remove_peer(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(key.0 as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(key);
        match &peer.link {
            Some(end) => self.forget_link_peer(end),
            None => {
                self.demux.remove(&peer.ufrag, key);
                self.announce_peer(key, cross::PeerChange::Gone(&peer.ufrag));
            }
        }
        if let Some(t) = peer.timer {
            self.timers.remove(&(t, key));
        }
        let participant = peer.participant;
        debug!(%participant, publisher = peer.is_publisher(), "peer removed");
        match peer.role {
            PeerRole::Publish { tracks, .. } => {
                let gone: Vec<TrackId> = tracks.values().copied().collect();
                let lost = match self.members.get_mut(&participant) {
                    Some(m) if m.publisher == Some(key) => {
                        m.publisher = None;
                        true
                    }
                    _ => false,
                };
                if !gone.is_empty() {
                    for t in &gone {
                        self.remove_track(*t);
                    }
                    let _ = self.events.send(ShardEvent::TracksUnpublished {
                        participant,
                        tracks: gone,
                    });
                }
                if lost {
                    let _ = self.events.send(ShardEvent::ConnectionLost { participant });
                }
            }
            PeerRole::Subscribe { tracks, .. } => {
                for track in tracks.values() {
                    if let Some(t) = self.tracks.get_mut(track) {
                        t.subscriptions.retain(|s| s.peer != key);
                    }
                }
                if let Some(m) = self.members.get_mut(&participant)
                    && m.subscriber == Some(key)
                {
                    m.subscriber = None;
                    let _ = self.events.send(ShardEvent::ConnectionLost { participant });
                }
            }
        }
    }

    fn join(
        &mut self,
        participant: ParticipantId,
        room: RoomId,
        subscribe: bool,
        teacher: bool,
        link: bool,
        relay: bool,
    ) {
        if self.members.contains_key(&participant) {
            return;
        }
        self.rooms
            .entry(room.clone())
            .or_default()
            .members
            .push(participant);
        self.members.insert(
            participant,
            Member {
                room,
                subscribe,
                teacher,
                link,
                relay,
                publisher: None,
                subscriber: None,
            },
        );
        self.negotiate_subscriber(participant);
    }

    fn leave(&mut self, participant: ParticipantId) {
        let Some(member) = self.members.remove(&participant) else {
            return;
        };
        for key in [member.publisher, member.subscriber].into_iter().flatten() {
            self.close_peer(key);
        }
        if let Some(room) = self.rooms.get_mut(&member.room) {
            room.members.retain(|p| *p != participant);
            // A room the router still counts this shard a host of stays: its `Hosts` may have
            // overtaken this departure, and the next member here needs them.
            if room.members.is_empty() && room.tracks.is_empty() && room.hosts.is_empty() {
                self.rooms.remove(&member.room);
            }
        }
    }

    /// Closes a connection politely (RTCP BYE, DTLS close_notify) so the browser notices at
    /// once instead of after its consent timeout, then forgets it.
    fn close_peer(&mut self, key: PeerKey) {
        if let Some(peer) = self.peer_mut(key)
            && peer.rtc.close().is_err()
        {
            peer.rtc.disconnect();
        }
        // Its last words (BYE, close_notify) are few: not held back by a full outbox.
        self.drain_until(key, false);
        self.remove_peer(key);
    }

    fn close_all(&mut self) {
        for key in 0..self.peers.len() {
            self.close_peer(PeerKey(key as u32));
        }
    }
}

/// The announced address a client reached us on, as str0m knows its local candidates. `actual`
/// is the address the packet arrived at when known (a TCP connection's local address); a UDP
/// socket bound to a wildcard does not say, and then a loopback client is taken to have used
/// loopback and any other the first announced address of its family. str0m only answers checks
/// that name one of its candidates; which one matters for its bookkeeping, not for the route
/// replies take (the kernel picks that).
fn local_candidate_for(
    announced: &[SocketAddr],
    actual: Option<std::net::IpAddr>,
    source: SocketAddr,
) -> SocketAddr {
    let same_family = |a: &&SocketAddr| a.is_ipv4() == source.is_ipv4();
    actual
        .and_then(|ip| announced.iter().find(|a| a.ip() == ip))
        .or_else(|| announced.iter().find(|a| a.ip() == source.ip()))
        .or_else(|| {
            source
                .ip()
                .is_loopback()
                .then(|| {
                    announced
                        .iter()
                        .filter(same_family)
                        .find(|a| a.ip().is_loopback())
                })
                .flatten()
        })
        .or_else(|| {
            announced
                .iter()
                .filter(same_family)
                .find(|a| !a.ip().is_loopback())
        })
        .or_else(|| announced.iter().find(same_family))
        .or(announced.first())
        .copied()
        .unwrap_or(source)
}

#[cfg(test)]
mod tests {
    use super::local_candidate_for;
    use std::net::SocketAddr;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_candidate_a_packet_reached() {
        let announced = [
            a("192.168.1.5:50000"),
            a("10.8.0.1:50000"),
            a("127.0.0.1:50000"),
        ];
        // Known local address (TCP).
        assert_eq!(
            local_candidate_for(
                &announced,
                Some("10.8.0.1".parse().unwrap()),
                a("10.8.0.9:4000")
            ),
            announced[1]
        );
        // A client on this machine that used one of its addresses.
        assert_eq!(
            local_candidate_for(&announced, None, a("10.8.0.1:4000")),
            announced[1]
        );
        assert_eq!(
            local_candidate_for(&announced, None, a("127.0.0.1:4000")),
            announced[2]
        );
        // Anyone else: the first non-loopback address.
        assert_eq!(
            local_candidate_for(&announced, None, a("192.168.1.77:4000")),
            announced[0]
        );
        // Behind a 1:1 NAT the local address is not announced: the public one is.
        let public = [a("203.0.113.7:50000")];
        assert_eq!(
            local_candidate_for(
                &public,
                Some("172.31.0.4".parse().unwrap()),
                a("198.51.100.1:1")
            ),
            public[0]
        );
    }
}
