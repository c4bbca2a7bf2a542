//! Holding the media thread still, for tests of what the rest of the server does when it
//! stalls (`/healthz` must say so). Reachable only through the library API.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::command::ShardCommand;
use crate::error::SfuError;
use crate::shard::Sfu;

/// The longest a hold lasts even if its guard is never dropped, so a failed test cannot leave a
/// media thread stuck for the rest of the process.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// While this lives, the media thread is blocked. Dropping it lets the thread go on.
#[derive(Debug)]
#[must_use = "the media thread is released when the hold is dropped"]
pub struct MediaHold {
    _release: std::sync::mpsc::Sender<()>,
}

impl Sfu {
    /// Blocks the media thread until the returned guard is dropped; returns once it is blocked.
    pub async fn hold(&self) -> Result<MediaHold, SfuError> {
        let (held, is_held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel();
        self.commands
            .send(ShardCommand::Hold {
                held,
                release: released,
            })
            .await
            .map_err(|_| SfuError::Stopped)?;
        is_held.await.map_err(|_| SfuError::Stopped)?;
        Ok(MediaHold { _release: release })
    }
}
