//! The connections of a lesson link this server dialled (docs/PARTNER.md, "Lesson links").
//!
//! A participant that joined with `ShardCommand::Join { link: true }` is this server's end of a
//! link to a host server. Its two connections go to the host's media port, and the host is
//! ICE-lite like this server: so here they run full ICE (this side controls and sends the checks)
//! and each goes out of a UDP socket of its own. The host tells peers apart by their source
//! address, so the two connections (and two links to one host) must come from different ports;
//! the shared media port cannot give them that.
//!
//! The shard stays sans-IO: it asks [`LinkPorts`] for a socket when it creates a link peer and
//! only learns its port. The I/O loop owns the sockets ([`LinkSockets`]), hands their datagrams
//! straight to the peer ([`Shard::handle_link_datagram`], no demultiplexing) and sends what the
//! peer transmits out of the same socket (`Outbox::push_link`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use str0m::Candidate;
use str0m::net::{DatagramRecv, Protocol, Receive};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use super::peer::{Peer, PeerKey, PeerRole};
use super::{Shard, local_candidate_for};
use crate::command::TrackSpec;
use crate::error::SfuError;
use crate::ids::ParticipantId;

/// Link sockets one shard may hold: two per link, and a server dials at most 16 links
/// (`MAX_OUTGOING_LINKS`).
pub(crate) const MAX_LINK_SOCKETS: usize = 32;

/// The I/O side's sockets for link peers, as the shard asks for them.
pub(crate) trait LinkPorts {
    /// A UDP socket of its own on the media bind address; its port.
    fn open(&mut self) -> std::io::Result<u16>;
    /// The peer on `port` is gone: its socket closes.
    fn close(&mut self, port: u16);
}

/// Where no link socket can be had (the virtual-time harness has no sockets).
pub(crate) struct NoLinkPorts;

impl LinkPorts for NoLinkPorts {
    fn open(&mut self) -> std::io::Result<u16> {
        Err(std::io::Error::other("no link sockets here"))
    }

    fn close(&mut self, _port: u16) {}
}

/// The link side of a peer: the port of its own socket, and the local candidates it announced
/// (the announced addresses with that port).
#[derive(Debug)]
pub(crate) struct LinkEnd {
    pub port: u16,
    pub local: Vec<SocketAddr>,
}

/// Whose a published track is in the room: the owner the link names, or the publishing
/// participant; and whether it is prioritised as a teacher's.
pub(crate) fn owner_of(
    spec: &TrackSpec,
    publisher: ParticipantId,
    publisher_teacher: bool,
) -> (ParticipantId, bool) {
    match spec.owner {
        Some(owner) => (owner.participant, owner.teacher),
        None => (publisher, publisher_teacher),
    }
}

/// Whether `subscriber` is offered a track that `by`'s connection published for `owner`. The
/// publishing participant, not the owner, decides: a link never gets back the tracks it
/// imported (no echo to the server they came from), while the people they belong to are not
/// members here. And a link seat (`relay`) gets no track another link imported: only the
/// people of this server's own lesson cross a link, so a third school's tracks never arrive
/// under the wrong school's name and links in a cycle cannot pass a track round it.
pub(crate) fn offered_to(
    by: ParticipantId,
    owner: ParticipantId,
    subscriber: ParticipantId,
    relay: bool,
) -> bool {
    by != subscriber && !(relay && owner != by)
}

impl Shard {
    /// Whether `participant` is this server's end of a link it dialled.
    pub(super) fn is_link(&self, participant: ParticipantId) -> bool {
        self.members.get(&participant).is_some_and(|m| m.link)
    }

    /// A new connection of a link participant: full ICE, from a socket of its own.
    pub(super) fn add_link_peer(
        &mut self,
        participant: ParticipantId,
        role: PeerRole,
    ) -> Result<PeerKey, SfuError> {
        if self.link_peers.len() >= MAX_LINK_SOCKETS {
            return Err(SfuError::LinkSockets(format!(
                "this media thread already has {MAX_LINK_SOCKETS} link connections"
            )));
        }
        let port = self.link_ports.open().map_err(|e| {
            SfuError::LinkSockets(format!("cannot open a socket for a link connection: {e}"))
        })?;
        let local: Vec<SocketAddr> = self
            .announced
            .iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect();
        let candidates: Vec<Candidate> = local
            .iter()
            .filter_map(|a| Candidate::host(*a, "udp").ok())
            .collect();
        let mut peer = Peer::new(
            self.now,
            participant,
            role,
            &candidates,
            self.bandwidth_estimation,
            false,
        );
        peer.link = Some(LinkEnd { port, local });
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.peers.push(None);
                PeerKey((self.peers.len() - 1) as u32)
            }
        };
        self.peers[key.0 as usize] = Some(Box::new(peer));
        self.link_peers.insert(port, key);
        info!(%participant, port, "link connection opened");
        self.mark_dirty(key);
        Ok(key)
    }

    /// A link peer went (`remove_peer`): its socket closes.
    pub(super) fn forget_link_peer(&mut self, end: &LinkEnd) {
        self.link_peers.remove(&end.port);
        self.link_ports.close(end.port);
    }

    /// A datagram that arrived on the link socket bound to `port`.
    pub(crate) fn handle_link_datagram(
        &mut self,
        now: Instant,
        port: u16,
        source: SocketAddr,
        datagram: &[u8],
    ) {
        self.enter(now);
        let now = self.now;
        self.counters.link_bytes_in += datagram.len() as u64;
        let Some(&key) = self.link_peers.get(&port) else {
            self.counters.datagrams_unroutable += 1;
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            self.counters.datagrams_rejected += 1;
            return;
        };
        let destination = match self.peer(key).and_then(|p| p.link.as_ref()) {
            Some(end) => local_candidate_for(&end.local, None, source),
            None => return,
        };
        let receive = Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        };
        self.receive(now, key, receive);
    }

    /// The I/O loop sent link datagrams.
    pub(crate) fn note_link_sent(&mut self, bytes: u64, failed: u64) {
        self.counters.link_bytes_out += bytes;
        self.counters.send_errors += failed;
    }

    /// Installs the I/O loop's link sockets (the shard starts with [`NoLinkPorts`]).
    pub(crate) fn set_link_ports(&mut self, ports: Box<dyn LinkPorts>) {
        self.link_ports = ports;
    }
}

