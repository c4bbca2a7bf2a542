//! The numbers of a run: a summary table for people and JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::run::{Outcome, RunConfig, Sample, Snapshot};
use crate::stats::latency_histogram;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `values`.
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    Percentiles {
        count: values.len(),
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        samples: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub pid: Option<u32>,
    /// CPU seconds over the whole run and over the steady window.
    pub cpu_s_total: Option<f64>,
    pub cpu_s_steady: Option<f64>,
    /// Average cores busy in the steady window.
    pub cores_steady: Option<f64>,
    pub rss_peak_mb: Option<f64>,
    /// Steady-window CPU per RTP packet received by all pupils.
    pub us_per_rx_packet: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub reason: String,
    pub count: usize,
    pub participants: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub config: RunConfig,
    pub ramp_s: f64,
    pub steady_s: f64,
    pub pupils_planned: usize,
    pub pupils_joined: usize,
    pub pupils_with_video: usize,
    pub pupils_with_audio: usize,
    /// Join: WebSocket connect → `joined`, → first video packet, → first audio packet (ms).
    pub join_reply_ms: Percentiles,
    pub join_first_video_ms: Percentiles,
    pub join_first_audio_ms: Percentiles,
    /// Per pupil, video and audio payload bits over its receive time (kbit/s).
    pub pupil_kbps: Percentiles,
    /// Share of received video packets by simulcast layer: q, h, f (%).
    pub layer_packets_pct: [f64; 3],
    pub layer_bytes: [u64; 3],
    /// Video packets from single-layer cameras (publishing pupils).
    pub single_layer_packets: u64,
    pub video_loss_pct: f64,
    pub audio_loss_pct: f64,
    pub video_jitter_ms: Percentiles,
    pub audio_jitter_ms: Percentiles,
    /// Send timestamp in the payload → receive time at the pupil.
    pub video_latency: Latency,
    pub audio_latency: Latency,
    pub dropped_by_cap: u64,
    /// Audio packets their sender numbered (payload tag) that never reached a pupil, summed over
    /// pupils and streams: the loss counted from the sender's own numbering, independent of how
    /// the SFU rewrites sequence numbers (a cross-check of `audio_loss_pct`).
    pub audio_tag_gaps: u64,
    /// Datagrams the clients could not send (socket buffer full).
    pub client_send_errors: u64,
    pub rx_packets_total: u64,
    pub rx_packets_steady: u64,
    pub rx_pps_steady: f64,
    pub rx_mbps_steady: f64,
    /// The server's own count of forwarded packets in the steady window (`/metrics`).
    pub server_forwarded_steady: Option<f64>,
    pub server_us_per_forwarded_packet: Option<f64>,
    pub server: Resource,
    pub generator: Resource,
    pub teacher_sent_packets: u64,
    pub teacher_keyframes_sent: u64,
    pub teacher_keyframe_requests: u64,
    pub failures: Vec<Failure>,
    pub failed_participants: usize,
    pub samples: Vec<Sample>,
}

