//! The control plane's door to several media shards: one thread that takes every
//! [`ShardCommand`] and sends it to the shard it concerns.
//!
//! It places each joining participant (`core::placement`) and remembers where, so a
//! participant's later commands reach its shard; commands about a track (`SetAudience`) go to
//! the shard it was published on (its id says which, `core::placement::track_owner`), which
//! passes them to its mirrors in order with the packets; when
//! the shards hosting a room change, every shard concerned is told (`mesh::Control::Hosts`).
//! Nothing here is on the packet path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::command::ShardCommand;
use crate::core::placement::{HostsChange, Placement, track_owner};
use crate::shard::mesh::{Control, Inbox};

/// The router's view of one shard.
pub(crate) struct ShardDoor {
    pub commands: mpsc::Sender<ShardCommand>,
    pub inbox: Arc<Inbox>,
}

pub(crate) struct Router {
    shards: Vec<ShardDoor>,
    placement: Placement,
}

impl Router {
    pub fn new(shards: Vec<ShardDoor>, whole_room: usize) -> Router {
        let placement = Placement::new(shards.len(), whole_room);
        Router { shards, placement }
    }

    /// Routes commands until `Shutdown` (passed to every shard) or until the control plane is
    /// gone.
    pub async fn run(mut self, mut commands: mpsc::Receiver<ShardCommand>) {
        while let Some(cmd) = commands.recv().await {
            if matches!(cmd, ShardCommand::Shutdown) {
                break;
            }
            self.route(cmd).await;
        }
        for shard in &self.shards {
            let _ = shard.commands.send(ShardCommand::Shutdown).await;
        }
    }

    async fn route(&mut self, cmd: ShardCommand) {
        match cmd {
            ShardCommand::Join {
                participant,
                ref room,
                ..
            } => {
                let (shard, change) = self.placement.join(participant, room);
                debug!(%participant, shard, load = ?self.placement.load(), "participant placed");
                if let Some(change) = change {
                    self.tell_hosts(change);
                }
                self.send(shard, cmd).await;
            }
            ShardCommand::Leave { participant } => {
                let placed = self.placement.leave(participant);
                let shard = placed.as_ref().map_or(0, |(s, _)| *s);
                self.send(shard, cmd).await;
                if let Some((_, Some(change))) = placed {
                    self.tell_hosts(change);
                }
            }
            ShardCommand::SetTrackCap { participant, .. }
            | ShardCommand::LinkLayers { participant, .. }
            | ShardCommand::Publish { participant, .. }
            | ShardCommand::SubscriberAnswer { participant, .. }
            | ShardCommand::Reoffer { participant, .. } => {
                // An unknown participant gets its error from any shard: the first.
                let shard = self.placement.shard_of(participant).unwrap_or(0);
                self.send(shard, cmd).await;
            }
            ShardCommand::SetAudience { track, .. } => {
                // Only the owner applies it; it passes it on to the shards mirroring the track.
                let owner = track_owner(track.0, self.shards.len());
                self.send(owner, cmd).await;
            }
            ShardCommand::Hold { held, release } => self.hold_all(held, release).await,
            ShardCommand::Shutdown => {}
        }
    }

    async fn send(&self, shard: u8, cmd: ShardCommand) {
        if let Some(door) = self.shards.get(usize::from(shard))
            && door.commands.send(cmd).await.is_err()
        {
            warn!(shard, "a media shard has stopped");
        }
    }

    fn tell_hosts(&self, change: HostsChange) {
        debug!(room = %change.room, hosts = ?change.hosts, "room hosts");
        for shard in &change.tell {
            if let Some(door) = self.shards.get(usize::from(*shard)) {
                door.inbox.send_control(Control::Hosts {
                    room: change.room.clone(),
                    shards: change.hosts.clone(),
                });
            }
        }
    }

    /// Holds every shard (a test hook): the media plane is stuck when all its threads are.
    async fn hold_all(&self, held: oneshot::Sender<()>, release: std::sync::mpsc::Receiver<()>) {
        let mut releases = Vec::new();
        let mut waits = Vec::new();
        for door in &self.shards {
            let (shard_held, is_held) = oneshot::channel();
            let (shard_release, released) = std::sync::mpsc::channel();
            let hold = ShardCommand::Hold {
                held: shard_held,
                release: released,
            };
            if door.commands.send(hold).await.is_ok() {
                releases.push(shard_release);
                waits.push(is_held);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        let _ = held.send(());
        // Released when the caller's guard drops (or at the hold's limit), off this thread.
        let spawned = std::thread::Builder::new()
            .name("media-hold".into())
            .spawn(move || {
                let _ = release.recv_timeout(crate::hold::MAX_HOLD + Duration::from_secs(1));
                drop(releases);
            });
        if let Err(e) = spawned {
            warn!("cannot wait for the hold's release: {e}");
        }
    }
}
