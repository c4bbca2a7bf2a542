//! A lesson-shaped load generator for the classroom SFU.
//!
//! One process plays the whole class: a teacher publishing VP8 simulcast and Opus, and any
//! number of pupils receiving, each a sans-IO str0m `Rtc` with its own UDP socket (or, with
//! `--client webrtc-rs`, a webrtc-rs peer connection), driven by a small tokio runtime. See
//! `loadtest/README.md`.

pub mod audio;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod janus;
pub mod media;
pub mod participant;
pub mod proc;
pub mod report;
pub mod run;
pub mod server;
pub mod signal;
pub mod stats;
pub mod tag;
pub mod vp8;
pub mod webrtc_pupil;
pub mod webrtc_socket;
