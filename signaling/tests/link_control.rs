//! Lesson links' control channel over real sockets: a host server's `/ws` door for links
//! (`link_join`, `link_people`, `person` tracks), and a partner server's dialer that keeps the
//! link up through a cut and stops for good when the host revokes it, and the bridge that
//! carries each side's offers and answers to the other. Two signaling servers in one process,
//! each with a fake link gate and a fake media plane that answers publishes and records what it
//! was asked (the media of links is the shard's, tested there).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use classroom_sfu::command::PublishAnswer;
use classroom_sfu::{
    ParticipantId, PublishedTrack, ShardCommand, ShardEvent, SubscribedTrack, TrackId, TrackSource,
    TrackSpec,
};
use classroom_signaling::link_gate::{
    AdmitFuture, LinkAdmitted, LinkGate, LinkRefusal, LinkRequest, OutgoingFuture, OutgoingLink,
};
use classroom_signaling::token::{Claims, Role, TokenIssuer};
use classroom_signaling::{Signaling, SignalingConfig};

const SECRET: &[u8] = b"link-control-tests-secret";
/// Every wait of these tests ends by this.
const WAIT: Duration = Duration::from_secs(20);

/// A gate with one good link (`L`, key `k`, room `host-room`); other link ids are refused
/// with the code they name (`link_revoked` …). It counts what it hears.
#[derive(Default)]
struct FakeGate {
    admitted: Mutex<Vec<String>>,
    entered: Mutex<usize>,
    left: Mutex<usize>,
    outgoing: Mutex<Vec<OutgoingLink>>,
    refused: Mutex<Vec<(String, &'static str)>>,
    changed: Notify,
}

fn code_of(link_id: &str) -> Option<&'static str> {
    [
        "link_unknown",
        "link_bad_key",
        "link_revoked",
        "link_expired",
        "link_wrong_room",
        "link_not_running",
    ]
    .into_iter()
    .find(|c| *c == link_id)
}

impl LinkGate for FakeGate {
    fn admit<'a>(&'a self, request: &'a LinkRequest) -> AdmitFuture<'a> {
        Box::pin(async move {
            if let Some(code) = code_of(&request.link_id) {
                return Err(LinkRefusal {
                    code,
                    message: format!("refused: {code}"),
                    permanent: code != "link_not_running",
                });
            }
            if request.key != "k" {
                return Err(LinkRefusal {
                    code: "link_bad_key",
                    message: "wrong key".into(),
                    permanent: true,
                });
            }
            self.admitted.lock().unwrap().push(request.link_id.clone());
            self.changed.notify_waiters();
            Ok(LinkAdmitted {
                link_id: request.link_id.clone(),
                room: request.room.clone(),
                partner_school: "北小学校".into(),
            })
        })
    }

    fn entered(&self, _link: &LinkAdmitted) {
        *self.entered.lock().unwrap() += 1;
        self.changed.notify_waiters();
    }

    fn left(&self, _link: &LinkAdmitted) {
        *self.left.lock().unwrap() += 1;
        self.changed.notify_waiters();
    }

    fn outgoing<'a>(&'a self) -> OutgoingFuture<'a> {
        Box::pin(async move { self.outgoing.lock().unwrap().clone() })
    }

    fn refused(&self, link: &OutgoingLink, refusal: &LinkRefusal) {
        self.refused
            .lock()
            .unwrap()
            .push((link.link_id.clone(), refusal.code));
        self.outgoing.lock().unwrap().clear();
        self.changed.notify_waiters();
    }
}

impl FakeGate {
    /// Waits (bounded) until `ok` holds of the gate.
    async fn until(&self, what: &str, ok: impl Fn(&FakeGate) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            if ok(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out waiting for the gate: {what}");
            }
        }
    }
}

/// What the fake media plane was asked.
#[derive(Default)]
struct Media {
    /// Each publish: the publisher and its tracks' specs.
    publishes: Mutex<Vec<(ParticipantId, Vec<TrackSpec>)>>,
    /// Each subscriber answer: the subscriber and the SDP.
    answers: Mutex<Vec<(ParticipantId, String)>>,
    /// Each `link_layers` passed on: the link participant, the mid and the rids.
    layers: Mutex<Vec<(ParticipantId, String, Vec<String>)>>,
    changed: Notify,
}

