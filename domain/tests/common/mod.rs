//! Shared by the integration tests: a fresh database per backend (SQLite always, PostgreSQL
//! when CLASSROOM_TEST_POSTGRES_URL is set) and the sample roster.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use classroom_domain::Db;
use sqlx::Connection;

const POSTGRES_ENV: &str = "CLASSROOM_TEST_POSTGRES_URL";

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oneroster-sample")
}

/// A fresh, empty database on one backend; dropping it removes the SQLite file or the
/// PostgreSQL database.
pub struct TestDb {
    pub name: &'static str,
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg_cleanup: Option<(String, String)>,
}

impl TestDb {
    pub async fn finish(self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.pg_cleanup {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            // FORCE (PostgreSQL 13+): a closed pool's server processes may still be exiting, and
            // a plain DROP fails while they are ("being accessed by other users").
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn backends(test: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classroom.db");
    let sqlite = Db::open_sqlite(&path).await.unwrap();
    let mut all = vec![TestDb {
        name: "sqlite",
        db: sqlite,
        _dir: Some(dir),
        pg_cleanup: None,
    }];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            let name = format!(
                "classroom_test_{}_{}_{}",
                test,
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
            let db = Db::connect(&with_database(&url, &name)).await.unwrap();
            all.push(TestDb {
                name: "postgres",
                db,
                _dir: None,
                pg_cleanup: Some((url, name)),
            });
        }
        _ => eprintln!("note: {POSTGRES_ENV} not set, PostgreSQL variant of {test} skipped"),
    }
    all
}

/// Runs one statement without parameters on either backend (test set-up that the API does not
/// offer, e.g. adding an administrator the sample roster lacks).
pub async fn exec(db: &Db, sql: &str) {
    match db {
        Db::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        Db::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}
