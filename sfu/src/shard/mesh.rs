//! Between shards: the queues one media thread uses to reach another.
//!
//! Each shard has one [`Inbox`]. Two kinds of traffic reach it:
//!
//! - per packet, over bounded lock-free queues (`crossbeam_queue::ArrayQueue`, slots allocated
//!   once): RTP a publisher on another shard sent ([`Forwarded`]: the packet behind an `Arc`, so
//!   it crosses once per shard whatever the number of subscribers there), and datagrams the
//!   kernel's `SO_REUSEPORT` hash gave to the wrong shard ([`HandOff`]: the datagram's bytes
//!   copied once into a buffer from the receiving inbox's preallocated pool, whose pointer is
//!   queued; no allocation, no zero-fill). A full queue drops the packet and counts it, as a full
//!   socket buffer would: the media thread never blocks on another.
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

/// A datagram received by the wrong shard, for the shard that owns its peer: its bytes in one of
/// the receiving inbox's preallocated buffers, which go back to that inbox's free list when the
/// hand-off is dropped. Only the buffer's pointer moves through the queue.
pub(crate) struct HandOff {
    pub arrival: Arrival,
    len: u16,
    buffer: Option<Box<[u8]>>,
}

impl HandOff {
    pub fn datagram(&self) -> &[u8] {
        self.buffer
            .as_deref()
            .and_then(|b| b.get(..usize::from(self.len)))
            .unwrap_or_default()
    }
}

/// A hand-off taken from an inbox; its buffer returns to the inbox's free list on drop.
pub(crate) struct Received<'a> {
    handoff: HandOff,
    free: &'a ArrayQueue<Box<[u8]>>,
}

impl std::ops::Deref for Received<'_> {
    type Target = HandOff;
    fn deref(&self) -> &HandOff {
        &self.handoff
    }
}

impl Drop for Received<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.handoff.buffer.take() {
            // As many buffers as places in the free list: there is always room.
            let _ = self.free.push(buffer);
        }
    }
}

