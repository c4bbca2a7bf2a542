//! A roster uploaded by a school's administrator may change only that school: its own org row,
//! its people, its classes and their enrolments, links between its people. Unchanged rows of
//! anything else may be present (a school's export names its board of education). Checked on
//! the validated plan, before anything is written; the command line imports without this check.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Plan, Problem, Reason, Stored};
use crate::model::Person;
use crate::scope::Scope;

fn outside(file: &str, what: String) -> Problem {
    Problem {
        file: file.to_owned(),
        line: 0,
        reason: Reason::OutOfScope(what),
    }
}

/// The problems that keep `plan` from being applied on behalf of `scope`; empty if it may be.
pub(super) fn check(plan: &Plan, stored: &Stored, scope: &Scope) -> Vec<Problem> {
    let mut problems = Vec::new();

    for org in &plan.orgs {
        if stored.orgs.get(&org.id) != Some(org) && !scope.covers(&org.id) {
            problems.push(outside("orgs.csv", format!("org {:?}", org.id)));
        }
    }
    // Terms are shared by every school's classes: new ones are fine, changing one is not.
    for session in &plan.sessions {
        if matches!(stored.sessions.get(&session.id), Some(old) if old != session) {
            problems.push(outside(
                "academicSessions.csv",
                format!("academic session {:?} (shared by all schools)", session.id),
            ));
        }
    }

    let planned_people: HashMap<&str, &Person> =
        plan.people.iter().map(|p| (p.id.as_str(), p)).collect();
    let covers_org = |org: Option<&str>| org.is_some_and(|o| scope.covers(o));
    // A person is the school's if their primary org is, as stored and as planned.
    let person_ours = |id: &str| {
        let stored_ok = stored
            .people
            .get(id)
            .is_none_or(|p| covers_org(p.primary_org_id.as_deref()));
        let planned_ok = match planned_people.get(id) {
            Some(p) => covers_org(p.primary_org_id.as_deref()),
            None => stored.people.contains_key(id),
        };
        stored_ok && planned_ok
    };
    for person in &plan.people {
        if stored.people.get(&person.id) != Some(person) && !person_ours(&person.id) {
            problems.push(outside("users.csv", format!("person {:?}", person.id)));
        }
    }

    let planned_classes: HashMap<&str, &str> = plan
        .classes
        .iter()
        .map(|c| (c.id.as_str(), c.school_id.as_str()))
        .collect();
    let class_ours = |id: &str| {
        let stored_ok = stored
            .classes
            .get(id)
            .is_none_or(|c| scope.covers(&c.school_id));
        let planned_ok = match planned_classes.get(id) {
            Some(school) => scope.covers(school),
            None => stored.classes.contains_key(id),
        };
        stored_ok && planned_ok
    };
    for class in &plan.classes {
        if stored.classes.get(&class.id) != Some(class) && !class_ours(&class.id) {
            problems.push(outside("classes.csv", format!("class {:?}", class.id)));
        }
    }
    for e in &plan.enrollments {
        let old = stored.enrollments.get(&e.id);
        if old == Some(e) {
            continue;
        }
        let mut ok = class_ours(&e.class_id) && person_ours(&e.person_id);
        if let Some(old) = old {
            ok = ok && class_ours(&old.class_id) && person_ours(&old.person_id);
        }
        if !ok {
            problems.push(outside("enrollments.csv", format!("enrollment {:?}", e.id)));
        }
    }

    for (guardian, pupil) in changed_links(
        &plan.guardian_links,
        &stored.guardian_links,
        &plan.guardian_scope,
        true,
    ) {
        if !(person_ours(guardian) && person_ours(pupil)) {
            problems.push(outside(
                "users.csv",
                format!("guardian link {guardian:?} – {pupil:?}"),
            ));
        }
    }
    for (class, session) in changed_links(
        &plan.class_terms,
        &stored.class_terms,
        &plan.class_scope,
        false,
    ) {
        if !class_ours(class) {
            problems.push(outside(
                "classes.csv",
                format!("term {session:?} of class {class:?}"),
            ));
        }
    }
    problems
}

/// Links the import would add, and those it would remove (as `apply_links` decides).
fn changed_links<'a>(
    desired: &'a BTreeSet<(String, String)>,
    stored: &'a BTreeSet<(String, String)>,
    owned: &HashSet<String>,
    right_scoped: bool,
) -> Vec<(&'a str, &'a str)> {
    let added = desired.difference(stored);
    let removed = stored
        .difference(desired)
        .filter(|(a, b)| owned.contains(a) || (right_scoped && owned.contains(b)));
    added
        .chain(removed)
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}
