-- Sweeps read a window more than once: when it closes (round 0, also manual `payrecon sweep`)
-- and again after the look-back (round 1), each with its own resumable cursor. SQLite cannot
-- change a primary key in place, so the cursor table is rebuilt.
CREATE TABLE sweep_cursors_v2 (
    account       TEXT    NOT NULL,
    window_start  TEXT    NOT NULL,
    window_end    TEXT    NOT NULL,
    round         INTEGER NOT NULL DEFAULT 0,
    next_page     INTEGER NOT NULL DEFAULT 1,
    records_seen  INTEGER NOT NULL DEFAULT 0,
    completed_at  TEXT,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (account, window_start, window_end, round)
);
INSERT INTO sweep_cursors_v2 (account, window_start, window_end, round, next_page, records_seen,
                              completed_at, updated_at)
    SELECT account, window_start, window_end, 0, next_page, records_seen, completed_at, updated_at
    FROM sweep_cursors;
DROP TABLE sweep_cursors;
ALTER TABLE sweep_cursors_v2 RENAME TO sweep_cursors;

-- The scheduled sweep's own progress per account, apart from any manual sweep: how far its
-- fresh round has read, and how far its look-back round has re-read.
CREATE TABLE sweep_schedule (
    account        TEXT PRIMARY KEY,
    swept_until    TEXT NOT NULL,
    rechecked_from TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- A ledger swept by the earlier scheduler goes on where that one stood (the end of its latest
-- completed window), so the upgrade skips no day; its look-back starts there too.
INSERT INTO sweep_schedule (account, swept_until, rechecked_from, updated_at)
    SELECT account, MAX(window_end), MAX(window_end), MAX(updated_at)
    FROM sweep_cursors WHERE completed_at IS NOT NULL GROUP BY account;

-- Refund records link to their payment through the payment's gateway id (QFPay origssn).
CREATE INDEX payments_by_original ON payments (account, original_ref) WHERE original_ref IS NOT NULL;
