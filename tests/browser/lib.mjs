// Shared by the browser scenarios (e2e.mjs, shaped.mjs): launching Chromium, polling page state
// with deadlines, reading getStats from the pages' own peer connections, and diagnostics on
// failure. Each scenario is a list of steps; `runScenario` reports them and exits with a status.

import { chromium } from 'playwright-core';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

export { delay };

export function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`e2e: environment variable ${name} is required (run.sh sets it)`);
    process.exit(2);
  }
  return value;
}

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACT_DIR = process.env.ARTIFACT_DIR || '';

// Deadlines. Generous, because the machine is small and shared; the test still fails in well
// under run.sh's overall limit when something never happens.
export const SERVER_READY_MS = 30000;
export const JOIN_MS = 15000;
export const MEDIA_MS = 30000;
export const POLL_MS = 250;
// "Keeps rising": at 20 fps, 10 more frames take half a second of healthy video.
export const MIN_NEW_FRAMES = 10;

/** Chromium flags for a test page served from `baseUrl` over plain http. */
function chromiumArgs(baseUrl) {
    return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    // The test server speaks plain http on a non-localhost address, where browsers hide cameras;
    // real deployments use https. This makes the test origin count as secure, and nothing else.
    `--unsafely-treat-insecure-origin-as-secure=${new URL(baseUrl).origin}`,
  ];
}

export const logs = []; // every page's console, dumped on failure (or always with PRINT_LOGS=1)

/** Wall-clock time of a console line, to line it up with the steps' own timings. */
function stamp() {
  return new Date().toISOString().slice(11, 23);
}
export const pages = new Map(); // label -> Page
let passed = 0;

/**
 * Polls `probe` until it returns an object whose `ok` is true, and returns that object. On the
 * deadline it throws with the last observation, which is what a reader needs to see why. A probe
 * that sees the condition can no longer come true returns `{fail: reason}` to stop at once.
 */
