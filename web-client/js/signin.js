// The sign-in landing page. It has no form: people sign in at the school's identity provider
// (OIDC) or with a one-time link the school sent; both come back here only on failure, with
// `?error=CODE`. Someone already signed in is sent on to `next` or their role's home page.

import { getMe } from './api.js';
import { safeNext } from './next.js';
import { t, hasText, translatePage } from './i18n.js';
import { byId, errorText, markReady, markFailed, showMessage, state } from './portal.js';

state.page = 'signin';

async function main() {
  translatePage();
  const params = new URLSearchParams(window.location.search);
  const next = safeNext(params.get('next'), window.location.origin);
  const oidc = byId('btn-oidc');
  oidc.href = `/auth/oidc/start${next ? `?next=${encodeURIComponent(next)}` : ''}`;

  const error = params.get('error');
  state.signinError = error;
  if (error) {
    const key = `signin.error.${error}`;
    showMessage(hasText(key) ? t(key) : t('signin.error.other', { code: error }), 'error');
  } else if (params.has('signed_out')) {
    showMessage(t('signin.signed_out'), 'info');
  }

  try {
    const me = await getMe({ redirectOn401: false });
    state.me = me;
    // Already signed in (e.g. a bookmark of this page): no reason to stay.
    state.redirectTo = next || me.home || '/';
    window.location.replace(state.redirectTo);
    markReady();
    return;
  } catch (err) {
    byId('checking').hidden = true;
    if (err.code !== 'unauthenticated') {
      // The server could not say; still offer sign-in, which is the page's whole purpose.
      if (!error) showMessage(errorText(err), 'error');
    }
  }
  state.signedIn = false;
  markReady();
}

main().catch((err) => {
  console.error('classroom:', err);
  markFailed(err);
});
