//! Waiting for a condition with a deadline.

use anyhow::{Result, bail};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Waits until `check` returns `Some`, re-checking whenever `notify` is notified (with
/// `notify_waiters`). Fails with `what` once `timeout` has passed.
///
/// The notification is armed before each check, so a change that lands between the check and the
/// wait is not missed.
pub async fn wait_for<T>(
    notify: &Notify,
    timeout: Duration,
    what: impl FnOnce() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = check() {
            return Ok(value);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // One last look: the condition may have become true exactly at the deadline.
            if let Some(value) = check() {
                return Ok(value);
            }
            bail!("timed out after {timeout:?} waiting for {}", what());
        }
    }
}

/// Polls `check` every few milliseconds until it returns `Some` or `timeout` passes — for
/// conditions that have no notification to wait on.
pub async fn poll_for<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {}", what());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
