//! The lesson's rules in the media plane: who receives each track (`SetAudience`), and who is
//! speaking (`ActiveSpeakers`). The decisions are `core::audience` and `core::speaker`; this
//! applies them to the subscriptions and reports to the control plane.

use std::time::{Duration, Instant};

use tracing::debug;

use super::Shard;
use super::peer::PeerKey;
use crate::command::{Audience, ShardEvent, TrackSource};
use crate::core::audience::Change;
use crate::ids::TrackId;

/// How often each room's speakers are evaluated: often enough that a pupil given the floor shows
/// as speaking within a few hundred milliseconds (`core::speaker::ATTACK` plus this), rarely
/// enough to cost nothing beside the packets.
pub(super) const SPEAKER_INTERVAL: Duration = Duration::from_millis(100);

impl Shard {
    /// Who receives `track_id` from the next packet on.
    /// A mirror's audience is its owner's to change (`cross`): the router sends the command to
    /// the owner only, which passes it on in the order it keeps with the track's packets.
    pub(super) fn set_audience(&mut self, track_id: TrackId, audience: Audience) {
        if self.tracks.get(&track_id).is_none_or(|t| t.owner.is_some()) {
            return;
        }
        if self.apply_audience(track_id, audience) {
            self.propagate_audience(track_id);
        }
    }

    /// Applies an audience to the subscriptions here; false if it did not change.
    pub(super) fn apply_audience(&mut self, track_id: TrackId, audience: Audience) -> bool {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return false;
        };
        if track.audience == audience {
            return false;
        }
        track.audience = audience;
        let mut resumed_video: Vec<PeerKey> = Vec::new();
        let (mut withheld, mut resumed) = (0usize, 0usize);
        for sub in &mut track.subscriptions {
            match sub.set_audience(audience) {
                Change::Same => {}
                Change::Withhold => withheld += 1,
                Change::ResumeAudio => resumed += 1,
                Change::ResumeVideoAtKeyframe => {
                    resumed += 1;
                    resumed_video.push(sub.peer);
                }
            }
        }
        debug!(
            track = %track_id, participant = %track.info.participant, ?audience, withheld,
            resumed, "audience"
        );
        // Its layer is decided now, from the current rates (layers nobody was allowed may have
        // been switched off meanwhile), and the keyframe it starts at is asked for at once.
        let now = self.now;
        for key in resumed_video {
            if self.peer(key).is_some_and(|p| p.connected) {
                self.allocate_connected(key, now);
            }
        }
        true
    }

    /// Evaluates every room's microphones and reports the rooms whose speakers changed.
    pub(super) fn report_speakers(&mut self, now: Instant) {
        let own = self.index();
        let tracks = &mut self.tracks;
        for (room_id, room) in &mut self.rooms {
            // Every hosting shard sees every microphone of the room; the first one reports.
            if room.hosts.first().is_some_and(|first| *first != own) {
                continue;
            }
            let microphones = room.tracks.iter().filter_map(|t| {
                let track = tracks.get_mut(t)?;
                (track.info.source == TrackSource::Microphone).then(|| {
                    (
                        track.info.participant,
                        track.audience,
                        track.speaker.evaluate(now),
                    )
                })
            });
            if let Some(speakers) = room.speakers.update(microphones, now) {
                debug!(room = %room_id, ?speakers, "active speakers");
                let _ = self.events.send(ShardEvent::ActiveSpeakers {
                    room: room_id.clone(),
                    speakers,
                });
            }
        }
    }
}

impl super::Sfu {
    /// Sets who receives a track and returns once the media thread has applied it, so packets
    /// sent after this returns are judged by the new audience. The control plane sends
    /// `ShardCommand::SetAudience` itself and does not wait; this is for tests and tools.
    pub async fn set_audience(
        &self,
        track: TrackId,
        audience: Audience,
    ) -> Result<(), crate::error::SfuError> {
        self.commands
            .send(crate::command::ShardCommand::SetAudience { track, audience })
            .await
            .map_err(|_| crate::error::SfuError::Stopped)?;
        // Commands are handled in order: once a hold is taken, the audience is applied.
        drop(self.hold().await?);
        Ok(())
    }
}
