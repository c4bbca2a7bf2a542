//! Attendance records per lesson: online presence from the media server's join and leave events,
//! and the teacher's roll call for pupils in the classroom; summarised per enrolled pupil.
//!
//! Both are append-only event lists; summaries are computed when read, so a late or repeated
//! event never corrupts a stored total.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::access::ENROLLED_ON;
use crate::admission::{TeacherActionError, may_decide};
use crate::attendance_mode::{Mode, modes_on_date};
use crate::db::{Db, DbError, Table, dispatch, on_pool};
use crate::lesson::Lesson;

/// A teacher's roll-call mark for a pupil in the classroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkStatus {
    Present,
    Late,
    Absent,
}

impl MarkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkStatus::Present => "present",
            MarkStatus::Late => "late",
            MarkStatus::Absent => "absent",
        }
    }

    pub fn parse(s: &str) -> Option<MarkStatus> {
        match s {
            "present" => Some(MarkStatus::Present),
            "late" => Some(MarkStatus::Late),
            "absent" => Some(MarkStatus::Absent),
            _ => None,
        }
    }
}

/// A presence event from the media server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Join,
    Leave,
    /// A departure the server never saw because it was killed; written by the next start
    /// ([`close_presence_left_open`]) at the last instant the server was known to be alive.
    ClosedByRestart,
}

/// A gap inside one visit: the pupil's connection dropped at `start` and the signaling server
/// kept their place; `end` is when they resumed it. `None`: they are away now, or never came
/// back within the resume grace (the visit then ended at `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start: i64,
    pub end: Option<i64>,
}

/// At most this many gaps are recorded per visit (from one join to the next); further drops in
/// the same visit count as present time. A flapping link resumes every few seconds at worst
/// (the pages back off), so 100 covers a lesson; the bound keeps what a client can make the
/// database hold finite.
pub const MAX_GAPS_PER_VISIT: i64 = 100;

/// A pupil's online presence during one lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineSummary {
    /// Unix seconds of the first join.
    pub first_join: i64,
    /// Unix seconds of the last leave, if any. A visit that ended because the pupil never came
    /// back from a gap ended when the gap began.
    pub last_leave: Option<i64>,
    /// Total connected time: the sum of join→leave intervals less the gaps inside them, an
    /// interval still open counting up to the lesson's end or the report's "now", whichever is
    /// earlier.
    pub seconds_connected: i64,
    /// `seconds_connected` in whole minutes, rounded down.
    pub minutes_connected: i64,
    /// Time inside visits spent in gaps (connection lost, place kept): not connected time.
    pub seconds_away: i64,
    /// Join events seen. A resume within the grace is not a join.
    pub joins: u32,
    /// `joins - 1`: how often the pupil came back as a new visit after dropping out.
    pub reconnects: u32,
    /// Whether the last interval is still open.
    pub connected: bool,
    /// Whether the last interval was closed by a server restart rather than an observed
    /// departure: `last_leave` is then when the server was last known alive.
    pub closed_by_restart: bool,
    /// The recorded gaps, in order.
    pub gaps: Vec<Gap>,
}

