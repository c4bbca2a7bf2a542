-- Presence left open by a server that was killed (SIGKILL, out of memory, power loss) while
-- pupils were connected: their departures were never seen, and every report would show them
-- connected for good. The next start closes such visits itself and marks the closing, so a
-- teacher can tell "left at 10:42" from "the server stopped at about 10:42".
ALTER TABLE presence_events ADD COLUMN ended_by_restart BOOLEAN NOT NULL DEFAULT FALSE;

-- One row: when the running server last said it was alive, and the first presence_events.seq
-- it may have written. Everything before that seq was closed by an earlier start (or by a
-- graceful shutdown), so a start only needs to look at the rows since.
CREATE TABLE server_liveness (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    alive_at      BIGINT NOT NULL,
    presence_from BIGINT NOT NULL
);
