//! Behaviour a user would notice, in virtual time: a picture that pauses on a link too weak for
//! any layer and comes back by itself, layer switches that start on the target's keyframe, and
//! a pupil's PLIs reaching the teacher no more often than the throttle allows.

use std::time::Duration;

use super::link::Shaping;
use super::profiles::analyse;
use super::source::SourceConfig;
use super::world::World;
use crate::command::PauseReason;

fn home() -> Shaping {
    Shaping::NONE
        .rate(5_000_000)
        .delay(Duration::from_millis(20), Duration::from_millis(2))
}

fn connected(seed: u64, down: Shaping, up: Shaping) -> (World, usize) {
    let mut w = World::new(seed, SourceConfig::default());
    let p = w.add_pupil(down, up);
    assert!(w.run_until_true(Duration::from_secs(10), |w| w.pupil_connected(p)));
    (w, p)
}

fn paused(w: &World, p: usize) -> Option<bool> {
    w.pupil(p)
        .quality
        .last()
        .map(|(_, _, paused)| *paused == Some(PauseReason::WeakNetwork))
}

#[test]
fn video_pauses_on_a_link_too_weak_for_any_layer_and_resumes_by_itself() {
    let (mut w, p) = connected(21, home(), home());
    w.run_for(Duration::from_secs(10));
    assert_eq!(paused(&w, p), Some(false));
    // Opus fits 90 kbit/s; Opus and the lowest layer do not.
    w.down(p).reshape(home().rate(90_000));
    let weakened = w.now;
    let audio_before = w.pupil(p).audio.len();
    assert!(
        w.run_until_true(Duration::from_secs(20), |w| paused(w, p) == Some(true)),
        "never paused: {:?}",
        w.pupil(p).quality
    );
    let paused_after = w.now - weakened;
    // The audio kept flowing through the weak spell.
    let audio: Vec<_> = w.pupil(p).audio[audio_before..].to_vec();
    let gap = audio
        .windows(2)
        .map(|a| a[1] - a[0])
        .max()
        .unwrap_or_default();
    assert!(audio.len() > 100, "{} audio packets", audio.len());
    w.down(p).reshape(home());
    let recovered = w.now;
    let decoded_before = w.pupil(p).decoded.len();
    assert!(
        w.run_until_true(Duration::from_secs(25), |w| paused(w, p) == Some(false)),
        "never resumed: {:?}",
        w.pupil(p).quality
    );
    let resumed_after = w.now - recovered;
    w.run_for(Duration::from_secs(2));
    let after = &w.pupil(p).decoded[decoded_before..];
    // The picture is back, from a keyframe.
    assert!(
        after.first().is_some_and(|&(_, _, keyframe)| keyframe),
        "the picture came back without a keyframe"
    );
    assert!(after.len() > 20, "{} frames after the resume", after.len());
    eprintln!(
        "paused {:.1} s after the link weakened (audio gap {} ms), resumed {:.1} s after it recovered",
        paused_after.as_secs_f64(),
        gap.as_millis(),
        resumed_after.as_secs_f64()
    );
    // Later than in real time (4.8–6 s there): see docs/ADAPTATION.md ("In virtual time").
    assert!(paused_after < Duration::from_secs(14), "{paused_after:?}");
    assert!(resumed_after < Duration::from_secs(20), "{resumed_after:?}");
    // The real-time test holds this under 500 ms; see docs/ADAPTATION.md ("In virtual time").
    assert!(gap < Duration::from_secs(1), "audio gap {gap:?}");
}

#[test]
fn a_switch_starts_on_the_keyframe_of_the_target_layer() {
    let (mut w, p) = connected(22, home(), home());
    w.run_for(Duration::from_secs(15));
    let log = w.pupil(p);
    let mut last = None;
    let mut switches = 0;
    for (t, rid, keyframe) in &log.decoded {
        if last.is_some_and(|l| l != *rid) {
            switches += 1;
            assert!(
                keyframe,
                "switch to {} at {t:?} not on a keyframe",
                *rid as char
            );
        }
        last = Some(*rid);
    }
    assert!(
        switches >= 1,
        "never switched: {:?}",
        analyse(&w, p, "home")
    );
    assert_eq!(log.undecodable, 0);
}

/// The real-time `simulcast_e2e` test of three pupils, in virtual time: each gets the layer its
/// link allows (300 kbit/s: `q`; 800 kbit/s: `h`; unlimited: `f`), and when the slow pupil's
/// limit is lifted the estimate probes its way up and the pupil climbs back to `f`. Four seeds;
/// three must climb back within 15 s (measured 2026-12-07: 7–12.5 s in 24 runs; in one of 27
/// earlier runs str0m's estimate stood at 452 kbit/s for 30 s on the lifted link while probes
/// were asked for, see docs/ADAPTATION.md). The real-time test allows 20 s.
#[test]
fn pupils_get_the_layer_their_link_allows_and_climb_back_when_it_is_lifted() {
    let climbs: Vec<Option<Duration>> = (25..29).map(climb_back).collect();
    let within = climbs
        .iter()
        .filter(|c| c.is_some_and(|c| c <= Duration::from_secs(15)))
        .count();
    assert!(within >= 3, "climbed back to f after: {climbs:?}");
}

