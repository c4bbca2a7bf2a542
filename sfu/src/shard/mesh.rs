//! Between shards: the queues one media thread uses to reach another.
//!
//! Each shard has one [`Inbox`]. Two kinds of traffic reach it:
//!
//! - per packet, over bounded lock-free queues (`crossbeam_queue::ArrayQueue`, slots allocated
//!   once): RTP a publisher on another shard sent ([`Forwarded`]: the packet behind an `Arc`, so
//!   it crosses once per shard whatever the number of subscribers there), and datagrams the
//!   kernel's `SO_REUSEPORT` hash gave to the wrong shard ([`HandOff`]: copied into the slot, no
//!   allocation). A full queue drops the packet and counts it, as a full socket buffer would:
//!   the media thread never blocks on another.
//! - rarely, over an unbounded channel ([`Control`]): which shards host a room, which peers and
//!   addresses another shard owns, tracks published elsewhere, keyframe requests, layer demand.
//!   These are as rare as signaling and must not be lost.
//!
//! A producer wakes the owner of the inbox at most once per drain: the `pending` flag is set by
//! the first push after a drain, and only that push notifies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, Rid};
use str0m::rtp::RtpPacket;
use tokio::sync::{Notify, mpsc};

use super::Arrival;
use super::peer::PeerKey;
use crate::command::{Audience, PublishedTrack};
use crate::core::allocator::TrackClass;
use crate::core::demux::Route;
use crate::core::dynacast::Viewer;
use crate::core::forward::SenderClock;
use crate::ids::{RoomId, TrackId};

/// RTP packets from other shards waiting in one shard's inbox: about 0.1 s of a class's worth of
/// publishers at full rate, far more than one pass of the receiving loop takes.
const FORWARD_QUEUE: usize = 4096;
/// Datagrams handed over from other shards: a burst of several frames' worth.
const HANDOFF_QUEUE: usize = 1024;
/// Packets for ICE-TCP connections from the shards without the listener, waiting for the one
/// with it (the TCP fallback carries few participants).
const TCP_QUEUE: usize = 1024;
/// Longest datagram handed over (the receive buffer's size: longer is not WebRTC).
pub(crate) const HANDOFF_MAX: usize = 2048;

/// A publisher's packet, for the subscribers of another shard: what the owner learned of it
/// (track, layer, codec, the sender clock of its layer) travels with it, so the receiving shard
/// forwards it through its own down tracks exactly as a local one.
pub(crate) struct Forwarded {
    pub track: TrackId,
    pub spatial: u8,
    pub codec: Codec,
    pub clock: Option<SenderClock>,
    pub packet: Arc<RtpPacket>,
}

/// A datagram received by the wrong shard, for the shard that owns its peer.
pub(crate) struct HandOff {
    pub arrival: Arrival,
    len: u16,
    bytes: [u8; HANDOFF_MAX],
}

