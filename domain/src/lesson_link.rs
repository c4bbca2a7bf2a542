//! Lesson links between two schools' servers (docs/PARTNER.md "Lesson links"): one host lesson
//! joined to one partner lesson, each school on its own server.
//!
//! Host side ([`LessonLink`]): a lesson's teacher or administrator invites a partner school; the
//! invitation code (a signed token the portal makes) names the link's id and is shown once. The
//! partner's server redeems it once ([`redeem_lesson_link`]) and gets a random link key, of
//! which only the SHA-256 is kept here; the room's door then admits the partner's link with
//! that key ([`admit_lesson_link`]) until it expires or is revoked.
//!
//! Partner side ([`PartnerLink`]): the link as the partner's server stored it after redeeming,
//! with the key it presents at the host's door; its dialer keeps the links of today's lessons
//! dialled ([`outgoing_partner_links`]) until someone ends them or the host refuses them for good.
//!
//! Creating, redeeming, accepting, using, refusing, revoking and ending are audited, each entry
//! naming the lesson. Key hashes arrive already hashed (the portal hashes, as for sessions).

use chrono::NaiveDate;

use crate::audit::{Acting, Action, AuditEntry, append};
use crate::calendar::format_date;
use crate::db::{Db, DbError, Table, dispatch, on_pool};
use crate::lesson::Lesson;

/// Links of a lesson that may be active (invited or accepted, not expired) at once, on either
/// side.
pub const MAX_ACTIVE_PER_LESSON: i64 = 10;
/// The longest an invitation (and the link it becomes) may live.
pub const MAX_TTL_SECS: i64 = 14 * 86_400;
/// Longest partner or school name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest URL, room name or title kept from a host's answer.
pub const MAX_FIELD_CHARS: usize = 512;

/// Where a host-side link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Created; the code has not been redeemed.
    Invited,
    /// Redeemed by the partner's server: the key admits it.
    Accepted,
    Revoked,
    /// Ended by the partner. Reserved: the partner does not tell the host yet (its dialer only
    /// stops), so this cut never writes it.
    Ended,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Invited => "invited",
            LinkState::Accepted => "accepted",
            LinkState::Revoked => "revoked",
            LinkState::Ended => "ended",
        }
    }

    fn parse(s: &str) -> Option<LinkState> {
        match s {
            "invited" => Some(LinkState::Invited),
            "accepted" => Some(LinkState::Accepted),
            "revoked" => Some(LinkState::Revoked),
            "ended" => Some(LinkState::Ended),
            _ => None,
        }
    }
}

/// A host-side link: an invitation of a host lesson, and once redeemed the link itself.
#[derive(Clone, PartialEq, Eq)]
pub struct LessonLink {
    pub id: String,
    pub lesson_id: String,
    pub partner_name: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: LinkState,
    /// SHA-256 (lowercase hex) of the link key; none until redeemed.
    key_hash: Option<String>,
    pub redeemed_at: Option<i64>,
    pub partner_school: Option<String>,
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for LessonLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LessonLink")
            .field("id", &self.id)
            .field("lesson_id", &self.lesson_id)
            .field("state", &self.state)
            .field("expires_at", &self.expires_at)
            .field("partner_school", &self.partner_school)
            .finish_non_exhaustive()
    }
}

impl LessonLink {
    /// Invited or accepted, and not expired: counts towards [`MAX_ACTIVE_PER_LESSON`].
    pub fn active(&self, now: i64) -> bool {
        matches!(self.state, LinkState::Invited | LinkState::Accepted) && now < self.expires_at
    }
}

/// What [`create_lesson_link`] needs; the id is chosen by the caller (random, unguessable).
#[derive(Debug, Clone)]
pub struct NewLessonLink<'a> {
    pub id: &'a str,
    pub partner_name: &'a str,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LessonLinkError {
    #[error("partner_name must be 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("expires_at must be in the future and at most {MAX_TTL_SECS} seconds away")]
    BadExpiry,
    #[error(
        "the lesson already has {MAX_ACTIVE_PER_LESSON} active partner links; revoke one first"
    )]
    TooMany,
    #[error("no such partner link")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a redemption is refused; [`RedeemRefusal::code`] is the documented API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRefusal {
    Unknown,
    Revoked,
    Expired,
    /// Redeemed already: a code works once.
    Replayed,
    /// The partner's school name is empty, too long or has control characters.
    BadSchool,
}

