//! A shard, a teacher and pupils as str0m peers, and the links between them, on one virtual
//! clock.
//!
//! The harness talks to the shard exactly as the server does: `ShardCommand`s in (with the SDP
//! the peers' own `Rtc`s create), `ShardEvent`s out, datagrams in through
//! `Shard::handle_datagram`, out through its outbox, and the time given at every entry point.
//! The clock only moves forward to the earliest thing due — a peer's or the shard's timeout, a
//! datagram arriving at the end of a link, the teacher's next frame — so a simulated minute
//! costs what its packets cost to process. Links draw loss and jitter from the seed; str0m draws
//! its own unseeded randomness, so runs with one seed still differ (`docs/ADAPTATION.md`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::media::{Simulcast, SimulcastLayer};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::sync::{mpsc, oneshot};

use super::link::{Datagram, Link, Shaping};
use super::meter::{self, ShardCost, timed};
use super::source::{Encoding, RIDS, SourceConfig, parse_tag};
use crate::command::{
    Audience, LayerName, PauseReason, ShardCommand, ShardEvent, TrackSource, TrackSpec,
};
use crate::ids::{ParticipantId, RoomId};
use crate::metrics::MediaMetrics;
use crate::shard::{Arrival, Setup, Shard};

const SERVER: ([u8; 4], u16) = ([10, 0, 0, 1], 5000);
const AUDIO_PERIOD: Duration = Duration::from_millis(20);
/// How often a pupil whose picture is broken asks again for a keyframe (a browser's decoder
/// asks on every undecodable frame; its RTCP module holds repeats back by about this).
const PLI_REPEAT: Duration = Duration::from_millis(300);
/// How often the shard's view of each pupil's link is written down.
const LINK_SAMPLE: Duration = Duration::from_millis(250);

fn server() -> SocketAddr {
    SocketAddr::from(SERVER)
}

/// A str0m peer of the harness with its two links to the server.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    participant: ParticipantId,
    next: Instant,
    /// Client → server.
    up: Link,
    /// Server → client.
    down: Link,
    connected: bool,
}

impl Client {
    fn new(
        now: Instant,
        addr: SocketAddr,
        participant: u64,
        config: RtcConfig,
        up: Link,
        down: Link,
    ) -> Client {
        let mut rtc = config.build(now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        Client {
            rtc,
            addr,
            participant: ParticipantId(participant),
            next: now,
            up,
            down,
            connected: false,
        }
    }

    /// Polls until the `Rtc` only has a timeout to report; returns its events.
    fn poll(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next = t;
                    return events;
                }
                Ok(Output::Transmit(t)) => self.up.send(
                    now,
                    Datagram {
                        source: t.source,
                        destination: t.destination,
                        bytes: t.contents.into(),
                    },
                ),
                Ok(Output::Event(e)) => {
                    if matches!(e, Event::Connected) {
                        self.connected = true;
                    }
                    events.push(e);
                }
                Err(e) => panic!("client {} failed: {e}", self.addr),
            }
        }
    }
}

/// The teacher: a camera in VP8 simulcast and a microphone.
struct Teacher {
    client: Client,
    audio_mid: Mid,
    video_mid: Mid,
    vp8: Option<Pt>,
    opus: Option<Pt>,
    encodings: [Encoding; 3],
    seq: [u64; 4],
    timestamps: [u32; 4],
    frames: u64,
    audio_packets: u64,
    /// Keyframe requests received, per spatial layer: (time since start, layer).
    keyframe_requests: Vec<(Duration, u8)>,
    /// Keyframes sent: (time since start, layer, asked for).
    keyframes: Vec<(Duration, u8)>,
    /// When each frame was captured, by (rid letter, frame number of its tag).
    captures: HashMap<(u8, u32), Instant>,
}

/// The shard's view of a pupil's link at one moment.
#[derive(Debug, Clone, Copy)]
pub struct LinkSample {
    pub at: Instant,
    pub estimate: Option<u64>,
    pub loss: Option<f32>,
    pub rtt_ms: Option<u32>,
    pub bytes_sent: u64,
}

