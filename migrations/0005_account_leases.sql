-- One lease per merchant account: the lane of one process works the account at a time
-- (docs/ARCHITECTURE.md §4, "Lanes"). `token` grows by one with every acquisition and is the
-- fence: a write for the account's payments is applied only while the writer's token is still
-- the account's, so a process that paused past its lease and woke up late writes nothing.
-- `holder` is NULL once released (or reaped after the heartbeat stopped); the token stays.
CREATE TABLE account_leases (
    account          TEXT PRIMARY KEY NOT NULL,
    holder           TEXT,
    token            INTEGER NOT NULL DEFAULT 0,
    acquired_at      TEXT,
    heartbeat_at     TEXT,
    expires_at       TEXT,
    -- the holder's pace: gateway calls per minute it allows itself for the account
    pace_per_minute  INTEGER,
    -- when the last holder's pacer allowed its next call: the next holder keeps the pace
    next_call_at     TEXT
);
