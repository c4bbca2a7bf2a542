//! Lessons, rosters and attendance for classroom: storage (SQLite or PostgreSQL), the
//! OneRoster CSV import that fills it, and the domain rules on top: lessons, guardians' choice
//! of attendance mode with its cut-off, who may do what, the join decision and lobby,
//! attendance records and exports, the audit log, sign-in links and web sessions, and lesson chat
//! a school chose to keep.
//!
//! Instants are `i64` Unix seconds (UTC) and are always passed in by the caller, never read
//! from a clock here, so every rule can be tested and replayed exactly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use classroom_domain::{Db, import_dir};
//! let db = Db::connect("classroom.db").await?; // or "postgres://..."
//! let report = import_dir(&db, std::path::Path::new("roster/")).await?;
//! println!("{} people created", report.people.created);
//! # Ok(()) }
//! ```

pub mod access;
pub mod admission;
pub mod attendance;
pub mod attendance_mode;
pub mod audit;
mod calendar;
pub mod chat_retention;
pub mod cutoff;
pub mod db;
pub mod export;
pub mod external_identity;
pub mod guest_link;
pub mod join;
pub mod lesson;
pub mod lesson_link;
pub mod model;
pub mod oneroster;
pub mod provision;
pub mod roster_files;
pub mod scope;
pub mod signin;

pub use access::{
    Capacity, Denied, enrolled_in_lesson, is_guardian_of, may_set_mode, person, pupils_of_guardian,
    teaches_class, teaches_lesson,
};
pub use admission::{
    Admission, LobbyEntry, RefusalReason, TeacherActionError, admission, admit, lobby, refuse,
    request_entry,
};
pub use attendance::{
    ALIVE_EVERY_SECS, Gap, MAX_GAPS_PER_VISIT, Mark, MarkStatus, OnlineSummary, Presence,
    ReportRow, attendance_report, close_presence_left_open, mark, record_alive, record_away,
    record_back, record_join, record_leave, summarise,
};
pub use attendance_mode::{
    DayMode, MAX_RANGE_DAYS, MAX_REASON_CHARS, Mode, ModeChange, ModeRequest, SetModeError,
    history, may_change, mode_on, mode_on_as_of, modes_between, set_mode,
};
pub use audit::{
    Acting, Action, AuditEntry, AuditFilter, AuditRecord, audit, audit_log, audit_log_within,
    purge_audit_before,
};
pub use chat_retention::{
    ChatRetention, ChatRetentionError, KeptLesson, KeptMessage, NewKeptMessage, chat_retention,
    delete_kept_message, keep_message, keeping_room, kept_chat, purge_kept_chat,
    set_chat_retention,
};
pub use cutoff::{CutoffDecision, CutoffPolicy, PolicyError};
pub use db::{Backend, Db, DbError, Table, Tx};
pub use export::{
    ExportError, LessonReport, report_for_lesson, reports_for_class, reports_for_teacher, to_csv,
    to_json,
};
pub use external_identity::{
    ExternalAccount, ExternalSignIn, ExternalSignInError, bound_person, sign_in_external,
    unbind_person,
};
pub use guest_link::{
    DoorRefusal, GuestKind, GuestLink, GuestLinkError, NewGuestLink, create_guest_link, guest_link,
    guest_links_of_lesson, revoke_guest_link,
};
pub use join::{JoinRefusal, JoinRole, join_decision};
pub use lesson::{
    Lesson, LessonError, NewLesson, create_lesson, lesson, lesson_by_media_room, lesson_teachers,
    lessons_between, lessons_of_class, lessons_of_teacher,
};
pub use model::{AcademicSession, Class, Enrollment, Org, Person, PersonRole};
pub use oneroster::{
    Counts, ImportError, ImportReport, Problem, Problems, Reason, RosterSummary, check_files,
    check_zip, import_dir, import_zip, import_zip_within,
};
pub use roster_files::{MAX_ARCHIVE_ENTRIES, MAX_UNPACKED_BYTES, TooBig};
pub use scope::{
    Scope, class_school, lessons_in_scope, may_act_on_class, may_act_on_lesson, may_schedule,
    scope_of,
};
pub use signin::{
    Issuer, LinkRequest, MintError, MintRefusal, Purged, SignInLinkError, consume_signin_link,
    create_session, create_signin_link, delete_session, may_mint_for, mint_signin_link,
    people_by_email, purge_expired, session_person,
};
