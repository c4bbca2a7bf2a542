// Browser end-to-end test of the teacher running the lesson (issue 12), in Japanese: real
// Chromium pages with a Japanese locale against a real classroom server.
//
//   - the pages show Japanese (specific strings), and screenshots are written for a person;
//   - a hand raised on a pupil's page appears in the teacher's queue;
//   - a page that sends its microphone without the floor (as a tampered page would) is heard by
//     nobody: a classmate's received audio energy stays at zero;
//   - the teacher grants the floor: the pupil's page says "はなしてください" and only now asks the
//     browser for the microphone; the classmate's received audio energy rises; the teacher's
//     grid highlights the speaker within 1 s of the grant showing on the teacher's page;
//   - the teacher takes the floor back: the pupil's page stops its microphone, and the
//     classmate's audio energy stops rising, even when the page sends its microphone again;
//   - quick check and chat round trips (and the screenshots docs/LESSON.md shows).
//
// The pupil's fake microphone plays a continuous tone with a speech-like rhythm (a WAV made
// here, given to Chromium with --use-file-for-fake-audio-capture), so that it is "speaking" the
// whole time it is heard.
//
// Run by run.sh, which passes in: BASE_URL, TEACHER_URL, SPEAKER_URL, CLASSMATE_URL (invite
// links of a room of its own). Optional: ARTIFACT_DIR (screenshots of every page at each stage,
// and on failure), LESSON_SCREENSHOTS (a directory for the named screenshots of docs/LESSON.md).

import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  required, delay, launch, runScenario, until, step, waitForServer, openPage, switchOn, inbound,
  allowSound, screenshots, logs, JOIN_MS,
} from './lib.mjs';

const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const SPEAKER_URL = required('SPEAKER_URL');
const CLASSMATE_URL = required('CLASSMATE_URL');
const LESSON_SCREENSHOTS = process.env.LESSON_SCREENSHOTS || '';

// How long a quiet microphone is watched to show that nothing of it arrives.
const QUIET_MS = 3000;
// Received energy below this counts as silence (the fake tone gives about 0.01 per second).
const SILENT_ENERGY = 1e-6;
// The bound: the teacher's grid shows the speaker within 1 s.
const HIGHLIGHT_MS = 1000;

