//! A participant's media: a publish connection (the client offers) and a subscribe connection
//! (the server offers), driven by one task. The task knows nothing of signaling: it takes and
//! gives SDP through [`MediaCmd`]s, so any [`crate::signal::Target`] can drive it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Rtc};
use tokio::sync::{mpsc, oneshot};

use crate::audio::{FRAME_TICKS, ToneSource};
use crate::clock;
use crate::conn::{Conn, ConnError, RECV_BUF, rtc_config};
use crate::signal::PublishSource;
use crate::stats::{Counters, ReceiverStats};
use crate::vp8::{LayerSpec, Vp8Layer};

/// What a participant publishes.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Video layers; more than one is simulcast (rids from the specs, lowest first).
    pub layers: Vec<LayerSpec>,
    pub fps: u32,
    pub audio: bool,
    /// A keyframe on every layer this often, besides those asked for by PLI/FIR.
    pub keyframe_interval: Duration,
    /// Largest RTP payload.
    pub max_payload: usize,
    pub audio_bitrate: i32,
}

/// A publish offer and what its sections carry.
#[derive(Debug, Clone)]
pub struct PublishOffer {
    pub sdp: String,
    pub tracks: Vec<(String, PublishSource)>,
}

/// Requests from the signaling side.
#[derive(Debug)]
pub enum MediaCmd {
    MakePublishOffer {
        plan: PublishPlan,
        reply: oneshot::Sender<Result<PublishOffer, ConnError>>,
    },
    PublishAnswer {
        sdp: String,
        reply: oneshot::Sender<Result<(), ConnError>>,
    },
    SubscriberOffer {
        sdp: String,
        reply: oneshot::Sender<Result<String, ConnError>>,
    },
    /// Dynacast: send exactly these rids.
    SetEncodings { active: Vec<String> },
}

/// Which WebRTC implementation a receive-only pupil runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// Light sans-IO str0m clients in RTP mode (`media.rs`): cheap enough for hundreds of
    /// pupils beside the server on one machine.
    #[default]
    Str0m,
    /// Peer connections of the independent webrtc crate, webrtc-rs 0.21 (`webrtc_pupil.rs`): a
    /// second WebRTC stack with its own driver, interceptors (NACK, RTCP reports, TWCC) and
    /// track queues, at about 1.5–1.8 times the generator CPU per packet.
    WebrtcRs,
}

/// How a participant's media behaves.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// The stack of a pupil that only receives; the teacher and publishing pupils are always on
    /// str0m.
    pub client: ClientKind,
    pub bind_ip: IpAddr,
    /// A receive-side token bucket in kbit/s: RTP beyond it is dropped before the WebRTC stack
    /// sees it, as a slow home link would, so the server's congestion control reacts to real loss
    /// and delay.
    pub cap_kbps: Option<u32>,
    pub join_started: Instant,
    /// Whether this participant counts towards `with_media` on its first video packet (or its
    /// first audio packet in audio-only runs).
    pub expect_video: bool,
    pub counters: Arc<Counters>,
}

/// What the media task reports when it ends.
#[derive(Debug)]
pub struct MediaReport {
    pub stats: ReceiverStats,
    pub errors: Vec<String>,
    pub subscribe_connected: bool,
    /// From the start of the join to the subscribe connection's ICE and DTLS being done.
    pub subscribe_connected_after: Option<Duration>,
    pub publish_connected: bool,
    pub sent_packets: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub send_errors: u64,
    /// Datagrams the kernel dropped at this participant's sockets because their receive buffer
    /// was full (read just before they close): the client fell behind, not the server.
    pub socket_drops: u64,
}

/// RFC 5761 demultiplexing: RTP (not RTCP) by the first two bytes.
pub fn is_rtp(data: &[u8]) -> bool {
    match data {
        [b0, b1, ..] => (128..=191).contains(b0) && !(64..=95).contains(&(b1 & 0x7f)),
        _ => false,
    }
}

/// A receive-side token bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(kbps: u32, now: Instant) -> Bucket {
        let bytes_per_sec = f64::from(kbps) * 1000.0 / 8.0;
        // 100 ms of burst, as a home router's queue holds roughly, and never less than a
        // few full packets.
        let burst = (bytes_per_sec * 0.1).max(4000.0);
        Bucket {
            bytes_per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub(crate) fn allow(&mut self, now: Instant, len: usize) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.bytes_per_sec).min(self.burst);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            true
        } else {
            false
        }
    }
}

