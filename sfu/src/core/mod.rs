//! Sans-IO decisions of the media plane: no sockets, no clock, no tokio. Time comes in as values.

pub mod allocation_round;
pub mod allocator;
pub mod audience;
pub mod bitrate;
pub mod capacity;
pub mod demux;
pub mod downtrack;
pub mod dynacast;
pub mod forward;
pub mod framing;
pub mod keyframe;
pub mod lanes;
pub mod layer;
pub mod liveness;
pub mod pacing;
pub mod placement;
pub mod probe;
pub mod restart;
pub mod rewrite;
pub mod silence;
pub mod speaker;
pub mod throttle;
pub mod vp8;
