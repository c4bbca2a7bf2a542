//! OneRoster import against SQLite (always) and PostgreSQL (when CLASSROOM_TEST_POSTGRES_URL is
//! set). Each test runs every check on every available backend.

mod common;

use std::path::Path;

use classroom_domain::{Counts, Db, ImportError, Problem, Reason, Table, import_dir, import_zip};
use common::{backends, fixture_dir};

/// A writable copy of the sample roster.
fn sample_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn edit(dir: &Path, file: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let path = dir.join(file);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, f(data)).unwrap();
}

fn replace(data: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(data).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

const TABLES: [Table; 7] = [
    Table::Orgs,
    Table::AcademicSessions,
    Table::People,
    Table::GuardianLinks,
    Table::Classes,
    Table::ClassTerms,
    Table::Enrollments,
];

async fn row_counts(db: &Db) -> Vec<i64> {
    let mut counts = Vec::new();
    for t in TABLES {
        counts.push(db.count(t).await.unwrap());
    }
    counts
}

/// Rows in the sample: 2 orgs, 1 session, 16 people (2 teachers, 8 pupils, 6 guardians),
/// 7 guardian links, 2 classes, 2 class-term links, 19 enrollments.
const SAMPLE_ROWS: [i64; 7] = [2, 1, 16, 7, 2, 2, 19];

fn created(n: u64) -> Counts {
    Counts {
        created: n,
        ..Counts::default()
    }
}

fn unchanged(n: u64) -> Counts {
    Counts {
        unchanged: n,
        ..Counts::default()
    }
}

#[tokio::test]
async fn sample_imports_with_right_counts() {
    for t in backends("sample").await {
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        assert_eq!(report.orgs, created(2), "{}", t.name);
        assert_eq!(report.academic_sessions, created(1), "{}", t.name);
        assert_eq!(report.people, created(16), "{}", t.name);
        assert_eq!(report.guardian_links, created(7), "{}", t.name);
        assert_eq!(report.classes, created(2), "{}", t.name);
        assert_eq!(report.class_terms, created(2), "{}", t.name);
        assert_eq!(report.enrollments, created(19), "{}", t.name);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(row_counts(&t.db).await, SAMPLE_ROWS, "{}", t.name);

        // Japanese text, the Japan Profile kana columns and the guardian links survive intact.
        let mut tx = t.db.begin().await.unwrap();
        let (family, kana, role): (String, Option<String>, String) = match &mut tx {
            classroom_domain::Tx::Sqlite(c) => sqlx::query_as(
                "SELECT family_name, family_name_kana, role FROM people WHERE id = $1",
            )
            .bind("s-006")
            .fetch_one(&mut **c)
            .await
            .unwrap(),
            classroom_domain::Tx::Postgres(c) => sqlx::query_as(
                "SELECT family_name, family_name_kana, role FROM people WHERE id = $1",
            )
            .bind("s-006")
            .fetch_one(&mut **c)
            .await
            .unwrap(),
        };
        assert_eq!(
            (family.as_str(), kana.as_deref(), role.as_str()),
            ("北村", Some("きたむら"), "student")
        );
        let sql = "SELECT pupil_id FROM guardian_links WHERE guardian_id = $1 ORDER BY pupil_id";
        let pupils: Vec<String> = match &mut tx {
            classroom_domain::Tx::Sqlite(c) => sqlx::query_scalar(sql)
                .bind("g-001")
                .fetch_all(&mut **c)
                .await
                .unwrap(),
            classroom_domain::Tx::Postgres(c) => sqlx::query_scalar(sql)
                .bind("g-001")
                .fetch_all(&mut **c)
                .await
                .unwrap(),
        };
        assert_eq!(pupils, ["s-001", "s-002"]);
        tx.rollback().await.unwrap();
        t.finish().await;
    }
}

#[tokio::test]
async fn second_import_changes_nothing() {
    for t in backends("reimport").await {
        import_dir(&t.db, &fixture_dir()).await.unwrap();
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        assert!(report.is_unchanged(), "{}: {report:?}", t.name);
        assert_eq!(report.people, unchanged(16));
        assert_eq!(report.guardian_links, unchanged(7));
        assert_eq!(report.enrollments, unchanged(19));
        assert_eq!(row_counts(&t.db).await, SAMPLE_ROWS, "{}", t.name);
        t.finish().await;
    }
}

#[tokio::test]
async fn reimport_updates_changed_rows_and_links() {
    for t in backends("update").await {
        import_dir(&t.db, &fixture_dir()).await.unwrap();
        let dir = sample_copy();
        // A pupil's family name changes, and guardian g-002 now also looks after s-008.
        edit(dir.path(), "users.csv", |d| {
            let d = replace(d, ",蒼,林,", ",蒼,小林,");
            replace(d, ",,s-003,", ",,\"s-003,s-008\",")
        });
        let report = import_dir(&t.db, dir.path()).await.unwrap();
        assert_eq!(
            report.people,
            Counts {
                updated: 1,
                unchanged: 15,
                ..Counts::default()
            },
            "{}",
            t.name
        );
        assert_eq!(
            report.guardian_links,
            Counts {
                created: 1,
                unchanged: 7,
                ..Counts::default()
            }
        );
        let mut expected = SAMPLE_ROWS;
        expected[3] += 1;
        assert_eq!(row_counts(&t.db).await, expected, "{}", t.name);

        // Back to the original: the extra link is removed again, the name restored.
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        assert_eq!(report.people.updated, 1);
        assert_eq!(report.guardian_links.removed, 1);
        assert_eq!(row_counts(&t.db).await, SAMPLE_ROWS, "{}", t.name);
        t.finish().await;
    }
}

/// Imports `dir` and returns its problems; checks that nothing was written, neither on an
/// empty database nor on top of the sample.
async fn expect_rejected(test: &str, dir: &Path) -> Vec<Problem> {
    let mut found = None;
    for t in backends(test).await {
        let err = import_dir(&t.db, dir).await.unwrap_err();
        let problems = err.problems().expect("a roster problem").to_vec();
        assert_eq!(
            row_counts(&t.db).await,
            [0; 7],
            "{}: wrote to empty db",
            t.name
        );

        import_dir(&t.db, &fixture_dir()).await.unwrap();
        let again = import_dir(&t.db, dir).await.unwrap_err();
        assert_eq!(again.problems(), Some(&problems[..]), "{}", t.name);
        // The broken roster also renames the school: that valid change must not be applied.
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        assert!(
            report.is_unchanged(),
            "{}: partial apply {report:?}",
            t.name
        );
        assert_eq!(row_counts(&t.db).await, SAMPLE_ROWS, "{}", t.name);

        if let Some(previous) = &found {
            assert_eq!(previous, &problems, "backends disagree");
        }
        found = Some(problems);
        t.finish().await;
    }
    found.unwrap_or_default()
}

/// The sample with a valid change (the school renamed) that a failed import must not apply.
fn broken_sample() -> tempfile::TempDir {
    let dir = sample_copy();
    edit(dir.path(), "orgs.csv", |d| {
        replace(d, "高岡市立瑞穂小学校", "高岡市立新瑞穂小学校")
    });
    dir
}

#[tokio::test]
async fn missing_column_is_reported_and_nothing_applied() {
    let dir = broken_sample();
    edit(dir.path(), "enrollments.csv", |d| {
        replace(d, ",userSourcedId,", ",learnerId,")
    });
    let problems = expect_rejected("missing_column", dir.path()).await;
    assert_eq!(
        problems,
        [Problem {
            file: "enrollments.csv".into(),
            line: 1,
            reason: Reason::MissingColumn("userSourcedId".into()),
        }]
    );
    assert_eq!(
        problems[0].to_string(),
        "enrollments.csv:1: missing column \"userSourcedId\""
    );
}

#[tokio::test]
async fn unknown_reference_is_reported_and_nothing_applied() {
    let dir = broken_sample();
    // Line 5 of enrollments.csv: header, t-001, s-001, s-002, then s-003.
    edit(dir.path(), "enrollments.csv", |d| {
        replace(
            d,
            "enr-p5-1-s-003,,,class-p5-1,",
            "enr-p5-1-s-003,,,class-p6-9,",
        )
    });
    let problems = expect_rejected("unknown_reference", dir.path()).await;
    assert_eq!(
        problems,
        [Problem {
            file: "enrollments.csv".into(),
            line: 5,
            reason: Reason::UnknownReference {
                column: "classSourcedId".into(),
                id: "class-p6-9".into(),
                target: "class",
            },
        }]
    );
}

#[tokio::test]
async fn unknown_agent_is_reported() {
    let dir = broken_sample();
    // g-002 is on line 13 of users.csv (header, 2 teachers, 8 pupils, g-001, g-002).
    edit(dir.path(), "users.csv", |d| {
        replace(d, ",,s-003,", ",,\"s-003,s-099\",")
    });
    let problems = expect_rejected("unknown_agent", dir.path()).await;
    assert_eq!(
        problems,
        [Problem {
            file: "users.csv".into(),
            line: 13,
            reason: Reason::UnknownReference {
                column: "agentSourcedIds".into(),
                id: "s-099".into(),
                target: "user",
            },
        }]
    );
}

#[tokio::test]
async fn invalid_utf8_is_reported_and_nothing_applied() {
    let dir = broken_sample();
    // s-004's given name saved as Shift_JIS (さくら), as a spreadsheet on Windows might do.
    edit(dir.path(), "users.csv", |d| {
        let at = d
            .windows("さくら".len())
            .position(|w| w == "さくら".as_bytes())
            .unwrap();
        let mut out = d[..at].to_vec();
        out.extend_from_slice(&[0x82, 0xb3, 0x82, 0xad, 0x82, 0xe7]);
        out.extend_from_slice(&d[at + "さくら".len()..]);
        out
    });
    let problems = expect_rejected("invalid_utf8", dir.path()).await;
    // Header, t-001, t-002, s-001, s-002, s-003, then s-004 on line 7.
    assert_eq!(
        problems,
        [Problem {
            file: "users.csv".into(),
            line: 7,
            reason: Reason::InvalidUtf8 {
                column: Some("givenName".into()),
            },
        }]
    );
}

#[tokio::test]
async fn several_problems_are_all_reported() {
    let dir = broken_sample();
    edit(dir.path(), "academicSessions.csv", |d| {
        replace(d, "2027-03-31", "2027-02-30x")
    });
    edit(dir.path(), "roles.csv", |d| {
        replace(d, "primary,guardian", "primary,grandparent")
    });
    let problems = expect_rejected("several", dir.path()).await;
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.starts_with("academicSessions.csv:2: column \"endDate\"")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("roles.csv:12: column \"role\": \"grandparent\"")),
        "{text:?}"
    );
}