impl RedeemRefusal {
    pub fn code(self) -> &'static str {
        match self {
            RedeemRefusal::Unknown => "link_unknown",
            RedeemRefusal::Revoked => "link_revoked",
            RedeemRefusal::Expired => "link_expired",
            RedeemRefusal::Replayed => "link_replayed",
            RedeemRefusal::BadSchool => "bad_request",
        }
    }
}

/// A redeemed link, with what the partner is told about the host lesson.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub link: LessonLink,
    pub lesson: Lesson,
    /// The host lesson's school name.
    pub host_school: String,
    /// The host lesson's class title.
    pub lesson_title: String,
}

/// Why the host's door turns a partner's link away; [`AdmitRefusal::code`] is the documented
/// code of `link_join`'s refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitRefusal {
    Unknown,
    /// The key is not the link's (or the link was never redeemed).
    BadKey,
    /// Revoked by the host (or ended).
    Revoked,
    Expired,
    /// The room asked for is not the link's lesson's room (or that lesson is gone).
    WrongRoom,
}

impl AdmitRefusal {
    pub fn code(self) -> &'static str {
        match self {
            AdmitRefusal::Unknown => "link_unknown",
            AdmitRefusal::BadKey => "link_bad_key",
            AdmitRefusal::Revoked => "link_revoked",
            AdmitRefusal::Expired => "link_expired",
            AdmitRefusal::WrongRoom => "link_wrong_room",
        }
    }
}

/// A link the door admits, with its lesson.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub link: LessonLink,
    pub lesson: Lesson,
}

/// A name shown to people: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub fn valid_name(s: &str) -> bool {
    let n = s.trim().chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && !s.chars().any(char::is_control)
}

fn valid_field(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_FIELD_CHARS).contains(&n) && !s.chars().any(char::is_control)
}

/// Compares two secrets' hashes in time that does not depend on where they differ.
fn same_hash(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

const COLUMNS: &str = "id, lesson_id, partner_name, created_by, created_at, expires_at, state, \
                       key_hash, redeemed_at, partner_school, revoked_at";

fn from_row(r: Row) -> Result<LessonLink, DbError> {
    let state = LinkState::parse(&r.6).ok_or_else(|| DbError::BadStoredValue {
        table: "lesson_links",
        column: "state",
        value: r.6.clone(),
    })?;
    Ok(LessonLink {
        id: r.0,
        lesson_id: r.1,
        partner_name: r.2,
        created_by: r.3,
        created_at: r.4,
        expires_at: r.5,
        state,
        key_hash: r.7,
        redeemed_at: r.8,
        partner_school: r.9,
        revoked_at: r.10,
    })
}

/// Creates an invitation for `lesson` and audits it (`lesson_link_created`), in one
/// transaction. The caller has checked that `acting` may act on the lesson.
pub async fn create_lesson_link(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    new: &NewLessonLink<'_>,
) -> Result<LessonLink, LessonLinkError> {
    if !valid_name(new.partner_name) {
        return Err(LessonLinkError::BadName);
    }
    if new.expires_at <= acting.at || new.expires_at - acting.at > MAX_TTL_SECS {
        return Err(LessonLinkError::BadExpiry);
    }
    let mut tx = db.begin_write().await?;
    // Serialises creators, so two at once cannot both pass the count (as guest links do).
    tx.lock_for_append(Table::AuditLog).await?;
    let count_sql = "SELECT COUNT(*) FROM lesson_links WHERE lesson_id = $1 \
                     AND state IN ('invited', 'accepted') AND expires_at > $2";
    let active: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(count_sql)
        .bind(&lesson.id).bind(acting.at).fetch_one(c).await.map_err(DbError::from)?);
    if active >= MAX_ACTIVE_PER_LESSON {
        tx.rollback().await?;
        return Err(LessonLinkError::TooMany);
    }
    let link = LessonLink {
        id: new.id.to_owned(),
        lesson_id: lesson.id.clone(),
        partner_name: new.partner_name.trim().to_owned(),
        created_by: acting.person.to_owned(),
        created_at: acting.at,
        expires_at: new.expires_at,
        state: LinkState::Invited,
        key_hash: None,
        redeemed_at: None,
        partner_school: None,
        revoked_at: None,
    };
    let insert = "INSERT INTO lesson_links (id, lesson_id, partner_name, created_by, created_at, \
                  expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, 'invited')";
    dispatch!(&mut tx, c => {
        sqlx::query(insert)
            .bind(&link.id).bind(&link.lesson_id).bind(&link.partner_name)
            .bind(&link.created_by).bind(link.created_at).bind(link.expires_at)
            .execute(c).await.map_err(DbError::from)?;
    });
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::LessonLinkCreated,
        subject: Some(&link.id),
        detail: serde_json::json!({
            "lesson": lesson.id, "partner_name": link.partner_name,
            "expires_at": link.expires_at,
        }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(link)
}

/// The host-side link `id`, whatever its state.
pub async fn lesson_link(db: &Db, id: &str) -> Result<Option<LessonLink>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM lesson_links WHERE id = $1");
    let row: Option<Row> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await?);
    row.map(from_row).transpose()
}

