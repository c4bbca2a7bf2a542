//! Calendar dates as stored: TEXT `YYYY-MM-DD` (see migrations/0001_roster.sql for why).

use chrono::NaiveDate;

use crate::db::DbError;

const FORMAT: &str = "%Y-%m-%d";

pub(crate) fn format_date(date: NaiveDate) -> String {
    date.format(FORMAT).to_string()
}

/// Reads a date this crate stored; a malformed one means something else wrote the row.
pub(crate) fn parse_stored_date(
    table: &'static str,
    column: &'static str,
    value: &str,
) -> Result<NaiveDate, DbError> {
    NaiveDate::parse_from_str(value, FORMAT).map_err(|_| DbError::BadStoredValue {
        table,
        column,
        value: value.to_owned(),
    })
}
