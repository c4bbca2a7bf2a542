//! The server as a whole, outside the lesson protocol: it starts on free ports, serves the web
//! client, health and metrics, stops in order, and the binary's two commands behave as
//! documented. HTTP is spoken by hand over a `TcpStream`, so nothing here shares code with the
//! server's own HTTP stack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use classroom::config::TlsConfig;
use classroom::server::{self, Config, ServerHandle};
use classroom_signaling::token::{Role, TokenIssuer};

const STEP: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One `GET` on a fresh connection, read to the end.
async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Result<Reply> {
    let stream = TcpStream::connect(addr).await?;
    exchange(stream, addr, path, extra).await
}

async fn exchange<S>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Reply>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(STEP, async {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in extra {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw).await {
            Ok(_) => {}
            // A TLS peer may close without close_notify once the response is complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
        parse_reply(&raw)
    })
    .await
    .with_context(|| format!("GET {path} timed out"))?
}

fn parse_reply(raw: &[u8]) -> Result<Reply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn start() -> Result<ServerHandle> {
    tokio::time::timeout(STEP, server::start(Config::for_tests()))
        .await
        .context("the server did not start in time")?
}

#[tokio::test]
async fn reports_real_addresses_for_port_zero() -> Result<()> {
    let server = start().await?;
    ensure!(server.http_addr.port() != 0, "{}", server.http_addr);
    ensure!(server.media_addr.port() != 0, "{}", server.media_addr);
    ensure!(server.http_addr.ip().is_loopback());
    assert_eq!(
        server.http_url(),
        format!("http://127.0.0.1:{}", server.http_addr.port())
    );
    assert_eq!(
        server.ws_url(),
        format!("ws://127.0.0.1:{}/ws", server.http_addr.port())
    );
    assert_eq!(server.media_announced, vec![server.media_addr]);
    // A second server next to the first: nothing is fixed.
    let other = start().await?;
    ensure!(other.http_addr != server.http_addr);
    other.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn healthz_is_ok() -> Result<()> {
    let server = start().await?;
    let reply = get(server.http_addr, "/healthz", &[]).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn web_client_is_served_with_its_types() -> Result<()> {
    let server = start().await?;
    let addr = server.http_addr;

    for (path, marker) in [
        ("/", "<html"),
        ("/teacher.html", "<html"),
        ("/pupil.html", "<html"),
    ] {
        let reply = get(addr, path, &[]).await?;
        assert_eq!(reply.status, 200, "{path}");
        assert!(
            reply.header("content-type").starts_with("text/html"),
            "{path}: {}",
            reply.header("content-type")
        );
        assert!(reply.text().to_ascii_lowercase().contains(marker), "{path}");
        assert_eq!(reply.header("referrer-policy"), "no-referrer", "{path}");
    }
    let index = get(addr, "/", &[]).await?;
    let on_disk = std::fs::read(repo().join("web-client/index.html"))?;
    assert_eq!(index.body, on_disk, "/ is web-client/index.html");

    // Every script and stylesheet in the folder, so a new file cannot be forgotten.
    for (dir, expected_type) in [("js", "javascript"), ("css", "text/css")] {
        let mut seen = 0;
        for entry in std::fs::read_dir(repo().join("web-client").join(dir))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue; // e.g. js/i18n/: its modules are imported by files checked here
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("/{dir}/{name}");
            let reply = get(addr, &path, &[]).await?;
            assert_eq!(reply.status, 200, "{path}");
            assert!(
                reply.header("content-type").contains(expected_type),
                "{path}: {}",
                reply.header("content-type")
            );
            assert_eq!(reply.header("x-content-type-options"), "nosniff");
            seen += 1;
        }
        ensure!(seen > 0, "no files in web-client/{dir}");
    }

    let missing = get(addr, "/js/no-such-file.js", &[]).await?;
    assert_eq!(missing.status, 404);
    let escape = get(addr, "/js/%2e%2e/%2e%2e/Cargo.toml", &[]).await?;
    assert_eq!(escape.status, 404);

    // Revalidation is answered without the body.
    let etag = index.header("etag").to_owned();
    ensure!(!etag.is_empty(), "no ETag on /");
    let again = get(addr, "/", &[("If-None-Match", &etag)]).await?;
    assert_eq!(again.status, 304);
    ensure!(again.body.is_empty());

    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn metrics_cover_media_signaling_and_process() -> Result<()> {
    let server = start().await?;
    let reply = get(server.metrics_addr, "/metrics", &[]).await?;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").starts_with("text/plain"));
    let text = reply.text();
    for name in [
        "classroom_media_packets_received_total",
        "classroom_media_bytes_sent_total",
        "classroom_media_peer_connections",
        "classroom_media_nacks_received_total",
        "classroom_media_keyframe_requests_sent_total",
        "classroom_media_layer_switches_total",
        "classroom_media_paused_video_tracks",
        "classroom_media_subscriber_estimate_bps_bucket{le=\"+Inf\"}",
        "classroom_rooms",
        "classroom_participants",
        "classroom_tracks",
        "classroom_build_info",
        "classroom_uptime_seconds",
        "process_start_time_seconds",
    ] {
        ensure!(
            text.lines().any(|l| l.starts_with(name)),
            "metric {name} missing from:\n{text}"
        );
    }
    // The exposition format: every sample line is `name[{labels}] value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or("");
        ensure!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_says_goodbye_and_is_bounded() -> Result<()> {
    let server = start().await?;
    let addr = server.http_addr;
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(server.ws_url()))
        .await
        .context("connect timed out")??;
    let token = server.issue_token("basics", "s-1", "Sato", Role::Student);
    let join = serde_json::json!({"v": 1, "type": "join", "id": "1", "token": token});
    ws.send(Message::text(join.to_string())).await?;
    let joined = next_json(&mut ws).await?;
    assert_eq!(joined["type"], "joined", "{joined}");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), server.shutdown())
        .await
        .context("shutdown did not complete in time")?;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(12), "shutdown took {took:?}");

    // The lesson's state and chat follow `joined`; the goodbye comes after whatever was queued.
    let goodbye = loop {
        let message = next_json(&mut ws).await?;
        if message["type"] != "lesson_state" && message["type"] != "chat_history" {
            break message;
        }
    };
    assert_eq!(goodbye["type"], "goodbye", "{goodbye}");
    assert_eq!(goodbye["reason"], "server_shutdown", "{goodbye}");

    ensure!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting connections after shutdown"
    );
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> Result<serde_json::Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(STEP, ws.next())
            .await
            .context("no message in time")?
            .context("socket closed")??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