impl Media {
    async fn until(&self, what: &str, ok: impl Fn(&Media) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            if ok(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out waiting for the media plane: {what}");
            }
        }
    }
}

/// Answers publishes (`answer from <publisher>`, each track the owner's when it has one) and
/// subscriber answers, and records them.
async fn fake_media(mut commands: mpsc::Receiver<ShardCommand>, media: Arc<Media>) {
    let mut next_track = 1;
    while let Some(cmd) = commands.recv().await {
        match cmd {
            ShardCommand::Publish {
                participant,
                tracks,
                reply,
                ..
            } => {
                let published: Vec<PublishedTrack> = tracks
                    .iter()
                    .map(|t| {
                        next_track += 1;
                        PublishedTrack {
                            track_id: TrackId(next_track),
                            participant: t.owner.map_or(participant, |o| o.participant),
                            source: t.source,
                            mid: t.mid.clone(),
                        }
                    })
                    .collect();
                let _ = reply.send(Ok(PublishAnswer {
                    sdp: format!("answer from {participant}"),
                    tracks: published.clone(),
                    added: published,
                    removed: Vec::new(),
                }));
                media.publishes.lock().unwrap().push((participant, tracks));
            }
            ShardCommand::SubscriberAnswer {
                participant,
                answer,
                reply,
            } => {
                let _ = reply.send(Ok(()));
                media.answers.lock().unwrap().push((participant, answer));
            }
            ShardCommand::LinkLayers {
                participant,
                mid,
                active,
            } => media
                .layers
                .lock()
                .unwrap()
                .push((participant, mid, active)),
            _ => continue,
        }
        media.changed.notify_waiters();
    }
}

struct Server {
    signaling: Signaling,
    gate: Arc<FakeGate>,
    media: Arc<Media>,
    events: mpsc::UnboundedSender<ShardEvent>,
    addr: SocketAddr,
    tokens: TokenIssuer,
}

/// A signaling server on a real port, with a fake media plane.
async fn server() -> Server {
    let (sfu, commands) = mpsc::channel(256);
    let media = Arc::new(Media::default());
    tokio::spawn(fake_media(commands, media.clone()));
    let (events_tx, events) = mpsc::unbounded_channel();
    let signaling = Signaling::new(
        SignalingConfig::default(),
        TokenIssuer::new(SECRET),
        sfu,
        events,
    );
    let gate = Arc::new(FakeGate::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = signaling
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        signaling,
        gate,
        media,
        events: events_tx,
        addr,
        tokens: TokenIssuer::new(SECRET),
    }
}

impl Server {
    fn attach(&self) {
        assert!(self.signaling.attach_links(self.gate.clone()));
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        self.signaling.render_metrics(&mut out);
        out
    }

