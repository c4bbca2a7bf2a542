//! Issue 15's must-show: "the link path dropped for 5 s: the joint lesson resumes within 5 s of
//! its return; each side's own media never stopped."
//!
//! Two servers in this process, each with its own database, linked by invitation as in
//! tests/lesson_link_e2e.rs. Only the path between the two servers is cut, in the kernel, by
//! nftables drop rules in a table of this test's own:
//!
//! * the partner's media binds on another loopback address ([`PARTNER_MEDIA`]), so its link
//!   connections send from there: their UDP to and from the host's media port is dropped, while
//!   pupils on either side keep talking to their own server;
//! * the partner dials the host's WebSocket through a TCP relay in this test (the host's
//!   `links.public_url` names it): the relay's port is dropped. The TCP connection is not
//!   closed, only silent, as on a real network that went away.
//!
//! The rules go after 5 s (and, in a second test, 20 s: longer than the partner waits for a
//! silent host, so it ends in a new seat). Each pupil must keep receiving their own teacher throughout (no
//! gap over [`MAX_OWN_GAP`]), and each must receive the other school's teacher again (a new
//! keyframe and sound) within [`RESUME_LIMIT`] of the return. Needs root and `nft` (as CI has);
//! set `CLASSROOM_TEST_NO_NFT=1` to skip it where they are missing.

use crate::portal_support as portal;
use crate::support;
use crate::two_schools;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use classroom_signaling::token::Role;
use portal::{Options, PortalServer, bounded};
use support::{MediaPump, PumpConfig, Source, TestClient, is_vp8_keyframe_start};
use tokio::net::{TcpListener, TcpStream};
use two_schools::{SCHOOL, join, link_lessons, receives, remote_participant};

const LIMIT: Duration = Duration::from_secs(180);
/// The partner server's media address: all of 127.0.0.0/8 is loopback.
const PARTNER_MEDIA: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// The promise: the joint lesson resumes within 5 s of the path's return.
const RESUME_LIMIT: Duration = Duration::from_secs(5);
/// How long the test watches for the resumption before it fails (so a slow one is measured).
const RESUME_WATCH: Duration = Duration::from_secs(20);
/// Own media never stops: no gap between packets of one's own teacher longer than this.
const MAX_OWN_GAP: Duration = Duration::from_secs(1);

static TABLES: AtomicU32 = AtomicU32::new(0);

/// An nftables table of this test's own, dropping what its rules match; deleted when dropped,
/// also when the test fails half-way.
struct DropRules {
    name: String,
}

impl DropRules {
    /// Installs `rules` (nft rule statements) in an input chain of a new table.
    fn install(rules: &[String]) -> Result<DropRules> {
        let name = format!(
            "classroom_link_outage_{}_{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        let mut script = format!(
            "table inet {name} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
        );
        for rule in rules {
            script.push_str(&format!("    {rule}\n"));
        }
        script.push_str("  }\n}\n");
        nft(&["-f", "-"], Some(&script)).context("installing the drop rules")?;
        Ok(DropRules { name })
    }
}

impl Drop for DropRules {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", &self.name], None) {
            eprintln!("warning: cannot delete nft table {}: {e:#}", self.name);
        }
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether this machine lets the test cut paths; `Ok(false)` only when told to skip.
fn nft_usable() -> Result<bool> {
    match nft(&["list", "tables"], None) {
        Ok(()) => Ok(true),
        Err(_) if std::env::var_os("CLASSROOM_TEST_NO_NFT").is_some() => {
            eprintln!("note: nft unusable and CLASSROOM_TEST_NO_NFT set: link_outage skipped");
            Ok(false)
        }
        Err(e) => Err(e).context(
            "this test cuts paths with nftables and needs root and nft \
             (CLASSROOM_TEST_NO_NFT=1 skips it)",
        ),
    }
}

/// A TCP relay in front of the host: the partner's dialer reaches the host through it, so its
/// port names the link's WebSocket.
async fn relay(listener: TcpListener, to: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// One pupil, and what they should receive.
struct Watcher<'a> {
    who: &'static str,
    pupil: &'a TestClient,
    /// Their own teacher's participant id and track ids (microphone, camera).
    own_teacher: String,
    own_tracks: [String; 2],
}

