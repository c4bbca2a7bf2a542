// Quick check: the teacher asks a question with 2–4 answers and watches the tally fill; a pupil
// answers with one tap (and may change the answer while the check is open).

import { h } from './ui.js';
import { t } from './i18n.js';

// Ready-made answer sets, in the page's language. "わかった / もう一度" is the classroom's own.
const PRESETS = [
  ['check.preset_understood', 'check.preset_again'],
  ['check.preset_yes', 'check.preset_no'],
  ['check.preset_a', 'check.preset_b', 'check.preset_c', 'check.preset_d'],
];

/** The teacher's composer and live tally. */
export function mountTeacherCheck(root, { lesson, onError }) {
  const question = h('input', { type: 'text', id: 'check-question', maxlength: '200', autocomplete: 'off' });
  const options = [0, 1, 2, 3].map((i) => h('input', {
    type: 'text', id: `check-option-${i}`, maxlength: '40', autocomplete: 'off', class: 'check-option-input',
    'aria-label': t('check.option_n', { n: i + 1 }),
  }));
  question.value = t('check.default_question');
  options[0].value = t(PRESETS[0][0]);
  options[1].value = t(PRESETS[0][1]);
  const presets = h('div', { class: 'check-presets', role: 'group', 'aria-label': t('check.presets') },
    PRESETS.map((keys) => h('button', {
      type: 'button', class: 'preset', text: keys.map((k) => t(k)).join(' / '),
      on: { click: () => options.forEach((input, i) => { input.value = keys[i] ? t(keys[i]) : ''; }) },
    })));
  const ask = h('button', { type: 'submit', id: 'btn-check-ask', class: 'primary', text: t('check.ask'), disabled: true });
  const form = h('form', { class: 'check-form' },
    h('label', { for: question.id, text: t('check.question') }), question,
    presets,
    h('div', { class: 'check-options' }, options),
    ask);
  const live = h('div', { class: 'check-live', hidden: true });
  root.replaceChildren(form, live);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = question.value.trim();
    const opts = options.map((o) => o.value.trim()).filter(Boolean);
    if (!q || opts.length < 2) {
      onError(t('check.need_question'));
      return;
    }
    lesson.quickCheck(q, opts);
  });

  function render() {
    const check = lesson.state?.quick_check ?? null;
    ask.disabled = !lesson.session.joined || !lesson.state;
    ask.textContent = t(check ? 'check.ask_new' : 'check.ask');
    live.hidden = !check;
    if (!check) {
      live.replaceChildren();
      return;
    }
    const tally = Array.isArray(check.tally) ? check.tally : [];
    const answered = Number(check.answered) || 0;
    live.replaceChildren(
      h('p', { class: 'check-question', text: check.question }),
      h('ul', { class: 'tally', id: 'check-tally' }, check.options.map((label, i) => {
        const n = Number(tally[i]) || 0;
        const id = `tally-${i}`;
        return h('li', { dataset: { option: String(i), count: String(n) } },
          h('span', { class: 'tally-label', id, text: label }),
          h('progress', { max: String(Math.max(answered, 1)), value: String(n), 'aria-labelledby': id }),
          h('span', { class: 'tally-count', text: t('check.count', { n }) }));
      })),
      h('p', { class: 'muted', id: 'check-answered', text: t('check.answered', { n: answered }) }),
      h('button', { type: 'button', id: 'btn-check-close', text: t('check.close'), on: { click: () => lesson.closeCheck() } }));
  }

  lesson.addEventListener('state', render);
  render();
  return { render };
}

/** The pupil's answer buttons: big, one tap each; the chosen one stays pressed. */
export function mountPupilCheck(root, { lesson }) {
  function render() {
    const check = lesson.state?.quick_check ?? null;
    root.hidden = !check;
    if (!check) {
      root.replaceChildren();
      return;
    }
    const mine = check.your_answer ?? null;
    root.replaceChildren(
      h('p', { class: 'check-question', id: 'pupil-check-question', text: check.question }),
      h('div', { class: 'check-answers', role: 'group', 'aria-labelledby': 'pupil-check-question' },
        check.options.map((label, i) => h('button', {
          type: 'button', class: 'check-answer', text: label,
          'aria-pressed': String(mine === i), dataset: { option: String(i) },
          on: { click: () => lesson.answerCheck(check.check_id, i) },
        }))),
      h('p', { class: 'check-thanks', role: 'status', text: mine === null ? '' : t('check.thanks') }));
  }
  lesson.addEventListener('state', render);
  render();
  return { render };
}
