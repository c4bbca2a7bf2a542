-- Lesson chat kept beyond the lesson: a school's choice, off unless the school turns it on.
-- Same portability rules as 0001/0002 (TEXT ids, BIGINT Unix-second instants, BOOLEAN, an
-- append `seq` computed as MAX(seq) + 1 under the table's write lock).

-- One row per school that has ever chosen; no row means the default: not kept, 30 days.
CREATE TABLE chat_retention (
    school_id  TEXT PRIMARY KEY REFERENCES orgs (id),
    keep       BOOLEAN NOT NULL,
    -- How long a kept message stays, in days; the purge deletes it after that.
    days       INTEGER NOT NULL CHECK (days BETWEEN 1 AND 365),
    changed_at BIGINT NOT NULL,
    changed_by TEXT
);

-- Messages of lessons whose school keeps chat, written while the lesson runs. The school is
-- stored with each message so that school scope and retention need no join through classes,
-- and so a message stays bound to the school whose setting kept it. sender_id is the roster id
-- of the writer (the join token's subject); not a foreign key, like audit_log.actor_id, so a
-- message outlives a roster change within its retention.
CREATE TABLE kept_chat (
    seq         BIGINT PRIMARY KEY,
    school_id   TEXT NOT NULL REFERENCES orgs (id),
    lesson_id   TEXT NOT NULL REFERENCES lessons (id),
    -- The id the live lesson gave it (`m12`); ids restart when a room empties and fills again,
    -- so (lesson_id, message_id) is not unique: a deletion removes the newest such row.
    message_id  TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    sender_role TEXT NOT NULL,
    -- 'all' or 'teacher' (a private question).
    addressee   TEXT NOT NULL CHECK (addressee IN ('all', 'teacher')),
    body        TEXT NOT NULL,
    sent_at     BIGINT NOT NULL
);
CREATE INDEX kept_chat_lesson ON kept_chat (lesson_id, seq);
CREATE INDEX kept_chat_school_sent ON kept_chat (school_id, sent_at);
