//! axum's WebSocket, adapted to the session's [`Frame`] stream and sink.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt, future};

use crate::Inner;
use crate::session::{self, Frame};
use crate::unjoined::{TooManyUnjoined, UnjoinedSlot};

/// Frames beyond this are cut by the WebSocket layer itself (close 1009) before being buffered;
/// between the protocol limit and this one the session answers `message_too_large`.
const WEBSOCKET_HARD_LIMIT: usize = 1024 * 1024;

/// tungstenite's default read buffer (128 KiB) is zero-filled on the first read, so it was the
/// largest single part of a pupil's memory. Signaling messages are a few KiB (an SDP answer up to
/// ~10 KiB), and a longer frame only makes the buffer grow to that frame's length.
const WEBSOCKET_READ_BUFFER: usize = 4 * 1024;

pub(crate) fn router(inner: Arc<Inner>) -> axum::Router {
    axum::Router::new()
        .route("/ws", get(upgrade))
        .with_state(inner)
}

/// The address a `/ws` client is counted under: the TCP peer, or the client a trusted reverse
/// proxy names (the portal's rule, `classroom_auth::client_addr`).
fn client_address(inner: &Inner, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    classroom_auth::client_addr::resolve(peer.ip(), headers, &inner.config.trusted_proxies)
}

async fn upgrade(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Taken before the upgrade so that simultaneous upgrades cannot all slip under the cap.
    let place = inner
        .unjoined
        .try_acquire(client_address(&inner, peer, &headers));
    ws.max_message_size(WEBSOCKET_HARD_LIMIT)
        .max_frame_size(WEBSOCKET_HARD_LIMIT)
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .on_upgrade(move |socket| serve(inner, socket, place))
}

async fn serve(inner: Arc<Inner>, socket: WebSocket, place: Result<UnjoinedSlot, TooManyUnjoined>) {
    let (sink, stream) = socket.split();
    let stream = stream
        .take_while(|m| future::ready(m.is_ok()))
        .filter_map(|m| {
            future::ready(match m {
                Ok(Message::Text(t)) => Some(Frame::Text(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => Some(Frame::Binary(b.len())),
                Ok(Message::Close(c)) => Some(Frame::Close(
                    c.as_ref().map(|c| c.code).unwrap_or(1005),
                    c.map(|c| c.reason.as_str().to_owned()).unwrap_or_default(),
                )),
                Ok(Message::Ping(_) | Message::Pong(_)) | Err(_) => None,
            })
        });
    let sink = sink.with(|f: Frame| {
        future::ready(Ok::<_, axum::Error>(match f {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(n) => Message::Binary(vec![0; n].into()),
            Frame::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        }))
    });
    match place {
        Ok(slot) => session::run(inner, Box::pin(stream), Box::pin(sink), Some(slot)).await,
        Err(TooManyUnjoined { limit }) => {
            session::refuse_crowded(&inner, Box::pin(stream), Box::pin(sink), limit).await
        }
    }
}