    /// A pupil (or teacher) in `room`, joined.
    async fn member(&self, room: &str, who: &str, role: Role) -> (Client, Value) {
        let claims = Claims::new(room, who, who, role, Duration::from_secs(600));
        let token = self.tokens.issue(&claims).unwrap();
        let mut c = Client::open(&self.url()).await;
        c.send(json!({"v": 1, "type": "join", "token": token}))
            .await;
        let joined = c.expect("joined", |m| m["type"] == "joined").await;
        (c, joined)
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

struct Client {
    ws: Ws,
}

impl Client {
    async fn open(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next message that `ok` picks, skipping the others; panics at the deadline or if the
    /// socket closes first.
    async fn expect(&mut self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if ok(&v) {
                        return v;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    panic!("the socket closed while waiting for {what}")
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits (bounded) for the server to close the socket.
    async fn closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

fn link_join(link_id: &str, key: &str) -> Value {
    json!({"v": 1, "type": "link_join", "id": "j", "link_id": link_id, "key": key, "room": "host-room"})
}

fn is_error(code: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == "error" && m["code"] == code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_join_refusals_carry_the_gates_code_then_close() {
    let host = server().await;
    host.attach();
    for code in [
        "link_unknown",
        "link_bad_key",
        "link_revoked",
        "link_expired",
        "link_wrong_room",
        "link_not_running",
    ] {
        let mut c = Client::open(&host.url()).await;
        c.send(link_join(code, "k")).await;
        let e = c.expect(code, is_error(code)).await;
        assert_eq!(e["id"], "j", "{e}");
        c.closed().await;
    }
    // A wrong key for a good link, and no `v`.
    let mut c = Client::open(&host.url()).await;
    c.send(link_join("L", "wrong")).await;
    c.expect("link_bad_key", is_error("link_bad_key")).await;
    c.closed().await;
    let mut c = Client::open(&host.url()).await;
    c.send(json!({"type": "link_join", "link_id": "L", "key": "k", "room": "host-room"}))
        .await;
    c.expect("unsupported_version", is_error("unsupported_version"))
        .await;
    // A server without a link gate refuses every link, but not for good: its links may be
    // attached a moment later.
    let bare = server().await;
    let mut c = Client::open(&bare.url()).await;
    c.send(link_join("L", "k")).await;
    c.expect("link_not_running", is_error("link_not_running"))
        .await;
    c.closed().await;
    assert!(host.gate.admitted.lock().unwrap().is_empty());
    assert!(
        host.metrics()
            .contains("classroom_signaling_errors_total{code=\"link_revoked\"} 1"),
        "{}",
        host.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_link_brings_its_people_to_the_room_within_limits() {
    let host = server().await;
    host.attach();
    let (mut pupil, _) = host.member("host-room", "pupil-1", Role::Student).await;

    let mut link = Client::open(&host.url()).await;
    link.send(link_join("L", "k")).await;
    let joined = link.expect("joined", |m| m["type"] == "joined").await;
    assert_eq!(joined["id"], "j");
    assert_eq!(joined["participant"]["role"], "partner_link");
    assert_eq!(joined["participant"]["identity"], "link:L");
    assert_eq!(joined["participant"]["name"], "北小学校");
    // The pupil is listed by name and role; their roster id does not cross.
    let listed = joined["participants"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["role"] == "student"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["identity"], "", "no roster id crosses: {joined}");
    assert!(
        joined.get("resume").is_none(),
        "a link gets no resume credential"
    );
    let seen = pupil
        .expect("the link joins", |m| m["type"] == "participant_joined")
        .await;
    assert_eq!(seen["participant"]["role"], "partner_link");
    host.gate
        .until("entered", |g| *g.entered.lock().unwrap() == 1)
        .await;
    assert!(host.metrics().contains("classroom_links{side=\"host\"} 1"));
    // A pupil who comes later is announced to the link without their roster id too.
    let (_early, _) = host.member("host-room", "pupil-3", Role::Student).await;
    let late = link
        .expect("the late pupil", |m| {
            m["type"] == "participant_joined" && m["participant"]["name"] == "pupil-3"
        })
        .await;
    assert_eq!(
        late["participant"]["identity"], "",
        "no roster id crosses: {late}"
    );
    pupil
        .expect("the late pupil joins", |m| {
            m["type"] == "participant_joined"
        })
        .await;

    link.send(json!({"type": "link_people", "people": [
        {"ref": "7", "name": "山田 花子", "teacher": false},
        {"ref": "8", "name": "佐藤 先生", "teacher": true},
    ]}))
    .await;
    let mut remote = Vec::new();
    for _ in 0..2 {
        let m = pupil
            .expect("a remote person", |m| m["type"] == "participant_joined")
            .await;
        assert_eq!(m["participant"]["remote"], true, "{m}");
        assert_eq!(m["participant"]["school"], "北小学校", "{m}");
        remote.push(m["participant"].clone());
    }
    assert!(
        remote
            .iter()
            .any(|p| p["name"] == "山田 花子" && p["role"] == "student")
    );
    assert!(
        remote
            .iter()
            .any(|p| p["name"] == "佐藤 先生" && p["role"] == "teacher")
    );

    // A newcomer finds them in `joined`.
    let (mut late, late_joined) = host.member("host-room", "pupil-2", Role::Student).await;
    let names: Vec<&str> = late_joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["remote"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{late_joined}");

    // Limits: 65 people; a track of nobody listed; 4 tracks of one person; 33 tracks.
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"ref": i.to_string(), "name": "x"}))
        .collect();
    link.send(json!({"type": "link_people", "id": "p", "people": many}))
        .await;
    let e = link
        .expect("too many people", is_error("bad_request"))
        .await;
    assert_eq!(e["id"], "p");
    let offer = |n: usize| {
        let mut sdp = String::from("v=0\r\n");
        for mid in 0..n {
            sdp.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=sendonly\r\n"
            ));
        }
        sdp
    };
    let tracks = |n: usize, person: &str| -> Vec<Value> {
        (0..n)
            .map(|mid| json!({"mid": mid.to_string(), "source": "camera", "person": person}))
            .collect()
    };
    for (id, n, person, says) in [
        ("nobody", 1, "99", "not in the link"),
        ("four", 4, "7", "at most 3"),
        ("many", 33, "7", "at most 32"),
    ] {
        link.send(
            json!({"type": "publish", "id": id, "sdp": offer(n), "tracks": tracks(n, person)}),
        )
        .await;
        let e = link.expect(id, is_error("bad_request")).await;
        assert_eq!(e["id"], id);
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    }
    // Only a link names a person; only a link sends link_people.
    pupil
        .send(json!({"type": "publish", "id": "pp", "sdp": offer(1), "tracks": tracks(1, "7")}))
        .await;
    let e = pupil
        .expect("person from a pupil", is_error("bad_request"))
        .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("only a lesson link"),
        "{e}"
    );
    pupil
        .send(json!({"type": "link_people", "id": "lp", "people": []}))
        .await;
    pupil
        .expect("link_people from a pupil", is_error("permission_denied"))
        .await;
    // A link takes no part in lesson actions.
    link.send(json!({"type": "raise_hand", "id": "m"})).await;
    link.expect("a lesson action", is_error("permission_denied"))
        .await;

    // A shorter list: who is not in it leaves.
    link.send(json!({"type": "link_people", "people": [{"ref": "8", "name": "佐藤 先生", "teacher": true}]}))
        .await;
    let gone = remote.iter().find(|p| p["name"] == "山田 花子").unwrap()["participant_id"].clone();
    let m = late
        .expect("a remote person leaves", |m| {
            m["type"] == "participant_left"
        })
        .await;
    assert_eq!(m["participant_id"], gone);

    // The link goes: its people go with it.
    link.send(json!({"type": "leave"})).await;
    let mut left = Vec::new();
    for _ in 0..2 {
        let m = late
            .expect("the link's people leave", |m| {
                m["type"] == "participant_left"
            })
            .await;
        left.push(m["participant_id"].clone());
    }
    assert!(left.contains(&joined["participant"]["participant_id"]));
    host.gate
        .until("left", |g| *g.left.lock().unwrap() == 1)
        .await;
    assert!(host.metrics().contains("classroom_links{side=\"host\"} 0"));
}

/// A TCP relay in front of the host whose connections the test can cut.
struct Relay {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let kept = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { addr, conns }
    }

    /// Drops every connection through the relay, as a broken network path would.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_link_comes_back_after_a_cut_and_stops_when_revoked() {
    let host = server().await;
    host.attach();
    let partner = server().await;
    let relay = Relay::start(host.addr).await;
    let (mut host_pupil, _) = host.member("host-room", "host-pupil", Role::Student).await;
    let (mut partner_pupil, _) = partner
        .member("partner-room", "partner-pupil", Role::Student)
        .await;
    partner.gate.outgoing.lock().unwrap().push(OutgoingLink {
        link_id: "L".into(),
        key: "k".into(),
        host_ws_url: format!("ws://{}/ws", relay.addr),
        host_room: "host-room".into(),
        host_school: "南小学校".into(),
        local_room: "partner-room".into(),
    });
    partner.attach();

    // Seated on both sides: the host's pupil and the partner's pupil each see the other school.
    let m = host_pupil
        .expect("the link at the host", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    assert_eq!(m["participant"]["name"], "北小学校");
    let m = partner_pupil
        .expect("the link at the partner", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    assert_eq!(m["participant"]["role"], "partner_link");
    assert_eq!(m["participant"]["name"], "南小学校");
    let first = m["participant"]["participant_id"].clone();
    assert!(
        partner
            .metrics()
            .contains("classroom_links{side=\"partner\"} 1")
    );
    assert!(
        partner
            .metrics()
            .contains("classroom_link_dials_total{result=\"connected\"} 1")
    );

    // The path breaks: the link leaves both rooms and comes back by itself.
    relay.cut();
    let m = partner_pupil
        .expect("the link leaves the partner room", |m| {
            m["type"] == "participant_left"
        })
        .await;
    assert_eq!(m["participant_id"], first);
    host.gate
        .until("a second admission", |g| {
            g.admitted.lock().unwrap().len() == 2
        })
        .await;
    let m = partner_pupil
        .expect("the link back in the partner room", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    assert_eq!(m["participant"]["role"], "partner_link");
    host.gate
        .until("left once", |g| *g.left.lock().unwrap() == 1)
        .await;

    // The host revokes the link: the dialer tells its gate and stops for good.
    assert!(host.signaling.remove_identity("host-room", "link:L").await);
    partner
        .gate
        .until("refused", |g| !g.refused.lock().unwrap().is_empty())
        .await;
    assert_eq!(
        partner.gate.refused.lock().unwrap()[0],
        ("L".to_owned(), "link_revoked")
    );
    partner_pupil
        .expect("the link leaves for good", |m| {
            m["type"] == "participant_left"
        })
        .await;
    host.gate
        .until("left twice", |g| *g.left.lock().unwrap() == 2)
        .await;
    // Two seats, each checked at the door and once more when seated (a revoke may race it).
    assert_eq!(host.gate.admitted.lock().unwrap().len(), 4);
    assert!(
        partner
            .metrics()
            .contains("classroom_links{side=\"partner\"} 0")
    );
}

/// A sending offer of `n` video sections, as a subscriber offer or a publish offer.
fn video_offer(n: usize) -> String {
    let mut sdp = String::from("v=0\r\n");
    for mid in 0..n {
        sdp.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=sendonly\r\n"
        ));
    }
    sdp
}

fn pid(v: &Value) -> ParticipantId {
    ParticipantId::parse(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_carries_each_sides_media_offers_to_the_other() {
    let host = server().await;
    host.attach();
    let partner = server().await;
    let (mut host_pupil, host_pupil_joined) =
        host.member("host-room", "host-pupil", Role::Student).await;
    let (mut partner_pupil, partner_pupil_joined) = partner
        .member("partner-room", "partner-pupil", Role::Student)
        .await;
    partner.gate.outgoing.lock().unwrap().push(OutgoingLink {
        link_id: "L".into(),
        key: "k".into(),
        host_ws_url: host.url(),
        host_room: "host-room".into(),
        host_school: "南小学校".into(),
        local_room: "partner-room".into(),
    });
    partner.attach();
    let at_host = host_pupil
        .expect("the link at the host", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    let host_link = pid(&at_host["participant"]["participant_id"]);
    let at_partner = partner_pupil
        .expect("the link at the partner", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    let partner_link = pid(&at_partner["participant"]["participant_id"]);

    // Host → partner: the host's subscriber offer for the link, with the host pupil's camera,
    // is published on the partner as that pupil's, who appears there as a remote participant.
    let host_pupil_id = pid(&host_pupil_joined["participant"]["participant_id"]);
    host.events
        .send(ShardEvent::SubscriberOffer {
            participant: host_link,
            sdp: video_offer(1),
            tracks: vec![SubscribedTrack {
                mid: "0".into(),
                track_id: TrackId(900),
                participant: host_pupil_id,
                source: TrackSource::Camera,
            }],
        })
        .unwrap();
    let remote = partner_pupil
        .expect("the host pupil, remote", |m| {
            m["type"] == "participant_joined" && m["participant"]["remote"] == true
        })
        .await;
    assert_eq!(remote["participant"]["name"], "host-pupil");
    assert_eq!(remote["participant"]["school"], "南小学校");
    let published = partner_pupil
        .expect("the imported camera", |m| m["type"] == "track_published")
        .await;
    assert_eq!(
        published["track"]["participant_id"],
        remote["participant"]["participant_id"]
    );
    partner
        .media
        .until("the import published", |m| {
            !m.publishes.lock().unwrap().is_empty()
        })
        .await;
    {
        let publishes = partner.media.publishes.lock().unwrap();
        let (publisher, specs) = &publishes[0];
        assert_eq!(*publisher, partner_link);
        assert_eq!(specs[0].audience, classroom_sfu::Audience::Everyone);
        let owner = specs[0].owner.expect("an owner");
        assert_eq!(
            owner.participant,
            pid(&remote["participant"]["participant_id"])
        );
        assert!(!owner.teacher);
    }
    // The partner's answer goes back to the host's media plane as the link's answer.
    host.media
        .until("the link's answer at the host", |m| {
            m.answers
                .lock()
                .unwrap()
                .iter()
                .any(|(p, _)| *p == host_link)
        })
        .await;
    assert!(
        host.media.answers.lock().unwrap()[0]
            .1
            .contains(&format!("answer from {partner_link}"))
    );

    // Partner → host: the partner seat's subscriber offer with the partner pupil's camera.
    let partner_pupil_id = pid(&partner_pupil_joined["participant"]["participant_id"]);
    partner
        .events
        .send(ShardEvent::SubscriberOffer {
            participant: partner_link,
            sdp: video_offer(1),
            tracks: vec![SubscribedTrack {
                mid: "0".into(),
                track_id: TrackId(901),
                participant: partner_pupil_id,
                source: TrackSource::Camera,
            }],
        })
        .unwrap();
    let remote = host_pupil
        .expect("the partner pupil, remote", |m| {
            m["type"] == "participant_joined" && m["participant"]["remote"] == true
        })
        .await;
    assert_eq!(remote["participant"]["name"], "partner-pupil");
    assert_eq!(remote["participant"]["school"], "北小学校");
    let published = host_pupil
        .expect("the partner's camera", |m| m["type"] == "track_published")
        .await;
    assert_eq!(
        published["track"]["participant_id"],
        remote["participant"]["participant_id"]
    );
    partner
        .media
        .until("the host's answer at the partner", |m| {
            m.answers
                .lock()
                .unwrap()
                .iter()
                .any(|(p, _)| *p == partner_link)
        })
        .await;
    assert!(
        partner.media.answers.lock().unwrap()[0]
            .1
            .contains(&format!("answer from {host_link}"))
    );

    // Dynacast across the link: the layers each side's pupils need of a track the other side
    // sends go back to that side's media plane, for the link's subscribe connection.
    partner
        .events
        .send(ShardEvent::SetEncodings {
            participant: partner_link,
            track: TrackId(77),
            mid: "0".into(),
            active: vec!["q".into()],
        })
        .unwrap();
    host.media
        .until("the partner's wants at the host", |m| {
            !m.layers.lock().unwrap().is_empty()
        })
        .await;
    assert_eq!(
        host.media.layers.lock().unwrap()[0],
        (host_link, "0".to_owned(), vec!["q".to_owned()])
    );
    host.events
        .send(ShardEvent::SetEncodings {
            participant: host_link,
            track: TrackId(78),
            mid: "0".into(),
            active: vec!["q".into(), "h".into()],
        })
        .unwrap();
    partner
        .media
        .until("the host's wants at the partner", |m| {
            !m.layers.lock().unwrap().is_empty()
        })
        .await;
    assert_eq!(
        partner.media.layers.lock().unwrap()[0],
        (
            partner_link,
            "0".to_owned(),
            vec!["q".to_owned(), "h".to_owned()]
        )
    );
    // Only a link sends link_layers, and what it names is bounded.
    host_pupil
        .send(json!({"type": "link_layers", "id": "ll", "mid": "0", "active": ["q"]}))
        .await;
    host_pupil
        .expect("link_layers from a pupil", is_error("permission_denied"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_no_longer_listed_leaves_the_host() {
    let host = server().await;
    host.attach();
    let partner = server().await;
    let (mut host_pupil, _) = host.member("host-room", "host-pupil", Role::Student).await;
    let (mut partner_pupil, _) = partner
        .member("partner-room", "partner-pupil", Role::Student)
        .await;
    partner.gate.outgoing.lock().unwrap().push(OutgoingLink {
        link_id: "L".into(),
        key: "k".into(),
        host_ws_url: host.url(),
        host_room: "host-room".into(),
        host_school: "南小学校".into(),
        local_room: "partner-room".into(),
    });
    partner.attach();
    let m = host_pupil
        .expect("the link at the host", |m| {
            m["type"] == "participant_joined"
        })
        .await;
    let link = m["participant"]["participant_id"].clone();
    // The partner's admin ends the link (or its lesson is over): at the next look it leaves.
    partner.gate.outgoing.lock().unwrap().clear();
    let m = host_pupil
        .expect("the link leaves", |m| m["type"] == "participant_left")
        .await;
    assert_eq!(m["participant_id"], link);
    host.gate
        .until("left", |g| *g.left.lock().unwrap() == 1)
        .await;
    partner_pupil
        .expect("the link leaves the partner room", |m| {
            m["type"] == "participant_left"
        })
        .await;
    assert!(partner.gate.refused.lock().unwrap().is_empty());
    // One seat, checked at the door and once more when seated.
    assert_eq!(host.gate.admitted.lock().unwrap().len(), 2);
    assert!(
        partner
            .metrics()
            .contains("classroom_links{side=\"partner\"} 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_flooding_its_people_lists_is_paced_and_stays_seated() {
    let host = server().await;
    host.attach();
    let (mut pupil, _) = host.member("host-room", "pupil-1", Role::Student).await;
    let mut link = Client::open(&host.url()).await;
    link.send(link_join("L", "k")).await;
    link.expect("joined", |m| m["type"] == "joined").await;
    pupil
        .expect("the link joins", |m| m["type"] == "participant_joined")
        .await;

    // Forty lists at once, each naming someone new: twenty are taken, the rest refused.
    for i in 0..40 {
        link.send(
            json!({"type": "link_people", "id": format!("p{i}"), "people": [
                {"ref": i.to_string(), "name": format!("生徒 {i}"), "teacher": false},
            ]}),
        )
        .await;
    }
    let refused = link
        .expect("a list refused", is_error("rate_limited"))
        .await;
    assert_eq!(
        refused["id"], "p20",
        "the 21st list is the first refused: {refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 20")),
        "{refused}"
    );
    // The room heard of the twenty taken (each replacing the one before), then nothing more.
    let mut last = Value::Null;
    for _ in 0..20 {
        last = pupil
            .expect("a remote person", |m| {
                m["type"] == "participant_joined" && m["participant"]["remote"] == true
            })
            .await;
    }
    assert_eq!(last["participant"]["name"], "生徒 19", "{last}");
    // The link is still seated and answers.
    link.send(json!({"type": "ping", "id": "still"})).await;
    link.expect("pong", |m| m["type"] == "pong" && m["id"] == "still")
        .await;
    assert!(host.metrics().contains("classroom_links{side=\"host\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_join_from_one_address_is_paced_before_the_gate_is_asked() {
    let host = server().await;
    host.attach();
    // Twenty guesses from this address reach the gate and are refused by it.
    for _ in 0..20 {
        let mut c = Client::open(&host.url()).await;
        c.send(link_join("link_unknown", "k")).await;
        c.expect("link_unknown", is_error("link_unknown")).await;
        c.closed().await;
    }
    // The next one, even with the right key, is refused at the door and its socket closed.
    let mut c = Client::open(&host.url()).await;
    c.send(link_join("L", "k")).await;
    let e = c.expect("rate_limited", is_error("rate_limited")).await;
    assert_eq!(e["id"], "j", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 20")),
        "{e}"
    );
    c.closed().await;
    assert!(host.gate.admitted.lock().unwrap().is_empty());
    // The server goes on serving everyone else.
    let (_pupil, joined) = host.member("host-room", "pupil-1", Role::Student).await;
    assert_eq!(joined["type"], "joined");
}
