// How each source is encoded on the publish connection, and the browser-specific parts of that
// (simulcast, scalability modes, codec order), kept apart from the protocol in session.js.
//
// The teacher's camera is sent as three simulcast layers so that the server can give every pupil
// the layer their link carries and the teacher's pupil grid only the smallest; everything else is
// one encoding.

/** The teacher camera's simulcast layers, lowest first (the order the server expects). */
export const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

// Three temporal layers inside each simulcast layer let the server drop frame rate before it has
// to drop a whole layer.
const SCALABILITY_MODE = 'L1T3';

/**
 * Send plans, per use. `maxBitrate` (bits/s) is the single encoding's cap, and for a simulcast
 * plan the cap of the one encoding that is left when the server does not take simulcast: then
 * every pupil receives what the teacher sends, so it must fit a modest home connection.
 */
export const SEND_PLANS = {
  teacherCamera: { simulcast: SIMULCAST_LAYERS, maxBitrate: 1_200_000, codec: 'video/VP8' },
  // Slides and text: one sharp encoding (the track carries contentHint 'detail', see media.js).
  screen: { maxBitrate: 1_500_000, codec: 'video/VP8' },
  // Pupils appear as small tiles and many share the school's uplink: one low encoding.
  pupilCamera: { maxBitrate: 500_000, codec: 'video/VP8' },
};

/**
 * Whether the browser encodes `mode` for `mimeType`: true or false when it says so in its
 * capabilities (Chromium), undefined when it does not tell (Firefox, Safari), so that the caller
 * has to try.
 */
function scalabilityModeSupport(mimeType, mode) {
  try {
    const codecs = RTCRtpSender.getCapabilities?.('video')?.codecs ?? [];
    const listed = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase() && Array.isArray(c.scalabilityModes));
    if (!listed.length) return undefined;
    return listed.some((c) => c.scalabilityModes.includes(mode));
  } catch {
    return undefined;
  }
}

function simulcastEncodings(plan, withScalability) {
  return plan.simulcast.map((layer) => ({
    ...layer,
    active: true,
    ...(withScalability ? { scalabilityMode: SCALABILITY_MODE } : {}),
  }));
}

/**
 * Adds a sendonly transceiver for `track` following `plan`. Returns {transceiver, simulcast}:
 * whether it was set up with simulcast layers (a browser that refuses them gets one encoding).
 */
export function addSendTransceiver(pc, track, plan = {}) {
  const streams = [new MediaStream([track])];
  const attempts = [];
  if (plan.simulcast && track.kind === 'video') {
    const support = scalabilityModeSupport(plan.codec || 'video/VP8', SCALABILITY_MODE);
    // Where the browser does not say, try with the mode first: some throw on an unknown mode
    // (then the next attempt goes without), others ignore it silently, which is harmless.
    if (support !== false) attempts.push({ simulcast: true, sendEncodings: simulcastEncodings(plan, true) });
    attempts.push({ simulcast: true, sendEncodings: simulcastEncodings(plan, false) });
  }
  attempts.push({ simulcast: false, sendEncodings: plan.maxBitrate ? [{ maxBitrate: plan.maxBitrate }] : undefined });

  let lastError;
  for (const { simulcast, sendEncodings } of attempts) {
    try {
      const init = { direction: 'sendonly', streams };
      if (sendEncodings) init.sendEncodings = sendEncodings;
      const transceiver = pc.addTransceiver(track, init);
      if (plan.codec) preferCodec(transceiver, plan.codec);
      return { transceiver, simulcast };
    } catch (err) {
      lastError = err;
      console.info('classroom: the browser refused these encodings, trying simpler ones', sendEncodings, err);
    }
  }
  throw lastError;
}

/**
 * Puts `mimeType` first in the transceiver's codec list, keeping the others as fallbacks. The
 * server's layer switching reads VP8's payload descriptor, so VP8 is what it handles best.
 * Best effort: browsers without setCodecPreferences keep their default order.
 */
function preferCodec(transceiver, mimeType) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const want = mimeType.toLowerCase();
  // Browsers have checked the list against receiver capabilities (older) or sender capabilities
  // (newer, for a sendonly transceiver); try one, then the other.
  for (const source of [RTCRtpSender, RTCRtpReceiver]) {
    const codecs = source.getCapabilities?.(transceiver.sender.track?.kind || 'video')?.codecs;
    if (!codecs?.some((c) => c.mimeType.toLowerCase() === want)) continue;
    const ordered = [
      ...codecs.filter((c) => c.mimeType.toLowerCase() === want),
      ...codecs.filter((c) => c.mimeType.toLowerCase() !== want),
    ];
    try {
      transceiver.setCodecPreferences(ordered);
      return;
    } catch (err) {
      console.debug('classroom: setCodecPreferences refused this list', err);
    }
  }
}

/** Whether an SDP (or one m= section of it) offers or accepts simulcast. */
export function hasSimulcast(sdp) {
  return /^a=simulcast:/m.test(sdp);
}

/**
 * The offer without simulcast, for a server that refuses it. Only what the server receives is
 * changed; the local description keeps its layers, and the server's answer (which then names no
 * simulcast) makes the browser send just the first encoding, which useSingleEncoding() fixes up.
 */
export function stripSimulcast(sdp) {
  return sdp
    .split(/\r?\n/)
    .filter((line) => !line.startsWith('a=simulcast:') && !line.startsWith('a=rid:'))
    .join('\r\n');
}

/** The m= sections of an SDP by mid: mid -> the section's text. */
export function sectionsByMid(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(.+)$/m.exec(section)?.[1]?.trim();
    if (mid !== undefined) out.set(mid, section);
  }
  return out;
}

/**
 * Turns a simulcast sender into one full-size encoding, for when the answer took no simulcast.
 * Browsers then send only the first (smallest) layer, some drop the others from the parameters
 * and some keep them; either way the first becomes full size and the rest stay off.
 */
export async function useSingleEncoding(sender, maxBitrate) {
  const params = sender.getParameters();
  if (!params.encodings?.length) return;
  params.encodings.forEach((e, i) => {
    e.active = i === 0;
    if (i === 0) {
      e.scaleResolutionDownBy = 1;
      if (maxBitrate) e.maxBitrate = maxBitrate;
    }
  });
  await sender.setParameters(params);
}

/**
 * Encodes exactly the layers named in `rids` and pauses the others (dynacast). Returns false
 * when the sender has no simulcast layers to switch.
 */
export async function setActiveRids(sender, rids) {
  const params = sender.getParameters();
  if (!params.encodings?.some((e) => e.rid)) return false;
  let changed = false;
  for (const e of params.encodings) {
    const want = rids.includes(e.rid);
    // Firefox leaves `active` out of parameters it never changed; absent means on.
    if ((e.active ?? true) !== want) {
      e.active = want;
      changed = true;
    }
  }
  if (changed) await sender.setParameters(params);
  return true;
}
