//! The media plane of classroom.
//!
//! Each media thread (a *shard*, one per core by default) owns a UDP socket on the one media port,
//! every [`str0m::Rtc`] of the participants it serves, and its part of the rooms' forwarding
//! tables. The control plane (signaling) talks to the shards only through [`ShardCommand`] and
//! [`ShardEvent`] values over channels (with several shards, through a router that places
//! participants); shards reach each other over bounded lock-free queues (`shard::mesh`). Nothing
//! here is shared behind a lock.
//!
//! - [`core`] holds the decisions, sans-IO: demultiplexing datagrams to peers, rewriting sequence
//!   numbers and timestamps per subscriber, recognising keyframes, throttling keyframe requests.
//!   It has no sockets, no clock and no tokio, and is tested with plain tables.
//! - [`shard`] is the thin I/O loop that feeds datagrams and timeouts into `Rtc`s and applies the
//!   core's decisions.

pub mod command;
pub mod config;
pub mod core;
pub mod error;
pub mod heartbeat;
pub mod hold;
pub mod ids;
pub mod interfaces;
pub mod metrics;
mod router;
mod sdp_error;
pub mod shard;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use command::{
    Audience, LayerName, PauseReason, PublishedTrack, ShardCommand, ShardEvent, SubscribedTrack,
    TrackKind, TrackSource, TrackSpec,
};
pub use config::MediaConfig;
pub use error::SfuError;
pub use heartbeat::Heartbeat;
pub use hold::MediaHold;
pub use ids::{ParticipantId, RoomId, TrackId};
pub use metrics::MediaMetrics;
pub use shard::{Sfu, start};
