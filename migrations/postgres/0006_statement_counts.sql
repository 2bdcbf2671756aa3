-- payment_counts kept by statement-level triggers (issue 18, item 6). The row triggers of 0001
-- ran a PL/pgSQL function and two counter writes per changed payment: a sweep page of 100
-- payments made 200 writes to the same few counter rows, each a new version that the next
-- one had to walk past within the transaction (EXPLAIN ANALYZE: 0.1–0.17 ms per row, more than
-- the UPDATE itself). These fire once per statement and add the statement's changes grouped
-- by (account, provider, state), in key order, from the transition tables. Same counts, same
-- transaction; the trigger names are kept.
DROP TRIGGER payment_counts_insert ON payments;
DROP TRIGGER payment_counts_update ON payments;
DROP TRIGGER payment_counts_delete ON payments;

CREATE FUNCTION payment_counts_follow_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO payment_counts AS c (account, provider, state, n)
            SELECT account, provider, state, COUNT(*) FROM new_rows
             GROUP BY account, provider, state ORDER BY account, provider, state
            ON CONFLICT (account, provider, state) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE payment_counts AS c SET n = c.n - d.n
          FROM (SELECT account, provider, state, COUNT(*) AS n FROM old_rows
                 GROUP BY account, provider, state) AS d
         WHERE c.account = d.account AND c.provider = d.provider AND c.state = d.state;
    ELSE
        INSERT INTO payment_counts AS c (account, provider, state, n)
            SELECT account, provider, state, SUM(delta) FROM (
                    SELECT account, provider, state, -1 AS delta FROM old_rows
                    UNION ALL
                    SELECT account, provider, state, 1 FROM new_rows) AS changes
             GROUP BY account, provider, state HAVING SUM(delta) <> 0
             ORDER BY account, provider, state
            ON CONFLICT (account, provider, state) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER payment_counts_insert AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payment_counts_follow_statement();
-- Transition tables allow no column list (UPDATE OF …): every UPDATE statement of payments
-- fires it, and the changes that leave the state as it was cancel out in the sum.
CREATE TRIGGER payment_counts_update AFTER UPDATE ON payments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payment_counts_follow_statement();
CREATE TRIGGER payment_counts_delete AFTER DELETE ON payments
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payment_counts_follow_statement();
