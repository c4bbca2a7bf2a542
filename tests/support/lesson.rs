//! The lesson's messages from a test's side (docs/PROTOCOL.md, "Lesson"): a class of clients,
//! actions proven accepted or refused, and waits for `lesson_state`.

use super::signal::is_type;
use super::{REPLY_TIMEOUT, TEST_TIMEOUT, TestClient, TestServer};
use anyhow::{Context, Result, ensure};
use classroom_signaling::token::Role;
use serde_json::{Value, json};
use std::time::Instant;

/// Runs a test body within [`TEST_TIMEOUT`].
pub async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// A teacher (`t-1`) and pupils `s-1`, `s-2`, ... named as given, joined in that order.
pub async fn class(server: &TestServer, pupils: &[&str]) -> Result<(TestClient, Vec<TestClient>)> {
    let url = server.ws_url();
    let teacher = TestClient::connect(&url, &server.token("t-1", "Tanaka", Role::Teacher)).await?;
    let mut joined = Vec::new();
    for (i, name) in pupils.iter().enumerate() {
        let token = server.token(&format!("s-{}", i + 1), name, Role::Student);
        joined.push(TestClient::connect(&url, &token).await?);
    }
    Ok((teacher, joined))
}

/// Sends a lesson action and proves it was accepted: the ping after it is answered and no error
/// carries the action's id (the session handles a socket's messages in order).
pub async fn act(client: &TestClient, mut action: Value) -> Result<()> {
    let id = client.signal.next_id();
    action["id"] = json!(id);
    client.send_json(&action)?;
    client.ping().await?;
    let refused = client
        .signal
        .take_events(|e| is_type(e, "error") && e["id"] == json!(id));
    ensure!(refused.is_empty(), "{action} was refused: {refused:?}");
    Ok(())
}

/// Sends a lesson action and returns the error it must get.
pub async fn refused(client: &TestClient, action: Value) -> Result<Value> {
    let reply = client.request(action.clone()).await?;
    ensure!(
        is_type(&reply, "error"),
        "{action} should be refused: {reply}"
    );
    Ok(reply)
}

/// Waits for a `lesson_state` matching `pred`.
pub async fn state(client: &TestClient, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    client
        .signal
        .expect_event(|e| is_type(e, "lesson_state") && pred(e), REPLY_TIMEOUT)
        .await
}

/// Whether `state`'s list `list` names `pid` (as an id or an entry's `participant_id`).
pub fn lists(state: &Value, list: &str, pid: &str) -> bool {
    state[list].as_array().is_some_and(|l| {
        l.iter()
            .any(|e| e == pid || e["participant_id"].as_str() == Some(pid))
    })
}

/// Packets of `track` that `client` received after `after`.
pub fn received_after(client: &TestClient, track: &str, after: Instant) -> usize {
    client
        .subscriber
        .received(track)
        .iter()
        .filter(|p| p.at > after)
        .count()
}
