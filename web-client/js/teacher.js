// The teacher's page: own camera, microphone and screen share, and a grid with every pupil.

import { startSession } from './page.js';
import { SourceToggle } from './controls.js';
import { openCamera, openMicrophone, openScreen, showVideo } from './media.js';
import { SEND_PLANS } from './encodings.js';
import { byId, createTile, errorText, showBanner } from './ui.js';
import { createQualityBadge, showQuality } from './quality.js';

const grid = byId('pupil-grid');
// participant_id -> {root, video, caption, badge, camera, screen}; camera/screen: {trackId, track} or null
const tiles = new Map();
let toggles = [];
// The grid shows every pupil small, so the server need send only the smallest layer of each.
const TILE_LAYER = 'low';

const started = startSession({ onJoined, onEnded });
const session = started?.session ?? null;

if (started) {
  const { audio } = started;
  const onError = (message, err) => showBanner(message ?? errorText(err));

  toggles = [
    new SourceToggle({
      session, source: 'camera', button: byId('btn-camera'), onError,
      open: () => openCamera('teacher'),
      plan: SEND_PLANS.teacherCamera,
      labels: { onLabel: 'Stop camera', offLabel: 'Start camera', what: 'camera' },
      onTrack: (track) => showVideo(byId('preview'), track),
    }),
    new SourceToggle({
      session, source: 'microphone', button: byId('btn-mic'), onError,
      open: openMicrophone,
      labels: { onLabel: 'Stop microphone', offLabel: 'Start microphone', what: 'microphone' },
    }),
    new SourceToggle({
      session, source: 'screen', button: byId('btn-screen'), onError,
      open: openScreen,
      plan: SEND_PLANS.screen,
      labels: { onLabel: 'Stop sharing', offLabel: 'Share screen', what: 'screen sharing' },
      onTrack: (track) => {
        showVideo(byId('screen-preview'), track);
        byId('screen-preview-tile').hidden = !track;
      },
    }),
  ];

  session.addEventListener('participantjoined', (ev) => ensureTile(ev.detail.participant));
  session.addEventListener('participantleft', (ev) => removeTile(ev.detail.participant.participant_id));

  session.addEventListener('remotetrack', (ev) => {
    const t = ev.detail;
    if (t.kind === 'audio') {
      audio.add(t.trackId, t.track);
      return;
    }
    const tile = ensureTile(t.participant || { participant_id: t.participantId });
    if (!tile) return;
    tile[t.source === 'screen' ? 'screen' : 'camera'] = { trackId: t.trackId, track: t.track };
    renderTile(tile);
  });

  session.addEventListener('remotetrackended', (ev) => {
    const t = ev.detail;
    if (t.kind === 'audio') {
      audio.remove(t.trackId);
      return;
    }
    const tile = tiles.get(t.participantId);
    if (!tile) return;
    const slot = t.source === 'screen' ? 'screen' : 'camera';
    if (tile[slot]?.trackId === t.trackId) tile[slot] = null;
    renderTile(tile);
  });

  // A teacher receives every participant's entry: each pupil's on their tile, our own in the bar.
  session.addEventListener('connectionquality', (ev) => {
    for (const entry of ev.detail.participants) {
      if (entry.participant_id === session.self?.participant_id) showQuality(byId('net-quality'), entry);
      else if (tiles.has(entry.participant_id)) showQuality(tiles.get(entry.participant_id).badge, entry);
    }
  });

  byId('btn-leave').addEventListener('click', () => session.leave());
}

function onJoined(joined) {
  for (const p of joined.participants || []) ensureTile(p);
  for (const t of toggles) t.render();
  byId('btn-leave').disabled = false;
}

function onEnded() {
  for (const t of toggles) t.release();
  byId('btn-leave').disabled = true;
}

/** Observers watch but never send, so they get no tile; everyone else does, video or not. */
function ensureTile(participant) {
  if (participant.role === 'observer') return null;
  let tile = tiles.get(participant.participant_id);
  if (!tile) {
    tile = { ...createTile({ participant }), badge: createQualityBadge(), camera: null, screen: null };
    tile.root.append(tile.badge);
    showQuality(tile.badge, session?.connectionQuality.get(participant.participant_id));
    tiles.set(participant.participant_id, tile);
    grid.append(tile.root);
    renderTile(tile);
    updateCount();
  }
  return tile;
}

function removeTile(participantId) {
  const tile = tiles.get(participantId);
  if (!tile) return;
  showVideo(tile.video, null);
  tile.root.remove();
  tiles.delete(participantId);
  updateCount();
}

/** A pupil who shares the screen shows that instead of the camera: it is what they want seen. */
function renderTile(tile) {
  const track = (tile.screen || tile.camera)?.track ?? null;
  showVideo(tile.video, track);
  // Capped whether shown or not: a camera hidden behind a screen share needs no more than that.
  for (const t of [tile.camera, tile.screen]) if (t) session?.setTrackQuality(t.trackId, TILE_LAYER);
  tile.root.classList.toggle('no-video', !track);
}

function updateCount() {
  byId('pupil-count').textContent = tiles.size ? `(${tiles.size})` : '';
}
