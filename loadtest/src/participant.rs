//! One participant from join to leave: signaling on this task, media on its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::media::{self, ClientKind, MediaCmd, MediaOptions, MediaReport, PublishPlan};
use crate::signal::{Identity, MaxLayer, MediaKind, Session, SignalEvent, Target};
use crate::stats::Counters;

/// What the run tells a participant through its stop channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep going.
    Run,
    /// Leave properly: a `leave` message, a WebSocket close, then the peer connections close.
    Leave,
    /// Vanish, as a tablet that loses its network or is shut: the WebSocket and the UDP sockets
    /// are dropped without a word, so the server finds out from the TCP close and ICE timeouts.
    Drop,
}

/// What one participant does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub identity: Identity,
    /// A pupil that replaces a churned one (reported apart from the initial ramp).
    pub rejoin: bool,
    pub publish: Option<PublishPlan>,
    /// The highest layer asked for of every received video track.
    pub max_layer: MaxLayer,
    pub media: MediaOptions,
}

/// How it went.
#[derive(Debug)]
pub struct ParticipantReport {
    pub identity: String,
    pub teacher: bool,
    pub rejoin: bool,
    /// From the start of the join to the open WebSocket (TCP connect and HTTP upgrade), when the
    /// target tells.
    pub ws_open: Option<Duration>,
    /// From the start of the join (WebSocket connect) to `joined`.
    pub join_reply: Option<Duration>,
    /// From the start of the join to the server's first subscriber offer.
    pub first_offer: Option<Duration>,
    /// Told to leave (or vanish) before the end of the run.
    pub churned: bool,
    pub failures: Vec<String>,
    pub media: Option<MediaReport>,
}

/// Clients should ping every 10 s (docs/PROTOCOL.md).
const PING_INTERVAL: Duration = Duration::from_secs(10);

async fn ask<T>(
    cmds: &mpsc::Sender<MediaCmd>,
    make: impl FnOnce(oneshot::Sender<T>) -> MediaCmd,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    cmds.send(make(tx)).await.ok()?;
    rx.await.ok()
}

