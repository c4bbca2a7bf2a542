//! Media counters. The shard counts in plain integers on its own thread and publishes a snapshot
//! into [`MediaMetrics`] once a second, so the packet path touches no shared memory.

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
#[derive(Debug, Default)]
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
    /// The media thread's sign of life (`/healthz`).
    pub heartbeat: Heartbeat,
}

impl MediaMetrics {
    pub(crate) fn publish(&self, c: &MediaCounters) {
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
        for (a, v) in pairs {
            a.store(v, Ordering::Relaxed);
        }
        self.layer_switches
            .store(c.layer_switches, Ordering::Relaxed);
        self.paused_tracks.store(c.paused_tracks, Ordering::Relaxed);
        for (a, v) in self.rtp_dropped.iter().zip(c.rtp_dropped) {
            a.store(v, Ordering::Relaxed);
        }
        for (a, v) in self.estimate_buckets.iter().zip(c.estimate_buckets) {
            a.store(v, Ordering::Relaxed);
        }
        self.estimate_count
            .store(c.estimate_count, Ordering::Relaxed);
        self.estimate_sum.store(c.estimate_sum, Ordering::Relaxed);
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
        for (a, v) in tcp {
            a.store(v, Ordering::Relaxed);
        }
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
            self.heartbeat.age().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_rendered_per_reason() {
        let mut c = MediaCounters::default();
        c.count_drop(DropReason::Withheld);
        c.count_drop(DropReason::TemporalAboveTarget);
        c.count_drop(DropReason::TemporalAboveTarget);
        let m = MediaMetrics::default();
        m.publish(&c);
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