/// What a pupil saw.
#[derive(Debug, Default, Clone)]
pub struct PupilLog {
    /// When the first video frame arrived.
    pub first_video: Option<Instant>,
    /// Every frame a decoder could show: (arrival, rid letter, keyframe).
    pub decoded: Vec<(Instant, u8, bool)>,
    /// The same frames' (rid letter, frame number of its tag, RTP time as the pupil got it).
    pub timeline: Vec<(u8, u32, u64)>,
    /// Frames that arrived but could not be decoded (their references were lost).
    pub undecodable: u64,
    pub audio: Vec<Instant>,
    /// The server's `track_quality` for the camera: (time, layer, paused).
    pub quality: Vec<(Instant, Option<LayerName>, Option<PauseReason>)>,
    /// The server's last `connection_quality` estimate.
    pub estimate_bps: Option<u64>,
    pub plis_sent: u64,
    /// The shard's view of the pupil's link, sampled: (time, estimate, loss, RTT ms, bytes sent).
    pub link: Vec<LinkSample>,
}

struct Pupil {
    client: Client,
    video_mid: Option<Mid>,
    broken: bool,
    last_pli: Option<Instant>,
    log: PupilLog,
}

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Teacher,
    Pupil(usize),
}

/// The whole simulated lesson.
pub struct World {
    pub start: Instant,
    pub now: Instant,
    shard: Shard,
    events: mpsc::UnboundedReceiver<ShardEvent>,
    /// What `/metrics` would show.
    #[allow(dead_code)]
    pub metrics: Arc<MediaMetrics>,
    teacher: Teacher,
    pupils: Vec<Pupil>,
    config: SourceConfig,
    rng: StdRng,
    seed: u64,
    room: RoomId,
    /// Every `set_encodings` the teacher got: (time, active rids).
    pub set_encodings: Vec<(Instant, Vec<String>)>,
    /// Shard entry points called, for the cost figures.
    pub steps: u64,
    /// The shard's own CPU time, once [`World::meter`] has been called.
    meter: Option<ShardCost>,
}

impl World {
    /// A shard with a teacher publishing; its link to the server is unshaped but for 1 ms.
    pub fn new(seed: u64, config: SourceConfig) -> World {
        let start = Instant::now();
        let (tx, events) = mpsc::unbounded_channel();
        let metrics = Arc::new(MediaMetrics::default());
        let shard = Shard::new(
            start,
            Setup {
                announced: vec![server()],
                announced_tcp: Vec::new(),
                candidates: Candidate::host(server(), "udp").into_iter().collect(),
                bandwidth_estimation: true,
                mesh: None,
                control: None,
            },
            tx,
            metrics.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let lan = Shaping::NONE.delay(Duration::from_millis(1), Duration::ZERO);
        let teacher_addr = SocketAddr::from(([10, 0, 1, 1], 4000));
        let client = Client::new(
            start,
            teacher_addr,
            1,
            RtcConfig::new().set_rtp_mode(true),
            Link::new(lan, seed ^ 0x100),
            Link::new(lan, seed ^ 0x101),
        );
        let encodings = [0, 1, 2].map(|s| Encoding::new(s, &mut rng));
        let mut world = World {
            start,
            now: start,
            shard,
            events,
            metrics,
            teacher: Teacher {
                client,
                audio_mid: Mid::from("0"),
                video_mid: Mid::from("1"),
                vp8: None,
                opus: None,
                encodings,
                seq: [1; 4],
                // Each encoding its own RTP clock, as every encoder picks a random one; `f`
                // wraps within its first second.
                timestamps: [0x1000_0000, 0x9000_0000, 0xffff_8000, 0],
                frames: 0,
                audio_packets: 0,
                keyframe_requests: Vec::new(),
                keyframes: Vec::new(),
                captures: HashMap::new(),
            },
            pupils: Vec::new(),
            config,
            rng,
            seed,
            room: RoomId::from("sim"),
            set_encodings: Vec::new(),
            steps: 0,
            meter: None,
        };
        world.command(ShardCommand::Join {
            participant: ParticipantId(1),
            room: world.room.clone(),
            subscribe: false,
            teacher: true,
            link: false,
            relay: false,
        });
        world.publish();
        world
    }

    fn publish(&mut self) {
        let t = &mut self.teacher;
        let mut api = t.client.rtc.sdp_api();
        t.audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let mut simulcast = Simulcast::new();
        for rid in RIDS {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        t.video_mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        let Some((offer, pending)) = api.apply() else {
            panic!("the teacher has nothing to offer");
        };
        let (reply, mut answer) = oneshot::channel();
        let tracks = vec![
            TrackSpec {
                mid: t.audio_mid.to_string(),
                source: TrackSource::Microphone,
                audience: Audience::Everyone,
                owner: None,
            },
            TrackSpec {
                mid: t.video_mid.to_string(),
                source: TrackSource::Camera,
                audience: Audience::Everyone,
                owner: None,
            },
        ];
        self.command(ShardCommand::Publish {
            participant: ParticipantId(1),
            offer: offer.to_sdp_string(),
            tracks,
            reply,
        });
        let answer = match answer.try_recv() {
            Ok(Ok(a)) => a,
            other => panic!("publish failed: {other:?}"),
        };
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).expect("the shard's answer parses");
        let t = &mut self.teacher;
        t.client
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the teacher accepts the shard's answer");
        let params = t.client.rtc.codec_config().params();
        t.vp8 = params
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .map(|p| p.pt());
        t.opus = params
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt());
        self.poll(Who::Teacher);
    }

