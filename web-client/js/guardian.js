// The guardian's page: for each child, how they attend today and on the coming school days, at
// school or at home (online), one tap per day; and who changed what, when.
//
// No optimistic UI: a tap shows "Saving…" and then exactly what the server answered, re-read
// from the server (a `cutoff_passed` refusal must never look like a change that went through, and
// a parent must never believe the school knows something it does not).
//
// Test hooks (window.classroomPortal.state): `children` = [{id, name, mode_today, days:
// [{date, mode, editable, reason, on_behalf}], history: [...]}], `saving` (requests in flight),
// `lastSaved` = {pupil, date, mode} of the last accepted change, `lastError`. Markup:
// `article[data-pupil=ID]`, `[data-role=mode-today][data-mode]`, `li[data-date=YYYY-MM-DD]`
// with `button[data-action=set-mode][data-mode=online|in_person]`, `input[data-role=reason]`.

import { get, put, seg } from './api.js';
import { t, addDays, weekday, formatDate, formatInstant } from './i18n.js';
import {
  bootPage, byId, errorText, h, markFailed, markReady, nameNode, personName, showError, state,
} from './portal.js';

const DAYS_SHOWN = 14; // "today and the next two weeks"
const MODES = ['in_person', 'online'];

state.children = [];
state.saving = 0;
state.lastSaved = null;

let me;

async function main() {
  me = await bootPage('guardian', { roles: ['guardian'] });
  if (!me) return;
  const { children } = await get('/api/children');
  byId('loading').hidden = true;
  const list = byId('children');
  if (!children.length) {
    list.replaceChildren(h('p', { class: 'card empty', text: t('guardian.no_children') }));
    markReady();
    return;
  }
  // Cards first (name and today's mode from /api/children), then each child's days in parallel.
  const cards = children.map((child) => {
    const entry = { id: child.id, name: personName(child), mode_today: child.mode_today, days: [], history: [], cutoff: null };
    state.children.push(entry);
    const card = new ChildCard(child, entry);
    list.append(card.root);
    return card;
  });
  await Promise.allSettled(cards.map((card) => card.load())); // each card shows its own failure
  markReady();
}

/** A school day to show: Monday–Friday, plus today and any weekend day already set to online. */
function shown(day) {
  const wd = weekday(day.date);
  return day.date === me.today || (wd !== 0 && wd !== 6) || day.mode === 'online';
}

function zoneLabel(tz) {
  return tz === 'Asia/Tokyo' ? t('guardian.tz_tokyo') : tz;
}

function modeLabel(mode) {
  return t(mode === 'online' ? 'mode.online' : 'mode.in_person');
}

class ChildCard {
  constructor(child, entry) {
    this.child = child;
    this.entry = entry;
    this.base = `/api/children/${seg(child.id)}`;

    this.todayBox = h('div', { class: 'today-mode', dataset: { role: 'mode-today' }, 'aria-live': 'polite' });
    this.reason = h('input', {
      type: 'text', id: `reason-${cssSafe(child.id)}`, maxlength: '200', autocomplete: 'off',
      dataset: { role: 'reason' }, placeholder: t('guardian.reason_placeholder'),
    });
    this.status = h('p', { class: 'card-status', dataset: { role: 'status' }, role: 'status' });
    this.days = h('ol', { class: 'days', 'aria-label': t('guardian.days_label') });
    this.historyList = h('ol', { class: 'history' });
    this.historySummary = h('summary', { text: t('guardian.history') });
    this.root = h('article', { class: 'card child', dataset: { pupil: child.id }, 'aria-label': personName(child) },
      h('h3', { class: 'child-name' }, nameNode(child)),
      this.todayBox,
      h('div', { class: 'field' },
        h('label', { for: this.reason.id, text: t('guardian.reason_label') }),
        this.reason,
        h('small', { class: 'muted', text: t('guardian.reason_hint') })),
      this.status,
      this.days,
      h('details', { class: 'history-box', dataset: { role: 'history' } }, this.historySummary, this.historyList));
    this.renderToday();
  }