/// Link sockets by port; the shard opens and closes them through [`LinkSockets`] (its
/// [`LinkPorts`]), the I/O loop reads and writes them.
#[derive(Default)]
struct Table {
    sockets: Vec<(u16, UdpSocket)>,
}

/// The I/O loop's link sockets. One media thread uses them; the shard's handle and the loop's
/// share the table without a lock (`Rc`), and only the shard's commands change it.
#[derive(Clone)]
pub(super) struct LinkSockets {
    table: Rc<RefCell<Table>>,
    bind: IpAddr,
    /// Where the next receive poll starts, so one busy link cannot starve the other.
    next: Rc<Cell<usize>>,
}

impl LinkSockets {
    pub fn new(bind: IpAddr) -> LinkSockets {
        LinkSockets {
            table: Rc::default(),
            bind,
            next: Rc::default(),
        }
    }

    /// The next datagram on any link socket: (port, source, length).
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<(u16, std::io::Result<(usize, SocketAddr)>)> {
        let table = self.table.borrow();
        let count = table.sockets.len();
        let start = self.next.get();
        for i in 0..count {
            let index = (start + i) % count;
            let (port, socket) = &table.sockets[index];
            let mut read = ReadBuf::new(buf);
            if let Poll::Ready(result) = socket.poll_recv_from(cx, &mut read) {
                self.next.set(index + 1);
                let n = read.filled().len();
                return Poll::Ready((*port, result.map(|source| (n, source))));
            }
        }
        Poll::Pending
    }

    /// Sends one datagram out of the socket on `port`; whether the kernel took it.
    pub fn send(&self, port: u16, destination: SocketAddr, datagram: &[u8]) -> bool {
        let table = self.table.borrow();
        table
            .sockets
            .iter()
            .find(|(p, _)| *p == port)
            .is_some_and(|(_, s)| s.try_send_to(datagram, destination).is_ok())
    }
}

impl LinkPorts for LinkSockets {
    fn open(&mut self) -> std::io::Result<u16> {
        let mut table = self.table.borrow_mut();
        if table.sockets.len() >= MAX_LINK_SOCKETS {
            return Err(std::io::Error::other("too many link sockets"));
        }
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.bind, 0))?;
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let socket = UdpSocket::from_std(socket)?;
        table.sockets.push((port, socket));
        Ok(port)
    }

    fn close(&mut self, port: u16) {
        let mut table = self.table.borrow_mut();
        let before = table.sockets.len();
        table.sockets.retain(|(p, _)| *p != port);
        if table.sockets.len() == before {
            warn!(port, "closing a link socket that is not open");
        }
    }
}

/// Which peer a link socket's datagrams go to.
pub(super) type LinkPeers = HashMap<u16, PeerKey>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Audience, TrackOwner, TrackSource};

    fn spec(owner: Option<TrackOwner>) -> TrackSpec {
        TrackSpec {
            mid: "0".into(),
            source: TrackSource::Camera,
            audience: Audience::Everyone,
            owner,
        }
    }

    #[test]
    fn a_named_owner_owns_the_track_and_gives_its_class() {
        let link = ParticipantId(9);
        let teacher = TrackOwner {
            participant: ParticipantId(100),
            teacher: true,
        };
        assert_eq!(
            owner_of(&spec(Some(teacher)), link, false),
            (ParticipantId(100), true)
        );
        let pupil = TrackOwner {
            participant: ParticipantId(101),
            teacher: false,
        };
        // The link joined as a teacher would not make a pupil's camera a teacher's.
        assert_eq!(
            owner_of(&spec(Some(pupil)), link, true),
            (ParticipantId(101), false)
        );
        assert_eq!(owner_of(&spec(None), link, true), (link, true));
    }

    #[test]
    fn a_link_is_never_offered_what_its_own_connection_imported() {
        let link = ParticipantId(9);
        let pupil = ParticipantId(3);
        let far = ParticipantId(101);
        let other_link = ParticipantId(12);
        // A track the link imported, owned by someone on the far side.
        assert!(!offered_to(link, far, link, true));
        assert!(offered_to(link, far, pupil, false));
        // A local pupil's track goes to the link (and so across).
        assert!(offered_to(pupil, pupil, link, true));
        // Another link's import stays on this server: no third school, no cycle.
        assert!(!offered_to(other_link, far, link, true));
        assert!(offered_to(other_link, far, pupil, false));
    }

    #[test]
    fn link_sockets_are_bounded_and_closed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut sockets = LinkSockets::new(IpAddr::from([127, 0, 0, 1]));
        let ports: Vec<u16> = (0..MAX_LINK_SOCKETS)
            .map(|_| sockets.open().unwrap())
            .collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), MAX_LINK_SOCKETS);
        assert!(sockets.open().is_err());
        sockets.close(ports[0]);
        assert_eq!(sockets.table.borrow().sockets.len(), MAX_LINK_SOCKETS - 1);
        assert!(sockets.open().is_ok());
    }
}
