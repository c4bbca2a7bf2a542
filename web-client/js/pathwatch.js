// Notices a receiving connection whose media stopped, sooner than the browser says so.
//
// When a tablet's address changes (Wi-Fi to LTE, a new DHCP lease), Chromium keeps calling the
// connection `connected` for about 2.5 s, then `disconnected`; it does not move to its new
// address by itself, and the signaling socket, tied to the old address, hangs silently. A
// subscribe connection that was receiving the lesson steadily and then gets nothing at all for
// QUIET_MS has lost its path: the session renews its socket and restarts ICE at once.
//
// Only a connection that was receiving counts: a room where nobody sends (no tracks, everything
// paused) is quiet without anything being wrong. The server's own RTCP and the teacher's audio
// arrive many times a second whenever anything is forwarded.

export const POLL_MS = 250;
export const QUIET_MS = 1000;
// Bytes per poll below which the connection counts as not receiving (RTCP alone is a few
// hundred bytes a second).
const RECEIVING_BYTES = 200;

export class PathWatch {
  /**
   * @param {() => RTCPeerConnection|null} getPc  the connection to watch (may change)
   * @param {() => void} onQuiet  called once per outage, when the path went quiet
   * @param {() => void} onBack  called when anything arrives again after `onQuiet`
   */
  constructor(getPc, onQuiet, onBack) {
    this.getPc = getPc;
    this.onQuiet = onQuiet;
    this.onBack = onBack;
    this.timer = null;
    this.pc = null;
    this.bytes = null;
    this.receiving = false;
    this.quietSince = null;
    this.reported = false;
    this.busy = false;
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.#poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async #poll() {
    const pc = this.getPc();
    if (this.busy || !pc || pc.signalingState === 'closed') return;
    if (pc !== this.pc) {
      this.pc = pc;
      this.bytes = null;
      this.receiving = false;
      this.quietSince = null;
      this.reported = false;
    }
    this.busy = true;
    let bytes = 0;
    try {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'transport') bytes += s.bytesReceived || 0;
      });
    } catch {
      return;
    } finally {
      this.busy = false;
    }
    const now = Date.now();
    const grown = this.bytes === null ? 0 : bytes - this.bytes;
    this.bytes = bytes;
    if (grown > 0) {
      if (grown >= RECEIVING_BYTES) this.receiving = true;
      this.quietSince = null;
      if (this.reported) {
        this.reported = false;
        this.onBack();
      }
      return;
    }
    if (!this.receiving) return;
    this.quietSince ??= now;
    if (!this.reported && now - this.quietSince >= QUIET_MS) {
      this.reported = true;
      // Armed again only by steady reception: a connection with nothing forwarded any more,
      // that now sees only the odd consent check, is reported once, not every few seconds.
      this.receiving = false;
      this.onQuiet();
    }
  }
}
