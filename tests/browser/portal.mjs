// Browser test of the signed-in pages against the real server: a school prepared from the command
// line (run.sh imports the sample OneRoster roster with `classroom roster import`, plus an
// administrator, and mints one-time links with `classroom signin-link`), then, in real Chromium:
//   - the administrator creates two lessons on the admin page: one today, one on the next
//     weekday D (a day guardians may still change whatever the time of day: the cut-off only
//     closes today);
//   - a guardian signs in with a link, sees their children, and switches one child to online
//     for D with one tap; the page and the API agree; the session cookie is HttpOnly,
//     SameSite=Lax and, on this plain-http origin, not Secure; a change without the CSRF token
//     is refused;
//   - the class teacher signs in, opens D's lesson in the lobby and sees that pupil online;
//   - a pupil attending in person today asks to join today's lesson and waits; the teacher
//     admits them from the lobby; the lobby and the API show the admission, and the pupil's
//     page goes on into the lesson room, where the server's gate lets them in;
//   - the teacher creates a guest link in the lobby; a partner lecturer opens it and turns the
//     camera on; the pupil decodes it and sees the guest's name and university; the teacher
//     revokes the link and the guest leaves the pupil's room.
//
// Run by run.sh, which passes in:
//   BASE_URL       e.g. http://10.213.0.1:8080
//   ADMIN_LINK     sign-in link of the administrator (a-001)
//   GUARDIAN_LINK  of the guardian g-001 (children s-001 and s-002)
//   TEACHER_LINK   of t-001, the teacher of class-p5-1
//   PUPIL_LINK     of s-003 (in class-p5-1; in person unless someone changes it)

import {
  required, runScenario, step, until, waitForServer, launchPeople, signInWithLink, portalReady,
  apiFrom, screenshots, logs, openPage, switchOn, expectVideoFlowing, PORTAL_MS, JOIN_MS,
} from './lib.mjs';

const BASE_URL = required('BASE_URL');
const ADMIN_LINK = required('ADMIN_LINK');
const GUARDIAN_LINK = required('GUARDIAN_LINK');
const TEACHER_LINK = required('TEACHER_LINK');
const PUPIL_LINK = required('PUPIL_LINK');

const CLASS = 'class-p5-1';
const CHILD = 's-001'; // g-001's child whose mode the guardian changes
const IN_PERSON_PUPIL = 's-003';
// Lobby polls every 3 s and the waiting pupil's page asks again every 3 s: a few rounds.
const POLLED_MS = 12000;

/** The first Monday–Friday after `today` (YYYY-MM-DD), as calendar arithmetic on dates. */
function nextWeekday(today) {
  const d = new Date(`${today}T00:00:00Z`);
  do d.setUTCDate(d.getUTCDate() + 1); while (d.getUTCDay() === 0 || d.getUTCDay() === 6);
  return d.toISOString().slice(0, 10);
}

/** Fills the admin page's lesson form and waits for the server's answer. */
async function createLesson(admin, { date, start, end, room }) {
  await admin.fill('#lesson-class', CLASS);
  await admin.fill('#lesson-date', date);
  await admin.fill('#lesson-start', start);
  await admin.fill('#lesson-end', end);
  await admin.fill('#lesson-room', room);
  const before = await admin.evaluate(() => window.classroomPortal.state.lastCreatedLesson?.id ?? null);
  await admin.click('#btn-create-lesson');
  const created = await until(`lesson ${room} to be created`, () => admin.evaluate((before) => {
    const s = window.classroomPortal.state;
    const status = document.getElementById('lesson-status');
    if (status?.dataset.kind === 'error') return { fail: status.textContent };
    const lesson = s.lastCreatedLesson;
    return { ok: Boolean(lesson && lesson.id !== before), lesson };
  }, before), PORTAL_MS);
  return created.lesson;
}

/** The lobby row of `pupil` as the page shows it, and as its test hooks hold it. */
function lobbyRow(page, pupil) {
  return page.evaluate((pupil) => {
    const li = document.querySelector(`#roster li[data-pupil="${pupil}"]`);
    const hooks = window.classroomPortal.state.lobby?.pupils.find((p) => p.id === pupil) ?? null;
    return {
      shown: li ? { mode: li.dataset.mode, waiting: li.dataset.waiting, admitted: li.dataset.admitted, onlineNow: li.dataset.onlineNow, text: li.textContent.replace(/\s+/g, ' ').trim() } : null,
      hooks,
      lessonId: window.classroomPortal.state.lessonId,
    };
  }, pupil);
}

