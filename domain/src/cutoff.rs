//! The school's calendar and its cut-off for attendance-mode changes: pure values, no storage.
//!
//! Why chrono + chrono-tz rather than jiff: chrono is the long-established standard (1.0-level
//! stability, used across the ecosystem, sqlx and serde support), and chrono-tz compiles the IANA
//! time-zone database into the binary, so the decision does not depend on the host having
//! tzdata installed (slim containers often do not). jiff's time-zone handling is arguably nicer,
//! but it is still 0.x; nothing here needs more than "which local date and time is this
//! instant", which chrono does exactly.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
};
use chrono_tz::Tz;

/// Whether a change for a date may be made at an instant, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoffDecision {
    /// The date is in the future, or it is today and the cut-off has not passed.
    Open,
    /// The date is today and the cut-off has passed.
    ClosedForToday,
    /// The date is before today.
    Past,
}

/// Why a [`CutoffPolicy`] could not be built from configuration text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown time zone {0:?} (expected an IANA name such as Asia/Tokyo)")]
    UnknownTimeZone(String),
    #[error("invalid cut-off time {0:?} (expected HH:MM)")]
    BadTime(String),
}

/// "Changes for today close at `close_at_local_time`, school time." Guardians are bound by it;
/// staff are not (see [`crate::attendance_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutoffPolicy {
    /// The school's time zone: decides what "today" is.
    pub timezone: Tz,
    /// Local wall-clock time after which today's mode can no longer be changed by a guardian.
    pub close_at_local_time: NaiveTime,
}

/// Instant `at` (Unix seconds) as a date-time in `timezone`. Instants beyond chrono's range
/// (about ±262,000 years) are clamped, which no real clock produces.
pub fn local_datetime(timezone: Tz, at: i64) -> DateTime<Tz> {
    let utc = DateTime::from_timestamp(at, 0).unwrap_or(if at < 0 {
        DateTime::<chrono::Utc>::MIN_UTC
    } else {
        DateTime::<chrono::Utc>::MAX_UTC
    });
    utc.with_timezone(&timezone)
}

/// The calendar date in `timezone` at instant `at` (Unix seconds).
pub fn local_date(timezone: Tz, at: i64) -> NaiveDate {
    local_datetime(timezone, at).date_naive()
}

impl Default for CutoffPolicy {
    /// Asia/Tokyo, 08:00: before pupils leave home for school.
    fn default() -> Self {
        CutoffPolicy {
            timezone: chrono_tz::Asia::Tokyo,
            close_at_local_time: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
        }
    }
}

impl CutoffPolicy {
    /// From configuration text: an IANA zone name and an `HH:MM` (or `HH:MM:SS`) local time.
    pub fn parse(timezone: &str, close_at: &str) -> Result<CutoffPolicy, PolicyError> {
        let timezone: Tz = timezone
            .parse()
            .map_err(|_| PolicyError::UnknownTimeZone(timezone.to_owned()))?;
        let close_at_local_time = NaiveTime::parse_from_str(close_at, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(close_at, "%H:%M:%S"))
            .map_err(|_| PolicyError::BadTime(close_at.to_owned()))?;
        Ok(CutoffPolicy {
            timezone,
            close_at_local_time,
        })
    }

    /// The school's calendar date at instant `at` (Unix seconds).
    pub fn local_date(&self, at: i64) -> NaiveDate {
        local_date(self.timezone, at)
    }

    /// The instant (Unix seconds) at which changes for `date` close. If the close time does not
    /// exist that day (it falls in a daylight-saving gap), the cut-off is the end of the gap; if
    /// it exists twice (a repeated hour), the first occurrence counts.
    pub fn closes_at(&self, date: NaiveDate) -> i64 {
        let mut local = NaiveDateTime::new(date, self.close_at_local_time);
        // Gaps are at most a few hours; step forward a minute at a time to the first local time
        // that exists. A day always has one, so the bound is only a guard.
        for _ in 0..(24 * 60) {
            match self.timezone.from_local_datetime(&local) {
                LocalResult::Single(t) => return t.timestamp(),
                LocalResult::Ambiguous(first, _) => return first.timestamp(),
                LocalResult::None => {
                    local = NaiveDateTime::new(
                        local.date(),
                        local.time().with_second(0).unwrap_or(local.time()),
                    ) + Duration::minutes(1);
                }
            }
        }
        // Unreachable for real zones: fall back to reading the local time as UTC.
        local.and_utc().timestamp()
    }

