//! A lesson link as a participant of a session: `link_join` at the host's door, the seat the
//! dialer takes on the partner side, `link_people`, and the link's departure
//! (docs/PROTOCOL.md, "Lesson links").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::Sink;
use tracing::info;

use classroom_sfu::{ParticipantId, RoomId, ShardCommand};

use super::{CLOSE_GOING_AWAY, CLOSE_POLICY, Flow, Frame, Joined, Session};
use crate::Inner;
use crate::gate::Entrant;
use crate::link_door;
use crate::link_gate::{LinkAdmitted, LinkRequest};
use crate::link_host::{self, People, Side};
use crate::protocol::{ErrorCode, GoodbyeReason, LinkPerson, ParticipantInfo, ServerMessage};
use crate::registry::Outbound;
use crate::token::{Claims, Role};

/// Longest `link_id`, `key` and `room` taken at the door (the gate sees nothing longer).
const MAX_FIELD_BYTES: usize = 256;

/// Where a link sits: which link, in which room, for which school, on which side.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    pub link_id: String,
    pub room: String,
    /// The school on the far side, shown as the link's name and beside its people's names.
    pub school: String,
    pub side: Side,
    /// The host's gate admitted it (host side only): told when it leaves.
    pub admitted: Option<LinkAdmitted>,
}

/// A seated link's state in its session.
pub(crate) struct Link {
    seat: Seat,
    pub people: People,
}

impl<K: Sink<Frame> + Unpin> Session<K> {
    /// `link_join`: the partner server's link at the host's door.
    pub(super) async fn link_join(
        &mut self,
        id: Option<String>,
        link_id: String,
        key: String,
        room: String,
    ) -> Flow {
        if self.joined.is_some() {
            return self
                .fail(
                    id,
                    ErrorCode::AlreadyJoined,
                    "this connection has already joined",
                )
                .await;
        }
        if [&link_id, &key, &room]
            .iter()
            .any(|f| f.is_empty() || f.len() > MAX_FIELD_BYTES)
        {
            return self
                .fail(
                    id,
                    ErrorCode::BadRequest,
                    format!("link_id, key and room must be 1 to {MAX_FIELD_BYTES} bytes"),
                )
                .await;
        }
        // Each knock costs the gate a lookup: an address guessing at the door is paced first.
        if let Some(slot) = &self.unjoined
            && let Err(wait) = self.inner.link_door.knock(slot.host(), Instant::now())
        {
            info!(link = %link_id, "link_join refused: too many from one address");
            let _ = self
                .fail(
                    id,
                    ErrorCode::RateLimited,
                    format!(
                        "at most {} link_join per {} s from one address; try again in {:.1} s",
                        link_door::ATTEMPTS,
                        link_door::WINDOW.as_secs(),
                        wait.as_secs_f64()
                    ),
                )
                .await;
            return Flow::Close(CLOSE_POLICY, "refused");
        }
        let request = LinkRequest { link_id, key, room };
        let admitted = match self.inner.links().admit(&request).await {
            Ok(a) => a,
            Err(refusal) => {
                info!(link = %request.link_id, room = %request.room, code = refusal.code, "lesson link refused");
                let code = ErrorCode::of_link_refusal(refusal.code);
                return self.fail(id, code, refusal.message).await;
            }
        };
        let seat = Seat {
            link_id: admitted.link_id.clone(),
            room: admitted.room.clone(),
            school: admitted.partner_school.clone(),
            side: Side::Host,
            admitted: Some(admitted),
        };
        let flow = self.seat_link(id, seat).await;
        // Revoking marks the link, then removes its seat: a revoke that ran between the check
        // above and the seat found nothing to remove. A second check, once seated, catches it.
        if matches!(flow, Flow::Continue)
            && let Err(refusal) = self.inner.links().admit(&request).await
            && refusal.permanent
            && let Some(joined) = &self.joined
        {
            info!(link = %request.link_id, code = refusal.code, "lesson link refused once seated");
            self.inner
                .registry
                .send(joined.id, Outbound::Close(GoodbyeReason::Revoked));
        }
        flow
    }

    /// Seats a link as one participant of its room: `joined` to it, the shard told, the room
    /// told. A second seat of the same link replaces the first.
    pub(super) async fn seat_link(&mut self, id: Option<String>, seat: Seat) -> Flow {
        let identity = format!("link:{}", seat.link_id);
        let pid = ParticipantId(self.inner.next_participant.fetch_add(1, Ordering::Relaxed));
        let room = RoomId::from(seat.room.as_str());
        let me = ParticipantInfo {
            participant_id: pid.to_string(),
            identity: identity.clone(),
            name: seat.school.clone(),
            role: Role::PartnerLink,
            school: None,
            remote: false,
        };
        let admission = self.take_seat(pid, &room, me.clone());
        let claims = Claims::new(
            &seat.room,
            &identity,
            &seat.school,
            Role::PartnerLink,
            Duration::ZERO,
        );
        // No resume credential: a link comes back through the link gate, not around it.
        let mut others = admission.others;
        // Roster ids do not cross (`without_identities`, which covers what follows).
        others.iter_mut().for_each(|p| p.identity.clear());
        self.send(&ServerMessage::Joined {
            id,
            participant: me.clone(),
            room: seat.room.clone(),
            permissions: claims.perms.clone(),
            participants: others,
            tracks: admission.tracks,
            resume: None,
            resumed: false,
            ice_servers: self.inner.ice_servers(&identity),
        })
        .await;
        info!(participant = %pid, room = %room, link = %seat.link_id, side = ?seat.side, "lesson link seated");
        self.inner.link_stats.entered(seat.side);
        if let Some(admitted) = &seat.admitted {
            self.inner.links().entered(admitted);
        }
        let link = seat.side == Side::Partner;
        let entrant = Entrant {
            room: seat.room.clone(),
            identity,
            role: Role::PartnerLink,
        };
        self.joined = Some(Joined {
            id: pid,
            room: room.clone(),
            claims,
            entrant,
            link: Some(Link {
                seat,
                people: People::default(),
            }),
        });
        // The host is ICE-lite and answers; the partner side runs full ICE from its own sockets.
        let join = ShardCommand::Join {
            participant: pid,
            room: room.clone(),
            subscribe: true,
            teacher: false,
            link,
            relay: true,
        };
        if self.inner.sfu.send(join).await.is_err() {
            self.fail(None, ErrorCode::Internal, "the media plane is not running")
                .await;
            return Flow::Close(CLOSE_GOING_AWAY, "media plane stopped");
        }
        self.inner.registry.broadcast(
            &room,
            pid,
            &ServerMessage::ParticipantJoined { participant: me },
        );
        Flow::Continue
    }

