//! The home-link table of `docs/ADAPTATION.md` in virtual time: one pupil per profile, the
//! teacher's synthetic simulcast camera, 20 simulated seconds, and what the pupil saw.
//!
//! Reproduce (and print the table):
//! `cargo test --release -p classroom-sfu --lib sim:: -- --nocapture`

use std::time::{Duration, Instant};

use super::link::Shaping;
use super::meter::thread_cpu;
use super::source::SourceConfig;
use super::world::World;
use crate::command::PauseReason;

/// `tests/support/profiles.rs` (`home-links.csv`): down / up Mbit/s, RTT, random loss.
#[derive(Debug, Clone, Copy)]
pub struct HomeLink {
    pub profile: &'static str,
    pub down_mbps: f64,
    pub up_mbps: f64,
    pub rtt_ms: u64,
    pub loss_pct: f64,
}

#[rustfmt::skip]
pub const HOME_LINKS: [HomeLink; 5] = [
    HomeLink { profile: "fiber", down_mbps: 100.0, up_mbps: 50.0, rtt_ms: 15, loss_pct: 0.0 },
    HomeLink { profile: "cable-busy", down_mbps: 12.0, up_mbps: 2.0, rtt_ms: 40, loss_pct: 0.5 },
    HomeLink { profile: "lte", down_mbps: 8.0, up_mbps: 3.0, rtt_ms: 60, loss_pct: 1.0 },
    HomeLink { profile: "lte-weak", down_mbps: 1.5, up_mbps: 0.5, rtt_ms: 120, loss_pct: 3.0 },
    HomeLink { profile: "congested", down_mbps: 0.6, up_mbps: 0.3, rtt_ms: 250, loss_pct: 5.0 },
];

impl HomeLink {
    pub fn named(name: &str) -> HomeLink {
        match HOME_LINKS.iter().find(|l| l.profile == name) {
            Some(l) => *l,
            None => panic!("no profile {name}"),
        }
    }

    /// As the relay of the real-time test shapes it: the RTT split evenly, a tenth of the
    /// one-way delay as jitter, a 200 ms queue.
    fn shaping(&self, mbps: f64, lossy: bool) -> Shaping {
        let one_way = Duration::from_millis(self.rtt_ms / 2);
        Shaping::NONE
            .rate((mbps * 1_000_000.0) as u64)
            .delay(one_way, one_way / 10)
            .loss(if lossy { self.loss_pct / 100.0 } else { 0.0 })
    }

    pub fn down(&self, lossy: bool) -> Shaping {
        self.shaping(self.down_mbps, lossy)
    }

    pub fn up(&self, lossy: bool) -> Shaping {
        self.shaping(self.up_mbps, lossy)
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub profile: &'static str,
    /// Rids decoded in the last 3 s (`paused` if none).
    pub settled: String,
    /// Decoded frames per second in the last 3 s.
    pub fps: f64,
    /// From the first video frame to the last layer change (a rid switch at the pupil, or a
    /// pause or resume the server reported).
    pub settle: Duration,
    pub still_changing: bool,
    /// Longest time between two decodable frames after the first (the end counts as one).
    pub freeze: Duration,
    /// Longest time between two audio packets.
    pub audio_gap: Duration,
    pub switches: String,
    pub quality: String,
    pub estimate_kbps: Option<u64>,
    pub dropped: (u64, u64),
    #[allow(dead_code)]
    pub undecodable: u64,
    /// Thread CPU time the run took, and the simulated time.
    pub cpu: Duration,
    pub simulated: Duration,
}

impl Outcome {
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} s{} | {} ms | {} ms | {} / {} | {} | {} | {} | {:.0} ms |",
            self.profile,
            self.settled,
            self.fps,
            self.settle.as_secs_f64(),
            if self.still_changing {
                " (still changing)"
            } else {
                ""
            },
            self.freeze.as_millis(),
            self.audio_gap.as_millis(),
            self.dropped.0,
            self.dropped.1,
            self.estimate_kbps
                .map_or("-".into(), |k| format!("{k} kbit/s")),
            self.switches,
            self.quality,
            self.cpu.as_secs_f64() * 1000.0 * 60.0 / self.simulated.as_secs_f64(),
        )
    }
}

