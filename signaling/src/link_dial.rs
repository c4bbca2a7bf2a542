//! The partner side of lesson links: keeps one WebSocket to the host's `/ws` per link this
//! server dials, and bridges it to a local participant seated for the link in the partner's
//! own room (docs/PROTOCOL.md, "Lesson links", "The bridge").
//!
//! The local participant is an ordinary session over an in-memory socket (as WHIP's), seated
//! by [`session::run_seated`]; the dialer talks to it in the same protocol as to the host. So
//! both servers run the same link session code: the host's `subscriber_offer` becomes a local
//! `publish` (each track naming its host person), the local `publish_answer` the host's
//! `subscriber_answer`; the local `subscriber_offer` becomes a host `publish`, the host's
//! `publish_answer` the local `subscriber_answer`. Each side learns the other's people by
//! `link_people`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt, sink, stream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use crate::Inner;
use crate::link_gate::{LinkRefusal, MAX_OUTGOING_LINKS, OutgoingLink};
use crate::link_host::{Dial, MAX_LINK_PEOPLE, Side};
use crate::protocol::{
    ClientMessage, ErrorCode, GoodbyeReason, LinkPerson, PROTOCOL_VERSION, ParticipantInfo,
    ServerMessage, TrackInfo, WireTrackSpec,
};
use crate::session::{self, Frame, Seat};
use crate::token::Role;

/// How often the list of links to dial is asked for.
const POLL: Duration = Duration::from_secs(5);
/// How long the gate may take to list them.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// Opening the host's socket, and the host's answer to `link_join`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings on both sockets (the server closes a socket silent for 30 s); the host answers each.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A host heard nothing from for this long (three pings unanswered) is gone: its socket is
/// given up and dialled again. Longer than a short outage of the path, which the link rides
/// out on the same socket and the same connections; shorter than the host's own limit (30 s),
/// and than the time its link connections' checks take to fail (about 20 s), so a longer
/// outage ends in a new seat, not a socket that TCP retries for minutes.
const HOST_SILENT: Duration = Duration::from_secs(15);
/// Reconnect backoff: from the first to the longest wait, doubling, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How long a seated link must have stayed up for its loss to start the backoff over.
const STABLE: Duration = Duration::from_secs(30);
/// For this long after a seated link was lost, dials that fail to reach the host are retried
/// quickly ([`QUICK_PAUSE`], [`QUICK_CONNECT`]): the path may come back any moment, and the
/// joint lesson should resume within seconds of it, not after an 8 s backoff. A failed dial
/// seats nothing, so it costs neither room anything.
const QUICK_FOR: Duration = Duration::from_secs(60);
/// The longest pause between such quick dials.
const QUICK_PAUSE: Duration = Duration::from_secs(1);
/// How long a quick dial waits for the host's TCP handshake (a SYN lost to a dead path is
/// otherwise retried by the kernel only after 1, 3, 7 s).
const QUICK_CONNECT: Duration = Duration::from_secs(2);
/// Frames above this are cut by the WebSocket layer (as the server's own, `ws.rs`).
const WEBSOCKET_HARD_LIMIT: usize = 1024 * 1024;
/// How long the local seat may take to leave when the link ends.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the gate every few seconds which links to dial, and keeps one task per link.
pub(crate) async fn supervise(weak: Weak<Inner>) {
    let mut running: HashMap<String, Dialling> = HashMap::new();
    // Refused for good: not dialled again while the gate still lists them.
    let mut refused: HashSet<String> = HashSet::new();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut shutdown = inner.shutdown.subscribe();
        if *shutdown.borrow() {
            return;
        }
        let mut wanted = tokio::time::timeout(POLL_TIMEOUT, inner.links().outgoing())
            .await
            .unwrap_or_else(|_| {
                warn!("the link gate did not list the links to dial in time");
                Vec::new()
            });
        wanted.truncate(MAX_OUTGOING_LINKS);
        let finished: Vec<String> = running
            .iter()
            .filter(|(_, d)| d.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            if let Some(d) = running.remove(&id)
                && let Ok(Ended::Refused) = d.task.await
            {
                refused.insert(id);
            }
        }
        refused.retain(|id| wanted.iter().any(|l| &l.link_id == id));
        // Links no longer listed, or listed differently (a new key), end.
        running.retain(|id, d| {
            let keep = wanted.iter().any(|l| &l.link_id == id && *l == d.link);
            if !keep {
                let _ = d.stop.send(true);
            }
            keep
        });
        for link in wanted {
            if running.contains_key(&link.link_id) || refused.contains(&link.link_id) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(dial(inner.clone(), link.clone(), stopped));
            running.insert(link.link_id.clone(), Dialling { link, stop, task });
        }
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

struct Dialling {
    link: OutgoingLink,
    stop: watch::Sender<bool>,
    task: JoinHandle<Ended>,
}

/// How a link's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Told to stop (no longer listed, or the server shuts down).
    Stopped,
    /// The host refused the link for good; the gate was told.
    Refused,
}

