// The protocol client shared by the teacher and pupil pages: it joins a room over the signaling
// socket and runs the two peer connections of docs/PROTOCOL.md. The client offers on the publish
// connection and the server offers on the subscribe connection, so offers never collide.
// Pages listen to its events and never touch the protocol themselves.

import { SignalChannel, ProtocolError, defaultSignalUrl, PROTOCOL_VERSION } from './signal.js';
import {
  addSendTransceiver, hasSimulcast, sectionsByMid, setActiveRids, stripSimulcast, useSingleEncoding,
} from './encodings.js';
import { PathWatch } from './pathwatch.js';

/** What each publishable source carries, as the server checks it. */
export const SOURCE_KIND = { microphone: 'audio', camera: 'video', screen: 'video' };
/** The permission that each source needs (from `joined.permissions`). */
export const SOURCE_PERMISSION = {
  microphone: 'publish_audio',
  camera: 'publish_video',
  screen: 'publish_screen',
};

// The server puts everything on one UDP port and bundles it, so one transport is all we need.
const PC_CONFIG = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };

// Reconnecting (docs/PROTOCOL.md, `resume`): waits between attempts, the last one repeated, each
// stretched by up to a third at random so a class does not come back in lockstep after a restart.
const BACKOFF_MS = [500, 1000, 2000, 4000];
// An attempt whose socket does not open within this long is abandoned for the next one: a link
// that has just come back answers fast, and a dead one must not hold the page for long. A
// connection begun while the link was down can hang on its first lost packet (TCP tries again
// only after 1 s, then 3 s), so attempts start with the short limit, and only a socket that timed
// out gets a longer one next (doubling up to REOPEN_TIMEOUT_MS, for a slow link).
const REOPEN_TIMEOUT_MS = 4000;
const QUICK_REOPEN_MS = 1500;
// A media connection disconnected this long gets an ICE restart (a failed one at once), then
// again every RESTART_RETRY_MS while it stays down.
const ICE_RESTART_AFTER_MS = 2000;
const RESTART_RETRY_MS = 5000;
// When media stops arriving (pathwatch.js), the server gets this long to answer a ping on the
// socket: an answer means the device kept its address and nothing is forced. A socket whose
// pings came back quickly gets a few of its slowest recent round trips (at least the minimum):
// a tablet that moved should not wait out a margin made for a loaded school link.
const PROBE_PONG_MS = 500;
const PROBE_PONG_MIN_MS = 200;
const PROBE_RTTS = 4;
// No answer: a fresh socket may open within this long. One that opens means the old socket was
// stranded on an address the device no longer has.
const PROBE_OPEN_MS = 1500;
// Between probes while the path stays quiet, doubling after each probe whose fresh socket failed
// up to PROBE_AGAIN_MAX_MS.
const PROBE_AGAIN_MS = 500;
const PROBE_AGAIN_MAX_MS = 16000;
// While the browser says it has no network, no socket is opened: the `online` event ends the
// wait, and this long is the most a page waits in case it was wrong.
//
// Opening sockets that fail is not free. Chromium delays every new WebSocket of a page by 1–5 s
// times 2^(pending + failed/(succeeded+1) − 16), counting the last 2–4 minutes: some 30 failures
// during an outage (a probe a second) made the first socket after the link's return wait 4–10 s.
const OFFLINE_RECHECK_MS = 15000;
// Errors after which reconnecting cannot help: the page says why and stops.
const FINAL_CODES = ['invalid_token', 'token_expired', 'not_admitted', 'replaced', 'message_too_large'];
const RESUME_REFUSED = ['resume_invalid', 'resume_expired', 'resume_used'];

/**
 * Events (all CustomEvent, payload in `detail`):
 *   participantjoined {participant}   participantleft {participant}
 *   remotetrack {trackId, participantId, participant, kind, source, track}   media has arrived
 *   remotetrackended {trackId, participantId, kind, source}
 *   connectionstate {which: 'publish'|'subscribe', state}
 *   trackquality {trackId, layer, paused, reason}   the layer we receive of a video changed
 *   connectionquality {participants}  link quality entries (ours only, unless we teach)
 *   lessonstate, activespeakers, chat, chathistory, chatdeleted   the lesson's moderation
 *                                     messages as the server sent them (lesson.js keeps the state)
 *   error {error}                     something failed but the session goes on
 *   reconnecting {}                   the socket dropped; getting back in by itself
 *   reconnected {resumed}             back in (resumed: same participant, media kept)
 *   participantreconnecting {participant}   participantreconnected {participant}
 *   ended {reason, error?}            the session is over (left, replaced, refused for good)
 */
