//! The subscribe connection: the server offers, the client answers (docs/PROTOCOL.md).
//!
//! A task takes the `subscriber_offer`s one at a time (the server never sends a second before
//! the first is answered), records the offer's `tracks` (mid -> track), applies the offer and
//! sends `subscriber_answer`. Each remote track is read by its own task, which resolves its mid
//! (through the transceiver that owns its receiver) to the `track_id` of the latest offer and
//! records every RTP packet under that id, in arrival order.

use super::media::is_vp8_keyframe_start;
use super::peer::VideoCodec;
use super::signal::Signal;
use super::wait::wait_for;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCIceGatheringState, RTCPeerConnectionState};

/// One RTP packet as the subscriber received it.
#[derive(Debug, Clone)]
pub struct RecvPacket {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub payload: Bytes,
    pub at: Instant,
}

/// A track of the latest `subscriber_offer`.
#[derive(Debug, Clone)]
pub struct OfferedTrack {
    pub mid: String,
    pub track_id: String,
    pub participant_id: String,
    pub kind: String,
    pub source: String,
}

/// A remote track the subscribe connection has opened.
struct RemoteTrack {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    mid: Option<String>,
}

#[derive(Default)]
pub struct SubscriberShared {
    /// mid -> track, from the latest offer.
    offered: Mutex<HashMap<String, OfferedTrack>>,
    /// track_id -> packets, in arrival order. Packets on a mid no offer names are kept under
    /// `"mid:<mid>"` (or `"ssrc:<ssrc>"` if even the mid is unknown), so nothing goes unseen.
    received: Mutex<HashMap<String, Vec<RecvPacket>>>,
    /// Packets that arrived again after their first copy, by track id (left out of `received`).
    duplicates: Mutex<HashMap<String, usize>>,
    /// track_id -> the remote track currently carrying it.
    remote: Mutex<HashMap<String, RemoteTrack>>,
    offers_answered: Mutex<u64>,
    /// The SDP of the latest offer applied (after any rewrite) and of the answer to it.
    last_sdp: Mutex<Option<(String, String)>>,
    /// Whether `offered` is the mapping of an offer that has been answered.
    answered_mapping_current: Mutex<bool>,
    /// Failures of the answering task or the track readers.
    errors: Mutex<Vec<String>>,
    connection: Mutex<Option<watch::Receiver<RTCPeerConnectionState>>>,
    pc: OnceLock<Weak<dyn PeerConnection>>,
    notify: Notify,
    /// The one video codec this subscriber accepts.
    video_codec: VideoCodec,
}

/// The subscribe side of one participant.
pub struct Subscriber {
    shared: Arc<SubscriberShared>,
    task: JoinHandle<()>,
    pc: Arc<tokio::sync::Mutex<Option<SubscribePc>>>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Starts answering the offers that arrive on `offers`, replying through `signal`.
    pub fn start(signal: Arc<Signal>, offers: mpsc::UnboundedReceiver<Value>) -> Self {
        Self::start_with(signal, offers, None)
    }

    /// Like [`Subscriber::start`], but each offer's SDP goes through `rewrite` before it is
    /// applied (e.g. to send this subscriber's media through a shaping relay, see
    /// [`super::relay`]).
    pub fn start_with(
        signal: Arc<Signal>,
        offers: mpsc::UnboundedReceiver<Value>,
        rewrite: Option<super::relay::SdpRewrite>,
    ) -> Self {
        Self::start_with_codec(signal, offers, rewrite, VideoCodec::Vp8)
    }

    /// Like [`Subscriber::start_with`], with `video` as the only video codec the subscribe
    /// connection accepts.
    pub fn start_with_codec(
        signal: Arc<Signal>,
        mut offers: mpsc::UnboundedReceiver<Value>,
        rewrite: Option<super::relay::SdpRewrite>,
        video: VideoCodec,
    ) -> Self {
        let shared = Arc::new(SubscriberShared {
            video_codec: video,
            ..SubscriberShared::default()
        });
        let pc_slot: Arc<tokio::sync::Mutex<Option<SubscribePc>>> = Default::default();
        let task_shared = Arc::clone(&shared);
        let task_pc = Arc::clone(&pc_slot);
        let task = tokio::spawn(async move {
            while let Some(offer) = offers.recv().await {
                if let Err(err) = answer_offer(
                    &task_shared,
                    &task_pc,
                    &signal,
                    &offer,
                    rewrite.as_ref(),
                    video,
                )
                .await
                {
                    tracing::error!(target: "test_client", "subscriber_offer failed: {err:#}");
                    task_shared.errors.lock().unwrap().push(format!("{err:#}"));
                    task_shared.notify.notify_waiters();
                }
            }
        });
        Self {
            shared,
            task,
            pc: pc_slot,
        }
    }

