//! A receive-only pupil on the independent webrtc crate (webrtc-rs 0.21), behind the same
//! [`MediaCmd`] interface as the str0m client in `media.rs`, so the same signaling drives it.
//!
//! It is a full peer connection as the workspace's end-to-end test client builds one (Opus,
//! VP8 with RTX and `ccm fir`, webrtc-rs's default interceptors: NACK, RTCP reports, TWCC), run
//! on the generator's tokio runtime. It only counts what arrives, as the str0m pupils do: no
//! depacketising, no decoding. What it costs per pupil, against the str0m pupil, is what
//! `--client webrtc-rs` measures.
//!
//! webrtc-rs, like str0m, strips RTP padding and unwraps RTX into the primary stream, but unlike
//! str0m's RTP mode it hands over repeats: a packet the server resends while it probes for
//! bandwidth would arrive twice. Repeats are dropped here, per SSRC, so loss and rates mean the
//! same with either client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::stream::{SelectAll, Stream, StreamExt};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, register_default_interceptors,
};

use crate::conn::ConnError;
use crate::media::{MediaCmd, MediaOptions, MediaReport, count_first_media, push_capped};
use crate::stats::ReceiverStats;
use crate::webrtc_socket::{PupilRuntime, SocketShared};

const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
const RTX_PT: u8 = 97;

/// The server answers within milliseconds on loopback; gathering only has to find the one host
/// candidate, so a long wait means something is wrong rather than slow.
const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

/// `close()` waits at most about 100 ms itself; this only keeps a stuck driver from holding up
/// the participant past the run's own bound.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn media_engine() -> Result<MediaEngine, ConnError> {
    let mut engine = MediaEngine::default();
    let codec = |mime: &str, clock_rate, channels, fmtp: &str| RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![],
    };
    let codecs = [
        (
            codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1"),
            OPUS_PT,
            RtpCodecKind::Audio,
        ),
        (
            codec(MIME_TYPE_VP8, 90_000, 0, ""),
            VP8_PT,
            RtpCodecKind::Video,
        ),
        // RTX, as browsers offer it: the server then retransmits and probes on its own SSRC, as
        // it does towards a browser, instead of padding on the media SSRC.
        (
            codec(MIME_TYPE_RTX, 90_000, 0, &format!("apt={VP8_PT}")),
            RTX_PT,
            RtpCodecKind::Video,
        ),
    ];
    for (rtp_codec, payload_type, kind) in codecs {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec,
                payload_type,
            },
            kind,
        )?;
    }
    engine.register_feedback(
        RTCPFeedback {
            typ: "ccm".to_owned(),
            parameter: "fir".to_owned(),
        },
        RtpCodecKind::Video,
    );
    // The defaults register the mid extension for video only; browsers use it on audio too.
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: rtc::sdp::extmap::SDES_MID_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(engine)
}

/// The peer connection's callbacks, passed on to the pupil's task. They run on the connection's
/// driver, so they only send.
struct Events {
    /// Every state change with when it happened: a watch would fold a short-lived `connected`
    /// into the `disconnected` after it.
    states: mpsc::UnboundedSender<(RTCPeerConnectionState, Instant)>,
    gathering: watch::Sender<RTCIceGatheringState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.states.send((state, Instant::now()));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// The subscribe peer connection, made on the first offer.
struct Peer {
    pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    socket: Arc<SocketShared>,
}

type States = mpsc::UnboundedReceiver<(RTCPeerConnectionState, Instant)>;
type NewTracks = mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>;

impl Peer {
    /// One UDP socket on `bind_ip`, announced as the only (host) candidate, behind the cap if
    /// there is one.
    async fn build(opts: &MediaOptions) -> Result<(Peer, States, NewTracks), ConnError> {
        let mut engine = media_engine()?;
        let registry = register_default_interceptors(Registry::new(), &mut engine)?;
        let (states_tx, states) = mpsc::unbounded_channel();
        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let events = Arc::new(Events {
            states: states_tx,
            gathering: gathering_tx,
            tracks: tracks_tx,
        });
        let socket = SocketShared::new(opts.cap_kbps);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(events as Arc<dyn PeerConnectionEventHandler>)
            .with_runtime(Arc::new(PupilRuntime::new(socket.clone())))
            .with_udp_addrs(vec![std::net::SocketAddr::new(opts.bind_ip, 0)])
            .build()
            .await?;
        let peer = Peer {
            pc: Arc::new(pc),
            gathering,
            socket,
        };
        Ok((peer, states, tracks))
    }
}

/// Applies a server offer and returns the answer with its candidate in it (non-trickle).
async fn answer(
    pc: Arc<dyn PeerConnection>,
    mut gathering: watch::Receiver<RTCIceGatheringState>,
    sdp: String,
) -> Result<String, ConnError> {
    let offer = RTCSessionDescription::offer(sdp).map_err(|e| ConnError::Sdp(e.to_string()))?;
    pc.set_remote_description(offer).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    // A re-offer finds gathering complete already.
    match tokio::time::timeout(
        GATHER_TIMEOUT,
        gathering.wait_for(|s| *s == RTCIceGatheringState::Complete),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(ConnError::Candidate("peer connection gone".into())),
        Err(_) => {
            return Err(ConnError::Candidate(format!(
                "ICE gathering not complete after {GATHER_TIMEOUT:?}"
            )));
        }
    }
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| ConnError::Sdp("no local description after answering".into()))?;
    Ok(local.sdp)
}