export class Session extends EventTarget {
  constructor({ token, url = defaultSignalUrl() }) {
    super();
    this.token = token;
    this.url = url;
    this.signal = null;
    this.joined = false;
    this.self = null; // our own participant record
    this.room = null;
    this.permissions = new Set();
    this.iceServers = []; // from `joined.ice_servers`
    this.participants = new Map(); // participant_id -> participant, everyone but us
    this.publishPc = null;
    this.subscribePc = null;
    // Publishing: one transceiver per source, kept for the whole session and switched between
    // sendonly and inactive, so toggling a camera reuses its m= section instead of adding one.
    this.transceivers = new Map(); // source -> RTCRtpTransceiver
    this.localTracks = new Map(); // source -> track record from publish_answer
    // source -> {plan, simulcast: set up with layers, mode: 'simulcast'|'single'|null until answered}
    this.sendInfo = new Map();
    // Whether the server takes offers with simulcast: null until it answered one, then true, or
    // false after it refused one (then every offer goes without; see #negotiatePublish).
    this.simulcastAccepted = null;
    this.lastSetEncodings = null; // the server's latest dynacast request, for tests and debugging
    this.publishQueue = Promise.resolve();
    // Subscribing: which remote track each m= section of the subscribe connection carries.
    this.midToTrackId = new Map();
    this.remoteTracks = new Map(); // track_id -> {trackId, participantId, kind, source, mid, track}
    this.subscribeQueue = Promise.resolve();
    this.qualityCaps = new Map(); // track_id -> the max_layer the page wants (set_track_quality)
    this.trackQualitySupported = true; // false once the server called set_track_quality unknown
    this.trackQuality = new Map(); // track_id -> latest track_quality message
    this.connectionQuality = new Map(); // participant_id -> latest connection_quality entry
    this.goodbyeReason = null;
    this.fatalError = null;
    this.ended = false;
    // Getting back in: the credential of the latest `joined`, and the reconnect loop's state.
    this.resume = null; // {token, expires_at_ms}
    this.everJoined = false;
    this.reconnecting = false;
    this.reconnects = 0;
    this.wakeReconnect = null;
    this.restartTimers = { publish: null, subscribe: null };
    this.iceRestarts = { publish: 0, subscribe: 0 };
    this.reconnectingPeers = new Set(); // participant ids the server says are reconnecting
    this.renewing = false; // a fresh socket is resuming beside the current one
    this.probing = false; // asking whether a quiet path means a moved address
    this.nextProbeAt = 0;
    this.failedProbes = 0; // in a row; a fresh socket that opens, or media flowing, resets it
    this.pathWatch = new PathWatch(() => this.subscribePc, {
      onQuiet: () => this.#pathQuiet(),
      onFlowing: () => this.#signOfLife(),
    });
    if (typeof window !== 'undefined') {
      window.addEventListener('online', () => { console.debug('classroom: online'); this.#online(); });
      window.addEventListener('offline', () => console.debug('classroom: offline'));
      this.pathWatch.start();
    }
  }

  /** Connects and joins; resolves with the `joined` message, rejects with a ProtocolError. */
  async join() {
    let joined;
    try {
      joined = await this.#connect({ v: PROTOCOL_VERSION, type: 'join', token: this.token });
    } catch (err) {
      // Kept for `ended`, which the closing socket triggers and which the page reports.
      this.fatalError = err;
      this.signal.close();
      throw err;
    }
    this.#entered(joined);
    return joined;
  }

  /**
   * Opens a fresh socket and sends `request` (join or resume) on it. With `beside`, the current
   * socket stays the session's until the reply arrives (and the new one is closed on failure), so
   * nothing the server sends on the current one meanwhile is lost.
   */
  async #connect(request, openTimeoutMs, { beside = false } = {}) {
    const signal = new SignalChannel(this.url, {
      // A replaced socket's late messages and close are not ours any more.
      onMessage: (msg) => { if (this.signal === signal) this.#onMessage(msg); },
      onClose: (info) => { if (this.signal === signal) this.#onClose(info); },
    });
    if (!beside) {
      this.signal = signal;
      await signal.open(openTimeoutMs);
      return signal.request(request);
    }
    try {
      await signal.open(openTimeoutMs);
      const reply = await signal.request(request);
      // Adopted before any later message event: those run as tasks after this continuation.
      this.signal = signal;
      return reply;
    } catch (err) {
      signal.close();
      throw err;
    }
  }

  #entered(joined) {
    this.joined = true;
    this.everJoined = true;
    this.self = joined.participant;
    this.room = joined.room;
    this.permissions = new Set(joined.permissions || []);
    if (joined.resume?.token) this.resume = joined.resume;
    // TURN relays with short-lived credentials, for networks that block the media port.
    this.iceServers = Array.isArray(joined.ice_servers) ? joined.ice_servers : [];
    for (const p of joined.participants || []) this.participants.set(p.participant_id, p);
    this.signal.startKeepalive();
  }

  /** Whether the token allows `permission` (e.g. `publish_video`). */
  can(permission) {
    return this.permissions.has(permission);
  }

  /** Whether the token allows publishing `source` (`microphone`, `camera`, `screen`). */
  canPublish(source) {
    return this.can(SOURCE_PERMISSION[source]);
  }

  participant(id) {
    return this.participants.get(id) || (this.self && this.self.participant_id === id ? this.self : null);
  }

  /**
   * Starts sending `track` as `source`, or stops sending that source when `track` is null.
   * Changes are applied one at a time, each with its own offer, because the protocol allows a new
   * publish offer only after the previous answer; the returned promise settles when the server
   * has accepted (or refused) this change. On refusal nothing of the change stays applied.
   * `plan` (a SEND_PLANS entry of encodings.js: simulcast layers, maxBitrate, codec) is fixed
   * when the source is first published.
   */
  setSource(source, track, plan = {}) {
    const task = this.publishQueue.then(() => this.#applySource(source, track, plan));
    this.publishQueue = task.catch(() => {});
    return task;
  }

  /**
   * Caps the layer the server sends us of a received video (`low`, `medium`, `high`): small
   * tiles need only `low`. Sent only when the cap changes. A server that does not know the
   * message yet says so once; then caps are still recorded (tests and debugging read them) but
   * no longer sent.
   */
  setTrackQuality(trackId, maxLayer) {
    if (!this.joined || this.qualityCaps.get(trackId) === maxLayer) return;
    this.qualityCaps.set(trackId, maxLayer);
    if (!this.trackQualitySupported) return;
    this.signal.notify({ type: 'set_track_quality', track_id: trackId, max_layer: maxLayer }, {
      onError: (err) => {
        if (err.code === 'unknown_type') {
          this.trackQualitySupported = false;
          console.info('classroom: this server does not take set_track_quality yet; receiving full quality');
        } else {
          console.warn('classroom: set_track_quality refused', err);
          // Forgotten, so that the next layout change asks again.
          if (this.qualityCaps.get(trackId) === maxLayer) this.qualityCaps.delete(trackId);
        }
      },
    });
  }

  /** A snapshot for tests and debugging. */
  snapshot() {
    return {
      joined: this.joined,
      ended: this.ended,
      participantId: this.self?.participant_id ?? null,
      room: this.room,
      permissions: [...this.permissions],
      participants: [...this.participants.values()],
      localTracks: [...this.localTracks.values()],
      publish: {
        simulcastAccepted: this.simulcastAccepted,
        modes: Object.fromEntries([...this.sendInfo].map(([source, info]) => [source, info.mode])),
        lastSetEncodings: this.lastSetEncodings,
      },
      qualityCaps: Object.fromEntries(this.qualityCaps),
      trackQualitySupported: this.trackQualitySupported,
      trackQuality: Object.fromEntries(this.trackQuality),
      connectionQuality: [...this.connectionQuality.values()],
      remoteTracks: [...this.remoteTracks.values()].map(({ track, ...info }) => ({
        ...info,
        readyState: track.readyState,
        muted: track.muted,
      })),
      reconnecting: this.reconnecting,
      reconnects: this.reconnects,
      iceRestarts: { ...this.iceRestarts },
      reconnectingPeers: [...this.reconnectingPeers],
      hasResume: Boolean(this.resume),
    };
  }

  /** Leaves the room on purpose. */
  leave() {
    if (this.ended) return;
    try {
      if (this.joined) this.signal.send({ type: 'leave' });
    } catch {
      // Already disconnected: the server notices the closed socket just the same.
    }
    this.goodbyeReason = this.goodbyeReason || 'left';
    this.signal?.close();
    this.#end();
  }

  // ---- publishing ----------------------------------------------------------------------------

  async #applySource(source, track, plan) {
    if (!(source in SOURCE_KIND)) throw new Error(`unknown source ${source}`);
    if (track && track.kind !== SOURCE_KIND[source]) throw new Error(`${source} needs an ${SOURCE_KIND[source]} track`);
    if (this.ended) throw new ProtocolError('not_connected', 'The lesson connection is closed.');
    const pc = this.#ensurePublishPc();
    let transceiver = this.transceivers.get(source);
    const wasSending = transceiver?.direction === 'sendonly';

    if (track) {
      if (transceiver) {
        // Same source, new device (or restarted): swapping the track needs no negotiation.
        await transceiver.sender.replaceTrack(track);
      } else {
        const added = addSendTransceiver(pc, track, plan);
        transceiver = added.transceiver;
        this.transceivers.set(source, transceiver);
        this.sendInfo.set(source, { plan, simulcast: added.simulcast, mode: null });
      }
      if (wasSending) return;
      // A fresh publish starts with every layer on; the server pauses what nobody needs.
      if (this.sendInfo.get(source)?.mode === 'simulcast') {
        await setActiveRids(transceiver.sender, this.sendInfo.get(source).plan.simulcast.map((l) => l.rid))
          .catch((err) => console.warn('classroom: could not turn the layers back on', err));
      }
      transceiver.direction = 'sendonly';
    } else {
      if (!wasSending) return;
      transceiver.direction = 'inactive';
      await transceiver.sender.replaceTrack(null);
    }

    try {
      await this.#negotiatePublish();
    } catch (err) {
      // The server applied nothing of the refused offer. A refused start is undone, so that the
      // next offer does not carry it again. A refused stop stays stopped here (the user asked
      // for it and the capture is already released); the next offer carries the removal.
      if (track) {
        transceiver.direction = 'inactive';
        await transceiver.sender.replaceTrack(null).catch(() => {});
      }
      throw err;
    }
  }

  #ensurePublishPc() {
    if (!this.publishPc) {
      const pc = new RTCPeerConnection({ ...PC_CONFIG, iceServers: this.iceServers });
      pc.addEventListener('connectionstatechange', () => {
        this.#emit('connectionstate', { which: 'publish', state: pc.connectionState });
        this.#watchMedia('publish');
      });
      this.publishPc = pc;
    }
    return this.publishPc;
  }

  async #negotiatePublish({ iceRestart = false } = {}) {
    const pc = this.publishPc;
    // An offer whose request was lost with the socket is still pending: it is sent again as it
    // is. Rolling it back would make Chromium rebuild the senders, which then stay silent.
    if (pc.signalingState !== 'have-local-offer') {
      await pc.setLocalDescription(await pc.createOffer(iceRestart ? { iceRestart: true } : undefined));
    }
    // Mids exist only once the offer is set locally, so the track list is built after it.
    const tracks = [];
    for (const [source, t] of this.transceivers) {
      if (t.direction === 'sendonly' && t.mid !== null) tracks.push({ mid: t.mid, source });
    }
    const offer = pc.localDescription.sdp;
    const simulcastOffered = hasSimulcast(offer);
    let answer;
    try {
      try {
        answer = await this.signal.request({
          type: 'publish',
          sdp: this.simulcastAccepted === false ? stripSimulcast(offer) : offer,
          tracks,
        });
      } catch (err) {
        // Servers without simulcast refuse the whole offer (nothing of it is applied). Retry once
        // with the same offer minus simulcast, so that the lesson works with old and new servers.
        if (err.code !== 'bad_sdp' || !simulcastOffered || this.simulcastAccepted !== null) throw err;
        console.info('classroom: the server refused simulcast; publishing one encoding instead');
        answer = await this.signal.request({ type: 'publish', sdp: stripSimulcast(offer), tracks });
        this.simulcastAccepted = false;
      }
    } catch (err) {
      const lost = ['connection_lost', 'not_connected', 'timeout'].includes(err.code);
      if (!lost && pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch((e) => console.warn('classroom: rollback failed', e));
      }
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this.localTracks.clear();
    for (const t of answer.tracks || []) this.localTracks.set(t.source, t);
    await this.#settleEncodings(answer.sdp);
  }

  /**
   * Records, per simulcast source, whether the answer took its layers. Where it did not, the
   * browser now sends only the first (smallest) layer; it is made full size with the single cap.
   * Decided once per source: later answers repeat the same choice.
   */
  async #settleEncodings(answerSdp) {
    const sections = sectionsByMid(answerSdp);
    for (const [source, info] of this.sendInfo) {
      const transceiver = this.transceivers.get(source);
      const section = transceiver?.mid != null ? sections.get(transceiver.mid) : undefined;
      if (info.mode || !transceiver || transceiver.direction !== 'sendonly' || section === undefined) continue;
      if (!info.simulcast) {
        info.mode = 'single';
      } else if (hasSimulcast(section)) {
        info.mode = 'simulcast';
        this.simulcastAccepted = true;
      } else {
        info.mode = 'single';
        await useSingleEncoding(transceiver.sender, info.plan.maxBitrate)
          .catch((err) => console.warn('classroom: could not switch to one full-size encoding', err));
      }
    }
  }

