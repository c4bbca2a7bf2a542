// The sign-in page's `next` check (web-client/js/next.js) against the table the server's check
// is tested with (safe-next-cases.json, also read by portal/src/next.rs). Plain `node --test`:
// no browser needed; run.sh runs it first.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const here = new URL('.', import.meta.url);
const cases = JSON.parse(await readFile(new URL('safe-next-cases.json', here), 'utf8'));
// Loaded from its source as a data: URL: web-client has no package.json marking its .js files
// as ES modules, and next.js imports nothing, so it stands alone.
const source = await readFile(new URL('../../web-client/js/next.js', here), 'utf8');
const { safeNext } = await import(`data:text/javascript,${encodeURIComponent(source)}`);

const ORIGIN = 'https://lessons.example.jp';

test('other sites and tricks are refused', () => {
  assert.ok(cases.refused.length > 20);
  for (const value of cases.refused) {
    assert.equal(safeNext(value, ORIGIN), null, JSON.stringify(value));
  }
  assert.equal(safeNext(null, ORIGIN), null);
  assert.equal(safeNext(`/${'a'.repeat(2048)}`, ORIGIN), null);
});

test('same-site paths are kept', () => {
  for (const [value, expected] of cases.accepted) {
    assert.equal(safeNext(value, ORIGIN), expected, JSON.stringify(value));
  }
});
