// The administrator's page: roster import, lessons, one-time sign-in links, the audit log.
//
// Each section works on its own; one failing (say, the audit log) does not stop the others.
// Times typed into the lesson form are school time (the school's zone from /api/me, whatever the
// administrator's computer is set to) and are sent as UTC instants, as the API asks.
//
// Test hooks (window.classroomPortal.state): `rosterReport` (the last import's report),
// `rosterProblems` (the last refusal's problems), `adminLessons`, `lastCreatedLesson`,
// `signinLink` (the last minted URL), `audit` (the events shown). Markup: forms `#roster-form`,
// `#lesson-form`, `#link-form`, `#audit-form`; `#roster-problems tr[data-file][data-line]`,
// `#link-url`, `#btn-copy`.

import { get, post } from './api.js';
import { t, hasText, addDays, formatDate, formatTime, formatInstant, dateOfInstant, schoolTimeToUtc } from './i18n.js';
import { bootPage, byId, errorText, h, markFailed, markReady, personName, showError, state } from './portal.js';

const LESSON_DAYS = 14;
const AUDIT_LIMIT = 100;
// The audit actions the server records (domain/src/audit.rs); the filter offers these.
const AUDIT_ACTIONS = ['sign_in', 'sign_in_failed', 'mode_changed', 'admitted', 'refused', 'exported',
  'roster_imported', 'join_token_issued', 'join_refused'];

state.rosterReport = null;
state.rosterProblems = null;
state.adminLessons = [];
state.lastCreatedLesson = null;
state.signinLink = null;
state.audit = [];

let me;

async function main() {
  me = await bootPage('admin', { roles: ['administrator'] });
  if (!me) return;
  byId('roster-form').addEventListener('submit', importRoster);
  byId('lesson-form').addEventListener('submit', createLesson);
  byId('lesson-date').value = me.today;
  byId('link-form').addEventListener('submit', mintLink);
  byId('btn-copy').addEventListener('click', copyLink);
  const select = byId('audit-action');
  select.replaceChildren(h('option', { value: '', text: t('admin.audit_all') }),
    ...AUDIT_ACTIONS.map((a) => h('option', { value: a, text: actionLabel(a) })));
  byId('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(); });
  await Promise.allSettled([loadLessons(), loadAudit()]);
  markReady();
}

function setStatus(id, text, kind = 'info') {
  const el = byId(id);
  el.textContent = text;
  el.dataset.kind = kind;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
}

// ---- roster import ----

async function importRoster(ev) {
  ev.preventDefault();
  const file = byId('roster-file').files[0];
  if (!file) return;
  const button = byId('btn-import');
  button.disabled = true;
  byId('roster-result').replaceChildren();
  state.rosterReport = null;
  state.rosterProblems = null;
  setStatus('roster-status', t('admin.roster_uploading', { name: file.name }));
  try {
    const { report } = await post('/api/admin/roster', file, { contentType: 'application/zip' });
    state.rosterReport = report;
    setStatus('roster-status', t('admin.roster_done'), 'ok');
    byId('roster-result').replaceChildren(reportView(report));
  } catch (err) {
    if (err.code === 'roster_invalid' && Array.isArray(err.body?.problems)) {
      state.rosterProblems = err.body.problems;
      setStatus('roster-status', t('admin.roster_invalid', { count: err.body.problems.length }), 'error');
      byId('roster-result').replaceChildren(problemsView(err.body.problems));
    } else {
      setStatus('roster-status', errorText(err), 'error');
    }
  } finally {
    button.disabled = false;
  }
}

/**
 * The import report: one row per table with created / updated / unchanged / removed, then the
 * warnings. The API names the report but not its fields; this shows any `{created, …}` object it
 * finds, in the server's order, so a new table in the report needs no change here.
 */
function reportView(report) {
  const columns = ['created', 'updated', 'unchanged', 'removed'];
  const rows = Object.entries(report || {}).filter(([, v]) => v && typeof v === 'object' && !Array.isArray(v));
  const table = h('table', { id: 'roster-report', class: 'data' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: t('admin.report_table') }),
      columns.map((c) => h('th', { scope: 'col', class: 'num', text: t(`admin.report_${c}`) })))),
    h('tbody', {}, rows.map(([name, counts]) => h('tr', { dataset: { table: name } },
      h('th', { scope: 'row', text: hasText(`admin.table_${name}`) ? t(`admin.table_${name}`) : name }),
      columns.map((c) => h('td', { class: 'num', text: String(counts[c] ?? '–') }))))));
  const warnings = Array.isArray(report?.warnings) ? report.warnings : [];
  return h('div', {},
    h('div', { class: 'table-wrap' }, table),
    warnings.length ? h('div', {}, h('h3', { text: t('admin.report_warnings', { count: warnings.length }) }), problemsView(warnings, 'roster-warnings')) : null);
}

function problemsView(problems, id = 'roster-problems') {
  return h('div', { class: 'table-wrap' }, h('table', { id, class: 'data problems' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: t('admin.problem_file') }),
      h('th', { scope: 'col', class: 'num', text: t('admin.problem_line') }),
      h('th', { scope: 'col', text: t('admin.problem_reason') }))),
    h('tbody', {}, problems.map((p) => h('tr', { dataset: { file: p.file ?? '', line: String(p.line ?? '') } },
      h('td', { text: p.file ?? '' }),
      h('td', { class: 'num', text: p.line ?? '' }),
      h('td', { text: typeof p.reason === 'string' ? p.reason : JSON.stringify(p.reason) }))))));
}