/// A lesson's host-side links, newest first (ten active at most, the rest history).
pub async fn lesson_links_of_lesson(db: &Db, lesson_id: &str) -> Result<Vec<LessonLink>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM lesson_links WHERE lesson_id = $1 \
         ORDER BY created_at DESC, id LIMIT 500"
    );
    let rows: Vec<Row> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(lesson_id).fetch_all(p).await?);
    rows.into_iter().map(from_row).collect()
}

/// Revokes link `id` of `lesson` and audits it (`lesson_link_revoked`). Revoking a revoked link
/// changes nothing and writes nothing. The caller has checked that `acting` may act on the
/// lesson.
pub async fn revoke_lesson_link(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    id: &str,
) -> Result<LessonLink, LessonLinkError> {
    let link = lesson_link(db, id)
        .await?
        .filter(|l| l.lesson_id == lesson.id)
        .ok_or(LessonLinkError::NotFound)?;
    if matches!(link.state, LinkState::Revoked | LinkState::Ended) {
        return Ok(link);
    }
    let mut tx = db.begin_write().await?;
    let sql = "UPDATE lesson_links SET state = 'revoked', revoked_at = $1, revoked_by = $2 \
               WHERE id = $3 AND state IN ('invited', 'accepted')";
    let changed = dispatch!(&mut tx, c => {
        sqlx::query(sql).bind(acting.at).bind(acting.person).bind(id)
            .execute(c).await.map_err(DbError::from)?.rows_affected()
    });
    if changed == 0 {
        // Revoked by someone else since it was read: one revocation, one audit entry.
        drop(tx);
        return lesson_link(db, id).await?.ok_or(LessonLinkError::NotFound);
    }
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::LessonLinkRevoked,
        subject: Some(id),
        detail: serde_json::json!({ "lesson": lesson.id, "was": link.state.as_str() }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(LessonLink {
        state: LinkState::Revoked,
        revoked_at: Some(acting.at),
        ..link
    })
}

/// The school name and class title of `lesson`.
pub async fn lesson_school_and_title(
    db: &Db,
    lesson: &Lesson,
) -> Result<Option<(String, String)>, DbError> {
    let sql = "SELECT o.name, c.title FROM classes c JOIN orgs o ON o.id = c.school_id \
               WHERE c.id = $1";
    Ok(on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.class_id).fetch_optional(p).await?))
}

