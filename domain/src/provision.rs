//! Creating and dropping whole PostgreSQL databases on a server, for provisioning a school's
//! database and for tests that need a fresh database each (the server's own HTTP tests, which
//! do not link sqlx themselves). SQLite needs nothing of the kind: a new file is a new database.

use sqlx::Connection;

use crate::db::{Backend, DbError};

/// Why a database could not be created or dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Database names are spliced into SQL (DDL takes no parameters), so only plain lower-case
    /// identifiers are accepted.
    #[error("invalid database name {0:?} (use a-z, 0-9 and _, starting with a letter)")]
    BadName(String),
    #[error("not a PostgreSQL URL")]
    NotPostgres,
    #[error(transparent)]
    Db(#[from] DbError),
}

fn check_name(name: &str) -> Result<(), ProvisionError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::BadName(name.to_owned()))
    }
}

async fn execute(server_url: &str, sql: &str) -> Result<(), ProvisionError> {
    if !(server_url.starts_with("postgres://") || server_url.starts_with("postgresql://")) {
        return Err(ProvisionError::NotPostgres);
    }
    let mut conn = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|source| DbError::Connect {
            backend: Backend::Postgres,
            source,
        })?;
    let result = sqlx::query(sql).execute(&mut conn).await;
    let _ = conn.close().await;
    result.map_err(DbError::from)?;
    Ok(())
}

/// Creates the empty database `name` on the server `server_url` (a URL of any database there
/// the user may connect to, e.g. `postgres://user@host/postgres`).
pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<(), ProvisionError> {
    check_name(name)?;
    execute(server_url, &format!("CREATE DATABASE {name}")).await
}

/// Drops the database `name`, if it exists, ending its sessions first: a pool just closed may
/// still have server processes exiting, and a plain DROP fails while they do (PostgreSQL 13+).
pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<(), ProvisionError> {
    check_name(name)?;
    execute(
        server_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await
}

/// `url` with its database replaced by `name`, keeping credentials, host and query string.
pub fn postgres_url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_identifiers() {
        assert!(check_name("classroom_test_1").is_ok());
        for bad in ["", "1abc", "Abc", "a-b", "a;DROP DATABASE x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            postgres_url_with_database("postgres://u:p@h:5432/postgres", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            postgres_url_with_database("postgres://h?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
    }
}
