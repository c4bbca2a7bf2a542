// The teacher's lesson lobby: pick one of today's lessons, see who attends how (in person or
// online), who is connected, who is waiting to be let in, mark in-person attendance, download the
// attendance, and start the lesson.
//
// The roster is re-read every 3 s (plain polling: a lobby is a handful of requests a minute, and
// needs no second live channel besides the lesson's WebSocket). Rows are updated in place, keyed
// by pupil, so a teacher tabbing through the buttons keeps their place while the list refreshes.
// Actions are not optimistic: a button stays disabled until the server answered, then the lobby
// is re-read at once.
//
// Test hooks (window.classroomPortal.state): `lessons` (today's, as the API gave them),
// `lessonId` (the chosen one), `lobby` = {pupils: [{id, mode, online_now, waiting, admitted,
// mark}], counts, updatedAt}, `polls` (lobby reads so far), `lastJoinPage`. Markup:
// `button[data-lesson=ID]`, `li[data-pupil=ID]` (with data-waiting / data-mode / data-online-now),
// `button[data-action=admit|refuse]`, `button[data-action=mark][data-status=present|late|absent]`,
// `#btn-start[data-action=start]`.

import { get, post, seg } from './api.js';
import { showGuestLinks } from './guestlinks.js';
import { showPartnerLinks } from './partnerlinks.js';
import { t, formatDate, formatTime, formatInstant } from './i18n.js';
import {
  bootPage, byId, errorText, h, markFailed, markReady, nameNode, personName, poll, showError,
  showMessage, state,
} from './portal.js';

const POLL_MS = 3000;
const MARKS = ['present', 'late', 'absent'];

state.lessons = [];
state.lessonId = null;
state.lobby = null;
state.polls = 0;
state.lastJoinPage = null;

let me;
let stopPolling = null;
let lessonLoad = 0; // bumps on every lesson change, so a late answer for the old one is ignored
let readSeq = 0; // every lobby read; an answer older than the one shown is dropped
let shownSeq = 0;
const rows = new Map(); // pupil id -> {li, key}
const busy = new Set(); // pupil ids with a request in flight

async function main() {
  me = await bootPage('lobby', { roles: ['teacher', 'partner_lecturer', 'administrator'] });
  if (!me) return;
  const params = new URLSearchParams(window.location.search);
  const date = /^\d{4}-\d{2}-\d{2}$/.test(params.get('date') || '') ? params.get('date') : me.today;
  byId('lessons-date').textContent = formatDate(date, { long: true });
  byId('btn-start').addEventListener('click', startLesson);

  const { lessons } = await get(`/api/lessons?date=${date}`);
  state.lessons = lessons;
  byId('loading').hidden = true;
  renderLessons(lessons);

  const wanted = params.get('lesson');
  const initial = lessons.find((l) => l.id === wanted) || (lessons.length === 1 ? lessons[0] : null);
  if (initial) await chooseLesson(initial);
  markReady();
}

function renderLessons(lessons) {
  const list = byId('lessons');
  if (!lessons.length) {
    list.replaceChildren(h('li', { class: 'empty muted', text: t('lobby.no_lessons') }));
    return;
  }
  list.replaceChildren(...lessons.map((lesson) => h('li', {},
    h('button', {
      type: 'button', class: 'lesson-button', 'aria-pressed': 'false',
      dataset: { lesson: lesson.id },
      on: { click: () => chooseLesson(lesson) },
    },
    h('span', { class: 'lesson-time', text: `${formatTime(lesson.starts_at)}–${formatTime(lesson.ends_at)}` }),
    h('span', { class: 'lesson-title', text: lesson.class_title || lesson.class_id }),
    lesson.teachers?.length ? h('span', { class: 'lesson-teachers muted', text: lesson.teachers.map(personName).join(t('common.list_sep')) }) : null))));
}

async function chooseLesson(lesson) {
  if (stopPolling) stopPolling();
  lessonLoad++;
  state.lessonId = lesson.id;
  state.lobby = null;
  rows.clear();
  busy.clear();
  for (const b of document.querySelectorAll('button[data-lesson]')) {
    b.setAttribute('aria-pressed', String(b.dataset.lesson === lesson.id));
  }
  const url = new URL(window.location.href);
  url.searchParams.set('lesson', lesson.id);
  window.history.replaceState(null, '', url);

  const base = `/api/lessons/${seg(lesson.id)}`;
  byId('lobby').hidden = false;
  byId('lobby-heading').textContent = lesson.class_title || lesson.class_id;
  byId('lobby-time').textContent = `${formatDate(me.today)} ${formatTime(lesson.starts_at)}–${formatTime(lesson.ends_at)}`;
  byId('dl-csv').href = `${base}/attendance.csv`;
  byId('dl-json').href = `${base}/attendance.json`;
  byId('roster').replaceChildren();
  byId('counts').replaceChildren();
  byId('lobby-status').textContent = t('common.loading');

  await refresh();
  stopPolling = poll(refresh, POLL_MS);
  await showGuestLinks(lesson.id, me.person?.role);
  await showPartnerLinks(lesson.id, me.person?.role);
}

