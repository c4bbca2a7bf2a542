// The teacher's page: own camera, microphone and screen share; a grid with every pupil (who is
// speaking, hands, floor, mute, spotlight); and the lesson panel: settings, the hands queue, who
// may speak, quick check and chat. The server enforces every decision (lesson.js sends them).

import { startSession } from './page.js';
import { SourceToggle } from './controls.js';
import { openCamera, openMicrophone, openScreen, showVideo } from './media.js';
import { SEND_PLANS } from './encodings.js';
import { byId, createTile, errorText, h, showBanner } from './ui.js';
import { createQualityBadge, showQuality } from './quality.js';
import { t } from './i18n.js';
import { Lesson } from './lesson.js';
import { mountChat } from './chat.js';
import { mountTeacherCheck } from './quickcheck.js';

const grid = byId('pupil-grid');
// participant_id -> {participant, root, video, caption, badge, marks, actions, camera, screen}
const tiles = new Map();
let toggles = [];
// The grid shows every pupil small, so the server need send only the smallest layer of each.
const TILE_LAYER = 'low';

const started = startSession({ onJoined, onEnded });
const session = started?.session ?? null;
const lesson = session ? new Lesson(session) : null;
const panel = {};

if (started) {
  const { audio } = started;
  const onError = (message, err) => showBanner(message ?? errorText(err));
  window.classroom.lesson = lesson;

  toggles = [
    new SourceToggle({
      session, source: 'camera', button: byId('btn-camera'), onError,
      open: () => openCamera('teacher'),
      plan: SEND_PLANS.teacherCamera,
      labels: { onLabel: t('teacher.camera_off'), offLabel: t('teacher.camera_on'), what: t('live.what.camera') },
      onTrack: (track) => showVideo(byId('preview'), track),
    }),
    new SourceToggle({
      session, source: 'microphone', button: byId('btn-mic'), onError,
      open: openMicrophone,
      labels: { onLabel: t('teacher.mic_off'), offLabel: t('teacher.mic_on'), what: t('live.what.microphone') },
    }),
    new SourceToggle({
      session, source: 'screen', button: byId('btn-screen'), onError,
      open: openScreen,
      plan: SEND_PLANS.screen,
      labels: { onLabel: t('teacher.screen_off'), offLabel: t('teacher.screen_on'), what: t('live.what.screen') },
      onTrack: (track) => {
        showVideo(byId('screen-preview'), track);
        byId('screen-preview-tile').hidden = !track;
      },
    }),
  ];

  session.addEventListener('participantjoined', (ev) => {
    ensureTile(ev.detail.participant);
    renderLesson();
  });
  session.addEventListener('participantleft', (ev) => {
    removeTile(ev.detail.participant.participant_id);
    renderLesson();
  });

  session.addEventListener('remotetrack', (ev) => {
    const tr = ev.detail;
    if (tr.kind === 'audio') {
      audio.add(tr.trackId, tr.track);
      return;
    }
    const tile = ensureTile(tr.participant || { participant_id: tr.participantId });
    if (!tile) return;
    tile[tr.source === 'screen' ? 'screen' : 'camera'] = { trackId: tr.trackId, track: tr.track };
    renderTile(tile);
  });

  session.addEventListener('remotetrackended', (ev) => {
    const tr = ev.detail;
    if (tr.kind === 'audio') {
      audio.remove(tr.trackId);
      return;
    }
    const tile = tiles.get(tr.participantId);
    if (!tile) return;
    const slot = tr.source === 'screen' ? 'screen' : 'camera';
    if (tile[slot]?.trackId === tr.trackId) tile[slot] = null;
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

  // ---- the lesson panel ----
  for (const name of ['speaking', 'cameras']) {
    for (const radio of document.querySelectorAll(`input[name="${name}"]`)) {
      radio.addEventListener('change', () => {
        if (radio.checked) lesson.setLesson({ [name]: radio.value });
      });
    }
  }
  byId('btn-mute-all').addEventListener('click', () => lesson.muteAll());
  byId('btn-spotlight-clear').addEventListener('click', () => lesson.spotlight(null));
  byId('btn-spotlight-self').addEventListener('click', () => {
    const self = session.self?.participant_id;
    lesson.spotlight(lesson.state?.spotlight === self ? null : self);
  });
  const say = (text) => showBanner(text);
  panel.chat = mountChat(byId('chat'), { lesson, session, teacher: true, onError: say });
  panel.check = mountTeacherCheck(byId('check'), { lesson, onError: say });
  lesson.addEventListener('state', renderLesson);
  lesson.addEventListener('speakers', renderSpeakers);
  lesson.addEventListener('refused', (ev) => showBanner(errorText(ev.detail.error)));
}

function onJoined(joined) {
  for (const p of joined.participants || []) ensureTile(p);
  for (const tg of toggles) tg.render();
  byId('btn-leave').disabled = false;
  renderLesson();
  panel.chat?.render();
  panel.check?.render();
}

function onEnded() {
  for (const tg of toggles) tg.release();
  byId('btn-leave').disabled = true;
  renderLesson();
  panel.chat?.render();
  panel.check?.render();
}

function nameOf(participantId) {
  const p = session.participant(participantId);
  return p?.name || p?.identity || t('live.guest');
}

const isPupil = (participant) => participant?.role === 'student';

/** Observers watch but never send, so they get no tile; everyone else does, video or not. */
function ensureTile(participant) {
  if (participant.role === 'observer') return null;
  let tile = tiles.get(participant.participant_id);
  if (!tile) {
    const base = createTile({ participant });
    tile = { ...base, participant, badge: createQualityBadge(), marks: h('p', { class: 'tile-marks' }), camera: null, screen: null };
    base.root.dataset.noVideoLabel = t('live.camera_off');
    const pid = participant.participant_id;
    const spotlight = h('button', {
      type: 'button', class: 'tile-spotlight', 'aria-pressed': 'false', text: t('teacher.spotlight'),
      'aria-label': t('teacher.spotlight_who', { name: nameOf(pid) }),
      on: { click: () => lesson.spotlight(lesson.state?.spotlight === pid ? null : pid) },
    });
    const actions = h('div', { class: 'tile-actions' }, spotlight);
    tile.spotlightButton = spotlight;
    if (isPupil(participant)) {
      tile.muteButton = h('button', {
        type: 'button', class: 'tile-mute', text: t('teacher.mute'),
        'aria-label': t('teacher.mute_who', { name: nameOf(pid) }),
        on: { click: () => (isMuted(pid) ? lesson.unmute(pid) : lesson.mute(pid)) },
      });
      tile.floorButton = h('button', {
        type: 'button', class: 'tile-floor', text: t('teacher.grant_mic'),
        'aria-label': t('teacher.grant_mic_who', { name: nameOf(pid) }),
        on: { click: () => (holdsFloor(pid) ? lesson.revokeFloor(pid) : lesson.grantFloor(pid, false)) },
      });
      actions.append(tile.floorButton, tile.muteButton);
    }
    tile.actions = actions;
    tile.root.append(tile.badge, tile.marks);
    // The buttons sit under the picture, outside the figure, so the caption stays the name.
    tile.cell = h('div', { class: 'tile-cell', dataset: { participantId: pid } }, tile.root, actions);
    showQuality(tile.badge, session?.connectionQuality.get(pid));
    tiles.set(pid, tile);
    grid.append(tile.cell);
    renderTile(tile);
    renderTileState(tile);
    updateCount();
  }
  return tile;
}

function removeTile(participantId) {
  const tile = tiles.get(participantId);
  if (!tile) return;
  showVideo(tile.video, null);
  tile.cell.remove();
  tiles.delete(participantId);
  updateCount();
}

/** A pupil who shares the screen shows that instead of the camera: it is what they want seen. */
function renderTile(tile) {
  const track = (tile.screen || tile.camera)?.track ?? null;
  showVideo(tile.video, track);
  // Capped whether shown or not: a camera hidden behind a screen share needs no more than that.
  for (const tr of [tile.camera, tile.screen]) if (tr) session?.setTrackQuality(tr.trackId, TILE_LAYER);
  tile.root.classList.toggle('no-video', !track);
}

function updateCount() {
  byId('pupil-count').textContent = tiles.size ? `(${tiles.size})` : '';
}

function isMuted(participantId) {
  return (lesson?.state?.muted ?? []).includes(participantId);
}

function holdsFloor(participantId) {
  return (lesson?.state?.floor ?? []).some((f) => f.participant_id === participantId);
}

/** Marks on a tile (hand, floor, muted, spotlight, speaking), in words as well as colour. */
function renderTileState(tile) {
  const pid = tile.participant.participant_id;
  const state = lesson?.state;
  const hand = (state?.hands ?? []).findIndex((x) => x.participant_id === pid);
  const floor = (state?.floor ?? []).find((f) => f.participant_id === pid);
  const muted = (state?.muted ?? []).includes(pid);
  const spot = state?.spotlight === pid;
  const speaking = lesson?.isSpeaking(pid) ?? false;
  const marks = [];
  if (speaking) marks.push(['speaking', t('teacher.mark_speaking')]);
  if (hand >= 0) marks.push(['hand', t('teacher.mark_hand', { n: hand + 1 })]);
  if (floor) marks.push(['floor', t(floor.camera ? 'teacher.mark_floor_camera' : 'teacher.mark_floor')]);
  if (muted) marks.push(['muted', t('teacher.mark_muted')]);
  if (spot) marks.push(['spotlight', t('teacher.mark_spotlight')]);
  tile.marks.replaceChildren(...marks.map(([kind, text]) => h('span', { class: `mark mark-${kind}`, text })));
  tile.root.classList.toggle('speaking', speaking);
  tile.root.dataset.speaking = String(speaking);
  tile.root.classList.toggle('spotlit', spot);
  tile.root.classList.toggle('has-hand', hand >= 0);
  const name = nameOf(pid);
  tile.root.setAttribute('aria-label', marks.length ? `${name}: ${marks.map(([, text]) => text).join(t('common.list_sep'))}` : name);
  const joined = Boolean(session?.joined && state);
  tile.spotlightButton.setAttribute('aria-pressed', String(spot));
  tile.spotlightButton.disabled = !joined;
  if (tile.muteButton) {
    tile.muteButton.disabled = !joined;
    tile.muteButton.textContent = t(muted ? 'teacher.unmute' : 'teacher.mute');
    tile.muteButton.setAttribute('aria-label', t(muted ? 'teacher.unmute_who' : 'teacher.mute_who', { name }));
  }
  if (tile.floorButton) {
    tile.floorButton.disabled = !joined;
    tile.floorButton.textContent = t(floor ? 'teacher.take_back' : 'teacher.grant_mic');
    tile.floorButton.setAttribute('aria-label', t(floor ? 'teacher.take_back_who' : 'teacher.grant_mic_who', { name }));
  }
}

function renderSpeakers() {
  for (const tile of tiles.values()) renderTileState(tile);
  byId('self-tile').classList.toggle('speaking', lesson.isSpeaking(session.self?.participant_id));
}

function renderLesson() {
  if (!lesson) return;
  const state = lesson.state;
  const joined = Boolean(session.joined && state);
  for (const name of ['speaking', 'cameras']) {
    for (const radio of document.querySelectorAll(`input[name="${name}"]`)) {
      radio.checked = state?.[name] === radio.value;
      radio.disabled = !joined;
    }
  }
  byId('btn-mute-all').disabled = !joined;
  const self = session.self?.participant_id;
  const selfSpot = Boolean(self && state?.spotlight === self);
  byId('btn-spotlight-self').disabled = !joined;
  byId('btn-spotlight-self').setAttribute('aria-pressed', String(selfSpot));

  // Hands, in order of raising.
  const hands = (state?.hands ?? []).filter((x) => session.participant(x.participant_id));
  byId('hands').replaceChildren(...hands.map((x) => {
    const pid = x.participant_id;
    const name = nameOf(pid);
    return h('li', { class: 'person', dataset: { participantId: pid } },
      h('span', { class: 'person-name', text: name }),
      h('span', { class: 'person-actions' },
        h('button', { type: 'button', class: 'primary grant-mic', text: t('teacher.grant_mic'), 'aria-label': t('teacher.grant_mic_who', { name }), on: { click: () => lesson.grantFloor(pid, false) } }),
        h('button', { type: 'button', class: 'grant-camera', text: t('teacher.grant_mic_camera'), 'aria-label': t('teacher.grant_mic_camera_who', { name }), on: { click: () => lesson.grantFloor(pid, true) } }),
        h('button', { type: 'button', class: 'lower', text: t('teacher.lower'), 'aria-label': t('teacher.lower_who', { name }), on: { click: () => lesson.lowerHand(pid) } })));
  }));
  byId('hands-empty').hidden = hands.length > 0;
  byId('hands-count').textContent = hands.length ? `(${hands.length})` : '';

  // Who holds the floor.
  const floor = (state?.floor ?? []).filter((f) => session.participant(f.participant_id));
  byId('floor').replaceChildren(...floor.map((f) => {
    const pid = f.participant_id;
    const name = nameOf(pid);
    return h('li', { class: `person${lesson.isSpeaking(pid) ? ' speaking' : ''}`, dataset: { participantId: pid } },
      h('span', { class: 'person-name', text: name }),
      f.camera ? h('span', { class: 'tag', text: t('teacher.with_camera') }) : null,
      h('span', { class: 'person-actions' },
        h('button', { type: 'button', class: 'take-back', text: t('teacher.take_back'), 'aria-label': t('teacher.take_back_who', { name }), on: { click: () => lesson.revokeFloor(pid) } })));
  }));
  byId('floor-empty').hidden = floor.length > 0;

  // Spotlight.
  const spot = state?.spotlight ?? null;
  byId('spotlight-line').hidden = !spot;
  byId('spotlight-text').textContent = spot ? t('teacher.spotlight_on', { name: spot === self ? t('teacher.you') : nameOf(spot) }) : '';

  for (const tile of tiles.values()) renderTileState(tile);
}
