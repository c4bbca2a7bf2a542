//! Lessons, rosters and attendance for classroom: storage (SQLite or PostgreSQL) and the
//! OneRoster CSV import that fills it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use classroom_domain::{Db, import_dir};
//! let db = Db::connect("classroom.db").await?; // or "postgres://..."
//! let report = import_dir(&db, std::path::Path::new("roster/")).await?;
//! println!("{} people created", report.people.created);
//! # Ok(()) }
//! ```

pub mod db;
pub mod model;
pub mod oneroster;

pub use db::{Backend, Db, DbError, Table, Tx};
pub use model::{AcademicSession, Class, Enrollment, Org, Person, PersonRole};
pub use oneroster::{
    Counts, ImportError, ImportReport, Problem, Problems, Reason, import_dir, import_zip,
};
