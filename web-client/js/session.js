// The protocol client shared by the teacher and pupil pages: it joins a room over the signaling
// socket and runs the two peer connections of docs/PROTOCOL.md. The client offers on the publish
// connection and the server offers on the subscribe connection, so offers never collide.
// Pages listen to its events and never touch the protocol themselves.

import { SignalChannel, ProtocolError, defaultSignalUrl, PROTOCOL_VERSION } from './signal.js';

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

/**
 * Events (all CustomEvent, payload in `detail`):
 *   participantjoined {participant}   participantleft {participant}
 *   remotetrack {trackId, participantId, participant, kind, source, track}   media has arrived
 *   remotetrackended {trackId, participantId, kind, source}
 *   connectionstate {which: 'publish'|'subscribe', state}
 *   error {error}                     something failed but the session goes on
 *   ended {reason, error?}            the session is over (goodbye, fatal error, lost socket)
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
    this.participants = new Map(); // participant_id -> participant, everyone but us
    this.publishPc = null;
    this.subscribePc = null;
    // Publishing: one transceiver per source, kept for the whole session and switched between
    // sendonly and inactive, so toggling a camera reuses its m= section instead of adding one.
    this.transceivers = new Map(); // source -> RTCRtpTransceiver
    this.localTracks = new Map(); // source -> track record from publish_answer
    this.publishQueue = Promise.resolve();
    // Subscribing: which remote track each m= section of the subscribe connection carries.
    this.midToTrackId = new Map();
    this.remoteTracks = new Map(); // track_id -> {trackId, participantId, kind, source, mid, track}
    this.subscribeQueue = Promise.resolve();
    this.goodbyeReason = null;
    this.fatalError = null;
    this.ended = false;
  }

  /** Connects and joins; resolves with the `joined` message, rejects with a ProtocolError. */
  async join() {
    this.signal = new SignalChannel(this.url, {
      onMessage: (msg) => this.#onMessage(msg),
      onClose: (info) => this.#onClose(info),
    });
    let joined;
    try {
      await this.signal.open();
      joined = await this.signal.request({ v: PROTOCOL_VERSION, type: 'join', token: this.token });
    } catch (err) {
      // Kept for `ended`, which the closing socket triggers and which the page reports.
      this.fatalError = err;
      this.signal.close();
      throw err;
    }
    this.joined = true;
    this.self = joined.participant;
    this.room = joined.room;
    this.permissions = new Set(joined.permissions || []);
    for (const p of joined.participants || []) this.participants.set(p.participant_id, p);
    this.signal.startKeepalive();
    return joined;
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
   * `maxBitrate` (bits/s) caps the encoder; it is fixed when the source is first published.
   */
  setSource(source, track, { maxBitrate } = {}) {
    const task = this.publishQueue.then(() => this.#applySource(source, track, maxBitrate));
    this.publishQueue = task.catch(() => {});
    return task;
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
      remoteTracks: [...this.remoteTracks.values()].map(({ track, ...info }) => ({
        ...info,
        readyState: track.readyState,
        muted: track.muted,
      })),
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

  async #applySource(source, track, maxBitrate) {
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
        const init = { direction: 'sendonly', streams: [new MediaStream([track])] };
        if (maxBitrate) init.sendEncodings = [{ maxBitrate }];
        transceiver = pc.addTransceiver(track, init);
        this.transceivers.set(source, transceiver);
      }
      if (wasSending) return;
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
      const pc = new RTCPeerConnection(PC_CONFIG);
      pc.addEventListener('connectionstatechange', () => this.#emit('connectionstate', { which: 'publish', state: pc.connectionState }));
      this.publishPc = pc;
    }
    return this.publishPc;
  }

  async #negotiatePublish() {
    const pc = this.publishPc;
    await pc.setLocalDescription(await pc.createOffer());
    // Mids exist only once the offer is set locally, so the track list is built after it.
    const tracks = [];
    for (const [source, t] of this.transceivers) {
      if (t.direction === 'sendonly' && t.mid !== null) tracks.push({ mid: t.mid, source });
    }
    let answer;
    try {
      answer = await this.signal.request({ type: 'publish', sdp: pc.localDescription.sdp, tracks });
    } catch (err) {
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch((e) => console.warn('classroom: rollback failed', e));
      }
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this.localTracks.clear();
    for (const t of answer.tracks || []) this.localTracks.set(t.source, t);
  }

  // ---- subscribing ---------------------------------------------------------------------------

  #ensureSubscribePc() {
    if (!this.subscribePc) {
      const pc = new RTCPeerConnection(PC_CONFIG);
      pc.addEventListener('connectionstatechange', () => this.#emit('connectionstate', { which: 'subscribe', state: pc.connectionState }));
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
      case 'participant_left': {
        const participant = this.participants.get(msg.participant_id) || { participant_id: msg.participant_id };
        this.participants.delete(msg.participant_id);
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
      case 'goodbye':
        this.goodbyeReason = msg.reason || 'goodbye';
        break;
      case 'error': {
        const err = new ProtocolError(msg.code, msg.message, msg.permission);
        // Codes after which the server closes the socket; `ended` reports them.
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
    if (this.ended) return;
    this.#end();
  }

  #end() {
    this.ended = true;
    this.joined = false;
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
