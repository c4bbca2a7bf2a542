//! One participant from join to leave: signaling on this task, media on its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::media::{self, MediaCmd, MediaOptions, MediaReport, PublishPlan};
use crate::signal::{Identity, MaxLayer, MediaKind, Session, SignalEvent, Target};
use crate::stats::Counters;

/// What one participant does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub identity: Identity,
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
    /// From WebSocket connect to `joined`.
    pub join_reply: Option<Duration>,
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
    mut stop: watch::Receiver<bool>,
    ready: Option<oneshot::Sender<Result<(), String>>>,
) -> ParticipantReport {
    let counters: Arc<Counters> = plan.media.counters.clone();
    let started = plan.media.join_started;
    let mut report = ParticipantReport {
        identity: plan.identity.id.clone(),
        teacher: plan.identity.teacher,
        join_reply: None,
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
    counters.joined.fetch_add(1, Ordering::Relaxed);

    let (cmds, cmd_rx) = mpsc::channel(16);
    let media_task = tokio::spawn(media::run(plan.media.clone(), cmd_rx));

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
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ping.tick() => {
                if let Err(e) = session.keepalive().await {
                    report.failures.push(format!("ping: {e}"));
                    break;
                }
            }
            event = session.next_event() => match event {
                SignalEvent::SubscriberOffer { sdp, tracks } => {
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
    session.leave().await;
    drop(cmds);
    match media_task.await {
        Ok(m) => report.media = Some(m),
        Err(e) => report.failures.push(format!("media task: {e}")),
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