    /// A pupil behind `down` (server → pupil) and `up`; returns its index.
    pub fn add_pupil(&mut self, down: Shaping, up: Shaping) -> usize {
        let i = self.pupils.len();
        let addr = SocketAddr::from(([10, 0, 2, (i + 1) as u8], 4000));
        let seed = self.seed.wrapping_add(0x1000 * (i as u64 + 1));
        let client = Client::new(
            self.now,
            addr,
            100 + i as u64,
            RtcConfig::new(),
            Link::new(up, seed),
            Link::new(down, seed ^ 1),
        );
        let participant = client.participant;
        self.pupils.push(Pupil {
            client,
            video_mid: None,
            broken: false,
            last_pli: None,
            log: PupilLog::default(),
        });
        self.command(ShardCommand::Join {
            participant,
            room: self.room.clone(),
            subscribe: true,
            teacher: false,
            link: false,
            relay: false,
        });
        i
    }

    pub fn pupil(&self, i: usize) -> &PupilLog {
        &self.pupils[i].log
    }

    /// When the teacher's camera captured frame `number` of the encoding `rid`.
    pub fn captured(&self, rid: u8, number: u32) -> Option<Instant> {
        self.teacher.captures.get(&(rid, number)).copied()
    }

    pub fn pupil_connected(&self, i: usize) -> bool {
        self.pupils[i].client.connected
    }

    /// The pupil's downlink (server → pupil).
    pub fn down(&mut self, i: usize) -> &mut Link {
        &mut self.pupils[i].client.down
    }

    pub fn up(&mut self, i: usize) -> &mut Link {
        &mut self.pupils[i].client.up
    }

    /// Keyframe requests the teacher received: (time, spatial layer).
    pub fn keyframe_requests(&self) -> &[(Duration, u8)] {
        &self.teacher.keyframe_requests
    }

    /// Keyframes the teacher sent: (time, spatial layer).
    pub fn keyframes(&self) -> &[(Duration, u8)] {
        &self.teacher.keyframes
    }