runScenario('portal', async (closers) => {
  await step('server answers /healthz', () => waitForServer(BASE_URL));

  const people = await launchPeople(BASE_URL);
  closers.push(people.close);

  let admin;
  let today;
  let nextDay;
  let todayLesson;
  let laterLesson;
  await step('administrator signs in with a one-time link and creates two lessons', async () => {
    admin = await signInWithLink(await people.person(), 'admin', ADMIN_LINK, '/admin.html');
    today = await admin.evaluate(() => window.classroomPortal.state.me.today);
    nextDay = nextWeekday(today);
    // All day today, so the pupil can join whenever the test runs; D in the morning.
    todayLesson = await createLesson(admin, { date: today, start: '00:00', end: '23:59', room: `portal-today-${Date.now()}` });
    laterLesson = await createLesson(admin, { date: nextDay, start: '10:00', end: '10:45', room: `portal-later-${Date.now()}` });
    const listed = await apiFrom(admin, `/api/admin/lessons?from=${today}&to=${nextDay}`);
    const ids = (listed.body.lessons || []).map((l) => l.id);
    if (listed.status !== 200 || !ids.includes(todayLesson.id) || !ids.includes(laterLesson.id)) {
      throw new Error(`the server does not list both lessons: ${JSON.stringify(listed)}`);
    }
    for (const lesson of [todayLesson, laterLesson]) {
      if (!lesson.teachers.some((t) => t.id === 't-001')) throw new Error(`t-001 does not teach ${JSON.stringify(lesson)}`);
    }
    console.log(`  today ${today}: ${todayLesson.id}; next weekday ${nextDay}: ${laterLesson.id}`);
  });

  let guardian;
  let guardianContext;
  await step('guardian signs in with a one-time link and sees their children', async () => {
    guardianContext = await people.person();
    guardian = await signInWithLink(guardianContext, 'guardian', GUARDIAN_LINK, '/guardian.html');
    const children = await guardian.evaluate(() => window.classroomPortal.state.children.map((c) => c.id).sort());
    if (JSON.stringify(children) !== JSON.stringify(['s-001', 's-002'])) throw new Error(`children: ${JSON.stringify(children)}`);
    const card = guardian.locator(`article[data-pupil="${CHILD}"]`);
    await until(`${CHILD}'s card to show ${nextDay}`, async () => ({
      ok: (await card.locator(`li[data-date="${nextDay}"] button[data-mode="online"]`).count()) === 1,
    }), PORTAL_MS);
    const todayShown = await card.locator('[data-role=mode-today]').getAttribute('data-mode');
    console.log(`  ${CHILD} today: ${todayShown}`);
  });

  await step('the session cookie is HttpOnly, SameSite=Lax, and not Secure on plain http', async () => {
    const cookies = await guardianContext.cookies(BASE_URL);
    const session = cookies.find((c) => c.name === 'classroom_session');
    if (!session) throw new Error(`no classroom_session cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
    if (!session.httpOnly || session.sameSite !== 'Lax' || session.secure || session.path !== '/') {
      throw new Error(`cookie attributes: ${JSON.stringify({ ...session, value: '…' })}`);
    }
    const visible = await guardian.evaluate(() => document.cookie);
    if (visible.includes('classroom_session')) throw new Error('the session cookie is readable from scripts');
  });

  await step(`guardian switches ${CHILD} to online for ${nextDay} with one tap`, async () => {
    const row = guardian.locator(`article[data-pupil="${CHILD}"] li[data-date="${nextDay}"]`);
    if ((await row.getAttribute('data-mode')) !== 'in_person') throw new Error(`${nextDay} is not in person to begin with`);
    await row.locator('button[data-mode="online"]').click({ timeout: PORTAL_MS });
    const shown = await until('the page to show the saved change', () => guardian.evaluate(({ child, date }) => {
      const s = window.classroomPortal.state;
      const li = document.querySelector(`article[data-pupil="${child}"] li[data-date="${date}"]`);
      const pressed = li?.querySelector('button[data-mode="online"]')?.getAttribute('aria-pressed');
      const day = s.children.find((c) => c.id === child)?.days.find((d) => d.date === date);
      if (li?.querySelector('[data-role=day-status]')?.dataset.kind === 'error') return { fail: li.textContent };
      return {
        ok: s.saving === 0 && li?.dataset.mode === 'online' && pressed === 'true' && day?.mode === 'online'
          && s.lastSaved?.date === date && s.lastSaved?.mode === 'online',
        rowMode: li?.dataset.mode, pressed, day, lastSaved: s.lastSaved, saving: s.saving,
        status: li?.querySelector('[data-role=day-status]')?.textContent,
      };
    }, { child: CHILD, date: nextDay }), PORTAL_MS);
    console.log(`  page says: ${shown.status}`);
    const modes = await apiFrom(guardian, `/api/children/${CHILD}/modes?from=${nextDay}&to=${nextDay}`);
    const day = modes.body?.days?.[0];
    if (modes.status !== 200 || day?.mode !== 'online' || day?.set_by?.id !== 'g-001' || day?.on_behalf !== false) {
      throw new Error(`the server holds ${JSON.stringify(modes)}`);
    }
  });

  await step('a change without the CSRF token is refused, and nothing changes', async () => {
    const refused = await apiFrom(guardian, `/api/children/${CHILD}/modes`, {
      method: 'PUT', body: { from: nextDay, to: nextDay, mode: 'in_person' },
    });
    // Refused for the token, not the origin: the request came from the page itself.
    if (refused.status !== 403 || refused.body?.error !== 'csrf' || !/X-CSRF-Token/.test(refused.body?.message)) {
      throw new Error(`without the token: ${JSON.stringify(refused)}`);
    }
    const history = await apiFrom(guardian, `/api/children/${CHILD}/history`);
    const changes = history.body?.history ?? [];
    if (changes.length !== 1 || changes[0].new_mode !== 'online') throw new Error(`history: ${JSON.stringify(history)}`);
  });

  let teacher;
  await step(`teacher signs in and sees ${CHILD} online in the lobby of ${nextDay}'s lesson`, async () => {
    teacher = await signInWithLink(await people.person(), 'teacher', TEACHER_LINK, '/lobby.html');
    await teacher.goto(`${BASE_URL}/lobby.html?date=${nextDay}&lesson=${encodeURIComponent(laterLesson.id)}`, { timeout: PORTAL_MS });
    await portalReady(teacher, 'teacher');
    const row = await until(`the lobby to show ${CHILD} online`, async () => {
      const r = await lobbyRow(teacher, CHILD);
      return { ...r, ok: r.lessonId === laterLesson.id && r.shown?.mode === 'online' && r.hooks?.mode === 'online' };
    }, PORTAL_MS);
    const other = await lobbyRow(teacher, 's-002');
    if (other.shown?.mode !== 'in_person') throw new Error(`s-002, whose guardian changed nothing, shows ${JSON.stringify(other)}`);
    console.log(`  ${CHILD}: ${row.shown.text}`);
  });

  let pupil;
  await step(`${IN_PERSON_PUPIL}, in person today, asks to join and waits in the lobby`, async () => {
    pupil = await signInWithLink(await people.person(), 'pupil', PUPIL_LINK, '/lessons.html');
    await pupil.click(`button[data-action=join][data-lesson="${todayLesson.id}"]`, { timeout: PORTAL_MS });
    await until('the pupil page to say it is waiting', () => pupil.evaluate(() => {
      const s = window.classroomPortal.state;
      return { ok: s.waiting === true && !document.getElementById('waiting').hidden, waiting: s.waiting, lastError: s.lastError, attempts: s.attempts };
    }), PORTAL_MS);
    await teacher.goto(`${BASE_URL}/lobby.html?lesson=${encodeURIComponent(todayLesson.id)}`, { timeout: PORTAL_MS });
    await portalReady(teacher, 'teacher');
    await until(`the lobby to show ${IN_PERSON_PUPIL} waiting`, async () => {
      const r = await lobbyRow(teacher, IN_PERSON_PUPIL);
      return { ...r, ok: r.lessonId === todayLesson.id && r.shown?.waiting === 'true' && r.shown?.mode === 'in_person' };
    }, POLLED_MS);
    await screenshots('waiting');
  });

  await step('teacher admits the pupil from the lobby; the page and the API show it', async () => {
    await teacher.click(`#roster button[data-action=admit][data-pupil="${IN_PERSON_PUPIL}"]`, { timeout: PORTAL_MS });
    await until('the lobby to show the admission', async () => {
      const r = await lobbyRow(teacher, IN_PERSON_PUPIL);
      return { ...r, ok: r.shown?.admitted === 'true' && r.shown?.waiting === 'false' && r.hooks?.admitted === true };
    }, PORTAL_MS);
    const lobby = await apiFrom(teacher, `/api/lessons/${encodeURIComponent(todayLesson.id)}/lobby`);
    const entry = lobby.body?.pupils?.find((p) => p.pupil.id === IN_PERSON_PUPIL);
    if (lobby.status !== 200 || entry?.admitted !== true || entry?.waiting !== false || entry?.mode !== 'in_person') {
      throw new Error(`the server's lobby: ${JSON.stringify(entry ?? lobby)}`);
    }
  });

  await step('the admitted pupil\'s page goes on into the lesson, and the gate lets them in', async () => {
    // The waiting page asks again every 3 s; once admitted it gets a join token and opens the
    // lesson page, which joins the lesson's room over the WebSocket (checked again at the door).
    await pupil.waitForURL((url) => url.pathname === '/pupil.html', { timeout: POLLED_MS });
    await until('the pupil to join the lesson room', () => pupil.evaluate(() => {
      const state = window.classroom?.state;
      const banner = document.getElementById('banner');
      const shown = banner && !banner.hidden ? banner.querySelector('p')?.textContent : null;
      if (state?.ended) return { fail: `the session ended; the page says: ${shown}`, state };
      return { ok: Boolean(state?.joined), banner: shown };
    }), JOIN_MS);
    await until(`the lobby to show ${IN_PERSON_PUPIL} connected`, async () => {
      const r = await lobbyRow(teacher, IN_PERSON_PUPIL);
      return { ...r, ok: r.shown?.onlineNow === 'true' && r.hooks?.online_now === true };
    }, POLLED_MS);
    await screenshots('admitted');
  });

  await step('the teacher invites a partner lecturer from the lobby; the pupil decodes their camera', async () => {
    await teacher.fill('#guest-name', '山田 太郎');
    await teacher.fill('#guest-org', '東海大学');
    await teacher.click('#guest-form button[type=submit]', { timeout: PORTAL_MS });
    const created = await until('the guest link to be shown once', () => teacher.evaluate(() => {
      const input = document.querySelector('#guest-created input[data-credential=url]');
      return { ok: Boolean(input?.value), url: input?.value, links: window.classroomPortal.state.guestLinks };
    }), PORTAL_MS);
    const guest = await openPage(await people.person(), 'guest', created.url);
    await switchOn(guest, 'guest', '#btn-camera');
    await expectVideoFlowing(pupil, 'pupil', { kind: 'video', source: 'camera', role: 'partner_lecturer' });
    const seen = await pupil.evaluate(() => [...window.classroom.session.participants.values()]
      .find((p) => p.role === 'partner_lecturer') ?? null);
    if (seen?.name !== '山田 太郎' || seen?.school !== '東海大学') throw new Error(`the pupil sees the guest as ${JSON.stringify(seen)}`);
    await screenshots('guest');
    await teacher.click('#guest-list button[data-action=revoke]', { timeout: PORTAL_MS });
    await until('the revoked guest to leave the pupil\'s room', () => pupil.evaluate(() => ({
      ok: ![...window.classroom.session.participants.values()].some((p) => p.role === 'partner_lecturer'),
    })), JOIN_MS);
  });

  await step('no uncaught errors in the pages', async () => {
    const uncaught = logs.filter((line) => line.includes('UNCAUGHT') || line.includes('PAGE CRASHED'));
    if (uncaught.length) throw new Error(`pages threw:\n${uncaught.join('\n')}`);
    for (const line of logs.filter((l) => / (warning|error): /.test(l))) console.log(`  page ${line}`);
  });
});
