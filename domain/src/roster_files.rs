//! Reading a roster's CSV files, from a ZIP archive or a directory, within fixed bounds.
//!
//! A ZIP archive can promise far more than it weighs: 254 KB of deflated zeros unpack to
//! 256 MiB, and 20 MiB of empty entries list hundreds of thousands of files, each of which the
//! ZIP reader would hold in memory. So before anything is unpacked, the entries are counted
//! from the bytes themselves, and everything read passes through one byte budget shared by all
//! files of the import. Both bounds are checked against what is actually there, never only
//! against the sizes the archive declares.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use crate::oneroster::ImportError;

/// The most bytes one import unpacks, all files together. A real school district's export is a
/// few MB of CSV (a city of 13,000 pupils: about 5 MB, users.csv and enrollments.csv being most
/// of it); 32 MiB is six times that. A board much larger imports per school or per ward: an
/// import replaces links only for the people and classes it contains. Everything read is held
/// in memory while it is checked, so this is also what one import may cost in memory, raw.
pub const MAX_UNPACKED_BYTES: u64 = 32 * 1024 * 1024;

/// The most entries an archive may have. OneRoster 1.2 defines 20-odd CSV files; with folders
/// and the resource forks some archivers add for each file (`__MACOSX/...`) an export stays under
/// 50. Each entry costs the ZIP reader a few hundred bytes whether read or not.
pub const MAX_ARCHIVE_ENTRIES: usize = 100;

/// The files read, by name.
pub(crate) type Files = HashMap<&'static str, Vec<u8>>;

const MIB: u64 = 1024 * 1024;

/// Why a roster's files were refused before they were parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooBig {
    #[error("the archive unpacks to more than {} MiB", MAX_UNPACKED_BYTES / MIB)]
    Unpacked,
    #[error("the archive has more than {MAX_ARCHIVE_ENTRIES} entries")]
    Entries,
}

/// Bytes still allowed to be read in this import.
struct Budget(u64);

impl Budget {
    /// Reads all of `source` if it fits in what is left. `hint` (a declared size, possibly a
    /// lie) only sizes the first allocation.
    fn read_all(&mut self, source: impl Read, hint: u64) -> io::Result<Result<Vec<u8>, TooBig>> {
        let mut data = Vec::with_capacity(usize::try_from(hint.min(self.0)).unwrap_or(0));
        // One byte past the budget tells "exactly fits" from "too much" without reading on.
        source.take(self.0 + 1).read_to_end(&mut data)?;
        let read = data.len() as u64;
        if read > self.0 {
            return Ok(Err(TooBig::Unpacked));
        }
        self.0 -= read;
        Ok(Ok(data))
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn too_big(path: &Path, what: TooBig) -> ImportError {
    ImportError::TooBig {
        path: path.to_owned(),
        what,
    }
}

/// Reads the files in `names` that `dir` holds; absent ones are left out (the manifest decides
/// whether that is a problem).
pub(crate) fn read_dir(dir: &Path, names: &[&'static str]) -> Result<Files, ImportError> {
    let mut budget = Budget(MAX_UNPACKED_BYTES);
    let mut files = HashMap::new();
    for &name in names {
        let path = dir.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path)(e)),
        };
        let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
        match budget.read_all(file, hint).map_err(io_error(&path))? {
            Ok(data) => files.insert(name, data),
            Err(what) => return Err(too_big(dir, what)),
        };
    }
    Ok(files)
}

