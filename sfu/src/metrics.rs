//! Media counters. Each shard counts in plain integers on its own thread and publishes once a
//! second what changed since its last publication into [`MediaMetrics`] (totals over the shards)
//! and its own [`ShardMetrics`], so the packet path touches no shared memory.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::downtrack::DropReason;
use crate::heartbeat::Heartbeat;

/// How many drop reasons are counted (`classroom_media_rtp_dropped_total{reason}`).
const DROP_REASONS: usize = DropReason::ALL.len();

/// Counters owned by one shard, bumped per packet.
#[derive(Debug, Default, Clone)]
pub struct MediaCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rtp_forwarded: u64,
    /// RTP packets not handed to a subscriber because the track's audience excludes it.
    pub rtp_withheld: u64,
    /// RTP packets not handed to a subscriber, per [`DropReason::index`].
    pub rtp_dropped: [u64; DROP_REASONS],
    pub nacks_received: u64,
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    pub datagrams_unroutable: u64,
    pub datagrams_rejected: u64,
    pub send_errors: u64,
    /// Of `packets_out`, those sent as segments of a UDP GSO send.
    pub datagrams_segmented: u64,
    pub peers: u64,
    pub layer_switches: u64,
    /// Video subscriptions paused for lack of bandwidth, now.
    pub paused_tracks: u64,
    /// Subscribers' bandwidth estimates, sampled at every allocation: counts per bucket of
    /// [`ESTIMATE_BUCKETS`] (made cumulative when rendered), plus their count and sum.
    pub estimate_buckets: [u64; ESTIMATE_BUCKETS.len()],
    pub estimate_count: u64,
    pub estimate_sum: u64,
    /// ICE-TCP connections open now, and the TCP side's counters.
    pub tcp_connections: u64,
    pub(crate) tcp: crate::shard::TcpCounters,
    /// Datagrams the kernel gave this shard for another shard's peer, handed over / received.
    pub hand_offs_out: u64,
    pub hand_offs_in: u64,
    /// Publishers' packets sent to / received from other shards (once per shard, not per
    /// subscriber).
    pub cross_forwarded_out: u64,
    pub cross_forwarded_in: u64,
    /// Packets dropped because another shard's queue was full.
    pub mesh_queue_full: u64,
    /// Datagrams not handed over because they were longer than a hand-off buffer.
    pub mesh_oversize: u64,
    /// Keyframe requests from subscribers on other shards, for a publisher here.
    pub keyframe_requests_across: u64,
    /// Connections of lesson links this server dialled (each on a socket of its own), now, and
    /// the bytes received and sent on their sockets.
    pub link_peers: u64,
    pub link_bytes_in: u64,
    pub link_bytes_out: u64,
}

/// Upper bounds (bits per second) of the estimate histogram: from a weak home uplink to wired.
pub const ESTIMATE_BUCKETS: [u64; 7] = [
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    4_000_000,
    10_000_000,
    u64::MAX,
];

impl MediaCounters {
    /// One packet not handed to one subscriber, for `reason`.
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        if let Some(n) = self.rtp_dropped.get_mut(reason.index()) {
            *n += 1;
        }
        if reason == DropReason::Withheld {
            self.rtp_withheld += 1;
        }
    }

    pub(crate) fn observe_estimate(&mut self, bps: u64) {
        if let Some(i) = ESTIMATE_BUCKETS.iter().position(|b| bps <= *b) {
            self.estimate_buckets[i] += 1;
        }
        self.estimate_count += 1;
        self.estimate_sum += bps;
    }
}

/// The last published snapshot, readable from any thread (for `/metrics`).
#[derive(Debug)]
pub struct MediaMetrics {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub rtp_forwarded: AtomicU64,
    pub rtp_withheld: AtomicU64,
    pub rtp_dropped: [AtomicU64; DROP_REASONS],
    pub nacks_received: AtomicU64,
    pub keyframe_requests_received: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub datagrams_unroutable: AtomicU64,
    pub datagrams_rejected: AtomicU64,
    pub send_errors: AtomicU64,
    pub datagrams_segmented: AtomicU64,
    pub peers: AtomicU64,
    pub layer_switches: AtomicU64,
    pub paused_tracks: AtomicU64,
    pub estimate_buckets: [AtomicU64; ESTIMATE_BUCKETS.len()],
    pub estimate_count: AtomicU64,
    pub estimate_sum: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_accepted: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub tcp_frames_in: AtomicU64,
    pub tcp_frames_out: AtomicU64,
    pub tcp_dropped_out: AtomicU64,
    pub tcp_bad_frames: AtomicU64,
    pub tcp_unbound_closed: AtomicU64,
    pub link_peers: AtomicU64,
    pub link_bytes_in: AtomicU64,
    pub link_bytes_out: AtomicU64,
    /// Per shard (media thread), in shard order.
    pub shards: Box<[ShardMetrics]>,
}