    /// `link_people`: the whole list of the far side's people whose tracks the link publishes.
    pub(super) async fn link_people(
        &mut self,
        id: Option<String>,
        people: Vec<LinkPerson>,
    ) -> Flow {
        let Some(joined) = &mut self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        let Some(link) = &mut joined.link else {
            return self
                .fail(
                    id,
                    ErrorCode::PermissionDenied,
                    "only a lesson link sends link_people",
                )
                .await;
        };
        if let Err(wait) = link.people.pace(std::time::Instant::now()) {
            return self
                .fail(
                    id,
                    ErrorCode::RateLimited,
                    format!(
                        "at most {} people lists per {} s; try again in {:.1} s",
                        link_host::PEOPLE_LISTS,
                        link_host::PEOPLE_WINDOW.as_secs(),
                        wait.as_secs_f64()
                    ),
                )
                .await;
        }
        if let Err(message) = link_host::check_people(&people) {
            return self.fail(id, ErrorCode::BadRequest, message).await;
        }
        let (pid, room) = (joined.id, joined.room.clone());
        let inner = self.inner.clone();
        let change =
            link.people
                .replace(people, &joined.entrant.identity, &link.seat.school, || {
                    ParticipantId(inner.next_participant.fetch_add(1, Ordering::Relaxed))
                });
        self.inner
            .registry
            .set_remote(&room, pid, link.people.infos());
        for participant_id in change.left {
            self.inner.registry.broadcast(
                &room,
                pid,
                &ServerMessage::ParticipantLeft { participant_id },
            );
        }
        for participant in change.joined {
            self.inner.registry.broadcast(
                &room,
                pid,
                &ServerMessage::ParticipantJoined { participant },
            );
        }
        Flow::Continue
    }
}

impl<K: Sink<Frame> + Unpin> Session<K> {
    /// `link_layers`: the layers the far side's subscribers need of one track this side sends
    /// the link (dynacast across the link). The shard ignores a mid that carries no track.
    pub(super) async fn link_layers(
        &mut self,
        id: Option<String>,
        mid: String,
        active: Vec<String>,
    ) -> Flow {
        let Some(joined) = &self.joined else {
            return self.fail(id, ErrorCode::NotJoined, "join first").await;
        };
        if joined.link.is_none() {
            return self
                .fail(
                    id,
                    ErrorCode::PermissionDenied,
                    "only a lesson link sends link_layers",
                )
                .await;
        }
        if let Err(message) = link_host::check_layers(&mid, &active) {
            return self.fail(id, ErrorCode::BadRequest, message).await;
        }
        let cmd = ShardCommand::LinkLayers {
            participant: joined.id,
            mid,
            active,
        };
        if self.inner.sfu.send(cmd).await.is_err() {
            return self
                .fail(id, ErrorCode::Internal, "the media plane is not running")
                .await;
        }
        Flow::Continue
    }
}

/// The link left (socket gone, `leave`, replaced, revoked): its people leave with it.
pub(super) async fn depart(inner: &Arc<Inner>, pid: ParticipantId, room: &RoomId, mut link: Link) {
    inner.link_stats.left(link.seat.side);
    let _ = inner
        .sfu
        .send(ShardCommand::Leave { participant: pid })
        .await;
    let people = link.people.drain();
    if inner.registry.remove(pid).is_some() {
        for participant_id in people.into_iter().chain([pid.to_string()]) {
            inner.registry.broadcast(
                room,
                pid,
                &ServerMessage::ParticipantLeft { participant_id },
            );
        }
    }
    if let Some(admitted) = &link.seat.admitted {
        inner.links().left(admitted);
    }
    info!(participant = %pid, room = %room, link = %link.seat.link_id, "lesson link left");
}

/// `msg` as a lesson link may see it, when it names people: with their identities (roster ids)
/// left empty, so nothing but a display name, a role and a school crosses to the other server
/// (docs/PARTNER.md, "what crosses"). `None`: send `msg` as it is.
pub(super) fn without_identities(msg: &ServerMessage) -> Option<ServerMessage> {
    fn blank(p: &mut crate::protocol::ParticipantInfo) {
        p.identity.clear();
    }
    match msg {
        ServerMessage::Joined { .. } => {
            let mut m = msg.clone();
            if let ServerMessage::Joined { participants, .. } = &mut m {
                participants.iter_mut().for_each(blank);
            }
            Some(m)
        }
        ServerMessage::ParticipantJoined { .. } => {
            let mut m = msg.clone();
            if let ServerMessage::ParticipantJoined { participant } = &mut m {
                blank(participant);
            }
            Some(m)
        }
        _ => None,
    }
}
