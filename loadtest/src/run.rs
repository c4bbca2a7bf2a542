//! A whole lesson: the teacher publishes, pupils join at a set rate, everyone stays for the
//! steady-state window, everyone leaves; the server and this process are sampled throughout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::media::{ClientKind, MediaOptions, PublishPlan};
use crate::participant::{self, ParticipantReport, Plan, Stop};
use crate::proc::{self, Pid, ProcSample, ThreadSample};
use crate::server::Gauges;
use crate::signal::{Identity, MaxLayer, Target};
use crate::stats::{Counters, latency_histogram};
use crate::vp8::{PUPIL_LAYER, TEACHER_LAYERS};

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub pupils: usize,
    /// Pupils joining per second.
    pub join_rate: f64,
    /// Steady state: how long everyone stays after the last pupil joined.
    pub duration: Duration,
    /// Pupils that also publish a camera (one small VP8 layer) and a microphone.
    pub publishers: usize,
    pub cap_kbps: Option<u32>,
    /// The stack of the pupils that only receive (the summary reports it at the top level).
    #[serde(skip)]
    pub client: ClientKind,
    pub audio_only: bool,
    pub max_layer: MaxLayer,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub max_payload: usize,
    #[serde(skip)]
    pub bind_ip: IpAddr,
    pub server_pid: Option<u32>,
    /// The server's media UDP port on this host, for its socket's drop counter.
    pub server_media_port: Option<u16>,
    /// The server's HTTP address, for `/metrics`.
    #[serde(skip)]
    pub metrics: Option<SocketAddr>,
    /// Longest wait after the ramp for every pupil's first media.
    pub settle: Duration,
    pub progress: bool,
    /// Churn in the steady window: this many pupils per second leave and are replaced by fresh
    /// clients (new identity, new WebSocket, new peer connections); 0 for none.
    pub churn_per_sec: f64,
    /// Every second churned pupil vanishes (no `leave`, sockets dropped) instead of leaving.
    pub churn_abrupt: bool,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error("the teacher could not publish: {0}")]
    Teacher(String),
}

/// Resource readings and counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub server: Option<ProcSample>,
    pub generator: Option<ProcSample>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// The server's own count of forwarded RTP packets, when `/metrics` is reachable.
    pub forwarded: Option<f64>,
    /// Datagrams dropped at the server's media socket (buffer full) so far.
    pub server_udp_drops: Option<u64>,
    /// Per-thread CPU of both processes.
    pub server_threads: Vec<ThreadSample>,
    pub generator_threads: Vec<ThreadSample>,
}

/// One line of the per-second timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub server_cpu_s: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub generator_cpu_s: Option<f64>,
    pub generator_rss_mb: Option<f64>,
    pub joined: u64,
    pub with_media: u64,
    pub failed: u64,
    pub rx_packets: u64,
    /// Pupils joined and not yet left; pupil joins and leaves since the start (churn included).
    pub live_pupils: u64,
    pub pupil_joins: u64,
    pub pupil_leaves: u64,
    /// The generator's scheduling lag in this second: how late a 10 ms timer fired at worst.
    /// Tens of milliseconds mean the generator (or the machine) is the bottleneck.
    pub generator_lag_max_ms: f64,
    /// The server's own counts (`/metrics`), when reachable.
    pub server_participants: Option<f64>,
    pub server_websockets: Option<f64>,
    pub server_peer_connections: Option<f64>,
}

/// What the server still held after everyone left.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Leftover {
    /// Seconds after the last participant's task ended until everything was closed, or the
    /// bound (10 s) if it never was.
    pub after_s: f64,
    pub all_closed: bool,
    pub gauges: Gauges,
}

