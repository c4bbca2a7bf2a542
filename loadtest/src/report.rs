//! The numbers of a run: a summary table for people and JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::media::ClientKind;
use crate::run::{Leftover, Outcome, RunConfig, Sample, Snapshot};
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
    /// Mean RSS over the per-second samples of the steady window (memory per subscriber uses
    /// this: after every pupil has its media, before anyone leaves).
    pub rss_steady_mb: Option<f64>,
    /// Steady-window CPU per RTP packet received by all pupils.
    pub us_per_rx_packet: Option<f64>,
    /// Average cores busy in the join window (first pupil's join → end of the settle), the
    /// figure for a join storm.
    pub cores_join: Option<f64>,
    /// The busiest thread in the steady and the join window: near 1.0 core it is the limit,
    /// whatever the process as a whole uses.
    pub busiest_thread_steady: Option<BusyThread>,
    pub busiest_thread_join: Option<BusyThread>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BusyThread {
    pub name: String,
    pub cores: f64,
}

/// The thread that used the most CPU between two readings.
fn busiest(
    a: &[crate::proc::ThreadSample],
    b: &[crate::proc::ThreadSample],
    secs: f64,
) -> Option<BusyThread> {
    b.iter()
        .map(|t| {
            let before = a
                .iter()
                .find(|x| x.tid == t.tid)
                .map_or(0.0, |x| x.cpu.as_secs_f64());
            BusyThread {
                name: t.name.clone(),
                cores: (t.cpu.as_secs_f64() - before) / secs,
            }
        })
        .max_by(|x, y| x.cores.total_cmp(&y.cores))
}

/// Server memory over the steady window: does it grow?
#[derive(Debug, Clone, Serialize)]
pub struct RssTrend {
    /// Median RSS of the samples within ±5 s of one minute into the steady window, and of the
    /// last 10 s of it.
    pub at_1min_mb: Option<f64>,
    pub at_end_mb: Option<f64>,
    /// Least-squares slope of RSS against time from one minute into the steady window to its
    /// end (the first minute is left out: allocator arenas and caches fill then); the whole
    /// window when it is shorter than two minutes.
    pub slope_kib_per_min: Option<f64>,
    pub fit_from_s: f64,
    pub fit_to_s: f64,
    pub fit_samples: usize,
    /// The slope divided by the churn rate: memory kept per departed pupil, if it is a leak.
    pub kib_per_churned_pupil: Option<f64>,
}

/// Churn in the steady window.
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    pub per_sec: f64,
    /// Pupils that left during the run (told to) and fresh pupils that replaced them.
    pub churned: usize,
    pub rejoined: usize,
    /// Live pupils over the steady window's samples: least and most.
    pub live_min: u64,
    pub live_max: u64,
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
    /// The WebRTC stack of the pupils that only receive (`str0m` or `webrtc-rs`); the teacher
    /// and publishing pupils are str0m clients either way.
    pub client: ClientKind,
    pub ramp_s: f64,
    pub steady_s: f64,
    pub pupils_planned: usize,
    pub pupils_joined: usize,
    pub pupils_with_video: usize,
    pub pupils_with_audio: usize,
    /// When the steady window began and ended, in the samples' time (`t_s`).
    pub steady_start_s: f64,
    pub steady_end_s: f64,
    /// Join window: first pupil's join → end of the settle (s).
    pub join_window_s: f64,
    /// Join: start → WebSocket open (TCP connect and upgrade, the server's accept).
    pub join_ws_open_ms: Percentiles,
    /// Join: WebSocket connect → `joined`, → first video packet, → first audio packet (ms).
    pub join_reply_ms: Percentiles,
    /// Join: start → the server's first subscriber offer, → the subscribe connection's ICE and
    /// DTLS done (the steps between `joined` and the first packet).
    pub join_offer_ms: Percentiles,
    pub join_connected_ms: Percentiles,
    pub join_first_video_ms: Percentiles,
    pub join_first_audio_ms: Percentiles,
    /// The same for pupils who replaced churned ones, joining into a full, running lesson.
    pub rejoin_first_video_ms: Percentiles,
    pub rejoin_first_audio_ms: Percentiles,
    pub churn: Option<Churn>,
    pub server_rss: RssTrend,
    /// The server's gauges (`/metrics`) once everyone had left: all zero unless it leaked.
    pub server_after_leave: Option<Leftover>,
    /// How late the generator's 10 ms probe timer fired, over the whole run.
    pub generator_lag: Latency,
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
    /// Datagrams dropped because a receive buffer was full: at the clients' sockets (the
    /// generator fell behind) and at the server's media socket over the whole run (the server
    /// fell behind; only with --spawn-server).
    pub client_socket_drops: u64,
    pub server_socket_drops: Option<u64>,
    /// Packets received by the end of the run, as the run's last sample counted them (a pupil
    /// still receiving adds to its own statistics after it).
    pub rx_packets_total: u64,
    /// Packets in the pupils' own statistics at their end: the count the latency samples and
    /// layer shares come from.
    pub rx_packets_counted: u64,
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

