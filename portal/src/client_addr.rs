//! The client address of a portal request, as one typed extractor: every handler that counts
//! or records an address takes [`ClientAddr`], so none can read the TCP peer or a forwarded
//! header on its own and get it wrong. The rule itself is
//! [`classroom_auth::client_addr::resolve`], shared with the WebSocket upgrade.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tracing::error;

pub use classroom_auth::client_addr::{
    ForwardedHeader, IpNet, NetError, TrustedProxies, rate_key, resolve,
};

use crate::{ApiError, Shared};

/// The client's address: the TCP peer, or what a trusted reverse proxy says it forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Shared> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &Shared) -> Result<Self, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            // Only a server built without `into_make_service_with_connect_info` gets here;
            // lumping every client into one address would make the limits lock everyone out.
            error!("no peer address on a portal request: the server is wired without it");
            return Err(ApiError::internal());
        };
        Ok(ClientAddr(resolve(
            peer.ip(),
            &parts.headers,
            &portal.trusted_proxies,
        )))
    }
}