/** Reads the chosen lesson's lobby and shows it. Failures are shown but polling goes on. */
async function refresh() {
  const load = lessonLoad;
  const id = state.lessonId;
  const seq = ++readSeq; // a poll and an action's re-read may overlap; the newer one wins
  try {
    const lobby = await get(`/api/lessons/${seg(id)}/lobby`);
    if (load !== lessonLoad || seq < shownSeq) return;
    shownSeq = seq;
    state.polls++;
    renderLobby(lobby);
    byId('lobby-status').textContent = t('lobby.updated', { time: formatInstant(new Date().toISOString()) });
    byId('lobby-status').dataset.kind = 'info';
  } catch (err) {
    if (load !== lessonLoad) return;
    byId('lobby-status').textContent = t('lobby.update_failed', { error: errorText(err) });
    byId('lobby-status').dataset.kind = 'error';
  }
}

function countsOf(pupils) {
  const c = { total: pupils.length, online: 0, online_now: 0, waiting: 0, in_person: 0, present: 0, late: 0, absent: 0, unmarked: 0 };
  for (const p of pupils) {
    if (p.mode === 'online') c.online++;
    else c.in_person++;
    if (p.online_now) c.online_now++;
    if (p.waiting) c.waiting++;
    if (p.mode === 'in_person') {
      if (p.mark) c[p.mark]++;
      else c.unmarked++;
    }
  }
  return c;
}

function renderLobby(lobby) {
  const counts = countsOf(lobby.pupils);
  state.lobby = {
    pupils: lobby.pupils.map((p) => ({
      id: p.pupil.id, mode: p.mode, online_now: p.online_now, waiting: p.waiting, admitted: p.admitted, mark: p.mark,
    })),
    counts,
    updatedAt: Date.now(),
  };

  const items = [
    ['total', 'lobby.count_total'], ['online', 'lobby.count_online'], ['online_now', 'lobby.count_online_now'],
    ['waiting', 'lobby.count_waiting'], ['in_person', 'lobby.count_in_person'], ['present', 'mark.present'],
    ['late', 'mark.late'], ['absent', 'mark.absent'], ['unmarked', 'lobby.count_unmarked'],
  ];
  byId('counts').replaceChildren(...items.map(([key, label]) => h('div', {
    class: `count count-${key}${key === 'waiting' && counts.waiting ? ' attention' : ''}`, dataset: { count: key },
  }, h('dt', { text: t(label) }), h('dd', { text: String(counts[key]) }))));

  const roster = byId('roster');
  if (!lobby.pupils.length) {
    roster.replaceChildren(h('li', { class: 'empty muted', text: t('lobby.no_pupils') }));
    rows.clear();
    return;
  }
  roster.querySelector('li.empty')?.remove();
  const seen = new Set();
  let previous = null;
  for (const entry of lobby.pupils) {
    const id = entry.pupil.id;
    seen.add(id);
    const key = JSON.stringify([entry.mode, entry.online_now, entry.waiting, entry.admitted, entry.mark, personName(entry.pupil), busy.has(id)]);
    let row = rows.get(id);
    if (!row) {
      row = { li: h('li', { class: 'pupil-row', dataset: { pupil: id } }), key: null };
      rows.set(id, row);
    }
    if (row.key !== key) {
      fillRow(row.li, entry);
      row.key = key;
    }
    // Keep the server's order (by kana) without re-inserting rows that are already in place.
    const expected = previous ? previous.nextSibling : roster.firstChild;
    if (expected !== row.li) roster.insertBefore(row.li, expected);
    previous = row.li;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) { row.li.remove(); rows.delete(id); }
  }
}

