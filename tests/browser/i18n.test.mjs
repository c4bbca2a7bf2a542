// The pages' dictionaries (web-client/js/i18n/*.js) stay in step: the same keys in every locale,
// the same `{placeholders}` in each key's translations, and every key a page uses defined.
// The live pages (teacher.html, pupil.html) carry no hard-coded words outside `data-i18n`.
// Plain `node --test`, no browser; run.sh runs it first.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';

const web = new URL('../../web-client/', import.meta.url);
const LOCALES = ['ja', 'en'];

// Loaded from source as data: URLs: web-client has no package.json marking its files as ES
// modules, and the dictionaries import nothing.
async function dictionary(locale) {
  const source = await readFile(new URL(`js/i18n/${locale}.js`, web), 'utf8');
  return (await import(`data:text/javascript,${encodeURIComponent(source)}`)).default;
}
const dicts = Object.fromEntries(await Promise.all(LOCALES.map(async (l) => [l, await dictionary(l)])));

const placeholders = (text) => [...String(text).matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

const pages = (await readdir(web)).filter((f) => f.endsWith('.html'));
const scripts = (await readdir(new URL('js/', web))).filter((f) => f.endsWith('.js'));
const read = (rel) => readFile(new URL(rel, web), 'utf8');

test('every locale has the same keys', () => {
  const [first, ...rest] = LOCALES;
  const keys = new Set(Object.keys(dicts[first]));
  assert.ok(keys.size > 100, `only ${keys.size} keys in ${first}`);
  for (const locale of rest) {
    const other = new Set(Object.keys(dicts[locale]));
    assert.deepEqual([...keys].filter((k) => !other.has(k)), [], `keys of ${first} missing in ${locale}`);
    assert.deepEqual([...other].filter((k) => !keys.has(k)), [], `keys of ${locale} missing in ${first}`);
  }
});

test('every translation has the same placeholders and is not empty', () => {
  for (const key of Object.keys(dicts.en)) {
    const expected = placeholders(dicts.en[key]);
    for (const locale of LOCALES) {
      const text = dicts[locale][key];
      assert.equal(typeof text, 'string', `${locale} ${key} is not text`);
      assert.ok(text.trim().length > 0, `${locale} ${key} is empty`);
      assert.deepEqual(placeholders(text), expected, `${locale} ${key}: placeholders differ from en`);
    }
  }
});

/** Keys named in markup: data-i18n="key" and data-i18n-attr="attr:key;attr:key". */
function markupKeys(html) {
  const keys = [...html.matchAll(/data-i18n="([^"]+)"/g)].map((m) => m[1]);
  for (const m of html.matchAll(/data-i18n-attr="([^"]+)"/g)) {
    for (const pair of m[1].split(';')) keys.push(pair.split(':')[1].trim());
  }
  return keys;
}

// Keys in scripts: t('key'), and literal keys kept in tables (e.g. ui.js's error codes), which
// are recognised by a prefix that some dictionary key has.
const prefixes = new Set(Object.keys(dicts.en).map((k) => k.split('.')[0]));
function scriptKeys(js) {
  const keys = [...js.matchAll(/\bt\(\s*'([^']+)'/g)].map((m) => m[1]);
  for (const m of js.matchAll(/'([a-z_]+)\.([a-z_]+(?:\.[a-z_]+)*)'/g)) {
    if (prefixes.has(m[1]) && m[2] !== 'js') keys.push(`${m[1]}.${m[2]}`);
  }
  return keys;
}

test('every key the pages use exists', async () => {
  const missing = [];
  let count = 0;
  for (const page of pages) {
    for (const key of markupKeys(await read(page))) {
      count += 1;
      if (!(key in dicts.en)) missing.push(`${page}: ${key}`);
    }
  }
  for (const script of scripts) {
    for (const key of scriptKeys(await read(`js/${script}`))) {
      count += 1;
      if (!(key in dicts.en)) missing.push(`js/${script}: ${key}`);
    }
  }
  assert.ok(count > 200, `found only ${count} uses of keys; is the scan broken?`);
  assert.deepEqual(missing, []);
});

test('the live pages have no words outside data-i18n', async () => {
  for (const page of ['teacher.html', 'pupil.html']) {
    const html = await read(page);
    const body = html.slice(html.indexOf('<body'));
    // An element whose own text has letters must take that text from the dictionary.
    const bare = [...body.matchAll(/<(\w+)([^>]*)>([^<]*\p{L}[^<]*)</gu)]
      .filter((m) => !/data-i18n="/.test(m[2]) && !/aria-hidden="true"/.test(m[2]))
      .map((m) => `<${m[1]}${m[2]}>${m[3].trim()}`);
    assert.deepEqual(bare, [], `${page} has text outside data-i18n`);
    assert.ok(!/<span lang="ja"/.test(html), `${page} still has a dual-language notice`);
    assert.match(html, /id="lang-switch"/, `${page} has no language switch`);
    const title = /<title([^>]*)>/.exec(html);
    assert.match(title[1], /data-i18n=/, `${page}: the title is not translated`);
  }
});
