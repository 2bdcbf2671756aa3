-- ECPay orders settled in the last 14 days (the default `after_final_look_back`) before this
-- version are watched from now on like those settled after it: due at once, then on the slow
-- after-final schedule (an account with a shorter look-back ends the watch at its next check).
UPDATE payments
   SET next_check_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
       retry_reason = 'after_final',
       retry_repeats = 0
 WHERE provider = 'ecpay'
   AND state IN ('succeeded', 'partially_refunded')
   AND next_check_at IS NULL
   AND lease_owner IS NULL
   AND created_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-14 days');
