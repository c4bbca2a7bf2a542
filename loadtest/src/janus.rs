//! The same lesson aimed at Janus 1.1 through its VideoRoom plugin (`--target janus`), so both
//! servers can be measured with one load generator (see `loadtest/compare.sh`).
//!
//! Janus API over WebSocket (subprotocol `janus-protocol`): `create` a session, `attach` the
//! `janus.plugin.videoroom` plugin, then plugin `message`s. Every participant has a
//! *publisher* handle joined to the room (`ptype: publisher`, as Janus' own demos do): it gets
//! the `publishers` notifications, and the teacher publishes on it (`publish` with the offer).
//! As soon as there is a feed to receive, a *subscriber* handle joins with
//! `ptype: subscriber, streams: [{feed}]` (later feeds: `subscribe`); Janus offers, and the
//! answer goes back with `start`. A cap maps to `configure` with `substream`/`temporal` on the
//! subscription's mid.
//!
//! Simulcast: our teacher offers rids `q;h;f` lowest first. Janus assumes the *first* rid is the
//! highest quality unless the publish jsep says `rid_order: "lmh"`, which we do; then substream
//! 0 = `q`, 1 = `h`, 2 = `f`.
//!
//! One task per session owns the socket (so [`Session::next_event`] is a channel receive, which
//! is cancel-safe) and one more manages the subscription, since new feeds arrive as events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::signal::{
    Identity, MaxLayer, MediaKind, PublishSource, REPLY_TIMEOUT, RemoteTrack, Session, SignalError,
    SignalEvent, Target,
};

/// Janus closes sessions idle for `session_timeout` (60 s by default).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(25);

/// Janus error code for "room already exists".
const ROOM_EXISTS: i64 = 427;

/// Janus with the VideoRoom plugin, e.g. `ws://10.77.0.1:8188`.
#[derive(Debug, Clone)]
pub struct Janus {
    pub url: String,
    /// Numeric room id (Janus' default; `string_ids = false`).
    pub room: u64,
    /// `publishers` of the room the teacher creates: everyone joins as a participant.
    pub max_publishers: usize,
    /// `bitrate` of the room: the REMB cap Janus sends publishers (0 = none).
    pub bitrate: u32,
    /// `fir_freq` of the room: Janus asks publishers for a keyframe this often (s, 0 = never).
    pub fir_freq: u32,
}

impl Janus {
    /// `bitrate` of the rooms we create: above the teacher's three layers (~2.2 Mbit/s), so
    /// Janus' REMB never asks the teacher to slow down.
    pub const ROOM_BITRATE: u32 = 3_000_000;
    /// `fir_freq` of the rooms we create (Janus' demo value): a PLI to publishers every 10 s.
    pub const ROOM_FIR_FREQ: u32 = 10;

    /// A target for room `room` with room for `pupils` participants besides the teacher.
    pub fn new(url: &str, room: &str, pupils: usize) -> Janus {
        Janus {
            url: url.to_owned(),
            room: Janus::room_id(room),
            max_publishers: pupils + 1,
            bitrate: Janus::ROOM_BITRATE,
            fir_freq: Janus::ROOM_FIR_FREQ,
        }
    }

    /// A room id from a room name (below 2^53, as Janus' JSON numbers must be).
    pub fn room_id(name: &str) -> u64 {
        // FNV-1a: stable across runs and processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h & ((1 << 53) - 1)).max(1)
    }
}

/// What a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `success` (core requests, synchronous plugin requests).
    Success,
    /// `ack`, then an `event` with the same transaction (asynchronous plugin requests).
    Event,
    /// Nobody waits; an error becomes [`SignalEvent::Refused`].
    Nothing,
}

struct Request {
    msg: Value,
    expect: Expect,
    reply: Option<oneshot::Sender<Result<Value, SignalError>>>,
}

/// State shared by the session, its socket task and its subscription task.
#[derive(Default)]
struct Shared {
    session_id: Option<u64>,
    pub_handle: Option<u64>,
    sub_handle: Option<u64>,
    own_feed: Option<u64>,
    closed: Option<String>,
}