  /** `set_encodings`: encode exactly the listed layers of one of our simulcast tracks. */
  #setEncodings(msg) {
    const task = this.publishQueue.then(async () => {
      const source = [...this.transceivers].find(([, t]) => t.mid === String(msg.mid))?.[0]
        ?? [...this.localTracks.values()].find((t) => t.track_id === msg.track_id)?.source;
      const transceiver = this.transceivers.get(source);
      if (!transceiver || this.sendInfo.get(source)?.mode !== 'simulcast') {
        console.warn('classroom: set_encodings for a track without simulcast layers', msg);
        return;
      }
      await setActiveRids(transceiver.sender, Array.isArray(msg.active) ? msg.active : []);
    });
    this.publishQueue = task.catch((err) => console.warn('classroom: could not apply set_encodings', err));
  }

  // ---- subscribing ---------------------------------------------------------------------------

  #ensureSubscribePc() {
    if (!this.subscribePc) {
      const pc = new RTCPeerConnection({ ...PC_CONFIG, iceServers: this.iceServers });
      pc.addEventListener('connectionstatechange', () => {
        this.#emit('connectionstate', { which: 'subscribe', state: pc.connectionState });
        this.#watchMedia('subscribe');
      });
      this.subscribePc = pc;
    }
    return this.subscribePc;
  }

  async #answerSubscriber(msg) {
    const pc = this.#ensureSubscribePc();
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.signal.send({ type: 'subscriber_answer', sdp: pc.localDescription.sdp });
    this.#reconcileRemoteTracks(msg.tracks || []);
  }

  /**
   * Brings `remoteTracks` in line with the latest offer's track list. This is done from the
   * transceivers rather than from `ontrack`, because `ontrack` does not fire when the server
   * reuses an m= section for a different track, and browsers differ on when it fires again.
   */
  #reconcileRemoteTracks(listed) {
    const byMid = new Map(listed.map((t) => [String(t.mid), t]));
    for (const transceiver of this.subscribePc.getTransceivers()) {
      const mid = transceiver.mid;
      if (mid === null) continue;
      const info = byMid.get(mid);
      const current = this.midToTrackId.get(mid);
      if (current && current !== info?.track_id) {
        this.midToTrackId.delete(mid);
        this.#removeRemoteTrack(current);
      }
      if (info && current !== info.track_id) {
        const track = transceiver.receiver.track;
        if (track.kind !== info.kind) console.warn('classroom: offer says', info.kind, 'for mid', mid, 'but it carries', track.kind);
        const record = {
          trackId: info.track_id,
          participantId: info.participant_id,
          kind: info.kind,
          source: info.source,
          mid,
          track,
        };
        this.midToTrackId.set(mid, info.track_id);
        this.remoteTracks.set(info.track_id, record);
        this.#emit('remotetrack', { ...record, participant: this.participant(info.participant_id) });
      }
      byMid.delete(mid);
    }
    for (const stray of byMid.values()) console.warn('classroom: offer lists a track for a missing mid', stray);
  }

  #removeRemoteTrack(trackId) {
    const record = this.remoteTracks.get(trackId);
    if (!record) return;
    this.remoteTracks.delete(trackId);
    this.qualityCaps.delete(trackId);
    this.trackQuality.delete(trackId);
    const { track, ...info } = record;
    this.#emit('remotetrackended', info);
  }

  // ---- server messages -----------------------------------------------------------------------

  #onMessage(msg) {
    switch (msg.type) {
      case 'participant_joined':
        this.participants.set(msg.participant.participant_id, msg.participant);
        this.#emit('participantjoined', { participant: msg.participant });
        break;
      case 'participant_reconnecting':
      case 'participant_reconnected': {
        const back = msg.type === 'participant_reconnected';
        if (back) this.reconnectingPeers.delete(msg.participant_id);
        else this.reconnectingPeers.add(msg.participant_id);
        const participant = this.participants.get(msg.participant_id) || { participant_id: msg.participant_id };
        this.#emit(back ? 'participantreconnected' : 'participantreconnecting', { participant });
        break;
      }
      case 'participant_left': {
        this.reconnectingPeers.delete(msg.participant_id);
        const participant = this.participants.get(msg.participant_id) || { participant_id: msg.participant_id };
        this.participants.delete(msg.participant_id);
        this.connectionQuality.delete(msg.participant_id);
        this.#emit('participantleft', { participant });
        break;
      }
      case 'track_published':
      case 'track_unpublished':
        // Media comes and goes with subscriber offers, which carry the same facts in their track
        // list; these notices need no action of their own.
        break;
      case 'subscriber_offer':
        // Offers are handled strictly in order: each one builds on the state the previous left.
        this.subscribeQueue = this.subscribeQueue
          .then(() => this.#answerSubscriber(msg))
          .catch((err) => this.#emit('error', { error: err }));
        break;
      case 'ice_restart_wanted':
        // The server saw our sending connection's path down (docs/PROTOCOL.md).
        if (msg.connection === 'publish') this.#restartPublishIce();
        break;
      case 'set_encodings':
        this.lastSetEncodings = { track_id: msg.track_id, mid: msg.mid, active: msg.active };
        this.#setEncodings(msg);
        break;
      case 'track_quality': {
        const info = { trackId: msg.track_id, layer: msg.layer ?? null, paused: Boolean(msg.paused), reason: msg.reason ?? null };
        this.trackQuality.set(msg.track_id, info);
        this.#emit('trackquality', info);
        break;
      }
      case 'connection_quality':
        for (const entry of msg.participants || []) this.connectionQuality.set(entry.participant_id, entry);
        this.#emit('connectionquality', { participants: msg.participants || [] });
        break;
      case 'lesson_state':
      case 'active_speakers':
      case 'chat':
      case 'chat_history':
      case 'chat_deleted':
        this.#emit(msg.type.replace('_', ''), msg);
        break;
      case 'goodbye':
        this.goodbyeReason = msg.reason || 'goodbye';
        break;
      case 'error': {
        const err = new ProtocolError(msg.code, msg.message, msg.permission);
        // Codes after which the server closes the socket; `ended` reports the final ones.
        if (['invalid_token', 'token_expired', 'replaced', 'timeout', 'message_too_large'].includes(msg.code)) {
          this.fatalError = err;
        } else {
          this.#emit('error', { error: err });
        }
        break;
      }
      default:
        console.debug('classroom: ignoring message', msg.type);
    }
  }

  #onClose() {
    // While a fresh socket is resuming, its outcome decides (#renewSocket looks again).
    if (this.ended || this.reconnecting || this.renewing) return;
    const final = ['left', 'replaced', 'revoked'].includes(this.goodbyeReason)
      || FINAL_CODES.includes(this.fatalError?.code);
    if (!this.everJoined || final) {
      this.#end();
      return;
    }
    // The link dropped, the server restarted, or the socket went silent: back in by ourselves.
    this.goodbyeReason = null;
    this.fatalError = null;
    this.#reconnect();
  }

  // ---- getting back in -----------------------------------------------------------------------

  async #reconnect() {
    this.reconnecting = true;
    this.joined = false;
    this.#emit('reconnecting', {});
    let openTimeoutMs = QUICK_REOPEN_MS;
    for (this.attempt = 0; !this.ended; this.attempt += 1) {
      await this.#backoff(this.attempt);
      if (this.#offline()) await this.#backoff(this.attempt, OFFLINE_RECHECK_MS);
      if (this.ended) return;
      let joined;
      const started = Date.now();
      try {
        joined = await this.#rejoin(openTimeoutMs);
      } catch (err) {
        this.signal?.close();
        if (FINAL_CODES.includes(err.code)) {
          this.reconnecting = false;
          this.fatalError = err;
          this.#end();
          return;
        }
        const took = Date.now() - started;
        const timedOut = took >= openTimeoutMs;
        openTimeoutMs = timedOut ? Math.min(openTimeoutMs * 2, REOPEN_TIMEOUT_MS) : QUICK_REOPEN_MS;
        console.info(`classroom: reconnecting failed after ${took} ms (${err.code})`);
        continue; // unreachable, timed out, or the server is still starting: try again
      }
      this.reconnecting = false;
      this.reconnects += 1;
      this.#afterRejoin(joined);
      return;
    }
  }

  /** Waits before attempt `n` (or `fixedMs`); the `online` event cuts the wait short. */
  #backoff(n, fixedMs = null) {
    const base = BACKOFF_MS[Math.min(n, BACKOFF_MS.length - 1)];
    const ms = fixedMs ?? base * (1 + Math.random() / 3);
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() { clearTimeout(timer); resolve(); }
      this.wakeReconnect = done;
    }).finally(() => { this.wakeReconnect = null; });
  }

  /** `resume` with the latest credential; the invite's token when the server refuses it. */
  async #rejoin(openTimeoutMs = REOPEN_TIMEOUT_MS) {
    if (this.resume && !(this.resume.expires_at_ms <= Date.now())) {
      const token = this.resume.token;
      try {
        return await this.#connect({ v: PROTOCOL_VERSION, type: 'resume', token }, openTimeoutMs);
      } catch (err) {
        if (!RESUME_REFUSED.includes(err.code)) throw err;
        console.info('classroom: resume refused, joining with the invite instead', err.code);
        this.resume = null;
        this.signal?.close();
      }
    }
    return this.#connect({ v: PROTOCOL_VERSION, type: 'join', token: this.token }, openTimeoutMs);
  }

  /** `forced`: connections restarted whatever the browser says of them (a moved address). */
  #afterRejoin(joined, forced = []) {
    const resumed = Boolean(joined.resumed) && joined.participant?.participant_id === this.self?.participant_id;
    this.#entered(joined);
    if (!resumed) this.#startOver();
    // Whoever came or went meanwhile.
    const now = new Map((joined.participants || []).map((p) => [p.participant_id, p]));
    for (const [id, participant] of [...this.participants]) {
      if (now.has(id)) continue;
      this.participants.delete(id);
      this.reconnectingPeers.delete(id);
      this.#emit('participantleft', { participant });
    }
    for (const [id, participant] of now) {
      if (this.participants.has(id)) continue;
      this.participants.set(id, participant);
      this.#emit('participantjoined', { participant });
    }
    if (resumed) {
      // The connections were kept; those that lost their path get new ICE credentials now:
      // after an outage long enough to lose the socket, waiting would only add to it.
      // Receiving first: the lesson reaching the pupil matters more than the pupil's own media,
      // and the browser checks the restarted connections in about the order they were restarted.
      for (const which of ['subscribe', 'publish']) {
        clearTimeout(this.restartTimers[which]);
        this.#restartIce(which, { renew: false, force: forced.includes(which) });
      }
    }
    this.#emit('reconnected', { resumed });
  }

  /**
   * We are a new participant (our place was not kept: a long outage or a server restart): new
   * connections, and what we were sending is published again.
   */
  #startOver() {
    for (const trackId of [...this.remoteTracks.keys()]) this.#removeRemoteTrack(trackId);
    this.midToTrackId.clear();
    this.subscribePc?.close();
    this.subscribePc = null;
    this.subscribeQueue = Promise.resolve();
    const sending = [...this.transceivers]
      .filter(([, t]) => t.direction === 'sendonly' && t.sender.track)
      .map(([source, t]) => [source, t.sender.track, this.sendInfo.get(source)?.plan ?? {}]);
    this.publishPc?.close();
    this.publishPc = null;
    this.transceivers.clear();
    this.sendInfo.clear();
    this.localTracks.clear();
    this.publishQueue = Promise.resolve();
    this.qualityCaps.clear();
    this.trackQuality.clear();
    this.connectionQuality.clear();
    for (const [source, track, plan] of sending) {
      this.setSource(source, track, plan).catch((error) => this.#emit('error', { error }));
    }
  }

  /** Schedules an ICE restart of a media connection that is down. */
  #watchMedia(which) {
    const pc = which === 'publish' ? this.publishPc : this.subscribePc;
    console.debug(`classroom: the ${which} connection is ${pc?.connectionState}`);
    if (pc?.connectionState === 'connected') this.#signOfLife();
    clearTimeout(this.restartTimers[which]);
    this.restartTimers[which] = null;
    if (!pc || !['failed', 'disconnected'].includes(pc.connectionState)) return;
    const wait = pc.connectionState === 'failed' ? 0 : ICE_RESTART_AFTER_MS;
    this.restartTimers[which] = setTimeout(() => this.#restartIce(which), wait);
  }

  #restartIce(which, { renew = true, force = false } = {}) {
    const pc = which === 'publish' ? this.publishPc : this.subscribePc;
    const down = force ? pc?.signalingState !== 'closed' : ['failed', 'disconnected'].includes(pc?.connectionState);
    if (this.ended || !pc || !down) return;
    // Without a network nothing can be restarted; the `online` event does it at once. While the
    // socket is down the restart waits for the resume, which checks again.
    if (this.#offline()) {
      // Checked again after RESTART_RETRY_MS, below.
    } else if (this.joined && renew && this.resume && !this.renewing) {
      // A media path that broke usually means the socket's did too (a new address strands the
      // old TCP connection silently): resume on a fresh socket at once, which restarts ICE.
      this.#renewSocket();
    } else if (this.joined && !this.renewing) {
      this.iceRestarts[which] += 1;
      if (which === 'publish') {
        const task = this.publishQueue.then(() => {
          if (this.publishPc === pc && pc.signalingState !== 'closed') return this.#negotiatePublish({ iceRestart: true });
          return undefined;
        });
        this.publishQueue = task.catch((err) => console.warn('classroom: ICE restart of the sending connection failed', err));
      } else {
        try {
          this.signal.send({ type: 'ice_restart' });
        } catch {
          // The socket just closed; the resume will look again.
        }
      }
    }
    this.restartTimers[which] = setTimeout(() => this.#restartIce(which), RESTART_RETRY_MS);
  }

  /**
   * The server asked for an ICE restart of the sending connection, which it sees down even if
   * the browser does not (yet): at most one offer at a time, queued behind any other.
   */
  #restartPublishIce() {
    const pc = this.publishPc;
    if (this.ended || !this.joined || !pc || pc.signalingState === 'closed') return;
    this.iceRestarts.publish += 1;
    const task = this.publishQueue.then(() => {
      if (this.publishPc === pc && pc.signalingState !== 'closed') return this.#negotiatePublish({ iceRestart: true });
      return undefined;
    });
    this.publishQueue = task.catch((err) => console.warn('classroom: ICE restart of the sending connection failed', err));
  }

  /**
   * Resumes on a new socket beside the current one; the server hands the participant over
   * quietly. If that fails, the current socket stays (or, if it died meanwhile, the reconnect
   * loop takes over). `movedAddress`: asked because media and the old socket both went silent;
   * if media is still not arriving once the new socket works, the device's address changed and
   * both connections are restarted at once (the browser would call them down only seconds later).
   */
  async #renewSocket({ openTimeoutMs = REOPEN_TIMEOUT_MS, movedAddress = false } = {}) {
    this.renewing = true;
    const old = this.signal;
    let joined = null;
    try {
      joined = await this.#connect({ v: PROTOCOL_VERSION, type: 'resume', token: this.resume.token }, openTimeoutMs, { beside: true });
    } catch (err) {
      if (RESUME_REFUSED.includes(err.code)) this.resume = null;
    } finally {
      this.renewing = false;
    }
    if (joined) {
      old.close();
      this.reconnects += 1;
      const forced = movedAddress && this.pathWatch.quiet ? ['publish', 'subscribe'] : [];
      if (forced.length) console.info('classroom: the address changed; restarting both media connections');
      this.#afterRejoin(joined, forced);
    } else if (old.closed && !this.ended && !this.reconnecting) {
      this.#onClose();
    }
  }

  /**
   * Media stopped arriving (pathwatch.js). If the server still answers on the socket, the device
   * kept its address and nothing is forced (a link that is down comes back by itself, and ICE
   * restarts follow the browser's `disconnected`). If it does not, a fresh socket tells a moved
   * address (it opens) from a link that is down (it fails, at once, and is tried again shortly).
   */
  async #pathQuiet() {
    if (this.probing || this.renewing || this.reconnecting || this.ended || !this.joined || !this.resume) return;
    // No network at all: nothing has moved yet, and a socket would only fail.
    if (Date.now() < this.nextProbeAt || this.#offline()) return;
    this.probing = true;
    try {
      const signal = this.signal;
      const rtt = signal.pingRttMs;
      const wait = rtt === null ? PROBE_PONG_MS : Math.min(PROBE_PONG_MS, Math.max(PROBE_PONG_MIN_MS, PROBE_RTTS * rtt));
      if (await signal.probe(wait)) {
        this.pathWatch.disarm();
        return;
      }
      if (this.signal !== signal || this.renewing || this.reconnecting || this.ended || !this.joined || !this.resume) return;
      await this.#renewSocket({ openTimeoutMs: PROBE_OPEN_MS, movedAddress: true });
      this.failedProbes = this.signal === signal ? this.failedProbes + 1 : 0;
    } finally {
      this.probing = false;
      this.nextProbeAt = Date.now() + Math.min(PROBE_AGAIN_MS * 2 ** this.failedProbes, PROBE_AGAIN_MAX_MS);
    }
  }

  /**
   * Something arrived again (media, or a connection the browser calls connected): if the
   * socket is being reopened, the next attempt goes now, not after the backoff.
   */
  #signOfLife() {
    this.failedProbes = 0;
    this.nextProbeAt = 0;
    if (!this.reconnecting) return;
    this.attempt = -1;
    this.wakeReconnect?.();
  }

  /** Whether the browser knows it has no network (`navigator.onLine` is only sure when false). */
  #offline() {
    return typeof navigator !== 'undefined' && navigator.onLine === false;
  }

  /** The device is back online: try at once instead of waiting out the backoff. */
  #online() {
    if (this.reconnecting) {
      // The network is back: try at once, and then with short waits again.
      this.#signOfLife();
      return;
    }
    for (const which of ['publish', 'subscribe']) {
      const pc = which === 'publish' ? this.publishPc : this.subscribePc;
      if (pc && ['failed', 'disconnected'].includes(pc.connectionState)) {
        clearTimeout(this.restartTimers[which]);
        this.#restartIce(which);
      }
    }
  }

  #end() {
    this.ended = true;
    this.joined = false;
    this.pathWatch.stop();
    this.wakeReconnect?.();
    clearTimeout(this.restartTimers.publish);
    clearTimeout(this.restartTimers.subscribe);
    for (const trackId of [...this.remoteTracks.keys()]) this.#removeRemoteTrack(trackId);
    this.publishPc?.close();
    this.subscribePc?.close();
    const reason = this.goodbyeReason || this.fatalError?.code || 'connection_lost';
    this.#emit('ended', { reason, error: this.fatalError });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
