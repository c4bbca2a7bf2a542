//! Command-line options.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::media::ClientKind;
use crate::signal::MaxLayer;

/// Which server the load is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// classroom's `/ws` protocol (docs/PROTOCOL.md).
    Classroom,
    /// Janus 1.1's VideoRoom plugin over its WebSocket API (`--janus-url`); see
    /// loadtest/janus/run-janus.sh and loadtest/compare.sh.
    Janus,
}

/// Simulates a lesson against the SFU: one teacher publishing VP8 simulcast (q/h/f) and Opus,
/// N pupils receiving (str0m clients in RTP mode, no decoding), optionally M pupils publishing.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", version)]
pub struct Cli {
    /// Signaling URL of a running server. Not needed with --spawn-server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    #[arg(long, value_enum, default_value = "classroom")]
    pub target: TargetKind,
    /// The server's token secret (to mint join tokens). Prefer --secret-file or the environment.
    #[arg(long, env = "CLASSROOM_TOKEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the token secret, e.g. <data_dir>/token_secret.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Start this server binary (`classroom`) on free loopback ports with a temporary data dir
    /// and a fresh secret, and stop it at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn_server: Option<PathBuf>,
    /// PID of the server process, to sample its CPU and memory (automatic with --spawn-server).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's metrics listener (its `metrics.listen`), to read `/metrics` from; the
    /// server's default is 127.0.0.1:9464 (automatic with --spawn-server).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    #[arg(long, default_value = "load-lesson")]
    pub room: String,
    /// Pupils that receive the lesson.
    #[arg(long, default_value_t = 20)]
    pub pupils: usize,
    /// Pupils joining per second.
    #[arg(long, default_value_t = 10.0)]
    pub join_rate: f64,
    /// Steady state after the last pupil joined, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Of the pupils, how many also publish a camera (VP8 320x240, 200 kbit/s, 15 fps) and a
    /// microphone.
    #[arg(long, default_value_t = 0)]
    pub publishers: usize,
    /// Per-pupil downlink cap in kbit/s: a receive-side token bucket (100 ms burst) in the
    /// client drops RTP beyond it, as a slow link would.
    #[arg(long)]
    pub pupil_cap_kbps: Option<u32>,
    /// The WebRTC stack of the pupils that only receive: light str0m clients, or full
    /// webrtc-rs peer connections (a second, independent implementation, heavier per pupil).
    /// The teacher and --publishers pupils are always str0m.
    #[arg(long, value_enum, default_value = "str0m")]
    pub client: ClientKind,
    /// Teacher and publishing pupils send audio only.
    #[arg(long)]
    pub audio_only: bool,
    /// Highest layer pupils ask for (`set_track_quality`).
    #[arg(long, value_enum, default_value = "medium")]
    pub max_layer: MaxLayer,
    /// Teacher camera frame rate.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Periodic keyframe interval of every layer (keyframes also follow PLI/FIR).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub keyframe_interval: Duration,
    /// Largest RTP payload.
    #[arg(long, default_value_t = 1200)]
    pub max_payload: usize,
    /// Local address of the clients' UDP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Longest wait after the ramp for every pupil's first media before the steady window.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Churn during the steady window: this many pupils per second leave (the longest
    /// connected first) and as many fresh clients join in their place, e.g. 2 or 0.5. With a
    /// long --duration this is the soak test (loadtest/soak.sh).
    #[arg(long, default_value_t = 0.0)]
    pub churn_per_sec: f64,
    /// With --churn-per-sec: every second churned pupil vanishes (WebSocket and UDP sockets
    /// dropped without a `leave`, as a tablet that loses its network) instead of leaving.
    #[arg(long)]
    pub churn_abrupt: bool,
    /// Runtime worker threads for the clients.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Janus WebSocket API URL (with `--target janus`; the room is created by the teacher).
    #[arg(long, default_value = "ws://127.0.0.1:8188")]
    pub janus_url: String,
    /// PID of the Janus process, to sample its CPU and memory (with `--target janus`).
    #[arg(long)]
    pub janus_pid: Option<u32>,
    /// Write the full results (summary and per-second samples) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}