/// Why a datagram was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOffRefused {
    /// The owner's queue (its free buffers) is full: the owner is behind.
    QueueFull,
    /// Longer than a buffer: not a WebRTC datagram.
    Oversize,
    /// No such shard.
    NoShard,
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
        /// The participant whose connection publishes it (`info.participant` names the owner).
        by: crate::ids::ParticipantId,
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
    /// Dynacast: what the subscribers of shard `from` want of the track (sent when it changed;
    /// the owner keeps the last word), for the owner to ask its publisher for the union.
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
    /// The buffers of hand-offs not queued now, [`HANDOFF_QUEUE`] of them, allocated once: a
    /// producer takes one, copies the datagram's bytes in (nothing else: no zero-fill), and
    /// queues it; the owner puts it back once it has handled the datagram.
    free: ArrayQueue<Box<[u8]>>,
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
        let free = ArrayQueue::new(HANDOFF_QUEUE);
        for _ in 0..HANDOFF_QUEUE {
            let _ = free.push(vec![0u8; HANDOFF_MAX].into_boxed_slice());
        }
        let inbox = Inbox {
            forwarded: ArrayQueue::new(FORWARD_QUEUE),
            handoffs: ArrayQueue::new(HANDOFF_QUEUE),
            free,
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

    /// The oldest hand-off; its buffer is reused once the result is dropped.
    pub fn pop_handoff(&self) -> Option<Received<'_>> {
        let handoff = self.handoffs.pop()?;
        Some(Received {
            handoff,
            free: &self.free,
        })
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

    /// Copies a datagram into one of shard `to`'s free hand-off buffers (its bytes only) and
    /// queues it.
    pub fn hand_off(
        &self,
        to: u8,
        arrival: Arrival,
        datagram: &[u8],
    ) -> Result<(), HandOffRefused> {
        let inbox = self
            .inboxes
            .get(usize::from(to))
            .ok_or(HandOffRefused::NoShard)?;
        let len = u16::try_from(datagram.len())
            .ok()
            .filter(|l| usize::from(*l) <= HANDOFF_MAX)
            .ok_or(HandOffRefused::Oversize)?;
        let mut buffer = inbox.free.pop().ok_or(HandOffRefused::QueueFull)?;
        buffer
            .get_mut(..datagram.len())
            .ok_or(HandOffRefused::Oversize)?
            .copy_from_slice(datagram);
        let handoff = HandOff {
            arrival,
            len,
            buffer: Some(buffer),
        };
        // A buffer taken means a place in the queue: both hold `HANDOFF_QUEUE`.
        if let Err(mut refused) = inbox.handoffs.push(handoff) {
            if let Some(buffer) = refused.buffer.take() {
                let _ = inbox.free.push(buffer);
            }
            return Err(HandOffRefused::QueueFull);
        }
        inbox.woken();
        Ok(())
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
        assert_eq!(a.hand_off(1, from(), b"\x16\xfe\xfd dtls"), Ok(()));
        let got = b.own().pop_handoff().expect("queued");
        assert_eq!(got.datagram(), b"\x16\xfe\xfd dtls");
        assert_eq!(got.arrival.source, from().source);
        drop(got);
        // Longer than any WebRTC datagram: refused for its size, not truncated, and not taken
        // for a full queue.
        assert_eq!(
            a.hand_off(1, from(), &[0; HANDOFF_MAX + 1]),
            Err(HandOffRefused::Oversize)
        );
        assert_eq!(a.hand_off(1, from(), &[7; HANDOFF_MAX]), Ok(()));
        assert_eq!(
            b.own().pop_handoff().expect("queued").datagram(),
            &[7; HANDOFF_MAX][..]
        );
        for _ in 0..HANDOFF_QUEUE {
            assert_eq!(a.hand_off(1, from(), b"x"), Ok(()));
        }
        assert_eq!(
            a.hand_off(1, from(), b"x"),
            Err(HandOffRefused::QueueFull),
            "a full queue drops"
        );
        assert_eq!(a.hand_off(7, from(), b"x"), Err(HandOffRefused::NoShard));
    }

    #[test]
    fn buffers_are_reused_and_only_the_datagram_is_seen() {
        let a = link(0, 2);
        let b = Link::new(1, a.inboxes.clone());
        let mut buffers = std::collections::HashSet::new();
        for round in 0..3 * HANDOFF_QUEUE {
            // A long datagram, then a short one into whatever buffer comes: only its own bytes
            // are seen, never the previous occupant's.
            let datagram: &[u8] = if round % 2 == 0 {
                &[0xaa; 1200]
            } else {
                b"short"
            };
            assert_eq!(a.hand_off(1, from(), datagram), Ok(()));
            let got = b.own().pop_handoff().expect("queued");
            assert_eq!(got.datagram(), datagram);
            buffers.insert(got.datagram().as_ptr() as usize);
        }
        // Every hand-off used one of the buffers allocated with the inbox: none per packet.
        assert!(buffers.len() <= HANDOFF_QUEUE, "{} buffers", buffers.len());
        // Dropped hand-offs gave their buffers back: the whole queue is usable again.
        for _ in 0..HANDOFF_QUEUE {
            assert_eq!(a.hand_off(1, from(), b"x"), Ok(()));
        }
    }

    #[tokio::test]
    async fn one_wake_up_per_drain() {
        let a = link(0, 2);
        let b = Link::new(1, a.inboxes.clone());
        let wait = || tokio::time::timeout(std::time::Duration::ZERO, b.own().notified());
        assert!(wait().await.is_err(), "woken with nothing pushed");
        a.hand_off(1, from(), b"1").expect("queued");
        // The first push notified: the waiter is woken at once, and that takes the permit.
        assert!(wait().await.is_ok(), "not woken by the first push");
        // Until the owner drains, further pushes do not notify (a second notification would
        // leave a permit behind, and this wait would end at once).
        a.hand_off(1, from(), b"2").expect("queued");
        assert!(wait().await.is_err(), "woken twice for one drain");
        b.own().clear();
        while b.own().pop_handoff().is_some() {}
        // After the drain the next push wakes the owner again: no lost wake-up.
        a.hand_off(1, from(), b"3").expect("queued");
        assert!(wait().await.is_ok(), "not woken after the drain");
    }

    /// CPU per hand-off (copy in, queue, take out), for BENCHMARKS.md: `cargo test --release -p
    /// classroom-sfu --lib hand_off_cost -- --ignored --nocapture`. Thread CPU time, not wall
    /// time: the machine's cores are shared.
    #[test]
    #[ignore]
    fn hand_off_cost() {
        fn thread_cpu() -> std::time::Duration {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid clock id and a pointer to a timespec this frame owns.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        }
        let a = link(0, 2);
        let b = Link::new(1, a.inboxes.clone());
        for size in [100usize, 1200] {
            let datagram = vec![0x80u8; size];
            let rounds = 2_000_000u32;
            let mut sum = 0u64;
            let start = thread_cpu();
            for _ in 0..rounds {
                assert!(
                    a.hand_off(1, from(), std::hint::black_box(&datagram))
                        .is_ok()
                );
                let got = b.own().pop_handoff().expect("queued");
                sum += u64::from(std::hint::black_box(got.datagram())[size - 1]);
            }
            let spent = thread_cpu() - start;
            println!(
                "hand-off of {size} bytes: {:.1} ns CPU each ({sum})",
                spent.as_nanos() as f64 / f64::from(rounds)
            );
        }
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