function fillRow(li, entry) {
  const p = entry.pupil;
  const id = p.id;
  const lessonId = state.lessonId;
  const focus = li.contains(document.activeElement) ? document.activeElement : null;
  const focusKey = focus ? `${focus.dataset.action}|${focus.dataset.status || ''}` : null;

  li.dataset.mode = entry.mode;
  li.dataset.waiting = String(entry.waiting);
  li.dataset.onlineNow = String(entry.online_now);
  li.dataset.admitted = String(entry.admitted);
  li.dataset.mark = entry.mark || '';
  li.classList.toggle('waiting', entry.waiting);
  li.setAttribute('aria-busy', String(busy.has(id)));
  const disabled = busy.has(id);

  const status = h('div', { class: 'pupil-status' },
    h('span', { class: `badge mode-badge mode-${entry.mode}`, text: t(entry.mode === 'online' ? 'mode.online_short' : 'mode.in_person_short') }),
    h('span', { class: `presence${entry.online_now ? ' on' : ''}`, text: t(entry.online_now ? 'lobby.online_now' : 'lobby.not_connected') }),
    entry.admitted ? h('span', { class: 'badge admitted', text: t('lobby.admitted') }) : null);

  const parts = [h('div', { class: 'pupil-name' }, nameNode(p)), status];

  if (entry.waiting) {
    parts.push(h('div', { class: 'waiting-box', role: 'group', 'aria-label': t('lobby.waiting_group', { name: personName(p) }) },
      h('span', { class: 'waiting-text', text: t('lobby.waiting') }),
      h('button', { type: 'button', class: 'primary', disabled, dataset: { action: 'admit', pupil: id }, text: t('lobby.admit'), on: { click: () => act(lessonId, id, 'admit') } }),
      h('button', { type: 'button', class: 'danger', disabled, dataset: { action: 'refuse', pupil: id }, text: t('lobby.refuse'), on: { click: () => act(lessonId, id, 'refuse') } })));
  }

  if (entry.mode === 'in_person') {
    parts.push(h('div', { class: 'segmented marks', role: 'group', 'aria-label': t('lobby.mark_group', { name: personName(p) }) },
      MARKS.map((status) => h('button', {
        type: 'button', class: `mark-${status}`, 'aria-pressed': String(entry.mark === status), disabled,
        dataset: { action: 'mark', status, pupil: id }, text: t(`mark.${status}`),
        on: { click: () => { if (entry.mark !== status) act(lessonId, id, 'marks', { status }); } },
      }))));
  }
  li.replaceChildren(...parts);
  if (focusKey) {
    const [action, st] = focusKey.split('|');
    const again = [...li.querySelectorAll('button')].find((b) => b.dataset.action === action && (b.dataset.status || '') === st);
    (again || li.querySelector('button'))?.focus();
  }
}

/** admit / refuse / marks for one pupil: disabled until answered, then the lobby is re-read. */
async function act(lessonId, pupilId, what, extra = {}) {
  if (busy.has(pupilId)) return;
  busy.add(pupilId);
  const row = rows.get(pupilId);
  if (row) { row.key = null; }
  refreshRowBusy(pupilId);
  try {
    await post(`/api/lessons/${seg(lessonId)}/${what}`, { pupil: pupilId, ...extra });
    if (what === 'admit') showMessage(t('lobby.admitted_msg', { name: nameOf(pupilId) }), 'ok');
    if (what === 'refuse') showMessage(t('lobby.refused_msg', { name: nameOf(pupilId) }), 'info');
  } catch (err) {
    showError(err);
  } finally {
    busy.delete(pupilId);
    if (row) row.key = null;
    if (lessonId === state.lessonId) await refresh();
  }
}

function refreshRowBusy(pupilId) {
  const row = rows.get(pupilId);
  if (!row) return;
  row.li.setAttribute('aria-busy', 'true');
  for (const b of row.li.querySelectorAll('button')) b.disabled = true;
}

function nameOf(pupilId) {
  const row = rows.get(pupilId);
  return row ? row.li.querySelector('.person-name')?.firstChild?.textContent || pupilId : pupilId;
}

async function startLesson() {
  const button = byId('btn-start');
  const lessonId = state.lessonId;
  if (!lessonId) return;
  // Open the tab now, inside the click: a window opened after an `await` is a popup to browsers.
  const tab = window.open('about:blank', '_blank');
  button.disabled = true;
  try {
    const answer = await post(`/api/lessons/${seg(lessonId)}/join`);
    // Absolute: a relative path would resolve against the new tab's about:blank.
    const page = new URL(answer.page, window.location.href).href;
    state.lastJoinPage = answer.page;
    if (tab) {
      tab.opener = null;
      tab.location.href = page;
    } else {
      window.location.assign(page); // popups blocked: the lesson matters more than the lobby
    }
  } catch (err) {
    tab?.close();
    showError(err);
  } finally {
    button.disabled = false;
  }
}

main().catch((err) => {
  byId('loading').hidden = true;
  showError(err);
  markFailed(err);
});