/// Median of `values` (None when empty).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Least-squares slope of `points` (x, y); None for fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The server's RSS over the steady window `[from, to]` (seconds of the samples' clock).
pub fn rss_trend(samples: &[Sample], from: f64, to: f64, churn_per_sec: f64) -> RssTrend {
    let rss = |lo: f64, hi: f64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter(|s| s.t_s >= lo && s.t_s <= hi)
            .filter_map(|s| Some((s.t_s, s.server_rss_mb?)))
            .collect()
    };
    let values = |pts: Vec<(f64, f64)>| pts.into_iter().map(|p| p.1).collect::<Vec<_>>();
    let one_min = from + 60.0;
    let fit_from = if to - from >= 120.0 { one_min } else { from };
    let points = rss(fit_from, to);
    // MiB per second → KiB per minute.
    let per_min = slope(&points).map(|s| s * 1024.0 * 60.0);
    RssTrend {
        at_1min_mb: (to >= one_min)
            .then(|| median(values(rss(one_min - 5.0, one_min + 5.0))))
            .flatten(),
        at_end_mb: median(values(rss(to - 10.0, to))),
        slope_kib_per_min: per_min,
        fit_from_s: fit_from,
        fit_to_s: to,
        fit_samples: points.len(),
        kib_per_churned_pupil: per_min
            .filter(|_| churn_per_sec > 0.0)
            .map(|k| k / (churn_per_sec * 60.0)),
    }
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

    let mut ws_open = Vec::new();
    let mut join_reply = Vec::new();
    let mut offer = Vec::new();
    let mut connected = Vec::new();
    let mut first_video = Vec::new();
    let mut first_audio = Vec::new();
    let mut re_video = Vec::new();
    let mut re_audio = Vec::new();
    let mut kbps = Vec::new();
    let mut layer_packets = [0u64; 4];
    let mut rx_packets_counted = 0u64;
    let mut layer_bytes = [0u64; 4];
    let (mut v_exp, mut v_lost, mut a_exp, mut a_lost) = (0u64, 0u64, 0u64, 0u64);
    let mut v_jitter = Vec::new();
    let mut a_jitter = Vec::new();
    let mut v_lat = latency_histogram();
    let mut a_lat = latency_histogram();
    let mut dropped_by_cap = 0;
    let mut audio_tag_gaps = 0;
    let mut send_errors = teacher_send_errors(outcome);
    let mut socket_drops = outcome.teacher.media.as_ref().map_or(0, |m| m.socket_drops);
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
        if let Some(d) = p.ws_open {
            ws_open.push(d.as_secs_f64() * 1000.0);
        }
        if let Some(d) = p.first_offer {
            offer.push(d.as_secs_f64() * 1000.0);
        }
        if let Some(d) = p.media.as_ref().and_then(|m| m.subscribe_connected_after) {
            connected.push(d.as_secs_f64() * 1000.0);
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
                if p.rejoin {
                    re_video.push(d.as_secs_f64() * 1000.0);
                }
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
                if p.rejoin {
                    re_audio.push(d.as_secs_f64() * 1000.0);
                }
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
        rx_packets_counted += s.packets();
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
        socket_drops += m.socket_drops;
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
    let since_start = |x: &Snapshot| {
        x.at.saturating_duration_since(outcome.start.at)
            .as_secs_f64()
    };
    let (steady_start_s, steady_end_s) = (since_start(a), since_start(b));
    let steady_mean = |f: fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = outcome
            .samples
            .iter()
            .filter(|s| s.t_s >= steady_start_s && s.t_s <= steady_end_s)
            .filter_map(f)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let join_window_s =
        a.at.saturating_duration_since(outcome.ramp_start.at)
            .as_secs_f64()
            .max(0.001);
    let cores_join = |f: fn(&Snapshot) -> Option<crate::proc::ProcSample>| {
        cpu_between(&outcome.ramp_start, a, f).map(|c| c / join_window_s)
    };
    let churn = (cfg.churn_per_sec > 0.0).then(|| {
        let live: Vec<u64> = outcome
            .samples
            .iter()
            .filter(|s| s.t_s >= steady_start_s && s.t_s <= steady_end_s)
            .map(|s| s.live_pupils)
            .collect();
        Churn {
            per_sec: cfg.churn_per_sec,
            churned: pupils.iter().filter(|p| p.churned).count(),
            rejoined: pupils.iter().filter(|p| p.rejoin).count(),
            live_min: live.iter().copied().min().unwrap_or(0),
            live_max: live.iter().copied().max().unwrap_or(0),
        }
    });
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
        client: cfg.client,
        ramp_s: outcome.ramp.as_secs_f64(),
        steady_s,
        pupils_planned: cfg.pupils,
        pupils_joined: joined,
        pupils_with_video: with_video,
        pupils_with_audio: with_audio,
        steady_start_s,
        steady_end_s,
        join_window_s,
        join_ws_open_ms: percentiles(ws_open),
        join_reply_ms: percentiles(join_reply),
        join_offer_ms: percentiles(offer),
        join_connected_ms: percentiles(connected),
        join_first_video_ms: percentiles(first_video),
        join_first_audio_ms: percentiles(first_audio),
        rejoin_first_video_ms: percentiles(re_video),
        rejoin_first_audio_ms: percentiles(re_audio),
        churn,
        server_rss: rss_trend(
            &outcome.samples,
            steady_start_s,
            steady_end_s,
            cfg.churn_per_sec,
        ),
        generator_lag: latency(&outcome.generator_lag),
        server_after_leave: outcome.server_after,
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
        client_socket_drops: socket_drops,
        server_socket_drops: match (outcome.start.server_udp_drops, b.server_udp_drops) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        },
        rx_packets_total: b.rx_packets,
        rx_packets_counted,
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
            rss_steady_mb: steady_mean(|s| s.server_rss_mb),
            us_per_rx_packet: per_packet(server_cpu_steady),
            cores_join: cores_join(|s| s.server),
            busiest_thread_steady: busiest(&a.server_threads, &b.server_threads, steady_s),
            busiest_thread_join: busiest(
                &outcome.ramp_start.server_threads,
                &a.server_threads,
                join_window_s,
            ),
        },
        generator: Resource {
            pid: Some(std::process::id()),
            cpu_s_total: cpu_between(&outcome.start, b, |s| s.generator),
            cpu_s_steady: gen_cpu_steady,
            cores_steady: gen_cpu_steady.map(|c| c / steady_s),
            rss_peak_mb: peak(|s| s.generator_rss_mb),
            rss_steady_mb: steady_mean(|s| s.generator_rss_mb),
            us_per_rx_packet: per_packet(gen_cpu_steady),
            cores_join: cores_join(|s| s.generator),
            busiest_thread_steady: busiest(&a.generator_threads, &b.generator_threads, steady_s),
            busiest_thread_join: busiest(
                &outcome.ramp_start.generator_threads,
                &a.generator_threads,
                join_window_s,
            ),
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

fn busy(t: &Option<BusyThread>) -> String {
    t.as_ref()
        .map_or_else(|| "-".to_owned(), |t| format!("{} {:.2}", t.name, t.cores))
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
    let _ = writeln!(
        o,
        "receiving pupils on {}; teacher{} on str0m",
        match s.client {
            ClientKind::Str0m => "str0m (light sans-IO Rtc, RTP mode)",
            ClientKind::WebrtcRs => "webrtc-rs (webrtc 0.21 peer connections)",
        },
        if c.publishers > 0 {
            " and publishing pupils"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "ramp {:.1} s, steady {:.1} s", s.ramp_s, s.steady_s);
    let mut rows: Vec<(&str, String)> = vec![
        (
            "pupils joined / video / audio",
            format!(
                "{} / {} / {} of {}{}",
                s.pupils_joined,
                s.pupils_with_video,
                s.pupils_with_audio,
                s.pupils_planned,
                s.churn
                    .as_ref()
                    .map_or(String::new(), |c| format!(" + {} rejoins", c.rejoined))
            ),
        ),
        ("join → WebSocket open (ms)", pcts(&s.join_ws_open_ms)),
        ("join → joined (ms)", pcts(&s.join_reply_ms)),
        ("join → subscriber offer (ms)", pcts(&s.join_offer_ms)),
        ("join → ICE+DTLS connected (ms)", pcts(&s.join_connected_ms)),
        ("join → first video (ms)", pcts(&s.join_first_video_ms)),
        ("join → first audio (ms)", pcts(&s.join_first_audio_ms)),
        (
            "join window (s): server / generator cores",
            format!(
                "{:.1}: {} / {}",
                s.join_window_s,
                opt(s.server.cores_join, 2),
                opt(s.generator.cores_join, 2)
            ),
        ),
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
            "UDP receive buffer drops: server / clients",
            format!(
                "{} / {}",
                s.server_socket_drops
                    .map_or_else(|| "-".to_owned(), |d| d.to_string()),
                s.client_socket_drops
            ),
        ),
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
            "busiest thread, steady / join (cores)",
            format!(
                "server {} / {}, generator {} / {}",
                busy(&s.server.busiest_thread_steady),
                busy(&s.server.busiest_thread_join),
                busy(&s.generator.busiest_thread_steady),
                busy(&s.generator.busiest_thread_join)
            ),
        ),
        (
            "generator timer lag p50/p99/max (ms)",
            format!(
                "{:.2} / {:.2} / {:.2}",
                s.generator_lag.p50_ms, s.generator_lag.p99_ms, s.generator_lag.max_ms
            ),
        ),
        (
            "server RSS steady mean (MiB)",
            opt(s.server.rss_steady_mb, 1),
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
    if let Some(l) = &s.server_after_leave {
        let g = |v: Option<f64>| opt(v, 0);
        rows.push((
            "server after all left: partic./ws/peers",
            format!(
                "{} / {} / {} after {:.1} s{}",
                g(l.gauges.participants),
                g(l.gauges.websockets),
                g(l.gauges.peer_connections),
                l.after_s,
                if l.all_closed {
                    ""
                } else {
                    "  (NOT all closed)"
                }
            ),
        ));
    }
    if let Some(c) = &s.churn {
        let r = &s.server_rss;
        rows.push((
            "churn: per s, left / rejoined, live min–max",
            format!(
                "{:.2}, {} / {}, {}–{}",
                c.per_sec, c.churned, c.rejoined, c.live_min, c.live_max
            ),
        ));
        rows.push(("rejoin → first video (ms)", pcts(&s.rejoin_first_video_ms)));
        rows.push(("rejoin → first audio (ms)", pcts(&s.rejoin_first_audio_ms)));
        rows.push((
            "server RSS minute 1 → end (MiB)",
            format!("{} → {}", opt(r.at_1min_mb, 1), opt(r.at_end_mb, 1)),
        ));
        rows.push((
            "server RSS slope (KiB/min, KiB/churned)",
            format!(
                "{}, {}  (fit over {:.0}–{:.0} s, {} samples)",
                opt(r.slope_kib_per_min, 1),
                opt(r.kib_per_churned_pupil, 2),
                r.fit_from_s,
                r.fit_to_s,
                r.fit_samples
            ),
        ));
    }
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

    #[test]
    fn slope_and_median() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 0.5 * f64::from(i)))
            .collect();
        assert!((slope(&pts).unwrap_or(0.0) - 0.5).abs() < 1e-9);
        assert_eq!(slope(&pts[..1]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