    /// The pupil asks for a keyframe now (its decoder lost the picture).
    pub fn pupil_pli(&mut self, i: usize) {
        let p = &mut self.pupils[i];
        if let Some(mid) = p.video_mid
            && let Some(mut w) = p.client.rtc.writer(mid)
            && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
        {
            p.log.plis_sent += 1;
        }
        self.poll(Who::Pupil(i));
    }

    /// From now on, times every call into the shard (`shard_cost`).
    pub fn meter(&mut self) {
        self.meter.get_or_insert_default();
    }

    /// What the shard cost since [`World::meter`]: zero before.
    pub fn shard_cost(&self) -> ShardCost {
        self.meter.unwrap_or_default()
    }

    fn command(&mut self, cmd: ShardCommand) {
        self.steps += 1;
        let now = self.now;
        timed(&mut self.meter, || self.shard.handle_command(now, cmd));
        self.pump();
    }

    /// Sends what the shard produced and handles its events.
    fn pump(&mut self) {
        loop {
            let full = self.shard.outbox().is_full();
            let out: Vec<(SocketAddr, Vec<u8>)> = self.shard.outbox().take_udp().collect();
            self.shard.outbox().take_tcp().for_each(drop);
            self.shard.outbox().take_link().for_each(drop);
            let now = self.now;
            for (to, bytes) in out {
                if let Some(cost) = &mut self.meter {
                    cost.datagrams += 1;
                    if to != self.teacher.client.addr && meter::is_rtp(&bytes) {
                        if meter::is_padded(&bytes) {
                            cost.padded += 1;
                        } else {
                            cost.packets += 1;
                        }
                    }
                }
                let link = if to == self.teacher.client.addr {
                    Some(&mut self.teacher.client.down)
                } else {
                    self.pupils
                        .iter_mut()
                        .find(|p| p.client.addr == to)
                        .map(|p| &mut p.client.down)
                };
                if let Some(link) = link {
                    link.send(
                        now,
                        Datagram {
                            source: server(),
                            destination: to,
                            bytes,
                        },
                    );
                }
            }
            if !full {
                break;
            }
            timed(&mut self.meter, || self.shard.drain_dirty());
        }
        while let Ok(event) = self.events.try_recv() {
            self.on_shard_event(event);
        }
    }

    fn on_shard_event(&mut self, event: ShardEvent) {
        let now = self.now;
        let pupil = |world: &World, participant: ParticipantId| {
            world
                .pupils
                .iter()
                .position(|p| p.client.participant == participant)
        };
        match event {
            ShardEvent::SubscriberOffer {
                participant,
                sdp,
                tracks,
            } => {
                let Some(i) = pupil(self, participant) else {
                    return;
                };
                let offer = SdpOffer::from_sdp_string(&sdp).expect("the shard's offer parses");
                let p = &mut self.pupils[i];
                let answer = p
                    .client
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("the pupil accepts the offer");
                p.video_mid = tracks
                    .iter()
                    .find(|t| t.source == TrackSource::Camera)
                    .map(|t| Mid::from(t.mid.as_str()));
                let (reply, _result) = oneshot::channel();
                self.poll(Who::Pupil(i));
                self.command(ShardCommand::SubscriberAnswer {
                    participant,
                    answer: answer.to_sdp_string(),
                    reply,
                });
            }
            ShardEvent::TrackQuality {
                participant,
                layer,
                paused,
                ..
            } => {
                if let Some(i) = pupil(self, participant) {
                    self.pupils[i].log.quality.push((now, layer, paused));
                }
            }
            ShardEvent::ConnectionQuality {
                participant,
                estimate_bps,
                ..
            } => {
                if let Some(i) = pupil(self, participant) {
                    self.pupils[i].log.estimate_bps = estimate_bps;
                }
            }
            ShardEvent::SetEncodings { active, .. } => {
                // As a browser does: switched-off encoders stop, a restarted one begins with a
                // keyframe.
                for (s, rid) in RIDS.iter().enumerate() {
                    let on = active.iter().any(|a| a == rid);
                    let e = &mut self.teacher.encodings[s];
                    if on && !e.active {
                        e.keyframe_wanted = true;
                    }
                    e.active = on;
                }
                self.set_encodings.push((now, active));
            }
            _ => {}
        }
    }

