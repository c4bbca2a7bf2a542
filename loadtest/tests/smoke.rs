//! Smoke runs: the release server binary, a teacher and a few pupils for 5 s — on the light str0m
//! clients and on webrtc-rs peer connections; no failures and media at every pupil.
//!
//! The server binary is `CLASSROOM_BIN` if set, else `$CARGO_TARGET_DIR/release/classroom`, else
//! `target/release/classroom` in the workspace. Build it first
//! (`cargo build --release --bin classroom`); a missing binary fails the test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CLASSROOM_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let bin = PathBuf::from(dir).join("release/classroom");
        if bin.is_file() {
            return bin;
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/classroom")
}

/// The whole run, server start and teardown included, must end within this.
const BOUND: Duration = Duration::from_secs(120);

/// One run at a time: two lessons side by side would measure each other's CPU share, and the
/// join-time assertions would depend on the test harness's scheduling.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// Runs a 5 s lesson with `pupils` pupils and `extra` options, asserts it passed, and returns
/// its JSON summary.
fn lesson(pupils: usize, extra: &[&str]) -> serde_json::Value {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let bin = server_binary();
    assert!(
        bin.is_file(),
        "server binary {} not found: build it with `cargo build --release --bin classroom` or set CLASSROOM_BIN",
        bin.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("smoke.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--spawn-server")
        .arg(&bin)
        .args(["--pupils", &pupils.to_string()])
        .args(["--join-rate", "20", "--duration", "5s"])
        .args(["--settle", "15s", "--quiet", "--json"])
        .arg(&json)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("start loadtest");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadtest") {
            break status;
        }
        if t0.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadtest did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&json).expect("the JSON summary was written");
    let summary: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(
        status.success(),
        "loadtest exited with {status}; failures: {}",
        summary["failures"]
    );
    assert_eq!(
        summary["pupils_with_video"], pupils,
        "{}",
        summary["failures"]
    );
    assert_eq!(
        summary["pupils_with_audio"], pupils,
        "{}",
        summary["failures"]
    );
    assert_eq!(summary["failures"].as_array().map(Vec::len), Some(0));
    assert!(summary["video_latency"]["samples"].as_u64() > Some(0));
    assert!(summary["audio_latency"]["samples"].as_u64() > Some(0));
    summary
}

#[test]
fn twenty_pupils_get_media_without_failures() {
    let summary = lesson(20, &[]);
    assert_eq!(summary["client"], "str0m");
}

#[test]
fn ten_webrtc_rs_pupils_get_media_without_failures() {
    let summary = lesson(10, &["--client", "webrtc-rs"]);
    assert_eq!(summary["client"], "webrtc-rs");
    // The tag at the end of every payload survives webrtc-rs's unpadding: each packet a pupil
    // counted gave a latency sample, audio (whose tag sits in Opus padding) included.
    let samples = summary["video_latency"]["samples"].as_u64().unwrap_or(0)
        + summary["audio_latency"]["samples"].as_u64().unwrap_or(0);
    // Against the pupils' own count: the run's last snapshot of the shared counter can miss a
    // packet still arriving (4170 against 4171 samples once).
    assert_eq!(Some(samples), summary["rx_packets_counted"].as_u64());
}
