-- Statements on the hot path cost O(log n) per item, not O(ledger) (issue 16).

-- A lane's units: an account's due payments in the order of their next check
-- (src/ledger/claim.rs `due_unit_sql`), a seek plus the unit's rows.
CREATE INDEX payments_due_by_account ON payments (account, next_check_at, id)
    WHERE next_check_at IS NOT NULL;
-- The single-column due index served the unscoped claim of the first engine; every walk is now
-- per account.
DROP INDEX payments_due;
-- An operator's `--all` pass walks an account's payments in id order (every open one is due
-- whatever its schedule): O(the account's payments) per pass, not per unit, and never the
-- other accounts' rows. Neither column ever changes, so writes do not maintain it.
CREATE INDEX payments_by_account ON payments (account, id);

-- Rows `payrecon pay` holds (rare, short): the reaper of every daemon tick finds the expired
-- holds here instead of reading every payment.
CREATE INDEX payments_held ON payments (lease_expires_at) WHERE lease_owner IS NOT NULL;

-- The oldest open payment of an account (`ledger stats`), a seek per open state; the earlier
-- (state, account) index served only counts, which the tables below now keep.
CREATE INDEX payments_by_account_state ON payments (account, state, created_at);
DROP INDEX payments_by_state;

-- Counts kept by triggers in the transaction of each write, so `ledger stats` (and metrics)
-- read a few rows instead of counting the ledger.
CREATE TABLE payment_counts (
    account  TEXT    NOT NULL,
    provider TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (account, provider, state)
) WITHOUT ROWID;
INSERT INTO payment_counts (account, provider, state, n)
    SELECT account, provider, state, COUNT(*) FROM payments GROUP BY account, provider, state;

CREATE TRIGGER payment_counts_insert AFTER INSERT ON payments
BEGIN
    INSERT INTO payment_counts (account, provider, state, n)
        VALUES (NEW.account, NEW.provider, NEW.state, 1)
        ON CONFLICT (account, provider, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER payment_counts_update AFTER UPDATE OF account, provider, state ON payments
    WHEN OLD.account IS NOT NEW.account OR OLD.provider IS NOT NEW.provider
      OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE payment_counts SET n = n - 1
     WHERE account = OLD.account AND provider = OLD.provider AND state = OLD.state;
    INSERT INTO payment_counts (account, provider, state, n)
        VALUES (NEW.account, NEW.provider, NEW.state, 1)
        ON CONFLICT (account, provider, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER payment_counts_delete AFTER DELETE ON payments
BEGIN
    UPDATE payment_counts SET n = n - 1
     WHERE account = OLD.account AND provider = OLD.provider AND state = OLD.state;
END;

-- Open discrepancies by account and kind.
CREATE TABLE discrepancy_counts (
    account TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    open    INTEGER NOT NULL,
    PRIMARY KEY (account, kind)
) WITHOUT ROWID;
INSERT INTO discrepancy_counts (account, kind, open)
    SELECT account, kind, COUNT(*) FROM discrepancies WHERE resolved_at IS NULL
    GROUP BY account, kind;

CREATE TRIGGER discrepancy_counts_insert AFTER INSERT ON discrepancies
    WHEN NEW.resolved_at IS NULL
BEGIN
    INSERT INTO discrepancy_counts (account, kind, open) VALUES (NEW.account, NEW.kind, 1)
        ON CONFLICT (account, kind) DO UPDATE SET open = open + 1;
END;

CREATE TRIGGER discrepancy_counts_resolve AFTER UPDATE OF resolved_at ON discrepancies
    WHEN OLD.resolved_at IS NULL AND NEW.resolved_at IS NOT NULL
BEGIN
    UPDATE discrepancy_counts SET open = open - 1
     WHERE account = OLD.account AND kind = OLD.kind;
END;

CREATE TRIGGER discrepancy_counts_delete AFTER DELETE ON discrepancies
    WHEN OLD.resolved_at IS NULL
BEGIN
    UPDATE discrepancy_counts SET open = open - 1
     WHERE account = OLD.account AND kind = OLD.kind;
END;

-- Passes and their gateway calls, in all.
CREATE TABLE run_totals (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    runs  INTEGER NOT NULL,
    calls INTEGER NOT NULL
);
INSERT INTO run_totals (id, runs, calls) SELECT 1, COUNT(*), COALESCE(SUM(calls), 0) FROM runs;

CREATE TRIGGER run_totals_insert AFTER INSERT ON runs
BEGIN
    UPDATE run_totals SET runs = runs + 1, calls = calls + NEW.calls WHERE id = 1;
END;

CREATE TRIGGER run_totals_update AFTER UPDATE OF calls ON runs
BEGIN
    UPDATE run_totals SET calls = calls + NEW.calls - OLD.calls WHERE id = 1;
END;