// ---- lessons ----

async function loadLessons() {
  const from = me.today;
  const to = addDays(me.today, LESSON_DAYS - 1);
  byId('lessons-range').textContent = t('admin.lessons_range', { from: formatDate(from), to: formatDate(to) });
  const body = byId('lessons-table').tBodies[0];
  try {
    const answer = await get(`/api/admin/lessons?from=${from}&to=${to}`);
    const lessons = Array.isArray(answer) ? answer : answer.lessons || [];
    state.adminLessons = lessons;
    if (!lessons.length) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: '5', class: 'muted', text: t('admin.lessons_none') })));
      return;
    }
    body.replaceChildren(...lessons.map((l) => h('tr', { dataset: { lesson: l.id } },
      h('td', { text: formatDate(dateOfInstant(l.starts_at)) }),
      h('td', { text: `${formatTime(l.starts_at)}–${formatTime(l.ends_at)}` }),
      h('td', { text: l.class_title ? `${l.class_title} (${l.class_id})` : l.class_id }),
      h('td', {}, h('code', { text: l.media_room ?? '' })),
      h('td', { text: (l.teachers || []).map(personName).join(t('common.list_sep')) }))));
  } catch (err) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: '5', class: 'error-text', text: errorText(err) })));
    throw err;
  }
}

async function createLesson(ev) {
  ev.preventDefault();
  const form = ev.target;
  const date = form.date.value;
  const start = form.start.value;
  const end = form.end.value;
  if (end <= start) {
    setStatus('lesson-status', t('admin.lesson_end_before_start'), 'error');
    form.end.focus();
    return;
  }
  const lesson = {
    class_id: form.class_id.value.trim(),
    starts_at: schoolTimeToUtc(date, start),
    ends_at: schoolTimeToUtc(date, end),
  };
  const room = form.media_room.value.trim();
  if (room) lesson.media_room = room;
  const button = byId('btn-create-lesson');
  button.disabled = true;
  setStatus('lesson-status', t('common.saving'));
  try {
    const created = await post('/api/admin/lessons', lesson);
    state.lastCreatedLesson = created;
    setStatus('lesson-status', t('admin.lesson_created', { date: formatDate(date), time: start, class: lesson.class_id }), 'ok');
    await loadLessons().catch(() => {});
  } catch (err) {
    setStatus('lesson-status', errorText(err), 'error');
  } finally {
    button.disabled = false;
  }
}

// ---- sign-in links ----

async function mintLink(ev) {
  ev.preventDefault();
  const person = byId('link-person').value.trim();
  if (!person) return;
  const button = byId('btn-mint');
  button.disabled = true;
  byId('link-result').hidden = true;
  try {
    const { url } = await post('/api/admin/signin-links', { person });
    state.signinLink = url;
    byId('link-url').value = url;
    byId('link-result').hidden = false;
    setStatus('link-status', t('admin.link_made', { person }), 'ok');
    byId('link-url').select();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

async function copyLink() {
  const input = byId('link-url');
  try {
    // The Clipboard API needs a secure context (https or localhost).
    await navigator.clipboard.writeText(input.value);
    setStatus('link-status', t('admin.copied'), 'ok');
  } catch {
    input.focus();
    input.select();
    setStatus('link-status', t('admin.copy_manually'), 'info');
  }
}

// ---- audit log ----

function actionLabel(action) {
  return hasText(`audit.${action}`) ? t(`audit.${action}`) : action;
}

function actorText(actor) {
  if (!actor) return t('admin.actor_none');
  return typeof actor === 'object' ? `${personName(actor)} (${actor.id})` : String(actor);
}

async function loadAudit() {
  const action = byId('audit-action').value;
  const params = new URLSearchParams({ limit: String(AUDIT_LIMIT) });
  if (action) params.set('action', action);
  const body = byId('audit-table').tBodies[0];
  const button = byId('btn-audit');
  button.disabled = true;
  try {
    const { events } = await get(`/api/admin/audit?${params}`);
    state.audit = events;
    setStatus('audit-status', t('admin.audit_count', { count: events.length }));
    if (!events.length) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: '6', class: 'muted', text: t('admin.audit_none') })));
      return;
    }
    body.replaceChildren(...events.map((e) => h('tr', { dataset: { action: e.action } },
      h('td', { class: 'nowrap', text: formatInstant(e.at) }),
      h('td', { text: actorText(e.actor) }),
      h('td', { text: actionLabel(e.action) }),
      h('td', { text: typeof e.subject === 'object' && e.subject ? actorText(e.subject) : e.subject ?? '' }),
      h('td', {}, e.detail && Object.keys(e.detail).length ? h('code', { class: 'detail', text: JSON.stringify(e.detail) }) : ''),
      h('td', { class: 'nowrap', text: e.remote ?? '' }))));
  } catch (err) {
    setStatus('audit-status', errorText(err), 'error');
    throw err;
  } finally {
    button.disabled = false;
  }
}

main().catch((err) => {
  showError(err);
  markFailed(err);
});