    /// Packets received for `track_id` so far.
    pub fn received(&self, track_id: &str) -> Vec<RecvPacket> {
        self.shared
            .received
            .lock()
            .unwrap()
            .get(track_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many packets of `track_id` arrived again after their first copy.
    pub fn duplicates(&self, track_id: &str) -> usize {
        self.shared
            .duplicates
            .lock()
            .unwrap()
            .get(track_id)
            .copied()
            .unwrap_or(0)
    }

    /// How many packets have been received for `track_id`.
    pub fn received_count(&self, track_id: &str) -> usize {
        self.shared
            .received
            .lock()
            .unwrap()
            .get(track_id)
            .map_or(0, Vec::len)
    }

    /// Every key packets were recorded under, with counts (for failure messages).
    pub fn received_summary(&self) -> HashMap<String, usize> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(key, packets)| (key.clone(), packets.len()))
            .collect()
    }

    /// The tracks of the latest offer, by mid.
    pub fn offered(&self) -> HashMap<String, OfferedTrack> {
        self.shared.offered.lock().unwrap().clone()
    }

    /// The SDP of the latest offer applied and of the answer sent, once one was answered.
    pub fn last_sdp(&self) -> Option<(String, String)> {
        self.shared.last_sdp.lock().unwrap().clone()
    }

    /// How many offers have been answered.
    pub fn offers_answered(&self) -> u64 {
        *self.shared.offers_answered.lock().unwrap()
    }

    /// Failures so far (answering offers, reading tracks).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// The state of the subscribe connection, if it exists.
    pub fn state(&self) -> Option<RTCPeerConnectionState> {
        self.shared
            .connection
            .lock()
            .unwrap()
            .as_ref()
            .map(|rx| *rx.borrow())
    }

    /// Waits until `check` holds for the packets of `track_id` and returns its value.
    pub async fn wait_packets<T>(
        &self,
        track_id: &str,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[RecvPacket]) -> Option<T>,
    ) -> Result<T> {
        let shared = &self.shared;
        wait_for(
            &shared.notify,
            timeout,
            || {
                format!(
                    "{what} on track {track_id}; received so far: {:?}; offered: {:?}; errors: {:?}",
                    self.received_summary(),
                    self.offered()
                        .values()
                        .map(|t| format!("{}={}", t.mid, t.track_id))
                        .collect::<Vec<_>>(),
                    self.errors()
                )
            },
            || {
                let received = shared.received.lock().unwrap();
                let packets = received.get(track_id).map(Vec::as_slice).unwrap_or(&[]);
                check(packets)
            },
        )
        .await
    }

    /// Waits until an answered offer's tracks (mid -> track) satisfy `check`.
    pub async fn wait_offered(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&HashMap<String, OfferedTrack>) -> bool,
    ) -> Result<()> {
        let shared = &self.shared;
        wait_for(
            &shared.notify,
            timeout,
            || {
                format!(
                    "{what}; latest offer: {:?}; offers answered: {}; errors: {:?}",
                    self.offered()
                        .values()
                        .map(|t| format!("{}={}", t.mid, t.track_id))
                        .collect::<Vec<_>>(),
                    self.offers_answered(),
                    self.errors()
                )
            },
            || {
                // Only offers that were answered count: the mapping is set before answering.
                let answered = *shared.offers_answered.lock().unwrap();
                let offered = shared.offered.lock().unwrap();
                (answered > 0
                    && *shared.answered_mapping_current.lock().unwrap()
                    && check(&offered))
                .then_some(())
            },
        )
        .await
    }

    /// Waits until at least `count` packets of `track_id` have arrived.
    pub async fn wait_count(
        &self,
        track_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<usize> {
        self.wait_packets(track_id, timeout, &format!("{count} packets"), |packets| {
            (packets.len() >= count).then_some(packets.len())
        })
        .await
    }

    /// Waits until a packet with exactly `payload` has arrived on `track_id`.
    pub async fn wait_payload(
        &self,
        track_id: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<()> {
        self.wait_packets(track_id, timeout, "a given payload", |packets| {
            packets
                .iter()
                .any(|p| p.payload.as_ref() == payload)
                .then_some(())
        })
        .await
    }

    /// Sends a PLI for `track_id` (media SSRC = the SSRC the server sends it with).
    pub async fn request_keyframe(&self, track_id: &str) -> Result<()> {
        let (track, ssrc) = {
            let remote = self.shared.remote.lock().unwrap();
            let entry = remote
                .get(track_id)
                .ok_or_else(|| anyhow!("no remote track carries {track_id} yet"))?;
            (Arc::clone(&entry.track), entry.ssrc)
        };
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: ssrc,
            })])
            .await
            .context("send PLI")?;
        Ok(())
    }

    pub async fn close(&self) {
        self.task.abort();
        if let Some(subscribe) = self.pc.lock().await.take() {
            let _ = subscribe.pc.close().await;
        }
    }
}

