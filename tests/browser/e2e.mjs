// Browser end-to-end test: real Chromium pages (fake camera and microphone) against a real
// classroom server. One teacher publishes camera and microphone; a student and an observer watch
// and listen; the teacher shares and unshares a screen (renegotiation both ways); the student
// turns on their camera and the teacher must see it; the student leaves. Media is checked with
// getStats on the pages' own peer connections (window.classroom): "works" means frames decoded.
// The teacher's camera is offered as three simulcast layers; a server that refuses simulcast gets
// one encoding instead (the client retries), and the test checks whichever the server took.
//
// Run by run.sh, which starts the server in a network namespace and passes in:
//   BASE_URL          e.g. http://10.213.0.1:8080
//   TEACHER_URL       invite link for role teacher
//   STUDENT_URL       invite link for role student (may publish)
//   STUDENT_IDENTITY  that student's identity, to find their tile on the teacher's page
//   OBSERVER_URL      invite link for role observer (subscribe only)
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACT_DIR (screenshots of the lesson, and
// of every page on failure).

import {
  required, delay, launch, runScenario, until, step, waitForServer, openPage, switchOn, outbound,
  inbound, expectVideoFlowing, expectAudioFlowing, allowSound, videoElementShows, screenshots, logs,
  JOIN_MS, MIN_NEW_FRAMES,
} from './lib.mjs';

const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const STUDENT_URL = required('STUDENT_URL');
const STUDENT_IDENTITY = required('STUDENT_IDENTITY');
const OBSERVER_URL = required('OBSERVER_URL');

/**
 * What the teacher's publish connection agreed on for the camera: the client's own record
 * (session.publish) and, to check it, whether the server's answer has simulcast in that section.
 */
function publishMode(page) {
  return page.evaluate(() => {
    const c = window.classroom;
    const mid = c.session.transceivers.get('camera')?.mid ?? null;
    const answer = c.publishPc?.remoteDescription?.sdp ?? '';
    const section = answer.split(/\r?\nm=/).slice(1).find((s) => new RegExp(`^a=mid:${mid}\\s*$`, 'm').test(s)) ?? '';
    const params = c.session.transceivers.get('camera')?.sender.getParameters().encodings ?? [];
    return {
      ...c.state.publish,
      mid,
      answerHasSimulcast: /^a=simulcast:/m.test(section),
      encodings: params.map((e) => ({ rid: e.rid, active: e.active ?? true, scale: e.scaleResolutionDownBy ?? 1, maxBitrate: e.maxBitrate })),
    };
  });
}

/** For the log: which camera layers the teacher encodes now, and the server's last set_encodings. */
async function logCameraLayers(page, mid, when) {
  const o = await outbound(page, 'video', mid);
  const last = await page.evaluate(() => window.classroom.state.publish.lastSetEncodings);
  const layers = o.encodings.map((e) => `${e.rid ?? '-'}:${e.active === false ? 'off' : 'on'}`).join(' ');
  console.log(`  teacher camera layers ${when}: ${layers}; last set_encodings: ${last ? JSON.stringify(last.active) : 'none'}`);
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

runScenario('e2e', async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));

  // English pages: the notices below are checked by their English words (moderation.mjs checks Japanese).
  const browser = await launch(BASE_URL, undefined, [], { locale: 'en-US' });
  closers.push(browser.close);
  const { context } = browser;

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

  let cameraMid;
  await step('teacher camera is sent the way the server took it (simulcast or one encoding)', async () => {
    const mode = await until('the camera\'s send mode to be settled', async () => {
      const m = await publishMode(teacher);
      return { ...m, ok: m.modes.camera === 'simulcast' || m.modes.camera === 'single' };
    }, JOIN_MS);
    cameraMid = mode.mid;
    if ((mode.modes.camera === 'simulcast') !== mode.answerHasSimulcast) {
      throw new Error(`the client says ${mode.modes.camera} but the server's answer ${mode.answerHasSimulcast ? 'has' : 'has no'} simulcast`);
    }
    if (mode.modes.camera === 'simulcast') {
      console.log('  mode: SIMULCAST (the server accepted the three-layer offer)');
      // Each layer shows up as its own outbound-rtp with its rid; the server may pause layers
      // nobody needs (set_encodings), so only the count and names are required, not frames.
      const s = await until('three simulcast layers q/h/f in the camera\'s outbound stats', async () => {
        const o = await outbound(teacher, 'video', cameraMid);
        const rids = o.encodings.map((e) => e.rid).sort().join(',');
        return { ...o, ok: rids === 'f,h,q' && o.framesEncoded > 0 };
      });
      for (const e of s.encodings) console.log(`  layer ${e.rid}: ${e.frameWidth}x${e.frameHeight}, framesEncoded ${e.framesEncoded}, active ${e.active}, ${e.scalabilityMode ?? 'no scalabilityMode'}`);
      const scales = Object.fromEntries(mode.encodings.map((e) => [e.rid, e.scale]));
      if (scales.q !== 4 || scales.h !== 2 || scales.f !== 1) throw new Error(`unexpected layer scales ${JSON.stringify(mode.encodings)}`);
    } else {
      const refused = mode.simulcastAccepted === false;
      console.log(`  mode: SINGLE encoding (${refused ? 'the server refused the simulcast offer; the client retried without' : 'the answer took no simulcast'})`);
      const s = await until('one full-size encoding of the camera', async () => {
        const o = await outbound(teacher, 'video', cameraMid);
        const sending = o.encodings.filter((e) => e.framesEncoded > 0);
        return { ...o, ok: sending.length === 1 && o.framesEncoded > 0 };
      });
      const e = s.encodings.find((x) => x.framesEncoded > 0);
      console.log(`  encoding: ${e.frameWidth}x${e.frameHeight}, framesEncoded ${e.framesEncoded}, ${e.scalabilityMode ?? 'no scalabilityMode'}`);
      // What is left of the layers must be the full picture, not the quarter-size first layer.
      const [first, ...rest] = mode.encodings;
      if (!first || first.scale !== 1 || !first.active || rest.some((x) => x.active)) {
        throw new Error(`the single encoding is not one full-size active encoding: ${JSON.stringify(mode.encodings)}`);
      }
    }
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

  await step('student decodes the teacher\'s camera continuously for 6 s', async () => {
    // Sampled every half second: any 2 s without a new decoded frame is a stall (a layer switch
    // that waits for a keyframe takes well under that).
    const want = { kind: 'video', source: 'camera', role: 'teacher' };
    const samples = [];
    for (let i = 0; i <= 12; i += 1) {
      const s = await inbound(student, want);
      samples.push({ t: Date.now(), frames: s.framesDecoded, width: s.frameWidth });
      await delay(500);
    }
    for (let i = 0; i < samples.length; i += 1) {
      const later = samples.find((x) => x.t >= samples[i].t + 2000);
      if (later && later.frames <= samples[i].frames) {
        throw new Error(`no frame decoded between ${i * 0.5} s and ${(samples.indexOf(later)) * 0.5} s: ${JSON.stringify(samples)}`);
      }
    }
    const first = samples[0];
    const last = samples[samples.length - 1];
    console.log(`  student: ${last.frames - first.frames} frames in ${((last.t - first.t) / 1000).toFixed(1)} s, ${first.width} -> ${last.width} px wide`);
  });

  await step('pupils ask for the layer their stage needs (set_track_quality)', async () => {
    for (const [label, page] of [['student', student], ['observer', observer]]) {
      const q = await until(`${label} to cap the teacher camera at high`, () => page.evaluate(() => {
        const s = window.classroom.state;
        const cam = s.remoteTracks.find((t) => t.source === 'camera');
        return { ok: Boolean(cam) && s.qualityCaps[cam.trackId] === 'high', caps: s.qualityCaps, supported: s.trackQualitySupported };
      }), JOIN_MS);
      console.log(`  ${label}: caps ${JSON.stringify(q.caps)}${q.supported ? '' : ' (the server does not take set_track_quality yet)'}`);
    }
  });

  await step('pupil stage says why the teacher video is paused (weak link, or a codec it cannot play)', async () => {
    // This test makes neither a weak link nor a codec mismatch (the server's side of both is
    // tested in Rust: simulcast_e2e, h264_simulcast); the page's handling is driven with the
    // message itself, as the server sends it.
    const show = (reason) => student.evaluate((reason) => {
      const c = window.classroom;
      const cam = c.state.remoteTracks.find((t) => t.source === 'camera');
      c.session.signal.onMessage(reason
        ? { v: 1, type: 'track_quality', track_id: cam.trackId, layer: null, paused: true, reason }
        : { v: 1, type: 'track_quality', track_id: cam.trackId, layer: 'high', paused: false });
      const notice = (id) => {
        const el = document.getElementById(id);
        return { hidden: el.hidden, text: el.textContent.replace(/\s+/g, ' ').trim() };
      };
      return { weak: notice('video-paused'), codec: notice('video-unplayable') };
    }, reason);
    const weak = await show('weak_network');
    if (weak.weak.hidden || !/weak network/.test(weak.weak.text) || !weak.codec.hidden) {
      throw new Error(`weak link: wrong notice: ${JSON.stringify(weak)}`);
    }
    await screenshots('paused');
    const codec = await show('codec_unsupported');
    if (codec.codec.hidden || !/cannot play/.test(codec.codec.text) || !codec.weak.hidden) {
      throw new Error(`codec mismatch: wrong notice: ${JSON.stringify(codec)}`);
    }
    const off = await show(null);
    if (!off.weak.hidden || !off.codec.hidden) throw new Error('a notice stayed after the video resumed');
    console.log(`  notices: "${weak.weak.text}" / "${codec.codec.text}"`);
  });

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
    // The camera moved to the corner: a smaller layer does.
    await until('observer to cap the corner camera at medium and the screen at high', () => observer.evaluate(() => {
      const s = window.classroom.state;
      const cam = s.remoteTracks.find((t) => t.source === 'camera');
      const screen = s.remoteTracks.find((t) => t.source === 'screen');
      return { ok: s.qualityCaps[cam?.trackId] === 'medium' && s.qualityCaps[screen?.trackId] === 'high', caps: s.qualityCaps };
    }), JOIN_MS);
    const screenHint = await teacher.evaluate(() => window.classroom.session.transceivers.get('screen')?.sender.track?.contentHint);
    if (screenHint !== 'detail') throw new Error(`the shared screen's contentHint is ${screenHint}, not detail`);
    await logCameraLayers(teacher, cameraMid, 'during the screen share');
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
    await until('teacher to cap the pupil tile at low', () => teacher.evaluate((id) => {
      const s = window.classroom.state;
      const cam = s.remoteTracks.find((t) => t.participantId === id && t.source === 'camera');
      return { ok: s.qualityCaps[cam?.trackId] === 'low', caps: s.qualityCaps };
    }, studentId), JOIN_MS);
    // The badge is driven with a report as the server sends it (every few seconds), so that it
    // is checked whether or not this server sends them yet.
    const badge = await teacher.evaluate(({ id, sel }) => {
      window.classroom.session.signal.onMessage({ v: 1, type: 'connection_quality', participants: [
        { participant_id: id, rtt_ms: 120, loss: 0.04, estimate_kbps: 800, quality: 'fair', layers: {} }] });
      const b = document.querySelector(`${sel} .quality-badge`);
      return { hidden: b?.hidden, quality: b?.dataset.quality, text: b?.textContent, title: b?.title };
    }, { id: studentId, sel: tile });
    if (badge.hidden !== false || badge.quality !== 'fair' || !/RTT 120 ms/.test(badge.title)) {
      throw new Error(`the pupil tile's quality badge does not show the report: ${JSON.stringify(badge)}`);
    }
    console.log(`  badge: ${badge.text} (${badge.title})`);
    await logCameraLayers(teacher, cameraMid, 'with pupils watching');
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
    // Not failures (e.g. a server without set_track_quality), but worth a look in the log.
    const warnings = logs.filter((line) => / (warning|error): /.test(line));
    for (const line of warnings) console.log(`  page ${line}`);
  });
});
