// A pupil's lessons today, each with one big "Join" button.
//
// Joining asks the server for a join token (POST /api/lessons/{id}/join) and opens the lesson
// page it names. On a day the guardian chose in-person attendance the server answers
// `in_person_today` and lists the pupil as waiting in the teacher's lobby; this page then says so
// kindly and asks again every 3 s (the same request: the server has no other "am I admitted?"
// route) until the teacher lets the pupil in, or the pupil stops waiting.
//
// Test hooks (window.classroomPortal.state): `lessons`, `joining` (lesson id or null),
// `waiting` (bool), `attempts` (join requests for the current lesson), `lastJoinPage`. Markup:
// `button[data-action=join][data-lesson=ID]`, `#waiting`, `#btn-cancel[data-action=cancel]`.

import { get, post, seg } from './api.js';
import { t, formatDate, formatTime } from './i18n.js';
import { bootPage, byId, h, hideMessage, markFailed, markReady, personName, showError, state } from './portal.js';

const POLL_MS = 3000;

state.lessons = [];
state.joining = null;
state.waiting = false;
state.attempts = 0;
state.lastJoinPage = null;

let timer = null;

async function main() {
  const me = await bootPage('lessons', { roles: ['student'] });
  if (!me) return;
  byId('lessons-date').textContent = formatDate(me.today, { long: true });
  byId('btn-cancel').addEventListener('click', stopWaiting);
  const { lessons } = await get(`/api/lessons?date=${me.today}`);
  state.lessons = lessons;
  byId('loading').hidden = true;
  render(lessons);
  markReady();
}

function render(lessons) {
  const list = byId('lessons');
  if (!lessons.length) {
    list.replaceChildren(h('li', { class: 'card empty', text: t('lessons.none') }));
    return;
  }
  const now = Date.now();
  list.replaceChildren(...lessons.map((lesson) => {
    const ended = new Date(lesson.ends_at).getTime() < now;
    return h('li', { class: `card lesson-card${ended ? ' ended' : ''}`, dataset: { lesson: lesson.id } },
      h('div', { class: 'lesson-info' },
        h('span', { class: 'lesson-time', text: `${formatTime(lesson.starts_at)}–${formatTime(lesson.ends_at)}` }),
        h('span', { class: 'lesson-title', text: lesson.class_title || lesson.class_id }),
        lesson.teachers?.length ? h('span', { class: 'muted', text: t('lessons.teachers', { names: lesson.teachers.map(personName).join(t('common.list_sep')) }) }) : null,
        ended ? h('span', { class: 'badge', text: t('lessons.ended') }) : null),
      h('button', {
        type: 'button', class: 'primary huge', dataset: { action: 'join', lesson: lesson.id },
        'aria-label': t('lessons.join_label', { title: lesson.class_title || lesson.class_id }),
        text: t('lessons.join'), on: { click: () => join(lesson) },
      }));
  }));
}

function setJoinButtons(disabled) {
  for (const b of document.querySelectorAll('button[data-action=join]')) b.disabled = disabled;
}

async function join(lesson) {
  if (state.joining && state.joining !== lesson.id) stopWaiting();
  state.joining = lesson.id;
  state.attempts = 0;
  hideMessage();
  setJoinButtons(true);
  await attempt(lesson);
}

async function attempt(lesson) {
  timer = null;
  if (state.joining !== lesson.id) return; // cancelled while the request was on its way
  state.attempts++;
  try {
    const { page } = await post(`/api/lessons/${seg(lesson.id)}/join`);
    if (state.joining !== lesson.id) return;
    state.lastJoinPage = page;
    state.waiting = false;
    window.location.assign(page);
  } catch (err) {
    if (state.joining !== lesson.id) return;
    if (err.code === 'in_person_today') {
      showWaiting(lesson);
      timer = setTimeout(() => attempt(lesson), POLL_MS);
    } else if (err.code === 'rate_limited' || err.code === 'network') {
      // Keep waiting through a busy server or a Wi-Fi hiccup, at the pace the server asks.
      if (!state.waiting) showError(err);
      timer = setTimeout(() => attempt(lesson), Math.max(POLL_MS, (err.retryAfter || 0) * 1000));
    } else {
      stopWaiting();
      showError(err);
    }
  }
}

function showWaiting(lesson) {
  state.waiting = true;
  byId('waiting-lesson').textContent = `${formatTime(lesson.starts_at)} ${lesson.class_title || lesson.class_id}`;
  const box = byId('waiting');
  if (box.hidden) {
    box.hidden = false;
    box.scrollIntoView({ block: 'nearest' });
  }
}

function stopWaiting() {
  clearTimeout(timer);
  timer = null;
  state.joining = null;
  state.waiting = false;
  byId('waiting').hidden = true;
  setJoinButtons(false);
}

main().catch((err) => {
  byId('loading').hidden = true;
  showError(err);
  markFailed(err);
});