/// A joined Janus participant.
pub struct JanusSession {
    requests: mpsc::UnboundedSender<Request>,
    events: mpsc::UnboundedReceiver<SignalEvent>,
    shared: Arc<Mutex<Shared>>,
    /// Told when an answer to a subscriber offer went out (the next `subscribe` may follow).
    answered: Arc<Notify>,
    last_keepalive: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends a request and waits for its reply.
async fn call(
    requests: &mpsc::UnboundedSender<Request>,
    msg: Value,
    expect: Expect,
) -> Result<Value, SignalError> {
    let (tx, rx) = oneshot::channel();
    requests
        .send(Request {
            msg,
            expect,
            reply: Some(tx),
        })
        .map_err(|_| SignalError::Closed("socket task ended".into()))?;
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Err(_) => Err(SignalError::Timeout(REPLY_TIMEOUT)),
        Ok(Err(_)) => Err(SignalError::Closed("socket task ended".into())),
        Ok(Ok(r)) => r,
    }
}

fn fire(requests: &mpsc::UnboundedSender<Request>, msg: Value) -> Result<(), SignalError> {
    requests
        .send(Request {
            msg,
            expect: Expect::Nothing,
            reply: None,
        })
        .map_err(|_| SignalError::Closed("socket task ended".into()))
}

/// A plugin message on `handle`.
fn plugin_msg(session: u64, handle: u64, body: Value, jsep: Option<Value>) -> Value {
    let mut m = json!({
        "janus": "message",
        "session_id": session,
        "handle_id": handle,
        "body": body,
    });
    if let Some(j) = jsep {
        m["jsep"] = j;
    }
    m
}

