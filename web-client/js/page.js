// What both pages do around a session: read the invite token, join, report the connection's
// state to the user while the session gets back in by itself, and leave when the tab goes away.

import { Session } from './session.js';
import { AudioPlayer } from './media.js';
import { exposeForTests } from './hooks.js';
import { byId, errorText, setStatus, showBanner, hideBanner, tokenFromUrl } from './ui.js';
import { t, translatePage } from './i18n.js';
import { showLanguageSwitch } from './langswitch.js';

/**
 * Joins the room named by the page's invite token. Returns {session, audio}, or null when the
 * page cannot join at all (no token). `onJoined(joined)` runs once the room is entered,
 * `onEnded(reason)` once the session is over.
 */
export function startSession({ onJoined = () => {}, onEnded = () => {} } = {}) {
  translatePage();
  showLanguageSwitch(byId('lang-switch'));
  const token = tokenFromUrl();
  if (!token) {
    setStatus(t('live.status.not_connected'), 'error');
    showBanner(t('live.needs_invite'));
    return null;
  }

  const session = new Session({ token });
  exposeForTests(session);

  const soundButton = byId('btn-sound');
  const audio = new AudioPlayer(byId('audio-sink'), {
    onBlocked: () => { soundButton.hidden = false; },
    onUnblocked: () => { soundButton.hidden = true; },
  });
  soundButton.addEventListener('click', () => audio.resume());

  session.addEventListener('error', (ev) => {
    console.warn('classroom:', ev.detail.error);
    showBanner(errorText(ev.detail.error));
  });

  // Nothing to press: the session restarts a failed media connection and reconnects a dropped
  // socket by itself; the page only says what is going on.
  session.addEventListener('connectionstate', (ev) => {
    const { state } = ev.detail;
    if (state === 'failed' || state === 'disconnected') setStatus(t('live.status.reconnecting'), 'warn');
    else if (state === 'connected' && session.joined) setStatus(t('live.status.connected', { name: session.self?.name ?? '' }), 'ok');
  });
  session.addEventListener('reconnecting', () => {
    setStatus(t('live.status.reconnecting'), 'warn');
    showBanner(t('live.reconnecting_banner'), { kind: 'info' });
  });
  session.addEventListener('reconnected', () => {
    hideBanner();
    setStatus(t('live.status.connected', { name: session.self?.name ?? '' }), 'ok');
  });
  // A classmate's tile says so while their connection comes back (teacher page: pupils' tiles).
  const markTile = (participantId, reconnecting) => {
    for (const tile of document.querySelectorAll('.tile[data-participant-id]')) {
      if (tile.dataset.participantId !== participantId) continue;
      tile.classList.toggle('reconnecting', reconnecting);
      let note = tile.querySelector('.tile-reconnecting');
      if (reconnecting && !note) {
        note = document.createElement('span');
        note.className = 'tile-reconnecting';
        note.textContent = t('live.tile_reconnecting');
        tile.append(note);
      } else if (!reconnecting) {
        note?.remove();
      }
    }
  };
  session.addEventListener('participantreconnecting', (ev) => markTile(ev.detail.participant.participant_id, true));
  session.addEventListener('participantreconnected', (ev) => markTile(ev.detail.participant.participant_id, false));

  session.addEventListener('ended', (ev) => {
    const { reason, error } = ev.detail;
    setStatus(t('live.status.disconnected'), reason === 'left' ? 'info' : 'error');
    const canRetry = !['invalid_token', 'token_expired', 'left'].includes(reason);
    showBanner(errorText(error || reason), canRetry
      ? { actionLabel: t('live.reconnect'), onAction: () => window.location.reload() }
      : { kind: reason === 'left' ? 'info' : 'error' });
    onEnded(reason);
  });

  // Leaving explicitly tells the others at once instead of after the server's socket timeout.
  window.addEventListener('pagehide', () => session.leave());

  setStatus(t('live.status.connecting'));
  session.join().then(
    (joined) => {
      hideBanner();
      setStatus(t('live.status.connected', { name: joined.participant.name }), 'ok');
      byId('room').textContent = joined.room;
      onJoined(joined);
    },
    (err) => console.warn('classroom: join failed', err), // `ended` shows it to the user
  );

  return { session, audio };
}
