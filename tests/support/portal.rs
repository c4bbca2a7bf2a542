//! Helpers for the signed-in HTTP API tests (tests/portal*.rs): a server on a temporary SQLite
//! file or a fresh PostgreSQL database ([`Backend`]) with the sample roster (plus an
//! administrator, `a-001`) and a lesson today, an HTTP client that signs in with a one-time link
//! and keeps its session, and rosters to upload.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use classroom::config::{Config, OidcSettings, Secret};
use classroom::server::ServerHandle;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// Runs a test body within `limit`: every portal test is bounded in time.
pub async fn bounded<F: std::future::Future<Output = Result<()>>>(
    limit: Duration,
    f: F,
) -> Result<()> {
    tokio::time::timeout(limit, f)
        .await
        .context("test timed out")?
}

/// `mod $test { sqlite, postgres }`: the test body `$test(backend)` once per database (the
/// PostgreSQL one only with `CLASSROOM_TEST_POSTGRES_URL`).
#[allow(unused_macros)]
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                super::$test(super::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                match super::Backend::postgres(stringify!($test)) {
                    Some(backend) => super::$test(backend).await,
                    None => Ok(()),
                }
            }
        }
    )*};
}

pub const LESSON_ROOM: &str = "lesson-p5-1-today";
pub const CLASS: &str = "class-p5-1";
pub const SECRET: &str = "classroom-tests-only-secret-0123456789abcdef";

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("domain/tests/fixtures/oneroster-sample")
}

pub fn now() -> i64 {
    classroom::portal::unix_now()
}

const POSTGRES_ENV: &str = "CLASSROOM_TEST_POSTGRES_URL";

/// Which database a test server runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL (`CLASSROOM_TEST_POSTGRES_URL`).
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when `CLASSROOM_TEST_POSTGRES_URL` is set, else `None` (and a note, so a run
    /// without it does not look like it covered PostgreSQL).
    pub fn postgres(test: &str) -> Option<Backend> {
        match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(Backend::Postgres(url.trim().to_owned())),
            _ => {
                eprintln!("note: {POSTGRES_ENV} not set, PostgreSQL variant of {test} skipped");
                None
            }
        }
    }
}

static DATABASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A database for one test: a SQLite file under `dir`, or a PostgreSQL database created here
/// and dropped when this is dropped (also when the test fails half-way).
pub struct TestDatabase {
    pub url: String,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(backend: &Backend, dir: &Path) -> Result<TestDatabase> {
        match backend {
            Backend::Sqlite => Ok(TestDatabase {
                url: format!("sqlite:{}", dir.join("classroom.db").display()),
                postgres: None,
            }),
            Backend::Postgres(server) => {
                let name = format!(
                    "classroom_portal_{}_{}",
                    std::process::id(),
                    DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                classroom_domain::provision::create_postgres_database(server, &name)
                    .await
                    .with_context(|| format!("creating the test database {name}"))?;
                Ok(TestDatabase {
                    url: classroom_domain::provision::postgres_url_with_database(server, &name),
                    postgres: Some((server.clone(), name)),
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its own
        // small runtime does the DROP, and is waited for so the database is gone when the test
        // ends.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    classroom_domain::provision::drop_postgres_database(&server, &name),
                )
                .await
                .context("timed out")??;
                anyhow::Ok(())
            })
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cannot drop a test database: {e:#}"),
            Err(_) => eprintln!("warning: the thread dropping a test database panicked"),
        }
    }
}

pub struct PortalServer {
    pub handle: ServerHandle,
    pub lesson_id: String,
    // Dropped after `handle` (fields drop in order): the server's pool goes first.
    _database: TestDatabase,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub backend: Backend,
    pub cutoff: String,
    pub oidc: Option<OidcSettings>,
    pub purge_interval: Option<String>,
    /// `proxy.trusted`: networks whose forwarded header names the client.
    pub trusted_proxies: Vec<String>,
    /// `media.bind`'s address (port 0): another loopback address (127.0.0.0/8) puts this
    /// server's media, and the link sockets it dials from, apart from another server's.
    pub media_address: Option<std::net::IpAddr>,
    /// `links.public_url`: where invitations send partners (a relay in front of this server).
    pub links_public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Sqlite,
            cutoff: "08:00".to_owned(),
            oidc: None,
            purge_interval: None,
            trusted_proxies: Vec::new(),
            media_address: None,
            links_public_url: None,
        }
    }
}

