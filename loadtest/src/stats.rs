//! What one pupil measured: per received stream loss and jitter, layers, latency, join time.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock;
use crate::tag::{StreamKind, Tag};

/// Latency histogram in microseconds, 1 µs to 60 s, 2 significant digits (1 % resolution).
///
/// Every pupil keeps two of these, and a soak with churn keeps every departed pupil's: at 3
/// digits one histogram is ≈ 140 KiB, at 2 digits ≈ 19 KiB, which keeps the generator's own
/// memory (and cache footprint) small beside the server's. 1 % is finer than the report prints.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|_| {
        // The bounds above are valid; an auto-resizing histogram is the fallback anyway.
        Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant digits are valid"))
    })
}

/// One incoming RTP stream (one SSRC).
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    pub ssrc: u32,
    pub video: bool,
    pub packets: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub max_seq: u64,
    /// RFC 3550 interarrival jitter, in RTP clock units.
    #[serde(skip)]
    jitter: f64,
    #[serde(skip)]
    last: Option<(f64, u32)>,
    pub first_at: Option<Duration>,
    pub last_at: Option<Duration>,
    /// The sender's tag counter: packets it numbered that never arrived here. For audio this is
    /// loss anywhere on the path (the SFU forwards every audio packet); for video it also counts
    /// what the SFU dropped on purpose (other layers, skipped temporal layers).
    #[serde(skip)]
    tag_last: Option<u32>,
    pub tag_gaps: u64,
}

impl StreamStats {
    fn new(ssrc: u32, video: bool) -> StreamStats {
        StreamStats {
            ssrc,
            video,
            packets: 0,
            bytes: 0,
            first_seq: 0,
            max_seq: 0,
            jitter: 0.0,
            last: None,
            first_at: None,
            last_at: None,
            tag_last: None,
            tag_gaps: 0,
        }
    }

    fn clock_rate(&self) -> f64 {
        if self.video { 90_000.0 } else { 48_000.0 }
    }

    /// Packets the sender numbered between the first and the highest seen.
    pub fn expected(&self) -> u64 {
        if self.packets == 0 {
            0
        } else {
            self.max_seq - self.first_seq + 1
        }
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / self.clock_rate() * 1000.0
    }

    fn record(&mut self, seq: u64, rtp_time: u32, arrival: Instant, len: usize) {
        if self.packets == 0 {
            self.first_seq = seq;
            self.max_seq = seq;
        } else {
            self.first_seq = self.first_seq.min(seq);
            self.max_seq = self.max_seq.max(seq);
        }
        self.packets += 1;
        self.bytes += len as u64;
        let since = arrival.saturating_duration_since(clock::epoch());
        self.first_at.get_or_insert(since);
        self.last_at = Some(since);
        // RFC 3550 §6.4.1 / A.8: D = (Rj - Ri) - (Sj - Si), J += (|D| - J) / 16.
        let arrival_ticks = since.as_secs_f64() * self.clock_rate();
        if let Some((last_arrival, last_rtp)) = self.last {
            let sent = f64::from(rtp_time.wrapping_sub(last_rtp) as i32);
            let d = (arrival_ticks - last_arrival) - sent;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last = Some((arrival_ticks, rtp_time));
    }
}

/// Everything one receiving participant saw.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    /// When the participant started connecting its WebSocket.
    pub join_started: Instant,
    pub first_video: Option<Duration>,
    pub first_audio: Option<Duration>,
    pub streams: Vec<StreamStats>,
    /// Video packets and bytes per simulcast layer (q, h, f) and of single-layer cameras, from
    /// the payload tags.
    pub layer_packets: [u64; 4],
    pub layer_bytes: [u64; 4],
    pub video_latency: Histogram<u64>,
    pub audio_latency: Histogram<u64>,
    /// RTP packets dropped by the pupil's own bandwidth cap before str0m saw them.
    pub dropped_by_cap: u64,
    /// RTP packets without a tag (not from this generator).
    pub untagged: u64,
}

impl ReceiverStats {
    pub fn new(join_started: Instant) -> ReceiverStats {
        ReceiverStats {
            join_started,
            first_video: None,
            first_audio: None,
            streams: Vec::new(),
            layer_packets: [0; 4],
            layer_bytes: [0; 4],
            video_latency: latency_histogram(),
            audio_latency: latency_histogram(),
            dropped_by_cap: 0,
            untagged: 0,
        }
    }