/// How one connection to the host ended.
enum Outcome {
    Stopped,
    Refused(LinkRefusal),
    /// Lost, or never made; `seated` says whether the host had seated the link.
    Lost {
        seated: bool,
    },
}

/// When to dial again: a doubling backoff with jitter, quick for a while after a seated link
/// was lost. Plain state, so the policy is tested without sockets.
#[derive(Debug)]
struct Redial {
    wait: Duration,
    /// When a seated link was last lost.
    lost_seated: Option<Instant>,
}

/// What a dial came to, as far as the next one is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialled {
    /// Seated, and lost after this long.
    Seated(Duration),
    /// The host was not reached, or did not answer `link_join` in time.
    Failed,
    /// The host refused for now (its lesson is not on).
    Refused,
}

impl Redial {
    fn new() -> Redial {
        Redial {
            wait: BACKOFF_FIRST,
            lost_seated: None,
        }
    }

    /// Whether the next dial is a quick one (shorter TCP handshake limit, short pauses).
    fn quick(&self, now: Instant) -> bool {
        self.lost_seated
            .is_some_and(|at| now.saturating_duration_since(at) < QUICK_FOR)
    }

    /// The pause before the next dial after `dialled`; `jitter` in 0.75..1.25.
    fn pause(&mut self, dialled: Dialled, now: Instant, jitter: f64) -> Duration {
        let quick = match dialled {
            Dialled::Seated(lasted) => {
                // Only a link that stayed up starts the backoff over: one whose media never
                // connects, or that two dialers keep replacing, would otherwise come and go
                // every half second, each time telling both rooms.
                if lasted >= STABLE {
                    self.wait = BACKOFF_FIRST;
                }
                self.lost_seated = Some(now);
                false
            }
            Dialled::Failed => self.quick(now),
            Dialled::Refused => false,
        };
        // Jitter: links cut together (the host restarted) do not all come back at once.
        let wait = if quick {
            self.wait.min(QUICK_PAUSE)
        } else {
            self.wait
        };
        let pause = wait.mul_f64(jitter).min(BACKOFF_MAX);
        self.wait = (self.wait * 2).min(BACKOFF_MAX);
        pause
    }
}

/// Dials one link until told to stop or refused for good, reconnecting with backoff.
async fn dial(inner: Arc<Inner>, link: OutgoingLink, mut stop: watch::Receiver<bool>) -> Ended {
    let mut redial = Redial::new();
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let began = Instant::now();
        let tcp_limit = if redial.quick(began) {
            QUICK_CONNECT
        } else {
            CONNECT_TIMEOUT
        };
        let dialled = match connect_once(&inner, &link, &mut stop, tcp_limit).await {
            Outcome::Stopped => return Ended::Stopped,
            Outcome::Refused(refusal) if refusal.permanent => {
                info!(link = %link.link_id, code = refusal.code, "the host refused the lesson link for good");
                inner.links().refused(&link, &refusal);
                return Ended::Refused;
            }
            Outcome::Refused(refusal) => {
                debug!(link = %link.link_id, code = refusal.code, "the host refused the lesson link for now");
                Dialled::Refused
            }
            Outcome::Lost { seated: true } => Dialled::Seated(began.elapsed()),
            Outcome::Lost { seated: false } => Dialled::Failed,
        };
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let pause = redial.pause(dialled, Instant::now(), jitter);
        debug!(link = %link.link_id, ?dialled, ?pause, "dialling the host again");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
            _ = shutdown.wait_for(|s| *s) => return Ended::Stopped,
        }
    }
}

type HostSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn client_text(msg: &ClientMessage) -> String {
    // Plain structs: serialising cannot fail; an empty frame would only be refused.
    serde_json::to_string(msg).unwrap_or_default()
}

/// Opens the host's WebSocket: the TCP handshake within `tcp_limit`, all of it within
/// [`CONNECT_TIMEOUT`].
async fn open_host(url: &str, tcp_limit: Duration) -> Result<HostSocket, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let request = url.into_client_request().map_err(|e| e.to_string())?;
    let uri = request.uri();
    let host = uri.host().ok_or("the host's URL names no host")?;
    let port = uri
        .port_u16()
        .or(match uri.scheme_str() {
            Some("wss") => Some(443),
            Some("ws") => Some(80),
            _ => None,
        })
        .ok_or("the host's URL is not ws:// or wss://")?;
    let address = format!("{host}:{port}");
    let tcp = match tokio::time::timeout(tcp_limit, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no TCP handshake within {tcp_limit:?}")),
    };
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(WEBSOCKET_HARD_LIMIT))
        .max_frame_size(Some(WEBSOCKET_HARD_LIMIT));
    let handshake =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), None);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the WebSocket handshake did not end in time".into()),
    }
}

/// One connection: open, `link_join`, seat locally, bridge until it ends.
async fn connect_once(
    inner: &Arc<Inner>,
    link: &OutgoingLink,
    stop: &mut watch::Receiver<bool>,
    tcp_limit: Duration,
) -> Outcome {
    let mut host = match open_host(&link.host_ws_url, tcp_limit).await {
        Ok(socket) => socket,
        Err(e) => {
            debug!(link = %link.link_id, "could not open the host's socket: {e}");
            inner.link_stats.dialled(Dial::Failed);
            return Outcome::Lost { seated: false };
        }
    };
    let join = ClientMessage::LinkJoin {
        v: Some(PROTOCOL_VERSION),
        id: Some("link".into()),
        link_id: link.link_id.clone(),
        key: link.key.clone(),
        room: link.host_room.clone(),
        school: None,
    };
    if host
        .send(Message::Text(client_text(&join).into()))
        .await
        .is_err()
    {
        inner.link_stats.dialled(Dial::Failed);
        return Outcome::Lost { seated: false };
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let joined = loop {
        let msg = match tokio::time::timeout_at(deadline, read_host(inner, &mut host)).await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => {
                inner.link_stats.dialled(Dial::Failed);
                return Outcome::Lost { seated: false };
            }
        };
        match msg {
            ServerMessage::Joined { participants, .. } => break participants,
            ServerMessage::Error { code, message, .. } => {
                inner.link_stats.dialled(Dial::Refused);
                return Outcome::Refused(refusal_of(code, message));
            }
            _ => continue,
        }
    };
    inner.link_stats.dialled(Dial::Connected);
    info!(link = %link.link_id, host = %link.host_ws_url, "lesson link connected to its host");
    let outcome = bridge(inner, link, &mut host, joined, stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), host.close(None)).await;
    outcome
}

/// The refusal an `error` answer to `link_join` stands for.
fn refusal_of(code: ErrorCode, message: String) -> LinkRefusal {
    let (code, permanent) = match code {
        ErrorCode::LinkUnknown => ("link_unknown", true),
        ErrorCode::LinkBadKey => ("link_bad_key", true),
        ErrorCode::LinkRevoked => ("link_revoked", true),
        ErrorCode::LinkExpired => ("link_expired", true),
        ErrorCode::LinkWrongRoom => ("link_wrong_room", true),
        ErrorCode::LinkNotRunning => ("link_not_running", false),
        // Anything else (a host that speaks another version, its media plane down) may pass.
        _ => ("link_not_running", false),
    };
    LinkRefusal {
        code,
        message,
        permanent,
    }
}

