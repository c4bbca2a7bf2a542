// The one way the signed-in pages talk to the HTTP API (docs/API.md).
//
// - Same-origin cookies only: the session cookie is HttpOnly, so this code never sees it.
// - State-changing requests carry `X-CSRF-Token` from `GET /api/me`; the token is fetched on
//   first need and refetched once if the server says `csrf` (the session may have been renewed
//   in another tab). They are sent with `referrerPolicy: 'same-origin'` so that the browser
//   sends the page's real `Origin` (see `request`).
// - Every failure is thrown as an `ApiError` with the API's stable `code` (and the whole body,
//   e.g. the roster import's `problems`), so pages choose their wording by code, never by parsing
//   messages. Network failures get the code `network`.
// - 401 means the session is gone: go to the sign-in page with `next` pointing back here, so the
//   user lands where they were. Pages that must see the 401 (the sign-in page) pass
//   `redirectOn401: false`.

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

// Codes for answers that carry no JSON error body (a proxy's 502 page, a 404 from a static route).
const STATUS_CODES = {
  400: 'bad_request', 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found', 409: 'conflict',
  413: 'too_large', 422: 'bad_request', 429: 'rate_limited',
};

export class ApiError extends Error {
  constructor({ status, code, message, body = null, retryAfter = null }) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429
  }
}

let me = null;
let mePromise = null;
const listeners = new Set();

/** Called with every ApiError (the test hooks record the last code). */
export function onApiError(fn) {
  listeners.add(fn);
}

/** `GET /api/me`, cached for the page's life; `refresh` asks again. */
export function getMe({ refresh = false, redirectOn401 = true } = {}) {
  if (!mePromise || refresh) {
    mePromise = request('/api/me', { redirectOn401 }).then(
      (body) => {
        // Signed out, /api/me answers 200 with `person: null` (and whether OIDC is offered), so
        // that the sign-in page can read it without a failed request in the console.
        if (!body?.person) {
          if (redirectOn401) {
            redirecting = true;
            window.location.assign(signInUrl());
          }
          throw new ApiError({ status: 401, code: 'unauthenticated', message: 'Not signed in.', body });
        }
        me = body;
        return body;
      },
    ).catch((err) => { mePromise = null; throw err; });
  }
  return mePromise;
}

/** Where the sign-in page should send the user back to: this page, as a same-origin path. */
export function signInUrl(next = window.location.pathname + window.location.search) {
  return `/signin.html?next=${encodeURIComponent(next)}`;
}

let redirecting = false;

/** True once a 401 has sent the page to sign-in; pages then stop showing errors and polling. */
export function isRedirecting() {
  return redirecting;
}

/**
 * One API request. `body` is sent as JSON unless it is a Blob/File (sent as-is, with
 * `contentType`). Resolves with the parsed JSON, or null for 204 / empty answers.
 */
export async function request(path, { method = 'GET', body, contentType, redirectOn401 = true, signal } = {}) {
  method = method.toUpperCase();
  const headers = { Accept: 'application/json' };
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers['Content-Type'] = contentType || body.type || 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }

  for (let attempt = 0; ; attempt++) {
    if (STATE_CHANGING.has(method)) {
      const current = me || (await getMe());
      headers['X-CSRF-Token'] = current.csrf_token;
    }
    let response;
    try {
      // referrerPolicy: the pages are served with `Referrer-Policy: no-referrer`, under which
      // browsers send a same-origin POST/PUT with `Origin: null`, and the server's same-origin
      // check refuses that. `same-origin` still sends nothing to other sites.
      response = await fetch(path, {
        method, headers, body: payload, credentials: 'same-origin', signal, cache: 'no-store', referrerPolicy: 'same-origin',
      });
    } catch (cause) {
      if (cause?.name === 'AbortError') throw cause;
      throw report(new ApiError({ status: 0, code: 'network', message: String(cause?.message || cause) }));
    }
    if (response.ok) {
      if (response.status === 204) return null;
      const text = await response.text();
      if (!text) return null;
      try {
        return JSON.parse(text);
      } catch {
        throw report(new ApiError({ status: response.status, code: 'internal', message: 'The server sent an answer that is not JSON.' }));
      }
    }

    const error = await errorFrom(response);
    if (error.code === 'csrf' && attempt === 0 && STATE_CHANGING.has(method)) {
      me = null;
      await getMe({ refresh: true });
      continue; // once: a fresh token; a second `csrf` is a real refusal
    }
    if (error.code === 'unauthenticated' && redirectOn401) {
      redirecting = true;
      window.location.assign(signInUrl());
    }
    throw report(error);
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = JSON.parse(await response.text());
  } catch {
    // not JSON: fall back to the status
  }
  const retry = Number(response.headers.get('Retry-After'));
  return new ApiError({
    status: response.status,
    code: (body && typeof body.error === 'string' && body.error) || STATUS_CODES[response.status] || 'internal',
    message: (body && body.message) || response.statusText,
    body,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
  });
}

function report(error) {
  for (const fn of listeners) {
    try { fn(error); } catch { /* a listener's bug must not hide the error */ }
  }
  return error;
}

export const get = (path, options) => request(path, { ...options, method: 'GET' });
export const post = (path, body, options) => request(path, { ...options, method: 'POST', body });
export const put = (path, body, options) => request(path, { ...options, method: 'PUT', body });

/** Path segment encoding for ids from the roster (sourcedIds may hold any character). */
export function seg(id) {
  return encodeURIComponent(id);
}