/// Connects a pupil behind `link` without loss, switches the loss on, and runs `duration`.
pub fn run_profile(
    link: &HomeLink,
    source: SourceConfig,
    seed: u64,
    duration: Duration,
) -> Outcome {
    let cpu = thread_cpu();
    let mut w = World::new(seed, source);
    let p = w.add_pupil(link.down(false), link.up(false));
    assert!(
        w.run_until_true(Duration::from_secs(10), |w| w.pupil_connected(p)),
        "{}: the pupil did not connect",
        link.profile
    );
    w.down(p).reshape(link.down(true));
    w.up(p).reshape(link.up(true));
    w.run_for(duration);
    let stats = w.down(p).stats;
    let mut o = analyse(&w, p, link.profile);
    o.dropped = (stats.dropped_queue, stats.dropped_loss);
    o.cpu = thread_cpu() - cpu;
    o.simulated = w.now - w.start;
    o
}

/// What pupil `p` saw, up to now.
pub fn analyse(w: &World, p: usize, profile: &'static str) -> Outcome {
    let log = w.pupil(p);
    let end = w.now;
    let first = log.first_video.unwrap_or(end);
    let since = |t: Instant| t.saturating_duration_since(first);
    let mut switches = Vec::new();
    let mut last_rid = None;
    for (t, rid, _) in &log.decoded {
        if last_rid != Some(*rid) {
            switches.push((since(*t), *rid));
            last_rid = Some(*rid);
        }
    }
    let mut changes: Vec<Duration> = switches.iter().map(|(t, _)| *t).collect();
    let mut was_paused = false;
    for (t, _, paused) in &log.quality {
        let paused = paused.is_some();
        if paused != was_paused {
            changes.push(since(*t));
        }
        was_paused = paused;
    }
    let settle = changes.into_iter().max().unwrap_or_default();
    let window = Duration::from_secs(3);
    let recent: Vec<u8> = log
        .decoded
        .iter()
        .filter(|(t, _, _)| end.saturating_duration_since(*t) <= window)
        .map(|(_, rid, _)| *rid)
        .collect();
    let mut rids: Vec<u8> = recent.clone();
    rids.sort_unstable();
    rids.dedup();
    // q < h < f, not alphabetical.
    rids.sort_by_key(|r| {
        super::source::RIDS
            .iter()
            .position(|x| x.as_bytes()[0] == *r)
    });
    let settled = if rids.is_empty() {
        "paused".to_string()
    } else {
        rids.iter()
            .map(|r| (*r as char).to_string())
            .collect::<Vec<_>>()
            .join("+")
    };
    let gaps = |times: &[Instant]| {
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain(times.last().map(|t| end - *t))
            .max()
            .unwrap_or(end - first)
    };
    let decoded: Vec<Instant> = log.decoded.iter().map(|(t, _, _)| *t).collect();
    let audio: Vec<Instant> = log.audio.iter().copied().filter(|t| *t >= first).collect();
    let quality = log
        .quality
        .iter()
        .map(|(t, layer, paused)| {
            let what = match (layer, paused) {
                (_, Some(PauseReason::WeakNetwork)) => "paused".to_string(),
                (_, Some(PauseReason::CodecUnsupported)) => "unplayable".to_string(),
                (Some(l), None) => format!("{l:?}").to_lowercase(),
                (None, None) => "none".to_string(),
            };
            format!(
                "{what}@{:.1}",
                t.saturating_duration_since(first).as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let run = end.saturating_duration_since(first);
    Outcome {
        profile,
        settled,
        fps: recent.len() as f64 / window.as_secs_f64(),
        settle,
        still_changing: settle + window > run,
        freeze: gaps(&decoded),
        audio_gap: gaps(&audio),
        switches: switches
            .iter()
            .map(|(t, r)| format!("{}@{:.1}", *r as char, t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" "),
        quality,
        estimate_kbps: log.estimate_bps.map(|b| b / 1000),
        dropped: (0, 0),
        undecodable: log.undecodable,
        cpu: Duration::ZERO,
        simulated: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: Duration = Duration::from_secs(20);
    /// The harness is not bit-for-bit repeatable (str0m draws unseeded randomness and iterates
    /// hash maps), so one run is one draw: every profile runs under these seeds and the checks
    /// hold the median to the documented tolerance and the worst run to a wider one.
    const SEEDS: [u64; 5] = [14, 15, 16, 17, 18];

    fn runs(name: &str, source: SourceConfig, what: &str) -> Vec<Outcome> {
        SEEDS
            .iter()
            .map(|&seed| {
                let o = run_profile(&HomeLink::named(name), source.clone(), seed, RUN);
                eprintln!("{} ({what}, seed {seed})", o.row());
                o
            })
            .collect()
    }

    /// The real-time table's stream: these rows are compared with it.
    fn run(name: &str) -> Vec<Outcome> {
        runs(name, SourceConfig::realtime_test(), "small keyframes")
    }

    /// Keyframes as large as a browser's (`SourceConfig::default`).
    fn run_browser(name: &str) -> Vec<Outcome> {
        runs(name, SourceConfig::default(), "browser keyframes")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn median(os: &[Outcome], f: impl Fn(&Outcome) -> Duration) -> Duration {
        let mut v: Vec<Duration> = os.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn worst(os: &[Outcome], f: impl Fn(&Outcome) -> Duration) -> Duration {
        os.iter().map(f).max().unwrap_or_default()
    }

    /// How many runs satisfy `f`.
    fn count(os: &[Outcome], f: impl Fn(&Outcome) -> bool) -> usize {
        os.iter().filter(|o| f(o)).count()
    }

    /// The tolerances of `docs/ADAPTATION.md` ("In virtual time"): most runs settle on an
    /// expected layer and none is left paused; the median settle time and freeze are within
    /// bounds and the worst freeze within twice that; no run's audio gap exceeds its bound
    /// (audio goes first whatever the loss draw).
    fn check(
        os: &[Outcome],
        settled: &[&str],
        settle: Duration,
        freeze: Duration,
        audio: Duration,
    ) {
        let majority = os.len() / 2 + 1;
        assert!(
            count(os, |o| settled.contains(&o.settled.as_str())) >= majority,
            "settled elsewhere in most runs: {os:#?}"
        );
        assert_eq!(count(os, |o| o.settled == "paused"), 0, "{os:#?}");
        assert!(median(os, |o| o.settle) <= settle, "settled late: {os:#?}");
        assert!(median(os, |o| o.freeze) <= freeze, "froze: {os:#?}");
        assert!(worst(os, |o| o.freeze) <= freeze * 2, "froze: {os:#?}");
        assert!(worst(os, |o| o.audio_gap) <= audio, "audio gap: {os:#?}");
    }

    #[test]
    fn fiber() {
        check(&run("fiber"), &["f"], secs(12), ms(300), ms(150));
    }

    #[test]
    fn cable_busy() {
        check(&run("cable-busy"), &["f"], secs(12), ms(600), ms(400));
    }

    #[test]
    fn lte() {
        check(&run("lte"), &["f"], secs(15), ms(600), ms(400));
    }

    #[test]
    fn lte_weak() {
        check(
            &run("lte-weak"),
            &["h", "f", "h+f"],
            secs(20),
            ms(1000),
            ms(500),
        );
    }

    #[test]
    fn congested() {
        check(
            &run("congested"),
            &["q", "q+h", "h"],
            secs(20),
            ms(1500),
            ms(600),
        );
    }

    #[test]
    fn fiber_with_browser_keyframes() {
        check(&run_browser("fiber"), &["f"], secs(12), ms(300), ms(150));
    }

    #[test]
    fn cable_busy_with_browser_keyframes() {
        let os = run_browser("cable-busy");
        assert!(count(&os, |o| o.switches.contains("f@")) >= 3, "{os:#?}");
        assert_eq!(count(&os, |o| o.settled == "paused"), 0, "{os:#?}");
    }

    #[test]
    fn lte_with_browser_keyframes() {
        let os = run_browser("lte");
        assert!(count(&os, |o| o.switches.contains("f@")) >= 3, "{os:#?}");
        assert_eq!(count(&os, |o| o.settled == "paused"), 0, "{os:#?}");
    }

    #[test]
    fn lte_weak_with_browser_keyframes() {
        let os = run_browser("lte-weak");
        assert_eq!(count(&os, |o| o.settled == "paused"), 0, "{os:#?}");
        assert!(worst(&os, |o| o.audio_gap) <= ms(600), "{os:#?}");
    }

    #[test]
    fn congested_with_browser_keyframes() {
        // On `q` in two runs of three, on `h` (which 0.6 Mbit/s just carries) in the rest.
        let os = run_browser("congested");
        assert_eq!(count(&os, |o| o.settled == "paused"), 0, "{os:#?}");
        assert!(worst(&os, |o| o.audio_gap) <= ms(600), "{os:#?}");
    }
}