/// Redeems invitation `id` at `now` for the partner school `partner_school`: the link becomes
/// accepted with the key whose SHA-256 is `key_hash`, once. A second redemption is refused
/// ([`RedeemRefusal::Replayed`]) whatever key it brings. Audited (`lesson_link_redeemed`, no
/// actor: the partner's server is nobody here). The caller has checked the code's signature
/// and expiry; the row's own state and expiry are checked here.
pub async fn redeem_lesson_link(
    db: &Db,
    id: &str,
    key_hash: &str,
    partner_school: &str,
    now: i64,
    remote_addr: Option<&str>,
) -> Result<Result<Redeemed, RedeemRefusal>, DbError> {
    if !valid_name(partner_school) {
        return Ok(Err(RedeemRefusal::BadSchool));
    }
    let partner_school = partner_school.trim();
    let Some(link) = lesson_link(db, id).await? else {
        return Ok(Err(RedeemRefusal::Unknown));
    };
    let Some(lesson) = crate::lesson::lesson(db, &link.lesson_id).await? else {
        return Ok(Err(RedeemRefusal::Unknown));
    };
    let Some((host_school, lesson_title)) = lesson_school_and_title(db, &lesson).await? else {
        return Ok(Err(RedeemRefusal::Unknown));
    };
    let mut tx = db.begin_write().await?;
    // Only an invitation that is still open changes: two redemptions at once find one row
    // between them.
    let sql = "UPDATE lesson_links SET state = 'accepted', key_hash = $1, redeemed_at = $2, \
               partner_school = $3 WHERE id = $4 AND state = 'invited' AND expires_at > $2";
    let changed = dispatch!(&mut tx, c => {
        sqlx::query(sql).bind(key_hash).bind(now).bind(partner_school).bind(id)
            .execute(c).await.map_err(DbError::from)?.rows_affected()
    });
    if changed == 0 {
        drop(tx);
        let now_link = lesson_link(db, id).await?;
        return Ok(Err(match now_link {
            None => RedeemRefusal::Unknown,
            Some(l) if matches!(l.state, LinkState::Revoked | LinkState::Ended) => {
                RedeemRefusal::Revoked
            }
            Some(l) if l.state == LinkState::Accepted => RedeemRefusal::Replayed,
            Some(_) => RedeemRefusal::Expired,
        }));
    }
    let entry = AuditEntry {
        at: now,
        actor: None,
        action: Action::LessonLinkRedeemed,
        subject: Some(id),
        detail: serde_json::json!({ "lesson": lesson.id, "partner_school": partner_school }),
        remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(Ok(Redeemed {
        link: LessonLink {
            state: LinkState::Accepted,
            key_hash: Some(key_hash.to_owned()),
            redeemed_at: Some(now),
            partner_school: Some(partner_school.to_owned()),
            ..link
        },
        lesson,
        host_school,
        lesson_title,
    }))
}

/// The host's door: whether the partner holding the key whose SHA-256 is `key_hash` may bring
/// link `id` into `room` at `now`. The key is checked before anything else is told, so a caller
/// without it learns only that it is wrong.
pub async fn admit_lesson_link(
    db: &Db,
    id: &str,
    key_hash: &str,
    room: &str,
    now: i64,
) -> Result<Result<Admitted, AdmitRefusal>, DbError> {
    let Some(link) = lesson_link(db, id).await? else {
        return Ok(Err(AdmitRefusal::Unknown));
    };
    let key_ok = link
        .key_hash
        .as_deref()
        .is_some_and(|stored| same_hash(stored, key_hash));
    if !key_ok {
        return Ok(Err(AdmitRefusal::BadKey));
    }
    match link.state {
        LinkState::Accepted => {}
        LinkState::Revoked | LinkState::Ended => return Ok(Err(AdmitRefusal::Revoked)),
        // Unreachable with a matching key (an invitation has none); refused all the same.
        LinkState::Invited => return Ok(Err(AdmitRefusal::BadKey)),
    }
    if now >= link.expires_at {
        return Ok(Err(AdmitRefusal::Expired));
    }
    match crate::lesson::lesson(db, &link.lesson_id).await? {
        Some(lesson) if lesson.media_room == room => Ok(Ok(Admitted { link, lesson })),
        _ => Ok(Err(AdmitRefusal::WrongRoom)),
    }
}

/// Audits a door decision for link `id`: `lesson_link_used` when admitted, `lesson_link_refused`
/// with the code when not. How often is the caller's to bound.
pub async fn audit_link_door(
    db: &Db,
    id: &str,
    lesson_id: Option<&str>,
    decision: Result<(), &str>,
    now: i64,
) -> Result<(), DbError> {
    let (action, detail) = match decision {
        Ok(()) => (
            Action::LessonLinkUsed,
            serde_json::json!({ "lesson": lesson_id }),
        ),
        Err(code) => (
            Action::LessonLinkRefused,
            serde_json::json!({ "lesson": lesson_id, "code": code }),
        ),
    };
    let entry = AuditEntry {
        at: now,
        actor: None,
        action,
        subject: Some(id),
        detail,
        remote_addr: None,
    };
    crate::audit::audit(db, &entry).await?;
    Ok(())
}

/// A partner-side link: an invitation this server redeemed for one of its lessons.
#[derive(Clone, PartialEq, Eq)]
pub struct PartnerLink {
    /// This server's id of the link (not the host's).
    pub id: String,
    pub host_link_id: String,
    pub host_base_url: String,
    pub host_ws_url: String,
    pub host_room: String,
    pub host_school: String,
    pub lesson_title: String,
    /// The secret presented at the host's door. Never shown by the API, never logged.
    pub link_key: String,
    /// The local lesson.
    pub lesson_id: String,
    pub accepted_by: String,
    pub accepted_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
}

impl std::fmt::Debug for PartnerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerLink")
            .field("id", &self.id)
            .field("host_link_id", &self.host_link_id)
            .field("host_ws_url", &self.host_ws_url)
            .field("host_room", &self.host_room)
            .field("lesson_id", &self.lesson_id)
            .field("ended_by", &self.ended_by)
            .finish_non_exhaustive()
    }
}

