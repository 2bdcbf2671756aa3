-- The run that last decided a payment. A pass never claims a payment twice: after its
-- window sweeps it walks the remaining backlog, skipping what it already decided.
ALTER TABLE payments ADD COLUMN last_run_id INTEGER;
