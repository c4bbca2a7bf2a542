//! The server's files and what survives it, against the real `classroom` binary: the data
//! directory and database files are private whichever command creates them (even under umask
//! 000); a ZIP bomb uploaded by an administrator, or given to `classroom roster import`, is
//! refused with the process's peak memory under 100 MB; and a pupil connected when the server is
//! SIGKILLed is not "online now" after the restart, their visit closed and marked so.
//!
//! The upload and restart tests run on a temporary SQLite file and, when
//! `CLASSROOM_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database. File modes are about
//! files, so they run on SQLite only.

use crate::portal_support as portal;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use portal::{Backend, Session, TestDatabase, bounded, school_date};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(90);

/// What a process may peak at while refusing a bomb. The server idles at about 25 MB.
const MEMORY_CEILING_BYTES: u64 = 100 * 1024 * 1024;

on_both_databases!(
    roster_bombs_are_refused_in_little_memory,
    presence_is_closed_after_sigkill
);

/// `classroom` with the data directory, database and loopback addresses of a test, and the
/// umask it runs under (the server's own, not the test's).
fn cli(
    data_dir: &Path,
    database_url: Option<&str>,
    umask: libc::mode_t,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_classroom"));
    c.env("CLASSROOM_DATA_DIR", data_dir)
        .env("CLASSROOM_HTTP", "127.0.0.1:0")
        .env("CLASSROOM_MEDIA_BIND", "127.0.0.1:0")
        .env("CLASSROOM_METRICS_LISTEN", "127.0.0.1:0")
        .env("CLASSROOM_LOG_LEVEL", "warn")
        .env_remove("CLASSROOM_TOKEN_SECRET")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match database_url {
        Some(url) => c.env("CLASSROOM_DATABASE_URL", url),
        None => c.env_remove("CLASSROOM_DATABASE_URL"),
    };
    // SAFETY: umask is async-signal-safe and touches only the child's own state.
    unsafe {
        c.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    c
}

async fn run_cli(data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> Result<String> {
    let out = cli(data_dir, database_url, 0o022)
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "classroom {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A running `classroom serve`, killed when dropped.
struct Served {
    child: tokio::process::Child,
    base: String,
}

impl Served {
    async fn start(
        data_dir: &Path,
        database_url: Option<&str>,
        umask: libc::mode_t,
    ) -> Result<Served> {
        let mut child = cli(data_dir, database_url, umask)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let base = wait_for_url(&mut child).await?;
        Ok(Served { child, base })
    }

    fn pid(&self) -> Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// SIGKILL: no chance to record anything.
    async fn kill_9(mut self) -> Result<()> {
        let pid = self.pid()?;
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        ensure!(killed.success(), "kill -9 {pid}");
        let _ = self.child.wait().await;
        Ok(())
    }
}

/// Reads the child's stdout until the banner names the URL.
async fn wait_for_url(child: &mut tokio::process::Child) -> Result<String> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.strip_prefix("classroom is running at ") {
            let url = url.trim().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url);
        }
    }
    bail!("the server exited before it was ready")
}

/// Signs `person` in on `server` with a link from `classroom signin-link`.
async fn sign_in(
    server: &Served,
    data_dir: &Path,
    database_url: Option<&str>,
    person: &str,
) -> Result<Session> {
    let link = run_cli(data_dir, database_url, &["signin-link", "--person", person]).await?;
    let token = link.trim().rsplit('/').next().context("token")?;
    let base = &server.base;
    Session::with_link(base, &format!("{base}/auth/link/{token}")).await
}

// ---- File modes

fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} is missing", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The data directory and every server file in it that exists, with its mode; `required` must
/// exist.
fn check_private(data: &Path, required: &[&str]) -> Result<()> {
    ensure!(mode(data)? == 0o700, "data dir is {:o}", mode(data)?);
    for name in required {
        ensure!(data.join(name).exists(), "{name} was not created");
    }
    for name in [
        "classroom.db",
        "classroom.db-wal",
        "classroom.db-shm",
        "token_secret",
    ] {
        let path = data.join(name);
        if path.exists() {
            ensure!(mode(&path)? == 0o600, "{name} is {:o}", mode(&path)?);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum First {
    Serve,
    RosterImport,
    SigninLink,
}

/// Under umask 000 (every file world-writable unless the program says otherwise), each command
/// that can come first creates the data directory 0700 and the database, its WAL files and the
/// token secret 0600; a server started afterwards keeps them so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_whichever_command_comes_first() -> Result<()> {
    bounded(LIMIT, async {
        for first in [First::Serve, First::RosterImport, First::SigninLink] {
            let dir = tempfile::tempdir()?;
            let data = dir.path().join("state/data");
            let fixture = portal::fixture_dir();
            match first {
                First::Serve => {
                    let server = Served::start(&data, None, 0o000).await?;
                    // While it runs, in WAL mode: all four files exist.
                    check_private(
                        &data,
                        &[
                            "classroom.db",
                            "classroom.db-wal",
                            "classroom.db-shm",
                            "token_secret",
                        ],
                    )
                    .with_context(|| format!("{first:?} first"))?;
                    server.kill_9().await?;
                }
                First::RosterImport => {
                    let out = cli(&data, None, 0o000)
                        .args(["roster", "import"])
                        .arg(&fixture)
                        .output()
                        .await?;
                    ensure!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    check_private(&data, &["classroom.db"])
                        .with_context(|| format!("{first:?} first"))?;
                }
                First::SigninLink => {
                    // Fails (an empty roster has nobody), but has created the files by then.
                    let out = cli(&data, None, 0o000)
                        .args(["signin-link", "--person", "t-001"])
                        .output()
                        .await?;
                    ensure!(!out.status.success());
                    check_private(&data, &["classroom.db"])
                        .with_context(|| format!("{first:?} first"))?;
                }
            }
            // Whatever came first, a server started after it leaves everything private.
            let server = Served::start(&data, None, 0o000).await?;
            check_private(
                &data,
                &[
                    "classroom.db",
                    "classroom.db-wal",
                    "classroom.db-shm",
                    "token_secret",
                ],
            )
            .with_context(|| format!("serve after {first:?}"))?;
            server.kill_9().await?;
        }
        Ok(())
    })
    .await
}

// ---- Roster bombs

/// The sample roster (with its administrator) as a deflated ZIP whose users.csv is replaced by
/// `users_bytes` of zeros when given: the bomb is 254 KB unpacking to 256 MiB.
fn roster_zip(path: &Path, users_zeros: Option<u64>, padding_entries: usize) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(file);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in portal::roster_with_admin()? {
        zip.start_file(name.as_str(), deflated)?;
        match (name.as_str(), users_zeros) {
            ("users.csv", Some(bytes)) => {
                let chunk = vec![0u8; 1024 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    zip.write_all(&chunk[..n])?;
                    left -= n as u64;
                }
            }
            _ => zip.write_all(text.as_bytes())?,
        }
    }
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..padding_entries {
        zip.start_file(format!("pad/{i:05}"), stored)?;
    }
    zip.finish()?;
    Ok(())
}

/// Peak resident memory of a running process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// Runs `classroom roster import <zip>` to its end; returns whether it succeeded, its standard
/// error and its peak resident memory (from wait4's rusage, which only a parent can read).
fn cli_import_peak(data: &Path, database_url: &str, zip: &Path) -> Result<(bool, String, u64)> {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_classroom"))
        .env("CLASSROOM_DATA_DIR", data)
        .env("CLASSROOM_DATABASE_URL", database_url)
        .env("CLASSROOM_LOG_LEVEL", "warn")
        .args(["roster", "import"])
        .arg(zip)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage is a plain struct the call fills in; `pid` is our own unwaited child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    ensure!(waited == pid, "wait4: {}", std::io::Error::last_os_error());
    let text = reader.join().unwrap_or_default();
    let ok = std::process::ExitStatus::from_raw(status).success();
    // Linux reports ru_maxrss in KiB.
    Ok((ok, text, u64::try_from(usage.ru_maxrss)? * 1024))
}

async fn roster_bombs_are_refused_in_little_memory(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let database = TestDatabase::create(&backend, &data).await?;
        let db = Some(database.url.as_str());
        let roster = dir.path().join("roster");
        std::fs::create_dir(&roster)?;
        portal::write_roster(&portal::roster_with_admin()?, &roster)?;
        run_cli(
            &data,
            db,
            &["roster", "import", roster.to_str().context("path")?],
        )
        .await?;

        let bomb = dir.path().join("bomb.zip");
        roster_zip(&bomb, Some(256 * 1024 * 1024), 0)?;
        let bomb_bytes = std::fs::read(&bomb)?;
        ensure!(
            bomb_bytes.len() < 1024 * 1024,
            "bomb is {} bytes",
            bomb_bytes.len()
        );
        let entries = dir.path().join("entries.zip");
        roster_zip(&entries, None, 20_000)?;
        let entries_bytes = std::fs::read(&entries)?;

        // A killed import's upload is removed when the server starts again.
        let leftover = data.join("roster-upload-killed.zip");
        std::fs::write(&leftover, b"partial")?;
        let server = Served::start(&data, db, 0o022).await?;
        let admin = sign_in(&server, &data, db, "a-001").await?;
        let upload = "/api/admin/roster";

        let (status, body) = admin
            .post_bytes(upload, "application/zip", bomb_bytes)
            .await?;
        let peak = peak_rss(server.pid()?)?;
        eprintln!("server peak after the bomb: {} KiB", peak / 1024);
        assert!(
            peak < MEMORY_CEILING_BYTES,
            "the server peaked at {} MiB",
            peak / (1024 * 1024)
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"], "roster_invalid", "{body}");
        assert_eq!(
            body["problems"][0]["reason"], "the archive unpacks to more than 32 MiB",
            "{body}"
        );

        let (status, body) = admin
            .post_bytes(upload, "application/zip", entries_bytes)
            .await?;
        let peak = peak_rss(server.pid()?)?;
        eprintln!(
            "server peak after the entry-count bomb: {} KiB",
            peak / 1024
        );
        assert!(
            peak < MEMORY_CEILING_BYTES,
            "peak {} MiB",
            peak / (1024 * 1024)
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"], "roster_invalid", "{body}");
        assert_eq!(
            body["problems"][0]["reason"], "the archive has more than 100 entries",
            "{body}"
        );

        // The server goes on serving, nothing was applied, and no upload is left on disk.
        let (status, _) = admin.get("/api/admin/lessons").await?;
        assert_eq!(status, StatusCode::OK);
        let (_, audit) = admin.get("/api/admin/audit?action=roster_imported").await?;
        assert_eq!(audit["events"].as_array().map(Vec::len), Some(0), "{audit}");
        let uploads: Vec<PathBuf> = std::fs::read_dir(&data)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains("roster-upload-"))
            .collect();
        assert!(uploads.is_empty(), "{uploads:?}");
        ensure!(!leftover.exists(), "the killed run's upload is still there");
        server.kill_9().await?;

        // The command line refuses the same bomb, in as little memory.
        let url = database.url.clone();
        let (ok, stderr, peak) =
            tokio::task::spawn_blocking(move || cli_import_peak(&data, &url, &bomb)).await??;
        eprintln!("CLI peak on the bomb: {} KiB", peak / 1024);
        assert!(
            peak < MEMORY_CEILING_BYTES,
            "the CLI peaked at {} MiB",
            peak / (1024 * 1024)
        );
        assert!(!ok, "the bomb was imported: {stderr}");
        assert!(
            stderr.contains("the archive unpacks to more than 32 MiB"),
            "{stderr}"
        );
        Ok(())
    })
    .await
}