  async load() {
    try {
      const [modes, history] = await Promise.all([
        get(`${this.base}/modes?from=${me.today}&to=${addDays(me.today, DAYS_SHOWN - 1)}`),
        get(`${this.base}/history`),
      ]);
      this.entry.cutoff = modes.cutoff;
      this.entry.days = modes.days.map(({ date, mode, editable, reason, on_behalf }) => ({ date, mode, editable, reason, on_behalf }));
      const today = modes.days.find((d) => d.date === me.today);
      if (today) this.entry.mode_today = today.mode;
      this.entry.history = history.history;
      this.cutoff = modes.cutoff;
      showCutoffNote(modes.cutoff);
      this.renderToday();
      this.renderDays(modes.days);
      this.renderHistory(history.history);
    } catch (err) {
      this.setStatus(errorText(err), 'error');
      this.days.replaceChildren(h('li', { class: 'day' },
        h('button', { type: 'button', dataset: { action: 'retry' }, text: t('common.retry'), on: { click: () => this.load() } })));
      throw err;
    }
  }

  renderToday() {
    const mode = this.entry.mode_today;
    this.todayBox.dataset.mode = mode;
    this.todayBox.replaceChildren(
      h('span', { class: 'today-label', text: t('guardian.today', { date: formatDate(me.today) }) }),
      h('span', { class: 'today-value' }, h('span', { class: 'mode-icon', 'aria-hidden': 'true', text: mode === 'online' ? '🏠' : '🏫' }), modeLabel(mode)));
  }

  renderDays(days) {
    // The rows are rebuilt from the server's answer; put keyboard focus back where it was (a
    // button disabled while saving has already lost it, so choose() remembers it in `refocus`).
    const active = this.days.contains(document.activeElement) ? document.activeElement : null;
    const focused = this.refocus || (active?.dataset.mode ? { date: active.closest('li').dataset.date, mode: active.dataset.mode } : null);
    this.refocus = null;
    this.days.replaceChildren(...days.filter(shown).map((day) => this.dayRow(day)));
    if (focused) {
      this.days.querySelector(`li[data-date="${focused.date}"] button[data-mode="${focused.mode}"]`)?.focus();
    }
  }

  dayRow(day) {
    const isToday = day.date === me.today;
    const label = formatDate(day.date);
    const note = h('p', { class: 'day-note' });
    if (!day.editable) {
      note.append(h('span', { 'aria-hidden': 'true', text: '🔒 ' }),
        isToday ? t('guardian.locked_today', { time: this.cutoff?.time ?? '' })
          : day.date < me.today ? t('guardian.locked_past') : t('guardian.locked_other'));
    } else if (isToday && this.cutoff) {
      note.append(t('guardian.open_today', { time: this.cutoff.time }));
    }
    if (day.mode === 'online' && day.reason) note.append(h('span', { class: 'reason', text: ` ${t('guardian.reason_shown', { reason: day.reason })}` }));
    if (day.set_by && day.on_behalf) {
      note.append(' ', h('span', { class: 'badge', text: t('guardian.set_by_school', { name: personName(day.set_by) }) }));
    }
    const buttons = MODES.map((mode) => h('button', {
      type: 'button',
      class: `mode-button mode-${mode}`,
      'aria-pressed': String(day.mode === mode),
      disabled: !day.editable,
      dataset: { action: 'set-mode', mode },
      text: modeLabel(mode),
      on: { click: () => this.choose(day, mode, row) },
    }));
    const status = h('p', { class: 'day-status', dataset: { role: 'day-status' } });
    // The answer to the last tap on this day stays next to it after the rows are rebuilt.
    if (this.outcome?.date === day.date) {
      status.textContent = this.outcome.text;
      status.dataset.kind = this.outcome.kind;
      status.setAttribute('role', this.outcome.kind === 'error' ? 'alert' : 'status');
    }
    const row = h('li', {
      class: `day${isToday ? ' is-today' : ''}${day.editable ? '' : ' locked'}`,
      dataset: { date: day.date, mode: day.mode, editable: String(day.editable) },
    },
    h('div', { class: 'day-label' }, h('span', { text: label }), isToday ? h('small', { class: 'today-tag', text: t('common.today') }) : null),
    h('div', { class: 'segmented', role: 'group', 'aria-label': t('guardian.day_group', { date: label }) }, buttons),
    note, status);
    return row;
  }

