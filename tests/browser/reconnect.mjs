// Browser test of getting back into the lesson without a click (issue 13): a teacher page and a
// pupil page (camera and microphone on both), and then the pupil's network taken away and given
// back, the pupil's address moved, and the server SIGKILLed and restarted. No step clicks
// anything after the pages are set up; every recovery is timed from the moment the network (or
// the server) is back, or from the moment the address starts changing.
//
// Run by reconnect.sh, which makes the namespaces and passes in:
//   BASE_URL, CLASSROOM_BIN, SERVER_ARGS, SERVER_LOG_DIR   the server this script starts itself
//   TEACHER_URL, PUPIL_URL (a 20 s join token), PUPIL_IDENTITY
//   PUPIL_NS, PUPIL_DEV, PUPIL_ADDR, MOVED_ADDR, GATEWAY  the pupil's namespace and link
//   PUPIL_CHROMIUM   a wrapper that starts Chromium in the pupil's namespace

import {
  required, delay, launch, runScenario, until, step, waitForServer, openPage, switchOn,
  inbound, expectVideoFlowing, allowSound, JOIN_MS,
} from './lib.mjs';
import { spawn, execFileSync } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';

const BASE_URL = required('BASE_URL');
const BIN = required('CLASSROOM_BIN');
const SERVER_ARGS = required('SERVER_ARGS').split(' ');
const LOG_DIR = required('SERVER_LOG_DIR');
const TEACHER_URL = required('TEACHER_URL');
const PUPIL_URL = required('PUPIL_URL');
const PUPIL_IDENTITY = required('PUPIL_IDENTITY');
const PUPIL_NS = required('PUPIL_NS');
const PUPIL_DEV = required('PUPIL_DEV');
const PUPIL_ADDR = required('PUPIL_ADDR');
const MOVED_ADDR = required('MOVED_ADDR');
const GATEWAY = required('GATEWAY');
const PUPIL_CHROMIUM = required('PUPIL_CHROMIUM');

// What issue 13 demands: decoding again within 3 s of the link's return (or of the moment the
// address starts changing), both pages back in the lesson within 10 s of the server's return.
const MEDIA_BACK_MS = 3000;
const SERVER_BACK_MS = 10000;
// Outages: a short one the signaling socket may survive, and one past its 30 s idle limit.
const SHORT_OUTAGE_MS = 5000;
const LONG_OUTAGE_MS = 40000;
// The pupil's own camera reaching the teacher again: Chromium's encoder and bandwidth estimate
// take their time after an outage (3 to 16 s measured), so this is only bounded, not timed tightly.
const PUPIL_UPLINK_MS = 30000;
// New frames that count as "decoding again" (a tenth of a second of the teacher's camera).
const NEW_FRAMES = 3;
// How often the moving pupil's page samples its own reception.
const SAMPLE_MS = 50;
// Frames the pupil decodes before its address moves: 5 s of the 20 fps test camera.
const STEADY_FRAMES = 100;

const TEACHER_CAMERA = { kind: 'video', source: 'camera', role: 'teacher' };
const PUPIL_CAMERA = { kind: 'video', source: 'camera', role: 'student' };

let server = null;
let serverRuns = 0;

function startServer() {
  serverRuns += 1;
  const log = openSync(path.join(LOG_DIR, `server-${serverRuns}.log`), 'a');
  server = spawn(BIN, SERVER_ARGS, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,classroom_sfu=debug' },
    stdio: ['ignore', log, log],
  });
  const child = server;
  child.on('exit', (code, signal) => {
    if (server === child) console.log(`  (server exited: code ${code}, signal ${signal})`);
  });
}