/// One run of the three pupils; how long the slow one took to climb back to `f` (`None`: not
/// within 40 s).
fn climb_back(seed: u64) -> Option<Duration> {
    use super::profiles::HomeLink;
    let congested = HomeLink {
        down_mbps: 0.3,
        ..HomeLink::named("congested")
    };
    let lte_weak = HomeLink {
        down_mbps: 0.8,
        ..HomeLink::named("lte-weak")
    };
    let fiber = HomeLink::named("fiber");
    let mut w = World::new(seed, SourceConfig::realtime_test());
    let pupils: Vec<(usize, &str)> = [(congested, "q"), (lte_weak, "h"), (fiber, "f")]
        .iter()
        .map(|(link, want)| (w.add_pupil(link.down(false), link.up(false)), *want))
        .collect();
    assert!(w.run_until_true(Duration::from_secs(10), |w| {
        pupils.iter().all(|&(p, _)| w.pupil_connected(p))
    }));
    for (&(p, _), link) in pupils.iter().zip([congested, lte_weak, fiber]) {
        w.down(p).reshape(link.down(true));
        w.up(p).reshape(link.up(true));
    }
    let settled = |w: &World| {
        pupils
            .iter()
            .all(|&(p, want)| analyse(w, p, "three").settled == want)
    };
    // Settled: each on its own layer for the last 3 s (the real-time test allows 35 s).
    assert!(
        w.run_until_true(Duration::from_secs(35), settled),
        "seed {seed}: {:#?}",
        pupils
            .iter()
            .map(|&(p, _)| analyse(&w, p, "three"))
            .collect::<Vec<_>>()
    );
    let (slow, _) = pupils[0];
    w.down(slow).reshape(fiber.down(true));
    w.up(slow).reshape(fiber.up(true));
    let lifted = w.now;
    // Back on `f`: only `f` for the last second, as the real-time test checks.
    let only_f_lately = |w: &World| {
        let recent: Vec<u8> = w
            .pupil(slow)
            .decoded
            .iter()
            .filter(|(t, _, _)| w.now.saturating_duration_since(*t) <= Duration::from_secs(1))
            .map(|(_, rid, _)| *rid)
            .collect();
        !recent.is_empty() && recent.iter().all(|&r| r == b'f')
    };
    let climbed = w
        .run_until_true(Duration::from_secs(40), only_f_lately)
        .then(|| w.now - lifted);
    eprintln!(
        "seed {seed}: climbed back to f after {climbed:?}; estimate {:?} bit/s",
        w.pupil(slow).estimate_bps
    );
    if climbed.is_some() {
        // The estimate went past `f`'s 1.5 Mbit/s: it was probed for, not merely allowed.
        assert!(
            w.pupil(slow).estimate_bps.is_some_and(|e| e > 1_500_000),
            "seed {seed}: {:?}",
            w.pupil(slow).estimate_bps
        );
    }
    // The other two kept their layers meanwhile.
    for &(p, want) in &pupils[1..] {
        assert_eq!(analyse(&w, p, "kept").settled, want, "seed {seed}");
    }
    climbed
}

/// Issue 14: on a layer switch the picture's timeline continues by the publisher's capture
/// clock (its sender reports), not by when packets arrived. The small picture is captured
/// 120 ms before it is sent, the others as they are sent, as an encoder whose sizes have
/// different latencies: by arrival, a switch from `q` would jump 120 ms short.
#[test]
fn a_switch_keeps_the_timeline_of_the_capture_clock() {
    let mut config = SourceConfig::realtime_test();
    config.capture_lag = [Duration::from_millis(120), Duration::ZERO, Duration::ZERO];
    let mut w = World::new(24, config);
    let p = w.add_pupil(home(), home());
    assert!(w.run_until_true(Duration::from_secs(10), |w| w.pupil_connected(p)));
    w.run_for(Duration::from_secs(15));
    let timeline = &w.pupil(p).timeline;
    let mut switches = Vec::new();
    for pair in timeline.windows(2) {
        let [(from, a, a_rtp), (to, b, b_rtp)] = [pair[0], pair[1]];
        if from == to {
            continue;
        }
        let (Some(a_at), Some(b_at)) = (w.captured(from, a), w.captured(to, b)) else {
            panic!("a frame the teacher never sent: {pair:?}");
        };
        let captured = b_at.saturating_duration_since(a_at).as_micros() as i64 * 90 / 1000;
        let jumped = b_rtp as i64 - a_rtp as i64;
        switches.push((from as char, to as char, captured, jumped));
    }
    assert!(
        switches.iter().any(|s| s.0 == 'q'),
        "no switch from q: {switches:?} ({:?})",
        analyse(&w, p, "home")
    );
    // Within a frame (3000 ticks at 30 frames a second) of the capture clock.
    for s in &switches {
        assert!(
            (s.3 - s.2).abs() <= 3000,
            "switch {s:?} (from, to, captured, jumped)"
        );
    }
}

#[test]
fn a_pupils_plis_reach_the_teacher_throttled() {
    let (mut w, p) = connected(23, home(), home());
    w.run_for(Duration::from_secs(15));
    assert_eq!(analyse(&w, p, "home").settled, "f");
    let from = w.now - w.start;
    // A decoder asking every 20 ms for a second.
    for _ in 0..50 {
        w.pupil_pli(p);
        w.run_for(Duration::from_millis(20));
    }
    let asked: Vec<Duration> = w
        .keyframe_requests()
        .iter()
        .filter(|(t, s)| *t >= from && *s == 2)
        .map(|(t, _)| *t)
        .collect();
    // At most one per 500 ms per layer (`core::throttle`), and at least the first.
    assert!((1..=3).contains(&asked.len()), "{asked:?}");
    assert!(
        asked
            .windows(2)
            .all(|a| a[1] - a[0] >= Duration::from_millis(500)),
        "{asked:?}"
    );
    assert!(
        w.keyframes().iter().any(|(t, s)| *t > asked[0] && *s == 2),
        "no keyframe of f after the request"
    );
}