/// The subscribe peer connection, created with the first offer.
struct SubscribePc {
    pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
}

async fn answer_offer(
    shared: &Arc<SubscriberShared>,
    pc_slot: &tokio::sync::Mutex<Option<SubscribePc>>,
    signal: &Signal,
    offer: &Value,
    rewrite: Option<&super::relay::SdpRewrite>,
    video: VideoCodec,
) -> Result<()> {
    let sdp = offer
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("subscriber_offer without sdp: {offer}"))?;
    let rewritten = rewrite.map(|rewrite| rewrite(sdp));
    let sdp = rewritten.as_deref().unwrap_or(sdp);
    let tracks = offer
        .get("tracks")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("subscriber_offer without tracks: {offer}"))?;
    let mut offered = HashMap::new();
    for track in tracks {
        let field = |name: &str| -> Result<String> {
            Ok(track
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("subscriber_offer track without {name}: {track}"))?
                .to_owned())
        };
        let entry = OfferedTrack {
            mid: field("mid")?,
            track_id: field("track_id")?,
            participant_id: field("participant_id")?,
            kind: field("kind")?,
            source: field("source")?,
        };
        offered.insert(entry.mid.clone(), entry);
    }

    let mut slot = pc_slot.lock().await;
    if slot.is_none() {
        let (track_tx, mut track_rx) = mpsc::unbounded_channel::<Arc<dyn TrackRemote>>();
        let (pc, events) = super::peer::build_with(video, Some(track_tx)).await?;
        let _ = shared.pc.set(Arc::downgrade(&pc));
        *shared.connection.lock().unwrap() = Some(events.connection.clone());
        let reader_shared = Arc::clone(shared);
        tokio::spawn(async move {
            while let Some(track) = track_rx.recv().await {
                tokio::spawn(read_track(Arc::clone(&reader_shared), track));
            }
        });
        *slot = Some(SubscribePc {
            pc,
            gathering: events.gathering,
        });
    }
    let Some(subscribe) = slot.as_mut() else {
        unreachable!("the subscribe connection was just created");
    };

    // The mapping must be in place before the offer is applied: media may follow at once.
    *shared.offered.lock().unwrap() = offered;
    *shared.answered_mapping_current.lock().unwrap() = false;

    let description = RTCSessionDescription::offer(sdp.to_owned())
        .context("the subscriber_offer SDP does not parse as an offer")?;
    subscribe
        .pc
        .set_remote_description(description)
        .await
        .with_context(|| format!("apply the subscriber_offer SDP:\n{sdp}"))?;
    super::peer::trickle_tcp_candidates(&subscribe.pc, sdp).await?;
    let answer = subscribe
        .pc
        .create_answer(None)
        .await
        .context("create the subscriber answer")?;
    subscribe
        .pc
        .set_local_description(answer)
        .await
        .context("set the subscriber answer as local description")?;
    super::peer::wait_gathered(&mut subscribe.gathering, super::REPLY_TIMEOUT).await?;
    let answer_sdp = subscribe
        .pc
        .local_description()
        .await
        .context("no local description after set_local_description")?
        .sdp;
    signal.send_json(&json!({"type": "subscriber_answer", "sdp": answer_sdp}))?;
    *shared.last_sdp.lock().unwrap() = Some((sdp.to_owned(), answer_sdp));

    *shared.offers_answered.lock().unwrap() += 1;
    *shared.answered_mapping_current.lock().unwrap() = true;
    shared.notify.notify_waiters();
    Ok(())
}

/// The mid of the transceiver whose receiver is `receiver_id`.
async fn mid_of(shared: &SubscriberShared, receiver_id: RTCRtpReceiverId) -> Option<String> {
    let pc = shared.pc.get()?.upgrade()?;
    for transceiver in pc.get_transceivers().await {
        if RTCRtpReceiverId::from(transceiver.id()) == receiver_id {
            return transceiver.mid().await.ok().flatten();
        }
    }
    None
}

/// The sequence numbers of the latest packets of one SSRC, to tell a repeat from a first arrival.
#[derive(Default)]
struct RecentSeqs {
    order: std::collections::VecDeque<u16>,
    set: std::collections::HashSet<u16>,
}