/// What is counted per media thread.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// The thread's sign of life (`/healthz`).
    pub heartbeat: Heartbeat,
    pub packets_in: AtomicU64,
    pub peers: AtomicU64,
    pub hand_offs_out: AtomicU64,
    pub hand_offs_in: AtomicU64,
    pub cross_forwarded_out: AtomicU64,
    pub cross_forwarded_in: AtomicU64,
    pub mesh_queue_full: AtomicU64,
    pub mesh_oversize: AtomicU64,
    pub keyframe_requests_across: AtomicU64,
}

impl Default for MediaMetrics {
    fn default() -> Self {
        MediaMetrics::new(1)
    }
}

/// Adds what changed since the last publication. Wrapping: a gauge that went down adds the
/// two's complement of its fall, and the sum over the shards stays right.
fn add(total: &AtomicU64, now: u64, before: u64) {
    total.fetch_add(now.wrapping_sub(before), Ordering::Relaxed);
}

impl MediaMetrics {
    /// Counters for `shards` media threads (at least one).
    pub fn new(shards: usize) -> MediaMetrics {
        let zero = || AtomicU64::new(0);
        MediaMetrics {
            packets_in: zero(),
            bytes_in: zero(),
            packets_out: zero(),
            bytes_out: zero(),
            rtp_forwarded: zero(),
            rtp_withheld: zero(),
            rtp_dropped: std::array::from_fn(|_| zero()),
            nacks_received: zero(),
            keyframe_requests_received: zero(),
            keyframe_requests_sent: zero(),
            datagrams_unroutable: zero(),
            datagrams_rejected: zero(),
            send_errors: zero(),
            datagrams_segmented: zero(),
            peers: zero(),
            layer_switches: zero(),
            paused_tracks: zero(),
            estimate_buckets: std::array::from_fn(|_| zero()),
            estimate_count: zero(),
            estimate_sum: zero(),
            tcp_connections: zero(),
            tcp_accepted: zero(),
            tcp_refused: zero(),
            tcp_frames_in: zero(),
            tcp_frames_out: zero(),
            tcp_dropped_out: zero(),
            tcp_bad_frames: zero(),
            tcp_unbound_closed: zero(),
            link_peers: zero(),
            link_bytes_in: zero(),
            link_bytes_out: zero(),
            shards: (0..shards.max(1))
                .map(|_| ShardMetrics::default())
                .collect(),
        }
    }

    /// The media thread that beat longest ago: one stuck thread freezes the lessons on it.
    pub fn heartbeat(&self) -> &Heartbeat {
        self.shards
            .iter()
            .map(|s| &s.heartbeat)
            .max_by_key(|h| h.age())
            .unwrap_or(&self.shards[0].heartbeat)
    }