/// The next message from the host; `None` when the socket is gone. Frames that are not
/// messages (pings, oversized or unreadable text) are skipped.
async fn read_host(inner: &Inner, host: &mut HostSocket) -> Option<ServerMessage> {
    loop {
        match host.next().await? {
            Ok(Message::Text(t)) => {
                if t.len() > inner.config.max_message_bytes {
                    warn!("a message from a link's host is too large; skipped");
                    continue;
                }
                match serde_json::from_str::<ServerMessage>(t.as_str()) {
                    Ok(msg) => return Some(msg),
                    Err(e) => debug!("an unreadable message from a link's host: {e}"),
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Who is in a room, as one side of the bridge sees it: participant id → name and role.
#[derive(Default)]
struct Roster {
    people: HashMap<String, (String, bool)>,
}

impl Roster {
    fn add(&mut self, p: &ParticipantInfo) {
        // A person brought by another link is announced as this room's: nothing more of them
        // is known here.
        if p.role != Role::PartnerLink {
            self.people.insert(
                p.participant_id.clone(),
                (p.name.clone(), p.role == Role::Teacher),
            );
        }
    }

    /// The people owning `tracks`, as `link_people` lists them, and each track naming its
    /// owner. An owner not in the roster is announced under `unknown`.
    fn announce(
        &self,
        tracks: &[TrackInfo],
        unknown: &str,
    ) -> (Vec<LinkPerson>, Vec<WireTrackSpec>) {
        let mut people: Vec<LinkPerson> = Vec::new();
        let mut specs = Vec::with_capacity(tracks.len());
        for t in tracks {
            if !people.iter().any(|p| p.reference == t.participant_id)
                && people.len() < MAX_LINK_PEOPLE
            {
                let (name, teacher) = self
                    .people
                    .get(&t.participant_id)
                    .cloned()
                    .unwrap_or_else(|| (unknown.to_owned(), false));
                people.push(LinkPerson {
                    reference: t.participant_id.clone(),
                    name,
                    teacher,
                });
            }
            specs.push(WireTrackSpec {
                mid: t.mid.clone().unwrap_or_default(),
                source: t.source,
                person: Some(t.participant_id.clone()),
            });
        }
        (people, specs)
    }
}

type LocalStream = Pin<Box<dyn Stream<Item = Frame> + Send>>;
type LocalSink = Pin<Box<dyn Sink<Frame, Error = ()> + Send>>;

/// The two ends of the local seat's in-memory socket.
fn local_socket() -> (
    LocalStream,
    LocalSink,
    mpsc::Sender<Frame>,
    mpsc::Receiver<Frame>,
) {
    let (to_session, from_dialer) = mpsc::channel::<Frame>(16);
    let (to_dialer, from_session) = mpsc::channel::<Frame>(256);
    let stream = stream::unfold(from_dialer, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    });
    let sink = sink::unfold(to_dialer, |tx, frame: Frame| async move {
        tx.send(frame).await.map(|()| tx).map_err(|_| ())
    });
    (Box::pin(stream), Box::pin(sink), to_session, from_session)
}

/// Seats the link locally and carries messages both ways until either side ends.
async fn bridge(
    inner: &Arc<Inner>,
    link: &OutgoingLink,
    host: &mut HostSocket,
    host_people: Vec<ParticipantInfo>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let (stream, sink, to_local, mut from_local) = local_socket();
    let seat = Seat {
        link_id: link.link_id.clone(),
        room: link.local_room.clone(),
        school: link.host_school.clone(),
        side: Side::Partner,
        admitted: None,
    };
    let local = tokio::spawn(session::run_seated(inner.clone(), stream, sink, seat));
    let mut bridge = Bridge {
        host_roster: Roster::default(),
        local_roster: Roster::default(),
        announced_here: None,
        announced_there: None,
        serial: 0,
    };
    for p in &host_people {
        bridge.host_roster.add(p);
    }
    let mut shutdown = inner.shutdown.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut heard = Instant::now();
    let outcome = loop {
        let step = tokio::select! {
            msg = read_host(inner, host) => match msg {
                Some(msg) => {
                    heard = Instant::now();
                    bridge.on_host(msg)
                }
                None => break Outcome::Lost { seated: true },
            },
            () = tokio::time::sleep_until(heard + HOST_SILENT) => {
                info!(link = %link.link_id, "the host has not answered for {HOST_SILENT:?}; dialling again");
                break Outcome::Lost { seated: true };
            }
            frame = from_local.recv() => match frame {
                Some(Frame::Text(t)) => match serde_json::from_str::<ServerMessage>(&t) {
                    Ok(msg) => bridge.on_local(msg, &link.host_school),
                    Err(_) => Step::default(),
                },
                // The local seat ended (its media path failed): start over.
                Some(Frame::Close(..)) | None => break Outcome::Lost { seated: true },
                Some(Frame::Binary(_)) => Step::default(),
            },
            _ = ping.tick() => Step {
                to_host: vec![ClientMessage::Ping { v: None, id: None }],
                to_local: vec![ClientMessage::Ping { v: None, id: None }],
                end: None,
            },
            _ = stop.wait_for(|s| *s) => Step {
                to_host: vec![ClientMessage::Leave { v: None, id: None }],
                to_local: Vec::new(),
                end: Some(Outcome::Stopped),
            },
            _ = shutdown.wait_for(|s| *s) => break Outcome::Stopped,
        };
        for msg in &step.to_local {
            if to_local.send(Frame::Text(client_text(msg))).await.is_err() {
                break;
            }
        }
        let mut lost = false;
        for msg in &step.to_host {
            let send = host.send(Message::Text(client_text(msg).into()));
            if !matches!(
                tokio::time::timeout(inner.config.send_timeout, send).await,
                Ok(Ok(()))
            ) {
                lost = true;
                break;
            }
        }
        if let Some(end) = step.end {
            break end;
        }
        if lost {
            break Outcome::Lost { seated: true };
        }
    };
    // The local seat leaves (and its people with it) before anything is dialled again.
    let _ = to_local
        .send(Frame::Text(client_text(&ClientMessage::Leave {
            v: None,
            id: None,
        })))
        .await;
    drop(to_local);
    drop(from_local);
    if tokio::time::timeout(LEAVE_TIMEOUT, local).await.is_err() {
        warn!(link = %link.link_id, "the local seat of a lesson link did not leave in time");
    }
    outcome
}

/// What one message makes the bridge send, and whether the connection ends.
#[derive(Default)]
struct Step {
    to_host: Vec<ClientMessage>,
    to_local: Vec<ClientMessage>,
    end: Option<Outcome>,
}

/// The bridge's state: both rooms' rosters, and the people lists last announced each way.
struct Bridge {
    host_roster: Roster,
    local_roster: Roster,
    /// The host's people last announced to the local seat.
    announced_here: Option<Vec<LinkPerson>>,
    /// This side's people last announced to the host.
    announced_there: Option<Vec<LinkPerson>>,
    serial: u64,
}

impl Bridge {
    fn next_id(&mut self, prefix: &str) -> Option<String> {
        self.serial += 1;
        Some(format!("{prefix}{}", self.serial))
    }

    fn on_host(&mut self, msg: ServerMessage) -> Step {
        let mut step = Step::default();
        match msg {
            ServerMessage::ParticipantJoined { participant } => self.host_roster.add(&participant),
            ServerMessage::ParticipantLeft { participant_id } => {
                self.host_roster.people.remove(&participant_id);
            }
            // The host's media for the link: published here as the host people's tracks.
            ServerMessage::SubscriberOffer { sdp, tracks } => {
                let (people, specs) = self.host_roster.announce(&tracks, "?");
                if self.announced_here.as_ref() != Some(&people) {
                    self.announced_here = Some(people.clone());
                    step.to_local.push(ClientMessage::LinkPeople {
                        v: None,
                        id: None,
                        people,
                    });
                }
                step.to_local.push(ClientMessage::Publish {
                    v: None,
                    id: self.next_id("host-offer-"),
                    sdp,
                    tracks: specs,
                });
            }
            // The host took this side's media.
            ServerMessage::PublishAnswer { sdp, .. } => {
                step.to_local.push(ClientMessage::SubscriberAnswer {
                    v: None,
                    id: None,
                    sdp,
                });
            }
            // The host saw the path of this side's media down and wants the connection
            // carrying it restarted: its offers come from this side's shard.
            ServerMessage::IceRestartWanted { .. } => {
                step.to_local
                    .push(ClientMessage::IceRestart { v: None, id: None });
            }
            // The host's subscribers need only these layers of a track this side sends it:
            // the local shard stops the others crossing.
            ServerMessage::SetEncodings { mid, active, .. } => {
                step.to_local.push(ClientMessage::LinkLayers {
                    v: None,
                    id: None,
                    mid,
                    active,
                });
            }
            ServerMessage::Error { code, message, .. } => {
                warn!(?code, %message, "the host refused a lesson link's request");
            }
            ServerMessage::Goodbye { reason } => {
                step.end = Some(match reason {
                    GoodbyeReason::Revoked => Outcome::Refused(LinkRefusal {
                        code: "link_revoked",
                        message: "the host revoked the lesson link".into(),
                        permanent: true,
                    }),
                    _ => Outcome::Lost { seated: true },
                });
            }
            _ => {}
        }
        step
    }

    fn on_local(&mut self, msg: ServerMessage, host_school: &str) -> Step {
        let mut step = Step::default();
        match msg {
            ServerMessage::Joined { participants, .. } => {
                for p in participants.iter().filter(|p| !p.remote) {
                    self.local_roster.add(p);
                }
            }
            ServerMessage::ParticipantJoined { participant } if !participant.remote => {
                self.local_roster.add(&participant);
            }
            ServerMessage::ParticipantLeft { participant_id } => {
                self.local_roster.people.remove(&participant_id);
            }
            // This side's media for the host: published there as this side's people's tracks.
            ServerMessage::SubscriberOffer { sdp, tracks } => {
                let (people, specs) = self.local_roster.announce(&tracks, "?");
                if self.announced_there.as_ref() != Some(&people) {
                    self.announced_there = Some(people.clone());
                    step.to_host.push(ClientMessage::LinkPeople {
                        v: None,
                        id: None,
                        people,
                    });
                }
                step.to_host.push(ClientMessage::Publish {
                    v: None,
                    id: self.next_id("partner-offer-"),
                    sdp,
                    tracks: specs,
                });
            }
            // The local shard took the host's media.
            ServerMessage::PublishAnswer { sdp, .. } => {
                step.to_host.push(ClientMessage::SubscriberAnswer {
                    v: None,
                    id: None,
                    sdp,
                });
            }
            // This shard saw the path of the host's media down: the host's offers carry it,
            // so the host restarts it.
            ServerMessage::IceRestartWanted { .. } => {
                step.to_host
                    .push(ClientMessage::IceRestart { v: None, id: None });
            }
            // This side's subscribers need only these layers of a track the host sends: the
            // host stops the others crossing (dynacast across the link).
            ServerMessage::SetEncodings { mid, active, .. } => {
                step.to_host.push(ClientMessage::LinkLayers {
                    v: None,
                    id: None,
                    mid,
                    active,
                });
            }
            ServerMessage::Error { code, message, .. } => {
                warn!(?code, %message, school = host_school, "this server refused a lesson link's request");
            }
            // This server removed the seat (its side of the link was ended): leave the host;
            // the supervisor dials again only if the gate still lists the link.
            ServerMessage::Goodbye {
                reason: GoodbyeReason::Revoked,
            } => {
                step.to_host
                    .push(ClientMessage::Leave { v: None, id: None });
                step.end = Some(Outcome::Stopped);
            }
            ServerMessage::Goodbye { .. } => step.end = Some(Outcome::Lost { seated: true }),
            _ => {}
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Kind, Source};

    fn bridge() -> Bridge {
        Bridge {
            host_roster: Roster::default(),
            local_roster: Roster::default(),
            announced_here: None,
            announced_there: None,
            serial: 0,
        }
    }

    fn person(id: &str, name: &str, role: Role, remote: bool) -> ParticipantInfo {
        ParticipantInfo {
            participant_id: id.into(),
            identity: id.into(),
            name: name.into(),
            role,
            school: None,
            remote,
        }
    }

    fn track(mid: &str, owner: &str) -> TrackInfo {
        TrackInfo {
            mid: Some(mid.into()),
            track_id: format!("TR_{mid}"),
            participant_id: owner.into(),
            kind: Kind::Video,
            source: Source::Camera,
        }
    }

    #[test]
    fn refusals_stop_the_dialer_unless_the_lesson_is_only_not_on() {
        for code in [
            ErrorCode::LinkUnknown,
            ErrorCode::LinkBadKey,
            ErrorCode::LinkRevoked,
            ErrorCode::LinkExpired,
            ErrorCode::LinkWrongRoom,
        ] {
            assert!(refusal_of(code, String::new()).permanent, "{code:?}");
        }
        assert!(!refusal_of(ErrorCode::LinkNotRunning, String::new()).permanent);
        assert!(!refusal_of(ErrorCode::Internal, String::new()).permanent);
    }

    #[test]
    fn a_host_offer_is_announced_once_and_published_with_owners() {
        let mut b = bridge();
        b.on_host(ServerMessage::ParticipantJoined {
            participant: person("PA_1", "先生", Role::Teacher, false),
        });
        let offer = ServerMessage::SubscriberOffer {
            sdp: "o".into(),
            tracks: vec![track("0", "PA_1"), track("1", "PA_1")],
        };
        let step = b.on_host(offer.clone());
        assert!(step.to_host.is_empty());
        match &step.to_local[..] {
            [
                ClientMessage::LinkPeople { people, .. },
                ClientMessage::Publish { tracks, .. },
            ] => {
                assert_eq!(people.len(), 1);
                assert!(people[0].teacher);
                assert_eq!(people[0].name, "先生");
                assert!(tracks.iter().all(|t| t.person.as_deref() == Some("PA_1")));
            }
            other => panic!("{other:?}"),
        }
        // The same people again: only the offer.
        let step = b.on_host(offer);
        assert!(matches!(
            &step.to_local[..],
            [ClientMessage::Publish { .. }]
        ));
    }

    #[test]
    fn this_sides_people_cross_but_imported_ones_do_not_enter_the_roster() {
        let mut b = bridge();
        b.on_local(
            ServerMessage::ParticipantJoined {
                participant: person("PA_9", "remote", Role::Student, true),
            },
            "S",
        );
        b.on_local(
            ServerMessage::ParticipantJoined {
                participant: person("PA_2", "花子", Role::Student, false),
            },
            "S",
        );
        assert!(!b.local_roster.people.contains_key("PA_9"));
        let step = b.on_local(
            ServerMessage::SubscriberOffer {
                sdp: "o".into(),
                tracks: vec![track("0", "PA_2")],
            },
            "S",
        );
        match &step.to_host[..] {
            [
                ClientMessage::LinkPeople { people, .. },
                ClientMessage::Publish { .. },
            ] => {
                assert_eq!(people[0].name, "花子");
            }
            other => panic!("{other:?}"),
        }
        let step = b.on_local(
            ServerMessage::PublishAnswer {
                id: None,
                sdp: "a".into(),
                tracks: vec![],
            },
            "S",
        );
        assert!(matches!(
            &step.to_host[..],
            [ClientMessage::SubscriberAnswer { .. }]
        ));
    }

    #[test]
    fn ice_restarts_go_to_the_side_whose_offers_carry_the_path() {
        let mut b = bridge();
        // The host's publish connection (this side's media) is quiet: this shard offers it.
        let step = b.on_host(ServerMessage::IceRestartWanted {
            connection: "publish".into(),
        });
        assert!(matches!(
            &step.to_local[..],
            [ClientMessage::IceRestart { .. }]
        ));
        assert!(step.to_host.is_empty());
        // This side's import (the host's media) is quiet: the host offers it.
        let step = b.on_local(
            ServerMessage::IceRestartWanted {
                connection: "publish".into(),
            },
            "S",
        );
        assert!(matches!(
            &step.to_host[..],
            [ClientMessage::IceRestart { .. }]
        ));
        assert!(step.to_local.is_empty());
    }

    #[test]
    fn redials_are_quick_for_a_while_after_a_seated_link_was_lost() {
        let t0 = Instant::now();
        let mut r = Redial::new();
        // Never seated: the ordinary backoff, doubling to its cap.
        let pauses: Vec<Duration> = (0..6).map(|_| r.pause(Dialled::Failed, t0, 1.0)).collect();
        assert_eq!(pauses[0], BACKOFF_FIRST);
        assert_eq!(pauses[1], BACKOFF_FIRST * 2);
        assert_eq!(pauses[5], BACKOFF_MAX);
        assert!(!r.quick(t0));

        // A link seated for long is lost: the backoff starts over, and dials that do not reach
        // the host come at most a second apart for a while.
        let lost = t0 + Duration::from_secs(100);
        assert_eq!(r.pause(Dialled::Seated(STABLE), lost, 1.0), BACKOFF_FIRST);
        assert!(r.quick(lost));
        for i in 1..10 {
            let p = r.pause(Dialled::Failed, lost + Duration::from_secs(i * 3), 1.25);
            assert!(p <= QUICK_PAUSE.mul_f64(1.25), "{p:?}");
        }
        // Long after the loss, the ordinary backoff again.
        let later = lost + QUICK_FOR;
        assert!(!r.quick(later));
        assert_eq!(r.pause(Dialled::Failed, later, 1.0), BACKOFF_MAX);

        // A seat that keeps being lost soon keeps backing off: the rooms are not told every
        // half second.
        let mut r = Redial::new();
        let short = Duration::from_secs(2);
        let pauses: Vec<Duration> = (0..5)
            .map(|i| r.pause(Dialled::Seated(short), t0 + Duration::from_secs(i), 1.0))
            .collect();
        assert_eq!(pauses[4], BACKOFF_MAX);
        // A host whose lesson is not on is asked at the ordinary pace.
        let mut r = Redial::new();
        r.pause(Dialled::Seated(STABLE), t0, 1.0);
        r.pause(Dialled::Refused, t0, 1.0);
        r.pause(Dialled::Refused, t0, 1.0);
        assert_eq!(r.pause(Dialled::Refused, t0, 1.0), BACKOFF_FIRST * 8);
    }

    #[test]
    fn goodbyes_end_the_connection_as_they_mean() {
        let mut b = bridge();
        let step = b.on_host(ServerMessage::Goodbye {
            reason: GoodbyeReason::Revoked,
        });
        assert!(matches!(
            step.end,
            Some(Outcome::Refused(LinkRefusal {
                permanent: true,
                ..
            }))
        ));
        let step = b.on_host(ServerMessage::Goodbye {
            reason: GoodbyeReason::ServerShutdown,
        });
        assert!(matches!(step.end, Some(Outcome::Lost { .. })));
        // This server ended its seat: the host is left, nothing is redialled by this task.
        let step = b.on_local(
            ServerMessage::Goodbye {
                reason: GoodbyeReason::Revoked,
            },
            "S",
        );
        assert!(matches!(step.end, Some(Outcome::Stopped)));
        assert!(matches!(&step.to_host[..], [ClientMessage::Leave { .. }]));
    }

    #[test]
    fn each_sides_layer_wants_go_to_the_side_that_sends_the_track() {
        let mut b = bridge();
        let wants = || ServerMessage::SetEncodings {
            track_id: "T1".into(),
            mid: "4".into(),
            active: vec!["q".into(), "h".into()],
        };
        // The host's pupils want two layers of a partner track: the partner's seat hears it.
        let step = b.on_host(wants());
        assert!(step.to_host.is_empty());
        assert!(matches!(
            &step.to_local[..],
            [ClientMessage::LinkLayers { mid, active, .. }] if mid == "4" && active.len() == 2
        ));
        // The partner's pupils want two layers of a host track: the host hears it.
        let step = b.on_local(wants(), "S");
        assert!(step.to_local.is_empty());
        assert!(matches!(
            &step.to_host[..],
            [ClientMessage::LinkLayers { mid, active, .. }] if mid == "4" && active[1] == "h"
        ));
    }
}
