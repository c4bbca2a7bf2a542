// The start/stop buttons for camera, microphone and screen, shared by both pages: capture a
// track, hand it to the session, and undo the capture if the server refuses it.

import { setToggle } from './ui.js';
import { captureErrorText } from './media.js';

export class SourceToggle {
  /**
   * @param {object} o
   * @param {import('./session.js').Session} o.session
   * @param {'camera'|'microphone'|'screen'} o.source
   * @param {HTMLButtonElement} o.button
   * @param {() => Promise<MediaStreamTrack>} o.open   captures the track (called from the click)
   * @param {{onLabel: string, offLabel: string, what: string}} o.labels  `what` names the device in errors
   * @param {(track: MediaStreamTrack|null) => void} [o.onTrack]  e.g. to show a preview
   * @param {(message: string, err: Error) => void} o.onError
   * @param {object} [o.plan]  how to encode it: a SEND_PLANS entry of encodings.js
   */
  constructor({ session, source, button, open, labels, onTrack = () => {}, onError, plan = {} }) {
    Object.assign(this, { session, source, button, open, labels, onTrack, onError, plan });
    this.track = null;
    this.busy = false;
    button.addEventListener('click', () => this.toggle());
    this.render();
  }

  get on() {
    return this.track !== null;
  }

  render() {
    setToggle(this.button, this.on, this.labels);
    this.button.disabled = this.busy || !this.session.joined || !this.session.canPublish(this.source);
  }

  async toggle() {
    if (this.busy) return;
    if (this.on) await this.stop();
    else await this.start();
  }

  async start() {
    this.busy = true;
    this.render();
    let track = null;
    try {
      track = await this.open();
    } catch (err) {
      this.#finish();
      // Closing the screen picker is a choice, not a failure worth a message.
      if (!(this.source === 'screen' && err.name === 'NotAllowedError')) {
        this.onError(captureErrorText(err, this.labels.what), err);
      }
      return;
    }
    // The browser's own "Stop sharing" bar (or an unplugged camera) ends the track without us.
    track.addEventListener('ended', () => {
      if (this.track === track) this.stop();
    });
    this.track = track;
    this.onTrack(track);
    try {
      await this.session.setSource(this.source, track, this.plan);
    } catch (err) {
      this.#release(track);
      this.onError(null, err);
    }
    this.#finish();
  }

  async stop() {
    const track = this.track;
    if (!track) return;
    this.busy = true;
    this.#release(track);
    this.render();
    try {
      await this.session.setSource(this.source, null);
    } catch (err) {
      this.onError(null, err);
    }
    this.#finish();
  }

  /** Stops capturing without telling the server: for when the session is already over. */
  release() {
    if (this.track) this.#release(this.track);
    this.render();
  }

  #release(track) {
    track.stop();
    if (this.track === track) {
      this.track = null;
      this.onTrack(null);
    }
  }

  #finish() {
    this.busy = false;
    this.render();
  }
}
