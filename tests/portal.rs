//! The signed-in HTTP API (docs/API.md) over real HTTP against an in-process server with the
//! sample OneRoster roster and a lesson today; the lesson gate over real WebSocket signaling;
//! OIDC against a real test issuer; the administrator's routes; the purge of expired sign-in
//! state; and durability of an acknowledged change across SIGKILL of the real binary.
//!
//! Every test runs on a temporary SQLite file (`<test>::sqlite`) and, when
//! `CLASSROOM_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database created and dropped for
//! it (`<test>::postgres`; without the variable that variant passes with a note).

use crate::portal_support as portal;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use portal::{
    Backend, Options, PortalServer, Session, TestDatabase, bounded, client, location, school_date,
    set_cookie,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

on_both_databases!(
    guardian_modes_cutoff_and_authorisation,
    join_tokens_lobby_and_admission,
    gate_refuses_in_person_token_and_records_presence,
    oidc_sign_in_and_tampered_tokens,
    admin_roster_upload_and_refusals,
    expired_sign_in_state_is_purged,
    acknowledged_change_survives_sigkill,
);

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn guardian_modes_cutoff_and_authorisation(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options {
            cutoff: "00:00".to_owned(),
            ..Options::on(&backend)
        })
        .await?;
        let base = server.url();

        // Signed out: /api/me answers, and says so.
        let me: Value = client()
            .get(format!("{base}/api/me"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(me["person"], Value::Null);
        assert_eq!(me["oidc"], json!(false));
        let r = client().get(format!("{base}/api/children")).send().await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        // A link works once.
        let link = server.link("g-001").await?;
        let guardian = Session::with_link(&base, &link).await?;
        assert_eq!(guardian.person_id(), "g-001");
        assert_eq!(guardian.me["home"], "/guardian.html");
        let again = client().post(&link).send().await?;
        assert_eq!(again.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(again.headers()), "/signin.html?error=link_invalid");
        assert!(set_cookie(again.headers(), "classroom_session").is_none());

        // Only their own children.
        let (status, children) = guardian.get("/api/children").await?;
        assert_eq!(status, StatusCode::OK);
        let mut got = ids(&children["children"]);
        got.sort();
        assert_eq!(got, ["s-001", "s-002"]);
        assert_eq!(children["children"][0]["mode_today"], "in_person");

        // A future date: accepted, in the history with old → new.
        let tomorrow = school_date(1);
        let (status, body) = guardian
            .put(
                "/api/children/s-001/modes",
                json!({ "from": tomorrow, "to": tomorrow, "mode": "online", "reason": "風邪" }),
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["changes"].as_array().map(Vec::len), Some(1));
        let (_, history) = guardian.get("/api/children/s-001/history").await?;
        let first = &history["history"][0];
        assert_eq!(first["date"], json!(tomorrow));
        assert_eq!(first["old_mode"], "in_person");
        assert_eq!(first["new_mode"], "online");
        assert_eq!(first["actor"]["id"], "g-001");
        assert_eq!(first["on_behalf"], json!(false));

        // Today, after the cut-off (00:00): refused for the guardian, nothing changed...
        let today = school_date(0);
        let (status, body) = guardian
            .put(
                "/api/children/s-001/modes",
                json!({ "from": today, "to": today, "mode": "online", "reason": null }),
            )
            .await?;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "cutoff_passed");
        // ...accepted from the class teacher, recorded as on the guardian's behalf.
        let teacher = server.sign_in("t-001").await?;
        assert_eq!(teacher.me["home"], "/lobby.html");
        let (status, body) = teacher
            .put(
                "/api/pupils/s-001/modes",
                json!({ "from": today, "to": today, "mode": "online", "reason": "電話連絡" }),
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["changes"][0]["on_behalf"], json!(true));
        let (_, modes) = guardian
            .get(&format!(
                "/api/children/s-001/modes?from={today}&to={tomorrow}"
            ))
            .await?;
        let day = &modes["days"][0];
        assert_eq!(day["mode"], "online");
        assert_eq!(day["set_by"]["id"], "t-001");
        assert_eq!(day["on_behalf"], json!(true));
        assert_eq!(day["editable"], json!(false), "{modes}");
        assert_eq!(modes["days"][1]["editable"], json!(true));
        assert_eq!(modes["cutoff"]["time"], "00:00");

        // Another family's pupil: 403 both ways; and a guardian is not staff.
        let (status, body) = guardian.get("/api/children/s-003/modes").await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden");
        let (status, _) = guardian
            .put(
                "/api/children/s-003/modes",
                json!({ "from": tomorrow, "to": tomorrow, "mode": "online" }),
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = guardian.get("/api/pupils/s-001/history").await?;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // No CSRF header, or a foreign origin: 403 csrf, nothing changed.
        let (status, body) = guardian
            .send(
                reqwest::Method::PUT,
                "/api/children/s-001/modes",
                Some(json!({ "from": tomorrow, "to": tomorrow, "mode": "in_person" })),
                false,
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "csrf");
        let foreign = client()
            .put(format!("{base}/api/children/s-001/modes"))
            .header("cookie", format!("classroom_session={}", guardian.cookie))
            .header("x-csrf-token", &guardian.csrf)
            .header("origin", "https://evil.example")
            .json(&json!({ "from": tomorrow, "to": tomorrow, "mode": "in_person" }))
            .send()
            .await?;
        assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
        let (_, history) = guardian.get("/api/children/s-001/history").await?;
        assert_eq!(history["history"].as_array().map(Vec::len), Some(2));

        // Sign-out ends the session.
        let (status, _) = guardian
            .send(reqwest::Method::POST, "/auth/signout", None, true)
            .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = guardian.get("/api/children").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn join_tokens_lobby_and_admission(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let lesson = server.lesson_id.clone();
        let today = school_date(0);
        let teacher = server.sign_in("t-001").await?;
        teacher.set_pupil_mode("s-001", &today, "online").await?;

        let (status, lessons) = teacher.get(&format!("/api/lessons?date={today}")).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&lessons["lessons"]), vec![lesson.clone()]);

        // Online pupil: a token for the lesson's room.
        let online = server.sign_in("s-001").await?;
        assert_eq!(online.me["home"], "/lessons.html");
        let (status, body) = online.get(&format!("/api/lessons?date={today}")).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&body["lessons"]), vec![lesson.clone()]);
        let join = format!("/api/lessons/{lesson}/join");
        let (status, body) = online.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["page"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/pupil.html?token=")
        );

        // In-person pupil: 403 in_person_today, waiting in the lobby.
        let in_person = server.sign_in("s-003").await?;
        let (status, body) = in_person.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "in_person_today");
        let (status, lobby) = teacher.get(&format!("/api/lessons/{lesson}/lobby")).await?;
        assert_eq!(status, StatusCode::OK, "{lobby}");
        let row = |lobby: &Value, id: &str| {
            lobby["pupils"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["pupil"]["id"] == id).cloned())
                .unwrap_or(Value::Null)
        };
        assert_eq!(row(&lobby, "s-003")["waiting"], json!(true));
        assert_eq!(row(&lobby, "s-001")["mode"], "online");
        assert_eq!(lobby["pupils"].as_array().map(Vec::len), Some(8));

        // Pupils and guardians do not see the lobby.
        let (status, _) = in_person
            .get(&format!("/api/lessons/{lesson}/lobby"))
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // The teacher admits: now a token.
        let (status, _) = teacher
            .post(
                &format!("/api/lessons/{lesson}/admit"),
                json!({ "pupil": "s-003" }),
            )
            .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = in_person.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, lobby) = teacher.get(&format!("/api/lessons/{lesson}/lobby")).await?;
        assert_eq!(row(&lobby, "s-003")["admitted"], json!(true));
        assert_eq!(row(&lobby, "s-003")["waiting"], json!(false));

        // Refused: the page can stop waiting.
        let other = server.sign_in("s-004").await?;
        let (status, _) = other.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = teacher
            .post(
                &format!("/api/lessons/{lesson}/refuse"),
                json!({ "pupil": "s-004" }),
            )
            .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = other.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "refused");

        // Marks.
        let (status, _) = teacher
            .post(
                &format!("/api/lessons/{lesson}/marks"),
                json!({ "pupil": "s-005", "status": "late" }),
            )
            .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, lobby) = teacher.get(&format!("/api/lessons/{lesson}/lobby")).await?;
        assert_eq!(row(&lobby, "s-005")["mark"], "late");

        // t-002 does not teach this lesson.
        let stranger = server.sign_in("t-002").await?;
        let (status, _) = stranger.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = stranger
            .post(
                &format!("/api/lessons/{lesson}/admit"),
                json!({ "pupil": "s-004" }),
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // The teacher's own token; and everything is in the audit log.
        let (status, body) = teacher.post(&join, json!({})).await?;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body["page"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/teacher.html?token=")
        );
        let log = classroom_domain::audit_log(
            server.handle.db(),
            &classroom_domain::AuditFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await?;
        let has = |action: classroom_domain::Action, subject: &str| {
            log.iter()
                .any(|e| e.action == action && e.subject.as_deref() == Some(subject))
        };
        use classroom_domain::Action;
        assert!(has(Action::Admitted, "s-003"));
        assert!(has(Action::Refused, "s-004"));
        assert!(has(Action::JoinRefused, "s-003"));
        assert!(has(Action::JoinTokenIssued, "s-001"));
        assert!(has(Action::SignIn, "t-001"));
        assert!(has(Action::ModeChanged, "s-001"));

        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Sends `join` with `token`; returns the first answer.
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
            let v: Value = serde_json::from_str(&text)?;
            return Ok((v, ws));
        }
    }
    bail!("the socket closed without an answer")
}