    /// Decides whether a change for `date` made at instant `at` is within the policy: past dates
    /// are closed, today is open until the cut-off (exclusive), future dates are open.
    pub fn decide(&self, date: NaiveDate, at: i64) -> CutoffDecision {
        let today = self.local_date(at);
        if date < today {
            CutoffDecision::Past
        } else if date == today && at >= self.closes_at(date) {
            CutoffDecision::ClosedForToday
        } else {
            CutoffDecision::Open
        }
    }

    /// Shorthand for `decide(..) == Open`.
    pub fn allows(&self, date: NaiveDate, at: i64) -> bool {
        self.decide(date, at) == CutoffDecision::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Unix seconds of an RFC 3339 instant.
    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn tokyo_closes_at_eight_local() {
        let p = CutoffPolicy::default();
        let d = date("2026-06-10");
        // 07:59:59 JST is 22:59:59 UTC the day before.
        assert_eq!(
            p.decide(d, at("2026-06-10T07:59:59+09:00")),
            CutoffDecision::Open
        );
        assert_eq!(
            p.decide(d, at("2026-06-09T22:59:59Z")),
            CutoffDecision::Open
        );
        assert_eq!(
            p.decide(d, at("2026-06-10T08:00:00+09:00")),
            CutoffDecision::ClosedForToday
        );
        assert_eq!(
            p.decide(d, at("2026-06-10T23:59:59+09:00")),
            CutoffDecision::ClosedForToday
        );
        // Any time the day before is fine, including late evening UTC of two days before.
        assert_eq!(
            p.decide(d, at("2026-06-09T20:00:00+09:00")),
            CutoffDecision::Open
        );
        assert_eq!(
            p.decide(d, at("2026-06-11T00:00:00+09:00")),
            CutoffDecision::Past
        );
        assert_eq!(p.closes_at(d), at("2026-06-09T23:00:00Z"));
        // JST has no daylight saving: the same UTC offset in winter.
        assert_eq!(p.closes_at(date("2026-12-10")), at("2026-12-09T23:00:00Z"));
        assert_eq!(p.local_date(at("2026-06-09T15:00:00Z")), d);
        assert_eq!(p.local_date(at("2026-06-09T14:59:59Z")), date("2026-06-09"));
    }

    #[test]
    fn new_york_follows_daylight_saving() {
        // A Japanese school abroad (e.g. the weekend school in New York).
        let p = CutoffPolicy::parse("America/New_York", "08:00").unwrap();
        // Summer (EDT, UTC-4): 08:00 local is 12:00 UTC.
        let summer = date("2026-07-01");
        assert_eq!(p.closes_at(summer), at("2026-07-01T12:00:00Z"));
        assert!(p.allows(summer, at("2026-07-01T11:59:59Z")));
        assert!(!p.allows(summer, at("2026-07-01T12:00:00Z")));
        // Winter (EST, UTC-5): 08:00 local is 13:00 UTC, so 12:30 UTC is still open.
        let winter = date("2026-01-15");
        assert_eq!(p.closes_at(winter), at("2026-01-15T13:00:00Z"));
        assert!(p.allows(winter, at("2026-01-15T12:30:00Z")));
        assert!(!p.allows(winter, at("2026-01-15T13:00:00Z")));
        // The day DST starts (2026-03-08), a cut-off of 02:30 falls in the gap: closes at 03:00
        // EDT, the end of the gap (07:00 UTC).
        let p = CutoffPolicy::parse("America/New_York", "02:30").unwrap();
        let spring = date("2026-03-08");
        assert_eq!(p.closes_at(spring), at("2026-03-08T07:00:00Z"));
        assert!(p.allows(spring, at("2026-03-08T06:59:59Z")));
        assert!(!p.allows(spring, at("2026-03-08T07:00:00Z")));
        // The day DST ends (2026-11-01), 01:30 happens twice: the first (EDT) one counts.
        let p = CutoffPolicy::parse("America/New_York", "01:30").unwrap();
        assert_eq!(
            p.closes_at(date("2026-11-01")),
            at("2026-11-01T01:30:00-04:00")
        );
    }

    #[test]
    fn parse_rejects_bad_config() {
        assert_eq!(
            CutoffPolicy::parse("Asia/Tokio", "08:00"),
            Err(PolicyError::UnknownTimeZone("Asia/Tokio".into()))
        );
        assert_eq!(
            CutoffPolicy::parse("Asia/Tokyo", "8 o'clock"),
            Err(PolicyError::BadTime("8 o'clock".into()))
        );
        assert_eq!(
            CutoffPolicy::parse("Asia/Tokyo", "08:00").unwrap(),
            CutoffPolicy::default()
        );
    }
}
