// Browser test of bandwidth adaptation: the teacher publishes three simulcast layers; one pupil
// watches over the plain link, another from a "home" network namespace whose downlink run.sh has
// shaped with tc tbf (and random loss with nftables). The shaped pupil must get a smaller picture
// than the unshaped one, and neither may stop decoding: the picture may shrink, the lesson may not
// stop. On the way it checks dynacast: with nobody watching, the teacher is asked to stop
// encoding the upper layers, and to resume them when pupils need them.
//
// Run by run.sh, which passes in:
//   BASE_URL          e.g. http://10.213.0.1:8080
//   TEACHER_URL       invite link for role teacher (its own lesson, not e2e.mjs's)
//   NEAR_URL          invite link for the pupil on the unshaped link
//   HOME_URL          invite link for the pupil on the shaped link
//   HOME_CHROMIUM     a wrapper that starts Chromium inside the shaped namespace
//   HOME_LINK         a description of the shaping, for the log

import {
  required, delay, launch, runScenario, until, step, waitForServer, openPage, switchOn, outbound,
  inbound, expectVideoFlowing, expectAudioFlowing, allowSound, JOIN_MS,
} from './lib.mjs';
import { texturedCamera } from './camera.mjs';
import { rm } from 'node:fs/promises';

const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const NEAR_URL = required('NEAR_URL');
const HOME_URL = required('HOME_URL');
const HOME_CHROMIUM = required('HOME_CHROMIUM');
const HOME_LINK = process.env.HOME_LINK || 'shaped';

// Every pupil starts on the lowest layer and the estimate (300 kbit/s at first) must find both
// links' capacity, and a spatial switch waits for a keyframe: adaptation is given well over the
// 15 s the Rust test demands of the server alone, because here three encoders and two decoders
// share two cores.
const SETTLE_MS = 60000;
// Both pupils must agree for this long (samples 250 ms apart: 5 s) before the sizes count as
// settled, so that the watch below is about the steady state rather than the unshaped pupil's
// climb from the lowest layer.
const STABLE_SAMPLES = 20;
// After settling, the one-second windows in which both pupils must keep decoding.
const WATCH_SECONDS = 10;

const CAMERA = { kind: 'video', source: 'camera', role: 'teacher' };
const MICROPHONE = { kind: 'audio', source: 'microphone', role: 'teacher' };

function layerSummary(o) {
  return o.encodings.map((e) => `${e.rid} ${e.active === false ? 'off' : `${e.frameWidth}x${e.frameHeight}`}`).join(', ');
}

