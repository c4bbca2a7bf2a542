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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
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
/// Pings on both sockets (the server closes a socket silent for 30 s).
const PING_EVERY: Duration = Duration::from_secs(10);
/// Reconnect backoff: from the first to the longest wait, doubling, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How long a seated link must have stayed up for its loss to start the backoff over.
const STABLE: Duration = Duration::from_secs(30);
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

/// Dials one link until told to stop or refused for good, reconnecting with backoff.
async fn dial(inner: Arc<Inner>, link: OutgoingLink, mut stop: watch::Receiver<bool>) -> Ended {
    let mut wait = BACKOFF_FIRST;
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let began = tokio::time::Instant::now();
        match connect_once(&inner, &link, &mut stop).await {
            Outcome::Stopped => return Ended::Stopped,
            Outcome::Refused(refusal) if refusal.permanent => {
                info!(link = %link.link_id, code = refusal.code, "the host refused the lesson link for good");
                inner.links().refused(&link, &refusal);
                return Ended::Refused;
            }
            Outcome::Refused(refusal) => {
                debug!(link = %link.link_id, code = refusal.code, "the host refused the lesson link for now");
            }
            Outcome::Lost { seated } => {
                // Only a link that stayed up starts the backoff over: one whose media never
                // connects, or that two dialers keep replacing, would otherwise come and go
                // every half second, each time telling both rooms.
                if seated && began.elapsed() >= STABLE {
                    wait = BACKOFF_FIRST;
                }
            }
        }
        // Jitter: links cut together (the host restarted) do not all come back at once.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let pause = wait.mul_f64(jitter).min(BACKOFF_MAX);
        wait = (wait * 2).min(BACKOFF_MAX);
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

/// One connection: open, `link_join`, seat locally, bridge until it ends.
async fn connect_once(
    inner: &Arc<Inner>,
    link: &OutgoingLink,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let config = WebSocketConfig::default()
        .max_message_size(Some(WEBSOCKET_HARD_LIMIT))
        .max_frame_size(Some(WEBSOCKET_HARD_LIMIT));
    let connect =
        tokio_tungstenite::connect_async_with_config(link.host_ws_url.as_str(), Some(config), true);
    let mut host = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => {
            debug!(link = %link.link_id, "could not open the host's socket: {e}");
            inner.link_stats.dialled(Dial::Failed);
            return Outcome::Lost { seated: false };
        }
        Err(_) => {
            debug!(link = %link.link_id, "the host's socket did not open in time");
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
    let outcome = loop {
        let step = tokio::select! {
            msg = read_host(inner, host) => match msg {
                Some(msg) => bridge.on_host(msg),
                None => break Outcome::Lost { seated: true },
            },
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
}
