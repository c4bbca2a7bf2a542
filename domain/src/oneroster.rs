//! OneRoster 1.2 CSV bulk import (also reads the 1.1 layout where users.csv carries `role`).
//!
//! The import runs in two phases inside one transaction: every file is parsed and every row
//! checked (columns, values, references to other rows in the files or already stored) and every
//! problem is collected; only if there is none are rows written. Any problem, or any database
//! error while writing, rolls the whole import back, so a bad roster never half-applies.
//!
//! Spec points this relies on (OneRoster 1.2 CSV binding): files are UTF-8 and may begin with a
//! BOM; header names are case-sensitive; extension columns (e.g. the Japan Profile's
//! `metadata.jp.*`) come after the defined ones, so unknown columns are ignored; list fields
//! (`agentSourcedIds`, `termSourcedIds`, `grades`, ...) are comma-separated inside one quoted
//! field. Semicolons are accepted as separators too, since some exporters write them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::db::{Db, DbError, Tx};
use crate::model::{
    self, AcademicSession, CLASS_TERMS, Class, Enrollment, Entity, GUARDIAN_LINKS, LinkTable, Org,
    Person, PersonRole,
};
use crate::roster_files::{self, Files, TooBig};
use crate::scope::Scope;

mod within;

/// After this many problems the import stops looking for more: a wholly wrong file would
/// otherwise produce one per row.
const MAX_PROBLEMS: usize = 200;

/// Why a row (or a whole file) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The manifest declares the file, or the import needs it, but it is not there.
    MissingFile,
    /// A column this importer needs is not in the header.
    MissingColumn(String),
    /// The same column name appears twice in the header.
    DuplicateColumn(String),
    /// A required value is empty.
    MissingValue(String),
    /// A field's bytes are not UTF-8.
    InvalidUtf8 { column: Option<String> },
    /// A value is not one this importer accepts.
    InvalidValue {
        column: String,
        value: String,
        expected: String,
    },
    /// A sourcedId refers to a row that is neither in the files nor stored.
    UnknownReference {
        column: String,
        id: String,
        target: &'static str,
    },
    /// A sourcedId appears twice in one file.
    DuplicateId { id: String, first_line: u64 },
    /// The manifest asks for something not supported (a delta file, another version).
    Unsupported(String),
    /// The CSV itself is malformed (wrong number of fields, ...).
    Malformed(String),
    /// A change to something outside the uploading administrator's school(s).
    OutOfScope(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingFile => write!(f, "file is missing"),
            Reason::MissingColumn(c) => write!(f, "missing column {c:?}"),
            Reason::DuplicateColumn(c) => write!(f, "column {c:?} appears more than once"),
            Reason::MissingValue(c) => write!(f, "column {c:?} is empty"),
            Reason::InvalidUtf8 { column: Some(c) } => write!(f, "column {c:?} is not valid UTF-8"),
            Reason::InvalidUtf8 { column: None } => write!(f, "not valid UTF-8"),
            Reason::InvalidValue {
                column,
                value,
                expected,
            } => write!(f, "column {column:?}: {value:?} is not {expected}"),
            Reason::UnknownReference { column, id, target } => {
                write!(f, "column {column:?}: unknown {target} {id:?}")
            }
            Reason::DuplicateId { id, first_line } => {
                write!(f, "sourcedId {id:?} already appears on line {first_line}")
            }
            Reason::Unsupported(what) => write!(f, "unsupported: {what}"),
            Reason::Malformed(what) => write!(f, "malformed CSV: {what}"),
            Reason::OutOfScope(what) => write!(f, "{what} is not of your school"),
        }
    }
}

/// One problem found in the roster: which file, which line (1 is the header), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based line where the offending record starts; 0 when the problem is the whole file.
    pub line: u64,
    pub reason: Reason,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

/// The problems that made an import refuse the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the roster", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The roster is invalid; nothing was applied.
    #[error("{0}")]
    Invalid(Problems),
    /// The roster would change another school's records; nothing was applied.
    #[error("{0}")]
    OutOfScope(Problems),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read ZIP archive {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    /// Refused before parsing: too much to unpack, or too many entries. Nothing was applied.
    #[error("{path}: {what}")]
    TooBig { path: PathBuf, what: TooBig },
    /// The task reading or checking the files ended without an answer (it panicked).
    #[error("the roster check stopped unexpectedly")]
    Interrupted,
    /// A database error; the transaction was rolled back, so nothing was applied.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Db(DbError::Query(e))
    }
}

impl ImportError {
    /// The roster problems, if that is why the import failed.
    pub fn problems(&self) -> Option<&[Problem]> {
        match self {
            ImportError::Invalid(p) => Some(&p.0),
            _ => None,
        }
    }
}

/// What an import did to one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Only link tables lose rows on import (a link no longer in the roster); entities are
    /// never deleted here, because lessons and attendance history refer to them.
    pub removed: u64,
}

/// The outcome of a successful import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub orgs: Counts,
    pub academic_sessions: Counts,
    pub people: Counts,
    pub guardian_links: Counts,
    pub classes: Counts,
    pub class_terms: Counts,
    pub enrollments: Counts,
    /// Things accepted but ignored, e.g. an `agentSourcedIds` link that is not guardian–pupil.
    pub warnings: Vec<Problem>,
}

