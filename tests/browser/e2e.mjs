// Browser end-to-end test: real Chromium pages (fake camera and microphone) against a real
// classroom server. One teacher publishes camera and microphone; a student and an observer watch
// and listen; the teacher shares and unshares a screen (renegotiation both ways); the student
// turns on their camera and the teacher must see it; the student leaves. Media is checked with
// getStats on the pages' own peer connections (window.classroom): "works" means frames decoded.
//
// Run by run.sh, which starts the server in a network namespace and passes in:
//   BASE_URL          e.g. http://10.213.0.1:8080
//   TEACHER_URL       invite link for role teacher
//   STUDENT_URL       invite link for role student (may publish)
//   STUDENT_IDENTITY  that student's identity, to find their tile on the teacher's page
//   OBSERVER_URL      invite link for role observer (subscribe only)
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACT_DIR (screenshots of the lesson, and
// of every page on failure).

import { chromium } from 'playwright-core';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`e2e: environment variable ${name} is required (run.sh sets it)`);
    process.exit(2);
  }
  return value;
}

const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const STUDENT_URL = required('STUDENT_URL');
const STUDENT_IDENTITY = required('STUDENT_IDENTITY');
const OBSERVER_URL = required('OBSERVER_URL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACT_DIR = process.env.ARTIFACT_DIR || '';

// Deadlines. Generous, because the machine is small and shared; the test still fails in well
// under run.sh's overall limit when something never happens.
const SERVER_READY_MS = 30000;
const JOIN_MS = 15000;
const MEDIA_MS = 30000;
const POLL_MS = 250;
// "Keeps rising": at 20 fps, 10 more frames take half a second of healthy video.
const MIN_NEW_FRAMES = 10;

const CHROMIUM_ARGS = [
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
  `--unsafely-treat-insecure-origin-as-secure=${new URL(BASE_URL).origin}`,
];

const logs = []; // every page's console, dumped on failure
const pages = new Map(); // label -> Page
let passed = 0;

/**
 * Polls `probe` until it returns an object whose `ok` is true, and returns that object. On the
 * deadline it throws with the last observation, which is what a reader needs to see why. A probe
 * that sees the condition can no longer come true returns `{fail: reason}` to stop at once.
 */
async function until(what, probe, timeoutMs = MEDIA_MS) {
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

async function step(name, fn) {
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

async function waitForServer() {
  await until(`${BASE_URL}/healthz to answer 200`, async () => {
    const res = await fetch(`${BASE_URL}/healthz`, { signal: AbortSignal.timeout(2000) });
    return { ok: res.status === 200, status: res.status };
  }, SERVER_READY_MS);
}

async function openPage(context, label, url, initScript) {
  const page = await context.newPage();
  if (initScript) await page.addInitScript(initScript);
  pages.set(label, page);
  page.on('console', (msg) => logs.push(`[${label}] ${msg.type()}: ${msg.text()}`));
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
async function switchOn(page, label, selector) {
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

/** The page's outbound RTP of `kind` on its publish connection. */
function outbound(page, kind) {
  return page.evaluate(async (kind) => {
    const pc = window.classroom?.publishPc;
    if (!pc) return { ok: false, why: 'no publish connection' };
    const stats = [];
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === kind) stats.push(s);
    });
    const s = stats[0];
    return {
      connectionState: pc.connectionState,
      packetsSent: s?.packetsSent ?? 0,
      framesEncoded: s?.framesEncoded,
      frameWidth: s?.frameWidth,
    };
  }, kind);
}

/**
 * Inbound RTP stats, on the page's subscribe connection, of the remote track that matches
 * `want` ({kind, source, and participantId or role}). The track is found through the session's
 * own mapping (offer `tracks` by mid), so this also checks that the mapping is right.
 */
function inbound(page, want) {
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
      frameWidth: s?.frameWidth ?? 0,
      frameHeight: s?.frameHeight ?? 0,
      audioLevel: s?.audioLevel ?? 0,
      totalAudioEnergy: s?.totalAudioEnergy ?? 0,
    };
  }, want);
}

