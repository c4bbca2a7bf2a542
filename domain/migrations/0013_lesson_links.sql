-- Lesson links between two schools' servers (docs/PARTNER.md "Lesson links"). Same portability
-- rules as 0001/0002 (TEXT ids, BIGINT Unix-second instants).
--
-- Host side: one invitation of a host lesson to a partner school's server. The invitation code
-- itself (a signed token naming the id) is shown once and not kept; `key_hash` is the SHA-256
-- of the link key handed to the partner when it redeemed the code.
CREATE TABLE lesson_links (
    id             TEXT PRIMARY KEY,
    lesson_id      TEXT NOT NULL REFERENCES lessons (id),
    -- What the inviting teacher called the partner ("北小学校"), until it redeems.
    partner_name   TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('invited', 'accepted', 'revoked', 'ended')),
    key_hash       TEXT,
    redeemed_at    BIGINT,
    -- The partner school's name as its server gave it at redemption.
    partner_school TEXT,
    revoked_at     BIGINT,
    revoked_by     TEXT
);
CREATE INDEX lesson_links_lesson ON lesson_links (lesson_id, expires_at);

-- Partner side: an invitation this server redeemed for one of its own lessons; its dialer keeps
-- the link to the host while the local lesson is on. `link_key` is the secret presented at the
-- host's door, so it is kept as is (like a password a client stores).
CREATE TABLE partner_links (
    id            TEXT PRIMARY KEY,
    host_link_id  TEXT NOT NULL,
    host_base_url TEXT NOT NULL,
    host_ws_url   TEXT NOT NULL,
    host_room     TEXT NOT NULL,
    host_school   TEXT NOT NULL,
    lesson_title  TEXT NOT NULL,
    link_key      TEXT NOT NULL,
    lesson_id     TEXT NOT NULL REFERENCES lessons (id),
    accepted_by   TEXT NOT NULL,
    accepted_at   BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    -- Who or what ended it: a person's id, or the host's refusal code (`link_revoked`, ...).
    ended_by      TEXT,
    UNIQUE (host_base_url, host_link_id)
);
CREATE INDEX partner_links_lesson ON partner_links (lesson_id);
