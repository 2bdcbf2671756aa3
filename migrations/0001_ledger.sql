-- payrecon ledger, first version. Never edit this file once released: add a new migration.
-- Timestamps are UTC text in one fixed-width format (YYYY-MM-DDTHH:MM:SS.mmmZ) so that text
-- comparison orders them; see src/ledger/time.rs.

CREATE TABLE payments (
    id                    INTEGER PRIMARY KEY,
    account               TEXT    NOT NULL,
    provider              TEXT    NOT NULL CHECK (provider IN ('qfpay', 'ecpay')),
    kind                  TEXT    NOT NULL DEFAULT 'payment' CHECK (kind IN ('payment', 'refund')),
    -- merchant order number: QFPay out_trade_no, ECPay MerchantTradeNo
    out_trade_no          TEXT    NOT NULL,
    -- gateway id: QFPay syssn, ECPay TradeNo
    provider_ref          TEXT,
    -- refunds: the original payment's syssn
    original_ref          TEXT,
    pay_type              TEXT,
    amount                INTEGER NOT NULL CHECK (amount > 0),
    currency              TEXT    NOT NULL CHECK (length(currency) = 3),
    state                 TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN (
                              'pending', 'in_progress', 'succeeded', 'failed', 'cancelled',
                              'reversing', 'reversed', 'refunded', 'partially_refunded',
                              'needs_review')),
    -- the gateway's last code for it (0000, 1143, error_nopay, 已授權 ...)
    provider_code         TEXT,
    -- gateway checks so far
    attempts              INTEGER NOT NULL DEFAULT 0,
    -- why it is still open and how many checks in a row gave that reason (retry schedule)
    retry_reason          TEXT,
    retry_repeats         INTEGER NOT NULL DEFAULT 0,
    -- when the scheduler may check it next; NULL once final
    next_check_at         TEXT,
    -- when the merchant created the payment (from intake), and when payrecon learned of it
    created_at            TEXT    NOT NULL,
    registered_at         TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL,
    -- first time the gateway reported it in progress (CPM reversal threshold)
    in_progress_since     TEXT,
    -- order expiry for QR/online pay types, when known
    expires_at            TEXT,
    -- lease: which pass is working on it, until when
    lease_owner           TEXT,
    lease_expires_at      TEXT,
    -- set once, before a reversal/close is sent; never cleared: the guard against reversing twice
    reversal_requested_at TEXT,
    UNIQUE (account, kind, out_trade_no)
);

CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX payments_by_ref ON payments (account, provider_ref) WHERE provider_ref IS NOT NULL;
CREATE INDEX payments_by_state ON payments (state, account);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    -- lease owner id of the pass
    owner        TEXT    NOT NULL,
    -- cron, cli, sweep, demo ...
    trigger      TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    status       TEXT    NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    claimed      INTEGER NOT NULL DEFAULT 0,
    checked      INTEGER NOT NULL DEFAULT 0,
    finalized    INTEGER NOT NULL DEFAULT 0,
    calls        INTEGER NOT NULL DEFAULT 0,
    errors       INTEGER NOT NULL DEFAULT 0,
    message      TEXT
);

-- Append-only history: every registration, observation and decision, with its evidence.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    payment_id    INTEGER NOT NULL REFERENCES payments (id),
    run_id        INTEGER REFERENCES runs (id),
    at            TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    from_state    TEXT,
    to_state      TEXT,
    provider_code TEXT,
    message       TEXT,
    -- raw gateway evidence as JSON, secrets removed
    evidence      TEXT    NOT NULL DEFAULT '{}'
);

CREATE INDEX events_by_payment ON events (payment_id, id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE discrepancies (
    id              INTEGER PRIMARY KEY,
    payment_id      INTEGER REFERENCES payments (id),
    account         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    evidence        TEXT    NOT NULL DEFAULT '{}',
    found_at        TEXT    NOT NULL,
    resolved_at     TEXT,
    resolution_note TEXT
);

CREATE INDEX discrepancies_open ON discrepancies (resolved_at, account);

-- Progress of a QFPay window sweep, so a crashed sweep resumes at its page.
CREATE TABLE sweep_cursors (
    account       TEXT    NOT NULL,
    window_start  TEXT    NOT NULL,
    window_end    TEXT    NOT NULL,
    next_page     INTEGER NOT NULL DEFAULT 1,
    records_seen  INTEGER NOT NULL DEFAULT 0,
    completed_at  TEXT,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (account, window_start, window_end)
);

-- Accounts the engine must leave alone for a while (rate limited, merchant stopped, bad key).
CREATE TABLE account_pauses (
    account      TEXT PRIMARY KEY,
    paused_until TEXT NOT NULL,
    reason       TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