struct LayerState {
    frames: Vp8Layer,
    rid: Option<Rid>,
    seq: u64,
    active: bool,
    want_key: bool,
    last_key: Option<Instant>,
}

/// Keyframe requests closer than this to the last keyframe are served by it.
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(100);

struct Publisher {
    conn: Conn,
    plan: PublishPlan,
    pending: Option<SdpPendingOffer>,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    layers: Vec<LayerState>,
    tone: Option<ToneSource>,
    audio_seq: u64,
    audio_ts: u32,
    video_ts_base: u32,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    started: Option<Instant>,
    next_video: Instant,
    next_audio: Instant,
    sent: u64,
    keyframes_sent: u64,
    keyframe_requests: u64,
}

/// The payload type the remote side accepted for `codec` on `mid`.
fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == codec)
        .find(|p| remote.is_empty() || remote.contains(&p.pt()))
        .map(|p| p.pt())
}

fn random_seq() -> u64 {
    // Below 2^15 so the first packets never carry a rollover the receiver cannot know of.
    u64::from(rand::random::<u16>() & 0x7fff)
}

impl Publisher {
    fn new(bind_ip: IpAddr, plan: PublishPlan) -> Result<(Publisher, PublishOffer), ConnError> {
        let mut conn = Conn::bind(bind_ip, rtc_config())?;
        let mut api = conn.rtc.sdp_api();
        let mut tracks = Vec::new();
        let audio_mid = plan.audio.then(|| {
            api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some("load".into()),
                Some("microphone".into()),
                None,
            )
        });
        let simulcast = (plan.layers.len() > 1).then(|| {
            let mut s = Simulcast::new();
            for l in &plan.layers {
                s.add_send_layer(SimulcastLayer::new(l.rid));
            }
            s
        });
        let video_mid = (!plan.layers.is_empty()).then(|| {
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("load".into()),
                Some("camera".into()),
                simulcast.clone(),
            )
        });
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| ConnError::Sdp("nothing to offer".into()))?;
        if let Some(mid) = audio_mid {
            tracks.push((mid.to_string(), PublishSource::Microphone));
        }
        if let Some(mid) = video_mid {
            tracks.push((mid.to_string(), PublishSource::Camera));
        }
        let layers = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| LayerState {
                frames: Vp8Layer::new(
                    *spec,
                    if simulcast.is_some() {
                        i as u8
                    } else {
                        crate::tag::SINGLE_LAYER
                    },
                    plan.fps,
                ),
                rid: simulcast.as_ref().map(|_| Rid::from(spec.rid)),
                seq: random_seq(),
                active: true,
                want_key: true,
                last_key: None,
            })
            .collect();
        let tone = if plan.audio {
            Some(
                ToneSource::new(plan.audio_bitrate)
                    .map_err(|e| ConnError::Sdp(format!("audio encoder: {e}")))?,
            )
        } else {
            None
        };
        let now = Instant::now();
        let publisher = Publisher {
            conn,
            plan,
            pending: Some(pending),
            video_mid,
            audio_mid,
            layers,
            tone,
            audio_seq: random_seq(),
            audio_ts: rand::random(),
            video_ts_base: rand::random(),
            video_pt: None,
            audio_pt: None,
            started: None,
            next_video: now,
            next_audio: now,
            sent: 0,
            keyframes_sent: 0,
            keyframe_requests: 0,
        };
        let offer = PublishOffer {
            sdp: offer.to_sdp_string(),
            tracks,
        };
        Ok((publisher, offer))
    }

    fn accept_answer(&mut self, sdp: &str) -> Result<(), ConnError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| ConnError::Sdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| ConnError::Sdp("no offer pending".into()))?;
        self.conn.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        if let Event::KeyframeRequest(req) = event {
            self.keyframe_requests += 1;
            for l in &mut self.layers {
                if l.rid == req.rid || req.rid.is_none() {
                    l.want_key = true;
                }
            }
        }
    }

    fn set_encodings(&mut self, active: &[String]) {
        for l in &mut self.layers {
            let on = l.rid.is_none() || active.iter().any(|r| r == l.frames.spec.rid);
            if on && !l.active {
                // A resumed encoding starts with a keyframe, as a browser's does.
                l.want_key = true;
            }
            l.active = on;
        }
    }

    /// Sends the frames and audio packets that are due.
    fn produce(&mut self, now: Instant) {
        if !self.conn.connected {
            return;
        }
        let started = *self.started.get_or_insert_with(|| {
            self.next_video = now;
            self.next_audio = now;
            now
        });
        let frame_interval = Duration::from_secs_f64(1.0 / f64::from(self.plan.fps.max(1)));
        // Behind by more than this (an overloaded machine): skip ahead rather than burst.
        let late = Duration::from_millis(200);
        if let Some(mid) = self.video_mid {
            if self.video_pt.is_none() {
                self.video_pt = negotiated_pt(&self.conn.rtc, mid, Codec::Vp8);
            }
            while let Some(pt) = self.video_pt.filter(|_| now >= self.next_video) {
                let elapsed = self.next_video.saturating_duration_since(started);
                let ts = self
                    .video_ts_base
                    .wrapping_add((elapsed.as_secs_f64() * 90_000.0) as u32);
                self.send_frame(mid, pt, ts, now);
                self.next_video += frame_interval;
                if now.saturating_duration_since(self.next_video) > late {
                    self.next_video = now + frame_interval;
                }
            }
        }
        if let Some(mid) = self.audio_mid {
            if self.audio_pt.is_none() {
                self.audio_pt = negotiated_pt(&self.conn.rtc, mid, Codec::Opus);
            }
            let ptime = Duration::from_millis(20);
            while let Some(pt) = self.audio_pt.filter(|_| now >= self.next_audio) {
                let packet = match self.tone.as_mut().map(|t| t.next_packet(clock::nanos(now))) {
                    Some(Ok(p)) => p,
                    _ => break,
                };
                if let Some(tx) = self.conn.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(RtpWrite::new(
                        pt,
                        self.audio_seq.into(),
                        self.audio_ts,
                        now,
                        packet,
                    ));
                    self.audio_seq += 1;
                    self.sent += 1;
                }
                self.audio_ts = self.audio_ts.wrapping_add(FRAME_TICKS);
                self.next_audio += ptime;
                if now.saturating_duration_since(self.next_audio) > late {
                    self.next_audio = now + ptime;
                }
            }
        }
    }

    fn send_frame(&mut self, mid: Mid, pt: Pt, ts: u32, now: Instant) {
        let interval = self.plan.keyframe_interval;
        let sent_nanos = clock::nanos(now);
        for l in &mut self.layers {
            if !l.active {
                continue;
            }
            let since_key = l.last_key.map(|k| now.saturating_duration_since(k));
            let periodic = since_key.is_some_and(|d| d >= interval);
            let requested = l.want_key && since_key.is_none_or(|d| d >= KEYFRAME_MIN_GAP);
            let frame =
                l.frames
                    .next_frame(periodic || requested, self.plan.max_payload, sent_nanos);
            if frame.keyframe {
                l.want_key = false;
                l.last_key = Some(now);
                self.keyframes_sent += 1;
            }
            let mut api = self.conn.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, l.rid) else {
                continue;
            };
            let count = frame.payloads.len();
            for (i, payload) in frame.payloads.into_iter().enumerate() {
                let write = RtpWrite::new(pt, l.seq.into(), ts, now, payload)
                    .marker(i + 1 == count)
                    .nackable(true);
                tx.write_rtp(write);
                l.seq += 1;
                self.sent += 1;
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        if !self.conn.connected {
            return None;
        }
        let video = self.video_pt.map(|_| self.next_video);
        let audio = self.audio_pt.map(|_| self.next_audio);
        match (video, audio) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }
}