/// The plugin's data of an `event`/`success`, or its error.
fn plugin_data(reply: &Value) -> Result<&Value, SignalError> {
    let data = reply
        .pointer("/plugindata/data")
        .ok_or_else(|| SignalError::Protocol(format!("no plugindata: {reply}")))?;
    if let Some(err) = data.get("error") {
        return Err(SignalError::Server {
            code: data
                .get("error_code")
                .map_or_else(|| "?".into(), |c| c.to_string()),
            message: err.as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(data)
}

fn janus_error(msg: &Value) -> SignalError {
    SignalError::Server {
        code: msg
            .pointer("/error/code")
            .map_or_else(|| "?".into(), |c| c.to_string()),
        message: msg
            .pointer("/error/reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The tracks of a subscriber offer, from the `streams` of an `attached`/`updated` event.
fn remote_tracks(data: &Value) -> Vec<RemoteTrack> {
    data.get("streams")
        .and_then(Value::as_array)
        .map(|streams| {
            streams
                .iter()
                .filter(|s| s.get("active").and_then(Value::as_bool) != Some(false))
                .filter_map(|s| {
                    let kind = match s.get("type").and_then(Value::as_str)? {
                        "audio" => MediaKind::Audio,
                        "video" => MediaKind::Video,
                        _ => return None,
                    };
                    let mid = s.get("mid").and_then(Value::as_str)?.to_owned();
                    Some(RemoteTrack {
                        track_id: mid.clone(),
                        mid,
                        kind,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Feed ids of a `publishers` list (of `joined` or an event).
fn feeds(data: &Value) -> Vec<u64> {
    data.get("publishers")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("dummy").and_then(Value::as_bool) != Some(true))
                .filter_map(|p| p.get("id").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default()
}

struct Pending {
    expect: Expect,
    acked: bool,
    reply: Option<oneshot::Sender<Result<Value, SignalError>>>,
}

/// Owns the socket: sends requests, routes replies by transaction, turns the rest into events.
async fn socket_task(
    mut ws: Ws,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<SignalEvent>,
    new_feeds: mpsc::UnboundedSender<Vec<u64>>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut next = 1u64;
    let reason = loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(mut req) = req else { break "session dropped".to_owned() };
                let transaction = format!("t{next}");
                next += 1;
                req.msg["transaction"] = Value::String(transaction.clone());
                let text = req.msg.to_string();
                pending.insert(transaction, Pending { expect: req.expect, acked: false, reply: req.reply });
                if let Err(e) = ws.send(Message::text(text)).await {
                    break format!("websocket: {e}");
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    None => break "socket ended".to_owned(),
                    Some(Err(e)) => break format!("websocket: {e}"),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => break "close frame".to_owned(),
                    Some(Ok(_)) => continue,
                };
                let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                    let _ = events.send(SignalEvent::Refused { reason: format!("undecodable: {text}") });
                    continue;
                };
                on_message(msg, &mut pending, &events, &new_feeds, &shared);
            }
        }
    };
    for (_, p) in pending.drain() {
        if let Some(r) = p.reply {
            let _ = r.send(Err(SignalError::Closed(reason.clone())));
        }
    }
    lock(&shared).closed.get_or_insert(reason.clone());
    let _ = events.send(SignalEvent::Closed { reason });
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

fn on_message(
    msg: Value,
    pending: &mut HashMap<String, Pending>,
    events: &mpsc::UnboundedSender<SignalEvent>,
    new_feeds: &mpsc::UnboundedSender<Vec<u64>>,
    shared: &Mutex<Shared>,
) {
    let kind = msg.get("janus").and_then(Value::as_str).unwrap_or_default();
    let transaction = msg.get("transaction").and_then(Value::as_str);
    if let Some(t) = transaction
        && let Some(p) = pending.get_mut(t)
    {
        let done = match (kind, p.expect) {
            ("ack", Expect::Event) => {
                p.acked = true;
                false
            }
            ("ack" | "success", Expect::Nothing) => true,
            ("ack", _) | ("success", Expect::Success) | ("event", Expect::Event) => true,
            ("error", _) => true,
            ("event", Expect::Nothing) => true,
            _ => false,
        };
        if done {
            let p = pending.remove(t).expect("present");
            let result = if kind == "error" {
                Err(janus_error(&msg))
            } else if kind == "event" {
                plugin_data(&msg).map(|_| msg.clone())
            } else {
                Ok(msg.clone())
            };
            match (p.reply, result) {
                (Some(r), result) => {
                    let _ = r.send(result);
                }
                (None, Err(e)) => {
                    let _ = events.send(SignalEvent::Refused {
                        reason: e.to_string(),
                    });
                }
                (None, Ok(_)) => {}
            }
            // A reply can carry news too (publishers in `joined` are read by the joiner).
            return;
        }
        if kind == "ack" {
            return;
        }
    }
    let sender = msg.get("sender").and_then(Value::as_u64);
    match kind {
        "event" => {
            let (pub_handle, sub_handle) = {
                let s = lock(shared);
                (s.pub_handle, s.sub_handle)
            };
            let Some(data) = msg.pointer("/plugindata/data") else {
                return;
            };
            if let Some(err) = data.get("error") {
                let _ = events.send(SignalEvent::Refused {
                    reason: format!("janus: {err}"),
                });
                return;
            }
            if sender.is_some() && sender == pub_handle {
                let f = feeds(data);
                if !f.is_empty() {
                    let _ = new_feeds.send(f);
                }
            } else if sender.is_some()
                && sender == sub_handle
                && let Some(sdp) = msg
                    .pointer("/jsep/sdp")
                    .and_then(Value::as_str)
                    .filter(|_| msg.pointer("/jsep/type").and_then(Value::as_str) == Some("offer"))
            {
                // An unsolicited renegotiation (a feed went away).
                let _ = events.send(SignalEvent::SubscriberOffer {
                    sdp: sdp.to_owned(),
                    tracks: remote_tracks(data),
                });
            }
        }
        "hangup" => {
            let reason = msg
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let which = if sender.is_some() && sender == lock(shared).pub_handle {
                "publish"
            } else {
                "subscribe"
            };
            let _ = events.send(SignalEvent::Refused {
                reason: format!("janus hung up the {which} connection: {reason}"),
            });
        }
        "timeout" => {
            let _ = events.send(SignalEvent::Closed {
                reason: "janus session timed out".into(),
            });
        }
        // webrtcup, media, slowlink, detached, trickle, and replies nobody waits for.
        _ => {}
    }
}

/// Subscribes to every feed but our own, one negotiation at a time.
async fn subscription_task(
    requests: mpsc::UnboundedSender<Request>,
    mut new_feeds: mpsc::UnboundedReceiver<Vec<u64>>,
    events: mpsc::UnboundedSender<SignalEvent>,
    shared: Arc<Mutex<Shared>>,
    answered: Arc<Notify>,
    room: u64,
) {
    let mut subscribed: HashSet<u64> = HashSet::new();
    let mut queue: VecDeque<u64> = VecDeque::new();
    while let Some(batch) = new_feeds.recv().await {
        let (session, own) = {
            let s = lock(&shared);
            (s.session_id, s.own_feed)
        };
        let Some(session) = session else { continue };
        queue.extend(batch);
        // Fold whatever else arrived meanwhile into this negotiation.
        while let Ok(more) = new_feeds.try_recv() {
            queue.extend(more);
        }
        let fresh: Vec<u64> = queue
            .drain(..)
            .filter(|f| Some(*f) != own && subscribed.insert(*f))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let streams: Vec<Value> = fresh.iter().map(|f| json!({ "feed": f })).collect();
        let sub_handle = lock(&shared).sub_handle;
        let result = async {
            let handle = match sub_handle {
                Some(h) => h,
                None => {
                    let reply = call(
                        &requests,
                        json!({"janus": "attach", "session_id": session, "plugin": "janus.plugin.videoroom"}),
                        Expect::Success,
                    )
                    .await?;
                    let h = reply
                        .pointer("/data/id")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| SignalError::Protocol(format!("attach: {reply}")))?;
                    lock(&shared).sub_handle = Some(h);
                    h
                }
            };
            let body = if sub_handle.is_none() {
                json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams})
            } else {
                json!({"request": "subscribe", "streams": streams})
            };
            let reply = call(
                &requests,
                plugin_msg(session, handle, body, None),
                Expect::Event,
            )
            .await?;
            let data = plugin_data(&reply)?;
            let sdp = reply
                .pointer("/jsep/sdp")
                .and_then(Value::as_str)
                .ok_or_else(|| SignalError::Protocol(format!("no offer in {reply}")))?;
            Ok::<_, SignalError>(SignalEvent::SubscriberOffer {
                sdp: sdp.to_owned(),
                tracks: remote_tracks(data),
            })
        }
        .await;
        match result {
            Ok(offer) => {
                let notified = answered.notified();
                if events.send(offer).is_err() {
                    return;
                }
                // Janus refuses a new subscription while one is being negotiated.
                let _ = tokio::time::timeout(REPLY_TIMEOUT, notified).await;
            }
            Err(e) => {
                let _ = events.send(SignalEvent::Refused {
                    reason: format!("subscribe: {e}"),
                });
            }
        }
    }
}

impl Target for Janus {
    type Session = JanusSession;

    async fn join(&self, who: &Identity) -> Result<JanusSession, SignalError> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| SignalError::Connect(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) =
            tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| SignalError::Timeout(REPLY_TIMEOUT))?
                .map_err(|e| SignalError::Connect(e.to_string()))?;
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let answered = Arc::new(Notify::new());
        let socket = tokio::spawn(socket_task(
            ws,
            req_rx,
            ev_tx.clone(),
            feed_tx.clone(),
            shared.clone(),
        ));
        let subscriptions = tokio::spawn(subscription_task(
            req_tx.clone(),
            feed_rx,
            ev_tx,
            shared.clone(),
            answered.clone(),
            self.room,
        ));
        let mut session = JanusSession {
            requests: req_tx,
            events: ev_rx,
            shared: shared.clone(),
            answered,
            last_keepalive: Instant::now(),
            tasks: vec![socket, subscriptions],
        };
        let result = async {
            let reply = call(
                &session.requests,
                json!({"janus": "create"}),
                Expect::Success,
            )
            .await?;
            let sid = reply
                .pointer("/data/id")
                .and_then(Value::as_u64)
                .ok_or_else(|| SignalError::Protocol(format!("create: {reply}")))?;
            lock(&shared).session_id = Some(sid);
            let reply = call(
                &session.requests,
                json!({"janus": "attach", "session_id": sid, "plugin": "janus.plugin.videoroom"}),
                Expect::Success,
            )
            .await?;
            let handle = reply
                .pointer("/data/id")
                .and_then(Value::as_u64)
                .ok_or_else(|| SignalError::Protocol(format!("attach: {reply}")))?;
            lock(&shared).pub_handle = Some(handle);
            if who.teacher {
                let create = json!({
                    "request": "create",
                    "room": self.room,
                    "description": "loadtest",
                    "permanent": false,
                    "is_private": false,
                    "publishers": self.max_publishers,
                    "bitrate": self.bitrate,
                    "fir_freq": self.fir_freq,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": false,
                });
                let reply = call(
                    &session.requests,
                    plugin_msg(sid, handle, create, None),
                    Expect::Success,
                )
                .await?;
                match plugin_data(&reply) {
                    Ok(_) => {}
                    Err(SignalError::Server { code, .. }) if code == ROOM_EXISTS.to_string() => {}
                    Err(e) => return Err(e),
                }
            }
            let join = json!({
                "request": "join",
                "ptype": "publisher",
                "room": self.room,
                "display": who.name,
            });
            let reply = call(
                &session.requests,
                plugin_msg(sid, handle, join, None),
                Expect::Event,
            )
            .await?;
            let data = plugin_data(&reply)?;
            if data.get("videoroom").and_then(Value::as_str) != Some("joined") {
                return Err(SignalError::Protocol(format!("join: {reply}")));
            }
            lock(&shared).own_feed = data.get("id").and_then(Value::as_u64);
            let existing = feeds(data);
            if !existing.is_empty() {
                let _ = feed_tx.send(existing);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(session),
            Err(e) => {
                session.leave().await;
                Err(e)
            }
        }
    }
}

impl JanusSession {
    fn ids(&self, subscriber: bool) -> Result<(u64, u64), SignalError> {
        let s = lock(&self.shared);
        let handle = if subscriber {
            s.sub_handle
        } else {
            s.pub_handle
        };
        match (s.session_id, handle) {
            (Some(sid), Some(h)) => Ok((sid, h)),
            _ => Err(SignalError::Protocol("no such janus handle".into())),
        }
    }
}

fn layer_substream(layer: MaxLayer) -> u8 {
    // With rid_order "lmh": 0 = q, 1 = h, 2 = f.
    match layer {
        MaxLayer::Low => 0,
        MaxLayer::Medium => 1,
        MaxLayer::High => 2,
    }
}

impl Session for JanusSession {
    async fn publish(
        &mut self,
        offer: &str,
        _tracks: &[(String, PublishSource)],
    ) -> Result<String, SignalError> {
        let (sid, handle) = self.ids(false)?;
        let jsep = json!({
            "type": "offer",
            "sdp": offer,
            // Our candidates are in the SDP; none will trickle.
            "trickle": false,
            // Our simulcast rids are listed lowest first (q;h;f).
            "rid_order": "lmh",
        });
        let reply = call(
            &self.requests,
            plugin_msg(sid, handle, json!({"request": "publish"}), Some(jsep)),
            Expect::Event,
        )
        .await?;
        plugin_data(&reply)?;
        reply
            .pointer("/jsep/sdp")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SignalError::Protocol(format!("no answer in {reply}")))
    }

    async fn answer(&mut self, sdp: &str) -> Result<(), SignalError> {
        let (sid, handle) = self.ids(true)?;
        let jsep = json!({"type": "answer", "sdp": sdp, "trickle": false});
        let result = fire(
            &self.requests,
            plugin_msg(sid, handle, json!({"request": "start"}), Some(jsep)),
        );
        self.answered.notify_one();
        result
    }

    async fn cap_layer(&mut self, track_id: &str, layer: MaxLayer) -> Result<(), SignalError> {
        let (sid, handle) = self.ids(true)?;
        let body = json!({
            "request": "configure",
            "streams": [{
                "mid": track_id,
                "substream": layer_substream(layer),
                "temporal": 2,
            }],
        });
        fire(&self.requests, plugin_msg(sid, handle, body, None))
    }

    async fn next_event(&mut self) -> SignalEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => SignalEvent::Closed {
                reason: lock(&self.shared)
                    .closed
                    .clone()
                    .unwrap_or_else(|| "socket task ended".into()),
            },
        }
    }

    async fn keepalive(&mut self) -> Result<(), SignalError> {
        if self.last_keepalive.elapsed() < KEEPALIVE_INTERVAL {
            return Ok(());
        }
        self.last_keepalive = Instant::now();
        let sid = lock(&self.shared)
            .session_id
            .ok_or_else(|| SignalError::Protocol("no janus session".into()))?;
        fire(
            &self.requests,
            json!({"janus": "keepalive", "session_id": sid}),
        )
    }

    async fn leave(&mut self) {
        let sid = lock(&self.shared).session_id;
        if let Some(sid) = sid {
            // Destroying the session detaches both handles and hangs up their connections.
            let _ = call(
                &self.requests,
                json!({"janus": "destroy", "session_id": sid}),
                Expect::Success,
            )
            .await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_stable_json_safe_numbers() {
        let a = Janus::room_id("load-lesson");
        assert_eq!(a, Janus::room_id("load-lesson"));
        assert_ne!(a, Janus::room_id("other"));
        assert!(a > 0 && a < (1 << 53));
    }

    #[test]
    fn reads_streams_and_feeds() {
        let data = json!({
            "videoroom": "attached",
            "streams": [
                {"type": "audio", "mid": "0", "feed_id": 7},
                {"type": "video", "mid": "1", "feed_id": 7},
                {"type": "data", "mid": "2"},
                {"type": "video", "mid": "3", "active": false},
            ],
            "publishers": [{"id": 7}, {"id": 9, "dummy": true}],
        });
        let tracks = remote_tracks(&data);
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[1].kind, MediaKind::Video);
        assert_eq!(tracks[1].track_id, "1");
        assert_eq!(feeds(&data), vec![7]);
        assert_eq!(layer_substream(MaxLayer::Low), 0);
    }
}