async fn gate_refuses_in_person_token_and_records_presence(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let lesson = server.lesson_id.clone();
        let today = school_date(0);
        let teacher = server.sign_in("t-001").await?;
        teacher.set_pupil_mode("s-001", &today, "online").await?;

        // A token minted by `classroom invite`, bypassing the API, for an in-person pupil.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_classroom"))
            .args([
                "invite",
                "--room",
                portal::LESSON_ROOM,
                "--name",
                "Hayashi",
                "--role",
                "student",
                "--identity",
                "s-003",
                "--data-dir",
            ])
            .arg(std::env::temp_dir())
            .env("CLASSROOM_TOKEN_SECRET", portal::SECRET)
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "invite: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = String::from_utf8(out.stdout)?;
        let token = link
            .trim()
            .split("token=")
            .nth(1)
            .context("token in link")?;
        let (answer, _ws) = ws_join(&server.handle.ws_url(), token).await?;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["code"], "not_admitted");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("in-person"),
            "{answer}"
        );

        // The online pupil joins (token from the API) and leaves.
        let pupil = server.sign_in("s-001").await?;
        let (status, body) = pupil
            .post(&format!("/api/lessons/{lesson}/join"), json!({}))
            .await?;
        assert_eq!(status, StatusCode::OK);
        let token = body["token"].as_str().context("token")?;
        let (answer, mut ws) = ws_join(&server.handle.ws_url(), token).await?;
        assert_eq!(answer["type"], "joined", "{answer}");
        ws.send(Message::Text(
            json!({ "v": 1, "type": "leave", "id": "2" })
                .to_string()
                .into(),
        ))
        .await?;
        let _ = ws.close(None).await;
        drop(ws);

        // The export shows one visit, finished; presence is recorded in the background, so poll.
        let path = format!("/api/lessons/{lesson}/attendance.csv");
        let (headers, csv) = loop {
            let (status, headers, csv) = teacher.get_text(&path).await?;
            assert_eq!(status, StatusCode::OK);
            let row = csv
                .lines()
                .find(|l| l.starts_with(&format!("{lesson},")) && l.contains(",s-001,"))
                .unwrap_or_default()
                .to_owned();
            let cols: Vec<&str> = row.split(',').collect();
            // first_join (11) and last_leave (12) both filled in.
            if cols.len() >= 17 && !cols[11].is_empty() && !cols[12].is_empty() {
                break (headers, csv);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(csv.starts_with('\u{FEFF}'), "BOM");
        assert!(csv.contains("\r\n"), "CRLF");
        let header: Vec<&str> = csv
            .trim_start_matches('\u{FEFF}')
            .lines()
            .next()
            .unwrap_or_default()
            .split(',')
            .collect();
        assert_eq!(header, classroom_domain::export::CSV_HEADER);
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.contains(",s-001,"))
            .unwrap_or_default()
            .split(',')
            .collect();
        assert_eq!(row[10], "online");
        assert_eq!(row[14], "0", "one visit, no reconnects: {row:?}");
        let s003: Vec<&str> = csv
            .lines()
            .find(|l| l.contains(",s-003,"))
            .unwrap_or_default()
            .split(',')
            .collect();
        assert_eq!(s003[11], "", "the refused pupil never joined: {s003:?}");
        let disposition = headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(disposition.starts_with("attachment;"), "{disposition}");

        // The refusal at the door is audited (once).
        let log = classroom_domain::audit_log(
            server.handle.db(),
            &classroom_domain::AuditFilter {
                action: Some(classroom_domain::Action::JoinRefused),
                limit: 100,
                ..Default::default()
            },
        )
        .await?;
        assert_eq!(
            log.iter()
                .filter(|e| e.subject.as_deref() == Some("s-003"))
                .count(),
            1
        );

        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn oidc_sign_in_and_tampered_tokens(backend: Backend) -> Result<()> {
    use classroom_auth::test_issuer::{Tamper, TestIssuer, TestIssuerConfig, TestUser};
    bounded(LIMIT, async {
        let issuer = TestIssuer::start(TestIssuerConfig {
            user: TestUser {
                subject: "entra-oid-1".into(),
                email: Some("T.Yamada@mizuho-es.example.jp".into()),
                email_verified: true,
                name: Some("山田 花子".into()),
                ..TestUser::default()
            },
            ..TestIssuerConfig::default()
        })
        .await?;
        let server = PortalServer::start(Options {
            oidc: Some(classroom::config::OidcSettings {
                issuer: issuer.issuer().to_owned(),
                client_id: issuer.client_id().to_owned(),
                client_secret: Some(classroom::config::Secret::new("test-secret")),
                ..classroom::config::OidcSettings::default()
            }),
            ..Options::on(&backend)
        })
        .await?;
        let base = server.url();
        let me: Value = client()
            .get(format!("{base}/api/me"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(me["oidc"], json!(true));

        /// Runs the browser's side of a login; returns the callback's answer.
        async fn login(base: &str, next: &str) -> Result<reqwest::Response> {
            let http = client();
            let start = http
                .get(format!("{base}/auth/oidc/start?next={next}"))
                .send()
                .await?;
            ensure!(start.status().is_redirection(), "start: {}", start.status());
            let cookies: Vec<String> = start
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|c| c.split(';').next().unwrap_or_default().to_owned())
                .collect();
            let authorize = http.get(location(start.headers())).send().await?;
            ensure!(
                authorize.status().is_redirection(),
                "authorize: {}",
                authorize.status()
            );
            let callback = location(authorize.headers());
            ensure!(
                callback.starts_with(&format!("{base}/auth/oidc/callback")),
                "{callback}"
            );
            Ok(http
                .get(callback)
                .header("cookie", cookies.join("; "))
                .send()
                .await?)
        }

        let ok = login(&base, "/lobby.html%3Flesson%3Dx").await?;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(ok.headers()), "/lobby.html?lesson=x");
        let cookie = set_cookie(ok.headers(), "classroom_session").context("session cookie")?;
        let session = Session::with_cookie(&base, &cookie).await?;
        assert_eq!(session.person_id(), "t-001");

        for tamper in [Tamper::ForgedSignature, Tamper::WrongAudience] {
            issuer.set_tamper(tamper);
            let refused = login(&base, "/").await?;
            assert_eq!(refused.status(), StatusCode::SEE_OTHER);
            assert_eq!(
                location(refused.headers()),
                "/signin.html?error=oidc_failed"
            );
            let cookie = set_cookie(refused.headers(), "classroom_session");
            assert!(cookie.is_none(), "no session after {tamper:?}");
        }

        // A valid token for someone not in the roster.
        issuer.set_tamper(Tamper::None);
        issuer.set_user(TestUser {
            email: Some("stranger@example.org".into()),
            ..TestUser::default()
        });
        let unknown = login(&base, "/").await?;
        assert_eq!(location(unknown.headers()), "/signin.html?error=no_account");

        server.shutdown().await;
        Ok(())
    })
    .await
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

fn cli(data_dir: &std::path::Path, database_url: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_classroom"));
    c.env("CLASSROOM_DATA_DIR", data_dir)
        .env("CLASSROOM_HTTP", "127.0.0.1:0")
        .env("CLASSROOM_MEDIA_BIND", "127.0.0.1:0")
        .env("CLASSROOM_METRICS_LISTEN", "127.0.0.1:0")
        .env("CLASSROOM_DATABASE_URL", database_url)
        .env("CLASSROOM_LOG_LEVEL", "warn")
        .kill_on_drop(true);
    c
}

async fn run_cli(data_dir: &std::path::Path, database_url: &str, args: &[&str]) -> Result<String> {
    let out = cli(data_dir, database_url).args(args).output().await?;
    ensure!(
        out.status.success(),
        "classroom {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn acknowledged_change_survives_sigkill(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir()?;
        let data = dir.path();
        let database = TestDatabase::create(&backend, data).await?;
        let db = database.url.as_str();
        let fixture = portal::fixture_dir();
        let report = run_cli(
            data,
            db,
            &["roster", "import", fixture.to_str().context("path")?],
        )
        .await?;
        assert!(report.contains("people"), "{report}");
        // A broken roster: non-zero exit, file:line on stderr, nothing applied.
        let broken = tempfile::tempdir()?;
        for entry in std::fs::read_dir(&fixture)? {
            let entry = entry?;
            std::fs::copy(entry.path(), broken.path().join(entry.file_name()))?;
        }
        let users = std::fs::read_to_string(broken.path().join("users.csv"))?;
        std::fs::write(
            broken.path().join("users.csv"),
            users.replace("s-008,,,true", "s-001,,,true"),
        )?;
        let out = cli(data, db)
            .args(["roster", "import"])
            .arg(broken.path())
            .output()
            .await?;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("users.csv:"), "{stderr}");

        let start = || -> Result<tokio::process::Child> {
            Ok(cli(data, db)
                .arg("serve")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?)
        };
        let mut server = start()?;
        let base = wait_for_url(&mut server).await?;
        let sign_in = |base: String| async move {
            let link = run_cli(data, db, &["signin-link", "--person", "g-001"]).await?;
            let token = link.trim().rsplit('/').next().context("token")?.to_owned();
            Session::with_link(&base, &format!("{base}/auth/link/{token}")).await
        };
        let guardian = sign_in(base.clone()).await?;
        let day = school_date(2);
        let (status, body) = guardian
            .put(
                "/api/children/s-002/modes",
                json!({ "from": day, "to": day, "mode": "online", "reason": "通院" }),
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let pid = server.id().context("pid")?;
        // SIGKILL: no chance to flush anything.
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        assert!(killed.success());
        let _ = server.wait().await;

        let mut server = start()?;
        let base = wait_for_url(&mut server).await?;
        let guardian = sign_in(base).await?;
        let (status, modes) = guardian
            .get(&format!("/api/children/s-002/modes?from={day}&to={day}"))
            .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(modes["days"][0]["mode"], "online", "{modes}");
        assert_eq!(modes["days"][0]["reason"], "通院");
        let _ = server.kill().await;
        Ok(())
    })
    .await
}

/// The sample roster (with its administrator) plus a new pupil `s-009` in class-p5-1.
fn roster_with_new_pupil() -> Result<Vec<(String, String)>> {
    let mut files = portal::roster_with_admin()?;
    let pupil = portal::copied_user(&files, "s-008", "s-009")?.replace("s26008", "s26009");
    portal::append_line(&mut files, "users.csv", &pupil)?;
    portal::append_line(
        &mut files,
        "roles.csv",
        "role-s-009,,,s-009,primary,student,,,org-es-mizuho,",
    )?;
    portal::append_line(
        &mut files,
        "enrollments.csv",
        "enr-p5-1-s-009,,,class-p5-1,org-es-mizuho,s-009,student,false,2026-04-01,2027-03-31",
    )?;
    Ok(files)
}

async fn admin_roster_upload_and_refusals(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let lesson = server.lesson_id.clone();
        let admin = server.sign_in("a-001").await?;
        assert_eq!(admin.me["home"], "/admin.html");
        let upload = "/api/admin/roster";
        let zip = "application/zip";

        // A roster with one new pupil: the report counts exactly that, and the lobby has them.
        let good = portal::stored_zip(&roster_with_new_pupil()?)?;
        let (status, body) = admin.post_bytes(upload, zip, good.clone()).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let report = &body["report"];
        assert_eq!(report["people"]["created"], json!(1), "{report}");
        assert_eq!(report["people"]["updated"], json!(0), "{report}");
        assert_eq!(report["people"]["unchanged"], json!(17), "{report}");
        assert_eq!(report["enrollments"]["created"], json!(1), "{report}");
        assert!(report["warnings"].is_array(), "{report}");
        let teacher = server.sign_in("t-001").await?;
        let (_, lobby) = teacher.get(&format!("/api/lessons/{lesson}/lobby")).await?;
        let pupils: Vec<&str> = lobby["pupils"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["pupil"]["id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(pupils.len(), 9, "{lobby}");
        assert!(pupils.contains(&"s-009"), "{lobby}");
        let (status, audit) = admin.get("/api/admin/audit?action=roster_imported").await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(audit["events"][0]["actor"], "a-001", "{audit}");

        // A broken roster (a renamed teacher, and a duplicate sourcedId): 422 with file, line
        // and reason, and nothing applied, not even the rename on a valid line.
        let mut broken = roster_with_new_pupil()?;
        for (name, text) in &mut broken {
            if name == "users.csv" {
                *text = text
                    .replace("健一,佐藤", "健一,鈴木")
                    .replace("s-008,,,true", "s-001,,,true");
            }
        }
        let (status, body) = admin
            .post_bytes(upload, zip, portal::stored_zip(&broken)?)
            .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"], "roster_invalid");
        let problems = body["problems"].as_array().context("problems")?;
        assert!(!problems.is_empty(), "{body}");
        let duplicate = problems
            .iter()
            .find(|p| p["file"] == "users.csv")
            .context("a problem in users.csv")?;
        assert!(duplicate["line"].as_u64().unwrap_or(0) > 1, "{duplicate}");
        assert!(
            duplicate["reason"]
                .as_str()
                .is_some_and(|r| r.contains("s-001")),
            "{duplicate}"
        );
        // The same good roster again: everything unchanged, so the rename never landed.
        let (status, body) = admin.post_bytes(upload, zip, good.clone()).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["report"]["people"]["updated"], json!(0), "{body}");
        assert_eq!(body["report"]["people"]["unchanged"], json!(18), "{body}");

        // Not a ZIP at all.
        let (status, body) = admin.post_bytes(upload, zip, b"not a zip".to_vec()).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"], "roster_invalid");

        // Over the 20 MiB limit: 413 too_large, and the server goes on serving.
        let huge = vec![0u8; classroom::portal::ROSTER_BODY_LIMIT + 1];
        let (status, body) = admin.post_bytes(upload, zip, huge).await?;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"], "too_large", "{body}");
        let (status, _) = admin.get("/api/admin/lessons").await?;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = admin.post_bytes(upload, zip, good.clone()).await?;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Not an administrator: 403 for the upload and every other admin route; no CSRF
        // header: 403 csrf.
        let guardian = server.sign_in("g-001").await?;
        for who in [&teacher, &guardian] {
            let (status, body) = who.post_bytes(upload, zip, good.clone()).await?;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert_eq!(body["error"], "forbidden");
            let (status, _) = who.get("/api/admin/lessons").await?;
            assert_eq!(status, StatusCode::FORBIDDEN);
            let (status, _) = who
                .post("/api/admin/signin-links", json!({ "person": "a-001" }))
                .await?;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
        let unprotected = client()
            .post(format!("{}{upload}", server.url()))
            .header("cookie", format!("classroom_session={}", admin.cookie))
            .header("content-type", zip)
            .body(good)
            .send()
            .await?;
        assert_eq!(unprotected.status(), StatusCode::FORBIDDEN);
        let body: Value = unprotected.json().await?;
        assert_eq!(body["error"], "csrf");
        let (_, audit) = admin.get("/api/admin/audit?action=roster_imported").await?;
        assert_eq!(
            audit["events"].as_array().map(Vec::len),
            Some(3),
            "only the three accepted uploads: {audit}"
        );

        server.shutdown().await;
        Ok(())
    })
    .await
}

/// `classroom_purged_total{kind=...}` from /metrics on the metrics address `base`.
async fn purged(base: &str, kind: &str) -> Result<u64> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("classroom_purged_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .context("no classroom_purged_total in /metrics")?
        .trim()
        .parse()
        .context("classroom_purged_total")
}

async fn expired_sign_in_state_is_purged(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options {
            purge_interval: Some("1s".to_owned()),
            ..Options::on(&backend)
        })
        .await?;
        let base = server.url();
        let metrics = server.metrics_url();
        let db = server.handle.db();
        // A live session (its link is now used), an expired session and an expired link, and an
        // unused link that is still valid.
        let guardian = server.sign_in("g-001").await?;
        let past = portal::now() - 60;
        classroom_domain::create_session(db, "expired-session", "g-002", past - 3600, past).await?;
        classroom_domain::create_signin_link(db, "expired-link", "g-002", past).await?;
        let unused = server.link("g-002").await?;

        // The background sweep (every second here) removes the dead three.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (sessions, links) = (
                purged(&metrics, "web_session").await?,
                purged(&metrics, "signin_link").await?,
            );
            if sessions >= 1 && links >= 2 {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no purge within 20 s: {sessions} sessions, {links} links"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(db.count(classroom_domain::Table::WebSessions).await?, 1);
        assert_eq!(db.count(classroom_domain::Table::SigninLinks).await?, 1);
        // What was alive still works.
        let (status, _) = guardian.get("/api/children").await?;
        assert_eq!(status, StatusCode::OK);
        let other = Session::with_link(&base, &unused).await?;
        assert_eq!(other.person_id(), "g-002");

        server.shutdown().await;
        Ok(())
    })
    .await
}