struct Subscriber {
    conn: Conn,
    bucket: Option<Bucket>,
}

struct MediaState {
    opts: MediaOptions,
    publisher: Option<Publisher>,
    subscriber: Option<Subscriber>,
    stats: ReceiverStats,
    errors: Vec<String>,
    counted_media: bool,
}

/// Errors kept per participant: a broken connection can fail on every packet.
const MAX_ERRORS: usize = 20;

/// Counts a pupil towards `with_media` once, at its first video packet (its first audio packet
/// when it expects no video).
pub(crate) fn count_first_media(opts: &MediaOptions, stats: &ReceiverStats, counted: &mut bool) {
    let got = if opts.expect_video {
        stats.first_video.is_some()
    } else {
        stats.first_audio.is_some()
    };
    if got && !*counted {
        *counted = true;
        opts.counters.with_media.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn push_capped(errors: &mut Vec<String>, e: String) {
    if errors.len() < MAX_ERRORS {
        errors.push(e);
    }
}

impl MediaState {
    fn command(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::MakePublishOffer { plan, reply } => {
                let result = Publisher::new(self.opts.bind_ip, plan).map(|(p, offer)| {
                    self.publisher = Some(p);
                    offer
                });
                let _ = reply.send(result);
            }
            MediaCmd::PublishAnswer { sdp, reply } => {
                let result = match &mut self.publisher {
                    Some(p) => p.accept_answer(&sdp),
                    None => Err(ConnError::Sdp("no publish connection".into())),
                };
                let _ = reply.send(result);
            }
            MediaCmd::SubscriberOffer { sdp, reply } => {
                let _ = reply.send(self.subscriber_offer(&sdp));
            }
            MediaCmd::SetEncodings { active } => {
                if let Some(p) = &mut self.publisher {
                    p.set_encodings(&active);
                }
            }
        }
    }

    fn subscriber_offer(&mut self, sdp: &str) -> Result<String, ConnError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| ConnError::Sdp(e.to_string()))?;
        let sub = match &mut self.subscriber {
            Some(s) => s,
            None => {
                let conn = Conn::bind(self.opts.bind_ip, rtc_config())?;
                let bucket = self.opts.cap_kbps.map(|k| Bucket::new(k, Instant::now()));
                self.subscriber.insert(Subscriber { conn, bucket })
            }
        };
        let answer = sub.conn.rtc.sdp_api().accept_offer(offer)?;
        Ok(answer.to_sdp_string())
    }

    fn on_publish_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        if let Some(p) = &mut self.publisher
            && let Err(e) = p.conn.receive(now, source, data)
        {
            push_capped(&mut self.errors, format!("publish connection: {e}"));
        }
        self.drain_publisher();
    }

    fn on_subscribe_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Some(sub) = &mut self.subscriber else {
            return;
        };
        if let Some(bucket) = &mut sub.bucket
            && sub.conn.connected
            && is_rtp(data)
            && !bucket.allow(now, data.len())
        {
            self.stats.dropped_by_cap += 1;
            return;
        }
        if let Err(e) = sub.conn.receive(now, source, data) {
            push_capped(&mut self.errors, format!("subscribe connection: {e}"));
        }
        self.drain_subscriber();
    }

    /// Timeouts, due media, and draining both connections.
    fn service(&mut self, now: Instant) {
        if let Some(p) = &mut self.publisher {
            if let Err(e) = p.conn.tick(now) {
                push_capped(&mut self.errors, format!("publish connection: {e}"));
            }
            p.produce(now);
        }
        self.drain_publisher();
        if let Some(sub) = &mut self.subscriber
            && let Err(e) = sub.conn.tick(now)
        {
            push_capped(&mut self.errors, format!("subscribe connection: {e}"));
        }
        self.drain_subscriber();
    }

    fn drain_publisher(&mut self) {
        let Some(p) = &mut self.publisher else {
            return;
        };
        let mut events = Vec::new();
        let result = p.conn.drain(|_, e| events.push(e));
        for e in events {
            if let Event::IceConnectionStateChange(IceConnectionState::Disconnected) = e {
                self.errors
                    .push("publish connection: ICE disconnected".into());
            }
            p.on_event(e);
        }
        if let Err(e) = result {
            push_capped(&mut self.errors, format!("publish connection: {e}"));
        }
    }

    /// Must follow every input: in RTP mode str0m holds one received packet until polled.
    fn drain_subscriber(&mut self) {
        let Some(sub) = &mut self.subscriber else {
            return;
        };
        let stats = &mut self.stats;
        let counters = &self.opts.counters;
        let errors = &mut self.errors;
        let result = sub.conn.drain(|_, event| match event {
            Event::RtpPacket(p) => {
                stats.record(
                    *p.header.ssrc,
                    *p.seq_no,
                    p.header.timestamp,
                    p.timestamp,
                    &p.payload,
                );
                counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                counters
                    .rx_bytes
                    .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                push_capped(errors, "subscribe connection: ICE disconnected".into());
            }
            _ => {}
        });
        if let Err(e) = result {
            push_capped(&mut self.errors, format!("subscribe connection: {e}"));
        }
        count_first_media(&self.opts, &self.stats, &mut self.counted_media);
    }

    fn deadline(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_millis(500);
        if let Some(p) = &self.publisher {
            at = at.min(p.conn.deadline);
            if let Some(due) = p.next_due() {
                at = at.min(due);
            }
        }
        if let Some(s) = &self.subscriber {
            at = at.min(s.conn.deadline);
        }
        at.max(now)
    }
}