#[tokio::test]
async fn tokens_are_signed_with_the_configured_secret() -> Result<()> {
    let server = start().await?;
    let token = server.issue_token("math", "t-1", "Tanaka", Role::Teacher);
    let secret = Config::for_tests()
        .token_secret
        .context("for_tests has a secret")?;
    let claims = TokenIssuer::new(secret.expose().as_bytes()).verify(&token)?;
    assert_eq!(claims.room, "math");
    assert_eq!(claims.sub, "t-1");
    assert_eq!(claims.role, Role::Teacher);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn serves_https_when_tls_is_configured() -> Result<()> {
    let dir = Scratch::new("tls")?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let tls = TlsConfig {
        cert: dir.0.join("cert.pem"),
        key: dir.0.join("key.pem"),
    };
    std::fs::write(&tls.cert, certified.cert.pem())?;
    std::fs::write(&tls.key, certified.signing_key.serialize_pem())?;
    let server = tokio::time::timeout(
        STEP,
        server::start(Config {
            tls: Some(tls),
            ..Config::for_tests()
        }),
    )
    .await
    .context("the server did not start in time")??;
    let port = server.http_addr.port();
    assert_eq!(server.http_url(), format!("https://127.0.0.1:{port}"));
    assert_eq!(server.ws_url(), format!("wss://127.0.0.1:{port}/ws"));
    assert_eq!(server.public_url(), format!("https://127.0.0.1:{port}"));

    // A client that trusts this certificate and nothing else.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = connector
        .connect(name, TcpStream::connect(server.http_addr).await?)
        .await
        .context("TLS handshake")?;
    let reply = exchange(stream, server.http_addr, "/healthz", &[]).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");

    // Plain HTTP on the TLS port gets no page.
    let plain = get(server.http_addr, "/healthz", &[]).await;
    ensure!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP was served on the TLS port"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unreadable_certificate_is_a_clear_start_error() -> Result<()> {
    let missing = std::env::temp_dir().join("classroom-basics-no-such-cert.pem");
    let result = server::start(Config {
        tls: Some(TlsConfig {
            cert: missing.clone(),
            key: missing,
        }),
        ..Config::for_tests()
    })
    .await;
    let Err(e) = result else {
        bail!("started without a certificate");
    };
    let message = format!("{e:#}");
    ensure!(message.contains("no-such-cert.pem"), "{message}");
    Ok(())
}

// ---- the binary ----

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "classroom-basics-{tag}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `classroom ARGS` in `cwd` (so no config file of the repository is read), with no
/// `CLASSROOM_*` variables but those given.
/// The (soft, hard) open-file limit of process `pid`, from /proc.
fn open_file_limit(pid: u32) -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit in /proc/PID/limits")?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|n| n.parse::<u64>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(soft)), Some(Ok(hard))) => Ok((soft, hard)),
        _ => bail!("cannot read the open-file limit from `{line}`"),
    }
}