runScenario('shaped', async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));

  // The teacher's camera films a textured, changing picture: Chromium's own fake camera is so
  // cheap to encode (the full layer at about 0.5 Mbit/s) that its layers would barely differ in
  // cost, where a real classroom camera fills the caps the teacher page sets (150k/500k/1.5M).
  const camera = await texturedCamera();
  closers.push(() => rm(camera, { force: true }));
  const near = await launch(BASE_URL, undefined, [`--use-file-for-fake-video-capture=${camera}`]);
  closers.push(near.close);
  const home = await launch(BASE_URL, HOME_CHROMIUM);
  closers.push(home.close);

  let teacher;
  await step('teacher publishes the camera in three simulcast layers', async () => {
    teacher = await openPage(near.context, 'teacher', TEACHER_URL);
    await switchOn(teacher, 'teacher', '#btn-camera');
    await switchOn(teacher, 'teacher', '#btn-mic');
    const mode = await until('the camera to be sent as simulcast', () => teacher.evaluate(() => {
      const camera = window.classroom.state.publish.modes.camera;
      return { ok: camera === 'simulcast', camera, fail: camera === 'single' ? 'the server took one encoding' : undefined };
    }), JOIN_MS);
    const s = await until('three layers q/h/f in the camera\'s outbound stats', async () => {
      const o = await outbound(teacher, 'video');
      const rids = o.encodings.map((e) => e.rid).sort().join(',');
      return { ...o, ok: rids === 'f,h,q' && o.framesEncoded > 0 };
    });
    console.log(`  ${mode.camera}: ${layerSummary(s)}`);
  });

  await step('dynacast: with nobody watching, the teacher stops encoding h and f', async () => {
    // The server keeps the lowest layer on (a pupil who joins sees video at once) and switches
    // the others off after a grace period, which saves the classroom's uplink.
    const s = await until('set_encodings to leave only q on', async () => {
      const o = await outbound(teacher, 'video');
      const last = await teacher.evaluate(() => window.classroom.state.publish.lastSetEncodings);
      const off = (rid) => o.encodings.some((e) => e.rid === rid && e.active === false);
      return { ...o, last, ok: JSON.stringify(last?.active) === '["q"]' && off('h') && off('f') };
    });
    console.log(`  nobody watching: ${layerSummary(s)}`);
  });

  let nearPupil;
  let homePupil;
  await step(`pupils join: one unshaped, one on a ${HOME_LINK} link`, async () => {
    nearPupil = await openPage(near.context, 'near-pupil', NEAR_URL);
    homePupil = await openPage(home.context, 'home-pupil', HOME_URL);
    for (const [label, page] of [['near-pupil', nearPupil], ['home-pupil', homePupil]]) {
      await expectVideoFlowing(page, label, CAMERA);
      await allowSound(page);
      await expectAudioFlowing(page, label, MICROPHONE);
    }
  });

  await step('dynacast: the layers the pupils need are encoded again', async () => {
    // With nobody watching, the server asks the teacher to stop the layers no one needs
    // (set_encodings); the unshaped pupil needs the full picture, so f must come back.
    const s = await until('the teacher to encode q, h and f again', async () => {
      const o = await outbound(teacher, 'video');
      const last = await teacher.evaluate(() => window.classroom.state.publish.lastSetEncodings);
      const on = (rid) => o.encodings.some((e) => e.rid === rid && e.active !== false && e.frameWidth > 0);
      return { ...o, last, ok: JSON.stringify(last?.active) === '["q","h","f"]' && on('q') && on('h') && on('f') };
    });
    const last = await teacher.evaluate(() => window.classroom.state.publish.lastSetEncodings);
    console.log(`  with pupils watching: ${layerSummary(s)}; last set_encodings: ${JSON.stringify(last?.active ?? null)}`);
  });

  let settled;
  await step('the shaped pupil settles on a smaller picture than the unshaped one', async () => {
    const history = [];
    settled = await until('the shaped pupil to receive a lower resolution than the unshaped pupil', async () => {
      const [n, h] = await Promise.all([inbound(nearPupil, CAMERA), inbound(homePupil, CAMERA)]);
      history.push({ near: n.frameWidth, home: h.frameWidth });
      const recent = history.slice(-STABLE_SAMPLES);
      const apart = recent.length === STABLE_SAMPLES && recent.every((x) => x.home > 0 && x.home < x.near);
      // Samples come every 250 ms; keep only what the failure message needs.
      if (history.length > 60) history.shift();
      return { ok: apart, near: n.frameWidth, home: h.frameWidth, recent: history.slice(-12) };
    }, SETTLE_MS);
    const quality = await homePupil.evaluate(() => window.classroom.state.connectionQuality ?? null);
    console.log(`  unshaped pupil ${settled.near} px wide, shaped pupil ${settled.home} px wide; shaped pupil's own report: ${JSON.stringify(quality)}`);
  });

  await step(`both pupils decode in every second for ${WATCH_SECONDS} s, and the shaped one stays smaller`, async () => {
    const read = () => Promise.all([nearPupil, homePupil].map(async (page) => {
      const [video, audio] = await Promise.all([inbound(page, CAMERA), inbound(page, MICROPHONE)]);
      return {
        frames: video.framesDecoded,
        width: video.frameWidth,
        audio: audio.packetsReceived,
        packets: video.packetsReceived,
        keyframes: video.keyFramesDecoded,
        lost: video.packetsLost,
        plis: video.pliCount,
        nacks: video.nackCount,
        received: video.framesReceived,
        dropped: video.framesDropped,
      };
    }));
    // What the teacher encoded in each layer: a stall the publisher caused (its CPU, say) is
    // told apart from one the server caused.
    const encoded = async () => Object.fromEntries((await outbound(teacher, 'video')).encodings
      .map((e) => [e.rid, { frames: e.framesEncoded, limit: e.qualityLimitationReason }]));
    let before = await read();
    let teacherBefore = await encoded();
    const seconds = [];
    const teacherSeconds = [];
    for (let i = 0; i < WATCH_SECONDS; i += 1) {
      // A fixed one-second window is the measurement itself, not a wait for something to happen.
      await delay(1000);
      const [now, teacherNow] = await Promise.all([read(), encoded()]);
      const row = ['near', 'home'].map((who, k) => ({
        who,
        frames: now[k].frames - before[k].frames,
        audio: now[k].audio - before[k].audio,
        width: now[k].width,
        packets: now[k].packets - before[k].packets,
        keyframes: now[k].keyframes - before[k].keyframes,
        lost: now[k].lost - before[k].lost,
        plis: now[k].plis - before[k].plis,
        nacks: now[k].nacks - before[k].nacks,
        received: now[k].received - before[k].received,
        dropped: now[k].dropped - before[k].dropped,
      }));
      seconds.push(row);
      teacherSeconds.push(Object.entries(teacherNow)
        .map(([rid, e]) => `${rid}${e.frames - (teacherBefore[rid]?.frames ?? 0)}${e.limit && e.limit !== 'none' ? `(${e.limit})` : ''}`)
        .join(','));
      before = now;
      teacherBefore = teacherNow;
    }
    const line = (k) => seconds.map((r) => `${r[k].frames}f/${r[k].width}`).join(' ');
    console.log(`  teacher encoded: ${teacherSeconds.join(' ')}`);
    console.log(`  near: ${line(0)}`);
    console.log(`  home: ${line(1)}`);
    for (const [k, who] of [[0, 'near'], [1, 'home']]) {
      console.log(`  ${who} packets/lost/NACKs/PLIs/frames received/dropped/keyframes: ${seconds
        .map((r) => `${r[k].packets}/${r[k].lost}/${r[k].nacks}/${r[k].plis}/${r[k].received}/${r[k].dropped}/${r[k].keyframes}`).join(' ')}`);
    }
    // Audio never stops, and neither pupil's picture stops: every second has decoded frames.
    const silent = seconds.findIndex((r) => r.some((x) => x.audio === 0 || x.frames === 0));
    if (silent >= 0) {
      const [near, home] = seconds[silent];
      throw new Error(`in second ${silent + 1} a pupil got no audio or decoded no frame (teacher encoded ${teacherSeconds[silent]}): near ${JSON.stringify(near)}, home ${JSON.stringify(home)}`);
    }
    const last = seconds[seconds.length - 1];
    if (!(last[1].width < last[0].width)) {
      throw new Error(`the shaped pupil (${last[1].width} px) no longer gets a smaller picture than the unshaped one (${last[0].width} px)`);
    }
  });
});
