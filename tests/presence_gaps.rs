//! Attendance keeps one presence with a gap when a pupil's socket drops and the pupil resumes
//! within the grace (docs/API.md, attendance `online.gaps`): a real WebSocket dropped without
//! `leave`, then `resume` with the credential of `joined`, against the in-process server with
//! the sample roster; on SQLite and, with `CLASSROOM_TEST_POSTGRES_URL`, PostgreSQL.

use crate::portal_support as portal;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use portal::{Backend, Options, PortalServer, Session, bounded, now, school_date};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

on_both_databases!(a_resume_is_a_gap_in_one_visit_not_a_second_visit);

/// Sends `message` on a fresh socket; returns the first answer and the socket.
async fn first_answer(ws_url: &str, message: Value) -> Result<(Value, Socket)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    ws.send(Message::Text(message.to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            return Ok((serde_json::from_str(&text)?, ws));
        }
    }
    bail!("the socket closed without an answer")
}

/// The pupil's `online` summary in the lesson's JSON export, once `ready` holds for it.
async fn online_when(
    teacher: &Session,
    lesson: &str,
    pupil: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let path = format!("/api/lessons/{lesson}/attendance.json");
    loop {
        let (status, body) = teacher.get(&path).await?;
        ensure!(status == StatusCode::OK, "{status}: {body}");
        let online = body[0]["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["pupil_id"] == pupil))
            .map(|row| row["online"].clone())
            .unwrap_or(Value::Null);
        if ready(&online) {
            return Ok(online);
        }
        // Presence is written in the background; the caller's LIMIT bounds the wait.
        tokio::time::sleep(POLL).await;
    }
}

async fn a_resume_is_a_gap_in_one_visit_not_a_second_visit(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let lesson = server.lesson_id.clone();
        let ws_url = server.handle.ws_url();
        let teacher = server.sign_in("t-001").await?;
        teacher
            .set_pupil_mode("s-001", &school_date(0), "online")
            .await?;
        let pupil = server.sign_in("s-001").await?;
        let (status, body) = pupil
            .post(&format!("/api/lessons/{lesson}/join"), json!({}))
            .await?;
        ensure!(status == StatusCode::OK, "{body}");
        let token = body["token"].as_str().context("token")?;
        let join = json!({ "v": 1, "type": "join", "id": "1", "token": token });
        let (joined, ws) = first_answer(&ws_url, join).await?;
        ensure!(joined["type"] == "joined", "{joined}");
        let resume = joined
            .pointer("/resume/token")
            .and_then(Value::as_str)
            .context("a resume credential in joined")?
            .to_owned();
        online_when(&teacher, &lesson, "s-001", |o| o["connected"] == true).await?;

        // The link drops: the socket goes without `leave`. Attendance shows an open gap.
        drop(ws);
        let online = online_when(&teacher, &lesson, "s-001", |o| {
            o["gaps"].as_array().is_some_and(|g| g.len() == 1)
        })
        .await?;
        assert_eq!(online["gaps"][0]["end"], Value::Null, "{online}");
        assert_eq!(online["connected"], true, "the place is kept: {online}");
        let away_at = online["gaps"][0]["start"].as_i64().context("gap start")?;
        // Let the gap last at least a second (instants are whole seconds), then resume.
        while now() <= away_at + 1 {
            tokio::time::sleep(POLL).await;
        }
        let (resumed, mut ws) = first_answer(
            &ws_url,
            json!({ "v": 1, "type": "resume", "id": "2", "token": resume }),
        )
        .await?;
        ensure!(
            resumed["type"] == "joined" && resumed["resumed"] == true,
            "{resumed}"
        );
        let online =
            online_when(&teacher, &lesson, "s-001", |o| o["gaps"][0]["end"].is_i64()).await?;
        let back_at = online["gaps"][0]["end"].as_i64().context("gap end")?;
        assert!(back_at >= away_at + 2, "{online}");

        // The pupil leaves for good: one visit, one gap, the gap not counted as present.
        ws.send(Message::Text(
            json!({ "v": 1, "type": "leave", "id": "3" })
                .to_string()
                .into(),
        ))
        .await?;
        let _ = ws.close(None).await;
        let online = online_when(&teacher, &lesson, "s-001", |o| o["connected"] == false).await?;
        assert_eq!(
            (online["joins"].as_i64(), online["reconnects"].as_i64()),
            (Some(1), Some(0)),
            "{online}"
        );
        let first = online["first_join"].as_i64().context("first_join")?;
        let last = online["last_leave"].as_i64().context("last_leave")?;
        let away = online["seconds_away"].as_i64().context("seconds_away")?;
        assert_eq!(away, back_at - away_at, "{online}");
        assert_eq!(
            online["seconds_connected"].as_i64(),
            Some(last - first - away),
            "{online}"
        );
        assert_eq!(online["gaps"].as_array().map(Vec::len), Some(1), "{online}");

        // The CSV says the same: one gap, no reconnect.
        let (status, _, csv) = teacher
            .get_text(&format!("/api/lessons/{lesson}/attendance.csv"))
            .await?;
        assert_eq!(status, StatusCode::OK);
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.contains(",s-001,"))
            .unwrap_or_default()
            .split(',')
            .collect();
        assert_eq!((row[14], row[17]), ("0", "1"), "{row:?}");

        server.shutdown().await;
        Ok(())
    })
    .await
}