  async choose(day, mode, row) {
    if (day.mode === mode || row.getAttribute('aria-busy') === 'true') return;
    const status = row.querySelector('[data-role=day-status]');
    const buttons = row.querySelectorAll('button[data-action=set-mode]');
    buttons.forEach((b) => { b.disabled = true; });
    row.setAttribute('aria-busy', 'true');
    status.dataset.kind = 'info';
    status.textContent = t('common.saving');
    this.setStatus('', 'info');
    this.outcome = null;
    this.refocus = { date: day.date, mode };
    state.saving++;
    const reason = mode === 'online' ? this.reason.value.trim() || null : null;
    try {
      await put(`${this.base}/modes`, { from: day.date, to: day.date, mode, reason });
      state.lastSaved = { pupil: this.child.id, date: day.date, mode };
      this.outcome = { date: day.date, kind: 'ok', text: t('guardian.saved', { name: personName(this.child), date: formatDate(day.date), mode: modeLabel(mode) }) };
      if (mode === 'online') this.reason.value = '';
    } catch (err) {
      const text = err.code === 'cutoff_passed'
        ? t('guardian.cutoff_passed', { date: formatDate(day.date), time: this.cutoff?.time ?? '' })
        : errorText(err);
      this.outcome = { date: day.date, kind: 'error', text }; // next to the day, role=alert
    }
    // Either way, show what the server now holds (after a refusal, e.g. the day's new lock).
    try {
      await this.load();
    } catch {
      // load() already said so on the card
    } finally {
      state.saving--;
    }
  }

  renderHistory(history) {
    this.historySummary.textContent = t('guardian.history_count', { count: history.length });
    if (!history.length) {
      this.historyList.replaceChildren(h('li', { class: 'muted', text: t('guardian.history_empty') }));
      return;
    }
    this.historyList.replaceChildren(...history.map((c) => h('li', { class: 'change', dataset: { changeDate: c.date } },
      h('div', { class: 'change-what' },
        h('strong', { text: formatDate(c.date) }), ' ',
        modeLabel(c.old_mode), h('span', { 'aria-hidden': 'true', text: ' → ' }),
        h('span', { class: 'visually-hidden', text: t('common.to') }), modeLabel(c.new_mode)),
      h('div', { class: 'change-who muted' },
        t('guardian.changed_by', { name: personName(c.actor), at: formatInstant(c.at) }),
        c.on_behalf ? h('span', { class: 'badge', dataset: { role: 'on-behalf' }, text: t('guardian.on_behalf') }) : null),
      c.reason ? h('div', { class: 'change-reason', text: t('guardian.reason_shown', { reason: c.reason }) }) : null)));
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    this.status.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  }
}

let cutoffShown = false;
function showCutoffNote(cutoff) {
  if (cutoffShown || !cutoff) return;
  cutoffShown = true;
  byId('cutoff-note').textContent = t('guardian.cutoff_note', { time: cutoff.time, zone: zoneLabel(cutoff.timezone) });
}

function cssSafe(id) {
  return String(id).replace(/[^A-Za-z0-9_-]/g, '_');
}

main().catch((err) => {
  byId('loading').hidden = true;
  showError(err);
  markFailed(err);
});
