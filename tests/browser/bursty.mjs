// Browser test of issue 17, bandwidth adaptation on a bursty home line: the pupil's downlink is
// shaped by run.sh with tc tbf at 300 kbit/s with a 16 kB burst (what many home routers, throttled
// mobile plans and ISP policers let through at full speed before they hold the rate), 300 ms of
// queue and 5 % random loss. A probe that fits in the burst sees a much faster line than there is;
// the pupil must nevertheless never be sent a picture the line cannot carry. Unlike shaped.mjs
// (the smooth line, checked once settled), this checks from the pupil's first decoded frame on:
// the start-up is what a pupil sees first.
//
// The teacher publishes three simulcast layers of a 960x540 camera (q 240x135, h 480x270, f
// 960x540); an unshaped pupil watches too, so that the teacher keeps encoding all three (dynacast)
// and the shaped pupil is offered the full layer. For the whole watch the shaped pupil:
//   - never decodes a picture wider than the teacher's h layer, and the server never reports
//     sending it the top layer (track_quality "high");
//   - decodes at least MIN_FPS frames in every second (the camera sends 15), and gets audio.
//
// Run by run.sh, which passes in:
//   BASE_URL          e.g. http://10.213.0.1:8080
//   TEACHER_URL       invite link for role teacher (a lesson of its own)
//   NEAR_URL          invite link for the pupil on the unshaped link
//   HOME_URL          invite link for the pupil on the bursty link
//   HOME_CHROMIUM     a wrapper that starts Chromium inside the bursty namespace
//   HOME_LINK         a description of the shaping, for the log

import {
  required, delay, launch, runScenario, until, step, waitForServer, openPage, switchOn, outbound,
  inbound, expectVideoFlowing, POLL_MS,
} from './lib.mjs';
import { texturedCamera } from './camera.mjs';
import { rm } from 'node:fs/promises';

const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const NEAR_URL = required('NEAR_URL');
const HOME_URL = required('HOME_URL');
const HOME_CHROMIUM = required('HOME_CHROMIUM');
const HOME_LINK = process.env.HOME_LINK || 'bursty';

// From the first decoded frame: long enough for the climb the issue saw (q -> h -> f within 4 s,
// back to q, h again for several seconds) and for a settled stretch after it.
const WATCH_SECONDS = 25;
// The fewest decoded frames in any one second (of the camera's 15).
const MIN_FPS = 5;
// Until the shaped pupil decodes its first frame (join, ICE, DTLS and a keyframe over the line).
const FIRST_FRAME_MS = 30000;

const CAMERA = { kind: 'video', source: 'camera', role: 'teacher' };
const MICROPHONE = { kind: 'audio', source: 'microphone', role: 'teacher' };

