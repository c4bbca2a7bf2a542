//! Storage: one SQLite file by default, PostgreSQL when the URL asks for it.
//!
//! Why an explicit two-variant enum and not `sqlx::Any`: the two backends need different
//! connection setup that `Any` cannot express (SQLite: create the file, WAL journal, foreign keys
//! on, a busy timeout; PostgreSQL: an ordinary pool), `Any` checks types only at run time and
//! supports a narrower set of them, and an enum keeps the backend visible in logs and errors.
//! Queries stay shared: every statement is one SQL string using `$N` placeholders, which both
//! SQLite and PostgreSQL accept, and the [`dispatch!`] macro runs the same Rust expression
//! against whichever connection the enum holds (each arm is compiled for its own driver).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

/// Errors from opening, migrating or querying the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to the {backend} database: {source}")]
    Connect {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot make the database file {path} private")]
    FileMode {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value this code cannot read back (e.g. a malformed date): only possible if
    /// something bypassed this crate when writing.
    #[error("unreadable value {value:?} in {table}.{column}")]
    BadStoredValue {
        table: &'static str,
        column: &'static str,
        value: String,
    },
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// A connection pool to either backend. Cheap to clone (pools are reference-counted).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction on either backend. Dropping it without [`Tx::commit`] rolls back.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, whichever backend it is.
/// The body is expanded once per backend, so it must produce the same type in both.
macro_rules! dispatch {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use dispatch;

/// Runs `$body` with `$pool` bound to the pool, whichever backend it is: for single statements
/// that need no transaction.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The migrations in `domain/migrations/`, written to run unchanged on both backends.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The tables, for [`Db::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Orgs,
    AcademicSessions,
    People,
    GuardianLinks,
    Classes,
    ClassTerms,
    Enrollments,
    Lessons,
    LessonTeachers,
    ModeChanges,
    LobbyEvents,
    PresenceEvents,
    PresenceGaps,
    AttendanceMarks,
    AuditLog,
    SigninLinks,
    WebSessions,
    ExternalIdentities,
    ChatRetention,
    KeptChat,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Orgs => "orgs",
            Table::AcademicSessions => "academic_sessions",
            Table::People => "people",
            Table::GuardianLinks => "guardian_links",
            Table::Classes => "classes",
            Table::ClassTerms => "class_terms",
            Table::Enrollments => "enrollments",
            Table::Lessons => "lessons",
            Table::LessonTeachers => "lesson_teachers",
            Table::ModeChanges => "mode_changes",
            Table::LobbyEvents => "lobby_events",
            Table::PresenceEvents => "presence_events",
            Table::PresenceGaps => "presence_gaps",
            Table::AttendanceMarks => "attendance_marks",
            Table::AuditLog => "audit_log",
            Table::SigninLinks => "signin_links",
            Table::WebSessions => "web_sessions",
            Table::ExternalIdentities => "external_identities",
            Table::ChatRetention => "chat_retention",
            Table::KeptChat => "kept_chat",
        }
    }
}

impl Db {
    /// Opens the database named by `url` and brings its schema up to date.
    ///
    /// `postgres://` or `postgresql://` selects PostgreSQL. Anything else is SQLite: either a
    /// `sqlite:` URL or a plain file path. The SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|source| DbError::Connect {
                    backend: Backend::Postgres,
                    source,
                })?;
            Db::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options =
                SqliteConnectOptions::from_str(url).map_err(|source| DbError::BadUrl {
                    url: url.to_owned(),
                    source,
                })?;
            Self::open_sqlite_with(options).await?
        } else {
            Self::open_sqlite_with(SqliteConnectOptions::new().filename(url)).await?
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Opens (creating if missing) the SQLite file at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Db, DbError> {
        let db = Self::open_sqlite_with(SqliteConnectOptions::new().filename(path)).await?;
        db.migrate().await?;
        Ok(db)
    }

    async fn open_sqlite_with(options: SqliteConnectOptions) -> Result<Db, DbError> {
        let path = options.get_filename();
        // `file:...` names are sqlx's in-memory databases: nothing on disk to protect. (A string
        // test: `Path::starts_with` compares whole components, so it never matched them.)
        let in_memory = path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
        if !in_memory {
            private_sqlite_files(path).map_err(|source| DbError::FileMode {
                path: path.to_owned(),
                source,
            })?;
        }
        let options = options
            .create_if_missing(true)
            // WAL lets the media server read rosters while an import writes.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable enough under WAL (a power cut may lose the last commit, never
            // corrupt the file) and much faster than FULL. A commit that has returned is in
            // the WAL file, i.e. handed to the kernel, so it survives the process being killed
            // (SIGKILL, OOM, a crash): an attendance-mode change acknowledged to a guardian is
            // not lost that way. Every write in this crate is its own short transaction,
            // committed before the function returns; none is held open across calls.
            .synchronous(SqliteSynchronous::Normal)
            // SQLite leaves foreign keys off unless asked, per connection.
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect {
                backend: Backend::Sqlite,
                source,
            })?;
        Ok(Db::Sqlite(pool))
    }

    /// Applies any migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(pool) => MIGRATOR.run(pool).await?,
            Db::Postgres(pool) => MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Starts a transaction that will write after reading. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`): a deferred transaction that reads, then writes, fails with
    /// SQLITE_BUSY if another writer committed in between, whereas this one waits (up to the
    /// busy timeout) before it reads anything.
    pub async fn begin_write(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Number of rows in `table`.
    pub async fn count(&self, table: Table) -> Result<i64, DbError> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name());
        let n: i64 = match self {
            Db::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
            Db::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
        };
        Ok(n)
    }

    /// Closes every connection; pending work on other clones fails afterwards.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Makes the SQLite file at `path` and its `-wal` and `-shm` companions readable and writable
/// by the server's user only. SQLite creates the file with 0644 less the umask, and gives the
/// companions the main file's mode: creating the (empty, which SQLite takes for a new database)
/// file here with 0600 therefore makes all three private, whichever command opens it first and
/// whatever its umask. Files an earlier version left open to others are narrowed to the owner's bits.
fn private_sqlite_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut companions = vec![path.to_owned()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            companions.push(name.into());
        }
        for file in companions {
            let mode = match std::fs::metadata(&file) {
                Ok(meta) => meta.permissions().mode() & 0o777,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if mode & 0o077 != 0 {
                let private = mode & 0o700;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(private))?;
                tracing::warn!(
                    path = %file.display(),
                    from = format!("{mode:o}"),
                    to = format!("{private:o}"),
                    "the database file was readable by other users; narrowed"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Tx {
    /// Takes the write lock that appending to `table` needs, so that its `MAX(seq) + 1` cannot
    /// be computed twice. SQLite already holds the database's write lock (a [`Db::begin_write`]
    /// transaction); PostgreSQL locks the table in a mode that conflicts with itself but not with
    /// readers, until the transaction ends. Callers lock tables in the order of [`Table`]'s
    /// declaration, so two transactions never wait for each other in a cycle.
    pub(crate) async fn lock_for_append(&mut self, table: Table) -> Result<(), DbError> {
        if let Tx::Postgres(t) = self {
            let sql = format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", table.name());
            sqlx::query(&sql).execute(&mut **t).await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}
