// Browser scenarios of issue 13's transport half, run by transport.sh (which explains the
// namespaces and passes in):
//   SCENARIO        tcp | turn | firefox
//   BASE_URL        the server, e.g. http://10.221.0.1:8080
//   TEACHER_URL     invite link for the teacher (Chromium in the server's namespace)
//   PUPIL_URL       invite link for the pupil
//   PUPIL_CHROMIUM  (tcp, turn) a wrapper starting Chromium in the pupil's namespace
// The teacher publishes camera and microphone; the pupil must decode the video and hear the audio,
// and (tcp, turn) its subscribe connection's selected candidate pair must be the expected kind.

import puppeteer from 'puppeteer-core';
import {
  required, launch, runScenario, until, step, waitForServer, openPage, switchOn,
  expectVideoFlowing, expectAudioFlowing, allowSound, inbound, JOIN_MS, MEDIA_MS,
} from './lib.mjs';

const SCENARIO = required('SCENARIO');
const BASE_URL = required('BASE_URL');
const TEACHER_URL = required('TEACHER_URL');
const PUPIL_URL = required('PUPIL_URL');

const CAMERA = { kind: 'video', source: 'camera', role: 'teacher' };
const MICROPHONE = { kind: 'audio', source: 'microphone', role: 'teacher' };

/** The selected candidate pair of the pupil's subscribe connection, with both candidates. */
function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = window.classroom?.subscribePc;
    if (!pc) return { why: 'no subscribe connection' };
    const stats = new Map();
    (await pc.getStats()).forEach((s) => stats.set(s.id, s));
    const transport = [...stats.values()].find((s) => s.type === 'transport');
    const pair = stats.get(transport?.selectedCandidatePairId)
      ?? [...stats.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    if (!pair) return { why: 'no selected candidate pair' };
    const pick = (c) => c && {
      candidateType: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol,
      address: c.address, port: c.port, tcpType: c.tcpType,
    };
    return {
      local: pick(stats.get(pair.localCandidateId)),
      remote: pick(stats.get(pair.remoteCandidateId)),
      bytesReceived: pair.bytesReceived,
    };
  });
}

async function teacherPublishes(context) {
  const teacher = await openPage(context, 'teacher', TEACHER_URL);
  await switchOn(teacher, 'teacher', '#btn-camera');
  await switchOn(teacher, 'teacher', '#btn-mic');
  return teacher;
}

/** Chromium pupil in its own namespace; media must arrive, over a pair that `expect` accepts. */
async function chromiumPupil(closers, expectPair, what, pupilArgs = []) {
  const PUPIL_CHROMIUM = required('PUPIL_CHROMIUM');
  const near = await launch(BASE_URL);
  closers.push(near.close);
  const far = await launch(BASE_URL, PUPIL_CHROMIUM, pupilArgs);
  closers.push(far.close);
  await step('teacher publishes camera and microphone', () => teacherPublishes(near.context));
  let pupil;
  await step('the pupil joins', async () => {
    pupil = await openPage(far.context, 'pupil', PUPIL_URL);
  });
  await step(`the pupil decodes the teacher's video (${what})`, async () => {
    await expectVideoFlowing(pupil, 'pupil', CAMERA);
  });
  await step(`the pupil hears the teacher (${what})`, async () => {
    await allowSound(pupil);
    await expectAudioFlowing(pupil, 'pupil', MICROPHONE);
  });
  await step(`the selected candidate pair is ${what}`, async () => {
    const pair = await until(`a selected pair over ${what}`, async () => {
      const p = await selectedPair(pupil);
      return { ...p, ok: Boolean(p.local && expectPair(p)) };
    }, JOIN_MS);
    console.log(`  selected: local ${JSON.stringify(pair.local)} remote ${JSON.stringify(pair.remote)}`);
  });
}

async function firefoxPupil(closers) {
  const near = await launch(BASE_URL);
  closers.push(near.close);
  await step('teacher publishes camera and microphone', () => teacherPublishes(near.context));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    timeout: 60000,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      // Plain http on a test address: let the page count as able to use media, and play sound.
      'media.devices.insecure.enabled': true,
      'media.getusermedia.insecure.enabled': true,
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
    },
  });
  closers.push(() => browser.close().catch(() => {}));
  let pupil;
  await step('the Firefox pupil joins', async () => {
    const context = { newPage: () => browser.newPage() };
    pupil = await openPage(context, 'firefox-pupil', PUPIL_URL);
  });
  await step('the Firefox pupil decodes the teacher\'s video', async () => {
    await expectVideoFlowing(pupil, 'firefox pupil', CAMERA);
  });
  await step('the Firefox pupil receives the teacher\'s audio', async () => {
    const first = await until('audio packets', async () => {
      const s = await inbound(pupil, MICROPHONE);
      return { ...s, ok: s.found && s.packetsReceived > 0 };
    });
    // Firefox's inbound-rtp has no audio energy in every version: packets keep arriving, and
    // when it reports energy, that rises too.
    const later = await until('audio packets to keep arriving (and energy, when reported)', async () => {
      const s = await inbound(pupil, MICROPHONE);
      const energyOk = !(s.totalAudioEnergy > 0) || s.totalAudioEnergy > first.totalAudioEnergy;
      return { ...s, ok: s.packetsReceived >= first.packetsReceived + 50 && energyOk };
    }, MEDIA_MS);
    console.log(`  firefox pupil: audio packets ${first.packetsReceived} -> ${later.packetsReceived}, totalAudioEnergy ${later.totalAudioEnergy}`);
  });
  await step('the server offered this machine\'s addresses, not loopback alone', async () => {
    const offer = await pupil.evaluate(() => window.classroom?.subscribePc?.remoteDescription?.sdp ?? '');
    const hosts = [...offer.matchAll(/a=candidate:\S+ \d+ (udp|tcp) \d+ (\S+) (\d+) typ host/gi)].map((m) => `${m[1]} ${m[2]}:${m[3]}`);
    const unique = [...new Set(hosts)];
    console.log(`  server candidates: ${unique.join(', ')}`);
    if (!unique.some((h) => !h.includes(' 127.'))) throw new Error(`only loopback offered: ${unique.join(', ')}`);
  });
}

runScenario(`transport ${SCENARIO}`, async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));
  switch (SCENARIO) {
    case 'tcp':
      await chromiumPupil(closers, (p) => p.local.protocol === 'tcp' && p.local.candidateType !== 'relay', 'ICE-TCP');
      break;
    case 'turn':
      // Chromium verifies a turns: server's certificate like any TLS server's (an untrusted one:
      // it drops the connection right after the handshake and gathers no relay candidate).
      // transport.sh signs coturn's certificate with a test CA that only this pupil's Chromium
      // trusts, in its own NSS database; a deployment needs a certificate the tablets trust
      // (docs/NETWORK.md).
      await chromiumPupil(closers, (p) => p.local.candidateType === 'relay' && p.local.relayProtocol === 'tls', 'TURN over TLS');
      break;
    case 'firefox':
      await firefoxPupil(closers);
      break;
    default:
      throw new Error(`unknown SCENARIO ${SCENARIO}`);
  }
});