/// Joins, publishes if planned, answers offers until `stop`, then leaves. `ready` is told once
/// the publish connection is answered (or at once for non-publishers).
pub async fn run<T: Target>(
    target: Arc<T>,
    plan: Plan,
    mut stop: watch::Receiver<Stop>,
    ready: Option<oneshot::Sender<Result<(), String>>>,
) -> ParticipantReport {
    let counters: Arc<Counters> = plan.media.counters.clone();
    let started = plan.media.join_started;
    let pupil = !plan.identity.teacher;
    let mut report = ParticipantReport {
        identity: plan.identity.id.clone(),
        teacher: plan.identity.teacher,
        rejoin: plan.rejoin,
        ws_open: None,
        join_reply: None,
        first_offer: None,
        churned: false,
        failures: Vec::new(),
        media: None,
    };
    let mut ready = ready;
    let mut session = match target.join(&plan.identity).await {
        Ok(s) => s,
        Err(e) => {
            report.failures.push(format!("join: {e}"));
            counters.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(r) = ready.take() {
                let _ = r.send(Err(format!("join: {e}")));
            }
            return report;
        }
    };
    report.join_reply = Some(started.elapsed());
    report.ws_open = session
        .connected_at()
        .map(|at| at.saturating_duration_since(started));
    counters.joined.fetch_add(1, Ordering::Relaxed);
    if pupil {
        counters.pupil_joins.fetch_add(1, Ordering::Relaxed);
    }

    let (cmds, cmd_rx) = mpsc::channel(16);
    let media_task = match plan.media.client {
        ClientKind::Str0m => tokio::spawn(media::run(plan.media.clone(), cmd_rx)),
        ClientKind::WebrtcRs => tokio::spawn(crate::webrtc_pupil::run(plan.media.clone(), cmd_rx)),
    };

    if let Some(publish) = plan.publish.clone() {
        let result = publish_once(&mut session, &cmds, publish).await;
        if let Err(e) = &result {
            report.failures.push(e.clone());
        }
        if let Some(r) = ready.take() {
            let _ = r.send(result);
        }
    } else if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }

    let mut capped: Vec<String> = Vec::new();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    // A stop sent while joining is seen here at once: `changed` only reports later sends.
    let mut how = *stop.borrow_and_update();
    while how == Stop::Run {
        tokio::select! {
            changed = stop.changed() => {
                // A dropped sender (the run is over) means leave; the loop ends unless it is Run.
                how = if changed.is_ok() { *stop.borrow_and_update() } else { Stop::Leave };
            }
            _ = ping.tick() => {
                if let Err(e) = session.keepalive().await {
                    report.failures.push(format!("ping: {e}"));
                    break;
                }
            }
            event = session.next_event() => match event {
                SignalEvent::SubscriberOffer { sdp, tracks } => {
                    report.first_offer.get_or_insert_with(|| started.elapsed());
                    let answer = ask(&cmds, |reply| MediaCmd::SubscriberOffer { sdp, reply }).await;
                    match answer {
                        Some(Ok(answer)) => {
                            if let Err(e) = session.answer(&answer).await {
                                report.failures.push(format!("subscriber answer: {e}"));
                                break;
                            }
                        }
                        Some(Err(e)) => report.failures.push(format!("subscriber offer: {e}")),
                        None => report.failures.push("media task ended".into()),
                    }
                    if plan.max_layer != MaxLayer::High {
                        for t in tracks.iter().filter(|t| t.kind == MediaKind::Video) {
                            if capped.contains(&t.track_id) {
                                continue;
                            }
                            capped.push(t.track_id.clone());
                            if let Err(e) = session.cap_layer(&t.track_id, plan.max_layer).await {
                                report.failures.push(format!("set_track_quality: {e}"));
                            }
                        }
                    }
                }
                SignalEvent::SetEncodings { active, .. } => {
                    let _ = cmds.send(MediaCmd::SetEncodings { active }).await;
                }
                SignalEvent::Refused { reason } => report.failures.push(format!("refused: {reason}")),
                SignalEvent::Closed { reason } => {
                    report.failures.push(format!("closed by the server: {reason}"));
                    break;
                }
            }
        }
    }
    if how == Stop::Drop {
        // No `leave`, no close frame: the TCP connection just goes away.
        drop(session);
    } else {
        session.leave().await;
    }
    // Closing the command channel ends the media task, which drops both UDP sockets.
    drop(cmds);
    match media_task.await {
        Ok(m) => report.media = Some(m),
        Err(e) => report.failures.push(format!("media task: {e}")),
    }
    if pupil {
        counters.pupil_leaves.fetch_add(1, Ordering::Relaxed);
    }
    if !report.failures.is_empty() {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    report
}

async fn publish_once<S: Session>(
    session: &mut S,
    cmds: &mpsc::Sender<MediaCmd>,
    plan: PublishPlan,
) -> Result<(), String> {
    let offer = ask(cmds, |reply| MediaCmd::MakePublishOffer { plan, reply })
        .await
        .ok_or("media task ended")?
        .map_err(|e| format!("publish offer: {e}"))?;
    let answer = session
        .publish(&offer.sdp, &offer.tracks)
        .await
        .map_err(|e| format!("publish: {e}"))?;
    ask(cmds, |reply| MediaCmd::PublishAnswer { sdp: answer, reply })
        .await
        .ok_or("media task ended")?
        .map_err(|e| format!("publish answer: {e}"))
}

/// Waits (bounded) for a participant's publish to be answered.
pub async fn wait_ready(
    ready: oneshot::Receiver<Result<(), String>>,
    timeout: Duration,
) -> Result<(), String> {
    let t0 = Instant::now();
    match tokio::time::timeout(timeout, ready).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the participant ended before publishing".into()),
        Err(_) => Err(format!("not published within {:?}", t0.elapsed())),
    }
}