impl Summary {
    /// Whether the run is a pass: no failures, media at every pupil.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

fn teacher_send_errors(outcome: &Outcome) -> u64 {
    outcome.teacher.media.as_ref().map_or(0, |m| m.send_errors)
}

fn cpu_between(
    a: &Snapshot,
    b: &Snapshot,
    f: fn(&Snapshot) -> Option<crate::proc::ProcSample>,
) -> Option<f64> {
    Some(f(b)?.cpu.as_secs_f64() - f(a)?.cpu.as_secs_f64())
}

/// A reason without the identity-specific parts, so failures group.
fn normalise(reason: &str) -> String {
    reason.chars().take(160).collect()
}

pub fn summarise(cfg: &RunConfig, outcome: &Outcome) -> Summary {
    let pupils = &outcome.pupils;
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fail = |who: &str, reason: String| {
        failures
            .entry(normalise(&reason))
            .or_default()
            .push(who.to_owned());
    };
    for f in &outcome.teacher.failures {
        fail(&outcome.teacher.identity, format!("teacher: {f}"));
    }
    if let Some(m) = &outcome.teacher.media {
        for e in m.errors.iter().take(5) {
            fail(&outcome.teacher.identity, format!("teacher media: {e}"));
        }
    }

    let mut join_reply = Vec::new();
    let mut first_video = Vec::new();
    let mut first_audio = Vec::new();
    let mut kbps = Vec::new();
    let mut layer_packets = [0u64; 4];
    let mut layer_bytes = [0u64; 4];
    let (mut v_exp, mut v_lost, mut a_exp, mut a_lost) = (0u64, 0u64, 0u64, 0u64);
    let mut v_jitter = Vec::new();
    let mut a_jitter = Vec::new();
    let mut v_lat = latency_histogram();
    let mut a_lat = latency_histogram();
    let mut dropped_by_cap = 0;
    let mut audio_tag_gaps = 0;
    let mut send_errors = teacher_send_errors(outcome);
    let (mut joined, mut with_video, mut with_audio) = (0, 0, 0);
    let mut failed_participants = 0;

    for p in pupils {
        for f in &p.failures {
            fail(&p.identity, f.clone());
        }
        if let Some(d) = p.join_reply {
            joined += 1;
            join_reply.push(d.as_secs_f64() * 1000.0);
        }
        let Some(m) = &p.media else {
            if p.failures.is_empty() {
                fail(&p.identity, "no media task".into());
            }
            failed_participants += 1;
            continue;
        };
        for e in m.errors.iter().take(5) {
            fail(&p.identity, e.clone());
        }
        let s = &m.stats;
        let mut missing = false;
        match s.first_video {
            Some(d) => {
                with_video += 1;
                first_video.push(d.as_secs_f64() * 1000.0);
            }
            None if !cfg.audio_only => {
                missing = true;
                fail(&p.identity, "no video received".into());
            }
            None => {}
        }
        match s.first_audio {
            Some(d) => {
                with_audio += 1;
                first_audio.push(d.as_secs_f64() * 1000.0);
            }
            None => {
                missing = true;
                fail(&p.identity, "no audio received".into());
            }
        }
        if missing || !p.failures.is_empty() || !m.errors.is_empty() {
            failed_participants += 1;
        }
        let first = s.streams.iter().filter_map(|x| x.first_at).min();
        let last = s.streams.iter().filter_map(|x| x.last_at).max();
        if let (Some(a), Some(b)) = (first, last) {
            let secs = b.saturating_sub(a).as_secs_f64();
            if secs > 0.5 {
                let bytes: u64 = s.streams.iter().map(|x| x.bytes).sum();
                kbps.push(bytes as f64 * 8.0 / secs / 1000.0);
            }
        }
        for i in 0..4 {
            layer_packets[i] += s.layer_packets[i];
            layer_bytes[i] += s.layer_bytes[i];
        }
        audio_tag_gaps += s
            .streams
            .iter()
            .filter(|x| !x.video)
            .map(|x| x.tag_gaps)
            .sum::<u64>();
        send_errors += m.send_errors;
        for st in &s.streams {
            if st.video {
                v_exp += st.expected();
                v_lost += st.lost();
                v_jitter.push(st.jitter_ms());
            } else {
                a_exp += st.expected();
                a_lost += st.lost();
                a_jitter.push(st.jitter_ms());
            }
        }
        let _ = v_lat.add(&s.video_latency);
        let _ = a_lat.add(&s.audio_latency);
        dropped_by_cap += s.dropped_by_cap;
    }

    let total_layer: u64 = layer_packets[..3].iter().sum();
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            n as f64 * 100.0 / d as f64
        }
    };
    let (a, b) = (&outcome.steady_start, &outcome.steady_end);
    let steady_s =
        b.at.saturating_duration_since(a.at)
            .as_secs_f64()
            .max(0.001);
    let rx_steady = b.rx_packets.saturating_sub(a.rx_packets);
    let server_cpu_steady = cpu_between(a, b, |s| s.server);
    let gen_cpu_steady = cpu_between(a, b, |s| s.generator);
    let per_packet = |cpu: Option<f64>| {
        cpu.filter(|_| rx_steady > 0)
            .map(|c| c * 1e6 / rx_steady as f64)
    };
    let forwarded = match (a.forwarded, b.forwarded) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let peak = |f: fn(&Sample) -> Option<f64>| {
        outcome
            .samples
            .iter()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let teacher_media = outcome.teacher.media.as_ref();
    let failures: Vec<Failure> = failures
        .into_iter()
        .map(|(reason, mut participants)| {
            participants.sort();
            participants.dedup();
            Failure {
                reason,
                count: participants.len(),
                participants,
            }
        })
        .collect();

    Summary {
        config: cfg.clone(),
        ramp_s: outcome.ramp.as_secs_f64(),
        steady_s,
        pupils_planned: cfg.pupils,
        pupils_joined: joined,
        pupils_with_video: with_video,
        pupils_with_audio: with_audio,
        join_reply_ms: percentiles(join_reply),
        join_first_video_ms: percentiles(first_video),
        join_first_audio_ms: percentiles(first_audio),
        pupil_kbps: percentiles(kbps),
        layer_packets_pct: [
            pct(layer_packets[0], total_layer),
            pct(layer_packets[1], total_layer),
            pct(layer_packets[2], total_layer),
        ],
        layer_bytes: [layer_bytes[0], layer_bytes[1], layer_bytes[2]],
        single_layer_packets: layer_packets[3],
        video_loss_pct: pct(v_lost, v_exp),
        audio_loss_pct: pct(a_lost, a_exp),
        video_jitter_ms: percentiles(v_jitter),
        audio_jitter_ms: percentiles(a_jitter),
        video_latency: latency(&v_lat),
        audio_latency: latency(&a_lat),
        dropped_by_cap,
        audio_tag_gaps,
        client_send_errors: send_errors,
        rx_packets_total: b.rx_packets,
        rx_packets_steady: rx_steady,
        rx_pps_steady: rx_steady as f64 / steady_s,
        rx_mbps_steady: b.rx_bytes.saturating_sub(a.rx_bytes) as f64 * 8.0 / steady_s / 1e6,
        server_forwarded_steady: forwarded,
        server_us_per_forwarded_packet: match (server_cpu_steady, forwarded) {
            (Some(c), Some(f)) if f > 0.0 => Some(c * 1e6 / f),
            _ => None,
        },
        server: Resource {
            pid: cfg.server_pid,
            cpu_s_total: cpu_between(&outcome.start, b, |s| s.server),
            cpu_s_steady: server_cpu_steady,
            cores_steady: server_cpu_steady.map(|c| c / steady_s),
            rss_peak_mb: peak(|s| s.server_rss_mb),
            us_per_rx_packet: per_packet(server_cpu_steady),
        },
        generator: Resource {
            pid: Some(std::process::id()),
            cpu_s_total: cpu_between(&outcome.start, b, |s| s.generator),
            cpu_s_steady: gen_cpu_steady,
            cores_steady: gen_cpu_steady.map(|c| c / steady_s),
            rss_peak_mb: peak(|s| s.generator_rss_mb),
            us_per_rx_packet: per_packet(gen_cpu_steady),
        },
        teacher_sent_packets: teacher_media.map_or(0, |m| m.sent_packets),
        teacher_keyframes_sent: teacher_media.map_or(0, |m| m.keyframes_sent),
        teacher_keyframe_requests: teacher_media.map_or(0, |m| m.keyframe_requests),
        failed_participants,
        failures,
        samples: outcome.samples.clone(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn pcts(p: &Percentiles) -> String {
    format!(
        "p50 {:.0}  p95 {:.0}  p99 {:.0}  max {:.0}  (n={})",
        p.p50, p.p95, p.p99, p.max, p.count
    )
}

/// The summary table printed on stdout.
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let c = &s.config;
    let _ = writeln!(
        o,
        "lesson: 1 teacher (simulcast q/h/f @ {} fps{}), {} pupils at {:.1}/s, {} publishing, max layer {:?}, cap {}",
        c.fps,
        if c.audio_only { ", audio only" } else { "" },
        c.pupils,
        c.join_rate,
        c.publishers,
        c.max_layer,
        c.cap_kbps
            .map_or("none".to_owned(), |k| format!("{k} kbit/s"))
    );
    let _ = writeln!(o, "ramp {:.1} s, steady {:.1} s", s.ramp_s, s.steady_s);
    let rows: Vec<(&str, String)> = vec![
        (
            "pupils joined / video / audio",
            format!(
                "{} / {} / {} of {}",
                s.pupils_joined, s.pupils_with_video, s.pupils_with_audio, s.pupils_planned
            ),
        ),
        ("join → joined (ms)", pcts(&s.join_reply_ms)),
        ("join → first video (ms)", pcts(&s.join_first_video_ms)),
        ("join → first audio (ms)", pcts(&s.join_first_audio_ms)),
        ("received per pupil (kbit/s)", pcts(&s.pupil_kbps)),
        (
            "video layers q/h/f (% packets)",
            format!(
                "{:.1} / {:.1} / {:.1}",
                s.layer_packets_pct[0], s.layer_packets_pct[1], s.layer_packets_pct[2]
            ),
        ),
        (
            "loss video / audio (%)",
            format!("{:.3} / {:.3}", s.video_loss_pct, s.audio_loss_pct),
        ),
        (
            "jitter video p50/p95 (ms)",
            format!(
                "{:.2} / {:.2}",
                s.video_jitter_ms.p50, s.video_jitter_ms.p95
            ),
        ),
        (
            "jitter audio p50/p95 (ms)",
            format!(
                "{:.2} / {:.2}",
                s.audio_jitter_ms.p50, s.audio_jitter_ms.p95
            ),
        ),
        (
            "latency video p50/p90/p99/max (ms)",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                s.video_latency.p50_ms,
                s.video_latency.p90_ms,
                s.video_latency.p99_ms,
                s.video_latency.max_ms
            ),
        ),
        (
            "latency audio p50/p90/p99/max (ms)",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                s.audio_latency.p50_ms,
                s.audio_latency.p90_ms,
                s.audio_latency.p99_ms,
                s.audio_latency.max_ms
            ),
        ),
        (
            "steady rx (pkt/s, Mbit/s)",
            format!("{:.0}, {:.1}", s.rx_pps_steady, s.rx_mbps_steady),
        ),
        ("dropped by pupil cap (pkts)", s.dropped_by_cap.to_string()),
        (
            "audio lost end to end (tag gaps, pkts)",
            s.audio_tag_gaps.to_string(),
        ),
        (
            "server CPU steady (cores, µs/rx pkt)",
            format!(
                "{}, {}",
                opt(s.server.cores_steady, 2),
                opt(s.server.us_per_rx_packet, 2)
            ),
        ),
        (
            "server µs/forwarded pkt (/metrics)",
            opt(s.server_us_per_forwarded_packet, 2),
        ),
        (
            "server CPU total (s), RSS peak (MiB)",
            format!(
                "{}, {}",
                opt(s.server.cpu_s_total, 2),
                opt(s.server.rss_peak_mb, 1)
            ),
        ),
        (
            "generator CPU steady (cores, µs/rx pkt)",
            format!(
                "{}, {}",
                opt(s.generator.cores_steady, 2),
                opt(s.generator.us_per_rx_packet, 2)
            ),
        ),
        (
            "generator CPU total (s), RSS peak (MiB)",
            format!(
                "{}, {}",
                opt(s.generator.cpu_s_total, 2),
                opt(s.generator.rss_peak_mb, 1)
            ),
        ),
        (
            "teacher sent pkts / keyframes / requests",
            format!(
                "{} / {} / {}",
                s.teacher_sent_packets, s.teacher_keyframes_sent, s.teacher_keyframe_requests
            ),
        ),
        (
            "failures",
            format!(
                "{} participants, {} reasons",
                s.failed_participants,
                s.failures.len()
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<42} {v}");
    }
    for f in s.failures.iter().take(20) {
        let _ = writeln!(o, "  ! {} × {}", f.count, f.reason);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(percentiles(vec![]).count, 0);
    }
}
