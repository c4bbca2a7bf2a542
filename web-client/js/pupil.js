// The pupil's page: the teacher large (their screen share takes the stage when there is one,
// with their camera beside it), every voice in the room audible, and the pupil's own camera and
// microphone when the invite allows it.

import { startSession } from './page.js';
import { SourceToggle } from './controls.js';
import { MAX_BITRATE, openCamera, openMicrophone, showVideo } from './media.js';
import { byId, errorText, showBanner } from './ui.js';

const stage = byId('stage');
// What the stage shows: the newest camera and screen track of a teacher, {trackId, track}.
const teacher = { camera: null, screen: null };
let toggles = [];

const started = startSession({ onJoined, onEnded });

if (started) {
  const { session, audio } = started;
  const onError = (message, err) => showBanner(message ?? errorText(err));

  toggles = [
    new SourceToggle({
      session, source: 'camera', button: byId('btn-camera'), onError,
      open: () => openCamera('pupil'),
      maxBitrate: MAX_BITRATE.pupilCamera,
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
}