// ---- Presence after SIGKILL

/// Sends `join` with `token`; returns the first answer and the open socket.
async fn ws_join(
    ws_url: &str,
    token: &str,
) -> Result<(
    Value,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let join = json!({ "v": 1, "type": "join", "id": "1", "token": token });
    ws.send(Message::Text(join.to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            return Ok((serde_json::from_str(&text)?, ws));
        }
    }
    bail!("the socket closed without an answer")
}

/// `online_now` of `pupil` in the lobby of `lesson`.
async fn online_now(teacher: &Session, lesson: &str, pupil: &str) -> Result<bool> {
    let (status, lobby) = teacher.get(&format!("/api/lessons/{lesson}/lobby")).await?;
    ensure!(status == StatusCode::OK, "lobby: {status} {lobby}");
    lobby["pupils"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["pupil"]["id"] == pupil))
        .and_then(|p| p["online_now"].as_bool())
        .with_context(|| format!("{pupil} not in the lobby: {lobby}"))
}

async fn presence_is_closed_after_sigkill(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let database = TestDatabase::create(&backend, &data).await?;
        let db = Some(database.url.as_str());
        let roster = dir.path().join("roster");
        std::fs::create_dir(&roster)?;
        portal::write_roster(&portal::roster_with_admin()?, &roster)?;
        run_cli(&data, db, &["roster", "import", roster.to_str().context("path")?]).await?;
        let server = Served::start(&data, db, 0o022).await?;
        // A lesson now, for the class s-001 is in.
        let admin = sign_in(&server, &data, db, "a-001").await?;
        let start = portal::now() - 60;
        let rfc3339 = |at: i64| {
            chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.to_rfc3339())
                .context("instant")
        };
        let (status, created) = admin
            .post(
                "/api/admin/lessons",
                json!({
                    "class_id": portal::CLASS,
                    "starts_at": rfc3339(start)?,
                    "ends_at": rfc3339(start + 3600)?,
                    "media_room": portal::LESSON_ROOM,
                }),
            )
            .await?;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let lesson = created["id"].as_str().context("lesson id")?.to_owned();
        let lesson = lesson.as_str();

        let teacher = sign_in(&server, &data, db, "t-001").await?;
        teacher.set_pupil_mode("s-001", &school_date(0), "online").await?;
        let pupil = sign_in(&server, &data, db, "s-001").await?;
        let (status, body) = pupil
            .post(&format!("/api/lessons/{lesson}/join"), json!({}))
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().context("token")?;
        let ws_url = format!("{}/ws", server.base.replacen("http", "ws", 1));
        let (answer, ws) = ws_join(&ws_url, token).await?;
        assert_eq!(answer["type"], "joined", "{answer}");
        // Arrivals are stored in the background: wait until the lobby shows the pupil.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !online_now(&teacher, lesson, "s-001").await? {
            ensure!(tokio::time::Instant::now() < deadline, "s-001 never came online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let killed_at = portal::now();
        server.kill_9().await?;
        drop(ws);

        let server = Served::start(&data, db, 0o022).await?;
        let teacher = sign_in(&server, &data, db, "t-001").await?;
        assert!(
            !online_now(&teacher, lesson, "s-001").await?,
            "s-001 is still online after the restart"
        );
        let (status, export) = teacher
            .get(&format!("/api/lessons/{lesson}/attendance.json"))
            .await?;
        assert_eq!(status, StatusCode::OK, "{export}");
        let row = export[0]["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["pupil_id"] == "s-001"))
            .with_context(|| format!("no s-001 in {export}"))?;
        let online = &row["online"];
        assert_eq!(online["joins"], 1, "{online}");
        assert_eq!(online["connected"], false, "{online}");
        assert_eq!(online["closed_by_restart"], true, "{online}");
        let first_join = online["first_join"].as_i64().context("first_join")?;
        let last_leave = online["last_leave"].as_i64().context("last_leave")?;
        assert!(
            first_join <= last_leave && last_leave <= killed_at,
            "the visit ({first_join}..{last_leave}) must end between the join and the kill ({killed_at})"
        );
        // Another restart changes nothing: the visit is closed once.
        server.kill_9().await?;
        let server = Served::start(&data, db, 0o022).await?;
        let teacher = sign_in(&server, &data, db, "t-001").await?;
        let (_, again) = teacher
            .get(&format!("/api/lessons/{lesson}/attendance.json"))
            .await?;
        assert_eq!(again, export);
        server.kill_9().await?;
        Ok(())
    })
    .await
}
