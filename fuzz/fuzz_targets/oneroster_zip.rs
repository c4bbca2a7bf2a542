//! A OneRoster ZIP archive as an administrator uploads it, read and checked by the same code as
//! an import (`classroom_domain::check_zip`), without a database.
//!
//! Properties: never panics, stays within libFuzzer's memory limit (a small archive must not
//! make the reader hold gigabytes); a refusal is an error value that can be shown.
#![no_main]

use classroom_domain::{ImportError, check_zip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match check_zip(data) {
        Ok(_) => {}
        Err(ImportError::Invalid(problems)) => {
            assert!((1..=200).contains(&problems.0.len()));
            let _ = problems.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
