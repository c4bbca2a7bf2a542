// The visible language switch of the live pages: a link to the same page with `?lang=` set to
// the other language. The language is chosen once per page load (i18n.js), so switching reloads;
// the lesson rejoins, and the server keeps a pupil's hand and floor by identity.

import { lang } from './i18n.js';

export function showLanguageSwitch(link) {
  const other = lang === 'ja' ? 'en' : 'ja';
  const url = new URL(window.location.href);
  url.searchParams.set('lang', other);
  link.href = url.pathname + url.search;
  // The label is the other language's own name, in that language, so anyone can find theirs.
  link.lang = other;
  link.hidden = false;
}
