//! The WebSocket half of the test client: one JSON object per text frame (docs/PROTOCOL.md).
//!
//! A reader task parses every frame from the server. `subscriber_offer`s are handed to whoever
//! took the offer receiver (the subscribe connection); everything else goes into an event queue
//! that tests search with [`Signal::expect_event`]. A writer task owns the sink so several tasks
//! can send. When the socket closes, a synthetic `{"type":"__closed"}` event is queued and
//! [`Signal::wait_closed`] returns.

use super::wait::wait_for;
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Whether `event` is a message of type `ty`.
pub fn is_type(event: &Value, ty: &str) -> bool {
    event.get("type").and_then(Value::as_str) == Some(ty)
}

/// Whether `event` is an `error` with `code`.
pub fn is_error(event: &Value, code: &str) -> bool {
    is_type(event, "error") && event.get("code").and_then(Value::as_str) == Some(code)
}

/// How the socket ended, as seen by the reader task.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The close frame's code and reason, if the server sent one.
    pub frame: Option<(u16, String)>,
    /// A transport error, if the stream ended with one.
    pub error: Option<String>,
}

#[derive(Default)]
struct Shared {
    /// Events not yet taken by a test, in arrival order.
    queue: Mutex<VecDeque<Value>>,
    /// Every frame the server sent, for failure messages.
    history: Mutex<Vec<Value>>,
    closed: Mutex<Option<Closed>>,
    notify: Notify,
}

/// One WebSocket connection to the server.
pub struct Signal {
    out: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Signal {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Signal {
    /// Connects to `ws_url`. Returns the connection and the receiver of `subscriber_offer`s; if
    /// that receiver is dropped, offers are queued as ordinary events instead.
    pub async fn connect(
        ws_url: &str,
        timeout: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Value>)> {
        // The client itself must be able to send more than the server accepts (oversize tests).
        let config = WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        let (stream, _response) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async_with_config(ws_url, Some(config), true),
        )
        .await
        .with_context(|| format!("WebSocket connect to {ws_url} timed out"))?
        .with_context(|| format!("WebSocket connect to {ws_url}"))?;
        let (mut sink, mut source) = stream.split();

        let shared = Arc::new(Shared::default());
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (offer_tx, offer_rx) = mpsc::unbounded_channel::<Value>();

        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_shared = Arc::clone(&shared);
        let reader = tokio::spawn(async move {
            let shared = reader_shared;
            let mut closed = Closed {
                frame: None,
                error: None,
            };
            while let Some(frame) = source.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let event = serde_json::from_str::<Value>(text.as_str()).unwrap_or_else(
                            |err| json!({"type": "__unparseable", "raw": text.as_str(), "error": err.to_string()}),
                        );
                        shared.history.lock().unwrap().push(event.clone());
                        if is_type(&event, "subscriber_offer") {
                            if let Err(mpsc::error::SendError(event)) = offer_tx.send(event) {
                                shared.queue.lock().unwrap().push_back(event);
                            }
                        } else {
                            shared.queue.lock().unwrap().push_back(event);
                        }
                        shared.notify.notify_waiters();
                    }
                    Ok(Message::Binary(bytes)) => {
                        let event = json!({"type": "__binary", "len": bytes.len()});
                        shared.history.lock().unwrap().push(event.clone());
                        shared.queue.lock().unwrap().push_back(event);
                        shared.notify.notify_waiters();
                    }
                    Ok(Message::Close(frame)) => {
                        closed.frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        break;
                    }
                    Ok(_) => {} // ping/pong frames: tungstenite answers pings itself
                    Err(err) => {
                        closed.error = Some(err.to_string());
                        break;
                    }
                }
            }
            let event = json!({
                "type": "__closed",
                "close_code": closed.frame.as_ref().map(|(code, _)| *code),
                "close_reason": closed.frame.as_ref().map(|(_, reason)| reason.clone()),
                "error": closed.error.clone(),
            });
            shared.history.lock().unwrap().push(event.clone());
            shared.queue.lock().unwrap().push_back(event);
            *shared.closed.lock().unwrap() = Some(closed);
            shared.notify.notify_waiters();
        });

        Ok((
            Self {
                out: out_tx,
                shared,
                next_id: AtomicU64::new(1),
                tasks: vec![writer, reader],
            },
            offer_rx,
        ))
    }

    /// A fresh request id.
    pub fn next_id(&self) -> String {
        format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a text frame as is.
    pub fn send_raw(&self, text: impl Into<String>) -> Result<()> {
        self.out
            .send(Message::text(text.into()))
            .map_err(|_| anyhow!("the WebSocket writer has stopped (socket closed)"))
    }

    /// Sends a JSON message.
    pub fn send_json(&self, message: &Value) -> Result<()> {
        self.send_raw(message.to_string())
    }

    /// Sends a close frame; the writer stops afterwards.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    /// Sends `message` with a fresh `id` (unless it has one) and waits for the reply carrying the
    /// same id (`joined`, `publish_answer`, `pong` or `error`). The reply is removed from the
    /// queue and returned, whatever its type.
    pub async fn request(&self, mut message: Value, timeout: Duration) -> Result<Value> {
        let id = match message.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let id = self.next_id();
                message["id"] = Value::String(id.clone());
                id
            }
        };
        let ty = message
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        self.send_json(&message)?;
        self.expect_event(
            |event| {
                event.get("id").and_then(Value::as_str) == Some(id.as_str())
                    && !is_type(event, "__closed")
            },
            timeout,
        )
        .await
        .with_context(|| format!("no reply to {ty} (id {id})"))
    }

    /// Waits for the first queued event matching `pred`, removes it from the queue and returns
    /// it. Events that do not match stay queued for later expectations.
    pub async fn expect_event(
        &self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        let shared = &self.shared;
        wait_for(
            &shared.notify,
            timeout,
            || {
                format!(
                    "a matching server event; queued events: {}",
                    summarize(shared.queue.lock().unwrap().iter())
                )
            },
            || {
                let mut queue = shared.queue.lock().unwrap();
                let index = queue.iter().position(&pred)?;
                queue.remove(index)
            },
        )
        .await
    }

    /// Waits for an event of type `ty`.
    pub async fn expect_type(&self, ty: &str, timeout: Duration) -> Result<Value> {
        self.expect_event(|event| is_type(event, ty), timeout)
            .await
            .with_context(|| format!("expected a `{ty}` event"))
    }

    /// Waits for an `error` with `code`; an error with another code fails at once.
    pub async fn expect_error(&self, code: &str, timeout: Duration) -> Result<Value> {
        let event = self
            .expect_event(
                |event| is_type(event, "error") || is_type(event, "__closed"),
                timeout,
            )
            .await
            .with_context(|| format!("expected error `{code}`"))?;
        if !is_error(&event, code) {
            bail!("expected error `{code}`, got {event}");
        }
        Ok(event)
    }

    /// Returns (and removes) every queued event that matches `pred`, without waiting.
    pub fn take_events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut queue = self.shared.queue.lock().unwrap();
        let (taken, kept): (Vec<Value>, Vec<Value>) = queue.drain(..).partition(|e| pred(e));
        queue.extend(kept);
        taken
    }

    /// A copy of every frame the server has sent on this connection.
    pub fn history(&self) -> Vec<Value> {
        self.shared.history.lock().unwrap().clone()
    }

    /// Whether the socket has closed.
    pub fn closed(&self) -> Option<Closed> {
        self.shared.closed.lock().unwrap().clone()
    }

    /// Waits until the server has closed the socket.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Closed> {
        let shared = &self.shared;
        wait_for(
            &shared.notify,
            timeout,
            || {
                format!(
                    "the server to close the socket; frames received: {}",
                    summarize(shared.history.lock().unwrap().iter())
                )
            },
            || shared.closed.lock().unwrap().clone(),
        )
        .await
    }
}

