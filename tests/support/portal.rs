//! Helpers for the signed-in HTTP API tests (tests/portal*.rs): a server on a temporary SQLite
//! file (or PostgreSQL when `CLASSROOM_TEST_POSTGRES_URL` is set) with the sample roster and a
//! lesson today, and an HTTP client that signs in with a one-time link and keeps its session.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use classroom::config::{Config, OidcSettings, Secret};
use classroom::server::ServerHandle;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;

pub const LESSON_ROOM: &str = "lesson-p5-1-today";
pub const CLASS: &str = "class-p5-1";
pub const SECRET: &str = "classroom-tests-only-secret-0123456789abcdef";

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("domain/tests/fixtures/oneroster-sample")
}

pub fn now() -> i64 {
    classroom::portal::unix_now()
}

pub struct PortalServer {
    pub handle: ServerHandle,
    pub lesson_id: String,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub cutoff: String,
    pub oidc: Option<OidcSettings>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cutoff: "08:00".to_owned(),
            oidc: None,
        }
    }
}

impl PortalServer {
    pub async fn start(options: Options) -> Result<PortalServer> {
        let dir = tempfile::tempdir()?;
        let mut config = Config::for_tests();
        config.data_dir = dir.path().to_owned();
        config.database_url = Some(format!(
            "sqlite:{}",
            dir.path().join("classroom.db").display()
        ));
        config.school.cutoff = options.cutoff;
        config.oidc = options.oidc;
        let handle =
            tokio::time::timeout(Duration::from_secs(20), classroom::server::start(config))
                .await
                .context("the server did not start in time")??;
        let db = handle.db();
        classroom_domain::import_dir(db, &fixture_dir()).await?;
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
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        self.handle.http_url()
    }

    /// A one-time sign-in link for `person`, as the CLI or an administrator mints it.
    pub async fn link(&self, person: &str) -> Result<String> {
        let (url, _) = classroom::portal::api::mint_signin_link(
            self.handle.db(),
            &self.url(),
            person,
            Duration::from_secs(900),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(url)
    }

    pub async fn sign_in(&self, person: &str) -> Result<Session> {
        let link = self.link(person).await?;
        Session::with_link(&self.url(), &link).await
    }

    pub async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle.shutdown()).await;
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

    pub async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::POST, path, Some(body), true)
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::PUT, path, Some(body), true)
            .await
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
