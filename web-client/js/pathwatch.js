// Notices a receiving connection whose media stopped arriving, sooner than the browser says so.
//
// When a tablet's address changes (a new DHCP lease, Wi-Fi to LTE), Chromium keeps calling its
// connections `connected` for several seconds, does not move them to the new address by itself,
// and the signaling socket, tied to the old address, hangs without closing. The first sign a page
// can see is that a connection which was receiving the lesson steadily gets nothing at all. This
// module only reports that; session.js decides what it means (it asks the server over the socket
// before it restarts anything, because a link that is merely down looks the same from here).
//
// Only a connection that was receiving counts: a room where nothing is forwarded (no tracks,
// everything paused) is quiet without anything being wrong. The teacher's audio and video and the
// server's RTCP arrive many times a second whenever anything is forwarded.

export const POLL_MS = 200;
// Nothing at all for this long on a connection that was receiving steadily: media packets come
// every few tens of milliseconds, so even a congested home link rarely leaves such a gap.
export const QUIET_MS = 400;
// Bytes per poll from which a connection counts as receiving (RTCP alone is far less).
const RECEIVING_BYTES = 1000;

export class PathWatch {
  /**
   * @param {() => RTCPeerConnection|null} getPc  the connection to watch (it may be replaced)
   * @param {{onQuiet: () => void, onFlowing: () => void}} handlers  `onQuiet` on every poll while
   *   the path is quiet; `onFlowing` once when bytes arrive again after a quiet spell
   */
  constructor(getPc, { onQuiet, onFlowing }) {
    this.getPc = getPc;
    this.onQuiet = onQuiet;
    this.onFlowing = onFlowing;
    this.timer = null;
    this.busy = false;
    this.#reset(null);
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.#poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Whether the watched connection was receiving and has got nothing for QUIET_MS. */
  get quiet() {
    return this.receiving && this.quietSince !== null && Date.now() - this.quietSince >= QUIET_MS;
  }

  /**
   * Stops reporting this quiet spell: the session found nothing wrong (the server answers, so
   * nothing is being forwarded). Steady reception arms the watch again.
   */
  disarm() {
    this.receiving = false;
    this.quietSince = null;
  }

  #reset(pc) {
    this.pc = pc;
    this.bytes = null;
    this.receiving = false;
    this.quietSince = null;
  }

  async #poll() {
    const pc = this.getPc();
    if (this.busy || !pc || pc.signalingState === 'closed') return;
    if (pc !== this.pc) this.#reset(pc);
    this.busy = true;
    let bytes = 0;
    try {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'transport') bytes += s.bytesReceived || 0;
      });
    } catch {
      return;
    } finally {
      this.busy = false;
    }
    if (pc !== this.pc) return;
    const grown = this.bytes === null ? 0 : bytes - this.bytes;
    this.bytes = bytes;
    if (grown > 0) {
      const wasQuiet = this.quietSince !== null && Date.now() - this.quietSince >= QUIET_MS;
      if (grown >= RECEIVING_BYTES) this.receiving = true;
      this.quietSince = null;
      if (wasQuiet) this.onFlowing();
      return;
    }
    if (!this.receiving) return;
    this.quietSince ??= Date.now();
    if (this.quiet) this.onQuiet();
  }
}
