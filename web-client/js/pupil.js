// The pupil's page, made for a first-grader on a tablet: the teacher (or whoever the teacher
// spotlights) large, a big hand button, and a plain "please speak now" when the teacher gives
// the floor. The microphone is asked for only then, and stopped when the floor is taken back or
// the teacher mutes; the server withholds the audio anyway, whatever this page does.
// Classmates' cameras appear when the server sends them (cameras for the class, last-N).

import { startSession } from './page.js';
import { SourceToggle } from './controls.js';
import { openCamera, openMicrophone, showVideo } from './media.js';
import { SEND_PLANS } from './encodings.js';
import { byId, createTile, errorText, showBanner } from './ui.js';
import { showQuality } from './quality.js';
import { t } from './i18n.js';
import { Lesson } from './lesson.js';
import { mountChat } from './chat.js';
import { mountPupilCheck } from './quickcheck.js';

const stage = byId('stage');
// participant_id -> {camera, screen}: each {trackId, track} or null. Every video we receive.
const videos = new Map();
// Classmates' tiles in the strip under the stage: participant_id -> tile.
const strip = new Map();
let toggles = [];
// The layer to ask for, by where a video is shown: the stage is the whole screen; the camera in
// the corner beside a shared screen is about a quarter of its width (about 600 device pixels on a
// retina iPad), which the middle layer fills; a classmate's tile is small.
const STAGE_LAYER = 'high';
const CORNER_LAYER = 'medium';
const STRIP_LAYER = 'low';

const started = startSession({ onJoined, onEnded });
const session = started?.session ?? null;
const lesson = session ? new Lesson(session) : null;
const panel = {};

// The microphone follows the lesson: null = as the floor says; true/false = the pupil's own
// choice with the button (kept only while the lesson state that allowed it lasts).
let micChoice = null;
let micFailed = false; // the browser refused: no new automatic attempt until the pupil taps
let cameraByGrant = false; // the camera was started because the floor came with it
let prev = { floor: false, muted: false, camera: false };
let mic;
let camera;

/** The microphone button: the pupil's choice, applied with the lesson's rules (syncMic). */
class MicToggle extends SourceToggle {
  toggle() {
    if (this.busy) return;
    micFailed = false;
    if (this.on) {
      micChoice = false;
    } else {
      micChoice = true;
      // In an open lesson a muted pupil may unmute itself (the microphone starts once the server
      // agrees); in a lesson "by permission" the button is not offered without the floor.
      if (lesson.you.muted) lesson.unmute();
    }
    syncMic();
  }
}

if (started) {
  const { audio } = started;
  const onError = (message, err) => showBanner(message ?? errorText(err));
  window.classroom.lesson = lesson;

  camera = new SourceToggle({
    session, source: 'camera', button: byId('btn-camera'), onError,
    open: () => openCamera('pupil'),
    plan: SEND_PLANS.pupilCamera,
    labels: { onLabel: t('pupil.camera_off'), offLabel: t('pupil.camera_on'), what: t('live.what.camera') },
    onTrack: (track) => {
      showVideo(byId('self-video'), track);
      byId('self-tile').hidden = !track;
      renderNotices();
    },
  });
  mic = new MicToggle({
    session, source: 'microphone', button: byId('btn-mic'),
    onError: (message, err) => {
      micFailed = true;
      onError(message, err);
    },
    open: openMicrophone,
    labels: { onLabel: t('pupil.mic_off'), offLabel: t('pupil.mic_on'), what: t('live.what.microphone') },
  });
  toggles = [camera, mic];

  session.addEventListener('remotetrack', (ev) => {
    const tr = ev.detail;
    if (tr.kind === 'audio') {
      audio.add(tr.trackId, tr.track);
      return;
    }
    if (tr.source !== 'camera' && tr.source !== 'screen') return;
    const v = videos.get(tr.participantId) ?? { camera: null, screen: null };
    v[tr.source] = { trackId: tr.trackId, track: tr.track };
    videos.set(tr.participantId, v);
    renderStage();
  });

  session.addEventListener('remotetrackended', (ev) => {
    const tr = ev.detail;
    if (tr.kind === 'audio') {
      audio.remove(tr.trackId);
      return;
    }
    const v = videos.get(tr.participantId);
    if (v?.[tr.source]?.trackId === tr.trackId) v[tr.source] = null;
    if (v && !v.camera && !v.screen) videos.delete(tr.participantId);
    renderStage();
  });
  session.addEventListener('participantleft', () => renderStage());

  // The server pauses a video that even its lowest layer cannot reach us with; audio goes on.
  session.addEventListener('trackquality', () => renderStage());

  // Pupils receive only their own entry: how their connection is doing.
  session.addEventListener('connectionquality', (ev) => {
    const own = ev.detail.participants.find((p) => p.participant_id === session.self?.participant_id);
    if (own) showQuality(byId('net-quality'), own);
  });

  byId('btn-leave').addEventListener('click', () => session.leave());
  byId('btn-hand').addEventListener('click', () => (lesson.you.hand ? lesson.lowerHand() : lesson.raiseHand()));
  byId('btn-done').addEventListener('click', () => lesson.revokeFloor());
  byId('btn-chat').addEventListener('click', () => {
    const chatPanel = byId('chat-panel');
    chatPanel.hidden = !chatPanel.hidden;
    byId('btn-chat').setAttribute('aria-expanded', String(!chatPanel.hidden));
    if (!chatPanel.hidden) chatPanel.querySelector('input')?.focus();
  });

  panel.chat = mountChat(byId('chat'), { lesson, session, teacher: false, onError: (text) => showBanner(text) });
  panel.check = mountPupilCheck(byId('pupil-check'), { lesson });
  lesson.addEventListener('state', onLessonState);
  lesson.addEventListener('speakers', renderStrip);
  lesson.addEventListener('refused', (ev) => showBanner(errorText(ev.detail.error)));
}

