// Language, words and dates for the signed-in pages (signin, guardian, lobby, lessons, admin).
//
// Japanese or English, chosen once per page load from `navigator.languages`: Japanese when the
// browser lists it anywhere (the pages are for Japanese schools, and a school tablet set to English
// with Japanese second is still best served in Japanese), English otherwise. `?lang=ja|en`
// overrides, so a teacher can show a parent the other language, and tests can pin one.
//
// Every string a user sees goes through `t(key)`; the dictionaries are in i18n/ja.js and
// i18n/en.js and must hold the same keys (a missing key shows the English text, then the key
// itself, so a gap is visible rather than blank).
//
// Dates: the API speaks `YYYY-MM-DD` calendar dates in the school's time zone and RFC 3339
// instants in UTC. A calendar date is formatted as itself (no time-zone shift can move it to
// another day); an instant is shown in the school's zone from `/api/me`, not the device's, so a
// parent abroad and the school see the same day and time.

import ja from './i18n/ja.js';
import en from './i18n/en.js';

const DICTIONARIES = { ja, en };

export function chooseLang(languages = navigator.languages || [navigator.language], search = window.location.search) {
  const forced = new URLSearchParams(search).get('lang');
  if (forced && DICTIONARIES[forced]) return forced;
  const list = (languages || []).filter(Boolean).map((l) => l.toLowerCase());
  return list.some((l) => l === 'ja' || l.startsWith('ja-')) ? 'ja' : 'en';
}

export const lang = chooseLang();
const locale = lang === 'ja' ? 'ja-JP' : 'en-GB'; // en-GB: "Thu 26 Nov", day before month, 24 h
let timeZone = 'Asia/Tokyo'; // the API's default until /api/me says otherwise

export function setTimeZone(tz) {
  if (!tz) return;
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz }); // throws RangeError on an unknown zone
    timeZone = tz;
  } catch {
    console.warn('classroom: unknown time zone from the server, keeping', timeZone, tz);
  }
}

export function schoolTimeZone() {
  return timeZone;
}

/** The text for `key`, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  let text = DICTIONARIES[lang][key] ?? en[key];
  if (text === undefined) {
    console.warn('classroom: missing text', key);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** True when the dictionary has the key (used to fall back for server codes we do not know). */
export function hasText(key) {
  return key in DICTIONARIES[lang] || key in en;
}

/**
 * Fills the static markup: `data-i18n="key"` sets the text, `data-i18n-attr="attr:key;attr:key"`
 * sets attributes (aria-label, placeholder, title). Also sets `<html lang>`, so screen readers
 * and fonts (Japanese glyph shapes) follow the language.
 */
export function translatePage(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}

// ---- calendar dates (YYYY-MM-DD) ----

function dateParts(ymd) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(ymd || '');
  if (!m) throw new Error(`not a date: ${ymd}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

function utcNoon(ymd) {
  const [y, mo, d] = dateParts(ymd);
  return new Date(Date.UTC(y, mo - 1, d, 12));
}

export function addDays(ymd, days) {
  const date = utcNoon(ymd);
  date.setUTCDate(date.getUTCDate() + days);
  return date.toISOString().slice(0, 10);
}

/** 0 = Sunday … 6 = Saturday. */
export function weekday(ymd) {
  return utcNoon(ymd).getUTCDay();
}

/** "11月26日(木)" / "Thu 26 Nov". */
export function formatDate(ymd, { long = false } = {}) {
  const options = long
    ? { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric', timeZone: 'UTC' }
    : { weekday: 'short', month: 'short', day: 'numeric', timeZone: 'UTC' };
  return new Intl.DateTimeFormat(locale, options).format(utcNoon(ymd));
}

// ---- instants (RFC 3339, UTC) shown in the school's zone ----

export function formatTime(iso) {
  return new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone }).format(new Date(iso));
}

export function formatInstant(iso) {
  return new Intl.DateTimeFormat(locale, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone,
  }).format(new Date(iso));
}

/** The school-zone calendar date of an instant. */
export function dateOfInstant(iso) {
  const parts = zoneParts(new Date(iso).getTime(), timeZone);
  return `${parts.year}-${pad(parts.month)}-${pad(parts.day)}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function zoneParts(ms, tz) {
  const parts = {};
  const fmt = new Intl.DateTimeFormat('en-US', {
    timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric',
    hour: 'numeric', minute: 'numeric', second: 'numeric',
  });
  for (const p of fmt.formatToParts(new Date(ms))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return parts;
}

/**
 * The UTC instant (RFC 3339, `Z`) of wall-clock `hhmm` on `ymd` in the school's zone, for the
 * admin's "create lesson" form. Intl has no zone-to-UTC conversion, so guess, measure the zone's
 * offset at the guess, correct, and measure once more (a DST change between the two; Japan has
 * none, but the zone is configurable).
 */
export function schoolTimeToUtc(ymd, hhmm, tz = timeZone) {
  const [y, mo, d] = dateParts(ymd);
  const [h, mi] = hhmm.split(':').map(Number);
  const wall = Date.UTC(y, mo - 1, d, h, mi);
  const offsetAt = (ms) => {
    const p = zoneParts(ms, tz);
    return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - ms;
  };
  let utc = wall - offsetAt(wall);
  utc = wall - offsetAt(utc);
  return new Date(utc).toISOString().replace('.000Z', 'Z');
}
