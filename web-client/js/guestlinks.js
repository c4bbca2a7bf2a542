// Guest links in the teacher's lobby (docs/PARTNER.md): invite a partner lecturer (a browser
// link) or a lecture hall's encoder (a WHIP URL and bearer token) into the chosen lesson, list
// the lesson's links and revoke them. The credential is shown once, right after creation: the
// server does not keep it.
//
// Markup (lobby.html): `#guests` section with `#guest-form` (`#guest-name`, `#guest-org`,
// `#guest-kind`, `#guest-hours`), `#guest-created` (the new credential), `#guest-list`
// (`li[data-link=ID]` with `button[data-action=revoke]`). Test hook:
// window.classroomPortal.state.guestLinks (the list as the API gave it).

import { get, post, request, seg } from './api.js';
import { t, formatInstant } from './i18n.js';
import { byId, h, showError, showMessage, state } from './portal.js';

let lessonId = null;
let wired = false;

/** Shows the guest links of `id` (teachers and administrators; partner lecturers invite no one). */
export async function showGuestLinks(id, role) {
  const section = byId('guests');
  if (role !== 'teacher' && role !== 'administrator') {
    section.hidden = true;
    return;
  }
  lessonId = id;
  section.hidden = false;
  byId('guest-created').replaceChildren();
  byId('guest-created').hidden = true;
  if (!wired) {
    byId('guest-form').addEventListener('submit', create);
    wired = true;
  }
  await reload();
}

async function reload() {
  const id = lessonId;
  try {
    const { links } = await get(`/api/lessons/${seg(id)}/guest-links`);
    if (id !== lessonId) return;
    state.guestLinks = links;
    render(links);
  } catch (err) {
    showError(err);
  }
}

function render(links) {
  const list = byId('guest-list');
  if (!links.length) {
    list.replaceChildren(h('li', { class: 'empty muted', text: t('guests.none') }));
    return;
  }
  list.replaceChildren(...links.map((l) => h('li', { class: 'guest-row', dataset: { link: l.id, active: String(l.active) } },
    h('span', { class: 'guest-name', text: `${l.display_name}（${l.organisation}）` }),
    h('span', { class: 'badge', text: t(l.kind === 'whip' ? 'guests.kind_whip' : 'guests.kind_guest') }),
    h('span', { class: 'muted small', text: stateText(l) }),
    l.active ? h('button', {
      type: 'button', class: 'danger', dataset: { action: 'revoke', link: l.id }, text: t('guests.revoke'),
      on: { click: (ev) => revoke(l, ev.currentTarget) },
    }) : null)));
}

function stateText(l) {
  if (l.revoked_at) return t('guests.revoked_at', { time: formatInstant(l.revoked_at) });
  if (!l.active) return t('guests.expired');
  return t('guests.until', { time: formatInstant(l.expires_at) });
}

async function create(ev) {
  ev.preventDefault();
  const button = ev.submitter || byId('guest-form').querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const answer = await post(`/api/lessons/${seg(lessonId)}/guest-links`, {
      kind: byId('guest-kind').value,
      display_name: byId('guest-name').value,
      organisation: byId('guest-org').value,
      hours: Number(byId('guest-hours').value) || 24,
    });
    showCreated(answer);
    byId('guest-form').reset();
    await reload();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

/** The new credential, in read-only fields the teacher copies from. */
function showCreated(answer) {
  const box = byId('guest-created');
  const field = (label, value, name) => h('label', { class: 'field' },
    h('span', { text: t(label) }),
    h('input', { type: 'text', readOnly: true, value, dataset: { credential: name } }));
  const parts = [h('p', { class: 'small', text: t('guests.copy_now') })];
  if (answer.url) parts.push(field('guests.link', answer.url, 'url'));
  if (answer.whip_url) {
    parts.push(field('guests.whip_url', answer.whip_url, 'whip_url'));
    parts.push(field('guests.bearer', answer.bearer_token, 'bearer_token'));
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

async function revoke(link, button) {
  button.disabled = true;
  try {
    await request(`/api/lessons/${seg(lessonId)}/guest-links/${seg(link.id)}`, { method: 'DELETE' });
    showMessage(t('guests.revoked_msg', { name: link.display_name }), 'info');
    await reload();
  } catch (err) {
    showError(err);
    button.disabled = false;
  }
}