impl RecentSeqs {
    /// Far more than a retransmission can lag behind, far less than a sequence number wrap.
    const WINDOW: usize = 4096;

    fn first_arrival(&mut self, seq: u16) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > Self::WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Whether a video stream has begun with a keyframe. Its first packet can be lost beyond repair
/// (a receiver cannot ask for a packet before the first it saw), so a stream whose first packet
/// is not a keyframe's start asks for one, as a browser's receiver does; otherwise the picture
/// would wait for the publisher's next keyframe, which no one else may ask for.
#[derive(Default)]
struct StreamStart {
    /// A VP8 video stream (others are not looked at).
    watched: bool,
    keyframe_seen: bool,
    asked_at: Option<Instant>,
}

impl StreamStart {
    /// How often the request is repeated while no keyframe arrives (a PLI can be lost too).
    const REPEAT: Duration = Duration::from_millis(500);

    fn wants_keyframe(&mut self, payload: &[u8], now: Instant) -> bool {
        if !self.watched {
            return false;
        }
        if self.keyframe_seen || is_vp8_keyframe_start(payload) {
            self.keyframe_seen = true;
            return false;
        }
        if self
            .asked_at
            .is_some_and(|at| now.saturating_duration_since(at) < Self::REPEAT)
        {
            return false;
        }
        self.asked_at = Some(now);
        true
    }
}

/// Records every packet of one remote track until it ends (repeats only counted).
async fn read_track(shared: Arc<SubscriberShared>, track: Arc<dyn TrackRemote>) {
    let mut mid: Option<String> = None;
    let mut key_for_ssrc: HashMap<u32, String> = HashMap::new();
    let mut seen: HashMap<u32, RecentSeqs> = HashMap::new();
    let mut starts: HashMap<u32, StreamStart> = HashMap::new();
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                mid = mid_of(&shared, init.receiver_id).await;
                if mid.is_none() {
                    shared.errors.lock().unwrap().push(format!(
                        "remote track {} (ssrc {}) has no mid",
                        init.track_id, init.ssrc
                    ));
                }
                let track_id = mid.as_ref().and_then(|mid| {
                    shared
                        .offered
                        .lock()
                        .unwrap()
                        .get(mid)
                        .map(|t| t.track_id.clone())
                });
                if let Some(track_id) = track_id {
                    shared.remote.lock().unwrap().insert(
                        track_id,
                        RemoteTrack {
                            track: Arc::clone(&track),
                            ssrc: init.ssrc,
                            mid: mid.clone(),
                        },
                    );
                }
                key_for_ssrc.clear();
                shared.notify.notify_waiters();
            }
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let ssrc = packet.header.ssrc;
                // Resolved once per SSRC: the mid -> track mapping of the offer that was current
                // when the stream started.
                let key = key_for_ssrc
                    .entry(ssrc)
                    .or_insert_with(|| match &mid {
                        Some(mid) => shared
                            .offered
                            .lock()
                            .unwrap()
                            .get(mid)
                            .map(|t| t.track_id.clone())
                            .unwrap_or_else(|| format!("mid:{mid}")),
                        None => format!("ssrc:{ssrc}"),
                    })
                    .clone();
                // A retransmission of a packet that did arrive (the server pads with such
                // resends while it probes for bandwidth) is dropped by a receiver's jitter
                // buffer; it is left out here too, so that what the tests read is what a
                // decoder would get.
                if !seen
                    .entry(ssrc)
                    .or_default()
                    .first_arrival(packet.header.sequence_number)
                {
                    *shared.duplicates.lock().unwrap().entry(key).or_default() += 1;
                    continue;
                }
                // Resolved once per SSRC, as the key above: only VP8 video is watched.
                if starts
                    .entry(ssrc)
                    .or_insert_with(|| StreamStart {
                        watched: matches!(shared.video_codec, VideoCodec::Vp8)
                            && mid.as_ref().is_some_and(|mid| {
                                shared
                                    .offered
                                    .lock()
                                    .unwrap()
                                    .get(mid)
                                    .is_some_and(|t| t.kind == "video")
                            }),
                        ..StreamStart::default()
                    })
                    .wants_keyframe(&packet.payload, Instant::now())
                {
                    let _ = track
                        .write_rtcp(vec![Box::new(PictureLossIndication {
                            sender_ssrc: 1,
                            media_ssrc: ssrc,
                        })])
                        .await;
                }
                let received = RecvPacket {
                    ssrc,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload_type: packet.header.payload_type,
                    payload: packet.payload,
                    at: Instant::now(),
                };
                shared
                    .received
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push(received);
                shared.notify.notify_waiters();
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}