impl Options {
    pub fn on(backend: &Backend) -> Options {
        Options {
            backend: backend.clone(),
            ..Options::default()
        }
    }
}

impl PortalServer {
    pub async fn start(options: Options) -> Result<PortalServer> {
        let dir = tempfile::tempdir()?;
        let database = TestDatabase::create(&options.backend, dir.path()).await?;
        let mut config = Config::for_tests();
        config.data_dir = dir.path().to_owned();
        config.database_url = Some(database.url.clone());
        config.school.cutoff = options.cutoff;
        config.oidc = options.oidc;
        if let Some(every) = options.purge_interval {
            config.purge_interval = every;
        }
        config.proxy.trusted = options.trusted_proxies;
        if let Some(address) = options.media_address {
            config.media.bind = std::net::SocketAddr::new(address, 0);
        }
        if let Some(url) = options.links_public_url {
            config.links.public_url = Some(url);
        }
        let handle =
            tokio::time::timeout(Duration::from_secs(20), classroom::server::start(config))
                .await
                .context("the server did not start in time")??;
        let db = handle.db();
        let roster = dir.path().join("roster");
        std::fs::create_dir(&roster)?;
        write_roster(&roster_with_admin()?, &roster)?;
        classroom_domain::import_dir(db, &roster).await?;
        let start = now();
        let lesson = classroom_domain::create_lesson(
            db,
            &classroom_domain::NewLesson {
                id: "lesson-today".to_owned(),
                class_id: CLASS.to_owned(),
                starts_at: start,
                ends_at: start + 3600,
                media_room: LESSON_ROOM.to_owned(),
                teachers: None,
            },
            chrono_tz::Asia::Tokyo,
        )
        .await?;
        Ok(PortalServer {
            handle,
            lesson_id: lesson.id,
            _database: database,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        self.handle.http_url()
    }

    /// The database URL the server uses (for the command line run beside it).
    pub fn database_url(&self) -> String {
        self._database.url.clone()
    }

    /// The metrics listener, e.g. `http://127.0.0.1:9464`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.handle.metrics_addr)
    }

    /// A one-time sign-in link for `person`, as the CLI or an administrator mints it.
    pub async fn link(&self, person: &str) -> Result<String> {
        let link = classroom::portal::links::mint_signin_link(
            self.handle.db(),
            &self.url(),
            &classroom_domain::Issuer::Cli,
            person,
            Duration::from_secs(900),
            now(),
            None,
        )
        .await?;
        Ok(link.url)
    }

    pub async fn sign_in(&self, person: &str) -> Result<Session> {
        let link = self.link(person).await?;
        Session::with_link(&self.url(), &link).await
    }

    pub async fn shutdown(self) {
        let PortalServer {
            handle, _database, ..
        } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await;
        drop(_database);
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// The value of `name` among a response's `Set-Cookie` headers.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
}

pub fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A signed-in browser, as far as the API is concerned.
pub struct Session {
    pub base: String,
    pub cookie: String,
    pub csrf: String,
    pub me: Value,
    pub http: reqwest::Client,
}

impl Session {
    /// Spends `link` with the POST its page makes; fails unless a session results.
    pub async fn with_link(base: &str, link: &str) -> Result<Session> {
        let http = client();
        let page = http.get(link).send().await?;
        ensure!(
            page.status() == StatusCode::OK,
            "link page: {}",
            page.status()
        );
        let answer = http.post(link).send().await?;
        ensure!(
            answer.status() == StatusCode::SEE_OTHER,
            "link POST: {}",
            answer.status()
        );
        let Some(cookie) = set_cookie(answer.headers(), "classroom_session") else {
            bail!(
                "no session cookie; redirected to {}",
                location(answer.headers())
            );
        };
        Session::with_cookie(base, &cookie).await
    }

    pub async fn with_cookie(base: &str, cookie: &str) -> Result<Session> {
        let http = client();
        let me: Value = http
            .get(format!("{base}/api/me"))
            .header("cookie", format!("classroom_session={cookie}"))
            .send()
            .await?
            .json()
            .await?;
        let csrf = me["csrf_token"]
            .as_str()
            .context("no csrf_token in /api/me")?
            .to_owned();
        Ok(Session {
            base: base.to_owned(),
            cookie: cookie.to_owned(),
            csrf,
            me,
            http,
        })
    }

    pub fn person_id(&self) -> &str {
        self.me["person"]["id"].as_str().unwrap_or_default()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", format!("classroom_session={}", self.cookie))
    }

    pub async fn get(&self, path: &str) -> Result<(StatusCode, Value)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn get_text(&self, path: &str) -> Result<(StatusCode, HeaderMap, String)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        Ok((r.status(), r.headers().clone(), r.text().await?))
    }

    /// A state-changing request with the CSRF header (`csrf: false` leaves it out).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.request(method, path);
        if csrf {
            req = req.header("x-csrf-token", &self.csrf);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// A POST of raw bytes (an upload), with the CSRF header.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Value)> {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("x-csrf-token", &self.csrf)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::POST, path, Some(body), true)
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::PUT, path, Some(body), true)
            .await
    }