function onJoined() {
  // Buttons for what the invite does not allow are hidden rather than greyed out: a pupil should
  // not wonder why a button never works. The microphone's button appears when talking is allowed.
  camera.button.hidden = !session.canPublish('camera');
  byId('btn-hand').hidden = !session.canPublish('microphone');
  for (const tg of toggles) tg.render();
  byId('btn-leave').disabled = false;
  byId('btn-chat').disabled = false;
  onLessonState();
  panel.chat.render();
}

function onEnded() {
  for (const tg of toggles) tg.release();
  byId('btn-leave').disabled = true;
  byId('btn-hand').disabled = true;
  byId('btn-done').disabled = true;
  panel.chat?.render();
}

const STAGE_ROLES = new Set(['teacher', 'partner_lecturer']);

/** Whether we joined with a guest link: a presenter, not a pupil of the class. */
function isPresenter() {
  return session?.self?.role === 'partner_lecturer';
}

/** Whether the microphone should be on now, by the lesson's state and the pupil's choice. */
function wantMic() {
  const you = lesson.you;
  if (!session.joined || !session.canPublish('microphone')) return false;
  // A partner lecturer (a guest link) teaches: the lesson's floor is not theirs to wait for.
  if (isPresenter()) return micChoice !== false && !micFailed;
  if (you.muted) return false;
  if (you.floor) return micChoice !== false && !micFailed;
  return lesson.state?.speaking === 'open' && micChoice === true && !micFailed;
}

// One start or stop at a time; a change that arrives meanwhile is applied after it.
let micBusy = false;
let micAgain = false;
async function syncMic() {
  if (micBusy) {
    micAgain = true;
    return;
  }
  micBusy = true;
  try {
    do {
      micAgain = false;
      const want = wantMic();
      if (want && !mic.on) await mic.start();
      else if (!want && mic.on) await mic.stop();
    } while (micAgain);
  } finally {
    micBusy = false;
    renderControls();
  }
}

function onLessonState() {
  if (!lesson?.state) {
    renderControls();
    return;
  }
  const you = lesson.you;
  // A new grant (or its end) starts afresh: the pupil's earlier choice belonged to the old one.
  if (you.floor !== prev.floor) {
    micChoice = null;
    micFailed = false;
  }
  if (you.muted && !prev.muted) micChoice = null;
  // "Microphone and camera": the class should see the pupil, so the camera comes on with the
  // floor (if the invite allows it) and goes off with it, unless the pupil had it on already.
  if (you.camera_to_class && you.floor && !prev.camera && !camera.on && !camera.busy && session.canPublish('camera')) {
    cameraByGrant = true;
    camera.start();
  } else if (!you.floor && prev.floor && cameraByGrant) {
    cameraByGrant = false;
    if (camera.on) camera.stop();
  }
  prev = { floor: you.floor, muted: you.muted, camera: you.camera_to_class && you.floor };
  syncMic();
  renderControls();
  renderStage();
}

function renderControls() {
  if (!lesson) return;
  const you = lesson.you;
  const state = lesson.state;
  const joined = Boolean(session.joined && state);
  const hand = byId('btn-hand');
  hand.disabled = !joined || you.floor;
  hand.setAttribute('aria-pressed', String(you.hand));
  hand.classList.toggle('raised', you.hand);
  byId('hand-label').textContent = t(you.hand ? 'pupil.lower_hand' : 'pupil.raise_hand');
  byId('btn-done').disabled = !joined;

  // The microphone's own button: while holding the floor (to pause), and in an open lesson.
  mic.button.hidden = !session.canPublish('microphone') || !(isPresenter() || you.floor || state?.speaking === 'open');
  byId('speak-notice').hidden = !you.floor;
  renderNotices();
}

