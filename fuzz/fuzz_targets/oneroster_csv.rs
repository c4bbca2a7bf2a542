//! A OneRoster CSV export as an administrator uploads it, checked by the same code as an import
//! (`classroom_domain::check_files`), without a database.
//!
//! Input: files one after another, each `<name>\n<contents>`, separated by a NUL byte (which no
//! roster CSV contains), so that seeds stay readable and the fuzzer can change names too.
//!
//! Properties: never panics; a refusal lists between one and 200 problems, each on a line that
//! exists in its file; the summary never counts more rows than the files have lines.
#![no_main]

use classroom_domain::check_files;
use libfuzzer_sys::fuzz_target;

fn lines(data: &[u8]) -> u64 {
    1 + data.iter().filter(|&&b| b == b'\n').count() as u64
}

fuzz_target!(|data: &[u8]| {
    let files: Vec<(&str, &[u8])> = data
        .split(|&b| b == 0)
        .filter_map(|chunk| {
            let newline = chunk.iter().position(|&b| b == b'\n')?;
            let name = std::str::from_utf8(&chunk[..newline]).ok()?;
            Some((name, &chunk[newline + 1..]))
        })
        .collect();
    match check_files(&files) {
        Ok(summary) => {
            let total: u64 = files.iter().map(|(_, d)| lines(d)).sum();
            let rows = summary.orgs
                + summary.academic_sessions
                + summary.people
                + summary.classes
                + summary.enrollments;
            assert!(rows as u64 <= total, "{summary:?} from {total} lines");
        }
        Err(problems) => {
            assert!(
                (1..=200).contains(&problems.0.len()),
                "{}",
                problems.0.len()
            );
            for p in &problems.0 {
                // The last file of a name wins, as in a directory; a problem's line is in it.
                let in_file = files
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == p.file)
                    .map_or(1, |(_, d)| lines(d));
                assert!(p.line <= in_file, "{p} but the file has {in_file} lines");
            }
            let _ = problems.to_string();
        }
    }
});