/// Bits of history per SSRC for telling a repeat from a first arrival: far more than a
/// retransmission lags behind, far less than a sequence number wrap.
const SEQ_WINDOW: u64 = 1024;

/// Extends one SSRC's 16-bit sequence numbers and remembers which of the latest arrived.
#[derive(Debug)]
struct SeqWindow {
    /// The highest extended number so far. Numbering starts one wrap up, so a packet reordered
    /// before the first one still gets a number; only differences are used.
    max: u64,
    seen: [u64; (SEQ_WINDOW / 64) as usize],
}

impl SeqWindow {
    fn new(first: u16) -> SeqWindow {
        SeqWindow {
            max: (1 << 16) + u64::from(first),
            seen: [0; (SEQ_WINDOW / 64) as usize],
        }
    }

    fn bit(ext: u64) -> (usize, u64) {
        let i = ext % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// The extended number of `seq`, or `None` for a repeat (or one too old to tell).
    fn accept(&mut self, seq: u16) -> Option<u64> {
        // The nearest extension: within half a wrap of the highest so far.
        let delta = i64::from(seq.wrapping_sub(self.max as u16) as i16);
        let ext = self.max.checked_add_signed(delta)?;
        if ext > self.max {
            if ext - self.max >= SEQ_WINDOW {
                self.seen = [0; (SEQ_WINDOW / 64) as usize];
            } else {
                for s in self.max + 1..=ext {
                    let (w, b) = Self::bit(s);
                    self.seen[w] &= !b;
                }
            }
            self.max = ext;
        } else if self.max - ext >= SEQ_WINDOW {
            return None;
        }
        let (w, b) = Self::bit(ext);
        if self.seen[w] & b != 0 {
            return None;
        }
        self.seen[w] |= b;
        Some(ext)
    }
}

/// What the pupil has seen so far.
struct Pupil {
    opts: MediaOptions,
    stats: ReceiverStats,
    errors: Vec<String>,
    counted_media: bool,
    seqs: HashMap<u32, SeqWindow>,
    connected_at: Option<Instant>,
}

impl Pupil {
    fn on_rtp(&mut self, packet: &rtc::rtp::Packet, arrival: Instant) {
        let h = &packet.header;
        // Padding only (a bandwidth probe on the media SSRC): nothing to count, and without a
        // tag `record` would take it for audio.
        if packet.payload.is_empty() {
            return;
        }
        let seq = h.sequence_number;
        let window = self
            .seqs
            .entry(h.ssrc)
            .or_insert_with(|| SeqWindow::new(seq));
        let Some(ext) = window.accept(seq) else {
            return;
        };
        self.stats
            .record(h.ssrc, ext, h.timestamp, arrival, &packet.payload);
        let counters = &self.opts.counters;
        counters.rx_packets.fetch_add(1, Ordering::Relaxed);
        counters
            .rx_bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        count_first_media(&self.opts, &self.stats, &mut self.counted_media);
    }

    fn on_track_event(&mut self, event: TrackRemoteEvent) {
        match event {
            TrackRemoteEvent::OnRtpPacket(p) => self.on_rtp(&p, Instant::now()),
            TrackRemoteEvent::OnError => {
                push_capped(&mut self.errors, "subscribe connection: track error".into());
            }
            _ => {}
        }
    }

    fn on_state(&mut self, state: RTCPeerConnectionState, at: Instant) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.connected_at.get_or_insert(at);
            }
            // Closed is only expected after `cmds` closes, when nobody listens any more.
            RTCPeerConnectionState::Disconnected
            | RTCPeerConnectionState::Failed
            | RTCPeerConnectionState::Closed => {
                push_capped(&mut self.errors, format!("subscribe connection: {state}"));
            }
            _ => {}
        }
    }
}

type TrackEvents = Pin<Box<dyn Stream<Item = TrackRemoteEvent> + Send>>;

fn events_of(track: Arc<dyn TrackRemote>) -> TrackEvents {
    Box::pin(futures_util::stream::unfold(track, |t| async move {
        let event = t.poll().await?;
        Some((event, t))
    }))
}

