//! [`TestClient`]: one participant — a joined WebSocket, an optional publish connection and a
//! subscribe connection that answers the server's offers on its own.

use super::media::Source;
use super::peer::VideoCodec;
use super::publisher::{PublishOffer, Publisher};
use super::signal::{Closed, Signal, is_type};
use super::subscriber::Subscriber;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

pub struct TestClient {
    pub signal: Arc<Signal>,
    /// The `joined` reply.
    pub joined: Value,
    pub participant_id: String,
    pub subscriber: Subscriber,
    publisher: Mutex<Option<Arc<Publisher>>>,
    keepalive: JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl TestClient {
    /// Connects, joins with `token` and waits for `joined`. Fails with the server's error if the
    /// join is refused.
    pub async fn connect(ws_url: &str, token: &str) -> Result<Self> {
        Self::connect_with(ws_url, token, None).await
    }

    /// Like [`TestClient::connect`], but every `subscriber_offer` SDP goes through `rewrite`
    /// before it is applied — [`super::relay::Relay::sdp_rewriter`] puts the subscribe
    /// connection behind a shaping relay.
    pub async fn connect_with(
        ws_url: &str,
        token: &str,
        rewrite: Option<super::relay::SdpRewrite>,
    ) -> Result<Self> {
        Self::connect_with_codec(ws_url, token, rewrite, VideoCodec::Vp8).await
    }

    /// Like [`TestClient::connect_with`], with `video` as the only video codec the subscribe
    /// connection accepts.
    pub async fn connect_with_codec(
        ws_url: &str,
        token: &str,
        rewrite: Option<super::relay::SdpRewrite>,
        video: VideoCodec,
    ) -> Result<Self> {
        let (signal, offers) = Signal::connect(ws_url, super::REPLY_TIMEOUT).await?;
        let signal = Arc::new(signal);
        // The subscribe side is ready before the join, so no offer can be missed.
        let subscriber = Subscriber::start_with_codec(Arc::clone(&signal), offers, rewrite, video);
        let joined = signal
            .request(
                json!({"v": 1, "type": "join", "token": token}),
                super::REPLY_TIMEOUT,
            )
            .await
            .context("join")?;
        if !is_type(&joined, "joined") {
            bail!("join refused: {joined}");
        }
        let participant_id = joined
            .pointer("/participant/participant_id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("joined without participant.participant_id: {joined}"))?
            .to_owned();

        // The server closes sockets silent for 30 s; ping like a real client.
        let keepalive_signal = Arc::downgrade(&signal);
        let keepalive = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let Some(signal) = keepalive_signal.upgrade() else {
                    break;
                };
                n += 1;
                if signal
                    .send_json(&json!({"type": "ping", "id": format!("keepalive-{n}")}))
                    .is_err()
                {
                    break;
                }
                // Drop the pongs so they do not pile up in the queue.
                signal.take_events(|e| {
                    is_type(e, "pong")
                        && e.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| id.starts_with("keepalive-"))
                });
            }
        });

        Ok(Self {
            signal,
            joined,
            participant_id,
            subscriber,
            publisher: Mutex::new(None),
            keepalive,
        })
    }

    /// The ids of the tracks `joined` listed (others' tracks already in the room).
    pub fn joined_track_ids(&self) -> Vec<String> {
        self.joined
            .get("tracks")
            .and_then(Value::as_array)
            .map(|tracks| {
                tracks
                    .iter()
                    .filter_map(|t| t.get("track_id")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Publishes `sources` on a new publish connection and waits until it is connected.
    pub async fn publish(&self, sources: &[Source]) -> Result<Arc<Publisher>> {
        let offer = PublishOffer::create(sources).await?;
        let reply = self
            .signal
            .request(offer.message(), super::REPLY_TIMEOUT)
            .await
            .context("publish")?;
        if !is_type(&reply, "publish_answer") {
            offer.abandon().await;
            bail!("publish refused: {reply}");
        }
        let publisher = offer.complete(&reply).await?;
        *self.publisher.lock().unwrap() = Some(Arc::clone(&publisher));
        Ok(publisher)
    }

    /// Offers to publish `sources` and returns the server's reply, which the test expects to be
    /// an `error`; the offer is then abandoned. Fails if the server accepted it.
    pub async fn publish_expect_refusal(&self, sources: &[Source]) -> Result<Value> {
        let offer = PublishOffer::create(sources).await?;
        let reply = self
            .signal
            .request(offer.message(), super::REPLY_TIMEOUT)
            .await
            .context("publish")?;
        offer.abandon().await;
        if !is_type(&reply, "error") {
            bail!("expected the publish to be refused, got {reply}");
        }
        Ok(reply)
    }

    /// The publisher, once [`TestClient::publish`] succeeded.
    pub fn publisher(&self) -> Result<Arc<Publisher>> {
        self.publisher
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| anyhow!("this client has not published"))
    }

    /// Sends one RTP packet on a published track (see [`Publisher::send_rtp`]).
    pub async fn send_rtp(
        &self,
        source: Source,
        payload: bytes::Bytes,
        timestamp: u32,
        marker: bool,
    ) -> Result<super::media::SentPacket> {
        self.publisher()?
            .send_rtp(source, payload, timestamp, marker)
            .await
    }

    /// Sends a text frame as is.
    pub fn send_raw(&self, text: impl Into<String>) -> Result<()> {
        self.signal.send_raw(text)
    }

    pub fn send_json(&self, message: &Value) -> Result<()> {
        self.signal.send_json(message)
    }

    /// Sends `message` and waits for the reply with the same id.
    pub async fn request(&self, message: Value) -> Result<Value> {
        self.signal.request(message, super::REPLY_TIMEOUT).await
    }

    /// Pings and waits for the pong.
    pub async fn ping(&self) -> Result<()> {
        let reply = self.request(json!({"type": "ping"})).await?;
        if !is_type(&reply, "pong") {
            bail!("ping answered with {reply}");
        }
        Ok(())
    }

    /// Waits for the first queued event matching `pred` and takes it from the queue.
    pub async fn expect_event(
        &self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        self.signal.expect_event(pred, timeout).await
    }

    pub async fn expect_type(&self, ty: &str, timeout: Duration) -> Result<Value> {
        self.signal.expect_type(ty, timeout).await
    }

    pub async fn expect_error(&self, code: &str, timeout: Duration) -> Result<Value> {
        self.signal.expect_error(code, timeout).await
    }

    /// Waits for `track_published` of `track_id`.
    pub async fn expect_track_published(&self, track_id: &str, timeout: Duration) -> Result<Value> {
        self.expect_event(
            |e| {
                is_type(e, "track_published")
                    && e.pointer("/track/track_id").and_then(Value::as_str) == Some(track_id)
            },
            timeout,
        )
        .await
        .with_context(|| format!("expected track_published for {track_id}"))
    }

    /// Waits for `track_unpublished` of `track_id`.
    pub async fn expect_track_unpublished(
        &self,
        track_id: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.expect_event(
            |e| {
                is_type(e, "track_unpublished")
                    && e.get("track_id").and_then(Value::as_str) == Some(track_id)
            },
            timeout,
        )
        .await
        .with_context(|| format!("expected track_unpublished for {track_id}"))
    }

    /// Waits for `participant_joined` of `participant_id`.
    pub async fn expect_participant_joined(
        &self,
        participant_id: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.expect_event(
            |e| {
                is_type(e, "participant_joined")
                    && e.pointer("/participant/participant_id")
                        .and_then(Value::as_str)
                        == Some(participant_id)
            },
            timeout,
        )
        .await
        .with_context(|| format!("expected participant_joined for {participant_id}"))
    }

    /// Waits for `participant_left` of `participant_id`.
    pub async fn expect_participant_left(
        &self,
        participant_id: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.expect_event(
            |e| {
                is_type(e, "participant_left")
                    && e.get("participant_id").and_then(Value::as_str) == Some(participant_id)
            },
            timeout,
        )
        .await
        .with_context(|| format!("expected participant_left for {participant_id}"))
    }

    /// Sends `leave` and waits for the server to close the socket; closes the peer connections.
    pub async fn leave(&self) -> Result<Closed> {
        self.signal.send_json(&json!({"type": "leave"}))?;
        let closed = self
            .signal
            .wait_closed(super::REPLY_TIMEOUT)
            .await
            .context("the server did not close the socket after leave")?;
        self.close_media().await;
        Ok(closed)
    }

    /// Closes the peer connections (the WebSocket stays as it is).
    pub async fn close_media(&self) {
        let publisher = self.publisher.lock().unwrap().take();
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
        self.subscriber.close().await;
    }

    /// Closes everything without `leave`.
    pub async fn close(&self) {
        self.signal.close();
        self.close_media().await;
    }
}
