//! Uploaded rosters on their way to the importer: streamed from the request into a private file
//! in the data directory, never held whole in memory, and removed when done.
//!
//! Why the data directory and not `/tmp`: it is the server's own, 0700, on a disk the operator
//! sized for it; `/tmp` is shared with every user of the machine and often a small RAM disk.
//! Why a file at all: the ZIP reader needs to seek (the directory of an archive is at its end).

use std::io;
use std::path::{Path, PathBuf};

use axum::body::Body;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

/// Uploads are named `<PREFIX><random>.zip`, so leftovers are recognised at start.
const PREFIX: &str = "roster-upload-";

/// Why an upload could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the upload was interrupted: {0}")]
    Body(axum::Error),
    #[error("cannot store the upload: {0}")]
    Io(#[from] io::Error),
}

/// An uploaded file, removed when this is dropped: after the import, on an error, and when the
/// client goes away mid-request (the handler's future is dropped).
pub struct StoredUpload {
    path: PathBuf,
}

impl StoredUpload {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoredUpload {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), "cannot remove an uploaded roster: {e}");
        }
    }
}

/// Streams `body` into a new 0600 file in `dir`, refusing more than `limit` bytes.
pub async fn store(dir: &Path, body: Body, limit: usize) -> Result<StoredUpload, UploadError> {
    let token = classroom_auth::token::new_token().map_err(|e| io::Error::other(e.to_string()))?;
    let upload = StoredUpload {
        path: dir.join(format!("{PREFIX}{token}.zip")),
    };
    let mut file = tokio::fs::File::from_std(create_private(&upload.path)?);
    let mut stream = body.into_data_stream();
    let mut written = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(UploadError::Body)?;
        written = written.saturating_add(chunk.len());
        if written > limit {
            return Err(UploadError::TooLarge { limit });
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(upload)
}

/// Creates `path` readable and writable by the server's user only, whatever the umask.
fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Removes uploads a previous run left behind (it was killed mid-import). Called at start,
/// before anything can upload.
pub fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".zip"));
        if ours && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        info!(removed, dir = %dir.display(), "removed roster uploads left by an earlier run");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[tokio::test]
    async fn stored_private_bounded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let upload = store(dir.path(), Body::from(vec![7u8; 10]), 10)
            .await
            .unwrap();
        assert_eq!(std::fs::read(upload.path()).unwrap(), vec![7u8; 10]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(upload.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(upload);
        assert!(names(dir.path()).is_empty());

        let refused = store(dir.path(), Body::from(vec![7u8; 11]), 10).await;
        assert!(matches!(refused, Err(UploadError::TooLarge { limit: 10 })));
        assert!(names(dir.path()).is_empty(), "a refused upload is removed");
    }

    #[test]
    fn only_our_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join(format!("{PREFIX}abc.zip"));
        let theirs = dir.path().join("roster.zip");
        std::fs::write(&ours, b"x").unwrap();
        std::fs::write(&theirs, b"x").unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 1);
        assert!(!ours.exists());
        assert!(theirs.exists());
        assert_eq!(remove_leftovers(&dir.path().join("missing")).unwrap(), 0);
    }
}
