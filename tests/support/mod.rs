//! A test client for classroom, built on an independent WebRTC stack (webrtc-rs 0.21, over the
//! sans-IO `rtc` core), so the server is never tested only against itself.
//!
//! Integration tests use it with `mod support;`. Pieces:
//!
//! * [`signal`]: the WebSocket side — JSON frames, a queue of server events that tests await with
//!   deadlines, request/reply by `id`.
//! * [`publisher`]: the publish `RTCPeerConnection` — local RTP tracks the test writes raw packets
//!   to, and a count of the keyframe requests (PLI/FIR) the server sends for them.
//! * [`subscriber`]: the subscribe `RTCPeerConnection` — answers every `subscriber_offer`, maps
//!   incoming tracks to `track_id`s by mid and records every RTP packet received.
//! * [`media`]: recognisable Opus/VP8 payloads, a media pump that streams them like a camera and
//!   microphone would, and the checks that compare what a subscriber got with what was sent.
//! * [`client`]: [`TestClient`], which ties the three together for one participant.
//! * [`lesson`]: a class of clients and the lesson's actions (hands, floor, chat, last-N).
//! * [`metrics`]: the server's `/metrics`, scraped and read series by series.
//! * [`server`]: [`TestServer`], the server under test started in-process — the only place the
//!   tests touch the server's Rust API.
//! * [`simulcast`]: a simulcast publisher (VP8 rids q/h/f with L1T3 temporal layers, plus Opus)
//!   whose payloads say which layer, frame and packet they are, and the checks on what a
//!   subscriber makes of them.
//! * [`relay`]: a shaping UDP relay (rate limit with a bounded queue or a token bucket, delay,
//!   jitter, loss) to put one subscriber behind a slow home connection; [`profiles`] are the
//!   connections it imitates.
//!
//! Everything that waits does so against a deadline; nothing sleeps to synchronise.

#![allow(dead_code, unused_imports)]

pub mod checks;
pub mod client;
pub mod lesson;
pub mod media;
pub mod metrics;
pub mod peer;
pub mod profiles;
pub mod publisher;
pub mod relay;
pub mod server;
pub mod signal;
pub mod simulcast;
pub mod subscriber;
pub mod wait;
pub mod whip;

pub use client::TestClient;
pub use media::{
    MediaPump, PumpConfig, SentPacket, Source, StreamCheck, is_vp8_keyframe_start, verify_stream,
};
pub use server::TestServer;
pub use signal::{RawConnection, is_error, is_type};
pub use subscriber::RecvPacket;

use std::time::Duration;

/// The longest any single test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A reply the server gives at once (joined, pong, error, publish_answer).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// ICE + DTLS on loopback.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Log to the test's output: `RUST_LOG=classroom=debug,webrtc=info cargo test ...`.
/// Quiet (warnings only) by default. Safe to call from every test.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