/// Summarises presence events (in the order they were recorded) and the gaps recorded for the
/// same pupil, up to instant `until`.
///
/// Connections may overlap: a reconnect's new connection is admitted before the old one is
/// closed (signaling replaces it), and a second tab may join beside the first. The pupil counts
/// as connected while at least one connection is open; every join counts as a join; a leave
/// without an open connection is ignored. A gap counts against the connected interval it begins
/// in, up to its end or, if it has none, to the end of that interval.
pub fn summarise(events: &[(i64, Presence)], gaps: &[Gap], until: i64) -> Option<OnlineSummary> {
    let mut first_join = None;
    let mut open: Option<i64> = None;
    let mut depth = 0u32;
    let mut joins = 0u32;
    // Connected intervals [start, end), and whether a restart closed each one.
    let mut intervals: Vec<(i64, i64, bool)> = Vec::new();
    for &(at, kind) in events {
        match kind {
            Presence::Join => {
                joins = joins.saturating_add(1);
                first_join.get_or_insert(at);
                open.get_or_insert(at);
                depth = depth.saturating_add(1);
            }
            Presence::Leave | Presence::ClosedByRestart => {
                if depth == 0 {
                    continue;
                }
                depth -= 1;
                if depth == 0
                    && let Some(start) = open.take()
                {
                    intervals.push((start, at.max(start), kind == Presence::ClosedByRestart));
                }
            }
        }
    }
    let closed = intervals.len();
    if let Some(start) = open {
        intervals.push((start, until.max(start), false));
    }
    let mut last_leave = intervals[..closed].last().map(|&(_, end, _)| end);
    // The part of each gap inside its interval.
    let mut away: Vec<(i64, i64)> = Vec::new();
    for gap in gaps {
        let Some(i) = intervals
            .iter()
            .position(|&(s, e, _)| s <= gap.start && gap.start < e)
        else {
            continue;
        };
        let end = intervals[i].1;
        away.push((gap.start, gap.end.unwrap_or(end).clamp(gap.start, end)));
        if gap.end.is_none() && i + 1 == closed {
            // Never came back: the last visit ended when the gap began, not when the grace ran
            // out (or the server stopped).
            last_leave = Some(gap.start);
        }
    }
    away.sort_unstable();
    let mut seconds_away = 0i64;
    let mut reach = i64::MIN;
    for (start, end) in away {
        let start = start.max(reach);
        if end > start {
            seconds_away = seconds_away.saturating_add(end - start);
            reach = end;
        }
    }
    let total = intervals
        .iter()
        .fold(0i64, |sum, &(s, e, _)| sum.saturating_add(e - s));
    let seconds = total.saturating_sub(seconds_away).max(0);
    Some(OnlineSummary {
        first_join: first_join?,
        last_leave,
        seconds_connected: seconds,
        minutes_connected: seconds / 60,
        seconds_away,
        joins,
        reconnects: joins.saturating_sub(1),
        connected: open.is_some(),
        closed_by_restart: open.is_none() && intervals[..closed].last().is_some_and(|&(_, _, r)| r),
        gaps: gaps.to_vec(),
    })
}

/// Records that `pupil` connected to the lesson's media room at `at`.
pub async fn record_join(db: &Db, lesson: &Lesson, pupil: &str, at: i64) -> Result<(), DbError> {
    record_presence(db, lesson, pupil, at, "join").await
}

/// Records that `pupil` left (or lost) the lesson's media room at `at`.
pub async fn record_leave(db: &Db, lesson: &Lesson, pupil: &str, at: i64) -> Result<(), DbError> {
    record_presence(db, lesson, pupil, at, "leave").await
}

async fn record_presence(
    db: &Db,
    lesson: &Lesson,
    pupil: &str,
    at: i64,
    kind: &str,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::PresenceEvents).await?;
    let sql = "INSERT INTO presence_events (seq, lesson_id, pupil_id, at, kind) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4 FROM presence_events";
    dispatch!(&mut tx, c => sqlx::query(sql).bind(&lesson.id).bind(pupil).bind(at).bind(kind)
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

/// Records that `pupil`'s connection to the lesson dropped at `at` while their place is kept
/// for a resume. Returns `false` when the visit already has [`MAX_GAPS_PER_VISIT`] gaps: this
/// one is then not recorded (and counts as present).
pub async fn record_away(db: &Db, lesson: &Lesson, pupil: &str, at: i64) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::PresenceGaps).await?;
    // The visit: since the pupil's latest join.
    let sql = "SELECT COUNT(*) FROM presence_gaps WHERE lesson_id = $1 AND pupil_id = $2 \
               AND away_at >= COALESCE((SELECT MAX(at) FROM presence_events \
               WHERE lesson_id = $1 AND pupil_id = $2 AND kind = 'join'), 0)";
    let count: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(sql).bind(&lesson.id)
        .bind(pupil).fetch_one(c).await?);
    if count >= MAX_GAPS_PER_VISIT {
        tx.commit().await?;
        return Ok(false);
    }
    let sql = "INSERT INTO presence_gaps (seq, lesson_id, pupil_id, away_at) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3 FROM presence_gaps";
    dispatch!(&mut tx, c => sqlx::query(sql).bind(&lesson.id).bind(pupil).bind(at)
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(true)
}

