//! Errors of the media plane.

use thiserror::Error;

/// Why the media plane refused a request or could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SfuError {
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the ICE-TCP listener {addr}: {source}")]
    BindTcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the media bind address {0} is unspecified, no address to announce is configured, and \
         this machine's interface addresses cannot be read"
    )]
    NothingToAnnounce(std::net::SocketAddr),
    #[error("cannot start the media thread: {0}")]
    Thread(std::io::Error),
    #[error("the SDP could not be parsed: {0}")]
    BadSdp(String),
    #[error("the SDP could not be negotiated: {0}")]
    Negotiation(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A connection of a lesson link this server dialled could not get a socket of its own
    /// (`shard::link::MAX_LINK_SOCKETS` per media thread, or the bind failed).
    #[error("no socket for a link connection: {0}")]
    LinkSockets(String),
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("the media plane has stopped")]
    Stopped,
}