impl ImportReport {
    /// True when the import changed nothing.
    pub fn is_unchanged(&self) -> bool {
        [
            self.orgs,
            self.academic_sessions,
            self.people,
            self.guardian_links,
            self.classes,
            self.class_terms,
            self.enrollments,
        ]
        .iter()
        .all(|c| c.created == 0 && c.updated == 0 && c.removed == 0)
    }
}

/// Imports a OneRoster CSV bulk export from a directory of CSV files.
pub async fn import_dir(db: &Db, dir: &Path) -> Result<ImportReport, ImportError> {
    let dir = dir.to_owned();
    let files = off_runtime(move || roster_files::read_dir(&dir, &FILES)).await??;
    import_files(db, files, None).await
}

/// Imports a OneRoster CSV bulk export from a ZIP archive (files at its top level). At most
/// [`roster_files::MAX_UNPACKED_BYTES`] are unpacked, from an archive of at most
/// [`roster_files::MAX_ARCHIVE_ENTRIES`] entries.
pub async fn import_zip(db: &Db, path: &Path) -> Result<ImportReport, ImportError> {
    let path = path.to_owned();
    let files = off_runtime(move || roster_files::read_zip(&path, &FILES)).await??;
    import_files(db, files, None).await
}

/// [`import_zip`] on behalf of a school's administrator: refused with
/// [`ImportError::OutOfScope`] if it would change anything outside `scope`'s schools.
pub async fn import_zip_within(
    db: &Db,
    path: &Path,
    scope: &Scope,
) -> Result<ImportReport, ImportError> {
    let path = path.to_owned();
    let files = off_runtime(move || roster_files::read_zip(&path, &FILES)).await??;
    import_files(db, files, Some(scope)).await
}

/// Runs blocking work (file reads, decompression, parsing a large CSV) on tokio's blocking
/// pool: on an async worker it would stall every connection that worker serves.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ImportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ImportError::Interrupted)
}

/// The files this importer reads; any other file in the export is ignored.
const FILES: [&str; 7] = [
    "manifest.csv",
    "orgs.csv",
    "academicSessions.csv",
    "users.csv",
    "roles.csv",
    "classes.csv",
    "enrollments.csv",
];