/// Records that `pupil` resumed their place at `at`: closes their latest gap if it is open. A
/// resume whose drop was not recorded (over the bound) closes nothing.
pub async fn record_back(db: &Db, lesson: &Lesson, pupil: &str, at: i64) -> Result<(), DbError> {
    // CASE, not GREATEST/MAX: one spelling for both databases; a clock stepping back must not
    // end a gap before it began.
    let sql = "UPDATE presence_gaps SET back_at = CASE WHEN away_at > $1 THEN away_at ELSE $1 END \
               WHERE back_at IS NULL AND seq = (SELECT MAX(seq) FROM presence_gaps \
               WHERE lesson_id = $2 AND pupil_id = $3)";
    on_pool!(db, p => sqlx::query(sql).bind(at).bind(&lesson.id).bind(pupil).execute(p).await?
        .rows_affected());
    Ok(())
}

fn presence_kind(kind: &str, by_restart: bool) -> Presence {
    match (kind, by_restart) {
        ("join", _) => Presence::Join,
        (_, true) => Presence::ClosedByRestart,
        _ => Presence::Leave,
    }
}

/// How often a running server records that it is alive ([`record_alive`]). A visit left open
/// by a killed server is closed at its last record, so this is how much connected time such a
/// visit may lose: never more than this, where closing at the restart instead would add all of
/// the downtime. One tiny write per interval.
pub const ALIVE_EVERY_SECS: u64 = 10;

/// Records that the server is alive at `at`. Called every [`ALIVE_EVERY_SECS`] by the running
/// server, after [`close_presence_left_open`] has run at its start.
pub async fn record_alive(db: &Db, at: i64) -> Result<(), DbError> {
    let sql = "UPDATE server_liveness SET alive_at = $1 WHERE id = 1";
    on_pool!(db, p => sqlx::query(sql).bind(at).execute(p).await?.rows_affected());
    Ok(())
}

/// Closes every visit the previous run of the server left open, and starts this run's liveness
/// record. Must run at start-up, before any pupil can join: a visit open in the database then
/// cannot be a live connection, since connections end with the process that held them.
///
/// Each such visit is closed with a departure marked [`Presence::ClosedByRestart`] at the last
/// instant the previous run recorded itself alive (or, if it never did, the visit's own last
/// event): the pupil was connected at least until about then, and the connection died with the
/// process soon after, at most [`ALIVE_EVERY_SECS`] later. Closing at `now` instead would count
/// the whole downtime, possibly hours, as time in the lesson. Returns the visits closed.
pub async fn close_presence_left_open(db: &Db, now: i64) -> Result<u64, DbError> {
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::PresenceEvents).await?;
    let sql = "SELECT alive_at, presence_from FROM server_liveness WHERE id = 1";
    let previous: Option<(i64, i64)> =
        dispatch!(&mut tx, c => sqlx::query_as(sql).fetch_optional(c).await?);
    let (alive_at, from) = match previous {
        Some((alive_at, from)) => (Some(alive_at), from),
        // No record yet: first start with liveness records; every row is looked at once.
        None => (None, 0),
    };
    let sql = "SELECT lesson_id, pupil_id, at, kind FROM presence_events WHERE seq >= $1 \
               ORDER BY seq";
    let events: Vec<(String, String, i64, String)> =
        dispatch!(&mut tx, c => sqlx::query_as(sql).bind(from).fetch_all(c).await?);
    // (lesson, pupil) → (connections open, last event's instant), as `summarise` counts them.
    let mut open: BTreeMap<(String, String), (u32, i64)> = BTreeMap::new();
    for (lesson, pupil, at, kind) in events {
        let entry = open.entry((lesson, pupil)).or_insert((0, at));
        entry.1 = at;
        if kind == "join" {
            entry.0 = entry.0.saturating_add(1);
        } else {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
    let mut closed = 0u64;
    let sql = "INSERT INTO presence_events (seq, lesson_id, pupil_id, at, kind, ended_by_restart) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, 'leave', TRUE FROM presence_events";
    for ((lesson, pupil), (depth, last_at)) in open {
        if depth == 0 {
            continue;
        }
        // Never before the visit's own last event: it may have joined after the last record.
        let end = alive_at.map_or(last_at, |alive| alive.max(last_at));
        for _ in 0..depth {
            dispatch!(&mut tx, c => sqlx::query(sql).bind(&lesson).bind(&pupil).bind(end)
                .execute(c).await?.rows_affected());
        }
        closed += 1;
    }
    let sql = "SELECT COALESCE(MAX(seq), 0) + 1 FROM presence_events";
    let next_seq: i64 = dispatch!(&mut tx, c => sqlx::query_scalar(sql).fetch_one(c).await?);
    let sql = "INSERT INTO server_liveness (id, alive_at, presence_from) VALUES (1, $1, $2) \
               ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at, \
               presence_from = excluded.presence_from";
    dispatch!(&mut tx, c => sqlx::query(sql).bind(now).bind(next_seq).execute(c).await?
        .rows_affected());
    tx.commit().await?;
    Ok(closed)
}

/// The latest roll-call mark of a pupil.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    pub status: MarkStatus,
    pub teacher_id: String,
    /// Unix seconds.
    pub at: i64,
}

