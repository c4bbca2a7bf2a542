// Test hooks: the browser end-to-end test (tests/browser) reads the live peer connections and
// session state from here to call getStats. Getters, so they always show the current objects
// even though the connections are created later than the page.

export function exposeForTests(session, extra = {}) {
  window.classroom = {
    session,
    get publishPc() {
      return session.publishPc;
    },
    get subscribePc() {
      return session.subscribePc;
    },
    get state() {
      return session.snapshot();
    },
    ...extra,
  };
}
