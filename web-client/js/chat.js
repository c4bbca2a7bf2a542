// The lesson chat panel, for both pages. Pupils write to the class (while the teacher keeps the
// chat open) or ask the teacher privately (always); the teacher sees everything, private questions
// marked as such, removes messages, and opens or closes the pupils' chat to the class.
// Every text is set with textContent: a message is shown as text, never as HTML.

import { h } from './ui.js';
import { lang, t } from './i18n.js';

const MAX_CHARS = 500; // the server's limit, in Unicode scalar values after trimming

/**
 * @param {HTMLElement} root   emptied and filled with the panel
 * @param {object} o
 * @param {import('./lesson.js').Lesson} o.lesson
 * @param {import('./session.js').Session} o.session
 * @param {boolean} o.teacher  the teacher's panel (delete buttons, open/close, no private send)
 * @param {(text: string) => void} o.onError  shows a sentence to the user
 */
export function mountChat(root, { lesson, session, teacher, onError }) {
  const log = h('ol', { class: 'chat-log', 'aria-live': 'polite', 'aria-label': t('chat.log') });
  const empty = h('p', { class: 'muted chat-empty', text: t('chat.empty') });
  const closedNote = h('p', { class: 'chat-closed', role: 'status', text: t('chat.closed_pupil'), hidden: true });
  const input = h('input', {
    type: 'text', id: `chat-input-${teacher ? 't' : 'p'}`, maxlength: String(MAX_CHARS), autocomplete: 'off',
    enterkeyhint: 'send', disabled: true,
  });
  const label = h('label', { for: input.id, class: 'visually-hidden', text: t('chat.message') });
  input.placeholder = t(teacher ? 'chat.placeholder_teacher' : 'chat.placeholder_pupil');
  const sendAll = h('button', { type: 'submit', class: 'primary', dataset: { to: 'all' }, disabled: true, text: t(teacher ? 'chat.send' : 'chat.send_all') });
  const sendTeacher = teacher ? null : h('button', { type: 'submit', dataset: { to: 'teacher' }, disabled: true, text: t('chat.send_teacher') });
  const form = h('form', { class: 'chat-form' }, label, input, h('div', { class: 'chat-buttons' }, sendAll, sendTeacher));

  let toggle = null;
  if (teacher) {
    toggle = h('input', { type: 'checkbox', id: 'chat-open', disabled: true });
    toggle.addEventListener('change', () => lesson.setLesson({ chat: toggle.checked ? 'open' : 'teacher_only' }));
    root.replaceChildren(h('p', { class: 'chat-toggle' }, toggle, ' ', h('label', { for: 'chat-open', text: t('chat.pupils_may_post') })), log, empty, form);
  } else {
    root.replaceChildren(log, empty, closedNote, form);
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const to = ev.submitter?.dataset.to ?? 'all';
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > MAX_CHARS) {
      onError(t('live.error.chat_too_long'));
      return;
    }
    input.value = '';
    // Given back on refusal (closed, too fast), so nothing typed is lost.
    lesson.sendChat(to, text, () => {
      if (!input.value) input.value = text;
    });
    input.focus();
  });

  const timeFormat = new Intl.DateTimeFormat(lang === 'ja' ? 'ja-JP' : 'en-GB', { hour: '2-digit', minute: '2-digit' });

  function renderMessage(m) {
    const own = m.from === session.self?.participant_id;
    const name = own ? t('chat.you') : (m.name || t('live.guest'));
    const head = h('p', { class: 'chat-head' },
      h('span', { class: 'chat-name', text: name }),
      m.role === 'teacher' ? h('span', { class: 'tag', text: t('chat.teacher_tag') }) : null,
      m.to === 'teacher' ? h('span', { class: 'tag private', text: t('chat.private_tag') }) : null,
      Number.isFinite(m.at_ms) ? h('time', { class: 'chat-time', datetime: new Date(m.at_ms).toISOString(), text: timeFormat.format(m.at_ms) }) : null);
    const item = h('li', { class: `chat-msg${m.to === 'teacher' ? ' private' : ''}${own ? ' own' : ''}`, dataset: { messageId: m.message_id, to: m.to } },
      head, h('p', { class: 'chat-text', text: m.text ?? '' }));
    if (teacher) {
      item.append(h('button', {
        type: 'button', class: 'chat-delete', text: t('chat.delete'),
        'aria-label': t('chat.delete_from', { name }),
        on: { click: () => lesson.deleteChat(m.message_id) },
      }));
    }
    return item;
  }

  function renderLog(messages) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.replaceChildren(...messages.map(renderMessage));
    empty.hidden = messages.length > 0;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function renderState() {
    const joined = session.joined;
    const open = (lesson.state?.chat ?? 'open') === 'open';
    input.disabled = !joined;
    sendAll.disabled = !joined || (!teacher && !open);
    if (sendTeacher) sendTeacher.disabled = !joined;
    closedNote.hidden = teacher || open;
    if (toggle) {
      toggle.checked = open;
      toggle.disabled = !joined || !lesson.state;
    }
  }

  lesson.addEventListener('chat', (ev) => renderLog(ev.detail.messages));
  lesson.addEventListener('state', renderState);
  renderLog([]);
  renderState();
  return { render: renderState };
}