impl PartnerLink {
    pub fn active(&self, now: i64) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// What [`store_partner_link`] keeps: the host's answer to a redemption.
#[derive(Debug, Clone)]
pub struct NewPartnerLink<'a> {
    pub id: &'a str,
    pub host_link_id: &'a str,
    pub host_base_url: &'a str,
    pub host_ws_url: &'a str,
    pub host_room: &'a str,
    pub host_school: &'a str,
    pub lesson_title: &'a str,
    pub link_key: &'a str,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PartnerLinkError {
    #[error("the host's answer has an empty, too long or malformed {0}")]
    BadField(&'static str),
    #[error("this invitation was accepted here already")]
    Duplicate,
    #[error("the lesson already has {MAX_ACTIVE_PER_LESSON} active partner links; end one first")]
    TooMany,
    #[error("no such accepted partner link")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

type PartnerRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

const PARTNER_COLUMNS: &str = "p.id, p.host_link_id, p.host_base_url, p.host_ws_url, \
    p.host_room, p.host_school, p.lesson_title, p.link_key, p.lesson_id, p.accepted_by, \
    p.accepted_at, p.expires_at, p.ended_at, p.ended_by";

fn partner_from_row(r: PartnerRow) -> PartnerLink {
    PartnerLink {
        id: r.0,
        host_link_id: r.1,
        host_base_url: r.2,
        host_ws_url: r.3,
        host_room: r.4,
        host_school: r.5,
        lesson_title: r.6,
        link_key: r.7,
        lesson_id: r.8,
        accepted_by: r.9,
        accepted_at: r.10,
        expires_at: r.11,
        ended_at: r.12,
        ended_by: r.13,
    }
}

/// Stores the link the host handed over for local `lesson` and audits it
/// (`lesson_link_accepted`). The caller has checked that `acting` may act on the lesson.
pub async fn store_partner_link(
    db: &Db,
    acting: Acting<'_>,
    lesson: &Lesson,
    new: &NewPartnerLink<'_>,
) -> Result<PartnerLink, PartnerLinkError> {
    for (field, value) in [
        ("link_id", new.host_link_id),
        ("ws_url", new.host_ws_url),
        ("host_room", new.host_room),
        ("lesson_title", new.lesson_title),
        ("key", new.link_key),
    ] {
        if !valid_field(value) {
            return Err(PartnerLinkError::BadField(field));
        }
    }
    if !valid_name(new.host_school) {
        return Err(PartnerLinkError::BadField("host_school"));
    }
    if new.expires_at <= acting.at || new.expires_at - acting.at > MAX_TTL_SECS {
        return Err(PartnerLinkError::BadField("expires_at"));
    }
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::AuditLog).await?;
    let dup_sql = "SELECT COUNT(*) FROM partner_links WHERE host_base_url = $1 \
                   AND host_link_id = $2";
    let dup: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(dup_sql)
        .bind(new.host_base_url).bind(new.host_link_id).fetch_one(c).await.map_err(DbError::from)?);
    if dup > 0 {
        tx.rollback().await?;
        return Err(PartnerLinkError::Duplicate);
    }
    let count_sql = "SELECT COUNT(*) FROM partner_links WHERE lesson_id = $1 \
                     AND ended_at IS NULL AND expires_at > $2";
    let active: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(count_sql)
        .bind(&lesson.id).bind(acting.at).fetch_one(c).await.map_err(DbError::from)?);
    if active >= MAX_ACTIVE_PER_LESSON {
        tx.rollback().await?;
        return Err(PartnerLinkError::TooMany);
    }
    let link = PartnerLink {
        id: new.id.to_owned(),
        host_link_id: new.host_link_id.to_owned(),
        host_base_url: new.host_base_url.to_owned(),
        host_ws_url: new.host_ws_url.to_owned(),
        host_room: new.host_room.to_owned(),
        host_school: new.host_school.trim().to_owned(),
        lesson_title: new.lesson_title.to_owned(),
        link_key: new.link_key.to_owned(),
        lesson_id: lesson.id.clone(),
        accepted_by: acting.person.to_owned(),
        accepted_at: acting.at,
        expires_at: new.expires_at,
        ended_at: None,
        ended_by: None,
    };
    let insert = "INSERT INTO partner_links (id, host_link_id, host_base_url, host_ws_url, \
                  host_room, host_school, lesson_title, link_key, lesson_id, accepted_by, \
                  accepted_at, expires_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
    dispatch!(&mut tx, c => {
        sqlx::query(insert)
            .bind(&link.id).bind(&link.host_link_id).bind(&link.host_base_url)
            .bind(&link.host_ws_url).bind(&link.host_room).bind(&link.host_school)
            .bind(&link.lesson_title).bind(&link.link_key).bind(&link.lesson_id)
            .bind(&link.accepted_by).bind(link.accepted_at).bind(link.expires_at)
            .execute(c).await.map_err(DbError::from)?;
    });
    let entry = AuditEntry {
        at: acting.at,
        actor: Some(acting.person),
        action: Action::LessonLinkAccepted,
        subject: Some(&link.id),
        detail: serde_json::json!({
            "lesson": lesson.id, "host": link.host_base_url, "host_link": link.host_link_id,
            "host_school": link.host_school, "expires_at": link.expires_at,
        }),
        remote_addr: acting.remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(link)
}

