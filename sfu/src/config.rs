//! Media plane settings, checked once at startup and passed down by value.

use std::net::{IpAddr, SocketAddr};

/// Where the media plane listens and what it tells peers.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The one UDP socket all WebRTC traffic uses. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// The ICE-TCP listener (RFC 6544 passive candidates) for clients whose networks drop UDP;
    /// `None`: no TCP candidates. Port 0 picks a free port (tests).
    pub tcp_bind: Option<SocketAddr>,
    /// Addresses announced as ICE candidates, with the bound ports. Behind a 1:1 NAT (a cloud VM)
    /// this is the public address; empty means the bound address itself, or, for a wildcard
    /// bind, the addresses of this machine's interfaces (`crate::interfaces`).
    pub announce: Vec<IpAddr>,
    /// Estimate each subscriber's bandwidth (GoogCC over transport-cc, with str0m's pacer) and
    /// choose simulcast layers from it. Off, every subscriber gets the best layer it asks for and
    /// packets leave unpaced: for a school network where every subscriber is wired, at about 30 %
    /// less CPU per packet (`BENCHMARKS.md`). Never for pupils at home.
    pub bandwidth_estimation: bool,
    /// Media threads (shards), each with its own socket on the one port (`SO_REUSEPORT`). 0: one
    /// per available core.
    pub shards: usize,
    /// A room of up to this many participants stays whole on the shard of its first one
    /// ([`crate::core::placement::WHOLE_ROOM`]); tests lower it to split small rooms.
    pub whole_room: usize,
}

impl MediaConfig {
    /// Loopback on a free port: what tests and a first local run want.
    pub fn loopback() -> Self {
        MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp_bind: None,
            announce: Vec::new(),
            bandwidth_estimation: true,
            shards: 1,
            whole_room: crate::core::placement::WHOLE_ROOM,
        }
    }

    /// How many shards to start: `shards`, or one per core for 0 (at most
    /// [`crate::core::placement::MAX_SHARDS`]).
    pub fn shard_count(&self) -> usize {
        let wanted = match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        wanted.clamp(1, crate::core::placement::MAX_SHARDS)
    }
}