/** A 2 s mono WAV, looped by Chromium: a 220 Hz voice-like tone whose loudness moves at 4 Hz, never silent. */
function speechLikeWav() {
  const rate = 48000;
  const seconds = 2;
  const n = rate * seconds;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i += 1) {
    const t = i / rate;
    const envelope = 0.55 + 0.35 * Math.sin(2 * Math.PI * 4 * t);
    const pitch = 220 * (1 + 0.08 * Math.sin(2 * Math.PI * 1.5 * t));
    const phase = 2 * Math.PI * pitch * t;
    const v = envelope * (0.6 * Math.sin(phase) + 0.3 * Math.sin(2 * phase) + 0.15 * Math.sin(3 * phase));
    data.writeInt16LE(Math.round(Math.max(-1, Math.min(1, v * 0.8)) * 32767), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

/** Counts the page's requests for a microphone, to show it asks only when given the floor. */
function countMicrophoneRequests() {
  window.micRequests = [];
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => {
    if (constraints?.audio) window.micRequests.push({ at: Date.now(), tampered: Boolean(window.tampering) });
    return original(constraints);
  };
}

/** What a tampered page would do: publish its microphone whatever the lesson says. */
function tamperPublishMicrophone(page) {
  return page.evaluate(async () => {
    window.tampering = true;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    window.tampering = false;
    window.tamperedTrack = stream.getAudioTracks()[0];
    await window.classroom.session.setSource('microphone', window.tamperedTrack);
    return window.classroom.state.localTracks.map((t) => t.source);
  });
}

/** The classmate's reception of the speaker's microphone: zeros while no such track is offered. */
async function received(page, speakerId) {
  const s = await inbound(page, { kind: 'audio', source: 'microphone', participantId: speakerId });
  return { found: Boolean(s.found), packets: s.packetsReceived ?? 0, energy: s.totalAudioEnergy ?? 0, level: s.audioLevel ?? 0, trackId: s.trackId ?? null };
}

/** Watches `QUIET_MS` of the speaker's microphone at the classmate: nothing may arrive. */
async function expectSilence(page, speakerId, what) {
  const first = await received(page, speakerId);
  await delay(QUIET_MS);
  const last = await received(page, speakerId);
  const sameTrack = first.trackId === last.trackId;
  const packets = sameTrack ? last.packets - first.packets : last.packets;
  const energy = sameTrack ? last.energy - first.energy : last.energy;
  console.log(`  ${what}: over ${QUIET_MS / 1000} s the classmate received ${packets} packets, energy +${energy.toExponential(2)} (track ${last.found ? 'offered' : 'not offered'})`);
  if (packets > 0 || energy > SILENT_ENERGY) {
    throw new Error(`${what}: the classmate received the speaker's microphone: ${JSON.stringify({ first, last })}`);
  }
  return last;
}

async function named(page, name) {
  if (!LESSON_SCREENSHOTS) return;
  await mkdir(LESSON_SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(LESSON_SCREENSHOTS, `${name}.png`), fullPage: true, timeout: 5000 });
}

const lessonState = (page) => page.evaluate(() => window.classroom?.lesson?.state ?? null);
const text = (page, selector) => page.locator(selector).first().textContent({ timeout: JOIN_MS }).then((s) => s.replace(/\s+/g, ' ').trim());

runScenario('moderation', async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));

  const wav = path.join(process.env.TMPDIR || tmpdir(), `classroom-speech-${process.pid}.wav`);
  await writeFile(wav, speechLikeWav());
  const browser = await launch(BASE_URL, undefined, [`--use-file-for-fake-audio-capture=${wav}`], { locale: 'ja-JP' });
  closers.push(browser.close);
  const { context } = browser;

  let teacher;
  let speaker;
  let classmate;
  await step('teacher and two pupils join with a Japanese browser', async () => {
    teacher = await openPage(context, 'teacher', TEACHER_URL);
    speaker = await openPage(context, 'speaker', SPEAKER_URL, countMicrophoneRequests);
    classmate = await openPage(context, 'classmate', CLASSMATE_URL, countMicrophoneRequests);
    await switchOn(teacher, 'teacher', '#btn-camera');
    await switchOn(speaker, 'speaker', '#btn-camera');
  });
  const speakerId = await speaker.evaluate(() => window.classroom.state.participantId);

  await step('the pages speak Japanese', async () => {
    const checks = [
      [teacher, 'html', (p) => p.evaluate(() => document.documentElement.lang), 'ja'],
      [teacher, '#hands-title', (p) => text(p, '#hands-title'), '挙手'],
      [teacher, 'speaking choice', (p) => text(p, '#set-speaking label:first-of-type'), '指名制（挙手して発言）'],
      [teacher, '#btn-mute-all', (p) => text(p, '#btn-mute-all'), '全員をミュート'],
      [teacher, '#lang-switch', (p) => text(p, '#lang-switch'), 'English'],
      [speaker, 'html', (p) => p.evaluate(() => document.documentElement.lang), 'ja'],
      [speaker, '#hand-label', (p) => text(p, '#hand-label'), 'てを あげる'],
      [speaker, '#btn-leave', (p) => text(p, '#btn-leave'), '退出'],
      [speaker, '#btn-chat', (p) => text(p, '#btn-chat'), 'チャット'],
    ];
    for (const [page, what, read, expected] of checks) {
      const got = await read(page);
      if (got !== expected) throw new Error(`${what}: expected "${expected}", the page shows "${got}"`);
    }
    const status = await text(teacher, '#status');
    if (!status.includes('として接続中')) throw new Error(`teacher status is not Japanese: "${status}"`);
  });

  await step('every page has the lesson state (speaking by permission)', async () => {
    for (const [label, page] of [['teacher', teacher], ['speaker', speaker], ['classmate', classmate]]) {
      await until(`${label} to receive lesson_state`, async () => {
        const s = await lessonState(page);
        return { ok: s?.speaking === 'by_permission', state: s };
      }, JOIN_MS);
    }
  });

  await step('without the floor the pupil page has not asked for the microphone', async () => {
    const state = await speaker.evaluate(() => ({
      requests: window.micRequests.length,
      micHidden: document.getElementById('btn-mic').hidden,
      notice: !document.getElementById('speak-notice').hidden,
      you: window.classroom.lesson.you,
    }));
    if (state.requests !== 0 || !state.micHidden || state.notice || state.you.may_speak) {
      throw new Error(`the pupil page asked for or offers the microphone before the floor: ${JSON.stringify(state)}`);
    }
  });

  await allowSound(classmate);
  await step('a tampered page that sends its microphone without the floor is heard by nobody', async () => {
    const published = await tamperPublishMicrophone(speaker);
    if (!published.includes('microphone')) throw new Error(`the server did not take the microphone: ${JSON.stringify(published)}`);
    await until('the speaker to send audio packets', () => speaker.evaluate(async () => {
      let sent = 0;
      (await window.classroom.publishPc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'audio') sent += s.packetsSent ?? 0; });
      return { ok: sent > 50, sent };
    }), JOIN_MS);
    await expectSilence(classmate, speakerId, 'before the grant');
  });

  await step('a hand raised on the pupil page appears in the teacher\'s queue', async () => {
    await speaker.click('#btn-hand', { timeout: JOIN_MS });
    await until('the teacher to list the hand', () => teacher.evaluate((id) => {
      const item = document.querySelector(`#hands li[data-participant-id="${id}"]`);
      return { ok: Boolean(item), queue: [...document.querySelectorAll('#hands li')].map((li) => li.textContent) };
    }, speakerId), JOIN_MS);
    await until('the pupil\'s hand button to show the raised hand', async () => ({
      ok: (await speaker.locator('#btn-hand').getAttribute('aria-pressed')) === 'true'
        && (await text(speaker, '#hand-label')) === 'てを おろす',
    }), JOIN_MS);
    await named(teacher, 'teacher-hand');
    await named(speaker, 'pupil-hand');
    await screenshots('hand');
  });

  let grantSeenAt;
  await step('the teacher grants the floor; the pupil page says so and asks for the microphone now', async () => {
    // The teacher page's own clock: when the grant shows there, and when the tile lights up.
    await teacher.evaluate((id) => {
      window.moderationTimes = {};
      const look = () => {
        const t = window.moderationTimes;
        if (!t.grant && document.querySelector(`#floor li[data-participant-id="${id}"]`)) t.grant = performance.now();
        if (!t.speaking && document.querySelector(`#pupil-grid .tile[data-participant-id="${id}"][data-speaking="true"]`)) t.speaking = performance.now();
      };
      new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-speaking'] });
    }, speakerId);
    const requestsBefore = await speaker.evaluate(() => window.micRequests.filter((r) => !r.tampered).length);
    await teacher.click(`#hands li[data-participant-id="${speakerId}"] .grant-mic`, { timeout: JOIN_MS });
    const notice = await until('the pupil page to say "はなしてください"', () => speaker.evaluate(() => {
      const el = document.getElementById('speak-notice');
      return { ok: !el.hidden && el.querySelector('.speak-now').textContent === 'はなしてください', hidden: el.hidden, you: window.classroom.lesson.you };
    }), JOIN_MS);
    if (!notice.you.floor || !notice.you.may_speak) throw new Error(`lesson_state says ${JSON.stringify(notice.you)}`);
    const mic = await until('the pupil page to turn its microphone on', () => speaker.evaluate((before) => ({
      ok: document.getElementById('btn-mic').getAttribute('aria-pressed') === 'true',
      pageRequests: window.micRequests.filter((r) => !r.tampered).length - before,
    }), requestsBefore), JOIN_MS);
    if (mic.pageRequests !== 1) throw new Error(`the page asked for the microphone ${mic.pageRequests} times on the grant`);
    grantSeenAt = Date.now();
    await named(speaker, 'pupil-floor');
    await named(teacher, 'teacher-floor');
  });

  await step('the classmate hears the pupil during the grant', async () => {
    const first = await until('the speaker\'s audio to reach the classmate', async () => {
      const r = await received(classmate, speakerId);
      return { ...r, ok: r.found && r.packets > 0 };
    });
    const later = await until('the classmate\'s received audio energy to rise', async () => {
      const r = await received(classmate, speakerId);
      return { ...r, ok: r.trackId === first.trackId && r.energy > first.energy + SILENT_ENERGY && r.level > 0 };
    });
    console.log(`  classmate: packets ${first.packets} -> ${later.packets}, energy ${first.energy.toFixed(5)} -> ${later.energy.toFixed(5)}, level ${later.level.toFixed(3)} (${((Date.now() - grantSeenAt) / 1000).toFixed(1)} s after the grant)`);
  });

  await step('the teacher\'s grid highlights the speaker within 1 s of the grant', async () => {
    const times = await until('the speaker\'s tile to be highlighted', () => teacher.evaluate(() => {
      const t = window.moderationTimes;
      return { ok: Boolean(t.grant && t.speaking), ...t };
    }), JOIN_MS);
    const delayMs = Math.round(times.speaking - times.grant);
    const tile = await teacher.evaluate((id) => {
      const el = document.querySelector(`#pupil-grid .tile[data-participant-id="${id}"]`);
      return { label: el.getAttribute('aria-label'), classes: el.className, outline: getComputedStyle(el).outlineWidth };
    }, speakerId);
    console.log(`  highlighted ${delayMs} ms after the grant showed on the teacher page; "${tile.label}", outline ${tile.outline}`);
    if (delayMs > HIGHLIGHT_MS) throw new Error(`the speaker was highlighted ${delayMs} ms after the grant (limit ${HIGHLIGHT_MS} ms)`);
    if (!tile.label.includes('発言中') || tile.outline === '0px') throw new Error(`the highlight is not visible or not named: ${JSON.stringify(tile)}`);
    await named(teacher, 'teacher-speaking');
    await screenshots('floor');
  });

  await step('the teacher takes the floor back: the pupil page stops its microphone and nothing more is heard', async () => {
    await teacher.click(`#floor li[data-participant-id="${speakerId}"] .take-back`, { timeout: JOIN_MS });
    await until('the pupil page to stop its microphone', () => speaker.evaluate(() => {
      const sender = window.classroom.session.transceivers.get('microphone');
      return {
        ok: document.getElementById('speak-notice').hidden && document.getElementById('btn-mic').getAttribute('aria-pressed') === 'false'
          && (!sender || sender.direction === 'inactive'),
        direction: sender?.direction,
        you: window.classroom.lesson.you,
      };
    }), JOIN_MS);
    await expectSilence(classmate, speakerId, 'after the take-back');
  });

  await step('after the take-back a tampered page is still not heard', async () => {
    await tamperPublishMicrophone(speaker);
    await expectSilence(classmate, speakerId, 'tampered, after the take-back');
    // Back to the page's own state: no microphone.
    await speaker.evaluate(async () => {
      await window.classroom.session.setSource('microphone', null);
      window.tamperedTrack.stop();
    });
  });

  await step('quick check: the pupil answers with one tap and the teacher sees the tally', async () => {
    await teacher.click('.check-presets .preset >> nth=0', { timeout: JOIN_MS });
    await teacher.click('#btn-check-ask', { timeout: JOIN_MS });
    await until('the pupil to see the question', async () => ({
      ok: (await speaker.locator('#pupil-check .check-answer').count()) === 2
        && (await text(speaker, '#pupil-check .check-question')) === 'わかった？',
    }), JOIN_MS);
    await speaker.click('#pupil-check .check-answer >> nth=0', { timeout: JOIN_MS });
    await until('the teacher\'s tally to count the answer', () => teacher.evaluate(() => ({
      ok: document.querySelector('#check-tally li[data-option="0"]')?.dataset.count === '1',
      answered: document.getElementById('check-answered')?.textContent,
    })), JOIN_MS);
    const answered = await text(teacher, '#check-answered');
    if (answered !== '1人が回答') throw new Error(`the tally says "${answered}"`);
    await named(teacher, 'teacher-check');
    await named(speaker, 'pupil-check');
  });

  await step('chat: a private question reaches the teacher, marked, and not the classmate', async () => {
    await speaker.click('#btn-chat', { timeout: JOIN_MS });
    await speaker.fill('#chat-panel input', '<b>しつもん</b>: 3ばんが わかりません', { timeout: JOIN_MS });
    await speaker.click('#chat-panel button[data-to="teacher"]', { timeout: JOIN_MS });
    const seen = await until('the teacher to see the question, marked private', () => teacher.evaluate(() => {
      const item = [...document.querySelectorAll('#chat .chat-msg')].find((li) => li.dataset.to === 'teacher');
      return { ok: Boolean(item), text: item?.querySelector('.chat-text')?.textContent, tag: item?.querySelector('.tag.private')?.textContent, bold: Boolean(item?.querySelector('b')) };
    }), JOIN_MS);
    if (seen.text !== '<b>しつもん</b>: 3ばんが わかりません' || seen.bold) throw new Error(`the message is not shown as text: ${JSON.stringify(seen)}`);
    if (seen.tag !== 'せんせいへの しつもん') throw new Error(`the private mark says "${seen.tag}"`);
    await named(teacher, 'teacher-chat');
    await named(speaker, 'pupil-chat');
    const leaked = await classmate.evaluate(() => window.classroom.lesson.snapshot().messages.filter((m) => m.to === 'teacher').length);
    if (leaked) throw new Error('the classmate received a private question');
  });

  await step('no uncaught errors in the pages', async () => {
    const uncaught = logs.filter((line) => line.includes('UNCAUGHT') || line.includes('PAGE CRASHED'));
    if (uncaught.length) throw new Error(`pages threw:\n${uncaught.join('\n')}`);
  });
});
