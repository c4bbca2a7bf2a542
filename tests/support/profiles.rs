//! Home connections to shape a subscriber's path with ([`super::relay`]).
//!
//! The rows are copied from the project's planning profiles, `/work/shared/data/home-links.csv`
//! ("Planning profiles for pupils' home connections. NOT measurements: typical figures to design
//! and test against."; `loss_pct` is random loss in each direction). The RTT is split evenly
//! between the two directions; the CSV gives no jitter, so [`HomeLink::shaping`] adds a modest
//! one (a tenth of the one-way delay) that never reorders.

use super::relay::Shaping;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HomeLink {
    pub profile: &'static str,
    pub down_mbps: f64,
    pub up_mbps: f64,
    pub rtt_ms: u64,
    pub loss_pct: f64,
    pub what: &'static str,
}

/// `home-links.csv`, verbatim.
#[rustfmt::skip]
pub const HOME_LINKS: &[HomeLink] = &[
    HomeLink { profile: "fiber", down_mbps: 100.0, up_mbps: 50.0, rtt_ms: 15, loss_pct: 0.0, what: "home fibre" },
    HomeLink { profile: "cable-busy", down_mbps: 12.0, up_mbps: 2.0, rtt_ms: 40, loss_pct: 0.5, what: "shared home connection in the evening" },
    HomeLink { profile: "lte", down_mbps: 8.0, up_mbps: 3.0, rtt_ms: 60, loss_pct: 1.0, what: "phone tethering with good signal" },
    HomeLink { profile: "lte-weak", down_mbps: 1.5, up_mbps: 0.5, rtt_ms: 120, loss_pct: 3.0, what: "phone tethering at the edge of coverage" },
    HomeLink { profile: "congested", down_mbps: 0.6, up_mbps: 0.3, rtt_ms: 250, loss_pct: 5.0, what: "several siblings on one weak connection" },
];

/// The profile called `name`.
pub fn home_link(name: &str) -> HomeLink {
    *HOME_LINKS
        .iter()
        .find(|link| link.profile == name)
        .unwrap_or_else(|| panic!("no home link profile {name}"))
}

impl HomeLink {
    /// The same connection with another downlink rate (e.g. one pupil's share of it).
    pub fn with_down_mbps(mut self, down_mbps: f64) -> Self {
        self.down_mbps = down_mbps;
        self
    }

    /// The same connection with another loss rate.
    pub fn with_loss_pct(mut self, loss_pct: f64) -> Self {
        self.loss_pct = loss_pct;
        self
    }

    fn one_way(&self) -> Duration {
        Duration::from_millis(self.rtt_ms / 2)
    }

    fn shaping(&self, mbps: f64) -> Shaping {
        let one_way = self.one_way();
        Shaping::NONE
            .rate((mbps * 1_000_000.0) as u64)
            .delay(one_way, one_way / 10)
            .loss(self.loss_pct / 100.0)
    }

    /// Server -> pupil.
    pub fn down(&self) -> Shaping {
        self.shaping(self.down_mbps)
    }

    /// Pupil -> server.
    pub fn up(&self) -> Shaping {
        self.shaping(self.up_mbps)
    }
}