    fn client(&mut self, who: Who) -> &mut Client {
        match who {
            Who::Teacher => &mut self.teacher.client,
            Who::Pupil(i) => &mut self.pupils[i].client,
        }
    }

    fn poll(&mut self, who: Who) {
        let now = self.now;
        let events = self.client(who).poll(now);
        for e in events {
            match who {
                Who::Teacher => self.teacher_event(e),
                Who::Pupil(i) => self.pupil_event(i, e),
            }
        }
    }

    fn teacher_event(&mut self, e: Event) {
        if let Event::KeyframeRequest(req) = e {
            let spatial = req
                .rid
                .and_then(|r| RIDS.iter().position(|x| Rid::from(*x) == r))
                .unwrap_or(0);
            self.teacher
                .keyframe_requests
                .push((self.now - self.start, spatial as u8));
            self.teacher.encodings[spatial].keyframe_wanted = true;
        }
    }

    fn pupil_event(&mut self, i: usize, e: Event) {
        let now = self.now;
        let Event::MediaData(data) = e else {
            return;
        };
        let p = &mut self.pupils[i];
        if Some(data.mid) != p.video_mid {
            // When the packet arrived: str0m's depacketiser holds packets behind a lost one
            // for a while, which a browser's audio jitter buffer would conceal.
            p.log.audio.push(data.network_time);
            return;
        }
        p.log.first_video.get_or_insert(now);
        let keyframe = data.is_keyframe();
        // A decoder shows a keyframe, and any frame whose predecessor it showed; after a gap it
        // shows nothing until the next keyframe, and asks for one.
        if keyframe {
            p.broken = false;
        } else if !data.contiguous {
            p.broken = true;
        }
        if p.broken {
            p.log.undecodable += 1;
            if p.last_pli.is_none_or(|t| now - t >= PLI_REPEAT) {
                p.last_pli = Some(now);
                if let Some(mut w) = p.client.rtc.writer(data.mid)
                    && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
                {
                    p.log.plis_sent += 1;
                }
            }
            return;
        }
        let (rid, number) = parse_tag(&data.data).unwrap_or((b'?', 0));
        p.log.decoded.push((now, rid, keyframe));
        p.log.timeline.push((rid, number, data.time.numer()));
    }

    /// When the teacher's next frame or audio packet is due.
    fn next_media(&self) -> Option<Instant> {
        if !self.teacher.client.connected {
            return None;
        }
        let video = self.start + frame_time(self.teacher.frames, self.config.fps);
        let audio = self.start + AUDIO_PERIOD * self.teacher.audio_packets as u32;
        Some(video.min(audio))
    }

