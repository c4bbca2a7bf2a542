// Lesson links in the teacher's lobby (docs/PARTNER.md "Lesson links"): hold the chosen lesson
// together with a partner school's class on its own server. As host: create an invitation (its
// code is shown once, with a copy button), list the lesson's invitations and revoke them. As
// partner: paste a host's code to accept it for this lesson, list the accepted links and end them.
//
// Markup (lobby.html): `#partners` section with `#partner-form` (`#partner-name`,
// `#partner-hours`), `#partner-created` (the new code), `#partner-list`
// (`li[data-link=ID]` with `button[data-action=revoke-partner]`), `#partner-accept-form`
// (`#partner-code`), `#partner-accepted` (`li[data-link=ID]` with
// `button[data-action=end-partner]`). Test hooks: window.classroomPortal.state.partnerLinks and
// .acceptedLinks (the lists as the API gave them).

import { get, post, request, seg } from './api.js';
import { t, formatInstant } from './i18n.js';
import { byId, h, showError, showMessage, state } from './portal.js';

let lessonId = null;
let wired = false;

/** Shows the lesson links of `id` (teachers and administrators only). */
export async function showPartnerLinks(id, role) {
  const section = byId('partners');
  if (role !== 'teacher' && role !== 'administrator') {
    section.hidden = true;
    return;
  }
  lessonId = id;
  section.hidden = false;
  byId('partner-created').replaceChildren();
  byId('partner-created').hidden = true;
  if (!wired) {
    byId('partner-form').addEventListener('submit', create);
    byId('partner-accept-form').addEventListener('submit', accept);
    wired = true;
  }
  await reload();
}

async function reload() {
  const id = lessonId;
  try {
    const [{ links }, accepted] = await Promise.all([
      get(`/api/lessons/${seg(id)}/partner-links`),
      get('/api/partner-links/accepted'),
    ]);
    if (id !== lessonId) return;
    const mine = accepted.links.filter((l) => l.lesson_id === id);
    state.partnerLinks = links;
    state.acceptedLinks = mine;
    renderInvitations(links);
    renderAccepted(mine);
  } catch (err) {
    showError(err);
  }
}

function renderInvitations(links) {
  const list = byId('partner-list');
  if (!links.length) {
    list.replaceChildren(h('li', { class: 'empty muted', text: t('partners.none') }));
    return;
  }
  list.replaceChildren(...links.map((l) => h('li', { class: 'guest-row', dataset: { link: l.id, state: l.state } },
    h('span', { class: 'guest-name', text: l.partner_school || l.partner_name }),
    h('span', { class: 'badge', text: t(`partners.state_${l.state}`) }),
    h('span', { class: 'muted small', text: invitationText(l) }),
    l.active ? h('button', {
      type: 'button', class: 'danger', dataset: { action: 'revoke-partner', link: l.id }, text: t('partners.revoke'),
      on: { click: (ev) => revoke(l, ev.currentTarget) },
    }) : null)));
}

function invitationText(l) {
  if (l.revoked_at) return t('guests.revoked_at', { time: formatInstant(l.revoked_at) });
  if (!l.active) return t('guests.expired');
  return t('guests.until', { time: formatInstant(l.expires_at) });
}

function renderAccepted(links) {
  const list = byId('partner-accepted');
  if (!links.length) {
    list.replaceChildren(h('li', { class: 'empty muted', text: t('partners.none_accepted') }));
    return;
  }
  list.replaceChildren(...links.map((l) => h('li', { class: 'guest-row', dataset: { link: l.id, active: String(l.active) } },
    h('span', { class: 'guest-name', text: `${l.lesson_title}（${l.host_school}）` }),
    h('span', { class: 'muted small', text: l.active
      ? t('guests.until', { time: formatInstant(l.expires_at) })
      : t('partners.ended') }),
    l.active ? h('button', {
      type: 'button', class: 'danger', dataset: { action: 'end-partner', link: l.id }, text: t('partners.end'),
      on: { click: (ev) => end(l, ev.currentTarget) },
    }) : null)));
}

async function create(ev) {
  ev.preventDefault();
  const button = ev.submitter || byId('partner-form').querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const answer = await post(`/api/lessons/${seg(lessonId)}/partner-links`, {
      partner_name: byId('partner-name').value,
      ttl_hours: Number(byId('partner-hours').value) || 24,
    });
    showCode(answer.code);
    byId('partner-form').reset();
    await reload();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

/** The new invitation code, shown once, with a copy button. */
function showCode(code) {
  const box = byId('partner-created');
  const input = h('input', { type: 'text', readOnly: true, value: code, dataset: { credential: 'code' } });
  const copy = h('button', {
    type: 'button', dataset: { action: 'copy-code' }, text: t('partners.copy'),
    on: {
      click: async () => {
        try {
          await navigator.clipboard.writeText(code);
          showMessage(t('partners.copied'), 'info');
        } catch {
          input.select();
        }
      },
    },
  });
  box.replaceChildren(
    h('p', { class: 'small', text: t('partners.copy_now') }),
    h('label', { class: 'field' }, h('span', { text: t('partners.code') }), input),
    copy);
  box.hidden = false;
}

async function accept(ev) {
  ev.preventDefault();
  const button = ev.submitter || byId('partner-accept-form').querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const { link } = await post(`/api/lessons/${seg(lessonId)}/partner-links/accept`, {
      code: byId('partner-code').value.trim(),
    });
    showMessage(t('partners.accepted_msg', { school: link.host_school }), 'info');
    byId('partner-accept-form').reset();
    await reload();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

async function revoke(link, button) {
  button.disabled = true;
  try {
    await request(`/api/lessons/${seg(lessonId)}/partner-links/${seg(link.id)}`, { method: 'DELETE' });
    showMessage(t('partners.revoked_msg', { name: link.partner_school || link.partner_name }), 'info');
    await reload();
  } catch (err) {
    showError(err);
    button.disabled = false;
  }
}

async function end(link, button) {
  button.disabled = true;
  try {
    await request(`/api/partner-links/accepted/${seg(link.id)}`, { method: 'DELETE' });
    showMessage(t('partners.ended_msg', { school: link.host_school }), 'info');
    await reload();
  } catch (err) {
    showError(err);
    button.disabled = false;
  }
}