async fn recv_on(conn: Option<&Conn>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match conn {
        Some(c) => c.socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Datagrams read in one go before the connection is drained: fewer polls under load.
const RECV_BATCH: usize = 32;

/// Runs a participant's media until `cmds` closes.
pub async fn run(opts: MediaOptions, mut cmds: mpsc::Receiver<MediaCmd>) -> MediaReport {
    let mut state = MediaState {
        stats: ReceiverStats::new(opts.join_started),
        opts,
        publisher: None,
        subscriber: None,
        errors: Vec::new(),
        counted_media: false,
    };
    let mut pub_buf = vec![0u8; RECV_BUF];
    let mut sub_buf = vec![0u8; RECV_BUF];
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        let now = Instant::now();
        state.service(now);
        let deadline = state.deadline(now);
        sleep.as_mut().reset(deadline.into());
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(cmd) => state.command(cmd),
                None => break,
            },
            r = recv_on(state.publisher.as_ref().map(|p| &p.conn), &mut pub_buf) => match r {
                Ok((n, source)) => {
                    let now = Instant::now();
                    state.on_publish_datagram(now, source, &pub_buf[..n]);
                    for _ in 0..RECV_BATCH {
                        let Some(Ok((n, source))) = state.publisher.as_ref().map(|p| p.conn.socket.try_recv_from(&mut pub_buf)) else { break };
                        state.on_publish_datagram(now, source, &pub_buf[..n]);
                    }
                }
                Err(e) => push_capped(&mut state.errors, format!("publish socket: {e}")),
            },
            r = recv_on(state.subscriber.as_ref().map(|s| &s.conn), &mut sub_buf) => match r {
                Ok((n, source)) => {
                    let now = Instant::now();
                    state.on_subscribe_datagram(now, source, &sub_buf[..n]);
                    for _ in 0..RECV_BATCH {
                        let Some(Ok((n, source))) = state.subscriber.as_ref().map(|s| s.conn.socket.try_recv_from(&mut sub_buf)) else { break };
                        state.on_subscribe_datagram(now, source, &sub_buf[..n]);
                    }
                }
                Err(e) => push_capped(&mut state.errors, format!("subscribe socket: {e}")),
            },
            _ = &mut sleep => {}
        }
    }
    let publish = state.publisher.as_ref();
    let socket_drops = [
        publish.map(|p| p.conn.local.port()),
        state.subscriber.as_ref().map(|s| s.conn.local.port()),
    ]
    .into_iter()
    .flatten()
    .filter_map(crate::proc::udp_drops)
    .sum();
    MediaReport {
        socket_drops,
        subscribe_connected: state.subscriber.as_ref().is_some_and(|s| s.conn.connected),
        subscribe_connected_after: state
            .subscriber
            .as_ref()
            .and_then(|s| s.conn.connected_at)
            .map(|at| at.saturating_duration_since(state.opts.join_started)),
        publish_connected: publish.is_some_and(|p| p.conn.connected),
        sent_packets: publish.map_or(0, |p| p.sent),
        keyframes_sent: publish.map_or(0, |p| p.keyframes_sent),
        keyframe_requests: publish.map_or(0, |p| p.keyframe_requests),
        send_errors: publish.map_or(0, |p| p.conn.send_errors)
            + state.subscriber.as_ref().map_or(0, |s| s.conn.send_errors),
        stats: state.stats,
        errors: state.errors,
    }
}