    fn teacher_media(&mut self) {
        let now = self.now;
        let elapsed = now - self.start;
        let mut wrote = false;
        while self.start + AUDIO_PERIOD * self.teacher.audio_packets as u32 <= now {
            self.teacher.audio_packets += 1;
            let t = &mut self.teacher;
            let Some(pt) = t.opus else { continue };
            let mut api = t.client.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(t.audio_mid, None) else {
                continue;
            };
            t.timestamps[3] = t.timestamps[3].wrapping_add(960);
            t.seq[3] += 1;
            let ext = ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..Default::default()
            };
            tx.write_rtp(
                RtpWrite::new(
                    pt,
                    t.seq[3].into(),
                    t.timestamps[3],
                    now,
                    vec![0x55u8; self.config.audio_bytes],
                )
                .marker(false)
                .ext_vals(ext),
            );
            wrote = true;
        }
        while self.start + frame_time(self.teacher.frames, self.config.fps) <= now {
            let ticks = 90_000 / self.config.fps;
            self.teacher.frames += 1;
            for (s, name) in RIDS.iter().enumerate() {
                let t = &mut self.teacher;
                // The RTP clock runs with the camera's, whether or not this size is encoded.
                t.timestamps[s] = t.timestamps[s].wrapping_add(ticks);
                if !t.encodings[s].active {
                    continue;
                }
                let frame = t.encodings[s].next_frame(&self.config, elapsed, &mut self.rng);
                if frame.keyframe {
                    t.keyframes.push((elapsed, s as u8));
                }
                let captured = now
                    .checked_sub(self.config.capture_lag[s])
                    .unwrap_or(now)
                    .max(self.start);
                let number = t.encodings[s].frames.wrapping_sub(1);
                t.captures.insert((name.as_bytes()[0], number), captured);
                let Some(pt) = t.vp8 else { continue };
                let rid = Rid::from(*name);
                let mut api = t.client.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(t.video_mid, Some(rid)) else {
                    continue;
                };
                let count = frame.payloads.len();
                for (k, payload) in frame.payloads.into_iter().enumerate() {
                    t.seq[s] += 1;
                    tx.write_rtp(
                        RtpWrite::new(pt, t.seq[s].into(), t.timestamps[s], captured, payload)
                            .marker(k + 1 == count)
                            .nackable(true),
                    );
                }
                wrote = true;
            }
        }
        if wrote {
            self.poll(Who::Teacher);
        }
    }

    fn next_event(&self) -> Instant {
        let mut next = self.shard.poll_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.next_media());
        for c in std::iter::once(&self.teacher.client).chain(self.pupils.iter().map(|p| &p.client))
        {
            consider(Some(c.next));
            consider(c.up.next_arrival());
            consider(c.down.next_arrival());
        }
        next
    }

    /// Runs the lesson until `end`.
    pub fn run_until(&mut self, end: Instant) {
        while self.now < end {
            self.now = self.next_event().clamp(self.now, end);
            self.step();
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Runs until `done` holds, at most `limit`; whether it did.
    pub fn run_until_true(&mut self, limit: Duration, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.now = self.next_event().clamp(self.now, end);
            self.step();
        }
        done(self)
    }

    fn step(&mut self) {
        let now = self.now;
        self.teacher_media();
        let whos: Vec<Who> = std::iter::once(Who::Teacher)
            .chain((0..self.pupils.len()).map(Who::Pupil))
            .collect();
        for &who in &whos {
            while let Some(d) = self.client(who).up.receive(now) {
                self.steps += 1;
                timed(&mut self.meter, || {
                    self.shard
                        .handle_datagram(now, Arrival::udp(d.source), &d.bytes)
                });
                self.pump();
            }
        }
        for &who in &whos {
            let mut touched = false;
            while let Some(d) = self.client(who).down.receive(now) {
                let Ok(contents) = DatagramRecv::try_from(d.bytes.as_slice()) else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: d.source,
                        destination: d.destination,
                        contents,
                    },
                );
                if let Err(e) = self.client(who).rtc.handle_input(input) {
                    panic!("{who:?} refused a datagram: {e}");
                }
                // str0m holds one received packet at a time: poll before the next.
                self.poll(who);
                touched = true;
            }
            let c = self.client(who);
            if c.next <= now {
                if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                    panic!("{who:?} timeout failed: {e}");
                }
                touched = true;
            }
            if touched {
                self.poll(who);
            }
        }
        self.steps += 1;
        timed(&mut self.meter, || self.shard.handle_timeout(now));
        self.pump();
        for p in &mut self.pupils {
            if p.log.link.last().is_none_or(|l| now - l.at >= LINK_SAMPLE)
                && let Some((estimate, loss, rtt_ms, bytes_sent)) =
                    self.shard.subscriber_link(p.client.participant)
            {
                p.log.link.push(LinkSample {
                    at: now,
                    estimate,
                    loss,
                    rtt_ms,
                    bytes_sent,
                });
            }
        }
    }
}

fn frame_time(frame: u64, fps: u32) -> Duration {
    Duration::from_nanos(frame * 1_000_000_000 / u64::from(fps))
}
