-- Gateway notifications (issue 17). A notification is never evidence: it makes the payment due
-- now, and the lane's query decides. `notified_at` is when the first one arrived for the
-- payment; an ECPay order that has one is queried at once instead of `first_query_after`
-- after its creation (ECPay's own guidance: query to verify a notified result).
ALTER TABLE payments ADD COLUMN notified_at TEXT;

-- The API's keyset pages (`GET /v1/payments?state=&account=&after=`,
-- `GET /v1/discrepancies?account=&after=`): a seek plus the page, in id order.
CREATE INDEX payments_by_account_state_id ON payments (account, state, id);
CREATE INDEX discrepancies_by_account ON discrepancies (account, id);
