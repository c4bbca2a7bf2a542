//! School scope: which schools a person may act for, and whether a lesson, class, pupil or
//! person lies within them. One server serves a whole board of education, so every staff and
//! administrator action is checked here before anything else is read or changed.
//!
//! The schools of a person ([`scope_of`]):
//! - an administrator: their primary org, if it is a school (`org_type = 'school'`). Nothing is
//!   implied: an administrator whose primary org is a board of education (a OneRoster
//!   `districtAdministrator`) or who has none acts for no school and sees nothing;
//! - a teacher: their primary org (if a school) and the schools of the classes they teach;
//! - a partner lecturer: the schools of the lessons they were assigned to;
//! - guardians and pupils: none (their routes check their own relations instead).

use std::collections::BTreeSet;

use crate::access::{teaches_class, teaches_lesson};
use crate::db::{Db, DbError, on_pool};
use crate::lesson::{LESSON_COLUMNS, Lesson, LessonRow};
use crate::model::{Person, PersonRole};

/// A person and the schools they may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub person: String,
    /// `None` only for a stored role this code does not know: it then may do nothing.
    pub role: Option<PersonRole>,
    schools: BTreeSet<String>,
}

impl Scope {
    /// A scope with exactly these schools (for tests and callers that know them already).
    pub fn new(person: &str, role: Option<PersonRole>, schools: BTreeSet<String>) -> Scope {
        Scope {
            person: person.to_owned(),
            role,
            schools,
        }
    }

    pub fn covers(&self, school: &str) -> bool {
        self.schools.contains(school)
    }

    /// Whether the person's school (their primary org) is one of this scope's.
    pub fn covers_person(&self, person: &Person) -> bool {
        person
            .primary_org_id
            .as_deref()
            .is_some_and(|org| self.covers(org))
    }

    pub fn schools(&self) -> impl Iterator<Item = &str> {
        self.schools.iter().map(String::as_str)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(PersonRole::Administrator)
    }
}

/// The schools `person` may act for (see the module documentation). Disabled accounts act for
/// none.
pub async fn scope_of(db: &Db, person: &Person) -> Result<Scope, DbError> {
    let role = person.role();
    let mut schools = BTreeSet::new();
    if person.enabled {
        let primary_school = match &person.primary_org_id {
            Some(org) if is_school(db, org).await? => Some(org.clone()),
            _ => None,
        };
        match role {
            Some(PersonRole::Administrator) => schools.extend(primary_school),
            Some(PersonRole::Teacher) => {
                schools.extend(primary_school);
                let sql = "SELECT DISTINCT c.school_id FROM enrollments e \
                           JOIN classes c ON c.id = e.class_id \
                           WHERE e.person_id = $1 AND e.role = 'teacher'";
                let taught: Vec<String> = on_pool!(db, p => sqlx::query_scalar(sql)
                    .bind(&person.id).fetch_all(p).await?);
                schools.extend(taught);
            }
            Some(PersonRole::PartnerLecturer) => {
                let sql = "SELECT DISTINCT c.school_id FROM lesson_teachers t \
                           JOIN lessons l ON l.id = t.lesson_id \
                           JOIN classes c ON c.id = l.class_id WHERE t.teacher_id = $1";
                let assigned: Vec<String> = on_pool!(db, p => sqlx::query_scalar(sql)
                    .bind(&person.id).fetch_all(p).await?);
                schools.extend(assigned);
            }
            Some(PersonRole::Guardian | PersonRole::Student) | None => {}
        }
    }
    Ok(Scope {
        person: person.id.clone(),
        role,
        schools,
    })
}

async fn is_school(db: &Db, org: &str) -> Result<bool, DbError> {
    let sql = "SELECT COUNT(*) FROM orgs WHERE id = $1 AND org_type = 'school'";
    let n: i64 = on_pool!(db, p => sqlx::query_scalar(sql).bind(org).fetch_one(p).await?);
    Ok(n > 0)
}

/// The school a class belongs to, if the class exists.
pub async fn class_school(db: &Db, class: &str) -> Result<Option<String>, DbError> {
    let sql = "SELECT school_id FROM classes WHERE id = $1";
    Ok(on_pool!(db, p => sqlx::query_scalar(sql).bind(class).fetch_optional(p).await?))
}

/// Whether the scope's person may run `lesson` (its lobby, admissions, marks, exports): an
/// administrator of the lesson's school, or one of the lesson's teachers who acts for that
/// school.
pub async fn may_act_on_lesson(db: &Db, scope: &Scope, lesson: &Lesson) -> Result<bool, DbError> {
    let Some(school) = class_school(db, &lesson.class_id).await? else {
        return Ok(false);
    };
    if !scope.covers(&school) {
        return Ok(false);
    }
    Ok(match scope.role {
        Some(PersonRole::Administrator) => true,
        Some(PersonRole::Teacher | PersonRole::PartnerLecturer) => {
            teaches_lesson(db, &scope.person, &lesson.id).await?
        }
        _ => false,
    })
}

/// Whether the scope's person may read a class's records: an administrator of its school, or a
/// teacher of the class. An unknown class is nobody's.
pub async fn may_act_on_class(db: &Db, scope: &Scope, class: &str) -> Result<bool, DbError> {
    let Some(school) = class_school(db, class).await? else {
        return Ok(false);
    };
    if !scope.covers(&school) {
        return Ok(false);
    }
    Ok(match scope.role {
        Some(PersonRole::Administrator) => true,
        Some(PersonRole::Teacher) => teaches_class(db, &scope.person, class).await?,
        _ => false,
    })
}

/// Lessons of the scope's schools starting in `[from, to)`, in start order: what an
/// administrator's lesson lists show. Empty for a scope without schools.
pub async fn lessons_in_scope(
    db: &Db,
    scope: &Scope,
    from: i64,
    to: i64,
) -> Result<Vec<Lesson>, DbError> {
    if scope.schools.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l JOIN classes c ON c.id = l.class_id \
         WHERE l.starts_at >= $1 AND l.starts_at < $2 AND c.school_id IN ({}) \
         ORDER BY l.starts_at, l.id",
        placeholders(3, scope.schools.len())
    );
    let rows: Vec<LessonRow> = on_pool!(db, p => {
        let mut q = sqlx::query_as(&sql).bind(from).bind(to);
        for school in &scope.schools {
            q = q.bind(school);
        }
        q.fetch_all(p).await?
    });
    rows.into_iter().map(LessonRow::into_lesson).collect()
}

/// `$first, $first+1, ...`: `count` numbered placeholders (a scope's schools are few).
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the scope's person may schedule a lesson of `class` taught by `teachers` (`None`:
/// the class's own teachers): an administrator of the class's school, naming only teachers and
/// administrators who act for that school, or partner lecturers (who belong to no school and
/// are let in to this lesson by the administrator's choice).
pub async fn may_schedule(
    db: &Db,
    scope: &Scope,
    class: &str,
    teachers: Option<&[String]>,
) -> Result<bool, DbError> {
    if !scope.is_admin() {
        return Ok(false);
    }
    let Some(school) = class_school(db, class).await? else {
        return Ok(false);
    };
    if !scope.covers(&school) {
        return Ok(false);
    }
    for id in teachers.unwrap_or_default() {
        let Some(teacher) = crate::access::person(db, id).await? else {
            // Unknown people are the lesson's own error to report.
            continue;
        };
        if teacher.role() == Some(PersonRole::PartnerLecturer) {
            continue;
        }
        if !scope_of(db, &teacher).await?.covers(&school) {
            return Ok(false);
        }
    }
    Ok(true)
}