// ---- Rows as they appear in the CSV files. Only the columns used are declared; serde skips the
// ---- rest. Required columns are `String`, optional ones `Option<String>` (csv reads an empty
// ---- field as `None`).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestRow {
    property_name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgRow {
    sourced_id: String,
    name: String,
    r#type: String,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    parent_sourced_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    sourced_id: String,
    title: String,
    r#type: String,
    start_date: String,
    end_date: String,
    school_year: String,
    #[serde(default)]
    parent_sourced_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserRow {
    sourced_id: String,
    enabled_user: String,
    username: String,
    given_name: String,
    family_name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    agent_sourced_ids: Option<String>,
    /// 1.2.
    #[serde(default)]
    primary_org_sourced_id: Option<String>,
    /// 1.1 (and some 1.2 exporters).
    #[serde(default)]
    org_sourced_ids: Option<String>,
    /// 1.1 only; 1.2 moved roles to roles.csv.
    #[serde(default)]
    role: Option<String>,
    #[serde(default, rename = "metadata.jp.kanaGivenName")]
    kana_given_name: Option<String>,
    #[serde(default, rename = "metadata.jp.kanaFamilyName")]
    kana_family_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRow {
    // sourcedId is required and checked for uniqueness by parse_csv; nothing else refers to it.
    user_sourced_id: String,
    role_type: String,
    role: String,
    org_sourced_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassRow {
    sourced_id: String,
    title: String,
    course_sourced_id: String,
    class_type: String,
    school_sourced_id: String,
    term_sourced_ids: String,
    #[serde(default)]
    class_code: Option<String>,
    #[serde(default)]
    grades: Option<String>,
    #[serde(default)]
    subjects: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollmentRow {
    sourced_id: String,
    class_sourced_id: String,
    school_sourced_id: String,
    user_sourced_id: String,
    role: String,
    #[serde(default)]
    primary: Option<String>,
    #[serde(default)]
    begin_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
}

const MANIFEST_COLUMNS: &[&str] = &["propertyName", "value"];
const ORG_COLUMNS: &[&str] = &["sourcedId", "name", "type"];
const SESSION_COLUMNS: &[&str] = &[
    "sourcedId",
    "title",
    "type",
    "startDate",
    "endDate",
    "schoolYear",
];
const USER_COLUMNS: &[&str] = &[
    "sourcedId",
    "enabledUser",
    "username",
    "givenName",
    "familyName",
];
const ROLE_COLUMNS: &[&str] = &[
    "sourcedId",
    "userSourcedId",
    "roleType",
    "role",
    "orgSourcedId",
];
const CLASS_COLUMNS: &[&str] = &[
    "sourcedId",
    "title",
    "courseSourcedId",
    "classType",
    "schoolSourcedId",
    "termSourcedIds",
];
const ENROLLMENT_COLUMNS: &[&str] = &[
    "sourcedId",
    "classSourcedId",
    "schoolSourcedId",
    "userSourcedId",
    "role",
];

/// Collects problems up to [`MAX_PROBLEMS`].
#[derive(Default)]
struct Collector {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Collector {
    fn add(&mut self, file: &str, line: u64, reason: Reason) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                file: file.to_owned(),
                line,
                reason,
            });
        }
    }

    fn warn(&mut self, file: &str, line: u64, reason: Reason) {
        if self.warnings.len() < MAX_PROBLEMS {
            self.warnings.push(Problem {
                file: file.to_owned(),
                line,
                reason,
            });
        }
    }

    fn full(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }
}

/// One parsed CSV file.
struct Parsed<T> {
    /// `(line, row)` for the rows that parsed and whose sourcedId is present and unique.
    rows: Vec<(u64, T)>,
    /// Every sourcedId seen, with its line, including rows rejected for other reasons: other
    /// files' references to such a row are then not reported again as unknown.
    ids: HashMap<String, u64>,
}

/// Line (1-based) on which the record at byte `offset` starts. Computed from the bytes because
/// the csv crate's line count can lag by one when lines end in CRLF.
fn line_at(data: &[u8], offset: u64) -> u64 {
    let mut start = usize::try_from(offset)
        .unwrap_or(data.len())
        .min(data.len());
    // The record's position may point at the previous line's terminator; skip past it.
    while start < data.len() && (data[start] == b'\r' || data[start] == b'\n') {
        start += 1;
    }
    1 + data[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

/// Parses one CSV file, reporting header and row problems. With `id_column`, also checks that
/// each row's sourcedId is present and unique within the file.
fn parse_csv<T: DeserializeOwned>(
    file: &str,
    data: &[u8],
    required: &[&str],
    id_column: Option<&str>,
    out: &mut Collector,
) -> Parsed<T> {
    let mut parsed = Parsed {
        rows: Vec::new(),
        ids: HashMap::new(),
    };
    // The csv crate strips a leading UTF-8 BOM from the header itself.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(data);
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.add(file, 1, Reason::Malformed(e.to_string()));
            return parsed;
        }
    };
    let mut names = Vec::with_capacity(headers.len());
    let mut header_ok = true;
    for field in headers.iter() {
        match std::str::from_utf8(field) {
            Ok(name) => {
                if names.contains(&name) {
                    out.add(file, 1, Reason::DuplicateColumn(name.to_owned()));
                    header_ok = false;
                }
                names.push(name);
            }
            Err(_) => {
                out.add(file, 1, Reason::InvalidUtf8 { column: None });
                header_ok = false;
                names.push("");
            }
        }
    }
    for col in required {
        if !names.contains(col) {
            out.add(file, 1, Reason::MissingColumn((*col).to_owned()));
            header_ok = false;
        }
    }
    if !header_ok {
        // Row-level messages would only repeat the header's problem.
        return parsed;
    }
    let id_index = id_column.and_then(|c| names.iter().position(|n| *n == c));

    for record in reader.byte_records() {
        if out.full() {
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| line_at(data, p.byte()));
                out.add(file, line, Reason::Malformed(e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| line_at(data, p.byte()));
        if let (Some(index), Some(column)) = (id_index, id_column) {
            // An id in broken UTF-8 is reported by the encoding check below.
            if let Some(Ok(id)) = record.get(index).map(std::str::from_utf8) {
                let id = id.trim();
                if id.is_empty() {
                    out.add(file, line, Reason::MissingValue(column.to_owned()));
                    continue;
                }
                if !check_unique(&mut parsed.ids, file, line, id, out) {
                    continue;
                }
            }
        }
        // Check every field, used or not: the spec requires UTF-8 throughout, and a file with
        // broken encoding in one column is likely wrong elsewhere too (e.g. saved as Shift_JIS).
        let bad = record
            .iter()
            .position(|field| std::str::from_utf8(field).is_err());
        if let Some(index) = bad {
            let column = names.get(index).map(|n| (*n).to_owned());
            out.add(file, line, Reason::InvalidUtf8 { column });
            continue;
        }
        match record.deserialize::<T>(Some(&headers)) {
            Ok(row) => parsed.rows.push((line, row)),
            Err(e) => out.add(file, line, Reason::Malformed(e.to_string())),
        }
    }
    parsed
}

/// Splits a OneRoster list field; empty items are dropped.
fn split_list(value: &str) -> Vec<&str> {
    value
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn opt_list(value: Option<&str>) -> Option<String> {
    value
        .map(|v| split_list(v).join(","))
        .filter(|v| !v.is_empty())
}

/// Trims and turns blank into `None`.
fn opt(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A required value: trimmed, non-empty.
fn req(file: &str, line: u64, column: &str, value: &str, out: &mut Collector) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        out.add(file, line, Reason::MissingValue(column.to_owned()));
        None
    } else {
        Some(v.to_owned())
    }
}

fn invalid(column: &str, value: &str, expected: &str) -> Reason {
    Reason::InvalidValue {
        column: column.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// `YYYY-MM-DD` with a plausible month and day (the spec's date format).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Maps a OneRoster user role to ours. Several OneRoster roles collapse into one: for lessons
/// what matters is who teaches, who learns, who decides for a pupil, and who administers.
fn person_role(or_role: &str) -> Option<PersonRole> {
    Some(match or_role {
        "student" => PersonRole::Student,
        "teacher" | "aide" | "proctor" | "counselor" => PersonRole::Teacher,
        "guardian" | "parent" | "relative" => PersonRole::Guardian,
        "administrator"
        | "districtAdministrator"
        | "siteAdministrator"
        | "systemAdministrator"
        | "principal" => PersonRole::Administrator,
        _ => return None,
    })
}

const PERSON_ROLES_EXPECTED: &str = "a OneRoster user role (student, teacher, aide, proctor, \
     counselor, guardian, parent, relative, principal, administrator, districtAdministrator, \
     siteAdministrator, systemAdministrator)";

fn enrollment_role(or_role: &str) -> Option<&'static str> {
    Some(match or_role {
        "student" => "student",
        "teacher" => "teacher",
        "administrator" => "administrator",
        "proctor" => "proctor",
        _ => return None,
    })
}

/// Rejects a sourcedId seen before in the same file.
fn check_unique(
    seen: &mut HashMap<String, u64>,
    file: &str,
    line: u64,
    id: &str,
    out: &mut Collector,
) -> bool {
    if let Some(&first_line) = seen.get(id) {
        out.add(
            file,
            line,
            Reason::DuplicateId {
                id: id.to_owned(),
                first_line,
            },
        );
        false
    } else {
        seen.insert(id.to_owned(), line);
        true
    }
}

/// Everything already stored, loaded inside the import's transaction.
#[derive(Default)]
struct Stored {
    orgs: HashMap<String, Org>,
    sessions: HashMap<String, AcademicSession>,
    people: HashMap<String, Person>,
    classes: HashMap<String, Class>,
    enrollments: HashMap<String, Enrollment>,
    guardian_links: BTreeSet<(String, String)>,
    class_terms: BTreeSet<(String, String)>,
}

/// The roster validated and converted to stored records.
#[derive(Default)]
struct Plan {
    orgs: Vec<Org>,
    sessions: Vec<AcademicSession>,
    people: Vec<Person>,
    classes: Vec<Class>,
    enrollments: Vec<Enrollment>,
    guardian_links: BTreeSet<(String, String)>,
    /// Links are replaced only for the people / classes in this roster, so importing one
    /// school's export does not drop another school's links.
    guardian_scope: HashSet<String>,
    class_terms: BTreeSet<(String, String)>,
    class_scope: HashSet<String>,
}

/// How the manifest says to treat one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bulk,
    Absent,
}

fn read_manifest(files: &Files, out: &mut Collector) -> HashMap<&'static str, Mode> {
    let mut modes = HashMap::new();
    let file = "manifest.csv";
    let Some(data) = files.get(file) else {
        return modes;
    };
    let mut seen_version = false;
    for (line, row) in parse_csv::<ManifestRow>(file, data, MANIFEST_COLUMNS, None, out).rows {
        let name = row.property_name.trim();
        let value = row.value.trim();
        if name == "oneroster.version" {
            seen_version = true;
            if value != "1.2" && value != "1.1" {
                out.add(
                    file,
                    line,
                    Reason::Unsupported(format!("OneRoster version {value:?} (1.2 or 1.1 only)")),
                );
            }
        } else if let Some(entity) = name.strip_prefix("file.") {
            let target = FILES
                .iter()
                .find(|f| f.strip_suffix(".csv") == Some(entity));
            let mode = match value {
                "bulk" => Mode::Bulk,
                "absent" => Mode::Absent,
                "delta" => {
                    // Only a file we would read matters; deltas of other files are harmless.
                    if target.is_some() {
                        out.add(
                            file,
                            line,
                            Reason::Unsupported(format!("{name} is \"delta\" (bulk only)")),
                        );
                    }
                    continue;
                }
                other => {
                    out.add(file, line, invalid("value", other, "bulk, delta or absent"));
                    continue;
                }
            };
            if let Some(target) = target {
                modes.insert(*target, mode);
            }
        }
    }
    if !seen_version && !out.full() {
        out.add(
            file,
            0,
            Reason::MissingValue("oneroster.version".to_owned()),
        );
    }
    modes
}

/// Returns the file's bytes if the manifest declares it bulk; reports a declared file that is
/// missing, and a file the import cannot do without that the manifest marks absent.
fn declared<'a>(
    files: &'a Files,
    modes: &HashMap<&'static str, Mode>,
    name: &'static str,
    required: bool,
    out: &mut Collector,
) -> Option<&'a [u8]> {
    match modes.get(name) {
        Some(Mode::Bulk) => match files.get(name) {
            Some(data) => Some(data),
            None => {
                out.add(name, 0, Reason::MissingFile);
                None
            }
        },
        _ => {
            if required {
                out.add(
                    "manifest.csv",
                    0,
                    Reason::MissingValue(format!(
                        "file.{} (must be \"bulk\")",
                        name.trim_end_matches(".csv")
                    )),
                );
            }
            None
        }
    }
}