/** Video of `want` is decoded, with a size, and keeps being decoded. */
async function expectVideoFlowing(page, label, want) {
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
async function expectAudioFlowing(page, label, want) {
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

/**
 * Headless Chromium cannot grant getDisplayMedia (there is no screen to pick), so the teacher
 * page gets an animated canvas instead; everything after capture (button, publish, pupils'
 * stage) is the real code path.
 */
function fakeScreenCapture() {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const canvas = document.createElement('canvas');
    canvas.width = 1280;
    canvas.height = 720;
    const g = canvas.getContext('2d');
    let n = 0;
    const draw = () => {
      n += 1;
      g.fillStyle = `hsl(${(n * 7) % 360}, 50%, 40%)`;
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.fillStyle = '#fff';
      g.font = '96px sans-serif';
      g.fillText(`Slide ${Math.floor(n / 50) + 1} · ${n}`, 80, 200);
    };
    draw();
    setInterval(draw, 100);
    return canvas.captureStream(10);
  };
}

/** A user would tap "turn on sound" if the browser held the audio back; so does the test. */
async function allowSound(page) {
  const button = page.locator('#btn-sound');
  if (await button.isVisible()) {
    console.log('  (the page held audio back until a tap; tapping "turn on sound")');
    await button.click({ timeout: JOIN_MS });
  }
}

async function videoElementShows(page, selector) {
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return { ok: Boolean(v && v.videoWidth > 0 && !v.paused), exists: Boolean(v), videoWidth: v?.videoWidth, paused: v?.paused };
  }, selector);
}

/** Pictures of every page for a person to look at, when ARTIFACT_DIR is set. */
async function screenshots(tag) {
  if (!ARTIFACT_DIR) return;
  await mkdir(ARTIFACT_DIR, { recursive: true });
  for (const [label, page] of pages) {
    await page.screenshot({ path: path.join(ARTIFACT_DIR, `${label}-${tag}.png`), timeout: 5000 }).catch(() => {});
  }
}

