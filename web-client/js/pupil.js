// The pupil's page: the teacher large (their screen share takes the stage when there is one,
// with their camera beside it), every voice in the room audible, and the pupil's own camera and
// microphone when the invite allows it.

import { startSession } from './page.js';
import { SourceToggle } from './controls.js';
import { openCamera, openMicrophone, showVideo } from './media.js';
import { SEND_PLANS } from './encodings.js';
import { byId, errorText, showBanner } from './ui.js';
import { showQuality } from './quality.js';

const stage = byId('stage');
// What the stage shows: the newest camera and screen track of a teacher, {trackId, track}.
const teacher = { camera: null, screen: null };
let toggles = [];
// The layer to ask for, by where a video is shown: the stage is the whole screen; the camera in
// the corner beside a shared screen is about a quarter of its width (about 600 device pixels on a
// retina iPad), which the middle layer fills.
const STAGE_LAYER = 'high';
const CORNER_LAYER = 'medium';

const started = startSession({ onJoined, onEnded });
const session = started?.session ?? null;

if (started) {
  const { audio } = started;
  const onError = (message, err) => showBanner(message ?? errorText(err));

  toggles = [
    new SourceToggle({
      session, source: 'camera', button: byId('btn-camera'), onError,
      open: () => openCamera('pupil'),
      plan: SEND_PLANS.pupilCamera,
      labels: { onLabel: 'Turn off camera', offLabel: 'Turn on camera', what: 'camera' },
      onTrack: (track) => {
        showVideo(byId('self-video'), track);
        byId('self-tile').hidden = !track;
      },
    }),
    new SourceToggle({
      session, source: 'microphone', button: byId('btn-mic'), onError,
      open: openMicrophone,
      labels: { onLabel: 'Turn off microphone', offLabel: 'Turn on microphone', what: 'microphone' },
    }),
  ];

  session.addEventListener('remotetrack', (ev) => {
    const t = ev.detail;
    if (t.kind === 'audio') {
      audio.add(t.trackId, t.track);
    } else if (t.participant?.role === 'teacher' && (t.source === 'camera' || t.source === 'screen')) {
      teacher[t.source] = { trackId: t.trackId, track: t.track };
      renderStage();
    }
  });

  session.addEventListener('remotetrackended', (ev) => {
    const t = ev.detail;
    if (t.kind === 'audio') {
      audio.remove(t.trackId);
    } else if (teacher[t.source]?.trackId === t.trackId) {
      teacher[t.source] = null;
      renderStage();
    }
  });

  // The server pauses a video that even its lowest layer cannot reach us with; audio goes on.
  session.addEventListener('trackquality', (ev) => {
    if ([teacher.camera, teacher.screen].some((t) => t?.trackId === ev.detail.trackId)) renderStage();
  });

  // Pupils receive only their own entry: how their connection is doing.
  session.addEventListener('connectionquality', (ev) => {
    const own = ev.detail.participants.find((p) => p.participant_id === session.self?.participant_id);
    if (own) showQuality(byId('net-quality'), own);
  });

  byId('btn-leave').addEventListener('click', () => session.leave());
}

function onJoined() {
  // Buttons for what the invite does not allow are hidden rather than greyed out: a pupil should
  // not wonder why a button never works.
  for (const t of toggles) {
    t.button.hidden = !t.session.canPublish(t.source);
    t.render();
  }
  byId('btn-leave').disabled = false;
}

function onEnded() {
  for (const t of toggles) t.release();
  byId('btn-leave').disabled = true;
}

function renderStage() {
  showVideo(byId('teacher-camera'), teacher.camera?.track ?? null);
  showVideo(byId('teacher-screen'), teacher.screen?.track ?? null);
  stage.classList.toggle('has-camera', Boolean(teacher.camera));
  stage.classList.toggle('has-screen', Boolean(teacher.screen));
  if (teacher.camera) session.setTrackQuality(teacher.camera.trackId, teacher.screen ? CORNER_LAYER : STAGE_LAYER);
  if (teacher.screen) session.setTrackQuality(teacher.screen.trackId, STAGE_LAYER);
  const paused = (t) => Boolean(t && session.trackQuality.get(t.trackId)?.paused);
  // Why: a weak link (resumes by itself) or a codec this device cannot decode (it will not).
  const pausedFor = (reason) => [teacher.camera, teacher.screen]
    .some((t) => paused(t) && (session.trackQuality.get(t.trackId)?.reason ?? 'weak_network') === reason);
  byId('teacher-camera').classList.toggle('paused', paused(teacher.camera));
  byId('teacher-screen').classList.toggle('paused', paused(teacher.screen));
  byId('video-paused').hidden = !pausedFor('weak_network');
  byId('video-unplayable').hidden = !pausedFor('codec_unsupported');
}