    /// Records one received RTP packet.
    pub fn record(&mut self, ssrc: u32, seq: u64, rtp_time: u32, arrival: Instant, payload: &[u8]) {
        let tag = Tag::read(payload);
        let video = match tag.map(|t| t.stream) {
            Some(StreamKind::Video(layer)) => {
                let i = usize::from(layer).min(3);
                self.layer_packets[i] += 1;
                self.layer_bytes[i] += payload.len() as u64;
                true
            }
            Some(StreamKind::Audio) => false,
            None => {
                self.untagged += 1;
                // Without a tag, guess by size: audio packets are small.
                payload.len() > 300
            }
        };
        let since_join = arrival.saturating_duration_since(self.join_started);
        if video {
            self.first_video.get_or_insert(since_join);
        } else {
            self.first_audio.get_or_insert(since_join);
        }
        if let Some(tag) = tag {
            let latency_us = clock::nanos(arrival).saturating_sub(tag.sent_nanos) / 1000;
            let h = if video {
                &mut self.video_latency
            } else {
                &mut self.audio_latency
            };
            // Out of range values are clamped rather than lost.
            h.saturating_record(latency_us.max(1));
        }
        let stream = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => &mut self.streams[i],
            None => {
                self.streams.push(StreamStats::new(ssrc, video));
                let last = self.streams.len() - 1;
                &mut self.streams[last]
            }
        };
        stream.record(seq, rtp_time, arrival, payload.len());
        if let Some(tag) = tag {
            if let Some(last) = stream.tag_last {
                let step = tag.counter.wrapping_sub(last);
                // Far jumps are a new sender behind the same stream (a reconnect), not loss.
                if step > 1 && step < 1000 {
                    stream.tag_gaps += u64::from(step - 1);
                }
            }
            stream.tag_last = Some(tag.counter);
        }
    }

    pub fn packets(&self) -> u64 {
        self.streams.iter().map(|s| s.packets).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::TAG_LEN;

    fn payload(stream: StreamKind, sent: Instant, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len - TAG_LEN];
        let mut t = [0u8; TAG_LEN];
        Tag {
            stream,
            keyframe: false,
            counter: 0,
            sent_nanos: clock::nanos(sent),
        }
        .write(&mut t);
        p.extend_from_slice(&t);
        p
    }

    #[test]
    fn loss_layers_latency_and_jitter() {
        let t0 = clock::epoch() + Duration::from_millis(10);
        let mut s = ReceiverStats::new(t0);
        for (i, seq) in [10u64, 11, 13, 14].into_iter().enumerate() {
            let sent = t0 + Duration::from_millis(33 * i as u64);
            let arrival = sent + Duration::from_millis(2);
            let p = payload(StreamKind::Video(1), sent, 1000);
            s.record(7, seq, 3000 * i as u32, arrival, &p);
        }
        let audio = payload(StreamKind::Audio, t0, 100);
        s.record(8, 5, 0, t0 + Duration::from_millis(1), &audio);
        assert_eq!(s.streams.len(), 2);
        let v = &s.streams[0];
        assert_eq!((v.expected(), v.lost()), (5, 1));
        assert!(v.jitter_ms() < 1.0, "{}", v.jitter_ms());
        assert_eq!(s.layer_packets, [0, 4, 0, 0]);
        assert_eq!(s.first_video, Some(Duration::from_millis(2)));
        assert_eq!(s.first_audio, Some(Duration::from_millis(1)));
        let p50 = s.video_latency.value_at_quantile(0.5);
        assert!((1900..=2100).contains(&p50), "{p50}");
    }
}

/// Live totals for the progress bar and the steady-state window, shared by all clients.
#[derive(Debug, Default)]
pub struct Counters {
    pub joined: std::sync::atomic::AtomicU64,
    /// Pupils that received their first video (or audio, when no video is expected) packet.
    pub with_media: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub rx_packets: std::sync::atomic::AtomicU64,
    pub rx_bytes: std::sync::atomic::AtomicU64,
    /// Pupils (not the teacher) that got `joined`, and those that have left since (graceful or
    /// abrupt, churned or at the end): live pupils are the difference.
    pub pupil_joins: std::sync::atomic::AtomicU64,
    pub pupil_leaves: std::sync::atomic::AtomicU64,
}
