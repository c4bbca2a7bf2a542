-- Lessons, parent-chosen attendance modes, the lobby, attendance records, the audit log, sign-in
-- links and web sessions. Same portability rules as 0001 (TEXT ids, TEXT 'YYYY-MM-DD' calendar
-- dates, BIGINT Unix-second instants, BOOLEAN).
--
-- Append-only tables are ordered by a `seq` column that the writer computes as MAX(seq) + 1
-- while holding the table's write lock (SQLite: the database write lock of BEGIN IMMEDIATE;
-- PostgreSQL: LOCK TABLE, see domain/src/db.rs). Neither an autoincrement nor a sequence is
-- portable between the two, and instants alone cannot order two changes in the same second.

-- 0001's minimal `lessons` and `attendance` were never used by any code; they are replaced.
DROP TABLE attendance;
DROP TABLE lessons;

-- A lesson: one meeting of a class in one media room. `lesson_date` is the school's calendar
-- date of `starts_at` in the school's time zone, fixed when the lesson is created, so that
-- "the pupil's mode for this lesson" never depends on a time-zone computation in SQL.
CREATE TABLE lessons (
    id          TEXT PRIMARY KEY,
    class_id    TEXT NOT NULL REFERENCES classes (id),
    lesson_date TEXT NOT NULL,
    starts_at   BIGINT NOT NULL,
    ends_at     BIGINT NOT NULL,
    media_room  TEXT NOT NULL UNIQUE,
    CHECK (ends_at > starts_at)
);
CREATE INDEX lessons_class ON lessons (class_id, starts_at);
CREATE INDEX lessons_starts ON lessons (starts_at);

CREATE TABLE lesson_teachers (
    lesson_id  TEXT NOT NULL REFERENCES lessons (id),
    teacher_id TEXT NOT NULL REFERENCES people (id),
    PRIMARY KEY (lesson_id, teacher_id)
);
CREATE INDEX lesson_teachers_teacher ON lesson_teachers (teacher_id);

-- Every change of a pupil's attendance mode for one date; never updated or deleted. The mode
-- in force for a date is the new_mode of the row with the highest seq for (pupil, date); no row
-- means the school's default, in person.
CREATE TABLE mode_changes (
    seq          BIGINT PRIMARY KEY,
    pupil_id     TEXT NOT NULL REFERENCES people (id),
    on_date      TEXT NOT NULL,
    changed_at   BIGINT NOT NULL,
    actor_id     TEXT NOT NULL REFERENCES people (id),
    -- guardian: a guardian of the pupil; staff: a teacher or administrator on behalf of one.
    capacity     TEXT NOT NULL CHECK (capacity IN ('guardian', 'staff')),
    old_mode     TEXT NOT NULL CHECK (old_mode IN ('in_person', 'online')),
    new_mode     TEXT NOT NULL CHECK (new_mode IN ('in_person', 'online')),
    reason       TEXT,
    -- Made by staff after the day's cut-off (guardians cannot be).
    after_cutoff BOOLEAN NOT NULL
);
CREATE INDEX mode_changes_pupil_date ON mode_changes (pupil_id, on_date, seq);
CREATE INDEX mode_changes_date ON mode_changes (on_date);

-- A pupil asking to enter a lesson's media room from the lobby, and the teacher's answers.
CREATE TABLE lobby_events (
    seq       BIGINT PRIMARY KEY,
    lesson_id TEXT NOT NULL REFERENCES lessons (id),
    pupil_id  TEXT NOT NULL REFERENCES people (id),
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('requested', 'admitted', 'refused')),
    -- The pupil for 'requested', the teacher for the decisions.
    actor_id  TEXT NOT NULL REFERENCES people (id)
);
CREATE INDEX lobby_events_lesson ON lobby_events (lesson_id, pupil_id, seq);

-- Online presence as the media server saw it.
CREATE TABLE presence_events (
    seq       BIGINT PRIMARY KEY,
    lesson_id TEXT NOT NULL REFERENCES lessons (id),
    pupil_id  TEXT NOT NULL REFERENCES people (id),
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('join', 'leave'))
);
CREATE INDEX presence_events_lesson ON presence_events (lesson_id, pupil_id, seq);

-- A teacher's roll call for pupils in the classroom; the latest mark counts, earlier ones stay.
CREATE TABLE attendance_marks (
    seq        BIGINT PRIMARY KEY,
    lesson_id  TEXT NOT NULL REFERENCES lessons (id),
    pupil_id   TEXT NOT NULL REFERENCES people (id),
    at         BIGINT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('present', 'late', 'absent')),
    teacher_id TEXT NOT NULL REFERENCES people (id)
);
CREATE INDEX attendance_marks_lesson ON attendance_marks (lesson_id, pupil_id, seq);

-- Security-relevant events. actor_id is deliberately not a foreign key: a failed sign-in may
-- name nobody known, and the log must outlive the roster rows it mentions.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_id    TEXT,
    action      TEXT NOT NULL,
    subject     TEXT,
    detail      TEXT NOT NULL,   -- a JSON object
    remote_addr TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

-- One-time sign-in links. Only a hash of the token is stored, so a copy of the database does
-- not let anyone sign in.
CREATE TABLE signin_links (
    token_hash TEXT PRIMARY KEY,
    person_id  TEXT NOT NULL REFERENCES people (id),
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY,
    person_id  TEXT NOT NULL REFERENCES people (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_person ON web_sessions (person_id);