/// Reads the files in `names` at the top level of the ZIP archive at `path`.
pub(crate) fn read_zip(path: &Path, names: &[&'static str]) -> Result<Files, ImportError> {
    let file = File::open(path).map_err(io_error(path))?;
    read_zip_from(file, path, names)
}

/// [`read_zip`] from any seekable source (an archive held in memory, for checks without a file);
/// `path` only names it in errors.
pub(crate) fn read_zip_from<R: Read + Seek>(
    mut file: R,
    path: &Path,
    names: &[&'static str],
) -> Result<Files, ImportError> {
    let zip_err = |source| ImportError::Zip {
        path: path.to_owned(),
        source,
    };
    if central_headers_at_most(&mut file, MAX_ARCHIVE_ENTRIES)
        .map_err(io_error(path))?
        .is_none()
    {
        return Err(too_big(path, TooBig::Entries));
    }
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    if archive.len() > MAX_ARCHIVE_ENTRIES {
        return Err(too_big(path, TooBig::Entries));
    }
    // The sizes the archive declares refuse an honest bomb before anything is unpacked; the
    // budget below catches one that lies.
    let mut declared = 0u64;
    for &name in names {
        match archive.by_name(name) {
            Ok(entry) => declared = declared.saturating_add(entry.size()),
            Err(zip::result::ZipError::FileNotFound) => {}
            Err(e) => return Err(zip_err(e)),
        }
    }
    if declared > MAX_UNPACKED_BYTES {
        return Err(too_big(path, TooBig::Unpacked));
    }
    let mut budget = Budget(MAX_UNPACKED_BYTES);
    let mut files = HashMap::new();
    for &name in names {
        let entry = match archive.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => continue,
            Err(e) => return Err(zip_err(e)),
        };
        let hint = entry.size();
        match budget
            .read_all(entry, hint)
            .map_err(io_error(&path.join(name)))?
        {
            Ok(data) => files.insert(name, data),
            Err(what) => return Err(too_big(path, what)),
        };
    }
    Ok(files)
}

/// The signature every central directory entry starts with.
const CENTRAL_HEADER: [u8; 4] = *b"PK\x01\x02";

/// Counts central directory entry signatures anywhere in the file, up to `limit`: `None` if
/// there are more. The ZIP reader parses an entry only where this signature is, so the count
/// bounds what it will hold, whatever the end-of-directory record claims (and whichever of
/// several such records it settles on).
fn central_headers_at_most<R: Read>(file: &mut R, limit: usize) -> io::Result<Option<usize>> {
    let mut buf = vec![0u8; 64 * 1024];
    // The last three bytes of the previous chunk, so a signature across two reads is seen.
    let mut carry = 0usize;
    let mut count = 0usize;
    loop {
        let n = file.read(&mut buf[carry..])?;
        if n == 0 {
            break;
        }
        let filled = carry + n;
        count += buf[..filled]
            .windows(CENTRAL_HEADER.len())
            .filter(|w| *w == CENTRAL_HEADER)
            .count();
        if count > limit {
            return Ok(None);
        }
        carry = filled.min(CENTRAL_HEADER.len() - 1);
        buf.copy_within(filled - carry..filled, 0);
    }
    Ok(Some(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn signatures_are_counted_across_read_boundaries() {
        let mut tmp = tempfile::tempfile().unwrap();
        // One signature straddling the 64 KiB boundary, one in the middle of the next chunk.
        let mut data = vec![0u8; 64 * 1024 - 2];
        data.extend_from_slice(&CENTRAL_HEADER);
        data.extend_from_slice(&[7; 1000]);
        data.extend_from_slice(&CENTRAL_HEADER);
        tmp.write_all(&data).unwrap();
        let mut file = tmp;
        std::io::Seek::rewind(&mut file).unwrap();
        assert_eq!(central_headers_at_most(&mut file, 10).unwrap(), Some(2));
        std::io::Seek::rewind(&mut file).unwrap();
        assert_eq!(central_headers_at_most(&mut file, 1).unwrap(), None);
    }

    #[test]
    fn budget_allows_exactly_its_size() {
        let mut budget = Budget(4);
        assert_eq!(
            budget.read_all(&b"abcd"[..], 0).unwrap(),
            Ok(b"abcd".to_vec())
        );
        assert_eq!(
            budget.read_all(&b"e"[..], 1).unwrap(),
            Err(TooBig::Unpacked)
        );
        let mut budget = Budget(4);
        assert_eq!(
            budget.read_all(&b"ab"[..], 1 << 40).unwrap(),
            Ok(b"ab".to_vec())
        );
        assert_eq!(
            budget.read_all(&b"cde"[..], 0).unwrap(),
            Err(TooBig::Unpacked)
        );
    }
}
