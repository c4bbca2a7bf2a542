//! Each pupil's attendance mode per school day, chosen by a guardian: at school (the default)
//! or online from home.
//!
//! The history is append-only: every change is a new `mode_changes` row saying who, when, in
//! which capacity, old mode → new mode and why; the mode in force for a date is the latest row
//! for it. Nothing is overwritten, so "who decided that my child stays home" always has an
//! answer.
//!
//! Cut-off: guardians are bound by the school's [`CutoffPolicy`]. Staff (a teacher of the pupil
//! or an administrator, acting on the guardian's behalf) may still change today's mode after
//! the cut-off — the school takes phone calls in the morning — and such rows are flagged
//! `after_cutoff`. Nobody may change a past date: what happened on a past day is recorded by
//! the teacher's attendance marks, not by rewriting the guardian's choice.

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::access::{Capacity, Denied, may_set_mode};
use crate::audit::{self, Acting, Action, AuditEntry};
use crate::calendar::{format_date, parse_stored_date};
use crate::cutoff::{CutoffDecision, CutoffPolicy};
use crate::db::{Db, DbError, Table, Tx, dispatch, on_pool};

/// How a pupil attends on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At school: the normal case, and what applies when nobody chose anything.
    #[default]
    InPerson,
    /// From home, through the lesson's media room.
    Online,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::InPerson => "in_person",
            Mode::Online => "online",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "in_person" => Some(Mode::InPerson),
            "online" => Some(Mode::Online),
            _ => None,
        }
    }
}

/// The longest range one request may cover: a school year.
pub const MAX_RANGE_DAYS: u64 = 366;
/// The longest reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A request to set a pupil's mode for the dates `from..=to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeRequest<'a> {
    pub pupil: &'a str,
    pub from: NaiveDate,
    /// Inclusive; equal to `from` for a single day.
    pub to: NaiveDate,
    pub mode: Mode,
    /// Free text, e.g. "fever". Empty is treated as none.
    pub reason: Option<&'a str>,
}

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeChange {
    /// Order of writing across all pupils.
    pub seq: i64,
    pub pupil_id: String,
    pub date: NaiveDate,
    /// Unix seconds.
    pub changed_at: i64,
    pub actor_id: String,
    /// `Staff` means on behalf of the guardian.
    pub capacity: Capacity,
    pub old_mode: Mode,
    pub new_mode: Mode,
    pub reason: Option<String>,
    /// Made by staff after the day's cut-off.
    pub after_cutoff: bool,
}

/// The mode in force for one date.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DayMode {
    pub date: NaiveDate,
    pub mode: Mode,
    /// The reason given with the change in force, if any.
    pub reason: Option<String>,
    /// Who made the change in force; `None` when nobody chose (the default applies).
    pub set_by: Option<String>,
    /// In which capacity (`Staff` = on a guardian's behalf); `None` with `set_by`.
    pub capacity: Option<Capacity>,
}