export async function until(what, probe, timeoutMs = MEDIA_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last?.ok) return last;
      if (last?.fail) break;
    } catch (err) {
      last = { error: String(err?.message || err) };
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last observation: ${JSON.stringify(last)}`);
    }
    await delay(POLL_MS);
  }
  throw new Error(`gave up waiting for ${what}: ${last.fail}; observation: ${JSON.stringify(last)}`);
}

export async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
  } catch (err) {
    err.step = name;
    throw err;
  }
  passed += 1;
  console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

export async function waitForServer(baseUrl) {
  await until(`${baseUrl}/healthz to answer 200`, async () => {
    const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2000) });
    return { ok: res.status === 200, status: res.status };
  }, SERVER_READY_MS);
}

export async function openPage(context, label, url, initScript) {
  const page = await context.newPage();
  if (initScript) await page.addInitScript(initScript);
  pages.set(label, page);
  page.on('console', (msg) => logs.push(`${stamp()} [${label}] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[${label}] UNCAUGHT: ${err.stack || err}`));
  page.on('crash', () => logs.push(`[${label}] PAGE CRASHED`));
  await page.goto(url, { timeout: JOIN_MS });
  await until(`${label} to join`, () => page.evaluate(() => {
    const state = window.classroom?.state;
    const banner = document.getElementById('banner');
    const shown = banner && !banner.hidden ? banner.querySelector('p')?.textContent : null;
    if (state?.ended) return { fail: `the session ended; the page says: ${shown}`, state };
    return { ok: Boolean(state?.joined), state: state ?? null, banner: shown };
  }), JOIN_MS);
  return page;
}
/** Clicks a toggle button and waits for it to report "on" (the server accepted the publish). */
export async function switchOn(page, label, selector) {
  await page.click(selector, { timeout: JOIN_MS });
  await until(`${label} ${selector} to be on`, () => page.evaluate((sel) => {
    const button = document.querySelector(sel);
    return {
      ok: button?.getAttribute('aria-pressed') === 'true' && !button.disabled,
      pressed: button?.getAttribute('aria-pressed'),
      disabled: button?.disabled,
      banner: document.getElementById('banner')?.hidden ? null : document.querySelector('#banner p')?.textContent,
    };
  }, selector), JOIN_MS);
}

/**
 * The page's outbound RTP of `kind` on its publish connection (only the m= section `mid`, when
 * given): totals over all encodings, and each encoding (simulcast layer) on its own.
 */
export function outbound(page, kind, mid) {
  return page.evaluate(async ({ kind, mid }) => {
    const pc = window.classroom?.publishPc;
    if (!pc) return { ok: false, why: 'no publish connection' };
    const stats = [];
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === kind && (mid === undefined || s.mid === mid)) stats.push(s);
    });
    return {
      connectionState: pc.connectionState,
      packetsSent: stats.reduce((n, s) => n + (s.packetsSent ?? 0), 0),
      framesEncoded: stats.reduce((n, s) => n + (s.framesEncoded ?? 0), 0),
      frameWidth: Math.max(0, ...stats.map((s) => s.frameWidth ?? 0)),
      // Lowest layer first, as offered; stats come in no particular order.
      encodings: stats.sort((a, b) => 'qhf'.indexOf(a.rid) - 'qhf'.indexOf(b.rid)).map((s) => ({
        rid: s.rid ?? null,
        active: s.active,
        framesEncoded: s.framesEncoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        scalabilityMode: s.scalabilityMode,
        qualityLimitationReason: s.qualityLimitationReason,
      })),
    };
  }, { kind, mid });
}
/**
 * Inbound RTP stats, on the page's subscribe connection, of the remote track that matches
 * `want` ({kind, source, and participantId or role}). The track is found through the session's
 * own mapping (offer `tracks` by mid), so this also checks that the mapping is right.
 */
export function inbound(page, want) {
  return page.evaluate(async (want) => {
    const c = window.classroom;
    const session = c?.session;
    if (!session || !c.subscribePc) return { found: false, why: 'no subscribe connection' };
    const record = [...session.remoteTracks.values()].find((r) => r.kind === want.kind
      && r.source === want.source
      && (want.participantId ? r.participantId === want.participantId : session.participant(r.participantId)?.role === want.role));
    if (!record) return { found: false, why: 'no such remote track', remoteTracks: c.state.remoteTracks };
    let s = null;
    (await c.subscribePc.getStats()).forEach((st) => {
      if (st.type === 'inbound-rtp' && (st.trackIdentifier === record.track.id || (st.mid !== undefined && st.mid === record.mid))) s = st;
    });
    return {
      found: Boolean(s),
      trackId: record.trackId,
      mid: record.mid,
      connectionState: c.subscribePc.connectionState,
      packetsReceived: s?.packetsReceived ?? 0,
      framesDecoded: s?.framesDecoded ?? 0,
      keyFramesDecoded: s?.keyFramesDecoded ?? 0,
      framesReceived: s?.framesReceived ?? 0,
      framesDropped: s?.framesDropped ?? 0,
      freezeCount: s?.freezeCount ?? 0,
      packetsLost: s?.packetsLost ?? 0,
      nackCount: s?.nackCount ?? 0,
      pliCount: s?.pliCount ?? 0,
      frameWidth: s?.frameWidth ?? 0,
      frameHeight: s?.frameHeight ?? 0,
      audioLevel: s?.audioLevel ?? 0,
      totalAudioEnergy: s?.totalAudioEnergy ?? 0,
    };
  }, want);
}
/** Video of `want` is decoded, with a size, and keeps being decoded. */
export async function expectVideoFlowing(page, label, want) {
  const first = await until(`${label}: first decoded frames of ${JSON.stringify(want)}`, async () => {
    const s = await inbound(page, want);
    return { ...s, ok: s.found && s.framesDecoded > 0 && s.frameWidth > 0 };
  });
  const later = await until(`${label}: decoded frames of ${JSON.stringify(want)} to keep rising past ${first.framesDecoded + MIN_NEW_FRAMES}`, async () => {
    const s = await inbound(page, want);
    return { ...s, ok: s.found && s.framesDecoded >= first.framesDecoded + MIN_NEW_FRAMES && s.frameWidth > 0 };
  });
  console.log(`  ${label}: video ${later.frameWidth}x${later.frameHeight}, framesDecoded ${first.framesDecoded} -> ${later.framesDecoded}`);
  return later;
}

/** Audio of `want` arrives with sound in it (the fake microphone beeps). */
export async function expectAudioFlowing(page, label, want) {
  const first = await until(`${label}: audio packets of ${JSON.stringify(want)}`, async () => {
    const s = await inbound(page, want);
    return { ...s, ok: s.found && s.packetsReceived > 0 };
  });
  const later = await until(`${label}: audio energy of ${JSON.stringify(want)} (audioLevel > 0 or totalAudioEnergy rising)`, async () => {
    const s = await inbound(page, want);
    return { ...s, ok: s.found && (s.audioLevel > 0 || s.totalAudioEnergy > first.totalAudioEnergy) };
  });
  console.log(`  ${label}: audio packets ${later.packetsReceived}, audioLevel ${later.audioLevel}, totalAudioEnergy ${later.totalAudioEnergy}`);
}
/** A user would tap "turn on sound" if the browser held the audio back; so does the test. */
export async function allowSound(page) {
  const button = page.locator('#btn-sound');
  if (await button.isVisible()) {
    console.log('  (the page held audio back until a tap; tapping "turn on sound")');
    await button.click({ timeout: JOIN_MS });
  }
}

export async function videoElementShows(page, selector) {
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return { ok: Boolean(v && v.videoWidth > 0 && !v.paused), exists: Boolean(v), videoWidth: v?.videoWidth, paused: v?.paused };
  }, selector);
}

/** Pictures of every page for a person to look at, when ARTIFACT_DIR is set. */
export async function screenshots(tag) {
  if (!ARTIFACT_DIR) return;
  await mkdir(ARTIFACT_DIR, { recursive: true });
  for (const [label, page] of pages) {
    await page.screenshot({ path: path.join(ARTIFACT_DIR, `${label}-${tag}.png`), timeout: 5000 }).catch(() => {});
  }
}

export async function dumpDiagnostics() {
  console.log('\n---- diagnostics ----');
  for (const [label, page] of pages) {
    try {
      const info = await page.evaluate(async () => {
        const c = window.classroom;
        // The fields that tell whether media moved; full reports would bury them.
        const keep = ['type', 'kind', 'mid', 'ssrc', 'state', 'nominated', 'packetsSent', 'packetsReceived',
          'bytesSent', 'bytesReceived', 'framesEncoded', 'framesDecoded', 'frameWidth', 'frameHeight',
          'keyFramesDecoded', 'pliCount', 'nackCount', 'packetsLost', 'audioLevel', 'totalAudioEnergy',
          'codecId', 'trackIdentifier'];
        const summarize = async (pc) => {
          if (!pc) return null;
          const stats = [];
          (await pc.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp' || (s.type === 'candidate-pair' && s.nominated)) {
              stats.push(Object.fromEntries(keep.filter((k) => s[k] !== undefined).map((k) => [k, s[k]])));
            }
          });
          return { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState, signalingState: pc.signalingState, stats };
        };
        const banner = document.getElementById('banner');
        return {
          url: location.pathname,
          banner: banner && !banner.hidden ? banner.querySelector('p')?.textContent : null,
          state: c?.state ?? null,
          publish: await summarize(c?.publishPc),
          subscribe: await summarize(c?.subscribePc),
          subscribeRemoteSdp: c?.subscribePc?.remoteDescription?.sdp ?? null,
          publishRemoteSdp: c?.publishPc?.remoteDescription?.sdp ?? null,
        };
      });
      const { subscribeRemoteSdp, publishRemoteSdp, ...rest } = info;
      console.log(`[${label}] ${JSON.stringify(rest, null, 1)}`);
      if (publishRemoteSdp) console.log(`[${label}] publish answer from the server:\n${publishRemoteSdp}`);
      if (subscribeRemoteSdp) console.log(`[${label}] latest subscriber offer from the server:\n${subscribeRemoteSdp}`);
    } catch (err) {
      console.log(`[${label}] (could not read page state: ${err.message})`);
    }
  }
  await screenshots('failure');
  console.log('\n---- browser console ----');
  for (const line of logs) console.log(line);
  console.log('---- end ----\n');
}

/**
 * A fresh Chromium profile and browser. `executablePath` may be a wrapper that starts Chromium in
 * another network namespace (run.sh makes one for the pupil on a shaped link); Playwright talks
 * to it over a pipe, so that works across namespaces. `contextOptions` go to Playwright's context
 * (e.g. `locale`).
 */
export async function launch(baseUrl, executablePath = CHROMIUM, extraArgs = [], contextOptions = {}) {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'classroom-e2e-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [...chromiumArgs(baseUrl), ...extraArgs],
    // Playwright mutes headless audio by default; the test wants the real playback path.
    ignoreDefaultArgs: ['--mute-audio'],
    timeout: 30000,
    viewport: { width: 1180, height: 820 }, // a 10" iPad held landscape
    ...contextOptions, // e.g. {locale: 'ja-JP'}: navigator.languages and Accept-Language
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/**
 * Runs `body` (which calls `step` for each check), prints diagnostics on failure, closes what
 * `body` registered in `closers`, and exits 0 only if every step passed.
 */
export async function runScenario(name, body) {
  const closers = [];
  let failure = null;
  try {
    await body(closers);
  } catch (err) {
    failure = err;
  }
  if (failure) {
    console.log(`\nFAIL ${failure.step || 'setup'}: ${failure.message}`);
    await dumpDiagnostics();
  } else if (process.env.PRINT_LOGS) {
    console.log('\n---- browser console ----');
    for (const line of logs) console.log(line);
    console.log('---- end ----\n');
  }
  for (const close of closers.reverse()) await close();
  console.log(`${name}: ${passed} passed, ${failure ? 1 : 0} failed`);
  process.exit(failure ? 1 : 0);
}

// ---- signed-in pages (portal.mjs) ----

export const PORTAL_MS = 15000;

/**
 * One Chromium with a context (cookie jar) per person: the signed-in pages need several people
 * signed in at once, and a context each is far lighter than a browser each.
 */
export async function launchPeople(baseUrl) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: chromiumArgs(baseUrl),
    timeout: 30000,
  });
  return {
    browser,
    person: () => browser.newContext({ viewport: { width: 1180, height: 820 } }),
    async close() {
      await browser.close().catch(() => {});
    },
  };
}

/** Waits until a signed-in page's test hooks say it has shown its first data. */
export async function portalReady(page, label) {
  await until(`${label} page to be ready`, () => page.evaluate(async () => {
    const portal = window.classroomPortal;
    if (!portal) return { ok: false, why: 'no window.classroomPortal yet' };
    if (portal.state.ready === false) return { fail: `the page failed: ${portal.state.lastError} ${portal.state.lastErrorMessage}` };
    return { ok: portal.state.ready === true, page: portal.state.page, lastError: portal.state.lastError };
  }), PORTAL_MS);
}

/**
 * Signs in as a person would with a one-time link: opens it, presses the page's button (the
 * POST that spends the link), and waits for the home page the server sends them to.
 */
export async function signInWithLink(context, label, link, home) {
  const page = await context.newPage();
  pages.set(label, page);
  page.on('console', (msg) => logs.push(`${stamp()} [${label}] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[${label}] UNCAUGHT: ${err.stack || err}`));
  page.on('crash', () => logs.push(`[${label}] PAGE CRASHED`));
  await page.goto(link, { timeout: PORTAL_MS });
  await Promise.all([
    page.waitForURL((url) => url.pathname === home, { timeout: PORTAL_MS }),
    page.click('#btn-signin', { timeout: PORTAL_MS }),
  ]);
  await portalReady(page, label);
  return page;
}

/** An API request from inside a signed-in page (its cookie; no CSRF header unless given). */
export function apiFrom(page, path, { method = 'GET', body, csrf = false } = {}) {
  return page.evaluate(async ({ path, method, body, csrf }) => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (csrf) headers['X-CSRF-Token'] = window.classroomPortal.state.me.csrf_token;
    // As the pages' api.js does: the real Origin, not `null` (the pages' referrer policy).
    const res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', referrerPolicy: 'same-origin',
    });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, body: json ?? text };
  }, { path, method, body, csrf });
}