/// The partner-side link `id`.
pub async fn partner_link(db: &Db, id: &str) -> Result<Option<PartnerLink>, DbError> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partner_links p WHERE p.id = $1");
    let row: Option<PartnerRow> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await?);
    Ok(row.map(partner_from_row))
}

/// The partner-side links of local lesson `lesson_id`, newest first (at most 500).
pub async fn partner_links_of_lesson(
    db: &Db,
    lesson_id: &str,
) -> Result<Vec<PartnerLink>, DbError> {
    let sql = format!(
        "SELECT {PARTNER_COLUMNS} FROM partner_links p WHERE p.lesson_id = $1 \
         ORDER BY p.accepted_at DESC, p.id LIMIT 500"
    );
    let rows: Vec<PartnerRow> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(lesson_id).fetch_all(p).await?);
    Ok(rows.into_iter().map(partner_from_row).collect())
}

/// Partner-side links of lessons of `schools`, newest first (at most 500).
pub async fn partner_links_of_schools(
    db: &Db,
    schools: &[&str],
) -> Result<Vec<PartnerLink>, DbError> {
    if schools.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {PARTNER_COLUMNS} FROM partner_links p JOIN lessons l ON l.id = p.lesson_id \
         JOIN classes c ON c.id = l.class_id WHERE c.school_id IN ({}) \
         ORDER BY p.accepted_at DESC, p.id LIMIT 500",
        crate::scope::placeholders(1, schools.len())
    );
    let rows: Vec<PartnerRow> = on_pool!(db, p => {
        let mut q = sqlx::query_as(&sql);
        for school in schools {
            q = q.bind(*school);
        }
        q.fetch_all(p).await?
    });
    Ok(rows.into_iter().map(partner_from_row).collect())
}