fn plan(files: &Files, stored: &Stored, out: &mut Collector) -> Plan {
    let mut plan = Plan::default();
    if !files.contains_key("manifest.csv") {
        // Without a manifest this is probably not a roster at all; one problem says so best.
        out.add("manifest.csv", 0, Reason::MissingFile);
        return plan;
    }
    let modes = read_manifest(files, out);

    // ---- orgs.csv
    let mut org_ids: HashMap<String, u64> = HashMap::new();
    if let Some(data) = declared(files, &modes, "orgs.csv", true, out) {
        let file = "orgs.csv";
        let parsed = parse_csv::<OrgRow>(file, data, ORG_COLUMNS, Some("sourcedId"), out);
        org_ids = parsed.ids;
        for (line, row) in parsed.rows {
            let (Some(id), Some(name), Some(org_type)) = (
                Some(row.sourced_id.trim().to_owned()),
                req(file, line, "name", &row.name, out),
                req(file, line, "type", &row.r#type, out),
            ) else {
                continue;
            };
            plan.orgs.push(Org {
                id,
                name,
                org_type,
                identifier: opt(&row.identifier),
                parent_id: opt(&row.parent_sourced_id),
            });
        }
    }
    let org_known = |id: &str| org_ids.contains_key(id) || stored.orgs.contains_key(id);

    // ---- academicSessions.csv
    let mut session_ids: HashMap<String, u64> = HashMap::new();
    if let Some(data) = declared(files, &modes, "academicSessions.csv", false, out) {
        let file = "academicSessions.csv";
        let parsed = parse_csv::<SessionRow>(file, data, SESSION_COLUMNS, Some("sourcedId"), out);
        session_ids = parsed.ids;
        for (line, row) in parsed.rows {
            let (Some(id), Some(title), Some(session_type), Some(start), Some(end), Some(year)) = (
                Some(row.sourced_id.trim().to_owned()),
                req(file, line, "title", &row.title, out),
                req(file, line, "type", &row.r#type, out),
                req(file, line, "startDate", &row.start_date, out),
                req(file, line, "endDate", &row.end_date, out),
                req(file, line, "schoolYear", &row.school_year, out),
            ) else {
                continue;
            };
            let mut ok = true;
            for (column, value) in [("startDate", &start), ("endDate", &end)] {
                if !is_date(value) {
                    out.add(file, line, invalid(column, value, "a date YYYY-MM-DD"));
                    ok = false;
                }
            }
            // ISO dates compare correctly as strings.
            if ok && end < start {
                out.add(
                    file,
                    line,
                    invalid("endDate", &end, "on or after startDate"),
                );
                ok = false;
            }
            if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
                out.add(file, line, invalid("schoolYear", &year, "a year YYYY"));
                ok = false;
            }
            if !ok {
                continue;
            }
            plan.sessions.push(AcademicSession {
                id,
                title,
                session_type,
                start_date: start,
                end_date: end,
                school_year: year,
                parent_id: opt(&row.parent_sourced_id),
            });
        }
    }
    let session_known = |id: &str| session_ids.contains_key(id) || stored.sessions.contains_key(id);

    // ---- users.csv (parsed before roles.csv so roles can be checked against it)
    let users_file = "users.csv";
    let (users, user_ids) = match declared(files, &modes, users_file, true, out) {
        Some(data) => {
            let parsed =
                parse_csv::<UserRow>(users_file, data, USER_COLUMNS, Some("sourcedId"), out);
            (parsed.rows, parsed.ids)
        }
        None => (Vec::new(), HashMap::new()),
    };
    let user_known = |id: &str| user_ids.contains_key(id) || stored.people.contains_key(id);

    // ---- roles.csv (1.2): each user's primary role and the org it is held in.
    let mut primary_roles: HashMap<String, (PersonRole, String, u64)> = HashMap::new();
    let has_roles_file = modes.get("roles.csv") == Some(&Mode::Bulk);
    if let Some(data) = declared(files, &modes, "roles.csv", false, out) {
        let file = "roles.csv";
        let parsed = parse_csv::<RoleRow>(file, data, ROLE_COLUMNS, Some("sourcedId"), out);
        for (line, row) in parsed.rows {
            let (Some(user), Some(role_type), Some(role), Some(org)) = (
                req(file, line, "userSourcedId", &row.user_sourced_id, out),
                req(file, line, "roleType", &row.role_type, out),
                req(file, line, "role", &row.role, out),
                req(file, line, "orgSourcedId", &row.org_sourced_id, out),
            ) else {
                continue;
            };
            if !user_ids.contains_key(&user) {
                out.add(
                    file,
                    line,
                    unknown("userSourcedId", &user, "user in users.csv"),
                );
                continue;
            }
            if !org_known(&org) {
                out.add(file, line, unknown("orgSourcedId", &org, "org"));
                continue;
            }
            let Some(mapped) = person_role(&role) else {
                out.add(file, line, invalid("role", &role, PERSON_ROLES_EXPECTED));
                continue;
            };
            match role_type.as_str() {
                "primary" => {
                    if let Some((_, _, first)) = primary_roles.get(&user) {
                        out.add(
                            file,
                            line,
                            invalid(
                                "roleType",
                                "primary",
                                &format!("unique per user (user {user:?} has one on line {first})"),
                            ),
                        );
                    } else {
                        primary_roles.insert(user, (mapped, org, line));
                    }
                }
                // A secondary role (e.g. a teacher who is also a parent) does not change what
                // the person is here; the guardian link comes from agentSourcedIds anyway.
                "secondary" => {}
                other => out.add(
                    file,
                    line,
                    invalid("roleType", other, "primary or secondary"),
                ),
            }
        }
    }

    // Resolve each user's role, then build the records.
    let mut roles_by_user: HashMap<String, PersonRole> = HashMap::new();
    for (line, row) in &users {
        let line = *line;
        let id = row.sourced_id.trim();
        if id.is_empty() {
            continue; // already reported
        }
        let (role, role_org) = if let Some((role, org, _)) = primary_roles.get(id) {
            (*role, Some(org.clone()))
        } else if let Some(or_role) = opt(&row.role) {
            match person_role(&or_role) {
                Some(role) => (role, None),
                None => {
                    out.add(
                        users_file,
                        line,
                        invalid("role", &or_role, PERSON_ROLES_EXPECTED),
                    );
                    continue;
                }
            }
        } else if has_roles_file {
            out.add(
                users_file,
                line,
                Reason::MissingValue("role (no primary role in roles.csv)".to_owned()),
            );
            continue;
        } else {
            out.add(users_file, line, Reason::MissingColumn("role".to_owned()));
            continue;
        };
        roles_by_user.insert(id.to_owned(), role);

        let (Some(username), Some(given_name), Some(family_name)) = (
            req(users_file, line, "username", &row.username, out),
            req(users_file, line, "givenName", &row.given_name, out),
            req(users_file, line, "familyName", &row.family_name, out),
        ) else {
            continue;
        };
        let Some(enabled) = parse_bool(&row.enabled_user) else {
            out.add(
                users_file,
                line,
                invalid("enabledUser", &row.enabled_user, "true or false"),
            );
            continue;
        };
        // The person's main school: 1.2's primaryOrgSourcedId, else the org of the primary
        // role, else the first of 1.1's orgSourcedIds.
        let (org_column, primary_org) = match opt(&row.primary_org_sourced_id) {
            Some(org) => ("primaryOrgSourcedId", Some(org)),
            None => match role_org {
                Some(org) => ("orgSourcedId", Some(org)),
                None => (
                    "orgSourcedIds",
                    row.org_sourced_ids
                        .as_deref()
                        .and_then(|v| split_list(v).first().map(|s| (*s).to_owned())),
                ),
            },
        };
        if let Some(org) = &primary_org
            && !org_known(org)
        {
            out.add(users_file, line, unknown(org_column, org, "org"));
            continue;
        }
        plan.people.push(Person {
            id: id.to_owned(),
            role: role.as_str().to_owned(),
            username,
            given_name,
            family_name,
            given_name_kana: opt(&row.kana_given_name),
            family_name_kana: opt(&row.kana_family_name),
            email: opt(&row.email),
            enabled,
            primary_org_id: primary_org,
        });
    }

    // Guardian–pupil links from agentSourcedIds. The spec lets either side list the other, so
    // both directions are read and merged.
    let role_of = |id: &str| {
        roles_by_user
            .get(id)
            .copied()
            .or_else(|| stored.people.get(id).and_then(Person::role))
    };
    for (line, row) in &users {
        let id = row.sourced_id.trim();
        if id.is_empty() {
            continue;
        }
        plan.guardian_scope.insert(id.to_owned());
        let Some(agents) = row.agent_sourced_ids.as_deref() else {
            continue;
        };
        for agent in split_list(agents) {
            if !user_known(agent) {
                out.add(users_file, *line, unknown("agentSourcedIds", agent, "user"));
                continue;
            }
            match (role_of(id), role_of(agent)) {
                (Some(PersonRole::Guardian), Some(PersonRole::Student)) => {
                    plan.guardian_links
                        .insert((id.to_owned(), agent.to_owned()));
                }
                (Some(PersonRole::Student), Some(PersonRole::Guardian)) => {
                    plan.guardian_links
                        .insert((agent.to_owned(), id.to_owned()));
                }
                // A role we could not resolve was already reported.
                (None, _) | (_, None) => {}
                (Some(a), Some(b)) => out.warn(
                    users_file,
                    *line,
                    Reason::Unsupported(format!(
                        "agentSourcedIds link {id:?} ({}) to {agent:?} ({}) ignored: only \
                         guardian–student links are kept",
                        a.as_str(),
                        b.as_str()
                    )),
                ),
            }
        }
    }

    // ---- classes.csv
    let mut class_ids: HashMap<String, u64> = HashMap::new();
    if let Some(data) = declared(files, &modes, "classes.csv", false, out) {
        let file = "classes.csv";
        let parsed = parse_csv::<ClassRow>(file, data, CLASS_COLUMNS, Some("sourcedId"), out);
        class_ids = parsed.ids;
        for (line, row) in parsed.rows {
            let (Some(id), Some(title), Some(course), Some(class_type), Some(school), Some(terms)) = (
                Some(row.sourced_id.trim().to_owned()),
                req(file, line, "title", &row.title, out),
                req(file, line, "courseSourcedId", &row.course_sourced_id, out),
                req(file, line, "classType", &row.class_type, out),
                req(file, line, "schoolSourcedId", &row.school_sourced_id, out),
                req(file, line, "termSourcedIds", &row.term_sourced_ids, out),
            ) else {
                continue;
            };
            let class_kind = match class_type.as_str() {
                "homeroom" => "homeroom",
                "scheduled" => "subject",
                other => {
                    out.add(
                        file,
                        line,
                        invalid("classType", other, "homeroom or scheduled"),
                    );
                    continue;
                }
            };
            if !org_known(&school) {
                out.add(file, line, unknown("schoolSourcedId", &school, "org"));
                continue;
            }
            let terms = split_list(&terms);
            let missing: Vec<&str> = terms
                .iter()
                .copied()
                .filter(|t| !session_known(t))
                .collect();
            if let Some(first) = missing.first() {
                out.add(
                    file,
                    line,
                    unknown("termSourcedIds", first, "academic session"),
                );
                continue;
            }
            for term in terms {
                plan.class_terms.insert((id.clone(), term.to_owned()));
            }
            plan.class_scope.insert(id.clone());
            plan.classes.push(Class {
                id,
                title,
                class_kind: class_kind.to_owned(),
                class_code: opt(&row.class_code),
                school_id: school,
                course_id: course,
                grades: opt_list(row.grades.as_deref()),
                subjects: opt_list(row.subjects.as_deref()),
            });
        }
    }
    let class_known = |id: &str| class_ids.contains_key(id) || stored.classes.contains_key(id);

    // ---- enrollments.csv
    if let Some(data) = declared(files, &modes, "enrollments.csv", false, out) {
        let file = "enrollments.csv";
        let parsed =
            parse_csv::<EnrollmentRow>(file, data, ENROLLMENT_COLUMNS, Some("sourcedId"), out);
        for (line, row) in parsed.rows {
            let (Some(id), Some(class), Some(school), Some(user), Some(role)) = (
                Some(row.sourced_id.trim().to_owned()),
                req(file, line, "classSourcedId", &row.class_sourced_id, out),
                req(file, line, "schoolSourcedId", &row.school_sourced_id, out),
                req(file, line, "userSourcedId", &row.user_sourced_id, out),
                req(file, line, "role", &row.role, out),
            ) else {
                continue;
            };
            let mut ok = true;
            if !class_known(&class) {
                out.add(file, line, unknown("classSourcedId", &class, "class"));
                ok = false;
            }
            if !org_known(&school) {
                out.add(file, line, unknown("schoolSourcedId", &school, "org"));
                ok = false;
            }
            if !user_known(&user) {
                out.add(file, line, unknown("userSourcedId", &user, "user"));
                ok = false;
            }
            let Some(role) = enrollment_role(&role) else {
                out.add(
                    file,
                    line,
                    invalid("role", &role, "administrator, proctor, student or teacher"),
                );
                continue;
            };
            let is_primary = match opt(&row.primary) {
                None => false,
                Some(v) => match parse_bool(&v) {
                    Some(b) => b,
                    None => {
                        out.add(file, line, invalid("primary", &v, "true or false"));
                        continue;
                    }
                },
            };
            let begin_date = opt(&row.begin_date);
            let end_date = opt(&row.end_date);
            for (column, value) in [("beginDate", &begin_date), ("endDate", &end_date)] {
                if let Some(v) = value
                    && !is_date(v)
                {
                    out.add(file, line, invalid(column, v, "a date YYYY-MM-DD"));
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            plan.enrollments.push(Enrollment {
                id,
                class_id: class,
                person_id: user,
                role: role.to_owned(),
                is_primary,
                begin_date,
                end_date,
            });
        }
    }
    plan
}

/// What a roster holds, as [`check_files`] or [`check_zip`] found it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RosterSummary {
    pub orgs: usize,
    pub academic_sessions: usize,
    pub people: usize,
    pub guardian_links: usize,
    pub classes: usize,
    pub class_terms: usize,
    pub enrollments: usize,
    pub warnings: Vec<Problem>,
}

/// Parses and checks a roster held in memory, as an import into an empty database would, without
/// one: every reference must resolve within the files. Names other than the roster's files are
/// ignored. The import and this share every parsing and checking step, so the fuzz targets (and
/// anyone wanting a dry run) exercise the real reader.
pub fn check_files(files: &[(&str, &[u8])]) -> Result<RosterSummary, Problems> {
    let files: Files = files
        .iter()
        .filter_map(|(name, data)| {
            let known = FILES.iter().find(|f| *f == name)?;
            Some((*known, data.to_vec()))
        })
        .collect();
    check(&files)
}

/// [`check_files`] for a roster ZIP archive held in memory.
pub fn check_zip(archive: &[u8]) -> Result<RosterSummary, ImportError> {
    let files = roster_files::read_zip_from(
        std::io::Cursor::new(archive),
        Path::new("roster.zip"),
        &FILES,
    )?;
    check(&files).map_err(ImportError::Invalid)
}

fn check(files: &Files) -> Result<RosterSummary, Problems> {
    let mut out = Collector::default();
    let plan = plan(files, &Stored::default(), &mut out);
    if !out.problems.is_empty() {
        return Err(Problems(out.problems));
    }
    Ok(RosterSummary {
        orgs: plan.orgs.len(),
        academic_sessions: plan.sessions.len(),
        people: plan.people.len(),
        guardian_links: plan.guardian_links.len(),
        classes: plan.classes.len(),
        class_terms: plan.class_terms.len(),
        enrollments: plan.enrollments.len(),
        warnings: out.warnings,
    })
}

fn unknown(column: &str, id: &str, target: &'static str) -> Reason {
    Reason::UnknownReference {
        column: column.to_owned(),
        id: id.to_owned(),
        target,
    }
}

async fn load_stored(tx: &mut Tx) -> Result<Stored, DbError> {
    Ok(Stored {
        orgs: model::load_all(tx).await?,
        sessions: model::load_all(tx).await?,
        people: model::load_all(tx).await?,
        classes: model::load_all(tx).await?,
        enrollments: model::load_all(tx).await?,
        guardian_links: model::load_links(tx, GUARDIAN_LINKS).await?,
        class_terms: model::load_links(tx, CLASS_TERMS).await?,
    })
}

/// Writes `rows`: inserts new ids, updates changed rows, leaves equal ones alone.
async fn apply_entities<T: Entity>(
    tx: &mut Tx,
    rows: &[T],
    stored: &HashMap<String, T>,
) -> Result<Counts, DbError> {
    let mut counts = Counts::default();
    for row in rows {
        match stored.get(row.id()) {
            None => {
                model::insert(tx, row).await?;
                counts.created += 1;
            }
            Some(old) if old == row => counts.unchanged += 1,
            Some(_) => {
                model::update(tx, row).await?;
                counts.updated += 1;
            }
        }
    }
    Ok(counts)
}

/// Makes the link table match `desired` for the links this import owns: those whose left id
/// (or, where the table says so, right id) is in `scope`.
async fn apply_links(
    tx: &mut Tx,
    link: LinkTable,
    desired: &BTreeSet<(String, String)>,
    stored: &BTreeSet<(String, String)>,
    scope: &HashSet<String>,
) -> Result<Counts, DbError> {
    let mut counts = Counts::default();
    for (a, b) in stored.difference(desired) {
        if scope.contains(a) || (link.right_scoped && scope.contains(b)) {
            model::delete_link(tx, link, a, b).await?;
            counts.removed += 1;
        }
    }
    for pair in desired {
        if stored.contains(pair) {
            counts.unchanged += 1;
        } else {
            model::insert_link(tx, link, &pair.0, &pair.1).await?;
            counts.created += 1;
        }
    }
    Ok(counts)
}

async fn import_files(
    db: &Db,
    files: Files,
    within: Option<&Scope>,
) -> Result<ImportReport, ImportError> {
    let mut tx = db.begin_write().await?;
    let stored = load_stored(&mut tx).await?;
    let (plan, out, stored) = off_runtime(move || {
        let mut out = Collector::default();
        let plan = plan(&files, &stored, &mut out);
        (plan, out, stored)
    })
    .await?;
    if !out.problems.is_empty() {
        tx.rollback().await?;
        return Err(ImportError::Invalid(Problems(out.problems)));
    }
    if let Some(scope) = within {
        let mut outside = within::check(&plan, &stored, scope);
        if !outside.is_empty() {
            tx.rollback().await?;
            outside.truncate(MAX_PROBLEMS);
            return Err(ImportError::OutOfScope(Problems(outside)));
        }
    }

    // Parents before children, for the foreign keys. On error `tx` is dropped: rollback.
    let mut report = ImportReport {
        orgs: apply_entities(&mut tx, &plan.orgs, &stored.orgs).await?,
        academic_sessions: apply_entities(&mut tx, &plan.sessions, &stored.sessions).await?,
        people: apply_entities(&mut tx, &plan.people, &stored.people).await?,
        ..ImportReport::default()
    };
    report.guardian_links = apply_links(
        &mut tx,
        GUARDIAN_LINKS,
        &plan.guardian_links,
        &stored.guardian_links,
        &plan.guardian_scope,
    )
    .await?;
    report.classes = apply_entities(&mut tx, &plan.classes, &stored.classes).await?;
    report.class_terms = apply_links(
        &mut tx,
        CLASS_TERMS,
        &plan.class_terms,
        &stored.class_terms,
        &plan.class_scope,
    )
    .await?;
    report.enrollments = apply_entities(&mut tx, &plan.enrollments, &stored.enrollments).await?;
    tx.commit().await?;
    report.warnings = out.warnings;
    tracing::info!(
        people_created = report.people.created,
        people_updated = report.people.updated,
        enrollments_created = report.enrollments.created,
        "OneRoster import applied"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Row {
        #[allow(dead_code)] // only its presence is checked
        sourced_id: String,
    }

    fn lines_of(data: &[u8]) -> (Vec<u64>, Vec<Problem>) {
        let mut out = Collector::default();
        let parsed = parse_csv::<Row>("x.csv", data, &["sourcedId"], Some("sourcedId"), &mut out);
        (parsed.rows.iter().map(|(l, _)| *l).collect(), out.problems)
    }

    #[test]
    fn line_numbers_with_lf_crlf_bom_and_quoted_newlines() {
        assert_eq!(lines_of(b"sourcedId\na\nb\n").0, [2, 3]);
        assert_eq!(lines_of(b"sourcedId\r\na\r\nb\r\n").0, [2, 3]);
        assert_eq!(lines_of(b"\xef\xbb\xbfsourcedId\r\na\r\nb").0, [2, 3]);
        // A quoted field spanning two lines: the next record starts two lines on.
        assert_eq!(lines_of(b"sourcedId,x\n\"a\",\"1\n2\"\nb,3\n").0, [2, 4]);
    }

    #[test]
    fn duplicate_and_empty_ids_are_reported() {
        let (rows, problems) = lines_of(b"sourcedId\na\n\na\n \n");
        assert_eq!(rows, [2]);
        assert_eq!(
            problems,
            [
                Problem {
                    file: "x.csv".into(),
                    line: 4,
                    reason: Reason::DuplicateId {
                        id: "a".into(),
                        first_line: 2
                    },
                },
                Problem {
                    file: "x.csv".into(),
                    line: 5,
                    reason: Reason::MissingValue("sourcedId".into()),
                },
            ]
        );
    }

    #[test]
    fn lists_dates_and_roles() {
        assert_eq!(split_list(" s-1, s-2;s-3 ,,"), ["s-1", "s-2", "s-3"]);
        assert!(is_date("2026-04-01"));
        assert!(!is_date("2026-4-1"));
        assert!(!is_date("2026-13-01"));
        assert_eq!(person_role("parent"), Some(PersonRole::Guardian));
        assert_eq!(person_role("Teacher"), None); // header and values are case-sensitive
    }
}
