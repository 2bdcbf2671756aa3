-- Gateway notifications (issue 17). A notification is never evidence: it makes the payment due
-- now, and the lane's query decides. `notified_at` is when the first one arrived for the
-- payment; an ECPay order that has one is queried at once instead of `first_query_after`
-- after its creation (ECPay's own guidance: query to verify a notified result).
ALTER TABLE payments ADD COLUMN notified_at TEXT;
-- When a notification or a requested check last made the payment due: an answer to a query
-- the lane sent before it (read with an older value) keeps the payment due now.
ALTER TABLE payments ADD COLUMN nudged_at TEXT;

-- The API's keyset pages of one account's discrepancies (`GET /v1/discrepancies?account=`),
-- resolved ones included: a seek plus the page. (Payment pages use the existing
-- `payments_by_created` and `payments_by_account_state`: an index of their own would cost every
-- state change of the hot path a write.)
CREATE INDEX discrepancies_by_account ON discrepancies (account, id);
