//! The stored roster records, one struct per table, and the shared SQL that reads and writes
//! them on either backend.

use std::collections::{BTreeSet, HashMap};

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Database, Encode, FromRow, Type};

use crate::db::{DbError, Tx, dispatch};

/// What a person is in the school's eyes. `PartnerLecturer` (a university lecturer teaching
/// into a classroom) has no OneRoster counterpart and is never produced by the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonRole {
    Teacher,
    Student,
    Guardian,
    Administrator,
    PartnerLecturer,
}

impl PersonRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PersonRole::Teacher => "teacher",
            PersonRole::Student => "student",
            PersonRole::Guardian => "guardian",
            PersonRole::Administrator => "administrator",
            PersonRole::PartnerLecturer => "partner_lecturer",
        }
    }

    /// Parses the stored form (see [`PersonRole::as_str`]).
    pub fn parse(s: &str) -> Option<PersonRole> {
        [
            PersonRole::Teacher,
            PersonRole::Student,
            PersonRole::Guardian,
            PersonRole::Administrator,
            PersonRole::PartnerLecturer,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub org_type: String,
    pub identifier: Option<String>,
    pub parent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AcademicSession {
    pub id: String,
    pub title: String,
    pub session_type: String,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// `YYYY-MM-DD`, inclusive.
    pub end_date: String,
    pub school_year: String,
    pub parent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Person {
    pub id: String,
    /// The stored form of a [`PersonRole`]; see [`Person::role`].
    pub role: String,
    pub username: String,
    pub given_name: String,
    pub family_name: String,
    pub given_name_kana: Option<String>,
    pub family_name_kana: Option<String>,
    pub email: Option<String>,
    pub enabled: bool,
    pub primary_org_id: Option<String>,
}

impl Person {
    /// `None` only if the row was written by something that bypassed the schema's CHECK.
    pub fn role(&self) -> Option<PersonRole> {
        PersonRole::parse(&self.role)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Class {
    pub id: String,
    pub title: String,
    /// `homeroom` or `subject` (OneRoster's `scheduled`).
    pub class_kind: String,
    pub class_code: Option<String>,
    pub school_id: String,
    pub course_id: String,
    pub grades: Option<String>,
    pub subjects: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Enrollment {
    pub id: String,
    pub class_id: String,
    pub person_id: String,
    /// `teacher`, `student`, `administrator`, `proctor` or `partner_lecturer`.
    pub role: String,
    pub is_primary: bool,
    pub begin_date: Option<String>,
    pub end_date: Option<String>,
}

/// One bound value; lets a single generic function bind a record's columns on either backend.
pub(crate) enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Bool(bool),
}

/// A table keyed by a TEXT `id` whose rows the import creates and updates.
pub(crate) trait Entity:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + PartialEq + Send + Unpin
{
    const TABLE: &'static str;
    /// Column names in [`Entity::values`] order; the first is the `id`.
    const COLUMNS: &'static [&'static str];
    fn id(&self) -> &str;
    fn values(&self) -> Vec<Value<'_>>;
}

impl Entity for Org {
    const TABLE: &'static str = "orgs";
    const COLUMNS: &'static [&'static str] = &["id", "name", "org_type", "identifier", "parent_id"];
    fn id(&self) -> &str {
        &self.id
    }
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.id),
            Value::Text(&self.name),
            Value::Text(&self.org_type),
            Value::OptText(self.identifier.as_deref()),
            Value::OptText(self.parent_id.as_deref()),
        ]
    }
}

impl Entity for AcademicSession {
    const TABLE: &'static str = "academic_sessions";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "title",
        "session_type",
        "start_date",
        "end_date",
        "school_year",
        "parent_id",
    ];
    fn id(&self) -> &str {
        &self.id
    }
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.id),
            Value::Text(&self.title),
            Value::Text(&self.session_type),
            Value::Text(&self.start_date),
            Value::Text(&self.end_date),
            Value::Text(&self.school_year),
            Value::OptText(self.parent_id.as_deref()),
        ]
    }
}

impl Entity for Person {
    const TABLE: &'static str = "people";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "role",
        "username",
        "given_name",
        "family_name",
        "given_name_kana",
        "family_name_kana",
        "email",
        "enabled",
        "primary_org_id",
    ];
    fn id(&self) -> &str {
        &self.id
    }
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.id),
            Value::Text(&self.role),
            Value::Text(&self.username),
            Value::Text(&self.given_name),
            Value::Text(&self.family_name),
            Value::OptText(self.given_name_kana.as_deref()),
            Value::OptText(self.family_name_kana.as_deref()),
            Value::OptText(self.email.as_deref()),
            Value::Bool(self.enabled),
            Value::OptText(self.primary_org_id.as_deref()),
        ]
    }
}

