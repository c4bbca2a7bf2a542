// Small DOM helpers shared by both pages: status line, message banner, video tiles, and the
// wording of errors. Nothing here knows about the protocol beyond error codes.

import { t } from './i18n.js';

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page is missing #${id}`);
  return el;
}

/** The invite token from `?token=`; links are the only way in, so there is no login form. */
export function tokenFromUrl(loc = window.location) {
  return new URLSearchParams(loc.search).get('token');
}

export function setStatus(text, kind = 'info') {
  const el = byId('status');
  el.textContent = text;
  el.dataset.kind = kind;
}

/** Shows one message at a time at the top of the page; a newer message replaces the older. */
export function showBanner(text, { kind = 'error', actionLabel, onAction } = {}) {
  const banner = byId('banner');
  banner.replaceChildren();
  banner.dataset.kind = kind;
  const p = document.createElement('p');
  p.textContent = text;
  banner.append(p);
  if (actionLabel) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = actionLabel;
    button.addEventListener('click', onAction);
    banner.append(button);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'banner-close';
  close.setAttribute('aria-label', t('common.dismiss'));
  close.textContent = '×';
  close.addEventListener('click', hideBanner);
  banner.append(close);
  banner.hidden = false;
}

export function hideBanner() {
  byId('banner').hidden = true;
}

/** A toggle button's label and pressed state in one place, so they never disagree. */
export function setToggle(button, on, { onLabel, offLabel }) {
  button.setAttribute('aria-pressed', String(on));
  button.textContent = on ? onLabel : offLabel;
}

/**
 * A video tile with a name, for one participant. `data-participant-id` and `data-identity` let
 * tests and stylesheets find a given person's tile.
 */
export function createTile({ participant, label, muted = true }) {
  const root = document.createElement('figure');
  root.className = 'tile';
  root.dataset.participantId = participant.participant_id;
  if (participant.identity) root.dataset.identity = participant.identity;
  const video = document.createElement('video');
  video.autoplay = true;
  video.muted = muted;
  video.playsInline = true; // iPad Safari would otherwise take the video full screen
  video.setAttribute('playsinline', '');
  const caption = document.createElement('figcaption');
  caption.textContent = label ?? participant.name ?? participant.identity ?? t('live.guest');
  root.append(video, caption);
  return { root, video, caption };
}

// Keys written out (not built from the code) so that the i18n test can see every one is defined.
const ERROR_TEXT = {
  invalid_token: 'live.error.invalid_token',
  token_expired: 'live.error.token_expired',
  replaced: 'live.error.replaced',
  timeout: 'live.error.timeout',
  server_shutdown: 'live.error.server_shutdown',
  connection_lost: 'live.error.connection_lost',
  connection_failed: 'live.error.connection_failed',
  left: 'live.error.left',
  bad_sdp: 'live.error.bad_sdp',
  internal: 'live.error.internal',
  chat_too_long: 'live.error.chat_too_long',
  chat_closed: 'live.error.chat_closed',
  rate_limited: 'live.error.rate_limited',
  not_found: 'live.error.not_found',
  bad_request: 'live.error.bad_request',
};

/** A sentence for the user about an error, protocol code or otherwise. */
export function errorText(err) {
  if (!err) return t('live.error.generic');
  if (err.code === 'permission_denied') {
    // A pupil asking for what only the teacher decides (e.g. unmuting while the lesson is "by
    // permission"): the way forward is the hand, not a permission name.
    if (err.permission === 'teacher') return t('live.error.teacher_only');
    return t('live.error.permission', { permission: err.permission || '?' });
  }
  if (typeof err === 'string') return ERROR_TEXT[err] ? t(ERROR_TEXT[err]) : t('live.error.ended', { reason: err });
  return ERROR_TEXT[err.code] ? t(ERROR_TEXT[err.code]) : (err.message || String(err));
}

/**
 * A DOM element: `attrs` are attributes, except `class`, `text` (textContent: never HTML),
 * `dataset`, `on` ({event: handler}) and non-string values for properties (hidden, disabled).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
