// What every signed-in page shares: who is signed in (header, sign-out), the message area, the
// test hooks, names with their kana reading, and the wording of API errors.
//
// Test hooks: `window.classroomPortal = { ready, state }`. `ready` is a Promise that resolves
// once the page has shown its first data (or rejects if it could not); `state` is a plain object
// each page fills (see the page modules), always with `page`, `lang`, `me` and `lastError` (the
// code of the last failed API request, or null). It exists from the first module evaluation, so
// a test can `waitForFunction(() => window.classroomPortal)` and then await `ready`.

import { getMe, post, onApiError, isRedirecting } from './api.js';
import { t, hasText, lang, setTimeZone, translatePage } from './i18n.js';

export const state = { page: null, lang, me: null, lastError: null, lastErrorMessage: null };
let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; });
ready.catch(() => {}); // a test awaits it; an unawaited rejection must not log a second error
window.classroomPortal = { ready, state };

onApiError((err) => {
  state.lastError = err.code;
  state.lastErrorMessage = err.message;
});

export function markReady() {
  state.ready = true;
  resolveReady(state);
}

export function markFailed(err) {
  state.ready = false;
  rejectReady(err);
}

/** Creates an element. `attrs`: `class`, `text`, `dataset` (object), `on` (events), else attributes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key in el && typeof value !== 'string') el[key] = value; // hidden, disabled, checked
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page is missing #${id}`);
  return el;
}

/** Family name first, as Japanese rosters and schools write names (also in English text). */
export function personName(p) {
  if (!p) return t('person.unknown');
  const name = [p.family_name, p.given_name].filter(Boolean).join(' ');
  return name || p.id || t('person.unknown');
}

export function personKana(p) {
  if (!p) return '';
  return [p.family_name_kana, p.given_name_kana].filter(Boolean).join(' ');
}

/**
 * A name with its kana reading above it (ruby), as school documents print pupils' names; readers
 * who cannot read the kanji (younger pupils, foreign-born parents, substitute teachers) can still
 * say the name. Without kana, just the name.
 */
export function nameNode(p, { className = 'person-name' } = {}) {
  const kana = personKana(p);
  if (!kana) return h('span', { class: className, text: personName(p) });
  return h('ruby', { class: className }, personName(p), h('rp', { text: '(' }), h('rt', { text: kana }), h('rp', { text: ')' }));
}

/** A sentence for an API error: by its code, else the server's message, else the code. */
export function errorText(err) {
  if (!err) return t('error.generic');
  const code = err.code || 'internal';
  if (code === 'rate_limited' && err.retryAfter) return t('error.rate_limited_after', { seconds: err.retryAfter });
  if (hasText(`error.${code}`)) return t(`error.${code}`);
  return err.message ? `${err.message} (${code})` : t('error.generic');
}

/** The page's one message line (role=alert/status). `kind`: error | ok | info. */
export function showMessage(text, kind = 'error') {
  const box = byId('message');
  box.replaceChildren(h('p', { text }), h('button', {
    type: 'button', class: 'message-close', 'aria-label': t('common.dismiss'), text: '×',
    on: { click: hideMessage },
  }));
  box.dataset.kind = kind;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  box.hidden = false;
}

export function hideMessage() {
  byId('message').hidden = true;
}

export function showError(err) {
  if (isRedirecting()) return; // on the way to sign-in; the error is "signed out", not news
  console.warn('classroom:', err?.code || err, err?.message || '');
  showMessage(errorText(err), 'error');
}

/**
 * Starts a signed-in page: translates the markup, loads `/api/me` (a 401 goes to sign-in), fills
 * the header, and checks the role. Resolves with `me`, or null when the page is not for this
 * role (a note with a link to the person's own page is shown instead).
 */
export async function bootPage(page, { roles }) {
  state.page = page;
  translatePage();
  let me;
  try {
    me = await getMe();
  } catch (err) {
    showError(err);
    markFailed(err);
    return null;
  }
  state.me = me;
  setTimeZone(me.timezone);
  fillHeader(me);
  if (!roles.includes(me.person?.role)) {
    const main = byId('main');
    main.replaceChildren(h('section', { class: 'card', id: 'wrong-role' },
      h('p', { text: t('common.wrong_role') }),
      h('a', { class: 'button primary', href: me.home || '/', text: t('common.go_home') })));
    markReady();
    return null;
  }
  return me;
}

function fillHeader(me) {
  const who = document.getElementById('who');
  if (who) who.textContent = personName(me.person);
  const button = document.getElementById('btn-signout');
  if (!button) return;
  button.hidden = false;
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await post('/auth/signout');
      window.location.assign('/signin.html?signed_out=1');
    } catch (err) {
      button.disabled = false;
      showError(err);
    }
  });
}

/**
 * Runs `fn` every `ms` while the tab is visible, never two at once; a hidden tab stops polling
 * (a teacher's lobby left open all day should not keep the server busy) and a visible one polls
 * at once. Returns `stop()`.
 */
export function poll(fn, ms) {
  let timer = null;
  let running = false;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped || running || document.hidden || isRedirecting()) return;
    running = true;
    try {
      await fn();
    } finally {
      running = false;
      if (!stopped && !document.hidden) timer = setTimeout(tick, ms);
    }
  };
  const onVisibility = () => {
    if (!document.hidden && !timer && !running) tick();
  };
  document.addEventListener('visibilitychange', onVisibility);
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
