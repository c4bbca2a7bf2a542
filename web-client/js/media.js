// Local capture and remote playback: the browser-specific parts of media, kept apart from the
// protocol so that session.js deals only in MediaStreamTracks.

import { t } from './i18n.js';

// Teachers are watched full screen by the whole class; pupils appear as small tiles, and many
// of them share the school's uplink, so they send less.
const CAMERA_CONSTRAINTS = {
  teacher: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 20, max: 30 } },
  pupil: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15, max: 20 } },
};

/** Browsers offer cameras only to secure pages (https, or localhost); say so instead of crashing. */
function mediaDevices() {
  if (!navigator.mediaDevices) {
    throw Object.assign(new Error(t('live.capture.insecure')), { name: 'NotSupportedError' });
  }
  return navigator.mediaDevices;
}

export async function openCamera(profile = 'pupil') {
  const stream = await mediaDevices().getUserMedia({ video: CAMERA_CONSTRAINTS[profile], audio: false });
  return stream.getVideoTracks()[0];
}

export async function openMicrophone() {
  const stream = await mediaDevices().getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: false,
  });
  return stream.getAudioTracks()[0];
}

/** Must be called from a click handler: browsers allow screen capture only on a user gesture. */
export async function openScreen() {
  if (!mediaDevices().getDisplayMedia) {
    throw Object.assign(new Error(t('live.capture.no_screen')), { name: 'NotSupportedError' });
  }
  const stream = await mediaDevices().getDisplayMedia({ video: { frameRate: { ideal: 10, max: 15 } }, audio: false });
  const track = stream.getVideoTracks()[0];
  // Slides and text: keep them sharp and let the frame rate drop instead.
  if ('contentHint' in track) track.contentHint = 'detail';
  return track;
}

/** Shows `track` (or nothing, for null) in a <video> element. */
export function showVideo(video, track) {
  const current = video.srcObject?.getVideoTracks?.()[0] ?? null;
  if (current === track) return;
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) {
    // Videos are muted, so autoplay is always allowed; play() is called anyway because Safari
    // sometimes leaves a reused element paused after srcObject changes.
    video.play().catch(() => {});
  }
}

/**
 * Plays remote audio tracks through hidden <audio> elements. Browsers refuse to start audible
 * playback before the user has touched the page (always on iPad Safari); then `onBlocked` is
 * called, and `resume()` — from a click handler — starts everything that waits.
 */
export class AudioPlayer {
  constructor(container, { onBlocked = () => {}, onUnblocked = () => {} } = {}) {
    this.container = container;
    this.onBlocked = onBlocked;
    this.onUnblocked = onUnblocked;
    this.elements = new Map(); // key -> <audio>
    this.blocked = false;
  }

  add(key, track) {
    this.remove(key);
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.dataset.key = key;
    audio.srcObject = new MediaStream([track]);
    this.container.append(audio);
    this.elements.set(key, audio);
    this.#play(audio);
  }

  remove(key) {
    const audio = this.elements.get(key);
    if (!audio) return;
    audio.srcObject = null;
    audio.remove();
    this.elements.delete(key);
  }

  /** Call from a user gesture. */
  async resume() {
    this.blocked = false;
    const results = await Promise.all([...this.elements.values()].map((audio) => this.#play(audio)));
    if (results.every(Boolean)) this.onUnblocked();
  }

  /** Resolves true when the element plays, false when the browser refused. */
  #play(audio) {
    return audio.play().then(() => true, (err) => {
      if (err.name !== 'NotAllowedError') return true; // e.g. AbortError when replaced: not a block
      if (!this.blocked) {
        this.blocked = true;
        this.onBlocked();
      }
      return false;
    });
  }
}

/** A sentence for the user about a failed getUserMedia/getDisplayMedia; `what` is already in the page's language. */
export function captureErrorText(err, what) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t('live.capture.not_allowed', { what });
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('live.capture.not_found', { what });
    case 'NotReadableError':
      return t('live.capture.in_use', { what });
    case 'NotSupportedError':
      return err.message;
    case 'AbortError':
      return t('live.capture.aborted', { what });
    default:
      return t('live.capture.failed', { what, message: err?.message || String(err) });
  }
}
