//! Media plane settings, checked once at startup and passed down by value.

use std::net::{IpAddr, SocketAddr};

/// Where the media plane listens and what it tells peers.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The one UDP socket all WebRTC traffic uses. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// Addresses announced as ICE candidates, with the bound port. Behind a 1:1 NAT (a cloud VM)
    /// this is the public address; empty means the bound address itself.
    pub announce: Vec<IpAddr>,
    /// Estimate each subscriber's bandwidth (GoogCC over transport-cc, with str0m's pacer) and
    /// choose simulcast layers from it. Off, every subscriber gets the best layer it asks for and
    /// packets leave unpaced: for a school network where every subscriber is wired, at about 30 %
    /// less CPU per packet (`BENCHMARKS.md`). Never for pupils at home.
    pub bandwidth_estimation: bool,
}

impl MediaConfig {
    /// Loopback on a free port: what tests and a first local run want.
    pub fn loopback() -> Self {
        MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce: Vec::new(),
            bandwidth_estimation: true,
        }
    }
}
