//! classroom: a WebRTC media server for remote school lessons.
//!
//! This crate ties the media plane ([`classroom_sfu`]) and the signaling plane
//! ([`classroom_signaling`]) into one server process, serves the browser client, and holds the
//! configuration. The binary (`classroom serve`, `classroom invite`) is a thin shell around it.

pub mod config;
pub mod data_dir;
pub mod http_timeouts;
pub mod invite;
pub mod logging;
mod observe;
pub mod secret;
pub mod server;
pub mod web;

pub use classroom_portal as portal;
pub use config::Config;
pub use server::{ServerHandle, start};
