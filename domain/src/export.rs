//! Attendance exports: per lesson, per class over dates, per teacher over dates; as CSV for
//! Excel and as JSON for other systems.
//!
//! CSV: UTF-8 with a byte-order mark (without it, Excel in Japan reads the file as Shift_JIS and
//! garbles every name), CRLF line ends, a header row, quoting by the `csv` crate. Instants are
//! written as `YYYY-MM-DD HH:MM:SS` in the school's time zone, which Excel reads as a date-time.
//! Cells that begin with `=`, `+`, `-`, `@`, tab or CR get a leading `'` so that a spreadsheet
//! never runs a name as a formula (CSV injection).
//!
//! Exports are reads: the caller records [`crate::audit::Action::Exported`] with who asked.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

use crate::attendance::{ReportRow, attendance_report};
use crate::calendar::format_date;
use crate::cutoff::local_datetime;
use crate::db::{Db, DbError, on_pool};
use crate::lesson::{LESSON_COLUMNS, Lesson, LessonRow};

/// One lesson and its attendance rows: the unit of every export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LessonReport {
    pub lesson: Lesson,
    pub rows: Vec<ReportRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The report of one lesson.
pub async fn report_for_lesson(
    db: &Db,
    lesson: &Lesson,
    now: i64,
) -> Result<LessonReport, DbError> {
    Ok(LessonReport {
        rows: attendance_report(db, lesson, now).await?,
        lesson: lesson.clone(),
    })
}

/// Reports of a class's lessons whose date is in `from..=to`, in start order.
pub async fn reports_for_class(
    db: &Db,
    class: &str,
    from: NaiveDate,
    to: NaiveDate,
    now: i64,
) -> Result<Vec<LessonReport>, DbError> {
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.class_id = $1 \
         AND l.lesson_date >= $2 AND l.lesson_date <= $3 ORDER BY l.starts_at, l.id"
    );
    let (lo, hi) = (format_date(from), format_date(to));
    let rows: Vec<LessonRow> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(class).bind(&lo).bind(&hi).fetch_all(p).await?);
    reports(db, rows, now).await
}

/// Reports of the lessons a teacher teaches whose date is in `from..=to`, in start order.
pub async fn reports_for_teacher(
    db: &Db,
    teacher: &str,
    from: NaiveDate,
    to: NaiveDate,
    now: i64,
) -> Result<Vec<LessonReport>, DbError> {
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l JOIN lesson_teachers t ON t.lesson_id = l.id \
         WHERE t.teacher_id = $1 AND l.lesson_date >= $2 AND l.lesson_date <= $3 \
         ORDER BY l.starts_at, l.id"
    );
    let (lo, hi) = (format_date(from), format_date(to));
    let rows: Vec<LessonRow> = on_pool!(db, p => sqlx::query_as(&sql)
        .bind(teacher).bind(&lo).bind(&hi).fetch_all(p).await?);
    reports(db, rows, now).await
}

async fn reports(db: &Db, rows: Vec<LessonRow>, now: i64) -> Result<Vec<LessonReport>, DbError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let lesson = row.into_lesson()?;
        out.push(report_for_lesson(db, &lesson, now).await?);
    }
    Ok(out)
}

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 19] = [
    "lesson_id",
    "class_id",
    "lesson_date",
    "starts_at",
    "ends_at",
    "pupil_id",
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "mode",
    "first_join",
    "last_leave",
    "minutes_connected",
    "reconnects",
    "mark",
    "admitted_by_teacher",
    // Last, so that columns of spreadsheets made before they existed keep their places.
    "gaps",
    "minutes_away",
];

/// The reports as one CSV document (BOM, CRLF, header), one line per lesson and pupil.
/// `timezone` is the school's, for the instants.
pub fn to_csv(reports: &[LessonReport], timezone: Tz) -> Result<String, ExportError> {
    let mut out = Vec::new();
    out.extend_from_slice("\u{FEFF}".as_bytes());
    {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(&mut out);
        w.write_record(CSV_HEADER)?;
        let time = |at: i64| {
            local_datetime(timezone, at)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        for report in reports {
            let l = &report.lesson;
            for r in &report.rows {
                let online = r.online.as_ref();
                let record = [
                    l.id.clone(),
                    l.class_id.clone(),
                    format_date(l.lesson_date),
                    time(l.starts_at),
                    time(l.ends_at),
                    r.pupil_id.clone(),
                    r.family_name.clone(),
                    r.given_name.clone(),
                    r.family_name_kana.clone().unwrap_or_default(),
                    r.given_name_kana.clone().unwrap_or_default(),
                    r.mode.as_str().to_owned(),
                    online.map(|o| time(o.first_join)).unwrap_or_default(),
                    online
                        .and_then(|o| o.last_leave)
                        .map(time)
                        .unwrap_or_default(),
                    online
                        .map(|o| o.minutes_connected.to_string())
                        .unwrap_or_default(),
                    online.map(|o| o.reconnects.to_string()).unwrap_or_default(),
                    r.mark
                        .as_ref()
                        .map(|m| m.status.as_str().to_owned())
                        .unwrap_or_default(),
                    r.admitted_by_teacher.to_string(),
                    online.map(|o| o.gaps.len().to_string()).unwrap_or_default(),
                    online
                        .map(|o| (o.seconds_away / 60).to_string())
                        .unwrap_or_default(),
                ];
                let cells: Vec<std::borrow::Cow<'_, str>> =
                    record.iter().map(|cell| defuse(cell)).collect();
                w.write_record(cells.iter().map(|cell| cell.as_bytes()))?;
            }
        }
        w.flush().map_err(csv::Error::from)?;
    }
    // Every cell came from a `String`, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Prefixes `'` to a cell a spreadsheet would treat as a formula.
fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The reports as a JSON array (instants as Unix seconds, dates as `YYYY-MM-DD`).
pub fn to_json(reports: &[LessonReport]) -> Result<String, ExportError> {
    Ok(serde_json::to_string(reports)?)
}
