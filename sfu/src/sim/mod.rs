//! The media plane in virtual time (the crate's unit tests, and the forward benchmark through
//! the `sim` feature).
//!
//! The shard is a state machine that is given the time (`shard::Shard`); here it runs with real
//! str0m peers — a teacher publishing VP8 simulcast and Opus (`source`), pupils as str0m
//! subscribers that send TWCC, receiver reports, NACKs and PLIs as browsers do — behind
//! simulated links (`link`) with rate, queue, delay, jitter, loss and token-bucket bursts. One
//! virtual clock drives everything (`world`), so adaptation, pausing, resumption and keyframe
//! behaviour are tested in milliseconds of CPU per simulated second (not bit-for-bit repeatable:
//! str0m draws its own randomness, see `docs/ADAPTATION.md`).
//! `profiles` holds the home-link table of `docs/ADAPTATION.md` and its tests, `bursty` the
//! token-bucket links of issue 17, `meter` the shard's own CPU time for the benchmark.

#[cfg(test)]
mod bursty;
pub mod link;
pub mod meter;
#[cfg(test)]
mod profiles;
#[cfg(test)]
mod scenarios;
pub mod source;
pub mod world;

pub use link::Shaping;
pub use meter::ShardCost;
pub use source::SourceConfig;
pub use world::World;
