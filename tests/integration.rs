//! Every integration test of the `classroom` binary crate, in one test binary.
//!
//! One binary rather than one per file: each would link the whole media stack and compile
//! `support/` again (26 files took minutes of CI linking alone). Run one file's tests with
//! `cargo test --release --test integration lesson_link_e2e::`, one test by its name.

#[macro_use]
mod support;
#[macro_use]
#[path = "support/portal.rs"]
mod portal_support;
#[path = "support/two_schools.rs"]
mod two_schools;

mod audience_e2e;
mod bad_input;
mod bursty;
mod chat_retention;
mod connections;
mod data_dir;
mod guest_link;
mod h264_simulcast;
mod hardening;
mod ice_tcp;
mod last_n;
mod lesson_link;
mod lesson_link_e2e;
mod link_media;
mod link_outage;
mod media_e2e;
mod moderation;
mod oidc_signin;
#[path = "portal.rs"]
mod portal_api;
mod presence_gaps;
mod rate_limits;
mod resume;
mod school_scope;
mod server_basics;
mod shards_e2e;
mod simulcast_e2e;
mod whip;
