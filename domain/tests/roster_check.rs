//! The database-free roster check (`check_files`, `check_zip`) that the fuzz targets drive: it
//! must judge a roster exactly as an import into an empty database does.

mod common;

use std::io::Write;

use classroom_domain::{ImportError, Reason, RosterSummary, check_files, check_zip, import_dir};
use common::{backends, fixture_dir};

fn sample_files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        files.push((name, std::fs::read(entry.path()).unwrap()));
    }
    files
}

fn borrowed(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect()
}

fn zipped(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[tokio::test]
async fn the_check_counts_what_an_import_into_an_empty_database_creates() {
    let files = sample_files();
    let summary = check_files(&borrowed(&files)).expect("the sample is a valid roster");
    assert_eq!(
        check_zip(&zipped(&files)).unwrap(),
        summary,
        "ZIP and files agree"
    );
    for t in backends("roster_check").await {
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        let created = RosterSummary {
            orgs: report.orgs.created as usize,
            academic_sessions: report.academic_sessions.created as usize,
            people: report.people.created as usize,
            guardian_links: report.guardian_links.created as usize,
            classes: report.classes.created as usize,
            class_terms: report.class_terms.created as usize,
            enrollments: report.enrollments.created as usize,
            warnings: report.warnings.clone(),
        };
        assert_eq!(summary, created, "{}", t.name);
        t.finish().await;
    }
}

#[test]
fn the_check_reports_problems_without_a_database() {
    let mut files = sample_files();
    let enrollments = files
        .iter_mut()
        .find(|(n, _)| n == "enrollments.csv")
        .unwrap();
    if !enrollments.1.ends_with(b"\n") {
        enrollments.1.push(b'\n');
    }
    enrollments.1.extend_from_slice(
        b"enr-extra,,,class-p5-1,org-es-mizuho,nobody-at-all,student,false,2026-04-01,2027-03-31\n",
    );
    let problems = check_files(&borrowed(&files)).unwrap_err();
    assert!(
        problems.0.iter().any(|p| p.file == "enrollments.csv"
            && matches!(&p.reason, Reason::UnknownReference { id, .. } if id == "nobody-at-all")),
        "{problems}"
    );
    match check_zip(&zipped(&files)) {
        Err(ImportError::Invalid(p)) => assert_eq!(p, problems),
        other => panic!("expected the same problems from the ZIP, got {other:?}"),
    }
}

#[test]
fn the_check_refuses_what_is_not_a_roster() {
    assert!(matches!(
        check_zip(b"PK\x03\x04 not really"),
        Err(ImportError::Zip { .. })
    ));
    let problems = check_files(&[("notes.txt", b"hello".as_slice())]).unwrap_err();
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert_eq!(problems.0[0].file, "manifest.csv");
}