runScenario('bursty', async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));

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
    await until('three layers q/h/f in the camera\'s outbound stats', async () => {
      const o = await outbound(teacher, 'video');
      const rids = o.encodings.map((e) => e.rid).sort().join(',');
      return { ...o, ok: rids === 'f,h,q' && o.framesEncoded > 0 };
    });
  });

  let hWidth;
  await step('an unshaped pupil watches, so the teacher encodes q, h and f', async () => {
    const nearPupil = await openPage(near.context, 'near-pupil', NEAR_URL);
    await expectVideoFlowing(nearPupil, 'near-pupil', CAMERA);
    const s = await until('the teacher to encode q, h and f', async () => {
      const o = await outbound(teacher, 'video');
      const width = (rid) => o.encodings.find((e) => e.rid === rid && e.active !== false)?.frameWidth ?? 0;
      return { ...o, ok: width('q') > 0 && width('h') > width('q') && width('f') > width('h'), h: width('h'), f: width('f') };
    });
    hWidth = s.h;
    console.log(`  teacher encodes h at ${s.h} px wide, f at ${s.f}`);
  });

  let homePupil;
  let firstAt;
  await step(`the pupil on a ${HOME_LINK} line joins and decodes a first frame`, async () => {
    homePupil = await openPage(home.context, 'home-pupil', HOME_URL);
    // Every track_quality the server sends this page from now on, and the latest before (the
    // first one may come with the subscription, before the listener is in place).
    await homePupil.evaluate(() => {
      const session = window.classroom.session;
      window.bursty = { reports: [...session.trackQuality.values()].map((q) => ({ ...q, at: Date.now() })) };
      session.addEventListener('trackquality', (e) => window.bursty.reports.push({ ...e.detail, at: Date.now() }));
    });
    const first = await until('the shaped pupil\'s first decoded frame', async () => {
      const s = await inbound(homePupil, CAMERA);
      return { ...s, ok: s.found && s.framesDecoded > 0 };
    }, FIRST_FRAME_MS);
    firstAt = Date.now();
    console.log(`  first frame ${first.frameWidth}x${first.frameHeight}`);
  });

  await step(`from its first frame, for ${WATCH_SECONDS} s: never above h, at least ${MIN_FPS} frames in every second`, async () => {
    const read = async () => {
      const [video, audio, extra] = await Promise.all([
        inbound(homePupil, CAMERA),
        inbound(homePupil, MICROPHONE),
        homePupil.evaluate(() => {
          const session = window.classroom.session;
          const own = session.connectionQuality.get(session.self?.participant_id)
            ?? [...session.connectionQuality.values()][0];
          return { estimate: own?.estimate_kbps ?? null, loss: own?.loss ?? null };
        }),
      ]);
      return { at: Date.now(), video, audio: audio.packetsReceived, ...extra };
    };
    // Samples every POLL_MS: the widest picture of each second is seen even if it lasted only
    // part of it. Time from the first decoded frame; the fixed length is the measurement.
    let before = await read();
    const seconds = [];
    for (let i = 0; i < WATCH_SECONDS; i += 1) {
      const end = firstAt + (i + 1) * 1000;
      const second = { widest: before.video.frameWidth };
      let now = before;
      while (Date.now() < end) {
        await delay(Math.min(POLL_MS, Math.max(0, end - Date.now())));
        now = await read();
        second.widest = Math.max(second.widest, now.video.frameWidth);
      }
      Object.assign(second, {
        frames: now.video.framesDecoded - before.video.framesDecoded,
        width: now.video.frameWidth,
        audio: now.audio - before.audio,
        packets: now.video.packetsReceived - before.video.packetsReceived,
        lost: now.video.packetsLost - before.video.packetsLost,
        nacks: now.video.nackCount - before.video.nackCount,
        plis: now.video.pliCount - before.video.pliCount,
        keyframes: now.video.keyFramesDecoded - before.video.keyFramesDecoded,
        dropped: now.video.framesDropped - before.video.framesDropped,
        estimate: now.estimate,
      });
      seconds.push(second);
      before = now;
    }
    const reports = await homePupil.evaluate(() => window.bursty.reports);
    const when = (at) => ((at - firstAt) / 1000).toFixed(1);
    console.log(`  server track_quality (s from the first frame): ${reports.map((r) => `${r.paused ? 'paused' : r.layer}@${when(r.at)}`).join(' ') || 'none'}`);
    console.log(`  second: frames decoded/width (widest), packets/lost/NACKs/PLIs/keyframes/dropped, estimate kbit/s`);
    seconds.forEach((s, i) => console.log(`  ${String(i + 1).padStart(2)}: ${s.frames}f/${s.width} (${s.widest}), ${s.packets}/${s.lost}/${s.nacks}/${s.plis}/${s.keyframes}/${s.dropped}, ${s.estimate ?? '-'}`));

    const problems = [];
    const seconds1 = (pick) => seconds.map((s, i) => (pick(s) ? i + 1 : 0)).filter((i) => i > 0);
    const tooWide = seconds1((s) => s.widest > hWidth);
    if (tooWide.length > 0) problems.push(`the pupil decoded a picture wider than h (${hWidth} px) in seconds ${tooWide.join(', ')}`);
    const high = reports.find((r) => r.layer === 'high');
    if (high) problems.push(`the server reported sending the top layer at ${when(high.at)} s`);
    const slow = seconds1((s) => s.frames < MIN_FPS);
    if (slow.length > 0) problems.push(`fewer than ${MIN_FPS} decoded frames in seconds ${slow.join(', ')}`);
    const silent = seconds1((s) => s.audio === 0);
    if (silent.length > 0) problems.push(`no audio in seconds ${silent.join(', ')}`);
    if (problems.length > 0) throw new Error(problems.join('; '));
  });
});
