// Where the sign-in page may send the browser: `next` comes from a URL anyone can craft, so only
// a path on this site is followed. The same rule as the server's (portal/src/next.rs), tested
// with the same table (tests/browser/safe-next-cases.json, run by tests/browser/next.test.mjs).
// No imports: the test loads this file on its own under Node.

const MAX_LEN = 2048;
// Layers of percent-encoding looked through, so that a proxy decoding once more than the browser
// does cannot find a way off the site either.
const DECODE_DEPTH = 3;
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/**
 * `value` as a same-origin path (normalised), or null. Refuses whitespace, control characters
 * and backslashes anywhere (browsers drop tab and newline inside URLs and read `\` as `/`, so
 * `/\t/evil.example` means `//evil.example`), anything not starting with one `/`, paths that turn
 * into `//…` or hold such characters once decoded (`/%2F%2Fevil.example`), and the sign-in page.
 */
export function safeNext(value, origin) {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_LEN) return null;
  if (!PRINTABLE_ASCII.test(value) || value.includes('\\')) return null;
  if (!value.startsWith('/') || value.startsWith('//')) return null;
  let url;
  try {
    url = new URL(value, origin);
  } catch {
    return null;
  }
  if (url.origin !== new URL(origin).origin) return null;
  const path = url.pathname;
  if (path.startsWith('//') || path === '/signin.html') return null;
  let layer = path;
  for (let i = 0; i < DECODE_DEPTH; i += 1) {
    let decoded;
    try {
      decoded = decodeURIComponent(layer);
    } catch {
      return null;
    }
    if (decoded.startsWith('//') || decoded.includes('\\') || CONTROL.test(decoded)) return null;
    if (decoded === layer) break;
    layer = decoded;
  }
  return path + url.search + url.hash;
}
