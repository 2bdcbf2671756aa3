-- Index-backed planning and de-duplication (issue 16, first part): a window's payments by
-- creation time (`count_created_between`, `payments_created_in`: once per window, they read
-- every payment of the account without it), and a payment's discrepancies (the de-duplication
-- before every discrepancy written about a payment scanned the whole table).
CREATE INDEX payments_by_created ON payments (account, created_at);
CREATE INDEX discrepancies_by_payment ON discrepancies (payment_id, kind, detail)
    WHERE payment_id IS NOT NULL;