impl Entity for Class {
    const TABLE: &'static str = "classes";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "title",
        "class_kind",
        "class_code",
        "school_id",
        "course_id",
        "grades",
        "subjects",
    ];
    fn id(&self) -> &str {
        &self.id
    }
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.id),
            Value::Text(&self.title),
            Value::Text(&self.class_kind),
            Value::OptText(self.class_code.as_deref()),
            Value::Text(&self.school_id),
            Value::Text(&self.course_id),
            Value::OptText(self.grades.as_deref()),
            Value::OptText(self.subjects.as_deref()),
        ]
    }
}

impl Entity for Enrollment {
    const TABLE: &'static str = "enrollments";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "class_id",
        "person_id",
        "role",
        "is_primary",
        "begin_date",
        "end_date",
    ];
    fn id(&self) -> &str {
        &self.id
    }
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.id),
            Value::Text(&self.class_id),
            Value::Text(&self.person_id),
            Value::Text(&self.role),
            Value::Bool(self.is_primary),
            Value::OptText(self.begin_date.as_deref()),
            Value::OptText(self.end_date.as_deref()),
        ]
    }
}

/// A two-column link table (both columns TEXT, together the primary key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkTable {
    pub table: &'static str,
    pub left: &'static str,
    pub right: &'static str,
    /// Whether an import that mentions the right-hand id (not only the left) owns the link.
    pub right_scoped: bool,
}

pub(crate) const GUARDIAN_LINKS: LinkTable = LinkTable {
    table: "guardian_links",
    left: "guardian_id",
    right: "pupil_id",
    right_scoped: true,
};

pub(crate) const CLASS_TERMS: LinkTable = LinkTable {
    table: "class_terms",
    left: "class_id",
    right: "session_id",
    right_scoped: false,
};

fn bind_all<'q, DB: Database>(
    mut query: sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>,
    values: Vec<Value<'q>>,
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    for value in values {
        query = match value {
            Value::Text(s) => query.bind(s),
            Value::OptText(s) => query.bind(s),
            Value::Bool(b) => query.bind(b),
        };
    }
    query
}

/// Every row of `T`'s table, by id.
pub(crate) async fn load_all<T: Entity>(tx: &mut Tx) -> Result<HashMap<String, T>, DbError> {
    let sql = format!("SELECT {} FROM {}", T::COLUMNS.join(", "), T::TABLE);
    let rows: Vec<T> = dispatch!(tx, conn => sqlx::query_as::<_, T>(&sql).fetch_all(conn).await?);
    Ok(rows
        .into_iter()
        .map(|row| (row.id().to_owned(), row))
        .collect())
}

pub(crate) async fn insert<T: Entity>(tx: &mut Tx, row: &T) -> Result<(), DbError> {
    let placeholders: Vec<String> = (1..=T::COLUMNS.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        T::TABLE,
        T::COLUMNS.join(", "),
        placeholders.join(", ")
    );
    dispatch!(tx, conn => bind_all(sqlx::query(&sql), row.values()).execute(conn).await?.rows_affected());
    Ok(())
}

pub(crate) async fn update<T: Entity>(tx: &mut Tx, row: &T) -> Result<(), DbError> {
    // $1 is the id (first in COLUMNS), so the SET list starts at $2.
    let sets: Vec<String> = T::COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, col)| format!("{col} = ${}", i + 1))
        .collect();
    let sql = format!("UPDATE {} SET {} WHERE id = $1", T::TABLE, sets.join(", "));
    dispatch!(tx, conn => bind_all(sqlx::query(&sql), row.values()).execute(conn).await?.rows_affected());
    Ok(())
}

pub(crate) async fn load_links(
    tx: &mut Tx,
    link: LinkTable,
) -> Result<BTreeSet<(String, String)>, DbError> {
    let sql = format!("SELECT {}, {} FROM {}", link.left, link.right, link.table);
    let rows: Vec<(String, String)> =
        dispatch!(tx, conn => sqlx::query_as(&sql).fetch_all(conn).await?);
    Ok(rows.into_iter().collect())
}

pub(crate) async fn insert_link(
    tx: &mut Tx,
    link: LinkTable,
    left: &str,
    right: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO {} ({}, {}) VALUES ($1, $2)",
        link.table, link.left, link.right
    );
    dispatch!(tx, conn => sqlx::query(&sql).bind(left).bind(right).execute(conn).await?.rows_affected());
    Ok(())
}

pub(crate) async fn delete_link(
    tx: &mut Tx,
    link: LinkTable,
    left: &str,
    right: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1 AND {} = $2",
        link.table, link.left, link.right
    );
    dispatch!(tx, conn => sqlx::query(&sql).bind(left).bind(right).execute(conn).await?.rows_affected());
    Ok(())
}