    /// Shard `index`'s own counters (the last shard's for an index out of range).
    pub(crate) fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index.min(self.shards.len() - 1)]
    }

    /// Publishes shard `index`'s counters `c`; `before` is what it published last time.
    pub(crate) fn publish(&self, index: usize, c: &MediaCounters, before: &MediaCounters) {
        let own = self.shard(index);
        let mine: [(&AtomicU64, u64); 9] = [
            (&own.packets_in, c.packets_in),
            (&own.peers, c.peers),
            (&own.hand_offs_out, c.hand_offs_out),
            (&own.hand_offs_in, c.hand_offs_in),
            (&own.cross_forwarded_out, c.cross_forwarded_out),
            (&own.cross_forwarded_in, c.cross_forwarded_in),
            (&own.mesh_queue_full, c.mesh_queue_full),
            (&own.mesh_oversize, c.mesh_oversize),
            (&own.keyframe_requests_across, c.keyframe_requests_across),
        ];
        for (a, v) in mine {
            a.store(v, Ordering::Relaxed);
        }
        let pairs: [(&AtomicU64, u64); 14] = [
            (&self.packets_in, c.packets_in),
            (&self.bytes_in, c.bytes_in),
            (&self.packets_out, c.packets_out),
            (&self.bytes_out, c.bytes_out),
            (&self.rtp_forwarded, c.rtp_forwarded),
            (&self.rtp_withheld, c.rtp_withheld),
            (&self.nacks_received, c.nacks_received),
            (
                &self.keyframe_requests_received,
                c.keyframe_requests_received,
            ),
            (&self.keyframe_requests_sent, c.keyframe_requests_sent),
            (&self.datagrams_unroutable, c.datagrams_unroutable),
            (&self.datagrams_rejected, c.datagrams_rejected),
            (&self.send_errors, c.send_errors),
            (&self.datagrams_segmented, c.datagrams_segmented),
            (&self.peers, c.peers),
        ];
        let previous: [u64; 14] = [
            before.packets_in,
            before.bytes_in,
            before.packets_out,
            before.bytes_out,
            before.rtp_forwarded,
            before.rtp_withheld,
            before.nacks_received,
            before.keyframe_requests_received,
            before.keyframe_requests_sent,
            before.datagrams_unroutable,
            before.datagrams_rejected,
            before.send_errors,
            before.datagrams_segmented,
            before.peers,
        ];
        for ((a, v), b) in pairs.into_iter().zip(previous) {
            add(a, v, b);
        }
        add(
            &self.layer_switches,
            c.layer_switches,
            before.layer_switches,
        );
        add(&self.paused_tracks, c.paused_tracks, before.paused_tracks);
        for ((a, v), b) in self
            .rtp_dropped
            .iter()
            .zip(c.rtp_dropped)
            .zip(before.rtp_dropped)
        {
            add(a, v, b);
        }
        for ((a, v), b) in self
            .estimate_buckets
            .iter()
            .zip(c.estimate_buckets)
            .zip(before.estimate_buckets)
        {
            add(a, v, b);
        }
        add(
            &self.estimate_count,
            c.estimate_count,
            before.estimate_count,
        );
        add(&self.estimate_sum, c.estimate_sum, before.estimate_sum);
        let tcp: [(&AtomicU64, u64); 8] = [
            (&self.tcp_connections, c.tcp_connections),
            (&self.tcp_accepted, c.tcp.accepted),
            (&self.tcp_refused, c.tcp.refused),
            (&self.tcp_frames_in, c.tcp.frames_in),
            (&self.tcp_frames_out, c.tcp.frames_out),
            (&self.tcp_dropped_out, c.tcp.dropped_out),
            (&self.tcp_bad_frames, c.tcp.bad_frames),
            (&self.tcp_unbound_closed, c.tcp.unbound_closed),
        ];
        let tcp_before: [u64; 8] = [
            before.tcp_connections,
            before.tcp.accepted,
            before.tcp.refused,
            before.tcp.frames_in,
            before.tcp.frames_out,
            before.tcp.dropped_out,
            before.tcp.bad_frames,
            before.tcp.unbound_closed,
        ];
        for ((a, v), b) in tcp.into_iter().zip(tcp_before) {
            add(a, v, b);
        }
        add(&self.link_peers, c.link_peers, before.link_peers);
        add(&self.link_bytes_in, c.link_bytes_in, before.link_bytes_in);
        add(
            &self.link_bytes_out,
            c.link_bytes_out,
            before.link_bytes_out,
        );
    }

    /// Renders the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let rows: [(&str, &str, &str, &AtomicU64); 14] = [
            (
                "classroom_media_packets_received_total",
                "counter",
                "UDP datagrams received on the media port",
                &self.packets_in,
            ),
            (
                "classroom_media_bytes_received_total",
                "counter",
                "Bytes received on the media port",
                &self.bytes_in,
            ),
            (
                "classroom_media_packets_sent_total",
                "counter",
                "UDP datagrams sent from the media port",
                &self.packets_out,
            ),
            (
                "classroom_media_bytes_sent_total",
                "counter",
                "Bytes sent from the media port",
                &self.bytes_out,
            ),
            (
                "classroom_media_rtp_forwarded_total",
                "counter",
                "RTP packets handed to subscribers",
                &self.rtp_forwarded,
            ),
            (
                "classroom_media_rtp_withheld_total",
                "counter",
                "RTP packets not handed to a subscriber because the track's audience (the lesson's rules) excludes it",
                &self.rtp_withheld,
            ),
            (
                "classroom_media_nacks_received_total",
                "counter",
                "NACKs received from subscribers",
                &self.nacks_received,
            ),
            (
                "classroom_media_keyframe_requests_received_total",
                "counter",
                "PLI/FIR received from subscribers",
                &self.keyframe_requests_received,
            ),
            (
                "classroom_media_keyframe_requests_sent_total",
                "counter",
                "PLI/FIR sent to publishers after throttling",
                &self.keyframe_requests_sent,
            ),
            (
                "classroom_media_datagrams_unroutable_total",
                "counter",
                "Datagrams from unknown sources, dropped",
                &self.datagrams_unroutable,
            ),
            (
                "classroom_media_datagrams_rejected_total",
                "counter",
                "Datagrams a peer connection refused",
                &self.datagrams_rejected,
            ),
            (
                "classroom_media_send_errors_total",
                "counter",
                "Datagrams the socket would not send",
                &self.send_errors,
            ),
            (
                "classroom_media_datagrams_segmented_total",
                "counter",
                "Datagrams sent as segments of a UDP GSO send (runs to one destination)",
                &self.datagrams_segmented,
            ),
            (
                "classroom_media_peer_connections",
                "gauge",
                "Open peer connections",
                &self.peers,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let tcp_rows: [(&str, &str, &str, &AtomicU64); 8] = [
            (
                "classroom_media_tcp_connections",
                "gauge",
                "ICE-TCP connections open",
                &self.tcp_connections,
            ),
            (
                "classroom_media_tcp_accepted_total",
                "counter",
                "ICE-TCP connections accepted",
                &self.tcp_accepted,
            ),
            (
                "classroom_media_tcp_refused_total",
                "counter",
                "ICE-TCP connections refused at the limit (in all or per IP address)",
                &self.tcp_refused,
            ),
            (
                "classroom_media_tcp_frames_received_total",
                "counter",
                "RFC 4571 frames received on ICE-TCP connections",
                &self.tcp_frames_in,
            ),
            (
                "classroom_media_tcp_frames_sent_total",
                "counter",
                "RFC 4571 frames queued to ICE-TCP connections",
                &self.tcp_frames_out,
            ),
            (
                "classroom_media_tcp_frames_dropped_total",
                "counter",
                "Packets for ICE-TCP connections dropped: queue full or connection gone",
                &self.tcp_dropped_out,
            ),
            (
                "classroom_media_tcp_bad_streams_total",
                "counter",
                "ICE-TCP connections closed for a frame out of step (too long, empty)",
                &self.tcp_bad_frames,
            ),
            (
                "classroom_media_tcp_unbound_closed_total",
                "counter",
                "ICE-TCP connections closed for not being bound to a peer in time",
                &self.tcp_unbound_closed,
            ),
        ];
        for (name, kind, help, v) in tcp_rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP classroom_media_link_peers Connections of lesson links this server dialled, each on a UDP socket of its own\n\
             # TYPE classroom_media_link_peers gauge\n\
             classroom_media_link_peers {}\n\
             # HELP classroom_media_link_bytes_total Bytes on the sockets of dialled lesson links\n\
             # TYPE classroom_media_link_bytes_total counter\n\
             classroom_media_link_bytes_total{{direction=\"received\"}} {}\n\
             classroom_media_link_bytes_total{{direction=\"sent\"}} {}",
            load(&self.link_peers),
            load(&self.link_bytes_in),
            load(&self.link_bytes_out)
        );
        let _ = writeln!(
            out,
            "# HELP classroom_media_rtp_dropped_total RTP packets not handed to a subscriber, by reason\n\
             # TYPE classroom_media_rtp_dropped_total counter"
        );
        for (reason, n) in DropReason::ALL.iter().zip(&self.rtp_dropped) {
            let _ = writeln!(
                out,
                "classroom_media_rtp_dropped_total{{reason=\"{}\"}} {}",
                reason.label(),
                load(n)
            );
        }
        let _ = writeln!(
            out,
            "# HELP classroom_media_layer_switches_total Changes of the spatial layer (or pause) a subscriber receives\n\
             # TYPE classroom_media_layer_switches_total counter\n\
             classroom_media_layer_switches_total {}\n\
             # HELP classroom_media_paused_video_tracks Video subscriptions paused for lack of bandwidth\n\
             # TYPE classroom_media_paused_video_tracks gauge\n\
             classroom_media_paused_video_tracks {}\n\
             # HELP classroom_media_subscriber_estimate_bps Subscribers' bandwidth estimates, sampled every allocation\n\
             # TYPE classroom_media_subscriber_estimate_bps histogram",
            load(&self.layer_switches),
            load(&self.paused_tracks)
        );
        let mut cumulative = 0;
        for (bound, n) in ESTIMATE_BUCKETS.iter().zip(&self.estimate_buckets) {
            cumulative += load(n);
            let le = if *bound == u64::MAX {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            let _ = writeln!(
                out,
                "classroom_media_subscriber_estimate_bps_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "classroom_media_subscriber_estimate_bps_sum {}\nclassroom_media_subscriber_estimate_bps_count {}",
            load(&self.estimate_sum),
            load(&self.estimate_count)
        );
        let _ = writeln!(
            out,
            "# HELP classroom_media_heartbeat_age_seconds Time since the media thread last showed it is running (/healthz fails above {})\n\
             # TYPE classroom_media_heartbeat_age_seconds gauge\n\
             classroom_media_heartbeat_age_seconds {:.3}",
            crate::heartbeat::STALL_AFTER.as_secs(),
            self.heartbeat().age().as_secs_f64()
        );
        self.render_shards(out);
    }

    /// The per-shard rows: how the load spreads and what crossing between shards costs.
    fn render_shards(&self, out: &mut String) {
        use std::fmt::Write;
        type Row = (
            &'static str,
            &'static str,
            &'static str,
            fn(&ShardMetrics) -> u64,
        );
        let rows: [Row; 7] = [
            (
                "classroom_media_shard_packets_received_total",
                "counter",
                "UDP datagrams received by each media shard's socket",
                |s| s.packets_in.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_peer_connections",
                "gauge",
                "Peer connections owned by each media shard",
                |s| s.peers.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_hand_offs_total",
                "counter",
                "Datagrams a shard received for another shard's peer and handed over",
                |s| s.hand_offs_out.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_hand_offs_received_total",
                "counter",
                "Datagrams handed over to a shard by another",
                |s| s.hand_offs_in.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_cross_forwarded_total",
                "counter",
                "Publishers' RTP packets a shard sent to another shard hosting the room (once per shard)",
                |s| s.cross_forwarded_out.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_cross_forwarded_received_total",
                "counter",
                "RTP packets of tracks published on another shard, received for local subscribers",
                |s| s.cross_forwarded_in.load(Ordering::Relaxed),
            ),
            (
                "classroom_media_shard_keyframe_requests_across_total",
                "counter",
                "Keyframe requests from subscribers on other shards for a publisher on this one",
                |s| s.keyframe_requests_across.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}
# TYPE {name} {kind}"
            );
            for (i, shard) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(shard));
            }
        }
        let _ = writeln!(
            out,
            "# HELP classroom_media_shard_mesh_dropped_total Packets a shard could not pass to another, by reason (queue_full: the other's queue was full; oversize: a datagram longer than a hand-off buffer)\n\
             # TYPE classroom_media_shard_mesh_dropped_total counter"
        );
        for (i, shard) in self.shards.iter().enumerate() {
            for (reason, n) in [
                ("queue_full", &shard.mesh_queue_full),
                ("oversize", &shard.mesh_oversize),
            ] {
                let _ = writeln!(
                    out,
                    "classroom_media_shard_mesh_dropped_total{{shard=\"{i}\",reason=\"{reason}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP classroom_media_shard_heartbeat_age_seconds Time since each media shard last showed it is running\n\
             # TYPE classroom_media_shard_heartbeat_age_seconds gauge"
        );
        for (i, shard) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "classroom_media_shard_heartbeat_age_seconds{{shard=\"{i}\"}} {:.3}",
                shard.heartbeat.age().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_drops_are_rendered_per_shard_and_reason() {
        let c = MediaCounters {
            mesh_queue_full: 3,
            mesh_oversize: 2,
            ..Default::default()
        };
        let m = MediaMetrics::new(2);
        m.publish(1, &c, &MediaCounters::default());
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "# TYPE classroom_media_shard_mesh_dropped_total counter",
            "classroom_media_shard_mesh_dropped_total{shard=\"0\",reason=\"queue_full\"} 0",
            "classroom_media_shard_mesh_dropped_total{shard=\"1\",reason=\"queue_full\"} 3",
            "classroom_media_shard_mesh_dropped_total{shard=\"1\",reason=\"oversize\"} 2",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
    }

    #[test]
    fn drops_are_rendered_per_reason() {
        let mut c = MediaCounters::default();
        c.count_drop(DropReason::Withheld);
        c.count_drop(DropReason::TemporalAboveTarget);
        c.count_drop(DropReason::TemporalAboveTarget);
        let m = MediaMetrics::default();
        m.publish(0, &c, &MediaCounters::default());
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "# TYPE classroom_media_rtp_dropped_total counter",
            "classroom_media_rtp_dropped_total{reason=\"withheld\"} 1",
            "classroom_media_rtp_dropped_total{reason=\"temporal_above_target\"} 2",
            "classroom_media_rtp_dropped_total{reason=\"paused\"} 0",
            "classroom_media_rtp_withheld_total 1",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
    }
}
