// The lesson's moderation state on the client: the server's `lesson_state` snapshots, who is
// speaking, the chat log, and the requests that change them (docs/PROTOCOL.md, "Lesson").
// No DOM here: the teacher's and the pupil's pages render from it.
//
// The server decides everything (who is heard, who is seen); this only mirrors its word and asks.
// Requests have no success reply: success shows as the next `lesson_state` or `chat`. A refusal
// comes back as an `error` with the request's id and goes to the `refused` event.

const CHAT_KEPT = 200; // the server keeps the last 200 as well; more would only grow the page

/**
 * Events (CustomEvent, payload in `detail`):
 *   state     {state}                  a new lesson_state snapshot
 *   speakers  {speakers, recent}       active speakers changed
 *   chat      {messages}               the chat log changed (a message, history, or a removal)
 *   refused   {error, request}         the server refused a request (error.code, error.message)
 */
export class Lesson extends EventTarget {
  constructor(session) {
    super();
    this.session = session;
    this.state = null; // the latest lesson_state, or null before the first
    this.speakers = []; // participant ids speaking now, loudest first
    this.recent = []; // participant ids, most recent speaker first
    this.messages = new Map(); // message_id -> message, in arrival order
    session.addEventListener('lessonstate', (ev) => {
      this.state = ev.detail;
      this.#emit('state', { state: this.state });
    });
    session.addEventListener('activespeakers', (ev) => {
      this.speakers = Array.isArray(ev.detail.speakers) ? ev.detail.speakers : [];
      this.recent = Array.isArray(ev.detail.recent) ? ev.detail.recent : [];
      this.#emit('speakers', { speakers: this.speakers, recent: this.recent });
    });
    session.addEventListener('chathistory', (ev) => {
      this.messages.clear();
      for (const m of ev.detail.messages || []) this.#keep(m);
      this.#emitChat();
    });
    session.addEventListener('chat', (ev) => {
      if (ev.detail.message) this.#keep(ev.detail.message);
      this.#emitChat();
    });
    session.addEventListener('chatdeleted', (ev) => {
      if (this.messages.delete(ev.detail.message_id)) this.#emitChat();
    });
  }

  /** Our own part of the state (`you`), with safe defaults before the first snapshot. */
  get you() {
    return this.state?.you ?? { hand: false, floor: false, camera_to_class: false, muted: false, may_speak: false };
  }

  isSpeaking(participantId) {
    return this.speakers.includes(participantId);
  }

  /** A snapshot for tests and debugging. */
  snapshot() {
    return { state: this.state, speakers: this.speakers, recent: this.recent, messages: [...this.messages.values()] };
  }

  // ---- a pupil's requests ----
  raiseHand() { this.#send({ type: 'raise_hand' }); }
  lowerHand(participantId) { this.#send(participantId ? { type: 'lower_hand', participant_id: participantId } : { type: 'lower_hand' }); }
  /** Without an id: give our own floor back. */
  revokeFloor(participantId) { this.#send(participantId ? { type: 'revoke_floor', participant_id: participantId } : { type: 'revoke_floor' }); }
  /** Without an id: a pupil unmutes itself (open lessons only); with one: a teacher lifts a mute. */
  unmute(participantId, onError) { this.#send(participantId ? { type: 'unmute', participant_id: participantId } : { type: 'unmute' }, onError); }
  answerCheck(checkId, option) { this.#send({ type: 'answer_check', check_id: checkId, option }); }
  /** `to`: 'all' or 'teacher'. `onError` lets the composer give the text back. */
  sendChat(to, text, onError) { this.#send({ type: 'chat', to, text }, onError); }

  // ---- a teacher's requests ----
  grantFloor(participantId, camera) { this.#send({ type: 'grant_floor', participant_id: participantId, camera: Boolean(camera) }); }
  mute(participantId) { this.#send({ type: 'mute', participant_id: participantId }); }
  muteAll() { this.#send({ type: 'mute_all' }); }
  /** Any subset of {speaking, cameras, chat, last_n}. */
  setLesson(fields) { this.#send({ type: 'set_lesson', ...fields }); }
  spotlight(participantId) { this.#send({ type: 'spotlight', participant_id: participantId ?? null }); }
  deleteChat(messageId) { this.#send({ type: 'delete_chat', message_id: messageId }); }
  quickCheck(question, options) { this.#send({ type: 'quick_check', question, options }); }
  closeCheck() { this.#send({ type: 'close_check' }); }

  #send(msg, onError) {
    if (!this.session.joined) return;
    const refused = (error) => {
      this.#emit('refused', { error, request: msg });
      onError?.(error);
    };
    try {
      this.session.signal.notify(msg, { onError: refused });
    } catch (error) {
      refused(error);
    }
  }

  #keep(message) {
    if (!message?.message_id) return;
    this.messages.set(message.message_id, message);
    while (this.messages.size > CHAT_KEPT) this.messages.delete(this.messages.keys().next().value);
  }

  #emitChat() {
    this.#emit('chat', { messages: [...this.messages.values()] });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