/// The links to keep dialled at `now`: not ended, not expired, whose local lesson is on
/// `today` (the school's calendar date), at most `limit`, oldest first. A lesson "is on" for
/// the whole of its day: the domain has no narrower notion of a lesson's door being open.
pub async fn outgoing_partner_links(
    db: &Db,
    today: NaiveDate,
    now: i64,
    limit: u32,
) -> Result<Vec<(PartnerLink, String)>, DbError> {
    let sql = format!(
        "SELECT {PARTNER_COLUMNS}, l.media_room FROM partner_links p \
         JOIN lessons l ON l.id = p.lesson_id \
         WHERE p.ended_at IS NULL AND p.expires_at > $1 AND l.lesson_date = $2 \
         ORDER BY p.accepted_at, p.id LIMIT $3"
    );
    type WithRoom = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        String,
    );
    let rows: Vec<WithRoom> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(now).bind(format_date(today)).bind(i64::from(limit)).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(|r| {
            let room = r.14.clone();
            let row: PartnerRow = (
                r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, r.13,
            );
            (partner_from_row(row), room)
        })
        .collect())
}

/// Who ends a partner-side link.
#[derive(Debug, Clone, Copy)]
pub enum EndedBy<'a> {
    /// A teacher or administrator of the local lesson.
    Person(Acting<'a>),
    /// The host refused the link for good, with this code (`link_revoked`, ...).
    Host { code: &'a str, at: i64 },
}

/// Ends partner-side link `id` (the dialer stops) and audits it (`lesson_link_ended`). Ending
/// an ended link changes nothing and writes nothing.
pub async fn end_partner_link(
    db: &Db,
    id: &str,
    by: EndedBy<'_>,
) -> Result<PartnerLink, PartnerLinkError> {
    let link = partner_link(db, id)
        .await?
        .ok_or(PartnerLinkError::NotFound)?;
    if link.ended_at.is_some() {
        return Ok(link);
    }
    let (at, who, actor, remote_addr) = match by {
        EndedBy::Person(a) => (a.at, a.person, Some(a.person), a.remote_addr),
        EndedBy::Host { code, at } => (at, code, None, None),
    };
    let mut tx = db.begin_write().await?;
    let sql = "UPDATE partner_links SET ended_at = $1, ended_by = $2 \
               WHERE id = $3 AND ended_at IS NULL";
    let changed = dispatch!(&mut tx, c => {
        sqlx::query(sql).bind(at).bind(who).bind(id)
            .execute(c).await.map_err(DbError::from)?.rows_affected()
    });
    if changed == 0 {
        drop(tx);
        return partner_link(db, id)
            .await?
            .ok_or(PartnerLinkError::NotFound);
    }
    let entry = AuditEntry {
        at,
        actor,
        action: Action::LessonLinkEnded,
        subject: Some(id),
        detail: serde_json::json!({
            "lesson": link.lesson_id, "host_link": link.host_link_id, "by": who,
        }),
        remote_addr,
    };
    append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(PartnerLink {
        ended_at: Some(at),
        ended_by: Some(who.to_owned()),
        ..link
    })
}

/// The partner-side link this server holds for the host's link `host_link_id` at
/// `host_ws_url`, if any (what a host's refusal names).
pub async fn partner_link_for_host(
    db: &Db,
    host_ws_url: &str,
    host_link_id: &str,
) -> Result<Option<PartnerLink>, DbError> {
    let sql = format!(
        "SELECT {PARTNER_COLUMNS} FROM partner_links p \
         WHERE p.host_ws_url = $1 AND p.host_link_id = $2 ORDER BY p.accepted_at DESC LIMIT 1"
    );
    let row: Option<PartnerRow> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(host_ws_url).bind(host_link_id).fetch_optional(p).await?);
    Ok(row.map(partner_from_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_whole() {
        assert!(same_hash("abcd", "abcd"));
        assert!(!same_hash("abcd", "abce"));
        assert!(!same_hash("abcd", "abc"));
        assert!(!same_hash("", "a"));
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(valid_name("北小学校"));
        assert!(!valid_name(" "));
        assert!(!valid_name(&"x".repeat(MAX_NAME_CHARS + 1)));
        assert!(!valid_name("a\u{7}b"));
        assert!(valid_field("wss://host.example/ws"));
        assert!(!valid_field(&"x".repeat(MAX_FIELD_CHARS + 1)));
    }

    #[test]
    fn refusal_codes_are_the_documented_ones() {
        assert_eq!(RedeemRefusal::Replayed.code(), "link_replayed");
        assert_eq!(AdmitRefusal::BadKey.code(), "link_bad_key");
        assert_eq!(AdmitRefusal::WrongRoom.code(), "link_wrong_room");
    }
}