async function killServer() {
  const child = server;
  server = null;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

function inPupilNs(...args) {
  execFileSync('ip', ['netns', 'exec', PUPIL_NS, ...args], { stdio: 'inherit' });
}

function linkDown() {
  inPupilNs('ip', 'link', 'set', PUPIL_DEV, 'down');
  console.log(`  (${new Date().toISOString().slice(11, 23)} the pupil's link is down)`);
}

function linkUp(address) {
  inPupilNs('ip', 'link', 'set', PUPIL_DEV, 'up');
  // Taking the link down took its routes with it.
  inPupilNs('ip', 'route', 'replace', 'default', 'via', GATEWAY, 'dev', PUPIL_DEV, 'src', address);
  console.log(`  (${new Date().toISOString().slice(11, 23)} the pupil's link is up)`);
}

/** Frames decoded so far of `want`, with the track they belong to (a new participant has new ones). */
async function frames(page, want) {
  const s = await inbound(page, want);
  // Track ids start again after a server restart: the connection tells the counters apart.
  const pc = await page.evaluate(() => {
    const c = window.classroom.subscribePc;
    if (!c) return null;
    c.testId ??= Math.random().toString(36).slice(2);
    return c.testId;
  });
  return { pc, trackId: s.trackId ?? null, frames: s.framesDecoded ?? 0, state: s.connectionState ?? null };
}

/**
 * In the page: every `everyMs`, when the sample was taken, the subscribe connection's local
 * address (its selected pair's) and the frames decoded of `want` (kept in `window.moveWatch`).
 */
function startMoveWatch({ want, everyMs }) {
  const c = window.classroom;
  const watch = { samples: [], busy: false };
  watch.timer = setInterval(async () => {
    const pc = c.subscribePc;
    if (watch.busy || !pc || watch.samples.length >= 2000) return;
    watch.busy = true;
    try {
      const record = [...c.session.remoteTracks.values()].find((r) => r.kind === want.kind && r.source === want.source
        && c.session.participant(r.participantId)?.role === want.role);
      const stats = await pc.getStats();
      let pair = null;
      let inbound = null;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
        if (record && s.type === 'inbound-rtp' && (s.trackIdentifier === record.track.id || (s.mid !== undefined && s.mid === record.mid))) inbound = s;
      });
      pc.testId ??= Math.random().toString(36).slice(2);
      watch.samples.push({
        at: Date.now(),
        local: (pair && stats.get(pair.localCandidateId)?.address) ?? null,
        pc: pc.testId,
        trackId: record?.trackId ?? null,
        frames: inbound?.framesDecoded ?? 0,
        state: pc.connectionState,
      });
    } finally {
      watch.busy = false;
    }
  }, everyMs);
  window.moveWatch = watch;
}

/**
 * When decoding resumed on a path from `address`: the first sample with NEW_FRAMES new frames
 * (`at`), and the first with one (`firstAt`, for the log); null until then. Frames counted while
 * the path still starts at the old address (in flight at the move, or decoded from what the
 * jitter buffer held) only move the base.
 */
function decodedFromNewAddress(samples, address) {
  let base = null;
  let resumed = null;
  for (const s of samples) {
    if (s.local !== address || base === null) {
      base = s;
      resumed = null;
      if (s.local !== address) continue;
    }
    const renewed = s.trackId !== base.trackId || s.pc !== base.pc;
    const fresh = renewed ? s.frames : s.frames - base.frames;
    if (fresh >= 1) resumed ??= s;
    if (fresh >= NEW_FRAMES) return { at: s.at, firstAt: resumed.at, local: s.local, fresh, frames: s.frames, trackId: s.trackId };
  }
  return null;
}