#[tokio::test]
async fn missing_file_and_delta_are_reported() {
    let dir = broken_sample();
    std::fs::remove_file(dir.path().join("classes.csv")).unwrap();
    edit(dir.path(), "manifest.csv", |d| {
        replace(d, "file.enrollments,bulk", "file.enrollments,delta")
    });
    let problems = expect_rejected("missing_file", dir.path()).await;
    assert_eq!(
        problems,
        [
            Problem {
                file: "manifest.csv".into(),
                line: 11,
                reason: Reason::Unsupported("file.enrollments is \"delta\" (bulk only)".into()),
            },
            Problem {
                file: "classes.csv".into(),
                line: 0,
                reason: Reason::MissingFile,
            },
        ]
    );
}

#[tokio::test]
async fn zip_import_matches_directory_import() {
    let zip_dir = tempfile::tempdir().unwrap();
    let zip_path = zip_dir.path().join("roster.zip");
    {
        let file = std::fs::File::create(&zip_path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            zip.start_file(name, options).unwrap();
            std::io::Write::write_all(&mut zip, &std::fs::read(entry.path()).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    for t in backends("zip").await {
        let report = import_zip(&t.db, &zip_path).await.unwrap();
        assert_eq!(report.people, created(16), "{}", t.name);
        let report = import_dir(&t.db, &fixture_dir()).await.unwrap();
        assert!(report.is_unchanged(), "{}", t.name);
        t.finish().await;
    }
}

#[tokio::test]
async fn not_a_roster_directory_is_an_error() {
    for t in backends("empty_dir").await {
        let dir = tempfile::tempdir().unwrap();
        let err = import_dir(&t.db, dir.path()).await.unwrap_err();
        assert!(matches!(err, ImportError::Invalid(_)), "{err}");
        assert_eq!(
            err.problems().map(|p| p[0].clone()),
            Some(Problem {
                file: "manifest.csv".into(),
                line: 0,
                reason: Reason::MissingFile,
            })
        );
        t.finish().await;
    }
}

/// Writes a ZIP at `path`: the sample roster's files (deflated) but those in `replaced`, then
/// whatever `more` adds.
fn sample_zip_with(
    path: &Path,
    replaced: &[&str],
    more: impl FnOnce(&mut zip::ZipWriter<std::fs::File>, zip::write::SimpleFileOptions),
) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if replaced.contains(&name.as_str()) {
            continue;
        }
        zip.start_file(name, options).unwrap();
        std::io::Write::write_all(&mut zip, &std::fs::read(entry.path()).unwrap()).unwrap();
    }
    more(&mut zip, options);
    zip.finish().unwrap();
}

/// Appends `bytes` zero bytes to the entry being written, a MiB at a time.
fn zeros(zip: &mut zip::ZipWriter<std::fs::File>, bytes: u64) {
    let chunk = vec![0u8; 1024 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(zip, &chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// Where a roster comes from.
enum Source<'p> {
    Zip(&'p Path),
    Dir(&'p Path),
}
use Source::{Dir, Zip};

/// Imports `source` on every backend; expects it refused as too big, with nothing written.
async fn expect_too_big(test: &str, source: Source<'_>, want: classroom_domain::TooBig) {
    for t in backends(test).await {
        let result = match source {
            Zip(path) => import_zip(&t.db, path).await,
            Dir(path) => import_dir(&t.db, path).await,
        };
        match result {
            Err(ImportError::TooBig { what, .. }) => assert_eq!(what, want, "{}", t.name),
            other => panic!("{}: expected {want:?}, got {other:?}", t.name),
        }
        assert_eq!(row_counts(&t.db).await, [0; 7], "{}", t.name);
        t.finish().await;
    }
}

/// The bomb: 254 KB of deflated zeros that unpack to 256 MiB. Refused from the sizes
/// the archive declares, before anything is unpacked.
#[tokio::test]
async fn zip_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.zip");
    sample_zip_with(&path, &["users.csv"], |zip, options| {
        zip.start_file("users.csv", options).unwrap();
        zeros(zip, 256 * 1024 * 1024);
    });
    assert!(std::fs::metadata(&path).unwrap().len() < 1024 * 1024);
    expect_too_big("zip_bomb", Zip(&path), classroom_domain::TooBig::Unpacked).await;
    let err = classroom_domain::TooBig::Unpacked.to_string();
    assert_eq!(err, "the archive unpacks to more than 32 MiB");
}

/// The cap is on all files together: two files under it that together exceed it are refused.
#[tokio::test]
async fn files_together_over_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-halves.zip");
    let half = classroom_domain::MAX_UNPACKED_BYTES / 2 + 1;
    sample_zip_with(&path, &["users.csv", "enrollments.csv"], |zip, options| {
        zip.start_file("users.csv", options).unwrap();
        zeros(zip, half);
        zip.start_file("enrollments.csv", options).unwrap();
        zeros(zip, half);
    });
    expect_too_big("two_halves", Zip(&path), classroom_domain::TooBig::Unpacked).await;
}

/// A directory is read within the same budget (its files are measured as read, not by size).
#[tokio::test]
async fn directory_over_the_cap_is_refused() {
    let dir = sample_copy();
    edit(dir.path(), "users.csv", |mut d| {
        d.resize(classroom_domain::MAX_UNPACKED_BYTES as usize + 1, b'\n');
        d
    });
    expect_too_big(
        "dir_cap",
        Dir(dir.path()),
        classroom_domain::TooBig::Unpacked,
    )
    .await;
}

/// An entry-count bomb: the sample roster plus thousands of empty entries, each of which the
/// ZIP reader would hold in memory. Refused before the archive is opened.
#[tokio::test]
async fn entry_count_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entries.zip");
    sample_zip_with(&path, &[], |zip, options| {
        let stored = options.compression_method(zip::CompressionMethod::Stored);
        for i in 0..5000 {
            zip.start_file(format!("pad/{i:05}"), stored).unwrap();
        }
    });
    expect_too_big("entry_bomb", Zip(&path), classroom_domain::TooBig::Entries).await;

    // The same roster with a few extra entries (an exporter's other files) imports.
    let ok_path = dir.path().join("some-extra.zip");
    sample_zip_with(&ok_path, &[], |zip, options| {
        for name in ["demographics.csv", "lineItems.csv", "__MACOSX/._users.csv"] {
            zip.start_file(name, options).unwrap();
        }
    });
    for t in backends("entry_ok").await {
        let report = import_zip(&t.db, &ok_path).await.unwrap();
        assert_eq!(report.people, created(16), "{}", t.name);
        t.finish().await;
    }
}