type Answering = Pin<Box<dyn Future<Output = Result<String, ConnError>> + Send>>;

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn finish(answering: &mut Option<Answering>) -> Result<String, ConnError> {
    match answering {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Runs a receive-only pupil until `cmds` closes.
pub async fn run(opts: MediaOptions, mut cmds: mpsc::Receiver<MediaCmd>) -> MediaReport {
    let mut pupil = Pupil {
        stats: ReceiverStats::new(opts.join_started),
        opts,
        errors: Vec::new(),
        counted_media: false,
        seqs: HashMap::new(),
        connected_at: None,
    };
    let mut peer: Option<Peer> = None;
    let mut states: Option<States> = None;
    let mut new_tracks: Option<NewTracks> = None;
    let mut tracks: SelectAll<TrackEvents> = SelectAll::new();
    // An offer being answered runs beside the packets, so a renegotiation does not stall them
    // (webrtc-rs drops what does not fit its per-track queue).
    let mut answering: Option<Answering> = None;
    let mut reply_to: Option<oneshot::Sender<Result<String, ConnError>>> = None;
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(MediaCmd::SubscriberOffer { sdp, reply }) => {
                    if answering.is_some() {
                        // The signaling side waits for each answer; this would be a bug there.
                        let _ = reply.send(Err(ConnError::Unsupported(
                            "a subscriber offer before the previous one was answered",
                        )));
                        continue;
                    }
                    if peer.is_none() {
                        match Peer::build(&pupil.opts).await {
                            Ok((p, s, t)) => {
                                peer = Some(p);
                                states = Some(s);
                                new_tracks = Some(t);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                                continue;
                            }
                        }
                    }
                    if let Some(p) = &peer {
                        answering = Some(Box::pin(answer(p.pc.clone(), p.gathering.clone(), sdp)));
                        reply_to = Some(reply);
                    }
                }
                Some(MediaCmd::MakePublishOffer { reply, .. }) => {
                    let _ = reply.send(Err(ConnError::Unsupported(
                        "the webrtc-rs pupil only receives",
                    )));
                }
                Some(MediaCmd::PublishAnswer { reply, .. }) => {
                    let _ = reply.send(Err(ConnError::Unsupported(
                        "the webrtc-rs pupil only receives",
                    )));
                }
                Some(MediaCmd::SetEncodings { .. }) => {}
            },
            result = finish(&mut answering) => {
                answering = None;
                if let Some(reply) = reply_to.take() {
                    let _ = reply.send(result);
                }
            },
            state = recv_opt(&mut states) => match state {
                Some((state, at)) => pupil.on_state(state, at),
                None => states = None,
            },
            track = recv_opt(&mut new_tracks) => match track {
                Some(track) => tracks.push(events_of(track)),
                None => new_tracks = None,
            },
            Some(event) = tracks.next(), if !tracks.is_empty() => pupil.on_track_event(event),
        }
    }
    // Read before the socket closes, as the str0m client does.
    let socket_drops = peer
        .as_ref()
        .and_then(|p| p.socket.local.get())
        .and_then(|a| crate::proc::udp_drops(a.port()))
        .unwrap_or(0);
    if let Some(p) = &peer {
        pupil.stats.dropped_by_cap = p.socket.dropped_by_cap.load(Ordering::Relaxed);
    }
    drop(answering);
    if let Some(p) = &peer {
        match tokio::time::timeout(CLOSE_TIMEOUT, p.pc.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => push_capped(&mut pupil.errors, format!("subscribe close: {e}")),
            Err(_) => push_capped(
                &mut pupil.errors,
                format!("subscribe close: not closed after {CLOSE_TIMEOUT:?}"),
            ),
        }
    }
    MediaReport {
        socket_drops,
        subscribe_connected: pupil.connected_at.is_some(),
        subscribe_connected_after: pupil
            .connected_at
            .map(|at| at.saturating_duration_since(pupil.opts.join_started)),
        publish_connected: false,
        sent_packets: 0,
        keyframes_sent: 0,
        keyframe_requests: 0,
        send_errors: 0,
        stats: pupil.stats,
        errors: pupil.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_the_wrap_and_repeats_are_dropped() {
        let mut w = SeqWindow::new(65_534);
        let a = w.accept(65_534).unwrap_or_default();
        assert_eq!(w.accept(65_535), Some(a + 1));
        assert_eq!(w.accept(1), Some(a + 3));
        // Reordered behind the wrap, then repeated.
        assert_eq!(w.accept(0), Some(a + 2));
        assert_eq!(w.accept(0), None);
        assert_eq!(w.accept(65_535), None);
        // Before the first packet: still numbered, and only once.
        assert_eq!(w.accept(65_530), Some(a - 4));
        assert_eq!(w.accept(65_530), None);
        // A jump past the window forgets what it held.
        assert_eq!(w.accept(3000), Some(a + 3002));
        assert_eq!(w.accept(1), None, "too old to tell");
        assert_eq!(w.accept(2999), Some(a + 3001));
    }
}