/** Waits until `want` decodes NEW_FRAMES new frames after `base`; returns the ms since `since`. */
async function decodingAgain(page, label, want, base, since, limitMs) {
  const seen = await until(`${label}: ${NEW_FRAMES} new frames of ${JSON.stringify(want)}`, async () => {
    const now = await frames(page, want);
    const renewed = now.trackId && (now.trackId !== base.trackId || now.pc !== base.pc);
    const fresh = renewed ? now.frames : now.frames - base.frames;
    const state = await page.evaluate(() => window.classroom.state);
    return {
      ok: fresh >= NEW_FRAMES,
      fresh,
      now,
      reconnecting: state.reconnecting,
      reconnects: state.reconnects,
      iceRestarts: state.iceRestarts,
    };
  }, limitMs + 30000);
  const ms = Date.now() - since;
  console.log(`  ${label}: decoding again ${ms} ms after the network came back (${JSON.stringify(seen)})`);
  if (ms > limitMs) throw new Error(`${label} decoded again only after ${ms} ms (at most ${limitMs} ms allowed)`);
  return ms;
}

/** What the page's publish connection sends, for the log. */
function senders(page) {
  return page.evaluate(async () => {
    const pc = window.classroom.publishPc;
    if (!pc) return null;
    const out = [];
    (await pc.getStats()).forEach((st) => {
      if (st.type === 'outbound-rtp') out.push({ kind: st.kind, ssrc: st.ssrc, packetsSent: st.packetsSent, framesEncoded: st.framesEncoded, limit: st.qualityLimitationReason, active: st.active });
    });
    return {
      state: pc.connectionState,
      senders: pc.getSenders().map((x) => ({ track: x.track ? `${x.track.kind} ${x.track.readyState} muted=${x.track.muted} enabled=${x.track.enabled}` : null, encodings: x.getParameters().encodings })),
      out,
    };
  });
}

/** The teacher page's tile of the pupil: how many, and whether it says "reconnecting". */
function pupilTile(teacher) {
  return teacher.evaluate((identity) => {
    const tiles = [...document.querySelectorAll('.tile[data-identity]')].filter((t) => t.dataset.identity === identity);
    return {
      count: tiles.length,
      reconnecting: tiles.some((t) => t.classList.contains('reconnecting')),
      note: tiles[0]?.querySelector('.tile-reconnecting')?.textContent ?? null,
      participantId: tiles[0]?.dataset.participantId ?? null,
    };
  }, PUPIL_IDENTITY);
}

/** Nothing on the page asks to be clicked. */
async function noButtonToPress(page, label) {
  const action = await page.evaluate(() => {
    const banner = document.getElementById('banner');
    return banner && !banner.hidden ? banner.querySelector('button')?.textContent ?? null : null;
  });
  if (action) throw new Error(`${label} shows a button to press: "${action}"`);
}

function tokenExpiry(url) {
  const token = new URL(url).searchParams.get('token') ?? '';
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString() || '{}');
  return (claims.exp ?? 0) * 1000;
}

