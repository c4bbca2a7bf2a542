//! [`PortalLinkGate`]: the domain's answer to signaling's [`LinkGate`] (docs/PARTNER.md
//! "Lesson links"). On the host it admits a partner's link at the room's door (key, state,
//! expiry, room) and audits it sparingly; on the partner it lists the links to keep dialled and
//! ends a link the host refused for good.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono_tz::Tz;
use classroom_domain::Db;
use classroom_domain::lesson_link::{self, EndedBy};
use classroom_signaling::link_gate::{
    AdmitFuture, LinkAdmitted, LinkGate, LinkRefusal, LinkRequest, MAX_OUTGOING_LINKS,
    OutgoingFuture, OutgoingLink,
};
use tracing::{info, warn};

use crate::unix_now;

/// At most one `lesson_link_used` entry per link in this many seconds: a dialer that reconnects
/// in a loop must not grow the audit log (as `guest_link_used`).
const AUDIT_USE_EVERY: i64 = 600;
/// At most one `lesson_link_refused` entry per link in this many seconds.
const AUDIT_REFUSAL_EVERY: i64 = 60;
/// Longest key looked at; a real one is 43 characters.
const MAX_KEY_LEN: usize = 256;

pub struct PortalLinkGate {
    db: Db,
    /// The school's time zone: a partner link is dialled on its local lesson's day.
    timezone: Tz,
    /// (link id, admitted?) → when it was last audited.
    audited: Mutex<HashMap<(String, bool), i64>>,
}

/// The key under which refusals of link ids the host does not know are rate-limited together
/// (no real id has this form: ids are URL-safe tokens).
const UNKNOWN_LINKS: &str = "<unknown>";

impl PortalLinkGate {
    pub fn new(db: Db, timezone: Tz) -> PortalLinkGate {
        PortalLinkGate {
            db,
            timezone,
            audited: Mutex::new(HashMap::new()),
        }
    }

    fn should_audit(&self, link: &str, admitted: bool, now: i64) -> bool {
        let every = if admitted {
            AUDIT_USE_EVERY
        } else {
            AUDIT_REFUSAL_EVERY
        };
        let mut map = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, at| now - *at < AUDIT_USE_EVERY);
        }
        let key = (link.to_owned(), admitted);
        match map.get(&key) {
            Some(at) if now - *at < every => false,
            _ => {
                map.insert(key, now);
                true
            }
        }
    }

    /// The host's decision on `request`, audited.
    pub async fn decide(&self, request: &LinkRequest) -> Result<LinkAdmitted, LinkRefusal> {
        let now = unix_now();
        let key_hash = if request.key.len() > MAX_KEY_LEN {
            String::new()
        } else {
            classroom_auth::token::hash_token(&request.key)
        };
        let decision = lesson_link::admit_lesson_link(
            &self.db,
            &request.link_id,
            &key_hash,
            &request.room,
            now,
        )
        .await;
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                warn!(link = %request.link_id, "link gate: cannot check a link, refusing: {e}");
                return Err(LinkRefusal {
                    code: "link_not_running",
                    message: "The host cannot check the link right now; try again.".into(),
                    permanent: false,
                });
            }
        };
        let (lesson, audited) = match &decision {
            Ok(a) => (Some(a.lesson.id.as_str()), Ok(())),
            Err(why) => (None, Err(why.code())),
        };
        // Refusals of unknown ids share one limit: anyone can present a fresh random id on
        // every socket, which must not grow the audit log nor the limiter's table. Only ids of
        // real links (bounded per lesson) get a limit of their own.
        let limit_key = if audited == Err("link_unknown") {
            UNKNOWN_LINKS
        } else {
            request.link_id.as_str()
        };
        if self.should_audit(limit_key, audited.is_ok(), now)
            && let Err(e) =
                lesson_link::audit_link_door(&self.db, &request.link_id, lesson, audited, now).await
        {
            warn!(link = %request.link_id, "link gate: cannot audit: {e}");
        }
        match decision {
            Ok(a) => Ok(LinkAdmitted {
                link_id: a.link.id,
                room: a.lesson.media_room,
                partner_school: a.link.partner_school.unwrap_or(a.link.partner_name),
            }),
            Err(why) => {
                info!(link = %request.link_id, code = why.code(), "link gate: refused");
                Err(LinkRefusal {
                    code: why.code(),
                    message: refusal_message(why).to_owned(),
                    permanent: true,
                })
            }
        }
    }

    /// The partner's links to dial now.
    pub async fn dialled(&self) -> Vec<OutgoingLink> {
        let now = unix_now();
        let today = chrono::DateTime::from_timestamp(now, 0)
            .map(|d| d.with_timezone(&self.timezone).date_naive())
            .unwrap_or_default();
        let limit = u32::try_from(MAX_OUTGOING_LINKS).unwrap_or(u32::MAX);
        match lesson_link::outgoing_partner_links(&self.db, today, now, limit).await {
            Ok(rows) => rows
                .into_iter()
                .map(|(l, local_room)| OutgoingLink {
                    link_id: l.host_link_id,
                    key: l.link_key,
                    host_ws_url: l.host_ws_url,
                    host_room: l.host_room,
                    host_school: l.host_school,
                    local_room,
                })
                .collect(),
            Err(e) => {
                warn!("link gate: cannot list the links to dial: {e}");
                Vec::new()
            }
        }
    }
}

/// Ends the partner-side link that the host refused for good.
pub async fn end_refused(db: &Db, link: &OutgoingLink, code: &str) {
    let found = lesson_link::partner_link_for_host(db, &link.host_ws_url, &link.link_id).await;
    let stored = match found {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            warn!(link = %link.link_id, "link gate: cannot find a refused link: {e}");
            return;
        }
    };
    let by = EndedBy::Host {
        code,
        at: unix_now(),
    };
    match lesson_link::end_partner_link(db, &stored.id, by).await {
        Ok(_) => info!(link = %stored.id, code, "link ended: the host refused it for good"),
        Err(e) => warn!(link = %stored.id, "link gate: cannot end a refused link: {e}"),
    }
}

fn refusal_message(why: lesson_link::AdmitRefusal) -> &'static str {
    use lesson_link::AdmitRefusal::*;
    match why {
        Unknown => "No such lesson link on this server.",
        BadKey => "The link key is not this link's.",
        Revoked => "The host revoked this lesson link.",
        Expired => "This lesson link has expired.",
        WrongRoom => "This lesson link is for another room (or its lesson is gone).",
    }
}

impl LinkGate for PortalLinkGate {
    fn admit<'a>(&'a self, request: &'a LinkRequest) -> AdmitFuture<'a> {
        Box::pin(self.decide(request))
    }

    fn outgoing<'a>(&'a self) -> OutgoingFuture<'a> {
        Box::pin(self.dialled())
    }

    fn refused(&self, link: &OutgoingLink, refusal: &LinkRefusal) {
        let db = self.db.clone();
        let link = link.clone();
        let code = refusal.code;
        tokio::spawn(async move { end_refused(&db, &link, code).await });
    }
}
