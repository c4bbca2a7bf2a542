-- Guest links (docs/PARTNER.md): a lesson's invitation for one person from outside the school
-- (a partner lecturer, kind 'guest') or one encoder publishing over WHIP (kind 'whip'). The
-- credential itself is a signed join token naming the link's id; this row is what makes it
-- revocable and what the room's door checks. Same portability rules as 0001/0002 (TEXT ids,
-- BIGINT Unix-second instants).
CREATE TABLE guest_links (
    id           TEXT PRIMARY KEY,
    lesson_id    TEXT NOT NULL REFERENCES lessons (id),
    kind         TEXT NOT NULL CHECK (kind IN ('guest', 'whip')),
    -- Shown to the room as the participant's name, and beside it the organisation.
    display_name TEXT NOT NULL,
    organisation TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    revoked_by   TEXT
);
CREATE INDEX guest_links_lesson ON guest_links (lesson_id, expires_at);