runScenario('reconnect', async (closers) => {
  closers.push(killServer);
  startServer();
  await step('server answers /healthz', () => waitForServer(BASE_URL));

  const near = await launch(BASE_URL);
  closers.push(near.close);
  const away = await launch(BASE_URL, PUPIL_CHROMIUM);
  closers.push(away.close);

  let teacher;
  let pupil;
  let pupilId;
  await step('teacher and pupil are in the lesson, each seeing the other', async () => {
    teacher = await openPage(near.context, 'teacher', TEACHER_URL);
    await switchOn(teacher, 'teacher', '#btn-camera');
    await switchOn(teacher, 'teacher', '#btn-mic');
    pupil = await openPage(away.context, 'pupil', PUPIL_URL);
    await switchOn(pupil, 'pupil', '#btn-camera');
    await expectVideoFlowing(pupil, 'pupil', TEACHER_CAMERA);
    await allowSound(pupil);
    await expectVideoFlowing(teacher, 'teacher', PUPIL_CAMERA);
    pupilId = (await pupil.evaluate(() => window.classroom.state.participantId));
    const tile = await pupilTile(teacher);
    if (tile.count !== 1 || tile.participantId !== pupilId) throw new Error(`teacher's tiles of the pupil: ${JSON.stringify(tile)}`);
  });

  await step(`the pupil's link is down for ${SHORT_OUTAGE_MS / 1000} s: decoding resumes within ${MEDIA_BACK_MS / 1000} s, no click`, async () => {
    linkDown();
    await delay(SHORT_OUTAGE_MS); // the outage itself
    const base = await frames(pupil, TEACHER_CAMERA);
    const back = Date.now();
    linkUp(PUPIL_ADDR);
    await decodingAgain(pupil, 'pupil', TEACHER_CAMERA, base, back, MEDIA_BACK_MS);
    await noButtonToPress(pupil, 'pupil');
    const teacherBase = await frames(teacher, PUPIL_CAMERA);
    console.log(`  pupil's senders: ${JSON.stringify(await senders(pupil))}`);
    await decodingAgain(teacher, 'teacher (the pupil\'s camera)', PUPIL_CAMERA, teacherBase, back, PUPIL_UPLINK_MS);
    const tile = await until('the teacher to show the pupil once, not reconnecting', async () => {
      const t = await pupilTile(teacher);
      return { ...t, ok: t.count === 1 && !t.reconnecting };
    }, 15000);
    console.log(`  teacher's tile of the pupil: ${JSON.stringify(tile)}`);
  });

  await step('the pupil\'s 20 s join token has expired', async () => {
    const exp = tokenExpiry(PUPIL_URL);
    await until('the join token to expire', () => ({ ok: Date.now() > exp + 1000, left: exp - Date.now() }), 30000);
  });

  await step(`the pupil's link is down for ${LONG_OUTAGE_MS / 1000} s: the teacher sees "reconnecting", then the same pupil decoding again within ${MEDIA_BACK_MS / 1000} s`, async () => {
    const before = await pupil.evaluate(() => window.classroom.state.reconnects);
    linkDown();
    const downAt = Date.now();
    const shown = await until('the teacher page to show the pupil as reconnecting', async () => {
      const t = await pupilTile(teacher);
      return { ...t, ok: t.reconnecting && t.count === 1 };
    }, LONG_OUTAGE_MS - 2000);
    console.log(`  teacher shows "${shown.note}" ${Date.now() - downAt} ms into the outage`);
    await delay(Math.max(0, LONG_OUTAGE_MS - (Date.now() - downAt))); // the rest of the outage
    const base = await frames(pupil, TEACHER_CAMERA);
    const back = Date.now();
    linkUp(PUPIL_ADDR);
    await decodingAgain(pupil, 'pupil', TEACHER_CAMERA, base, back, MEDIA_BACK_MS);
    await noButtonToPress(pupil, 'pupil');
    const state = await pupil.evaluate(() => window.classroom.state);
    if (!(state.reconnects > before)) throw new Error(`the pupil's socket was not renewed: ${JSON.stringify(state)}`);
    const tile = await until('the teacher to show the same pupil again', async () => {
      const t = await pupilTile(teacher);
      return { ...t, ok: t.count === 1 && !t.reconnecting && t.participantId === pupilId };
    }, 15000);
    console.log(`  pupil resumed as ${state.participantId} (was ${pupilId}); teacher's tile: ${JSON.stringify(tile)}`);
    const teacherBase = await frames(teacher, PUPIL_CAMERA);
    console.log(`  pupil's senders: ${JSON.stringify(await senders(pupil))}`);
    await decodingAgain(teacher, 'teacher (the pupil\'s camera)', PUPIL_CAMERA, teacherBase, back, PUPIL_UPLINK_MS);
  });

  await step(`the server is SIGKILLed and restarted: both pages are back within ${SERVER_BACK_MS / 1000} s`, async () => {
    const before = await Promise.all([teacher, pupil].map((p) => p.evaluate(() => window.classroom.state.reconnects)));
    const base = await frames(pupil, TEACHER_CAMERA);
    await killServer();
    startServer();
    await waitForServer(BASE_URL);
    const back = Date.now();
    await until('teacher and pupil pages to rejoin', async () => {
      const states = await Promise.all([teacher, pupil].map((p) => p.evaluate(() => window.classroom.state)));
      return {
        ok: states.every((s, i) => s.joined && s.reconnects > before[i]),
        states: states.map((s) => ({ joined: s.joined, reconnecting: s.reconnecting, reconnects: s.reconnects, ended: s.ended })),
      };
    }, SERVER_BACK_MS);
    console.log(`  both pages joined again ${Date.now() - back} ms after the server answered`);
    await decodingAgain(pupil, 'pupil (after the restart)', TEACHER_CAMERA, base, back, SERVER_BACK_MS);
    await noButtonToPress(teacher, 'teacher');
    await noButtonToPress(pupil, 'pupil');
  });
  await step(`the pupil's address changes: decoding resumes within ${MEDIA_BACK_MS / 1000} s`, async () => {
    // Mid-lesson: the pupil has been watching steadily for a while (the step before ends as soon
    // as decoding resumes after a server restart, when the pupil's bandwidth estimate is still
    // starting up). A condition on decoded frames, not a sleep.
    const settling = await frames(pupil, TEACHER_CAMERA);
    await until(`the pupil to decode ${STEADY_FRAMES} frames in a row before the move`, async () => {
      const now = await frames(pupil, TEACHER_CAMERA);
      const fresh = now.pc === settling.pc && now.trackId === settling.trackId ? now.frames - settling.frames : 0;
      return { ok: fresh >= STEADY_FRAMES, fresh };
    }, 30000);
    // The page samples itself every SAMPLE_MS (a round trip from here per observation would add
    // up to a poll's lag to the measure): when each sample was taken, the subscribe connection's
    // local address, and the teacher's camera's decoded frames.
    await pupil.evaluate(startMoveWatch, { want: TEACHER_CAMERA, everyMs: SAMPLE_MS });
    const moved = Date.now();
    inPupilNs('ip', 'addr', 'add', `${MOVED_ADDR}/24`, 'dev', PUPIL_DEV);
    inPupilNs('ip', 'route', 'replace', 'default', 'via', GATEWAY, 'dev', PUPIL_DEV, 'src', MOVED_ADDR);
    inPupilNs('ip', 'addr', 'del', `${PUPIL_ADDR}/24`, 'dev', PUPIL_DEV);
    console.log(`  (${new Date().toISOString().slice(11, 23)} the pupil's address moved to ${MOVED_ADDR})`);
    const seen = await until(`pupil (moved): ${NEW_FRAMES} new frames of the teacher's camera from ${MOVED_ADDR}`, async () => {
      const samples = await pupil.evaluate(() => window.moveWatch.samples);
      const back = decodedFromNewAddress(samples.filter((s) => s.at >= moved), MOVED_ADDR);
      return { ok: back !== null, back, last: samples.at(-1), samples: samples.length };
    }, MEDIA_BACK_MS + 30000);
    await pupil.evaluate(() => clearInterval(window.moveWatch.timer));
    const state = await pupil.evaluate(() => window.classroom.state);
    const ms = seen.back.at - moved;
    console.log(`  pupil (moved): decoding again (${NEW_FRAMES} new frames) ${ms} ms after the address changed, the first after ${seen.back.firstAt - moved} ms (${JSON.stringify({ ...seen.back, reconnects: state.reconnects, iceRestarts: state.iceRestarts })})`);
    if (process.env.TRACE_MOVE) {
      const samples = await pupil.evaluate(() => window.moveWatch.samples);
      for (const s of samples) console.log(`    +${s.at - moved} ms ${s.local} ${s.trackId} frames=${s.frames} ${s.state}`);
    }
    if (ms > MEDIA_BACK_MS) throw new Error(`pupil (moved) decoded again only after ${ms} ms (at most ${MEDIA_BACK_MS} ms allowed)`);
    await noButtonToPress(pupil, 'pupil');
  });

});