/// Whether someone in `capacity` may change the mode for `date` at instant `at`: the same rule
/// [`set_mode`] applies (guardians until the cut-off, staff also after it, nobody for past
/// dates). For showing which days are editable.
pub fn may_change(policy: &CutoffPolicy, capacity: Capacity, date: NaiveDate, at: i64) -> bool {
    match policy.decide(date, at) {
        CutoffDecision::Open => true,
        CutoffDecision::ClosedForToday => capacity == Capacity::Staff,
        CutoffDecision::Past => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetModeError {
    #[error("not allowed: {0}")]
    Denied(#[from] Denied),
    #[error("the range ends before it starts")]
    BadRange,
    #[error("the range is longer than {MAX_RANGE_DAYS} days")]
    RangeTooLong,
    #[error("the reason is longer than {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error("changes for {0} are closed: the cut-off has passed")]
    CutoffPassed(NaiveDate),
    #[error("{0} is in the past")]
    PastDate(NaiveDate),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SetModeError {
    fn from(e: sqlx::Error) -> Self {
        SetModeError::Db(e.into())
    }
}

/// Sets `req.pupil`'s mode for every date of the range, as `acting.person` at `acting.at`.
///
/// The whole request is checked first (permission, range, cut-off for every date) and either
/// applied in full, in one transaction together with its audit entry, or refused. Dates whose
/// mode and reason would not change get no row. Returns the rows written, in date order.
pub async fn set_mode(
    db: &Db,
    policy: &CutoffPolicy,
    acting: Acting<'_>,
    req: &ModeRequest<'_>,
) -> Result<Vec<ModeChange>, SetModeError> {
    if req.to < req.from {
        return Err(SetModeError::BadRange);
    }
    let days = (req.to - req.from).num_days().unsigned_abs() + 1;
    if days > MAX_RANGE_DAYS {
        return Err(SetModeError::RangeTooLong);
    }
    let reason = req.reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(SetModeError::ReasonTooLong);
    }
    let capacity = may_set_mode(db, acting.person, req.pupil).await??;

    let mut dates = Vec::new();
    for offset in 0..days {
        let Some(date) = req.from.checked_add_days(Days::new(offset)) else {
            return Err(SetModeError::BadRange);
        };
        let after_cutoff = match policy.decide(date, acting.at) {
            CutoffDecision::Open => false,
            CutoffDecision::Past => return Err(SetModeError::PastDate(date)),
            CutoffDecision::ClosedForToday => match capacity {
                Capacity::Guardian => return Err(SetModeError::CutoffPassed(date)),
                Capacity::Staff => true,
            },
        };
        dates.push((date, after_cutoff));
    }

    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::ModeChanges).await?;
    let mut changes = Vec::new();
    for (date, after_cutoff) in dates {
        let current = current_mode(&mut tx, req.pupil, date).await?;
        let old_mode = current.as_ref().map_or(Mode::InPerson, |c| c.mode);
        let old_reason = current.and_then(|c| c.reason);
        if old_mode == req.mode && old_reason.as_deref() == reason {
            continue;
        }
        let sql = "INSERT INTO mode_changes (seq, pupil_id, on_date, changed_at, actor_id, \
                   capacity, old_mode, new_mode, reason, after_cutoff) \
                   SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                   FROM mode_changes RETURNING seq";
        let day = format_date(date);
        let seq: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(sql)
            .bind(req.pupil).bind(&day).bind(acting.at).bind(acting.person)
            .bind(capacity.as_str()).bind(old_mode.as_str()).bind(req.mode.as_str())
            .bind(reason).bind(after_cutoff).fetch_one(c).await?);
        changes.push(ModeChange {
            seq,
            pupil_id: req.pupil.to_owned(),
            date,
            changed_at: acting.at,
            actor_id: acting.person.to_owned(),
            capacity,
            old_mode,
            new_mode: req.mode,
            reason: reason.map(str::to_owned),
            after_cutoff,
        });
    }
    if !changes.is_empty() {
        let dates: Vec<String> = changes.iter().map(|c| format_date(c.date)).collect();
        let detail = serde_json::json!({
            "dates": dates,
            "mode": req.mode,
            "reason": reason,
            "capacity": capacity,
            "after_cutoff": changes.iter().any(|c| c.after_cutoff),
        });
        audit::append(
            &mut tx,
            &AuditEntry {
                at: acting.at,
                actor: Some(acting.person),
                action: Action::ModeChanged,
                subject: Some(req.pupil),
                detail,
                remote_addr: acting.remote_addr,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changes)
}

struct Current {
    mode: Mode,
    reason: Option<String>,
}

async fn current_mode(
    tx: &mut Tx,
    pupil: &str,
    date: NaiveDate,
) -> Result<Option<Current>, DbError> {
    let sql = "SELECT new_mode, reason FROM mode_changes WHERE pupil_id = $1 AND on_date = $2 \
               ORDER BY seq DESC LIMIT 1";
    let day = format_date(date);
    let row: Option<(String, Option<String>)> = dispatch!(tx, c => sqlx::query_as(sql)
        .bind(pupil).bind(&day).fetch_optional(c).await?);
    row.map(|(mode, reason)| {
        Ok(Current {
            mode: parse_mode("new_mode", &mode)?,
            reason,
        })
    })
    .transpose()
}

fn parse_mode(column: &'static str, value: &str) -> Result<Mode, DbError> {
    Mode::parse(value).ok_or_else(|| DbError::BadStoredValue {
        table: "mode_changes",
        column,
        value: value.to_owned(),
    })
}

fn parse_capacity(value: &str) -> Result<Capacity, DbError> {
    Capacity::parse(value).ok_or_else(|| DbError::BadStoredValue {
        table: "mode_changes",
        column: "capacity",
        value: value.to_owned(),
    })
}

/// The pupil's mode for `date`: the latest change, or in person when there is none.
pub async fn mode_on(db: &Db, pupil: &str, date: NaiveDate) -> Result<Mode, DbError> {
    mode_on_as_of(db, pupil, date, i64::MAX).await
}

/// The pupil's mode for `date` as it stood at instant `at`: changes made later are ignored.
pub async fn mode_on_as_of(
    db: &Db,
    pupil: &str,
    date: NaiveDate,
    at: i64,
) -> Result<Mode, DbError> {
    let sql = "SELECT new_mode FROM mode_changes \
               WHERE pupil_id = $1 AND on_date = $2 AND changed_at <= $3 \
               ORDER BY seq DESC LIMIT 1";
    let day = format_date(date);
    let mode: Option<String> = on_pool!(db, p => sqlx::query_scalar(sql)
        .bind(pupil).bind(&day).bind(at).fetch_optional(p).await?);
    mode.map_or(Ok(Mode::InPerson), |m| parse_mode("new_mode", &m))
}

/// The pupil's mode for every date of `from..=to` (defaults included), in date order; at most
/// [`MAX_RANGE_DAYS`] dates from `from`.
pub async fn modes_between(
    db: &Db,
    pupil: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayMode>, DbError> {
    let sql = "SELECT on_date, new_mode, reason, actor_id, capacity FROM mode_changes \
               WHERE pupil_id = $1 AND on_date >= $2 AND on_date <= $3 ORDER BY seq";
    let (lo, hi) = (format_date(from), format_date(to));
    type Row = (String, String, Option<String>, String, String);
    let rows: Vec<Row> = on_pool!(db, p => sqlx::query_as(sql)
        .bind(pupil).bind(&lo).bind(&hi).fetch_all(p).await?);
    let mut latest = std::collections::HashMap::new();
    for (day, mode, reason, actor, capacity) in rows {
        // Rows come in seq order, so the last one per date wins.
        let day_mode = DayMode {
            date: parse_stored_date("mode_changes", "on_date", &day)?,
            mode: parse_mode("new_mode", &mode)?,
            reason,
            set_by: Some(actor),
            capacity: Some(parse_capacity(&capacity)?),
        };
        latest.insert(day_mode.date, day_mode);
    }
    Ok(from
        .iter_days()
        .take_while(|d| *d <= to)
        .take(MAX_RANGE_DAYS as usize)
        .map(|date| {
            latest.remove(&date).unwrap_or(DayMode {
                date,
                ..DayMode::default()
            })
        })
        .collect())
}

/// Every pupil's latest mode for `date`; pupils nobody changed are absent (in person).
pub(crate) async fn modes_on_date(
    db: &Db,
    date: NaiveDate,
) -> Result<std::collections::HashMap<String, Mode>, DbError> {
    let sql = "SELECT pupil_id, new_mode FROM mode_changes WHERE on_date = $1 ORDER BY seq";
    let day = format_date(date);
    let rows: Vec<(String, String)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&day).fetch_all(p).await?);
    let mut latest = std::collections::HashMap::new();
    for (pupil, mode) in rows {
        latest.insert(pupil, parse_mode("new_mode", &mode)?);
    }
    Ok(latest)
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    pupil_id: String,
    on_date: String,
    changed_at: i64,
    actor_id: String,
    capacity: String,
    old_mode: String,
    new_mode: String,
    reason: Option<String>,
    after_cutoff: bool,
}

/// Every change ever made to the pupil's modes, oldest first.
pub async fn history(db: &Db, pupil: &str) -> Result<Vec<ModeChange>, DbError> {
    let sql = "SELECT seq, pupil_id, on_date, changed_at, actor_id, capacity, old_mode, \
               new_mode, reason, after_cutoff FROM mode_changes WHERE pupil_id = $1 ORDER BY seq";
    let rows: Vec<ChangeRow> =
        on_pool!(db, p => sqlx::query_as(sql).bind(pupil).fetch_all(p).await?);
    rows.into_iter()
        .map(|r| {
            Ok(ModeChange {
                seq: r.seq,
                date: parse_stored_date("mode_changes", "on_date", &r.on_date)?,
                changed_at: r.changed_at,
                capacity: parse_capacity(&r.capacity)?,
                old_mode: parse_mode("old_mode", &r.old_mode)?,
                new_mode: parse_mode("new_mode", &r.new_mode)?,
                pupil_id: r.pupil_id,
                actor_id: r.actor_id,
                reason: r.reason,
                after_cutoff: r.after_cutoff,
            })
        })
        .collect()
}