/// When a pupil got the other school's teacher again after `back`: (first sound, first
/// keyframe).
#[derive(Debug, Default, Clone, Copy)]
struct Resumed {
    audio: Option<Duration>,
    keyframe: Option<Duration>,
}

impl Watcher<'_> {
    /// The other school's teacher's tracks the pupil is offered now (after a new seat of the
    /// link they are other tracks of another remote participant).
    fn remote_tracks(&self, source: Source) -> Vec<String> {
        self.pupil
            .subscriber
            .offered()
            .into_values()
            .filter(|t| t.source == source.as_str() && t.participant_id != self.own_teacher)
            .map(|t| t.track_id)
            .collect()
    }

    fn resumed(&self, back: Instant) -> Resumed {
        let first = |source: Source, keyframe: bool| {
            self.remote_tracks(source)
                .iter()
                .flat_map(|t| self.pupil.subscriber.received(t))
                .filter(|p| p.at >= back && (!keyframe || is_vp8_keyframe_start(&p.payload)))
                .map(|p| p.at - back)
                .min()
        };
        Resumed {
            audio: first(Source::Microphone, false),
            keyframe: first(Source::Camera, true),
        }
    }

    /// The longest gap between packets of the pupil's own teacher between `from` and `to`
    /// (the ends count as packets), per track.
    fn own_gaps(&self, from: Instant, to: Instant) -> Vec<(String, Duration)> {
        self.own_tracks
            .iter()
            .map(|track| {
                let mut times: Vec<Instant> = self
                    .pupil
                    .subscriber
                    .received(track)
                    .into_iter()
                    .map(|p| p.at)
                    .filter(|at| *at >= from && *at <= to)
                    .collect();
                times.push(from);
                times.push(to);
                times.sort();
                let gap = times
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .max()
                    .unwrap_or_default();
                (track.clone(), gap)
            })
            .collect()
    }
}