/// Everything a run produced, for the report.
#[derive(Debug)]
pub struct Outcome {
    pub teacher: ParticipantReport,
    pub pupils: Vec<ParticipantReport>,
    pub samples: Vec<Sample>,
    pub start: Snapshot,
    pub steady_start: Snapshot,
    pub steady_end: Snapshot,
    /// Just before the first pupil's join: the join window runs from here to `steady_start`.
    pub ramp_start: Snapshot,
    pub ramp: Duration,
    /// Lateness of the generator's 10 ms probe timer over the whole run, µs.
    pub generator_lag: hdrhistogram::Histogram<u64>,
    /// The server's gauges once everyone had left, when `/metrics` is reachable.
    pub server_after: Option<Leftover>,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn snapshot(cfg: &RunConfig, counters: &Counters) -> Snapshot {
    let forwarded = match cfg.metrics {
        Some(addr) => crate::server::http_get(addr, "/metrics")
            .await
            .ok()
            .and_then(|t| crate::server::metric(&t, "classroom_media_rtp_forwarded_total")),
        None => None,
    };
    Snapshot {
        at: Instant::now(),
        server: cfg
            .server_pid
            .and_then(|p| proc::sample(Pid::Other(p)).ok()),
        generator: proc::sample(Pid::This).ok(),
        rx_packets: counters.rx_packets.load(Ordering::Relaxed),
        rx_bytes: counters.rx_bytes.load(Ordering::Relaxed),
        forwarded,
        server_udp_drops: cfg.server_media_port.and_then(proc::udp_drops),
        server_threads: cfg
            .server_pid
            .map(|p| proc::threads(Pid::Other(p)))
            .unwrap_or_default(),
        generator_threads: proc::threads(Pid::This),
    }
}

fn media_options(
    cfg: &RunConfig,
    counters: &Arc<Counters>,
    cap: Option<u32>,
    client: ClientKind,
) -> MediaOptions {
    MediaOptions {
        client,
        bind_ip: cfg.bind_ip,
        cap_kbps: cap,
        join_started: Instant::now(),
        expect_video: !cfg.audio_only,
        counters: counters.clone(),
    }
}

/// The probe's period: short enough to see a stalled runtime, long enough to cost nothing.
const LAG_PROBE: Duration = Duration::from_millis(10);

/// A pupil in the room (or on its way in), with the channel that tells it to go.
struct LivePupil {
    handle: tokio::task::JoinHandle<ParticipantReport>,
    stop: watch::Sender<Stop>,
}

/// Starts pupil number `i`.
fn spawn_pupil<T: Target>(
    target: &Arc<T>,
    cfg: &RunConfig,
    counters: &Arc<Counters>,
    i: usize,
    rejoin: bool,
) -> LivePupil {
    let publish = (i < cfg.publishers).then(|| PublishPlan {
        layers: if cfg.audio_only {
            Vec::new()
        } else {
            vec![PUPIL_LAYER]
        },
        fps: 15,
        audio: true,
        keyframe_interval: cfg.keyframe_interval,
        max_payload: cfg.max_payload,
        audio_bitrate: 24_000,
    });
    // Publishing pupils stay on str0m: the webrtc-rs pupil only receives.
    let client = if publish.is_some() {
        ClientKind::Str0m
    } else {
        cfg.client
    };
    let plan = Plan {
        identity: Identity {
            id: format!("s-{i:04}"),
            name: format!("Pupil {i}"),
            teacher: false,
        },
        rejoin,
        publish,
        max_layer: cfg.max_layer,
        media: media_options(cfg, counters, cfg.cap_kbps, client),
    };
    let (stop, stop_rx) = watch::channel(Stop::Run);
    LivePupil {
        handle: tokio::spawn(participant::run(target.clone(), plan, stop_rx, None)),
        stop,
    }
}

/// Waits (bounded) for a pupil that was told to go; a pupil that does not end is a failure.
async fn collect(handle: tokio::task::JoinHandle<ParticipantReport>) -> ParticipantReport {
    let lost = |why: String| ParticipantReport {
        identity: "?".into(),
        teacher: false,
        rejoin: false,
        ws_open: None,
        join_reply: None,
        first_offer: None,
        churned: false,
        failures: vec![why],
        media: None,
    };
    match tokio::time::timeout(Duration::from_secs(20), handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => lost(format!("task: {e}")),
        Err(_) => lost("did not leave within 20 s".into()),
    }
}

/// Runs the lesson against `target`.
pub async fn run<T: Target>(target: Arc<T>, cfg: &RunConfig) -> Result<Outcome, RunError> {
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(Stop::Run);
    let start = snapshot(cfg, &counters).await;
    let start_at = start.at;

    // The lag probe: how late a short timer fires on the same runtime as the clients. It is the
    // direct sign that the generator, not the server, limits a run (or that the machine does).
    let lag_max_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lag_probe = {
        let lag_max_us = lag_max_us.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut h = latency_histogram();
            loop {
                let due = Instant::now() + LAG_PROBE;
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.changed() => break,
                }
                let late = Instant::now().saturating_duration_since(due).as_micros() as u64;
                h.saturating_record(late.max(1));
                lag_max_us.fetch_max(late, Ordering::Relaxed);
            }
            h
        })
    };

    let sampler = {
        let counters = counters.clone();
        let server_pid = cfg.server_pid;
        let metrics = cfg.metrics;
        let mut stop = stop.clone();
        let lag_max_us = lag_max_us.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let server = server_pid.and_then(|p| proc::sample(Pid::Other(p)).ok());
                let generator = proc::sample(Pid::This).ok();
                let joins = counters.pupil_joins.load(Ordering::Relaxed);
                let leaves = counters.pupil_leaves.load(Ordering::Relaxed);
                let gauges = match metrics {
                    Some(addr) => crate::server::http_get(addr, "/metrics")
                        .await
                        .ok()
                        .map(|t| Gauges::parse(&t)),
                    None => None,
                }
                .unwrap_or_default();
                samples.push(Sample {
                    t_s: start_at.elapsed().as_secs_f64(),
                    server_cpu_s: server.map(|s| s.cpu.as_secs_f64()),
                    server_rss_mb: server.map(|s| mb(s.rss)),
                    generator_cpu_s: generator.map(|s| s.cpu.as_secs_f64()),
                    generator_rss_mb: generator.map(|s| mb(s.rss)),
                    joined: counters.joined.load(Ordering::Relaxed),
                    with_media: counters.with_media.load(Ordering::Relaxed),
                    failed: counters.failed.load(Ordering::Relaxed),
                    rx_packets: counters.rx_packets.load(Ordering::Relaxed),
                    live_pupils: joins.saturating_sub(leaves),
                    pupil_joins: joins,
                    pupil_leaves: leaves,
                    generator_lag_max_ms: lag_max_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
                    server_participants: gauges.participants,
                    server_websockets: gauges.websockets,
                    server_peer_connections: gauges.peer_connections,
                });
            }
            samples
        })
    };

    // The teacher: simulcast camera and microphone; subscribes only if pupils publish.
    let teacher_plan = Plan {
        identity: Identity {
            id: "t-load".into(),
            name: "Teacher".into(),
            teacher: true,
        },
        rejoin: false,
        publish: Some(PublishPlan {
            layers: if cfg.audio_only {
                Vec::new()
            } else {
                TEACHER_LAYERS.to_vec()
            },
            fps: cfg.fps,
            audio: true,
            keyframe_interval: cfg.keyframe_interval,
            max_payload: cfg.max_payload,
            audio_bitrate: 32_000,
        }),
        max_layer: MaxLayer::High,
        media: media_options(cfg, &counters, None, ClientKind::Str0m),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let teacher = tokio::spawn(participant::run(
        target.clone(),
        teacher_plan,
        stop.clone(),
        Some(ready_tx),
    ));
    if let Err(e) = participant::wait_ready(ready_rx, Duration::from_secs(20)).await {
        let _ = stop_tx.send(Stop::Leave);
        return Err(RunError::Teacher(e));
    }

    let bar = if cfg.progress {
        ProgressBar::new(cfg.pupils as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix("joining");
    let status = |c: &Counters, last: &mut (Instant, u64)| {
        let rx = c.rx_packets.load(Ordering::Relaxed);
        let dt = last.0.elapsed().as_secs_f64().max(0.001);
        let pps = (rx - last.1) as f64 / dt;
        *last = (Instant::now(), rx);
        let joins = c.pupil_joins.load(Ordering::Relaxed);
        let leaves = c.pupil_leaves.load(Ordering::Relaxed);
        format!(
            "live {} joins {} leaves {} media {} failed {} rx {:.0} pkt/s",
            joins.saturating_sub(leaves),
            joins,
            leaves,
            c.with_media.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            pps
        )
    };
    let mut last = (Instant::now(), 0u64);

    // The ramp.
    let ramp_start_snapshot = snapshot(cfg, &counters).await;
    let ramp_start = Instant::now();
    let mut live = std::collections::VecDeque::with_capacity(cfg.pupils);
    let interval = Duration::from_secs_f64(1.0 / cfg.join_rate.max(0.001));
    for i in 0..cfg.pupils {
        let due = ramp_start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        live.push_back(spawn_pupil(&target, cfg, &counters, i, false));
        bar.set_position(i as u64 + 1);
        if i % 5 == 0 {
            bar.set_message(status(&counters, &mut last));
        }
    }
    let ramp = ramp_start.elapsed();

    // Settle: until every pupil has media (or has failed), bounded.
    bar.set_prefix("settling");
    let settle_end = Instant::now() + cfg.settle;
    while Instant::now() < settle_end {
        let done =
            counters.with_media.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
        if done >= cfg.pupils as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_message(status(&counters, &mut last));
    }

    // Steady state, with churn if asked: the longest-connected pupil goes and a fresh client
    // (next identity) comes, so every client stays pupils ÷ rate seconds (50 s in the soak),
    // long enough to get its media before it leaves, and the room size stays put.
    let steady_start = snapshot(cfg, &counters).await;
    bar.set_prefix(if cfg.churn_per_sec > 0.0 {
        "churning"
    } else {
        "steady"
    });
    bar.set_length(cfg.duration.as_secs().max(1));
    bar.set_position(0);
    let steady_end_at = steady_start.at + cfg.duration;
    let churn_every = (cfg.churn_per_sec > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / cfg.churn_per_sec.max(0.001)));
    let mut next_churn = churn_every.map(|d| steady_start.at + d);
    let mut churned = 0usize;
    let mut next_index = cfg.pupils;
    let mut leaving: Vec<tokio::task::JoinHandle<ParticipantReport>> = Vec::new();
    let mut reports = Vec::with_capacity(cfg.pupils);
    let mut last_bar = Instant::now();
    while Instant::now() < steady_end_at {
        let wake = next_churn.map_or(steady_end_at, |c| c.min(steady_end_at));
        let wake = wake.min(last_bar + Duration::from_millis(500));
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        if let (Some(every), Some(at)) = (churn_every, next_churn)
            && now >= at
            && now < steady_end_at
        {
            next_churn = Some(at + every);
            if let Some(gone) = live.pop_front() {
                let how = if cfg.churn_abrupt && churned % 2 == 1 {
                    Stop::Drop
                } else {
                    Stop::Leave
                };
                let _ = gone.stop.send(how);
                leaving.push(gone.handle);
                churned += 1;
                // A fresh client in the leaver's place: the room size stays put.
                live.push_back(spawn_pupil(&target, cfg, &counters, next_index, true));
                next_index += 1;
            }
        }
        // Departed pupils' reports are taken as they finish, so their tasks do not pile up.
        let mut i = 0;
        while i < leaving.len() {
            if leaving[i].is_finished() {
                let mut r = collect(leaving.swap_remove(i)).await;
                r.churned = true;
                reports.push(r);
            } else {
                i += 1;
            }
        }
        if now >= last_bar + Duration::from_millis(500) {
            last_bar = now;
            bar.set_position(steady_start.at.elapsed().as_secs());
            bar.set_message(status(&counters, &mut last));
        }
    }
    let steady_end = snapshot(cfg, &counters).await;

    // Pupils who joined in the last moments of the churn get the settle time for their media
    // before everyone leaves, as the ramp's pupils did; a pupil told to leave before its first
    // packet would count as a failure of the server's.
    if next_index > cfg.pupils {
        bar.set_prefix("settling");
        let spawned = next_index as u64;
        let settle_end = Instant::now() + cfg.settle;
        while Instant::now() < settle_end
            && counters.with_media.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
                < spawned
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    bar.finish_and_clear();

    let _ = stop_tx.send(Stop::Leave);
    for p in &live {
        let _ = p.stop.send(Stop::Leave);
    }
    for handle in leaving {
        let mut r = collect(handle).await;
        r.churned = true;
        reports.push(r);
    }
    for p in live {
        reports.push(collect(p.handle).await);
    }
    let teacher = match tokio::time::timeout(Duration::from_secs(20), teacher).await {
        Ok(Ok(r)) => r,
        _ => ParticipantReport {
            identity: "t-load".into(),
            teacher: true,
            rejoin: false,
            ws_open: None,
            join_reply: None,
            first_offer: None,
            churned: false,
            failures: vec!["the teacher did not leave within 20 s".into()],
            media: None,
        },
    };
    let samples = sampler.await.unwrap_or_default();
    let generator_lag = lag_probe.await.unwrap_or_else(|_| latency_histogram());
    let server_after = match cfg.metrics {
        Some(addr) => leftover(addr).await,
        None => None,
    };
    Ok(Outcome {
        teacher,
        pupils: reports,
        samples,
        start,
        steady_start,
        steady_end,
        ramp_start: ramp_start_snapshot,
        ramp,
        generator_lag,
        server_after,
    })
}

/// Polls the server's gauges until everything is closed, for at most 10 s: whatever is still
/// open then was leaked (or is a timeout longer than that).
async fn leftover(addr: SocketAddr) -> Option<Leftover> {
    let t0 = Instant::now();
    let bound = Duration::from_secs(10);
    let mut last = None;
    loop {
        if let Ok(text) = crate::server::http_get(addr, "/metrics").await {
            let g = Gauges::parse(&text);
            last = Some(g);
            if g.all_closed() {
                break;
            }
        }
        if t0.elapsed() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gauges = last?;
    Some(Leftover {
        after_s: t0.elapsed().as_secs_f64(),
        all_closed: gauges.all_closed(),
        gauges,
    })
}
