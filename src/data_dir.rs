//! The data directory: the token secret, the SQLite database and roster uploads in progress.
//! Whoever can read it can forge invite links and read every pupil's record, so it is 0700,
//! whichever command (`serve`, `roster import`, `signin-link`, `invite`) creates it first and
//! whatever the umask.

use std::fs;
use std::io;
use std::path::Path;

use tracing::warn;

/// Creates `dir` (and missing parents) as 0700, or narrows an existing one that others may
/// enter or read to the owner's bits.
pub fn create_private(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let private = mode & 0o700;
            fs::set_permissions(dir, fs::Permissions::from_mode(private))?;
            warn!(
                path = %dir.display(),
                from = format!("{mode:o}"),
                to = format!("{private:o}"),
                "the data directory was open to other users; narrowed"
            );
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_private_and_existing_narrowed() {
        let tmp = std::env::temp_dir().join(format!(
            "classroom-data-dir-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let dir = tmp.join("data");
        create_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let _ = fs::remove_dir_all(&tmp);
    }
}