impl HandOff {
    pub fn datagram(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The shard-level facts other shards need; never per packet.
#[derive(Debug)]
pub(crate) enum Control {
    /// From the router: the shards hosting `room` now (sorted). A shard not in the list no
    /// longer hosts it and forgets the room's tracks published elsewhere.
    Hosts {
        room: RoomId,
        shards: Vec<u8>,
    },
    /// A peer of shard `shard` answers to `ufrag` (STUN for it goes there).
    PeerAdded {
        shard: u8,
        key: PeerKey,
        ufrag: String,
    },
    /// That peer restarted ICE: new ufrag.
    PeerRenamed {
        shard: u8,
        key: PeerKey,
        old: String,
        new: String,
    },
    /// That peer is gone, with its addresses.
    PeerGone {
        shard: u8,
        key: PeerKey,
        ufrag: String,
    },
    /// That peer answered a STUN check from `route`: its packets go there (authenticated by its
    /// `Rtc`, so a spoofed request cannot steer another client's traffic).
    Bound {
        shard: u8,
        key: PeerKey,
        route: Route,
    },
    /// A track published on shard `owner`, mirrored by every other shard hosting its room.
    TrackAdded {
        owner: u8,
        room: RoomId,
        info: PublishedTrack,
        rids: Vec<Rid>,
        class: TrackClass,
        audience: Audience,
    },
    TrackRemoved {
        track: TrackId,
    },
    /// The owner changed the track's audience.
    Audience {
        track: TrackId,
        audience: Audience,
    },
    /// A subscriber on another shard needs a keyframe of one layer.
    Keyframe {
        track: TrackId,
        spatial: u8,
        kind: KeyframeRequestKind,
    },
    /// Dynacast: what the subscribers of shard `from` want of the track (every allocation
    /// round), for the owner to ask its publisher for the union.
    Demand {
        from: u8,
        track: TrackId,
        viewers: Vec<Viewer>,
    },
}

/// One shard's receiving side, shared with every other shard.
pub(crate) struct Inbox {
    forwarded: ArrayQueue<Forwarded>,
    handoffs: ArrayQueue<HandOff>,
    /// (connection's remote address, packet) for shard 0's ICE-TCP connections.
    tcp_out: ArrayQueue<(std::net::SocketAddr, Vec<u8>)>,
    control: mpsc::UnboundedSender<Control>,
    pending: AtomicBool,
    wake: Notify,
}

impl Inbox {
    /// An inbox and the receiving end of its control channel.
    pub fn new() -> (Arc<Inbox>, mpsc::UnboundedReceiver<Control>) {
        let (control, receiver) = mpsc::unbounded_channel();
        let inbox = Inbox {
            forwarded: ArrayQueue::new(FORWARD_QUEUE),
            handoffs: ArrayQueue::new(HANDOFF_QUEUE),
            tcp_out: ArrayQueue::new(TCP_QUEUE),
            control,
            pending: AtomicBool::new(false),
            wake: Notify::new(),
        };
        (Arc::new(inbox), receiver)
    }

    fn woken(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Resolves when something was pushed since the last [`Inbox::clear`].
    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// The owner is about to drain: pushes from now on wake it again.
    pub fn clear(&self) {
        self.pending.store(false, Ordering::Release);
    }

    pub fn pop_forwarded(&self) -> Option<Forwarded> {
        self.forwarded.pop()
    }

    pub fn pop_handoff(&self) -> Option<HandOff> {
        self.handoffs.pop()
    }

    pub fn pop_tcp(&self) -> Option<(std::net::SocketAddr, Vec<u8>)> {
        self.tcp_out.pop()
    }

    /// The owner left items behind (a bounded drain): come back to them on the next pass.
    pub fn rewake(&self) {
        self.woken();
    }

    pub fn send_control(&self, message: Control) {
        // The receiver lives as long as the shard; after it, nobody needs to know.
        let _ = self.control.send(message);
    }
}

/// A shard's view of all inboxes: its own and the others'.
#[derive(Clone)]
pub(crate) struct Link {
    pub index: u8,
    inboxes: Arc<[Arc<Inbox>]>,
}

impl Link {
    pub fn new(index: u8, inboxes: Arc<[Arc<Inbox>]>) -> Link {
        Link { index, inboxes }
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.inboxes.len()
    }

    pub fn own(&self) -> &Arc<Inbox> {
        &self.inboxes[usize::from(self.index)]
    }

    /// Queues a packet for shard `to`; false when its queue is full (the packet is dropped).
    pub fn forward(&self, to: u8, packet: Forwarded) -> bool {
        let Some(inbox) = self.inboxes.get(usize::from(to)) else {
            return false;
        };
        let pushed = inbox.forwarded.push(packet).is_ok();
        inbox.woken();
        pushed
    }

    /// Copies a datagram into shard `to`'s hand-off queue; false when full or too long.
    pub fn hand_off(&self, to: u8, arrival: Arrival, datagram: &[u8]) -> bool {
        let Some(inbox) = self.inboxes.get(usize::from(to)) else {
            return false;
        };
        if datagram.len() > HANDOFF_MAX || inbox.handoffs.is_full() {
            return false;
        }
        let mut slot = HandOff {
            arrival,
            len: datagram.len() as u16,
            bytes: [0; HANDOFF_MAX],
        };
        slot.bytes[..datagram.len()].copy_from_slice(datagram);
        let pushed = inbox.handoffs.push(slot).is_ok();
        inbox.woken();
        pushed
    }

    /// Queues a packet for an ICE-TCP connection of shard `to` (the frame is moved, not copied);
    /// false when full.
    pub fn tcp(&self, to: u8, remote: std::net::SocketAddr, packet: Vec<u8>) -> bool {
        let Some(inbox) = self.inboxes.get(usize::from(to)) else {
            return false;
        };
        let pushed = inbox.tcp_out.push((remote, packet)).is_ok();
        inbox.woken();
        pushed
    }

    pub fn control(&self, to: u8, message: Control) {
        if let Some(inbox) = self.inboxes.get(usize::from(to)) {
            inbox.send_control(message);
        }
    }

    /// Sends a message to every other shard.
    pub fn broadcast(&self, message: impl Fn() -> Control) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != usize::from(self.index) {
                inbox.send_control(message());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn link(index: u8, shards: usize) -> Link {
        let inboxes: Vec<Arc<Inbox>> = (0..shards).map(|_| Inbox::new().0).collect();
        Link::new(index, inboxes.into())
    }

    fn from() -> Arrival {
        Arrival::udp(SocketAddr::from(([192, 0, 2, 1], 4000)))
    }

    #[test]
    fn a_hand_off_is_copied_whole_and_the_queue_is_bounded() {
        let a = link(0, 2);
        let b = Link::new(1, a.inboxes.clone());
        assert!(a.hand_off(1, from(), b"\x16\xfe\xfd dtls"));
        let got = b.own().pop_handoff().expect("queued");
        assert_eq!(got.datagram(), b"\x16\xfe\xfd dtls");
        assert_eq!(got.arrival.source, from().source);
        // Longer than any WebRTC datagram: refused, not truncated.
        assert!(!a.hand_off(1, from(), &[0; HANDOFF_MAX + 1]));
        for _ in 0..HANDOFF_QUEUE {
            assert!(a.hand_off(1, from(), b"x"));
        }
        assert!(!a.hand_off(1, from(), b"x"), "a full queue drops");
        // No such shard.
        assert!(!a.hand_off(7, from(), b"x"));
    }

    #[tokio::test]
    async fn one_wake_up_per_drain() {
        let a = link(0, 2);
        let b = Link::new(1, a.inboxes.clone());
        a.hand_off(1, from(), b"1");
        a.hand_off(1, from(), b"2");
        // The first push notified; the waiter is woken at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), b.own().notified())
            .await
            .expect("woken");
        // The second push found the flag set: no second permit.
        let again = tokio::time::timeout(std::time::Duration::ZERO, b.own().notified()).await;
        assert!(again.is_err(), "woken twice for one drain");
        b.own().clear();
        while b.own().pop_handoff().is_some() {}
        a.hand_off(1, from(), b"3");
        tokio::time::timeout(std::time::Duration::from_secs(1), b.own().notified())
            .await
            .expect("woken after the drain");
    }

    #[test]
    fn broadcast_reaches_every_other_shard() {
        let (inboxes, mut receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| Inbox::new()).unzip();
        let l = Link::new(1, inboxes.into());
        l.broadcast(|| Control::TrackRemoved { track: TrackId(5) });
        assert!(receivers[0].try_recv().is_ok());
        assert!(receivers[1].try_recv().is_err(), "not to itself");
        assert!(receivers[2].try_recv().is_ok());
    }
}
