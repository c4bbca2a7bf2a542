//! The door of lesson links between two schools' servers (docs/PARTNER.md, "Lesson links").
//!
//! Signaling runs the links (the host's side of the control channel, the partner side's dialer)
//! but knows nothing of lessons, schools or the database. The server plugs a [`LinkGate`] in
//! that does (`classroom-portal`): on the host it decides whether a partner server's link may
//! enter a room now and records its use; on the partner side it says which links this server
//! should keep dialled, and hears when the host refused one for good.

use std::future::Future;
use std::pin::Pin;

/// What a partner server presents at the host's door (`link_join`, docs/PROTOCOL.md).
#[derive(Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// The link's id, as the host issued it with the invitation.
    pub link_id: String,
    /// The secret the host handed the partner when the invitation was accepted. Never logged.
    pub key: String,
    /// The room the partner asks to enter.
    pub room: String,
}

impl std::fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRequest")
            .field("link_id", &self.link_id)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// A link admitted at the host's door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAdmitted {
    pub link_id: String,
    /// The host lesson's room.
    pub room: String,
    /// The partner school's name, shown beside its people's names ("山田 花子（北小学校）").
    pub partner_school: String,
}

/// Why a link may not enter. `code` is the documented error code sent to the partner server
/// (`link_unknown`, `link_revoked`, `link_expired`, `link_wrong_room`, `link_not_running`,
/// `link_bad_key`); `message` says it in words. A refusal that will not change by retrying
/// (revoked, expired, unknown, bad key, wrong room) is `permanent`: the partner stops dialling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRefusal {
    pub code: &'static str,
    pub message: String,
    pub permanent: bool,
}

/// A link this server dials: it accepted the host's invitation for one of its own lessons.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingLink {
    pub link_id: String,
    /// The secret to present at the host's door.
    pub key: String,
    /// The host's signaling WebSocket, `wss://host.example/ws` (`ws://` only where the
    /// configuration allows it, for tests on private addresses).
    pub host_ws_url: String,
    /// The host lesson's room, on the host.
    pub host_room: String,
    /// The host school's name, shown beside the host's people's names here.
    pub host_school: String,
    /// This server's lesson room that the link joins the host lesson to.
    pub local_room: String,
}

impl std::fmt::Debug for OutgoingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingLink")
            .field("link_id", &self.link_id)
            .field("host_ws_url", &self.host_ws_url)
            .field("host_room", &self.host_room)
            .field("host_school", &self.host_school)
            .field("local_room", &self.local_room)
            .finish_non_exhaustive()
    }
}

pub type AdmitFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LinkAdmitted, LinkRefusal>> + Send + 'a>>;
pub type OutgoingFuture<'a> = Pin<Box<dyn Future<Output = Vec<OutgoingLink>> + Send + 'a>>;

/// Decides which links enter, and which links this server dials.
pub trait LinkGate: Send + Sync + 'static {
    /// Host side: whether `request` may enter its room now. A gate that cannot decide (its
    /// database is down) refuses, not permanently.
    fn admit<'a>(&'a self, request: &'a LinkRequest) -> AdmitFuture<'a>;

    /// Host side: the link entered (after its `joined` was sent). Must not block.
    fn entered(&self, _link: &LinkAdmitted) {}

    /// Host side: the link left, for whatever reason. Must not block.
    fn left(&self, _link: &LinkAdmitted) {}

    /// Partner side: the links to keep dialled now (accepted, not revoked or expired, whose
    /// local lesson is on). Asked every few seconds by the dialer; at most
    /// [`MAX_OUTGOING_LINKS`] are dialled.
    fn outgoing<'a>(&'a self) -> OutgoingFuture<'a>;

    /// Partner side: the host refused `link` for good (a [`LinkRefusal::permanent`] refusal):
    /// it should no longer be returned by [`LinkGate::outgoing`]. Must not block.
    fn refused(&self, _link: &OutgoingLink, _refusal: &LinkRefusal) {}
}

/// Links one server dials at once.
pub const MAX_OUTGOING_LINKS: usize = 16;

/// The gate of a server without lesson links: every link refused, nothing dialled. The refusal
/// is not permanent: a partner reaching a host before its links are attached (or while they are
/// switched off) must not end the link for good.
pub struct NoLinks;

impl LinkGate for NoLinks {
    fn admit<'a>(&'a self, _request: &'a LinkRequest) -> AdmitFuture<'a> {
        Box::pin(async {
            Err(LinkRefusal {
                code: "link_not_running",
                message: "this server takes no lesson links now".into(),
                permanent: false,
            })
        })
    }

    fn outgoing<'a>(&'a self) -> OutgoingFuture<'a> {
        Box::pin(async { Vec::new() })
    }
}
