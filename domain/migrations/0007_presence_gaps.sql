-- Gaps inside one online visit: the pupil's connection dropped (`away_at`) and the signaling
-- server kept their place for the resume grace; `back_at` is when they resumed it. A resume is
-- not a second visit, so it is not a `presence_events` join: the visit goes on, minus its gaps.
--
-- `back_at` NULL: the pupil is away now, or never came back within the grace (the visit's
-- `leave` then follows, written when the grace ran out). Either way the visit counts as present
-- only up to `away_at`. A report subtracts every gap from the connected time of the visit it
-- falls in (domain/src/attendance.rs, `summarise`). At most `MAX_GAPS_PER_VISIT` rows per visit.
CREATE TABLE presence_gaps (
    seq       BIGINT PRIMARY KEY,
    lesson_id TEXT NOT NULL REFERENCES lessons (id),
    pupil_id  TEXT NOT NULL REFERENCES people (id),
    away_at   BIGINT NOT NULL,
    back_at   BIGINT,
    CHECK (back_at IS NULL OR back_at >= away_at)
);
CREATE INDEX presence_gaps_lesson ON presence_gaps (lesson_id, pupil_id, seq);
