-- Rosters, lessons and attendance. One file serves SQLite and PostgreSQL, so it sticks to the
-- types both understand: TEXT ids (OneRoster sourcedIds are opaque strings, often GUIDs),
-- BOOLEAN, BIGINT, and no dialect-specific defaults, sequences or triggers.
--
-- Time: calendar dates that OneRoster carries as dates (term start/end, enrolment begin/end) are
-- TEXT 'YYYY-MM-DD', the form OneRoster writes them in, which also sorts correctly. Instants (a
-- lesson's start and end, when an attendance choice was made) are BIGINT Unix seconds in UTC:
-- exact, comparable with plain integer arithmetic on both databases, and free of time-zone text
-- that SQLite cannot interpret. Presenting them in JST is the caller's business.

-- Organisations: schools, and the boards of education above them.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    org_type    TEXT NOT NULL,   -- OneRoster org type as given: school, district, local, ...
    identifier  TEXT,
    -- Not a foreign key: a school's export often names a board of education it does not include.
    parent_id   TEXT
);

CREATE TABLE academic_sessions (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    session_type TEXT NOT NULL,  -- schoolYear, term, semester, gradingPeriod
    start_date   TEXT NOT NULL,
    end_date     TEXT NOT NULL,
    school_year  TEXT NOT NULL,
    parent_id    TEXT            -- same reason as orgs.parent_id
);

CREATE TABLE people (
    id               TEXT PRIMARY KEY,
    role             TEXT NOT NULL CHECK (role IN
                        ('teacher', 'student', 'guardian', 'administrator', 'partner_lecturer')),
    username         TEXT NOT NULL,
    given_name       TEXT NOT NULL,
    family_name      TEXT NOT NULL,
    -- Japan Profile reading of the name (furigana): rosters and roll calls are sorted by it.
    given_name_kana  TEXT,
    family_name_kana TEXT,
    email            TEXT,
    enabled          BOOLEAN NOT NULL,
    primary_org_id   TEXT REFERENCES orgs (id)
);

-- A guardian chooses, per pupil, between attending at school and from home, so the link is
-- what authorises that choice.
CREATE TABLE guardian_links (
    guardian_id TEXT NOT NULL REFERENCES people (id),
    pupil_id    TEXT NOT NULL REFERENCES people (id),
    PRIMARY KEY (guardian_id, pupil_id)
);
CREATE INDEX guardian_links_pupil ON guardian_links (pupil_id);

CREATE TABLE classes (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    class_kind TEXT NOT NULL CHECK (class_kind IN ('homeroom', 'subject')),
    class_code TEXT,
    school_id  TEXT NOT NULL REFERENCES orgs (id),
    -- courses.csv is not imported yet, so this is kept as given and not checked.
    course_id  TEXT NOT NULL,
    grades     TEXT,   -- OneRoster list, normalised to comma-separated
    subjects   TEXT    -- likewise
);

CREATE TABLE class_terms (
    class_id   TEXT NOT NULL REFERENCES classes (id),
    session_id TEXT NOT NULL REFERENCES academic_sessions (id),
    PRIMARY KEY (class_id, session_id)
);

CREATE TABLE enrollments (
    id         TEXT PRIMARY KEY,
    class_id   TEXT NOT NULL REFERENCES classes (id),
    person_id  TEXT NOT NULL REFERENCES people (id),
    role       TEXT NOT NULL CHECK (role IN
                   ('teacher', 'student', 'administrator', 'proctor', 'partner_lecturer')),
    is_primary BOOLEAN NOT NULL,
    begin_date TEXT,
    end_date   TEXT
);
CREATE INDEX enrollments_class ON enrollments (class_id);
CREATE INDEX enrollments_person ON enrollments (person_id);

-- Minimal for now: a lesson is a class meeting at a time in a media room.
CREATE TABLE lessons (
    id         TEXT PRIMARY KEY,
    class_id   TEXT NOT NULL REFERENCES classes (id),
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    media_room TEXT NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX lessons_class ON lessons (class_id, starts_at);

-- Minimal for now: how a pupil attends one lesson, and who decided it (normally a guardian).
CREATE TABLE attendance (
    lesson_id  TEXT NOT NULL REFERENCES lessons (id),
    pupil_id   TEXT NOT NULL REFERENCES people (id),
    mode       TEXT NOT NULL CHECK (mode IN ('in_person', 'online', 'absent')),
    decided_by TEXT REFERENCES people (id),
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (lesson_id, pupil_id)
);
