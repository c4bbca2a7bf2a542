//! The key that signs invite tokens. It must outlive restarts, or every link a teacher sent
//! would stop working; so unless the configuration supplies one, it is generated once into
//! `<data_dir>/token_secret` and read back on every later start (by `serve` and `invite` alike).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, Secret, check_secret};

/// File name inside the data directory.
pub const SECRET_FILE: &str = "token_secret";

/// Random bytes in a generated secret (written as hex).
const GENERATED_BYTES: usize = 32;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot create the data directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the token secret {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the token secret {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the token secret in {path} {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where the secret in use comes from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Config,
    File(PathBuf),
    Generated(PathBuf),
}

/// The configured secret, or the one in the data directory (created if missing).
pub fn resolve(config: &Config) -> Result<(Secret, SecretSource), SecretError> {
    if let Some(secret) = &config.token_secret {
        return Ok((secret.clone(), SecretSource::Config));
    }
    load_or_create(&config.data_dir)
}

/// Reads `<dir>/token_secret`, or generates it. Safe against a concurrent first start of
/// `serve` and `invite`: both end up with the same secret.
pub fn load_or_create(dir: &Path) -> Result<(Secret, SecretSource), SecretError> {
    let path = dir.join(SECRET_FILE);
    if let Some(secret) = read_existing(&path)? {
        return Ok((secret, SecretSource::File(path)));
    }
    create_private_dir(dir)?;
    let secret = generate();
    // Written under a temporary name and then linked into place: a reader never sees a
    // half-written file, and `hard_link`, unlike `rename`, refuses to replace a secret another
    // process created meanwhile.
    let tmp = dir.join(format!(
        ".{SECRET_FILE}.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let write_err = |source| SecretError::Write {
        path: path.clone(),
        source,
    };
    let linked = write_private(&tmp, secret.expose()).and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            info!(path = %path.display(), "generated a new token secret");
            Ok((secret, SecretSource::Generated(path)))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_existing(&path)? {
            Some(secret) => Ok((secret, SecretSource::File(path))),
            None => Err(write_err(e)),
        },
        Err(e) => Err(write_err(e)),
    }
}

fn read_existing(path: &Path) -> Result<Option<Secret>, SecretError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SecretError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    // Editors and `echo` add a newline that is not part of the key.
    let secret = text.trim();
    check_secret(secret).map_err(|message| SecretError::Invalid {
        path: path.to_owned(),
        message,
    })?;
    warn_if_readable_by_others(path);
    Ok(Some(Secret::new(secret)))
}

fn generate() -> Secret {
    let bytes: [u8; GENERATED_BYTES] = rand::random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn create_private_dir(dir: &Path) -> Result<(), SecretError> {
    crate::data_dir::create_private(dir).map_err(|source| SecretError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

fn write_private(path: &Path, content: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Anyone who can read the secret can mint teacher links; say so rather than refuse, as the
/// operator may have reasons (a group-readable deploy directory).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the token secret is readable by other users, who could forge invite links; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "classroom-secret-test-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn configured_secret_wins_and_touches_no_file() {
        let tmp = TempDir::new();
        let config = Config {
            data_dir: tmp.0.join("data"),
            token_secret: Some("configured-secret-0123456789".into()),
            ..Config::default()
        };
        let (secret, source) = resolve(&config).unwrap();
        assert_eq!(secret.expose(), "configured-secret-0123456789");
        assert_eq!(source, SecretSource::Config);
        assert!(!config.data_dir.exists());
    }

    #[test]
    fn generated_once_then_reused() {
        let tmp = TempDir::new();
        let data = tmp.0.join("nested/data");
        let (first, source) = load_or_create(&data).unwrap();
        let path = data.join(SECRET_FILE);
        assert_eq!(source, SecretSource::Generated(path.clone()));
        assert_eq!(first.expose().len(), GENERATED_BYTES * 2);
        assert!(first.expose().bytes().all(|b| b.is_ascii_hexdigit()));

        let (again, source) = load_or_create(&data).unwrap();
        assert_eq!(again, first);
        assert_eq!(source, SecretSource::File(path.clone()));

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn hand_written_secret_is_trimmed() {
        let tmp = TempDir::new();
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join(SECRET_FILE), "  my-own-long-secret-value \n").unwrap();
        let (secret, _) = load_or_create(&tmp.0).unwrap();
        assert_eq!(secret.expose(), "my-own-long-secret-value");
    }

    #[test]
    fn empty_or_short_file_is_refused_not_replaced() {
        let tmp = TempDir::new();
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join(SECRET_FILE), "\n").unwrap();
        let e = load_or_create(&tmp.0).unwrap_err();
        assert!(matches!(e, SecretError::Invalid { .. }), "{e}");
        assert_eq!(fs::read_to_string(tmp.0.join(SECRET_FILE)).unwrap(), "\n");
    }

    #[test]
    fn concurrent_first_starts_agree() {
        let tmp = TempDir::new();
        let dir = tmp.0.clone();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || load_or_create(&dir).unwrap().0)
            })
            .collect();
        let secrets: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }
}
