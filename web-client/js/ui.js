// Small DOM helpers shared by both pages: status line, message banner, video tiles, and the
// wording of errors. Nothing here knows about the protocol beyond error codes.

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
  close.setAttribute('aria-label', 'Dismiss');
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
  caption.textContent = label ?? participant.name ?? participant.identity ?? 'Guest';
  root.append(video, caption);
  return { root, video, caption };
}

const ERROR_TEXT = {
  invalid_token: 'This invite link is not valid. Please ask your teacher for a new link.',
  token_expired: 'This invite link has expired. Please ask your teacher for a new link.',
  replaced: 'This lesson was opened in another tab or on another device, so it was closed here.',
  timeout: 'The connection to the lesson was lost (no answer for too long).',
  server_shutdown: 'The lesson server was restarted.',
  connection_lost: 'The connection to the lesson was lost.',
  connection_failed: 'Could not reach the lesson server. Check the network connection.',
  left: 'You left the lesson.',
  bad_sdp: 'This browser could not agree on a media format with the server.',
  internal: 'The server had a problem. Please try again.',
};

/** A sentence for the user about an error, protocol code or otherwise. */
export function errorText(err) {
  if (!err) return 'Something went wrong.';
  if (err.code === 'permission_denied') {
    return `This invite link does not allow that (${err.permission || 'permission missing'}).`;
  }
  if (typeof err === 'string') return ERROR_TEXT[err] || `The lesson ended (${err}).`;
  return ERROR_TEXT[err.code] || err.message || String(err);
}