async function dumpDiagnostics() {
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

async function main() {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'classroom-e2e-'));
  let context;
  let failure = null;
  try {
    await step('server answers /healthz', waitForServer);

    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      // Playwright mutes headless audio by default; the test wants the real playback path.
      ignoreDefaultArgs: ['--mute-audio'],
      timeout: 30000,
      viewport: { width: 1180, height: 820 }, // a 10" iPad held landscape
    });

    let teacher;
    await step('teacher joins', async () => {
      teacher = await openPage(context, 'teacher', TEACHER_URL, fakeScreenCapture);
    });

    await step('teacher publishes camera and microphone', async () => {
      await switchOn(teacher, 'teacher', '#btn-camera');
      await switchOn(teacher, 'teacher', '#btn-mic');
      const confirmed = await teacher.evaluate(() => window.classroom.state.localTracks.map((t) => t.source).sort());
      if (!(confirmed.includes('camera') && confirmed.includes('microphone'))) {
        throw new Error(`publish_answer confirmed only ${JSON.stringify(confirmed)}`);
      }
      const video = await until('teacher to send video', async () => {
        const s = await outbound(teacher, 'video');
        return { ...s, ok: s.connectionState === 'connected' && s.framesEncoded > 0 && s.packetsSent > 0 };
      });
      await until('teacher to keep encoding video', async () => {
        const s = await outbound(teacher, 'video');
        return { ...s, ok: s.framesEncoded >= video.framesEncoded + MIN_NEW_FRAMES };
      });
      await until('teacher to send audio', async () => {
        const s = await outbound(teacher, 'audio');
        return { ...s, ok: s.packetsSent > 0 };
      });
      await until('teacher preview to show the camera', () => videoElementShows(teacher, '#preview'), JOIN_MS);
    });

    let student;
    let observer;
    await step('student and observer join', async () => {
      student = await openPage(context, 'student', STUDENT_URL);
      observer = await openPage(context, 'observer', OBSERVER_URL);
    });

    for (const [label, page] of [['student', student], ['observer', observer]]) {
      await step(`${label} sees and hears the teacher`, async () => {
        await expectVideoFlowing(page, label, { kind: 'video', source: 'camera', role: 'teacher' });
        await until(`${label} stage to show the teacher's camera`, () => videoElementShows(page, '#teacher-camera'), JOIN_MS);
        await allowSound(page);
        await expectAudioFlowing(page, label, { kind: 'audio', source: 'microphone', role: 'teacher' });
      });
    }

    await step('observer is offered no camera button', async () => {
      const hidden = await observer.locator('#btn-camera').isHidden();
      if (!hidden) throw new Error('the observer page shows "Turn on camera" although the token does not allow publishing');
    });

    await step('teacher shares the screen and the pupils see it', async () => {
      await switchOn(teacher, 'teacher', '#btn-screen');
      await expectVideoFlowing(observer, 'observer', { kind: 'video', source: 'screen', role: 'teacher' });
      await until('observer stage to show the screen', async () => {
        const shown = await videoElementShows(observer, '#teacher-screen');
        return { ...shown, ok: shown.ok && (await observer.locator('#stage.has-screen').count()) === 1 };
      }, JOIN_MS);
      // The camera must keep flowing beside the screen (renegotiation must not disturb it).
      await expectVideoFlowing(observer, 'observer', { kind: 'video', source: 'camera', role: 'teacher' });
      await screenshots('screen');
    });

    await step('teacher stops sharing and the pupils\' stage returns to the camera', async () => {
      await teacher.click('#btn-screen', { timeout: JOIN_MS });
      await until('observer to lose the screen track', () => observer.evaluate(() => {
        const screen = window.classroom.state.remoteTracks.filter((t) => t.source === 'screen');
        return { ok: screen.length === 0 && !document.getElementById('stage').classList.contains('has-screen'), screen };
      }), JOIN_MS);
      await expectVideoFlowing(observer, 'observer', { kind: 'video', source: 'camera', role: 'teacher' });
    });

    const studentId = await student.evaluate(() => window.classroom.state.participantId);
    await step('student turns on camera and the teacher sees it', async () => {
      await switchOn(student, 'student', '#btn-camera');
      const tile = `#pupil-grid .tile[data-identity="${STUDENT_IDENTITY}"]`;
      await until(`teacher to have a tile for ${STUDENT_IDENTITY}`, async () => ({ ok: (await teacher.locator(tile).count()) === 1 }), JOIN_MS);
      await expectVideoFlowing(teacher, 'teacher', { kind: 'video', source: 'camera', participantId: studentId });
      await until(`teacher tile of ${STUDENT_IDENTITY} to show video`, () => videoElementShows(teacher, `${tile} video`), JOIN_MS);
      await screenshots('lesson');
    });

    await step('student leaves and the teacher tile goes away', async () => {
      await student.click('#btn-leave', { timeout: JOIN_MS });
      await until(`teacher tile of ${STUDENT_IDENTITY} to be removed`, async () => ({
        ok: (await teacher.locator(`#pupil-grid .tile[data-identity="${STUDENT_IDENTITY}"]`).count()) === 0,
      }), JOIN_MS);
    });

    await step('no uncaught errors in the pages', async () => {
      const uncaught = logs.filter((line) => line.includes('UNCAUGHT') || line.includes('PAGE CRASHED'));
      if (uncaught.length) throw new Error(`pages threw:\n${uncaught.join('\n')}`);
    });
  } catch (err) {
    failure = err;
  }

  if (failure) {
    console.log(`\nFAIL ${failure.step || 'setup'}: ${failure.message}`);
    await dumpDiagnostics();
  }
  await context?.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  console.log(`e2e: ${passed} passed, ${failure ? 1 : 0} failed`);
  process.exit(failure ? 1 : 0);
}

main();