function renderNotices() {
  if (!lesson) return;
  const you = lesson.you;
  const state = lesson.state;
  byId('camera-notice').hidden = !(you.camera_to_class && camera.on);
  // One plain sentence about what the lesson allows now, when it is not the usual.
  let note = '';
  if (you.muted) note = t(state?.speaking === 'open' ? 'pupil.muted_open' : 'pupil.muted');
  else if (!you.floor && state?.speaking === 'open') note = t('pupil.open_talk');
  else if (you.camera_to_class && camera.on && !you.floor) note = t('pupil.camera_to_class');
  else if (state?.cameras === 'class' && camera.on) note = t('pupil.camera_class_may_see');
  byId('lesson-note').textContent = note;
  byId('lesson-note').hidden = !note;
}

function nameOf(participantId) {
  const p = session.participant(participantId);
  return p?.name || p?.identity || t('live.guest');
}

/**
 * Who is on the stage: the spotlighted participant when the server sends us their video (it
 * does once the teacher spotlights them), otherwise the teacher (the newest with any video).
 */
function stageParticipants() {
  // A partner lecturer's camera takes the stage like the teacher's.
  const teachers = [...videos.keys()].filter((id) => STAGE_ROLES.has(session.participant(id)?.role));
  const teacher = teachers.at(-1) ?? null;
  const spot = lesson?.state?.spotlight ?? null;
  const spotShown = spot && spot !== session.self?.participant_id && videos.has(spot) ? spot : null;
  return { main: spotShown ?? teacher, teacher, spotlight: spotShown };
}

function renderStage() {
  if (!session) return;
  const { main, teacher, spotlight } = stageParticipants();
  const onStage = videos.get(main) ?? { camera: null, screen: null };
  // While someone else is spotlighted, the teacher's face stays visible in the corner.
  const corner = spotlight && teacher && teacher !== main ? videos.get(teacher)?.camera ?? null : null;
  showVideo(byId('teacher-camera'), onStage.camera?.track ?? null);
  showVideo(byId('teacher-screen'), onStage.screen?.track ?? null);
  showVideo(byId('corner-camera'), corner?.track ?? null);
  stage.classList.toggle('has-camera', Boolean(onStage.camera));
  stage.classList.toggle('has-screen', Boolean(onStage.screen));
  stage.classList.toggle('has-corner', Boolean(corner));
  stage.classList.toggle('spotlight', Boolean(spotlight));
  stage.dataset.participantId = main ?? '';
  const caption = byId('stage-caption');
  caption.textContent = spotlight ? t('pupil.spotlight', { name: nameOf(spotlight) }) : '';
  caption.hidden = !spotlight;
  if (onStage.camera) session.setTrackQuality(onStage.camera.trackId, onStage.screen ? CORNER_LAYER : STAGE_LAYER);
  if (onStage.screen) session.setTrackQuality(onStage.screen.trackId, STAGE_LAYER);
  if (corner) session.setTrackQuality(corner.trackId, CORNER_LAYER);
  const paused = (tr) => Boolean(tr && session.trackQuality.get(tr.trackId)?.paused);
  // Why: a weak link (resumes by itself) or a codec this device cannot decode (it will not).
  const pausedFor = (reason) => [onStage.camera, onStage.screen]
    .some((tr) => paused(tr) && (session.trackQuality.get(tr.trackId)?.reason ?? 'weak_network') === reason);
  byId('teacher-camera').classList.toggle('paused', paused(onStage.camera));
  byId('teacher-screen').classList.toggle('paused', paused(onStage.screen));
  byId('video-paused').hidden = !pausedFor('weak_network');
  byId('video-unplayable').hidden = !pausedFor('codec_unsupported');
  renderStrip();
}

/** Classmates whose camera the server sends us, except whoever is on the stage. */
function renderStrip() {
  if (!session) return;
  const { main, teacher } = stageParticipants();
  const shown = new Set();
  for (const [pid, v] of videos) {
    if (pid === main || pid === teacher || !v.camera) continue;
    shown.add(pid);
    let tile = strip.get(pid);
    if (!tile) {
      tile = createTile({ participant: session.participant(pid) ?? { participant_id: pid } });
      strip.set(pid, tile);
      byId('classmates').append(tile.root);
    }
    showVideo(tile.video, v.camera.track);
    session.setTrackQuality(v.camera.trackId, STRIP_LAYER);
    const speaking = lesson?.isSpeaking(pid) ?? false;
    tile.root.classList.toggle('speaking', speaking);
    tile.root.dataset.speaking = String(speaking);
  }
  for (const [pid, tile] of strip) {
    if (shown.has(pid)) continue;
    showVideo(tile.video, null);
    tile.root.remove();
    strip.delete(pid);
  }
  byId('classmates').hidden = strip.size === 0;
}