fn classroom(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_classroom"));
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLASSROOM_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn invite(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = classroom(cwd, &[&["invite"], args].concat(), env).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "invite failed: {stderr}");
    let stdout = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(lines.len() == 1, "invite printed {lines:?}");
    Ok(lines[0].to_owned())
}

fn token_of(link: &str) -> Result<&str> {
    link.split_once("?token=")
        .map(|(_, t)| t)
        .context("no token in link")
}

#[test]
fn invite_prints_one_link_per_role() -> Result<()> {
    let dir = Scratch::new("invite")?;
    let secret = "invite-test-secret-0123456789";
    let env = [("CLASSROOM_TOKEN_SECRET", secret)];
    let base = ["--room", "math-3b", "--base-url", "https://school.example/"];

    let teacher = invite(
        &dir.0,
        &[&base[..], &["--name", "Tanaka Sensei", "--role", "teacher"]].concat(),
        &env,
    )?;
    ensure!(
        teacher.starts_with("https://school.example/teacher.html?token="),
        "{teacher}"
    );
    let claims = TokenIssuer::new(secret.as_bytes()).verify(token_of(&teacher)?)?;
    assert_eq!(claims.room, "math-3b");
    assert_eq!(claims.name, "Tanaka Sensei");
    assert_eq!(claims.role, Role::Teacher);
    ensure!(claims.sub.starts_with("tanaka-sensei-"), "{}", claims.sub);
    let ttl = claims.exp - claims.iat;
    ensure!(ttl == 24 * 3600, "default ttl {ttl}");

    for role in ["student", "observer"] {
        let link = invite(
            &dir.0,
            &[
                &base[..],
                &[
                    "--name",
                    "Sato",
                    "--role",
                    role,
                    "--identity",
                    "s-9",
                    "--ttl",
                    "90m",
                ],
            ]
            .concat(),
            &env,
        )?;
        ensure!(
            link.starts_with("https://school.example/pupil.html?token="),
            "{link}"
        );
        let claims = TokenIssuer::new(secret.as_bytes()).verify(token_of(&link)?)?;
        assert_eq!(claims.sub, "s-9");
        assert_eq!(claims.role.to_string(), role);
        assert_eq!(claims.exp - claims.iat, 90 * 60);
    }
    // With an explicit secret, nothing is written.
    ensure!(!dir.0.join("data").exists(), "invite created ./data");

    let out = classroom(
        &dir.0,
        &["invite", "--room", "r", "--name", "n", "--role", "janitor"],
        &env,
    )
    .output()?;
    ensure!(!out.status.success());
    ensure!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn invite_and_serve_share_the_generated_secret() -> Result<()> {
    let dir = Scratch::new("secret")?;
    let data = dir.0.join("state");
    let data_arg = data.to_string_lossy().into_owned();
    let args = [
        "--room",
        "r",
        "--name",
        "Ito",
        "--role",
        "student",
        "--data-dir",
        &data_arg,
    ];
    let first = invite(&dir.0, &args, &[])?;
    let secret = std::fs::read_to_string(data.join("token_secret"))?;
    let issuer = TokenIssuer::new(secret.trim().as_bytes());
    issuer.verify(token_of(&first)?)?;
    // The link's base comes from the default http address.
    ensure!(
        first.starts_with("http://127.0.0.1:8080/pupil.html?token="),
        "{first}"
    );
    // The data directory given through the environment is the same one.
    let second = invite(
        &dir.0,
        &["--room", "r", "--name", "Ito", "--role", "student"],
        &[("CLASSROOM_DATA_DIR", &data_arg)],
    )?;
    issuer.verify(token_of(&second)?)?;
    Ok(())
}

#[test]
fn serve_prints_demo_links_and_stops_on_sigterm() -> Result<()> {
    use std::io::{BufRead, BufReader};

    let dir = Scratch::new("serve")?;
    let mut command = classroom(
        &dir.0,
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--media-bind",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            "state",
            "--log-format",
            "json",
        ],
        &[],
    );
    // Started with a low soft open-file limit, as many systems start services: the server must
    // raise it to the hard limit (a WebSocket per pupil).
    let hard = open_file_limit(std::process::id())?.1;
    let low = hard.min(256);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: low,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().to_string();
    // Drained all along: a full pipe would block the server's logging.
    let stderr_reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let result = (|| -> Result<()> {
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lines
            .iter()
            .any(|l: &String| l.contains("pupil.html?token="))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => bail!("no demo links on stdout; got {lines:?}"),
            }
        }
        let base = lines
            .iter()
            .find_map(|l| l.strip_prefix("classroom is running at "))
            .context("no base URL line")?
            .to_owned();
        ensure!(
            base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
            "{base}"
        );
        let teacher = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("teacher: "))
            .context("no teacher link")?;
        ensure!(
            teacher.starts_with(&format!("{base}/teacher.html?token=")),
            "{teacher}"
        );
        // The generated secret signed the links.
        let secret = std::fs::read_to_string(dir.0.join("state/token_secret"))?;
        let claims = TokenIssuer::new(secret.trim().as_bytes()).verify(token_of(teacher)?)?;
        assert_eq!(claims.room, "demo");

        let addr = base.trim_start_matches("http://").parse()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let health = runtime.block_on(get(addr, "/healthz", &[]))?;
        assert_eq!(health.status, 200);
        let (soft, _) = open_file_limit(child.id())?;
        ensure!(
            soft == hard,
            "the server kept an open-file limit of {soft} (started with {low}, hard limit {hard})"
        );
        Ok(())
    })();

    // SIGTERM to the server this test started, by its pid.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = stderr_reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    result.with_context(|| format!("server log:\n{stderr}"))?;
    let status =
        status.with_context(|| format!("no exit within 15 s after SIGTERM; log:\n{stderr}"))?;
    ensure!(status.success(), "exit status {status}; log:\n{stderr}");
    // JSON logs: every line on stderr is an object.
    for line in stderr.lines() {
        ensure!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    Ok(())
}