/// A short description of events for failure messages (SDP bodies elided).
pub fn summarize<'a>(events: impl IntoIterator<Item = &'a Value>) -> String {
    let parts: Vec<String> = events
        .into_iter()
        .map(|event| {
            let mut event = event.clone();
            if let Some(object) = event.as_object_mut() {
                for key in ["sdp", "raw"] {
                    if let Some(Value::String(text)) = object.get_mut(key)
                        && text.len() > 80
                    {
                        *text = format!("<{} bytes>", text.len());
                    }
                }
            }
            event.to_string()
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A WebSocket connection that has not joined (or whose join failed): for feeding the server
/// bad input and checking its answers.
pub struct RawConnection {
    pub signal: Signal,
}

impl RawConnection {
    pub async fn connect(ws_url: &str) -> Result<Self> {
        let (signal, offers) = Signal::connect(ws_url, super::REPLY_TIMEOUT).await?;
        drop(offers); // nothing answers offers here; they are queued as events
        Ok(Self { signal })
    }

    /// Sends a `join` with `token` and returns the reply (`joined` or `error`).
    pub async fn join(&self, token: &str) -> Result<Value> {
        self.signal
            .request(
                json!({"v": 1, "type": "join", "token": token}),
                super::REPLY_TIMEOUT,
            )
            .await
    }

    pub fn send_raw(&self, text: impl Into<String>) -> Result<()> {
        self.signal.send_raw(text)
    }

    pub async fn expect_error(&self, code: &str) -> Result<Value> {
        self.signal.expect_error(code, super::REPLY_TIMEOUT).await
    }

    pub async fn wait_closed(&self) -> Result<Closed> {
        self.signal.wait_closed(super::REPLY_TIMEOUT).await
    }
}