async fn metric(server: &PortalServer, series: &str) -> String {
    let text = reqwest::get(format!("{}/metrics", server.metrics_url()))
        .await
        .ok();
    let text = match text {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    text.lines()
        .find(|l| l.starts_with(series))
        .map(|l| l.trim_start_matches(series).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_second_outage_of_the_link_path_resumes_within_five_seconds() -> Result<()> {
    // Twice: the second outage finds the link as the first one left it.
    outages(Duration::from_secs(5), 2).await
}

/// Longer than the dialer waits for a silent host (15 s): the partner gives the socket up,
/// dials again quickly while the path is down, and the new seat must bring the joint lesson
/// back as fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_twenty_second_outage_ends_in_a_new_seat_that_resumes_within_five_seconds() -> Result<()>
{
    outages(Duration::from_secs(20), 1).await
}

/// Cuts the path between the two servers `count` times for `outage` each and checks each
/// return.
async fn outages(outage: Duration, count: usize) -> Result<()> {
    support::init_logging();
    if !nft_usable()? {
        return Ok(());
    }
    bounded(LIMIT, async {
        let front = TcpListener::bind("127.0.0.1:0").await?;
        let relay_port = front.local_addr()?.port();
        let host = PortalServer::start(Options {
            links_public_url: Some(format!("http://127.0.0.1:{relay_port}")),
            ..Options::default()
        })
        .await?;
        let relayed = tokio::spawn(relay(front, host.handle.http_addr));
        let partner = PortalServer::start(Options {
            media_address: Some(PARTNER_MEDIA),
            ..Options::default()
        })
        .await?;
        let host_media = host.handle.media_addr.port();
        link_lessons(&host, &partner).await?;

        let host_teacher = join(&host, "t-001", "田中 先生", Role::Teacher).await?;
        let host_pupil = join(&host, "s-001", "佐藤 さん", Role::Student).await?;
        let partner_teacher = join(&partner, "t-001", "鈴木 先生", Role::Teacher).await?;
        let partner_pupil = join(&partner, "s-001", "高橋 さん", Role::Student).await?;
        let host_pump = MediaPump::start(
            host_teacher.publish(&[Source::Microphone, Source::Camera]).await?,
            PumpConfig::default(),
        );
        let partner_pump = MediaPump::start(
            partner_teacher.publish(&[Source::Microphone, Source::Camera]).await?,
            PumpConfig::default(),
        );
        // Browsers ping every 10 s; the test's clients do not by themselves, and this test
        // outlasts the server's 30 s limit for a silent socket.
        let signals: Vec<_> = [&host_teacher, &host_pupil, &partner_teacher, &partner_pupil]
            .iter()
            .map(|c| c.signal.clone())
            .collect();
        let pinger = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                for s in &signals {
                    let _ = s.send_json(&serde_json::json!({"type": "ping"}));
                }
            }
        });
        let there = remote_participant(&partner_pupil, "田中 先生", SCHOOL).await?;
        receives(&partner_pupil, &there).await?;
        let here = remote_participant(&host_pupil, "鈴木 先生", SCHOOL).await?;
        receives(&host_pupil, &here).await?;

        let own = |teacher: &TestClient| -> Result<[String; 2]> {
            let p = teacher.publisher()?;
            Ok([p.track_id(Source::Microphone)?, p.track_id(Source::Camera)?])
        };
        let watchers = [
            Watcher {
                who: "host pupil",
                pupil: &host_pupil,
                own_teacher: host_teacher.participant_id.clone(),
                own_tracks: own(&host_teacher)?,
            },
            Watcher {
                who: "partner pupil",
                pupil: &partner_pupil,
                own_teacher: partner_teacher.participant_id.clone(),
                own_tracks: own(&partner_teacher)?,
            },
        ];
        let rules = [
            // The dialer's WebSocket, both ways.
            format!("tcp dport {relay_port} drop"),
            format!("tcp sport {relay_port} drop"),
            // The link's media: the partner's link sockets and the host's media port.
            format!("ip saddr {PARTNER_MEDIA} udp dport {host_media} drop"),
            format!("ip daddr {PARTNER_MEDIA} udp sport {host_media} drop"),
        ];

        let mut failures = Vec::new();
        for round in 1..=count {
            let cut = Instant::now();
            let rules = DropRules::install(&rules)?;
            tokio::time::sleep(outage).await;
            drop(rules);
            let back = Instant::now();

            let deadline = back + RESUME_WATCH;
            let mut resumed = [Resumed::default(); 2];
            loop {
                for (w, r) in watchers.iter().zip(resumed.iter_mut()) {
                    *r = w.resumed(back);
                }
                let done = resumed.iter().all(|r| r.audio.is_some() && r.keyframe.is_some());
                if done || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let end = Instant::now();
            for (w, r) in watchers.iter().zip(&resumed) {
                let gaps = w.own_gaps(cut - Duration::from_millis(500), end);
                eprintln!(
                    "outage {round} ({outage:?}): {}: other school's sound after {:?}, picture (keyframe) after {:?}; own teacher's longest gaps {:?}",
                    w.who,
                    r.audio,
                    r.keyframe,
                    gaps.iter().map(|(_, g)| *g).collect::<Vec<_>>()
                );
                for (track, gap) in gaps {
                    if gap > MAX_OWN_GAP {
                        failures.push(format!(
                            "outage {round} ({outage:?}): the {}'s own teacher's track {track} stopped for {gap:?}",
                            w.who
                        ));
                    }
                }
                match (r.audio, r.keyframe) {
                    (Some(a), Some(k)) if a.max(k) <= RESUME_LIMIT => {}
                    _ => failures.push(format!(
                        "outage {round} ({outage:?}): the {} got the other school's teacher back late: sound {:?}, picture {:?}",
                        w.who, r.audio, r.keyframe
                    )),
                }
            }
            eprintln!(
                "outage {round} ({outage:?}): partner dials connected {}, failed {}",
                metric(&partner, "classroom_link_dials_total{result=\"connected\"}").await,
                metric(&partner, "classroom_link_dials_total{result=\"failed\"}").await,
            );
            // The next outage starts from a steady lesson.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("\n"));
        }

        host_pump.stop().await?;
        partner_pump.stop().await?;
        relayed.abort();
        pinger.abort();
        host.shutdown().await;
        partner.shutdown().await;
        Ok(())
    })
    .await
}