/// A teacher of the lesson (or an administrator) marks a pupil present, late or absent. The
/// latest mark counts; earlier ones are kept.
pub async fn mark(
    db: &Db,
    lesson: &Lesson,
    pupil: &str,
    status: MarkStatus,
    teacher: &str,
    at: i64,
) -> Result<(), TeacherActionError> {
    if !may_decide(db, teacher, lesson).await? {
        return Err(TeacherActionError::NotTeacher);
    }
    if !crate::access::enrolled_in_lesson(db, pupil, &lesson.id).await? {
        return Err(TeacherActionError::NotEnrolled);
    }
    let mut tx = db.begin_write().await?;
    tx.lock_for_append(Table::AttendanceMarks).await?;
    let sql = "INSERT INTO attendance_marks (seq, lesson_id, pupil_id, at, status, teacher_id) \
               SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5 FROM attendance_marks";
    dispatch!(&mut tx, c => sqlx::query(sql).bind(&lesson.id).bind(pupil).bind(at)
        .bind(status.as_str()).bind(teacher).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

/// One enrolled pupil in a lesson's attendance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    pub pupil_id: String,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: Option<String>,
    pub given_name_kana: Option<String>,
    /// The mode in force for the lesson's date.
    pub mode: Mode,
    /// Present when the pupil connected at least once.
    pub online: Option<OnlineSummary>,
    /// The teacher's latest roll-call mark, if any.
    pub mark: Option<Mark>,
    /// A teacher admitted the pupil from the lobby (latest lobby decision).
    pub admitted_by_teacher: bool,
    /// The pupil is waiting in the lobby (asked, not yet answered).
    pub waiting: bool,
}

/// One row per pupil enrolled in the lesson's class on its date, ordered by kana reading (the
/// order of a Japanese class list), then id. Open online intervals count up to
/// `min(lesson end, now)`.
pub async fn attendance_report(
    db: &Db,
    lesson: &Lesson,
    now: i64,
) -> Result<Vec<ReportRow>, DbError> {
    let sql = format!(
        "SELECT DISTINCT p.id, p.family_name, p.given_name, p.family_name_kana, \
         p.given_name_kana FROM lessons l JOIN enrollments e ON {ENROLLED_ON} \
         JOIN people p ON p.id = e.person_id WHERE l.id = $1"
    );
    type Pupil = (String, String, String, Option<String>, Option<String>);
    let mut pupils: Vec<Pupil> =
        on_pool!(db, p => sqlx::query_as(&sql).bind(&lesson.id).fetch_all(p).await?);
    pupils.sort_by(|a, b| (&a.3, &a.4, &a.0).cmp(&(&b.3, &b.4, &b.0)));

    let sql = "SELECT pupil_id, at, kind, ended_by_restart FROM presence_events \
               WHERE lesson_id = $1 ORDER BY seq";
    let events: Vec<(String, i64, String, bool)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.id).fetch_all(p).await?);
    let mut presence: HashMap<String, Vec<(i64, Presence)>> = HashMap::new();
    for (pupil, at, kind, by_restart) in events {
        presence
            .entry(pupil)
            .or_default()
            .push((at, presence_kind(&kind, by_restart)));
    }

    let sql = "SELECT pupil_id, away_at, back_at FROM presence_gaps WHERE lesson_id = $1 \
               ORDER BY seq";
    let rows: Vec<(String, i64, Option<i64>)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.id).fetch_all(p).await?);
    let mut gaps: HashMap<String, Vec<Gap>> = HashMap::new();
    for (pupil, start, end) in rows {
        gaps.entry(pupil).or_default().push(Gap { start, end });
    }

    let sql = "SELECT pupil_id, status, teacher_id, at FROM attendance_marks \
               WHERE lesson_id = $1 ORDER BY seq";
    let rows: Vec<(String, String, String, i64)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.id).fetch_all(p).await?);
    let mut marks: HashMap<String, Mark> = HashMap::new();
    for (pupil, status, teacher_id, at) in rows {
        let status = MarkStatus::parse(&status).ok_or_else(|| DbError::BadStoredValue {
            table: "attendance_marks",
            column: "status",
            value: status.clone(),
        })?;
        marks.insert(
            pupil,
            Mark {
                status,
                teacher_id,
                at,
            },
        );
    }

    // Lobby: the latest event says whether the pupil is waiting; the latest decision whether a
    // teacher admitted them.
    let sql = "SELECT pupil_id, kind FROM lobby_events WHERE lesson_id = $1 ORDER BY seq";
    let rows: Vec<(String, String)> =
        on_pool!(db, p => sqlx::query_as(sql).bind(&lesson.id).fetch_all(p).await?);
    let mut waiting: BTreeMap<String, bool> = BTreeMap::new();
    let mut decisions: BTreeMap<String, bool> = BTreeMap::new();
    for (pupil, kind) in rows {
        waiting.insert(pupil.clone(), kind == "requested");
        if kind != "requested" {
            decisions.insert(pupil, kind == "admitted");
        }
    }

    let modes = modes_on_date(db, lesson.lesson_date).await?;
    let until = now.min(lesson.ends_at);
    Ok(pupils
        .into_iter()
        .map(
            |(id, family_name, given_name, family_name_kana, given_name_kana)| ReportRow {
                mode: modes.get(&id).copied().unwrap_or_default(),
                online: presence.get(&id).and_then(|events| {
                    let gaps = gaps.get(&id).map(Vec::as_slice).unwrap_or_default();
                    summarise(events, gaps, until)
                }),
                mark: marks.remove(&id),
                admitted_by_teacher: decisions.get(&id).copied().unwrap_or(false),
                waiting: waiting.get(&id).copied().unwrap_or(false),
                pupil_id: id,
                family_name,
                given_name,
                family_name_kana,
                given_name_kana,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::{Join, Leave};

    #[test]
    fn intervals_add_up_and_open_one_runs_to_until() {
        let s = summarise(&[(100, Join), (400, Leave), (460, Join)], &[], 1000).unwrap();
        assert_eq!(s.seconds_connected, 300 + 540);
        assert_eq!(s.minutes_connected, 14);
        assert_eq!((s.joins, s.reconnects), (2, 1));
        assert_eq!(
            (s.first_join, s.last_leave, s.connected),
            (100, Some(400), true)
        );
    }

    #[test]
    fn overlapping_connections_and_stray_leave() {
        // A reconnect: the new connection (20) is in before the old one is closed (70).
        let s = summarise(
            &[(0, Leave), (10, Join), (20, Join), (70, Leave)],
            &[],
            1000,
        )
        .unwrap();
        assert_eq!(s.seconds_connected, 990);
        assert_eq!((s.joins, s.reconnects, s.connected), (2, 1, true));
        assert_eq!(s.last_leave, None);
        let s = summarise(
            &[(10, Join), (20, Join), (70, Leave), (90, Leave)],
            &[],
            1000,
        )
        .unwrap();
        assert_eq!((s.seconds_connected, s.connected), (80, false));
        assert_eq!(s.last_leave, Some(90));
        assert_eq!(summarise(&[(5, Leave)], &[], 100), None);
        assert_eq!(summarise(&[], &[], 100), None);
        // Joined after the cut-off instant: nothing counted, no negative time.
        let s = summarise(&[(200, Join)], &[], 100).unwrap();
        assert_eq!(s.seconds_connected, 0);
    }

    #[test]
    fn a_visit_closed_by_a_restart_says_so_until_the_next_one() {
        use Presence::ClosedByRestart;
        let s = summarise(&[(10, Join), (70, ClosedByRestart)], &[], 1000).unwrap();
        assert_eq!((s.seconds_connected, s.connected), (60, false));
        assert_eq!((s.last_leave, s.closed_by_restart), (Some(70), true));
        let s = summarise(&[(10, Join), (70, ClosedByRestart), (80, Join)], &[], 1000).unwrap();
        assert!(s.connected && !s.closed_by_restart);
        let s = summarise(
            &[(10, Join), (70, ClosedByRestart), (80, Join), (90, Leave)],
            &[],
            99,
        );
        assert!(!s.unwrap().closed_by_restart);
    }

    #[test]
    fn gaps_inside_a_visit_are_not_connected_time() {
        use Presence::ClosedByRestart;
        let gap = |start, end| Gap { start, end };
        // Away 200..260 and 500..530 inside one visit 100..900: one visit, 90 s away.
        let s = summarise(
            &[(100, Join), (900, Leave)],
            &[gap(200, Some(260)), gap(500, Some(530))],
            1000,
        )
        .unwrap();
        assert_eq!((s.seconds_connected, s.seconds_away), (800 - 90, 90));
        assert_eq!((s.joins, s.reconnects, s.last_leave), (1, 0, Some(900)));
        assert_eq!(s.gaps.len(), 2);
        // Never came back: the grace ran out at 330 and the leave was written then; the visit
        // ended at 300.
        let s = summarise(&[(100, Join), (330, Leave)], &[gap(300, None)], 1000).unwrap();
        assert_eq!((s.seconds_connected, s.last_leave), (200, Some(300)));
        // Away now: counts up to the drop only.
        let s = summarise(&[(100, Join)], &[gap(300, None)], 1000).unwrap();
        assert_eq!((s.seconds_connected, s.connected), (200, true));
        // Came back as a new visit after the grace (a fresh join replaced the kept place): the
        // open gap ends with its own visit, the new visit counts in full.
        let s = summarise(
            &[(100, Join), (400, Leave), (400, Join), (600, Leave)],
            &[gap(300, None)],
            1000,
        )
        .unwrap();
        assert_eq!((s.seconds_connected, s.reconnects), (200 + 200, 1));
        assert_eq!(s.last_leave, Some(600));
        // A gap still open when the report is read during the lesson ends at "now".
        let s = summarise(&[(100, Join)], &[gap(300, Some(2000))], 500).unwrap();
        assert_eq!((s.seconds_connected, s.seconds_away), (200, 200));
        // Killed server while away: closed at its last sign of life, present up to the drop.
        let s = summarise(
            &[(100, Join), (350, ClosedByRestart)],
            &[gap(300, None)],
            1000,
        );
        let s = s.unwrap();
        assert_eq!((s.seconds_connected, s.last_leave), (200, Some(300)));
        assert!(s.closed_by_restart);
        // Gaps outside every visit, overlapping gaps: counted once, never negative.
        let s = summarise(
            &[(100, Join), (200, Leave)],
            &[gap(50, Some(80)), gap(120, Some(150)), gap(140, Some(160))],
            1000,
        )
        .unwrap();
        assert_eq!((s.seconds_connected, s.seconds_away), (60, 40));
    }
}