    /// Sets `pupil`'s attendance mode for one day as staff (on the guardian's behalf); anything
    /// but 200 is an error.
    pub async fn set_pupil_mode(&self, pupil: &str, date: &str, mode: &str) -> Result<()> {
        let (status, body) = self
            .put(
                &format!("/api/pupils/{pupil}/modes"),
                json!({ "from": date, "to": date, "mode": mode }),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "setting {pupil}'s mode to {mode} for {date}: {status} {body}"
        );
        Ok(())
    }
}

/// `YYYY-MM-DD` of the school day `offset` days from today (Asia/Tokyo).
pub fn school_date(offset: i64) -> String {
    let tz = chrono_tz::Asia::Tokyo;
    let today = chrono::DateTime::from_timestamp(now(), 0)
        .expect("now")
        .with_timezone(&tz)
        .date_naive();
    (today + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// Test-only secret for configs built here.
pub fn secret() -> Secret {
    Secret::new(SECRET)
}

/// The sample roster's files, by name.
pub fn fixture_files() -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(fixture_dir())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.push((name, std::fs::read_to_string(entry.path())?));
    }
    files.sort();
    Ok(files)
}

/// Appends `line` to the file `name` of a roster.
pub fn append_line(files: &mut [(String, String)], name: &str, line: &str) -> Result<()> {
    let (_, text) = files
        .iter_mut()
        .find(|(n, _)| n == name)
        .with_context(|| format!("no {name} in the roster"))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    Ok(())
}

/// A copy of the row of `from` in users.csv, for the new person `to` (a new sourcedId and
/// e-mail, the same shape).
pub fn copied_user(files: &[(String, String)], from: &str, to: &str) -> Result<String> {
    let users = &files
        .iter()
        .find(|(n, _)| n == "users.csv")
        .context("users.csv")?
        .1;
    let row = users
        .lines()
        .find(|l| l.starts_with(&format!("{from},")))
        .with_context(|| format!("no {from} in users.csv"))?;
    Ok(row
        .replace(from, to)
        .replace(&format!("{from}@"), &format!("{to}@")))
}

/// The sample roster plus the school's administrator `a-001` (the sample has none).
pub fn roster_with_admin() -> Result<Vec<(String, String)>> {
    let mut files = fixture_files()?;
    let admin = copied_user(&files, "t-002", "a-001")?
        .replace("t.sato@", "principal@")
        .replace("健一,佐藤", "一郎,田中")
        .replace("けんいち,さとう", "いちろう,たなか");
    append_line(&mut files, "users.csv", &admin)?;
    append_line(
        &mut files,
        "roles.csv",
        "role-a-001,,,a-001,primary,administrator,,,org-es-mizuho,",
    )?;
    Ok(files)
}

/// Writes a roster's files into `dir`.
pub fn write_roster(files: &[(String, String)], dir: &Path) -> Result<()> {
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A ZIP archive of `files`, stored uncompressed, as an administrator would upload it.
pub fn stored_zip(files: &[(String, String)]) -> Result<Vec<u8>> {
    use std::io::Write;
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in files {
        zip.start_file(name.as_str(), options)?;
        zip.write_all(text.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}
