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

use crate::media::{MediaOptions, PublishPlan};
use crate::participant::{self, ParticipantReport, Plan};
use crate::proc::{self, Pid, ProcSample};
use crate::signal::{Identity, MaxLayer, Target};
use crate::stats::Counters;
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
    pub audio_only: bool,
    pub max_layer: MaxLayer,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub max_payload: usize,
    #[serde(skip)]
    pub bind_ip: IpAddr,
    pub server_pid: Option<u32>,
    /// The server's HTTP address, for `/metrics`.
    #[serde(skip)]
    pub metrics: Option<SocketAddr>,
    /// Longest wait after the ramp for every pupil's first media.
    pub settle: Duration,
    pub progress: bool,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error("the teacher could not publish: {0}")]
    Teacher(String),
}

/// Resource readings and counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub at: Instant,
    pub server: Option<ProcSample>,
    pub generator: Option<ProcSample>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// The server's own count of forwarded RTP packets, when `/metrics` is reachable.
    pub forwarded: Option<f64>,
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
    pub ramp: Duration,
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
    }
}

fn media_options(cfg: &RunConfig, counters: &Arc<Counters>, cap: Option<u32>) -> MediaOptions {
    MediaOptions {
        bind_ip: cfg.bind_ip,
        cap_kbps: cap,
        join_started: Instant::now(),
        expect_video: !cfg.audio_only,
        counters: counters.clone(),
    }
}

/// Runs the lesson against `target`.
pub async fn run<T: Target>(target: Arc<T>, cfg: &RunConfig) -> Result<Outcome, RunError> {
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let start = snapshot(cfg, &counters).await;

    let sampler = {
        let counters = counters.clone();
        let server_pid = cfg.server_pid;
        let mut stop = stop.clone();
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
                samples.push(Sample {
                    t_s: start.at.elapsed().as_secs_f64(),
                    server_cpu_s: server.map(|s| s.cpu.as_secs_f64()),
                    server_rss_mb: server.map(|s| mb(s.rss)),
                    generator_cpu_s: generator.map(|s| s.cpu.as_secs_f64()),
                    generator_rss_mb: generator.map(|s| mb(s.rss)),
                    joined: counters.joined.load(Ordering::Relaxed),
                    with_media: counters.with_media.load(Ordering::Relaxed),
                    failed: counters.failed.load(Ordering::Relaxed),
                    rx_packets: counters.rx_packets.load(Ordering::Relaxed),
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
        media: media_options(cfg, &counters, None),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let teacher = tokio::spawn(participant::run(
        target.clone(),
        teacher_plan,
        stop.clone(),
        Some(ready_tx),
    ));
    if let Err(e) = participant::wait_ready(ready_rx, Duration::from_secs(20)).await {
        let _ = stop_tx.send(true);
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
        format!(
            "joined {} media {} failed {} rx {:.0} pkt/s",
            c.joined.load(Ordering::Relaxed),
            c.with_media.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            pps
        )
    };
    let mut last = (Instant::now(), 0u64);

    // The ramp.
    let ramp_start = Instant::now();
    let mut pupils = Vec::with_capacity(cfg.pupils);
    let interval = Duration::from_secs_f64(1.0 / cfg.join_rate.max(0.001));
    for i in 0..cfg.pupils {
        let due = ramp_start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
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
        let plan = Plan {
            identity: Identity {
                id: format!("s-{i:04}"),
                name: format!("Pupil {i}"),
                teacher: false,
            },
            publish,
            max_layer: cfg.max_layer,
            media: media_options(cfg, &counters, cfg.cap_kbps),
        };
        pupils.push(tokio::spawn(participant::run(
            target.clone(),
            plan,
            stop.clone(),
            None,
        )));
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

    // Steady state.
    let steady_start = snapshot(cfg, &counters).await;
    bar.set_prefix("steady");
    bar.set_length(cfg.duration.as_secs().max(1));
    bar.set_position(0);
    let steady_end_at = steady_start.at + cfg.duration;
    while Instant::now() < steady_end_at {
        let left = steady_end_at.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        bar.set_position(steady_start.at.elapsed().as_secs());
        bar.set_message(status(&counters, &mut last));
    }
    let steady_end = snapshot(cfg, &counters).await;
    bar.finish_and_clear();

    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(pupils.len());
    for handle in pupils {
        match tokio::time::timeout(Duration::from_secs(20), handle).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => reports.push(ParticipantReport {
                identity: "?".into(),
                teacher: false,
                join_reply: None,
                failures: vec![format!("task: {e}")],
                media: None,
            }),
            Err(_) => reports.push(ParticipantReport {
                identity: "?".into(),
                teacher: false,
                join_reply: None,
                failures: vec!["did not leave within 20 s".into()],
                media: None,
            }),
        }
    }
    let teacher = match tokio::time::timeout(Duration::from_secs(20), teacher).await {
        Ok(Ok(r)) => r,
        _ => ParticipantReport {
            identity: "t-load".into(),
            teacher: true,
            join_reply: None,
            failures: vec!["the teacher did not leave within 20 s".into()],
            media: None,
        },
    };
    let samples = sampler.await.unwrap_or_default();
    Ok(Outcome {
        teacher,
        pupils: reports,
        samples,
        start,
        steady_start,
        steady_end,
        ramp,
    })
}
