// The signaling socket of docs/PROTOCOL.md (version 1): one WebSocket, JSON text frames.
// It matches replies to requests by `id` and hands every other server message to its listener;
// it knows nothing about rooms or media, which is session.js's job.

const PROTOCOL_VERSION = 1;
// How long a request may wait for its reply. The server answers quickly; a reply that takes longer
// than this means the link is dead, and the user is better served by an error than by a spinner.
const REQUEST_TIMEOUT_MS = 15000;
// PROTOCOL.md asks for a ping every 10 s (the server drops sockets silent for 30 s).
const PING_INTERVAL_MS = 10000;
// A tablet that changes Wi-Fi can leave a WebSocket that never reports closing; a missing pong is
// the only sign, so two missed intervals count as a lost connection.
const PONG_DEADLINE_MS = 2 * PING_INTERVAL_MS;
// Ping round trips remembered (`pingRttMs` is the slowest of them).
const RTT_SAMPLES = 5;

/** An `error` message from the server, or a local failure worded like one. */
export class ProtocolError extends Error {
  constructor(code, message, permission) {
    super(message || code);
    this.name = 'ProtocolError';
    this.code = code;
    this.permission = permission;
  }
}

/** The server's address: same host as the page, so one invite link works behind any proxy. */
export function defaultSignalUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

export class SignalChannel {
  /**
   * @param {string} url
   * @param {{onMessage: (msg: object) => void, onClose: (info: {code: number, reason: string}) => void}} handlers
   */
  constructor(url, { onMessage, onClose }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.pingTimer = null;
    this.lastPong = 0;
    // The slowest ping round trip of the last few (ms), null before the first: how long a
    // healthy socket takes to answer on this link, queues included.
    this.pingRttMs = null;
    this.pingRtts = [];
    this.closed = false;
  }

  /** Opens the socket; resolves once it can carry messages. */
  open(timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let opened = false;
      const started = Date.now();
      console.debug('classroom: opening a socket');
      const timer = setTimeout(() => {
        reject(new ProtocolError('connection_failed', 'The server did not answer in time.'));
        ws.close();
      }, timeoutMs);
      ws.addEventListener('open', () => {
        console.debug(`classroom: socket open after ${Date.now() - started} ms`);
        opened = true;
        clearTimeout(timer);
        resolve();
      });
      ws.addEventListener('message', (ev) => this.#receive(ev.data));
      ws.addEventListener('close', (ev) => {
        clearTimeout(timer);
        if (!opened) reject(new ProtocolError('connection_failed', 'Could not reach the server.'));
        this.#closed(ev.code, ev.reason);
      });
      // A failed socket always fires `close` too, which does the work; nothing to add here.
      ws.addEventListener('error', () => {});
    });
  }

  /** Sends a message that expects no reply. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      throw new ProtocolError('not_connected', 'The connection to the server is closed.');
    }
    this.ws.send(JSON.stringify(msg));
  }

  /** Sends a request with a fresh `id`; resolves with the reply, rejects with a ProtocolError. */
  request(msg, timeoutMs = REQUEST_TIMEOUT_MS) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('timeout', `No reply from the server to "${msg.type}".`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.send({ ...msg, id });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(err);
      }
    });
  }

  /**
   * Sends a message that has no success reply (e.g. `set_track_quality`) with a fresh `id`, so
   * that an `error` about it reaches `onError` instead of the general listener. Silence for
   * `windowMs` counts as accepted.
   */
  notify(msg, { onError = () => {}, windowMs = REQUEST_TIMEOUT_MS } = {}) {
    this.request(msg, windowMs).catch((err) => {
      if (err.code !== 'timeout' && err.code !== 'connection_lost') onError(err);
    });
  }

  /** Starts the keep-alive. Only after `joined`: anything but `join` before it is refused. */
  startKeepalive() {
    this.lastPong = Date.now();
    const ping = () => {
      const sent = Date.now();
      this.request({ type: 'ping' }, PONG_DEADLINE_MS)
        .then(() => { this.#pong(sent); })
        .catch(() => { /* judged by lastPong below, on the next tick */ });
    };
    // One at once: the socket's round trip is known from the start (see `pingRttMs`).
    ping();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastPong > PONG_DEADLINE_MS) {
        this.ws?.close(4000, 'pong timeout');
        // A dead link may hold the closing handshake for a long time: report the loss now, so
        // the session reconnects at once (the socket's own `close` later finds us closed).
        this.#closed(4000, 'pong timeout');
        return;
      }
      ping();
    }, PING_INTERVAL_MS);
  }

  /**
   * Whether the server answers a ping within `timeoutMs`: a socket stranded on an address the
   * device no longer has neither answers nor reports closing.
   */
  probe(timeoutMs) {
    const sent = Date.now();
    return this.request({ type: 'ping' }, timeoutMs).then(
      () => { this.#pong(sent); return true; },
      () => false,
    );
  }

  #pong(sent) {
    this.lastPong = Date.now();
    this.pingRtts = [...this.pingRtts.slice(-(RTT_SAMPLES - 1)), this.lastPong - sent];
    this.pingRttMs = Math.max(...this.pingRtts);
  }

  close(code = 1000, reason = '') {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
  }

  #receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('classroom: ignoring a frame that is not JSON', data);
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.v !== undefined && msg.v !== PROTOCOL_VERSION) {
      console.warn('classroom: server speaks protocol version', msg.v);
    }
    const waiter = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
    if (waiter) {
      this.pending.delete(msg.id);
      clearTimeout(waiter.timer);
      if (msg.type === 'error') waiter.reject(new ProtocolError(msg.code, msg.message, msg.permission));
      else waiter.resolve(msg);
      return;
    }
    this.onMessage(msg);
  }

  #closed(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ProtocolError('connection_lost', 'The connection to the server was lost.'));
    }
    this.pending.clear();
    this.onClose({ code, reason });
  }
}

export { PROTOCOL_VERSION };
